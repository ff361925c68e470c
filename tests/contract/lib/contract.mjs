// What record.mjs, replay.test.mjs and reference.test.mjs share: the agent in its fixed
// environment, how each example is called (which transport, which token), the safety checks
// of the examples that act on disks, the volatile paths, and the comparison of answers.
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startAgent, shippedMethods, request, rpc, login, ACCOUNTS } from '../../e2e/lib/agent.mjs';
import { open } from '../../e2e/lib/wsclient.mjs';

export const here = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const recordingsDir = join(here, 'recordings');
export const VERSION_HEADER = 'Exosphere-Agent-Version';

// The account whose token the calls that need a login use. The examples of authenticate.me
// show an administrator, so an administrator it is (its groups are fixed by accounts.mjs).
export const ACCOUNT = ACCOUNTS.admin;

// The agent as the contract suite runs it: the shipped methods only, and the one setting the
// machine would otherwise decide: the owner of mounts ([mounts] owner, "exouser" by default)
// is looked up by mounts.mount_cephfs before anything else, and "exouser" exists on some
// machines and not on others. A test account of accounts.mjs exists everywhere the suite runs.
// And the load sampler: it takes a sample at start and then at each multiple of the interval
// on the wall clock; at the longest interval (1 h) a recording of system_load.historical made
// seconds after the start holds exactly that one sample, however slow the machine is (unless
// the run straddles a full hour: historical's recording allows either count). And no login
// backoff: authenticate.login's example fails once per version, which backoff would turn into
// "retry later" for the second. And no package manager: the packages.* examples would
// otherwise run apt-get on this machine; they answer Unsupported no_backend instead (and are
// tested for real in tests/system/packages.test.mjs).
export function startContractAgent(extra = {}) {
  return startAgent({
    methodDirs: [shippedMethods],
    sections: {
      mounts: { owner: ACCOUNTS.user.name }, system_load: { interval: '1h' }, auth: { login_backoff: '0s' },
      packages: { backend: 'none' },
    },
    ...extra,
  });
}

// The API versions the running agent serves (agent.info, no version header: the current one
// describes them all), and the current one.
export async function agentVersions(agent) {
  const r = await rpc(agent, { jsonrpc: '2.0', id: 1, method: 'agent.info', params: {} });
  const info = r.json().result;
  if (!info || !Array.isArray(info.api_versions)) throw new Error(`agent.info answered ${r.body}`);
  return { versions: info.api_versions, current: info.current_api_version };
}

// GET /openrpc.json as version V sees it.
export async function documentOf(agent, version) {
  const r = await request(agent, { path: '/openrpc.json', headers: { [VERSION_HEADER]: version } });
  if (r.status !== 200) throw new Error(`GET /openrpc.json for ${version}: HTTP ${r.status} ${r.body}`);
  return r.json();
}

// ---- How each example is called ---------------------------------------------------------

// Methods that work only on a WebSocket session (over HTTP they answer Unsupported).
const SESSION_METHODS = new Set(['notifications.subscribe', 'notifications.unsubscribe']);

// 'ws': on a WebSocket session of its own, after authenticate.token with the test account's
// token; 'own-token': over HTTP with a token made for this call alone (authenticate.logout
// revokes the token it is called with); 'token': over HTTP with the test account's token;
// 'anonymous': over HTTP without one (public methods: their answers must not depend on who
// asks, and authenticate.login/token are what a client calls before it has a token).
export function howToCall(method) {
  if (SESSION_METHODS.has(method.name)) return 'ws';
  if (method.name === 'authenticate.logout') return 'own-token';
  return method['x-permission'] === 'public' ? 'anonymous' : 'token';
}

// The example's params by name, in the order of the method's params (by-name calls; every
// example in this project names its params).
export function paramsByName(method, example) {
  const given = new Map(example.params.map((p) => [p.name, p.value]));
  const out = {};
  for (const p of method.params || []) if (given.has(p.name)) out[p.name] = given.get(p.name);
  for (const [k, v] of given) if (!(k in out)) out[k] = v;
  return out;
}

export const exampleRequest = (method, example) =>
  ({ jsonrpc: '2.0', id: 1, method: method.name, params: paramsByName(method, example) });

// Logs the test account in once per agent (POST /auth); logins are slowed down per user, so
// the token is kept.
export async function accountToken(agent) {
  if (!agent.contractToken) agent.contractToken = await login(agent, ACCOUNT);
  return agent.contractToken;
}

// Sends one request the way howToCall says, with the version header; resolves the parsed
// JSON-RPC response.
export async function send(agent, version, method, req) {
  const how = howToCall(method);
  const headers = { [VERSION_HEADER]: version };
  if (how === 'token') headers.Authorization = `Bearer ${await accountToken(agent)}`;
  if (how === 'own-token') headers.Authorization = `Bearer ${await login(agent, ACCOUNT)}`;
  if (how === 'ws') return sendOnSession(agent, version, req);
  const r = await rpc(agent, req, { headers });
  try {
    return JSON.parse(r.body);
  } catch {
    throw new Error(`${req.method}: HTTP ${r.status}, not JSON: ${r.body}`);
  }
}

