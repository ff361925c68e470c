// The Unix socket: the same HTTP interface, the caller identified by its uid (SO_PEERCRED).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { statSync, writeFileSync, rmSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAgent, rpc, request, rawClient, shippedMethods, testMethods, waitForLog } from './lib/agent.mjs';

const uid = process.getuid();

describe('Unix socket', () => {
  let agent;
  before(async () => {
    agent = await startAgent({ methodDirs: [shippedMethods, testMethods], sections: { log: { level: 'debug' } } });
  });
  after(async () => {
    await agent.close();
  });

  it('serves JSON-RPC, single and batch', async () => {
    const r = await rpc(agent, { jsonrpc: '2.0', id: 1, method: 'spec.subtract', params: [42, 23] }, { socketPath: agent.sock });
    assert.equal(r.status, 200);
    assert.equal(r.body, '{"jsonrpc":"2.0","id":1,"result":19}');
    assert.match(r.headers['x-request-id'], /^[0-9a-f]{8}-\d+$/);
    const b = await rpc(agent, [{ jsonrpc: '2.0', id: 'a', method: 'agent.info' }, { jsonrpc: '2.0', id: 'b', method: 'nope' }],
      { socketPath: agent.sock });
    const [x, y] = b.json();
    assert.equal(x.result.current_api_version, '2027-01-15');
    assert.equal(y.error.code, -32601);
  });

  it('serves /healthz and /openrpc.json like TCP does', async () => {
    const h = await request(agent, { path: '/healthz', socketPath: agent.sock });
    assert.deepEqual(h.json(), { status: 'ok' });
    const a = await request(agent, { path: '/openrpc.json', socketPath: agent.sock });
    const b = await request(agent, { path: '/openrpc.json' });
    assert.equal(a.body, b.body);
  });

  it('the method sees transport unix and the peer uid', async () => {
    const r = await rpc(agent, { jsonrpc: '2.0', id: 1, method: 'e2e.whoami' }, { socketPath: agent.sock });
    const { result } = r.json();
    assert.equal(result.transport, 'unix');
    assert.match(result.peer, new RegExp(`^unix:uid=${uid},pid=${process.pid}$`));
    assert.equal(result.request_id, r.headers['x-request-id']);
    const t = (await rpc(agent, { jsonrpc: '2.0', id: 1, method: 'e2e.whoami' })).json().result;
    assert.equal(t.transport, 'https');
    assert.match(t.peer, /^127\.0\.0\.1:\d+$/);
  });

  it('the debug log names the peer by uid', async () => {
    await rpc(agent, { jsonrpc: '2.0', id: 1, method: 'agent.info' }, { socketPath: agent.sock });
    await waitForLog(agent, new RegExp(`DEBUG .*unix:uid=${uid}\\b`));
  });

  it('pipelined requests are answered in order', async () => {
    const c = await rawClient(agent, { unix: true });
    const post = (body) => `POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
    c.write(post('{"jsonrpc":"2.0","id":1,"method":"e2e.sleep","params":[200]}') + 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n' +
      post('{"jsonrpc":"2.0","id":3,"method":"spec.get_data"}'));
    const rs = await c.responses(3);
    assert.equal(JSON.parse(rs[0].body).id, 1);
    assert.equal(rs[1].body, '{"status":"ok"}');
    assert.equal(JSON.parse(rs[2].body).id, 3);
    c.destroy();
  });

  it('the socket has mode 0666 by default', () => {
    const st = statSync(agent.sock);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o666);
  });
});

describe('Unix socket files', () => {
  it('unix_socket_mode is applied, and a stale socket is replaced at start', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'exo-e2e-unix-'));
    const agents = [];
    try {
      const a = await startAgent({ dir, server: { unix_socket_mode: '0600' } });
      agents.push(a);
      assert.equal(statSync(a.sock).mode & 0o777, 0o600);
      await a.stop('SIGKILL'); // leaves the socket file behind
      assert.ok(statSync(a.sock).isSocket());
      const b = await startAgent({ dir });
      agents.push(b);
      const r = await request(b, { path: '/healthz', socketPath: b.sock });
      assert.equal(r.status, 200);
      await b.stop();
    } finally {
      for (const x of agents) await x.cleanup();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a file that is not a socket at the path stops the agent at start', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'exo-e2e-unix-'));
    try {
      writeFileSync(join(dir, 'agent.sock'), 'not a socket');
      await assert.rejects(startAgent({ dir }), /exists and is not a socket/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
