// Issue 9: the dnf backend on the real thing. A booted bookworm container whose root file
// system has Debian's dnf 4 and rpm (lib/rootfs.mjs ensureDerivedRootfs), the agent installed
// from its .deb with `[packages] backend = dnf`, and dnf managing the container's own rpm
// database at / (the agent's command lines are fixed: no --installroot) against a signed YUM
// repository served on the container's loopback (lib/rpmrepo.mjs): exo-testpkg 1.0 installed
// with rpm, 1.0 and 1.1 in the repository. Through the agent, with the real monitor and dnf:
// agent.info, packages.check_updates, packages.update as a job with dnf's phases, a held rpmdb
// lock waited for, an unknown package and an unreachable repository.
//
// Runs as root (`CI=true node --test --test-reporter=tap --test-concurrency=1
// tests/system/packages_dnf.test.mjs`); skipped with a reason when no container can boot,
// except in CI (CI=true), where that is a failure.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, chmodSync, readdirSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { join, resolve, dirname, basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startContainer, skipReason, removeOnExit, host } from './lib/container.mjs';
import { ensureDerivedRootfs } from './lib/rootfs.mjs';
import { serveHttp } from './lib/debrepo.mjs';
import { buildRpm, makeRpmRepo, useRpmRepo, holdRpmdbLock, rpmInstalled } from './lib/rpmrepo.mjs';
import { UNIT, call, ok, update, refusal, checkProgress, phasesOf, waitActive, updateThroughLock,
  stepper, updateOnSession } from './lib/pkgjobs.mjs';

const top = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const RELEASE = 'bookworm';
const STATE = 'var/lib/exosphere-guest-agent';
const PORT = 8080;
const REPO_ID = 'exo-test';
// Debian's dnf 4.14 and rpm 4.18 (with python3-gpg for dnf's key import).
const ROOTFS_PACKAGES = ['dnf', 'rpm', 'gnupg'];

const reason = await skipReason();

