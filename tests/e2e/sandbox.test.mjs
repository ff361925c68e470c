// Escape and exhaustion attempts against the real daemon: the ones only the runtime can stop
// (instruction and memory budgets, deadlines, preemption, stack overflow) and operator-method
// loading (capability grants, name clashes, broken files), with the operator methods of
// tests/e2e/escape/ loaded as methods.d. Every attempt asserts the exact error, then that the
// agent still answers agent.info. Also `exosphere-guest-agent check`.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startAgent, rpc, run, bin, repo, join, slow, shippedMethods, waitForLog } from './lib/agent.mjs';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';

const escapeDir = join(repo, 'tests/e2e/escape');

let nextId = 1;
// One JSON-RPC call; resolves the response object and the time it took in ms.
async function call(agent, method, params) {
  const body = { jsonrpc: '2.0', id: nextId++, method };
  if (params !== undefined) body.params = params;
  const t0 = process.hrtime.bigint();
  const r = await rpc(agent, body);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  assert.equal(r.status, 200, r.body);
  return { ...r.json(), ms };
}

async function expectError(agent, method, code, params) {
  const r = await call(agent, method, params);
  assert.ok(r.error, `${method} answered ${JSON.stringify(r.result)}`);
  assert.equal(r.error.code, code, JSON.stringify(r.error));
  return r.error;
}

// The agent still serves after an attempt, and its load summary is intact.
// agent.info as root over the Unix socket: an administrator sees why files were skipped.
async function stillServes(agent) {
  const res = await rpc(agent, { jsonrpc: '2.0', id: 1, method: 'agent.info' }, { socketPath: agent.sock });
  const r = res.json();
  assert.ok(r.result, JSON.stringify(r.error));
  return r.result;
}

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function summary(ms) {
  const s = [...ms].sort((a, b) => a - b);
  return { p50: percentile(s, 50), p90: percentile(s, 90), max: s[s.length - 1] };
}

const fmt = (o) => Object.entries(o).map(([k, v]) => `${k} ${v.toFixed(1)} ms`).join(', ');

