// Logins through real PAM with real accounts, tokens, permissions and the Unix socket's peer
// identity, against the real agent started as root (monitor + unprivileged worker).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startAgent, rpc, request, run, login, logLines, waitForLog, ACCOUNTS, slow } from './lib/agent.mjs';

const call = (method, params, id = 1) => ({ jsonrpc: '2.0', id, method, ...(params ? { params } : {}) });
const bearer = (token) => ({ headers: { Authorization: `Bearer ${token}` } });
const basic = (name, password) => ({ Authorization: `Basic ${Buffer.from(`${name}:${password}`).toString('base64')}` });

function b64url(buf) {
  return Buffer.from(buf).toString('base64').replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');
}
// A token signed with `key` over any payload: what a forger who had the key could make, so
// the tests can reach the claim checks behind the signature.
function sign(key, payload, header = { alg: 'HS256', typ: 'JWT' }) {
  const h = b64url(JSON.stringify(header));
  const p = b64url(typeof payload === 'string' ? payload : JSON.stringify(payload));
  return `${h}.${p}.${b64url(createHmac('sha256', key).update(`${h}.${p}`).digest())}`;
}

describe('authentication', () => {
  let agent;
  // No backoff here, so that the failure cases below do not slow each other down; the backoff
  // has its own agent further down.
  before(async () => { agent = await startAgent({ sections: { auth: { login_backoff: '0s' } } }); });
  after(async () => { await agent.close(); });

  async function auth(name, password) {
    return request(agent, { method: 'POST', path: '/auth', headers: basic(name, password) });
  }

  it('POST /auth logs in through PAM with a passphrase holding spaces and a colon', async () => {
    const { name, password } = ACCOUNTS.user;
    assert.match(password, / .*:/);
    const r = await auth(name, password);
    assert.equal(r.status, 200, r.body);
    const v = r.json();
    assert.deepEqual(Object.keys(v).sort(), ['expires', 'token', 'username']);
    assert.equal(v.username, name);
    const now = Date.now() / 1000;
    assert.ok(v.expires > now + 11 * 3600 && v.expires <= now + 12 * 3600 + 5, `expires ${v.expires}`);
    assert.equal(r.headers['www-authenticate'], undefined);
    assert.match(logLines(agent, /login succeeded/).join('\n'), new RegExp(`user="${name}" source=127\\.0\\.0\\.1 transport=https`));
  });

  it('a wrong password and an unknown user get the same 401 answer, never WWW-Authenticate', async () => {
    const wrong = await auth(ACCOUNTS.user.name, 'WRONG WORDS HERE');
    const unknown = await auth('exo-nobody-here', 'ANY OLD WORDS');
    for (const r of [wrong, unknown]) {
      assert.equal(r.status, 401);
      assert.equal(r.headers['www-authenticate'], undefined);
      assert.deepEqual(r.json(), { error: { code: -32001, message: 'Invalid user name or password', data: { reason: 'bad_credentials' } } });
    }
  });

  it('locked, expired and must-change accounts fail with their own reasons (after the right password)', async () => {
    const locked = await auth(ACCOUNTS.locked.name, ACCOUNTS.locked.password);
    assert.equal(locked.json().error.data.reason, 'bad_credentials'); // a locked password never matches
    const expired = await auth(ACCOUNTS.expired.name, ACCOUNTS.expired.password);
    assert.equal(expired.status, 401);
    assert.equal(expired.json().error.data.reason, 'account_expired');
    const pw = await auth(ACCOUNTS.pwexpired.name, ACCOUNTS.pwexpired.password);
    assert.equal(pw.json().error.data.reason, 'password_expired');
  });

  it('each failure is one greppable log line with user, source and reason, and no password', async () => {
    await auth('exo-nobody-here', 'SECRET GUESS ONE');
    await waitForLog(agent, /user="exo-nobody-here".*reason=bad_credentials/);
    const lines = logLines(agent, /login failed: user="exo-nobody-here"/);
    assert.ok(lines.length >= 1);
    for (const l of lines) assert.match(l, /source=127\.0\.0\.1 transport=https reason=bad_credentials/);
    assert.doesNotMatch(agent.log, /SECRET GUESS|WRONG WORDS|LAMB MAT/);
  });

  it('a user name with control characters is refused and quoted in the log', async () => {
    const r = await rpc(agent, call('authenticate.login', { username: 'evil\nlogin succeeded', password: 'x' }));
    assert.equal(r.json().error.data.reason, 'bad_credentials');
    await waitForLog(agent, /login failed: user="evil\\x0alogin succeeded"/);
  });

  it('Basic credentials that are not base64 of user:password are refused', async () => {
    for (const h of ['Basic', 'Basic !!!!', `Basic ${Buffer.from('no-colon').toString('base64')}`, 'Bearer abc']) {
      const r = await request(agent, { method: 'POST', path: '/auth', headers: { Authorization: h } });
      assert.equal(r.status, 401, h);
      assert.equal(r.json().error.code, -32001);
    }
    const get = await request(agent, { method: 'GET', path: '/auth' });
    assert.equal(get.status, 405);
    assert.equal(get.headers.allow, 'POST, OPTIONS');
  });

  it('a token authorises user methods; without one they are refused with -32001 in HTTP 200', async () => {
    let r = await rpc(agent, call('system_load.current'));
    assert.equal(r.status, 200);
    assert.equal(r.json().error.code, -32001);
    assert.equal(r.json().error.data.reason, 'no credentials');
    const token = await login(agent, ACCOUNTS.user);
    r = await rpc(agent, call('system_load.current'), bearer(token));
    assert.ok(r.json().result, r.body);
    r = await rpc(agent, call('authenticate.me'), bearer(token));
    assert.deepEqual(r.json().result, {
      username: ACCOUNTS.user.name, uid: Number((await run('id', ['-u', ACCOUNTS.user.name])).stdout),
      groups: [ACCOUNTS.user.name], admin: false, via: 'token', expires: r.json().result.expires,
    });
    r = await rpc(agent, call('authenticate.me'), bearer(await login(agent, ACCOUNTS.admin)));
    assert.equal(r.json().result.admin, true);
    assert.ok(r.json().result.groups.includes('sudo'));
  });

  it('a batch that starts with a login runs its later entries as that user, and a logout ends it', async () => {
    const { name, password } = ACCOUNTS.admin;
    const r = await rpc(agent, [
      call('authenticate.me', undefined, 0),
      call('authenticate.login', { username: name, password }, 1),
      call('authenticate.me', undefined, 2),
      call('system_load.current', undefined, 3),
      call('authenticate.logout', undefined, 4),
      call('authenticate.me', undefined, 5),
    ]);
    const [me0, login_, me, load, logout, me2] = r.json();
    assert.equal(me0.error.code, -32001);
    assert.equal(login_.result.username, name);
    assert.equal(me.result.username, name);
    assert.ok(load.result);
    assert.deepEqual(logout.result, { revoked: true });
    assert.equal(me2.error.code, -32001);
    // The token the login returned was revoked by the logout.
    const after_ = await rpc(agent, call('authenticate.me'), bearer(login_.result.token));
    assert.equal(after_.json().error.data.reason, 'token revoked');
  });

  it('authenticate.token authorises the rest of a batch', async () => {
    const token = await login(agent, ACCOUNTS.user);
    const r = await rpc(agent, [call('authenticate.token', { token }, 1), call('authenticate.me', undefined, 2)]);
    const [t, me] = r.json();
    assert.equal(t.result.username, ACCOUNTS.user.name);
    assert.equal(me.result.username, ACCOUNTS.user.name);
    const bad = await rpc(agent, call('authenticate.token', { token: token.slice(0, -2) }));
    assert.equal(bad.json().error.code, -32001);
  });

  it('every protected method refuses missing, malformed, forged, expired and revoked tokens', async () => {
    const key = readFileSync(join(agent.dir, 'state', 'token-key'));
    const good = await login(agent, ACCOUNTS.admin);
    const [h, p] = good.split('.');
    const claims = JSON.parse(Buffer.from(p, 'base64url'));
    const now = Math.floor(Date.now() / 1000);
    const revoked = await login(agent, ACCOUNTS.admin);
    await rpc(agent, call('authenticate.logout'), bearer(revoked));
    const forged = {
      'malformed token': ['', 'abc', `${h}.${p}`, `${good}.x`, `${good}=`, good.replace(/\./g, '..')],
      'bad signature': [
        `${h}.${p}.${b64url(createHmac('sha256', 'another key').update(`${h}.${p}`).digest())}`,
        `${h}.${b64url(JSON.stringify({ ...claims, sub: 'root', uid: 0 }))}.${good.split('.')[2]}`,
      ],
      'alg none': [`${b64url('{"alg":"none","typ":"JWT"}')}.${p}.`],
      'token expired': [sign(key, { ...claims, iat: now - 7200, exp: now - 60 })],
      'token revoked': [revoked],
    };
    const doc = (await rpc(agent, call('rpc.discover'))).json().result;
    const protectedMethods = doc.methods.filter((m) => m['x-permission'] !== 'public').map((m) => m.name);
    assert.ok(protectedMethods.includes('system_load.current') && protectedMethods.includes('authenticate.me'));
    for (const [kind, tokens] of Object.entries(forged)) {
      for (const t of tokens) {
        for (const m of protectedMethods) {
          const r = await rpc(agent, call(m), bearer(t));
          assert.equal(r.status, 200);
          const e = r.json().error;
          assert.ok(e, `${m} with a ${kind} token answered ${r.body}`);
          assert.equal(e.code, -32001, `${m} ${kind}: ${r.body}`);
          if (kind !== 'alg none' && t !== '') assert.equal(e.data.reason, kind === 'bad signature' ? 'bad signature' : kind, `${m}: ${r.body}`);
        }
      }
    }
    // A valid signature over claims of the wrong shape is still refused.
    for (const bad of [{ ...claims, uid: '0' }, { ...claims, exp: undefined }, { ...claims, grp: 'sudo' }]) {
      const r = await rpc(agent, call('authenticate.me'), bearer(sign(key, bad)));
      assert.equal(r.json().error.code, -32001, JSON.stringify(bad));
    }
    // A Basic header on /rpc is not a token.
    const r = await rpc(agent, call('authenticate.me'), { headers: basic(ACCOUNTS.admin.name, ACCOUNTS.admin.password) });
    assert.equal(r.json().error.code, -32001);
    assert.match(r.json().error.data.reason, /not a Bearer token/);
  });

  it('the Unix socket knows root as an administrator and another uid as that user', async () => {
    let r = await rpc(agent, call('authenticate.me'), { socketPath: agent.sock });
    assert.deepEqual({ ...r.json().result, groups: undefined }, { username: 'root', uid: 0, admin: true, via: 'unix', groups: undefined });
    const body = JSON.stringify(call('authenticate.me'));
    const c = await run('runuser', ['-u', ACCOUNTS.user.name, '--', 'curl', '-sS', '--unix-socket', agent.sock,
      '-H', 'Content-Type: application/json', '-d', body, 'http://localhost/rpc']);
    assert.equal(c.code, 0, c.stderr);
    const me = JSON.parse(c.stdout).result;
    assert.equal(me.username, ACCOUNTS.user.name);
    assert.equal(me.admin, false);
    assert.equal(me.via, 'unix');
    // Logout has nothing to revoke for a peer known by its credentials.
    r = await rpc(agent, call('authenticate.logout'), { socketPath: agent.sock });
    assert.equal(r.json().error.data.reason, 'no_token');
  });

  it('root cannot log in over the network by default', async () => {
    const r = await auth('root', 'WHATEVER IT IS');
    assert.equal(r.json().error.data.reason, 'bad_credentials');
    await waitForLog(agent, /user="root".*reason=not_allowed.*root login is off/);
  });
});

