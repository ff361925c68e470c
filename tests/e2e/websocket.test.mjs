// WebSocket sessions on GET /rpc with the npm `ws` client: the handshake over TLS, plain HTTP
// and the Unix socket, the same answers as over HTTP, in-band login, concurrency, ctx.session
// and session_send, pings, every limit, and the close on shutdown.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import WebSocket from 'ws';
import { open, call } from './lib/wsclient.mjs';
import { startAgent, rpc, login, exchange, waitFor, sleep, ACCOUNTS, testMethods, shippedMethods, slow } from './lib/agent.mjs';

describe('WebSocket sessions', () => {
  let agent;
  before(async () => {
    agent = await startAgent({ methodDirs: [shippedMethods, testMethods], sections: { auth: { login_backoff: '0s' } } });
  });
  after(async () => { await agent.close(); });

  it('the handshake over TLS and the Unix socket; the same answers as over HTTP', async () => {
    for (const unix of [false, true]) {
      const s = open(agent, { unix });
      await s.ready;
      const overHttp = (await rpc(agent, call('agent.info', null, 7))).json();
      const overWs = await s.call('agent.info', null, 7);
      assert.deepEqual(Object.keys(overWs).sort(), Object.keys(overHttp).sort());
      assert.equal(overWs.result.version, overHttp.result.version);
      // A batch is one frame; a notification in it gets no entry.
      s.send([call('e2e.echo', { value: 1 }, 1), { jsonrpc: '2.0', method: 'e2e.echo', params: { value: 2 } }, call('no.such', null, 'x')]);
      const batch = (await s.take((m) => Array.isArray(m.json))).json;
      assert.equal(batch.length, 2);
      assert.equal(batch[1].error.code, -32601);
      // A parse error is the JSON-RPC answer, not a close.
      s.send('{"jsonrpc": "2.0", "id": 1, ');
      const parse = (await s.take((m) => m.json && m.json.error && m.json.error.code === -32700)).json;
      assert.equal(parse.id, null);
      // A notification alone gets nothing; the session goes on.
      s.send({ jsonrpc: '2.0', method: 'e2e.echo', params: { value: 2 } });
      assert.equal((await s.call('e2e.echo', { value: 9 }, 9)).id, 9);
      assert.equal(s.inbox.length, 0, JSON.stringify(s.inbox));
      s.ws.close(1000);
      assert.equal((await s.closed).code, 1000);
    }
  });

  it('bad handshakes are refused with a clear HTTP status', async () => {
    const head = (lines) => `GET /rpc HTTP/1.1\r\nHost: x\r\n${lines.join('\r\n')}\r\n\r\n`;
    const key = 'dGhlIHNhbXBsZSBub25jZQ==';
    const cases = [
      [['Upgrade: websocket', 'Connection: Upgrade', 'Sec-WebSocket-Version: 8', `Sec-WebSocket-Key: ${key}`], 426, /version 13/],
      [['Upgrade: websocket', 'Connection: Upgrade', 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Key: short'], 400, /Sec-WebSocket-Key/],
      [['Upgrade: websocket', 'Sec-WebSocket-Version: 13', `Sec-WebSocket-Key: ${key}`], 400, /Connection: Upgrade/],
      [['Upgrade: h2c', 'Connection: Upgrade', 'Sec-WebSocket-Version: 13', `Sec-WebSocket-Key: ${key}`], 400, /only WebSocket/],
    ];
    for (const [lines, status, text] of cases) {
      const out = (await exchange(agent, head(lines), { unix: true })).data.toString();
      assert.match(out, new RegExp(`^HTTP/1.1 ${status} `), out);
      assert.match(out, text);
      if (status === 426) assert.match(out, /Sec-WebSocket-Version: 13/);
    }
    // The RFC 6455 sample key gets the RFC's accept value.
    const ok = (await exchange(agent, head(['Upgrade: websocket', 'Connection: Upgrade', 'Sec-WebSocket-Version: 13', `Sec-WebSocket-Key: ${key}`]), { unix: true, ms: 500 })).data.toString();
    assert.match(ok, /^HTTP\/1.1 101 /);
    assert.match(ok, /Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=/);
  });

  it('in-band login authorises the session; logout makes it anonymous', async () => {
    const s = open(agent);
    await s.ready;
    assert.equal((await s.call('authenticate.me')).error.code, -32001);
    const { name, password } = ACCOUNTS.user;
    const li = await s.call('authenticate.login', { username: name, password });
    assert.equal(li.result.username, name);
    assert.equal((await s.call('authenticate.me')).result.username, name);
    assert.equal((await s.call('authenticate.me')).result.username, name);
    assert.ok((await s.call('authenticate.logout')).result);
    assert.equal((await s.call('authenticate.me')).error.code, -32001);
    // authenticate.token with a token from POST /auth.
    const token = await login(agent, ACCOUNTS.user);
    assert.equal((await s.call('authenticate.token', { token })).result.username, name);
    assert.equal((await s.call('authenticate.me')).result.username, name);
    s.close();
  });

  it('the upgrade request\'s Bearer token; a token that expires during the session stops working', async () => {
    const token = await login(agent, ACCOUNTS.user);
    const s = open(agent, { headers: { Authorization: `Bearer ${token}` } });
    await s.ready;
    assert.equal((await s.call('authenticate.me')).result.username, ACCOUNTS.user.name);
    s.close();
    const key = readFileSync(join(agent.dir, 'state', 'token-key'));
    const [h, p] = token.split('.');
    const claims = JSON.parse(Buffer.from(p, 'base64url'));
    const b64 = (v) => Buffer.from(v).toString('base64url');
    const now = Math.floor(Date.now() / 1000);
    const body = `${h}.${b64(JSON.stringify({ ...claims, exp: now + 2 }))}`;
    const short = `${body}.${b64(createHmac('sha256', key).update(body).digest())}`;
    const t = open(agent);
    await t.ready;
    assert.equal((await t.call('authenticate.token', { token: short })).result.username, ACCOUNTS.user.name);
    assert.equal((await t.call('authenticate.me')).result.username, ACCOUNTS.user.name);
    await sleep(3100);
    const e = (await t.call('authenticate.me')).error;
    assert.equal(e.code, -32001);
    assert.equal(e.data.reason, 'token expired');
    // A forged token is refused in-band as over HTTP.
    assert.equal((await t.call('authenticate.token', { token: `${body}.AAAA` })).error.code, -32001);
    t.close();
  });

  it('a slow call does not hold a fast one; answers carry their ids', async () => {
    const s = open(agent);
    await s.ready;
    s.send(call('e2e.sleep', { ms: 800 }, 'slow'));
    s.send(call('e2e.echo', { value: 'fast' }, 'fast'));
    await s.answer('fast');
    assert.equal(s.inbox.length, 0);
    assert.deepEqual((await s.answer('slow')).result, { slept: 800 });
    s.close();
  });

  it('ctx.session over WebSocket, absent over HTTP; session_send reaches the client in order', async () => {
    const s = open(agent);
    await s.ready;
    const a = (await s.call('e2e.session')).result.session;
    assert.ok(Number.isInteger(a) && a > 0);
    const t = open(agent);
    await t.ready;
    assert.notEqual((await t.call('e2e.session')).result.session, a);
    t.close();
    assert.deepEqual((await rpc(agent, call('e2e.session'))).json().result, {});
    assert.deepEqual((await rpc(agent, call('e2e.push', { text: 'x', times: 1 }))).json().result, { sent: 0 });
    s.send(call('e2e.push', { text: 'hello', times: 50 }, 'push'));
    const done = await s.answer('push');
    assert.deepEqual(done.result, { sent: 50 });
    const pushed = s.inbox.splice(0);
    assert.equal(pushed.length, 50);
    assert.ok(pushed.every((m) => m.text === 'hello' && !m.binary));
    s.close();
  });
});

describe('WebSocket limits', () => {
  let agent;
  before(async () => {
    agent = await startAgent({
      tls: false,
      methodDirs: [shippedMethods, testMethods],
      sections: { websocket: { ping_interval: '300ms', pong_timeout: '700ms', max_message: '4K', max_queued: '64K', max_sessions: 3 } },
    });
  });
  after(async () => { await agent.close(); });

  it('plain HTTP serves sessions too; pings keep an answering client open past the idle timeout', async () => {
    const s = open(agent);
    await s.ready;
    let pings = 0;
    s.ws.on('ping', () => { pings++; });
    await sleep(1500 * slow);
    assert.ok(pings >= 3, `${pings} pings`);
    assert.equal(s.ws.readyState, WebSocket.OPEN);
    assert.equal((await s.call('e2e.echo', { value: 3 }, 3)).id, 3);
    s.close();
  });

  it('a client that stops answering pings is closed within ping_interval + pong_timeout', async () => {
    const s = open(agent, { options: { autoPong: false } });
    await s.ready;
    const t0 = Date.now();
    const c = await s.closed;
    assert.ok(Date.now() - t0 < (300 + 700 + 500) * slow, `${Date.now() - t0} ms`);
    assert.equal(c.code, 1008);
    assert.match(c.reason, /no pong within 700 ms/);
  });

  it('max_message (one frame and fragments), binary frames and invalid UTF-8 close the session', async () => {
    const big = open(agent);
    await big.ready;
    big.send('x'.repeat(5000));
    assert.equal((await big.closed).code, 1009);
    const frag = open(agent);
    await frag.ready;
    for (let i = 0; i < 3; i++) frag.ws.send('y'.repeat(2000), { fin: false });
    frag.ws.send('y', { fin: true });
    assert.equal((await frag.closed).code, 1009);
    const bin = open(agent);
    await bin.ready;
    bin.ws.send(Buffer.from([1, 2, 3]), { binary: true });
    const cb = await bin.closed;
    assert.equal(cb.code, 1003);
    assert.match(cb.reason, /binary/);
    const utf = open(agent, { options: { skipUTF8Validation: true } });
    await utf.ready;
    utf.ws.send(Buffer.from([0x22, 0xff, 0xfe, 0x22]), { binary: false });
    assert.equal((await utf.closed).code, 1007);
    // A message just under the limit is served.
    const ok = open(agent);
    await ok.ready;
    const r = await ok.call('e2e.echo', { value: 'z'.repeat(3000) }, 5);
    assert.equal(r.result.length, 3000);
    ok.close();
  });

  it('max_queued: a client that stops reading while pushes flood is closed with 1008 and memory stays bounded', async () => {
    const rss = () => {
      const pid = agent.workerPid ? agent.workerPid() : agent.proc.pid;
      return Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1]);
    };
    const before = rss();
    const s = open(agent);
    await s.ready;
    s.ws._socket.pause();
    s.send(call('e2e.push', { text: 'p', repeat: 60000, times: 2000 }, 'flood'));
    await waitFor(() => /too slow/.test(agent.log), 10000 * slow, 'the too-slow close');
    const grown = rss() - before;
    assert.ok(grown < 20000, `worker RSS grew by ${grown} kB`);
    s.ws._socket.resume();
    const c = await s.closed;
    assert.equal(c.code, 1008, JSON.stringify(c));
    assert.match(c.reason, /^too slow: \d+ bytes unsent$/);
  });

  it('max_sessions: further upgrades get HTTP 503', async () => {
    const open3 = [open(agent), open(agent), open(agent)];
    await Promise.all(open3.map((s) => s.ready));
    const extra = open(agent);
    await assert.rejects(extra.ready, (e) => e.status === 503);
    for (const s of open3) s.close();
    await waitFor(async () => { const s = open(agent); try { await s.ready; s.close(); return true; } catch { return false; } }, 3000, 'a free session');
  });
});

describe('WebSocket shutdown', () => {
  it('SIGTERM closes sessions with 1001 after their calls have answered', async () => {
    const agent = await startAgent({ methodDirs: [shippedMethods, testMethods] });
    try {
      const idle = open(agent);
      const busy = open(agent);
      await Promise.all([idle.ready, busy.ready]);
      busy.send(call('e2e.sleep', { ms: 700 }, 'late'));
      await sleep(100);
      agent.proc.kill('SIGTERM');
      const ci = await idle.closed;
      assert.equal(ci.code, 1001);
      assert.equal(ci.reason, 'going away');
      const cb = await busy.closed;
      assert.equal(cb.code, 1001);
      assert.deepEqual(busy.inbox.map((m) => m.json.id), ['late']);
      const exit = await agent.wait();
      assert.equal(exit.code, 0);
    } finally {
      await agent.cleanup();
    }
  });
});
