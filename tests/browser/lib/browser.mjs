// Helpers of the browser tests: the page's own origin (a static server), Debian's Chromium
// driven headless through playwright-core, certificate pinning by SPKI hash, and nginx set up
// as Exosphere's proxy (../../shared/EXOSPHERE.md "How the browser reaches an instance").
import http from 'node:http';
import tls from 'node:tls';
import { X509Certificate, createHash } from 'node:crypto';
import { readFileSync, writeFileSync, mkdtempSync, rmSync, chmodSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { freePort, run, waitFor, parseResponses, readAll } from '../../e2e/lib/agent.mjs';

const here = dirname(fileURLToPath(import.meta.url));
export const CHROMIUM = process.env.EXO_CHROMIUM || '/usr/bin/chromium';
export const NGINX = process.env.EXO_NGINX || '/usr/sbin/nginx';

// The base64 SHA-256 of a certificate's SubjectPublicKeyInfo: what Chromium's
// --ignore-certificate-errors-spki-list takes. Trusting that one key (and no other) is the
// pinning Exosphere does with the fingerprint the agent prints on the console.
export function spkiHash(certPem) {
  const spki = new X509Certificate(certPem).publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(spki).digest('base64');
}

// Serves tests/browser/page/ on 127.0.0.1 at each of the given number of ports; each port is
// its own origin. Resolves { origins: ['http://127.0.0.1:<port>', ...], close() }.
export async function startPageServer(n = 1) {
  const files = {
    '/': ['text/html; charset=utf-8', readFileSync(join(here, '../page/index.html'))],
    '/client.js': ['text/javascript; charset=utf-8', readFileSync(join(here, '../page/client.js'))],
  };
  const servers = [];
  const origins = [];
  for (let i = 0; i < n; i++) {
    const s = http.createServer((req, res) => {
      const f = files[new URL(req.url, 'http://x').pathname];
      if (!f) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'Content-Type': f[0], 'Cache-Control': 'no-store' }).end(f[1]);
    });
    await new Promise((res, rej) => { s.once('error', rej); s.listen(0, '127.0.0.1', res); });
    servers.push(s);
    origins.push(`http://127.0.0.1:${s.address().port}`);
  }
  return {
    origins,
    close: () => Promise.all(servers.map((s) => new Promise((res) => { s.closeAllConnections(); s.close(res); }))),
  };
}

// Launches Chromium headless, trusting only the certificates whose keys are given.
export function launchChromium(certPems) {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      // Chromium's sandbox cannot start as root (the tests run as root for PAM logins), and
      // this browser only ever loads the test's own page.
      '--no-sandbox',
      `--ignore-certificate-errors-spki-list=${certPems.map(spkiHash).join(',')}`,
    ],
  });
}

// Opens the page of `origin` in a fresh context; collects the raw headers of every response
// the page received, as the browser saw them (await page.settled() resolves
// [{ url, method, status, headers }], headers as [{ name, value }] with duplicates kept).
export async function openPage(browser, origin) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const pending = [];
  page.on('response', (r) => {
    pending.push(r.headersArray().then((headers) => ({ url: r.url(), method: r.request().method(), status: r.status(), headers }),
      () => null));
  });
  // The response events reach Node on their own path: wait until those of every request the
  // page finished have arrived and been read (one the browser refused may have none).
  let finished = 0;
  page.on('requestfinished', () => { finished++; });
  page.settled = async () => {
    await waitFor(() => pending.length >= finished, 5000, 'response events');
    return (await Promise.all(pending)).filter((r) => r !== null);
  };
  await page.goto(`${origin}/`);
  await page.waitForFunction(() => window.exo !== undefined);
  return page;
}

// The values of one header (any case) among a raw header list.
export function headerValues(headers, name) {
  return headers.filter((h) => h.name.toLowerCase() === name.toLowerCase()).map((h) => h.value);
}

// A self-signed ECDSA certificate for the proxy, made with the openssl command line.
async function proxyCertificate(dir) {
  const key = join(dir, 'proxy-key.pem');
  const cert = join(dir, 'proxy-cert.pem');
  const r = await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-subj', '/CN=proxy.test', '-addext', 'subjectAltName=DNS:proxy.test,IP:127.0.0.1', '-days', '2',
    '-keyout', key, '-out', cert]);
  if (r.code !== 0) throw new Error(`openssl req failed: ${r.stderr}`);
  return { key, cert, certPem: readFileSync(cert, 'utf8') };
}

