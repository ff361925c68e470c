-- Builds the environment that method code runs in, from an allow-list.
--
-- The host state has the full standard library; method code sees only what the allow-list
-- names. Every table reachable from it is a read-only proxy whose metatable is hidden, so one
-- method file cannot change what another sees (Redis scripting's CVEs are the checklist
-- here). Reading an unknown global raises, so a typo fails loudly instead of yielding nil.
-- Objects that guard themselves (schemas, error kinds, method tokens, JSON arrays: each has
-- a locked metatable) are shared as they are.
--
-- Besides hiding things, the allow-list wraps a few library functions whose C code could
-- hold the event loop or outlive the call (see each wrapper). The runtime's count hook and
-- allocator bound everything else: instructions, time and memory.

local pattern_guard = require("sandbox.pattern_guard")
local coroutines = require("sandbox.coroutines")

local M = {}

-- Base functions method code may call. Absent on purpose: load/loadstring/dofile/loadfile
-- (code loading: method code never needs to compile code at run time, and a text chunk
-- could still be built to reach what a file cannot), require, rawset (bypasses read-only
-- proxies), print (methods log through ctx.log), collectgarbage (finalisers, and a full
-- collection on demand stalls every call), _G (one table would expose every global).
M.BASE = {
  "assert", "error", "ipairs", "next", "pairs", "pcall", "xpcall", "select", "tonumber",
  "tostring", "type", "rawequal", "rawlen", "rawget", "getmetatable",
}

-- Elements that one table.move may copy: it loops in C over the range it is given, whether
-- or not the tables hold anything there, and the hook cannot stop C loops. A call's memory
-- budget cannot hold this many real elements anyway.
M.MAX_MOVE = 1 << 22

local function read_only(name)
  return function(_, key)
    error(("%s is read-only (cannot set '%s')"):format(name, tostring(key)), 2)
  end
end

-- Proxies by original table, so that a table has one proxy (identity is stable: string ==
-- string, and a proxy can be a table key). Weak keys: proxies live as long as their tables.
local proxies = setmetatable({}, { __mode = "k" })

-- The read-only view of v: v itself unless it is a table; a table that guards itself with a
-- locked metatable as it is; any other table as a proxy whose reads wrap what they return.
local function wrap(v, name)
  if type(v) ~= "table" then
    return v
  end
  local mt = getmetatable(v)
  if mt ~= nil then
    if type(mt) == "table" then
      error(("sandbox: %s has a metatable that method code could change; lock it with __metatable"):format(name), 0)
    end
    return v
  end
  local p = proxies[v]
  if p then
    return p
  end
  -- The iterator ignores the state it is given: pairs(p) returns p itself as the state,
  -- never v, which would hand the writable original to anyone who calls pairs directly.
  local function step(_, k)
    local nk, nv = next(v, k)
    return nk, wrap(nv, name .. "." .. tostring(nk))
  end
  p = setmetatable({}, {
    __index = function(_, k)
      return wrap(v[k], name .. "." .. tostring(k))
    end,
    __newindex = read_only(name),
    __len = function() return #v end,
    __pairs = function(self) return step, self, nil end,
    __metatable = name,
  })
  proxies[v] = p
  return p
end

-- A read-only view of table t, and of every table reachable from it (as M.build's globals
-- are). getmetatable on it returns `name`.
function M.readonly(t, name)
  return wrap(t, name)
end

local function copy(t, skip)
  local c = {}
  for k, v in pairs(t) do
    if not (skip and skip[k]) then
      c[k] = v
    end
  end
  return c
end

-- An integer argument as luaL_checkinteger reads it (numeric strings included), or nil.
local function integer_arg(v)
  if type(v) == "string" then
    v = tonumber(v)
  end
  return math.tointeger(v)
end

-- string.rep with an empty string and an empty separator returns "" but still loops n
-- times in C (string.rep("", 1e15) never ends); everything else allocates its result first,
-- which the allocator bounds.
local raw_rep = string.rep
local function safe_rep(s, n, sep)
  if s == "" and (sep == nil or sep == "") and integer_arg(n) then
    return ""
  end
  -- Called through pcall, its errors have no position; raised again, they name the
  -- method's line instead of this one.
  local ok, r = pcall(raw_rep, s, n, sep)
  if not ok then
    error(r, 2)
  end
  return r
end

-- The string library as method code sees it: without string.dump (bytecode is refused
-- anyway, but a dump of a host function would leak its constants), with the pattern
-- functions guarded against catastrophic backtracking, and the rep above.
local SAFE_STRING = copy(string, { dump = true })
SAFE_STRING.find, SAFE_STRING.match = pattern_guard.find, pattern_guard.match
SAFE_STRING.gmatch, SAFE_STRING.gsub = pattern_guard.gmatch, pattern_guard.gsub
SAFE_STRING.rep = safe_rep

