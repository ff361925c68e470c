// Issue 5: the Debian packages installed from a signed apt repository in a systemd container
// of each release (bullseye, bookworm, trixie), one after another: install, PAM login over
// HTTPS, a methods upgrade reloaded in the same process without dropping a connection,
// restart, reboot, purge leaving nothing behind.
//
// Runs as root (`node --test --test-reporter=tap tests/system/`); skipped with a reason when
// not root or when no container can boot, except in CI (CI=true) or with
// EXO_SYSTEM_TESTS=require, where that is a failure. EXO_SYSTEM_RELEASES="bookworm trixie"
// picks releases.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  mkdtempSync, mkdirSync, cpSync, readFileSync, writeFileSync, rmSync, existsSync, chmodSync,
} from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startContainer, skipReason, removeOnExit, q, host } from './lib/container.mjs';

const top = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const RELEASES = (process.env.EXO_SYSTEM_RELEASES || 'bullseye bookworm trixie').split(/\s+/).filter(Boolean);
const BUILD = join(top, 'packaging/build-packages.sh');
const MAKE_REPOS = process.env.EXO_MAKE_REPOS || join(top, 'packaging/make-repos.sh');
const PASSWORD = 'ABLE BAKE CAT DOG EAR FIG';
const UNIT = 'exosphere-guest-agent';

