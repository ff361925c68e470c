// Issue 9: the package methods on the real thing. A booted bookworm container with the agent
// installed from its packages, a signed APT repository served on the container's own loopback
// (lib/debrepo.mjs) holding a test package exo-testpkg at 1.0 and 1.1 and a second one,
// exo-testpkg-sec, whose update sits in a suite that looks like Debian's security archive.
// Through the agent, with the real monitor, apt-get and dpkg: packages.check_updates,
// packages.update as a job with its progress phases, a held dpkg lock waited for, a lock held
// past [packages] lock_timeout, and the refusals (allow-list, admin only, unknown package,
// repository unreachable).
//
// The variants: PackageKit absent (the bookworm base: the apt backend), and PackageKit installed
// (a derived root file system with packagekit and polkitd: the agent's sd-bus client drives
// PackageKit, whose apt backend drives dpkg). Where PackageKit reports differently, the
// assertion is per variant, with the reason beside it.
//
// Runs as root (`node --test --test-reporter=tap tests/system/packages.test.mjs`); skipped
// with a reason when no container can boot, except in CI (CI=true), where that is a failure.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, chmodSync, readdirSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { join, resolve, dirname, basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startContainer, skipReason, removeOnExit, q, host } from './lib/container.mjs';
import { buildDeb, makeAptRepo, serveHttp, useRepo, holdDpkgLock } from './lib/debrepo.mjs';
import { UNIT, ok, fails, follow, update, refusal, checkProgress, phasesOf, aptVariants, waitActive,
  updateThroughLock, stepper, updateOnSession } from './lib/pkgjobs.mjs';

const top = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const RELEASE = 'bookworm';
const STATE = '/var/lib/exosphere-guest-agent';
const PASSWORD = 'ABLE BAKE CAT DOG EAR FIG';
const PORT = 8080;
// [packages] lock_timeout of the test: the shortest allowed, so the timeout case takes 10 s.
const LOCK_TIMEOUT_S = 10;

// Each variant runs the whole file's checks (lib/pkgjobs.mjs).
const VARIANTS = aptVariants(RELEASE);

const reason = await skipReason();

const installed = async (c, name) =>
  (await c.run(`dpkg-query -W -f '\${Version} \${db:Status-Abbrev}' ${name}`)).stdout.trim();

// Back to exo-testpkg 1.0 with dpkg -i. apt's binary caches go too: apt trusts them while
// /var/lib/dpkg/status keeps its size and its mtime second, which a downgrade between versions
// of the same length within one second does (seen: "already the newest version (1.1)").
async function downgrade(c) {
  await c.run('dpkg -i /var/tmp/exo-testpkg_1.0_all.deb && rm -f /var/cache/apt/*.bin');
  assert.equal(await installed(c, 'exo-testpkg'), '1.0 ii');
}

const times = [];

