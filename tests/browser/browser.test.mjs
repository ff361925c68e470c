// A real browser against the real agent: Debian's Chromium, headless, loads a page from
// another origin (a static server on another port) that logs in with fetch POST /auth and
// calls methods with the Bearer token, (a) directly, with the agent's cors_origins listing
// the page's origin, and (b) through nginx configured as Exosphere's proxy, which adds the
// CORS headers itself while the agent, without cors_origins, adds none.
// Run: EXO_AGENT_BIN=$PWD/build/exosphere-guest-agent node --test tests/browser/ (as root, for
// the PAM logins; docs/testing-browser.md).
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { startAgent, ACCOUNTS } from '../e2e/lib/agent.mjs';
import {
  startPageServer, launchChromium, openPage, headerValues, startNginx, rawHttps,
} from './lib/browser.mjs';

const account = ACCOUNTS.user;
const asRoot = process.getuid() === 0;

let pages; // origins[0] is listed in cors_origins, origins[1] is not
before(async () => { pages = await startPageServer(2); });
after(async () => { await pages?.close(); });

// The answers the page got for its session, checked alike in both set-ups.
function assertSession(s, what) {
  assert.equal(s.error, undefined, `${what}: ${s.error}`);
  assert.equal(s.login.status, 200, `${what}: login ${JSON.stringify(s.login)}`);
  assert.equal(s.login.body.username, account.name);
  assert.equal(typeof s.login.body.token, 'string');
  assert.equal(s.me.status, 200);
  assert.equal(s.me.body.result.username, account.name, JSON.stringify(s.me.body));
  assert.equal(s.me.body.result.via, 'token');
  assert.equal(typeof s.info.body.result.version, 'string', JSON.stringify(s.info.body));
  assert.equal(typeof s.load.body.result, 'object', JSON.stringify(s.load.body));
}

// Every response the page received from base carried exactly one
// Access-Control-Allow-Origin, naming the page's origin.
async function assertOneAllowOrigin(page, base, origin) {
  const seen = (await page.settled()).filter((r) => r.url.startsWith(base));
  assert.ok(seen.some((r) => r.url.endsWith('/auth')), 'the login was seen');
  assert.ok(seen.filter((r) => r.url.endsWith('/rpc')).length >= 3, 'the calls were seen');
  for (const r of seen)
    assert.deepEqual(headerValues(r.headers, 'access-control-allow-origin'), [origin], `${r.method} ${r.url} ${r.status}`);
}

// The WebSocket checks: in-band login, a subscription and one notification, from the page,
// over wsUrl.
async function checkWebSocket(t, page, wsUrl) {
  const r = await page.evaluate(([u, n, p]) => window.exo.wsSession(u, n, p, 'notify.system_load', 5000),
    [wsUrl, account.name, account.password]);
  assert.equal(r.error, undefined, JSON.stringify(r));
  assert.equal(r.login.result.username, account.name);
  assert.ok(r.subscribe.result, JSON.stringify(r.subscribe));
  assert.equal(r.notification.method, 'notify.system_load');
}

describe('(a) directly, with cors_origins', { skip: !asRoot && 'logins need root (PAM in the monitor)' }, () => {
  let agent;
  let browser;
  before(async () => {
    agent = await startAgent({
      server: { cors_origins: `"${pages.origins[0]}"` },
      // A load sample every second, for the notification the WebSocket check waits for.
      sections: { system_load: { interval: '1s' } },
    });
    browser = await launchChromium([agent.certPem]);
  });
  after(async () => {
    await browser?.close();
    await agent?.close();
  });

  test('a page of a listed origin logs in and calls methods', async () => {
    const page = await openPage(browser, pages.origins[0]);
    const s = await page.evaluate(([b, n, p]) => window.exo.session(b, n, p), [agent.base, account.name, account.password]);
    assertSession(s, 'direct');
    await assertOneAllowOrigin(page, agent.base, pages.origins[0]);
    await page.context().close();
  });

  test('a page of an unlisted origin is blocked by the browser', async () => {
    const page = await openPage(browser, pages.origins[1]);
    const s = await page.evaluate(([b, n, p]) => window.exo.session(b, n, p), [agent.base, account.name, account.password]);
    assert.match(s.error ?? '', /TypeError: Failed to fetch/, JSON.stringify(s));
    assert.equal(s.login, undefined);
    // Nor may it open a WebSocket session: the agent refuses the upgrade (403).
    const w = await page.evaluate(([u, n, p]) => window.exo.wsSession(u, n, p, 'notify.system_load', 5000),
      [`wss://127.0.0.1:${agent.port}/rpc`, account.name, account.password]);
    assert.equal(w.opened, false, JSON.stringify(w));
    assert.match(w.error ?? '', /WebSocket error|closed: 1006/, JSON.stringify(w));
    await page.context().close();
  });

  test('WebSocket: login, subscription and a notification', async (t) => {
    const page = await openPage(browser, pages.origins[0]);
    await checkWebSocket(t, page, `wss://127.0.0.1:${agent.port}/rpc`);
    await page.context().close();
  });
});

