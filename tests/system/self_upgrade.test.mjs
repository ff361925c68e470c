// Issue 9: the agent upgrades itself. A booted bookworm container with the agent's packages at
// version N installed from their .debs, and a signed APT repository on the container's own
// loopback (lib/debrepo.mjs) holding N+1 of both (the same packages with a higher version:
// what changes is what apt and dpkg see). Through the agent, with the real monitor, apt-get and
// dpkg, and systemd as init:
//   - self.check_updates lists both packages, N → N+1;
//   - self.upgrade on a WebSocket session answers a job id and reports progress; the new
//     package's postinst restarts the agent, which drops the session; the package manager
//     runs on in its transient scope (exosphere-guest-agent-pkg-<id>.scope), outside the
//     agent's control group; the client reconnects and jobs.get gives the job's result, which
//     the restarted agent finished: succeeded, both packages N → N+1, restarted: true;
//   - the service has a new MainPID and dpkg has both packages at N+1, configured;
//   - a second self.upgrade has nothing to do: succeeded, nothing changed, no restart;
//   - packages.update of a test package, with the agent restarted by systemctl while dpkg
//     configures it: the update goes on in its scope and the restarted agent ends the job;
//   - as a user who is not an administrator: NotPermitted; with [packages] self_upgrade =
//     false: NotPermitted, reason disabled.
//
// Both without PackageKit (apt-get in the agent's scope) and with it (the agent's PackageKit
// client in the scope, dpkg under packagekitd): lib/pkgjobs.mjs aptVariants.
//
// Runs as root (`node --test --test-reporter=tap tests/system/self_upgrade.test.mjs`); skipped
// with a reason when no container can boot, except in CI (CI=true), where that is a failure.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, chmodSync, readdirSync, readFileSync, writeFileSync, rmSync, mkdirSync } from 'node:fs';
import { join, resolve, dirname, basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startContainer, skipReason, removeOnExit, q, host } from './lib/container.mjs';
import { buildDeb, makeAptRepo, serveHttp, useRepo } from './lib/debrepo.mjs';
import { openSession } from './lib/wsclient.mjs';
import { UNIT, PHASES, call, ok, finished, mainPid, waitActive, aptVariants } from './lib/pkgjobs.mjs';

const top = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const RELEASE = 'bookworm';
const PASSWORD = 'ABLE BAKE CAT DOG EAR FIG';
const PORT = 8080;
// Appended to both packages' versions for N+1 ("0.1.0-1~deb12" < "0.1.0-1~deb12+up1").
const UP = '+up1';

const reason = await skipReason();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The same package with version `version`: unpacked with dpkg-deb -R, its control file's
// Version line changed, built again into dir. Returns the new .deb's path.
async function repack(deb, version, dir) {
  const tree = mkdtempSync(join(dir, 'repack-'));
  await host('dpkg-deb', ['-R', deb, tree]);
  const control = join(tree, 'DEBIAN', 'control');
  const text = readFileSync(control, 'utf8');
  assert.match(text, /^Version: /m);
  writeFileSync(control, text.replace(/^Version: .*$/m, `Version: ${version}`));
  const name = text.match(/^Package: (.*)$/m)[1];
  const arch = text.match(/^Architecture: (.*)$/m)[1];
  const out = join(dir, `${name}_${version}_${arch}.deb`);
  await host('dpkg-deb', ['--root-owner-group', '-Zxz', '-b', tree, out]);
  rmSync(tree, { recursive: true, force: true });
  return out;
}

const versionOf = async (c, name) =>
  (await c.run(`dpkg-query -W -f '\${Version} \${db:Status-Abbrev}' ${name}`)).stdout.trim();