test(`packages.* with the dnf backend on ${RELEASE} (Debian's dnf 4, a signed local YUM repository)`,
  { skip: reason || false, timeout: 30 * 60 * 1000 }, async (t) => {
    const t0 = Date.now();
    const work = mkdtempSync('/var/tmp/exo-packages-dnf-');
    chmodSync(work, 0o755);
    const forget = removeOnExit(work);
    let c;
    let server;
    let holder;
    try {
      const [lower] = await Promise.all([
        ensureDerivedRootfs(RELEASE, 'dnf', ROOTFS_PACKAGES, { log: (m) => t.diagnostic(m) }),
        host(join(top, 'packaging/build-packages.sh'), ['--release', RELEASE, '--out', join(work, 'dist')],
          { log: join(work, 'build.log') }),
      ]);
      const tBuilt = Date.now();
      const rpms = {
        v10: await buildRpm(work, { name: 'exo-testpkg', version: '1.0' }),
        // 1.1's %pre and %post sleep a second: the job is seen installing.
        v11: await buildRpm(work, { name: 'exo-testpkg', version: '1.1', slowInstall: 1 }),
        // In the repository, never installed.
        extra: await buildRpm(work, { name: 'exo-testextra', version: '1.0' }),
      };
      const repo = await makeRpmRepo(work, [rpms.v10, rpms.v11, rpms.extra]);
      t.diagnostic(`root file system and agent packages ${((tBuilt - t0) / 1000).toFixed(0)} s, `
        + `rpms and repository ${((Date.now() - tBuilt) / 1000).toFixed(1)} s`);

      c = await startContainer({ release: RELEASE, lower, log: (m) => t.diagnostic(m) });
      server = await serveHttp(c, repo.dir, PORT);
      await useRpmRepo(c, repo, PORT, { id: REPO_ID });
      // Not /tmp: the container's systemd mounts a tmpfs over it.
      const agentDebs = readdirSync(join(work, 'dist', RELEASE)).filter((f) => f.endsWith('.deb'))
        .map((f) => join(work, 'dist', RELEASE, f));
      for (const f of [...agentDebs, rpms.v10]) writeFileSync(join(c.root, 'var/tmp', basename(f)), readFileSync(f));
      await c.run(`dpkg -i ${agentDebs.map((d) => `/var/tmp/${basename(d)}`).join(' ')}`, { timeout: 300000 });
      // 1.0 with rpm, before any key is imported (rpm warns NOKEY and installs): dnf imports
      // the repository's key itself at the first update, as on a fresh instance.
      const v10 = `/var/tmp/${basename(rpms.v10)}`;
      await c.run(`rpm -i ${v10}`);
      assert.equal(await rpmInstalled(c, 'exo-testpkg'), '1.0-1');
      // exo-nosuchpkg is allowed but in no repository; exo-testextra is in it, not installed.
      await c.run(`printf '\\n[packages]\\nbackend = dnf\\nallow = "exo-testpkg", "exo-testextra", "exo-nosuchpkg"\\n' >>/etc/${UNIT}/agent.conf`);
      const restart = await c.run(`systemctl restart ${UNIT}`, { allowFail: true });
      if (restart.code !== 0) {
        const log = await c.run(`journalctl -u ${UNIT} --no-pager -o cat -n 30`, { allowFail: true });
        throw new Error(`the agent did not restart with [packages] backend = dnf:\n${restart.stderr}\n${log.stdout}`);
      }
      await waitActive(c);
      const tReady = Date.now();
      // Back to 1.0 with rpm (--oldpackage: a downgrade).
      const downgrade = async () => {
        await c.run(`rpm -U --oldpackage ${v10}`);
        assert.equal(await rpmInstalled(c, 'exo-testpkg'), '1.0-1');
      };
      // A subtest; when it fails, the agent's log of its time goes with it.
      // A subtest; when it fails, the agent's log of its time goes with it.
      const step = stepper(t, c);

      await step('agent.info reports the dnf backend', async () => {
        const info = await ok(c, 'agent.info', {});
        assert.equal(info.packages_backend, 'dnf', JSON.stringify(info));
      });

      await step('check_updates lists exo-testpkg 1.1-1 from its repository', async () => {
        const r = await ok(c, 'packages.check_updates', {});
        assert.equal(r.backend, 'dnf');
        assert.equal(r.refreshed, true, JSON.stringify(r));
        // dnf check-update names neither the installed version nor a security flag.
        assert.deepEqual(r.updates, [
          { name: 'exo-testpkg', installed: null, candidate: '1.1-1', origin: REPO_ID, security: null },
        ]);
        const one = await ok(c, 'packages.check_updates', { packages: ['exo-testpkg'] });
        assert.deepEqual(one.updates.map((x) => x.name), ['exo-testpkg'], JSON.stringify(one));
        // Nothing installed by looking.
        assert.equal(await rpmInstalled(c, 'exo-testpkg'), '1.0-1');
      });

      await step('update exo-testpkg over a WebSocket session: a job, its phases, 1.0-1 → 1.1-1 installed', async () => {
        const before = Date.now();
        const { record, snapshots, done, notes } = await updateOnSession(c, { packages: ['exo-testpkg'] });
        t.diagnostic(`update: ${((Date.now() - before) / 1000).toFixed(1)} s, phases polled ${phasesOf(snapshots).join(' → ')}, `
          + `notified ${notes.map((m) => `${m.params.progress.percent}% ${m.params.progress.phase ?? ''}`).join(', ')}`);
        const noted = notes.map((m) => ({ at: m.at, progress: m.params.progress, state: m.params.state }));
        checkProgress(done.params, noted);
        assert.deepEqual(phasesOf(noted), ['downloading', 'installing', 'configuring', 'done'], JSON.stringify(noted));
        assert.equal(done.params.state, 'succeeded');
        assert.deepEqual(done.params.result, record.result);
        assert.equal(record.state, 'succeeded', JSON.stringify(record));
        assert.equal(record.cancellable, false);
        assert.deepEqual(record.result.changed, [{ name: 'exo-testpkg', from: '1.0-1', to: '1.1-1' }]);
        // dnf: the agent cannot tell yet (no needs-restarting).
        assert.equal(record.result.reboot_required, null);
        checkProgress(record, snapshots);
        // Polled: installing (1.1's %post sleeps while its Upgrading line is the last one
        // dnf ended). dnf ends a step's line only when the next step starts (its newline is
        // printed without a flush), so the briefer configuring steps may go by unpolled; the
        // notifications above have them all.
        const phases = phasesOf(snapshots);
        assert.ok(phases.includes('installing'), `no installing phase seen: ${JSON.stringify(snapshots)}`);
        assert.ok(!phases.includes('waiting for lock'), JSON.stringify(snapshots));
        assert.equal(await rpmInstalled(c, 'exo-testpkg'), '1.1-1');
        assert.equal((await c.run('cat /usr/share/exo-testpkg/VERSION')).stdout, '1.1\n');
        // dnf imported the repository's key for its signature check.
        const keys = (await c.run("rpm -q gpg-pubkey --qf '%{VERSION}\\n'", { allowFail: true })).stdout;
        assert.ok(keys.includes(repo.fingerprint.slice(-8).toLowerCase()), `${keys} ${repo.fingerprint}`);
        const after = await ok(c, 'packages.check_updates', { packages: ['exo-testpkg'] });
        assert.deepEqual(after.updates, [], JSON.stringify(after));
      });

      await step('a held rpmdb lock: "waiting for lock", then success once it is released', async () => {
        await downgrade();
        holder = await holdRpmdbLock(c, 120);
        const { record, snapshots, released } = await updateThroughLock(c, { packages: ['exo-testpkg'] }, holder,
          async () => assert.equal(await rpmInstalled(c, 'exo-testpkg'), '1.0-1', 'installed while the lock was held'));
        holder = null;
        t.diagnostic(`held lock: phases ${phasesOf(snapshots).join(' → ')}`);
        assert.deepEqual(record.result.changed, [{ name: 'exo-testpkg', from: '1.0-1', to: '1.1-1' }]);
        checkProgress(record, snapshots);
        const installing = snapshots.find((s) => s.progress?.phase === 'installing');
        assert.ok(installing && installing.at >= released, JSON.stringify(snapshots));
        assert.equal(await rpmInstalled(c, 'exo-testpkg'), '1.1-1');
      });

      await step('an allowed package that no repository has: unknown_package (NotFound)', async () => {
        const u = await update(c, { packages: ['exo-nosuchpkg'] });
        const e = refusal(u);
        assert.equal(e.code, -32003, JSON.stringify(e));
        assert.equal(e.data.reason, 'unknown_package');
        assert.equal(e.data.package, 'exo-nosuchpkg');
      });

      await step('a package in the repository but not installed: nothing changed (dnf upgrade installs nothing new)', async () => {
        const u = await update(c, { packages: ['exo-testextra'] });
        assert.equal(u.error, undefined, JSON.stringify(u.error));
        assert.equal(u.record.state, 'succeeded', JSON.stringify(u.record));
        assert.deepEqual(u.record.result.changed, []);
        assert.equal(await rpmInstalled(c, 'exo-testextra'), '');
      });

      await step('the repository unreachable (its port closed): repository_unreachable, for the packages and for the metadata', async () => {
        await downgrade();
        // Each case as a real instance meets it, whatever the age of dnf's cache: dnf reads
        // the metadata again once it is older than metadata_expire (0 here: a second).
        const unreachable = async (what) => {
          const t1 = Date.now();
          const u = await update(c, { packages: ['exo-testpkg'] });
          const e = refusal(u);
          t.diagnostic(`${what}: refused by the ${u.error ? 'call' : 'job'} after ${((Date.now() - t1) / 1000).toFixed(1)} s: ${e.message}`);
          assert.equal(e.code, -32009, JSON.stringify(e));
          assert.equal(e.data.reason, 'repository_unreachable');
          assert.equal(await rpmInstalled(c, 'exo-testpkg'), '1.0-1');
          return e;
        };
        // The metadata fresh (metadata_expire=1h, refreshed while the server was up), the
        // package not: its download fails ("[MIRROR] ...: Curl error (7)", exit 1).
        await c.run(`sed -i 's/^metadata_expire=.*/metadata_expire=1h/' /etc/yum.repos.d/${REPO_ID}.repo && dnf -q makecache && dnf -q clean packages`);
        await server.stop();
        server = null;
        await unreachable('package download');
        // The metadata expired: with Debian's /etc/dnf/dnf.conf (skip_if_unavailable=True)
        // dnf leaves the repository out ("Ignoring repositories: exo-test") and exits 0 with
        // nothing to do; the agent does not take that for "up to date".
        await c.run(`sed -i 's/^metadata_expire=.*/metadata_expire=0/' /etc/yum.repos.d/${REPO_ID}.repo && dnf -q clean metadata`);
        await unreachable('metadata, skip_if_unavailable=True');
        // Fedora's and RHEL's dnf.conf say False: dnf fails (exit 1).
        await c.run("sed -i 's/^skip_if_unavailable=.*/skip_if_unavailable=False/' /etc/dnf/dnf.conf");
        const e = await unreachable('metadata, skip_if_unavailable=False');
        assert.equal(e.data.exit, 'exit 1', JSON.stringify(e));
        // check_updates too: the refresh fails, and so does the list.
        const r = await call(c, 'packages.check_updates', {});
        assert.equal(r.error?.data?.reason, 'repository_unreachable', JSON.stringify(r));
      });

      t.diagnostic(`agent calls: ${((Date.now() - tReady) / 1000).toFixed(1)} s`);
    } finally {
      // EXO_DNF_LOGS=DIR keeps every operation's files (state_dir/packages/<id>/: dnf's output
      // and its exit line) for recording fixtures (tests/lua/fixtures/packages/README.md).
      if (c && process.env.EXO_DNF_LOGS) {
        await host('cp', ['-r', join(c.root, STATE, 'packages'), process.env.EXO_DNF_LOGS]).catch((e) => t.diagnostic(e.message));
      }
      if (holder) await holder.release().catch(() => {});
      if (server) await server.stop();
      if (c) await c.cleanup();
      rmSync(work, { recursive: true, force: true });
      forget();
      t.diagnostic(`took ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    }
  });
