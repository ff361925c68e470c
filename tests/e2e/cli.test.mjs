// The command line: version, --help of every command, `call` over the Unix socket with its
// exit statuses, `openrpc`, `check`, `serve --print-config` and configuration mistakes.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAgent, request, run, bin, shippedMethods, testMethods } from './lib/agent.mjs';

const agentCli = (...args) => run(bin, args);

describe('CLI without an agent', () => {
  let dir;
  before(() => { dir = mkdtempSync(join(tmpdir(), 'exo-e2e-cli-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('version', async () => {
    const r = await agentCli('version');
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^exosphere-guest-agent \d+\.\d+\.\d+ \(Lua API level \d+\)\n$/);
  });

  it('--help lists the commands; no command is a usage error', async () => {
    const r = await agentCli('--help');
    assert.equal(r.code, 0);
    for (const c of ['serve', 'call', 'openrpc', 'version']) assert.match(r.stdout, new RegExp(`^  ${c} `, 'm'));
    const none = await agentCli();
    assert.equal(none.code, 2);
    assert.match(none.stderr, /Usage:/);
    const bad = await agentCli('frobnicate');
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /unknown command 'frobnicate'/);
  });

  const helps = {
    serve: ['--config', '--dev', '--methods', '--print-config'],
    call: ['METHOD', 'PARAMS_JSON', '--socket', '--config', 'Exit status'],
    openrpc: ['--config', '--methods'],
    version: ['version'],
  };
  for (const [cmd, words] of Object.entries(helps)) {
    it(`${cmd} --help`, async () => {
      for (const flag of ['--help', '-h']) {
        const r = await agentCli(cmd, flag);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, new RegExp(`^Usage: exosphere-guest-agent ${cmd}`));
        for (const w of words) assert.ok(r.stdout.includes(w), `${cmd} --help mentions ${w}`);
        assert.equal(r.stderr, '');
      }
    });
  }

  it('every command listed by --help has a --help of its own', async () => {
    const r = await agentCli('--help');
    const cmds = [...r.stdout.matchAll(/^ {2}([a-z]+) {2,}/gm)].map((m) => m[1]);
    assert.ok(cmds.length >= 4);
    for (const c of cmds) {
      const h = await agentCli(c, '--help');
      assert.equal(h.code, 0, `${c} --help: ${h.stderr}`);
      assert.match(h.stdout, /^Usage: /);
    }
  });

  it('an unknown option is a usage error that shows the usage', async () => {
    const r = await agentCli('serve', '--frob');
    assert.equal(r.code, 2);
    assert.match(r.stderr, /unknown or incomplete option '--frob'/);
    assert.match(r.stderr, /Usage: exosphere-guest-agent serve/);
  });

  it('call to a socket where no agent listens exits 2', async () => {
    const r = await agentCli('call', 'agent.info', '--socket', join(dir, 'missing.sock'));
    assert.equal(r.code, 2);
    assert.match(r.stderr, /cannot reach the agent at .*missing\.sock/);
    assert.equal(r.stdout, '');
  });

  it('openrpc --methods DIR prints the document', async () => {
    const r = await agentCli('openrpc', '--methods', shippedMethods);
    assert.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout);
    assert.equal(doc.openrpc, '1.3.2');
    assert.deepEqual(doc.methods.map((m) => m.name).sort(), ['agent.info', 'authenticate.login', 'authenticate.logout', 'authenticate.me', 'authenticate.token',
      'jobs.cancel', 'jobs.get', 'jobs.list', 'mounts.get', 'mounts.list', 'mounts.mount_cephfs', 'mounts.mount_device', 'mounts.unmount', 'notifications.list',
      'notifications.subscribe', 'notifications.unsubscribe', 'packages.check_updates', 'packages.update', 'rpc.discover', 'rpc.hello',
      'self.check_updates', 'self.upgrade', 'system_load.current', 'system_load.historical']);
    assert.deepEqual(doc['x-notifications'].map((n) => n.name),
      ['notify.jobs.done', 'notify.jobs.progress', 'notify.mounts.changed', 'notify.mounts.mounted', 'notify.mounts.unmounted',
        'notify.system_load']);
  });

  it('serve --print-config prints a configuration that reads back the same', async () => {
    const conf = join(dir, 'print.conf');
    writeFileSync(conf, '[server]\nlisten = 127.0.0.1:9999\nmax_body_size = 2M\ncall_timeout = 5s\n\n[log]\nlevel = debug\n');
    const r = await agentCli('serve', '--print-config', '--config', conf);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^\[server\]$/m);
    assert.match(r.stdout, /^listen = .*127\.0\.0\.1:9999/m);
    assert.match(r.stdout, /^max_body_size = 2M$/m);
    assert.match(r.stdout, /^call_timeout = 5s$/m);
    assert.match(r.stdout, /^level = debug$/m);
    const again = join(dir, 'again.conf');
    writeFileSync(again, r.stdout);
    const r2 = await agentCli('serve', '--print-config', '--config', again);
    assert.equal(r2.code, 0, r2.stderr);
    assert.equal(r2.stdout, r.stdout);
  });

  it('serve --print-config --dev shows the development overrides', async () => {
    const conf = join(dir, 'dev.conf');
    writeFileSync(conf, '[server]\nunix_socket = ""\n');
    const r = await agentCli('serve', '--print-config', '--dev', '--config', conf);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^listen = "?127\.0\.0\.1:8080"?$/m);
    assert.match(r.stdout, /^tls = (false|no|off|0)$/m);
  });

  const mistakes = [
    ['an unknown key', '[server]\nmax_body_size = 1M\nfrobnicate = 1\n', /bad\.conf:3: unknown key 'frobnicate' in section \[server\]/],
    ['a key in the wrong section', '[server]\nlevel = debug\n', /bad\.conf:2: unknown key 'level' in section \[server\]; it belongs in \[log\]/],
    ['a bad size', '# comment\n[server]\n\nmax_body_size = lots\n', /bad\.conf:4: \[server\] max_body_size: expected a size like 512K or 1M, got 'lots'/],
    ['a duration without unit', '[server]\ncall_timeout = 30\n', /bad\.conf:2: \[server\] call_timeout: .*durations need a unit/],
    ['a value out of range', '[server]\nmax_body_size = 128M\n', /bad\.conf:2: \[server\] max_body_size: 128M is out of range 1K\.\.64M/],
    ['an unknown section', '[serve]\ntls = true\n', /bad\.conf:1: unknown section \[serve\]/],
    ['a repeated key', '[server]\ntls = true\ntls = false\n', /bad\.conf:3: \[server\] tls: given twice, on lines 2 and 3/],
  ];
  for (const [what, text, re] of mistakes) {
    it(`a configuration with ${what} stops serve, naming file, line and key`, async () => {
      const conf = join(dir, 'bad.conf');
      writeFileSync(conf, text);
      for (const args of [['serve', '--config', conf], ['serve', '--print-config', '--config', conf]]) {
        const r = await agentCli(...args);
        assert.notEqual(r.code, 0);
        assert.match(r.stderr, re);
        assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
        assert.ok(!r.stderr.includes('ready'));
      }
    });
  }

  it('a --config file that does not exist is an error naming it', async () => {
    const r = await agentCli('serve', '--config', join(dir, 'nope.conf'));
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /nope\.conf: cannot read: No such file or directory/);
  });

  it('plain HTTP on a public address is refused', async () => {
    const conf = join(dir, 'plain.conf');
    writeFileSync(conf, '[server]\nlisten = 0.0.0.0:8443\ntls = false\nunix_socket = ""\n');
    const r = await agentCli('serve', '--config', conf);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /\[server\] tls: false serves plain HTTP, but listen has '0\.0\.0\.0:8443'/);
  });
});

