// The curl lines of the README and scripts/try.sh, against a real agent: HTTPS with the
// agent's certificate as the only trusted CA, and the Unix socket.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startAgent, run, ACCOUNTS } from './lib/agent.mjs';

describe('curl', () => {
  let agent;
  let cacert;
  let base;
  before(async () => {
    agent = await startAgent();
    cacert = join(agent.dir, 'state', 'tls-cert.pem');
    base = `https://127.0.0.1:${agent.port}`;
  });
  after(async () => {
    await agent.close();
  });

  // curl ARGS... with -sS and the status code on the last line.
  async function curl(...args) {
    const r = await run('curl', ['-sS', '--max-time', '10', '-w', '\n%{http_code}', ...args]);
    assert.equal(r.code, 0, r.stderr);
    const i = r.stdout.lastIndexOf('\n');
    return { status: Number(r.stdout.slice(i + 1)), body: r.stdout.slice(0, i), stderr: r.stderr };
  }
  const json = ['-H', 'Content-Type: application/json'];

  it('GET /healthz over HTTPS, verified with --cacert', async () => {
    const r = await curl('--cacert', cacert, `${base}/healthz`);
    assert.equal(r.status, 200);
    assert.deepEqual(JSON.parse(r.body), { status: 'ok' });
  });

  it('GET /healthz as try.sh prints it (-k)', async () => {
    const r = await curl('-k', `${base}/healthz`);
    assert.equal(r.body, '{"status":"ok"}');
  });

  it('curl refuses the agent without its certificate as CA', async () => {
    const r = await run('curl', ['-sS', '--max-time', '10', `${base}/healthz`]);
    assert.equal(r.code, 60, r.stderr); // peer certificate cannot be authenticated
  });

  it('GET /openrpc.json', async () => {
    const r = await curl('--cacert', cacert, `${base}/openrpc.json`);
    assert.equal(r.status, 200);
    const doc = JSON.parse(r.body);
    assert.equal(doc.openrpc, '1.3.2');
    assert.ok(doc.methods.some((m) => m.name === 'agent.info'));
  });

  it('POST /rpc agent.info, then log in with curl -u and call system_load.current with the token', async () => {
    let r = await curl('--cacert', cacert, `${base}/rpc`, ...json, '-d', '{"jsonrpc":"2.0","id":1,"method":"agent.info"}');
    assert.equal(r.status, 200);
    const info = JSON.parse(r.body);
    assert.equal(info.id, 1);
    assert.equal(info.result.current_api_version, '2027-01-15');
    const { name, password } = ACCOUNTS.admin;
    r = await curl('--cacert', cacert, '-u', `${name}:${password}`, '-X', 'POST', `${base}/auth`);
    assert.equal(r.status, 200, r.body);
    const { token, username } = JSON.parse(r.body);
    assert.equal(username, name);
    r = await curl('--cacert', cacert, `${base}/rpc`, ...json, '-H', `Authorization: Bearer ${token}`,
      '-d', '{"jsonrpc":"2.0","id":2,"method":"system_load.current"}');
    assert.deepEqual(Object.keys(JSON.parse(r.body).result).sort(),
      ['cpuPctUsed', 'epoch', 'gpuPctUsed', 'memPctUsed', 'rootfsPctUsed']);
  });

  it('POST /rpc with Connection: close ends cleanly (close_notify before the FIN)', async () => {
    const r = await curl('--cacert', cacert, `${base}/rpc`, ...json, '-H', 'Connection: close',
      '-d', '{"jsonrpc":"2.0","id":1,"method":"agent.info"}');
    assert.equal(r.status, 200);
    assert.equal(r.stderr, '');
  });

  it('a batch over --unix-socket', async () => {
    const r = await curl('--unix-socket', agent.sock, 'http://localhost/rpc', ...json, '-d',
      '[{"jsonrpc":"2.0","id":1,"method":"agent.info"},{"jsonrpc":"2.0","id":2,"method":"rpc.discover"}]');
    assert.equal(r.status, 200);
    const [a, b] = JSON.parse(r.body);
    assert.equal(a.id, 1);
    assert.equal(a.result.version, b.result.info.version);
    assert.equal(b.result.openrpc, '1.3.2');
  });

  it('GET /healthz over --unix-socket', async () => {
    const r = await curl('--unix-socket', agent.sock, 'http://localhost/healthz');
    assert.equal(r.body, '{"status":"ok"}');
  });

  it('curl -I (HEAD), a 404 and a 415', async () => {
    const h = await run('curl', ['-sS', '-I', '--cacert', cacert, `${base}/healthz`]);
    assert.match(h.stdout, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(h.stdout, /content-length: 15\r\n/i);
    assert.match(h.stdout, /x-request-id: /i);
    assert.equal((await curl('--cacert', cacert, `${base}/nope`)).status, 404);
    const t = await curl('--cacert', cacert, `${base}/rpc`, '-d', '{}');
    assert.equal(t.status, 415); // curl -d sends application/x-www-form-urlencoded
  });
});
