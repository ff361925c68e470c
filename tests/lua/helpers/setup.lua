-- Every spec requires this first. It makes exo.json and exo.core loadable the way the
-- runtime does (package.preload), before any sandbox module is required:
--   * exo.json is the real C module from build/lua/exo/json.so (busted --cpath=build/lua/?.so)
--     when it has been built, and otherwise the pure-Lua stand-in in json_standin.lua, with a
--     note on stderr so that nobody mistakes a stand-in run for the real thing;
--   * exo.core is always the fake in fake_core.lua (reset before each test), and so are
--     exo.metadata and exo.mounts, whose fakes live there too; exo.load is the fake in
--     fake_load.lua and exo.packages the one in fake_packages.lua (both reset by kit.new).

local M = {}

local function load_json()
  local ok, real = pcall(require, "exo.json")
  if ok then
    return real, false
  end
  package.loaded["exo.json"] = require("tests.lua.helpers.json_standin")
  return package.loaded["exo.json"], true
end

M.json, M.json_is_standin = load_json()

-- Busted insulates each spec file, so this runs once per file; say it once per process.
local registry = debug.getregistry()
if M.json_is_standin and not registry.exo_json_standin_noted then
  registry.exo_json_standin_noted = true
  io.stderr:write("note: build/lua/exo/json.so not found; specs use the pure-Lua JSON stand-in\n")
end

M.core = require("tests.lua.helpers.fake_core")
package.loaded["exo.core"] = M.core
package.loaded["exo.metadata"] = M.core.metadata
package.loaded["exo.mounts"] = M.core.mounts
package.loaded["exo.events"] = M.core.events
package.loaded["exo.jobs"] = M.core.jobs
M.packages = require("tests.lua.helpers.fake_packages")
package.loaded["exo.packages"] = M.packages.module
M.load = require("tests.lua.helpers.fake_load")
package.loaded["exo.load"] = M.load

-- Coroutines created while a call runs get the call's instruction-budget hook, as threads
-- created in the runtime inherit its hook (fake_core.lua, hook_new_thread). Installed once,
-- before any sandbox module keeps a reference to coroutine.create.
if not registry.exo_create_hooked then
  registry.exo_create_hooked = true
  local create = coroutine.create
  coroutine.create = function(f)
    local co = create(f)
    package.loaded["exo.core"].hook_new_thread(co)
    return co
  end
end

-- host.init hides the string metatable from method code (sandbox/env.lua); busted and its
-- libraries run in the same state, so specs put the original back when they are done.
local string_mt = debug.getmetatable("")
registry.exo_string_mt_saved = registry.exo_string_mt_saved
  or { __index = string_mt.__index, __metatable = string_mt.__metatable }
local saved = registry.exo_string_mt_saved

function M.restore_string_metatable()
  string_mt.__index, string_mt.__metatable = saved.__index, saved.__metatable
end

return M
