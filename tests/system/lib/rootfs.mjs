// Cached Debian root file systems for the systemd container tests: built once with
// debootstrap into ${EXO_ROOTFS_CACHE:-/var/cache/exosphere-guest-agent-tests}/rootfs-<release>
// and marked with a `.complete` file only after success (a half-built tree is rebuilt).
// Containers never write to them: each one boots on an overlay (see container.mjs).
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
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
// The agent's runtime libraries (ldd build/exosphere-guest-agent: libuv, libssl/libcrypto,
// libpam; libaudit and libcap-ng come with libpam0g), so that `apt-get install` of our
// packages needs no network inside the container. One row per release.
export const RELEASES = {
  bullseye: { packages: ['libuv1', 'libssl1.1', 'libpam0g'] },
  bookworm: { packages: ['libuv1', 'libssl3', 'libpam0g'] },
  trixie: { packages: ['libuv1t64', 'libssl3t64', 'libpam0g'] },
};

export function rootfsPath(release) {
  return join(CACHE, `rootfs-${release}`);
}

function runLogged(cmd, args, logFile) {
  return new Promise((res) => {
    const out = [];
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    p.stdout.on('data', (d) => out.push(d));
    p.stderr.on('data', (d) => out.push(d));
    p.on('close', (code) => {
      writeFileSync(logFile, Buffer.concat(out));
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
  if (existsSync(join(root, '.complete'))) return root;
  rmSync(root, { recursive: true, force: true });
  mkdirSync(CACHE, { recursive: true });
  const pkgs = [...COMMON, ...RELEASES[release].packages].join(',');
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
  writeFileSync(join(root, '.complete'), `built ${new Date().toISOString()} in ${secs} s\n`);
  log(`built the ${release} root file system in ${secs} s`);
  return root;
}
