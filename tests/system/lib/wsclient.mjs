// A minimal WebSocket client (RFC 6455) for the system tests: a JSON-RPC session with the agent
// in a container over its Unix socket, reached from the host through the container's root
// (/proc/<PID 1>/root/...), so the test receives the notifications the agent sends the
// session (notify.jobs.progress and notify.jobs.done for a job it started). The peer is the
// host's root, which is root inside too (no user namespace): an administrator.
//
// No dependency: the system tests have no node_modules. Text and control frames only, client
// frames masked, no extensions.
import { connect } from 'node:net';
import { randomBytes, createHash } from 'node:crypto';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const MAX_MESSAGE = 16 * 1024 * 1024;

// Opens a session on the container's agent socket: { request(method, params, timeoutMs) →
// the response object, notifications (every notification received, in order, each with the
// time `at` it came), waitFor(predicate, timeoutMs) → the first notification matching, close() }.
export async function openSession(c, { socket = '/run/exosphere-guest-agent/agent.sock' } = {}) {
  const path = `/proc/${c.leader}/root${socket}`;
  const sock = connect({ path });
  await new Promise((res, rej) => { sock.once('connect', res); sock.once('error', rej); });
  const key = randomBytes(16).toString('base64');
  sock.write(['GET /rpc HTTP/1.1', 'Host: localhost', 'Upgrade: websocket', 'Connection: Upgrade',
    `Sec-WebSocket-Key: ${key}`, 'Sec-WebSocket-Version: 13', '', ''].join('\r\n'));

  let buf = Buffer.alloc(0);
  let upgraded = false;
  let fragments = [];
  let closed = null;
  const pending = new Map();
  const notifications = [];
  const waiters = [];
  let onUpgrade;
  const upgrade = new Promise((res, rej) => { onUpgrade = { res, rej }; });

  const send = (opcode, payload) => {
    const len = payload.length;
    const head = len < 126 ? Buffer.from([0x80 | opcode, 0x80 | len])
      : len < 65536 ? Buffer.from([0x80 | opcode, 0x80 | 126, len >> 8, len & 0xff])
        : Buffer.concat([Buffer.from([0x80 | opcode, 0x80 | 127]), (() => { const b = Buffer.alloc(8); b.writeBigUInt64BE(BigInt(len)); return b; })()]);
    const mask = randomBytes(4);
    const body = Buffer.from(payload);
    for (let i = 0; i < body.length; i++) body[i] ^= mask[i % 4];
    sock.write(Buffer.concat([head, mask, body]));
  };

  const deliver = (text) => {
    const msg = JSON.parse(text);
    if (msg.id !== undefined && msg.id !== null && pending.has(msg.id)) {
      const p = pending.get(msg.id);
      pending.delete(msg.id);
      p.res(msg);
      return;
    }
    msg.at = Date.now();
    notifications.push(msg);
    for (const w of [...waiters]) {
      if (w.pred(msg)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.res(msg);
      }
    }
  };

  const fail = (e) => {
    closed = e;
    for (const p of pending.values()) p.rej(e);
    pending.clear();
    for (const w of waiters.splice(0)) w.rej(e);
    onUpgrade.rej(e);
  };

  const parse = () => {
    if (!upgraded) {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = buf.subarray(0, end).toString('latin1').split('\r\n');
      buf = buf.subarray(end + 4);
      const accept = createHash('sha1').update(key + GUID).digest('base64');
      if (!/^HTTP\/1\.1 101 /.test(head[0]) || !head.some((h) => h.toLowerCase() === `sec-websocket-accept: ${accept.toLowerCase()}`)) {
        fail(new Error(`no WebSocket upgrade: ${head.join(' | ')}`));
        sock.destroy();
        return;
      }
      upgraded = true;
      onUpgrade.res();
    }
    for (;;) {
      if (buf.length < 2) return;
      const fin = (buf[0] & 0x80) !== 0;
      const opcode = buf[0] & 0x0f;
      let len = buf[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (buf.length < 4) return;
        len = buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (buf.length < 10) return;
        len = Number(buf.readBigUInt64BE(2));
        off = 10;
      }
      if (len > MAX_MESSAGE) { fail(new Error(`a frame of ${len} bytes`)); sock.destroy(); return; }
      // Server frames are not masked (RFC 6455 5.1); a masked one is a protocol error.
      if (buf[1] & 0x80) { fail(new Error('a masked frame from the server')); sock.destroy(); return; }
      if (buf.length < off + len) return;
      const payload = buf.subarray(off, off + len);
      buf = buf.subarray(off + len);
      if (opcode === 0x9) send(0xa, payload);
      else if (opcode === 0x8) { fail(new Error(`the agent closed the session (${payload.length >= 2 ? payload.readUInt16BE(0) : 'no code'})`)); sock.end(); return; } else if (opcode === 0x1 || opcode === 0x0) {
        fragments.push(payload);
        if (fin) {
          const text = Buffer.concat(fragments).toString();
          fragments = [];
          deliver(text);
        }
      }
    }
  };

  sock.on('data', (d) => { buf = Buffer.concat([buf, d]); parse(); });
  sock.on('error', (e) => fail(e));
  sock.on('close', () => { if (!closed) fail(new Error('the session closed')); });
  await upgrade;

  let nextId = 0;
  return {
    notifications,
    request(method, params = {}, timeoutMs = 60000) {
      if (closed) return Promise.reject(closed);
      const id = `ws-${++nextId}`;
      return new Promise((res, rej) => {
        const timer = setTimeout(() => { pending.delete(id); rej(new Error(`${method}: no answer in ${timeoutMs} ms`)); }, timeoutMs);
        pending.set(id, { res: (m) => { clearTimeout(timer); res(m); }, rej: (e) => { clearTimeout(timer); rej(e); } });
        send(0x1, JSON.stringify({ jsonrpc: '2.0', id, method, params }));
      });
    },
    waitFor(pred, timeoutMs = 180000) {
      const seen = notifications.find(pred);
      if (seen) return Promise.resolve(seen);
      if (closed) return Promise.reject(closed);
      return new Promise((res, rej) => {
        const w = { pred };
        const timer = setTimeout(() => { waiters.splice(waiters.indexOf(w), 1); rej(new Error(`no such notification in ${timeoutMs} ms`)); }, timeoutMs);
        w.res = (m) => { clearTimeout(timer); res(m); };
        w.rej = (e) => { clearTimeout(timer); rej(e); };
        waiters.push(w);
      });
    },
    close() {
      if (closed) return;
      closed = new Error('closed by the test');
      try { send(0x8, Buffer.from([0x03, 0xe8])); } catch { /* gone */ }
      sock.end();
      sock.destroy();
    },
  };
}
