// What the package tests (packages.test.mjs, packages_dnf.test.mjs, self_upgrade.test.mjs)
// share: calls to the agent in a container, following a job with jobs.get, the checks of a
// finished job's progress, the PackageKit variants, and the agent's service.
import assert from 'node:assert/strict';
import { ensureDerivedRootfs } from './rootfs.mjs';
import { q } from './container.mjs';
import { openSession } from './wsclient.mjs';

export const UNIT = 'exosphere-guest-agent';
export const PHASES = ['waiting for lock', 'downloading', 'installing', 'configuring', 'done'];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let rpcId = 0;
// One call: over the Unix socket as root (an administrator) by default, or with a token over
// HTTPS. The response object.
export function call(c, method, params = {}, { token } = {}) {
  return c.rpc({ jsonrpc: '2.0', id: ++rpcId, method, params }, token ? { token } : { unix: true });
}
// The result of a call that must succeed.
export async function ok(c, method, params, opts) {
  const r = await call(c, method, params, opts);
  assert.equal(r.error, undefined, `${method} ${JSON.stringify(params)}: ${JSON.stringify(r.error)}`);
  return r.result;
}
// The error of a call that must fail.
export async function fails(c, method, params, opts) {
  const r = await call(c, method, params, opts);
  assert.ok(r.error, `${method} ${JSON.stringify(params)} should fail, got ${JSON.stringify(r.result)}`);
  return r.error;
}

// Follows a job with jobs.get (curl over the Unix socket has no session for notify.jobs.*)
// until it ends: { record, snapshots } where snapshots are the distinct progress objects seen,
// in order, each with the time it was first seen. onPoll(record) runs after each poll.
export async function follow(c, jobId, { onPoll, timeoutMs = 180000 } = {}) {
  const snapshots = [];
  const end = Date.now() + timeoutMs;
  for (;;) {
    const record = await ok(c, 'jobs.get', { job_id: jobId });
    const p = JSON.stringify(record.progress ?? null);
    if (!snapshots.length || JSON.stringify(snapshots.at(-1).progress) !== p) {
      snapshots.push({ at: Date.now(), progress: record.progress ?? null, state: record.state });
    }
    if (onPoll) await onPoll(record);
    if (record.state !== 'running') return { record, snapshots };
    if (Date.now() > end) throw new Error(`job ${jobId} still running after ${timeoutMs} ms: ${JSON.stringify(record)}`);
    await sleep(100);
  }
}

// jobs.get until the job has ended, across a restart of the agent: a failed call (the agent
// restarting) or NotFound (the new worker has not read the records yet) is waited out.
// Returns the record.
export async function finished(c, jobId, timeoutMs = 300000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const r = await call(c, 'jobs.get', { job_id: jobId }).catch((e) => ({ error: { message: String(e) } }));
    if (r.result && r.result.state !== 'running') return r.result;
    if (Date.now() > end) throw new Error(`job ${jobId} not finished after ${timeoutMs} ms: ${JSON.stringify(r)}`);
    await sleep(200);
  }
}

// packages.update: { error } when the call itself is refused, else { jobId, record,
// snapshots } once the job ended.
export async function update(c, params, { token, onPoll } = {}) {
  const r = await call(c, 'packages.update', params, { token });
  if (r.error) return { error: r.error };
  assert.match(r.result?.job_id ?? '', /^[0-9a-f]{32}$/, JSON.stringify(r.result));
  return { jobId: r.result.job_id, ...await follow(c, r.result.job_id, { onPoll }) };
}

// The error of a refused update, whether the call refused it at once or its job failed with it
// (which one is the methods' choice: the interface fixes the code and reason only).
export function refusal(u) {
  if (u.error) return u.error;
  assert.equal(u.record.state, 'failed', `the update should fail: ${JSON.stringify(u.record)}`);
  return u.record.error;
}

// Checks a finished update's progress: every phase one of PHASES, percentages between 0 and
// 100 that never go down, the record ending at 100 % "done".
export function checkProgress(record, snapshots) {
  let last = -1;
  for (const s of snapshots) {
    if (!s.progress) continue;
    const { percent, phase } = s.progress;
    assert.ok(Number.isInteger(percent) && percent >= 0 && percent <= 100, JSON.stringify(s));
    assert.ok(percent >= last, `progress went down: ${JSON.stringify(snapshots)}`);
    last = percent;
    if (phase !== undefined) assert.ok(PHASES.includes(phase), `unknown phase ${phase}`);
  }
  assert.equal(record.progress.percent, 100, JSON.stringify(record.progress));
  assert.equal(record.progress.phase, 'done', JSON.stringify(record.progress));
}
export const phasesOf = (snapshots) => [...new Set(snapshots.map((s) => s.progress?.phase).filter(Boolean))];

