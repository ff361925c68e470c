// The OpenRPC document: served at GET /openrpc.json and by rpc.discover alike, valid against
// the OpenRPC meta-schema (the reference validator), every example replayed against the
// daemon, and the methods called through @open-rpc/client-js.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Ajv from 'ajv';
import { validateOpenRPCDocument, parseOpenRPCDocument, MethodCallValidator } from '@open-rpc/schema-utils-js';
import { Client, RequestManager, HTTPTransport, JSONRPCError } from '@open-rpc/client-js';
import { startAgent, request, rpc, agentFetch, shippedMethods, testMethods } from './lib/agent.mjs';

// Methods whose result changes from call to call: the result is checked against the
// method's result schema instead of the example's value.
const VARYING = new Set(['agent.info', 'system_load.current', 'system_load.historical', 'e2e.whoami', 'authenticate.me',
  'e2e.mount_generation', 'mounts.list', 'notifications.list', 'jobs.list', 'e2e.job']);
// Examples that name a job of the example's own: no such job exists in the daemon (jobs are
// tested in jobs.test.mjs).
const NAMES_A_JOB = new Set(['jobs.get', 'jobs.cancel']);
// Methods that need a WebSocket session: over HTTP they answer Unsupported (tested below).
const NEEDS_SESSION = new Set(['notifications.subscribe', 'notifications.unsubscribe']);
// Examples that hold sample credentials (a made-up password, a sample token): a real login is
// tested in auth.test.mjs with real accounts.
const SAMPLE_CREDENTIALS = new Set(['authenticate.login', 'authenticate.token', 'authenticate.logout']);
// Test methods whose examples cannot be replayed: they never return a result.
const NO_RESULT = new Set(['e2e.spin', 'e2e.spin_pcall', 'e2e.hog', 'e2e.fail']);
// Examples that would format, mount or unmount this machine's disks: these methods are tested in a
// systemd container by tests/system/mounts.test.mjs, on loop devices made for it.
const ACTS_ON_DISKS = new Set(['mounts.mount_device', 'mounts.unmount', 'mounts.mount_cephfs']);
// Examples that name a mount this machine does not have: the answer is NotFound (mounts.get is
// tested on a real volume in tests/system/mounts.test.mjs).
const NAMES_A_MOUNT = new Set(['mounts.get']);
// The package methods would update this machine: the harness runs the agent with [packages]
// backend = none, so they answer Unsupported no_backend (they are tested in a systemd
// container by tests/system/packages.test.mjs, against a repository made for it).
const UPDATES_PACKAGES = new Set(['packages.check_updates', 'packages.update', 'self.check_updates', 'self.upgrade']);