async function sendOnSession(agent, version, req) {
  const s = open(agent, { headers: { [VERSION_HEADER]: version } });
  try {
    await s.ready;
    const auth = await s.call('authenticate.token', { token: await accountToken(agent) }, 'auth');
    if (auth.error) throw new Error(`authenticate.token on the session: ${JSON.stringify(auth.error)}`);
    s.send(req);
    return await s.answer(req.id);
  } finally {
    s.close();
  }
}

// ---- Examples that act on disks -----------------------------------------------------------
//
// On this machine (methods/mounts.lua, runtime/mountop_run.c):
// - mounts.mount_device finds the disk first (device_by_name / device_by_volume_id read
//   /proc/partitions, /sys/class/block and udev's data): an id that no attached disk has is
//   NotFound before any probe, mkfs, job or mount. With format: true the same check runs
//   before the job starts.
// - mounts.unmount reads /proc/self/mountinfo: a mountpoint (or device) that is not mounted
//   is NotFound before the monitor is asked for anything.
// - mounts.mount_cephfs: the worker checks the mount table, then the monitor looks up the
//   owner of mounts (getpwnam), looks for mount.ceph and the ceph module, then for ceph-fuse,
//   and answers Unsupported (no_client) before it writes the secret, the unit or the
//   mountpoint, and before any address is contacted.
// Those answers are what is recorded. They hold only while the machine has no such disk, no
// such mount and no Ceph client, so every exchange of these methods is preceded by
// diskSafety(), which names what on this machine would make the example act (and the
// exchange is then refused, never sent).
export const DISK_METHODS = new Set(['mounts.mount_device', 'mounts.unmount', 'mounts.mount_cephfs']);
const TOOL_PATH = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

const readOr = (path, fallback = null) => {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return fallback;
  }
};

function blockDevices() {
  const out = [];
  for (const line of (readOr('/proc/partitions', '') || '').split('\n')) {
    const m = line.match(/^\s*(\d+)\s+(\d+)\s+\d+\s+(\S+)\s*$/);
    if (m) out.push({ major: m[1], minor: m[2], kname: m[3] });
  }
  return out;
}

// The serials mounts.lua's disk_serial() would see: udev's ID_SERIAL_SHORT, else sysfs.
function serialsOf(dev) {
  const out = [];
  const udev = readOr(`/run/udev/data/b${dev.major}:${dev.minor}`, '');
  const m = udev.match(/^E:ID_SERIAL_SHORT=(.*)$/m);
  if (m && m[1]) out.push(m[1]);
  const s = (readOr(`/sys/class/block/${dev.kname}/serial`, '') || '').trim();
  if (s) out.push(s);
  return out;
}

const unescapeMount = (s) => s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));

function mountedPaths() {
  return (readOr('/proc/self/mountinfo', '') || '').split('\n').filter(Boolean).map((l) => unescapeMount(l.split(' ')[4]));
}

function deviceMatches(params) {
  const found = [];
  for (const d of blockDevices()) {
    if (params.device !== undefined && [d.kname, `/dev/${d.kname}`].includes(params.device)) found.push(`/dev/${d.kname}`);
    if (params.volume_id !== undefined) {
      for (const s of serialsOf(d)) {
        if (s === params.volume_id || (s.length >= 20 && params.volume_id.startsWith(s))) found.push(`/dev/${d.kname} (serial ${s})`);
      }
    }
  }
  return found;
}

// null when the example cannot touch this machine, else why it could.
export function diskSafety(methodName, params) {
  if (!DISK_METHODS.has(methodName)) return null;
  if (methodName === 'mounts.mount_cephfs') {
    const tools = [];
    for (const d of TOOL_PATH) for (const t of ['mount.ceph', 'ceph-fuse']) if (existsSync(join(d, t))) tools.push(join(d, t));
    return tools.length ? `a Ceph client is installed (${tools.join(', ')}): the example would write a secret and a unit and contact ${params.export_path}` : null;
  }
  const devices = deviceMatches(params);
  if (devices.length) return `this machine has the example's disk: ${devices.join(', ')}`;
  if (methodName === 'mounts.unmount' && params.mountpoint !== undefined && mountedPaths().includes(params.mountpoint))
    return `${params.mountpoint} is mounted on this machine`;
  return null;
}

