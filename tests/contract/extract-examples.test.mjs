// scripts/extract-examples.mjs: the files client projects test against, from a document and
// from the agent's CLI; its refusals.
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, writeFileSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { run, bin, repo } from '../e2e/lib/agent.mjs';

const script = join(repo, 'scripts/extract-examples.mjs');
const tmp = () => mkdtempSync(join(tmpdir(), 'exo-extract-test-'));
const read = (f) => readFileSync(f, 'utf8');

// A small document with what the script must handle: params named out of their positional
// order, a nested object with unsorted keys, an error example, a notification.
const DOC = {
  openrpc: '1.3.2',
  info: { title: 't', version: '0', 'x-api-version': '2027-01-15' },
  methods: [
    {
      name: 'spec.pair',
      params: [{ name: 'b', schema: {} }, { name: 'a', schema: {} }, { name: 'c', schema: {} }],
      result: { name: 'result', schema: {} },
      examples: [
        { name: 'both', params: [{ name: 'a', value: 1 }, { name: 'b', value: { z: 1, y: [{ q: 1, p: 2 }] } }],
          result: { name: 'result', value: { zeta: 1, alpha: 2 } } },
        { name: 'refused', params: [], error: { code: -32003, message: 'Not found' } },
      ],
    },
  ],
  'x-notifications': [
    { name: 'notify.thing', params: { type: 'object', properties: { when: {}, what: {} } },
      examples: [{ name: 'one', params: { what: 'x', when: 5 } }] },
  ],
};

it('writes one file per method and notification, params by name in positional order, keys stable', async () => {
  const d = tmp();
  writeFileSync(join(d, 'doc.json'), JSON.stringify(DOC));
  const r = await run('node', [script, join(d, 'doc.json'), join(d, 'out')]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(readdirSync(join(d, 'out/2027-01-15')).sort(), ['notify.thing.json', 'spec.pair.json']);
  const text = read(join(d, 'out/2027-01-15/spec.pair.json'));
  assert.deepEqual(Object.keys(JSON.parse(text)), ['method', 'kind', 'api_version', 'params_order', 'examples']);
  assert.deepEqual(JSON.parse(text), {
    method: 'spec.pair', kind: 'method', api_version: '2027-01-15', params_order: ['b', 'a', 'c'],
    examples: [
      { name: 'both', params: { b: { y: [{ p: 2, q: 1 }], z: 1 }, a: 1 }, result: { alpha: 2, zeta: 1 } },
      { name: 'refused', params: {}, error: { code: -32003, message: 'Not found' } },
    ],
  });
  // Key order is part of the promise: the text itself, not only the value.
  assert.ok(text.indexOf('"b"') < text.indexOf('"a"') && text.indexOf('"alpha"') < text.indexOf('"zeta"'));
  assert.ok(text.indexOf('"p"') < text.indexOf('"q"'));
  assert.deepEqual(JSON.parse(read(join(d, 'out/2027-01-15/notify.thing.json'))), {
    method: 'notify.thing', kind: 'notification', api_version: '2027-01-15', params_order: ['when', 'what'],
    examples: [{ name: 'one', params: { when: 5, what: 'x' } }],
  });
  // A second run replaces the version's directory: a method gone leaves no file behind.
  writeFileSync(join(d, 'doc.json'), JSON.stringify({ ...DOC, 'x-notifications': [] }));
  assert.equal((await run('node', [script, join(d, 'doc.json'), join(d, 'out')])).code, 0);
  assert.deepEqual(readdirSync(join(d, 'out/2027-01-15')), ['spec.pair.json']);
  rmSync(d, { recursive: true });
});

it('runs the agent\'s CLI: the same files as from the document the CLI prints', async () => {
  const d = tmp();
  const conf = join(d, 'agent.conf');
  writeFileSync(conf, '[methods]\noperator_dir = ""\n');
  const cli = await run(bin, ['openrpc', '--config', conf, '--methods', join(repo, 'methods')]);
  assert.equal(cli.code, 0, cli.stderr);
  writeFileSync(join(d, 'doc.json'), cli.stdout);
  const doc = JSON.parse(cli.stdout);
  const version = doc.info['x-api-version'];
  const a = await run('node', [script, '--agent', bin, '--methods', join(repo, 'methods'), join(d, 'a')]);
  assert.equal(a.code, 0, a.stderr);
  const b = await run('node', [script, join(d, 'doc.json'), join(d, 'b')]);
  assert.equal(b.code, 0, b.stderr);
  const names = readdirSync(join(d, 'a', version)).sort();
  assert.deepEqual(names, readdirSync(join(d, 'b', version)).sort());
  assert.equal(names.length, doc.methods.length + doc['x-notifications'].length);
  for (const n of names) assert.equal(read(join(d, 'a', version, n)), read(join(d, 'b', version, n)), n);
  // Every example of the document is in the files, with its result.
  const hist = JSON.parse(read(join(d, 'a', version, 'system_load.historical.json')));
  const m = doc.methods.find((x) => x.name === 'system_load.historical');
  assert.deepEqual(hist.params_order, m.params.map((p) => p.name));
  assert.deepEqual(hist.examples.map((e) => e.result), m.examples.map((e) => e.result.value));
  rmSync(d, { recursive: true });
});

it('refuses misuse (2) and bad input (1) with a message', async () => {
  const d = tmp();
  const cases = [
    [[], 2, /no output directory/],
    [[join(d, 'out')], 2, /give documents or --agent/],
    [['--version', 'yesterday', '--agent', bin, join(d, 'out')], 2, /not a YYYY-MM-DD/],
    [['--version', '2026-12-01', join(d, 'doc.json'), join(d, 'out')], 2, /go with --agent/],
    [['--bogus', join(d, 'out')], 2, /unknown option/],
    [[join(d, 'missing.json'), join(d, 'out')], 1, /missing\.json/],
  ];
  writeFileSync(join(d, 'nover.json'), JSON.stringify({ ...DOC, info: { title: 't' } }));
  cases.push([[join(d, 'nover.json'), join(d, 'out')], 1, /no API version/]);
  writeFileSync(join(d, 'badname.json'), JSON.stringify({ ...DOC, methods: [{ ...DOC.methods[0], name: '../x' }] }));
  cases.push([[join(d, 'badname.json'), join(d, 'out')], 1, /cannot make a file name/]);
  // A directory that holds something else is not replaced.
  mkdirSync(join(d, 'mine/2027-01-15'), { recursive: true });
  writeFileSync(join(d, 'mine/2027-01-15/notes.txt'), 'keep');
  writeFileSync(join(d, 'doc.json'), JSON.stringify(DOC));
  cases.push([[join(d, 'doc.json'), join(d, 'mine')], 1, /refusing to replace/]);
  for (const [args, code, re] of cases) {
    const r = await run('node', [script, ...args]);
    assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re, args.join(' '));
  }
  assert.equal(read(join(d, 'mine/2027-01-15/notes.txt')), 'keep');
  rmSync(d, { recursive: true });
});