describe('OpenRPC', () => {
  let agent;
  let doc;
  let client;
  before(async () => {
    agent = await startAgent({ methodDirs: [shippedMethods, testMethods], server: { call_timeout: '2s' } });
    const r = await request(agent, { path: '/openrpc.json' });
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], 'application/json');
    doc = r.json();
    const transport = new HTTPTransport(`${agent.base}/rpc`, { fetcher: agentFetch(agent) });
    client = new Client(new RequestManager([transport]));
  });
  after(async () => {
    await agent.close();
  });

  it('GET /openrpc.json equals the result of rpc.discover', async () => {
    const r = await rpc(agent, { jsonrpc: '2.0', id: 1, method: 'rpc.discover' });
    assert.deepEqual(r.json().result, doc);
    const text = (await request(agent, { path: '/openrpc.json' })).body;
    assert.ok(r.body.includes(`"result":${text}`), 'the same bytes');
  });

  it('is valid against the OpenRPC meta-schema (validateOpenRPCDocument)', () => {
    const v = validateOpenRPCDocument(doc);
    assert.equal(v, true, v && v.message);
  });

  it('parses with parseOpenRPCDocument (dereferenced and validated)', async () => {
    const parsed = await parseOpenRPCDocument(structuredClone(doc));
    assert.equal(parsed.openrpc, '1.3.2');
    assert.deepEqual(parsed.methods.map((m) => m.name), doc.methods.map((m) => m.name));
  });

  it('lists every loaded method, sorted, with the agent\'s extensions', () => {
    const names = doc.methods.map((m) => m.name);
    assert.deepEqual(names, [...names].sort());
    for (const n of ['rpc.discover', 'agent.info', 'system_load.current', 'spec.subtract', 'e2e.sleep']) {
      assert.ok(names.includes(n), n);
    }
    assert.equal(doc.info.title, 'Exosphere Guest Agent');
    assert.equal(doc.info['x-api-version'], '2027-01-15');
    for (const m of doc.methods) {
      assert.match(m['x-since'], /^\d{4}-\d{2}-\d{2}$/);
      assert.ok(['experimental', 'stable', 'deprecated'].includes(m['x-stability']));
      assert.ok(['public', 'user', 'admin'].includes(m['x-permission']));
      assert.ok(m.examples.length >= 1, m.name);
    }
    const sub = doc.methods.find((m) => m.name === 'spec.subtract');
    assert.deepEqual(sub.params.map((p) => p.name), ['minuend', 'subtrahend']);
    assert.deepEqual(doc.components.errors.Timeout, { code: -32004, message: 'Timed out' });
  });

  it('every example replays against the daemon', async () => {
    const ajv = new Ajv({ allErrors: true });
    const validator = new MethodCallValidator(doc);
    let replayed = 0;
    for (const m of doc.methods) {
      if (NO_RESULT.has(m.name) || SAMPLE_CREDENTIALS.has(m.name) || ACTS_ON_DISKS.has(m.name) || NEEDS_SESSION.has(m.name) ||
        NAMES_A_JOB.has(m.name)) continue;
      // Methods that need a login are replayed over the Unix socket, as root.
      const extra = m['x-permission'] === 'public' ? {} : { socketPath: agent.sock };
      for (const ex of m.examples) {
        const what = `${m.name} / ${ex.name}`;
        const byName = Object.fromEntries(ex.params.map((p) => [p.name, p.value]));
        const byPosition = ex.params.map((p) => p.value);
        const calls = [byName];
        // By position too, when the example names a leading run of the parameters (the
        // reference validator takes them by position too; otherwise by name).
        if (ex.params.every((p, i) => m.params[i].name === p.name)) {
          assert.deepEqual(validator.validate(m.name, byPosition), [], `${what}: params`);
          calls.push(byPosition);
        } else {
          assert.deepEqual(validator.validate(m.name, byName), [], `${what}: params by name`);
        }
        for (const params of calls) {
          const r = await rpc(agent, { jsonrpc: '2.0', id: what, method: m.name, params }, extra);
          const v = r.json();
          if (UPDATES_PACKAGES.has(m.name)) {
            assert.equal(v.error?.code, -32008, `${what}: ${r.body}`);
            assert.equal(v.error.data.reason, 'no_backend', r.body);
            replayed++;
            continue;
          }
          if (NAMES_A_MOUNT.has(m.name)) {
            assert.equal(v.error?.code, -32003, `${what}: ${r.body}`);
            assert.equal(v.error.data.reason, 'not_mounted', r.body);
            replayed++;
            continue;
          }
          assert.equal(v.error, undefined, `${what}: ${r.body}`);
          if (m.name === 'rpc.discover') {
            assert.deepEqual(v.result, doc);
          } else if (VARYING.has(m.name)) {
            const ok = ajv.validate(m.result.schema, v.result);
            assert.ok(ok, `${what}: ${ajv.errorsText()} in ${JSON.stringify(v.result)}`);
          } else {
            assert.deepEqual(v.result, ex.result.value, what);
          }
          replayed++;
        }
      }
    }
    assert.ok(replayed >= 15, `${replayed} example calls`);
  });

  it('every result schema accepts its examples, and params schemas match the agent\'s checks', async () => {
    const ajv = new Ajv({ allErrors: true });
    for (const m of doc.methods) {
      if (m.name === 'rpc.discover') continue;
      for (const ex of m.examples) assert.ok(ajv.validate(m.result.schema, ex.result.value), `${m.name}: ${ajv.errorsText()}`);
    }
    // A call that the reference validator rejects, the agent rejects too.
    const validator = new MethodCallValidator(doc);
    for (const [method, params] of [['spec.subtract', ['a', 1]], ['e2e.sleep', [-1]], ['e2e.nested', [{ items: [{ name: 5 }] }]]]) {
      assert.notDeepEqual(validator.validate(method, params), [], `${method} ${JSON.stringify(params)}`);
      const r = await rpc(agent, { jsonrpc: '2.0', id: 1, method, params });
      assert.equal(r.json().error.code, -32602, r.body);
    }
  });

  it('lists the notifications under x-notifications, as notifications.list does', async () => {
    const notes = doc['x-notifications'];
    const names = notes.map((n) => n.name);
    assert.deepEqual(names, ['notify.jobs.done', 'notify.jobs.progress', 'notify.mounts.changed', 'notify.mounts.mounted',
      'notify.mounts.unmounted', 'notify.system_load']);
    const ajv = new Ajv({ allErrors: true });
    for (const n of notes) {
      assert.ok(n.summary && n.examples.length >= 1, n.name);
      assert.equal(n['x-permission'], 'user');
      for (const ex of n.examples) assert.ok(ajv.validate(n.params, ex.params), `${n.name}: ${ajv.errorsText()}`);
    }
    // The load notification carries what system_load.current returns.
    const current = doc.methods.find((m) => m.name === 'system_load.current');
    assert.deepEqual(notes.find((n) => n.name === 'notify.system_load').params, current.result.schema);
    const r = await rpc(agent, { jsonrpc: '2.0', id: 1, method: 'notifications.list' }, { socketPath: agent.sock });
    const listed = r.json().result;
    assert.deepEqual(listed.map((n) => [n.name, n.params]), notes.map((n) => [n.name, n.params]));
  });

  it('notifications.subscribe and unsubscribe over HTTP say a WebSocket session is needed', async () => {
    for (const method of NEEDS_SESSION) {
      const r = await rpc(agent, { jsonrpc: '2.0', id: 1, method, params: { names: ['notify.system_load'] } },
        { socketPath: agent.sock });
      const e = r.json().error;
      assert.equal(e.code, doc.components.errors.Unsupported.code, r.body);
      assert.match(e.message, /WebSocket session/);
    }
  });

  describe('through @open-rpc/client-js', () => {
    it('calls by position and by name', async () => {
      assert.equal(await client.request({ method: 'spec.subtract', params: [42, 23] }), 19);
      assert.equal(await client.request({ method: 'spec.subtract', params: { subtrahend: 23, minuend: 42 } }), 19);
      assert.deepEqual(await client.request({ method: 'spec.get_data' }), ['hello', 5]);
      const info = await client.request({ method: 'agent.info', params: {} });
      assert.equal(info.current_api_version, '2027-01-15');
    });

    it('a notification (HTTP 204) resolves', async () => {
      await client.notify({ method: 'spec.update', params: [9, 8, 7, 6, 5] });
      assert.deepEqual(await client.request({ method: 'spec.last_update' }), [9, 8, 7, 6, 5]);
    });

    it('errors reject with a JSONRPCError carrying the code and data', async () => {
      await assert.rejects(client.request({ method: 'no.such.method' }), (e) => {
        assert.ok(e instanceof JSONRPCError);
        assert.equal(e.code, -32601);
        assert.equal(e.message, 'Method not found');
        return true;
      });
      await assert.rejects(client.request({ method: 'spec.subtract', params: [1, 'x'] }), (e) => {
        assert.equal(e.code, -32602);
        assert.equal(e.data.path, 'params[2]');
        return true;
      });
      await assert.rejects(client.request({ method: 'e2e.sleep', params: { ms: 5000 } }), (e) => {
        assert.equal(e.code, -32004);
        assert.equal(e.message, 'Timeout');
        return true;
      });
    });
  });
});
