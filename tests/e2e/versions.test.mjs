// API versions end to end (docs/compatibility.md): the Exosphere-Agent-Version header on
// POST /rpc and GET /openrpc.json, rpc.hello on WebSocket sessions (and the header on the
// upgrade), notifications in each session's version, what an unknown version gets, and that a
// methods reload keeps a session's version. The shipped versions: 2026-12-01 (gpuPctUsed null
// without a GPU, system_load.historical {since, until}) and 2027-01-15 ([] and {from, to},
// mounts.get added).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { startAgent, rpc, request, bin, repo, waitFor, logLines, slow } from './lib/agent.mjs';
import { open } from './lib/wsclient.mjs';

const OLD = '2026-12-01';
const CURRENT = '2027-01-15';
const asRoot = process.getuid() === 0;
const notification = (name) => (m) => m.json && m.json.method === name && m.json.id === undefined;

// One call over the Unix socket (as root: an administrator) with the given version header.
async function call(agent, method, params, version) {
  const headers = version === undefined ? {} : { 'Exosphere-Agent-Version': version };
  const r = await rpc(agent, { jsonrpc: '2.0', id: 1, method, ...(params ? { params } : {}) }, { socketPath: agent.sock, headers });
  assert.equal(r.status, 200, r.body);
  return r.json();
}

