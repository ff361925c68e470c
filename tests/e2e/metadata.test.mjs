// The metadata client (runtime/metadata.c, exo.metadata.fetch behind agent.metadata): a real
// HTTP server on loopback plays the OpenStack metadata service, and the e2e.metadata method
// returns what the worker fetched. Each case starts its own agent, since the cache lives as
// long as the worker.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { startAgent, rpc, shippedMethods, testMethods, slow } from './lib/agent.mjs';

// A meta_data.json as Nova serves it, with both ways Exosphere names volumes: device tags
// (newer servers) and exoVolumes:: metadata keys (older ones).
const META = {
  uuid: '7b4f2c5e-1d2a-4c4e-9f2b-3a8e5d6c7b10',
  meta: {
    exoUserPassword: 'not-a-real-passphrase',
    'exoVolumes::2f0d8a7c-6b1e-4a3d-9c5f-8e7a6b5c4d3e': '{"name":"scratch data"}',
    exoGuestAgent: 'true',
  },
  hostname: 'exo-test.novalocal',
  name: 'exo-test',
  launch_index: 0,
  availability_zone: 'nova',
  random_seed: 'c2VlZA==',
  project_id: '1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f',
  devices: [
    {
      type: 'disk', bus: 'virtio', serial: '5e1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b',
      path: '/dev/vdb', address: '0000:00:07.0', tags: ['exoVolume::{"name":"results"}'],
    },
    { type: 'nic', bus: 'pci', mac: 'fa:16:3e:00:11:22', address: '0000:00:03.0', tags: ['eth0'] },
  ],
};
const BODY = JSON.stringify(META);

// A metadata service: handler(req, res) answers; requests counts what reached it.
async function service(handler) {
  const s = { requests: 0, sockets: new Set() };
  s.server = http.createServer((req, res) => {
    s.requests++;
    s.lastRequest = { method: req.method, url: req.url, headers: req.headers };
    handler(req, res);
  });
  s.server.on('connection', (c) => { s.sockets.add(c); c.on('close', () => s.sockets.delete(c)); });
  await new Promise((r) => s.server.listen(0, '127.0.0.1', r));
  s.port = s.server.address().port;
  s.url = `http://127.0.0.1:${s.port}/openstack/latest/meta_data.json`;
  s.close = () => new Promise((r) => {
    for (const c of s.sockets) c.destroy();
    s.server.close(r);
  });
  return s;
}

// A TCP server that accepts and never answers (or answers with raw bytes given by onData).
async function rawService(onConnection) {
  const s = { connections: 0, sockets: new Set() };
  s.server = net.createServer((c) => {
    s.connections++;
    s.sockets.add(c);
    c.on('close', () => s.sockets.delete(c));
    c.on('error', () => {});
    onConnection(c);
  });
  await new Promise((r) => s.server.listen(0, '127.0.0.1', r));
  s.port = s.server.address().port;
  s.url = `http://127.0.0.1:${s.port}/openstack/latest/meta_data.json`;
  s.close = () => new Promise((r) => {
    for (const c of s.sockets) c.destroy();
    s.server.close(r);
  });
  return s;
}

function agentFor(metadata) {
  return startAgent({ methodDirs: [shippedMethods, testMethods], sections: { metadata } });
}

// Calls e2e.metadata; resolves its result ({body} or {error}) and how long it took.
async function fetchMeta(agent) {
  const t0 = Date.now();
  const r = await rpc(agent, { jsonrpc: '2.0', id: 1, method: 'e2e.metadata', params: {} });
  assert.equal(r.status, 200, r.body);
  const j = r.json();
  assert.ok(j.result, r.body);
  return { ...j.result, ms: Date.now() - t0 };
}

// Skips the suite while the agent API has no agent.metadata (sandbox/agent.lua's wrapper of
// exo.metadata.fetch is written separately).
async function wrapperMissing() {
  const s = await service((req, res) => res.end('{}'));
  const agent = await agentFor({ url: `"${s.url}"` });
  try {
    return (await fetchMeta(agent)).missing === true;
  } finally {
    await agent.close();
    await s.close();
  }
}

