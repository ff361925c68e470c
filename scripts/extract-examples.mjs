#!/usr/bin/env node
// Extracts every example of an OpenRPC document of the agent into one file per method, for
// client projects (Exosphere's Elm decoders and encoders, other clients) to use in their unit
// tests: decode each example's result, encode each example's params and compare.
//
// Usage (Node 20, no dependencies):
//   node scripts/extract-examples.mjs DOCUMENT.json... OUT
//   node scripts/extract-examples.mjs --agent BIN [--config FILE] [--methods DIR]...
//        [--api-versions DIR] [--version V]... OUT
//
// The first form reads documents written before (GET /openrpc.json with the header
// Exosphere-Agent-Version: V, or `exosphere-guest-agent openrpc --version V > doc.json`); the
// second runs `BIN openrpc` once per --version (no --version: the agent's current version)
// with the given method and shim directories. Without --config, the CLI gets a configuration
// of its own that loads no operator methods (/etc/exosphere-guest-agent/methods.d is this
// machine's, not the API's); without --methods, the CLI's own default directory is used.
//
// It writes OUT/<version>/<method>.json for every method and for every notification (under
// x-notifications), replacing OUT/<version>/ as a whole so that a method gone from the
// document leaves no file behind:
//   {
//     "method": "system_load.historical",
//     "kind": "method",                      // or "notification"
//     "api_version": "2026-12-01",           // the document's info.x-api-version
//     "params_order": ["since", "until", "limit"],
//     "examples": [
//       { "name": "...", "params": { "since": 1764071880 }, "result": [ ... ] }
//     ]
//   }
// params_order is the order of positional params (for a notification: the properties of its
// params object); an example's params are by name, in that order. An example has "result", or
// "error" where the document gives an error example. Keys are in this fixed order at the two
// outer levels and sorted inside every value, so that regenerated files differ only where the
// document did. The exit status is 0 on success, 1 on a failure (with a message), 2 on misuse.
import { readFileSync, writeFileSync, mkdirSync, mkdtempSync, rmSync, readdirSync, existsSync, statSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';

const VERSION_RE = /^\d{4}-\d{2}-\d{2}$/;
// Method and notification names become file names: the agent's names are dotted words.
const NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

export class UsageError extends Error {}

// Values with their object keys sorted at every level.
export function sortKeys(v) {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys(v[k])]));
  return v;
}

function byNameInOrder(order, pairs) {
  const given = new Map(pairs);
  const out = {};
  for (const n of order) if (given.has(n)) out[n] = sortKeys(given.get(n));
  for (const [n, v] of given) if (!(n in out)) out[n] = sortKeys(v);
  return out;
}

function methodFile(m, version) {
  const order = (m.params || []).map((p) => p.name);
  const examples = (m.examples || []).map((ex) => {
    const out = { name: ex.name, params: byNameInOrder(order, (ex.params || []).map((p) => [p.name, p.value])) };
    if (ex.error !== undefined) out.error = sortKeys(ex.error);
    else out.result = sortKeys(ex.result ? ex.result.value : null);
    return out;
  });
  return { method: m.name, kind: 'method', api_version: version, params_order: order, examples };
}

function notificationFile(n, version) {
  const order = Object.keys((n.params && n.params.properties) || {});
  const examples = (n.examples || []).map((ex) => ({ name: ex.name, params: byNameInOrder(order, Object.entries(ex.params || {})) }));
  return { method: n.name, kind: 'notification', api_version: version, params_order: order, examples };
}

// The files of one document: { version, files: { '<name>.json': object } }.
export function extract(doc) {
  if (!doc || !Array.isArray(doc.methods)) throw new Error('not an OpenRPC document (no methods array)');
  const version = doc.info && doc.info['x-api-version'];
  if (typeof version !== 'string' || !VERSION_RE.test(version))
    throw new Error(`the document has no API version (info.x-api-version is ${JSON.stringify(version)})`);
  const files = {};
  const add = (name, obj) => {
    if (typeof name !== 'string' || !NAME_RE.test(name)) throw new Error(`cannot make a file name of ${JSON.stringify(name)}`);
    if (files[`${name}.json`]) throw new Error(`${name} appears twice in the document`);
    files[`${name}.json`] = obj;
  };
  for (const m of doc.methods) add(m.name, methodFile(m, version));
  for (const n of doc['x-notifications'] || []) add(n.name, notificationFile(n, version));
  return { version, files };
}

