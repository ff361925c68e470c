-- Loads one method file: reads it, compiles it as text, and runs its top level in the
-- file's own sandbox environment under an instruction budget.
--
-- A file's top level runs while the agent starts or reloads, outside any call, so the
-- runtime's per-call deadline and budgets do not cover it: an endless loop there would keep
-- the agent from ever serving. So the top level runs in a coroutine of its own with a count
-- hook; past the budget the hook raises, and then raises again at every instruction, so a
-- pcall can catch the error but the code around the pcall is stopped at once. (A Lua hook
-- cannot yield; raising is enough here because nothing else waits for a file to load.) The
-- same hook watches the VM's memory: growth that one file's top level causes is bounded too,
-- at each check (one allocation between two checks is for the runtime's allocator to bound).

local method = require("sandbox.method")
local notification = require("sandbox.notification")
local errors = require("sandbox.errors")

local M = {}

-- Method files are small; a bigger one is a mistake (or not a method file at all).
M.MAX_FILE_BYTES = 1024 * 1024
-- Instructions a file's top level may take, declarations and example checks included: a
-- normal file takes well under a million; this is about a tenth of a second.
M.LOAD_INSTRUCTIONS = 20000000
-- Memory the VM may grow by while one file's top level runs, in KiB (as collectgarbage
-- counts). Methods keep small tables at the top level; this is far more than they need.
M.LOAD_MEMORY_KB = 64 * 1024
-- Instructions between checks of the budget.
local HOOK_STEP = 10000

-- Reads a whole file in the host state (full standard library, before any request runs).
-- Returns the text or nil, err.
local function read_text(path)
  local f, err = io.open(path, "rb")
  if not f then
    return nil, err
  end
  local text, rerr = f:read(M.MAX_FILE_BYTES + 1)
  f:close()
  if text == nil and rerr then
    return nil, path .. ": " .. rerr
  elseif text and #text > M.MAX_FILE_BYTES then
    return nil, ("%s: larger than %d bytes"):format(path, M.MAX_FILE_BYTES)
  end
  return text or ""
end

local function message_of(e)
  if type(e) == "string" then
    return e
  elseif errors.is_error(e) then
    return tostring(e)
  end
  return ("(error object is a %s value)"):format(type(e))
end

-- Runs f() in a new coroutine under the budgets. Returns true, value or false, message.
function M.run_limited(f, budget, what)
  local co = coroutine.create(f)
  local used, exhausted, start_kb = 0, nil, collectgarbage("count")
  local function hook()
    if not exhausted then
      used = used + HOOK_STEP
      if used > budget then
        exhausted = ("%s took more than %d instructions"):format(what, budget)
      elseif collectgarbage("count") - start_kb > M.LOAD_MEMORY_KB then
        exhausted = ("%s used more than %d KiB of memory"):format(what, M.LOAD_MEMORY_KB)
      else
        return
      end
      debug.sethook(co, hook, "", 1)
    end
    error(exhausted, 2)
  end
  debug.sethook(co, hook, "", HOOK_STEP)
  local ok, value = coroutine.resume(co)
  if ok and coroutine.status(co) ~= "dead" then
    -- Only a binding yields here, and bindings refuse to wait outside a call.
    return false, what .. " yielded while loading"
  end
  if exhausted and ok then
    -- Caught by the file's own pcall, then finished: still over budget.
    return false, exhausted
  end
  return ok, value
end

-- The declaration behind a method or notification token, or nil.
local function declaration(token)
  return method.get(token) or notification.get(token)
end

-- The checked declarations a file's chunk returned: one token or an array of them, each a
-- method { ... } or a notification { ... } (notifications have d.notification = true).
-- `skip(v)` says which returned values to leave out silently (check mode's failed ones).
function M.declarations_of(path, value, skip)
  local d = declaration(value)
  if d then
    return { d }
  elseif skip and skip(value) then
    return {}
  elseif type(value) ~= "table" or getmetatable(value) ~= nil or value[1] == nil then
    return nil, path .. ": must return method { ... } or an array of them"
  end
  local list = {}
  for i, token in ipairs(value) do
    local di = declaration(token)
    if di then
      list[#list + 1] = di
    elseif not (skip and skip(token)) then
      return nil, ("%s: returned value %d is not a method { ... } or notification { ... }"):format(path, i)
    end
  end
  return list
end

-- How Lua shows `path` in positions when it is long (luaO_chunkid, LUA_IDSIZE = 60):
-- "..." and its last 56 characters.
local function short_src(path)
  if #path + 1 <= 60 then
    return path
  end
  return "..." .. path:sub(-56)
end

-- The line where a method's name is first written as a string literal in the file, or nil.
-- A declaration mistake in `return method { ... }` (a tail call) has no position of its
-- own; the name is the best pointer to the declaration.
local function line_of_name(path, name)
  local text = read_text(path)
  if not text then
    return nil
  end
  local at = text:find('"' .. name .. '"', 1, true) or text:find("'" .. name .. "'", 1, true)
  if not at then
    return nil
  end
  local line, pos = 1, 1
  while true do
    local nl = text:find("\n", pos, true)
    if not nl or nl > at then
      return line
    end
    line, pos = line + 1, nl + 1
  end
end

-- `msg` with the file named by its full path in front: a position Lua shortened is written
-- out in full, and a message without a position gets "<path>:<line>: " when it is about a
-- method whose name can be found in the file, else "<path>: ".
function M.name_file(path, msg)
  if msg:sub(1, #path + 1) == path .. ":" then
    return msg
  end
  local short = short_src(path)
  if msg:sub(1, #short + 1) == short .. ":" then
    return path .. msg:sub(#short + 1)
  end
  local name = msg:match("^method '([%w_%.]+)'") or msg:match("^notification '([%w_%.]+)'")
  local line = name and #name <= 128 and line_of_name(path, name)
  if line then
    return ("%s:%d: %s"):format(path, line, msg)
  end
  return path .. ": " .. msg
end

-- Runs one file with `env` as its environment. Returns true, what its chunk returned, or
-- nil, err; err starts with "<path>:<line>: " when the line is known, else "<path>: ".
function M.run_file(path, env)
  local text, err = read_text(path)
  if not text then
    return nil, err
  end
  -- Text only ("t"): bytecode could break the VM's invariants, so it is never loaded.
  local chunk, lerr = load(text, "@" .. path, "t", env)
  if not chunk then
    return nil, M.name_file(path, lerr)
  end
  local ok, value = M.run_limited(chunk, M.LOAD_INSTRUCTIONS, "the file's top level")
  if not ok then
    return nil, M.name_file(path, message_of(value))
  end
  return true, value
end

-- Loads one file: its checked declarations, or nil, err (as run_file).
function M.load_file(path, env)
  local ok, value = M.run_file(path, env)
  if not ok then
    return nil, value
  end
  return M.declarations_of(path, value)
end

-- The line number at the start of an error message "<path>:<line>: ...", or nil.
function M.line_of(path, msg)
  if type(msg) ~= "string" or msg:sub(1, #path + 1) ~= path .. ":" then
    return nil
  end
  return math.tointeger(tonumber(msg:match("^(%d+):", #path + 2)))
end

return M
