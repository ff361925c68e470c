// The monitor's mount operations through the exo.mounts binding (e2e.mounts calls it), on this
// host: loop devices stand in for volumes. This host has no systemd as PID 1, so what needs it
// (systemd-mount, the units, CephFS) is checked only as far as the refusals go here; the
// systemd paths are tested in systemd-nspawn containers (tests/system).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, readdirSync, existsSync, mkdirSync, rmSync, chmodSync, openSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { startAgent, rpc, run, waitFor, waitForLog, repo, shippedMethods, testMethods, ACCOUNTS, slow } from './lib/agent.mjs';
import { injector, frame } from './lib/privsep.mjs';

const root = process.getuid() === 0;


// A sparse file of mb MiB, with an MBR partition table when mbr is set, on a loop device.
async function loopDevice(dir, name, mb, { mbr = false } = {}) {
  const file = join(dir, name);
  writeFileSync(file, '');
  await run('truncate', ['-s', `${mb}M`, file]);
  if (mbr) {
    // One Linux partition (type 0x83) from sector 2048 to the end, and the boot signature.
    const b = Buffer.alloc(512);
    b[446 + 4] = 0x83;
    b.writeUInt32LE(2048, 446 + 8);
    b.writeUInt32LE(mb * 2048 - 2048, 446 + 12);
    b[510] = 0x55;
    b[511] = 0xaa;
    const fd = openSync(file, 'r+');
    writeSync(fd, b, 0, 512, 0);
    closeSync(fd);
  }
  const r = await run('losetup', ['-f', '--show', file]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim();
}

describe('mount operations (monitor)', { skip: !root && 'needs root (loop devices, mounts)' }, () => {
  let agent, dir, vol, share, secrets;
  const loops = [];
  const mounted = [];
  const call = async (fn, ...args) => {
    const r = await rpc(agent, { jsonrpc: '2.0', id: 1, method: 'e2e.mounts', params: { fn, args } });
    const body = JSON.parse(r.body);
    assert.ok(body.result, JSON.stringify(body));
    return body.result;
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'exo-e2e-mounts-'));
    chmodSync(dir, 0o755);
    vol = join(dir, 'volume');
    share = join(dir, 'share');
    secrets = join(dir, 'secrets');
    agent = await startAgent({
      methodDirs: [shippedMethods, testMethods],
      sections: {
        console: { status_line: 'false' },
        mounts: { volume_prefix: vol, share_prefix: share, owner: ACCOUNTS.user.name, secret_dir: secrets, max_in_flight: 2 },
      },
    });
  });

  after(async () => {
    for (const m of mounted) await run('umount', ['-l', m]);
    for (const l of loops) await run('losetup', ['-d', l]);
    if (agent) await agent.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('config gives the configured prefixes and owner', async () => {
    assert.deepEqual((await call('config')).ok, { volume_prefix: vol, share_prefix: share, owner: ACCOUNTS.user.name });
  });

  it('probe of a blank device: only devname, kname and root_disk; mkfs makes ext4 with the label and UUID; probe sees it', async () => {
    const dev = await loopDevice(dir, 'blank.img', 64);
    loops.push(dev);
    const kname = dev.replace('/dev/', '');
    assert.deepEqual((await call('probe', dev)).ok, { devname: dev, kname, root_disk: false });
    const uuid = '0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0';
    assert.deepEqual(await call('mkfs', dev, 'e2e-vol', uuid), { ok: true });
    await waitForLog(agent, new RegExp(`mounts: made an ext4 file system on ${dev} \\(label e2e-vol, uuid ${uuid}\\)`));
    const p = (await call('probe', dev)).ok;
    assert.equal(p.TYPE, 'ext4');
    assert.equal(p.LABEL, 'e2e-vol');
    assert.equal(p.UUID, uuid);
    assert.equal(p.devname, dev);
    assert.equal(p.root_disk, false);
    // Today's options: 256-byte inodes, 4 KiB blocks, no reserved blocks.
    const d = await run('dumpe2fs', ['-h', dev]);
    assert.match(d.stdout, /Inode size:\s+256/);
    assert.match(d.stdout, /Block size:\s+4096/);
    assert.match(d.stdout, /Reserved block count:\s+0$/m);
    // mkfs without a UUID on a second blank device (uuid nil).
    const dev2 = await loopDevice(dir, 'blank2.img', 32);
    loops.push(dev2);
    assert.deepEqual(await call('mkfs', dev2, 'second', null), { ok: true });
  });

  it('mkfs refuses a device with a signature, a partition table, the root disk, /dev/null and a path outside /dev', async () => {
    const dev = loops[0];
    let r = await call('mkfs', dev, 'again', null);
    assert.equal(r.code, 'has_signature');
    assert.match(r.message, /already holds a file system: ext4/);
    const parted = await loopDevice(dir, 'parted.img', 16, { mbr: true });
    loops.push(parted);
    assert.equal((await call('probe', parted)).ok.PTTYPE, 'dos');
    r = await call('mkfs', parted, 'x', null);
    assert.equal(r.code, 'partitioned');
    r = await call('mkfs', '/dev/null', 'x', null);
    assert.equal(r.code, 'not_block');
    r = await call('mkfs', '/dev/exo-no-such-disk', 'x', null);
    assert.equal(r.code, 'not_found');
    // Refused by the binding itself: an honest worker never sends it to the monitor.
    r = await call('mkfs', '/tmp/disk.img', 'x', null);
    assert.equal(r.code, 'invalid');
    r = await call('mkfs', dev, 'a label that is far too long', null);
    assert.equal(r.code, 'invalid');
    // The root disk: only asked for once probe agrees it is the root disk.
    const src = (await run('findmnt', ['-n', '-o', 'SOURCE', '/'])).stdout.trim();
    if (src.startsWith('/dev/')) {
      const p = await call('probe', src);
      assert.equal(p.ok && p.ok.root_disk, true, JSON.stringify(p));
      r = await call('mkfs', src, 'x', null);
      assert.equal(r.code, 'root_disk');
    }
  });

  it('misuse raises: wrong argument types', async () => {
    const r = await rpc(agent, { jsonrpc: '2.0', id: 1, method: 'e2e.mounts', params: { fn: 'mount', args: ['/dev/loop0', join(vol, 'x'), 'yes'] } });
    const body = JSON.parse(r.body);
    assert.ok(body.error, JSON.stringify(body));
  });

  it('mount needs systemd as PID 1: no_systemd, and nothing is mounted', async () => {
    const r = await call('mount', loops[1], join(vol, 'data'), false);
    assert.equal(r.code, 'no_systemd');
    assert.equal((await run('findmnt', [join(vol, 'data')])).code, 1);
  });

  it('unmount of a busy volume names the process, the fd and the path; then unmounts', async () => {
    const where = join(vol, 'hand');
    mkdirSync(where, { recursive: true });
    let m = await run('mount', [loops[0], where]);
    assert.equal(m.code, 0, m.stderr);
    mounted.push(where);
    const file = join(where, 'held.txt');
    const holder = spawn(process.execPath, ['-e', `
      const fs = require('fs');
      const fd = fs.openSync(${JSON.stringify(file)}, 'w');
      console.log(fd);
      setInterval(() => {}, 1000);`], { stdio: ['ignore', 'pipe', 'inherit'] });
    const fd = await new Promise((res) => holder.stdout.once('data', (d) => res(Number(d.toString().trim()))));
    try {
      const r = await call('unmount', where, false);
      assert.equal(r.code, 'busy', JSON.stringify(r));
      assert.match(r.message, /1 process holds 1 file open/);
      assert.ok(Array.isArray(r.data), JSON.stringify(r));
      const h = r.data.find((x) => x.pid === holder.pid);
      assert.ok(h, JSON.stringify(r.data));
      assert.deepEqual({ use: h.use, fd: h.fd, path: h.path, user: h.user, uid: h.uid }, { use: 'fd', fd, path: file, user: 'root', uid: 0 });
      assert.equal(h.command, 'node');
      assert.equal(r.truncated, 0);
      assert.equal((await run('findmnt', [where])).code, 0);
    } finally {
      holder.kill('SIGKILL');
      await new Promise((res) => holder.once('exit', res));
    }
    const r = await call('unmount', where, false);
    assert.ok(r.ok, JSON.stringify(r));
    assert.equal((await run('findmnt', [where])).code, 1);
    await waitForLog(agent, new RegExp(`mounts: unmounted ${where}`));
    // Not a mountpoint any more.
    assert.equal((await call('unmount', where, false)).code, 'not_mounted');
  });

  it('a lazy unmount detaches a busy mount', async () => {
    const where = join(vol, 'lazy');
    mkdirSync(where, { recursive: true });
    assert.equal((await run('mount', [loops[1], where])).code, 0);
    mounted.push(where);
    const holder = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { cwd: where, stdio: 'ignore' });
    try {
      await waitFor(() => existsSync(`/proc/${holder.pid}/cwd`), 2000, 'holder');
      const busy = await call('unmount', where, false);
      assert.equal(busy.code, 'busy');
      assert.ok(busy.data.some((x) => x.pid === holder.pid && x.use === 'cwd' && x.path === where && x.fd === undefined), JSON.stringify(busy.data));
      const r = await call('unmount', where, true);
      assert.ok(r.ok, JSON.stringify(r));
      assert.equal((await run('findmnt', [where])).code, 1);
    } finally {
      holder.kill('SIGKILL');
    }
  });

  it('cephfs_mount without a Ceph client: no_client, and nothing is left behind', async () => {
    const where = join(share, 's1');
    const r = await call('cephfs_mount', where, '127.0.0.1:6789:/volumes/_nogroup/a/b', 's1-rw', 'QUJDREVGR0hJSktMTU5PUA==', false);
    assert.equal(r.code, 'no_client', JSON.stringify(r));
    assert.ok(!existsSync(secrets) || readdirSync(secrets).length === 0);
    const unit = (await run('systemd-escape', ['--path', '--suffix=mount', where])).stdout.trim();
    assert.ok(!existsSync(join('/etc/systemd/system', unit)));
    assert.ok(!agent.log.includes('QUJDREVGR0hJSktMTU5PUA=='));
    // A volume path is not a share path: refused by the binding.
    assert.equal((await call('cephfs_mount', join(vol, 's1'), '127.0.0.1:6789:/v', 'u', 'QUJD', false)).code, 'invalid');
  });

  for (const [what, op, fields, logged] of [
    ['a mount outside the prefixes', 8, ['/dev/loop0', '/etc', '0'], /a mount request with a mountpoint not directly under a mount prefix/],
    ['an unmount with ".."', 9, [`${'/media/volume'}/../../etc`, '0'], /an unmount request with a mountpoint not directly under a mount prefix/],
    ['a probe of a path outside /dev', 6, ['/etc/shadow'], /a mount probe with a bad device path/],
    ['a mkfs with too many fields', 7, ['/dev/loop0', 'x', '', 'extra'], /a mkfs request without exactly 3 fields/],
    ['a CephFS mount with a key that is not base64', 10, [`${'/media/share'}/s`, 'm:1:/v', 'u', 'k,secret=x', '0'], /bad key/],
  ]) {
    it(`a forged request (${what}) kills the worker`, async () => {
      const before_ = agent.workerPid();
      const fixed = fields.map((f) => f.replace('/media/volume', vol).replace('/media/share', share));
      const r = await run(injector, [String(before_), frame(op, 1, fixed)]);
      assert.equal(r.code, 0, r.stderr);
      await waitForLog(agent, logged);
      const after_ = await waitFor(() => { const p = agent.workerPid(); return p && p !== before_ && p; }, 12000 * slow, 'a new worker');
      assert.notEqual(after_, before_);
      await waitFor(async () => (await call('config').catch(() => null)) !== null, 5000 * slow, 'the new worker serving');
    });
  }
});
