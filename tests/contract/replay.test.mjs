// The recorded exchanges (recordings/<version>/<method>.<n>.json, written by record.mjs)
// replayed against the current agent, for every API version that agent.info lists:
// every example of that version's document has its recording and every recording its example,
// and each request sent again gets the recorded answer (volatile paths: the same JSON type).
// A difference fails with its path and both values.
//
//   cd tests/contract && EXO_AGENT_BIN=$PWD/../../build/exosphere-guest-agent \
//     node --test --test-reporter=tap replay.test.mjs
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, existsSync } from 'node:fs';
import {
  startContractAgent, agentVersions, documentOf, examplesOf, exampleRequest, send, diskSafety, readRecordings,
  compare, recordingsDir,
} from './lib/contract.mjs';

const agent = await startContractAgent();
after(() => agent.close());
const { versions } = await agentVersions(agent);
const docs = {};
for (const v of versions) docs[v] = await documentOf(agent, v);

const show = (v) => (v === undefined ? '(absent)' : JSON.stringify(v));

it('recordings exist for exactly the versions the agent serves', () => {
  const recorded = existsSync(recordingsDir) ? readdirSync(recordingsDir).filter((d) => /^\d{4}-\d{2}-\d{2}$/.test(d)).sort() : [];
  assert.deepEqual(recorded, [...versions].sort(),
    'a version without recordings: run record.mjs --version V; recordings of a version no longer served: remove them with the version');
});

for (const version of versions) {
  describe(`API version ${version}`, () => {
    const doc = docs[version];
    const recordings = readRecordings(version);
    const examples = examplesOf(doc);

    it('the document is the one of this version', () => {
      assert.equal(doc.info['x-api-version'], version);
    });

    it('every example has a recording, every recording an example (no orphans)', () => {
      const want = examples.map((e) => e.file).sort();
      const have = Object.keys(recordings).sort();
      const missing = want.filter((f) => !have.includes(f));
      const orphans = have.filter((f) => !want.includes(f));
      assert.deepEqual({ missing, orphans }, { missing: [], orphans: [] },
        `recordings of ${version}: missing ones are examples never recorded, orphans recordings of examples the document no longer has`);
      for (const { method, example, file } of examples) {
        const rec = recordings[file];
        assert.equal(rec.example, example.name, `${file}: recorded for another example`);
        assert.deepEqual(rec.request, exampleRequest(method, example), `${file}: the example's params changed since it was recorded`);
      }
    });

    for (const { method, example, file } of examples) {
      it(`${file} (${example.name})`, async () => {
        const rec = recordings[file];
        assert.ok(rec, `no recording ${version}/${file}`);
        const why = diskSafety(method.name, rec.request.params);
        assert.equal(why, null, `not sent: ${why}`);
        const actual = await send(agent, version, method, rec.request);
        const diffs = compare(rec.response, actual, rec.volatile);
        assert.ok(diffs.length === 0, `${version}/${file} differs from its recording:\n` +
          diffs.map((d) => `  ${d.path}: recorded ${show(d.recorded)}, actual ${show(d.actual)}${d.note ? ` (${d.note})` : ''}`).join('\n'));
      });
    }
  });
}
