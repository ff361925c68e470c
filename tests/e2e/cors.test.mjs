// CORS with raw HTTP requests, so that every header line of the answer is seen as sent:
// exactly one Access-Control-Allow-Origin for a listed origin (on answers, errors and the 401
// of /auth alike), none for an unlisted one or without configured origins, preflights
// answered 204 or 403, and Vary: Origin wherever origins are configured.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startAgent, exchange, login, ACCOUNTS } from './lib/agent.mjs';

const LISTED = 'https://exosphere.example.org';
const OTHER = 'http://127.0.0.1:8000';
const UNLISTED = 'https://evil.example.org';

let agent; // cors_origins lists LISTED and OTHER
let plain; // no cors_origins

before(async () => {
  agent = await startAgent({ server: { cors_origins: `"${LISTED}", "${OTHER}"`, cors_max_age: '90s' } });
  plain = await startAgent();
});

after(async () => {
  await agent?.close();
  await plain?.close();
});

// The header lines of one raw response whose name is `name` (any case).
function lines(res, name) {
  return res.raw.split('\r\n').filter((l) => l.toLowerCase().startsWith(`${name.toLowerCase()}:`));
}

// Sends one request (Connection: close) and returns its parsed response.
async function send(a, method, path, headers = {}, body = '') {
  let head = `${method} ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n`;
  for (const [k, v] of Object.entries(headers)) {
    for (const one of Array.isArray(v) ? v : [v]) head += `${k}: ${one}\r\n`;
  }
  if (body !== '' || method === 'POST') head += `Content-Length: ${Buffer.byteLength(body)}\r\n`;
  const { responses } = await exchange(a, head + '\r\n' + body);
  assert.equal(responses.length, 1, `one response to ${method} ${path}`);
  return responses[0];
}

const CORS_NAMES = ['access-control-allow-origin', 'access-control-allow-credentials', 'access-control-allow-methods',
  'access-control-allow-headers', 'access-control-max-age', 'access-control-expose-headers'];

function assertNoCors(res, what) {
  for (const n of CORS_NAMES) assert.deepEqual(lines(res, n), [], `${what}: no ${n}`);
}

// Exactly one Access-Control-Allow-Origin naming origin, Vary: Origin, never credentials.
function assertAllowed(res, origin, what) {
  assert.deepEqual(lines(res, 'access-control-allow-origin'), [`Access-Control-Allow-Origin: ${origin}`], what);
  assert.deepEqual(lines(res, 'vary'), ['Vary: Origin'], `${what}: Vary`);
  assert.deepEqual(lines(res, 'access-control-allow-credentials'), [], `${what}: no credentials`);
}

const rpcBody = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'agent.info' });
const json = { 'Content-Type': 'application/json' };

test('a listed origin gets exactly its own Access-Control-Allow-Origin on every kind of answer', async () => {
  const r = await send(agent, 'POST', '/rpc', { ...json, Origin: LISTED }, rpcBody);
  assert.equal(r.status, 200);
  assertAllowed(r, LISTED, 'POST /rpc');
  assert.deepEqual(lines(r, 'access-control-expose-headers'), ['Access-Control-Expose-Headers: X-Request-Id, Retry-After']);
  // The preflight headers belong to the preflight only.
  assert.deepEqual(lines(r, 'access-control-allow-methods'), []);

  const o = await send(agent, 'POST', '/rpc', { ...json, Origin: OTHER }, rpcBody);
  assertAllowed(o, OTHER, 'the second listed origin');

  const doc = await send(agent, 'GET', '/openrpc.json', { Origin: LISTED });
  assert.equal(doc.status, 200);
  assertAllowed(doc, LISTED, 'GET /openrpc.json');

  const health = await send(agent, 'GET', '/healthz', { Origin: LISTED });
  assertAllowed(health, LISTED, 'GET /healthz');

  // Errors: wrong media type, wrong method, unknown path.
  const e415 = await send(agent, 'POST', '/rpc', { 'Content-Type': 'text/plain', Origin: LISTED }, rpcBody);
  assert.equal(e415.status, 415);
  assertAllowed(e415, LISTED, '415');
  const e405 = await send(agent, 'GET', '/rpc', { Origin: LISTED });
  assert.equal(e405.status, 405);
  assertAllowed(e405, LISTED, '405');
  const e404 = await send(agent, 'GET', '/nowhere', { Origin: LISTED });
  assert.equal(e404.status, 404);
  assertAllowed(e404, LISTED, '404');
});

test('the 401s of /auth still carry the header, so the page can read them', async () => {
  const bad = Buffer.from('exo-cors-nobody:WRONG WORDS').toString('base64');
  const r = await send(agent, 'POST', '/auth', { Authorization: `Basic ${bad}`, Origin: LISTED });
  assert.equal(r.status, 401);
  assertAllowed(r, LISTED, '401 from /auth');
  const none = await send(agent, 'POST', '/auth', { Origin: LISTED });
  assert.equal(none.status, 401);
  assertAllowed(none, LISTED, '401 from /auth without credentials');
});

