-- The host: what the C runtime calls. It loads the method files into sandboxes (init),
-- describes them (discover) and runs one JSON-RPC call per coroutine (call).
--
-- host.call is the body of a fresh coroutine per call. It never raises: every outcome is
-- `true, result` or `false, {code, message, data}`, and the handler runs under xpcall, which
-- Lua 5.4 lets yield, so handlers may wait on the runtime's bindings.

local core = require("exo.core")
local json = require("exo.json")
local schema = require("sandbox.schema")
local errors = require("sandbox.errors")
local method = require("sandbox.method")
local notification = require("sandbox.notification")
local notify = require("sandbox.notify")
local jobs = require("sandbox.jobs")
local registry = require("sandbox.registry")
local env = require("sandbox.env")
local agent = require("sandbox.agent")
local openrpc = require("sandbox.openrpc")
local capabilities = require("sandbox.capabilities")
local pattern_guard = require("sandbox.pattern_guard")
local check = require("sandbox.check")
local auth = require("sandbox.auth")
local versions = require("sandbox.versions")

local M = {}

-- The version an agent without its api-versions files serves its methods under, unless a
-- method names a newer one (sandbox/versions.lua).
M.FIRST_API_VERSION = "2026-12-01"

-- Set by M.init: { registry =, dev =, versions =, documents = {[version] = built on first use} }.
local state

-- Deprecated methods log a warning at most this often each (with the count of calls since).
M.DEPRECATED_LOG_INTERVAL_MS = 60000

-- Bounds on what a failing method can make the host send or log: an error message or a
-- traceback of megabytes would otherwise be copied into every answer and log line.
M.MAX_MESSAGE = 1024
M.MAX_LOG_MESSAGE = 2048
M.MAX_TRACEBACK = 16384
M.MAX_ERROR_DATA = 65536

