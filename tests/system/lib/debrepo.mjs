// Test fixtures for the package methods (issue 9): trivial Debian packages built at test time,
// a signed APT repository of them (apt-ftparchive and gpg, as packaging/make-repos.sh),
// served over HTTP on a container's own loopback, and a holder of the dpkg frontend lock
// inside a container. Nothing here needs the network.
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync, chmodSync, copyFileSync, readFileSync } from 'node:fs';
import { join, resolve, basename } from 'node:path';
import { q, host } from './container.mjs';

// A maintainer script that sleeps when dpkg upgrades or configures the package: it keeps the
// package manager in one phase long enough for a client polling the job to see it.
const sleeper = (secs, when) => `#!/bin/sh
set -e
case "$1" in ${when}) sleep ${secs} ;; esac
exit 0
`;

// Builds <dir>/<name>_<version>_all.deb: one file, /usr/share/<name>/VERSION, holding the
// version. slowUnpack / slowConfigure: seconds the preinst (on upgrade) / the postinst (on
// configure) sleep. Returns the .deb's path.
export async function buildDeb(dir, { name, version, slowUnpack = 0, slowConfigure = 0 }) {
  const root = join(dir, `${name}_${version}`);
  mkdirSync(join(root, 'DEBIAN'), { recursive: true });
  mkdirSync(join(root, 'usr/share', name), { recursive: true });
  writeFileSync(join(root, 'usr/share', name, 'VERSION'), `${version}\n`);
  writeFileSync(join(root, 'DEBIAN/control'), [
    `Package: ${name}`,
    `Version: ${version}`,
    'Architecture: all',
    'Maintainer: Exosphere Guest Agent tests <exosphere-test@invalid>',
    'Section: misc',
    'Priority: optional',
    `Description: test package of the Exosphere Guest Agent's package tests`,
    ' Built by tests/system/lib/debrepo.mjs; installs only its VERSION file.',
    '',
  ].join('\n'));
  const scripts = { preinst: [slowUnpack, 'upgrade'], postinst: [slowConfigure, 'configure'] };
  for (const [script, [secs, when]] of Object.entries(scripts)) {
    if (!secs) continue;
    writeFileSync(join(root, 'DEBIAN', script), sleeper(secs, when));
    chmodSync(join(root, 'DEBIAN', script), 0o755);
  }
  const deb = join(dir, `${name}_${version}_all.deb`);
  await host('dpkg-deb', ['--root-owner-group', '-Zgzip', '--build', root, deb]);
  return deb;
}

// A signed APT repository: suites is { <suite>: { debs: [paths], label } }, each suite its own
// distribution (codename = suite, component main, amd64) in one tree, Origin `origin`, the
// Label per suite (apt shows a version's origin as "<Label>:<Archive>", so a suite labelled
// Debian-Security and named bookworm-security looks like Debian's security archive). Signed
// (InRelease, Release.gpg) with a throwaway Ed25519 key made here.
//
// Not packaging/make-repos.sh: it names every repository "Exosphere Guest Agent" (its Label)
// and builds a YUM tree too; a test package needs its own labels and suites, and nothing else.
// The same tools (apt-ftparchive, gpg) as there.
//
// Returns { dir (to serve: dists/, pool/), keyring (binary public key for signed-by), origin,
// suites: [names] }. Everything is world-readable: apt's _apt user reads file: sources.
export async function makeAptRepo(work, { suites, origin = 'ExoTest' }) {
  const dir = join(work, 'repo');
  const gnupg = join(work, 'gnupg');
  mkdirSync(gnupg, { mode: 0o700, recursive: true });
  const gpg = (...args) => host('gpg', ['--homedir', gnupg, '--batch', '--quiet', '--no-auto-check-trustdb', ...args]);
  await gpg('--passphrase', '', '--quick-gen-key', 'Exosphere package tests (throwaway) <exosphere-test@invalid>', 'ed25519', 'sign', '1d');
  const fpr = (await gpg('--with-colons', '--list-secret-keys')).match(/^fpr:+([0-9A-F]+):/m)[1];
  const keyring = join(work, 'exo-test-keyring.gpg');
  await gpg('--yes', '--output', keyring, '--export', fpr);
  for (const [suite, { debs, label = 'ExoTest' }] of Object.entries(suites)) {
    const pool = join(dir, 'pool', suite, 'main');
    const bin = join(dir, 'dists', suite, 'main', 'binary-amd64');
    mkdirSync(pool, { recursive: true });
    mkdirSync(bin, { recursive: true });
    for (const d of debs) copyFileSync(d, join(pool, basename(d)));
    writeFileSync(join(bin, 'Packages'), await host('sh', ['-c', `cd ${q(dir)} && apt-ftparchive --arch amd64 packages pool/${q(suite)}`]));
    await host('gzip', ['-9nkf', join(bin, 'Packages')]);
    const rel = join(dir, 'dists', suite);
    const release = await host('sh', ['-c', `cd ${q(rel)} && apt-ftparchive \
      -o APT::FTPArchive::Release::Origin=${q(origin)} -o APT::FTPArchive::Release::Label=${q(label)} \
      -o APT::FTPArchive::Release::Suite=${q(suite)} -o APT::FTPArchive::Release::Codename=${q(suite)} \
      -o APT::FTPArchive::Release::Architectures=amd64 -o APT::FTPArchive::Release::Components=main \
      release .`]);
    writeFileSync(join(rel, 'Release'), release);
    await gpg('--yes', '--local-user', fpr, '--digest-algo', 'SHA512', '--clearsign', '-o', join(rel, 'InRelease'), join(rel, 'Release'));
    await gpg('--yes', '--local-user', fpr, '--digest-algo', 'SHA512', '--detach-sign', '-o', join(rel, 'Release.gpg'), join(rel, 'Release'));
  }
  await host('chmod', ['-R', 'a+rX', dir, keyring]);
  return { dir, keyring, origin, suites: Object.keys(suites) };
}

