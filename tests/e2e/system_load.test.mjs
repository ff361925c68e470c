// system_load.current against what the machine itself says: df for the root file system,
// /proc/meminfo for memory, the clock for epoch.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { startAgent, rpc, run } from './lib/agent.mjs';

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
    if (load.gpuPctUsed !== null) {
      assert.ok(Array.isArray(load.gpuPctUsed) && load.gpuPctUsed.every((g) => Number.isInteger(g) && g >= 0 && g <= 100));
    }
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