describe('API versions', { skip: !asRoot && 'the calls go over the Unix socket as root' }, () => {
  let agent;
  before(async () => {
    agent = await startAgent({ sections: { system_load: { interval: '1s' } } });
  });
  after(async () => {
    await agent.close();
  });

  it('agent.info and rpc.hello name the versions served', async () => {
    const info = (await call(agent, 'agent.info', {})).result;
    assert.deepEqual(info.api_versions, [OLD, CURRENT]);
    assert.equal(info.current_api_version, CURRENT);
    assert.deepEqual((await call(agent, 'rpc.hello', {})).result, { version: CURRENT, current: CURRENT, supported: [OLD, CURRENT] });
    assert.deepEqual((await call(agent, 'rpc.hello', {}, OLD)).result, { version: OLD, current: CURRENT, supported: [OLD, CURRENT] });
  });

  it('the header gives each version its shapes: params, results, errors, methods', async () => {
    const cur = (await call(agent, 'system_load.current', {})).result;
    const old = (await call(agent, 'system_load.current', {}, OLD)).result;
    const explicit = (await call(agent, 'system_load.current', {}, CURRENT)).result;
    // This machine has no NVIDIA GPU: [] now, null for 2026-12-01.
    assert.deepEqual([cur.gpuPctUsed, explicit.gpuPctUsed, old.gpuPctUsed], [[], [], null]);
    await waitFor(async () => (await call(agent, 'system_load.historical', {})).result.length >= 2, 5000 * slow, 'two samples');
    const [a, b] = (await call(agent, 'system_load.historical', { limit: 2 })).result.map((s) => s.epoch);
    const oldSamples = (await call(agent, 'system_load.historical', { since: a, until: b }, OLD)).result;
    assert.deepEqual(oldSamples.map((s) => [s.epoch, s.gpuPctUsed]), [[a, null], [b, null]]);
    // By position, in each version's order.
    assert.deepEqual((await call(agent, 'system_load.historical', [a, a], OLD)).result.map((s) => s.epoch), [a]);
    assert.deepEqual((await call(agent, 'system_load.historical', [b, b])).result.map((s) => s.epoch), [b]);
    assert.equal((await call(agent, 'system_load.historical', { since: a })).error.data.path, 'params.since');
    assert.equal((await call(agent, 'system_load.historical', { from: a }, OLD)).error.data.path, 'params.from');
    assert.equal((await call(agent, 'system_load.historical', { since: b, until: a }, OLD)).error.data.path, 'params.until');
    // A method added in 2027-01-15 does not exist for 2026-12-01, and says so.
    assert.equal((await call(agent, 'mounts.get', { mountpoint: '/' })).result.mountpoint, '/');
    assert.deepEqual((await call(agent, 'mounts.get', { mountpoint: '/' }, OLD)).error, {
      code: -32601, message: 'Method not found',
      data: { method: 'mounts.get', reason: 'not_in_api_version', api_version: OLD, since: CURRENT },
    });
  });

  it('an unknown, malformed, repeated or overlong version is refused for every call, naming the supported ones', async () => {
    for (const v of ['2026-11-30', '2099-01-01', 'latest', '2026-12-1', 'x'.repeat(5000)]) {
      const r = await rpc(agent, [{ jsonrpc: '2.0', id: 1, method: 'agent.info' }, { jsonrpc: '2.0', id: 2, method: 'system_load.current' }],
        { socketPath: agent.sock, headers: { 'Exosphere-Agent-Version': v } });
      assert.equal(r.status, 200);
      const answers = r.json();
      assert.equal(answers.length, 2);
      for (const e of answers.map((x) => x.error)) {
        assert.equal(e.code, -32008, r.body);
        assert.equal(e.data.reason, 'unsupported_api_version');
        assert.deepEqual(e.data.supported, [OLD, CURRENT]);
        assert.match(e.message, /this agent supports 2026-12-01, 2027-01-15 \(the current one is 2027-01-15\)/);
      }
    }
    // Two headers are two versions: refused, not one picked.
    const r = await request(agent, {
      method: 'POST', path: '/rpc', socketPath: agent.sock,
      headers: { 'Content-Type': 'application/json', 'Exosphere-Agent-Version': [OLD, CURRENT] },
      body: { jsonrpc: '2.0', id: 1, method: 'agent.info' },
    });
    assert.equal(r.json().error.data.requested, `${OLD},${CURRENT}`);
    // An empty header is no version: the current one.
    assert.equal((await call(agent, 'rpc.hello', {}, '')).result.version, CURRENT);
  });

  it('GET /openrpc.json and rpc.discover give the document of the header\'s version, as the CLI does', async () => {
    const get = (v) => request(agent, { path: '/openrpc.json', headers: v ? { 'Exosphere-Agent-Version': v } : {} });
    const [cur, old] = [await get(), await get(OLD)];
    assert.equal(cur.status, 200);
    assert.equal(old.status, 200);
    const [curDoc, oldDoc] = [cur.json(), old.json()];
    assert.equal(curDoc.info['x-api-version'], CURRENT);
    assert.equal(oldDoc.info['x-api-version'], OLD);
    assert.deepEqual(oldDoc.info['x-api-versions'], [OLD, CURRENT]);
    assert.ok(curDoc.methods.some((m) => m.name === 'mounts.get'));
    assert.ok(!oldDoc.methods.some((m) => m.name === 'mounts.get'));
    assert.deepEqual((await call(agent, 'rpc.discover', {}, OLD)).result, oldDoc);
    assert.deepEqual((await get(CURRENT)).json(), curDoc);
    for (const [v, doc] of [[OLD, oldDoc], [CURRENT, curDoc]]) {
      const cli = JSON.parse(execFileSync(bin, ['openrpc', '--config', agent.config, '--version', v], { encoding: 'utf8' }));
      assert.deepEqual(cli, doc, `openrpc --version ${v}`);
    }
    const bad = await get('2000-01-01');
    assert.equal(bad.status, 400);
    assert.match(bad.body, /API version 2000-01-01 is not supported; this agent supports 2026-12-01, 2027-01-15/);
    let failed;
    try {
      execFileSync(bin, ['openrpc', '--config', agent.config, '--version', '2000-01-01'], { encoding: 'utf8', stdio: 'pipe' });
    } catch (e) {
      failed = e;
    }
    assert.equal(failed.status, 2);
    assert.match(failed.stderr, /API version 2000-01-01 is not supported/);
  });

  it('rpc.hello as the first call sets a WebSocket session\'s version, for calls and notifications', async () => {
    const old = open(agent, { unix: true });
    const cur = open(agent, { unix: true });
    await Promise.all([old.ready, cur.ready]);
    try {
      assert.deepEqual((await old.call('rpc.hello', { version: OLD })).result, { version: OLD, current: CURRENT, supported: [OLD, CURRENT] });
      assert.equal((await cur.call('rpc.hello', {})).result.version, CURRENT);
      assert.equal((await old.call('system_load.current', {})).result.gpuPctUsed, null);
      assert.deepEqual((await cur.call('system_load.current', {})).result.gpuPctUsed, []);
      assert.equal((await old.call('mounts.get', { mountpoint: '/' })).error.code, -32601);
      // Too late to change it now.
      const again = await old.call('rpc.hello', { version: CURRENT });
      assert.equal(again.error.code, -32002);
      assert.equal(again.error.data.reason, 'not_first_call');
      assert.equal((await old.call('system_load.current', {})).result.gpuPctUsed, null);
      // Each subscriber gets the sample in its own version's shape.
      for (const s of [old, cur]) await s.call('notifications.subscribe', { names: ['notify.system_load'] });
      const [n1, n2] = await Promise.all([old.take(notification('notify.system_load')), cur.take(notification('notify.system_load'))]);
      assert.equal(n1.json.params.gpuPctUsed, null);
      assert.deepEqual(n2.json.params.gpuPctUsed, []);
      assert.equal(n1.json.params.epoch, n2.json.params.epoch);
      // A methods reload (a new Lua VM) keeps the session's version: the runtime holds it.
      const reloads = logLines(agent, /reloaded methods/).length;
      agent.proc.kill('SIGHUP');
      await waitFor(() => logLines(agent, /reloaded methods/).length > reloads, 5000 * slow, 'the reload');
      assert.equal((await old.call('system_load.current', {})).result.gpuPctUsed, null);
      assert.equal((await old.call('rpc.hello', {})).result.version, OLD);
    } finally {
      old.close();
      cur.close();
    }
  });

  it('the upgrade request\'s header sets a session\'s version too; an unknown one is refused per call', async () => {
    const s = open(agent, { unix: true, headers: { 'Exosphere-Agent-Version': OLD } });
    const bad = open(agent, { unix: true, headers: { 'Exosphere-Agent-Version': '1999-01-01' } });
    await Promise.all([s.ready, bad.ready]);
    try {
      assert.equal((await s.call('system_load.current', {})).result.gpuPctUsed, null);
      assert.equal((await bad.call('agent.info', {})).error.code, -32008);
      // rpc.hello names a served version instead, and the session goes on with it.
      assert.equal((await bad.call('rpc.hello', { version: CURRENT })).error?.code, -32002, 'not the first call any more');
      const fresh = open(agent, { unix: true, headers: { 'Exosphere-Agent-Version': '1999-01-01' } });
      await fresh.ready;
      try {
        assert.equal((await fresh.call('rpc.hello', { version: OLD })).result.version, OLD);
        assert.equal((await fresh.call('system_load.current', {})).result.gpuPctUsed, null);
      } finally {
        fresh.close();
      }
      const unknown = open(agent, { unix: true });
      await unknown.ready;
      try {
        const e = (await unknown.call('rpc.hello', { version: '2100-01-01' })).error;
        assert.equal(e.code, -32008);
        assert.deepEqual(e.data.supported, [OLD, CURRENT]);
        // Refused, so nothing was set: the session has the current version.
        assert.deepEqual((await unknown.call('system_load.current', {})).result.gpuPctUsed, []);
      } finally {
        unknown.close();
      }
    } finally {
      s.close();
      bad.close();
    }
  });
});

