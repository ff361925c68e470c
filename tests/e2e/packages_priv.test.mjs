// The monitor's package operations through the exo.packages binding (e2e.packages calls it),
// against the real apt of this host, with the one action that changes nothing: `list`
// (apt-get -s, a simulation without the locks). refresh, install and upgrade_all change the
// machine (this host runs CI): they, and `busy` (which needs an install running), are tested
// in the container harness (tests/system). Forged requests straight to the monitor show that
// it kills a worker that breaks the rules, and the binding that an honest one never does.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, writeFileSync, statSync, readFileSync, utimesSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { startAgent, rpc, run, waitFor, waitForLog, shippedMethods, testMethods, slow } from './lib/agent.mjs';
import { injector, frame } from './lib/privsep.mjs';

const root = process.getuid() === 0;
const apt = existsSync('/usr/bin/apt-get');
const OP_START = 13;
const OP_POLL = 14;

describe('package operations (monitor)', { skip: (!root && 'needs root (the monitor)') || (!apt && 'needs apt-get') }, () => {
  let agent, pkgDir;
  const call = async (fn, ...args) => {
    const r = await rpc(agent, { jsonrpc: '2.0', id: 1, method: 'e2e.packages', params: { fn, args } });
    const body = JSON.parse(r.body);
    assert.ok(body.result, JSON.stringify(body));
    return body.result;
  };

  before(async () => {
    agent = await startAgent({
      methodDirs: [shippedMethods, testMethods],
      // apt itself (the harness's default is none), for simulations only: this is the CI machine.
      sections: { packages: { backend: 'apt', allow: 'bash, "libstdc++6", exo-no-such-package', allow_all: 'false', lock_timeout: '30s', timeout: '10m', keep: '1h' } },
    });
    pkgDir = join(agent.dir, 'state', 'packages');
  });

  after(async () => {
    if (agent) await agent.close();
  });

  it('config gives the backend and the [packages] settings', async () => {
    assert.deepEqual((await call('config')).ok, {
      backend: 'apt', disabled: false, allow: ['bash', 'libstdc++6', 'exo-no-such-package'], allow_all: false, lock_timeout_s: 30, timeout_s: 600,
      self_upgrade: true, self_packages: ['exosphere-guest-agent', 'exosphere-guest-agent-methods'],
    });
    assert.match(agent.log, /monitor: package backend: apt/);
  });

  it('list runs apt-get -s to its end: exit 0, the whole log read in whole lines, files root-only', async () => {
    const r = await call('run', 'list', null);
    assert.equal(r.exit, 'exit 0', JSON.stringify(r));
    assert.equal(r.backend, 'apt');
    assert.match(r.id, /^[0-9a-f]{32}$/);
    assert.match(r.log_head, /Reading package lists/);
    assert.ok(r.log_size > 0);
    assert.equal(r.log_read, r.log_size);
    assert.equal(r.status_read, 0); // a simulation has no status fd
    assert.equal(r.partial_lines, false);
    const dir = join(pkgDir, r.id);
    const d = statSync(dir);
    assert.equal(d.mode & 0o777, 0o700);
    assert.equal(d.uid, 0);
    for (const f of ['log', 'status', 'exit']) {
      const s = statSync(join(dir, f));
      assert.equal(s.mode & 0o777, 0o600, f);
      assert.equal(s.uid, 0, f);
    }
    assert.equal(readFileSync(join(dir, 'exit'), 'utf8'), 'exit 0\n');
    await waitForLog(agent, new RegExp(`packages: started list \\(operation ${r.id}, apt\\)`));
    await waitForLog(agent, new RegExp(`packages: list \\(operation ${r.id}\\) ended: exit 0`));
  });

  it('list of named packages: an installed one, and an unknown one (apt exits 100)', async () => {
    let r = await call('run', 'list', ['bash']);
    assert.equal(r.exit, 'exit 0', JSON.stringify(r));
    assert.match(r.log_head, /Reading package lists/);
    r = await call('run', 'list', ['exo-no-such-package-e2e']);
    assert.equal(r.exit, 'exit 100', JSON.stringify(r));
    assert.match(r.log_head, /Unable to locate package exo-no-such-package-e2e/);
  });

  it('poll: an unknown id is not_found; a started operation polls running or done', async () => {
    let r = await call('poll', '0123456789abcdef0123456789abcdef', 0, 0);
    assert.equal(r.code, 'not_found');
    const s = await call('start', 'list', null);
    assert.match(s.ok.id, /^[0-9a-f]{32}$/);
    r = await call('poll', s.ok.id, 0, 0);
    assert.ok(['running', 'done'].includes(r.ok.state), JSON.stringify(r));
    // Offsets past the end give nothing (and the current sizes).
    await waitFor(async () => (await call('poll', s.ok.id, 0, 0)).ok.state === 'done', 60000 * slow, 'the list to end');
    r = await call('poll', s.ok.id, 1e12, 5);
    assert.equal(r.ok.log, '');
    assert.equal(r.ok.status, '');
    assert.ok(r.ok.log_size > 0);
    assert.equal(r.ok.exit, 'exit 0');
  });

  it('the binding refuses what the monitor would kill for, as invalid, and the worker lives on', async () => {
    const before_ = agent.workerPid();
    const cases = [
      ['install', ['curl']], // not on [packages] allow
      ['install', null], // install needs names
      ['upgrade_all', null], // allow_all is off
      ['remove', null],
      ['refresh', ['bash']],
      ['list', ['-o']],
      ['list', ['a b']],
      ['list', ['.hidden']],
      ['list', ['x'.repeat(129)]],
      ['list', Array.from({ length: 65 }, (_, i) => `p${i}`)],
      ['list', Array.from({ length: 40 }, (_, i) => `p${i}`.padEnd(128, 'x'))], // over 4096 bytes
    ];
    for (const [action, names] of cases) {
      const r = await call('start', action, names);
      assert.equal(r.code, 'invalid', `${action} ${JSON.stringify(names)}: ${JSON.stringify(r)}`);
    }
    assert.match((await call('start', 'install', ['curl'])).message, /not on \[packages\] allow/);
    assert.equal((await call('poll', '../../etc/passwd', 0, 0)).code, 'invalid');
    assert.equal((await call('poll', '0123456789abcdef0123456789abcdef', -1, 0)).code, 'invalid');
    // 64 names and 128-byte names are within the limits (a simulation: nothing changes).
    const r = await call('start', 'list', Array.from({ length: 64 }, (_, i) => `exo-e2e-${i}`));
    assert.ok(r.ok, JSON.stringify(r));
    assert.equal(agent.workerPid(), before_);
    assert.doesNotMatch(agent.log, /the worker sent/);
  });

  it('misuse raises: an action that is not a string, a name that is not a string', async () => {
    for (const args of [[42, null], ['list', [1]], ['list', 'bash']]) {
      const r = await rpc(agent, { jsonrpc: '2.0', id: 1, method: 'e2e.packages', params: { fn: 'start', args } });
      assert.ok(JSON.parse(r.body).error, r.body);
    }
  });

  it('a new operation removes ended ones older than keep, and dead ones older than timeout + keep', async () => {
    const old = 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa';
    const orphan = 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb';
    const fresh = 'cccccccccccccccccccccccccccccccc';
    const longAgo = new Date(Date.now() - 3 * 3600 * 1000); // keep 1h, timeout 10m (+1h)
    for (const id of [old, orphan, fresh]) {
      mkdirSync(join(pkgDir, id), { mode: 0o700 });
      writeFileSync(join(pkgDir, id, 'log'), 'x\n', { mode: 0o600 });
      if (id !== orphan) writeFileSync(join(pkgDir, id, 'exit'), 'exit 0\n', { mode: 0o600 });
    }
    utimesSync(join(pkgDir, old, 'exit'), longAgo, longAgo);
    utimesSync(join(pkgDir, orphan), longAgo, longAgo);
    assert.equal((await call('poll', old, 0, 0)).ok.exit, 'exit 0');
    const r = await call('run', 'list', ['bash']);
    assert.equal(r.exit, 'exit 0');
    assert.ok(!existsSync(join(pkgDir, old)));
    assert.ok(!existsSync(join(pkgDir, orphan)));
    assert.ok(existsSync(join(pkgDir, fresh)));
    assert.equal((await call('poll', old, 0, 0)).code, 'not_found');
    await waitForLog(agent, /packages: removed the files of 2 ended operations/);
  });

  it('an operation without an exit line whose run lock nobody holds ends as lost, for good', async () => {
    const id = 'dddddddddddddddddddddddddddddddd';
    mkdirSync(join(pkgDir, id), { mode: 0o700 });
    writeFileSync(join(pkgDir, id, 'log'), 'Reading package lists...\n', { mode: 0o600 });
    const r = await call('poll', id, 0, 0);
    assert.deepEqual([r.ok.state, r.ok.exit, r.ok.log], ['done', 'lost', 'Reading package lists...\n']);
    assert.equal(readFileSync(join(pkgDir, id, 'exit'), 'utf8'), 'lost\n');
    await waitForLog(agent, new RegExp(`operation ${id} ended without an exit line; recorded it as lost`));
  });

  it('a change that another monitor started (its log locked) runs on: polls say running, a new change is busy', async () => {
    // What a restarted agent finds when its own upgrade runs on in a scope: the run lock
    // (flock on the log) held by a process of another monitor's. flock(1) takes the same lock.
    const id = 'eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee';
    mkdirSync(join(pkgDir, id), { mode: 0o700 });
    writeFileSync(join(pkgDir, id, 'log'), '', { mode: 0o600 });
    // Its own process group: flock's child (sleep) inherits the descriptor and so the lock,
    // as a tool does its waiter's.
    const holder = spawn('flock', ['-x', join(pkgDir, id, 'log'), 'sleep', '60'], { stdio: 'ignore', detached: true });
    try {
      await waitFor(async () => (await call('poll', id, 0, 0)).ok.state === 'running', 10000 * slow, 'the lock to be taken');
      // An allowed name no repository has: were the check to let it through, apt-get would
      // only fail to find it.
      const r = await call('start', 'install', ['exo-no-such-package']);
      assert.equal(r.code, 'busy', JSON.stringify(r));
      assert.match(r.message, new RegExp(`another package operation is running \\(operation ${id}\\)`));
      // Simulations do not wait for changes.
      assert.equal((await call('run', 'list', ['bash'])).exit, 'exit 0');
    } finally {
      process.kill(-holder.pid, 'SIGKILL');
    }
    await waitFor(async () => (await call('poll', id, 0, 0)).ok.exit === 'lost', 10000 * slow, 'the operation to be lost');
  });

  const names65 = Array.from({ length: 65 }, (_, i) => `p${i}`).join('\n');
  for (const [what, op, fields, logged] of [
    ['an install of a package not on the allow list', OP_START, ['install', 'curl'], /an install of a package not on \[packages\] allow/],
    ['a name with a bad byte', OP_START, ['list', 'bash;reboot'], /a package operation with a bad package name/],
    ['a name that is an option', OP_START, ['list', '-oAPT::Get::Simulate=false'], /a package operation with a bad package name/],
    ['an unknown action', OP_START, ['remove', 'bash'], /a package operation with an unknown action/],
    ['65 names', OP_START, ['list', names65], /a package operation with more than 64 names/],
    ['an upgrade_all while allow_all is off', OP_START, ['upgrade_all', ''], /an upgrade_all while \[packages\] allow_all is off/],
    ['names as separate fields', OP_START, ['list', 'bash', 'dash'], /a package operation without exactly 2 fields/],
    ['a poll of a path', OP_POLL, ['../../../../etc/shadow', '0', '0'], /a package poll with a bad id/],
    ['a poll with a negative offset', OP_POLL, ['0123456789abcdef0123456789abcdef', '-1', '0'], /a package poll with a bad offset/],
  ]) {
    it(`a forged request (${what}) kills the worker`, async () => {
      const before_ = agent.workerPid();
      const r = await run(injector, [String(before_), frame(op, 1, fields)]);
      assert.equal(r.code, 0, r.stderr);
      await waitForLog(agent, logged);
      const after_ = await waitFor(() => { const p = agent.workerPid(); return p && p !== before_ && p; }, 12000 * slow, 'a new worker');
      assert.notEqual(after_, before_);
      await waitFor(async () => (await call('config').catch(() => null)) !== null, 5000 * slow, 'the new worker serving');
    });
  }
});