describe('metadata client', async () => {
  const missing = await wrapperMissing();
  const opts = missing ? { skip: 'agent.metadata is not in sandbox/agent.lua yet' } : {};

  it('returns the document, with one GET of the configured path, Host and Connection: close', opts, async () => {
    const s = await service((req, res) => {
      res.setHeader('Content-Type', 'application/json');
      res.end(BODY);
    });
    const agent = await agentFor({ url: `"${s.url}"` });
    try {
      const r = await fetchMeta(agent);
      assert.equal(r.body, BODY);
      assert.deepEqual(JSON.parse(r.body).devices[0].tags, ['exoVolume::{"name":"results"}']);
      assert.equal(s.requests, 1);
      assert.equal(s.lastRequest.method, 'GET');
      assert.equal(s.lastRequest.url, '/openstack/latest/meta_data.json');
      assert.equal(s.lastRequest.headers.host, `127.0.0.1:${s.port}`);
      assert.equal(s.lastRequest.headers.connection, 'close');
    } finally {
      await agent.close();
      await s.close();
    }
  });

  it('caches a document for [metadata] cache: two calls, one request; cache = 0s asks each time', opts, async () => {
    const s = await service((req, res) => res.end(BODY));
    let agent = await agentFor({ url: `"${s.url}"` });
    try {
      assert.equal((await fetchMeta(agent)).body, BODY);
      assert.equal((await fetchMeta(agent)).body, BODY);
      assert.equal(s.requests, 1);
    } finally {
      await agent.close();
    }
    agent = await agentFor({ url: `"${s.url}"`, cache: '0s' });
    try {
      await fetchMeta(agent);
      await fetchMeta(agent);
      assert.equal(s.requests, 3);
    } finally {
      await agent.close();
      await s.close();
    }
  });

  it('remembers a failure for negative_cache, then asks again', opts, async () => {
    const s = await service((req, res) => { res.statusCode = 404; res.end('no'); });
    const agent = await agentFor({ url: `"${s.url}"`, negative_cache: '1s' });
    try {
      assert.equal((await fetchMeta(agent)).error, 'HTTP 404');
      assert.equal((await fetchMeta(agent)).error, 'HTTP 404');
      assert.equal(s.requests, 1);
      await new Promise((r) => setTimeout(r, 1100));
      assert.equal((await fetchMeta(agent)).error, 'HTTP 404');
      assert.equal(s.requests, 2);
    } finally {
      await agent.close();
      await s.close();
    }
  });

  it('HTTP statuses other than 200 are errors', opts, async () => {
    const s = await service((req, res) => { res.statusCode = 500; res.end('oops'); });
    const agent = await agentFor({ url: `"${s.url}"` });
    try {
      assert.equal((await fetchMeta(agent)).error, 'HTTP 500');
    } finally {
      await agent.close();
      await s.close();
    }
  });

  it('a service that never answers fails at the timeout', opts, async () => {
    const s = await rawService(() => {});
    const agent = await agentFor({ url: `"${s.url}"`, timeout: '500ms' });
    try {
      const r = await fetchMeta(agent);
      assert.equal(r.error, 'timed out after 500 ms');
      assert.ok(r.ms >= 450 && r.ms < 500 + 1000 * slow, `took ${r.ms} ms`);
    } finally {
      await agent.close();
      await s.close();
    }
  });

  it('a body trickling in beyond the deadline fails at the deadline', opts, async () => {
    const s = await rawService((c) => {
      c.write('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n');
      const t = setInterval(() => c.write('{'), 50);
      c.on('close', () => clearInterval(t));
    });
    const agent = await agentFor({ url: `"${s.url}"`, timeout: '600ms' });
    try {
      const r = await fetchMeta(agent);
      assert.equal(r.error, 'timed out after 600 ms');
      assert.ok(r.ms < 600 + 1000 * slow, `took ${r.ms} ms`);
    } finally {
      await agent.close();
      await s.close();
    }
  });

  it('refuses a body over max_bytes, declared or chunked', opts, async () => {
    const big = 'x'.repeat(2048);
    const s = await service((req, res) => {
      if (req.headers['x-never']) return;
      res.end(big); // Content-Length: 2048
    });
    let agent = await agentFor({ url: `"${s.url}"`, max_bytes: '1K' });
    try {
      assert.equal((await fetchMeta(agent)).error, 'response over 1024 bytes');
    } finally {
      await agent.close();
      await s.close();
    }
    const c = await service((req, res) => {
      res.write('y'.repeat(1000)); // chunked: no length is declared
      res.end('y'.repeat(1000));
    });
    agent = await agentFor({ url: `"${c.url}"`, max_bytes: '1K' });
    try {
      assert.equal((await fetchMeta(agent)).error, 'response over 1024 bytes');
    } finally {
      await agent.close();
      await c.close();
    }
  });

  it('reads chunked and close-delimited bodies', opts, async () => {
    const s = await service((req, res) => {
      for (let i = 0; i < BODY.length; i += 100) res.write(BODY.slice(i, i + 100));
      res.end();
    });
    let agent = await agentFor({ url: `"${s.url}"` });
    try {
      assert.equal((await fetchMeta(agent)).body, BODY);
    } finally {
      await agent.close();
      await s.close();
    }
    const raw = await rawService((c) => {
      c.on('data', () => {
        c.end(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n${BODY}`);
      });
    });
    agent = await agentFor({ url: `"${raw.url}"` });
    try {
      assert.equal((await fetchMeta(agent)).body, BODY);
    } finally {
      await agent.close();
      await raw.close();
    }
  });

  it('a connection closed early, a malformed response and a refused connection are errors', opts, async () => {
    const early = await rawService((c) => c.on('data', () => c.end('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc')));
    let agent = await agentFor({ url: `"${early.url}"` });
    try {
      assert.equal((await fetchMeta(agent)).error,
        'the metadata service closed the connection before the response ended');
    } finally {
      await agent.close();
      await early.close();
    }
    const junk = await rawService((c) => c.on('data', () => c.end('SSH-2.0-OpenSSH_9.6\r\n')));
    agent = await agentFor({ url: `"${junk.url}"` });
    try {
      assert.match((await fetchMeta(agent)).error, /^the metadata service sent a malformed response: /);
    } finally {
      await agent.close();
      await junk.close();
    }
    const closed = await rawService(() => {});
    const port = closed.port;
    await closed.close();
    agent = await agentFor({ url: `"http://127.0.0.1:${port}/x"` });
    try {
      assert.equal((await fetchMeta(agent)).error, 'metadata service unreachable: connection refused');
    } finally {
      await agent.close();
    }
  });

  it('resolves a host name', opts, async () => {
    const s = await service((req, res) => res.end(BODY));
    const agent = await agentFor({ url: `"http://localhost:${s.port}/openstack/latest/meta_data.json"` });
    try {
      assert.equal((await fetchMeta(agent)).body, BODY);
      assert.equal(s.lastRequest.headers.host, `localhost:${s.port}`);
    } finally {
      await agent.close();
      await s.close();
    }
  });

  it('url = "" answers "not configured" without any request', opts, async () => {
    const agent = await agentFor({ url: '""' });
    try {
      assert.equal((await fetchMeta(agent)).error, 'not configured');
    } finally {
      await agent.close();
    }
  });

  it('concurrent calls share one request', opts, async () => {
    const s = await service((req, res) => setTimeout(() => res.end(BODY), 300));
    const agent = await agentFor({ url: `"${s.url}"` });
    try {
      const all = await Promise.all(Array.from({ length: 8 }, () => fetchMeta(agent)));
      for (const r of all) assert.equal(r.body, BODY);
      assert.equal(s.requests, 1);
    } finally {
      await agent.close();
      await s.close();
    }
  });

  it('a call that times out while the fetch waits is abandoned cleanly, and the fetch still completes', opts, async () => {
    const s = await service((req, res) => setTimeout(() => res.end(BODY), 1500));
    const agent = await startAgent({
      methodDirs: [shippedMethods, testMethods],
      server: { call_timeout: '500ms' },
      sections: { metadata: { url: `"${s.url}"`, timeout: '5s' } },
    });
    try {
      const r = await rpc(agent, { jsonrpc: '2.0', id: 1, method: 'e2e.metadata', params: {} });
      assert.ok(r.json().error, r.body);
      await new Promise((res) => setTimeout(res, 1300));
      // The fetch that the abandoned call started filled the cache.
      assert.equal((await fetchMeta(agent)).body, BODY);
      assert.equal(s.requests, 1);
      assert.equal(agent.exited, null);
    } finally {
      await agent.close();
      await s.close();
    }
  });

  it('stops promptly with a fetch in flight', opts, async () => {
    const s = await rawService(() => {});
    const agent = await startAgent({
      methodDirs: [shippedMethods, testMethods],
      server: { drain_timeout: '1s' },
      sections: { metadata: { url: `"${s.url}"`, timeout: '1m' } },
    });
    try {
      const pending = rpc(agent, { jsonrpc: '2.0', id: 1, method: 'e2e.metadata', params: {} }).catch(() => null);
      await new Promise((r) => setTimeout(r, 200));
      const t0 = Date.now();
      // The call holds the drain for drain_timeout; then the fetch is ended, not waited for.
      assert.deepEqual(await agent.stop(), { code: 0, signal: null });
      assert.ok(Date.now() - t0 < 1000 + 2000 * slow, `took ${Date.now() - t0} ms`);
      await pending;
    } finally {
      await agent.cleanup();
      await s.close();
    }
  });
});

describe('[metadata] url at configuration load', () => {
  it('refuses https:// with a clear error', async () => {
    await assert.rejects(agentFor({ url: '"https://169.254.169.254/openstack/latest/meta_data.json"' }),
      /\[metadata\] url: https is not supported: the metadata service is plain HTTP/);
  });
});
