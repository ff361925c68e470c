// The agent's lifecycle: start-up time, SIGTERM/SIGINT draining, SIGHUP reloads (good and
// broken method files), call deadlines for sleeping and CPU-bound methods, and clients that
// go away in the middle of a call.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import { join } from 'node:path';
import {
  startAgent, request, rpc, rawClient, shippedMethods, testMethods, waitFor, waitForLog, logLines, sleep, slow,
} from './lib/agent.mjs';

const call = (method, params, id = 1) => ({ jsonrpc: '2.0', id, method, params });
const post = (body) => `POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
  `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;

// A new TCP connection to the agent: resolves 'refused' or 'connected'.
function tryConnect(port) {
  return new Promise((res) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.on('connect', () => { s.destroy(); res('connected'); });
    s.on('error', (e) => res(e.code === 'ECONNREFUSED' ? 'refused' : e.code));
  });
}

// A method file whose answer is `answer`, with a slow variant for in-flight calls.
const reloadFile = (answer) => `return {
  method({
    name = "reload.answer", summary = "The current answer", since = "2026-12-01",
    stability = "experimental", permission = "public", result = T.string(),
    examples = { { name = "now", params = {}, result = "${answer}" } },
    handler = function(ctx, params) return "${answer}" end,
  }),
  method({
    name = "reload.slow", summary = "The answer, after ms milliseconds", since = "2026-12-01",
    stability = "experimental", permission = "public",
    params = T.object({ ms = T.integer() }), result = T.string(),
    examples = { { name = "later", params = { ms = 1 }, result = "${answer}" } },
    handler = function(ctx, params) agent.sleep(params.ms); return "${answer}" end,
  }),
}
`;

describe('start-up', () => {
  it('time from spawn to the first /healthz answer', async (t) => {
    const agent = await startAgent();
    try {
      await waitFor(async () => {
        try {
          return (await request(agent, { path: '/healthz' })).status === 200;
        } catch {
          return false;
        }
      }, 10000, '/healthz');
      const ms = Number(process.hrtime.bigint() - agent.started) / 1e6;
      t.diagnostic(`spawn to first /healthz answer: ${ms.toFixed(1)} ms`);
      assert.ok(ms < 10000);
    } finally {
      await agent.close();
    }
  });
});

describe('SIGTERM and SIGINT', () => {
  it('SIGTERM while a slow call runs: the call is answered, new connections are refused, exit 0', async () => {
    const agent = await startAgent({ methodDirs: [shippedMethods, testMethods] });
    try {
      const inflight = rpc(agent, call('e2e.sleep', { ms: 1000 }));
      const keep = await rawClient(agent);
      keep.write(post(JSON.stringify(call('e2e.sleep', { ms: 800 }, 'k'))));
      await sleep(200);
      const t0 = Date.now();
      agent.proc.kill('SIGTERM');
      await waitForLog(agent, /SIGTERM: draining/);
      // A new connection is refused: the listeners are closed.
      assert.equal(await tryConnect(agent.port), 'refused');
      // On a connection with a call in flight, /healthz now answers 503 draining, and a
      // new call is refused.
      keep.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n' + post(JSON.stringify(call('spec.get_data'))));
      const r = await inflight;
      assert.equal(r.status, 200);
      assert.deepEqual(r.json().result, { slept: 1000 });
      assert.equal(r.headers.connection, 'close');
      const [k, h, n] = await keep.responses(3);
      assert.deepEqual(JSON.parse(k.body).result, { slept: 800 });
      assert.equal(h.status, 503);
      assert.deepEqual(JSON.parse(h.body), { status: 'draining' });
      assert.equal(n.status, 503);
      assert.equal(n.headers.connection, 'close');
      assert.ok(await keep.closed());
      const exit = await agent.wait();
      assert.deepEqual(exit, { code: 0, signal: null });
      assert.ok(Date.now() - t0 < 3000 * slow, `exited ${Date.now() - t0} ms after SIGTERM`);
      assert.match(agent.log, /stopped/);
    } finally {
      await agent.cleanup();
    }
  });

  it('SIGINT drains the same way', async () => {
    const agent = await startAgent({ methodDirs: [shippedMethods, testMethods] });
    try {
      const inflight = rpc(agent, call('e2e.sleep', { ms: 300 }));
      await sleep(100);
      agent.proc.kill('SIGINT');
      assert.deepEqual((await inflight).json().result, { slept: 300 });
      assert.deepEqual(await agent.wait(), { code: 0, signal: null });
      assert.match(agent.log, /SIGINT: draining/);
    } finally {
      await agent.cleanup();
    }
  });

  it('an idle agent exits at once; idle keep-alive connections are closed', async () => {
    const agent = await startAgent();
    try {
      const c = await rawClient(agent);
      c.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
      await c.responses(1);
      const t0 = Date.now();
      assert.deepEqual(await agent.stop(), { code: 0, signal: null });
      assert.ok(Date.now() - t0 < 1000 * slow, `${Date.now() - t0} ms`);
      assert.ok(await c.closed());
    } finally {
      await agent.cleanup();
    }
  });

  it('a call longer than drain_timeout is abandoned and the agent still exits 0 in time', async () => {
    const agent = await startAgent({ methodDirs: [shippedMethods, testMethods], server: { drain_timeout: '1s' } });
    try {
      const inflight = rpc(agent, call('e2e.sleep', { ms: 20000 })).catch((e) => e);
      await sleep(200);
      const t0 = Date.now();
      agent.proc.kill('SIGTERM');
      const exit = await agent.wait();
      const took = Date.now() - t0;
      assert.deepEqual(exit, { code: 0, signal: null });
      assert.ok(took >= 900 && took < 1000 + 1500 * slow, `exited ${took} ms after SIGTERM`);
      assert.match(agent.log, /drain timeout/);
      const r = await inflight;
      assert.ok(r instanceof Error, 'the abandoned call gets no answer');
    } finally {
      await agent.cleanup();
    }
  });

  it('a timed-out call whose sleep is still pending does not hold up the exit', async () => {
    const agent = await startAgent({ methodDirs: [shippedMethods, testMethods], server: { call_timeout: '300ms' } });
    try {
      const r = await rpc(agent, call('e2e.sleep', { ms: 20000 }));
      assert.equal(r.json().error.code, -32004);
      const t0 = Date.now();
      assert.deepEqual(await agent.stop(), { code: 0, signal: null });
      assert.ok(Date.now() - t0 < 1500 * slow, `exited ${Date.now() - t0} ms after SIGTERM`);
    } finally {
      await agent.cleanup();
    }
  });
});