for (const variant of aptVariants(RELEASE)) {
  test(`self.check_updates and self.upgrade on ${RELEASE}, ${variant.name}: the upgrade outlives the agent's restart`,
    { skip: reason || false, timeout: 30 * 60 * 1000 }, async (t) => {
      const t0 = Date.now();
      const work = mkdtempSync('/var/tmp/exo-self-upgrade-');
      chmodSync(work, 0o755);
      const forget = removeOnExit(work);
      let c;
      let server;
      try {
        await host(join(top, 'packaging/build-packages.sh'), ['--release', RELEASE, '--out', join(work, 'dist')],
          { log: join(work, 'build.log') });
        const dist = join(work, 'dist', RELEASE);
        const debsN = readdirSync(dist).filter((f) => f.endsWith('.deb')).map((f) => join(dist, f));
        assert.equal(debsN.length, 2, debsN.join(' '));
        const upDir = join(work, 'up');
        mkdirSync(upDir);
        const versionsN = {};
        const debsN1 = [];
        for (const d of debsN) {
          const info = await host('dpkg-deb', ['-f', d, 'Package', 'Version']);
          const name = info.match(/^Package: (.*)$/m)[1];
          versionsN[name] = info.match(/^Version: (.*)$/m)[1];
          debsN1.push(await repack(d, versionsN[name] + UP, upDir));
        }
        // A test package whose 1.1 takes 6 s in its postinst: time to restart the agent meanwhile.
        const t10 = await buildDeb(work, { name: 'exo-testpkg', version: '1.0' });
        const t11 = await buildDeb(work, { name: 'exo-testpkg', version: '1.1', slowConfigure: 6 });
        const repo = await makeAptRepo(work, { origin: 'Exosphere', suites: { [RELEASE]: { debs: [...debsN1, t11], label: 'Exosphere' } } });
        const tBuilt = Date.now();
        t.diagnostic(`packages N and N+1 and the repository: ${((tBuilt - t0) / 1000).toFixed(0)} s`);

        c = await startContainer({ release: RELEASE, lower: variant.rootfs ? await variant.rootfs((m) => t.diagnostic(m)) : undefined,
          log: (m) => t.diagnostic(m) });
        await variant.prepare(c);
        server = await serveHttp(c, repo.dir, PORT);
        await useRepo(c, repo, PORT);
        for (const d of [...debsN, t10]) writeFileSync(join(c.root, 'var/tmp', basename(d)), readFileSync(d));
        await c.run(`dpkg -i ${[...debsN, t10].map((d) => `/var/tmp/${basename(d)}`).join(' ')}`, { timeout: 300000 });
        await c.run(`printf '\n[packages]\nallow = exo-testpkg\n' >>/etc/${UNIT}/agent.conf && systemctl restart ${UNIT}`);
        await c.run('apt-get update');
        await c.run(`useradd -m -s /bin/bash tester && echo ${q(`tester:${PASSWORD}`)} | chpasswd`);
        await waitActive(c);
        const token = await c.login('tester', PASSWORD);
        const names = Object.keys(versionsN).sort();
        assert.deepEqual(names, [UNIT, `${UNIT}-methods`]);

        await t.test('self.check_updates lists both of the agent\'s packages, N → N+1', async () => {
          const r = await ok(c, 'self.check_updates', {}, { token });
          assert.equal(r.backend, variant.backend);
          assert.equal(typeof r.version, 'string');
          const byName = Object.fromEntries(r.updates.map((u) => [u.name, u]));
          assert.deepEqual(Object.keys(byName).sort(), names, JSON.stringify(r));
          for (const n of names) {
            assert.equal(byName[n].installed, versionsN[n]);
            assert.equal(byName[n].candidate, versionsN[n] + UP);
            // apt names the release's Origin (Exosphere:bookworm), PackageKit the repository
            // (exosphere-bookworm-main).
            assert.match(byName[n].origin, /exosphere/i, JSON.stringify(byName[n]));
          }
        });

        await t.test('refusals: a user who is not an administrator; [packages] self_upgrade = false', async () => {
          let r = await call(c, 'self.upgrade', {}, { token });
          assert.equal(r.error?.code, -32002, JSON.stringify(r));
          await c.run(`printf 'self_upgrade = false\\n' >>/etc/${UNIT}/agent.conf && systemctl restart ${UNIT}`);
          await waitActive(c);
          r = await call(c, 'self.upgrade', {});
          assert.deepEqual([r.error?.code, r.error?.data?.reason], [-32002, 'disabled'], JSON.stringify(r));
          await c.run(`sed -i '/^self_upgrade = false$/d' /etc/${UNIT}/agent.conf && systemctl restart ${UNIT}`);
          await waitActive(c);
          for (const n of names) assert.equal(await versionOf(c, n), `${versionsN[n]} ii`);
        });

        await t.test('packages.update goes on through a restart of the agent; the new agent ends the job', async () => {
          const pid = await mainPid(c);
          const { job_id: jobId } = await ok(c, 'packages.update', { packages: ['exo-testpkg'] });
          // Restart once dpkg configures 1.1 (its postinst sleeps 6 s).
          const end = Date.now() + 120000;
          for (;;) {
            const r = await ok(c, 'jobs.get', { job_id: jobId });
            assert.equal(r.state, 'running', JSON.stringify(r));
            if (r.progress.phase === 'configuring') break;
            if (Date.now() > end) throw new Error(`never configuring: ${JSON.stringify(r)}`);
            await sleep(100);
          }
          const tRestart = Date.now();
          await c.run(`systemctl restart ${UNIT}`);
          await waitActive(c);
          assert.notEqual(await mainPid(c), pid);
          const record = await finished(c, jobId);
          t.diagnostic(`update across a restart: ended ${((Date.now() - tRestart) / 1000).toFixed(1)} s after the restart began`);
          assert.equal(record.state, 'succeeded', JSON.stringify(record));
          assert.deepEqual(record.result.changed, [{ name: 'exo-testpkg', from: '1.0', to: '1.1' }]);
          assert.equal(await versionOf(c, 'exo-testpkg'), '1.1 ii');
          const journal = (await c.run(`journalctl -u ${UNIT} --no-pager -o cat`)).stdout;
          assert.match(journal, new RegExp(`following package operation [0-9a-f]{32} again for job ${jobId}`));
        });

        await t.test('self.upgrade: the session drops when the agent restarts, the job ends in the new agent', async () => {
          const pid = await mainPid(c);
          const ws = await openSession(c);
          const tUp = Date.now();
          const r = await ws.request('self.upgrade', { idempotency_key: `self-${process.pid}` });
          assert.equal(r.error, undefined, JSON.stringify(r.error));
          const jobId = r.result.job_id;
          assert.match(jobId, /^[0-9a-f]{32}$/);
          // The session ends with the agent that served it.
          const closed = await ws.waitFor(() => false, 300000).then(() => null, (e) => e);
          const tDropped = Date.now();
          assert.ok(closed, 'the session never closed');
          const progress = ws.notifications.filter((m) => m.method === 'notify.jobs.progress' && m.params.job_id === jobId);
          ws.close();
          assert.ok(progress.length > 0, 'no progress before the restart');
          for (const m of progress) assert.ok(PHASES.includes(m.params.progress.phase), JSON.stringify(m.params.progress));
          // A new agent: reconnect and ask for the job.
          await waitActive(c);
          const record = await finished(c, jobId);
          const tDone = Date.now();
          t.diagnostic(`self.upgrade: session dropped after ${((tDropped - tUp) / 1000).toFixed(1)} s, job ended `
            + `${((tDone - tUp) / 1000).toFixed(1)} s after the call; progress before the drop: `
            + progress.map((m) => `${m.params.progress.percent}% ${m.params.progress.phase ?? ''}`).join(', '));
          assert.equal(record.state, 'succeeded', JSON.stringify(record));
          assert.equal(record.method, 'self.upgrade');
          assert.equal(record.cancellable, false);
          assert.equal(record.result.restarted, true, JSON.stringify(record.result));
          assert.equal(typeof record.result.version, 'string');
          const changed = [...record.result.changed].sort((a, b) => a.name.localeCompare(b.name));
          assert.deepEqual(changed, names.map((n) => ({ name: n, from: versionsN[n], to: versionsN[n] + UP })));
          assert.equal(record.progress.phase, 'done');
          // dpkg finished: both configured at N+1, the service restarted by the new postinst.
          for (const n of names) assert.equal(await versionOf(c, n), `${versionsN[n] + UP} ii`);
          const pid2 = await mainPid(c);
          assert.ok(pid2 > 0 && pid2 !== pid, `MainPID ${pid} → ${pid2}`);
          // The package manager ran in its own transient scope, outside the agent's service.
          const journal = (await c.run('journalctl -b --no-pager -o cat')).stdout;
          assert.match(journal, new RegExp(`Exosphere Guest Agent: package self_upgrade \\(operation [0-9a-f]{32}\\)`));
          assert.match(journal, /following the agent's upgrade \(operation [0-9a-f]{32}\) after a restart/);
          // The same key, in the new agent: the same job.
          const again = await ok(c, 'self.upgrade', { idempotency_key: `self-${process.pid}` });
          assert.equal(again.job_id, jobId);
        });

        await t.test('self.upgrade again: nothing to upgrade, no restart', async () => {
          const pid = await mainPid(c);
          const { job_id: jobId } = await ok(c, 'self.upgrade', {});
          const record = await finished(c, jobId);
          assert.equal(record.state, 'succeeded', JSON.stringify(record));
          assert.deepEqual(record.result.changed, []);
          assert.equal(record.result.restarted, false);
          assert.equal(await mainPid(c), pid);
          const r = await ok(c, 'self.check_updates', {});
          assert.deepEqual(r.updates, [], JSON.stringify(r));
        });
      } finally {
        if (server) await server.stop();
        if (c) await c.cleanup();
        rmSync(work, { recursive: true, force: true });
        forget();
        t.diagnostic(`took ${((Date.now() - t0) / 1000).toFixed(0)} s`);
      }
    });
}
