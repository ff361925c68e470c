// The suite's own pieces: the comparison of answers and the safety check of the disk-acting
// examples (which must say no whenever the machine has what an example would act on).
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { compare, diskSafety, splitPath, stableJson, howToCall } from './lib/contract.mjs';

it('compares by deep equality, volatile paths by JSON type only, and names each difference\'s path', () => {
  const rec = { result: [{ epoch: 1, cpu: 2, gpu: null }, { epoch: 3, cpu: 4, gpu: null }], id: 1 };
  assert.deepEqual(compare(rec, structuredClone(rec)), []);
  const vol = ['result[*].epoch', 'result[*].cpu'];
  assert.deepEqual(compare(rec, { result: [{ epoch: 9, cpu: 8, gpu: null }, { epoch: 7, cpu: 6, gpu: null }], id: 1 }, vol), []);
  assert.deepEqual(compare(rec, { result: [{ epoch: '9', cpu: 8, gpu: [] }, { epoch: 7, cpu: 6, gpu: null }], id: 1 }, vol), [
    { path: 'result[0].epoch', recorded: 1, actual: '9', note: 'volatile: JSON type differs' },
    { path: 'result[0].gpu', recorded: null, actual: [] },
  ]);
  assert.deepEqual(compare(rec, { result: [rec.result[0]], id: 1 }, vol), [{ path: 'result.length', recorded: 2, actual: 1 }]);
  // A recorded field that is gone is a difference; a new field is an addition, allowed.
  assert.deepEqual(compare({ a: 1 }, { b: 1 }), [{ path: 'a', recorded: 1, actual: undefined }]);
  assert.deepEqual(compare({ r: { a: 1 } }, { r: { a: 1, added: [1] } }), []);
  // A volatile path covers exactly that path: not its parent, not a sibling, not a prefix.
  assert.deepEqual(compare({ result: { x: 1, xy: 2 } }, { result: { x: 5, xy: 3 } }, ['result.x']),
    [{ path: 'result.xy', recorded: 2, actual: 3 }]);
  assert.deepEqual(splitPath('result[*].epoch'), ['result', '[*]', 'epoch']);
});

it('writes JSON with sorted keys at every level', () => {
  assert.equal(stableJson({ b: 1, a: { d: [{ f: 1, e: 2 }], c: 3 } }), '{\n  "a": {\n    "c": 3,\n    "d": [\n      {\n        "e": 2,\n        "f": 1\n      }\n    ]\n  },\n  "b": 1\n}\n');
});

it('refuses a disk-acting example whose disk, mount or Ceph client this machine has', () => {
  assert.equal(diskSafety('agent.info', {}), null);
  assert.match(diskSafety('mounts.unmount', { mountpoint: '/' }), /\/ is mounted on this machine/);
  const dev = readFileSync('/proc/partitions', 'utf8').split('\n').map((l) => l.trim().split(/\s+/)[3]).filter((n) => n && n !== 'name')[0];
  if (dev) {
    assert.match(diskSafety('mounts.mount_device', { device: `/dev/${dev}` }), /has the example's disk/);
    assert.match(diskSafety('mounts.unmount', { device: dev }), /has the example's disk/);
  }
  assert.equal(diskSafety('mounts.mount_device', { volume_id: 'no-such-volume-id-anywhere' }), null);
  assert.equal(diskSafety('mounts.unmount', { mountpoint: '/no/such/mountpoint' }), null);
});

it('calls session methods on a session, logout with a token of its own, others by permission', () => {
  assert.equal(howToCall({ name: 'notifications.subscribe', 'x-permission': 'public' }), 'ws');
  assert.equal(howToCall({ name: 'authenticate.logout', 'x-permission': 'user' }), 'own-token');
  assert.equal(howToCall({ name: 'agent.info', 'x-permission': 'public' }), 'anonymous');
  assert.equal(howToCall({ name: 'mounts.list', 'x-permission': 'user' }), 'token');
});