describe('sandbox: budgets and operator methods', () => {
  let agent;
  before(async () => {
    agent = await startAgent({
      tls: false,
      methodDirs: [shippedMethods],
      server: { call_timeout: '10s' },
      methods: {
        operator_dir: escapeDir,
        operator_capabilities: 'system.read',
        call_instruction_limit: 20000000,
        call_memory_limit: '64M',
        memory_limit: '256M',
      },
    });
  });
  after(async () => {
    await agent.stop();
    await agent.cleanup();
  });

  describe('the instruction budget', () => {
    for (const name of ['loop', 'loop_pcall', 'close_loop', 'coroutine_loop']) {
      it(`stops escape.${name} with -32007 (instructions)`, async () => {
        const err = await expectError(agent, `escape.${name}`, -32007);
        assert.equal(err.data.limit, 'instructions');
        assert.ok(err.data.request_id);
        await stillServes(agent);
      });
    }
  });

  describe('the memory budget', () => {
    for (const name of ['rep_bomb', 'table_bomb', 'memory_pcall']) {
      it(`stops escape.${name} with -32007 (memory)`, async () => {
        const err = await expectError(agent, `escape.${name}`, -32007);
        assert.equal(err.data.limit, 'memory');
        await stillServes(agent);
      });
    }

    it('gives the memory back: the same bomb is stopped the same way again', async () => {
      for (let i = 0; i < 3; i++) {
        const err = await expectError(agent, 'escape.table_bomb', -32007);
        assert.equal(err.data.limit, 'memory');
      }
      await stillServes(agent);
    });
  });

  it('ends endless recursion in a clean -32603 (stack overflow)', async () => {
    const err = await expectError(agent, 'escape.recursion', -32603);
    assert.ok(err.data.request_id);
    await waitForLog(agent, /method escape\.recursion failed .*stack overflow/);
    await stillServes(agent);
  });

  it('refuses a catastrophic pattern before it runs: -32007 (pattern)', async () => {
    const err = await expectError(agent, 'escape.pattern', -32007);
    assert.equal(err.data.limit, 'pattern');
    assert.match(err.message, /^string\.find: pattern "a\*a\*a\*a\*b" on a subject of 30000 bytes/);
    await waitForLog(agent, /pattern\.lua:7: string\.find: pattern/);
    await stillServes(agent);
  });

  it('preempts CPU-bound work inside the method\'s own coroutine and still answers it', async () => {
    for (let i = 0; i < 3; i++) {
      const r = await call(agent, 'escape.coroutine_spin');
      assert.equal(r.result, 3000000, JSON.stringify(r.error));
    }
    await stillServes(agent);
  });

  it('lets bindings wait, with the call\'s capabilities, inside the method\'s own coroutines', async () => {
    const r = await call(agent, 'escape.coroutine_sleep');
    assert.ok(r.result, JSON.stringify(r.error));
    assert.equal(r.result.values[0], 'a');
    assert.ok(r.result.values[1] >= 30, JSON.stringify(r.result));
    assert.equal(r.result.values[2], 'b');
    assert.match(r.result.loadavg, /^\d+\.\d+ /);
    await stillServes(agent);
  });

  it('refuses a wait inside table.sort before it starts, leaving nothing to resume the call early', async () => {
    const r = await call(agent, 'escape.wait_in_sort');
    assert.ok(r.result, JSON.stringify(r.error));
    assert.equal(r.result.ok, false);
    assert.match(r.result.err, /agent\.sleep cannot wait here/);
    assert.ok(r.result.waited_ms >= 200, `the next sleep returned after ${r.result.waited_ms} ms`);
    await stillServes(agent);
  });

  it('fails coroutine.yield at the top of a handler cleanly: -32603', async () => {
    await expectError(agent, 'escape.top_yield', -32603);
    await waitForLog(agent, /method escape\.top_yield failed .*coroutine\.yield outside a coroutine/);
    await stillServes(agent);
  });

  it('refuses a __gc finaliser: -32603', async () => {
    await expectError(agent, 'escape.gc', -32603);
    await waitForLog(agent, /gc\.lua:7: setmetatable: __gc is not allowed in methods/);
    await stillServes(agent);
  });

  it('bounds huge errors in the log and in the answer', async () => {
    await expectError(agent, 'escape.huge_error', -32603);
    const [line] = await waitForLog(agent, /method escape\.huge_error failed.*/);
    assert.ok(line && line.length < 4000, `log line of ${line && line.length} bytes`);
    const err = await expectError(agent, 'escape.huge_message', -32000);
    assert.ok(err.message.length < 1200, `message of ${err.message.length} bytes`);
    assert.match(err.message, /\(1000000 bytes in all\)$/);
    assert.equal(err.data, undefined);
    await stillServes(agent);
  });

  describe('capabilities', () => {
    it('refuses a binding the method did not declare: -32603', async () => {
      await expectError(agent, 'escape.run_ungranted', -32603);
      await waitForLog(agent, /run_ungranted\.lua:7: capability 'process\.run' is not granted to this method/);
      await stillServes(agent);
    });

    it('serves an operator method that declares what the configuration grants', async () => {
      const r = await call(agent, 'escape.read_granted');
      assert.match(r.result, /^\d+\.\d+ \d+\.\d+ \d+\.\d+ \d+\/\d+ \d+\n$/);
    });

    it('skips an operator file that declares a capability not granted, naming the setting', async () => {
      const info = await stillServes(agent);
      const s = info.methods.skipped.find((x) => x.file.endsWith('/declares_run.lua'));
      assert.ok(s, JSON.stringify(info.methods.skipped));
      assert.match(s.error, /declares capability 'process\.run', which is not granted to operator methods; add it to \[methods\] operator_capabilities/);
      await expectError(agent, 'escape.declares_run', -32601);
    });
  });

  describe('operator files', () => {
    it('skips one that takes a shipped name, naming both files, and keeps the shipped method', async () => {
      const info = await stillServes(agent);
      const s = info.methods.skipped.find((x) => x.file.endsWith('/clash.lua'));
      assert.ok(s, JSON.stringify(info.methods.skipped));
      assert.equal(s.line, 3);
      assert.equal(s.error, `${join(escapeDir, 'clash.lua')}:3: method 'agent.info' is already defined in `
        + `${join(shippedMethods, 'agent.lua')}; set [methods] allow_override = true to replace the shipped method`);
      assert.equal(typeof info.version, 'string');
    });

    it('skips a broken one with its path and line, and loads the others', async () => {
      const info = await stillServes(agent);
      const s = info.methods.skipped.find((x) => x.file.endsWith('/broken.lua'));
      assert.ok(s, JSON.stringify(info.methods.skipped));
      assert.equal(s.line, 5);
      assert.ok(s.error.startsWith(`${join(escapeDir, 'broken.lua')}:5: `), s.error);
      assert.equal(info.methods.skipped.length, 3, JSON.stringify(info.methods.skipped));
      const doc = (await call(agent, 'rpc.discover')).result;
      assert.ok(doc.methods.some((m) => m.name === 'escape.loop'));
      await waitForLog(agent, /skipping method file .*broken\.lua: .*broken\.lua:5: /);
    });
  });
});

