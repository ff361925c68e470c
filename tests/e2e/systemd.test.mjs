// What the agent does for systemd, without a systemd: readiness over $NOTIFY_SOCKET (a real
// datagram socket, tests/tools/exo_notify_recv) and socket activation with systemd's own
// systemd-socket-activate, which passes listening sockets as LISTEN_FDS. The packaged units
// are tested on a booted systemd in tests/system/.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, chmodSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAgent, request, rpc, freePort, waitFor, repo, bin, run, forWorker } from './lib/agent.mjs';

const notifyRecv = process.env.EXO_NOTIFY_RECV_BIN || join(repo, 'build/exo_notify_recv');

function collect(proc) {
  const out = { text: '' };
  proc.stdout.on('data', (d) => { out.text += d; });
  proc.stderr.on('data', (d) => { out.text += d; });
  out.exit = new Promise((res) => proc.on('exit', (code, signal) => res({ code, signal })));
  return out;
}

describe('systemd readiness (sd_notify)', () => {
  it('the monitor says READY=1 once the worker serves, and STOPPING=1 when it drains', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'exo-notify-'));
    const sock = join(dir, 'notify');
    const recv = spawn(notifyRecv, [sock, '2', '20000'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const got = collect(recv);
    try {
      await waitFor(() => /listening/.test(got.text), 5000, 'the notify socket');
      const agent = await startAgent({ env: { NOTIFY_SOCKET: sock } });
      try {
        await waitFor(() => /READY=1/.test(got.text), 5000, 'READY=1');
        assert.match(got.text, new RegExp(`READY=1\\|STATUS=serving; worker ${agent.workerPid()}`));
        await agent.stop('SIGTERM');
        assert.deepEqual(await got.exit, { code: 0, signal: null });
        assert.match(got.text, /STOPPING=1/);
      } finally {
        await agent.cleanup();
      }
    } finally {
      recv.kill();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('socket activation', () => {
  it('serves the sockets systemd passes (TCP and Unix) and ignores [server] listen', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'exo-activate-'));
    chmodSync(dir, 0o755);
    const [port, unused] = [await freePort(), await freePort()];
    const sock = join(dir, 'activated.sock');
    const config = join(dir, 'agent.conf');
    writeFileSync(config, `[server]\nlisten = 127.0.0.1:${unused}\nunix_socket = ${join(dir, 'unused.sock')}\n`
      + `state_dir = ${join(dir, 'state')}\n[methods]\ndirs = ${forWorker(join(repo, 'methods'), dir)}\noperator_dir = ""\n`);
    const proc = spawn('systemd-socket-activate', ['-l', `127.0.0.1:${port}`, '-l', sock, bin, 'serve', '--config', config],
      { stdio: ['ignore', 'pipe', 'pipe'] });
    const out = collect(proc);
    try {
      // systemd-socket-activate starts the program at the first connection, as a socket unit
      // does: this request waits in the listening socket's queue until the agent serves it.
      await waitFor(() => /as 4\./.test(out.text), 5000, `sockets: ${out.text}`);
      const first = request({ port, tls: false }, { path: '/healthz' }).catch((e) => e);
      await waitFor(() => /ready:/.test(out.text), 10000, `start: ${out.text}`);
      assert.ok(await first); // a plain-HTTP request to an HTTPS port: answered or refused, not hung
      assert.match(out.text, /socket activation: serving the 2 sockets systemd passed/);
      assert.match(out.text, new RegExp(`listening on https://127\\.0\\.0\\.1:${port} \\(from systemd\\)`));
      assert.match(out.text, /listening on unix:.*activated\.sock \(from systemd\)/);
      const certPem = (await run('cat', [join(dir, 'state', 'tls-cert.pem')])).stdout;
      const agent = { port, tls: true, certPem };
      assert.equal((await request(agent, { path: '/healthz' })).status, 200);
      const r = await rpc(agent, { jsonrpc: '2.0', id: 1, method: 'authenticate.me' }, { socketPath: sock });
      assert.equal(r.json().result.username, 'root');
      assert.equal(existsSync(join(dir, 'unused.sock')), false);
      await assert.rejects(request({ port: unused, tls: false }, { path: '/healthz' }));
    } finally {
      proc.kill('SIGTERM');
      const e = await out.exit;
      rmSync(dir, { recursive: true, force: true });
      assert.equal(e.code, 0, out.text);
    }
  });

  it('refuses a passed socket that is not a listening stream socket', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'exo-activate-'));
    chmodSync(dir, 0o755);
    const config = join(dir, 'agent.conf');
    writeFileSync(config, `[server]\nstate_dir = ${join(dir, 'state')}\n[methods]\ndirs = ${forWorker(join(repo, 'methods'), dir)}\noperator_dir = ""\n`);
    // --datagram passes a UDP socket; a datagram to it starts the program.
    const port = await freePort();
    const proc = spawn('systemd-socket-activate', ['--datagram', '-l', `127.0.0.1:${port}`, bin, 'serve', '--config', config],
      { stdio: ['ignore', 'pipe', 'pipe'] });
    const out = collect(proc);
    await waitFor(() => /as 3\./.test(out.text), 5000, `sockets: ${out.text}`);
    const udp = (await import('node:dgram')).createSocket('udp4');
    udp.send('start', port, '127.0.0.1', () => udp.close());
    const e = await out.exit;
    rmSync(dir, { recursive: true, force: true });
    assert.equal(e.code, 1, out.text);
    assert.match(out.text, /descriptor 3 is not a listening stream socket/);
  });
});