describe('permissions and policy from the configuration', () => {
  let agent;
  before(async () => {
    agent = await startAgent({
      sections: {
        auth: {
          login_backoff: '0s',
          admin_methods: 'system_load.current',
          user_methods: 'agent.info',
          allow_users: `${ACCOUNTS.admin.name}, ${ACCOUNTS.user.name}`,
          trusted_proxies: '127.0.0.0/8',
        },
      },
    });
  });
  after(async () => { await agent.close(); });

  it('admin_methods makes a user method admin-only: -32002 for a user, fine for an administrator', async () => {
    const user = await login(agent, ACCOUNTS.user);
    let r = await rpc(agent, call('system_load.current'), bearer(user));
    assert.equal(r.json().error.code, -32002);
    assert.equal(r.json().error.data.reason, 'not_admin');
    r = await rpc(agent, call('system_load.current'), bearer(await login(agent, ACCOUNTS.admin)));
    assert.ok(r.json().result, r.body);
  });

  it('user_methods makes a public method need a login', async () => {
    let r = await rpc(agent, call('agent.info'));
    assert.equal(r.json().error.code, -32001);
    r = await rpc(agent, call('agent.info'), bearer(await login(agent, ACCOUNTS.user)));
    assert.ok(r.json().result);
    const doc = (await rpc(agent, call('rpc.discover'))).json().result;
    assert.ok(doc.methods.find((m) => m.name === 'rpc.discover'));
  });

  it('allow_users keeps other users out without checking their password', async () => {
    const r = await request(agent, { method: 'POST', path: '/auth', headers: basic(ACCOUNTS.expired.name, ACCOUNTS.expired.password) });
    assert.equal(r.json().error.data.reason, 'bad_credentials');
    await waitForLog(agent, new RegExp(`user="${ACCOUNTS.expired.name}".*reason=not_allowed`));
  });

  it('X-Forwarded-For from a trusted proxy names the client in the log', async () => {
    await request(agent, { method: 'POST', path: '/auth', headers: { ...basic(ACCOUNTS.user.name, 'NOT IT'), 'X-Forwarded-For': '198.51.100.7, 203.0.113.9' } });
    await waitForLog(agent, /source=203\.0\.113\.9\(proxy:127\.0\.0\.1\)/);
  });
});