// nginx configured as Exosphere's proxy in front of the agent at 127.0.0.1:agentPort: TLS
// termination with its own certificate, HTTPS upstream without verification, WebSocket
// upgrades passed, every OPTIONS answered 204 by nginx, and Access-Control-Allow-Origin for
// `origin` added by nginx itself ("always": on error answers too). The master starts as root
// with its configuration, pid file, logs and temporary files in a directory of its own; no
// system service is involved. Resolves { base, port, certPem, dir, log(), stop() }.
export async function startNginx({ agentPort, origin }) {
  const dir = mkdtempSync(join(tmpdir(), 'exo-nginx-'));
  // nginx's workers run as nobody and create their temporary directories under dir.
  chmodSync(dir, 0o755);
  const port = await freePort();
  const { key, cert, certPem } = await proxyCertificate(dir);
  const cors = [
    `add_header Access-Control-Allow-Origin "${origin}" always;`,
    'add_header Access-Control-Allow-Headers "Authorization, Content-Type, Exosphere-Agent-Version" always;',
    'add_header Access-Control-Allow-Methods "GET, POST, OPTIONS" always;',
  ].join('\n            ');
  const conf = `
daemon on;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log info;
worker_processes 1;
events { worker_connections 256; }
http {
    access_log ${dir}/access.log;
    client_body_temp_path ${dir}/client_body;
    proxy_temp_path ${dir}/proxy;
    fastcgi_temp_path ${dir}/fastcgi;
    uwsgi_temp_path ${dir}/uwsgi;
    scgi_temp_path ${dir}/scgi;
    map $http_upgrade $connection_upgrade {
        default upgrade;
        '' close;
    }
    server {
        listen 127.0.0.1:${port} ssl;
        ssl_certificate ${cert};
        ssl_certificate_key ${key};
        location / {
            # Like Exosphere's proxy: every OPTIONS is answered here, never by the agent.
            if ($request_method = OPTIONS) {
            ${cors}
                add_header Access-Control-Max-Age 600 always;
                return 204;
            }
            ${cors}
            proxy_pass https://127.0.0.1:${agentPort};
            proxy_ssl_verify off;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 60s;
        }
    }
}
`;
  const confFile = join(dir, 'nginx.conf');
  writeFileSync(confFile, conf);
  const r = await run(NGINX, ['-p', dir, '-c', confFile, '-e', join(dir, 'error.log')]);
  const log = () => (existsSync(join(dir, 'error.log')) ? readFileSync(join(dir, 'error.log'), 'utf8') : '');
  if (r.code !== 0) {
    const msg = `nginx did not start (${r.code}): ${r.stderr}\n${log()}`;
    rmSync(dir, { recursive: true, force: true });
    throw new Error(msg);
  }
  const pidFile = join(dir, 'nginx.pid');
  await waitFor(() => existsSync(pidFile), 5000, 'nginx pid file');
  const pid = Number(readFileSync(pidFile, 'utf8').trim());
  return {
    port, certPem, dir, pid, log,
    base: `https://127.0.0.1:${port}`,
    async stop() {
      // The master we started, by its pid: a quick shutdown, then wait for it to go.
      try { process.kill(pid, 'SIGTERM'); } catch { /* already gone */ }
      await waitFor(() => { try { process.kill(pid, 0); return false; } catch { return true; } }, 10000, 'nginx exit')
        .catch(() => { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } });
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// One raw HTTPS request to 127.0.0.1:port, trusting only certPem; resolves the parsed
// response with its raw header lines (so that duplicates show).
// The certificate is the only trusted one, so the host name it names does not matter.
export async function rawHttps(port, certPem, text, ms = 10000) {
  const s = await new Promise((res, rej) => {
    const c = tls.connect({ host: '127.0.0.1', port, ca: certPem, checkServerIdentity: () => undefined }, () => res(c));
    c.on('error', rej);
  });
  const done = readAll(s, ms);
  s.write(text);
  const { data } = await done;
  s.destroy();
  const [r] = parseResponses(data);
  if (!r) throw new Error(`no response: ${JSON.stringify(data.slice(0, 300))}`);
  r.lines = r.raw.split('\r\n').slice(1);
  return r;
}

