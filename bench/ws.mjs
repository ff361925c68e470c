// WebSocket benchmark client of bench/ws.sh (which starts the agent and runs this); see
// docs/performance.md, "WebSocket sessions". Run as root against a running agent:
//
//   node bench/ws.mjs             the driver: reads its settings from the environment
//   node bench/ws.mjs idle|rate   a client process the driver forks (not run by hand)
//   node bench/ws.mjs table FILE  prints a summary the driver wrote as a table
//
// The driver logs in once over HTTPS (POST /auth, a test account of tests/e2e/lib/accounts.mjs),
// then:
//   1. idle: CLIENTS client processes open SESSIONS TLS WebSocket sessions between them, each
//      with the token in the upgrade's Authorization header, and subscribe each to
//      notify.system_load; the agent's memory (monitor + worker, RSS and PSS) is read with all
//      of them open; then SAMPLES samples are timed (each sample's epoch to the last session's
//      receipt, and the first receipt to the last); then every session is closed and the
//      driver waits until the agent holds no connection of them.
//   2. rate: RATE_CLIENTS processes open RATE_SESSIONS sessions, each keeping DEPTH bench.echo
//      calls in flight, for DURATION seconds after a second of warm-up: calls per second,
//      latency percentiles, and the agent's CPU time per call. Then wrk's HTTPS keep-alive run
//      with the same call and the same number of connections (if wrk is installed), for
//      comparison in the same run.
// One Node process spends about as much CPU on a TLS session as the agent does, so the
// sessions are spread over several processes (child_process.fork): one would make the client
// the bottleneck of both the set-up and the fan-out timing.
// Prints the summary as one JSON object on stdout; progress goes to stderr.
import { fork, execFile } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import https from 'node:https';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..');
// The e2e tests' npm packages (tests/e2e/node_modules, or those of the tests/e2e directory
// named by EXO_BENCH_E2E_DIR): the `ws` client.
const e2eDir = process.env.EXO_BENCH_E2E_DIR || join(repo, 'tests/e2e');
// Loaded by the client processes alone: the driver and the table do not need it.
let WebSocket = null;

const ECHO = { message: 'hello', n: 42 };
const say = (...a) => process.stderr.write(`bench ws: ${a.join(' ')}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// Wall-clock milliseconds with a fraction, comparable between processes (and with epochs).
const wallMs = () => performance.timeOrigin + performance.now();

function env(name, def) {
  const v = process.env[name];
  return v === undefined || v === '' ? def : v;
}
function envInt(name, def) {
  const v = Number(env(name, def));
  if (!Number.isInteger(v) || v < 0) throw new Error(`${name} must be a whole number, not ${process.env[name]}`);
  return v;
}

// ---- client processes --------------------------------------------------------------------

function connect(o, headers = {}) {
  return new WebSocket(`wss://127.0.0.1:${o.port}/rpc`, {
    ca: o.ca, servername: 'localhost', headers, perMessageDeflate: false,
    handshakeTimeout: 60000,
  });
}

