// The OpenRPC reference tools against the running agent, for every API version it serves:
// @open-rpc/schema-utils-js validates and parses the document (GET /openrpc.json with the
// version header, and the CLI's `openrpc --version V`, which must be equal), and
// @open-rpc/test-coverage calls every method with each of its examples.
//
//   cd tests/contract && EXO_AGENT_BIN=$PWD/../../build/exosphere-guest-agent \
//     node --test --test-reporter=tap reference.test.mjs
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Ajv from 'ajv';
import { validateOpenRPCDocument, parseOpenRPCDocument } from '@open-rpc/schema-utils-js';
import testCoverageModule from '@open-rpc/test-coverage';
import { bin, repo, run } from '../e2e/lib/agent.mjs';
import {
  startContractAgent, agentVersions, documentOf, paramsByName, send, diskSafety,
} from './lib/contract.mjs';

const testCoverage = testCoverageModule.default || testCoverageModule;

const agent = await startContractAgent();
after(() => agent.close());
const { versions, current } = await agentVersions(agent);

// The CLI with the agent's own method (and shim) directories and no operator methods.
const cliConf = join(agent.dir, 'cli.conf');
writeFileSync(cliConf, '[methods]\noperator_dir = ""\n');
const apiVersionsDir = join(repo, 'api-versions');
const help = await run(bin, ['openrpc', '--help']);
const cliHasVersion = /--version/.test(help.stdout + help.stderr);
async function cliDocument(version) {
  const args = ['openrpc', '--config', cliConf, '--methods', join(repo, 'methods')];
  if (cliHasVersion) {
    if (existsSync(apiVersionsDir)) args.push('--api-versions', apiVersionsDir);
    args.push('--version', version);
  }
  const r = await run(bin, args);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

// test-coverage's rule for this agent. Its stock ExamplesRule wants the example's result
// exactly, which answers that vary (load, uptime, tokens, this machine's mounts) cannot give;
// this one passes a call when the answer is the example's result, or valid against the
// method's result schema, or an error whose code the method declares (the disk-acting
// examples answer NotFound or Unsupported here, see lib/contract.mjs). Params are by name, from
// the example's names (the stock rule pairs example values with the method's params by
// position, which breaks when an example names them in another order).
class ContractRule {
  constructor(doc) {
    this.doc = doc;
    this.ajv = new Ajv({ allErrors: true });
  }

  getTitle() {
    return 'every example called: its result, a result valid against the schema, or a declared error';
  }

  getCalls(doc, method) {
    return (method.examples || []).map((ex) => ({
      title: `${method.name} / ${ex.name}`,
      methodName: method.name,
      params: paramsByName(method, ex),
      url: `${agent.base}/rpc`,
      resultSchema: method.result.schema,
      expectedResult: ex.result ? ex.result.value : undefined,
    }));
  }

  validateCall(call) {
    const method = this.doc.methods.find((m) => m.name === call.methodName);
    if (call.error) {
      const declared = (method.errors || []).map((e) => e.code);
      call.valid = declared.includes(call.error.code);
      if (!call.valid) call.reason = `error ${JSON.stringify(call.error)}, not one of the declared codes ${declared.join(', ')}`;
    } else if (call.result === undefined) {
      call.valid = false;
      call.reason = 'neither a result nor an error';
    } else if (JSON.stringify(call.result) === JSON.stringify(call.expectedResult) || this.ajv.validate(call.resultSchema, call.result)) {
      call.valid = true;
    } else {
      call.valid = false;
      call.reason = `result ${JSON.stringify(call.result)} is not the example's and fails the result schema: ${this.ajv.errorsText()}`;
    }
    return call;
  }
}

// A reporter that keeps quiet: the test's assertions say what failed (test-coverage's own
// reporters print to stdout, in the middle of the TAP stream).
const quiet = { onBegin() {}, onTestBegin() {}, onTestEnd() {}, onEnd() {} };

for (const version of versions) {
  describe(`API version ${version}`, () => {
    let doc;

    it('GET /openrpc.json validates (validateOpenRPCDocument) and parses (parseOpenRPCDocument)', async () => {
      doc = await documentOf(agent, version);
      assert.equal(doc.info['x-api-version'], version);
      const v = validateOpenRPCDocument(doc);
      assert.equal(v, true, v && v.message);
      const parsed = await parseOpenRPCDocument(structuredClone(doc));
      assert.deepEqual(parsed.methods.map((m) => m.name), doc.methods.map((m) => m.name));
    });

    it('the CLI\'s openrpc --version prints the same document, which validates and parses', async (t) => {
      if (!cliHasVersion && version !== current) {
        t.skip('this build\'s CLI has no --version: only the current version is compared');
        return;
      }
      const cli = await cliDocument(version);
      const v = validateOpenRPCDocument(cli);
      assert.equal(v, true, v && v.message);
      await parseOpenRPCDocument(structuredClone(cli));
      assert.deepEqual(cli, doc);
    });

    it('@open-rpc/test-coverage calls every method with every example, and every call passes', async () => {
      const byName = new Map(doc.methods.map((m) => [m.name, m]));
      // test-coverage's transport: the version header and a token (lib/contract.mjs send()),
      // and never a disk-acting call that could act on this machine.
      const transport = async (url, methodName, params) => {
        const method = byName.get(methodName);
        const why = diskSafety(methodName, params);
        if (why) throw new Error(`${methodName} not sent: ${why}`);
        return send(agent, version, method, { jsonrpc: '2.0', id: 1, method: methodName, params });
      };
      const calls = await testCoverage({
        openrpcDocument: structuredClone(doc),
        transport,
        reporters: [quiet],
        rules: [new ContractRule(doc)],
      });
      const expected = doc.methods.reduce((n, m) => n + m.examples.length, 0);
      assert.equal(calls.length, expected, 'one call per example');
      assert.deepEqual([...new Set(calls.map((c) => c.methodName))].sort(), doc.methods.map((m) => m.name).sort(),
        'every method called');
      const failed = calls.filter((c) => !c.valid)
        .map((c) => `${c.title}: ${c.reason || (c.requestError && c.requestError.message) || 'invalid'}`);
      assert.deepEqual(failed, []);
    });
  });
}