for (const variant of VARIANTS) {
  test(`packages.check_updates and packages.update on ${RELEASE}, ${variant.name}`,
    { skip: reason || false, timeout: 30 * 60 * 1000 }, async (t) => {
      const t0 = Date.now();
      const work = mkdtempSync('/var/tmp/exo-packages-');
      chmodSync(work, 0o755);
      const forget = removeOnExit(work);
      let c;
      let server;
      let holder;
      try {
        await host(join(top, 'packaging/build-packages.sh'), ['--release', RELEASE, '--out', join(work, 'dist')],
          { log: join(work, 'build.log') });
        const tBuilt = Date.now();
        // 1.1 sleeps a second in its preinst and its postinst, so that a client polling every
        // 100 ms sees the job installing and configuring.
        const debs = {
          t10: await buildDeb(work, { name: 'exo-testpkg', version: '1.0' }),
          t11: await buildDeb(work, { name: 'exo-testpkg', version: '1.1', slowUnpack: 1, slowConfigure: 1 }),
          s20: await buildDeb(work, { name: 'exo-testpkg-sec', version: '2.0' }),
          s21: await buildDeb(work, { name: 'exo-testpkg-sec', version: '2.0+deb12u1' }),
        };
        const repo = await makeAptRepo(work, {
          origin: 'ExoTest',
          suites: {
            [RELEASE]: { debs: [debs.t10, debs.t11, debs.s20], label: 'ExoTest' },
            [`${RELEASE}-security`]: { debs: [debs.s21], label: 'Debian-Security' },
          },
        });
        t.diagnostic(`agent packages ${((tBuilt - t0) / 1000).toFixed(0)} s, test packages and repository ${((Date.now() - tBuilt) / 1000).toFixed(1)} s`);

        c = await startContainer({ release: RELEASE, lower: variant.rootfs ? await variant.rootfs((m) => t.diagnostic(m)) : undefined,
          log: (m) => t.diagnostic(m) });
        await variant.prepare(c);
        server = await serveHttp(c, repo.dir, PORT);
        await useRepo(c, repo, PORT);
        // Not /tmp: the container's systemd mounts a tmpfs over it.
        const agentDebs = readdirSync(join(work, 'dist', RELEASE)).filter((f) => f.endsWith('.deb'))
          .map((f) => join(work, 'dist', RELEASE, f));
        for (const d of [...agentDebs, debs.t10, debs.s20]) writeFileSync(join(c.root, 'var/tmp', basename(d)), readFileSync(d));
        await c.run(`dpkg -i ${agentDebs.map((d) => `/var/tmp/${basename(d)}`).join(' ')}`, { timeout: 300000 });
        await c.run('dpkg -i /var/tmp/exo-testpkg_1.0_all.deb /var/tmp/exo-testpkg-sec_2.0_all.deb');
        await c.run('apt-get update');
        // A user who is not an administrator (no sudo group).
        await c.run(`useradd -m -s /bin/bash tester && echo ${q(`tester:${PASSWORD}`)} | chpasswd`);
        // exo-nosuchpkg is allowed but in no repository.
        await c.run(`printf '\\n[packages]\\nallow = "exo-testpkg", "exo-nosuchpkg"\\nlock_timeout = ${LOCK_TIMEOUT_S}s\\n' >>/etc/${UNIT}/agent.conf`);
        const restart = await c.run(`systemctl restart ${UNIT}`, { allowFail: true });
        if (restart.code !== 0) {
          const log = await c.run(`journalctl -u ${UNIT} --no-pager -o cat -n 30`, { allowFail: true });
          throw new Error(`the agent did not restart with [packages] in its configuration:\n${restart.stderr}\n${log.stdout}`);
        }
        await waitActive(c);
        const token = await c.login('tester', PASSWORD);
        const tReady = Date.now();
        // A subtest; when it fails, the agent's log of its time goes with it.
        // A subtest; when it fails, the agent's log of its time goes with it.
        const step = stepper(t, c);

        await step('check_updates lists both updates with their origins; security from the archive', async () => {
          // As a user: reading what would change needs no administrator.
          const r = await ok(c, 'packages.check_updates', {}, { token });
          assert.equal(r.backend, variant.backend);
          assert.equal(typeof r.refreshed, 'boolean');
          const byName = Object.fromEntries(r.updates.map((u) => [u.name, u]));
          assert.deepEqual(Object.keys(byName).sort(), ['exo-testpkg', 'exo-testpkg-sec'], JSON.stringify(r));
          const u = byName['exo-testpkg'];
          assert.equal(u.installed, '1.0');
          assert.equal(u.candidate, '1.1');
          // apt: "ExoTest:bookworm"; PackageKit: "exotest-bookworm-main".
          assert.match(u.origin, /ExoTest/i, JSON.stringify(u));
          assert.equal(u.security, false);
          const s = byName['exo-testpkg-sec'];
          assert.equal(s.installed, '2.0');
          assert.equal(s.candidate, '2.0+deb12u1');
          assert.match(s.origin, /Debian-Security|bookworm-security/, JSON.stringify(s));
          assert.equal(s.security, true);
          // Restricted to names.
          const one = await ok(c, 'packages.check_updates', { packages: ['exo-testpkg'] });
          assert.deepEqual(one.updates.map((x) => x.name), ['exo-testpkg'], JSON.stringify(one));
          // Nothing installed by looking.
          assert.equal(await installed(c, 'exo-testpkg'), '1.0 ii');
        });

        await step('update exo-testpkg over a WebSocket session: a job, its progress notifications and phases, 1.0 → 1.1 installed', async () => {
          const before = Date.now();
          const { record, snapshots, done, notes } = await updateOnSession(c, { packages: ['exo-testpkg'] });
          t.diagnostic(`update: ${((Date.now() - before) / 1000).toFixed(1)} s, phases polled ${phasesOf(snapshots).join(' → ')}, `
            + `notified ${notes.map((m) => `${m.params.progress.percent}% ${m.params.progress.phase ?? ''}`).join(', ')}`);
          // The notifications: every progress report, in order, and the final record.
          const noted = notes.map((m) => ({ at: m.at, progress: m.params.progress, state: m.params.state }));
          checkProgress(done.params, noted);
          // Each phase in its order (the .deb is fetched: nothing is in apt's cache yet).
          assert.deepEqual(phasesOf(noted), ['downloading', 'installing', 'configuring', 'done'], JSON.stringify(noted));
          assert.ok(noted.every((n) => n.state === 'running'), JSON.stringify(noted));
          assert.equal(done.params.state, 'succeeded');
          assert.deepEqual(done.params.result, record.result);
          assert.equal(record.state, 'succeeded', JSON.stringify(record));
          assert.equal(record.method, 'packages.update');
          // Never cancelled: killing dpkg leaves the system broken.
          assert.equal(record.cancellable, false);
          assert.deepEqual(record.result.changed, [{ name: 'exo-testpkg', from: '1.0', to: '1.1' }]);
          checkProgress(record, snapshots);
          // The maintainer scripts' sleeps make these two visible.
          const phases = phasesOf(snapshots);
          for (const p of ['installing', 'configuring']) assert.ok(phases.includes(p), `no ${p} phase seen: ${JSON.stringify(snapshots)}`);
          assert.ok(!phases.includes('waiting for lock'), JSON.stringify(snapshots));
          assert.equal(await installed(c, 'exo-testpkg'), '1.1 ii');
          assert.equal((await c.run('cat /usr/share/exo-testpkg/VERSION')).stdout, '1.1\n');
          // Only the named package.
          assert.equal(await installed(c, 'exo-testpkg-sec'), '2.0 ii');
          // The operation's files in state_dir/packages/<id>/: root's alone, the exit line.
          const dirs = (await c.run(`ls ${STATE}/packages`)).stdout.split('\n').filter(Boolean);
          assert.ok(dirs.length >= 1 && dirs.every((d) => /^[0-9a-f]{32}$/.test(d)), dirs.join(' '));
          assert.equal((await c.run(`stat -c '%a %U' ${STATE}/packages`)).stdout.trim(), '700 root');
          const exits = (await c.run(`cat ${STATE}/packages/*/exit`)).stdout;
          assert.match(exits, /^exit 0$/m, exits);
          // apt's status fd, or the PackageKit client's event lines (runtime/pkgop.h).
          assert.match((await c.run(`cat ${STATE}/packages/*/status`)).stdout,
            variant.backend === 'packagekit' ? /^package decompressing exo-testpkg 1\.1 all /m : /^pmstatus:exo-testpkg:/m);
          const modes = (await c.run(`stat -c '%a %U %n' ${STATE}/packages/*/*`)).stdout.trim().split('\n');
          for (const m of modes) assert.match(m, /^600 root /, modes.join('\n'));
          // Nothing left to update for it.
          const after = await ok(c, 'packages.check_updates', { packages: ['exo-testpkg'] });
          assert.deepEqual(after.updates, [], JSON.stringify(after));
          // No /run/reboot-required here (last: its own failure hides no other check).
          assert.equal(record.result.reboot_required, false);
        });

        await step('an idempotency key answers the same job again', async () => {
          await downgrade(c);
          const params = { packages: ['exo-testpkg'], idempotency_key: `pkg-${process.pid}` };
          const first = await ok(c, 'packages.update', params);
          const again = await ok(c, 'packages.update', params);
          assert.equal(again.job_id, first.job_id);
          const { record } = await follow(c, first.job_id);
          assert.equal(record.state, 'succeeded', JSON.stringify(record));
          assert.equal(await installed(c, 'exo-testpkg'), '1.1 ii');
        });

        await step('a held dpkg lock: "waiting for lock", then success once it is released', async () => {
          await downgrade(c);
          // Held far longer than lock_timeout; released by the test once the job waits.
          holder = await holdDpkgLock(c, 120);
          const { record, snapshots, released } = await updateThroughLock(c, { packages: ['exo-testpkg'] }, holder,
            async () => assert.equal(await installed(c, 'exo-testpkg'), '1.0 ii', 'installed while the lock was held'));
          holder = null;
          t.diagnostic(`held lock: phases ${phasesOf(snapshots).join(' → ')}`);
          assert.deepEqual(record.result.changed, [{ name: 'exo-testpkg', from: '1.0', to: '1.1' }]);
          checkProgress(record, snapshots);
          // Waiting came first; the work after the release.
          const phases = phasesOf(snapshots);
          assert.equal(phases[0] === 'downloading' ? phases[1] : phases[0], 'waiting for lock', phases.join());
          const installing = snapshots.find((s) => s.progress?.phase === 'installing');
          assert.ok(installing && installing.at >= released, JSON.stringify(snapshots));
          assert.equal(await installed(c, 'exo-testpkg'), '1.1 ii');
        });

        await step(`a lock held past lock_timeout (${LOCK_TIMEOUT_S} s) fails the job: lock_timeout, Busy, retry_after_s`, async () => {
          await downgrade(c);
          holder = await holdDpkgLock(c, 120);
          const started = Date.now();
          const u = await update(c, { packages: ['exo-testpkg'] });
          const secs = (Date.now() - started) / 1000;
          t.diagnostic(`lock timeout: failed after ${secs.toFixed(1)} s, phases ${u.snapshots ? phasesOf(u.snapshots).join(' → ') : '-'}`);
          assert.equal(u.error, undefined, `refused at once: ${JSON.stringify(u.error)}`);
          assert.equal(u.record.state, 'failed', JSON.stringify(u.record));
          const e = u.record.error;
          assert.equal(e.code, -32005, JSON.stringify(e));
          assert.equal(e.data.reason, 'lock_timeout');
          assert.ok(Number.isInteger(e.data.retry_after_s) && e.data.retry_after_s > 0, JSON.stringify(e));
          assert.ok(phasesOf(u.snapshots).includes('waiting for lock'), JSON.stringify(u.snapshots));
          // apt waited for the lock for lock_timeout, not less (nor for ever). PackageKit's apt
          // backend acts on the cancel only when its own 10 s attempt ends: up to 10 s more.
          assert.ok(secs >= LOCK_TIMEOUT_S - 0.5 && secs < LOCK_TIMEOUT_S + 60, `${secs} s`);
          assert.equal(await installed(c, 'exo-testpkg'), '1.0 ii');
          await holder.release();
          holder = null;
        });

        await step('refusals: not allowed, admin only, exactly one of packages and all', async () => {
          let e = refusal(await update(c, { packages: ['exo-testpkg-sec'] }));
          assert.equal(e.code, -32002, JSON.stringify(e));
          assert.equal(e.data.reason, 'not_allowed');
          e = refusal(await update(c, { packages: ['exo-testpkg', 'exo-testpkg-sec'] }));
          assert.equal(e.data.reason, 'not_allowed', JSON.stringify(e));
          e = refusal(await update(c, { all: true }, { token }));
          assert.equal(e.code, -32002, JSON.stringify(e));
          assert.equal(e.data.reason, 'admin_only');
          e = await fails(c, 'packages.update', { packages: ['exo-testpkg'], all: true });
          assert.equal(e.code, -32602, JSON.stringify(e));
          e = await fails(c, 'packages.update', {});
          assert.equal(e.code, -32602, JSON.stringify(e));
          // Nothing changed.
          assert.equal(await installed(c, 'exo-testpkg'), '1.0 ii');
          assert.equal(await installed(c, 'exo-testpkg-sec'), '2.0 ii');
        });

        await step('an allowed package that no repository has: unknown_package (NotFound)', async () => {
          const u = await update(c, { packages: ['exo-nosuchpkg'] });
          const e = refusal(u);
          t.diagnostic(`unknown package: refused by the ${u.error ? 'call' : 'job'}: ${e.message}`);
          assert.equal(e.code, -32003, JSON.stringify(e));
          assert.equal(e.data.reason, 'unknown_package');
        });

        await step('all: true by an administrator updates everything; reboot_required from /run/reboot-required', async () => {
          await c.run('touch /run/reboot-required');
          const u = await update(c, { all: true });
          assert.equal(u.error, undefined, JSON.stringify(u.error));
          assert.equal(u.record.state, 'succeeded', JSON.stringify(u.record));
          const changed = [...u.record.result.changed].sort((a, b) => a.name.localeCompare(b.name));
          assert.deepEqual(changed, [
            { name: 'exo-testpkg', from: '1.0', to: '1.1' },
            { name: 'exo-testpkg-sec', from: '2.0', to: '2.0+deb12u1' },
          ]);
          checkProgress(u.record, u.snapshots);
          assert.equal(await installed(c, 'exo-testpkg-sec'), '2.0+deb12u1 ii');
          await c.run('rm /run/reboot-required');
          assert.equal(u.record.result.reboot_required, true);
        });

        await step('the repository unreachable (its port closed): repository_unreachable', async () => {
          await downgrade(c);
          // No cached .deb either: apt would install 1.1 from /var/cache/apt/archives.
          await c.run('apt-get clean');
          await server.stop();
          server = null;
          const t1 = Date.now();
          const u = await update(c, { packages: ['exo-testpkg'] });
          const e = refusal(u);
          t.diagnostic(`unreachable: refused by the ${u.error ? 'call' : 'job'} after ${((Date.now() - t1) / 1000).toFixed(1)} s: ${e.message}`);
          assert.equal(e.code, -32009, JSON.stringify(e));
          assert.equal(e.data.reason, 'repository_unreachable');
          assert.equal(await installed(c, 'exo-testpkg'), '1.0 ii');
        });

        t.diagnostic(`agent calls: ${((Date.now() - tReady) / 1000).toFixed(1)} s`);
      } finally {
        if (holder) await holder.release().catch(() => {});
        if (server) await server.stop();
        if (c) await c.cleanup();
        rmSync(work, { recursive: true, force: true });
        forget();
        const secs = ((Date.now() - t0) / 1000).toFixed(0);
        times.push(`${variant.name}: ${secs} s`);
        t.diagnostic(`${variant.name}: took ${secs} s`);
      }
    });
}

test('time per variant', { skip: reason || false }, (t) => { t.diagnostic(times.join(', ')); });
