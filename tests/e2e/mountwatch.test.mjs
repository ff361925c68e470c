// The mount table watch (runtime/mountwatch.c): the worker polls /proc/self/mountinfo for
// POLLPRI and counts changes in a generation. The test mounts tmpfs file systems in this
// host's mount namespace (as root; the agent shares the namespace) and reads the generation
// through the e2e.mount_generation method, and the coalesced rounds from the worker's debug
// log ("mount table changed: generation N (...)").
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAgent, rpc, shippedMethods, testMethods, logLines, waitFor, slow, sleep } from './lib/agent.mjs';

const ROUND = /mount table changed: generation (\d+)/;
const root = process.getuid() === 0;
const canMount = root && spawnSync('mount', ['--version']).status === 0;

function sh(cmd) {
  const r = spawnSync('sh', ['-c', cmd], { encoding: 'utf8' });
  assert.equal(r.status, 0, `${cmd}: ${r.stderr}`);
}

// The generation the worker reports, by the method when the agent API has
// agent.mount_generation, else by its latest round in the log.
async function generation(agent) {
  const r = await rpc(agent, { jsonrpc: '2.0', id: 1, method: 'e2e.mount_generation', params: {} });
  const res = r.json().result;
  assert.ok(res, r.body);
  if (!res.missing) {
    assert.equal(res.watching, true);
    return res.generation;
  }
  const rounds = logLines(agent, ROUND);
  return rounds.length ? Number(rounds.at(-1).match(ROUND)[1]) : 0;
}

const roundsIn = (agent) => logLines(agent, ROUND).length;

// The generation once the mount table has been quiet for 300 ms (changes made earlier may
// still be arriving).
async function settled(agent) {
  let g = await generation(agent);
  for (;;) {
    await sleep(300);
    const now = await generation(agent);
    if (now === g) return g;
    g = now;
  }
}

describe('mount table watch', { skip: canMount ? false : 'needs root and mount(8)' }, () => {
  let agent, dir;
  const mounted = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'exo-mountwatch-'));
    agent = await startAgent({ methodDirs: [shippedMethods, testMethods], sections: { log: { level: 'debug' } } });
  });

  after(async () => {
    for (const m of mounted.reverse()) spawnSync('umount', ['-l', m]);
    if (agent) await agent.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  function mount(name) {
    const p = join(dir, name);
    mkdirSync(p, { recursive: true });
    sh(`mount -t tmpfs -o size=1m exo-e2e ${p}`);
    mounted.push(p);
    return p;
  }

  function umount(p) {
    sh(`umount ${p}`);
    mounted.splice(mounted.indexOf(p), 1);
  }

  it('a mount and an unmount each move the generation within 1 s', async () => {
    const g0 = await settled(agent);
    const p = mount('one');
    const g1 = await waitFor(async () => { const g = await generation(agent); return g > g0 && g; }, 1000 * slow, 'the mount');
    umount(p);
    await waitFor(async () => (await generation(agent)) > g1, 1000 * slow, 'the unmount');
  });

  it('a burst of 50 mounts coalesces into few rounds, and the last change is reported', async () => {
    const g0 = await settled(agent);
    const r0 = roundsIn(agent);
    const t0 = Date.now();
    const paths = Array.from({ length: 50 }, (_, i) => join(dir, `burst${i}`));
    for (const p of paths) mkdirSync(p);
    sh(paths.map((p) => `mount -t tmpfs -o size=1m exo-e2e ${p}`).join(' && '));
    mounted.push(...paths);
    const burstMs = Date.now() - t0;
    // Quiet now: after the quiet time, the last round has reported the last change.
    await sleep(400);
    const rounds = logLines(agent, ROUND).slice(r0);
    const gEnd = await generation(agent);
    assert.ok(gEnd > g0, `generation ${g0} -> ${gEnd}`);
    assert.equal(Number(rounds.at(-1).match(ROUND)[1]), gEnd, rounds.join('\n'));
    // One round at the start of the burst, then at most one per 100 ms, and one at the end.
    assert.ok(rounds.length >= 1 && rounds.length <= Math.ceil(burstMs / 100) + 3,
      `${rounds.length} rounds for a burst of ${burstMs} ms`);
    assert.ok(rounds.length < 50, `${rounds.length} rounds`);
    sh(paths.map((p) => `umount ${p}`).join(' && '));
    mounted.splice(mounted.length - paths.length, paths.length);
    await waitFor(async () => (await generation(agent)) > gEnd, 1000 * slow, 'the unmounts');
  });

  it('keeps counting across a method reload (SIGHUP)', async () => {
    const g0 = await settled(agent);
    const reloads = logLines(agent, /reloaded methods/).length;
    agent.proc.kill('SIGHUP');
    await waitFor(() => logLines(agent, /reloaded methods/).length > reloads, 5000 * slow, 'the reload');
    assert.equal(await generation(agent), g0);
    const p = mount('after-reload');
    await waitFor(async () => (await generation(agent)) > g0, 1000 * slow, 'the mount after the reload');
    umount(p);
  });
});