describe('(b) through nginx as Exosphere\'s proxy, the agent without cors_origins', { skip: !asRoot && 'logins need root (PAM in the monitor), nginx a root master' }, () => {
  let agent;
  let proxy;
  let browser;
  before(async () => {
    agent = await startAgent({ sections: { system_load: { interval: '1s' } } });
    proxy = await startNginx({ agentPort: agent.port, origin: pages.origins[0] });
    browser = await launchChromium([proxy.certPem]);
  });
  after(async () => {
    await browser?.close();
    await proxy?.stop();
    await agent?.close();
  });

  test('a page logs in and calls methods through the proxy', async () => {
    const page = await openPage(browser, pages.origins[0]);
    const s = await page.evaluate(([b, n, p]) => window.exo.session(b, n, p), [proxy.base, account.name, account.password]);
    assertSession(s, `through nginx (${proxy.log()})`);
    await assertOneAllowOrigin(page, proxy.base, pages.origins[0]);
    await page.context().close();
  });

  test('a raw request through the proxy has exactly one Access-Control-Allow-Origin', async () => {
    const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'agent.info' });
    const r = await rawHttps(proxy.port, proxy.certPem, `POST /rpc HTTP/1.1\r\nHost: proxy.test\r\nOrigin: ${pages.origins[0]}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
    assert.equal(r.status, 200);
    assert.deepEqual(r.lines.filter((l) => /^access-control-allow-origin:/i.test(l)), [`Access-Control-Allow-Origin: ${pages.origins[0]}`]);
    // nginx sends no Vary of its own; one would have come from the agent.
    assert.deepEqual(r.lines.filter((l) => /^vary:/i.test(l)), []);
    const bad = await rawHttps(proxy.port, proxy.certPem, `POST /auth HTTP/1.1\r\nHost: proxy.test\r\nOrigin: ${pages.origins[0]}\r\n` +
      'Content-Length: 0\r\nConnection: close\r\n\r\n');
    assert.equal(bad.status, 401);
    assert.equal(bad.lines.filter((l) => /^access-control-allow-origin:/i.test(l)).length, 1);
    const pre = await rawHttps(proxy.port, proxy.certPem, `OPTIONS /rpc HTTP/1.1\r\nHost: proxy.test\r\nOrigin: ${pages.origins[0]}\r\n` +
      'Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n');
    assert.equal(pre.status, 204);
    assert.equal(pre.lines.filter((l) => /^access-control-allow-origin:/i.test(l)).length, 1);
    // Behind the proxy the agent itself adds nothing.
    const direct = await rawHttps(agent.port, agent.certPem, `POST /rpc HTTP/1.1\r\nHost: localhost\r\nOrigin: ${pages.origins[0]}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
    assert.equal(direct.status, 200);
    assert.deepEqual(direct.lines.filter((l) => /^(access-control-|vary:)/i.test(l)), []);
  });

  test('WebSocket through the proxy: login, subscription and a notification', async (t) => {
    const page = await openPage(browser, pages.origins[0]);
    await checkWebSocket(t, page, `wss://127.0.0.1:${proxy.port}/rpc`);
    await page.context().close();
  });
});

// Why the agent must not list origins behind the proxy: two Access-Control-Allow-Origin
// headers, even equal ones, make the browser refuse the response.
describe('(b2) nginx adding CORS and the agent too', { skip: !asRoot && 'logins need root (PAM in the monitor), nginx a root master' }, () => {
  let agent;
  let proxy;
  let browser;
  before(async () => {
    agent = await startAgent({ server: { cors_origins: `"${pages.origins[0]}"` } });
    proxy = await startNginx({ agentPort: agent.port, origin: pages.origins[0] });
    browser = await launchChromium([proxy.certPem]);
  });
  after(async () => {
    await browser?.close();
    await proxy?.stop();
    await agent?.close();
  });

  test('the browser refuses the doubled header', async () => {
    const page = await openPage(browser, pages.origins[0]);
    const s = await page.evaluate(([b, n, p]) => window.exo.session(b, n, p), [proxy.base, account.name, account.password]);
    assert.match(s.error ?? '', /TypeError: Failed to fetch/, JSON.stringify(s));
    const r = await rawHttps(proxy.port, proxy.certPem, `POST /auth HTTP/1.1\r\nHost: proxy.test\r\nOrigin: ${pages.origins[0]}\r\n` +
      'Content-Length: 0\r\nConnection: close\r\n\r\n');
    assert.equal(r.lines.filter((l) => /^access-control-allow-origin:/i.test(l)).length, 2);
    await page.context().close();
  });
});