// Writes OUT/<version>/, replacing what an earlier run left there (only .json files: a
// directory holding anything else is not one of ours and is refused).
export function writeVersion(out, { version, files }) {
  const dir = join(out, version);
  if (existsSync(dir)) {
    const foreign = readdirSync(dir).filter((f) => !f.endsWith('.json') || !statSync(join(dir, f)).isFile());
    if (foreign.length) throw new Error(`${dir} holds ${foreign.join(', ')}: not written by this script, refusing to replace it`);
    rmSync(dir, { recursive: true });
  }
  mkdirSync(dir, { recursive: true });
  for (const [name, obj] of Object.entries(files)) writeFileSync(join(dir, name), `${JSON.stringify(obj, null, 2)}\n`);
  return dir;
}

// The document the agent's CLI prints for a version (null: its current one).
export function documentFromAgent({ agent, config, methods, apiVersions }, version) {
  let tmp = null;
  try {
    if (!config) {
      tmp = mkdtempSync(join(tmpdir(), 'exo-extract-'));
      config = join(tmp, 'agent.conf');
      writeFileSync(config, '[methods]\noperator_dir = ""\n');
    }
    const args = ['openrpc', '--config', config];
    for (const d of methods) args.push('--methods', d);
    if (apiVersions) args.push('--api-versions', apiVersions);
    if (version) args.push('--version', version);
    let text;
    try {
      text = execFileSync(agent, args, { encoding: 'utf8', maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      throw new Error(`${agent} ${args.join(' ')} failed: ${(e.stderr || e.message).toString().trim()}`);
    }
    return JSON.parse(text);
  } finally {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  }
}

export function parseArgs(argv) {
  const o = { agent: null, config: null, methods: [], apiVersions: null, versions: [], docs: [], out: null };
  const rest = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new UsageError(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--agent') o.agent = value();
    else if (a === '--config') o.config = value();
    else if (a === '--methods') o.methods.push(value());
    else if (a === '--api-versions') o.apiVersions = value();
    else if (a === '--version') {
      const v = value();
      if (!VERSION_RE.test(v)) throw new UsageError(`--version ${v}: not a YYYY-MM-DD version`);
      o.versions.push(v);
    } else if (a.startsWith('--')) throw new UsageError(`unknown option ${a}`);
    else rest.push(a);
  }
  if (rest.length === 0) throw new UsageError('no output directory');
  o.out = rest.pop();
  o.docs = rest;
  if (o.agent && o.docs.length) throw new UsageError('give documents or --agent, not both');
  if (!o.agent && !o.docs.length) throw new UsageError('give documents or --agent BIN');
  if (!o.agent && (o.config || o.methods.length || o.apiVersions || o.versions.length))
    throw new UsageError('--config, --methods, --api-versions and --version go with --agent');
  return o;
}

export function main(argv) {
  const o = parseArgs(argv);
  const docs = o.agent
    ? (o.versions.length ? o.versions : [null]).map((v) => documentFromAgent(o, v))
    : o.docs.map((f) => {
      try {
        return JSON.parse(readFileSync(f, 'utf8'));
      } catch (e) {
        throw new Error(`${f}: ${e.message}`);
      }
    });
  const written = [];
  for (const doc of docs) {
    const ex = extract(doc);
    if (written.some((w) => w.version === ex.version)) throw new Error(`two documents of version ${ex.version}`);
    written.push({ version: ex.version, dir: writeVersion(o.out, ex), count: Object.keys(ex.files).length });
  }
  return written;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  try {
    for (const w of main(process.argv.slice(2))) console.log(`${w.dir}: ${w.count} files`);
  } catch (e) {
    console.error(`extract-examples: ${e.message}`);
    if (e instanceof UsageError) console.error('usage: extract-examples.mjs DOCUMENT.json... OUT\n' +
      '       extract-examples.mjs --agent BIN [--config FILE] [--methods DIR]... [--api-versions DIR] [--version V]... OUT');
    process.exit(e instanceof UsageError ? 2 : 1);
  }
}
