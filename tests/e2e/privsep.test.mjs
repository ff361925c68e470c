// The monitor and the worker: who runs with what, what a compromised worker can make the
// monitor do (nothing but end itself), restarts that keep the listening sockets, and the
// unprivileged development mode.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, mkdtempSync, chmodSync, rmSync, writeFileSync, cpSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { startAgent, rpc, request, run, login, waitFor, waitForLog, freePort, repo, bin, ACCOUNTS, slow } from './lib/agent.mjs';
import { injector, frame } from './lib/privsep.mjs';

const call = (method, params, id = 1) => ({ jsonrpc: '2.0', id, method, ...(params ? { params } : {}) });

function status(pid) {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const get = (k) => text.match(new RegExp(`^${k}:\\s+(.*)$`, 'm'))[1].trim();
  return { uid: get('Uid'), gid: get('Gid'), groups: get('Groups'), capInh: get('CapInh'), capPrm: get('CapPrm'),
    capEff: get('CapEff'), capBnd: get('CapBnd'), capAmb: get('CapAmb'), noNewPrivs: get('NoNewPrivs') };
}


describe('monitor and worker', () => {
  let agent;
  before(async () => { agent = await startAgent(); });
  after(async () => { await agent.close(); });

  it('the monitor is root; the worker runs as exosphere-guest-agent with no capabilities and no_new_privs', async () => {
    const uid = (await run('id', ['-u', 'exosphere-guest-agent'])).stdout.trim();
    const gid = (await run('id', ['-g', 'exosphere-guest-agent'])).stdout.trim();
    const m = status(agent.proc.pid);
    assert.equal(m.uid.split(/\s+/)[0], '0');
    const w = status(agent.workerPid());
    assert.deepEqual(w.uid.split(/\s+/), [uid, uid, uid, uid]);
    assert.deepEqual(w.gid.split(/\s+/), [gid, gid, gid, gid]);
    assert.equal(w.groups, gid);
    for (const k of ['capInh', 'capPrm', 'capEff', 'capBnd', 'capAmb']) assert.equal(w[k], '0000000000000000', k);
    assert.equal(w.noNewPrivs, '1');
  });

  it('the worker cannot read the monitor\'s keys', async () => {
    const r = await run('runuser', ['-u', 'exosphere-guest-agent', '--', 'cat', join(agent.dir, 'state', 'token-key')]);
    assert.notEqual(r.code, 0);
    const st = (await run('stat', ['-c', '%a %U', join(agent.dir, 'state', 'token-key')])).stdout.trim();
    assert.equal(st, '600 root');
  });

  for (const [what, hex, logged] of [
    ['garbage', Buffer.from('this is not a message at all').toString('hex'), /a malformed message/],
    ['an operation the permit table does not have', frame(99, 1, []), /not permitted/],
    ['a login with a user name the monitor refuses', frame(1, 1, ['../../etc', 'pw', 'src', 'https']), /bad user name/],
    ['a login with too few fields', frame(1, 1, ['exo-user']), /without exactly 4 fields/],
    ['a message over the size limit', frame(2, 1, ['x'.repeat(9000)]), /over the size limit/],
    ['an answer instead of a request', frame(0x80000001, 1, ['ok']), /not permitted/],
  ]) {
    it(`${what} from the worker ends the worker, not the monitor, and the agent recovers`, async () => {
      const before_ = agent.workerPid();
      const r = await run(injector, [String(before_), hex]);
      assert.equal(r.code, 0, r.stderr);
      await waitForLog(agent, logged);
      // Workers that die in quick succession are restarted with a growing delay (up to 10 s).
      const after_ = await waitFor(() => { const p = agent.workerPid(); return p && p !== before_ && p; }, 12000 * slow, 'a new worker');
      assert.notEqual(after_, before_);
      assert.equal(agent.exited, null);
      await waitFor(async () => (await request(agent, { path: '/healthz' }).catch(() => ({}))).status === 200, 3000 * slow, 'healthz');
      // Logins still work through the new worker's fresh socket.
      assert.ok(await login(agent, ACCOUNTS.user));
    });
  }

  it('SIGHUP to the monitor reloads the worker\'s methods in the same worker', async () => {
    const w = agent.workerPid();
    process.kill(agent.proc.pid, 'SIGHUP');
    await waitForLog(agent, /reloaded methods/);
    assert.equal(agent.workerPid(), w);
  });
});

