// Hot reload: SIGHUP twenty times under concurrent load loses no call, and --dev reloads on
// a change of a method file by itself, with tracebacks and result checks on.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import http from 'node:http';
import { startAgent, rpc, shippedMethods, sleep, waitFor, waitForLog, logLines, slow } from './lib/agent.mjs';

// A method whose answer names the version of the file that declared it; it sleeps a little
// so that calls are in flight when a reload happens.
function versionMethod(version) {
  return `return method {
  name = "reload.version", summary = "Which file version answered",
  since = "2026-12-01", stability = "experimental", permission = "public",
  result = T.integer(),
  examples = { { name = "the version", params = {}, result = ${version} } },
  handler = function() agent.sleep(3) return ${version} end,
}
`;
}

async function call(agent, method, params) {
  const r = await rpc(agent, { jsonrpc: '2.0', id: 1, method, params });
  assert.equal(r.status, 200, r.body);
  return r.json();
}

describe('SIGHUP twenty times under concurrent load', () => {
  let agent, dir;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'exo-reload-'));
    writeFileSync(join(dir, 'version.lua'), versionMethod(0));
    agent = await startAgent({ methodDirs: [shippedMethods, dir] });
  });
  after(async () => {
    await agent.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it('no call fails, and the last version is served', async () => {
    let stop = false;
    const failures = [];
    let calls = 0;
    const seen = new Set();
    const client = async () => {
      // Each client keeps its own keep-alive connection, as a browser behind a proxy does.
      const keepAlive = new (await import('node:https')).Agent({ keepAlive: true, maxSockets: 1 });
      while (!stop) {
        for (const method of ['reload.version', 'agent.info']) {
          try {
            const r = await rpc(agent, { jsonrpc: '2.0', id: ++calls, method }, { agentOpt: keepAlive });
            const body = r.json();
            if (r.status !== 200 || !('result' in body)) failures.push(r.body);
            else if (method === 'reload.version') seen.add(body.result);
          } catch (e) {
            failures.push(String(e));
          }
        }
      }
      keepAlive.destroy();
    };
    const clients = Array.from({ length: 6 }, client);
    for (let v = 1; v <= 20; v++) {
      writeFileSync(join(dir, 'version.lua'), versionMethod(v));
      agent.proc.kill('SIGHUP');
      await waitFor(() => logLines(agent, /reloaded methods/).length >= v, 5000 * slow, `reload ${v}`);
      await sleep(40);
    }
    await sleep(100);
    stop = true;
    await Promise.all(clients);
    assert.deepEqual(failures, []);
    assert.ok(calls > 100, `only ${calls} calls were made`);
    assert.equal(logLines(agent, /reloaded methods/).length, 20);
    assert.ok(seen.has(20), `versions seen: ${[...seen].join(',')}`);
    assert.equal((await call(agent, 'reload.version')).result, 20);
    console.log(`# ${calls} calls across 20 reloads, versions seen: ${seen.size}`);
  });
});

describe('serve --dev', () => {
  let agent, dir;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'exo-dev-'));
    writeFileSync(join(dir, 'version.lua'), versionMethod(1));
    writeFileSync(join(dir, 'faulty.lua'), `return {
  method {
    name = "dev.fails", summary = "Raises", since = "2026-12-01", stability = "experimental",
    permission = "public", result = T.integer(),
    examples = { { name = "never", params = {}, result = 1 } },
    handler = function() local t = nil; return t.field end,
  },
  method {
    name = "dev.wrong_result", summary = "Answers a string for an integer",
    since = "2026-12-01", stability = "experimental", permission = "public",
    result = T.integer(),
    examples = { { name = "never", params = {}, result = 1 } },
    handler = function() return "not an integer" end,
  },
}
`);
    agent = await startAgent({ tls: false, args: ['--dev'], methodDirs: [shippedMethods, dir] });
  });
  after(async () => {
    await agent.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves plain HTTP on the configured loopback address', async () => {
    assert.match(agent.base, /^http:\/\/127\.0\.0\.1:/);
    const r = await rpc(agent, { jsonrpc: '2.0', id: 1, method: 'agent.info' });
    assert.equal(r.status, 200);
    assert.ok(r.json().result.version);
    assert.match(agent.log, /development mode/);
  });

  it('puts the traceback of an unexpected error in the error data', async () => {
    const body = await call(agent, 'dev.fails');
    assert.equal(body.error.code, -32603);
    assert.match(body.error.data.traceback, /faulty\.lua:6/);
  });

  it('checks results against their schema', async () => {
    const body = await call(agent, 'dev.wrong_result');
    assert.equal(body.error.code, -32603);
    assert.match(JSON.stringify(body.error.data), /schema/);
  });

  it('reloads when a method file changes, without a signal', async () => {
    assert.equal((await call(agent, 'reload.version')).result, 1);
    writeFileSync(join(dir, 'version.lua'), versionMethod(2));
    await waitForLog(agent, /reloaded methods/, 5000 * slow);
    assert.equal((await call(agent, 'reload.version')).result, 2);
  });
});
