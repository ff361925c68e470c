// system_load.current against what the machine itself says: df for the root file system,
// /proc/meminfo for memory, the clock for epoch.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, mkdtempSync, mkdirSync, chmodSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAgent, rpc, run, waitFor, waitForLog, repo, slow } from './lib/agent.mjs';
import { injector, frame } from './lib/privsep.mjs';


describe('system_load.current', () => {
  let agent;
  before(async () => { agent = await startAgent({ methods: { cpu_sample_interval: '200ms' } }); });
  after(async () => {
    await agent.close();
  });

  // A user method: asked over the Unix socket, where root is known by its peer credentials.
  async function current(extra = {}) {
    const r = await rpc(agent, { jsonrpc: '2.0', id: 1, method: 'system_load.current' }, { socketPath: agent.sock, ...extra });
    assert.equal(r.status, 200);
    const v = r.json();
    assert.equal(v.error, undefined, r.body);
    return v.result;
  }

  it('has exactly the keys of the console line, with integer percentages', async () => {
    const load = await current();
    assert.deepEqual(Object.keys(load).sort(), ['cpuPctUsed', 'epoch', 'gpuPctUsed', 'memPctUsed', 'rootfsPctUsed']);
    for (const k of ['epoch', 'cpuPctUsed', 'memPctUsed', 'rootfsPctUsed']) {
      assert.ok(Number.isInteger(load[k]), `${k} = ${load[k]}`);
    }
    for (const k of ['cpuPctUsed', 'memPctUsed', 'rootfsPctUsed']) {
      assert.ok(load[k] >= 0 && load[k] <= 100, `${k} = ${load[k]}`);
    }
    // Since API version 2027-01-15 a list, empty without a GPU (null for 2026-12-01 clients).
    assert.ok(Array.isArray(load.gpuPctUsed) && load.gpuPctUsed.every((g) => Number.isInteger(g) && g >= 0 && g <= 100));
  });

  it('the percentages are sent as integers in the JSON text', async () => {
    const r = await rpc(agent, { jsonrpc: '2.0', id: 1, method: 'system_load.current' }, { socketPath: agent.sock });
    for (const k of ['epoch', 'cpuPctUsed', 'memPctUsed', 'rootfsPctUsed']) {
      assert.match(r.body, new RegExp(`"${k}":\\d+[,}]`));
    }
  });

  it('epoch is now', async () => {
    const before_ = Math.floor(Date.now() / 1000);
    const load = await current();
    const after_ = Math.ceil(Date.now() / 1000);
    assert.ok(load.epoch >= before_ - 2 && load.epoch <= after_ + 2, `epoch ${load.epoch}, now ${before_}`);
  });

  it('rootfsPctUsed matches df --output=pcent / (±1)', async () => {
    const load = await current();
    const df = await run('df', ['--output=pcent', '/']);
    const pct = Number(df.stdout.trim().split('\n')[1].trim().replace('%', ''));
    assert.ok(Math.abs(load.rootfsPctUsed - pct) <= 1, `agent ${load.rootfsPctUsed}, df ${pct}`);
  });

  it('memPctUsed matches 100 - MemAvailable / MemTotal * 100 (±2)', async () => {
    const load = await current();
    const info = readFileSync('/proc/meminfo', 'utf8');
    const total = Number(info.match(/MemTotal:\s*(\d+)/)[1]);
    const available = Number(info.match(/MemAvailable:\s*(\d+)/)[1]);
    const pct = 100 - (available / total) * 100;
    assert.ok(Math.abs(load.memPctUsed - pct) <= 2, `agent ${load.memPctUsed}, /proc/meminfo ${pct.toFixed(1)}`);
  });

  it('cpuPctUsed follows a busy CPU', async () => {
    // A child process keeps one CPU busy for a while; the share over the sampling window
    // must then be above zero (on any number of CPUs).
    const busy = run(process.execPath, ['-e', 'const e = Date.now() + 1200; while (Date.now() < e);']);
    await new Promise((r) => setTimeout(r, 800));
    const load = await current();
    await busy;
    assert.ok(load.cpuPctUsed > 0, `cpuPctUsed ${load.cpuPctUsed}`);
  });

  it('answers the same over the Unix socket', async () => {
    const load = await current({ socketPath: agent.sock });
    assert.deepEqual(Object.keys(load).sort(), ['cpuPctUsed', 'epoch', 'gpuPctUsed', 'memPctUsed', 'rootfsPctUsed']);
  });
});