// Opens o.n sessions, at most o.concurrency handshakes at a time, subscribes each to
// notify.system_load and records, per sample epoch, how many sessions received it and when
// the first and the last did.
async function idleClient(o) {
  const sessions = [];
  const epochs = new Map(); // epoch -> { n, first, last }
  let failed = 0;
  let firstError = null;
  const note = (e) => { failed++; firstError = firstError || String(e && e.message || e); };
  const openOne = () => new Promise((res) => {
    const ws = connect(o, { Authorization: `Bearer ${o.token}` });
    let done = false;
    const finish = (ok, e) => {
      if (done) return;
      done = true;
      if (ok) sessions.push(ws); else { note(e); ws.terminate(); }
      res();
    };
    ws.on('error', (e) => finish(false, e));
    ws.on('unexpected-response', (req, r) => finish(false, `HTTP ${r.statusCode} to the upgrade`));
    ws.on('close', (code, reason) => finish(false, `closed ${code} ${reason}`));
    ws.on('open', () => ws.send('{"jsonrpc":"2.0","id":1,"method":"notifications.subscribe","params":{"names":["notify.system_load"]}}'));
    ws.on('message', (data) => {
      const t = wallMs();
      const text = data.toString();
      // Notifications are the common case: no JSON parse for them beyond the epoch.
      const m = /"method":"notify\.system_load".*"epoch":(\d+)/.exec(text) || /"epoch":(\d+).*"method":"notify\.system_load"/.exec(text);
      if (m) {
        const e = Number(m[1]);
        const s = epochs.get(e);
        if (s) { s.n++; if (t < s.first) s.first = t; if (t > s.last) s.last = t; } else epochs.set(e, { n: 1, first: t, last: t });
        return;
      }
      const j = JSON.parse(text);
      if (j.id === 1) {
        if (j.result && j.result.names && j.result.names.includes('notify.system_load')) finish(true);
        else finish(false, `subscribe failed: ${text}`);
      }
    });
  });
  const t0 = Date.now();
  let next = 0;
  const lane = async () => { while (next < o.n) { next++; await openOne(); } };
  await Promise.all(Array.from({ length: Math.min(o.concurrency, o.n) }, lane));
  process.send({ op: 'ready', count: sessions.length, failed, firstError, ms: Date.now() - t0 });
  process.on('message', async (msg) => {
    if (msg.op === 'report') {
      process.send({ op: 'report', epochs: [...epochs].map(([e, s]) => ({ epoch: e, ...s })), open: sessions.filter((w) => w.readyState === WebSocket.OPEN).length });
    } else if (msg.op === 'close') {
      // A close handshake each (1000), then the socket is cut if the agent does not answer.
      await Promise.all(sessions.map((ws) => new Promise((res) => {
        if (ws.readyState === WebSocket.CLOSED) return res();
        const t = setTimeout(() => { ws.terminate(); res(); }, 10000);
        ws.on('close', () => { clearTimeout(t); res(); });
        ws.close(1000, 'bench done');
      })));
      process.send({ op: 'closed' });
    }
  });
}

// Latencies in 10 us buckets up to 1 s; the rest in the last one (max kept apart).
const BUCKET_US = 10;
const N_BUCKETS = 100000;

// o.n sessions, each keeping o.depth bench.echo calls in flight; counts and latencies are
// reset at 'mark' and reported at 'stop'.
async function rateClient(o) {
  let hist = new Uint32Array(N_BUCKETS);
  let count = 0;
  let errors = 0;
  let max = 0;
  let running = true;
  let nextId = 1;
  const socks = [];
  const sendOne = (ws, sent) => {
    const id = nextId++;
    sent.set(id, process.hrtime.bigint());
    ws.send(`{"jsonrpc":"2.0","id":${id},"method":"bench.echo","params":{"message":"hello","n":42}}`);
  };
  await Promise.all(Array.from({ length: o.n }, () => new Promise((res, rej) => {
    const ws = connect(o);
    const sent = new Map();
    ws.on('error', rej);
    ws.on('open', () => { socks.push(ws); res(); });
    ws.on('message', (data) => {
      const now = process.hrtime.bigint();
      const j = JSON.parse(data.toString());
      const t = sent.get(j.id);
      if (t === undefined) return;
      sent.delete(j.id);
      if (j.error || !j.result || j.result.message !== ECHO.message || j.result.n !== ECHO.n) errors++;
      const us = Number(now - t) / 1000;
      count++;
      if (us > max) max = us;
      hist[Math.min(N_BUCKETS - 1, Math.floor(us / BUCKET_US))]++;
      if (running) sendOne(ws, sent);
    });
    ws.once('open', () => { for (let i = 0; i < o.depth; i++) sendOne(ws, sent); });
  })));
  process.send({ op: 'ready' });
  process.on('message', async (msg) => {
    if (msg.op === 'mark') {
      hist = new Uint32Array(N_BUCKETS);
      count = 0;
      errors = 0;
      max = 0;
    } else if (msg.op === 'stop') {
      const report = { op: 'report', count, errors, max, hist: Array.from(hist) };
      running = false;
      process.send(report);
      await sleep(200);
      for (const ws of socks) ws.close(1000, 'bench done');
      await Promise.all(socks.map((ws) => new Promise((r) => { if (ws.readyState === WebSocket.CLOSED) r(); else { ws.on('close', r); setTimeout(() => { ws.terminate(); r(); }, 5000); } })));
      process.send({ op: 'closed' });
    }
  });
}

