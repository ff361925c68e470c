// Generates a typed TypeScript client from the agent's OpenRPC document: the types of every
// method's params and result (and of every notification's params) by json-schema-to-typescript,
// and one typed async function per method over @open-rpc/client-js, grouped by the dotted
// method name (agent.info is client.agent.info()). The client sends the
// Exosphere-Agent-Version header of the API version the document is for.
//
// Usage: node generate.mjs [--bin AGENT] [--version V] [--out DIR]
//   The document comes from `AGENT openrpc` with the repository's methods (and, once the
//   repository has api-versions/, `--api-versions <repo>/api-versions --version V`). The
//   client is written to DIR/src/client.ts and the document to DIR/openrpc.json
//   (default DIR: build/<version>).
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync, rmSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compile } from 'json-schema-to-typescript';

export const here = dirname(fileURLToPath(import.meta.url));
export const repo = resolve(here, '../..');
export const defaultBin = process.env.EXO_AGENT_BIN || join(repo, 'build/exosphere-guest-agent');
const apiVersionsDir = join(repo, 'api-versions');

// JSON-RPC's own error codes, which the document's components.errors (the agent's -32000 to
// -32009) leave out.
const JSONRPC_ERRORS = {
  ParseError: -32700,
  InvalidRequest: -32600,
  MethodNotFound: -32601,
  InvalidParams: -32602,
  InternalError: -32603,
};

// The API versions the repository defines (api-versions/<YYYY-MM-DD>.lua, oldest first), or
// null while it has none: then the agent serves a single version, its document's
// info['x-api-version'].
export function repoVersions() {
  if (!existsSync(apiVersionsDir)) return null;
  return readdirSync(apiVersionsDir)
    .map((f) => f.match(/^(\d{4}-\d{2}-\d{2})\.lua$/))
    .filter(Boolean)
    .map((m) => m[1])
    .sort();
}

