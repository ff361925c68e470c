// A WebSocket client session for the tests (npm `ws`): send() a value or text, answer(id)
// waits for the response with that id, take(pred) for the first message matching, closed
// resolves {code, reason}.
import WebSocket from 'ws';
import { slow } from './agent.mjs';

export const call = (method, params, id = 1) => ({ jsonrpc: '2.0', id, method, ...(params ? { params } : {}) });

// A session: send() a value or text, answer(id) waits for the response with that id, next()
// for the next message whatever it is, closed resolves {code, reason}.
export function open(agent, { unix = false, headers = {}, options = {} } = {}) {
  const url = unix ? `ws+unix://${agent.sock}:/rpc` : `${agent.tls ? 'wss' : 'ws'}://127.0.0.1:${agent.port}/rpc`;
  const ws = new WebSocket(url, { ca: agent.certPem, servername: 'localhost', headers, ...options });
  const s = { ws, inbox: [], waiters: [] };
  s.closed = new Promise((res) => ws.on('close', (code, reason) => res({ code, reason: reason.toString() })));
  s.error = new Promise((res) => ws.on('error', res));
  ws.on('message', (data, binary) => {
    const m = { text: data.toString(), binary };
    try { m.json = JSON.parse(m.text); } catch { /* not JSON */ }
    s.inbox.push(m);
    for (const w of s.waiters.splice(0)) w();
  });
  s.ready = new Promise((res, rej) => { ws.on('open', res); ws.on('error', rej); ws.on('unexpected-response', (req, r) => rej(Object.assign(new Error(`HTTP ${r.statusCode}`), { status: r.statusCode }))); });
  s.send = (v) => ws.send(typeof v === 'string' ? v : JSON.stringify(v));
  s.take = async (pred, ms = 5000 * slow) => {
    const end = Date.now() + ms;
    for (;;) {
      const i = s.inbox.findIndex(pred);
      if (i >= 0) return s.inbox.splice(i, 1)[0];
      if (Date.now() > end) throw new Error('no such message in time');
      await new Promise((r) => { s.waiters.push(r); setTimeout(r, 50); });
    }
  };
  s.answer = async (id) => (await s.take((m) => m.json && !Array.isArray(m.json) && m.json.id === id)).json;
  s.call = async (method, params, id = Math.floor(Math.random() * 1e9)) => { s.send(call(method, params, id)); return s.answer(id); };
  s.close = () => { ws.terminate(); };
  return s;
}
