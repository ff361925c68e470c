-- The `agent` global of method code: a small API over exo.core (docs/method-authoring.md).
--
-- It checks arguments so that misuse raises at the method's line, and keeps what methods may
-- reach narrow: files only under /proc and /sys for now, programs without a shell. Expected
-- failures come back as nil, err, as from exo.core. Functions marked "yields" suspend the
-- calling request's coroutine until the runtime has the answer.

local core = require("exo.core")
-- The monitor's mount operations (runtime/l_mounts.c); each function checks its capability
-- (mounts.read or mounts.write) and its arguments itself, and raises on misuse.
local mounts = require("exo.mounts")
local capabilities = require("sandbox.capabilities")

-- The unguarded library functions, for the linear scans of lines and split below.
local find, gmatch, sub = string.find, string.gmatch, string.sub

local M = {}

local LEVELS = { debug = true, info = true, warn = true, error = true }
local MiB = 1024 * 1024
local DEFAULT_READ_MAX = MiB
local READ_MAX = 16 * MiB
local DEFAULT_TIMEOUT_MS = 10000
local DEFAULT_OUTPUT_MAX = MiB

-- Entries under /proc that lead out of /proc (magic links to other file systems) or expose
-- the worker's own secrets (environment, memory, open files).
local PROC_DENY = {
  root = true, cwd = true, exe = true, fd = true, fdinfo = true, map_files = true,
  mem = true, environ = true,
}

-- Argument checks return a message; the API function raises it at level 2, so the error
-- names the method's line.
function M.level_error(level)
  if not LEVELS[level] then
    return ("log level must be one of debug, info, warn, error (got %s)"):format(tostring(level))
  end
end

-- Whether a method may read `path`. Symlinks inside /sys stay inside /sys; the links that
-- leave /proc are refused by name. The C side is expected to refuse magic links as well
-- (see docs/method-authoring.md); this check is the policy, stated in one place.
function M.readable(path)
  local top = path:match("^/(%a+)/")
  if top ~= "proc" and top ~= "sys" then
    return false
  end
  for part in path:gmatch("[^/]+") do
    if part == "." or part == ".." or (top == "proc" and PROC_DENY[part]) then
      return false
    end
  end
  return not path:find("//", 1, true)
end

local function is_positive_int(v)
  return math.type(v) == "integer" and v > 0
end

-- A copy of argv (so the caller cannot change it while the spawn is pending), or nil, err.
local function check_argv(argv)
  if type(argv) ~= "table" or argv[1] == nil then
    return nil, "argv must be a non-empty array of strings"
  end
  local copied = {}
  for i = 1, #argv do
    if type(argv[i]) ~= "string" then
      return nil, ("argv[%d] must be a string, got %s"):format(i, type(argv[i]))
    end
    copied[i] = argv[i]
  end
  return copied
end

-- core.spawn's options with our defaults filled in, or nil, err.
local function run_options(opts)
  if opts ~= nil and type(opts) ~= "table" then
    return nil, "opts must be a table"
  end
  local out = { timeout_ms = DEFAULT_TIMEOUT_MS, max_output = DEFAULT_OUTPUT_MAX }
  for k, v in pairs(opts or {}) do
    if k == "timeout_ms" or k == "max_output" then
      if not is_positive_int(v) then
        return nil, k .. " must be a positive integer"
      end
      out[k] = v
    elseif k == "stdin" and type(v) == "string" then
      out.stdin = v
    else
      return nil, ("bad option '%s'"):format(tostring(k))
    end
  end
  return out
end

local function raise(fmt, ...)
  error(fmt:format(...), 3)
end

local function copy_skipped(skipped)
  local out = {}
  for i, s in ipairs(skipped) do
    out[i] = { file = s.file, line = s.line, error = s.error }
  end
  return out
end