describe('SIGHUP reload', () => {
  let agent;
  let dir;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'exo-e2e-reload-'));
    mkdirSync(join(dir, 'methods'));
    writeFileSync(join(dir, 'methods', 'reload.lua'), reloadFile('one'));
    copyFileSync(join(testMethods, 'spec.lua'), join(dir, 'methods', 'spec.lua'));
    agent = await startAgent({ methodDirs: [shippedMethods, join(dir, 'methods')] });
  });
  after(async () => {
    await agent.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const answer = async () => (await rpc(agent, call('reload.answer'))).json();
  async function hup(n) {
    agent.proc.kill('SIGHUP');
    const re = /reloaded methods|reload failed/;
    await waitFor(() => logLines(agent, re).length >= n, 5000, `reload ${n}`);
    return logLines(agent, re)[n - 1];
  }

  it('new calls get the new methods; a call in flight finishes on the old ones', async () => {
    assert.equal((await answer()).result, 'one');
    const inflight = rpc(agent, call('reload.slow', { ms: 600 }));
    await sleep(100);
    writeFileSync(join(dir, 'methods', 'reload.lua'), reloadFile('two'));
    const line = await hup(1);
    assert.match(line, /reloaded methods/);
    assert.equal((await answer()).result, 'two');
    assert.equal((await rpc(agent, call('reload.slow', { ms: 1 }))).json().result, 'two');
    assert.equal((await inflight).json().result, 'one');
    // The document follows the reload.
    const doc = (await request(agent, { path: '/openrpc.json' })).json();
    const m = doc.methods.find((x) => x.name === 'reload.answer');
    assert.equal(m.examples[0].result.value, 'two');
  });

  it('a broken method file fails the reload: every old method keeps serving', async () => {
    writeFileSync(join(dir, 'methods', 'reload.lua'), 'return method({ name = "reload.answer", -- broken\n');
    const line = await hup(2);
    const file = join(dir, 'methods', 'reload.lua');
    assert.match(line, /reload failed, still serving the methods loaded before/);
    await waitForLog(agent, new RegExp(`skipping method file ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: .*reload\\.lua:\\d+`));
    // The broken file's methods still answer as before, and so do the others.
    assert.equal((await answer()).result, 'two');
    assert.equal((await rpc(agent, call('spec.subtract', [3, 1]))).json().result, 2);
    const info = (await rpc(agent, call('agent.info', {}))).json().result;
    assert.deepEqual(info.methods.skipped, []);
  });

  it('after the file is fixed, the next SIGHUP brings its methods back', async () => {
    writeFileSync(join(dir, 'methods', 'reload.lua'), reloadFile('three'));
    await hup(3);
    await waitFor(async () => (await answer()).result === 'three', 2000, 'answer three');
    const info = (await rpc(agent, call('agent.info', {}))).json().result;
    assert.deepEqual(info.methods.skipped, []);
  });
});

