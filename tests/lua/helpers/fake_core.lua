-- A fake exo.core for the busted specs, with the C module's interface (the contract in
-- docs/method-authoring.md). Each spec sets what the "machine" looks like:
--
--   core.files["/proc/meminfo"] = "MemTotal: ..."          -- read_file content
--   core.statfs_results["/"] = { bsize = 4096, ... }       -- statfs answers
--   core.programs["nvidia-smi"] = function(argv, opts) return { exit = 0, stdout = "5\n" } end
--   core.cpu = 12; core.unix_time = 1764072000; core.host_name = "vm-1"
--
-- Like the C bindings, sleep, read_file, spawn and statfs wait: they yield the innermost
-- running coroutine with no values, and the driver (M.drive, used by kit.lua) resumes the
-- call's OUTERMOST coroutine with their results (the host's coroutine library passes the
-- yield up through the method's own coroutines), advancing the fake clock for sleeps.
-- Outside a call they raise, as in the runtime. As in the runtime, host.call must call
-- set_capabilities exactly once per call, and read_file and statfs need "system.read",
-- spawn "process.run". A program that is not in `programs` is "not found", like a missing
-- executable.
--
-- The WebSocket transport's side of notifications: session_send(id, text) records what a
-- session received in `sent[id]` and answers false for a session in `closed_sessions`;
-- `events.mounts_snapshot()` (exo.events) counts the host's requests in `snapshots`.

local M = {}

local DEFAULTS = {
  clock_ms = 1000000,
  unix_time = 1764072000,
  started = 1764070000,
  cpu = 0,
  host_name = "test-instance",
  packages_backend = "apt",
  version = "0.1.0",
  lua_api_level = 2,
}

