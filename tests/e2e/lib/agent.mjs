// Starts the real agent binary on free loopback ports with its own configuration and state
// directory, and gives tests real clients for it (HTTPS with the agent's own certificate as
// the only trusted CA, raw TLS sockets, the Unix socket).
import { spawn, execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, rmSync, mkdirSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';
import tls from 'node:tls';
import http from 'node:http';
import https from 'node:https';

export const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const bin = process.env.EXO_AGENT_BIN || join(repo, 'build/exosphere-guest-agent');
export const sanitized = process.env.EXO_SANITIZED === '1';

export function freePort() {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

// Lines of a config file: { server: { listen: '...' }, methods: { dirs: '...' } }
function renderConfig(sections) {
  let out = '';
  for (const [name, keys] of Object.entries(sections)) {
    out += `[${name}]\n`;
    for (const [k, v] of Object.entries(keys)) out += `${k} = ${v}\n`;
    out += '\n';
  }
  return out;
}

export async function startAgent(opts = {}) {
  const dir = opts.dir || mkdtempSync(join(tmpdir(), 'exo-e2e-'));
  const port = opts.port || (await freePort());
  const tlsOn = opts.tls !== false;
  const sock = join(dir, 'agent.sock');
  const server = {
    listen: opts.listen || `127.0.0.1:${port}`,
    unix_socket: sock,
    state_dir: join(dir, 'state'),
    tls: tlsOn ? 'true' : 'false',
    ...(opts.server || {}),
  };
  const methods = {
    dirs: (opts.methodDirs || [join(repo, 'methods')]).join(', '),
    ...(opts.methods || {}),
  };
  const config = join(dir, 'agent.conf');
  writeFileSync(config, renderConfig({ server, methods, ...(opts.sections || {}) }));
  const args = ['serve', '--config', config, ...(opts.args || [])];
  const started = process.hrtime.bigint();
  const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...(opts.env || {}) } });
  const agent = {
    dir, port, sock, config, proc, tls: tlsOn, log: '', exited: null, started,
    base: `${tlsOn ? 'https' : 'http'}://127.0.0.1:${port}`,
  };
  agent.exitPromise = new Promise((res) => proc.on('exit', (code, signal) => {
    agent.exited = { code, signal };
    res(agent.exited);
  }));
  proc.stderr.on('data', (d) => { agent.log += d.toString(); });
  proc.stdout.on('data', (d) => { agent.log += d.toString(); });
  await waitFor(() => agent.exited || /ready:/.test(agent.log), 20000, 'agent start');
  if (agent.exited) throw new Error(`agent exited at start: ${JSON.stringify(agent.exited)}\n${agent.log}`);
  if (tlsOn) {
    agent.certPem = readFileSync(opts.certFile || join(server.state_dir, 'tls-cert.pem'), 'utf8');
    const m = agent.log.match(/fingerprint ([0-9A-F:]+)/);
    agent.fingerprint = m && m[1];
  }
  agent.stop = (signal = 'SIGTERM') => stopAgent(agent, signal);
  agent.cleanup = async () => {
    if (!agent.exited) await stopAgent(agent, 'SIGKILL');
    if (!opts.dir) rmSync(dir, { recursive: true, force: true });
  };
  return agent;
}

export async function stopAgent(agent, signal = 'SIGTERM') {
  if (!agent.exited) agent.proc.kill(signal);
  const r = await agent.exitPromise;
  if (sanitized && /ERROR: (Address|Leak|Undefined)Sanitizer|runtime error:/.test(agent.log))
    throw new Error(`sanitizer report in the agent's log:\n${agent.log}`);
  return r;
}

export async function waitFor(fn, ms, what) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

// One HTTP(S) request; resolves { status, headers, body (string), json() }.
export function request(agent, { method = 'GET', path = '/', headers = {}, body, socketPath, agentOpt } = {}) {
  return new Promise((res, rej) => {
    const viaUnix = socketPath !== undefined;
    const mod = viaUnix || !agent.tls ? http : https;
    const req = mod.request({
      host: '127.0.0.1', port: agent.port, method, path, headers,
      socketPath: viaUnix ? socketPath : undefined,
      ca: agent.certPem, servername: 'localhost', agent: agentOpt || false,
    }, (r) => {
      const chunks = [];
      r.on('data', (c) => chunks.push(c));
      r.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        res({ status: r.statusCode, headers: r.headers, body: text, json: () => JSON.parse(text) });
      });
      r.on('error', rej);
    });
    req.on('error', rej);
    if (body !== undefined) req.write(typeof body === 'string' ? body : JSON.stringify(body));
    req.end();
  });
}

// A JSON-RPC POST; resolves the HTTP response.
export function rpc(agent, body, extra = {}) {
  return request(agent, {
    method: 'POST', path: '/rpc', body,
    headers: { 'Content-Type': 'application/json', ...(extra.headers || {}) },
    socketPath: extra.socketPath, agentOpt: extra.agentOpt,
  });
}

// A fetch for @open-rpc/client-js's HTTPTransport that trusts only the agent's certificate.
export function agentFetch(agent) {
  return async (url, init) => {
    const u = new URL(url);
    const r = await request(agent, {
      method: init.method, path: u.pathname, headers: init.headers, body: init.body,
    });
    return new Response(r.status === 204 ? null : r.body, { status: r.status, headers: r.headers });
  };
}

// A raw connection (TLS or plain) for byte-level tests: pipelining, slow clients, garbage.
export function rawConnect(agent) {
  return new Promise((res, rej) => {
    const onConnect = () => res(s);
    const s = agent.tls
      ? tls.connect({ host: '127.0.0.1', port: agent.port, ca: agent.certPem, servername: 'localhost' }, onConnect)
      : net.connect({ host: '127.0.0.1', port: agent.port }, onConnect);
    s.on('error', rej);
  });
}

// Collects what the peer sends until it closes (or ms pass); resolves { data, closed }.
export function readAll(sock, ms = 5000) {
  return new Promise((res) => {
    let data = '';
    const t = setTimeout(() => res({ data, closed: false }), ms);
    sock.on('data', (d) => { data += d.toString(); });
    sock.on('close', () => { clearTimeout(t); res({ data, closed: true }); });
    sock.on('error', () => {});
  });
}

export function run(cmd, args, opts = {}) {
  return new Promise((res) => {
    execFile(cmd, args, { timeout: 30000, maxBuffer: 16 << 20, ...opts }, (err, stdout, stderr) => {
      res({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

export { existsSync, mkdirSync, writeFileSync, readFileSync, join };