describe('worker restarts', () => {
  it('a worker that dies is replaced within a second, and connections made meanwhile are served', async () => {
    const agent = await startAgent();
    try {
      const before_ = agent.workerPid();
      const t0 = Date.now();
      process.kill(before_, 'SIGKILL');
      // kill() returns before the signal has taken effect: a worker still running on the other
      // core may accept one more connection and then die with it (the client sees ECONNRESET,
      // as it would with any server killed mid-accept). So wait until the kernel has torn the
      // worker down (a zombie, or reaped), then connect at once, before a new worker exists:
      // the listening socket stays open in the monitor, so this connection queues and is served.
      await waitFor(() => {
        try {
          return readFileSync(`/proc/${before_}/stat`, 'utf8').split(') ').at(-1)[0] === 'Z';
        } catch {
          return true;
        }
      }, 1000, 'the killed worker gone');
      const r = await request(agent, { path: '/healthz' });
      assert.equal(r.status, 200);
      const after_ = await waitFor(() => { const p = agent.workerPid(); return p && p !== before_ && p; }, 2000, 'a new worker');
      assert.ok(Date.now() - t0 < 1000 * slow, `replaced after ${Date.now() - t0} ms`);
      assert.ok(after_);
      await waitForLog(agent, new RegExp(`worker ${before_} was killed by signal 9`));
    } finally {
      await agent.close();
    }
  });
});

describe('stopping', () => {
  it('SIGTERM to the monitor drains the worker, removes the socket file and exits 0', async () => {
    const agent = await startAgent();
    try {
      const w = agent.workerPid();
      const r = await agent.stop('SIGTERM');
      assert.equal(r.code, 0);
      assert.throws(() => readFileSync(`/proc/${w}/status`));
      assert.throws(() => readFileSync(agent.sock));
    } finally {
      await agent.cleanup();
    }
  });

  it('a worker that cannot start makes the agent fail at start, with the reason', async () => {
    await assert.rejects(startAgent({ server: { user: 'exo-no-such-user' } }), /worker's user 'exo-no-such-user' does not exist/);
    await assert.rejects(startAgent({ server: { user: 'root' } }), /is root; it must be unprivileged/);
  });
});

describe('without root (development)', () => {
  it('serves as one unprivileged process: logins are refused as Unavailable, the Unix socket knows its user', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'exo-e2e-dev-'));
    const user = ACCOUNTS.user.name;
    await run('chown', [user, dir]);
    chmodSync(dir, 0o755);
    const port = await freePort();
    const config = join(dir, 'agent.conf');
    // Copies the user can reach wherever the clone is.
    cpSync(join(repo, 'methods'), join(dir, 'methods'), { recursive: true });
    copyFileSync(bin, join(dir, 'agent'));
    chmodSync(join(dir, 'agent'), 0o755);
    writeFileSync(config, `[server]\nlisten = 127.0.0.1:${port}\nunix_socket = ${dir}/agent.sock\nstate_dir = ${dir}/state\ntls = false\n[methods]\ndirs = ${dir}/methods\noperator_dir = ""\n`);
    const proc = spawn('runuser', ['-u', user, '--', join(dir, 'agent'), 'serve', '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    proc.stderr.on('data', (d) => { log += d; });
    const exited = new Promise((res) => proc.on('exit', res));
    try {
      await waitFor(() => /ready:/.test(log), 10000, `start: ${log}`);
      assert.match(log, /not started as root: running without the monitor/);
      const agent = { port, tls: false, sock: join(dir, 'agent.sock') };
      let r = await rpc(agent, call('authenticate.login', { username: user, password: ACCOUNTS.user.password }));
      assert.equal(r.json().error.code, -32009);
      assert.match(r.json().error.message, /without its root monitor/);
      r = await request(agent, { method: 'POST', path: '/auth', headers: { Authorization: `Basic ${Buffer.from('a:b').toString('base64')}` } });
      assert.equal(r.status, 503);
      const c = await run('runuser', ['-u', user, '--', 'curl', '-sS', '--unix-socket', agent.sock, '-H',
        'Content-Type: application/json', '-d', JSON.stringify(call('system_load.current')), 'http://localhost/rpc']);
      assert.ok(JSON.parse(c.stdout).result, c.stdout);
    } finally {
      proc.kill('SIGTERM');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
