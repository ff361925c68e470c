// Cached Debian root file systems for the systemd container tests: built once with
// debootstrap into ${EXO_ROOTFS_CACHE:-/var/cache/exosphere-guest-agent-tests}/rootfs-<release>
// and marked with a `.complete` file only after success (a half-built tree is rebuilt).
// Containers never write to them: each one boots on an overlay (see container.mjs).
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, rmSync, writeFileSync, readFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';

export const CACHE = process.env.EXO_ROOTFS_CACHE || '/var/cache/exosphere-guest-agent-tests';
export const MIRROR = process.env.EXO_DEBIAN_MIRROR || 'http://deb.debian.org/debian';

// What every container has: systemd as PID 1, PAM and account tools, the clients the tests
// use (curl, openssl s_client, bash), disks (util-linux: losetup/lsblk/mount, e2fsprogs).
const COMMON = [
  'systemd', 'systemd-sysv', 'dbus', 'libpam-modules', 'libpam-runtime', 'passwd', 'login',
  'adduser', 'ca-certificates', 'curl', 'openssl', 'iproute2', 'procps', 'kmod', 'util-linux',
  'mount', 'e2fsprogs', 'bash',
];
// The agent's runtime libraries (ldd build/exosphere-guest-agent: libuv, libssl/libcrypto, libwslay,
// libpam; libaudit and libcap-ng come with libpam0g), so that `apt-get install` of our
// packages needs no network inside the container. One row per release.
export const RELEASES = {
  bullseye: { packages: ['libuv1', 'libssl1.1', 'libpam0g', 'libwslay1'] },
  bookworm: { packages: ['libuv1', 'libssl3', 'libpam0g', 'libwslay1'] },
  trixie: { packages: ['libuv1t64', 'libssl3t64', 'libpam0g', 'libwslay1'] },
};

export function rootfsPath(release) {
  return join(CACHE, `rootfs-${release}`);
}

function runLogged(cmd, args, logFile, { append = false } = {}) {
  return new Promise((res) => {
    const out = [];
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    p.stdout.on('data', (d) => out.push(d));
    p.stderr.on('data', (d) => out.push(d));
    p.on('close', (code) => {
      writeFileSync(logFile, Buffer.concat(out), { flag: append ? 'a' : 'w' });
      res(code);
    });
  });
}

const building = new Map();
// Resolves the path of a complete root file system for release, building it if needed.
export function ensureRootfs(release, { log = console.log } = {}) {
  if (!RELEASES[release]) throw new Error(`unknown release ${release}`);
  if (!building.has(release)) building.set(release, build(release, log));
  return building.get(release);
}

async function build(release, log) {
  const root = rootfsPath(release);
  const pkgs = [...COMMON, ...RELEASES[release].packages].join(',');
  // Reused while its stamp names the same packages (a new runtime library makes a new tree).
  const stamp = join(root, '.complete');
  if (existsSync(stamp) && readFileSync(stamp, 'utf8').includes(`\npackages: ${pkgs}\n`)) return root;
  rmSync(root, { recursive: true, force: true });
  mkdirSync(CACHE, { recursive: true });
  const logFile = join(CACHE, `rootfs-${release}.log`);
  log(`building the ${release} root file system in ${root} (cached afterwards; log ${logFile})`);
  const t0 = Date.now();
  const code = await runLogged('debootstrap',
    ['--variant=minbase', `--include=${pkgs}`, release, root, MIRROR], logFile);
  if (code !== 0) {
    const tail = readFileSync(logFile, 'utf8').split('\n').slice(-25).join('\n');
    throw new Error(`debootstrap ${release} failed (${code}):\n${tail}`);
  }
  // A container of its own: no host name of the build machine, no network configuration
  // to wait for, apt never reaching out on its own, and a root without a password.
  writeFileSync(join(root, 'etc/hostname'), `exo-${release}\n`);
  rmSync(join(root, 'etc/apt/sources.list'), { force: true });
  mkdirSync(join(root, 'etc/apt/apt.conf.d'), { recursive: true });
  writeFileSync(join(root, 'etc/apt/apt.conf.d/99exo-test'),
    'APT::Install-Recommends "false";\nAPT::Periodic::Enable "0";\nAcquire::Languages "none";\n');
  rmSync(join(root, 'etc/machine-id'), { force: true });
  writeFileSync(join(root, 'etc/machine-id'), '');
  const secs = ((Date.now() - t0) / 1000).toFixed(0);
  writeFileSync(stamp, `built ${new Date().toISOString()} in ${secs} s\npackages: ${pkgs}\n`);
  log(`built the ${release} root file system in ${secs} s`);
  return root;
}

