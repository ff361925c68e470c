// Issue 6: a real single-node Ceph cluster (Debian bookworm's packages: mon, mgr, a memstore
// OSD, mds) with a CephFS inside a systemd container, and a share made the way Manila makes
// one (a subvolume, `<share>-rw` and `<share>-ro` cephx users). This proves the cluster works
// from a client's side and records what each failure looks like, for the agent's mount code
// and its error classification: ceph-fuse with the rw user (writes), the ro user (reads;
// writes are refused), a wrong key, an unknown user, a path the user may not mount, a monitor
// that refuses connections and one that never answers (with client_mount_timeout bounding
// the wait), and the kernel client where the host's kernel has it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { skipReason, q } from './lib/container.mjs';
import { startCephContainer, startCeph, stopCeph, enableFuse, kernelHasCeph } from './lib/ceph.mjs';

const reason = await skipReason();

// The two halves of a Manila export path: monitors and path.
function splitExport(exportPath) {
  const i = exportPath.indexOf(':/');
  return { mons: exportPath.slice(0, i), path: exportPath.slice(i + 1) };
}

// ceph-fuse as the agent would run it: no ceph.conf of the cluster (an empty one), the
// monitors from the export path, the user's key in a keyring file of its own.
// Resolves { code, stdout, stderr, out (both, trimmed), ms }.
async function fuseMount(c, { exportPath, id, key, mountpoint, args = '' }) {
  const { mons, path } = splitExport(exportPath);
  const dir = '/root/clients';
  await c.run(`install -d -m 0700 ${dir} && printf '[global]\\n' >${dir}/empty.conf && mkdir -p ${q(mountpoint)}`);
  await c.run(`umask 077; cat >${dir}/${id}.keyring`, { input: `[client.${id}]\n\tkey = ${key}\n` });
  const cmd = `ceph-fuse -c ${dir}/empty.conf -m ${q(mons)} -n ${q(`client.${id}`)} --keyring ${dir}/${id}.keyring ` +
    `-r ${q(path)} ${args} ${q(mountpoint)}`;
  const t0 = Date.now();
  const r = await c.run(cmd, { allowFail: true, timeout: 400000 });
  return { ...r, out: `${r.stdout}${r.stderr}`.trim(), ms: Date.now() - t0 };
}

// ceph-fuse's "ceph mount failed with (N) ..." may have one of its log lines written into the
// middle of it (the two streams interleave): the words and the error, each somewhere.
function failedWith(out, error) {
  assert.match(out, /ceph mount failed with/);
  assert.match(out, error);
}

async function mounted(c, mountpoint) {
  return (await c.run(`grep -q ' ${mountpoint} fuse.ceph-fuse ' /proc/mounts`, { allowFail: true })).code === 0;
}

// The lines of ceph-fuse's output that say why, without the time stamps and thread ids of
// Ceph's log lines.
function why(out) {
  return out.split('\n').map((l) => l.replace(/^\S+T\S+ [0-9a-f]+ -1 /, '').replace(/^ceph-fuse\[\d+\]: /, ''))
    .filter((l) => l && !/^(starting ceph client|init, newargv)/.test(l)).join(' | ');
}

function hostCephProcesses() {
  return spawnSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' }).stdout.split('\n')
    .filter((l) => /\b(ceph-(mon|mgr|osd|mds|fuse))\b/.test(l));
}

