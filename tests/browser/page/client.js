// What Exosphere's Elm client does from a page of another origin: POST /auth with Basic
// credentials, then JSON-RPC calls on POST /rpc with the Bearer token. Each function returns
// plain data (or throws), so that page.evaluate can carry the result back to the test.
'use strict';

window.exo = {
  // Logs in; resolves { status, body } (body parsed when it is JSON). A fetch the browser
  // blocks (CORS, certificate) rejects with a TypeError instead.
  async login(base, username, password) {
    // btoa takes Latin-1 only; the test accounts' passphrases are ASCII (with spaces and ':').
    const r = await fetch(`${base}/auth`, {
      method: 'POST',
      headers: { Authorization: `Basic ${btoa(`${username}:${password}`)}` },
    });
    const text = await r.text();
    let body = text;
    try { body = JSON.parse(text); } catch { /* not JSON: kept as text */ }
    return { status: r.status, body };
  },

  // One JSON-RPC call; resolves { status, body }.
  async call(base, token, method, params) {
    const headers = { 'Content-Type': 'application/json' };
    if (token) headers.Authorization = `Bearer ${token}`;
    const r = await fetch(`${base}/rpc`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, ...(params ? { params } : {}) }),
    });
    return { status: r.status, body: await r.json() };
  },

  // The whole round a test checks: login, then calls as that user. Resolves the answers, or
  // { error } with the message of the rejected fetch (how a browser reports a CORS refusal).
  async session(base, username, password) {
    try {
      const login = await this.login(base, username, password);
      if (login.status !== 200) return { login };
      const token = login.body.token;
      const me = await this.call(base, token, 'authenticate.me');
      const info = await this.call(base, token, 'agent.info');
      const load = await this.call(base, token, 'system_load.current');
      return { login, me, info, load };
    } catch (e) {
      return { error: `${e.name}: ${e.message}` };
    }
  },

  // A WebSocket session (GET /rpc with Upgrade): log in in-band with authenticate.login,
  // subscribe to `notification`, and resolve once one arrives (or with the error).
  wsSession(wsUrl, username, password, notification, timeoutMs) {
    return new Promise((resolve) => {
      const ws = new WebSocket(wsUrl);
      const seen = { opened: false, login: null, subscribe: null, notification: null };
      const done = (extra) => { clearTimeout(timer); ws.close(); resolve({ ...seen, ...extra }); };
      const timer = setTimeout(() => done({ error: 'timed out' }), timeoutMs);
      const send = (id, method, params) => ws.send(JSON.stringify({ jsonrpc: '2.0', id, method, params }));
      ws.onopen = () => {
        seen.opened = true;
        send(1, 'authenticate.login', { username, password });
      };
      ws.onerror = () => done({ error: 'WebSocket error' });
      ws.onclose = (ev) => done({ error: `closed: ${ev.code} ${ev.reason}` });
      ws.onmessage = (ev) => {
        const m = JSON.parse(ev.data);
        if (m.id === 1) {
          seen.login = m;
          if (m.error) return done({});
          return send(2, 'notifications.subscribe', { names: [notification] });
        }
        if (m.id === 2) {
          seen.subscribe = m;
          if (m.error) done({});
          return undefined;
        }
        if (m.id === undefined && m.method === notification) {
          seen.notification = m;
          ws.onclose = null;
          done({});
        }
        return undefined;
      };
    });
  },
};
