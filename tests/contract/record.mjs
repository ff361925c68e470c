#!/usr/bin/env node
// Records the exchanges of one API version: starts the agent (the shipped methods only, see
// lib/contract.mjs), calls every example of every method of that version's document with
// `Exosphere-Agent-Version: V`, and writes recordings/<V>/<method>.<n>.json:
//   { example, request, response, volatile }
// request is the JSON-RPC request sent, response the agent's answer, volatile the paths that
// replay.test.mjs compares by JSON type only (lib/contract.mjs VOLATILE says why each one).
//
//   EXO_AGENT_BIN=build/exosphere-guest-agent node tests/contract/record.mjs --version 2026-12-01
//
// Only the current version (agent.info current_api_version) is re-recorded in place: an older
// version's recordings are the promise made to the clients written for it, and adding a version
// must never change them. For an older version the script refuses when any recording exists.
// --force overrides that; it should not be used: a difference in an older version means the
// agent broke that version's clients, and the fix belongs in api-versions/<version>.lua (or the
// method), not in the recording.
import { mkdirSync, writeFileSync, readdirSync, rmSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import {
  startContractAgent, agentVersions, documentOf, examplesOf, exampleRequest, send, diskSafety,
  volatileOf, stableJson, recordingsDir, readRecordings, compare,
} from './lib/contract.mjs';

function usage(msg) {
  if (msg) console.error(`record.mjs: ${msg}`);
  console.error('usage: node tests/contract/record.mjs --version YYYY-MM-DD [--force]');
  process.exit(2);
}

const args = process.argv.slice(2);
let version = null;
let force = false;
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--version') version = args[++i];
  else if (args[i] === '--force') force = true;
  else usage(`unknown argument ${args[i]}`);
}
if (!version || !/^\d{4}-\d{2}-\d{2}$/.test(version)) usage('--version YYYY-MM-DD is required');

const agent = await startContractAgent();
let failed = false;
try {
  const { versions, current } = await agentVersions(agent);
  if (!versions.includes(version)) throw new Error(`the agent does not serve ${version} (it serves ${versions.join(', ')})`);
  const dir = join(recordingsDir, version);
  const existing = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.json')) : [];
  if (version !== current && existing.length > 0) {
    if (!force) {
      throw new Error(`${version} is not the current version (${current}) and has ${existing.length} recordings: ` +
        'they are what its clients were promised and are never re-recorded. If replay.test.mjs finds a ' +
        `difference, fix the agent (api-versions/${version}.lua or the method), not the recording.`);
    }
    console.error(`record.mjs: --force: overwriting the recordings of ${version}, an older version. This hides a ` +
      'change that breaks the clients written for it; review every changed file before committing.');
  }
  const doc = await documentOf(agent, version);
  // Refuse before anything is sent: one unsafe example stops the whole recording.
  for (const { method, example } of examplesOf(doc)) {
    const why = diskSafety(method.name, exampleRequest(method, example).params);
    if (why) throw new Error(`${method.name} / ${example.name}: refusing to call it here: ${why}`);
  }
  // The current version is recorded anew: stale files of renamed examples go. A recording
  // whose answer still matches (volatile parts by type) is kept as it was, so that the diff of
  // a re-recording shows only what changed.
  const before = readRecordings(version);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  let n = 0;
  for (const { method, example, file } of examplesOf(doc)) {
    const req = exampleRequest(method, example);
    const response = await send(agent, version, method, req);
    let rec = { example: example.name, request: req, response, volatile: volatileOf(method.name) };
    const old = before[file];
    if (old && stableJson(old.request) === stableJson(req) && stableJson(old.volatile) === stableJson(rec.volatile) &&
        old.example === rec.example && compare(old.response, response, rec.volatile).length === 0) {
      rec = old;
    }
    writeFileSync(join(dir, file), stableJson(rec));
    console.log(`${file}: ${response.error ? `error ${response.error.code} ${response.error.message}` : 'result'}${rec === old ? ' (unchanged)' : ''}`);
    n++;
  }
  console.log(`record.mjs: ${n} recordings of ${version} in ${dir}`);
} catch (e) {
  console.error(`record.mjs: ${e.message}`);
  failed = true;
} finally {
  await agent.close();
}
process.exit(failed ? 1 : 0);