test('a single-node Ceph cluster with CephFS in a container (bookworm)', { skip: reason || false, timeout: 20 * 60 * 1000 }, async (t) => {
  const before = hostCephProcesses();
  const loopsBefore = spawnSync('losetup', ['-a'], { encoding: 'utf8' }).stdout;
  const t0 = Date.now();
  const c = await startCephContainer({ log: (s) => t.diagnostic(s) });
  const { name, dir } = c;
  const booted = Date.now();
  t.diagnostic(`root file system and boot: ${((booted - t0) / 1000).toFixed(1)} s`);
  try {
    const ceph = await startCeph(c, { log: (s) => t.diagnostic(s) });
    t.diagnostic(`cluster up with a share: ${((Date.now() - booted) / 1000).toFixed(1)} s ` +
      `(${Object.entries(ceph.timings).map(([k, v]) => `${k} ${(v / 1000).toFixed(1)} s`).join(', ')})`);
    const { rw, ro } = ceph.users;
    await enableFuse(c);

    await t.test('the share is what Manila exports', async () => {
      assert.match(ceph.exportPath, /^127\.0\.0\.1:6789:\/volumes\/_nogroup\/[0-9a-f-]{36}\/[0-9a-f-]{36}$/);
      assert.equal(ceph.exportPath, `${ceph.monAddr}:${ceph.path}`);
      assert.ok(ceph.path.startsWith(`/volumes/_nogroup/${ceph.share}/`));
      assert.deepEqual([rw.id, ro.id], [`${ceph.share}-rw`, `${ceph.share}-ro`]);
      assert.match(rw.key, /^[A-Za-z0-9+/]{38}==$/);
      const caps = (await c.run(`ceph auth get client.${ro.id}`)).stdout;
      assert.match(caps, new RegExp(`caps mds = "allow r fsname=cephfs path=${ceph.path}"`));
      assert.equal((await c.run('ceph health')).stdout.trim(), 'HEALTH_OK');
    });

    await t.test('ceph-fuse with the rw user: writes, reads back, unmounts', async () => {
      const r = await fuseMount(c, { exportPath: ceph.exportPath, ...rw, mountpoint: '/mnt/rw' });
      assert.equal(r.code, 0, r.out);
      t.diagnostic(`rw mount: ${r.ms} ms`);
      assert.ok(await mounted(c, '/mnt/rw'));
      await c.run('echo written-by-rw >/mnt/rw/hello && mkdir /mnt/rw/dir && sync');
      assert.equal((await c.run('cat /mnt/rw/hello')).stdout, 'written-by-rw\n');
      await c.run('umount /mnt/rw');
      assert.ok(!await mounted(c, '/mnt/rw'));
    });

    await t.test('ceph-fuse with the ro user: reads; writes fail with EACCES, or EROFS with -o ro', async () => {
      const r = await fuseMount(c, { exportPath: ceph.exportPath, ...ro, mountpoint: '/mnt/ro' });
      assert.equal(r.code, 0, r.out);
      assert.equal((await c.run('cat /mnt/ro/hello')).stdout, 'written-by-rw\n');
      for (const cmd of ['echo x >/mnt/ro/new', 'touch /mnt/ro/hello', 'mkdir /mnt/ro/d2', 'rm /mnt/ro/hello']) {
        const w = await c.run(cmd, { allowFail: true });
        assert.notEqual(w.code, 0, cmd);
        assert.match(w.stderr, /Permission denied/, cmd);
        t.diagnostic(`ro user, \`${cmd}\`: exit ${w.code}: ${w.stderr.trim()}`);
      }
      await c.run('umount /mnt/ro');
      // A read-only mount (what the agent would do for an ro access rule): EROFS locally.
      const m = await fuseMount(c, { exportPath: ceph.exportPath, ...ro, mountpoint: '/mnt/ro', args: '-o ro' });
      assert.equal(m.code, 0, m.out);
      assert.match((await c.run('grep " /mnt/ro " /proc/mounts')).stdout, /fuse\.ceph-fuse ro,/);
      const w = await c.run('echo x >/mnt/ro/new', { allowFail: true });
      assert.match(w.stderr, /Read-only file system/);
      await c.run('umount /mnt/ro');
    });

    await t.test('a wrong key: refused at once, exit 1, nothing mounted', async () => {
      const wrong = (await c.run('ceph-authtool --gen-print-key')).stdout.trim();
      const r = await fuseMount(c, { exportPath: ceph.exportPath, id: rw.id, key: wrong, mountpoint: '/mnt/bad' });
      t.diagnostic(`wrong key: exit ${r.code} in ${r.ms} ms: ${why(r.out)}`);
      assert.equal(r.code, 1);
      assert.equal(r.out, 'failed to fetch mon config (--no-mon-config to skip)');
      assert.ok(r.ms < 10000);
      assert.ok(!await mounted(c, '/mnt/bad'));
      // Without the configuration fetch, the authentication error itself.
      const n = await fuseMount(c, { exportPath: ceph.exportPath, id: rw.id, key: wrong, mountpoint: '/mnt/bad', args: '--no-mon-config' });
      t.diagnostic(`wrong key, --no-mon-config: exit ${n.code} in ${n.ms} ms: ${why(n.out)}`);
      assert.equal(n.code, 1);
      failedWith(n.out, /\(13\) Permission denied/);
      assert.match(n.out, /client\.0 authentication failed: \(13\) Permission denied/);
      assert.ok(!await mounted(c, '/mnt/bad'));
    });

    await t.test('an unknown user: the same as a wrong key', async () => {
      const key = (await c.run('ceph-authtool --gen-print-key')).stdout.trim();
      const r = await fuseMount(c, { exportPath: ceph.exportPath, id: 'no-such-user', key, mountpoint: '/mnt/bad' });
      assert.equal(r.code, 1);
      assert.equal(r.out, 'failed to fetch mon config (--no-mon-config to skip)');
      const n = await fuseMount(c, { exportPath: ceph.exportPath, id: 'no-such-user', key, mountpoint: '/mnt/bad', args: '--no-mon-config' });
      assert.equal(n.code, 1);
      failedWith(n.out, /\(13\) Permission denied/);
    });

    await t.test('a path the user may not mount: EPERM from the MDS', async () => {
      const other = `${splitExport(ceph.exportPath).mons}:/volumes/_nogroup/${ceph.share}`;
      const r = await fuseMount(c, { exportPath: other, ...rw, mountpoint: '/mnt/bad' });
      t.diagnostic(`a path outside the caps: exit ${r.code} in ${r.ms} ms: ${why(r.out)}`);
      assert.equal(r.code, 1);
      failedWith(r.out, /\(1\) Operation not permitted/);
      assert.match(r.out, /mds\.0 rejected us \(non-allowable root '\/volumes\/_nogroup\/[^']+'\)/);
      const missing = await fuseMount(c, { exportPath: `${ceph.exportPath}/no-such-dir`, ...rw, mountpoint: '/mnt/bad' });
      t.diagnostic(`a missing directory under the share: exit ${missing.code}: ${why(missing.out)}`);
      assert.equal(missing.code, 1);
      failedWith(missing.out, /\(2\) No such file or directory/);
      assert.ok(!await mounted(c, '/mnt/bad'));
    });

    await t.test('an unreachable monitor: client_mount_timeout bounds the wait', async () => {
      // A monitor address where nothing listens (connection refused) and one whose packets
      // vanish (a tun device nobody reads: a SYN gets no answer), as behind a firewall.
      await c.run('ip tuntap add dev exoblk0 mode tun && ip addr add 192.0.2.1/24 dev exoblk0 && ip link set exoblk0 up');
      const cases = [
        ['refused', `127.0.0.1:6790:${ceph.path}`],
        ['no answer', `192.0.2.2:6789:${ceph.path}`],
      ];
      for (const [what, exportPath] of cases) {
        for (const extra of ['', '--no-mon-config']) {
          const r = await fuseMount(c, { exportPath, ...rw, mountpoint: '/mnt/bad', args: `--client_mount_timeout=5 ${extra}` });
          t.diagnostic(`monitor ${what}, client_mount_timeout=5 ${extra}: exit ${r.code} in ${r.ms} ms: ${why(r.out)}`);
          assert.equal(r.code, 1);
          assert.ok(r.ms >= 4500 && r.ms < 15000, `${r.ms} ms`);
          if (extra) {
            // ceph-fuse's message and its log lines interleave ("ceph mount failed with " can
            // be followed by a log line before "(110) ..."): both parts, not one string.
            assert.match(r.out, /ceph mount failed with/);
            assert.match(r.out, /\(110\) Connection timed out/);
          } else {
            assert.equal(r.out, 'failed to fetch mon config (--no-mon-config to skip)');
          }
        }
      }
      assert.ok(!await mounted(c, '/mnt/bad'));
    });

    await t.test('the kernel client (mount -t ceph), where the kernel has it', async (st) => {
      const secret = '/root/clients/rw.secret';
      await c.run(`umask 077; cat >${secret}`, { input: rw.key });
      const cmd = `mkdir -p /mnt/k && mount -t ceph ${q(ceph.exportPath)} /mnt/k -o ${q(`name=${rw.id},secretfile=${secret}`)}`;
      const r = await c.run(cmd, { allowFail: true });
      if (!await kernelHasCeph(c)) {
        // What the agent sees on such a kernel (here mount.ceph's modprobe finds no module).
        t.diagnostic(`kernel client: exit ${r.code}: ${`${r.stderr}${r.stdout}`.trim().replace(/\n/g, ' | ')}`);
        assert.equal(r.code, 32);
        assert.match(r.stderr, /mount error: ceph filesystem not supported by the system/);
        st.skip('the kernel has no CephFS client (not in /proc/filesystems)');
        return;
      }
      assert.equal(r.code, 0, r.stderr);
      await c.run('echo from-kernel >/mnt/k/k && umount /mnt/k');
      const wrong = await c.run(`printf %s ${q((await c.run('ceph-authtool --gen-print-key')).stdout.trim())} >${secret} && ${cmd}`,
        { allowFail: true });
      t.diagnostic(`kernel client, wrong key: exit ${wrong.code}: ${wrong.stderr.trim()}`);
      assert.notEqual(wrong.code, 0);
    });
  } finally {
    const s0 = Date.now();
    await stopCeph(c).catch((e) => t.diagnostic(`stopCeph: ${e.message}`));
    const s1 = Date.now();
    await c.cleanup();
    t.diagnostic(`stopCeph ${((s1 - s0) / 1000).toFixed(1)} s, cleanup ${((Date.now() - s1) / 1000).toFixed(1)} s`);
  }

  await t.test('clean-up leaves no ceph process, loop device, mount or directory', () => {
    assert.deepEqual(hostCephProcesses(), before);
    assert.equal(spawnSync('losetup', ['-a'], { encoding: 'utf8' }).stdout, loopsBefore);
    assert.deepEqual(readFileSync('/proc/self/mounts', 'utf8').split('\n').filter((l) => l.includes(dir)), []);
    assert.equal(spawnSync('test', ['-e', dir]).status, 1);
    assert.deepEqual(spawnSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).stdout.split('\n').filter((l) => l.includes(name)), []);
  });
  t.diagnostic(`ceph test took ${((Date.now() - t0) / 1000).toFixed(1)} s`);
});
