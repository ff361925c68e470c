// HTTP/1.1 as docs/protocol.md describes it, byte by byte on raw TLS sockets: keep-alive,
// pipelining, chunked bodies, 100-continue, every refusal status with the limit it guards,
// timeouts, the connection limit, and the headers every response carries.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import {
  startAgent, request, rpc, rawClient, shippedMethods, testMethods, logLines, waitForLog, sleep, slow,
} from './lib/agent.mjs';

const GET = (path, extra = '') => `GET ${path} HTTP/1.1\r\nHost: localhost\r\n${extra}\r\n`;
const POST = (body, { path = '/rpc', type = 'application/json', extra = '' } = {}) =>
  `POST ${path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: ${type}\r\n` +
  `Content-Length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`;
const call = (method, params, id = 1) => JSON.stringify({ jsonrpc: '2.0', id, method, params });

function assertCommonHeaders(r) {
  assert.match(r.headers['x-request-id'], /^[0-9a-f]{8}-\d+$/);
  assert.equal(r.headers['cache-control'], 'no-store');
  assert.equal(r.headers['x-content-type-options'], 'nosniff');
}

describe('HTTP', () => {
  let agent;
  before(async () => {
    agent = await startAgent({
      methodDirs: [shippedMethods, testMethods],
      server: {
        max_body_size: '4K', max_header_size: '1K', header_timeout: '1s', body_timeout: '1s',
        idle_timeout: '2s', max_pipelined: 4,
      },
    });
  });
  after(async () => {
    await agent.close();
  });

  // Sends bytes on a fresh connection and checks the refusal: the status, the headers, the
  // connection closed by the agent, and exactly one log line with the request id (and no
  // trace of the body's marker). Resolves the response.
  async function refused(bytes, status, { marker, then } = {}) {
    const c = await rawClient(agent);
    c.write(bytes);
    if (then) await then(c);
    const [r, extra] = await c.responses(1);
    assert.equal(extra, undefined, 'nothing after the refusal');
    assert.equal(r.status, status, c.text);
    assert.equal(r.headers.connection, 'close');
    assert.match(r.headers['content-type'], /^text\/plain/);
    assert.ok(r.body.length > 0 && r.body.endsWith('\n') && !r.body.slice(0, -1).includes('\n'));
    assertCommonHeaders(r);
    assert.ok(await c.closed(4000 * slow), 'the agent closes the connection');
    const id = r.headers['x-request-id'];
    await waitForLog(agent, new RegExp(`refused a request: ${status} .*\\(request ${id}\\)`));
    assert.equal(logLines(agent, new RegExp(`request ${id}\\b`)).length, 1, agent.log);
    if (marker) assert.ok(!agent.log.includes(marker), 'the body is not logged');
    return r;
  }

  describe('connections', () => {
    it('keep-alive: several requests, one after another, on one connection', async () => {
      const c = await rawClient(agent);
      c.write(GET('/healthz'));
      await c.responses(1);
      c.write(POST(call('spec.subtract', [5, 3])));
      await c.responses(2);
      c.write(GET('/openrpc.json'));
      const rs = await c.responses(3);
      assert.deepEqual(rs.map((r) => r.status), [200, 200, 200]);
      assert.equal(rs[0].body, '{"status":"ok"}');
      assert.equal(JSON.parse(rs[1].body).result, 2);
      assert.equal(JSON.parse(rs[2].body).openrpc, '1.3.2');
      for (const r of rs) {
        assert.equal(r.headers.connection, undefined);
        assertCommonHeaders(r);
      }
      assert.equal(new Set(rs.map((r) => r.headers['x-request-id'])).size, 3);
      assert.equal(c.isClosed, false);
      c.destroy();
    });

    it('keep-alive through a client library reuses the socket', async () => {
      const ka = new https.Agent({ keepAlive: true, maxSockets: 1, ca: agent.certPem });
      const sockets = new Set();
      for (let i = 0; i < 3; i++) {
        const r = await new Promise((res, rej) => {
          const req = https.request({
            host: '127.0.0.1', port: agent.port, path: '/healthz', agent: ka, servername: 'localhost',
          }, (resp) => { resp.resume(); resp.on('end', () => res(resp)); });
          req.on('socket', (s) => sockets.add(s));
          req.on('error', rej);
          req.end();
        });
        assert.equal(r.statusCode, 200);
      }
      assert.equal(sockets.size, 1);
      ka.destroy();
    });

    it('pipelining: requests written at once are answered in order, a slow one first', async () => {
      const c = await rawClient(agent);
      c.write(POST(call('e2e.sleep', { ms: 300 }, 'slow')) + GET('/healthz') +
        POST(call('spec.subtract', [10, 4], 'fast')) + GET('/nope') + GET('/openrpc.json', 'Connection: close\r\n'));
      const rs = await c.responses(5);
      assert.deepEqual(rs.map((r) => r.status), [200, 200, 200, 404, 200]);
      assert.deepEqual(JSON.parse(rs[0].body), { jsonrpc: '2.0', id: 'slow', result: { slept: 300 } });
      assert.equal(rs[1].body, '{"status":"ok"}');
      assert.deepEqual(JSON.parse(rs[2].body), { jsonrpc: '2.0', id: 'fast', result: 6 });
      const seq = rs.map((r) => Number(r.headers['x-request-id'].split('-')[1]));
      assert.deepEqual(seq, [...seq].sort((a, b) => a - b));
      assert.equal(rs[4].headers.connection, 'close');
      assert.ok(await c.closed());
    });

    it('pipelining beyond max_pipelined: reading pauses, nothing is lost', async () => {
      const c = await rawClient(agent);
      let bytes = '';
      for (let i = 0; i < 20; i++) bytes += POST(call('e2e.sleep', { ms: 10 }, i));
      c.write(bytes);
      const rs = await c.responses(20, 10000 * slow);
      assert.deepEqual(rs.map((r) => JSON.parse(r.body).id), [...Array(20).keys()]);
      c.destroy();
    });

    it('a slow reader: reading pauses while answers pile up, then everything arrives', async () => {
      const c = await rawClient(agent);
      c.socket.pause();
      let bytes = '';
      for (let i = 0; i < 150; i++) bytes += GET('/openrpc.json');
      c.write(bytes);
      await sleep(500);
      c.socket.resume();
      const rs = await c.responses(150, 20000 * slow);
      assert.ok(rs.every((r) => r.status === 200 && r.body === rs[0].body));
      c.destroy();
    });

    it('a call that takes longer than body_timeout still gets its answer', async () => {
      const r = await rpc(agent, { jsonrpc: '2.0', id: 1, method: 'e2e.sleep', params: { ms: 1500 } });
      assert.deepEqual(r.json().result, { slept: 1500 });
    });

    it('Connection: close and HTTP/1.0 close after the answer', async () => {
      for (const req of [GET('/healthz', 'Connection: close\r\n'), 'GET /healthz HTTP/1.0\r\n\r\n']) {
        const c = await rawClient(agent);
        c.write(req);
        const [r] = await c.responses(1);
        assert.equal(r.status, 200);
        assert.equal(r.headers.connection, 'close');
        assert.ok(await c.closed());
      }
    });

    it('HTTP/1.0 with keep-alive stays open', async () => {
      const c = await rawClient(agent);
      c.write('GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n');
      await c.responses(1);
      c.write('GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n');
      const rs = await c.responses(2);
      assert.deepEqual(rs.map((r) => r.status), [200, 200]);
      c.destroy();
    });

    it('an idle connection is closed after idle_timeout', async () => {
      const c = await rawClient(agent);
      c.write(GET('/healthz'));
      await c.responses(1);
      const answered = Date.now();
      assert.equal(await c.closed(1500), false, 'still open before idle_timeout');
      assert.ok(await c.closed(3000 * slow), 'closed after idle_timeout');
      const idle = c.closedAt - answered;
      assert.ok(idle >= 1900 && idle < 2000 + 1500 * slow, `closed after ${idle} ms`);
    });
  });

  describe('request bodies', () => {
    it('a chunked body', async () => {
      const body = call('spec.subtract', { minuend: 9, subtrahend: 2 }, 'chunked');
      const c = await rawClient(agent);
      c.write('POST /rpc HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n' +
        'Transfer-Encoding: chunked\r\n\r\n');
      for (const part of [body.slice(0, 10), body.slice(10, 11), body.slice(11)]) {
        c.write(`${Buffer.byteLength(part).toString(16)}\r\n${part}\r\n`);
        await sleep(20);
      }
      c.write('0\r\n\r\n');
      const [r] = await c.responses(1);
      assert.equal(r.status, 200);
      assert.deepEqual(JSON.parse(r.body), { jsonrpc: '2.0', id: 'chunked', result: 7 });
      c.destroy();
    });

    it('Expect: 100-continue gets 100 Continue before the body is sent', async () => {
      const body = call('spec.get_data', undefined, 'expect');
      const c = await rawClient(agent);
      c.write('POST /rpc HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n' +
        `Content-Length: ${body.length}\r\nExpect: 100-continue\r\n\r\n`);
      const [cont] = await c.responses(1);
      assert.equal(cont.status, 100);
      assert.equal(cont.raw, 'HTTP/1.1 100 Continue\r\n\r\n');
      c.write(body);
      const rs = await c.responses(2);
      assert.equal(rs[1].status, 200);
      assert.deepEqual(JSON.parse(rs[1].body).result, ['hello', 5]);
      c.destroy();
    });

    it('headers that arrive in pieces are read whole (Expect, Content-Type, the target)', async () => {
      const body = call('spec.get_data', undefined, 'pieces');
      const c = await rawClient(agent);
      const head = 'POST /r|pc HTTP/1.1\r\nHost: localhost\r\nContent-Ty|pe: applica|tion/json\r\n' +
        `Content-Length: ${body.length}\r\nExpect: 100-|continue\r\n\r\n`;
      for (const piece of head.split('|')) {
        c.write(piece);
        await sleep(30);
      }
      const [cont] = await c.responses(1);
      assert.equal(cont.status, 100, c.text);
      c.write(body);
      const rs = await c.responses(2);
      assert.equal(rs[1].status, 200, rs[1].body);
      assert.deepEqual(JSON.parse(rs[1].body).result, ['hello', 5]);
      c.destroy();
    });

    it('Expect: 100-continue with a body over max_body_size gets 413, not 100', async () => {
      const r = await refused('POST /rpc HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n' +
        'Content-Length: 5000\r\nExpect: 100-continue\r\n\r\n', 413);
      assert.notEqual(r.status, 100);
    });

    it('a body of exactly max_body_size is accepted', async () => {
      const empty = call('e2e.echo', { value: '' });
      const body = empty.replace('""', `"${'x'.repeat(4096 - empty.length)}"`);
      assert.equal(body.length, 4096);
      const r = await rpc(agent, body);
      assert.equal(r.status, 200);
      assert.equal(r.json().result.length, 4096 - empty.length);
    });
  });

  describe('refusals (answered, logged once without the body, connection closed)', () => {
    it('400 on garbage bytes', async () => {
      const marker = 'MARKER-garbage-0b7e';
      await refused(`GARBAGE ${marker}\r\n\r\n`, 400, { marker });
      await refused('\x00\x01\x02\x03 not http at all\r\n\r\n', 400);
      await refused('GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n', 400);
    });

    it('400 on ambiguous framing (request smuggling attempts)', async () => {
      const marker = 'MARKER-smuggle-77d1';
      await refused(`POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4\r\n` +
        `Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /${marker} HTTP/1.1\r\n\r\n`, 400, { marker });
      await refused('POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n' +
        'Content-Length: 3\r\n\r\n{}x', 400);
    });

    it('400 for whitespace between a header name and its colon (RFC 9112 section 5.1)', async () => {
      await refused('GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n', 400);
    });

    it('400 after a good request: the good one is answered first', async () => {
      const c = await rawClient(agent);
      c.write(GET('/healthz') + 'NOT HTTP\r\n\r\n');
      const rs = await c.responses(2);
      assert.deepEqual(rs.map((r) => r.status), [200, 400]);
      assert.ok(await c.closed());
    });

    it('408 when the headers do not arrive within header_timeout', async () => {
      const t0 = Date.now();
      await refused('GET /healthz HTTP/1.1\r\nHost: loc', 408);
      assert.ok(Date.now() - t0 >= 900);
    });

    it('408 when nothing at all arrives within header_timeout', async () => {
      await refused('', 408);
    });

    it('408 when the body does not arrive within body_timeout', async () => {
      const marker = 'MARKER-slow-body-7f3a';
      await refused(`POST /rpc HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n` +
        `Content-Length: 200\r\n\r\n{"jsonrpc":"2.0","id":"${marker}"`, 408, { marker });
    });

    it('411 for a POST without Content-Length or chunked encoding', async () => {
      await refused('POST /rpc HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\r\n', 411);
    });

    it('413 by Content-Length, before the body is read', async () => {
      const marker = 'MARKER-413-length-91c2';
      const body = `{"jsonrpc":"2.0","id":"${marker}","method":"e2e.echo","params":{"value":"${'y'.repeat(5000)}"}}`;
      await refused(POST(body), 413, { marker });
    });

    it('413 for a chunked body that grows over max_body_size', async () => {
      const marker = 'MARKER-413-chunked-5d0e';
      const chunk = `${marker}${'z'.repeat(1000)}`;
      let bytes = 'POST /rpc HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n' +
        'Transfer-Encoding: chunked\r\n\r\n';
      for (let i = 0; i < 6; i++) bytes += `${chunk.length.toString(16)}\r\n${chunk}\r\n`;
      await refused(bytes, 413, { marker });
    });

    it('414 for a request target longer than 255 bytes', async () => {
      const ok = await rawClient(agent);
      ok.write(GET(`/${'a'.repeat(254)}`));
      const [r] = await ok.responses(1);
      assert.equal(r.status, 404, 'a 255-byte target is fine');
      ok.destroy();
      await refused(GET(`/${'a'.repeat(255)}`), 414);
    });

    it('415 for POST /rpc without Content-Type: application/json (kept alive)', async () => {
      const c = await rawClient(agent);
      c.write(POST(call('spec.get_data'), { type: 'text/plain' }));
      c.write(POST(call('spec.get_data'), { type: 'application/jsonx' }));
      c.write(`POST /rpc HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}`);
      c.write(GET('/healthz'));
      const rs = await c.responses(4);
      assert.deepEqual(rs.map((r) => r.status), [415, 415, 415, 200]);
      assert.equal(rs[0].headers.connection, undefined);
      c.destroy();
    });

    it('417 for an Expect header other than 100-continue', async () => {
      const marker = 'MARKER-417-e1f0';
      await refused(POST(`{"id":"${marker}"}`, { extra: 'Expect: 200-ok\r\n' }), 417, { marker });
    });

    it('431 when the request line and headers exceed max_header_size', async () => {
      const marker = 'MARKER-431-c4b1';
      await refused(GET('/healthz', `X-Big: ${marker}${'h'.repeat(1100)}\r\n`), 431, { marker });
      await refused(GET('/healthz', Array.from({ length: 110 }, (_, i) => `X-H${100 + i}: v\r\n`).join('')), 431);
    });

    it('501 for a protocol upgrade other than a WebSocket GET; 426 for another WebSocket version', async () => {
      await refused(POST('{}', { extra: 'Connection: Upgrade\r\nUpgrade: h2c\r\n' }), 501);
      await refused(GET('/rpc', 'Connection: Upgrade\r\nUpgrade: websocket\r\n' +
        'Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n'), 426);
    });

    it('a refusal while the client keeps sending still reaches the client', async () => {
      const marker = 'MARKER-413-stream-aa01';
      await refused(POST(`{"x":"${marker}${'q'.repeat(5000)}"}`), 413, {
        marker,
        then: async (c) => {
          for (let i = 0; i < 20; i++) { c.write('w'.repeat(16384)); await sleep(5); }
        },
      });
    });
  });

  describe('routes', () => {
    it('404 for an unknown path (kept alive)', async () => {
      const c = await rawClient(agent);
      c.write(GET('/nope') + POST('{}', { path: '/rpc/x' }) + GET('/healthz'));
      const rs = await c.responses(3);
      assert.deepEqual(rs.map((r) => r.status), [404, 404, 200]);
      assert.equal(rs[0].headers.connection, undefined);
      assertCommonHeaders(rs[0]);
      c.destroy();
    });

    it('405 with Allow for a known path and a wrong method (kept alive)', async () => {
      const c = await rawClient(agent);
      c.write(GET('/rpc') + POST('{}', { path: '/healthz' }) + 'DELETE /openrpc.json HTTP/1.1\r\nHost: x\r\n\r\n' +
        'PUT /rpc HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n' + GET('/healthz'));
      const rs = await c.responses(5);
      assert.deepEqual(rs.map((r) => r.status), [405, 405, 405, 405, 200]);
      assert.equal(rs[0].headers.allow, 'POST, OPTIONS');
      assert.equal(rs[1].headers.allow, 'GET, HEAD, OPTIONS');
      assert.equal(rs[2].headers.allow, 'GET, HEAD, OPTIONS');
      assert.equal(rs[3].headers.allow, 'POST, OPTIONS');
      c.destroy();
    });

    it('OPTIONS answers 204 on every route', async () => {
      for (const path of ['/rpc', '/openrpc.json', '/healthz']) {
        const r = await request(agent, { method: 'OPTIONS', path });
        assert.equal(r.status, 204, path);
        assert.equal(r.body, '');
        assertCommonHeaders(r);
      }
    });

    it('HEAD answers the headers of GET without the body', async () => {
      for (const path of ['/healthz', '/openrpc.json']) {
        const g = await request(agent, { path });
        const c = await rawClient(agent, { head: true });
        c.write(`HEAD ${path} HTTP/1.1\r\nHost: localhost\r\n\r\n` + GET('/healthz'));
        await sleep(200);
        const [h] = await c.responses(1);
        assert.equal(h.status, 200);
        assert.equal(h.headers['content-length'], String(Buffer.byteLength(g.body)));
        assert.equal(h.headers['content-type'], 'application/json');
        assert.ok(c.text.slice(h.raw.length).startsWith('HTTP/1.1 200 OK\r\n'), 'no body after the HEAD answer');
        c.destroy();
      }
    });

    it('GET /healthz, a query string is ignored', async () => {
      const r = await request(agent, { path: '/healthz?probe=1' });
      assert.equal(r.status, 200);
      assert.deepEqual(r.json(), { status: 'ok' });
      assert.equal(r.headers['content-type'], 'application/json');
      assertCommonHeaders(r);
    });

    it('every JSON-RPC answer carries the common headers', async () => {
      const r = await rpc(agent, { jsonrpc: '2.0', id: 1, method: 'nope' });
      assertCommonHeaders(r);
      const n = await rpc(agent, { jsonrpc: '2.0', method: 'spec.notify_hello', params: [1] });
      assert.equal(n.status, 204);
      assertCommonHeaders(n);
    });
  });
});

