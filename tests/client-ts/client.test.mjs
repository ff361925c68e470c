// The OpenRPC contract used by a real client toolchain: for each API version, a TypeScript
// client generated from the document the agent's `openrpc` command prints (generate.mjs),
// compiled with tsc --strict together with src/smoke.ts and src/contract.ts (type errors fail),
// and the compiled smoke test run against a real agent over HTTPS.
//
// Run: cd tests/client-ts && npm ci && EXO_AGENT_BIN=... node --test --test-reporter=tap
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, rmSync, writeFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { startAgent, rpc, shippedMethods, ACCOUNTS, bin } from '../e2e/lib/agent.mjs';
import { here, generate, generateSource, repoVersions } from './generate.mjs';

const asRoot = process.getuid() === 0;
const tsc = join(here, 'node_modules/typescript/bin/tsc');
// The repository's API versions; null while it has no api-versions/ (one version: the
// document's own).
const versions = repoVersions();

// The compiler options of every version's build: strict, emitting ES modules for Node. The
// library's own declaration files are not checked (skipLibCheck): @open-rpc/client-js's name
// browser types (Window) and untyped modules (isomorphic-fetch, ws); the generated client and
// the test code are checked in full.
const TSCONFIG = {
  compilerOptions: {
    strict: true,
    noEmit: false,
    noEmitOnError: true,
    noUnusedLocals: true,
    noFallthroughCasesInSwitch: true,
    target: 'ES2022',
    lib: ['ES2022'],
    module: 'NodeNext',
    moduleResolution: 'NodeNext',
    types: ['node'],
    skipLibCheck: true,
    rootDir: 'src',
    outDir: 'out',
  },
  include: ['src'],
};

// Copies the test code into a build directory, writes its tsconfig.json and compiles it.
function compile(dir) {
  for (const f of readdirSync(join(here, 'src'))) if (f.endsWith('.ts')) cpSync(join(here, 'src', f), join(dir, 'src', f));
  writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify(TSCONFIG, null, 2) + '\n');
  return run(process.execPath, [tsc, '-p', join(dir, 'tsconfig.json'), '--strict', '--noEmit', 'false']);
}

// Runs a program to its end; { code, out } with stdout and stderr together.
function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 120000, ...opts });
  if (r.error) throw r.error;
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

describe('TypeScript client generated from the OpenRPC document', () => {
  let agent;
  before(async () => {
    agent = await startAgent({ methodDirs: [shippedMethods] });
  });
  after(async () => {
    if (agent) await agent.close();
  });

  it('the agent serves the API versions the repository defines', async () => {
    const info = (await rpc(agent, { jsonrpc: '2.0', id: 1, method: 'agent.info' })).json().result;
    if (versions === null) assert.equal(info.api_versions.length, 1, `api_versions ${info.api_versions}`);
    else assert.deepEqual(info.api_versions, versions);
  });

  for (const version of versions || [null]) {
    describe(`API version ${version || '(the only one)'}`, () => {
      let built;
      it('generates the client from `exosphere-guest-agent openrpc`', async () => {
        built = await generate({ bin, version });
        assert.ok(built.doc.methods.length > 0);
      });

      it('compiles with tsc --strict (client, smoke test, contract checks)', (t) => {
        assert.ok(built, 'generated');
        const r = compile(built.dir);
        assert.equal(r.code, 0, `tsc failed:\n${r.out}`);
        t.diagnostic(`compiled ${built.dir}/src with TypeScript ${run(process.execPath, [tsc, '--version']).out.trim()}`);
      });

      it('a client of a changed contract does not compile with the same test code', async () => {
        assert.ok(built, 'generated');
        // gpuPctUsed turned into a string and system_load.historical's limit renamed: the
        // contract checks and the smoke test must both stop compiling.
        const doc = structuredClone(built.doc);
        const method = (name) => doc.methods.find((m) => m.name === name);
        method('system_load.current').result.schema.properties.gpuPctUsed = { type: 'string' };
        method('system_load.historical').params.find((p) => p.name === 'limit').name = 'max_samples';
        const dir = join(here, 'build', `${built.version}-changed`);
        rmSync(dir, { recursive: true, force: true });
        mkdirSync(join(dir, 'src'), { recursive: true });
        writeFileSync(join(dir, 'src/client.ts'), await generateSource(doc));
        const r = compile(dir);
        assert.notEqual(r.code, 0, 'tsc accepted a changed contract');
        assert.match(r.out, /contract\.ts\(\d+,\d+\): error/, r.out);
        assert.match(r.out, /smoke\.ts\(\d+,\d+\): error/, r.out);
      });

      it('runs against the agent over HTTPS', { skip: !asRoot && 'the login needs real accounts, made as root' }, (t) => {
        assert.ok(built, 'generated');
        const certDir = join(built.dir, 'ca');
        mkdirSync(certDir, { recursive: true });
        writeFileSync(join(certDir, 'agent.pem'), agent.certPem);
        const r = run(process.execPath, [join(built.dir, 'out/smoke.js')], {
          env: {
            ...process.env,
            NODE_EXTRA_CA_CERTS: join(certDir, 'agent.pem'),
            EXO_URL: agent.base,
            EXO_USER: ACCOUNTS.user.name,
            EXO_PASSWORD: ACCOUNTS.user.password,
            EXO_DOCUMENT: join(built.dir, 'openrpc.json'),
          },
        });
        for (const line of r.out.trim().split('\n')) t.diagnostic(line);
        assert.equal(r.code, 0, r.out);
      });
    });
  }
});