-- table.insert and table.remove shift elements in a C loop bounded by #t. For a plain table
-- that is its real length, which memory bounds; a table with a metatable can claim any
-- length through __len, so for those the same operations run in Lua, under the hook.
local function arg_error(n, fname, msg)
  error(("bad argument #%d to '%s' (%s)"):format(n, fname, msg), 3)
end

local function to_position(v, n, fname)
  local i = integer_arg(v)
  if i == nil then
    arg_error(n, fname, type(v) == "number" and "number has no integer representation"
      or ("number expected, got %s"):format(type(v)))
  end
  return i
end

local function lua_insert(t, ...)
  local e = #t + 1
  local nargs = select("#", ...)
  if nargs == 1 then
    t[e] = ...
    return
  elseif nargs ~= 2 then
    error("wrong number of arguments to 'insert'", 2)
  end
  local pos, v = ...
  pos = to_position(pos, 2, "insert")
  if pos < 1 or pos > e then
    arg_error(2, "insert", "position out of bounds")
  end
  for i = e, pos + 1, -1 do
    t[i] = t[i - 1]
  end
  t[pos] = v
end

local function lua_remove(t, pos)
  local size = #t
  pos = pos == nil and size or to_position(pos, 2, "remove")
  if pos ~= size and (pos < 1 or pos > size + 1) then
    arg_error(2, "remove", "position out of bounds")
  end
  local v = t[pos]
  while pos < size do
    t[pos] = t[pos + 1]
    pos = pos + 1
  end
  t[pos] = nil
  return v
end

local SAFE_TABLE = copy(table)

function SAFE_TABLE.insert(t, ...)
  if type(t) == "table" and debug.getmetatable(t) ~= nil then
    return lua_insert(t, ...)
  end
  return table.insert(t, ...)
end

function SAFE_TABLE.remove(t, ...)
  if type(t) == "table" and debug.getmetatable(t) ~= nil then
    return lua_remove(t, ...)
  end
  return table.remove(t, ...)
end

function SAFE_TABLE.move(a1, f, e, t, a2)
  local fi, ei = integer_arg(f), integer_arg(e)
  -- In floats: e - f can overflow an integer.
  if fi and ei and ei >= fi and (ei + 0.0) - fi + 1 > M.MAX_MOVE then
    error(("table.move: would copy %.0f elements, over the limit of %d"):format((ei + 0.0) - fi + 1, M.MAX_MOVE), 2)
  end
  return table.move(a1, f, e, t, a2)
end

-- Strings index their library through the shared string metatable, which method code
-- could otherwise reach with getmetatable("") and change for the whole VM. Point it at the
-- safe copy and hide it. Affects the host state too: host code gets the same guards.
function M.protect_string_metatable()
  local mt = debug.getmetatable("")
  mt.__index = SAFE_STRING
  mt.__metatable = "string"
end

-- setmetatable without __gc: a finaliser runs whenever the collector gets to the object, in
-- another call, during a reload or at shutdown, outside any deadline or budget. __close is
-- allowed: it runs inside the call that created the variable, under the same hook (and a call
-- the runtime stops is never resumed, so its pending __close handlers never run).
local raw_setmetatable = setmetatable
local function safe_setmetatable(t, mt)
  if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
    error("setmetatable: __gc is not allowed in methods: a finaliser would run outside the call", 2)
  end
  return raw_setmetatable(t, mt)
end

-- The math library without randomseed: the generator is shared by every method, so one
-- method could make another's random numbers predictable.
local SAFE_MATH = copy(math, { randomseed = true })

-- The default allow-list: name -> value. `api` adds the agent's own globals (T, errors,
-- method, json, agent); every table in it is made read-only here.
function M.allow_list(api)
  local list = {}
  for _, name in ipairs(M.BASE) do
    list[name] = _G[name]
  end
  list.setmetatable = safe_setmetatable
  list.string = wrap(SAFE_STRING, "string")
  list.table = wrap(SAFE_TABLE, "table")
  list.math = wrap(SAFE_MATH, "math")
  list.utf8 = wrap(copy(utf8), "utf8")
  list.coroutine = wrap(coroutines.api(), "coroutine")
  for name, value in pairs(api or {}) do
    list[name] = wrap(value, name)
  end
  return list
end

-- A fresh environment over `list`. Each method file gets its own, so files share nothing
-- but the read-only allow-list. All assignments to globals raise: method code keeps its
-- state in locals.
function M.build(list)
  return raw_setmetatable({}, {
    __index = function(_, key)
      local v = list[key]
      if v == nil then
        error(("unknown global '%s'"):format(tostring(key)), 2)
      end
      return v
    end,
    __newindex = function(_, key)
      error(("assignment to global '%s' is not allowed (use a local)"):format(tostring(key)), 2)
    end,
    __metatable = "sandbox",
  })
end

return M
