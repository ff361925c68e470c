// A real single-node Ceph cluster with a CephFS inside a systemd container of the harness
// (container.mjs), for tests of mounting CephFS shares the way OpenStack Manila exports them:
// `<mon>:6789:/volumes/_nogroup/<share>/<uuid>` and one cephx user per access rule,
// `<share>-rw` and `<share>-ro`.
//
// The packages are Debian's own (bookworm: Ceph 16.2 "pacific"), installed into a derived
// root file system (rootfs.mjs: rootfs-bookworm-ceph-<hash>, built once from the cached
// bookworm tree; the .debs are kept in debs-bookworm/). The daemons are the packages'
// systemd units (ceph-mon@a, ceph-mgr@x, ceph-osd@0, ceph-mds@a) run by the container's
// systemd, so they die with the container and leave nothing on the host. The OSD uses
// memstore (objects in the OSD's memory, a 1 GiB cap): no disk, no loop device, no O_DIRECT
// on the overlay. Everything listens on the container's loopback (127.0.0.1: msgr2 on 3300,
// msgr1 on 6789); the container has no other network.
import { randomUUID } from 'node:crypto';
import { ensureDerivedRootfs } from './rootfs.mjs';
import { startContainer, q } from './container.mjs';

export const CEPH_RELEASE = 'bookworm';
// ceph-mds depends on the `ceph` metapackage (mon, mgr, osd); ceph-common has the `ceph` CLI
// and mount.ceph; python3-cephfs is what the mgr's volumes module (`ceph fs volume`,
// `ceph fs subvolume`) imports.
// udev: for the mounts test, which runs udev in the container (startContainer's udev option);
// without that option udevd does not start there.
export const CEPH_PACKAGES = ['ceph-mon', 'ceph-mgr', 'ceph-osd', 'ceph-mds', 'ceph-fuse', 'ceph-common',
  'python3-cephfs', 'udev'];
export const MON_IP = '127.0.0.1';
export const MON_PORT = 6789; // msgr1: what the kernel client and Manila's export paths name

const sleep = (ms) => new Promise((r) => setTimeout(r, ms).unref());

// The root file system with Ceph installed (cached; cold about 25 s with the network).
export function ensureCephRootfs({ log } = {}) {
  return ensureDerivedRootfs(CEPH_RELEASE, 'ceph', CEPH_PACKAGES, log ? { log } : {});
}

// startContainer() on the Ceph root file system; opts as startContainer's.
export async function startCephContainer(opts = {}) {
  const lower = await ensureCephRootfs({ log: opts.log });
  return startContainer({ ...opts, release: CEPH_RELEASE, lower });
}

// The FUSE device inside (nspawn makes none; no device cgroup stops its use here). /dev is
// new at every boot: call it again after start()/reboot().
export async function enableFuse(c) {
  await c.run('[ -c /dev/fuse ] || mknod -m 0666 /dev/fuse c 10 229');
}

// Whether the kernel (the host's: containers share it) has the CephFS client.
export async function kernelHasCeph(c) {
  const r = await c.run('grep -qw ceph /proc/filesystems', { allowFail: true });
  return r.code === 0;
}

// The cluster's configuration. The warnings a one-OSD test cluster would have otherwise
// (pools of size 1, the host disk's free space under 30 %, insecure global_id reclaim) are
// turned off so that the cluster reaches HEALTH_OK; pools get 8 PGs (no autoscaler: its
// changes would make PGs peer again during a test).
function cephConf(fsid) {
  return `[global]
fsid = ${fsid}
mon initial members = a
mon host = [v2:${MON_IP}:3300,v1:${MON_IP}:${MON_PORT}]
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
osd objectstore = memstore
memstore device bytes = 1073741824
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 1
`;
}

// Polls cmd inside c until its standard output matches re; the last output in the error.
async function waitFor(c, what, cmd, re, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    const r = await c.run(cmd, { allowFail: true, timeout: 30000 });
    last = `${r.stdout}${r.stderr}`.trim();
    if (r.code === 0 && re.test(r.stdout)) return r.stdout;
    if (Date.now() > deadline) throw new Error(`${what}: not after ${timeoutMs / 1000} s; \`${cmd}\` says:\n${last}`);
    await sleep(250);
  }
}

