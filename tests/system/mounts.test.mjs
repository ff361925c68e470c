// Issue 6: volumes and CephFS shares in a booted systemd container (bookworm, with Debian's
// Ceph packages) and the agent installed from its packages: loop devices with real ext4 as
// Cinder volumes, a fake OpenStack metadata service on the container's loopback (both the
// device-tag and the legacy metadata-key forms), a real single-node Ceph cluster with a share
// made as Manila makes one (lib/ceph.mjs), and mounts.mount_device / mount_cephfs / list /
// unmount through the real monitor, systemd-mount, systemctl and ceph-fuse.
//
// udev runs in the container (startContainer's udev option), so that systemd tracks the loop
// devices as .device units and systemd-mount works as on an instance. A loop device has no
// serial: a udev rule gives each test volume the ID_SERIAL_SHORT that udev gives a virtio
// disk (the volume id cut to 20 characters), which is where the agent reads it from.
//
// Runs as root (`node --test --test-reporter=tap tests/system/`); skipped with a reason when
// no container can boot, except in CI (CI=true), where that is a failure.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, writeFileSync, rmSync, openSync, writeSync, closeSync, readFileSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { skipReason, removeOnExit, q, host } from './lib/container.mjs';
import { startCephContainer, startCeph, stopCeph, enableFuse, kernelHasCeph } from './lib/ceph.mjs';

const top = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const RELEASE = 'bookworm';
const UNIT = 'exosphere-guest-agent';
const META_PORT = 8775;
const VOL_A = '5a1f6c2e-8b3d-4e7a-9c10-2f4b6d8e0a1c';
const VOL_B = 'c0ffee00-1234-4abc-8def-001122334455';
const VOL_C = '9e8d7c6b-5a49-4382-a716-05f4e3d2c1b0';

const reason = await skipReason();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The metadata document, in the shape Nova serves at /openstack/latest/meta_data.json.
function metaData() {
  return {
    uuid: '0b7e2d4a-instance', name: 'exo-test', availability_zone: 'nova', project_id: 'p',
    hostname: 'exo-test.novalocal', launch_index: 0,
    meta: {
      exouserPassword: 'not-a-volume',
      [`exoVolumes::${VOL_B}`]: JSON.stringify({ name: 'my data' }),
    },
    devices: [
      { type: 'nic', bus: 'pci', address: '0000:00:03.0', mac: 'fa:16:3e:12:34:56', tags: ['public'] },
      { type: 'disk', bus: 'virtio', address: '0000:00:07.0', serial: VOL_A, path: '/dev/vdb',
        tags: ['exoVolume::{"name":"my data"}'] },
    ],
  };
}

