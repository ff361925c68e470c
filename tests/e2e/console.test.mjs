// The console status line (../shared/EXOSPHERE.md "The console log"): written once by the
// monitor when the agent starts serving, so that Exosphere can read the port and the
// certificate to pin from the instance's console log. Here [console] device is a file; the
// packaged agent writes to the real /dev/console of a booted container in tests/system/.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, readFileSync, rmSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAgent, waitFor, waitForLog } from './lib/agent.mjs';

function consoleFile() {
  const dir = mkdtempSync(join(tmpdir(), 'exo-console-'));
  chmodSync(dir, 0o755);
  const file = join(dir, 'console');
  writeFileSync(file, '');
  return { dir, file };
}

describe('console status line', () => {
  it('one line at start: version, port and the TLS fingerprint, no status key, no secret', async () => {
    const { dir, file } = consoleFile();
    const agent = await startAgent({ sections: { console: { device: file } } });
    try {
      await waitFor(() => readFileSync(file, 'utf8').includes('\n'), 5000, 'the status line');
      const text = readFileSync(file, 'utf8');
      const lines = text.split('\n').filter(Boolean);
      assert.equal(lines.length, 1, text);
      assert.ok(Buffer.byteLength(lines[0]) < 900);
      const v = JSON.parse(lines[0]);
      assert.deepEqual(Object.keys(v), ['exoGuestAgent']);
      assert.deepEqual(v.exoGuestAgent, {
        v: 1, version: v.exoGuestAgent.version, port: agent.port, tlsSha256: agent.fingerprint, state: 'ready',
      });
      assert.match(v.exoGuestAgent.version, /^\d+\.\d+\.\d+/);
      await waitForLog(agent, new RegExp(`wrote the status line to ${file}`));
      // A worker restart is not a new start: no second line.
      const w = agent.workerPid();
      process.kill(w, 'SIGKILL');
      await waitFor(() => { const p = agent.workerPid(); return p && p !== w; }, 5000, 'a new worker');
      await waitForLog(agent, /STATUS=|worker \d+ is ready|started worker/);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(readFileSync(file, 'utf8'), text);
    } finally {
      await agent.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('status_line = false writes nothing; a device that cannot be opened is a warning, not a failure', async () => {
    const { dir, file } = consoleFile();
    let agent = await startAgent({ sections: { console: { device: file, status_line: 'false' } } });
    try {
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(readFileSync(file, 'utf8'), '');
    } finally {
      await agent.close();
    }
    agent = await startAgent({ sections: { console: { device: join(dir, 'missing', 'console') } } });
    try {
      await waitForLog(agent, /cannot write the status line to .*missing\/console: No such file or directory/);
      assert.equal(agent.exited, null);
    } finally {
      await agent.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
