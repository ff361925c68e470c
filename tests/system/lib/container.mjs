// Boots cached Debian root file systems (rootfs.mjs) as systemd containers with
// systemd-nspawn --boot, for tests of the installed agent under a real systemd (PID 1 in the
// container). The host needs no systemd: containers are not registered with machined, and
// commands enter them with nsenter.
//
// Each container boots on an overlay (lower: the cached tree, read-only; upper: the
// container's own work directory), mounted on the host: the cache stays pristine, and the
// container's changes survive stop()/start() within a test. Everything a container made on
// the host (nspawn, the overlay mount, loop devices, the work directory) is removed by
// cleanup(), on SIGINT/SIGTERM/SIGHUP, at process exit, and, for the leftovers of a killed
// run, the next time a container starts.
import { spawn, spawnSync } from 'node:child_process';
import {
  mkdirSync, rmSync, existsSync, readFileSync, writeFileSync, readdirSync, openSync, closeSync,
  statSync, readlinkSync,
} from 'node:fs';
import { join } from 'node:path';
import { ensureRootfs, RELEASES } from './rootfs.mjs';

export { ensureRootfs, RELEASES };
export const WORK = process.env.EXO_CONTAINER_WORK || '/var/tmp/exosphere-guest-agent-containers';
export const CONTAINER_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