const projectVersion = readFileSync(join(top, 'CMakeLists.txt'), 'utf8')
  .match(/project\(exosphere-guest-agent VERSION ([0-9.]+)/)[1];
// N: runtime and methods; N+1: methods only (a new Debian revision).
const N = `${projectVersion}-1`;
const N1 = `${projectVersion}-2`;
// The runtime .deb of a release carries it: 0.1.0-1~deb12 (see packaging/build-packages.sh).
const DEBNUM = { bullseye: 11, bookworm: 12, trixie: 13 };
const rt = (v, release) => `${v}~deb${DEBNUM[release]}`;

let reason = await skipReason();
if (!reason) {
  for (const s of [BUILD, MAKE_REPOS]) if (!existsSync(s)) reason = `${s} is missing`;
  if (reason && (process.env.CI === 'true' || process.env.EXO_SYSTEM_TESTS === 'require')) reason = null; // fail below
}

// The shipped methods plus pkgtest.version answering `version`.
function methodsDir(dir, version) {
  cpSync(join(top, 'methods'), dir, { recursive: true });
  writeFileSync(join(dir, 'pkgtest.lua'),
    readFileSync(join(top, 'tests/system/methods/pkgtest.lua'), 'utf8').replaceAll('@PKGTEST_VERSION@', version));
}

// Packages N (runtime + methods) and N+1 (methods), and a signed repository for each, each
// with its own generated key.
async function buildRepos(release, work) {
  const t0 = Date.now();
  methodsDir(join(work, 'methods-n'), N);
  methodsDir(join(work, 'methods-n1'), N1);
  await host(BUILD, ['--release', release, '--version', N, '--methods-dir', join(work, 'methods-n'),
    '--out', join(work, 'dist-n')], { log: join(work, 'build-n.log') });
  // N+1 of both packages: the methods upgrade comes first, alone, then the runtime's.
  await host(BUILD, ['--release', release, '--version', N1, '--methods-dir', join(work, 'methods-n1'),
    '--out', join(work, 'dist-n1')], { log: join(work, 'build-n1.log') });
  for (const v of ['n', 'n1']) {
    // Only this release's .debs go in (not the rpm the host release also gets).
    const dist = join(work, `in-${v}`);
    mkdirSync(dist);
    cpSync(join(work, `dist-${v}`, release), join(dist, release), { recursive: true });
    await host(MAKE_REPOS, ['--in', dist, '--out', join(work, `repo-${v}`), '--generate-key'],
      { log: join(work, `repo-${v}.log`) });
  }
  // apt reads file: repositories as its unprivileged _apt user.
  await host('chmod', ['-R', 'a+rX', work]);
  return ((Date.now() - t0) / 1000).toFixed(0);
}

// Paths and types of the container's persistent files (one file system: not /proc, /sys,
// /dev, /run, /tmp, nor the repository bind mounts), less what changes whatever is
// installed (see docs/testing-systemd.md, "The install test").
const SNAPSHOT = `find / -xdev \\( -path /var/log -o -path /var/cache/apt -o -path /var/lib/apt \\
  -o -path /var/lib/dpkg -o -path /var/cache/debconf -o -path /var/cache/ldconfig \\
  -o -path /var/lib/systemd/timers -o -path /var/lib/systemd/catalog -o -path /root/.cache \\
  -o -path '/var/tmp/systemd-private-*' \\) -prune \\
  -o -printf '%y %p\\n' | LC_ALL=C sort`;

function diffLists(before, after) {
  const b = new Set(before.split('\n'));
  const a = new Set(after.split('\n'));
  return {
    added: [...a].filter((l) => l && !b.has(l)),
    removed: [...b].filter((l) => l && !a.has(l)),
  };
}

async function mainPid(c) {
  return Number((await c.run(`systemctl show -p MainPID --value ${UNIT}`)).stdout.trim());
}

// The first console line matching re, waiting up to 10 s for it.
async function waitForConsole(c, re) {
  const end = Date.now() + 10000;
  for (;;) {
    const m = readFileSync(c.consoleLog, 'utf8').match(re);
    if (m) return m[0];
    if (Date.now() > end) throw new Error(`no console line matching ${re}:\n${c.consoleTail()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function call(c, method, params = {}, opts = {}) {
  const r = await c.rpc({ jsonrpc: '2.0', id: 1, method, params }, opts);
  if (r.error) throw new Error(`${method}: ${JSON.stringify(r.error)}`);
  return r.result;
}

// The user of each child of the monitor (the worker; no PAM check runs now).
async function workerUsers(c) {
  const pid = await mainPid(c);
  const r = await c.run(`ps -o user:40= --ppid ${pid}`);
  return r.stdout.split('\n').map((s) => s.trim()).filter(Boolean);
}

const times = [];

for (const release of RELEASES) {
  test(`install, upgrade, restart, reboot, purge on ${release}`, { skip: reason || false, timeout: 45 * 60 * 1000 }, async (t) => {
    const t0 = Date.now();
    const work = mkdtempSync(`/var/tmp/exo-install-${release}-`);
    chmodSync(work, 0o755);
    const forget = removeOnExit(work);
    let c;
    let conn;
    try {
      const buildSecs = await buildRepos(release, work);
      t.diagnostic(`${release}: packages and repositories built in ${buildSecs} s`);
      c = await startContainer({
        release,
        binds: [
          { host: join(work, 'repo-n'), container: '/srv/exo-repo-n', readOnly: true },
          { host: join(work, 'repo-n1'), container: '/srv/exo-repo-n1', readOnly: true },
        ],
      });
      const source = (v) => `deb [signed-by=/etc/apt/keyrings/exosphere.gpg] file:/srv/exo-repo-${v}/apt ${release} main\n`;
      const useRepo = (v) => c.run(`install -d -m 0755 /etc/apt/keyrings &&
        cp /srv/exo-repo-${v}/exosphere-guest-agent-archive-keyring.gpg /etc/apt/keyrings/exosphere.gpg &&
        chmod 0644 /etc/apt/keyrings/exosphere.gpg &&
        printf %s ${q(source(v))} >/etc/apt/sources.list.d/exosphere.list`);

      let before;
      await t.test('a test user; the signed repository is verified, a wrong key refused', async () => {
        await c.run(`useradd -m -s /bin/bash tester && echo ${q(`tester:${PASSWORD}`)} | chpasswd`);
        await useRepo('n');
        // The N+1 repository is signed by another key: with N's key apt must refuse it.
        await c.run(`printf %s ${q(source('n1'))} >/etc/apt/sources.list.d/wrong-key.list`);
        const bad = await c.run('apt-get update', { allowFail: true });
        assert.notEqual(bad.code, 0, `apt-get update accepted a repository signed with another key:\n${bad.stdout}${bad.stderr}`);
        assert.match(bad.stdout + bad.stderr, /exo-repo-n1.*(not signed|NO_PUBKEY|couldn't be verified|Missing key|signature)/si);
        await c.run('rm /etc/apt/sources.list.d/wrong-key.list');
        const good = await c.run('apt-get update');
        assert.doesNotMatch(good.stdout + good.stderr, /^(W|E):/m, good.stdout + good.stderr);
        // apt keeps an InRelease only once its signature checked out.
        await c.run(`ls /var/lib/apt/lists/ | grep -q '_srv_exo-repo-n_apt_dists_${release}_InRelease$'`);
        const policy = (await c.run(`apt-cache policy ${UNIT}`)).stdout;
        assert.match(policy, new RegExp(`Candidate: ${rt(N, release).replace(/[.~]/g, '\\$&')}\n`));
        before = (await c.run(SNAPSHOT)).stdout;
      });

      await t.test('apt-get install: the service is active, the worker runs as its user', async () => {
        const r = await c.run(`apt-get install -y ${UNIT} ${UNIT}-methods`, { timeout: 300000 });
        assert.match(r.stdout, /Setting up exosphere-guest-agent /);
        const versions = (await c.run(`dpkg-query -W -f '\${Package} \${Version} \${db:Status-Abbrev}\\n' ${UNIT} ${UNIT}-methods`)).stdout;
        assert.equal(versions, `${UNIT} ${rt(N, release)} ii \n${UNIT}-methods ${N} ii \n`);
        assert.equal((await c.run(`systemctl is-active ${UNIT}`, { allowFail: true })).stdout.trim(), 'active');
        assert.equal((await c.run(`systemctl is-enabled ${UNIT}`, { allowFail: true })).stdout.trim(), 'enabled');
        // Built for this release: every library found.
        assert.doesNotMatch((await c.run('ldd /usr/bin/exosphere-guest-agent')).stdout, /not found/);
        assert.deepEqual(await workerUsers(c), [UNIT]);
        assert.equal((await c.run(`ps -o user:40= -p ${await mainPid(c)}`)).stdout.trim(), 'root');
        const info = await call(c, 'agent.info');
        assert.equal(typeof info.version, 'string');
        assert.deepEqual(info.methods.skipped, []);
        // The methods package brings the API version files: both versions are served.
        assert.deepEqual(info.api_versions, ['2026-12-01', '2027-01-15']);
        assert.equal(await call(c, 'pkgtest.version'), N);
        // The status line on the container's console (the nspawn console log): the port and
        // the certificate's fingerprint, for Exosphere to read from the console log.
        const line = await waitForConsole(c, /\{"exoGuestAgent":.*\}/);
        const status = JSON.parse(line).exoGuestAgent;
        assert.equal(status.port, 8443);
        assert.equal(status.state, 'ready');
        const fp = (await c.run('openssl x509 -in /var/lib/exosphere-guest-agent/tls-cert.pem -noout -fingerprint -sha256')).stdout;
        assert.equal(`sha256 Fingerprint=${status.tlsSha256}`.toLowerCase(), fp.trim().toLowerCase());
        // The load line older Exosphere versions chart, from the first sample after start.
        const load = JSON.parse(await waitForConsole(c, /\{"epoch":\d+,"cpuPctUsed":.*\}/));
        assert.deepEqual(Object.keys(load), ['epoch', 'cpuPctUsed', 'memPctUsed', 'rootfsPctUsed', 'gpuPctUsed']);
        assert.equal(load.gpuPctUsed, null);
        // The Unix socket of the package's configuration answers too (root: an admin).
        const me = await call(c, 'authenticate.me', {}, { unix: true });
        assert.equal(me.via, 'unix');
      });

      await t.test('a PAM login over HTTPS with a passphrase of words and spaces', async () => {
        const token = await c.login('tester', PASSWORD);
        const me = await call(c, 'authenticate.me', {}, { token });
        assert.equal(me.username, 'tester');
        assert.equal(me.via, 'token');
        // And a wrong password is refused.
        await assert.rejects(c.login('tester', 'ABLE BAKE CAT DOG EAR FIGS'), /HTTP 401/);
      });

      await t.test('methods upgrade: reloaded in the same process, an open connection still answers', async () => {
        const pid = await mainPid(c);
        const ask = { jsonrpc: '2.0', id: 7, method: 'pkgtest.version' };
        conn = c.openHttps();
        const first = await conn.request({ body: ask });
        assert.equal(first.status, 200);
        assert.equal(first.json().result, N);
        const tUp = Date.now();
        await useRepo('n1');
        await c.run('apt-get update');
        const r = await c.run(`apt-get install -y ${UNIT}-methods`, { timeout: 300000 });
        assert.match(r.stdout, new RegExp(`Unpacking ${UNIT}-methods \\(${N1.replace(/\./g, '\\.')}\\) over \\(${N.replace(/\./g, '\\.')}\\)`));
        // A new connection sees the new methods.
        assert.equal(await call(c, 'pkgtest.version'), N1);
        assert.equal(await mainPid(c), pid, 'the MainPID changed: the agent restarted instead of reloading');
        assert.equal((await c.run(`systemctl is-active ${UNIT}`, { allowFail: true })).stdout.trim(), 'active');
        // The connection opened before the upgrade: same TLS session, still answering, now
        // with the new methods.
        assert.ok(conn.alive(), 'the connection opened before the upgrade was closed');
        const second = await conn.request({ body: ask });
        assert.equal(second.status, 200);
        assert.equal(second.json().result, N1);
        t.diagnostic(`${release}: upgrade took ${((Date.now() - tUp) / 1000).toFixed(1)} s with the connection open`);
        await conn.close();
      });

      await t.test('runtime upgrade: the service restarts (a new MainPID) and answers', async () => {
        const pid = await mainPid(c);
        const r = await c.run(`apt-get install -y ${UNIT}`, { timeout: 300000 });
        assert.match(r.stdout, /Setting up exosphere-guest-agent /);
        const version = (await c.run(`dpkg-query -W -f '\${Version}' ${UNIT}`)).stdout;
        assert.equal(version, rt(N1, release));
        assert.equal((await c.run(`systemctl is-active ${UNIT}`, { allowFail: true })).stdout.trim(), 'active');
        const pid2 = await mainPid(c);
        assert.ok(pid2 > 0 && pid2 !== pid, `MainPID ${pid} → ${pid2}: the runtime upgrade did not restart it`);
        assert.equal(await call(c, 'pkgtest.version'), N1);
        assert.deepEqual(await workerUsers(c), [UNIT]);
      });

      await t.test('systemctl restart: a new MainPID that answers', async () => {
        const pid = await mainPid(c);
        await c.run(`systemctl restart ${UNIT}`);
        assert.equal((await c.run(`systemctl is-active ${UNIT}`, { allowFail: true })).stdout.trim(), 'active');
        const pid2 = await mainPid(c);
        assert.ok(pid2 > 0 && pid2 !== pid, `MainPID ${pid} → ${pid2}`);
        assert.equal(await call(c, 'pkgtest.version'), N1);
        assert.deepEqual(await workerUsers(c), [UNIT]);
      });

      await t.test('socket activation: connections made during a restart wait and are answered', async () => {
        await c.run(`systemctl stop ${UNIT}.service && systemctl enable --now ${UNIT}.socket`);
        // The first connection starts the service, which serves the sockets systemd holds.
        assert.equal(await call(c, 'pkgtest.version'), N1);
        const log = await c.run(`journalctl -u ${UNIT}.service --no-pager -o cat`);
        assert.match(log.stdout, /socket activation: serving the 3 sockets systemd passed/);
        const pid = await mainPid(c);
        // Restart without waiting and connect at once, twenty times: none is refused (curl's 000).
        // One that the old worker accepted just before it began to drain may get its 503.
        const r = await c.run(`systemctl restart --no-block ${UNIT}.service; for i in $(seq 20); do `
          + `curl -sk -o /dev/null -w '%{http_code}\\n' --max-time 30 https://127.0.0.1:8443/healthz; done`);
        const codes = r.stdout.trim().split('\n');
        assert.equal(codes.length, 20, r.stdout + r.stderr);
        for (const code of codes) assert.ok(code === '200' || code === '503', `${codes} ${r.stderr}`);
        assert.equal(codes[19], '200', codes.join());
        const pid2 = await mainPid(c);
        assert.ok(pid2 > 0 && pid2 !== pid, `MainPID ${pid} → ${pid2}`);
        // The Unix socket comes from the socket unit too.
        const me = await c.run(`curl -s --unix-socket /run/${UNIT}/agent.sock -H 'Content-Type: application/json' `
          + `-d '{"jsonrpc":"2.0","id":1,"method":"authenticate.me"}' http://localhost/rpc`);
        assert.equal(JSON.parse(me.stdout).result.username, 'root');
      });

      await t.test('stop and start the container: active again at boot, answers', async () => {
        await c.stop();
        await c.start();
        assert.equal((await c.run(`systemctl is-active ${UNIT}`, { allowFail: true })).stdout.trim(), 'active');
        assert.equal(await call(c, 'pkgtest.version'), N1);
        const token = await c.login('tester', PASSWORD);
        assert.equal((await call(c, 'authenticate.me', {}, { token })).username, 'tester');
      });

      await t.test('apt-get purge leaves nothing of ours', async () => {
        await c.run(`apt-get purge -y ${UNIT}-methods ${UNIT}`, { timeout: 300000 });
        const none = async (cmd, what) => {
          const r = await c.run(cmd, { allowFail: true });
          assert.notEqual(r.code, 0, `${what} is still there: ${r.stdout}`);
        };
        await none(`getent passwd ${UNIT}`, 'the user');
        await none(`getent group ${UNIT}`, 'the group');
        await none(`systemctl cat ${UNIT}.service`, 'the unit');
        await none(`ls /lib/systemd/system/${UNIT}* /usr/lib/systemd/system/${UNIT}* /etc/systemd/system/${UNIT}* /etc/systemd/system/*/${UNIT}* 2>/dev/null | grep .`, 'a unit file or link');
        await none(`ls -d /var/tmp/systemd-private-*${UNIT}* 2>/dev/null | grep .`, 'a private /tmp of the agent');
        await none('test -e /var/lib/exosphere-guest-agent', '/var/lib/exosphere-guest-agent');
        await none('test -e /etc/exosphere-guest-agent', '/etc/exosphere-guest-agent');
        await none('test -e /etc/pam.d/exosphere-guest-agent', 'the PAM service');
        await none(`dpkg -S ${UNIT}`, 'a file of a package');
        await none(`dpkg -l | grep ${UNIT}`, 'a package');
        // comm is the first 15 characters of the executable's name.
        await none('pgrep -x exosphere-guest', 'an agent process');
        const after = (await c.run(SNAPSHOT)).stdout;
        assert.deepEqual(diffLists(before, after), { added: [], removed: [] });
      });
    } finally {
      if (conn) await conn.close().catch(() => {});
      if (c) await c.cleanup();
      rmSync(work, { recursive: true, force: true });
      forget();
      const secs = ((Date.now() - t0) / 1000).toFixed(0);
      times.push(`${release} ${secs} s`);
      t.diagnostic(`${release}: took ${secs} s`);
    }
  });
}

test('time per release', { skip: reason || false }, (t) => { t.diagnostic(times.join(', ')); });
