// Runs the generated client of one API version against a real agent: compiled with the
// client (build/<version>/src/client.ts) by client.test.mjs, which starts the agent and passes
//   EXO_URL        the agent's base URL (https://127.0.0.1:<port>)
//   EXO_USER, EXO_PASSWORD  a real local account
//   EXO_DOCUMENT   the OpenRPC document the client was generated from
// and trusts the agent's self-signed certificate through NODE_EXTRA_CA_CERTS, as any Node
// client of an agent with its own certificate would. Exits 0 when every check passes; prints
// one line per check.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  API_VERSION, METHODS, ERRORS, AgentError, createClient,
  type AgentClient, type ErrorName, type Fetcher, type SystemLoadCurrentResult, type MountsListResult,
} from './client.js';

function env(name: string): string {
  const v = process.env[name];
  if (v === undefined || v === '') throw new Error(`${name} is not set`);
  return v;
}

const url = `${env('EXO_URL')}/rpc`;

function check(what: string): void {
  console.log(`ok - ${API_VERSION}: ${what}`);
}

// Resolves the error a call fails with; a call that succeeds fails the check.
async function failure(what: string, p: Promise<unknown>): Promise<AgentError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof AgentError, `${what}: an AgentError, not ${String(e)}`);
    return e;
  }
  assert.fail(`${what}: succeeded`);
}

function isPercent(v: unknown): boolean {
  return Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 100;
}

function checkLoad(load: SystemLoadCurrentResult): void {
  for (const k of ['cpuPctUsed', 'memPctUsed', 'rootfsPctUsed'] as const) assert.ok(isPercent(load[k]), `${k}: ${load[k]}`);
  assert.ok(Number.isInteger(load.epoch) && load.epoch > 1.7e9, `epoch ${load.epoch}`);
  // null without a GPU in 2026-12-01; an array (maybe empty) from 2027-01-15 on: the types say
  // which, this checks the value holds either way.
  const gpu: unknown = load.gpuPctUsed;
  assert.ok(gpu === null || (Array.isArray(gpu) && gpu.every(isPercent)), `gpuPctUsed ${JSON.stringify(gpu)}`);
  // (As a string: compared as the literal type, it would be a type error in every version.)
  const version: string = API_VERSION;
  if (version !== '2026-12-01') assert.ok(Array.isArray(gpu), 'gpuPctUsed is always an array after 2026-12-01');
}

function checkMounts(mounts: MountsListResult): void {
  assert.ok(Array.isArray(mounts) && mounts.length > 0, 'some mounts');
  assert.ok(mounts.some((m) => m.mountpoint === '/'), 'the root file system is listed');
  for (const m of mounts) {
    assert.ok(['volume', 'share', 'other'].includes(m.kind), `${m.mountpoint}: kind ${m.kind}`);
    assert.ok(m.size_bytes === null || Number.isInteger(m.size_bytes), `${m.mountpoint}: size_bytes`);
    assert.ok(Array.isArray(m.options), `${m.mountpoint}: options`);
  }
}

// Node's own fetch, recording the API version each request names. The anonymous client uses
// it; the logged-in one uses client-js's default (isomorphic-fetch): both trust the agent's
// certificate through NODE_EXTRA_CA_CERTS.
const versionsSent: (string | null)[] = [];
const recordingFetch: Fetcher = (input, init) => {
  versionsSent.push(new Headers(init.headers).get('Exosphere-Agent-Version'));
  return fetch(input, init);
};

async function main(): Promise<void> {
  const anonymous: AgentClient = createClient({ url, timeoutMs: 10000, fetcher: recordingFetch });
  const errorName = (e: AgentError): ErrorName | null => e.errorName;

  // agent.info: the agent serves this client's version (it accepted the header that names it).
  const info = await anonymous.agent.info();
  assert.ok(info.api_versions.includes(API_VERSION), `api_versions ${JSON.stringify(info.api_versions)} has ${API_VERSION}`);
  assert.equal(info.current_api_version, info.api_versions[info.api_versions.length - 1]);
  assert.ok(info.methods.loaded >= METHODS.length, `${info.methods.loaded} methods loaded`);
  assert.deepEqual(info.methods.skipped, []);
  assert.deepEqual(versionsSent, [API_VERSION], 'the request named the client\'s API version');
  check(`agent.info: agent ${info.version}, API versions ${info.api_versions.join(', ')}`);

  // rpc.discover: the document of this version, the one the client was generated from.
  const doc = await anonymous.rpc.discover();
  const expected: unknown = JSON.parse(readFileSync(env('EXO_DOCUMENT'), 'utf8'));
  assert.deepEqual(doc, expected, 'rpc.discover answers the document the client was generated from');
  check(`rpc.discover: the document of ${API_VERSION}, ${METHODS.length} methods`);

  // Without a login, user methods fail with a typed NotAuthenticated error.
  const unauth = await failure('system_load.current without a login', anonymous.system_load.current());
  assert.equal(unauth.code, ERRORS.NotAuthenticated);
  assert.equal(errorName(unauth), 'NotAuthenticated');
  check('system_load.current without a login: AgentError NotAuthenticated');

  const username = env('EXO_USER');
  const login = await anonymous.authenticate.login({ username, password: env('EXO_PASSWORD') });
  assert.equal(login.username, username);
  assert.ok(login.token.length > 0 && login.expires > Date.now() / 1000, 'a token that has not expired');
  check(`authenticate.login as ${username}`);

  const user = createClient({ url, token: login.token, timeoutMs: 10000 });
  const me = await user.authenticate.me();
  assert.equal(me.username, username);
  assert.equal(me.via, 'token');
  check('authenticate.me with the Bearer token');

  checkLoad(await user.system_load.current());
  check('system_load.current');

  const mounts = await user.mounts.list();
  checkMounts(mounts);
  const others = await user.mounts.list({ kind: 'other' });
  assert.ok(others.every((m) => m.kind === 'other'), 'mounts.list {kind: other}');
  check(`mounts.list: ${mounts.length} mounts, ${others.length} of kind other`);

  const history = await user.system_load.historical({ limit: 5 });
  assert.ok(Array.isArray(history) && history.length <= 5, `${history.length} samples`);
  history.forEach(checkLoad);
  check(`system_load.historical {limit: 5}: ${history.length} samples`);

  // A value the schema refuses: the agent answers Invalid params, surfaced as a typed error.
  const invalid = await failure('system_load.historical {limit: 0}', user.system_load.historical({ limit: 0 }));
  assert.equal(invalid.code, -32602);
  assert.equal(errorName(invalid), 'InvalidParams');
  assert.equal(invalid.method, 'system_load.historical');
  check('system_load.historical {limit: 0}: AgentError InvalidParams (-32602)');

  // After a logout the token is refused.
  const logout = await user.authenticate.logout();
  assert.equal(logout.revoked, true);
  const revoked = await failure('system_load.current after the logout', user.system_load.current());
  assert.equal(errorName(revoked), 'NotAuthenticated');
  check('authenticate.logout: the token is refused afterwards');

  user.close();
  anonymous.close();
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(`not ok - ${API_VERSION}: ${e instanceof Error ? e.stack || e.message : String(e)}`);
    process.exit(1);
  },
);
