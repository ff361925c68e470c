// Notifications over WebSocket sessions, end to end: notifications.list, subscribe and
// unsubscribe; notify.system_load from the load sampler; notify.mounts.mounted, .changed and
// .unmounted from the one mount table event source, for mounts made by hand (as root, on this
// machine's own mount table: tmpfs under a temporary directory); permissions per
// notification; and no notifications over HTTP.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAgent, rpc, sleep, ACCOUNTS, slow } from './lib/agent.mjs';
import { open, call } from './lib/wsclient.mjs';

const asRoot = process.getuid() === 0;
const notification = (name) => (m) => m.json && m.json.method === name && m.json.id === undefined;

describe('notifications', { skip: !asRoot && 'mounts and logins need root' }, () => {
  let agent;
  let dir;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'exo-notify-'));
    agent = await startAgent({ sections: { system_load: { interval: '1s' }, auth: { login_backoff: '0s' } } });
  });
  after(async () => {
    await agent.close();
    try { execFileSync('umount', ['-R', join(dir, 'm')], { stdio: 'ignore' }); } catch { /* not mounted */ }
    rmSync(dir, { recursive: true, force: true });
  });

  it('lists every notification the methods declare, as the OpenRPC document does', async () => {
    const s = open(agent, { unix: true });
    await s.ready;
    const list = (await s.call('notifications.list', {})).result;
    const names = list.map((n) => n.name).sort();
    assert.deepEqual(names, ['notify.jobs.done', 'notify.jobs.progress', 'notify.mounts.changed', 'notify.mounts.mounted',
      'notify.mounts.unmounted', 'notify.system_load']);
    const doc = (await s.call('rpc.discover', {})).result;
    assert.deepEqual(doc['x-notifications'].map((n) => n.name).sort(), names);
    s.close();
  });

  it('notify.system_load: each sample to the subscribers, until they unsubscribe', async () => {
    const s = open(agent, { unix: true });
    await s.ready;
    assert.deepEqual((await s.call('notifications.subscribe', { names: ['notify.system_load'] })).result,
      { names: ['notify.system_load'] });
    const n = (await s.take(notification('notify.system_load'), 5000 * slow)).json;
    assert.deepEqual(Object.keys(n.params).sort(), ['cpuPctUsed', 'epoch', 'gpuPctUsed', 'memPctUsed', 'rootfsPctUsed']);
    assert.ok(Number.isInteger(n.params.memPctUsed));
    assert.deepEqual((await s.call('notifications.unsubscribe', { names: ['notify.system_load'] })).result, { names: [] });
    s.inbox.length = 0;
    await sleep(2500);
    assert.equal(s.inbox.filter((m) => m.json && m.json.method).length, 0, 'nothing after unsubscribing');
    s.close();
  });

  it('notify.mounts.*: a mount, a remount and an unmount by hand reach every subscriber', async () => {
    const a = open(agent, { unix: true });
    const b = open(agent, { unix: true });
    await Promise.all([a.ready, b.ready]);
    const names = ['notify.mounts.changed', 'notify.mounts.mounted', 'notify.mounts.unmounted'];
    for (const s of [a, b]) assert.deepEqual((await s.call('notifications.subscribe', { names })).result, { names });
    const where = join(dir, 'm');
    mkdirSync(where, { recursive: true });
    // The first list is taken after the first subscription: give it a moment.
    await sleep(300);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'exo-notify', where]);
    for (const s of [a, b]) {
      const m = (await s.take((x) => notification('notify.mounts.mounted')(x) && x.json.params.mountpoint === where)).json;
      assert.equal(m.params.fstype, 'tmpfs');
      assert.equal(m.params.read_only, false);
    }
    execFileSync('mount', ['-o', 'remount,ro', where]);
    const changed = (await a.take((x) => notification('notify.mounts.changed')(x) && x.json.params.mountpoint === where)).json;
    assert.equal(changed.params.read_only, true);
    execFileSync('umount', [where]);
    for (const s of [a, b]) {
      const u = (await s.take((x) => notification('notify.mounts.unmounted')(x) && x.json.params.mountpoint === where)).json;
      assert.equal(u.params.device, 'exo-notify');
    }
    a.close();
    b.close();
  });

  it('a notification the identity may not see cannot be subscribed; after a login it can, until a logout', async () => {
    const s = open(agent);
    await s.ready;
    const refused = await s.call('notifications.subscribe', { names: ['notify.system_load'] });
    assert.equal(refused.error.code, -32001, JSON.stringify(refused));
    const user = ACCOUNTS.user;
    const login = await s.call('authenticate.login', { username: user.name, password: user.password });
    assert.equal(login.error, undefined, JSON.stringify(login));
    assert.deepEqual((await s.call('notifications.subscribe', { names: ['notify.system_load'] })).result,
      { names: ['notify.system_load'] });
    await s.take(notification('notify.system_load'), 5000 * slow);
    const unknown = await s.call('notifications.subscribe', { names: ['notify.nothing'] });
    assert.equal(unknown.error.code, -32602);
    // A logout ends what the login allowed: no notification after it.
    assert.equal((await s.call('authenticate.logout', {})).result.revoked, true);
    s.inbox.length = 0;
    await sleep(2500);
    assert.equal(s.inbox.filter((m) => m.json && m.json.method).length, 0, 'nothing after the logout');
    s.close();
  });

  it('over HTTP there is no session to notify: a clear error', async () => {
    const r = (await rpc(agent, call('notifications.subscribe', { names: ['notify.system_load'] }), { socketPath: agent.sock })).json();
    assert.equal(r.error.code, -32008);
    assert.equal(r.error.data.reason, 'no_session');
    assert.match(r.error.message, /WebSocket/);
  });
});
