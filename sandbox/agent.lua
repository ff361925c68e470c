-- The `agent` global of method code: a small API over exo.core (docs/method-authoring.md).
--
-- It checks arguments so that misuse raises at the method's line, and keeps what methods may
-- reach narrow: files only under /proc and /sys (and udev's device database), programs
-- without a shell. Expected failures come back as nil, err, as from exo.core. Functions marked "yields" suspend the
-- calling request's coroutine until the runtime has the answer.

local core = require("exo.core")
local load = require("exo.load")
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
-- The most load samples one agent.load_history returns (7 days of minutes; exo.load's ring
-- holds no more).
M.LOAD_HISTORY_MAX = 10080

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
  -- udev's database entry of one block or character device ("b8:16"): what udev knows of
  -- a disk (serial, file system label and UUID), readable by everyone.
  if path:match("^/run/udev/data/[bc]%d+:%d+$") then
    return true
  end
  -- Debian's flag that an update needs a reboot (packages.update reports it).
  if path == "/run/reboot-required" then
    return true
  end
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

-- A runtime module that only some builds and test kits provide, or a clear error.
local function optional_module(name, what)
  local ok, mod = pcall(require, name)
  if not ok then
    error(("agent.%s: the runtime has no %s module"):format(what, name), 3)
  end
  return mod
end

-- Types only: what the monitor accepts (lengths, characters, prefixes) the binding checks
-- itself, and answers nil, "invalid", why, so that one place states those rules.
local function check_string(fname, what, v)
  if type(v) ~= "string" then
    error(("agent.mounts.%s: %s must be a string, got %s"):format(fname, what, type(v)), 3)
  end
end

local function check_bool(fname, what, v)
  if v ~= nil and type(v) ~= "boolean" then
    error(("agent.mounts.%s: %s must be a boolean or nil"):format(fname, what), 3)
  end
end

-- agent.mounts: the monitor's mount operations (runtime/l_mounts.c, docs/method-authoring.md).
-- Reading (config, probe) needs "mounts.read"; changing anything needs "mounts.write". Every
-- function but config yields; expected failures return nil, code, message[, data].
function M.mounts_api()
  local function mod()
    return optional_module("exo.mounts", "mounts")
  end
  local api = {}

  function api.config()
    need("mounts.read")
    return mod().config()
  end

  function api.probe(device)
    need("mounts.read")
    check_string("probe", "device", device)
    can_wait("mounts.probe")
    return mod().probe(device)
  end

  function api.mkfs(device, label, uuid)
    need("mounts.write")
    check_string("mkfs", "device", device)
    check_string("mkfs", "label", label)
    if uuid ~= nil then
      check_string("mkfs", "uuid", uuid)
    end
    can_wait("mounts.mkfs")
    return mod().mkfs(device, label, uuid)
  end

  function api.mount(device, mountpoint, read_only)
    need("mounts.write")
    check_string("mount", "device", device)
    check_string("mount", "mountpoint", mountpoint)
    check_bool("mount", "read_only", read_only)
    can_wait("mounts.mount")
    return mod().mount(device, mountpoint, read_only == true)
  end

  function api.unmount(mountpoint, lazy)
    need("mounts.write")
    check_string("unmount", "mountpoint", mountpoint)
    check_bool("unmount", "lazy", lazy)
    can_wait("mounts.unmount")
    return mod().unmount(mountpoint, lazy == true)
  end

  function api.cephfs_mount(mountpoint, export_path, access_user, access_key, read_only)
    need("mounts.write")
    check_string("cephfs_mount", "mountpoint", mountpoint)
    check_string("cephfs_mount", "export_path", export_path)
    check_string("cephfs_mount", "access_user", access_user)
    check_string("cephfs_mount", "access_key", access_key)
    check_bool("cephfs_mount", "read_only", read_only)
    can_wait("mounts.cephfs_mount")
    return mod().cephfs_mount(mountpoint, export_path, access_user, access_key, read_only == true)
  end

  return api
end

-- The actions that change the system; the others only read.
local PKG_CHANGES = { install = true, upgrade_all = true }

-- agent.packages: the monitor's package operations (runtime/l_packages.c, runtime/pkgop.h).
-- config and poll, and start of refresh and list, need "packages.read"; start of install and
-- upgrade_all needs "packages.write". start and poll yield (start only until the operation has
-- started: it runs on in the monitor, and poll reads its log and status from offsets);
-- expected failures return nil, code, message. Operations are never cancelled.
function M.packages_api()
  local function mod()
    return optional_module("exo.packages", "packages")
  end
  local api = {}

  function api.config()
    need("packages.read")
    return mod().config()
  end

  -- action: "refresh" | "list" | "install" | "upgrade_all"; names: nil or an array of package
  -- names (list: only these; install: these, each on [packages] allow).
  function api.start(action, names)
    if type(action) ~= "string" then
      raise("agent.packages.start: action must be a string, got %s", type(action))
    end
    need(PKG_CHANGES[action] and "packages.write" or "packages.read")
    if names ~= nil then
      if type(names) ~= "table" then
        raise("agent.packages.start: names must be an array of strings or nil, got %s", type(names))
      end
      for i = 1, #names do
        if type(names[i]) ~= "string" then
          raise("agent.packages.start: names[%d] must be a string, got %s", i, type(names[i]))
        end
      end
    end
    can_wait("packages.start")
    return mod().start(action, names)
  end

  function api.poll(id, log_offset, status_offset)
    need("packages.read")
    if type(id) ~= "string" then
      raise("agent.packages.poll: id must be a string, got %s", type(id))
    elseif math.type(log_offset) ~= "integer" or math.type(status_offset) ~= "integer" then
      raise("agent.packages.poll: log_offset and status_offset must be integers")
    end
    can_wait("packages.poll")
    return mod().poll(id, log_offset, status_offset)
  end

  return api
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

  -- The load history the agent samples itself ([system_load] in agent.conf): the samples with
  -- since <= epoch <= until (nil: no bound), the newest `limit` of them (default and most:
  -- 10080), oldest first, each in system_load.current's shape. Reads memory; does not wait.
  function api.load_history(since, until_, limit)
    need("system.read")
    if since ~= nil and math.type(since) ~= "integer" then
      raise("agent.load_history: since must be an integer (Unix seconds) or nil")
    elseif until_ ~= nil and math.type(until_) ~= "integer" then
      raise("agent.load_history: until must be an integer (Unix seconds) or nil")
    elseif since ~= nil and until_ ~= nil and until_ < since then
      raise("agent.load_history: until must not be before since")
    elseif limit ~= nil and not (math.type(limit) == "integer" and limit >= 1 and limit <= M.LOAD_HISTORY_MAX) then
      raise("agent.load_history: limit must be an integer from 1 to %d", M.LOAD_HISTORY_MAX)
    end
    return load.history(since, until_, limit)
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
      packages_backend = c.packages_backend,
    }
  end

  api.lines, api.split = M.lines, M.split

  -- Sends text as one WebSocket text frame to the session the running call came from, after
  -- the frames sent before it. false over HTTP, when the session is closing, or when the peer
  -- has [websocket] max_queued bytes unread (the session is then closed with 1008).
  function api.session_send(text)
    if type(text) ~= "string" then
      raise("agent.session_send: text must be a string")
    end
    local id = core.call_session()
    if not id then
      return false
    end
    return core.session_send(id, text)
  end

  -- The mount table's generation: a counter the runtime raises each time the kernel reports
  -- a change of the mount table (mount, unmount, remount), by anyone. Equal generations mean
  -- nothing was mounted or unmounted in between, so it keys caches of mount-derived facts.
  function api.mount_generation() return core.mount_generation() end

  -- The instance's OpenStack metadata (meta_data.json) as text, from the one URL the
  -- configuration names ([metadata] url), cached by the runtime. Yields.
  function api.metadata()
    need("metadata.read")
    can_wait("metadata")
    return optional_module("exo.metadata", "metadata").fetch() -- yields
  end

  api.mounts = M.mounts_api()
  api.packages = M.packages_api()

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