// ---- Volatile paths ---------------------------------------------------------------------
//
// The parts of an answer that differ from run to run or from machine to machine, compared by
// JSON type only. Paths: dot-separated keys, "[*]" for every element of an array. Each entry
// says why; record.mjs copies the list of its method into each recording.
export const VOLATILE = {
  'agent.info': {
    'result.version': 'the agent release, not the API',
    'result.lua_api_level': 'the runtime, not the API',
    'result.api_versions': 'the agent\'s list: it grows when a version is added, which must not change an older version\'s recording',
    'result.current_api_version': 'the newest version, likewise',
    'result.hostname': 'the machine',
    'result.started': 'the clock',
    'result.uptime': 'the clock',
    'result.methods.loaded': 'how many methods the agent loaded, across all versions',
  },
  'authenticate.me': {
    'result.uid': 'the test account\'s uid differs between machines',
    'result.expires': 'the clock',
  },
  'rpc.discover': {
    'result.info.version': 'the agent release, not the API',
    'result.info.x-lua-api-level': 'the runtime, not the API',
    'result.info.x-api-versions': 'the agent\'s list: it grows when a version is added',
    // Prose may be improved at any time without changing the contract: names, schemas,
    // examples, stability and permissions are compared; the words by type only.
    '**.description': 'documentation text, not the contract',
    '**.summary': 'documentation text, not the contract',
  },
  'system_load.current': {
    'result.epoch': 'the clock',
    'result.cpuPctUsed': 'the load',
    'result.memPctUsed': 'the load',
    'result.rootfsPctUsed': 'the disk',
  },
  'system_load.historical': {
    'result.length': 'the samples taken so far: one at the start, two when the run crosses a full hour',
    'result[*].epoch': 'the clock',
    'result[*].cpuPctUsed': 'the load',
    'result[*].memPctUsed': 'the load',
    'result[*].rootfsPctUsed': 'the disk',
  },
};

export const volatileOf = (methodName) => Object.keys(VOLATILE[methodName] || {}).sort();

// ---- Comparison -------------------------------------------------------------------------

export function jsonType(v) {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}

function pathMatches(pattern, path) {
  // "**.key": that key at any depth under the result.
  if (pattern[0] === '**') return path.length >= 2 && path.at(-1) === pattern[1];
  if (pattern.length !== path.length) return false;
  return pattern.every((p, i) => p === path[i] || (p === '[*]' && typeof path[i] === 'number'));
}

// "result[*].epoch" -> ['result', '[*]', 'epoch'].
export const splitPath = (text) => text.replace(/\[\*\]/g, '.[*]').split('.').filter(Boolean);

const showPath = (path) => path.map((p, i) => (typeof p === 'number' ? `[${p}]` : `${i ? '.' : ''}${p}`)).join('');

// Differences between a recorded answer and an actual one: [{path, recorded, actual}], where a
// volatile path only needs the same JSON type, and fields that only the actual answer has are
// additions, allowed.
export function compare(recorded, actual, volatile = []) {
  const patterns = volatile.map(splitPath);
  const diffs = [];
  const walk = (a, b, path) => {
    if (patterns.some((p) => pathMatches(p, path))) {
      if (jsonType(a) !== jsonType(b)) diffs.push({ path: showPath(path), recorded: a, actual: b, note: 'volatile: JSON type differs' });
      return;
    }
    const ta = jsonType(a);
    if (ta !== jsonType(b)) {
      diffs.push({ path: showPath(path), recorded: a, actual: b });
    } else if (ta === 'array') {
      // "<path>.length" volatile: how many items may differ; those present are compared.
      const anyLength = patterns.some((p) => pathMatches(p, [...path, 'length']));
      if (a.length !== b.length && !anyLength) diffs.push({ path: `${showPath(path)}.length`, recorded: a.length, actual: b.length });
      for (let i = 0; i < Math.min(a.length, b.length); i++) walk(a[i], b[i], [...path, i]);
    } else if (ta === 'object') {
      for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
        // A field the recording lacks is an addition, which never breaks a client
        // (docs/compatibility.md): only what was recorded must stay.
        if (!(k in a)) continue;
        else if (!(k in b)) diffs.push({ path: showPath([...path, k]), recorded: a[k], actual: undefined });
        else walk(a[k], b[k], [...path, k]);
      }
    } else if (a !== b) {
      diffs.push({ path: showPath(path), recorded: a, actual: b });
    }
  };
  walk(recorded, actual, []);
  return diffs;
}

// JSON with object keys sorted at every level, two-space indent and a final newline: files
// whose diffs show only what changed.
export function stableJson(value) {
  const sort = (v) => {
    if (Array.isArray(v)) return v.map(sort);
    if (v && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sort(v[k])]));
    return v;
  };
  return `${JSON.stringify(sort(value), null, 2)}\n`;
}

// ---- Recordings on disk -----------------------------------------------------------------

export const recordingName = (methodName, index) => `${methodName}.${index + 1}.json`;

// { '<method>.<n>.json': {request, response, volatile, example} } of one version.
export function readRecordings(version) {
  const dir = join(recordingsDir, version);
  const out = {};
  if (!existsSync(dir)) return out;
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.json')).sort()) out[f] = JSON.parse(readFileSync(join(dir, f), 'utf8'));
  return out;
}

// Every example of a document: [{method, example, index, file}] (methods only: notifications
// are sent by the agent, not called; their examples are what extract-examples.mjs writes).
export function examplesOf(doc) {
  const out = [];
  for (const method of doc.methods) {
    method.examples.forEach((example, index) => out.push({ method, example, index, file: recordingName(method.name, index) }));
  }
  return out;
}
