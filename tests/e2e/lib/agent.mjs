// Starts the real agent binary on free loopback ports with its own configuration and state
// directory, and gives tests real clients for it (HTTPS with the agent's own certificate as
// the only trusted CA, raw TLS sockets, the Unix socket).
import { spawn, execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, rmSync, mkdirSync, existsSync, chmodSync, readdirSync, cpSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { ensureAccounts, ACCOUNTS } from './accounts.mjs';
export { ACCOUNTS };
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
export const shippedMethods = join(repo, 'methods');
export const testMethods = join(repo, 'tests/e2e/methods');
// Sanitizer builds run several times slower: timing margins are multiplied by this.
export const slow = sanitized ? 3 : 1;

const workerCanRead = new Map();
// d itself when the worker's user can list and read it, else a copy in the agent's directory.
export function forWorker(d, agentDir) {
  if (process.getuid() !== 0) return d;
  if (!workerCanRead.has(d)) {
    const r = spawnSync('runuser', ['-u', 'exosphere-guest-agent', '--', 'test', '-r', d, '-a', '-x', d]);
    workerCanRead.set(d, r.status === 0);
  }
  if (workerCanRead.get(d)) return d;
  const copy = join(agentDir, `copy-${d.replace(/[^A-Za-z0-9]+/g, '-')}`);
  cpSync(d, copy, { recursive: true });
  return copy;
}

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
  ensureAccounts(repo);
  const dir = opts.dir || mkdtempSync(join(tmpdir(), 'exo-e2e-'));
  // The worker runs as the agent's own unprivileged user: it must reach the socket and methods.
  if (!opts.dir) chmodSync(dir, 0o755);
  for (const d of opts.methodDirs || []) {
    // A test's own temporary method directory (mkdtemp makes it 0700) and its parents below
    // the temporary directory.
    for (let p = d; p.startsWith(tmpdir() + '/'); p = dirname(p)) chmodSync(p, 0o755);
  }
  // The worker (exosphere-guest-agent) reads the method files: a directory of a clone it
  // cannot reach (a checkout under /root) is served from a copy.
  const readable = (d) => forWorker(d, dir);
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
    dirs: (opts.methodDirs || [join(repo, 'methods')]).map(readable).join(', '),
    // The API versions shipped with the methods (api-versions/), as the packages install them.
    api_versions_dir: readable(join(repo, 'api-versions')),
    // The machine's own operator methods (/etc/...) are no part of a test.
    operator_dir: '""',
    ...(opts.methods || {}),
  };
  if (opts.methods && opts.methods.operator_dir && opts.methods.operator_dir !== '""')
    methods.operator_dir = readable(opts.methods.operator_dir);
  const config = join(dir, 'agent.conf');
  // The status line and the load lines would go to this machine's /dev/console: off unless a
  // test asks for them ([system_load] console_line is merged key by key, so that a test may
  // set the interval alone).
  const sections = { console: { status_line: 'false' }, ...(opts.sections || {}) };
  sections.system_load = { console_line: 'false', ...((opts.sections || {}).system_load || {}) };
  // Tests reach only loopback: no metadata service unless a test starts its own.
  sections.metadata = { url: '""', ...((opts.sections || {}).metadata || {}) };
  // No package manager unless a test asks for one: this machine's packages are no part of a
  // test (packages.check_updates would run apt-get update, which also reaches the network).
  sections.packages = { backend: 'none', ...((opts.sections || {}).packages || {}) };
  writeFileSync(config, renderConfig({ server, methods, ...sections }));
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
  if (agent.exited) {
    if (!opts.dir) rmSync(dir, { recursive: true, force: true });
    throw new Error(`agent exited at start: ${JSON.stringify(agent.exited)}\n${agent.log}`);
  }
  if (tlsOn) {
    agent.certPem = readFileSync(opts.certFile || join(server.state_dir, 'tls-cert.pem'), 'utf8');
    const m = agent.log.match(/fingerprint ([0-9A-F:]+)/);
    agent.fingerprint = m && m[1];
  }
  agent.stop = (signal = 'SIGTERM') => stopAgent(agent, signal);
  // The worker's pid (the agent's process is the monitor when it runs as root).
  agent.workerPid = () => workerPid(agent.proc.pid);
  // Waits for an exit that a signal already sent will cause (a second signal during the
  // final clean-up would kill the process).
  agent.wait = () => stopAgent(agent, null);
  agent.cleanup = async () => {
    if (!agent.exited) {
      agent.proc.kill('SIGKILL');
      await agent.exitPromise;
    }
    if (!opts.dir) rmSync(dir, { recursive: true, force: true });
  };
  // SIGTERM, wait for the exit (failing on a sanitizer report), and clean up even then.
  agent.close = async () => {
    try {
      await stopAgent(agent, 'SIGTERM');
    } finally {
      await agent.cleanup();
    }
  };
  return agent;
}

// The child of a monitor: its worker (PAM checks are short-lived children too, but they are
// not running when nothing logs in).
export function workerPid(monitorPid) {
  for (const t of readdirSync(`/proc/${monitorPid}/task`)) {
    let kids = '';
    try {
      kids = readFileSync(`/proc/${monitorPid}/task/${t}/children`, 'utf8').trim();
    } catch { continue; }
    for (const pid of kids ? kids.split(/\s+/) : []) {
      try {
        const uid = readFileSync(`/proc/${pid}/status`, 'utf8').match(/^Uid:\s+(\d+)/m)[1];
        if (uid !== '0') return Number(pid);
      } catch { /* gone meanwhile */ }
    }
  }
  return null;
}