// Serves the files under root over HTTP on 127.0.0.1:port of the container's network
// namespace: Node on the host entered into it (nsenter --net), so apt inside reaches it on its
// own loopback and nothing else can. GET and HEAD only, no directory listings. Returns
// { port, requests (paths served, in order), stop() }; after stop() the port is closed
// (connections refused), as for a repository that went away.
export function serveHttp(c, root, port = 8080) {
  const script = `
    const http = require('node:http');
    const fs = require('node:fs');
    const path = require('node:path');
    const root = ${JSON.stringify(resolve(root))};
    http.createServer((req, res) => {
      const url = decodeURIComponent(req.url.split('?')[0]);
      const file = path.join(root, path.normalize(url));
      let st;
      try { st = file.startsWith(root + '/') && fs.statSync(file); } catch { st = null; }
      console.log(req.method + ' ' + url + ' ' + (st && st.isFile() ? 200 : 404));
      if (!st || !st.isFile() || !['GET', 'HEAD'].includes(req.method)) { res.writeHead(404); res.end(); return; }
      res.writeHead(200, { 'Content-Length': st.size, 'Content-Type': 'application/octet-stream',
        'Last-Modified': st.mtime.toUTCString() });
      if (req.method === 'HEAD') res.end(); else fs.createReadStream(file).pipe(res);
    }).listen(${port}, '127.0.0.1', () => console.log('listening'));
    // It runs in the host's pid namespace, so the container's end does not end it: the end of
    // its stdin (the test process gone, even by SIGKILL) does.
    process.stdin.on('end', () => process.exit(0)).resume();`;
  const p = spawn('nsenter', ['--target', String(c.leader), '--net', process.execPath, '-e', script],
    { stdio: ['pipe', 'pipe', 'pipe'] });
  p.stdin.on('error', () => {});
  const requests = [];
  let stderr = '';
  p.stderr.on('data', (d) => { stderr += d; });
  let buf = '';
  return new Promise((res, rej) => {
    p.stdout.on('data', (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line === 'listening') {
          res({
            port,
            requests,
            stop: () => new Promise((done) => {
              if (p.exitCode !== null || p.signalCode !== null) return done();
              p.once('exit', () => done());
              p.kill('SIGKILL');
            }),
          });
        } else requests.push(line);
      }
    });
    p.once('exit', (code) => rej(new Error(`the repository server exited ${code}: ${stderr}`)));
  });
}

// The apt sources (one line per suite) and keyring of repo inside the container, for a server
// on port: /etc/apt/keyrings/exo-test.gpg and /etc/apt/sources.list.d/exo-test.list.
export async function useRepo(c, repo, port) {
  await c.run('install -d -m 0755 /etc/apt/keyrings');
  await c.run('cat >/etc/apt/keyrings/exo-test.gpg && chmod 0644 /etc/apt/keyrings/exo-test.gpg',
    { input: readFileSync(repo.keyring) });
  const source = repo.suites.map((s) => `deb [signed-by=/etc/apt/keyrings/exo-test.gpg] http://127.0.0.1:${port}/ ${s} main\n`).join('');
  await c.run(`printf %s ${q(source)} >/etc/apt/sources.list.d/exo-test.list`);
}

// Holds the dpkg frontend lock in the container for secs seconds, as apt and dpkg take it: an
// fcntl (POSIX) write lock on all of /var/lib/dpkg/lock-frontend. flock(1) would not do: a
// flock(2) lock does not conflict with fcntl locks on Linux, so apt would never wait for it.
// Perl is essential in Debian (perl-base) where Python is not; struct flock is packed for
// x86-64 (short type, short whence, 4 bytes of padding, off_t start, off_t len, pid_t pid);
// fcntl writes back into it, so it is a variable.
// Returns { pid (in the container), process, done (resolves when the holder exits), release() }
// once the lock is held.
export async function holdDpkgLock(c, secs) {
  const perl = `use Fcntl qw(F_SETLK F_WRLCK SEEK_SET O_RDWR O_CREAT);
    sysopen(my $f, "/var/lib/dpkg/lock-frontend", O_RDWR | O_CREAT, 0640) or die "open: $!";
    my $lk = pack("s s x4 q q i x4", F_WRLCK, SEEK_SET, 0, 0, 0);
    fcntl($f, F_SETLK, $lk) or die "lock: $!";
    $| = 1; print "held $$\\n"; sleep ${Number(secs)}; print "released\\n";`;
  const p = c.spawn(`exec perl -e ${q(perl)}`);
  let out = '';
  let err = '';
  p.stderr.on('data', (d) => { err += d; });
  const done = new Promise((res) => p.once('exit', (code, signal) => res({ code, signal })));
  const pid = await new Promise((res, rej) => {
    p.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/^held (\d+)$/m);
      if (m) res(Number(m[1]));
    });
    p.once('exit', (code) => rej(new Error(`the lock holder exited ${code}: ${err}`)));
  });
  return {
    pid,
    process: p,
    done,
    // Ends the holder early (inside the container: a signal to nsenter outside would not
    // reach perl).
    release: async () => {
      await c.run(`kill ${pid} 2>/dev/null || true`);
      await done;
    },
  };
}