-- s cut to at most max bytes (at a UTF-8 character boundary), saying how long it was.
local function truncate(s, max)
  if #s <= max then
    return s
  end
  local cut = max
  while cut > 0 and (s:byte(cut + 1) or 0) & 0xC0 == 0x80 do
    cut = cut - 1
  end
  return ("%s... (%d bytes in all)"):format(s:sub(1, cut), #s)
end
M.truncate = truncate

-- A loggable description of an error value. Only strings are shown: tostring on a table
-- would run the method's __tostring here, in the host, where nothing bounds it.
local function message_of(e)
  if type(e) == "string" then
    return truncate(e, M.MAX_LOG_MESSAGE)
  elseif type(e) == "table" or type(e) == "userdata" then
    return ("(error object is a %s value)"):format(type(e))
  end
  return ("(error object is a %s value: %s)"):format(type(e), tostring(e))
end

--------------------------------------------------------------------------------------------
-- Loading.

local function sample_document(version)
  return {
    openrpc = openrpc.OPENRPC_VERSION,
    info = { title = "Exosphere Guest Agent", version = version },
    methods = json.array(),
  }
end

-- rpc.discover is the host's own method; it is declared like any other so that it appears
-- in the document it returns.
local function discover_declaration()
  return method.check({
    name = "rpc.discover",
    summary = "Describe the agent's API",
    description = "Returns the OpenRPC document, the same one served at GET /openrpc.json: every "
      .. "method with its parameters, result, errors, examples, stability and permission.",
    since = "2026-12-01",
    stability = "stable",
    permission = "public",
    result = schema.T.any():describe("The OpenRPC document"),
    examples = {
      { name = "the document (abridged)", params = {}, result = sample_document(core.info().version) },
    },
    handler = function(ctx) return M.discover(ctx.api_version) end,
  }, true)
end

local function json_api()
  return { encode = json.encode, decode = json.decode, null = json.null, array = json.array,
           is_array = json.is_array }
end

local function host_info(s)
  return {
    api_versions = { table.unpack(s.versions.list) },
    current_api_version = s.versions.current,
    methods = s.registry.count,
    skipped = s.registry.skipped,
  }
end

-- dir/name, without doubling a trailing slash of dir (no pattern: dir comes from the
-- configuration and may be long).
local function join(dir, name)
  local n = #dir
  while n > 1 and dir:byte(n) == 47 do
    n = n - 1
  end
  return dir:sub(1, n) .. "/" .. name
end

-- The method files of a directory, sorted by name; nil (and a warning) when it cannot be
-- listed.
local function dir_files(dir)
  if type(core.list_dir) ~= "function" then
    error("host.init: exo.core.list_dir is missing; the runtime cannot list method directories", 0)
  end
  local names, err = core.list_dir(dir)
  if not names then
    core.log("warn", ("method directory %s not loaded: %s"):format(dir, tostring(err)))
    return {}
  end
  local files = {}
  for i, name in ipairs(registry.method_files(names)) do
    files[i] = join(dir, name)
  end
  return files
end
M.dir_files = dir_files

local PATH_LISTS = { "method_dirs", "method_files", "operator_dirs", "operator_files", "operator_capabilities",
  "public_methods", "user_methods", "admin_methods" }

local function check_init_options(opts)
  if type(opts) ~= "table" then
    error("host.init: options must be a table", 3)
  end
  for _, key in ipairs(PATH_LISTS) do
    local list = opts[key]
    if list ~= nil and type(list) ~= "table" then
      error(("host.init: %s must be an array of strings"):format(key), 3)
    end
    for i, path in ipairs(list or {}) do
      if type(path) ~= "string" then
        error(("host.init: %s[%d] must be a string"):format(key, i), 3)
      end
    end
  end
  if opts.api_versions_dir ~= nil and type(opts.api_versions_dir) ~= "string" then
    error("host.init: api_versions_dir must be a string", 3)
  end
  if opts.allow_override ~= nil and type(opts.allow_override) ~= "boolean" then
    error("host.init: allow_override must be a boolean", 3)
  end
  for _, key in ipairs({ "jobs_keep_s", "jobs_max_records" }) do
    if opts[key] ~= nil and (math.type(opts[key]) ~= "integer" or opts[key] < 1) then
      error(("host.init: %s must be a positive integer"):format(key), 3)
    end
  end
end

-- Errors and logs of the pattern guard (sandbox/pattern_guard.lua): a refused pattern is a
-- LimitExceeded for the client, and a warning with the method's line for the operator.
local function install_pattern_guard()
  pattern_guard.limit_error = function(msg)
    return errors.LimitExceeded(truncate(msg, M.MAX_MESSAGE), { limit = "pattern" })
  end
  pattern_guard.on_refuse = function(msg, where)
    core.log("warn", ("%s: %s"):format(where or "(a tail call, no line)", msg))
  end
end

-- The globals of method code (before env.allow_list makes them read-only). `declare` is the
-- `method` function: method.declare, or check mode's collecting one; `declare_notification`
-- the `notification` function (notification.declare unless given).
function M.method_api(declare, info, declare_notification)
  return {
    T = schema.T,
    errors = errors.api(),
    method = declare,
    notification = declare_notification or notification.declare,
    json = json_api(),
    agent = agent.build(info),
  }
end

-- Loads the method files, in this order: opts.method_dirs (each sorted by name), then
-- opts.method_files (tests and tools), then the operator's: opts.operator_dirs and
-- opts.operator_files. Operator methods may only declare capabilities listed in
-- opts.operator_capabilities, and replace a shipped method only with opts.allow_override.
-- A broken file is logged and skipped; this raises only if the host itself cannot start
-- (bad options, an unknown capability in the grants). Returns
-- { methods = <count>, skipped = { {file =, line =?, error =}, ... } }.
-- Method name -> permission level, from the configuration's public_methods, user_methods and
-- admin_methods.
local function permission_overrides(opts)
  local map = {}
  for _, level in ipairs(method.PERMISSION) do
    for _, name in ipairs(opts[level .. "_methods"] or {}) do
      map[name] = level
    end
  end
  return map
end

-- The calls' own ctx (with ctx.auth as the runtime gave it) behind the handler ctx that a
-- builtin handler receives, for notifications.subscribe's permission check.
local raw_ctx = setmetatable({}, { __mode = "k" })

-- Why the caller of handler ctx hctx may not receive notification `name` of permission
-- `level`, or nil.
local function notification_refusal(hctx, name, level)
  return auth.refusal(name, level, raw_ctx[hctx] or {})
end

local T = schema.T
local Version = T.string({ min_len = 10, max_len = 10, pattern = "^%d%d%d%d%-%d%d%-%d%d$" })

-- rpc.hello: the client names the API version it was written for. On a WebSocket session it is
-- the first call and sets the version for the session's lifetime (the runtime keeps it, so a
-- methods reload does not lose it); over HTTP the Exosphere-Agent-Version header does that for
-- each request, and rpc.hello only says what the agent serves.
local function hello_declaration()
  return method.check({
    name = "rpc.hello",
    summary = "Name the API version this client was written for",
    description = "On a WebSocket session, the first call: the session's calls, answers and "
      .. "notifications then take that version's shapes. Over HTTP, send the "
      .. "Exosphere-Agent-Version header with every request instead; rpc.hello there only checks "
      .. "a version and says which ones the agent serves. Without a version the current one "
      .. "applies. An unknown version is refused with the list of supported ones.",
    since = "2026-12-01",
    stability = "stable",
    permission = "public",
    params = T.object({
      version = Version:optional():describe("The API version (a date) the client was written for; "
        .. "without it, the answer names the version in effect"),
    }),
    result = T.object({
      version = Version:describe("The API version in effect for this session (or, over HTTP, this request)"),
      current = Version:describe("The newest API version this agent serves"),
      supported = T.array(Version):describe("Every API version this agent serves, oldest first"),
    }),
    errors = { errors.Unsupported, errors.NotPermitted },
    examples = {
      { name = "a client of the first version", params = { version = "2026-12-01" },
        result = { version = "2026-12-01", current = "2027-01-15", supported = { "2026-12-01", "2027-01-15" } } },
    },
    handler = function(hctx, params)
      local ctx = raw_ctx[hctx] or {}
      local set = state.versions
      local v, err = versions.resolve(set, params.version or ctx.api_version)
      if not v then
        error(errors.Unsupported(err.message, err.data))
      end
      if params.version ~= nil and math.type(ctx.session) == "integer" then
        if (ctx.session_calls or 0) > 0 then
          error(errors.NotPermitted("rpc.hello must be the first call of a WebSocket session: this "
            .. "session has made calls under API version " .. tostring(ctx.api_version or set.current),
            { reason = "not_first_call" }))
        end
        if type(core.session_set_api_version) ~= "function" or not core.session_set_api_version(ctx.session, v) then
          error(errors.Unsupported("this runtime cannot keep a session's API version", { reason = "no_session" }))
        end
      end
      return { version = v, current = set.current, supported = { table.unpack(set.list) } }
    end,
  }, true)