// Logs in over HTTPS with POST /auth and returns the token.
export async function login(agent, account) {
  const basic = Buffer.from(`${account.name}:${account.password}`).toString('base64');
  const r = await request(agent, { method: 'POST', path: '/auth', headers: { Authorization: `Basic ${basic}` } });
  if (r.status !== 200) throw new Error(`login of ${account.name} failed: ${r.status} ${r.body}`);
  return r.json().token;
}

export async function stopAgent(agent, signal = 'SIGTERM') {
  if (!agent.exited && signal) agent.proc.kill(signal);
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
    if (body !== undefined) req.write(typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body));
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
    // client-js passes a Headers object, which node:http does not take.
    const h = init.headers;
    const headers = h && typeof h.entries === 'function' && !Array.isArray(h) ? Object.fromEntries(h.entries()) : h || {};
    const r = await request(agent, { method: init.method, path: u.pathname, headers, body: init.body });
    return new Response(r.status === 204 ? null : r.body, { status: r.status, headers: r.headers });
  };
}

// A raw connection (TLS or plain) for byte-level tests: pipelining, slow clients, garbage.
// { unix: true } connects to the Unix socket instead.
export function rawConnect(agent, { unix = false } = {}) {
  return new Promise((res, rej) => {
    const onConnect = () => res(s);
    const s = unix
      ? net.connect({ path: agent.sock }, onConnect)
      : agent.tls
        ? tls.connect({ host: '127.0.0.1', port: agent.port, ca: agent.certPem, servername: 'localhost' }, onConnect)
        : net.connect({ host: '127.0.0.1', port: agent.port }, onConnect);
    s.on('error', rej);
  });
}

// Writes bytes on a fresh raw connection and collects the answer until the agent closes
// (or ms pass); resolves { data, closed, responses }.
export async function exchange(agent, bytes, { ms = 5000, unix = false } = {}) {
  const s = await rawConnect(agent, { unix });
  const done = readAll(s, ms);
  s.write(bytes);
  const r = await done;
  s.destroy();
  return { ...r, responses: parseResponses(r.data) };
}

// A raw connection that keeps what it receives: c.write(bytes), await c.responses(n) (the
// first n responses, parsed), await c.closed(ms) (true once the agent has closed it),
// c.text (everything received), c.destroy().
export async function rawClient(agent, { unix = false, head = false } = {}) {
  const s = await rawConnect(agent, { unix });
  const c = {
    socket: s, text: '', isClosed: false, closedAt: null,
    write: (b) => s.write(b),
    destroy: () => s.destroy(),
    parsed: () => parseResponses(c.text, { head }),
    async responses(n, ms = 5000) {
      await waitFor(() => c.parsed().length >= n || c.isClosed, ms, `${n} responses`);
      const r = c.parsed();
      if (r.length < n) throw new Error(`connection closed after ${r.length} of ${n} responses: ${JSON.stringify(c.text)}`);
      return r;
    },
    async closed(ms = 5000) {
      try {
        await waitFor(() => c.isClosed, ms, 'close');
      } catch {
        return false;
      }
      return true;
    },
  };
  s.on('data', (d) => { c.text += d.toString(); });
  s.on('close', () => { c.isClosed = true; c.closedAt = Date.now(); });
  s.on('error', () => {});
  return c;
}

// Splits raw HTTP/1.1 response text into { status, reason, headers (lower-case names),
// body, raw }, using Content-Length (responses without one, such as 100 and 204, have no
// body). A response to HEAD must be parsed with head = true.
export function parseResponses(data, { head = false } = {}) {
  const out = [];
  let rest = data;
  while (rest.length > 0) {
    const end = rest.indexOf('\r\n\r\n');
    if (end < 0) break;
    const lines = rest.slice(0, end).split('\r\n');
    const m = lines[0].match(/^HTTP\/1\.1 (\d{3}) (.*)$/);
    if (!m) throw new Error(`not an HTTP response: ${JSON.stringify(rest.slice(0, 200))}`);
    const headers = {};
    for (const l of lines.slice(1)) {
      const i = l.indexOf(':');
      const k = l.slice(0, i).trim().toLowerCase();
      headers[k] = headers[k] === undefined ? l.slice(i + 1).trim() : `${headers[k]}, ${l.slice(i + 1).trim()}`;
    }
    const status = Number(m[1]);
    const len = head || status === 204 || status < 200 ? 0 : Number(headers['content-length'] || 0);
    const body = Buffer.from(rest.slice(end + 4), 'utf8').subarray(0, len).toString();
    const consumed = end + 4 + body.length;
    out.push({ status, reason: m[2], headers, body, raw: rest.slice(0, consumed) });
    rest = rest.slice(consumed);
  }
  return out;
}

// Lines of the agent's log that match re.
export function logLines(agent, re) {
  return agent.log.split('\n').filter((l) => re.test(l));
}

// Waits until the agent's log has a line that matches re; resolves the matching lines.
export function waitForLog(agent, re, ms = 5000) {
  return waitFor(() => { const l = logLines(agent, re); return l.length > 0 && l; }, ms, `log line ${re}`);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

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

// Runs a program; resolves { code, stdout, stderr }. opts.input is written to its stdin,
// which is then closed (it is always closed, so a program never waits on it).
export function run(cmd, args, opts = {}) {
  const { input, ...rest } = opts;
  return new Promise((res) => {
    const child = execFile(cmd, args, { timeout: 30000, maxBuffer: 16 << 20, ...rest }, (err, stdout, stderr) => {
      res({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
    child.stdin.on('error', () => {});
    child.stdin.end(input ?? '');
  });
}

export { existsSync, mkdirSync, writeFileSync, readFileSync, join };