function M.reset()
  for k, v in pairs(DEFAULTS) do
    M[k] = v
  end
  M.generation, M.watching_mounts = 1, true
  M.metadata_body, M.metadata_error, M.metadata_fetches = nil, "not configured", 0
  -- exo.mounts: what the monitor would answer. probes[device] = table, or { nil, code, msg };
  -- mount_answer / unmount_answer / mkfs_answer / cephfs_answer = function(args) -> results.
  M.mount_config = { volume_prefix = "/media/volume", share_prefix = "/media/share", owner = "exouser" }
  M.probes, M.monitor_calls = {}, {}
  M.mkfs_answer, M.mount_answer, M.unmount_answer, M.cephfs_answer = nil, nil, nil, nil
  M.files, M.statfs_results, M.programs, M.dirs = {}, {}, {}, {}
  M.logs, M.spawned, M.yields, M.preemptions = {}, {}, 0, 0
  M.call, M.pending = nil, nil
  M.instruction_limit = nil
  -- WebSocket sessions (the transport's side): sent[id] = { text, ... } of what session_send
  -- delivered; a session listed in closed_sessions is gone (session_send answers false).
  M.sent, M.closed_sessions = {}, {}
  -- session_versions[id]: what rpc.hello set with session_set_api_version.
  M.session_versions = {}
  -- exo.events: how many times the host asked for a mounts baseline.
  M.snapshots = 0
  -- exo.jobs: job ids the host asked to run (in order, until kit:run_jobs runs them), the
  -- ids it cancelled, the records it stored ({ id, expiry, text }), and the ids new_id gives.
  M.job_queue, M.job_cancels, M.job_puts, M.job_seq = {}, {}, {}, 0
  M.job_put_fails = false
end

-- The call being driven ({ capabilities = set or nil }), or nil outside a call: like the
-- runtime, the fake knows the call for the whole time its coroutines run.
local function current_call(what)
  if M.call == nil then
    error(what .. ": this function waits and can only be used while handling a call", 3)
  end
  return M.call
end

local function need(what, capability)
  local call = current_call(what)
  if call.capabilities == nil then
    error(what .. ": host.call did not call set_capabilities before the handler", 3)
  elseif not call.capabilities[capability] then
    error(("capability '%s' is not granted to this method"):format(capability), 3)
  end
end

-- A binding that waits: records the results the driver resumes the call with, and yields
-- the innermost coroutine with no values.
local function yield_with(...)
  M.yields = M.yields + 1
  M.pending = table.pack(...)
  return coroutine.yield()
end

-- For the fakes of other modules (fake_packages.lua), which check and wait the same way.
M.need, M.yield_with = need, yield_with

function M.set_capabilities(list)
  local call = current_call("set_capabilities")
  if call.capabilities ~= nil then
    error("set_capabilities: called twice in one call", 2)
  end
  assert(type(list) == "table", "set_capabilities: expected an array of names")
  call.capabilities = {}
  for _, name in ipairs(list) do
    call.capabilities[name] = true
  end
end

function M.log(level, message)
  assert(level == "debug" or level == "info" or level == "warn" or level == "error", "bad log level")
  assert(type(message) == "string", "log message must be a string")
  M.logs[#M.logs + 1] = { level = level, message = message }
end

function M.now_ms() return M.clock_ms end
function M.time() return M.unix_time end
function M.cpu_percent() return M.cpu end
function M.hostname() return M.host_name end

function M.info()
  return {
    version = M.version,
    lua_api_level = M.lua_api_level,
    started = M.started,
    uptime = M.unix_time - M.started,
    packages_backend = M.packages_backend,
  }
end

function M.sleep(ms)
  current_call("sleep")
  assert(math.type(ms) == "integer" and ms >= 0, "sleep: bad ms")
  local result = yield_with(true)
  M.clock_ms = M.clock_ms + ms
  return result
end

function M.read_file(path, max_bytes)
  need("read_file", "system.read")
  assert(type(path) == "string" and math.type(max_bytes) == "integer", "read_file: bad arguments")
  local content = M.files[path]
  if content == nil then
    return yield_with(nil, "ENOENT: no such file or directory: " .. path)
  end
  return yield_with(content:sub(1, max_bytes))
end

function M.statfs(path)
  need("statfs", "system.read")
  local r = M.statfs_results[path]
  if r == nil then
    return yield_with(nil, "ENOENT: no such file or directory: " .. path)
  end
  return yield_with(r)
end

local function complete(res)
  return {
    exit = res.exit, signal = res.signal, stdout = res.stdout or "", stderr = res.stderr or "",
    timed_out = res.timed_out == true, truncated = res.truncated == true,
  }
end

function M.spawn(argv, opts)
  need("spawn", "process.run")
  assert(type(argv) == "table" and type(argv[1]) == "string", "spawn: bad argv")
  M.spawned[#M.spawned + 1] = { argv = argv, opts = opts }
  local program = M.programs[argv[1]]
  if program == nil then
    return yield_with(nil, "not found: " .. argv[1])
  end
  local res, err = program(argv, opts)
  if res == nil then
    return yield_with(nil, err)
  end
  return yield_with(complete(res))
end

function M.mount_generation() return M.generation, M.watching_mounts end

-- exo.metadata (runtime/l_metadata.c): the configured document, or nil, err.
M.metadata = {}
function M.metadata.fetch()
  need("metadata.fetch", "metadata.read")
  M.metadata_fetches = M.metadata_fetches + 1
  if M.metadata_body then
    return yield_with(M.metadata_body)
  end
  return yield_with(nil, M.metadata_error)
end

-- exo.mounts (runtime/l_mounts.c): every call is recorded in monitor_calls as
-- { op, args... }; the answers come from the spec's tables and functions.
M.mounts = {}
function M.mounts.config()
  need("mounts.config", "mounts.read")
  local c = {}
  for k, v in pairs(M.mount_config) do
    c[k] = v
  end
  return c
end

local function monitor(op, capability, answer, ...)
  need("mounts." .. op, capability)
  M.monitor_calls[#M.monitor_calls + 1] = { op, ... }
  if answer == nil then
    return yield_with(nil, "failed", "the fake monitor has no answer for " .. op)
  end
  return yield_with(answer(...))
end

function M.mounts.probe(device)
  return monitor("probe", "mounts.read", function(d)
    local p = M.probes[d]
    if p == nil then
      return nil, "not_found", d .. ": no such device"
    elseif p[1] == nil and p[2] then
      return table.unpack(p, 1, 3)
    end
    return p
  end, device)
end

function M.mounts.mkfs(...) return monitor("mkfs", "mounts.write", M.mkfs_answer, ...) end
function M.mounts.mount(...) return monitor("mount", "mounts.write", M.mount_answer, ...) end
function M.mounts.unmount(...) return monitor("unmount", "mounts.write", M.unmount_answer, ...) end
function M.mounts.cephfs_mount(...) return monitor("cephfs_mount", "mounts.write", M.cephfs_answer, ...) end

-- Test hook: yields like the runtime's count hook when it preempts a call (no values, no
-- pending results); the driver resumes the call with no values.
function M.preempt()
  current_call("preempt")
  M.preemptions = M.preemptions + 1
  coroutine.yield()
end

-- Directory listings come from the real file system (method dirs in the repository), or
-- from M.dirs[path] when a spec sets one.
function M.list_dir(path)
  if M.dirs[path] then
    return M.dirs[path]
  end
  local ok, lfs = pcall(require, "lfs")
  assert(ok, "the fake list_dir needs LuaFileSystem (lua-filesystem)")
  local names = {}
  local iter_ok, iter, state = pcall(lfs.dir, path)
  if not iter_ok then
    return nil, tostring(iter)
  end
  for name in iter, state do
    if name ~= "." and name ~= ".." then
      names[#names + 1] = name
    end
  end
  return names
end

-- The instruction budget, like the runtime's: with M.instruction_limit set, a count hook
-- on the call's coroutine (and on every coroutine created while it runs, see
-- hook_new_thread) stops the call once it has run that many instructions. A Lua hook cannot
-- yield the way the runtime's does, so it raises, and then raises again at every
-- instruction, which no pcall can get past; drive then answers for the host, as the runtime
-- does: -32007 with data.limit = "instructions".
local HOOK_STEP = 1000
local hooks = setmetatable({}, { __mode = "k" })

local function budget_hook(state)
  local function hook()
    if not state.killed then
      state.used = state.used + HOOK_STEP
      if state.used <= state.limit then
        return
      end
      state.killed = true
    end
    debug.sethook(hook, "", 1)
    error("instruction budget exceeded", 2)
  end
  return hook
end

-- Called by the coroutine.create that setup.lua installs: a coroutine created during a
-- call with a budget gets the call's hook (Lua hooks are per coroutine).
function M.hook_new_thread(co)
  local hook = hooks[coroutine.running()]
  if hook then
    debug.sethook(co, hook, "", HOOK_STEP)
    hooks[co] = hook
  end
end

local function limit_error(state)
  return { code = -32007, message = "Limit exceeded", data = { limit = "instructions", used = state.used } }
end

-- Runs f(...) as a call, in a new coroutine, the way the runtime does: each yield of a
-- binding is answered by resuming the coroutine with the binding's results; a yield without
-- one (M.preempt) is resumed with no values. Returns what f returned; raises if f raised.
-- M.MAX_ROUNDS bounds the resumes, so that a host bug cannot hang the specs.
M.MAX_ROUNDS = 100000

function M.drive(f, ...)
  local co = coroutine.create(f)
  local outer_call = M.call
  M.call = {}
  local state = { used = 0, limit = M.instruction_limit, killed = false }
  if state.limit then
    hooks[co] = budget_hook(state)
    debug.sethook(co, hooks[co], "", HOOK_STEP)
  end
  local out = table.pack(coroutine.resume(co, ...))
  local rounds = 0
  while coroutine.status(co) == "suspended" do
    rounds = rounds + 1
    assert(rounds <= M.MAX_ROUNDS, "the call yielded too many times")
    assert(out.n == 1, "a call yielded values: only the runtime's no-value yields may reach it")
    local pending = M.pending or { n = 0 }
    M.pending = nil
    out = table.pack(coroutine.resume(co, table.unpack(pending, 1, pending.n)))
  end
  M.call = outer_call
  if state.killed then
    return false, limit_error(state)
  elseif not out[1] then
    error(out[2], 0)
  end
  return table.unpack(out, 2, out.n)
end

-- Like drive, for calling bindings (or agent API functions) directly: the call is granted
-- `capabilities` (an array of names) first, as host.call would.
function M.drive_with(capabilities, f, ...)
  return M.drive(function(...)
    M.set_capabilities(capabilities)
    return f(...)
  end, ...)
end

-- The WebSocket transport's send: true once queued, false when the session is gone or closing.
function M.session_send(id, text)
  if math.type(id) ~= "integer" or type(text) ~= "string" then
    error("session_send: expected an integer session id and a string", 2)
  end
  if M.closed_sessions[id] then
    return false
  end
  M.sent[id] = M.sent[id] or {}
  table.insert(M.sent[id], text)
  return true
end

-- rpc.hello's: keeps a session's API version (runtime/ws.c); false when the session is gone.
function M.session_set_api_version(id, version)
  if math.type(id) ~= "integer" or type(version) ~= "string" then
    error("session_set_api_version: expected an integer session id and a string", 2)
  end
  if M.closed_sessions[id] then
    return false
  end
  M.session_versions[id] = version
  return true
end

-- exo.events, the runtime's event sources (runtime/events.c).
M.events = {}
function M.events.mounts_snapshot()
  M.snapshots = M.snapshots + 1
  return true
end

-- exo.jobs, the runtime's side of jobs (runtime/jobs.c): the kit runs the queued ones.
M.jobs = {}
function M.jobs.new_id()
  M.job_seq = M.job_seq + 1
  return ("%032x"):format(M.job_seq)
end
function M.jobs.start(id)
  if type(id) ~= "string" then
    error("exo.jobs.start: expected a job id", 2)
  end
  table.insert(M.job_queue, id)
  return true
end
function M.jobs.cancel(id)
  M.job_cancels[#M.job_cancels + 1] = id
  for i, queued in ipairs(M.job_queue) do
    if queued == id then
      table.remove(M.job_queue, i)
      break
    end
  end
  return true
end
function M.jobs.put(id, expiry, text)
  if M.job_put_fails then
    return nil, "the monitor is away"
  end
  M.job_puts[#M.job_puts + 1] = { id = id, expiry = expiry, text = text }
  return true
end

-- Log lines at `level` (or all) whose message contains `text` (plain).
function M.logged(level, text)
  local found = {}
  for _, l in ipairs(M.logs) do
    if (level == nil or l.level == level) and (text == nil or l.message:find(text, 1, true)) then
      found[#found + 1] = l.message
    end
  end
  return found
end

M.reset()

return M