test('a successful login over /auth and a call with its token, from a listed origin', { skip: process.getuid() !== 0 && 'logins need root (PAM in the monitor)' }, async () => {
  const basic = Buffer.from(`${ACCOUNTS.user.name}:${ACCOUNTS.user.password}`).toString('base64');
  const r = await send(agent, 'POST', '/auth', { Authorization: `Basic ${basic}`, Origin: LISTED });
  assert.equal(r.status, 200, r.body);
  assertAllowed(r, LISTED, 'login');
  const token = JSON.parse(r.body).token;
  const c = await send(agent, 'POST', '/rpc', { ...json, Authorization: `Bearer ${token}`, Origin: LISTED },
    JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'authenticate.me' }));
  assert.equal(c.status, 200);
  assertAllowed(c, LISTED, 'authenticated call');
  assert.equal(JSON.parse(c.body).result?.username, ACCOUNTS.user.name, c.body);
  await login(agent, ACCOUNTS.user); // and without Origin, as non-browser clients do
});

test('an unlisted, malformed, repeated or absent Origin gets no Access-Control-Allow-Origin, and is still answered', async () => {
  for (const origin of [UNLISTED, `${LISTED}/`, 'HTTPS://EXOSPHERE.EXAMPLE.ORG', `${LISTED}.evil.org`, 'null', '*']) {
    const r = await send(agent, 'POST', '/rpc', { ...json, Origin: origin }, rpcBody);
    assert.equal(r.status, 200, origin);
    assert.equal(JSON.parse(r.body).result !== undefined, true, origin);
    assertNoCors(r, origin);
    assert.deepEqual(lines(r, 'vary'), ['Vary: Origin'], `${origin}: Vary`);
  }
  const two = await send(agent, 'POST', '/rpc', { ...json, Origin: [LISTED, LISTED] }, rpcBody);
  assertNoCors(two, 'two Origin headers');
  const absent = await send(agent, 'POST', '/rpc', json, rpcBody);
  assertNoCors(absent, 'no Origin');
  assert.deepEqual(lines(absent, 'vary'), ['Vary: Origin']);
  // Trailing blanks are not part of the value.
  const blanks = await send(agent, 'POST', '/rpc', { ...json, Origin: `${LISTED}  ` }, rpcBody);
  assertAllowed(blanks, LISTED, 'Origin with trailing blanks');
});

test('a preflight from a listed origin is 204 with methods, headers and max age', async () => {
  for (const path of ['/rpc', '/auth', '/openrpc.json']) {
    const r = await send(agent, 'OPTIONS', path, {
      Origin: LISTED, 'Access-Control-Request-Method': 'POST',
      'Access-Control-Request-Headers': 'authorization,content-type,exosphere-agent-version',
    });
    assert.equal(r.status, 204, path);
    assertAllowed(r, LISTED, `preflight ${path}`);
    assert.deepEqual(lines(r, 'access-control-allow-methods'), ['Access-Control-Allow-Methods: GET, POST, OPTIONS']);
    assert.deepEqual(lines(r, 'access-control-allow-headers'),
      ['Access-Control-Allow-Headers: Authorization, Content-Type, Exosphere-Agent-Version']);
    assert.deepEqual(lines(r, 'access-control-max-age'), ['Access-Control-Max-Age: 90']);
    assert.equal(r.body, '');
  }
});

test('a preflight from an unlisted origin (or none) is 403 without CORS headers', async () => {
  for (const headers of [{ Origin: UNLISTED }, { Origin: `${LISTED}:443` }, {}]) {
    const r = await send(agent, 'OPTIONS', '/rpc', { ...headers, 'Access-Control-Request-Method': 'POST' });
    assert.equal(r.status, 403, JSON.stringify(headers));
    assertNoCors(r, JSON.stringify(headers));
    assert.match(r.body, /cors_origins/);
  }
  // OPTIONS that is no preflight (no Access-Control-Request-Method) stays a plain 204.
  const r = await send(agent, 'OPTIONS', '/rpc', { Origin: UNLISTED });
  assert.equal(r.status, 204);
  assertNoCors(r, 'plain OPTIONS');
});

test('without cors_origins the agent sends no CORS header at all, not even Vary', async () => {
  const cases = [
    ['POST', '/rpc', { ...json, Origin: LISTED }, rpcBody, 200],
    ['POST', '/auth', { Origin: LISTED }, '', 401],
    ['GET', '/openrpc.json', { Origin: LISTED }, '', 200],
    ['OPTIONS', '/rpc', { Origin: LISTED, 'Access-Control-Request-Method': 'POST' }, '', 204],
    ['OPTIONS', '/auth', { Origin: UNLISTED, 'Access-Control-Request-Method': 'POST' }, '', 204],
  ];
  for (const [method, path, headers, body, status] of cases) {
    const r = await send(plain, method, path, headers, body);
    assert.equal(r.status, status, `${method} ${path}`);
    assertNoCors(r, `${method} ${path}`);
    assert.deepEqual(lines(r, 'vary'), [], `${method} ${path}: no Vary`);
  }
});

test('a request refused while its headers arrive (431) carries the header if Origin came first', async () => {
  const r = await send(agent, 'POST', '/rpc', { ...json, Origin: LISTED, 'X-Big': 'x'.repeat(20000) }, rpcBody);
  assert.equal(r.status, 431);
  assertAllowed(r, LISTED, '431 after Origin');
  const late = await send(agent, 'POST', '/rpc', { ...json, 'X-Big': 'x'.repeat(20000), Origin: LISTED }, rpcBody);
  assert.equal(late.status, 431);
  assertNoCors(late, '431 before Origin');
});
