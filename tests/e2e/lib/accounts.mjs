// The machine set-up the privilege-separation and login tests need, made idempotently by the
// first test that starts an agent (as root): the agent's system user, the PAM service file the
// Debian package installs, and real local accounts with Exosphere-style passphrases (upper-case
// words separated by spaces; one also holds a colon, which Basic authentication must keep).
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';

export const ACCOUNTS = {
  admin: { name: 'exo-admin', password: 'ABLE BAKE CAT DOG EAR FIG GUM HAT ICE JAR KEY', groups: ['sudo'] },
  user: { name: 'exo-user', password: 'LAMB MAT:NUT OAK PEG QUAY RED SUN TAN URN VAT', groups: [] },
  locked: { name: 'exo-locked', password: 'WAX YAK ZOO ACE BOW COW DEN ELK FAN GAP HEN', groups: [], lock: true },
  expired: { name: 'exo-expired', password: 'INK JAM KIT LOG MUD NAP OWL PIG RAG SOW TOY', groups: [], expire: true },
  pwexpired: { name: 'exo-pwexpired', password: 'URN VAN WEB YAM ZIP ANT BEE CUB DUG EGG FOX', groups: [], mustChange: true },
};

let done = false;

function sh(cmd, args, input) {
  return execFileSync(cmd, args, { input, stdio: ['pipe', 'pipe', 'pipe'] }).toString();
}

function exists(user) {
  try {
    sh('id', ['-u', user]);
    return true;
  } catch {
    return false;
  }
}

export function ensureAccounts(repo) {
  if (done || process.getuid() !== 0) return;
  if (!exists('exosphere-guest-agent')) {
    sh('useradd', ['--system', '--user-group', '--home-dir', '/nonexistent', '--no-create-home',
      '--shell', '/usr/sbin/nologin', 'exosphere-guest-agent']);
  }
  const pam = readFileSync(join(repo, 'packaging/pam/exosphere-guest-agent.debian'), 'utf8');
  const target = '/etc/pam.d/exosphere-guest-agent';
  if (!existsSync(target) || readFileSync(target, 'utf8') !== pam) writeFileSync(target, pam);
  for (const a of Object.values(ACCOUNTS)) {
    if (!exists(a.name)) sh('useradd', ['--create-home', '--shell', '/bin/bash', a.name]);
    if (a.groups.length) sh('usermod', ['-a', '-G', a.groups.join(','), a.name]);
    sh('chpasswd', [], `${a.name}:${a.password}\n`);
    if (a.lock) sh('usermod', ['-L', a.name]);
    if (a.expire) sh('usermod', ['-e', '1970-01-02', a.name]);
    if (a.mustChange) sh('chage', ['-d', '0', a.name]);
  }
  done = true;
}