// ---- the driver ---------------------------------------------------------------------------

// Messages from a child: a queue per child, taken in order.
function child(mode, opts) {
  const p = fork(fileURLToPath(import.meta.url), [mode], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const c = { p, inbox: [], waiters: [], exited: false };
  p.on('message', (m) => { c.inbox.push(m); for (const w of c.waiters.splice(0)) w(); });
  p.on('exit', (code) => { c.exited = true; c.code = code; for (const w of c.waiters.splice(0)) w(); });
  c.next = async (op, ms = 600000) => {
    const end = Date.now() + ms;
    for (;;) {
      const i = c.inbox.findIndex((m) => m.op === op);
      if (i >= 0) return c.inbox.splice(i, 1)[0];
      if (c.exited) throw new Error(`a ${mode} client exited (code ${c.code}) before "${op}"`);
      if (Date.now() > end) throw new Error(`a ${mode} client did not report "${op}" in time`);
      await new Promise((r) => { c.waiters.push(r); setTimeout(r, 200); });
    }
  };
  p.send({ op: 'start', ...opts });
  return c;
}

function login(o, account) {
  const basic = Buffer.from(`${account.name}:${account.password}`).toString('base64');
  return new Promise((res, rej) => {
    const req = https.request({
      host: '127.0.0.1', port: o.port, method: 'POST', path: '/auth', ca: o.ca, servername: 'localhost',
      headers: { Authorization: `Basic ${basic}` }, agent: false,
    }, (r) => {
      let body = '';
      r.on('data', (d) => { body += d; });
      r.on('end', () => (r.statusCode === 200 ? res(JSON.parse(body).token) : rej(new Error(`POST /auth: ${r.statusCode} ${body}`))));
    });
    req.on('error', rej);
    req.end();
  });
}

// The agent's processes: the monitor and its children (the worker; a PAM helper only while a
// login runs).
function agentPids(pid) {
  const out = [pid];
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    const kids = readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').trim();
    if (kids) out.push(...kids.split(/\s+/).map(Number));
  }
  return out;
}
const statusKb = (pid, field) => Number((readFileSync(`/proc/${pid}/status`, 'utf8').match(new RegExp(`^${field}:\\s+(\\d+)`, 'm')) || [])[1] || 0);
const pssKb = (pid) => Number((readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8').match(/^Pss:\s+(\d+)/m) || [])[1] || 0);
function memory(pid) {
  const procs = agentPids(pid).map((p) => ({
    pid: p, role: p === pid ? 'monitor' : statusKb(p, 'Uid') === 0 ? 'child' : 'worker',
    rss_kb: statusKb(p, 'VmRSS'), pss_kb: pssKb(p), hwm_kb: statusKb(p, 'VmHWM'),
  }));
  const sum = (k) => procs.reduce((a, p) => a + p[k], 0);
  return { rss_kb: sum('rss_kb'), pss_kb: sum('pss_kb'), hwm_kb: sum('hwm_kb'), procs };
}
const cpuTicks = (pids) => pids.reduce((a, p) => {
  const f = readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1].split(' ');
  return a + Number(f[11]) + Number(f[12]); // utime, stime (fields 14 and 15)
}, 0);
let clkTck = 100;

// The agent's TCP connections on its port that still hold a socket, from /proc/net/tcp
// (loopback IPv4): every state but LISTEN (0A) and TIME_WAIT (06), which is the kernel's
// alone once the agent has closed first, as the server of a WebSocket close handshake does.
function agentSockets(port) {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  let n = 0;
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 4) continue;
    if (f[1].endsWith(`:${hex}`) && f[3] !== '0A' && f[3] !== '06') n++;
  }
  return n;
}