-- Raises (at the method's line) unless the running call holds capability `name`.
local function need(name)
  capabilities.require(name, 3)
end

-- The host's own isyieldable: whether the running coroutine can yield right now.
local can_yield = coroutine.isyieldable

-- A binding that waits yields the running coroutine. Inside a C function that cannot yield
-- (a table.sort comparator, a string.gsub replacement function, a __tostring called by
-- tostring) the yield would fail after the runtime had started the operation, whose answer
-- would then resume the call at the wrong place; so such a call is refused before it starts.
local function can_wait(fname)
  if not can_yield() then
    error(("agent.%s cannot wait here: a C function that cannot yield (table.sort's comparator, "
      .. "a string.gsub replacement function, tostring) is running"):format(fname), 3)
  end
end

-- agent.lines(s): an iterator over the lines of s, without their "\n" or "\r\n". A final
-- line without a newline is included; an empty s has no lines. Built on plain find, so it is
-- linear whatever the text (patterns like "[^\n]+" are too, but do not keep empty lines).
function M.lines(s)
  if type(s) ~= "string" then
    error(("agent.lines: expected a string, got %s"):format(type(s)), 2)
  end
  local pos, len = 1, #s
  return function()
    if pos > len then
      return nil
    end
    local nl = find(s, "\n", pos, true)
    local line = sub(s, pos, nl and nl - 1 or len)
    pos = (nl or len) + 1
    if nl and sub(line, -1) == "\r" then
      line = sub(line, 1, -2)
    end
    return line
  end
end

local MAX_SEP = 64

-- agent.split(s[, sep]): the fields of s as an array. With sep (a plain string, not a
-- pattern), the pieces between separators, empty ones included: split("a,,b", ",") is
-- {"a", "", "b"}. Without sep, the runs of non-space characters: split(" a  b ") is
-- {"a", "b"}. Linear in the length of s.
function M.split(s, sep)
  if type(s) ~= "string" then
    error(("agent.split: expected a string, got %s"):format(type(s)), 2)
  elseif sep ~= nil and (type(sep) ~= "string" or sep == "" or #sep > MAX_SEP) then
    -- Bounded, since a plain search compares the separator at each candidate position.
    error(("agent.split: sep must be a string of 1 to %d bytes"):format(MAX_SEP), 2)
  end
  local out = {}
  if sep == nil then
    for word in gmatch(s, "%S+") do
      out[#out + 1] = word
    end
    return out
  end
  local pos = 1
  while true do
    local i, j = find(s, sep, pos, true)
    if not i then
      out[#out + 1] = sub(s, pos)
      return out
    end
    out[#out + 1] = sub(s, pos, i - 1)
    pos = j + 1
  end
end

-- Builds the API. `host_info()` returns what the host knows beyond core.info(): the API
-- versions and the load summary ({methods = n, skipped = {...}}).
function M.build(host_info)
  local api = {}

  function api.sleep(ms)
    if math.type(ms) ~= "integer" or ms < 0 then
      raise("agent.sleep: ms must be a non-negative integer")
    end
    can_wait("sleep")
    return core.sleep(ms) -- yields
  end

  function api.read_file(path, max_bytes)
    need("system.read")
    if type(path) ~= "string" then
      raise("agent.read_file: path must be a string")
    end
    if max_bytes ~= nil and not (is_positive_int(max_bytes) and max_bytes <= READ_MAX) then
      raise("agent.read_file: max_bytes must be an integer from 1 to %d", READ_MAX)
    end
    if not M.readable(path) then
      return nil, "not permitted: " .. path
    end
    can_wait("read_file")
    return core.read_file(path, max_bytes or DEFAULT_READ_MAX) -- yields
  end

  function api.run(argv, opts)
    need("process.run")
    local args, err = check_argv(argv)
    local options, oerr = run_options(opts)
    if not (args and options) then
      raise("agent.run: %s", err or oerr)
    end
    can_wait("run")
    return core.spawn(args, options) -- yields
  end

  function api.statfs(path)
    need("system.read")
    if type(path) ~= "string" then
      raise("agent.statfs: path must be a string")
    end
    can_wait("statfs")
    return core.statfs(path) -- yields
  end

  function api.time() return core.time() end
  function api.now_ms() return core.now_ms() end
  function api.hostname() return core.hostname() end
  function api.cpu_percent() return core.cpu_percent() end

  function api.info()
    local c, h = core.info(), host_info()
    return {
      version = c.version,
      lua_api_level = c.lua_api_level,
      started = c.started,
      uptime = c.uptime,
      api_versions = { table.unpack(h.api_versions) },
      current_api_version = h.current_api_version,
      methods = { loaded = h.methods, skipped = copy_skipped(h.skipped) },
    }
  end

  api.lines, api.split = M.lines, M.split

  -- agent.mounts.probe(device), .mkfs, .mount, .unmount, .cephfs_mount (yield), .config().
  api.mounts = {
    config = mounts.config, probe = mounts.probe, mkfs = mounts.mkfs, mount = mounts.mount,
    unmount = mounts.unmount, cephfs_mount = mounts.cephfs_mount,
  }

  function api.log(level, message)
    local err = M.level_error(level)
    if err then
      raise("agent.log: %s", err)
    end
    core.log(level, tostring(message))
  end

  return api
end

return M
