// Jobs end to end (docs/decisions/0012-jobs.md), with the test method e2e.job (tests/e2e/methods):
// over a WebSocket a job starts at once, its progress and end reach the starting session
// without subscribing, jobs.get/list/cancel, a client that goes away and comes back for the
// result, who may see a job, idempotent repeats, a worker killed under a running job (the
// finished records survive, the running one is interrupted), and forged JOB_PUT / JOB_LIST
// requests, which end the worker.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { startAgent, rpc, run, request, waitFor, waitForLog, sleep, repo, ACCOUNTS, slow, shippedMethods, testMethods } from './lib/agent.mjs';
import { injector, frame } from './lib/privsep.mjs';
import { open } from './lib/wsclient.mjs';

const asRoot = process.getuid() === 0;
const note = (name, id) => (m) => m.json && m.json.method === name && m.json.id === undefined &&
  (id === undefined || m.json.params.job_id === id);


async function session(agent, account) {
  const s = open(agent);
  await s.ready;
  const r = await s.call('authenticate.login', { username: account.name, password: account.password });
  assert.equal(r.error, undefined, JSON.stringify(r));
  return s;
}

async function ok(s, method, params) {
  const r = await s.call(method, params);
  assert.equal(r.error, undefined, `${method}: ${JSON.stringify(r.error)}`);
  return r.result;
}

// Over the Unix socket as root (an administrator).
async function rootCall(agent, method, params) {
  const r = (await rpc(agent, { jsonrpc: '2.0', id: 1, method, params }, { socketPath: agent.sock })).json();
  return r;
}

async function ended(s, id, ms = 10000 * slow) {
  return waitFor(async () => {
    const r = await s.call('jobs.get', { job_id: id });
    return r.result && r.result.state !== 'running' && r.result;
  }, ms, `job ${id} to end`);
}