// Daemons' state for an error message.
async function diagnose(c) {
  const r = await c.run('ceph -s --connect-timeout 10 2>&1; systemctl --no-pager --lines=15 status ' +
    "'ceph-mon@*' 'ceph-mgr@*' 'ceph-osd@*' 'ceph-mds@*' 2>&1; tail -n 20 /var/log/ceph/*.log 2>&1",
  { allowFail: true, timeout: 60000 });
  return r.stdout;
}

// Bootstraps the cluster inside the running container c (from startCephContainer) and makes
// a share. Options:
//   fsName     the CephFS (default 'cephfs')
//   share      the subvolume's name (default a random UUID, as Manila names them)
//   sizeBytes  the subvolume's quota (default none)
//   timeoutMs  for each wait (default 120000)
//   log        progress lines
// Resolves { fsid, fsName, monAddr, share, path, exportPath, users: { rw: { id, key },
// ro: { id, key } }, timings: { step: ms } }: path as `ceph fs subvolume getpath` gives it,
// exportPath = `${monAddr}:${path}`, ids without the `client.` prefix.
export async function startCeph(c, opts = {}) {
  const { fsName = 'cephfs', timeoutMs = 120000 } = opts;
  const log = opts.log || (() => {});
  const timings = {};
  let t = Date.now();
  const step = (name) => {
    const now = Date.now();
    timings[name] = now - t;
    log(`ceph: ${name} in ${((now - t) / 1000).toFixed(1)} s`);
    t = now;
  };
  const fsid = randomUUID();
  try {
    await c.run('install -d -m 0755 /etc/ceph && cat >/etc/ceph/ceph.conf', { input: cephConf(fsid) });
    await c.run(`set -e
      ceph-authtool --create-keyring /tmp/mon.keyring --gen-key -n mon. --cap mon 'allow *' >/dev/null
      ceph-authtool --create-keyring /etc/ceph/ceph.client.admin.keyring --gen-key -n client.admin \
        --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
      ceph-authtool /tmp/mon.keyring --import-keyring /etc/ceph/ceph.client.admin.keyring >/dev/null
      monmaptool --create --addv a '[v2:${MON_IP}:3300,v1:${MON_IP}:${MON_PORT}]' --fsid ${fsid} /tmp/monmap >/dev/null
      chown ceph:ceph /tmp/mon.keyring /tmp/monmap
      install -d -o ceph -g ceph /var/lib/ceph/mon/ceph-a
      ceph-mon --mkfs -i a --monmap /tmp/monmap --keyring /tmp/mon.keyring --setuser ceph --setgroup ceph
      rm -f /tmp/mon.keyring /tmp/monmap
      systemctl start ceph-mon@a`);
    await waitFor(c, 'the monitor in quorum', 'ceph quorum_status --connect-timeout 10', /"quorum_names":\["a"\]/, timeoutMs);
    step('mon');

    await c.run(`set -e
      install -d -o ceph -g ceph /var/lib/ceph/mgr/ceph-x
      ceph auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' -o /var/lib/ceph/mgr/ceph-x/keyring
      chown ceph:ceph /var/lib/ceph/mgr/ceph-x/keyring
      systemctl start ceph-mgr@x`);
    // The OSD meanwhile: `ceph osd new` with a key of our own, then a memstore --mkfs.
    await c.run(`set -e
      uuid=$(uuidgen); secret=$(ceph-authtool --gen-print-key)
      id=$(printf '{"cephx_secret": "%s"}' "$secret" | ceph osd new "$uuid" -i -)
      [ "$id" = 0 ]
      install -d -o ceph -g ceph /var/lib/ceph/osd/ceph-0
      ceph-authtool --create-keyring /var/lib/ceph/osd/ceph-0/keyring --name osd.0 --add-key "$secret" >/dev/null
      chown ceph:ceph /var/lib/ceph/osd/ceph-0/keyring
      ceph-osd -i 0 --mkfs --osd-uuid "$uuid" --setuser ceph --setgroup ceph 2>/tmp/osd-mkfs.log ||
        { cat /tmp/osd-mkfs.log >&2; exit 1; }
      systemctl start ceph-osd@0`);
    await waitFor(c, 'the OSD up', 'ceph osd stat -f json', /"num_up_osds":1\b/, timeoutMs);
    step('osd');
    await waitFor(c, 'an active mgr', 'ceph mgr stat -f json', /"available":\s*true/, timeoutMs);
    step('mgr');

    // Pools, the file system and (as the command says) no MDS: there is no orchestrator.
    await c.run(`ceph fs volume create ${q(fsName)}`, { timeout: timeoutMs });
    await c.run(`set -e
      install -d -o ceph -g ceph /var/lib/ceph/mds/ceph-a
      ceph auth get-or-create mds.a mon 'allow profile mds' mgr 'allow profile mds' mds 'allow *' osd 'allow *' \
        -o /var/lib/ceph/mds/ceph-a/keyring
      chown ceph:ceph /var/lib/ceph/mds/ceph-a/keyring
      systemctl start ceph-mds@a`);
    await waitFor(c, 'the MDS active', 'ceph mds stat', new RegExp(`^${fsName}:1 \\{0=a=up:active\\}`), timeoutMs);
    step('fs');

    const share = await createShare(c, { fsName, share: opts.share, sizeBytes: opts.sizeBytes, timeoutMs });
    step('share');
    // No warning left (PGs peered, nothing degraded): what a test sees is a healthy cluster.
    await waitFor(c, 'HEALTH_OK', 'ceph health', /^HEALTH_OK/, timeoutMs);
    step('health');
    return { fsid, fsName, ...share, timings };
  } catch (e) {
    e.message += `\n--- ceph state ---\n${await diagnose(c)}`;
    throw e;
  }
}