// The fake metadata service: Node on the host, in the container's network namespace (its
// loopback), so the agent inside reaches it at 127.0.0.1 as it would 169.254.169.254.
function startMetadata(c) {
  const script = `
    const http = require('node:http');
    const doc = ${JSON.stringify(JSON.stringify(metaData()))};
    http.createServer((req, res) => {
      if (req.url === '/openstack/latest/meta_data.json') {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(doc);
      } else { res.writeHead(404); res.end(); }
    }).listen(${META_PORT}, '127.0.0.1', () => console.log('listening'));`;
  const p = spawn('nsenter', ['--target', String(c.leader), '--net', process.execPath, '-e', script],
    { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((res, rej) => {
    p.stdout.once('data', () => res(p));
    p.once('exit', (code) => rej(new Error(`the metadata server exited ${code}`)));
  });
}

// A volume: a loop device to which a udev rule gives the volume's serial (20 characters), and
// whose .device unit is plugged.
async function attachVolume(c, id, sizeMiB = 64) {
  const { device } = await c.attachLoop(sizeMiB);
  const kname = device.slice(5);
  await c.run(`printf '%s\\n' ${q(`KERNEL=="${kname}", ENV{ID_SERIAL_SHORT}="${id.slice(0, 20)}"`)} >/etc/udev/rules.d/61-exo-test-${kname}.rules && udevadm control --reload`);
  await settle(c, kname);
  return device;
}

// udev has seen the device (and its partitions): its .device unit is plugged.
async function settle(c, kname) {
  await c.run(`udevadm trigger --action=change --settle /sys/class/block/${kname}`);
  await c.run(`for i in $(seq 100); do systemctl is-active -q ${q(`dev-${kname}.device`)} && exit 0; sleep 0.1; done; systemctl status --no-pager ${q(`dev-${kname}.device`)}; exit 1`);
}

// An MBR partition table with two partitions of 16 MiB, written on the host, then the
// kernel's partitions of the loop device and their nodes in the container.
async function partition(c, device) {
  const mbr = Buffer.alloc(512);
  const entry = (i, startLba, sectors) => {
    const o = 446 + 16 * i;
    mbr[o + 4] = 0x83;
    mbr.writeUInt32LE(startLba, o + 8);
    mbr.writeUInt32LE(sectors, o + 12);
  };
  entry(0, 2048, 32768);
  entry(1, 2048 + 32768, 32768);
  mbr[510] = 0x55;
  mbr[511] = 0xaa;
  const fd = openSync(device, 'r+');
  writeSync(fd, mbr, 0, 512, 0);
  closeSync(fd);
  spawnSync('partx', ['-a', device]);
  const kname = device.slice(5);
  const parts = readdirSync(`/sys/class/block/${kname}`).filter((n) => n.startsWith(kname + 'p')).sort();
  assert.equal(parts.length, 2, `partx made ${parts.join(',')}`);
  for (const p of parts) {
    const [maj, min] = readFileSync(`/sys/class/block/${p}/dev`, 'utf8').trim().split(':');
    await c.run(`[ -b /dev/${p} ] || mknod -m 0660 /dev/${p} b ${maj} ${min}`);
    await settle(c, p);
  }
  return parts.map((p) => `/dev/${p}`);
}

let id = 0;
async function call(c, method, params) {
  return c.rpc({ jsonrpc: '2.0', id: ++id, method, params }, { unix: true });
}
async function ok(c, method, params) {
  const r = await call(c, method, params);
  assert.equal(r.error, undefined, `${method} ${JSON.stringify(params)}: ${JSON.stringify(r.error)}`);
  return r.result;
}
// A call that starts a job (mount_device with format: true): polls jobs.get until it ends
// (curl over the Unix socket has no session to receive notify.jobs.done) and returns the
// final record.
async function jobDone(c, method, params) {
  const { job_id } = await ok(c, method, params);
  assert.match(job_id, /^[0-9a-f]{32}$/);
  for (let i = 0; i < 600; i++) {
    const r = await ok(c, 'jobs.get', { job_id });
    if (r.state !== 'running') return r;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error(`job ${job_id} of ${method} still running after 60 s`);
}
async function fails(c, method, params) {
  const r = await call(c, method, params);
  assert.ok(r.error, `${method} ${JSON.stringify(params)} should fail, got ${JSON.stringify(r.result)}`);
  return r.error;
}

test('volumes and CephFS shares in a systemd container: mount, list, unmount, busy, formatting, names, partitions, keys',
  { skip: reason || false, timeout: 1800000 }, async (t) => {
    const work = mkdtempSync('/var/tmp/exo-mounts-');
    removeOnExit(work);
    await host(join(top, 'packaging/build-packages.sh'), ['--release', RELEASE, '--out', join(work, 'dist')],
      { log: join(work, 'build.log') });
    const c = await startCephContainer({ udev: true, log: (m) => t.diagnostic(m) });
    let meta;
    let ceph;
    t.after(async () => {
      meta?.kill();
      if (ceph) await stopCeph(c).catch(() => {});
      await c.cleanup();
      rmSync(work, { recursive: true, force: true });
    });
    const debs = readdirSync(join(work, 'dist', RELEASE)).filter((f) => f.endsWith('.deb'));
    // Not /tmp: the container's systemd mounts a tmpfs over it.
    for (const d of debs) writeFileSync(join(c.root, 'var/tmp', d), readFileSync(join(work, 'dist', RELEASE, d)));
    await c.run(`dpkg -i ${debs.map((d) => `/var/tmp/${d}`).join(' ')}`, { timeout: 300000 });
    await c.run('id exouser >/dev/null 2>&1 || useradd -m -s /bin/bash exouser');
    await c.run(`printf '\\n[metadata]\\nurl = "http://127.0.0.1:${META_PORT}/openstack/latest/meta_data.json"\\n' >>/etc/${UNIT}/agent.conf`);
    // A deadline that the unreachable-monitor case reaches in seconds, not minutes: the client
    // waits half of it (client_mount_timeout) and says why.
    await c.run(`printf '\\n[mounts]\\nmount_timeout = 20s\\n' >>/etc/${UNIT}/agent.conf`);
    meta = await startMetadata(c);
    await c.run(`systemctl restart ${UNIT}`);
    for (let i = 0; i < 100 && (await c.run(`systemctl is-active ${UNIT}`, { allowFail: true })).stdout.trim() !== 'active'; i++) await sleep(100);

    const volA = await attachVolume(c, VOL_A);
    const volB = await attachVolume(c, VOL_B);

    await t.test('a blank volume is not formatted unless asked', async () => {
      const e = await fails(c, 'mounts.mount_device', { volume_id: VOL_A });
      assert.equal(e.code, -32008);
      assert.equal(e.data.reason, 'unformatted');
      const probe = await c.run(`blkid -p ${volA}`, { allowFail: true });
      assert.equal(probe.code, 2, 'still no signature');
    });

    await t.test('format: true makes ext4 named and identified after the volume, mounted for exouser', async () => {
      const job = await jobDone(c, 'mounts.mount_device', { volume_id: VOL_A, format: true });
      assert.equal(job.state, 'succeeded', JSON.stringify(job));
      assert.equal(job.progress.phase, 'mounting');
      const m = job.result;
      assert.equal(m.mountpoint, '/media/volume/my-data');
      assert.equal(m.kind, 'volume');
      assert.equal(m.fstype, 'ext4');
      assert.equal(m.volume_id, VOL_A.slice(0, 20));
      assert.equal(m.volume_name, 'my data');
      assert.equal(m.unit, 'media-volume-my\\x2ddata.mount');
      assert.ok(m.size_bytes > 50 * 1024 * 1024, `size ${m.size_bytes}`);
      const blkid = (await c.run(`blkid -p -o export ${volA}`)).stdout;
      assert.match(blkid, /^TYPE=ext4$/m);
      assert.match(blkid, /^LABEL=my_data$/m);
      assert.match(blkid, new RegExp(`^UUID=${VOL_A}$`, 'm'));
      assert.equal((await c.run('stat -c %U:%G /media/volume/my-data')).stdout.trim(), 'exouser:exouser');
      assert.equal((await c.run(`systemctl is-active ${q(m.unit)}`)).stdout.trim(), 'active');
      await c.run('su exouser -c "echo hello >/media/volume/my-data/hello"');
    });

    await t.test('the same name from the legacy metadata key collides: -<kernel name>', async () => {
      await c.run(`mkfs.ext4 -q ${volB}`);
      const m = await ok(c, 'mounts.mount_device', { device: volB });
      assert.equal(m.mountpoint, `/media/volume/my-data-${volB.slice(5)}`);
      assert.equal(m.volume_name, 'my data');
    });

    await t.test('mounts.list shows both volumes with what Exosphere needs, and no secret', async () => {
      const list = await ok(c, 'mounts.list', { kind: 'volume' });
      const names = list.map((m) => m.mountpoint).sort();
      assert.deepEqual(names, ['/media/volume/my-data', `/media/volume/my-data-${volB.slice(5)}`]);
      const all = await ok(c, 'mounts.list', {});
      assert.ok(all.some((m) => m.mountpoint === '/' && m.kind === 'other'));
      assert.ok(all.every((m) => ['volume', 'share', 'other'].includes(m.kind)));
      // mounts.get (API version 2027-01-15): the same Mount as the list's, for one mountpoint.
      for (const m of list) {
        const one = await ok(c, 'mounts.get', { mountpoint: m.mountpoint });
        assert.deepEqual({ ...one, free_bytes: 0, used_bytes: 0 }, { ...m, free_bytes: 0, used_bytes: 0 });
      }
      const e = await fails(c, 'mounts.get', { mountpoint: '/media/volume/none' });
      assert.deepEqual([e.code, e.data.reason], [-32003, 'not_mounted']);
    });

    await t.test('a mounted or partitioned disk and an unknown volume are refused with their reasons', async () => {
      let e = await fails(c, 'mounts.mount_device', { device: volA });
      assert.equal(e.data.reason, 'already_mounted');
      assert.equal(e.data.mountpoint, '/media/volume/my-data');
      e = await fails(c, 'mounts.mount_device', { volume_id: 'deadbeef-0000' });
      assert.equal(e.code, -32003);
      const volC = await attachVolume(c, VOL_C);
      const parts = await partition(c, volC);
      const job = await jobDone(c, 'mounts.mount_device', { device: volC, format: true });
      assert.equal(job.state, 'failed');
      e = job.error;
      assert.equal(e.data.reason, 'partitioned');
      assert.deepEqual(e.data.partitions, parts);
      await c.run(`mkfs.ext4 -q ${parts[0]}`);
      const m = await ok(c, 'mounts.mount_device', { device: parts[0] });
      assert.equal(m.mountpoint, `/media/volume/${volC.slice(5)}.part1`);
      e = await fails(c, 'mounts.mount_device', { device: parts[1] });
      assert.equal(e.data.reason, 'unformatted');
      await ok(c, 'mounts.unmount', { device: parts[0] });
    });

    await t.test('a busy volume names its holders; once they let go it unmounts', async () => {
      const holder = c.spawn('cd /media/volume/my-data && exec 3<hello && exec sleep 600');
      let e;
      for (let i = 0; i < 50; i++) {
        e = await fails(c, 'mounts.unmount', { mountpoint: '/media/volume/my-data' });
        if (e.data?.reason === 'busy' && e.data.holders.some((h) => h.use === 'fd')) break;
        await sleep(100);
      }
      assert.equal(e.code, -32005, JSON.stringify(e));
      const uses = e.data.holders.filter((h) => h.command === 'sleep').map((h) => h.use).sort();
      assert.deepEqual(uses, ['cwd', 'fd']);
      const fd = e.data.holders.find((h) => h.use === 'fd');
      assert.equal(fd.fd, 3);
      assert.equal(fd.path, '/media/volume/my-data/hello');
      assert.equal(fd.user, 'root');
      // still mounted, still its unit
      assert.match((await c.run('findmnt -n -o TARGET /media/volume/my-data', { allowFail: true })).stdout, /my-data/);
      holder.kill('SIGKILL');
      await c.run('pkill -KILL -f "sleep 600"', { allowFail: true });
      await sleep(300);
      const r = await ok(c, 'mounts.unmount', { volume_id: VOL_A });
      assert.equal(r.mountpoint, '/media/volume/my-data');
      assert.ok(r.stopped.includes('media-volume-my\\x2ddata.mount'), JSON.stringify(r));
      assert.deepEqual(r.removed, ['/media/volume/my-data'], 'the empty mountpoint goes, as today');
      assert.equal((await c.run('findmnt -n /media/volume/my-data', { allowFail: true })).code, 1);
    });

    await t.test('today\'s automount-volume@ units are stopped by unmount', async () => {
      await c.run(`cat >/etc/systemd/system/automount-volume@.service <<'EOF'
[Unit]
Description=automount volume %i (as Exosphere's image installs it)
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'mkdir -p /media/volume/%i && systemd-mount --collect /dev/%i /media/volume/%i'
ExecStop=/bin/sh -c 'systemd-mount --umount /media/volume/%i || true'
EOF
systemctl daemon-reload`);
      const kname = volA.slice(5);
      await c.run(`systemctl start automount-volume@${kname}.service`);
      const r = await ok(c, 'mounts.unmount', { mountpoint: `/media/volume/${kname}` });
      assert.ok(r.stopped.includes(`automount-volume@${kname}.service`), JSON.stringify(r));
      assert.equal((await c.run(`systemctl is-active automount-volume@${kname}.service`, { allowFail: true })).stdout.trim(), 'inactive');
    });

    await t.test('unmount refuses what the agent does not manage', async () => {
      const e = await fails(c, 'mounts.unmount', { mountpoint: '/' });
      assert.equal(e.data.reason, 'outside_prefixes');
      const e2 = await fails(c, 'mounts.unmount', { mountpoint: '/media/volume/nothing-here' });
      assert.equal(e2.data.reason, 'not_mounted');
    });

    await t.test('the agent never formats or mounts a device the monitor refuses', async () => {
      const e = await fails(c, 'mounts.mount_device', { device: '/dev/null' });
      assert.equal(e.code, -32003);
    });

    // ---- CephFS -----------------------------------------------------------------------------
    const journalHas = async (text) => (await c.run(`journalctl --no-pager -o cat | grep -cF -- ${q(text)}`, { allowFail: true })).stdout.trim() !== '0';
    // systemd's escaping of the share's directory name ("-" is "\x2d").
    const unitName = (name) => `media-share-${name.replace(/-/g, '\\x2d')}.mount`;
    const unitPath = (name) => `/etc/systemd/system/${unitName(name)}`;

    await t.test('a real Ceph cluster comes up in the container', async () => {
      ceph = await startCeph(c, { log: (m) => t.diagnostic(m) });
      await enableFuse(c);
      assert.match(ceph.exportPath, /^127\.0\.0\.1:6789:\/volumes\/_nogroup\//);
    });

    await t.test('mount_cephfs with the rw rule: a persistent unit, the key only in a 0600 file', async () => {
      const { rw } = ceph.users;
      const m = await ok(c, 'mounts.mount_cephfs', { share_name: 'results', export_path: ceph.exportPath,
        access_user: rw.id, access_key: rw.key });
      assert.equal(m.kind, 'share');
      assert.equal(m.mountpoint, '/media/share/results');
      assert.equal(m.read_only, false);
      assert.equal(m.unit, 'media-share-results.mount');
      assert.ok(!JSON.stringify(m).includes(rw.key));
      const client = (await kernelHasCeph(c)) ? 'kernel' : 'fuse';
      const unit = (await c.run(`cat ${q(unitPath('results'))}`)).stdout;
      assert.match(unit, /^# Written by exosphere-guest-agent/);
      assert.match(unit, /^WantedBy=remote-fs\.target$/m);
      assert.match(unit, client === 'fuse' ? /^Type=fuse\.ceph$/m : /^Type=ceph$/m);
      assert.ok(!unit.includes(rw.key), 'no key in the unit');
      assert.equal((await c.run(`systemctl is-enabled ${m.unit}`)).stdout.trim(), 'enabled');
      const secrets = (await c.run('ls /var/lib/exosphere-guest-agent/cephfs')).stdout.split('\n').filter(Boolean);
      const keyFile = secrets.find((f) => /\.(secret|keyring)$/.test(f));
      assert.ok(keyFile, secrets.join(' '));
      const st = (await c.run(`stat -c '%a %U' /var/lib/exosphere-guest-agent/cephfs/${q(keyFile)}`)).stdout.trim();
      assert.equal(st, '600 root');
      assert.ok((await c.run(`cat /var/lib/exosphere-guest-agent/cephfs/${q(keyFile)}`)).stdout.includes(rw.key));
      assert.equal(await journalHas(rw.key), false, 'the key is not in the journal');
      assert.equal((await c.run('stat -c %U /media/share/results')).stdout.trim(), 'exouser');
      await c.run('su exouser -c "echo shared >/media/share/results/f"');
      const list = await ok(c, 'mounts.list', { kind: 'share' });
      assert.deepEqual(list.map((x) => x.mountpoint), ['/media/share/results']);
      assert.ok(!JSON.stringify(list).includes(rw.key));
    });

    await t.test('mount_cephfs with the ro rule mounts read-only', async () => {
      const { ro } = ceph.users;
      const m = await ok(c, 'mounts.mount_cephfs', { share_name: 'results ro', export_path: ceph.exportPath,
        access_user: ro.id, access_key: ro.key, read_only: true });
      assert.equal(m.mountpoint, '/media/share/results-ro');
      assert.equal(m.read_only, true);
      assert.equal((await c.run('cat /media/share/results-ro/f')).stdout, 'shared\n');
      const w = await c.run('echo x >/media/share/results-ro/g', { allowFail: true });
      assert.notEqual(w.code, 0);
      assert.match(w.stderr, /Read-only file system/);
    });

    await t.test('a wrong key is permission_denied, never echoed, and leaves nothing behind', async () => {
      const bad = 'AQBbZ4Jm3q5RFhAAXq1mVxg0n8qD7Z3tR2m0kA==';
      const e = await fails(c, 'mounts.mount_cephfs', { share_name: 'badkey', export_path: ceph.exportPath,
        access_user: ceph.users.rw.id, access_key: bad });
      assert.equal(e.data.reason, 'permission_denied', JSON.stringify(e));
      assert.equal(e.code, -32002);
      assert.ok(!JSON.stringify(e).includes(bad));
      assert.equal((await c.run(`test -e ${q(unitPath('badkey'))}`, { allowFail: true })).code, 1);
      assert.ok(!(await c.run('ls /var/lib/exosphere-guest-agent/cephfs')).stdout.includes('badkey'));
      assert.equal(await journalHas(bad), false);
    });

    await t.test('monitors that cannot be reached are unreachable, within the configured bound', async () => {
      const t0 = Date.now();
      const e = await fails(c, 'mounts.mount_cephfs', { share_name: 'nomon',
        export_path: ceph.exportPath.replace(':6789:', ':6790:'), access_user: ceph.users.rw.id,
        access_key: ceph.users.rw.key });
      assert.equal(e.data.reason, 'unreachable', JSON.stringify(e));
      assert.equal(e.code, -32009);
      assert.ok(Date.now() - t0 < 30000, `${Date.now() - t0} ms`);
      assert.equal((await c.run(`test -e ${q(unitPath('nomon'))}`, { allowFail: true })).code, 1);
    });

    await t.test('unmount of a share removes its unit and its secret files', async () => {
      for (const name of ['results', 'results-ro']) {
        const r = await ok(c, 'mounts.unmount', { mountpoint: `/media/share/${name}` });
        assert.ok(r.stopped.includes(unitName(name)), JSON.stringify(r));
        assert.ok(r.removed.includes(unitPath(name)), JSON.stringify(r));
        assert.equal((await c.run(`test -e ${q(unitPath(name))}`, { allowFail: true })).code, 1);
        assert.equal((await c.run(`findmnt -n /media/share/${name}`, { allowFail: true })).code, 1);
      }
      assert.equal((await c.run('ls -A /var/lib/exosphere-guest-agent/cephfs')).stdout.trim(), '');
    });
  });
