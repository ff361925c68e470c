// TLS as docs/protocol.md describes it, checked with `openssl s_client` and `openssl x509`:
// versions and suites, the generated certificate (ECDSA P-256, self-signed, SAN, key mode,
// fingerprint in the log, reused across restarts), a configured certificate, IPv6.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, statSync, rmSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import tls from 'node:tls';
import { join } from 'node:path';
import { startAgent, request, run, freePort, sleep, slow } from './lib/agent.mjs';

// One s_client handshake (and an HTTP request over it); resolves { code, out }.
async function sClient(host, port, args, { cafile, send = '' } = {}) {
  const r = await run('openssl', ['s_client', '-connect', `${host}:${port}`, '-servername', 'localhost',
    ...(cafile ? ['-CAfile', cafile, '-verify_return_error'] : []), ...args], { input: send });
  return { code: r.code, out: r.stdout + r.stderr };
}

async function fingerprintOf(pemFile) {
  const r = await run('openssl', ['x509', '-in', pemFile, '-noout', '-fingerprint', '-sha256']);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim().split('=')[1];
}

function ipv6Loopback() {
  return new Promise((res) => {
    const s = net.createServer();
    s.on('error', () => res(false));
    s.listen(0, '::1', () => s.close(() => res(true)));
  });
}

describe('TLS with the generated certificate', () => {
  let agent;
  let certFile;
  before(async () => {
    agent = await startAgent({ server: { header_timeout: '1s' } });
    certFile = join(agent.dir, 'state', 'tls-cert.pem');
  });
  after(async () => {
    await agent.close();
  });

  it('TLS 1.2 handshake with a forward-secret AEAD suite, verified against the certificate', async () => {
    const r = await sClient('127.0.0.1', agent.port, ['-tls1_2'], { cafile: certFile });
    assert.equal(r.code, 0, r.out);
    // The "New, ..." line is printed for every handshake (the session block of TLS 1.3 only
    // once a session ticket has arrived).
    assert.match(r.out, /New, TLSv1\.2, Cipher is ECDHE-ECDSA-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)\n/);
    assert.match(r.out, /Verify return code: 0 \(ok\)/);
  });

  it('TLS 1.3 handshake, and HTTP over it', async () => {
    const r = await sClient('127.0.0.1', agent.port, ['-tls1_3', '-quiet'], {
      cafile: certFile, send: 'GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n',
    });
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /HTTP\/1\.1 200 OK/);
    assert.match(r.out, /\{"status":"ok"\}/);
    const v = await sClient('127.0.0.1', agent.port, ['-tls1_3'], { cafile: certFile });
    assert.match(v.out, /New, TLSv1\.3, Cipher is TLS_(AES_(128|256)_GCM_SHA(256|384)|CHACHA20_POLY1305_SHA256)\n/);
  });

  it('TLS 1.1 and 1.0 are refused', async () => {
    for (const version of ['-tls1_1', '-tls1']) {
      // SECLEVEL=0 lets the client offer the old version, so the server is what refuses it.
      const r = await sClient('127.0.0.1', agent.port, [version, '-cipher', 'DEFAULT@SECLEVEL=0'], { cafile: certFile });
      assert.notEqual(r.code, 0, r.out);
      assert.match(r.out, /alert protocol version|unsupported protocol|no protocols available/i);
    }
  });

  it('TLS 1.2 suites without forward secrecy or without AEAD are refused', async () => {
    for (const cipher of ['AES128-GCM-SHA256', 'ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0', 'ECDHE-ECDSA-AES256-SHA384']) {
      const r = await sClient('127.0.0.1', agent.port, ['-tls1_2', '-cipher', cipher], { cafile: certFile });
      assert.notEqual(r.code, 0, `${cipher}: ${r.out}`);
      assert.match(r.out, /handshake failure/);
    }
  });

  it('the certificate is ECDSA P-256, self-signed, for localhost, 127.0.0.1 and ::1', async () => {
    const r = await run('openssl', ['x509', '-in', certFile, '-noout', '-text']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /Public Key Algorithm: id-ecPublicKey/);
    assert.match(r.stdout, /Public-Key: \(256 bit\)/);
    assert.match(r.stdout, /NIST CURVE: P-256/);
    assert.match(r.stdout, /Signature Algorithm: ecdsa-with-SHA256/);
    const issuer = r.stdout.match(/Issuer: (.*)/)[1];
    const subject = r.stdout.match(/Subject: (.*)/)[1];
    assert.equal(issuer, subject);
    const san = r.stdout.match(/X509v3 Subject Alternative Name:.*\n\s*(.*)/)[1];
    assert.match(san, /DNS:localhost/);
    assert.match(san, /IP Address:127\.0\.0\.1/);
    assert.match(san, /IP Address:0:0:0:0:0:0:0:1/);
    assert.match(r.stdout, /CA:FALSE/);
    assert.match(r.stdout, /TLS Web Server Authentication/);
    const v = await run('openssl', ['verify', '-CAfile', certFile, certFile]);
    assert.equal(v.code, 0, v.stdout + v.stderr);
  });

  it('the agent serves the certificate of its state directory', async () => {
    const r = await sClient('127.0.0.1', agent.port, ['-showcerts'], { cafile: certFile });
    const served = r.out.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/)[0];
    assert.equal(served.trim(), readFileSync(certFile, 'utf8').trim());
  });

  it('its SHA-256 fingerprint is the one in the log', async () => {
    assert.match(agent.log, /TLS certificate SHA-256 fingerprint [0-9A-F]{2}(:[0-9A-F]{2}){31}\n/);
    assert.equal(agent.fingerprint, await fingerprintOf(certFile));
    // And the one a client sees on the wire.
    const seen = await new Promise((res, rej) => {
      const s = tls.connect({ host: '127.0.0.1', port: agent.port, ca: agent.certPem, servername: 'localhost' }, () => {
        res(s.getPeerCertificate().fingerprint256);
        s.destroy();
      });
      s.on('error', rej);
    });
    assert.equal(seen, agent.fingerprint);
  });

  it('the key file has mode 0600, the state directory 0700', () => {
    assert.equal(statSync(join(agent.dir, 'state', 'tls-key.pem')).mode & 0o777, 0o600);
    assert.equal(statSync(join(agent.dir, 'state')).mode & 0o777, 0o700);
    assert.equal(statSync(certFile).mode & 0o777, 0o644);
  });

  it('a client that never completes the handshake is closed after header_timeout', async () => {
    const s = net.connect({ host: '127.0.0.1', port: agent.port });
    await new Promise((res) => s.on('connect', res));
    const t0 = Date.now();
    await new Promise((res) => { s.on('close', res); s.on('error', () => {}); s.resume(); });
    const waited = Date.now() - t0;
    assert.ok(waited >= 900 && waited < 1000 + 2000 * slow, `closed after ${waited} ms`);
  });

  it('plain HTTP on the TLS port gets no HTTP answer and is closed', async () => {
    const s = net.connect({ host: '127.0.0.1', port: agent.port });
    let data = '';
    s.on('data', (d) => { data += d.toString('latin1'); });
    s.on('error', () => {});
    s.write('GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n');
    await new Promise((res) => s.on('close', res));
    assert.ok(!data.includes('HTTP/1.1'));
  });
});

