-- Builds the environment that method code runs in, from an allow-list.
--
-- The host state has the full standard library; method code sees only what the allow-list
-- names. Every shared table is a read-only proxy whose metatable is hidden, so one method
-- file cannot change what another sees (Redis scripting's CVEs are the checklist here).
-- Reading an unknown global raises, so a typo fails loudly instead of yielding nil.
--
-- Later hardening (instruction budgets, memory limits, capability checks) extends this by
-- changing the allow-list table or wrapping entries before M.build; nothing else needs to.

local M = {}

-- Base functions method code may call. Absent on purpose: load/loadstring/dofile/loadfile
-- (code loading; binary chunks), require, rawset (bypasses read-only proxies), print
-- (methods log through ctx.log), collectgarbage, coroutine (the host owns the yields).
M.BASE = {
  "assert", "error", "ipairs", "next", "pairs", "pcall", "xpcall", "select", "tonumber",
  "tostring", "type", "rawequal", "rawlen", "rawget", "setmetatable", "getmetatable",
}

local function read_only(name)
  return function(_, key)
    error(("%s is read-only (cannot set '%s')"):format(name, tostring(key)), 2)
  end
end

-- A read-only view of table t. Reads go through to t; writes raise; getmetatable returns a
-- string, so the proxy's metatable (and t behind it) cannot be reached or replaced.
function M.readonly(t, name)
  return setmetatable({}, {
    __index = t,
    __newindex = read_only(name),
    __len = function() return #t end,
    __pairs = function() return next, t, nil end,
    __metatable = name,
  })
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

-- The string library without string.dump: bytecode is refused anyway, but a dump of a
-- host function would still leak its constants.
local SAFE_STRING = copy(string, { dump = true })

-- Strings index their library through the shared string metatable, which method code
-- could otherwise reach with getmetatable("") and change for the whole VM. Point it at the
-- safe copy and hide it. Affects the host state too, which only loses ("").dump.
function M.protect_string_metatable()
  local mt = debug.getmetatable("")
  mt.__index = SAFE_STRING
  mt.__metatable = "string"
end

-- The default allow-list: name -> value. `api` adds the agent's own globals (T, errors,
-- method, json, agent); its tables are made read-only here.
function M.allow_list(api)
  local list = {}
  for _, name in ipairs(M.BASE) do
    list[name] = _G[name]
  end
  list.string = M.readonly(SAFE_STRING, "string")
  list.table = M.readonly(copy(table), "table")
  list.math = M.readonly(copy(math), "math")
  list.utf8 = M.readonly(copy(utf8), "utf8")
  for name, value in pairs(api or {}) do
    list[name] = type(value) == "table" and M.readonly(value, name) or value
  end
  return list
end

-- A fresh environment over `list`. Each method file gets its own, so files share nothing
-- but the read-only allow-list. All assignments to globals raise: method code keeps its
-- state in locals.
function M.build(list)
  return setmetatable({}, {
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