describe('X-Forwarded-For without trusted proxies', () => {
  it('is ignored', async () => {
    const agent = await startAgent();
    try {
      await request(agent, { method: 'POST', path: '/auth', headers: { ...basic('exo-nobody-here', 'NOT IT'), 'X-Forwarded-For': '203.0.113.9' } });
      await waitForLog(agent, /user="exo-nobody-here" source=127\.0\.0\.1 /);
      assert.doesNotMatch(agent.log, /203\.0\.113\.9/);
    } finally {
      await agent.close();
    }
  });
});

describe('failed-login backoff and the cap on logins in flight', () => {
  it('a password-guessing loop is slowed: after each failure the user name waits twice as long', async () => {
    const agent = await startAgent({ sections: { auth: { login_backoff: '1s', login_backoff_max: '1m' } } });
    try {
      const { name, password } = ACCOUNTS.user;
      // Guess as fast as the agent answers until three passwords have been checked (PAM) or
      // 60 s pass. Each answer is either a checked failure or a refusal to check (backoff).
      const outcomes = [];
      const t0 = Date.now();
      let checked = 0;
      while (checked < 3 && Date.now() - t0 < 60000 * slow) {
        const r = await rpc(agent, call('authenticate.login', { username: name, password: `GUESS ${outcomes.length}` }));
        const e = r.json().error;
        outcomes.push({ e, checked, at: Date.now() - t0 });
        if (e.data.reason === 'bad_credentials') checked++;
      }
      assert.equal(checked, 3, JSON.stringify(outcomes.map((o) => o.e.data)));
      const waited = outcomes.filter((o) => o.e.data.reason === 'backoff');
      assert.ok(waited.length > 0);
      for (const o of waited) assert.equal(o.e.code, -32007);
      // The wait doubles: right after the first failure about 1 s is left, after the second
      // about 2 s; and never more than the failures so far allow.
      const firstAfter = (k) => waited.find((o) => o.checked === k).e.data.retry_after_ms;
      assert.ok(firstAfter(1) > 500 && firstAfter(1) <= 1000, `after one failure: ${firstAfter(1)} ms`);
      assert.ok(firstAfter(2) > 1500 && firstAfter(2) <= 2000, `after two failures: ${firstAfter(2)} ms`);
      // So the third password could not be checked before both waits had passed: most
      // guesses were refused without PAM.
      const thirdAt = outcomes.filter((o) => o.e.data.reason === 'bad_credentials')[2].at;
      assert.ok(thirdAt >= 3000, `three checks in ${thirdAt} ms`);
      assert.ok(waited.length > 2 * checked, `${waited.length} refused, ${checked} checked`);
      // While backing off, even the right password is not checked.
      const r = await rpc(agent, call('authenticate.login', { username: name, password }));
      assert.equal(r.json().error.data.reason, 'backoff');
      // /auth says the same with 429 and Retry-After.
      const h = await request(agent, { method: 'POST', path: '/auth', headers: basic(name, password) });
      assert.equal(h.status, 429);
      assert.ok(Number(h.headers['retry-after']) >= 1);
      // Another user name is not affected.
      assert.ok((await rpc(agent, call('authenticate.login', { username: ACCOUNTS.admin.name, password: ACCOUNTS.admin.password }))).json().result);
    } finally {
      await agent.close();
    }
  });

  it('over max_logins_in_flight a login is refused as Busy at once', async () => {
    const agent = await startAgent({ sections: { auth: { max_logins_in_flight: '1', login_backoff: '0s' } } });
    try {
      // Wrong passwords keep pam_unix busy for its failure delay.
      const rs = await Promise.all([1, 2, 3].map((i) =>
        rpc(agent, call('authenticate.login', { username: ACCOUNTS.admin.name, password: `WRONG ${i}` }))));
      const reasons = rs.map((r) => r.json().error.data.reason).sort();
      assert.ok(reasons.includes('busy'), reasons.join());
      const busy = rs.map((r) => r.json().error).find((e) => e.data.reason === 'busy');
      assert.equal(busy.code, -32005);
    } finally {
      await agent.close();
    }
  });
});

describe('tokens across restarts', () => {
  it('the signing key and the revocations survive a restart', async () => {
    let agent = await startAgent();
    const dir = agent.dir;
    const keep = await login(agent, ACCOUNTS.user);
    const gone = await login(agent, ACCOUNTS.user);
    await rpc(agent, call('authenticate.logout'), bearer(gone));
    await agent.stop();
    agent = await startAgent({ dir, port: agent.port });
    try {
      assert.ok((await rpc(agent, call('authenticate.me'), bearer(keep))).json().result);
      assert.equal((await rpc(agent, call('authenticate.me'), bearer(gone))).json().error.data.reason, 'token revoked');
    } finally {
      await agent.close();
      await run('rm', ['-rf', dir]);
    }
  });
});
