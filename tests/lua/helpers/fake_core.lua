-- A fake exo.core for the busted specs, with the C module's interface (the contract in
-- docs/method-authoring.md). Each spec sets what the "machine" looks like:
--
--   core.files["/proc/meminfo"] = "MemTotal: ..."          -- read_file content
--   core.statfs_results["/"] = { bsize = 4096, ... }       -- statfs answers
--   core.programs["nvidia-smi"] = function(argv, opts) return { exit = 0, stdout = "5\n" } end
--   core.cpu = 12; core.unix_time = 1764072000; core.host_name = "vm-1"
--
-- Like the C bindings, sleep, read_file, spawn and statfs yield the calling coroutine; the
-- driver (M.drive, used by kit.lua) resumes it with the results, advancing the fake clock
-- for sleeps. Calling them outside a coroutine raises, as in the runtime. A program that is
-- not in `programs` is "not found", like a missing executable.

local M = {}

local DEFAULTS = {
  clock_ms = 1000000,
  unix_time = 1764072000,
  started = 1764070000,
  cpu = 0,
  host_name = "test-instance",
  version = "0.1.0",
  lua_api_level = 1,
}

function M.reset()
  for k, v in pairs(DEFAULTS) do
    M[k] = v
  end
  M.files, M.statfs_results, M.programs, M.dirs = {}, {}, {}, {}
  M.logs, M.spawned, M.yields = {}, {}, 0
end

-- What a yielding binding hands to the driver: the results to resume with.
local function yield_with(op, ...)
  M.yields = M.yields + 1
  return coroutine.yield({ op = op, results = table.pack(...) })
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
  }
end

function M.sleep(ms)
  assert(math.type(ms) == "integer" and ms >= 0, "sleep: bad ms")
  local result = yield_with("sleep")
  M.clock_ms = M.clock_ms + ms
  return result
end

function M.read_file(path, max_bytes)
  assert(type(path) == "string" and math.type(max_bytes) == "integer", "read_file: bad arguments")
  local content = M.files[path]
  if content == nil then
    return yield_with("read_file", nil, "ENOENT: no such file or directory: " .. path)
  end
  return yield_with("read_file", content:sub(1, max_bytes))
end

function M.statfs(path)
  local r = M.statfs_results[path]
  if r == nil then
    return yield_with("statfs", nil, "ENOENT: no such file or directory: " .. path)
  end
  return yield_with("statfs", r)
end

local function complete(res)
  return {
    exit = res.exit, signal = res.signal, stdout = res.stdout or "", stderr = res.stderr or "",
    timed_out = res.timed_out == true, truncated = res.truncated == true,
  }
end

function M.spawn(argv, opts)
  assert(type(argv) == "table" and type(argv[1]) == "string", "spawn: bad argv")
  M.spawned[#M.spawned + 1] = { argv = argv, opts = opts }
  local program = M.programs[argv[1]]
  if program == nil then
    return yield_with("spawn", nil, "not found: " .. argv[1])
  end
  local res, err = program(argv, opts)
  if res == nil then
    return yield_with("spawn", nil, err)
  end
  return yield_with("spawn", complete(res))
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

-- Runs f(...) in a new coroutine the way the runtime does: every yield is a pending binding
-- whose results go back in on resume. Returns what f returned; raises if f raised.
function M.drive(f, ...)
  local co = coroutine.create(f)
  local out = table.pack(coroutine.resume(co, ...))
  while coroutine.status(co) == "suspended" do
    local pending = out[2]
    assert(type(pending) == "table" and pending.results, "coroutine yielded something that is not a binding")
    out = table.pack(coroutine.resume(co, table.unpack(pending.results, 1, pending.results.n)))
  end
  if not out[1] then
    error(out[2], 0)
  end
  return table.unpack(out, 2, out.n)
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