describe('the api-versions directory', () => {
  it('the agent serves the repository\'s files, and the CLI finds them beside --methods', () => {
    const doc = JSON.parse(execFileSync(bin, ['openrpc', '--methods', `${repo}/methods`, '--version', OLD], { encoding: 'utf8' }));
    assert.equal(doc.info['x-api-version'], OLD);
    assert.deepEqual(doc.info['x-api-versions'], [OLD, CURRENT]);
  });

  it('--api-versions names the directory; one without version files serves one version, and says so', () => {
    const args = ['openrpc', '--methods', `${repo}/methods`, '--api-versions'];
    const doc = JSON.parse(execFileSync(bin, [...args, `${repo}/api-versions`, '--version', OLD], { encoding: 'utf8' }));
    assert.equal(doc.info['x-api-version'], OLD);
    const r = spawnSync(bin, [...args, '/nonexistent/api-versions', '--version', OLD], { encoding: 'utf8' });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /API versions not loaded: cannot list \/nonexistent\/api-versions/);
    assert.match(r.stderr, /API version 2026-12-01 is not supported; this agent supports 2027-01-15/);
    const only = spawnSync(bin, [...args, '/nonexistent/api-versions'], { encoding: 'utf8' });
    assert.equal(only.status, 0, only.stderr);
    assert.deepEqual(JSON.parse(only.stdout).info['x-api-versions'], [CURRENT]);
  });
});