describe('jobs', { skip: !asRoot && 'logins and the monitor need root' }, () => {
  let agent;
  before(async () => {
    agent = await startAgent({ methodDirs: [shippedMethods, testMethods], sections: { auth: { login_backoff: '0s' } } });
  });
  after(async () => { await agent.close(); });

  it('start at once; progress and the end reach the starting session without subscribing', async () => {
    const s = await session(agent, ACCOUNTS.user);
    const t0 = Date.now();
    const { job_id: id } = await ok(s, 'e2e.job', { steps: 3, ms: 100 });
    assert.ok(Date.now() - t0 < 250 * slow, 'answered before the work was done');
    assert.match(id, /^[0-9a-f]{32}$/);
    const first = await ok(s, 'jobs.get', { job_id: id });
    assert.equal(first.state, 'running');
    assert.equal(first.user, ACCOUNTS.user.name);
    assert.equal(first.method, 'e2e.job');
    const percents = [];
    for (let i = 0; i < 3; i++) percents.push((await s.take(note('notify.jobs.progress', id))).json.params.progress.percent);
    assert.deepEqual(percents, [25, 50, 75]);
    const done = (await s.take(note('notify.jobs.done', id))).json.params;
    assert.equal(done.state, 'succeeded');
    assert.deepEqual(done.result, { steps: 3, user: ACCOUNTS.user.name });
    const r = await ok(s, 'jobs.get', { job_id: id });
    assert.deepEqual(r.result, done.result);
    assert.equal(r.progress.percent, 100);
    assert.ok(r.finished >= r.created);
    const list = await ok(s, 'jobs.list', { state: 'succeeded' });
    assert.ok(list.some((j) => j.job_id === id));
    s.close();
  });

  it('a failing job ends failed with its error', async () => {
    const s = await session(agent, ACCOUNTS.user);
    const { job_id: id } = await ok(s, 'e2e.job', { steps: 1, ms: 10, fail: true });
    const done = (await s.take(note('notify.jobs.done', id))).json.params;
    assert.equal(done.state, 'failed');
    assert.equal(done.error.code, -32000);
    assert.equal(done.error.message, 'e2e.job was asked to fail');
    s.close();
  });

  it('jobs.cancel stops a running job where it waits', async () => {
    const s = await session(agent, ACCOUNTS.user);
    const { job_id: id } = await ok(s, 'e2e.job', { steps: 100, ms: 100 });
    await s.take(note('notify.jobs.progress', id));
    const r = await ok(s, 'jobs.cancel', { job_id: id });
    assert.equal(r.state, 'cancelled');
    assert.equal((await s.take(note('notify.jobs.done', id))).json.params.state, 'cancelled');
    s.inbox.length = 0;
    await sleep(400);
    assert.equal(s.inbox.filter(note('notify.jobs.progress', id)).length, 0, 'no progress after the cancel');
    assert.equal((await ok(s, 'jobs.get', { job_id: id })).state, 'cancelled');
    s.close();
  });

  it('a job outlives its client, which fetches the result from a new session', async () => {
    const a = await session(agent, ACCOUNTS.user);
    const { job_id: id } = await ok(a, 'e2e.job', { steps: 3, ms: 150 });
    a.close();
    const b = await session(agent, ACCOUNTS.user);
    const r = await ended(b, id);
    assert.equal(r.state, 'succeeded');
    assert.equal(r.result.steps, 3);
    b.close();
  });

  it('users see their own jobs and subscribers only those they may see; administrators all', async () => {
    const admin = await session(agent, ACCOUNTS.admin);
    const user = await session(agent, ACCOUNTS.user);
    for (const s of [admin, user]) await ok(s, 'notifications.subscribe', { names: ['notify.jobs.done'] });
    // root's job, over the Unix socket.
    const started = await rootCall(agent, 'e2e.job', { steps: 1, ms: 50 });
    assert.equal(started.error, undefined, JSON.stringify(started));
    const id = started.result.job_id;
    assert.equal((await admin.take(note('notify.jobs.done', id))).json.params.user, 'root');
    const hidden = await user.call('jobs.get', { job_id: id });
    assert.equal(hidden.error.code, -32003);
    assert.equal((await user.call('jobs.cancel', { job_id: id })).error.code, -32003);
    assert.ok(!(await ok(user, 'jobs.list', {})).some((j) => j.job_id === id));
    assert.ok((await ok(admin, 'jobs.list', {})).some((j) => j.job_id === id));
    assert.equal(user.inbox.filter(note('notify.jobs.done', id)).length, 0, 'not sent to another user');
    // Anonymous callers see nothing.
    const anon = open(agent);
    await anon.ready;
    assert.equal((await anon.call('jobs.list', {})).error.code, -32001);
    for (const s of [admin, user, anon]) s.close();
  });

  it('a repeat with the same idempotency_key returns the first job; another user or key starts another', async () => {
    const s = await session(agent, ACCOUNTS.user);
    const a = await ok(s, 'e2e.job', { steps: 1, ms: 10, idempotency_key: 'e2e-key-1' });
    const b = await ok(s, 'e2e.job', { steps: 1, ms: 10, idempotency_key: 'e2e-key-1' });
    assert.deepEqual(a, b);
    const c = await ok(s, 'e2e.job', { steps: 1, ms: 10, idempotency_key: 'e2e-key-2' });
    assert.notEqual(c.job_id, a.job_id);
    const other = await rootCall(agent, 'e2e.job', { steps: 1, ms: 10, idempotency_key: 'e2e-key-1' });
    assert.notEqual(other.result.job_id, a.job_id);
    const tooLong = await s.call('e2e.job', { steps: 1, ms: 10, idempotency_key: 'k'.repeat(129) });
    assert.equal(tooLong.error.code, -32602);
    s.close();
  });

  it('a job outlives a methods reload, and its end reaches the new methods', async () => {
    const s = await session(agent, ACCOUNTS.user);
    const { job_id: id } = await ok(s, 'e2e.job', { steps: 4, ms: 250 });
    await s.take(note('notify.jobs.progress', id));
    process.kill(agent.proc.pid, 'SIGHUP');
    await waitForLog(agent, /reloaded methods/);
    // The new VM knows the job from the monitor's records, still running.
    const during = await waitFor(async () => (await s.call('jobs.get', { job_id: id })).result, 3000 * slow, 'the record');
    assert.equal(during.state, 'running');
    // The old VM's job goes on, tells its session, and its final record reaches the new VM.
    assert.equal((await s.take(note('notify.jobs.done', id))).json.params.state, 'succeeded');
    const r = await ended(s, id);
    assert.equal(r.state, 'succeeded');
    assert.equal(r.result.steps, 4);
    s.close();
  });

  it('a worker killed under a running job: finished records survive, the running one is interrupted', async () => {
    const s = await session(agent, ACCOUNTS.user);
    const { job_id: done } = await ok(s, 'e2e.job', { steps: 1, ms: 10, idempotency_key: 'before-kill' });
    await ended(s, done);
    const { job_id: running } = await ok(s, 'e2e.job', { steps: 1000, ms: 100 });
    await s.take(note('notify.jobs.progress', running));
    const before_ = agent.workerPid();
    process.kill(before_, 'SIGKILL');
    await waitFor(() => { const p = agent.workerPid(); return p && p !== before_ && p; }, 12000 * slow, 'a new worker');
    await waitFor(async () => (await request(agent, { path: '/healthz' }).catch(() => ({}))).status === 200, 3000 * slow, 'healthz');
    const t = await session(agent, ACCOUNTS.user);
    const r1 = await waitFor(async () => (await t.call('jobs.get', { job_id: done })).result, 3000 * slow, 'the restored record');
    assert.equal(r1.state, 'succeeded');
    assert.equal(r1.result.steps, 1);
    const r2 = await ok(t, 'jobs.get', { job_id: running });
    assert.equal(r2.state, 'interrupted');
    assert.equal(r2.error.data.reason, 'interrupted');
    // The key of the finished job still answers with it.
    assert.deepEqual(await ok(t, 'e2e.job', { steps: 1, ms: 10, idempotency_key: 'before-kill' }), { job_id: done });
    const st = statSync(join(agent.dir, 'state', 'jobs'));
    assert.equal(st.mode & 0o777, 0o600);
    assert.equal(st.uid, 0);
    t.close();
  });

  for (const [what, hex, logged] of [
    ['a JOB_PUT with an id that is not one', frame(11, 1, ['../../etc/passwd', '1', '{}']), /a job id that is not 32 characters long/],
    ['a JOB_PUT with a control character in the record', frame(11, 1, ['a'.repeat(32), '1', '{"a":"\n"}']), /control character/],
    ['a JOB_PUT that expires after [jobs] keep', frame(11, 1, ['a'.repeat(32), '99999999999', '{}']), /expires after \[jobs\] keep/],
    ['a JOB_PUT of a record over 6144 bytes', frame(11, 1, ['a'.repeat(32), '1', 'x'.repeat(6145)]), /over 6144 bytes/],
    ['a JOB_LIST after an id that is not one', frame(12, 1, ['zz']), /a job list request with a bad job id/],
  ]) {
    it(`${what} ends the worker, and the agent recovers`, async () => {
      const before_ = agent.workerPid();
      const r = await run(injector, [String(before_), hex]);
      assert.equal(r.code, 0, r.stderr);
      await waitForLog(agent, logged);
      await waitFor(() => { const p = agent.workerPid(); return p && p !== before_ && p; }, 12000 * slow, 'a new worker');
      await waitFor(async () => (await request(agent, { path: '/healthz' }).catch(() => ({}))).status === 200, 3000 * slow, 'healthz');
    });
  }
});