const median = (a) => { const s = [...a].sort((x, y) => x - y); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const r1 = (x) => Math.round(x * 10) / 10;
const r3 = (x) => Math.round(x * 1000) / 1000;

async function idlePhase(o, token) {
  const clients = Math.max(1, Math.min(o.clients, o.sessions));
  const memBefore = memory(o.agentPid);
  say(`opening ${o.sessions} sessions from ${clients} client processes (${o.concurrency} handshakes in flight each), subscribing each to notify.system_load`);
  const kids = [];
  for (let i = 0; i < clients; i++) {
    const n = Math.floor(o.sessions / clients) + (i < o.sessions % clients ? 1 : 0);
    kids.push(child('idle', { port: o.port, ca: o.ca, token, n, concurrency: o.concurrency }));
  }
  try {
    const t0 = Date.now();
    const ready = await Promise.all(kids.map((k) => k.next('ready')));
    const openMs = Date.now() - t0;
    const opened = ready.reduce((a, r) => a + r.count, 0);
    const failed = ready.reduce((a, r) => a + r.failed, 0);
    say(`${opened} sessions subscribed in ${(openMs / 1000).toFixed(1)} s, ${failed} failed${failed ? ` (first: ${ready.find((r) => r.firstError).firstError})` : ''}`);
    if (opened !== o.sessions) throw new Error(`only ${opened} of ${o.sessions} sessions opened and subscribed`);
    await sleep(2000); // let the set-up's garbage settle before reading memory
    const memSessions = memory(o.agentPid);
    say(`agent memory with the sessions: RSS ${r1(memSessions.rss_kb / 1024)} MiB, PSS ${r1(memSessions.pss_kb / 1024)} MiB`);

    // The samples: wait until SAMPLES epochs after this moment have reached every session.
    const since = Math.floor(Date.now() / 1000) + 1;
    const deadline = Date.now() + (o.samples * o.intervalS + 10) * 1000;
    let complete = [];
    let merged = new Map();
    let stillOpen = opened;
    while (Date.now() < deadline) {
      await sleep(1000);
      for (const k of kids) k.p.send({ op: 'report' });
      const reports = await Promise.all(kids.map((k) => k.next('report')));
      stillOpen = reports.reduce((a, r) => a + r.open, 0);
      merged = new Map();
      for (const r of reports) {
        for (const e of r.epochs) {
          if (e.epoch < since) continue;
          const m = merged.get(e.epoch);
          if (m) { m.n += e.n; m.first = Math.min(m.first, e.first); m.last = Math.max(m.last, e.last); } else merged.set(e.epoch, { ...e });
        }
      }
      complete = [...merged.values()].filter((e) => e.n === o.sessions).sort((a, b) => a.epoch - b.epoch);
      if (complete.length >= o.samples) break;
    }
    const samples = complete.slice(0, o.samples).map((e) => ({
      epoch: e.epoch, to_last_ms: r1(e.last - e.epoch * 1000), to_first_ms: r1(e.first - e.epoch * 1000), first_to_last_ms: r1(e.last - e.first),
    }));
    const incomplete = [...merged.values()].filter((e) => e.n !== o.sessions).map((e) => ({ epoch: e.epoch, received: e.n }));
    say(`samples: ${samples.map((s) => `${s.to_last_ms} ms`).join(', ')}${incomplete.length ? `; incomplete: ${JSON.stringify(incomplete)}` : ''}`);
    const memAfter = memory(o.agentPid);

    say('closing the sessions');
    for (const k of kids) k.p.send({ op: 'close' });
    await Promise.all(kids.map((k) => k.next('closed')));
    let left = agentSockets(o.port);
    for (let i = 0; i < 150 && left > 0; i++) { await sleep(200); left = agentSockets(o.port); }
    await sleep(1000);
    const memClosed = memory(o.agentPid);
    const per = (k) => r3((memSessions[k] - memBefore[k]) / o.sessions);
    return {
      sessions: o.sessions, client_processes: clients, open_and_subscribe_s: r1(openMs / 1000), failed,
      open_after_samples: stillOpen,
      memory_kb: { before: memBefore, with_sessions: memSessions, after_samples: memAfter, after_close: memClosed },
      per_session_kb: { rss: per('rss_kb'), pss: per('pss_kb') },
      samples,
      incomplete_samples: incomplete,
      to_last_ms: samples.length ? { median: r1(median(samples.map((s) => s.to_last_ms))), max: r1(Math.max(...samples.map((s) => s.to_last_ms))) } : null,
      first_to_last_ms: samples.length ? { median: r1(median(samples.map((s) => s.first_to_last_ms))), max: r1(Math.max(...samples.map((s) => s.first_to_last_ms))) } : null,
      agent_connections_left: left,
    };
  } finally {
    for (const k of kids) if (!k.exited) k.p.kill('SIGTERM');
  }
}

function percentile(hist, total, q) {
  const want = Math.ceil(total * q);
  let acc = 0;
  for (let i = 0; i < hist.length; i++) {
    acc += hist[i];
    if (acc >= want) return ((i + 0.5) * BUCKET_US) / 1000;
  }
  return NaN;
}

async function ratePhase(o) {
  const clients = Math.max(1, Math.min(o.rateClients, o.rateSessions));
  say(`rate: ${o.rateSessions} sessions from ${clients} client processes, ${o.depth} bench.echo call(s) in flight each, ${o.duration} s`);
  const kids = [];
  for (let i = 0; i < clients; i++) {
    const n = Math.floor(o.rateSessions / clients) + (i < o.rateSessions % clients ? 1 : 0);
    kids.push(child('rate', { port: o.port, ca: o.ca, n, depth: o.depth }));
  }
  try {
    await Promise.all(kids.map((k) => k.next('ready')));
    await sleep(1000); // warm-up
    const pids = agentPids(o.agentPid);
    for (const k of kids) k.p.send({ op: 'mark' });
    const c0 = cpuTicks(pids);
    const t0 = process.hrtime.bigint();
    await sleep(o.duration * 1000);
    for (const k of kids) k.p.send({ op: 'stop' });
    const reports = await Promise.all(kids.map((k) => k.next('report')));
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    const c1 = cpuTicks(pids);
    await Promise.all(kids.map((k) => k.next('closed')));
    const hist = new Array(N_BUCKETS).fill(0);
    let count = 0;
    let errors = 0;
    let max = 0;
    for (const r of reports) {
      count += r.count;
      errors += r.errors;
      max = Math.max(max, r.max);
      for (let i = 0; i < N_BUCKETS; i++) hist[i] += r.hist[i];
    }
    return {
      sessions: o.rateSessions, client_processes: clients, in_flight_per_session: o.depth, seconds: r3(secs),
      calls: count, wrong_answers: errors, calls_per_s: Math.round(count / secs),
      latency_ms: { p50: r3(percentile(hist, count, 0.5)), p90: r3(percentile(hist, count, 0.9)), p99: r3(percentile(hist, count, 0.99)), max: r3(max / 1000) },
      agent_cpu_us_per_call: count ? r1(((c1 - c0) / clkTck) * 1e6 / count) : null,
    };
  } finally {
    for (const k of kids) if (!k.exited) k.p.kill('SIGTERM');
  }
}

// wrk's HTTPS keep-alive run of bench/run.sh, against the same agent, for comparison.
async function wrkPhase(o) {
  const pids = agentPids(o.agentPid);
  const c0 = cpuTicks(pids);
  const out = await new Promise((res, rej) => execFile('wrk', ['-t2', `-c${o.rateSessions}`, `-d${o.duration}s`, '--latency', '-s', join(repo, 'bench/wrk-echo.lua'), `https://127.0.0.1:${o.port}/rpc`],
    (e, stdout) => (e ? rej(e) : res(stdout))));
  const c1 = cpuTicks(pids);
  const ms = (v) => { const n = parseFloat(v); return v.endsWith('us') ? n / 1000 : v.endsWith('ms') ? n : v.endsWith('s') ? n * 1000 : n; };
  const lat = (q) => { const m = new RegExp(`^\\s*${q}%\\s+(\\S+)`, 'm').exec(out); return m ? r3(ms(m[1])) : null; };
  const n = Number((/(\d+) requests in/.exec(out) || [])[1] || 0);
  return {
    command: `wrk -t2 -c${o.rateSessions} -d${o.duration}s --latency -s bench/wrk-echo.lua`,
    requests_per_s: Math.round(Number((/Requests\/sec:\s+([\d.]+)/.exec(out) || [])[1])),
    latency_ms: { p50: lat(50), p90: lat(90), p99: lat(99) },
    agent_cpu_us_per_call: n ? r1(((c1 - c0) / clkTck) * 1e6 / n) : null,
    errors: (out.match(/Non-2xx.*|Socket errors.*/g) || []).join('; ') || null,
  };
}

async function driver() {
  const o = {
    port: envInt('EXO_WS_PORT', ''), ca: readFileSync(env('EXO_WS_CA', ''), 'utf8'), agentPid: envInt('EXO_WS_AGENT_PID', ''),
    sessions: envInt('SESSIONS', 10000), clients: envInt('CLIENTS', 4), concurrency: envInt('CONCURRENCY', 16),
    samples: envInt('SAMPLES', 5), intervalS: envInt('EXO_WS_INTERVAL_S', 1),
    rateSessions: envInt('RATE_SESSIONS', 64), rateClients: envInt('RATE_CLIENTS', 2), depth: envInt('DEPTH', 1),
    duration: envInt('DURATION', 10), idleRounds: Math.max(1, envInt('IDLE_ROUNDS', 1)), wrk: env('HTTP_COMPARE', '1') === '1',
  };
  if (!o.port || !o.agentPid) throw new Error('EXO_WS_PORT and EXO_WS_AGENT_PID must be set: bench/ws.sh runs this');
  clkTck = envInt('EXO_WS_CLK_TCK', 100);
  const { ensureAccounts, ACCOUNTS } = await import(join(repo, 'tests/e2e/lib/accounts.mjs'));
  ensureAccounts(repo);
  // notify.system_load's permission is "user": any account allowed to use the agent.
  const token = await login(o, ACCOUNTS.user);
  say(`logged in as ${ACCOUNTS.user.name}`);
  const summary = { idle: null, rate: null, http_keepalive: null };
  if (o.sessions > 0) {
    summary.idle = await idlePhase(o, token);
    // Further rounds on the same agent: whether the memory of closed sessions is reused.
    for (let i = 1; i < o.idleRounds; i++) {
      summary.idle_again = summary.idle_again || [];
      summary.idle_again.push(await idlePhase(o, token));
    }
  }
  if (o.rateSessions > 0 && o.duration > 0) {
    summary.rate = await ratePhase(o);
    say(`rate: ${summary.rate.calls_per_s} calls/s, p50 ${summary.rate.latency_ms.p50} ms, p99 ${summary.rate.latency_ms.p99} ms, ${summary.rate.agent_cpu_us_per_call} us agent CPU per call`);
    if (o.wrk) {
      summary.http_keepalive = await wrkPhase(o);
      say(`http keep-alive: ${summary.http_keepalive.requests_per_s} requests/s, p50 ${summary.http_keepalive.latency_ms.p50} ms, p99 ${summary.http_keepalive.latency_ms.p99} ms`);
    }
  }
  summary.memory_end_kb = memory(o.agentPid);
  summary.agent_connections_left = agentSockets(o.port);
  process.stdout.write(`${JSON.stringify(summary)}\n`);
}

// The summary as the table bench/ws.sh prints.
function table(s) {
  const mib = (k) => (k / 1024).toFixed(1);
  const i = s.idle, r = s.rate, h = s.http_keepalive;
  if (i) {
    const m = i.memory_kb;
    console.log(`\n${i.sessions} idle sessions subscribed to notify.system_load (${i.client_processes} client processes): opened and subscribed in ${i.open_and_subscribe_s} s, ${i.failed} failed`);
    console.log(`  agent memory (MiB)          RSS      PSS   (monitor + worker)`);
    for (const [k, v] of [["before", m.before], ["with the sessions", m.with_sessions], ["after the samples", m.after_samples], ["after closing them", m.after_close]])
      console.log(`  ${k.padEnd(22)} ${mib(v.rss_kb).padStart(8)} ${mib(v.pss_kb).padStart(8)}   worker RSS ${mib(v.procs.filter((p) => p.role === "worker").reduce((a, p) => a + p.rss_kb, 0))}`);
    console.log(`  per session (KiB)      ${String(i.per_session_kb.rss).padStart(8)} ${String(i.per_session_kb.pss).padStart(8)}`);
    console.log(`  a sample to every session: epoch to the last receipt ${i.samples.map((x) => x.to_last_ms).join(", ")} ms (median ${i.to_last_ms && i.to_last_ms.median}, max ${i.to_last_ms && i.to_last_ms.max})`);
    console.log(`                             epoch to the first receipt ${i.samples.map((x) => x.to_first_ms).join(", ")} ms`);
    console.log(`                             first to last receipt ${i.samples.map((x) => x.first_to_last_ms).join(", ")} ms (median ${i.first_to_last_ms && i.first_to_last_ms.median}, max ${i.first_to_last_ms && i.first_to_last_ms.max})`);
    if (i.incomplete_samples.length) console.log(`  samples that did not reach every session: ${JSON.stringify(i.incomplete_samples)}`);
    console.log(`  sessions still open after the samples: ${i.open_after_samples}; agent connections left after closing them: ${i.agent_connections_left}`);
    for (const [n, a] of (s.idle_again || []).entries()) {
      console.log(`  round ${n + 2}: RSS with the sessions ${mib(a.memory_kb.with_sessions.rss_kb)}, after closing them ${mib(a.memory_kb.after_close.rss_kb)}; epoch to the last receipt ${a.samples.map((x) => x.to_last_ms).join(", ")} ms (first receipt ${a.samples.map((x) => x.to_first_ms).join(", ")} ms)`);
    }
    if (i.sessions < 10000) console.log(`  targets: they are for 10000 sessions, not ${i.sessions}`);
    else console.log(`  targets: RSS < 150 MB: ${m.with_sessions.rss_kb * 1024 < 150e6 ? "met" : "MISSED"} (PSS: ${m.with_sessions.pss_kb * 1024 < 150e6 ? "met" : "MISSED"}); one notification to all < 1 s: ${i.to_last_ms && i.samples.length && i.to_last_ms.max < 1000 ? "met" : "MISSED"}`);
  }
  if (r) {
    console.log(`\n${r.sessions} sessions x ${r.in_flight_per_session} bench.echo call(s) in flight (${r.client_processes} client processes), ${r.seconds} s: ${r.calls_per_s} calls/s, p50 ${r.latency_ms.p50} ms, p90 ${r.latency_ms.p90} ms, p99 ${r.latency_ms.p99} ms, max ${r.latency_ms.max} ms; agent CPU ${r.agent_cpu_us_per_call} us per call; wrong answers ${r.wrong_answers}`);
  }
  if (h) console.log(`HTTPS keep-alive, same agent (${h.command}): ${h.requests_per_s} requests/s, p50 ${h.latency_ms.p50} ms, p90 ${h.latency_ms.p90} ms, p99 ${h.latency_ms.p99} ms; agent CPU ${h.agent_cpu_us_per_call} us per request${h.errors ? "; " + h.errors : ""}`);
  console.log(`\nagent connections left at the end: ${s.agent_connections_left}`);
}

const mode = process.argv[2];
if (mode === 'table') {
  table(JSON.parse(readFileSync(process.argv[3], 'utf8')));
} else if (mode === 'idle' || mode === 'rate') {
  // A client process: its options come first; it ends with the driver.
  process.on('disconnect', () => process.exit(0));
  WebSocket = createRequire(join(e2eDir, 'package.json'))('ws');
  process.once('message', (m) => (mode === 'idle' ? idleClient(m) : rateClient(m)).catch((e) => {
    process.stderr.write(`bench ws: ${mode} client: ${e.stack || e}\n`);
    process.exit(1);
  }));
} else {
  driver().catch((e) => {
    say(`error: ${e.stack || e}`);
    process.exit(1);
  });
}