// The containers the apt-family checks run in: without PackageKit (the agent drives apt-get)
// and with it (the agent's PackageKit client). rootfs: null (the release's base tree) or a
// function (log) → a tree for startContainer's `lower`; backend: what the agent reports;
// prepare(c): what the container needs once booted.
export function aptVariants(release) {
  return [
    { name: 'PackageKit absent', rootfs: null, backend: 'apt', prepare: async () => {} },
    {
      name: 'PackageKit installed',
      rootfs: (log) => ensureDerivedRootfs(release, 'packagekit', ['packagekit', 'polkitd'], { log }),
      backend: 'packagekit',
      // PackageKit refuses to download while it believes the machine offline (GLib's network
      // monitor: no default route), and the container has only its loopback. An instance has
      // a default route.
      prepare: (c) => c.run('ip route add default dev lo'),
    },
  ];
}

// The agent's service: its main pid, and a wait until it is active.
export async function mainPid(c) {
  return Number((await c.run(`systemctl show -p MainPID --value ${UNIT}`)).stdout.trim());
}
export async function waitActive(c, timeoutMs = 60000) {
  const end = Date.now() + timeoutMs;
  while ((await c.run(`systemctl is-active ${UNIT}`, { allowFail: true })).stdout.trim() !== 'active') {
    if (Date.now() > end) throw new Error(`${UNIT} not active after ${timeoutMs} ms`);
    await sleep(100);
  }
}

// packages.update while `holder` (lib/debrepo.mjs holdDpkgLock, lib/rpmrepo.mjs
// holdRpmdbLock) holds the package manager's lock: once the job reports "waiting for lock",
// waits 2 s more (still within lock_timeout), runs whileHeld() (checks that nothing was
// installed), and releases the lock. The job must then succeed. Returns { record, snapshots,
// released } (released: when the lock was let go, for the order of the phases).
export async function updateThroughLock(c, params, holder, whileHeld) {
  let released = 0;
  const u = await update(c, params, {
    onPoll: async (record) => {
      if (!released && record.state === 'running' && record.progress?.phase === 'waiting for lock') {
        await sleep(2000);
        await whileHeld();
        await holder.release();
        released = Date.now();
      }
    },
  });
  assert.equal(u.error, undefined, JSON.stringify(u.error));
  assert.ok(released, `the job never reported "waiting for lock": ${JSON.stringify(u.snapshots)}`);
  assert.equal(u.record.state, 'succeeded', JSON.stringify(u.record));
  return { record: u.record, snapshots: u.snapshots, released };
}

// A subtest maker for test t in container c: step(name, fn) runs fn as a subtest and, when it
// fails, adds the agent's journal of the step's time to its diagnostics.
export function stepper(t, c) {
  return async (name, fn) => {
    const cursor = (await c.run('journalctl -n 0 --show-cursor --no-pager | sed -n "s/^-- cursor: //p"')).stdout.trim();
    return t.test(name, async (st) => {
      try {
        await fn(st);
      } catch (e) {
        const since = cursor ? `--after-cursor=${q(cursor)}` : '';
        const log = await c.run(`journalctl -u ${UNIT} --no-pager -o cat ${since} | tail -n 40`, { allowFail: true });
        // One diagnostic a line: the TAP reporter escapes newlines.
        st.diagnostic("the agent's log during this step:");
        for (const line of log.stdout.trimEnd().split('\n')) st.diagnostic(`  ${line}`);
        throw e;
      }
    });
  };
}

// packages.update started on a WebSocket session, which receives the job's notifications
// unasked, and followed with jobs.get as well: { jobId, record, snapshots (follow's), done
// (notify.jobs.done), notes (the notify.jobs.progress, in order) }.
export async function updateOnSession(c, params) {
  const ws = await openSession(c);
  try {
    const r = await ws.request('packages.update', params);
    assert.equal(r.error, undefined, JSON.stringify(r.error));
    const jobId = r.result.job_id;
    assert.match(jobId, /^[0-9a-f]{32}$/);
    const { record, snapshots } = await follow(c, jobId);
    const done = await ws.waitFor((m) => m.method === 'notify.jobs.done' && m.params.job_id === jobId, 10000);
    const notes = ws.notifications.filter((m) => m.method === 'notify.jobs.progress' && m.params.job_id === jobId);
    return { jobId, record, snapshots, done, notes };
  } finally {
    ws.close();
  }
}
