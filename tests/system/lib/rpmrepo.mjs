// Test fixtures for the dnf backend's container test (issue 9): trivial noarch rpm packages
// built at test time with rpmbuild, a YUM repository of them (createrepo_c) signed with a
// throwaway key (rpmsign, as packaging/make-repos.sh), the container's dnf and rpm set up to
// use it alone, and a holder of dnf's rpmdb lock inside a container. The repository is
// served with debrepo.mjs's serveHttp. Nothing here needs the network.
import { mkdirSync, writeFileSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { q, host } from './container.mjs';

// Builds <dir>/rpmbuild/RPMS/noarch/<name>-<version>-1.noarch.rpm: one file,
// /usr/share/<name>/VERSION, holding the version. slowInstall: seconds its %pre and %post
// sleep, so that a client polling the job sees dnf's installing and configuring steps. The
// scriptlets are rpm's own Lua (-p <lua>), not /bin/sh: a shell scriptlet makes the package
// require /bin/sh, which no package in the container's rpm database provides (dpkg owns it),
// and dnf would refuse the transaction. Returns the .rpm's path.
export async function buildRpm(dir, { name, version, slowInstall = 0 }) {
  const top = join(dir, 'rpmbuild');
  mkdirSync(join(top, 'SPECS'), { recursive: true });
  const sleep = slowInstall ? `posix.sleep(${Number(slowInstall)})` : '';
  const spec = join(top, 'SPECS', `${name}-${version}.spec`);
  writeFileSync(spec, [
    `Name: ${name}`,
    `Version: ${version}`,
    'Release: 1',
    "Summary: test package of the Exosphere Guest Agent's package tests",
    'License: MIT',
    'BuildArch: noarch',
    '%description',
    'Built by tests/system/lib/rpmrepo.mjs; installs only its VERSION file.',
    ...(sleep ? ['%pre -p <lua>', sleep, '%post -p <lua>', sleep] : []),
    '%install',
    `mkdir -p %{buildroot}/usr/share/${name}`,
    `echo ${version} > %{buildroot}/usr/share/${name}/VERSION`,
    '%files',
    `/usr/share/${name}`,
    '',
  ].join('\n'));
  // No build-id links (a noarch package has no ELF files anyway) and no debuginfo.
  await host('rpmbuild', ['--quiet', '--define', `_topdir ${top}`, '--define', '_build_id_links none',
    '--define', 'debug_package %{nil}', '-bb', spec]);
  return join(top, 'RPMS', 'noarch', `${name}-${version}-1.noarch.rpm`);
}

// A YUM repository of rpms in <work>/yum: the packages signed (rpmsign --addsign) with a
// throwaway RSA key (rpm 4.14 of EL8 verifies RSA only, as make-repos.sh says), repodata/ by
// createrepo_c. Returns { dir (to serve), key (the ASCII-armoured public key, for gpgkey=),
// fingerprint }.
export async function makeRpmRepo(work, rpms) {
  const dir = join(work, 'yum');
  const gnupg = join(work, 'rpm-gnupg');
  mkdirSync(join(dir, 'packages'), { recursive: true });
  mkdirSync(gnupg, { mode: 0o700, recursive: true });
  const gpg = (...args) => host('gpg', ['--homedir', gnupg, '--batch', '--quiet', '--no-auto-check-trustdb', ...args]);
  await gpg('--passphrase', '', '--quick-gen-key', 'Exosphere rpm package tests (throwaway) <exosphere-test@invalid>',
    'rsa2048', 'sign', '1d');
  const fingerprint = (await gpg('--with-colons', '--list-secret-keys')).match(/^fpr:+([0-9A-F]+):/m)[1];
  const key = await gpg('--armor', '--export', fingerprint);
  const copies = [];
  for (const r of rpms) {
    const to = join(dir, 'packages', r.split('/').pop());
    writeFileSync(to, readFileSync(r));
    copies.push(to);
  }
  // __gpg: Debian's rpm macros name /usr/bin/gpg2, which Debian does not ship.
  const gpgPath = (await host('sh', ['-c', 'command -v gpg'])).trim();
  await host('rpmsign', ['--define', `_gpg_name ${fingerprint}`, '--define', `_gpg_path ${gnupg}`,
    '--define', `__gpg ${gpgPath}`, '--define', '_gpg_digest_algo sha256', '--addsign', ...copies]);
  await host('createrepo_c', ['--quiet', '--no-database', dir]);
  await host('chmod', ['-R', 'a+rX', dir]);
  return { dir, key, fingerprint };
}

// dnf and rpm in the container managing its own rpm database at / against repo alone, served
// on the container's loopback at port:
// - %_dbpath /var/lib/rpm: Debian's rpm keeps its database in ~/.rpmdb (its
//   /usr/lib/rpm/macros), a Red Hat system in /var/lib/rpm; the agent runs dnf without HOME.
// - /etc/dnf/vars/releasever: dnf reads the release from the package that provides
//   system-release(releasever), which a Debian rpm database has none of.
// - /etc/yum.repos.d/exo-test.repo, the only repository: gpgcheck=1 with the key's file, and
//   metadata_expire=0 so that each refresh reads the repository as it is now.
export async function useRpmRepo(c, repo, port, { id = 'exo-test' } = {}) {
  await c.run('install -d -m 0755 /etc/rpm /etc/dnf/vars /etc/yum.repos.d /etc/pki/rpm-gpg /var/lib/rpm');
  await c.run('printf "%%_dbpath /var/lib/rpm\\n" >/etc/rpm/macros && rpm --initdb');
  await c.run('echo 12 >/etc/dnf/vars/releasever');
  await c.run('cat >/etc/pki/rpm-gpg/RPM-GPG-KEY-exo-test', { input: repo.key });
  await c.run(`rm -f /etc/yum.repos.d/*.repo && cat >/etc/yum.repos.d/${id}.repo`, {
    input: [`[${id}]`, 'name=Exosphere tests', `baseurl=http://127.0.0.1:${port}/`, 'enabled=1', 'gpgcheck=1',
      `gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-exo-test`, 'metadata_expire=0', ''].join('\n'),
  });
}

// Holds dnf's rpmdb lock for secs seconds as a running dnf does: its pid in
// /var/lib/dnf/rpmdb_lock.pid. dnf 4 then waits for that process for as long as it lives
// ("Waiting for process with pid N to finish."), without a limit of its own. Returns { pid,
// release() } (release ends the process; the file stays, as a dnf killed by a signal leaves
// it, and the next dnf takes it over since its process is gone).
export async function holdRpmdbLock(c, secs) {
  const p = c.spawn(`sleep ${Number(secs)} & echo $!; mkdir -p /var/lib/dnf; printf %s $! >/var/lib/dnf/rpmdb_lock.pid; echo held; wait`);
  let out = '';
  const done = new Promise((res) => p.once('exit', (code, signal) => res({ code, signal })));
  const pid = await new Promise((res, rej) => {
    p.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/^(\d+)\nheld$/m);
      if (m) res(Number(m[1]));
    });
    p.once('exit', (code) => rej(new Error(`the lock holder exited ${code}: ${out}`)));
  });
  return {
    pid,
    release: async () => {
      await c.run(`kill ${pid} 2>/dev/null || true`);
      await done;
    },
  };
}

// The installed version-release of name in the container ("1.0-1"), or "" when not installed.
export async function rpmInstalled(c, name) {
  const r = await c.run(`rpm -q --qf '%{VERSION}-%{RELEASE}' ${q(name)}`, { allowFail: true });
  return r.code === 0 ? r.stdout.trim() : '';
}

// The rpms under dir (for copying into the container).
export function rpmsIn(dir) {
  return readdirSync(dir).filter((f) => f.endsWith('.rpm')).map((f) => join(dir, f));
}