// Single-quotes s for sh.
export const q = (s) => `'${String(s).replace(/'/g, `'\\''`)}'`;
// Timers that do not keep the process alive (a race against an exit that already happened).
const sleep = (ms) => new Promise((r) => setTimeout(r, ms).unref());

// Why containers cannot run here, or null: not root, or a tool missing.
export function cannotRun() {
  if (process.getuid() !== 0) return 'needs root (systemd-nspawn, mount, losetup)';
  for (const t of ['systemd-nspawn', 'debootstrap', 'nsenter', 'losetup']) {
    if (spawnSync('sh', ['-c', `command -v ${t}`]).status !== 0)
      return `${t} is missing (apt-get install systemd-container debootstrap util-linux)`;
  }
  return null;
}

// Why the system tests are skipped, or null: cannotRun(), or no container boots (probed once
// with bookworm). In CI (CI=true) or with EXO_SYSTEM_TESTS=require nothing is skipped: a
// harness that cannot work there is a failure, not a skip.
let probed;
export function skipReason() {
  if (process.env.CI === 'true' || process.env.EXO_SYSTEM_TESTS === 'require') return Promise.resolve(null);
  const r = cannotRun();
  if (r) return Promise.resolve(r);
  probed ??= (async () => {
    try {
      const c = await startContainer({ release: 'bookworm', log: () => {} });
      await c.cleanup();
      return null;
    } catch (e) {
      return `no systemd container boots here: ${e.message.split('\n')[0]}`;
    }
  })();
  return probed;
}

// ---- clean-up of everything, also on signals and at exit ----------------------------------

// A command on the host, its output (stdout and stderr) kept for the error and written to `log`
// when given: resolves stdout and stderr together.
export function host(cmd, args, { log } = {}) {
  return new Promise((res, rej) => {
    const out = [];
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    p.stdout.on('data', (d) => out.push(d));
    p.stderr.on('data', (d) => out.push(d));
    p.on('error', rej);
    p.on('close', (code) => {
      const text = Buffer.concat(out).toString();
      if (log) writeFileSync(log, text);
      if (code === 0) res(text);
      else rej(new Error(`${cmd} ${args.join(' ')} exited ${code}:\n${text.split('\n').slice(-30).join('\n')}`));
    });
  });
}

const live = new Set();
const dirs = new Set();
// A host directory of a test (packages, repositories bound into a container) removed with
// the containers on a signal or at exit; the returned function forgets it.
export function removeOnExit(path) {
  installHandlers();
  dirs.add(path);
  return () => dirs.delete(path);
}
function cleanupAllSync() {
  for (const c of [...live]) c.cleanupSync();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs.clear();
}
let handlersInstalled = false;
function installHandlers() {
  if (handlersInstalled) return;
  handlersInstalled = true;
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(sig, () => {
      process.stderr.write(`\n${sig}: removing ${live.size} container(s)\n`);
      cleanupAllSync();
      process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1));
    });
  }
  process.on('exit', cleanupAllSync);
}

function alive(pid) {
  if (!pid) return false;
  try {
    // A zombie is not alive.
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch { return false; }
}

// Removes what a killed run left behind: work directories whose owner process is gone.
function removeStale() {
  let names = [];
  try { names = readdirSync(WORK); } catch { return; }
  for (const n of names) {
    const dir = join(WORK, n);
    let owner = 0;
    try { owner = Number(readFileSync(join(dir, 'owner.pid'), 'utf8')); } catch { /* none */ }
    if (owner && alive(owner)) continue;
    let state = {};
    try { state = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')); } catch { /* none */ }
    // Only pids that are still this container's processes (same start time), not pids used
    // again since.
    for (const [pid, start] of [[state.nspawn, state.nspawnStart], [state.leader, state.leaderStart]]) {
      if (pid && alive(pid) && startTime(pid) === start) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    }
    for (const l of state.loops || []) spawnSync('losetup', ['-d', l]);
    unmountUnder(dir);
    rmSync(dir, { recursive: true, force: true });
    rmSync(`/run/systemd/nspawn/propagate/${n}`, { recursive: true, force: true });
  }
}

// A process's start time (clock ticks since boot), which with its pid names it.
function startTime(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch { return null; }
}

function unmountUnder(dir) {
  // Deepest first; lazy, so a busy mount still goes.
  const mounts = readFileSync('/proc/self/mounts', 'utf8').split('\n')
    .map((l) => l.split(' ')[1]).filter((m) => m && (m === dir || m.startsWith(dir + '/')))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) spawnSync('umount', ['-l', m]);
}

function pidNs(pid) {
  try { return readlinkSync(`/proc/${pid}/ns/pid`); } catch { return null; }
}

// The container's PID 1 as seen from the host: the child of systemd-nspawn in another pid
// namespace.
function findLeader(nspawnPid) {
  const mine = pidNs(process.pid);
  const children = (pid) => {
    let out = [];
    let tasks = [];
    try { tasks = readdirSync(`/proc/${pid}/task`); } catch { return out; }
    for (const t of tasks) {
      try {
        const k = readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').trim();
        if (k) out = out.concat(k.split(/\s+/).map(Number));
      } catch { /* gone */ }
    }
    return out;
  };
  // Breadth first, a few levels: nspawn's own helpers are in our namespace.
  let level = [nspawnPid];
  for (let depth = 0; depth < 3 && level.length; depth++) {
    const next = [];
    for (const p of level) {
      for (const k of children(p)) {
        const ns = pidNs(k);
        if (ns && ns !== mine) {
          try {
            // Not the child still on its way to exec init.
            const comm = readFileSync(`/proc/${k}/comm`, 'utf8').trim();
            if (comm === 'systemd' || comm === 'init') return k;
          } catch { /* gone meanwhile */ }
        } else next.push(k);
      }
    }
    level = next;
  }
  return null;
}

let counter = 0;

// Boots a container. Options:
//   release   bullseye | bookworm | trixie
//   name      machine name (default exo-<release>-<pid>-<n>)
//   binds     [{ host, container, readOnly }] bind mounts, made at every boot
//   bootTimeout  ms to wait for `systemctl is-system-running` to say running/degraded
//   lower     a complete root tree to boot on instead of the release's (e.g. from
//             ensureDerivedRootfs); it stays read-only like the release's
//   log       function for progress lines (default console.log with a "# " prefix for TAP)
//   udev      true: run udev in the container (the root file system must have the udev
//             package), as on an instance: /sys is writable inside
//             (SYSTEMD_NSPAWN_API_VFS_WRITABLE) so that systemd supports device units and
//             systemd-udevd starts. The kernel's uevents reach the container's udevd (its
//             network namespace belongs to the initial user namespace), so a loop device the
//             test attaches becomes a plugged .device unit. The boot-time coldplug
//             (systemd-udev-trigger) is masked: it would replay every device of the host.
export async function startContainer(opts = {}) {
  const reason = cannotRun();
  if (reason) throw new Error(reason);
  const release = opts.release || 'bookworm';
  // node --test shows a test's standard output as TAP comments.
  const log = opts.log || ((s) => console.log(s));
  installHandlers();
  mkdirSync(WORK, { recursive: true });
  removeStale();
  const lower = opts.lower || await ensureRootfs(release, { log });
  const name = opts.name || `exo-${release}-${process.pid}-${++counter}`;
  const dir = join(WORK, name);
  rmSync(dir, { recursive: true, force: true });
  for (const d of ['upper', 'ovl-work', 'root']) mkdirSync(join(dir, d), { recursive: true });
  writeFileSync(join(dir, 'owner.pid'), String(process.pid));
  const c = new Container({ release, name, dir, lower, binds: opts.binds || [], log,
    bootTimeout: opts.bootTimeout || 180000, udev: opts.udev === true });
  live.add(c);
  try {
    const r = spawnSync('mount', ['-t', 'overlay', 'overlay', '-o',
      `lowerdir=${lower},upperdir=${join(dir, 'upper')},workdir=${join(dir, 'ovl-work')}`, c.root]);
    if (r.status !== 0) throw new Error(`overlay mount failed: ${r.stderr}`);
    if (c.udev) {
      if (!['usr/bin/udevadm', 'bin/udevadm'].some((f) => existsSync(join(c.root, f)))) throw new Error('udev: the root file system has no udev');
      mkdirSync(join(c.root, 'etc/systemd/system'), { recursive: true });
      spawnSync('ln', ['-sf', '/dev/null', join(c.root, 'etc/systemd/system/systemd-udev-trigger.service')]);
    }
    await c.start();
  } catch (e) {
    await c.cleanup();
    throw e;
  }
  return c;
}

class Container {
  constructor(o) {
    Object.assign(this, o);
    this.root = join(o.dir, 'root');
    this.consoleLog = join(o.dir, 'console.log');
    this.nspawn = null; // the ChildProcess
    this.leader = null;
    this.loops = []; // { device, file, major, minor }
    this.boots = 0;
  }

  saveState() {
    writeFileSync(join(this.dir, 'state.json'), JSON.stringify({
      nspawn: this.nspawn && this.nspawn.pid, leader: this.leader,
      nspawnStart: this.nspawn && startTime(this.nspawn.pid), leaderStart: this.leader && startTime(this.leader),
      loops: this.loops.map((l) => l.device),
    }));
  }

  get running() { return !!(this.nspawn && this.nspawn.exitCode === null && this.nspawn.signalCode === null); }

  consoleTail(lines = 40) {
    try { return readFileSync(this.consoleLog, 'utf8').split('\n').slice(-lines).join('\n'); } catch { return ''; }
  }

  // Boots the container (again) on its work directory.
  async start() {
    if (this.running) throw new Error(`${this.name} is already running`);
    const t0 = Date.now();
    this.boots += 1;
    const fd = openSync(this.consoleLog, 'a');
    writeFileSync(fd, `\n===== boot ${this.boots} at ${new Date().toISOString()} =====\n`);
    const args = [
      '--quiet', '--directory', this.root, '--boot', '--machine', this.name,
      '--private-network', '--register=no', '--keep-unit', '--link-journal=no', '--resolv-conf=off',
      '--timezone=off', '--console=read-only',
      ...this.binds.map((b) => `--bind${b.readOnly ? '-ro' : ''}=${b.host}:${b.container || b.host}`),
    ];
    // The container's systemd gets a unified (v2) cgroup hierarchy whatever the host has: the
    // systemd of trixie (257) refuses to boot on the legacy/hybrid hierarchies.
    const env = { ...process.env, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY: '1', SYSTEMD_LOG_COLOR: '0',
      ...(this.udev ? { SYSTEMD_NSPAWN_API_VFS_WRITABLE: '1' } : {}) };
    const p = spawn('systemd-nspawn', args, { stdio: ['ignore', fd, fd], env, detached: true });
    closeSync(fd);
    this.nspawn = p;
    this.exited = new Promise((res) => p.on('exit', (code, signal) => res({ code, signal })));
    this.saveState();
    try {
      const deadline = Date.now() + this.bootTimeout;
      while (!(this.leader = findLeader(p.pid))) {
        if (!this.running) throw new Error(`systemd-nspawn exited (${p.exitCode ?? p.signalCode})`);
        if (Date.now() > deadline) throw new Error('no container PID 1 appeared');
        await sleep(50);
      }
      this.saveState();
      let state = '';
      for (;;) {
        if (!this.running) throw new Error(`systemd-nspawn exited (${p.exitCode ?? p.signalCode})`);
        const r = await this.run('systemctl is-system-running', { timeout: 10000, allowFail: true });
        state = r.stdout.trim();
        if (state === 'running' || state === 'degraded') break;
        if (Date.now() > deadline) throw new Error(`the system is still "${state}"`);
        await sleep(250);
      }
      if (state === 'degraded') {
        const f = await this.run('systemctl --failed --no-legend --plain', { allowFail: true });
        this.log(`${this.name}: degraded: ${f.stdout.trim().replace(/\n/g, '; ')}`);
      }
      // Block devices attached before survive a reboot: their nodes in the new /dev.
      for (const l of this.loops) await this.makeNode(l);
      // With udev: systemd as booted in the container keeps every .device unit dead whatever
      // udev reports (seen with bookworm's 252, /sys writable, udevd running); after a
      // re-exec it follows udev's events. Then the devices are replayed for it.
      if (this.udev) {
        await this.run('systemctl daemon-reexec');
        for (const l of this.loops) await this.run(`udevadm trigger --action=change --settle /sys/class/block/${l.device.slice(5)}`);
      }
    } catch (e) {
      const err = new Error(`${this.name} did not boot: ${e.message}\n--- console ---\n${this.consoleTail()}`);
      await this.kill();
      throw err;
    }
    this.log(`${this.name}: booted ${this.release} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }

  // A command inside the running container, as root, with the container's PATH and a clean
  // environment: { code, stdout, stderr }. Throws on a non-zero exit unless allowFail.
  run(cmd, { input, timeout = 120000, allowFail = false, env = {} } = {}) {
    if (!this.leader || !this.running) return Promise.reject(new Error(`${this.name} is not running`));
    const envArgs = Object.entries({
      PATH: CONTAINER_PATH, HOME: '/root', LANG: 'C.UTF-8', TERM: 'dumb', USER: 'root',
      LOGNAME: 'root', DEBIAN_FRONTEND: 'noninteractive', ...env,
    }).map(([k, v]) => `${k}=${v}`);
    const args = ['--target', String(this.leader), '--mount', '--uts', '--ipc', '--net', '--pid',
      '--cgroup', '--root', '--wd', '--', '/usr/bin/env', '-i', ...envArgs, '/bin/sh', '-c', cmd];
    return new Promise((res, rej) => {
      const p = spawn('nsenter', args, { stdio: ['pipe', 'pipe', 'pipe'] });
      const out = []; const err = [];
      p.stdout.on('data', (d) => out.push(d));
      p.stderr.on('data', (d) => err.push(d));
      p.stdin.on('error', () => {});
      p.stdin.end(input === undefined ? '' : input);
      let timedOut = false;
      const timer = setTimeout(() => { timedOut = true; p.kill('SIGKILL'); }, timeout);
      p.on('close', (code, signal) => {
        clearTimeout(timer);
        const r = { code: code ?? 128, signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
        if (timedOut) r.stderr += `\n(timed out after ${timeout} ms)`;
        if ((r.code !== 0 || timedOut) && !allowFail)
          rej(Object.assign(new Error(`in ${this.name}: \`${cmd}\` exited ${r.code}${timedOut ? ' (timeout)' : ''}\n${r.stdout}\n${r.stderr}`), { result: r }));
        else res(r);
      });
    });
  }

  // A long-running process inside the container (the ChildProcess of nsenter), e.g. a client
  // that keeps a connection open; it dies with the container at the latest.
  spawn(cmd, { env = {} } = {}) {
    const envArgs = Object.entries({ PATH: CONTAINER_PATH, HOME: '/root', LANG: 'C.UTF-8', ...env })
      .map(([k, v]) => `${k}=${v}`);
    return spawn('nsenter', ['--target', String(this.leader), '--mount', '--uts', '--ipc', '--net',
      '--pid', '--cgroup', '--root', '--wd', '--', '/usr/bin/env', '-i', ...envArgs, '/bin/sh', '-c', cmd],
    { stdio: ['pipe', 'pipe', 'pipe'] });
  }

  // One JSON-RPC request with curl inside the container: parsed answer. body: object or
  // string. Over HTTPS to 127.0.0.1:8443 by default, or the Unix socket with { unix: true }.
  async rpc(body, { token, path = '/rpc', method = 'POST', unix = false, socket = '/run/exosphere-guest-agent/agent.sock', port = 8443 } = {}) {
    const data = typeof body === 'string' ? body : JSON.stringify(body);
    const url = unix ? `http://localhost${path}` : `https://127.0.0.1:${port}${path}`;
    const cmd = ['curl -sS -k --max-time 30', unix ? `--unix-socket ${q(socket)}` : '',
      `-X ${method}`, "-H 'Content-Type: application/json'",
      token ? `-H ${q(`Authorization: Bearer ${token}`)}` : '',
      '--data-binary @-', q(url)].join(' ');
    const r = await this.run(cmd, { input: data });
    try { return JSON.parse(r.stdout); } catch {
      throw new Error(`not JSON from ${url}: ${r.stdout}\n${r.stderr}`);
    }
  }

  // Logs in with POST /auth (PAM in the agent): the token.
  async login(user, password, { port = 8443 } = {}) {
    // The credentials go through stdin (a curl config), not the command line.
    const cfg = `user = "${`${user}:${password}`.replace(/(["\\])/g, '\\$1')}"\n`;
    const r = await this.run(`curl -sS -k --max-time 30 -K - -X POST -w '\\n%{http_code}' https://127.0.0.1:${port}/auth`, { input: cfg });
    const lines = r.stdout.trimEnd().split('\n');
    const status = lines.pop();
    const text = lines.join('\n');
    if (status !== '200') throw new Error(`login of ${user} failed: HTTP ${status} ${text}`);
    return JSON.parse(text).token;
  }

  // One HTTPS connection inside the container that stays open between requests
  // (`openssl s_client -quiet`, whose stdin and stdout are this process's pipes through
  // nsenter): { request({ method, path, headers, body }) → { status, headers, body, json() },
  // alive(), close() }. Requests go one at a time, HTTP/1.1 keep-alive, Content-Length bodies.
  openHttps({ host = '127.0.0.1', port = 8443 } = {}) {
    // -no_ign_eof after -quiet: the end of stdin closes the connection and ends s_client.
    const p = this.spawn(`exec openssl s_client -quiet -no_ign_eof -connect ${host}:${port}`);
    let buf = Buffer.alloc(0);
    let stderr = '';
    let pending = null;
    let exited = null;
    const fail = (e) => { if (pending) { const { rej } = pending; pending = null; rej(e); } };
    p.stderr.on('data', (d) => { stderr += d; });
    p.stdin.on('error', () => {});
    p.on('exit', (code, signal) => {
      exited = { code, signal };
      fail(new Error(`the connection closed (openssl s_client exited ${code ?? signal})\n${stderr}`));
    });
    const tryParse = () => {
      if (!pending) return;
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = buf.subarray(0, end).toString('latin1').split('\r\n');
      const status = Number(head[0].split(' ')[1]);
      const headers = {};
      for (const l of head.slice(1)) {
        const i = l.indexOf(':');
        headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
      }
      if (headers['content-length'] === undefined) return fail(new Error(`no Content-Length: ${head.join(' | ')}`));
      const len = Number(headers['content-length']);
      if (buf.length < end + 4 + len) return;
      const body = buf.subarray(end + 4, end + 4 + len).toString();
      buf = buf.subarray(end + 4 + len);
      const { res } = pending;
      pending = null;
      res({ status, headers, body, json: () => JSON.parse(body) });
    };
    p.stdout.on('data', (d) => { buf = Buffer.concat([buf, d]); tryParse(); });
    return {
      process: p,
      alive: () => !exited,
      request: ({ method = 'POST', path = '/rpc', headers = {}, body = '', timeout = 30000 } = {}) => {
        if (exited) return Promise.reject(new Error(`the connection is closed\n${stderr}`));
        if (pending) return Promise.reject(new Error('one request at a time'));
        const data = Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
        const all = { Host: `${host}:${port}`, 'Content-Type': 'application/json', Connection: 'keep-alive', ...headers, 'Content-Length': data.length };
        const head = `${method} ${path} HTTP/1.1\r\n${Object.entries(all).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`;
        return new Promise((res, rej) => {
          const timer = setTimeout(() => fail(new Error(`no answer in ${timeout} ms\n${stderr}`)), timeout);
          pending = {
            res: (v) => { clearTimeout(timer); res(v); },
            rej: (e) => { clearTimeout(timer); rej(e); },
          };
          p.stdin.write(Buffer.concat([Buffer.from(head, 'latin1'), data]));
        });
      },
      // The end of stdin ends s_client inside (a signal would end only nsenter outside).
      close: async () => {
        if (exited) return;
        p.stdin.end();
        await Promise.race([new Promise((r) => p.once('exit', r)), sleep(5000)]);
        if (!exited) p.kill('SIGKILL');
      },
    };
  }

  // A file-backed loop device on the host, with its device node in the container's /dev
  // (made again at every boot): { device, file }.
  async attachLoop(sizeMiB = 64) {
    const file = join(this.dir, `loop-${this.loops.length}-${Date.now()}.img`);
    spawnSync('truncate', ['-s', `${sizeMiB}M`, file]);
    const r = spawnSync('losetup', ['--find', '--show', file], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`losetup: ${r.stderr}`);
    const device = r.stdout.trim();
    const st = statSync(device);
    const l = { device, file, major: Math.floor(st.rdev / 256) & 0xfff, minor: (st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00) };
    this.loops.push(l);
    this.saveState();
    if (this.running) await this.makeNode(l);
    return { device, file };
  }

  async makeNode(l) {
    await this.run(`[ -b ${l.device} ] || mknod -m 0660 ${l.device} b ${l.major} ${l.minor}; chgrp disk ${l.device} 2>/dev/null || true`);
  }

  async detachLoop(loop) {
    const device = typeof loop === 'string' ? loop : loop.device;
    const i = this.loops.findIndex((l) => l.device === device);
    if (i < 0) return;
    const [l] = this.loops.splice(i, 1);
    if (this.running) {
      await this.run(`grep -q '^${device} ' /proc/mounts && umount ${device}; rm -f ${device}`, { allowFail: true });
    }
    // Detached now, or (autoclear) as soon as nothing holds it.
    spawnSync('losetup', ['-d', device]);
    rmSync(l.file, { force: true });
    this.saveState();
  }

  // Powers the container off (SIGTERM to nspawn: an orderly shutdown of the container's
  // systemd) and waits for nspawn to exit; SIGKILL after timeout ms.
  async stop({ timeout = 90000 } = {}) {
    if (!this.running) return this.exited ? this.exited : null;
    const t0 = Date.now();
    try { process.kill(this.nspawn.pid, 'SIGTERM'); } catch { /* gone */ }
    const r = await Promise.race([this.exited, sleep(timeout).then(() => null)]);
    if (!r) {
      this.log(`${this.name}: no poweroff after ${timeout} ms, killing it`);
      return this.kill();
    }
    this.leader = null;
    this.saveState();
    this.log(`${this.name}: stopped in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    return r;
  }

  async kill() {
    if (this.leader && alive(this.leader)) try { process.kill(this.leader, 'SIGKILL'); } catch { /* gone */ }
    if (this.running) try { process.kill(this.nspawn.pid, 'SIGKILL'); } catch { /* gone */ }
    const r = this.exited ? await Promise.race([this.exited, sleep(10000)]) : null;
    this.leader = null;
    return r;
  }

  // `systemctl reboot` inside; nspawn exits (133) and the container boots again on the same
  // work directory.
  async reboot({ timeout = 90000 } = {}) {
    this.run('systemctl reboot', { allowFail: true, timeout }).catch(() => {});
    const r = await Promise.race([this.exited, sleep(timeout).then(() => null)]);
    if (!r) await this.kill();
    this.leader = null;
    await this.start();
    return r;
  }

  // Stops the container if it runs, detaches its loop devices, unmounts its overlay and
  // removes its work directory.
  async cleanup() {
    if (!live.has(this)) return;
    try { await this.stop({ timeout: 60000 }); } catch (e) { this.log(`${this.name}: stop: ${e.message}`); }
    await this.kill();
    this.cleanupSync();
  }

  // The same without waiting for an orderly shutdown (signals, process exit).
  cleanupSync() {
    if (!live.has(this)) return;
    live.delete(this);
    if (this.running) {
      try { process.kill(this.nspawn.pid, 'SIGTERM'); } catch { /* gone */ }
      const pid = this.nspawn.pid;
      spawnSync('sh', ['-c', `i=0; while kill -0 ${pid} 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done`]);
      if (alive(this.leader)) try { process.kill(this.leader, 'SIGKILL'); } catch { /* gone */ }
      if (alive(pid)) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    }
    for (const l of this.loops) spawnSync('losetup', ['-d', l.device]);
    this.loops = [];
    unmountUnder(this.dir);
    rmSync(this.dir, { recursive: true, force: true });
    // nspawn's own directory for mounts into a running container, left when it was killed.
    rmSync(`/run/systemd/nspawn/propagate/${this.name}`, { recursive: true, force: true });
  }
}