// Another share (subvolume and its two users) of the running cluster, as Manila makes one:
// `ceph fs subvolume create`, then `ceph fs authorize` of <share>-rw (rw) and <share>-ro (r)
// on its path. Resolves { monAddr, share, path, exportPath, users }.
export async function createShare(c, { fsName = 'cephfs', share = randomUUID(), sizeBytes, timeoutMs = 120000 } = {}) {
  if (!/^[A-Za-z0-9_.-]+$/.test(share)) throw new Error(`bad share name ${share}`);
  const size = sizeBytes ? ` --size ${Number(sizeBytes)}` : '';
  await c.run(`ceph fs subvolume create ${q(fsName)} ${q(share)}${size}`, { timeout: timeoutMs });
  const path = (await c.run(`ceph fs subvolume getpath ${q(fsName)} ${q(share)}`)).stdout.trim();
  if (!path.startsWith(`/volumes/_nogroup/${share}/`)) throw new Error(`unexpected subvolume path ${path}`);
  const users = {};
  for (const [access, cap] of [['rw', 'rw'], ['ro', 'r']]) {
    const id = `${share}-${access}`;
    await c.run(`ceph fs authorize ${q(fsName)} ${q(`client.${id}`)} ${q(path)} ${cap} >/dev/null`);
    const key = (await c.run(`ceph auth get-key ${q(`client.${id}`)}`)).stdout.trim();
    users[access] = { id, key };
  }
  const monAddr = `${MON_IP}:${MON_PORT}`;
  return { monAddr, share, path, exportPath: `${monAddr}:${path}`, users };
}

// Unmounts every CephFS mount in c (lazily: a client stuck on a dead cluster does not hold it
// up), then stops the daemons, the MDS first and the monitor last (an OSD without its monitor
// waits for it before it exits). Call it before the
// container's cleanup(): a ceph-fuse mount left while the cluster stops makes the container's
// poweroff wait for systemd's stop timeouts (about 40 s measured).
export async function stopCeph(c) {
  if (!c.running) return;
  await c.run("awk '$3 == \"fuse.ceph-fuse\" || $3 == \"ceph\" { print $2 }' /proc/mounts | " +
    'while read -r m; do umount -l "$m"; done', { allowFail: true, timeout: 60000 });
  // The MDS is killed: an orderly stop takes 4-8 s (its last beacons to the monitor), and
  // the file system's state (in the memstore OSD) is thrown away anyway.
  await c.run('systemctl kill --signal=SIGKILL ceph-mds@a; systemctl stop ceph-mds@a ceph-mgr@x; ' +
    'systemctl stop ceph-osd@0; systemctl stop ceph-mon@a', { allowFail: true, timeout: 120000 });
}