// The history (system_load.historical) and the console load line: the worker samples
// system_load.current at each multiple of [system_load] interval, the monitor keeps the
// samples in state_dir/load-history and writes each to the console device (here a file).
describe('system_load history and the console load line', () => {
  const LINE = /^\{"epoch":(\d+),"cpuPctUsed":(\d+),"memPctUsed":(\d+),"rootfsPctUsed":(\d+),"gpuPctUsed":(null|\[\d+(,\d+)*\])\}$/;
  const loadLines = (file) => readFileSync(file, 'utf8').split('\n').filter((l) => l.includes('cpuPctUsed'));

  function agentDir() {
    const dir = mkdtempSync(join(tmpdir(), 'exo-load-'));
    chmodSync(dir, 0o755);
    const consoleFile = join(dir, 'console');
    writeFileSync(consoleFile, '');
    return { dir, consoleFile, history: join(dir, 'state', 'load-history') };
  }

  const start = (dir, consoleFile, extra = {}) => startAgent({
    dir, methods: { cpu_sample_interval: '200ms' },
    sections: { console: { device: consoleFile, status_line: 'false' }, system_load: { interval: '1s', console_line: 'true', ...extra } },
  });

  // The samples, as a client of API version `version` (default: the current one) gets them.
  async function historical(agent, params = {}, version) {
    const headers = version ? { 'Exosphere-Agent-Version': version } : {};
    const r = await rpc(agent, { jsonrpc: '2.0', id: 1, method: 'system_load.historical', params }, { socketPath: agent.sock, headers });
    assert.equal(r.status, 200);
    const v = r.json();
    assert.equal(v.error, undefined, r.body);
    return v.result;
  }

  it('writes one exact console line per sample, and historical returns the same samples', async () => {
    const { dir, consoleFile, history } = agentDir();
    const agent = await start(dir, consoleFile);
    try {
      await waitFor(() => loadLines(consoleFile).length >= 3, 8000 * slow, 'three load lines');
      // Each sample also went to host.emit("notify.system_load", ...) (runtime/events.c), which
      // found no subscriber; a failure on that path would be logged.
      assert.doesNotMatch(agent.log, /notifications:/);
      const lines = loadLines(consoleFile);
      const epochs = lines.map((l) => {
        const m = l.match(LINE);
        assert.ok(m, `not the console line's shape: ${l}`);
        for (const pct of [m[2], m[3], m[4]]) assert.ok(Number(pct) <= 100, l);
        return Number(m[1]);
      });
      for (let i = 1; i < epochs.length; i++) assert.ok(epochs[i] > epochs[i - 1], `epochs ${epochs}`);
      const now = Math.floor(Date.now() / 1000);
      assert.ok(Math.abs(epochs.at(-1) - now) <= 3, `newest epoch ${epochs.at(-1)}, now ${now}`);
      // The console line has 2026-12-01's shape (gpuPctUsed null without a GPU): a client of
      // that version gets exactly the console's samples; the current version a list.
      const samples = await historical(agent, {}, '2026-12-01');
      const byEpoch = new Map(samples.map((s) => [s.epoch, s]));
      const current = new Map((await historical(agent)).map((s) => [s.epoch, s]));
      for (const l of lines) {
        const v = JSON.parse(l);
        assert.deepEqual(byEpoch.get(v.epoch), v, `historical lacks the console sample ${l}`);
        assert.deepEqual(current.get(v.epoch), { ...v, gpuPctUsed: v.gpuPctUsed ?? [] }, l);
      }
      // The file is the monitor's: root's, private.
      const st = statSync(history);
      assert.equal(st.uid, 0);
      assert.equal(st.mode & 0o777, 0o600);
      assert.match(readFileSync(history, 'utf8'), /^(\d+ \d+ \d+ \d+ (-|\d+(,\d+)*)\n)+$/);
      // from, to and limit; since and until for 2026-12-01, whose error names its own params.
      const [a, b] = [epochs[0], epochs[1]];
      assert.deepEqual((await historical(agent, { from: a, to: b })).map((s) => s.epoch), [a, b]);
      assert.deepEqual((await historical(agent, { since: a, until: b }, '2026-12-01')).map((s) => s.epoch), [a, b]);
      assert.equal((await historical(agent, { limit: 1 })).length, 1);
      const ask = (params, version) => rpc(agent, { jsonrpc: '2.0', id: 1, method: 'system_load.historical', params },
        { socketPath: agent.sock, headers: version ? { 'Exosphere-Agent-Version': version } : {} });
      let bad = await ask({ from: b, to: a });
      assert.deepEqual(bad.json().error, { code: -32602, message: 'Invalid params', data: { path: 'params.to', reason: `is ${a}, before from (${b})` } });
      bad = await ask({ since: b, until: a }, '2026-12-01');
      assert.deepEqual(bad.json().error, { code: -32602, message: 'Invalid params', data: { path: 'params.until', reason: `is ${a}, before since (${b})` } });
      bad = await ask({ since: a });
      assert.equal(bad.json().error.data.path, 'params.since');
    } finally {
      await agent.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('keeps the history across a worker restart and a full agent restart, from a file with damaged lines', async () => {
    const { dir, consoleFile, history } = agentDir();
    // 600 samples of an hour ago (more than one 8 KiB page of the monitor's answers) and two
    // damaged lines, as a crash or a hand edit could leave them.
    mkdirSync(join(dir, 'state'), { mode: 0o700 });
    const t0 = Math.floor(Date.now() / 1000) - 3600;
    let text = '';
    for (let i = 0; i < 600; i++) text += `${t0 + i} ${i % 101} 50 40 ${i % 2 ? '-' : '7,8'}\n`;
    writeFileSync(history, `${text}garbage\n${t0 + 700} 101 1 1 -\n`, { mode: 0o600 });
    let agent = await start(dir, consoleFile);
    try {
      await waitForLog(agent, /load-history: skipped 2 damaged lines of 602/);
      const seeded = await waitFor(async () => { const s = await historical(agent); return s.length >= 601 && s; }, 5000 * slow, 'the seeded history');
      assert.deepEqual(seeded[0], { epoch: t0, cpuPctUsed: 0, memPctUsed: 50, rootfsPctUsed: 40, gpuPctUsed: [7, 8] });
      assert.deepEqual(seeded[599], { epoch: t0 + 599, cpuPctUsed: 599 % 101, memPctUsed: 50, rootfsPctUsed: 40, gpuPctUsed: [] });
      const old = await historical(agent, { since: t0 + 599, until: t0 + 599 }, '2026-12-01');
      assert.deepEqual(old, [{ epoch: t0 + 599, cpuPctUsed: 599 % 101, memPctUsed: 50, rootfsPctUsed: 40, gpuPctUsed: null }]);
      await waitFor(() => loadLines(consoleFile).length >= 2, 5000 * slow, 'new samples');
      const before = (await historical(agent)).map((s) => s.epoch);

      const w = agent.workerPid();
      process.kill(w, 'SIGKILL');
      await waitFor(() => { const p = agent.workerPid(); return p && p !== w; }, 5000 * slow, 'a new worker');
      const afterKill = await waitFor(async () => {
        const s = await historical(agent).catch(() => []);
        return s.length > before.length && s.map((x) => x.epoch);
      }, 5000 * slow, 'the history in the new worker');
      for (const e of before) assert.ok(afterKill.includes(e), `epoch ${e} lost when the worker restarted`);

      await agent.close();
      agent = await start(dir, consoleFile);
      const afterRestart = await waitFor(async () => {
        const s = await historical(agent);
        return s.length > afterKill.length && s.map((x) => x.epoch);
      }, 5000 * slow, 'the history after a restart');
      for (const e of afterKill) assert.ok(afterRestart.includes(e), `epoch ${e} lost when the agent restarted`);
    } finally {
      await agent.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('console_line = false writes no load line, and the history is still kept', async () => {
    const { dir, consoleFile } = agentDir();
    const agent = await start(dir, consoleFile, { console_line: 'false' });
    try {
      await waitFor(async () => (await historical(agent)).length >= 2, 5000 * slow, 'two samples');
      assert.equal(readFileSync(consoleFile, 'utf8'), '');
    } finally {
      await agent.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('without system_load.current, warns once (not every interval) and writes nothing', async () => {
    const { dir, consoleFile } = agentDir();
    const agent = await startAgent({
      dir, methodDirs: [join(repo, 'tests/e2e/methods')],
      sections: { console: { device: consoleFile, status_line: 'false' }, system_load: { interval: '1s', console_line: 'true' } },
    });
    try {
      await waitForLog(agent, /load sampler: system_load.current failed: Method not found/);
      await new Promise((r) => setTimeout(r, 2500));
      assert.equal(agent.log.match(/load sampler: system_load.current failed/g).length, 1, agent.log);
      assert.equal(readFileSync(consoleFile, 'utf8'), '');
    } finally {
      await agent.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  const FORGED = 1700000001; // an epoch no sampler takes now
  const future = String(Math.floor(Date.now() / 1000) + 2 * 86400);
  for (const [what, fields, logged] of [
    ['a percentage over 100', [String(FORGED), '101', '5', '5', ''], /the worker sent a load sample with a percentage that is not an integer from 0 to 100/],
    ['17 GPUs', [String(FORGED), '1', '5', '5', Array(17).fill('1').join(',')], /the worker sent a load sample with a bad GPU list/],
    ['an epoch two days ahead', [future, '1', '5', '5', ''], /the worker sent a load sample with an epoch more than a day in the future/],
    ['a text where a number goes', [String(FORGED), '1"}', '5', '5', ''], /the worker sent a load sample with a percentage/],
    ['a history request with a bad epoch', ['-5'], /the worker sent a load history request with a bad epoch/],
  ]) {
    it(`a forged request with ${what} ends the worker and writes nothing`, async () => {
      const { dir, consoleFile, history } = agentDir();
      // A sample an hour: only the first, at start, is written by the agent itself.
      const agent = await start(dir, consoleFile, { interval: '1h' });
      try {
        await waitFor(() => loadLines(consoleFile).length >= 1, 5000 * slow, 'the first load line');
        const w = agent.workerPid();
        const op = fields.length === 1 ? 5 : 4;
        const r = await run(injector, [String(w), frame(op, 7, fields)]);
        assert.equal(r.code, 0, r.stderr);
        await waitForLog(agent, logged);
        await waitFor(() => { const p = agent.workerPid(); return p && p !== w; }, 12000 * slow, 'a new worker');
        for (const text of [readFileSync(consoleFile, 'utf8'), readFileSync(history, 'utf8')]) {
          assert.ok(!text.includes(String(FORGED)) && !text.includes(future) && !/\b101\b/.test(text), text);
        }
        for (const s of await historical(agent)) assert.ok(s.epoch !== FORGED && String(s.epoch) !== future);
      } finally {
        await agent.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});