describe('CLI against a running agent', () => {
  let agent;
  before(async () => { agent = await startAgent({ methodDirs: [shippedMethods, testMethods] }); });
  after(async () => {
    await agent.close();
  });

  it('call agent.info --socket S prints the result as JSON', async () => {
    const r = await agentCli('call', 'agent.info', '--socket', agent.sock);
    assert.equal(r.code, 0, r.stderr);
    const info = JSON.parse(r.stdout);
    assert.equal(info.current_api_version, '2027-01-15');
    assert.equal(r.stderr, '');
  });

  it('call with PARAMS_JSON, by position and by name', async () => {
    let r = await agentCli('call', 'spec.subtract', '[42, 23]', '--socket', agent.sock);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, '19\n');
    r = await agentCli('call', '--socket', agent.sock, 'spec.subtract', '{"minuend": 1, "subtrahend": 3}');
    assert.equal(r.stdout, '-2\n');
  });

  it('call reads the socket from --config', async () => {
    const r = await agentCli('call', 'spec.get_data', '--config', agent.config);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), ['hello', 5]);
  });

  it('call no.such exits 1 with the error on stderr', async () => {
    const r = await agentCli('call', 'no.such', '--socket', agent.sock);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    const e = JSON.parse(r.stderr);
    assert.equal(e.code, -32601);
    assert.equal(e.message, 'Method not found');
  });

  it('call with invalid params exits 1; with PARAMS_JSON that is not JSON, 2', async () => {
    const r = await agentCli('call', 'spec.subtract', '["x", 1]', '--socket', agent.sock);
    assert.equal(r.code, 1);
    assert.equal(JSON.parse(r.stderr).data.path, 'params[1]');
    const bad = await agentCli('call', 'spec.subtract', '[1,', '--socket', agent.sock);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /PARAMS_JSON is not JSON/);
    const scalar = await agentCli('call', 'spec.subtract', '5', '--socket', agent.sock);
    assert.equal(scalar.code, 2);
    const none = await agentCli('call', '--socket', agent.sock);
    assert.equal(none.code, 2);
  });

  it('openrpc prints the document the agent serves for the same methods', async () => {
    const r = await agentCli('openrpc', '--methods', shippedMethods, '--methods', testMethods);
    assert.equal(r.code, 0, r.stderr);
    const served = await request(agent, { path: '/openrpc.json' });
    assert.deepEqual(JSON.parse(r.stdout), served.json());
  });
});

describe('CLI: check', () => {
  let dir;
  before(() => { dir = mkdtempSync(join(tmpdir(), 'exo-e2e-check-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('check --help', async () => {
    const r = await agentCli('check', '--help');
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^Usage: exosphere-guest-agent check \[--config FILE\] FILE/);
    assert.match(r.stdout, /Exit status/);
  });

  it('check with no file is a usage error', async () => {
    assert.equal((await agentCli('check')).code, 2);
  });

  it('check passes good method files, one line each', async () => {
    const files = [join(testMethods, 'spec.lua'), join(testMethods, 'e2e.lua'), join(shippedMethods, 'agent.lua')];
    const r = await agentCli('check', ...files);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(r.stdout.trim().split('\n').length, files.length, r.stdout);
  });

  it('check names the file and line of a mistake and exits 1', async () => {
    const bad = join(dir, 'bad.lua');
    writeFileSync(bad, 'return method({\n  name = "x.y", summary = "s", since = "2026-12-01",\n  stability = "beta", permission = "public",\n' +
      '  result = T.string(), examples = { { name = "n", params = {}, result = "a" } },\n  handler = function() return "a" end,\n})\n');
    const r = await agentCli('check', bad);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stdout + r.stderr, new RegExp(`${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+: .*stability`));
  });
});