describe('TLS across restarts', () => {
  it('a restart on the same state directory reuses the certificate', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'exo-e2e-tls-'));
    const agents = [];
    try {
      const first = await startAgent({ dir });
      agents.push(first);
      assert.match(first.log, /created a self-signed TLS certificate/);
      await first.stop();
      const second = await startAgent({ dir });
      agents.push(second);
      assert.doesNotMatch(second.log, /created a self-signed TLS certificate/);
      assert.equal(second.fingerprint, first.fingerprint);
      assert.equal(second.certPem, first.certPem);
      const r = await request(second, { path: '/healthz' });
      assert.equal(r.status, 200);
      await second.stop();
    } finally {
      for (const a of agents) await a.cleanup();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('TLS with a configured certificate', () => {
  let dir;
  before(() => { dir = mkdtempSync(join(tmpdir(), 'exo-e2e-cert-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  for (const [kind, keyArgs] of [['ECDSA P-256', ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256']],
    ['RSA 2048', ['-newkey', 'rsa:2048']]]) {
    it(`is used instead of a generated one (${kind})`, async () => {
      const cert = join(dir, `${kind.split(' ')[0]}-cert.pem`);
      const key = join(dir, `${kind.split(' ')[0]}-key.pem`);
      const g = await run('openssl', ['req', '-x509', ...keyArgs, '-nodes', '-keyout', key, '-out', cert,
        '-days', '2', '-subj', '/CN=configured.test', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1']);
      assert.equal(g.code, 0, g.stderr);
      const agent = await startAgent({ server: { tls_certificate: cert, tls_private_key: key }, certFile: cert });
      try {
        assert.equal(agent.fingerprint, await fingerprintOf(cert));
        assert.ok(!existsSync(join(agent.dir, 'state', 'tls-cert.pem')), 'no certificate generated');
        assert.doesNotMatch(agent.log, /created a self-signed/);
        const r = await sClient('127.0.0.1', agent.port, ['-tls1_2'], { cafile: cert });
        assert.equal(r.code, 0, r.out);
        assert.match(r.out, /subject=CN\s*=\s*configured\.test/);
        assert.match(r.out, new RegExp(`New, TLSv1\\.2, Cipher is ECDHE-${kind.startsWith('RSA') ? 'RSA' : 'ECDSA'}-`));
        assert.equal((await request(agent, { path: '/healthz' })).status, 200);
      } finally {
        await agent.close();
      }
    });
  }

  it('a key that does not match the certificate stops the agent at start', async () => {
    const a = join(dir, 'a.pem');
    const ak = join(dir, 'a-key.pem');
    const bk = join(dir, 'b-key.pem');
    await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
      '-keyout', ak, '-out', a, '-days', '1', '-subj', '/CN=a']);
    await run('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', bk]);
    await assert.rejects(startAgent({ server: { tls_certificate: a, tls_private_key: bk } }),
      /exited at start[\s\S]*does not match/);
  });
});

describe('TLS over IPv6', () => {
  it('listening on 127.0.0.1:P and [::1]:P serves both', async (t) => {
    if (!(await ipv6Loopback())) {
      t.skip('this machine has no IPv6 loopback');
      return;
    }
    const port = await freePort();
    const agent = await startAgent({ port, listen: `127.0.0.1:${port}, [::1]:${port}` });
    try {
      assert.match(agent.log, new RegExp(`listening on https://\\[::1\\]:${port}`));
      const certFile = join(agent.dir, 'state', 'tls-cert.pem');
      for (const host of ['127.0.0.1', '[::1]']) {
        const r = await sClient(host, port, ['-quiet'], {
          cafile: certFile, send: 'GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n',
        });
        assert.equal(r.code, 0, r.out);
        assert.match(r.out, /\{"status":"ok"\}/);
      }
      // Verified by IP address: the certificate names ::1.
      const ok = await new Promise((res, rej) => {
        const s = tls.connect({ host: '::1', port, ca: agent.certPem }, () => { res(s.authorized); s.destroy(); });
        s.on('error', rej);
      });
      assert.equal(ok, true);
      await sleep(50);
    } finally {
      await agent.close();
    }
  });
});