// ---- derived root file systems: a release's tree plus more packages ------------------------
//
// rootfs-<release>-<tag>-<hash>, hash over the release, the base tree's `.complete` stamp (a
// rebuilt base makes a new derived tree), the sorted package list and DERIVED_VERSION. Built
// by copying the base tree (which stays as it is: other tests boot on it) and running apt-get
// in it under `systemd-nspawn` (no --boot, the host's network) with a temporary
// sources.list for MIRROR; the .debs stay in debs-<release>/ beside it (bound at
// /var/cache/apt/archives), so a rebuild downloads nothing it has already. Afterwards the
// tree has no sources.list and no package lists again, like the base.
const DERIVED_VERSION = 1;

export function derivedRootfsPath(release, tag, packages) {
  const base = join(rootfsPath(release), '.complete');
  const stamp = existsSync(base) ? readFileSync(base, 'utf8') : '';
  const h = createHash('sha256')
    .update(JSON.stringify([DERIVED_VERSION, release, stamp, [...packages].sort()]))
    .digest('hex').slice(0, 12);
  return join(CACHE, `rootfs-${release}-${tag}-${h}`);
}

// Resolves the path of a complete tree of release plus packages (built once; cached).
export function ensureDerivedRootfs(release, tag, packages, { log = console.log } = {}) {
  const key = `${release}-${tag}-${[...packages].sort().join(',')}`;
  if (!building.has(key)) {
    building.set(key, (async () => {
      await ensureRootfs(release, { log });
      return buildDerived(release, tag, packages, log);
    })());
  }
  return building.get(key);
}

async function buildDerived(release, tag, packages, log) {
  const root = derivedRootfsPath(release, tag, packages);
  if (existsSync(join(root, '.complete'))) return root;
  const tmp = `${root}.building`;
  rmSync(tmp, { recursive: true, force: true });
  rmSync(root, { recursive: true, force: true });
  const debs = join(CACHE, `debs-${release}`);
  mkdirSync(debs, { recursive: true });
  const logFile = `${root}.log`;
  log(`building ${root} (${release} + ${packages.join(' ')}; cached afterwards; log ${logFile})`);
  const t0 = Date.now();
  writeFileSync(logFile, '');
  let code = await runLogged('cp', ['-a', '--reflink=auto', rootfsPath(release), tmp], logFile, { append: true });
  if (code !== 0) throw new Error(`copying the ${release} tree failed (${code}): ${readFileSync(logFile, 'utf8')}`);
  rmSync(join(tmp, '.complete'), { force: true });
  writeFileSync(join(tmp, 'etc/apt/sources.list'), `deb ${MIRROR} ${release} main\n`);
  const script = [
    'set -e',
    'apt-get update -q',
    `apt-get install -y -q --no-install-recommends ${packages.join(' ')}`,
    'rm -rf /var/lib/apt/lists/* /etc/apt/sources.list',
  ].join('; ');
  code = await runLogged('systemd-nspawn', ['--quiet', '--register=no', '--keep-unit',
    '--resolv-conf=bind-host', '--timezone=off', '--directory', tmp,
    `--bind=${debs}:/var/cache/apt/archives`, '--setenv=DEBIAN_FRONTEND=noninteractive',
    '/bin/sh', '-c', script], logFile, { append: true });
  if (code !== 0) {
    const tail = readFileSync(logFile, 'utf8').split('\n').slice(-25).join('\n');
    rmSync(tmp, { recursive: true, force: true });
    throw new Error(`installing ${packages.join(' ')} into a copy of ${release} failed (${code}):\n${tail}`);
  }
  renameSync(tmp, root);
  const secs = ((Date.now() - t0) / 1000).toFixed(0);
  writeFileSync(join(root, '.complete'), `built ${new Date().toISOString()} in ${secs} s from ${release} + ${packages.join(' ')}\n`);
  log(`built ${root} in ${secs} s`);
  return root;
}