describe('HTTP: the connection limit', () => {
  let agent;
  before(async () => {
    agent = await startAgent({ server: { max_connections: 2 } });
  });
  after(async () => {
    await agent.close();
  });

  it('503 with Retry-After over max_connections, then room again once one closes', async () => {
    const a = await rawClient(agent);
    const b = await rawClient(agent);
    a.write(GET('/healthz'));
    b.write(GET('/healthz'));
    await a.responses(1);
    await b.responses(1);

    const c = await rawClient(agent);
    c.write(GET('/healthz'));
    const [r] = await c.responses(1);
    assert.equal(r.status, 503);
    assert.equal(r.headers['retry-after'], '1');
    assert.equal(r.headers.connection, 'close');
    assertCommonHeaders(r);
    assert.ok(await c.closed());
    const id = r.headers['x-request-id'];
    await waitForLog(agent, new RegExp(`refused a request: 503 .*\\(request ${id}\\)`));
    assert.equal(logLines(agent, new RegExp(`request ${id}\\b`)).length, 1);

    // The first two still work.
    a.write(GET('/healthz'));
    assert.equal((await a.responses(2))[1].status, 200);

    a.destroy();
    await sleep(200);
    const d = await rawClient(agent);
    d.write(GET('/healthz'));
    assert.equal((await d.responses(1))[0].status, 200);
    b.destroy();
    d.destroy();
  });
});