describe('call deadlines', () => {
  let agent;
  before(async () => {
    // The instruction limit is raised so that the deadline, not the limit, stops the loops.
    agent = await startAgent({
      methodDirs: [shippedMethods, testMethods], server: { call_timeout: '1s' },
      methods: { call_instruction_limit: 4000000000 },
    });
  });
  after(async () => {
    await agent.close();
  });

  for (const [what, method, params] of [['a sleeping method', 'e2e.sleep', { ms: 5000 }],
    ['a CPU-bound loop', 'e2e.spin', undefined], ['a CPU-bound loop that catches every error', 'e2e.spin_pcall', undefined]]) {
    it(`${what} is stopped with -32004 at call_timeout, and the agent keeps serving`, async () => {
      const t0 = Date.now();
      const r = await rpc(agent, call(method, params));
      const took = Date.now() - t0;
      const { error } = r.json();
      assert.equal(error.code, -32004, r.body);
      assert.equal(error.message, 'Timeout');
      assert.equal(error.data.request_id, r.headers['x-request-id']);
      assert.ok(took >= 950 && took < 1000 + 1000 * slow, `answered after ${took} ms`);
      assert.equal((await request(agent, { path: '/healthz' })).status, 200);
      assert.equal((await rpc(agent, call('spec.subtract', [2, 1]))).json().result, 1);
      await waitForLog(agent, new RegExp(`${method.replace('.', '\\.')}.*${r.headers['x-request-id']}`));
    });
  }

  it('each batch entry has its own deadline; the others are answered', async () => {
    const r = await rpc(agent, [call('e2e.spin', undefined, 1), call('spec.subtract', [5, 1], 2)]);
    const [a, b] = r.json();
    assert.equal(a.error.code, -32004);
    assert.equal(b.result, 4);
  });

  it('other connections are served while a CPU-bound call runs', async () => {
    const spinning = rpc(agent, call('e2e.spin'));
    await sleep(100);
    const t0 = Date.now();
    const r = await request(agent, { path: '/healthz' });
    assert.equal(r.status, 200);
    assert.ok(Date.now() - t0 < 500 * slow, `/healthz took ${Date.now() - t0} ms`);
    assert.equal((await spinning).json().error.code, -32004);
  });

  it('other connections are served while a call sleeps', async () => {
    const slowCall = rpc(agent, call('e2e.sleep', { ms: 700 }));
    const t0 = Date.now();
    const r = await rpc(agent, call('spec.get_data'));
    assert.ok(Date.now() - t0 < 500, 'not held up by the sleeping call');
    assert.deepEqual(r.json().result, ['hello', 5]);
    assert.deepEqual((await slowCall).json().result, { slept: 700 });
  });
});

describe('per-call limits', () => {
  let agent;
  before(async () => {
    agent = await startAgent({
      methodDirs: [shippedMethods, testMethods], server: { call_timeout: '10s' },
      methods: { call_instruction_limit: 1000000, call_memory_limit: '1M' },
    });
  });
  after(async () => {
    await agent.close();
  });

  for (const [method, limit] of [['e2e.spin', 'instructions'], ['e2e.spin_pcall', 'instructions'], ['e2e.hog', 'memory']]) {
    it(`${method} is stopped with -32007 LimitExceeded (${limit}), and the agent keeps serving`, async () => {
      const r = await rpc(agent, call(method));
      const { error } = r.json();
      assert.equal(error.code, -32007, r.body);
      assert.equal(error.data.limit, limit);
      assert.equal(error.data.request_id, r.headers['x-request-id']);
      assert.equal((await rpc(agent, call('spec.subtract', [2, 1]))).json().result, 1);
    });
  }
});

describe('clients that go away', () => {
  let agent;
  before(async () => {
    agent = await startAgent({ methodDirs: [shippedMethods, testMethods] });
  });
  after(async () => {
    await agent.close();
  });

  it('a client that disconnects mid-call: the call is cancelled, the agent keeps serving', async () => {
    for (const transport of ['tls', 'unix']) {
      const c = await rawClient(agent, { unix: transport === 'unix' });
      c.write(post(JSON.stringify(call('e2e.sleep', { ms: 400 }))));
      await sleep(100);
      c.destroy();
    }
    // Mid-batch, and with pipelined requests behind the call.
    const b = await rawClient(agent);
    b.write(post(JSON.stringify([call('e2e.sleep', { ms: 300 }, 1), call('e2e.sleep', { ms: 300 }, 2)])) +
      'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    await sleep(400);
    b.destroy();
    // A client that sends its request and shuts down its sending side still gets its answer.
    const half = await rawClient(agent, { unix: true });
    half.write(post(JSON.stringify(call('e2e.sleep', { ms: 200 }, 'half'))));
    half.socket.end();
    const [hr] = await half.responses(1);
    assert.deepEqual(JSON.parse(hr.body).result, { slept: 200 });
    await sleep(600);
    assert.equal((await request(agent, { path: '/healthz' })).status, 200);
    assert.equal((await rpc(agent, call('spec.subtract', [9, 1]))).json().result, 8);
    assert.doesNotMatch(agent.log, /ERROR/);
  });

  it('many clients that connect and vanish do not disturb the others', async () => {
    const clients = await Promise.all(Array.from({ length: 20 }, () => rawClient(agent)));
    clients.forEach((c, i) => {
      c.write(i % 2 ? post(JSON.stringify(call('e2e.sleep', { ms: 200 }))) : 'GET /healthz HTTP/1.1\r\nHost: x\r\n');
      setTimeout(() => c.destroy(), i * 10);
    });
    await sleep(500);
    const rs = await Promise.all(Array.from({ length: 5 }, (_, i) => rpc(agent, call('spec.subtract', [i, 0]))));
    assert.deepEqual(rs.map((r) => r.json().result), [0, 1, 2, 3, 4]);
  });
});
