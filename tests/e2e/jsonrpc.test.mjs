// JSON-RPC 2.0 over POST /rpc: every example of the specification's "Examples" section, ids
// echoed byte for byte, parameters by position and by name, and the agent's own errors.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startAgent, rpc, shippedMethods, testMethods, waitForLog } from './lib/agent.mjs';

// The specification's method names are not dotted; the test methods are spec.<name>.
const SPEC_NAMES = /"method": "(subtract|sum|update|notify_hello|notify_sum|get_data)"/g;
const specText = (text) => text.replace(SPEC_NAMES, '"method": "spec.$1"');

// The agent adds `data` to its errors; the specification shows none.
function withoutData(v) {
  if (Array.isArray(v)) return v.map(withoutData);
  if (v && v.error) {
    const { data, ...error } = v.error;
    return { ...v, error };
  }
  return v;
}

describe('JSON-RPC 2.0', () => {
  let agent;
  before(async () => {
    agent = await startAgent({ methodDirs: [shippedMethods, testMethods], server: { max_batch: 6 } });
  });
  after(async () => {
    await agent.close();
  });

  // POSTs the specification's request text; returns the HTTP response.
  const call = (text) => rpc(agent, specText(text));
  async function expectJson(text, expected) {
    const r = await call(text);
    assert.equal(r.status, 200, r.body);
    assert.match(r.headers['content-type'], /^application\/json/);
    assert.deepEqual(withoutData(r.json()), expected);
    return r.json();
  }
  async function expectNothing(text) {
    const r = await call(text);
    assert.equal(r.status, 204);
    assert.equal(r.body, '');
    assert.equal(r.headers['content-length'], undefined);
  }

  describe('the specification\'s examples', () => {
    it('rpc call with positional parameters', async () => {
      await expectJson('{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}',
        { jsonrpc: '2.0', result: 19, id: 1 });
      await expectJson('{"jsonrpc": "2.0", "method": "subtract", "params": [23, 42], "id": 2}',
        { jsonrpc: '2.0', result: -19, id: 2 });
    });

    it('rpc call with named parameters', async () => {
      await expectJson('{"jsonrpc": "2.0", "method": "subtract", "params": {"subtrahend": 23, "minuend": 42}, "id": 3}',
        { jsonrpc: '2.0', result: 19, id: 3 });
      await expectJson('{"jsonrpc": "2.0", "method": "subtract", "params": {"minuend": 42, "subtrahend": 23}, "id": 4}',
        { jsonrpc: '2.0', result: 19, id: 4 });
    });

    it('a Notification', async () => {
      await expectNothing('{"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}');
      // It ran: spec.update stored its params.
      await expectJson('{"jsonrpc": "2.0", "method": "spec.last_update", "id": 1}',
        { jsonrpc: '2.0', result: [1, 2, 3, 4, 5], id: 1 });
      await expectNothing('{"jsonrpc": "2.0", "method": "foobar"}');
    });

    it('rpc call of non-existent method', async () => {
      const r = await expectJson('{"jsonrpc": "2.0", "method": "foobar", "id": "1"}',
        { jsonrpc: '2.0', error: { code: -32601, message: 'Method not found' }, id: '1' });
      assert.deepEqual(r.error.data, { method: 'foobar' });
    });

    it('rpc call with invalid JSON', async () => {
      const r = await expectJson('{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]',
        { jsonrpc: '2.0', error: { code: -32700, message: 'Parse error' }, id: null });
      assert.match(r.error.data.reason, /at byte \d+/);
    });

    it('rpc call with invalid Request object', async () => {
      await expectJson('{"jsonrpc": "2.0", "method": 1, "params": "bar"}',
        { jsonrpc: '2.0', error: { code: -32600, message: 'Invalid Request' }, id: null });
    });

    it('rpc call Batch, invalid JSON', async () => {
      await expectJson(`[
  {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
  {"jsonrpc": "2.0", "method"
]`, { jsonrpc: '2.0', error: { code: -32700, message: 'Parse error' }, id: null });
    });

    it('rpc call with an empty Array', async () => {
      await expectJson('[]', { jsonrpc: '2.0', error: { code: -32600, message: 'Invalid Request' }, id: null });
    });

    it('rpc call with an invalid Batch (but not empty)', async () => {
      await expectJson('[1]', [{ jsonrpc: '2.0', error: { code: -32600, message: 'Invalid Request' }, id: null }]);
    });

    it('rpc call with invalid Batch', async () => {
      const e = { jsonrpc: '2.0', error: { code: -32600, message: 'Invalid Request' }, id: null };
      await expectJson('[1,2,3]', [e, e, e]);
    });

    it('rpc call Batch', async () => {
      await expectJson(`[
        {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]},
        {"jsonrpc": "2.0", "method": "subtract", "params": [42,23], "id": "2"},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
        {"jsonrpc": "2.0", "method": "get_data", "id": "9"}
    ]`, [
        { jsonrpc: '2.0', result: 7, id: '1' },
        { jsonrpc: '2.0', result: 19, id: '2' },
        { jsonrpc: '2.0', error: { code: -32600, message: 'Invalid Request' }, id: null },
        { jsonrpc: '2.0', error: { code: -32601, message: 'Method not found' }, id: '5' },
        { jsonrpc: '2.0', result: ['hello', 5], id: '9' },
      ]);
    });

    it('rpc call Batch (all notifications)', async () => {
      await expectNothing(`[
        {"jsonrpc": "2.0", "method": "notify_sum", "params": [1,2,4]},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}
    ]`);
    });
  });

  describe('ids', () => {
    const ids = ['"abc"', '"a\\"b\\\\c\\u00e9\\n"', '"héllo ☃"', '7', 'null', '9007199254740993',
      '12345678901234567890123', '-0', '1.5e3', '-12.50', '1E+2', '0'];
    for (const id of ids) {
      it(`come back byte for byte: ${id}`, async () => {
        const r = await rpc(agent, `{"jsonrpc":"2.0","id":${id},"method":"spec.subtract","params":[5,2]}`);
        assert.equal(r.status, 200);
        assert.equal(r.body, `{"jsonrpc":"2.0","id":${id},"result":3}`);
      });
    }

    it('come back byte for byte in a batch and in errors, whitespace around them dropped', async () => {
      const r = await rpc(agent, `[{"jsonrpc":"2.0","id" :  9007199254740993 ,"method":"nope"},
        {"id":-0,"jsonrpc":"2.0","method":"spec.subtract","params":{"minuend":1}},
        {"jsonrpc":"2.0","id":1.5e3,"method":"spec.get_data"}]`);
      assert.equal(r.status, 200);
      assert.match(r.body, /^\[\{"jsonrpc":"2.0","id":9007199254740993,"error":\{"code":-32601,/);
      assert.match(r.body, /\},\{"jsonrpc":"2.0","id":-0,"error":\{"code":-32602,/);
      assert.match(r.body, /\},\{"jsonrpc":"2.0","id":1.5e3,"result":\["hello",5\]\}\]$/);
    });

    it('of the wrong type make the request invalid, answered with id null', async () => {
      for (const id of ['{}', '[1]', 'true']) {
        const r = await rpc(agent, `{"jsonrpc":"2.0","id":${id},"method":"spec.get_data"}`);
        const v = r.json();
        assert.equal(v.id, null);
        assert.equal(v.error.code, -32600);
        assert.match(v.error.data.reason, /id must be/);
      }
    });
  });

  describe('params', () => {
    it('by position map to the parameters in param_order', async () => {
      const r = await rpc(agent, { jsonrpc: '2.0', id: 1, method: 'spec.sum', params: [1, 2, 3, 4, 5] });
      assert.equal(r.json().result, 15);
      const r2 = await rpc(agent, { jsonrpc: '2.0', id: 1, method: 'e2e.sleep', params: [1] });
      assert.deepEqual(r2.json().result, { slept: 1 });
    });

    it('may be left out when the method takes none', async () => {
      for (const params of [undefined, [], {}]) {
        const r = await rpc(agent, { jsonrpc: '2.0', id: 1, method: 'spec.get_data', params });
        assert.deepEqual(r.json().result, ['hello', 5]);
      }
    });

    async function invalid(params, method = 'e2e.sleep') {
      const r = await rpc(agent, { jsonrpc: '2.0', id: 1, method, params });
      assert.equal(r.status, 200);
      const v = r.json();
      assert.equal(v.error.code, -32602, r.body);
      assert.equal(v.error.message, 'Invalid params');
      return v.error.data;
    }

    it('-32602 for a wrong type, by name and by position', async () => {
      let d = await invalid({ ms: 'soon' });
      assert.equal(d.path, 'params.ms');
      assert.match(d.reason, /expected an integer, got a string/);
      d = await invalid(['soon']);
      assert.equal(d.path, 'params[1]');
      d = await invalid({ ms: 1.5 });
      assert.equal(d.path, 'params.ms');
      d = await invalid({ ms: -1 });
      assert.match(d.reason, /at least 0/);
    });

    it('-32602 with the path of a nested value', async () => {
      const d = await invalid({ filter: { items: [{ name: 'a' }, { name: 5 }] } }, 'e2e.nested');
      assert.equal(d.path, 'params.filter.items[2].name');
      assert.match(d.reason, /expected a string, got an integer/);
      const d2 = await invalid({ filter: { items: [{ name: 'a', colour: 'red' }] } }, 'e2e.nested');
      assert.equal(d2.path, 'params.filter.items[1].colour');
    });

    it('-32602 for an unknown, a missing or one positional parameter too many', async () => {
      let d = await invalid({ ms: 1, bogus: 2 });
      assert.equal(d.path, 'params.bogus');
      assert.match(d.reason, /not a parameter/);
      d = await invalid({});
      assert.equal(d.path, 'params.ms');
      assert.match(d.reason, /required/);
      d = await invalid([42], 'spec.subtract');
      assert.equal(d.path, 'params[2]');
      d = await invalid([1, 2, 3], 'spec.subtract');
      assert.equal(d.path, 'params[3]');
    });

    it('-32600 when params is neither an array nor an object', async () => {
      const r = await rpc(agent, '{"jsonrpc":"2.0","id":1,"method":"spec.get_data","params":5}');
      assert.equal(r.json().error.code, -32600);
    });
  });

  describe('requests and batches', () => {
    it('-32600 unless jsonrpc is exactly "2.0" and method a string', async () => {
      for (const body of ['{"id":1,"method":"spec.get_data"}', '{"jsonrpc":"2","id":1,"method":"spec.get_data"}',
        '{"jsonrpc":2.0,"id":1,"method":"spec.get_data"}', '{"jsonrpc":"2.0","id":1}', '"x"', '5', 'null']) {
        const r = await rpc(agent, body);
        assert.equal(r.status, 200);
        assert.equal(r.json().error.code, -32600, body);
      }
    });

    it('-32700 for an empty body, trailing garbage or invalid UTF-8', async () => {
      for (const body of ['', ' ', '{"jsonrpc":"2.0","id":1,"method":"spec.get_data"} x', Buffer.from([0x22, 0xff, 0x22])]) {
        const r = await rpc(agent, body);
        assert.equal(r.status, 200);
        assert.equal(r.json().error.code, -32700, JSON.stringify(body));
        assert.equal(r.json().id, null);
      }
    });

    it('-32700 for JSON nested deeper than the decoder allows; a little less is fine', async () => {
      const deep = (n) => `{"jsonrpc":"2.0","id":1,"method":"e2e.echo","params":{"value":${'['.repeat(n)}${']'.repeat(n)}}}`;
      const ok = await rpc(agent, deep(60));
      assert.equal(ok.json().error, undefined, ok.body);
      const r = await rpc(agent, deep(200));
      assert.equal(r.status, 200);
      assert.equal(r.json().error.code, -32700);
      assert.match(r.json().error.data.reason, /deep|nest/i);
    });

    it('a method name with quotes and non-ASCII text comes back intact in the error data', async () => {
      const method = 'na"me\\ é ☃\n';
      const r = await rpc(agent, { jsonrpc: '2.0', id: 1, method });
      assert.deepEqual(r.json().error, { code: -32601, message: 'Method not found', data: { method } });
    });

    it('batches over max_batch are refused as a whole', async () => {
      const entry = { jsonrpc: '2.0', id: 1, method: 'spec.get_data' };
      const ok = await rpc(agent, Array(6).fill(entry));
      assert.equal(ok.json().length, 6);
      const r = await rpc(agent, Array(7).fill(entry));
      const v = r.json();
      assert.ok(!Array.isArray(v));
      assert.equal(v.error.code, -32600);
      assert.match(v.error.data.reason, /max_batch/);
    });

    it('batch entries run in order, each seeing the effects of those before it', async () => {
      const r = await rpc(agent, [
        { jsonrpc: '2.0', id: 'a', method: 'e2e.sleep', params: { ms: 150 } },
        { jsonrpc: '2.0', method: 'spec.update', params: [5, 4, 3, 2, 1] },
        { jsonrpc: '2.0', id: 'b', method: 'spec.last_update' },
        { jsonrpc: '2.0', id: 'c', method: 'e2e.sleep', params: { ms: 1 } },
      ]);
      assert.deepEqual(r.json(), [
        { jsonrpc: '2.0', id: 'a', result: { slept: 150 } },
        { jsonrpc: '2.0', id: 'b', result: [5, 4, 3, 2, 1] },
        { jsonrpc: '2.0', id: 'c', result: { slept: 1 } },
      ]);
    });

    it('strings with escapes and non-ASCII text survive the round trip', async () => {
      const value = { s: 'héllo ☃ 𝄞 "quoted" back\\slash\n\t\u0001', n: [1, -2.5, 1e300, null, true], o: {} };
      const r = await rpc(agent, { jsonrpc: '2.0', id: 1, method: 'e2e.echo', params: { value } });
      assert.deepEqual(r.json().result, value);
    });

    it('Content-Type may carry a charset', async () => {
      const r = await rpc(agent, { jsonrpc: '2.0', id: 1, method: 'spec.get_data' },
        { headers: { 'Content-Type': 'application/json; charset=utf-8' } });
      assert.deepEqual(r.json().result, ['hello', 5]);
    });
  });

  describe('method failures', () => {
    it('a bug answers -32603 with the request id, no traceback; the log has the details', async () => {
      const r = await rpc(agent, { jsonrpc: '2.0', id: 1, method: 'e2e.fail', params: { kind: 'bug' } });
      const { error } = r.json();
      assert.equal(error.code, -32603);
      assert.equal(error.message, 'Internal error');
      assert.deepEqual(error.data, { request_id: r.headers['x-request-id'] });
      assert.ok(!r.body.includes('deliberate'));
      await waitForLog(agent, new RegExp(`request ${r.headers['x-request-id']}\\b.*a deliberate bug`));
    });

    it('an agent error answers its code, message and data', async () => {
      const r = await rpc(agent, { jsonrpc: '2.0', id: 1, method: 'e2e.fail', params: { kind: 'not_found' } });
      assert.deepEqual(r.json().error, { code: -32003, message: 'no such thing', data: { thing: 'x' } });
    });

    it('a failure in a batch is that entry\'s answer only', async () => {
      const r = await rpc(agent, [
        { jsonrpc: '2.0', id: 1, method: 'e2e.fail', params: { kind: 'bug' } },
        { jsonrpc: '2.0', id: 2, method: 'spec.subtract', params: [3, 1] },
      ]);
      const [a, b] = r.json();
      assert.equal(a.error.code, -32603);
      assert.equal(a.error.data.request_id, `${r.headers['x-request-id']}/1`);
      assert.equal(b.result, 2);
    });
  });
});
