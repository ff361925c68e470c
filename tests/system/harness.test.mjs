// The container harness's own test: boot a bookworm container, run commands, reboot (the
// container's changes survive, /run does not), attach a loop device and use it as a disk
// inside (format, mount, from a root shell and from a service), stop/start, and leave
// nothing behind on the host.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { startContainer, skipReason } from './lib/container.mjs';

const reason = await skipReason();

function hostTraces(name, dir) {
  const mounts = readFileSync('/proc/self/mounts', 'utf8').split('\n').filter((l) => l.includes(dir));
  const loops = spawnSync('losetup', ['-a'], { encoding: 'utf8' }).stdout.split('\n').filter((l) => l.includes(dir));
  const procs = spawnSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' }).stdout.split('\n')
    .filter((l) => l.includes(name) && !l.includes('ps -eo'));
  return { mounts, loops, procs };
}

test('the container harness (bookworm)', { skip: reason || false, timeout: 15 * 60 * 1000 }, async (t) => {
  const t0 = Date.now();
  const c = await startContainer({ release: 'bookworm' });
  const { name, dir } = c;
  try {
    await t.test('runs commands as root with the container PATH, stdin and exit codes', async () => {
      const r = await c.run('id -u; echo "$PATH"; hostname; cat', { input: 'from stdin' });
      assert.deepEqual(r.stdout.split('\n').slice(0, 2), ['0', '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin']);
      assert.match(r.stdout, /from stdin$/);
      const f = await c.run('echo oops >&2; exit 3', { allowFail: true });
      assert.equal(f.code, 3);
      assert.equal(f.stderr.trim(), 'oops');
      await assert.rejects(c.run('exit 4'), /exited 4/);
      // systemd is PID 1, only lo is there.
      assert.equal((await c.run('cat /proc/1/comm')).stdout.trim(), 'systemd');
      const links = (await c.run('ip -o link show')).stdout.trim().split('\n').map((l) => l.split(':')[1].trim());
      assert.deepEqual(links, ['lo']);
    });

    await t.test('reboot keeps the container\'s files, not /run', async () => {
      await c.run('echo kept >/root/marker; echo gone >/run/marker');
      await c.reboot();
      assert.equal((await c.run('cat /root/marker')).stdout, 'kept\n');
      assert.equal((await c.run('test -e /run/marker', { allowFail: true })).code, 1);
      assert.match((await c.run('systemctl is-system-running', { allowFail: true })).stdout, /running|degraded/);
    });

    await t.test('a loop device is a disk inside: lsblk, mkfs.ext4, mount, a service opens it', async () => {
      const { device } = await c.attachLoop(64);
      const base = device.replace('/dev/', '');
      assert.match((await c.run('lsblk -dn -o NAME,SIZE')).stdout, new RegExp(`^${base}\\s+64M$`, 'm'));
      await c.run(`mkfs.ext4 -q -F -L exotest ${device}`);
      await c.run(`mkdir -p /mnt/vol && mount ${device} /mnt/vol && echo data >/mnt/vol/f && umount /mnt/vol`);
      // A unit of the container's systemd (where the agent will run) can open it too.
      const r = await c.run(`systemd-run --quiet --wait --pipe --collect -- sh -c 'blkid -o value -s LABEL ${device}'`);
      assert.equal(r.stdout.trim(), 'exotest');
      // After a stop and a start (a new /dev) it is there again, with its data.
      await c.stop();
      assert.equal(c.running, false);
      await c.start();
      await c.run(`mount ${device} /mnt/vol`);
      assert.equal((await c.run('cat /mnt/vol/f')).stdout, 'data\n');
      await c.run('umount /mnt/vol');
      await c.detachLoop(device);
      assert.equal((await c.run(`test -e ${device}`, { allowFail: true })).code, 1);
      assert.ok(!spawnSync('losetup', ['-a'], { encoding: 'utf8' }).stdout.includes(dir));
    });
  } finally {
    // A loop device still attached at clean-up is detached too.
    await c.attachLoop(8);
    await c.cleanup();
  }
  await t.test('clean-up leaves no mount, loop device, process or directory', () => {
    assert.deepEqual(hostTraces(name, dir), { mounts: [], loops: [], procs: [] });
    assert.equal(spawnSync('test', ['-e', dir]).status, 1);
  });
  t.diagnostic(`harness test took ${((Date.now() - t0) / 1000).toFixed(1)} s`);
});