// The OpenRPC document of one version (null: the agent's default, which is its current one),
// from the agent's own `openrpc` command. Only the repository's methods: a configuration with
// no operator method directory keeps this machine's /etc out of the client.
export function fetchDocument({ bin = defaultBin, version = null } = {}) {
  const tmp = mkdtempSync(join(tmpdir(), 'exo-client-ts-'));
  try {
    const config = join(tmp, 'agent.conf');
    writeFileSync(config, '[methods]\noperator_dir = ""\n');
    const args = ['openrpc', '--config', config, '--methods', join(repo, 'methods')];
    if (version !== null) args.push('--api-versions', apiVersionsDir, '--version', version);
    const out = execFileSync(bin, args, { encoding: 'utf8', maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'pipe'] });
    return JSON.parse(out);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

const IDENT = /^[A-Za-z_$][A-Za-z0-9_$]*$/;
const key = (s) => (IDENT.test(s) ? s : JSON.stringify(s));
const pascal = (name) => name.split(/[._-]/).filter(Boolean).map((w) => w[0].toUpperCase() + w.slice(1)).join('');

// Keywords that say what a value is; a schema with none of them (only a description) accepts
// any value.
const SHAPE = ['type', 'enum', 'const', 'oneOf', 'anyOf', 'allOf', 'not', '$ref', 'properties', 'items',
  'additionalProperties', 'patternProperties', 'required'];

// json-schema-to-typescript reads a schema with only a description as an object with any
// properties; it is any value: unknown.
function untypedIsUnknown(schema) {
  if (Array.isArray(schema)) return schema.map(untypedIsUnknown);
  if (schema === null || typeof schema !== 'object') return schema;
  const out = {};
  for (const [k, v] of Object.entries(schema)) out[k] = k === 'properties' || k === 'definitions' ?
    Object.fromEntries(Object.entries(v).map(([n, s]) => [n, untypedIsUnknown(s)])) : untypedIsUnknown(v);
  if (!SHAPE.some((k) => k in schema)) out.tsType = 'unknown';
  return out;
}

// TypeScript for one JSON schema, declared as `name` (an interface or a type alias).
async function declare(schema, name) {
  return compile(untypedIsUnknown(schema), name, {
    bannerComment: '',
    format: false,
    // The agent's schemas say additionalProperties: false where it matters; one that does not
    // say so still gets no index signature, so that a misspelt property is a type error.
    additionalProperties: false,
    unknownAny: true,
    // Otherwise maxItems: 16 (gpuPctUsed from 2027-01-15 on) becomes a union of 17 tuples,
    // [] | [number] | ... , which no number[] is assignable to.
    ignoreMinAndMaxItems: true,
    strictIndexSignatures: true,
    declareExternallyReferenced: true,
  });
}

// The schema of a method's params as one object: the client always sends params by name
// (every method of the agent takes them so; by-position methods get the array built from it).
function paramsSchema(m) {
  const schema = { type: 'object', properties: {}, required: [], additionalProperties: false };
  for (const p of m.params) {
    schema.properties[p.name] = { ...p.schema, ...(p.description && !p.schema.description ? { description: p.description } : {}) };
    if (p.required) schema.required.push(p.name);
  }
  return schema;
}

function comment(lines, indent = '') {
  const body = lines.filter(Boolean).flatMap((l) => l.split('\n')).map((l) => `${indent} * ${l.replace(/\*\//g, '*\\/')}`.trimEnd());
  return `${indent}/**\n${body.join('\n')}\n${indent} */\n`;
}

// Every method's TypeScript names, checked for collisions (a_b.c and a.b_c would both be ABC).
function names(doc) {
  const seen = new Map();
  const out = new Map();
  for (const m of [...doc.methods, ...(doc['x-notifications'] || [])]) {
    const base = pascal(m.name);
    if (seen.has(base)) throw new Error(`methods ${seen.get(base)} and ${m.name} both make the TypeScript name ${base}`);
    seen.set(base, m.name);
    out.set(m.name, base);
  }
  return out;
}

// The nested interface of the client: { agent: { info(): ... }, system_load: { ... } }.
function apiTree(doc, tsNames) {
  const root = new Map();
  for (const m of doc.methods) {
    const parts = m.name.split('.');
    let node = root;
    for (const p of parts.slice(0, -1)) {
      if (!node.has(p)) node.set(p, new Map());
      node = node.get(p);
      if (!(node instanceof Map)) throw new Error(`${m.name}: ${p} is both a method and a namespace`);
    }
    const leaf = parts[parts.length - 1];
    if (node.has(leaf)) throw new Error(`${m.name}: ${leaf} is both a method and a namespace`);
    node.set(leaf, m);
  }
  const sig = (m) => {
    const base = tsNames.get(m.name);
    const result = m.result ? `${base}Result` : 'void';
    if (m.params.length === 0) return `(): Promise<${result}>`;
    const optional = m.params.every((p) => !p.required) ? '?' : '';
    return `(params${optional}: ${base}Params): Promise<${result}>`;
  };
  const render = (node, indent) => {
    let s = '';
    for (const [k, v] of node) {
      if (v instanceof Map) {
        s += `${indent}readonly ${key(k)}: {\n${render(v, indent + '  ')}${indent}};\n`;
      } else {
        const tags = [`\`${v.name}\`: ${v.summary || ''}`, v.description,
          `@since ${v['x-since']} (${v['x-stability']}); permission: ${v['x-permission']}`,
          v.deprecated ? '@deprecated' : ''];
        s += comment(tags, indent) + `${indent}${key(k)}${sig(v)};\n`;
      }
    }
    return s;
  };
  const impl = (node, indent) => {
    let s = '';
    for (const [k, v] of node) {
      if (v instanceof Map) {
        s += `${indent}${key(k)}: {\n${impl(v, indent + '  ')}${indent}},\n`;
      } else {
        const base = tsNames.get(v.name);
        const result = v.result ? `${base}Result` : 'void';
        const order = JSON.stringify(v.params.map((p) => p.name));
        const arg = v.params.length ? `params?: ${base}Params` : '';
        const send = v.params.length ? `, params${v.paramStructure === 'by-position' ? `, ${order}` : ''}` : '';
        s += `${indent}${key(k)}: (${arg}) => call<${result}>(${JSON.stringify(v.name)}, ${v.result ? 'true' : 'false'}${send}),\n`;
      }
    }
    return s;
  };
  return { render: render(root, '  '), impl: impl(root, '    ') };
}

// The client's source for one document.
export async function generateSource(doc) {
  const version = doc.info['x-api-version'];
  if (!/^\d{4}-\d{2}-\d{2}$/.test(version || '')) throw new Error(`the document names no API version (info.x-api-version: ${version})`);
  const tsNames = names(doc);
  let types = '';
  for (const m of doc.methods) {
    const base = tsNames.get(m.name);
    if (m.params.length) types += await declare(paramsSchema(m), `${base}Params`);
    if (m.result) types += await declare(m.result.schema, `${base}Result`);
  }
  for (const n of doc['x-notifications'] || []) types += await declare(n.params, `${tsNames.get(n.name)}Params`);
  const errors = { ...JSONRPC_ERRORS };
  for (const [name, e] of Object.entries((doc.components || {}).errors || {})) errors[name] = e.code;
  const notifications = (doc['x-notifications'] || []).map((n) => `  ${JSON.stringify(n.name)}: ${tsNames.get(n.name)}Params;\n`).join('');
  const tree = apiTree(doc, tsNames);
  return `// Generated by tests/client-ts/generate.mjs from the agent's OpenRPC document for API
// version ${version}. Do not edit: regenerate.
import { Client, RequestManager, HTTPTransport, JSONRPCError } from '@open-rpc/client-js';

/** The API version this client was generated for: every request names it. */
export const API_VERSION = ${JSON.stringify(version)} as const;
/** The version of the agent whose document this is. */
export const AGENT_VERSION = ${JSON.stringify(doc.info.version)} as const;
/** The methods of this API version, as the document lists them. */
export const METHODS = ${JSON.stringify(doc.methods.map((m) => m.name))} as const;
export type MethodName = (typeof METHODS)[number];
/** Error codes by name: the agent's (components.errors) and JSON-RPC's. */
export const ERRORS = ${JSON.stringify(errors)} as const;
export type ErrorName = keyof typeof ERRORS;

${types}
/** The params of each notification, by name. */
export interface Notifications {
${notifications}}

/** A JSON-RPC error from the agent (or from the transport: errorName is null then). */
export class AgentError extends Error {
  readonly method: MethodName;
  readonly code: number;
  readonly data: unknown;
  readonly errorName: ErrorName | null;
  constructor(method: MethodName, code: number, message: string, data: unknown) {
    super(\`\${method}: \${message} (\${code})\`);
    this.name = 'AgentError';
    this.method = method;
    this.code = code;
    this.data = data;
    const known = (Object.keys(ERRORS) as ErrorName[]).find((n) => ERRORS[n] === code);
    this.errorName = known === undefined ? null : known;
  }
}

/** The API of version ${version}, one function per method. */
export interface AgentApi {
${tree.render}}

/** A fetch the HTTP transport can use (e.g. one that trusts a particular CA). */
export type Fetcher = (url: string, init: RequestInit) => Promise<Response>;

export interface ClientOptions {
  /** The agent's JSON-RPC endpoint, like https://instance:8443/rpc. */
  url: string;
  /** A bearer token from authenticate.login, sent as Authorization: Bearer. */
  token?: string;
  /** Further headers for every request. */
  headers?: Record<string, string>;
  fetcher?: Fetcher;
  /** Milliseconds before a call fails with the transport's timeout error. */
  timeoutMs?: number;
}

export type AgentClient = AgentApi & {
  readonly apiVersion: typeof API_VERSION;
  /** Ends the transport. */
  close(): void;
};

/** A client over HTTP(S) POST for API version ${version}. */
export function createClient(options: ClientOptions): AgentClient {
  const headers: Record<string, string> = { ...(options.headers || {}), 'Exosphere-Agent-Version': API_VERSION };
  if (options.token !== undefined) headers.Authorization = \`Bearer \${options.token}\`;
  // client-js types its fetcher after isomorphic-fetch, which has no types of its own.
  const transportOptions = { headers, fetcher: options.fetcher as never };
  const rpc = new Client(new RequestManager([new HTTPTransport(options.url, transportOptions)]));
  async function call<R>(method: MethodName, hasResult: boolean, params?: object, order?: string[]): Promise<R> {
    const named = (params || {}) as Record<string, unknown>;
    // By position: in the document's order, without the unset ones at the end.
    let sent: unknown[] | Record<string, unknown> = named;
    if (order) {
      const list = order.map((n) => named[n]);
      while (list.length > 0 && list[list.length - 1] === undefined) list.pop();
      sent = list;
    }
    try {
      if (!hasResult) {
        await rpc.notify({ method, params: sent });
        return undefined as R;
      }
      return (await rpc.request({ method, params: sent }, options.timeoutMs)) as R;
    } catch (e) {
      if (e instanceof JSONRPCError) throw new AgentError(method, e.code, e.message, e.data);
      throw e;
    }
  }
  return {
    apiVersion: API_VERSION,
    close: () => rpc.close(),
${tree.impl}  };
}
`;
}

// Writes DIR/openrpc.json and DIR/src/client.ts for one version, after removing what an earlier
// run left in DIR/src and DIR/out; returns { version, dir, doc }.
export async function generate({ bin = defaultBin, version = null, out = null } = {}) {
  const doc = fetchDocument({ bin, version });
  const v = doc.info['x-api-version'];
  if (version !== null && v !== version) throw new Error(`asked for version ${version}, the document is for ${v}`);
  const dir = out || join(here, 'build', v);
  for (const d of ['src', 'out']) rmSync(join(dir, d), { recursive: true, force: true });
  mkdirSync(join(dir, 'src'), { recursive: true });
  writeFileSync(join(dir, 'openrpc.json'), JSON.stringify(doc, null, 2) + '\n');
  writeFileSync(join(dir, 'src/client.ts'), await generateSource(doc));
  return { version: v, dir, doc };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const opts = {};
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const [flag, val] = [argv[i], argv[i + 1]];
    if (flag === '--bin' && val) opts.bin = val;
    else if (flag === '--version' && val) opts.version = val;
    else if (flag === '--out' && val) opts.out = resolve(val);
    else {
      console.error('usage: node generate.mjs [--bin AGENT] [--version V] [--out DIR]');
      process.exit(2);
    }
    i++;
  }
  const r = await generate(opts);
  console.log(`${r.dir}/src/client.ts: API version ${r.version}, ${r.doc.methods.length} methods`);
}