end

-- The API versions (sandbox/versions.lua) of opts.api_versions_dir, bound to the loaded
-- methods. Without the directory's files, the methods are served as they are, under the newest
-- version any of them names.
local function load_versions(opts, reg)
  local set
  if opts.api_versions_dir and opts.api_versions_dir ~= "" then
    local allow = env.allow_list({ T = schema.T, json = json_api(), errors = errors.api() })
    set = versions.load(opts.api_versions_dir, join, core.list_dir, function() return env.build(allow) end, core.log)
  end
  local newest_since = M.FIRST_API_VERSION
  for _, name in ipairs(reg:names()) do
    local since = reg:get(name).since
    if since > newest_since then
      newest_since = since
    end
  end
  if not set then
    set = versions.single(newest_since)
  end
  versions.bind(set, reg, core.log)
  local current = set.list[#set.list]
  for _, name in ipairs(reg:names()) do
    if reg:get(name).since > current then
      core.log("warn", ("method %s is since API version %s, newer than the newest this agent serves (%s): "
        .. "no client can call it"):format(name, reg:get(name).since, current))
    end
  end
  return set
end

function M.init(opts)
  opts = opts or {}
  check_init_options(opts)
  local grants = capabilities.grant_set(opts.operator_capabilities, "host.init: operator_capabilities")
  env.protect_string_metatable()
  install_pattern_guard()
  if type(core.set_capabilities) ~= "function" then
    core.log("error", "this runtime has no core.set_capabilities: its bindings do not check "
      .. "capabilities; only the agent API does")
  end
  local s = { dev = opts.dev == true }
  s.registry = registry.new({ operator_capabilities = grants, allow_override = opts.allow_override })
  local allow = env.allow_list(M.method_api(method.declare, function() return host_info(s) end))
  assert(s.registry:add({ method.get(discover_declaration()), method.get(hello_declaration()) }, "<builtin>"))
  assert(s.registry:add(notify.declarations(), "<builtin>"))
  assert(s.registry:add(jobs.declarations(), "<builtin>"))
  assert(s.registry:add(jobs.notification_declarations(notification), "<builtin>"))
  local auth_module = opts.auth_module
  if auth_module == nil then
    local ok, mod = pcall(require, "exo.auth")
    auth_module = ok and mod or nil
  end
  if auth_module then
    local decls = {}
    for i, token in ipairs(auth.declarations(auth_module)) do
      decls[i] = method.get(token)
    end
    assert(s.registry:add(decls, "<builtin>"))
  end
  s.permissions = permission_overrides(opts)
  local function load_all(files, kind)
    for _, path in ipairs(files) do
      s.registry:load_file(path, env.build(allow), core.log, kind)
    end
  end
  for _, dir in ipairs(opts.method_dirs or {}) do
    load_all(dir_files(dir), "shipped")
  end
  load_all(opts.method_files or {}, "shipped")
  for _, dir in ipairs(opts.operator_dirs or {}) do
    load_all(dir_files(dir), "operator")
  end
  load_all(opts.operator_files or {}, "operator")
  for name, level in pairs(s.permissions) do
    if not s.registry:get(name) then
      core.log("warn", ("[auth] %s_methods names %s, which no loaded method has"):format(level, name))
    end
  end
  s.versions = load_versions(opts, s.registry)
  s.documents = {}
  s.deprecated = {}
  local events = opts.events_module
  if events == nil then
    local ok, mod = pcall(require, "exo.events")
    events = ok and mod or nil
  end
  notify.reset(s.registry, { events = events, refusal = notification_refusal, versions = s.versions })
  local jobs_module = opts.jobs_module
  if jobs_module == nil then
    local ok, mod = pcall(require, "exo.jobs")
    jobs_module = ok and mod or nil
  end
  jobs.reset({
    runtime = jobs_module, keep_s = opts.jobs_keep_s, max_records = opts.jobs_max_records,
    failure = function(name, ctx, e) return M.failure_of(name, ctx, e) end,
    emit = notify.emit_to,
    -- A restored job's method, for its resume function (the registry holds the checked
    -- declarations by name).
    lookup = function(name) return s.registry.by_name[name] end,
  })
  state = s
  core.log("info", ("loaded %d methods; skipped %d method files; API versions %s"):format(s.registry.count,
    #s.registry.skipped, table.concat(s.versions.list, ", ")))
  local skipped = json.array()
  for i, entry in ipairs(s.registry.skipped) do
    skipped[i] = { file = entry.file, line = entry.line, error = entry.error }
  end
  for _, entry in ipairs(s.versions.skipped) do
    skipped[#skipped + 1] = { file = entry.file, error = entry.error }
  end
  return { methods = s.registry.count, skipped = skipped, api_versions = json.array({ table.unpack(s.versions.list) }) }
end

-- Checks method files without serving them (`exosphere-guest-agent check FILE...`); see
-- sandbox/check.lua. Needs no init.
function M.check_files(paths, opts)
  env.protect_string_metatable()
  install_pattern_guard()
  return check.files(paths, opts or {}, M)
end

-- The OpenRPC document of the loaded methods as API version v (default: the current one) sees
-- them, built once per init and version. Raises for a version the agent does not serve.
function M.discover(v)
  if not state then
    error("host.discover: host.init has not run", 2)
  end
  local set = state.versions
  local version, err = versions.resolve(set, v)
  if not version then
    error(err.message, 0)
  end
  if not state.documents[version] then
    local info = core.info()
    local names, notes = versions.names(set, version, state.registry)
    local methods, notifications = {}, {}
    for i, name in ipairs(names) do
      methods[i] = versions.method(set, version, name)
    end
    for i, name in ipairs(notes) do
      notifications[i] = versions.notification(set, version, name)
    end
    state.documents[version] = openrpc.document(methods, notifications, {
      version = info.version,
      api_version = version,
      api_versions = set.list,
      lua_api_level = info.lua_api_level,
    })
  end
  return state.documents[version]
end

--------------------------------------------------------------------------------------------
-- Notifications (sandbox/notify.lua): what the runtime calls outside any call.

-- Sends notification `name` with `params` to its subscribers; returns how many.
M.emit = notify.emit
-- The runtime ended WebSocket session `id`: its subscriptions go.
M.session_closed = notify.session_closed
-- Whether a change of the mount table is worth a mounts.list (someone listens to
-- notify.mounts.*), and the list that such a call returned.
M.mounts_wanted = notify.mounts_wanted
M.mounts_update = notify.mounts_update
-- The sorted names session `id` is subscribed to.
M.subscriptions = notify.subscriptions

--------------------------------------------------------------------------------------------
-- Jobs (sandbox/jobs.lua): what the runtime calls outside any call.

-- The runtime's call for job id ended before the job recorded its end (a deadline, a limit).
M.job_ended = jobs.ended
-- The records the monitor kept, given to a new worker (a list of their stored texts).
M.jobs_restore = jobs.restore

--------------------------------------------------------------------------------------------
-- Calls.

-- Positional params map onto param_order; a missing required one or an extra one is
-- reported by its position.
local function bind_positional(d, list)
  local order, n = d.param_order, #list
  if n > #order then
    return nil, errors.invalid_params(schema.index_path("params", #order + 1),
      ("is one parameter too many: the method takes %d"):format(#order))
  end
  local args = {}
  for i = 1, n do
    args[order[i]] = list[i]
  end
  local ok, path, reason = schema.validate_fields(d.params, args, order, function(_, i)
    return schema.index_path("params", i)
  end)
  if not ok then
    return nil, errors.invalid_params(path, reason)
  end
  return args
end

-- The handler's params (a table by name), or nil and the -32602 error.
local function bind_params(d, params)
  if params == nil then
    params = {}
  elseif type(params) ~= "table" then
    return nil, errors.invalid_params("params", "expected an object or an array")
  elseif json.is_array(params) then
    return bind_positional(d, params)
  end
  local ok, path, reason = method.check_named_params(d, params)
  if not ok then
    return nil, errors.invalid_params(path, reason)
  end
  return params
end

-- ctx.log (a closure and its prefix) is made only when a handler reads it: most calls never
-- log, and the closure and the formatted prefix were a good share of a call's garbage.
local CtxMT = {
  __index = function(t, k)
    if k == "start_job" then
      -- ctx.start_job(opts, fn): sandbox/jobs.lua; made only when a handler reads it, as log.
      local d, ctx = state.registry:get(t.method), raw_ctx[t]
      local start = function(opts, fn) return jobs.start(d, ctx, opts, fn) end
      rawset(t, "start_job", start)
      return start
    elseif k ~= "log" then
      return nil
    end
    local prefix = ("%s (request %s): "):format(t.method, tostring(t.request_id))
    local log = function(level, message)
      local err = agent.level_error(level)
      if err then
        error("ctx.log: " .. err, 2)
      end
      core.log(level, prefix .. tostring(message))
    end
    rawset(t, "log", log)
    return log
  end,
  __metatable = "ctx",
}

-- The caller as a handler sees it: a copy, so that nothing a handler does to it reaches the
-- host's permission checks.
local function handler_auth(a)
  if not a then
    return nil
  end
  local groups = {}
  for i, g in ipairs(a.groups or {}) do
    groups[i] = g
  end
  return { user = a.user, uid = a.uid, gid = a.gid, groups = groups, admin = a.admin == true,
           via = a.via, expires = a.expires }
end

local function handler_ctx(d, ctx)
  local hctx = setmetatable({
    auth = handler_auth(ctx.auth),
    method = d.name,
    request_id = ctx.request_id,
    transport = ctx.transport,
    peer = ctx.peer,
    -- The WebSocket session's id, or nil over HTTP and the Unix socket.
    session = math.type(ctx.session) == "integer" and ctx.session or nil,
    dev = ctx.dev == true,
    deadline_ms = ctx.deadline_ms,
    -- The API version the call runs under (the client's, or the current one).
    api_version = ctx.api_version_in_effect,
  }, CtxMT)
  raw_ctx[hctx] = ctx
  return hctx
end

-- In dev mode the xpcall message handler keeps the traceback of unexpected errors; agent
-- errors are expected outcomes and pass through untouched.
local Failure = {}

local function with_traceback(e)
  if errors.to_rpc(e) then
    return e
  end
  return setmetatable({ err = e, traceback = truncate(debug.traceback(message_of(e), 2), M.MAX_TRACEBACK) }, Failure)
end

local function pass(e)
  return e
end

-- Error data goes to the client as JSON; data that cannot be encoded is dropped (and
-- logged) rather than failing the whole response in the runtime.
local function encodable(d, data)
  if data == nil then
    return nil
  end
  local ok, text = pcall(json.encode, data)
  if not ok then
    core.log("warn", ("method %s raised an error whose data is not JSON; dropped it"):format(d.name))
    return nil
  elseif #text > M.MAX_ERROR_DATA then
    core.log("warn", ("method %s raised an error whose data is %d bytes of JSON, over the limit of %d; dropped it"):format(
      d.name, #text, M.MAX_ERROR_DATA))
    return nil
  end
  return data
end

local function failure(d, ctx, e)
  d = type(d) == "string" and { name = d } or d
  local rpc = errors.to_rpc(e)
  if rpc then
    rpc.message = truncate(rpc.message, M.MAX_MESSAGE)
    rpc.data = encodable(d, rpc.data)
    return rpc
  end
  local traceback
  if getmetatable(e) == Failure then
    e, traceback = e.err, e.traceback
  end
  core.log("error", ("method %s failed (request %s): %s"):format(d.name, tostring(ctx.request_id), message_of(e)))
  return errors.internal({ request_id = ctx.request_id, traceback = ctx.dev and traceback or nil })
end

local function check_dev_result(d, ctx, result)
  local ok, path, reason = schema.validate(d.result, result, "result")
  if ok then
    return true
  end
  core.log("error", ("method %s (request %s): result does not match schema: %s %s"):format(
    d.name, tostring(ctx.request_id), path, reason))
  return false, errors.internal({
    reason = "result does not match schema", path = path, detail = reason, request_id = ctx.request_id,
  })
end

-- The JSON-RPC error of handler failure e of method `name` (for jobs.lua).
function M.failure_of(name, ctx, e)
  return failure(name, ctx, e)
end

-- An idempotent call with a key: the earlier answer (true, value), a Busy refusal (false,
-- err), or nil and the key to run the handler under.
local function idempotent_repeat(d, ctx, args)
  local key = args[method.IDEMPOTENCY_KEY]
  if not d.idempotent or key == nil then
    return nil
  end
  local k = jobs.idem_key(d, ctx, key)
  local ok, prev = pcall(jobs.idem_lookup, k)
  if not ok then
    return false, errors.to_rpc(prev)
  elseif prev ~= nil then
    return true, prev
  end
  jobs.idem_begin(k)
  ctx.idempotency_key_of_call = k
  return nil, k
end

-- Logs a call of a deprecated method: the first, then at most once per
-- DEPRECATED_LOG_INTERVAL_MS per method, with the count of calls since the last line.
local function log_deprecated(d, ctx, v)
  local rec = state.deprecated[d.name]
  if not rec then
    rec = { count = 0 }
    state.deprecated[d.name] = rec
  end
  rec.count = rec.count + 1
  local now = core.now_ms()
  if rec.last and now - rec.last < M.DEPRECATED_LOG_INTERVAL_MS then
    return
  end
  local who = ctx.auth and ctx.auth.user or "an anonymous caller"
  core.log("warn", ("deprecated method %s called by %s (API version %s, request %s); %d call%s since the last "
    .. "such line"):format(d.name, tostring(who), v, tostring(ctx.request_id), rec.count, rec.count == 1 and "" or "s"))
  rec.last, rec.count = now, 0
end

-- The method's work, in the current version's shapes: returns ok, value, and whether value is
-- the method's own (a result or a handler's error, which older versions see through the shims)
-- rather than the host's.
local function run_method(d, ctx, args)
  local repeated, value = idempotent_repeat(d, ctx, args)
  if repeated ~= nil then
    capabilities.end_call()
    return repeated, value, repeated
  end
  local key = value
  local ok, result = xpcall(d.handler, ctx.dev and with_traceback or pass, handler_ctx(d, ctx), args)
  capabilities.end_call()
  if not ok then
    if key then
      jobs.idem_end(key, false)
    end
    local rpc = failure(d, ctx, result)
    return false, rpc, errors.to_rpc(result) ~= nil
  end
  result = result == nil and json.null or schema.normalize(d.result, result)
  if ctx.dev then
    local valid, rerr = check_dev_result(d, ctx, result)
    if not valid then
      if key then
        jobs.idem_end(key, false)
      end
      return false, rerr, false
    end
  end
  if key then
    jobs.idem_end(key, true, result)
  end
  return true, result, true
end

-- A call of an older API version v: params of v's shape up the request shims, the answer
-- back down. `view` is the method as v sees it.
local function run_older(d, view, ctx, args, v)
  local set = state.versions
  local up_ok, up, steps = pcall(versions.upgrade, set, v, d.name, args)
  if not up_ok then
    capabilities.end_call()
    return false, failure(d, ctx, up)
  end
  local valid, path, reason = method.check_named_params(d, up)
  if not valid then
    capabilities.end_call()
    core.log("error", ("API version %s: the request shims of %s give params that do not match it: %s %s"):format(
      v, d.name, path, reason))
    return false, errors.internal({ reason = "API version shim failed", request_id = ctx.request_id })
  end
  local ok, value, own = run_method(d, ctx, up)
  if not own then
    return ok, value
  end
  local down_ok, down = pcall(versions.downgrade, set, v, d.name, ok and "result" or "error", value, steps)
  if not down_ok then
    return false, failure(d, ctx, down)
  end
  if not ok then
    -- An error shim gives a plain {code, message, data} (or an agent error): anything else is
    -- the shim's bug, and the client gets an internal error rather than a malformed answer.
    local e = errors.to_rpc(down) or down
    if type(e) ~= "table" or math.type(e.code) ~= "integer" or type(e.message) ~= "string" then
      core.log("error", ("API version %s: the error shim of %s gave no error object"):format(v, d.name))
      return false, errors.internal({ reason = "API version shim failed", request_id = ctx.request_id })
    end
    return false, { code = e.code, message = truncate(e.message, M.MAX_MESSAGE), data = encodable(d, e.data) }
  end
  down = down == nil and json.null or schema.normalize(view.result, down)
  if ctx.dev then
    local dev_ok, rerr = check_dev_result(view, ctx, down)
    if not dev_ok then
      return false, rerr
    end
  end
  return true, down
end

local function dispatch(name, params, ctx)
  local set = state and state.versions
  local v, verr
  if set then
    v, verr = versions.resolve(set, ctx.api_version)
    if not v and name ~= "rpc.hello" then
      capabilities.begin_call({})
      capabilities.end_call()
      return false, verr
    end
    v = v or set.current
  end
  local d = state and state.registry:get(name)
  local view, missing
  if d then
    view, missing = versions.method(set, v, name)
  end
  if view then
    local refusal = auth.refusal(d.name, state.permissions[d.name] or d.permission, ctx)
    if refusal then
      capabilities.begin_call({})
      capabilities.end_call()
      return false, errors.to_rpc(refusal)
    end
  end
  -- Exactly once per call, before any method code runs: the runtime's bindings check these
  -- grants, and so does the agent API (sandbox/capabilities.lua).
  local granted = view and d.capabilities or {}
  if core.set_capabilities then
    core.set_capabilities(granted)
  end
  capabilities.begin_call(granted)
  if not view then
    return false, missing or errors.method_not_found(name)
  end
  local args, err = bind_params(view, params)
  if not args then
    return false, err
  end
  ctx.api_version_in_effect = v
  if d.stability == "deprecated" then
    log_deprecated(d, ctx, v)
  end
  if v ~= set.current then
    return run_older(d, view, ctx, args, v)
  end
  local ok, value = run_method(d, ctx, args)
  return ok, value
end

-- Runs one call. `ctx` = { request_id, transport, peer, dev, deadline_ms, session (the
-- WebSocket session's id, when the call came on one) }; a missing dev
-- falls back to init's. Returns true, result or false, err; never raises.
function M.call(name, params, ctx)
  ctx = type(ctx) == "table" and ctx or {}
  if ctx.dev == nil and state then
    ctx.dev = state.dev
  end
  local ok, done, value
  if type(ctx.job) == "string" then
    -- The runtime's call for a job (only C sets ctx.job; no request can).
    ok, done, value = pcall(jobs.run, ctx.job, ctx, with_traceback, pass)
  else
    ok, done, value = pcall(dispatch, name, params, ctx)
  end
  if ok then
    return done, value
  end
  -- A bug in the host itself: still answer the call.
  core.log("error", ("host failed on %s (request %s): %s"):format(tostring(name), tostring(ctx.request_id), message_of(done)))
  return false, errors.internal({ request_id = ctx.request_id })
end

-- Checks a result against the method's result schema the way host.call does in dev mode
-- (after marking its arrays in place). Returns true or false, path, reason.
function M.check_result(name, result)
  local d = state and state.registry:get(name)
  if not d then
    return false, nil, "no such method: " .. tostring(name)
  end
  return schema.validate(d.result, result == nil and json.null or schema.normalize(d.result, result), "result")
end
M.validate_result = M.check_result

-- Checks params (by name or positional) the way host.call does before running a handler.
-- Returns true or false, path, reason.
function M.check_params(name, params)
  local d = state and state.registry:get(name)
  if not d then
    return false, nil, "no such method: " .. tostring(name)
  end
  local args, err = bind_params(d, params)
  if not args then
    return false, err.data.path, err.data.reason
  end
  return true
end

return M