describe('sandbox: deadlines and preemption', () => {
  let agent;
  before(async () => {
    agent = await startAgent({
      tls: false,
      methodDirs: [shippedMethods],
      server: { call_timeout: '2s' },
      methods: { operator_dir: escapeDir, call_instruction_limit: 4000000000 },
    });
  });
  after(async () => {
    await agent.stop();
    await agent.cleanup();
  });

  it('stops an endless loop at the deadline: -32004', async () => {
    const r = await call(agent, 'escape.loop');
    assert.equal(r.error && r.error.code, -32004, JSON.stringify(r));
    assert.ok(r.ms < 4000 * slow, `answered after ${r.ms} ms`);
    await stillServes(agent);
  });

  it('stops an endless loop under pcall at the deadline: -32004', async () => {
    await expectError(agent, 'escape.loop_pcall', -32004);
    await stillServes(agent);
  });

  it('keeps answering other calls while a CPU-bound call runs', async () => {
    const baseline = [];
    for (let i = 0; i < 20; i++) baseline.push((await call(agent, 'agent.info')).ms);
    const busy = call(agent, 'escape.busy', { ms: 1200 });
    await new Promise((r) => setTimeout(r, 100));
    const loaded = [];
    for (let i = 0; i < 20; i++) {
      const r = await call(agent, 'agent.info');
      assert.ok(r.result, JSON.stringify(r.error));
      loaded.push(r.ms);
    }
    const b = await busy;
    assert.ok(b.result && b.result.rounds > 0, JSON.stringify(b));
    const base = summary(baseline);
    const load = summary(loaded);
    const added = { p50: load.p50 - base.p50, p90: load.p90 - base.p90, max: load.max - base.max };
    console.log(`# agent.info latency alone: ${fmt(base)}`);
    console.log(`# agent.info latency beside a CPU-bound call: ${fmt(load)}`);
    console.log(`# added latency: ${fmt(added)}`);
    for (const ms of loaded) assert.ok(ms < 100 * slow, `a call took ${ms.toFixed(1)} ms beside the busy one`);
  });
});

describe('exosphere-guest-agent check', () => {
  const good = join(repo, 'docs/examples/methods.d/site_motd.lua');
  const bad = join(escapeDir, 'broken.lua');

  it('passes a good file, naming its methods', async () => {
    const r = await run(bin, ['check', good]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /site_motd\.lua: ok \(site\.motd\)/);
  });

  it('fails with status 1 and file:line messages when a file is broken', async () => {
    const r = await run(bin, ['check', good, bad]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /site_motd\.lua: ok/);
    assert.ok(r.stdout.includes(`${bad}:5: '}' expected (to close '{' at line 2) near ']'`), r.stdout);
  });

  it('reports the mistakes of every method of a file, each at its line', async () => {
    const file = join(repo, 'tests/e2e/check/declarations.lua');
    const r = await run(bin, ['check', file]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n'), [
      `${file}:3: method 'check.stability': stability must be one of experimental, stable, deprecated (got "beta")`,
      `${file}:8: method 'check.example': examples[1] does not match its schema: examples[1].result expected an integer, got a string`,
    ]);
  });

  it('with --config, checks files as operator methods: grants and shipped names', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'exo-check-'));
    try {
      const conf = join(dir, 'agent.conf');
      writeFileSync(conf, `[methods]\ndirs = ${shippedMethods}\noperator_capabilities = system.read\n`);
      const clash = join(escapeDir, 'clash.lua');
      const run_ = join(escapeDir, 'declares_run.lua');
      const r = await run(bin, ['check', '--config', conf, clash, run_, good]);
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(r.stdout, /clash\.lua:3: method 'agent\.info' is already defined in .*methods\/agent\.lua/);
      assert.match(r.stdout, /declares_run\.lua:4: .*'process\.run', which is not granted to operator methods/);
      assert.match(r.stdout, /site_motd\.lua: ok \(site\.motd\)/);
      // Without --config the same files are only checked on their own terms.
      const plain = await run(bin, ['check', clash, run_]);
      assert.equal(plain.code, 0, plain.stdout + plain.stderr);
      // A configuration that cannot be read is a usage error.
      const missing = await run(bin, ['check', '--config', join(dir, 'nope.conf'), good]);
      assert.equal(missing.code, 2);
      assert.match(missing.stderr, /nope\.conf/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('passes every shipped method file', async () => {
    const r = await run(bin, ['check', join(shippedMethods, 'agent.lua'), join(shippedMethods, 'system_load.lua')]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
  });

  it('exits 2 on usage errors', async () => {
    const r = await run(bin, ['check']);
    assert.equal(r.code, 2);
  });
});
