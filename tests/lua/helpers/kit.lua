-- The method test kit: runs methods through the real host (sandbox, parameter checks,
-- result checks) on a fake exo.core, so a method's spec needs no daemon and no root.
--
--   local kit = require("tests.lua.helpers.kit")
--   local k = kit.new({ files = { "methods/system_load.lua" } })
--   k.core.files["/proc/meminfo"] = "MemTotal: 1000 kB\nMemAvailable: 250 kB\n"
--   local result = k:call_ok("system_load.current")
--   k.load.samples = { { epoch = 1764072000, cpuPctUsed = 3, ... } }   -- agent.load_history
--
-- An operator method is tested the same way, loaded as the agent would load it from
-- methods.d, with the capabilities the configuration grants:
--
--   local k = kit.new({ operator_files = { "site_motd.lua" }, operator_capabilities = { "system.read" } })
--
-- Calls run in a coroutine driven like the runtime drives it (bindings yield). The kit
-- defaults to dev mode, so every result is checked against the method's result schema and
-- a mismatch fails the call. See docs/method-authoring.md.

local setup = require("tests.lua.helpers.setup")
local env = require("sandbox.env")

local M = {}

M.json = setup.json
M.core = setup.core

local Kit = {}
Kit.__index = Kit

-- Instructions a call may run in the kit unless opts.instruction_limit says otherwise: far
-- more than any method needs, few enough that a runaway loop fails in well under a second.
M.INSTRUCTION_LIMIT = 50000000

-- The repository's api-versions/ (busted runs from the repository's top).
M.API_VERSIONS_DIR = "api-versions"

-- opts: files = { paths }, dirs = { paths } (shipped methods); operator_files = { paths },
-- operator_dirs = { paths }, operator_capabilities = { names }, allow_override = bool (the
-- operator's, as the [methods] configuration gives them); instruction_limit = n (per call,
-- like [methods] call_instruction_limit); dev = false to test production behaviour;
-- public_methods/user_methods/admin_methods = { names } (the [auth] overrides); auth_module =
-- a stand-in for the runtime's exo.auth (without one, no authenticate.* methods are loaded);
-- api_versions_dir = a directory of API version files (default: the repository's; false: none).
function M.new(opts)
  opts = opts or {}
  setup.core.reset()
  setup.load.reset()
  setup.packages.reset()
  local host = require("sandbox.host")
  local summary = host.init({
    dev = opts.dev ~= false,
    method_dirs = opts.dirs or {},
    method_files = opts.files or {},
    -- The shipped API versions (api-versions/), unless a spec brings its own or none (false).
    api_versions_dir = opts.api_versions_dir ~= false and (opts.api_versions_dir or M.API_VERSIONS_DIR) or nil,
    operator_dirs = opts.operator_dirs,
    operator_files = opts.operator_files,
    operator_capabilities = opts.operator_capabilities,
    allow_override = opts.allow_override,
    auth_module = opts.auth_module,
    public_methods = opts.public_methods,
    user_methods = opts.user_methods,
    admin_methods = opts.admin_methods,
    jobs_keep_s = opts.jobs_keep_s,
    jobs_max_records = opts.jobs_max_records,
  })
  -- The host hides and guards the string metatable for method code (sandbox/env.lua); the
  -- spec's own code (busted, luassert) gets the standard one back between calls.
  setup.restore_string_metatable()
  -- A method that loops forever fails its spec instead of hanging it.
  setup.core.instruction_limit = opts.instruction_limit or M.INSTRUCTION_LIMIT
  return setmetatable({ host = host, core = setup.core, load = setup.load, json = setup.json, summary = summary,
                        dev = opts.dev ~= false }, Kit)
end

-- The caller the kit calls as unless told otherwise: an administrator, as the Unix socket
-- knows one, so that specs test what a method does rather than who may call it. Pass
-- `{ auth = false }` for an anonymous caller, or a table of your own.
Kit.ADMIN = { user = "exouser", uid = 1000, gid = 1000, groups = { "exouser", "sudo" }, admin = true,
              allowed = true, via = "unix" }
Kit.USER = { user = "alice", uid = 1001, gid = 1001, groups = { "alice" }, admin = false, allowed = true,
             via = "token", expires = 4102444800 }

-- The ctx the runtime would pass; `overrides` replaces fields.
function Kit:ctx(overrides)
  local ctx = {
    request_id = "req-1",
    transport = "unix",
    peer = "uid:1000",
    dev = self.dev,
    deadline_ms = self.core.now_ms() + 30000,
    auth = Kit.ADMIN,
  }
  for k, v in pairs(overrides or {}) do
    ctx[k] = v
  end
  if ctx.auth == false then
    ctx.auth = nil
  end
  return ctx
end

-- host.call in a driven coroutine: returns ok, result-or-error exactly as host.call does.
function Kit:call(name, params, ctx)
  env.protect_string_metatable()
  local out = table.pack(pcall(self.core.drive, self.host.call, name, params, self:ctx(ctx)))
  setup.restore_string_metatable()
  if not out[1] then
    error(out[2], 0)
  end
  return table.unpack(out, 2, out.n)
end

-- The result of a call that must succeed; a failure raises with the JSON-RPC error.
function Kit:call_ok(name, params, ctx)
  local ok, value = self:call(name, params, ctx)
  if not ok then
    error(("%s failed: %s"):format(name, self.json.encode(value)), 2)
  end
  return value
end

-- Like call, but params and the answer go through JSON as on the wire, so the spec sees
-- what a client would (arrays stay arrays, null is json.null).
function Kit:rpc(name, params, ctx)
  local wire = params
  if params ~= nil then
    wire = assert(self.json.decode(self.json.encode(params)))
  end
  local ok, value = self:call(name, wire, ctx)
  return ok, assert(self.json.decode(self.json.encode(value)))
end

-- The encoded answer, for exact comparisons with the documented shape.
function Kit:rpc_text(name, params, ctx)
  local ok, value = self:call(name, params, ctx)
  return ok, self.json.encode(value)
end

-- Runs the jobs that handlers started, as the runtime would on its next turn: each one in a
-- call of its own with ctx.job, as the agent's internal identity. Returns how many ran.
Kit.AGENT = { user = "(agent)", uid = 0, gid = 0, groups = {}, admin = true, allowed = true, via = "agent" }
function Kit:run_jobs()
  local n = 0
  while #self.core.job_queue > 0 do
    local id = table.remove(self.core.job_queue, 1)
    self:call("jobs.run", nil, { job = id, auth = Kit.AGENT, request_id = "job-" .. id, transport = "agent" })
    n = n + 1
  end
  return n
end

-- The notifications session `id` received, decoded.
function Kit:received(id)
  local out = {}
  for i, text in ipairs(self.core.sent[id] or {}) do
    out[i] = self.json.decode(text)
  end
  return out
end

function Kit:logged(level, text)
  return self.core.logged(level, text)
end

M.ADMIN = Kit.ADMIN
M.USER = Kit.USER

return M
