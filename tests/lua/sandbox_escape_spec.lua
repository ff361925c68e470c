-- Escape and exhaustion attempts that the Lua side of the sandbox stops (the ones only the
-- runtime can stop, like memory bombs, are in tests/e2e/sandbox.test.mjs). Each method below
-- is one attempt, loaded as an operator method the way the agent loads methods.d; each spec
-- asserts that the attempt was refused and that the same host still answers a normal call.
local setup = require("tests.lua.helpers.setup")
local tmp = require("tests.lua.helpers.tmp")
local kit = require("tests.lua.helpers.kit")

local json = setup.json

local ATTEMPTS = [[
local function m(name, handler, caps)
  return method({
    name = name, summary = "Escape attempt", since = "2026-12-01", stability = "experimental",
    permission = "public", capabilities = caps, result = T.any(),
    examples = { { name = "x", result = 1 } }, handler = handler,
  })
end

-- pcall's outcome as a table: { ok, error message or value }.
local function try(f, ...)
  local ok, err = pcall(f, ...)
  return { ok, type(err) == "string" and err or tostring(err) }
end

-- Every value reachable from the globals, through tables (proxies included, by pairs) and
-- the metatables that getmetatable gives out.
local function reachable()
  local seen, list = {}, {}
  local function visit(v)
    local t = type(v)
    if (t ~= "table" and t ~= "function" and t ~= "userdata" and t ~= "thread") or seen[v] then
      return
    end
    seen[v] = true
    list[#list + 1] = v
    local mt = getmetatable(v)
    if mt ~= nil then
      visit(mt)
    end
    if t == "table" then
      for k, x in pairs(v) do
        visit(k)
        visit(x)
      end
    end
  end
  for _, name in ipairs({ "assert", "error", "ipairs", "next", "pairs", "pcall", "xpcall", "select",
    "tonumber", "tostring", "type", "rawequal", "rawlen", "rawget", "setmetatable", "getmetatable",
    "string", "table", "math", "utf8", "coroutine", "T", "errors", "method", "json", "agent" }) do
    visit(_ENV[name])
  end
  visit(getmetatable(""))
  visit(T.string())
  visit(errors.NotFound("x"))
  visit(json.array())
  return list
end

local shared_counter = 0
local tostring_calls = 0

return {
  m("x.ok", function() return "fine" end),
  m("x.env_names", function()
    local out = {}
    for _, name in ipairs({ "io", "os", "debug", "package", "require", "load", "loadstring", "dofile",
      "loadfile", "print", "collectgarbage", "rawset", "_G", "module", "setfenv", "getfenv", "newproxy" }) do
      out[name] = try(function() return _ENV[name] end)[2]
    end
    return out
  end),
  m("x.env_replace", function()
    return { try(setmetatable, _ENV, {}), try(function() _ENV.x = 1 end), getmetatable(_ENV),
             try(function() rawequal(_ENV, _ENV).x = 1 end) }
  end),
  m("x.local_env", function()
    -- A local _ENV can only hold what the method already has.
    local function f()
      local _ENV = { string = string }
      return io
    end
    return { f() == nil }
  end),
  m("x.string_mt_write", function()
    return { try(function() getmetatable("").__index = {} end),
             try(function() getmetatable("").__index.upper = nil end), getmetatable("") }
  end),
  m("x.string_methods", function()
    return { ("").dump == nil, ("x").rep == string.rep, ("x").find == string.find, ("").__index == nil }
  end),
  m("x.string_write", function()
    return { try(function() string.format = tostring end), try(function() string.x = 1 end),
             try(function() local s = string; s.upper = nil end) }
  end),
  m("x.reachable", function() return reachable() end),
  m("x.pairs_state", function()
    -- pairs() returns an iterator, a state and a control value: none may be the original.
    local out = {}
    for _, lib in ipairs({ string, table, math, T, json, agent, errors, coroutine }) do
      local f, state, control = pairs(lib)
      out[#out + 1] = { state == lib, try(function() state.x = 1 end), control == nil, type(f) }
    end
    return out
  end),
  m("x.dump", function()
    return { string.dump == nil, ("").dump == nil, try(function() return string.dump(m) end) }
  end),
  m("x.rawset", function()
    return { try(function() return rawset end), rawget(string, "format") == nil, rawlen(string),
             next(string) == nil }
  end),
  m("x.t_write", function()
    return { try(function() T.string = nil end), try(function() T.object = T.any end), type(T.string) }
  end),
  m("x.errors_write", function()
    return { try(function() errors.NotFound.code = 1 end), try(function() errors.NotFound = errors.Busy end),
             errors.NotFound.code }
  end),
  m("x.json_write", function()
    return { try(function() json.null = 1 end), try(function() json.encode = tostring end) }
  end),
  m("x.agent_write", function()
    return { try(function() agent.sleep = function() end end), try(function() agent.read_file = nil end) }
  end),
  m("x.coroutine_write", function()
    return { try(function() coroutine.yield = function() end end), try(function() coroutine.resume = nil end) }
  end),
  m("x.randomseed", function()
    return { try(function() return math.randomseed end), type(math.random) }
  end),
  m("x.gc", function()
    return { try(setmetatable, {}, { __gc = function() shared_counter = shared_counter + 1 end }),
             try(setmetatable, {}, { __gc = true }) }
  end),
  m("x.protected_mt", function()
    return { try(setmetatable, string, {}), try(setmetatable, T.string(), {}),
             try(setmetatable, errors.NotFound, {}), try(setmetatable, json.array(), {}) }
  end),
  m("x.hidden_mt", function()
    local token = method({ name = "x.inner", summary = "s", since = "2026-12-01", stability = "stable",
      permission = "public", result = T.any(), examples = { { name = "e", result = 1 } }, handler = function() end })
    return { getmetatable(T.string()), getmetatable(errors.NotFound), getmetatable(errors.Busy("b")),
             getmetatable(token), getmetatable(json.array()), getmetatable(T), getmetatable(agent),
             try(function() token.handler = tostring end) }
  end),
  m("x.huge_error", function() error(string.rep("x", 1000000)) end),
  m("x.huge_agent_error", function() error(errors.Failed(string.rep("y", 1000000))) end),
  m("x.huge_error_data", function() error(errors.Failed("big", { blob = string.rep("z", 1000000) })) end),
  m("x.tostring_error", function()
    error(setmetatable({}, { __tostring = function()
      tostring_calls = tostring_calls + 1
      while true do end
    end }))
  end),
  m("x.tostring_calls", function() return tostring_calls end),
  m("x.forged_error", function() error({ code = -32000, message = "forged", data = { admin = true } }) end),
  m("x.pattern_find", function() return string.find(string.rep("a", 20000), "a*a*a*b") end),
  m("x.pattern_forms", function()
    local s = string.rep("a", 20000)
    return { try(function() return s:match(".-.-.-b") end),
             try(function() for _ in s:gmatch("(a*)*b") do end end),
             try(function() return s:gsub("a-a-a-b", "") end),
             try(function() return ("("):rep(100000):find("%b()") end) }
  end),
  m("x.pattern_malformed", function() return string.find(string.rep("a", 20000), "a*a*a*a*b[") end),
  m("x.rep_empty", function() return { string.rep("", math.maxinteger), ("").rep("", 1e15, "") } end),
  m("x.table_move", function()
    return try(table.move, {}, 1, math.maxinteger, 1)
  end),
  m("x.lying_len", function()
    -- table.insert and remove follow __len in Lua code, under the hook.
    local t = setmetatable({ 1, 2, 3 }, { __len = function() return 3 end })
    table.insert(t, 1, 0)
    local removed = table.remove(t, 1)
    return { removed, t[1], t[2], t[3], t[4] }
  end),
  m("x.loop_pcall", function()
    while true do
      pcall(function() while true do end end)
    end
  end),
  m("x.close_loop", function()
    local guard <close> = setmetatable({}, { __close = function() while true do end end })
    return 1
  end),
  m("x.recursion", function()
    local function f(n) return f(n + 1) + 1 end
    return f(1)
  end),
  m("x.wait_in_sort", function()
    local ok, err = pcall(table.sort, { 3, 2, 1 }, function(a, b)
      agent.sleep(5)
      return a < b
    end)
    local t0 = agent.now_ms()
    agent.sleep(200)
    return { ok, err, agent.now_ms() - t0 }
  end),
  m("x.ctx_tamper", function(ctx)
    ctx.log, ctx.request_id = nil, "forged"
    return "tampered"
  end),
  m("x.ctx_check", function(ctx) return { type(ctx.log), ctx.request_id } end),
  m("x.counter", function()
    shared_counter = shared_counter + 1
    return shared_counter
  end),
  m("x.run_undeclared", function() return agent.run({ "id" }) end),
  m("x.read_undeclared", function() return agent.read_file("/proc/loadavg") end),
  m("x.read_granted", function() return agent.read_file("/proc/loadavg") end, { "system.read" }),
}
]]

-- A second file: another operator's, which must share nothing with the first.
local OTHER = [[
local secret = "other's secret"
return method({
  name = "y.peek", summary = "Looks for the other file's state", since = "2026-12-01",
  stability = "experimental", permission = "public", result = T.any(),
  examples = { { name = "x", result = 1 } },
  handler = function()
    local seen = {}
    for _, name in ipairs({ "shared_counter", "reachable", "try", "m", "secret" }) do
      seen[name] = pcall(function() return _ENV[name] end)
    end
    return { seen = seen, info = agent.info(), discover_ok = pcall(function() return rpc end) }
  end,
})
]]

describe("sandbox escape attempts", function()
  local k, path

  before_each(function()
    path = tmp.file(ATTEMPTS)
    k = kit.new({ operator_files = { path, tmp.file(OTHER) }, operator_capabilities = { "system.read" },
                  instruction_limit = 1000000, dev = false })
    assert.same({}, k.summary.skipped)
    k.core.files["/proc/loadavg"] = "0.01 0.02 0.03 1/99 7\n"
  end)

  after_each(function()
    -- The agent keeps serving: a normal call on the same host still works.
    assert.equal("fine", k:call_ok("x.ok"))
    tmp.cleanup()
    setup.restore_string_metatable()
  end)

  local function fails(name, code)
    local ok, err = k:call(name)
    assert.is_false(ok, name .. " succeeded")
    assert.equal(code, err.code)
    return err
  end

  local function refused(result, text)
    assert.is_false(result[1])
    assert.matches(text, result[2], 1, true)
  end

  it("1: cannot name io, os, debug, package, load... as globals", function()
    for name, err in pairs(k:call_ok("x.env_names")) do
      assert.matches("unknown global '" .. name .. "'", err, 1, true)
    end
  end)

  it("2: cannot replace _ENV's metatable or add globals through it", function()
    local r = k:call_ok("x.env_replace")
    refused(r[1], "cannot change a protected metatable")
    refused(r[2], "assignment to global 'x' is not allowed")
    assert.equal("sandbox", r[3])
  end)

  it("3: gains nothing from a local _ENV", function()
    assert.same({ true }, k:call_ok("x.local_env"))
  end)

  it("4: cannot write getmetatable('').__index", function()
    local r = k:call_ok("x.string_mt_write")
    refused(r[1], "attempt to index")
    refused(r[2], "attempt to index")
    assert.equal("string", r[3])
  end)

  it("5: string methods come from the guarded library, without dump", function()
    assert.same({ true, true, true, true }, k:call_ok("x.string_methods"))
  end)

  it("6: cannot change the string library (string.format = f)", function()
    local r = k:call_ok("x.string_write")
    refused(r[1], "string is read-only (cannot set 'format')")
    refused(r[2], "string is read-only")
    refused(r[3], "string is read-only")
  end)

  it("7: reaches nothing of io, os, debug, package or the raw libraries through any table or metatable", function()
    local forbidden = {}
    for _, lib in ipairs({ io, os, debug, package, coroutine, _G, string, table, math, utf8 }) do
      forbidden[lib] = true
      for _, v in pairs(lib) do
        if type(v) == "function" or type(v) == "table" then
          forbidden[v] = true
        end
      end
    end
    for _, f in ipairs({ load, dofile, loadfile, require, rawset, collectgarbage, print, setmetatable,
                         debug.getmetatable("") }) do
      forbidden[f] = true
    end
    -- The safe functions that are shared on purpose (they hold no state of their own).
    for _, name in ipairs({ "assert", "error", "ipairs", "next", "pairs", "pcall", "xpcall", "select",
      "tonumber", "tostring", "type", "rawequal", "rawlen", "rawget", "getmetatable" }) do
      forbidden[_G[name]] = nil
    end
    for _, lib in ipairs({ string, table, math, utf8 }) do
      for name, v in pairs(lib) do
        if type(v) == "function" and not ({ dump = true, find = true, match = true, gmatch = true, gsub = true,
            rep = true, insert = true, remove = true, move = true, randomseed = true })[name] then
          forbidden[v] = nil
        end
      end
    end
    local values = k:call_ok("x.reachable")
    assert.is_true(#values > 50)
    for _, v in ipairs(values) do
      assert.is_nil(forbidden[v], tostring(v))
    end
  end)

  it("8: every metatable reachable is hidden behind a string", function()
    for _, v in ipairs(k:call_ok("x.reachable")) do
      local mt = getmetatable(v)
      assert.is_true(mt == nil or type(mt) == "string", tostring(v))
    end
  end)

  it("8b: pairs() on a shared table never hands out the writable original", function()
    for _, r in ipairs(k:call_ok("x.pairs_state")) do
      assert.is_true(r[1])
      refused(r[2], "is read-only (cannot set 'x')")
      assert.same({ true, "function" }, { r[3], r[4] })
    end
  end)

  it("9: has no string.dump, in the library or on strings", function()
    local r = k:call_ok("x.dump")
    assert.is_true(r[1] and r[2])
    refused(r[3], "attempt to call a nil value")
  end)

  it("10: has no rawset, and rawget on a shared table gives nothing", function()
    local r = k:call_ok("x.rawset")
    refused(r[1], "unknown global 'rawset'")
    assert.same({ true, 0, true }, { r[2], r[3], r[4] })
  end)

  it("11: cannot change T (T.string = nil)", function()
    local r = k:call_ok("x.t_write")
    refused(r[1], "T is read-only (cannot set 'string')")
    refused(r[2], "T is read-only")
    assert.equal("function", r[3])
  end)

  it("12: cannot change an error kind (errors.NotFound.code = 1)", function()
    local r = k:call_ok("x.errors_write")
    refused(r[1], "error objects are read-only")
    refused(r[2], "errors is read-only")
    assert.equal(-32003, r[3])
  end)

  it("13: cannot change json (json.null = 1)", function()
    local r = k:call_ok("x.json_write")
    refused(r[1], "json is read-only (cannot set 'null')")
    refused(r[2], "json is read-only")
  end)

  it("14: cannot change agent (agent.sleep = f)", function()
    local r = k:call_ok("x.agent_write")
    refused(r[1], "agent is read-only (cannot set 'sleep')")
    refused(r[2], "agent is read-only")
  end)

  it("15: cannot change the coroutine library", function()
    local r = k:call_ok("x.coroutine_write")
    refused(r[1], "coroutine is read-only (cannot set 'yield')")
    refused(r[2], "coroutine is read-only")
  end)

  it("16: cannot reseed the random generator that every method shares", function()
    local r = k:call_ok("x.randomseed")
    assert.same({ { true, "nil" }, "function" }, r)
  end)

  it("17: cannot set a __gc finaliser, even one added later", function()
    local r = k:call_ok("x.gc")
    refused(r[1], "__gc is not allowed in methods")
    refused(r[2], "__gc is not allowed in methods")
  end)

  it("18: cannot replace a protected metatable (string, schema, error kind, JSON array)", function()
    for _, result in ipairs(k:call_ok("x.protected_mt")) do
      refused(result, "cannot change a protected metatable")
    end
  end)

  it("19: sees only strings as the metatables of schemas, errors, method tokens and arrays", function()
    local r = k:call_ok("x.hidden_mt")
    assert.same({ "schema", "error kind", "error", "method", "exo.json.array", "T", "agent" },
      { r[1], r[2], r[3], r[4], r[5], r[6], r[7] })
    refused(r[8], "method declarations are read-only")
  end)

  it("20: a huge error string is cut short in the log", function()
    fails("x.huge_error", -32603)
    local line = k:logged("error", "method x.huge_error failed")[1]
    assert.is_true(#line < 3000, #line .. " bytes")
    assert.matches("bytes in all)", line, 1, true)
  end)

  it("21: a huge agent error message is cut short in the answer", function()
    local err = fails("x.huge_agent_error", -32000)
    assert.is_true(#err.message < 1100)
    assert.equal("(1000000 bytes in all)", err.message:sub(-22))
  end)

  it("22: huge error data is dropped", function()
    local err = fails("x.huge_error_data", -32000)
    assert.same({ "big", nil }, { err.message, err.data })
    assert.equal(1, #k:logged("warn", "over the limit of 65536; dropped it"))
  end)

  it("23: the host never runs an error object's __tostring", function()
    fails("x.tostring_error", -32603)
    assert.equal(0, k:call_ok("x.tostring_calls"))
    assert.equal(1, #k:logged("error", "(error object is a table value)"))
  end)

  it("24: cannot forge an agent error with a table that has a code", function()
    local err = fails("x.forged_error", -32603)
    assert.is_nil(err.data.admin)
  end)

  it("25: a catastrophic pattern is refused before it runs", function()
    local err = fails("x.pattern_find", -32007)
    assert.same({ limit = "pattern" }, err.data)
    assert.matches("string.find: pattern \"a*a*a*b\" on a subject of 20000 bytes", err.message, 1, true)
    -- `return string.find(...)` is a tail call: there is no line to name.
    assert.equal(1, #k:logged("warn", "(a tail call, no line): string.find: pattern"))
  end)

  it("26: so are catastrophic patterns through methods, gmatch, gsub and %b", function()
    for _, result in ipairs(k:call_ok("x.pattern_forms")) do
      refused(result, "LimitExceeded")
    end
  end)

  it("27: a malformed pattern is refused before the matcher backtracks into it", function()
    fails("x.pattern_malformed", -32603)
    assert.matches("malformed pattern (missing ']')", k:logged("error")[1], 1, true)
  end)

  it("28: string.rep of an empty string returns at once, whatever the count", function()
    assert.same({ "", "" }, k:call_ok("x.rep_empty"))
  end)

  it("29: table.move over a huge range is refused", function()
    refused(k:call_ok("x.table_move"), "over the limit of 4194304")
  end)

  it("30: table.insert and remove on a table with __len stay correct (and run under the hook)", function()
    -- remove trusts the (lying) length of 3, as the C version would.
    assert.same({ 0, 1, 2, nil, 3 }, k:call_ok("x.lying_len"))
  end)

  it("31: an endless loop under pcall is stopped", function()
    local err = fails("x.loop_pcall", -32007)
    assert.equal("instructions", err.data.limit)
  end)

  it("32: an endless loop in a __close handler is stopped", function()
    local err = fails("x.close_loop", -32007)
    assert.equal("instructions", err.data.limit)
  end)

  it("33: endless recursion ends in a clean error", function()
    local ok, err = k:call("x.recursion")
    assert.is_false(ok)
    assert.is_true(err.code == -32603 or (err.code == -32007 and err.data.limit == "instructions"))
  end)

  it("34: another file sees none of this file's locals or state", function()
    local r = k:call_ok("y.peek")
    for name, found in pairs(r.seen) do
      assert.is_false(found, name)
    end
    assert.is_false(r.discover_ok)
    for _, v in pairs(r.info.methods) do
      assert.is_not.equal("function", type(v))
    end
  end)

  it("35: cannot use a capability it did not declare", function()
    fails("x.run_undeclared", -32603)
    assert.matches("capability 'process.run' is not granted to this method", k:logged("error")[1], 1, true)
    fails("x.read_undeclared", -32603)
    assert.matches("capability 'system.read' is not granted to this method", k:logged("error")[2], 1, true)
    assert.equal("0.01 0.02 0.03 1/99 7\n", k:call_ok("x.read_granted"))
  end)

  it("36: keeps per-file state to the file (no shared globals between calls of different files)", function()
    assert.equal(1, k:call_ok("x.counter"))
    assert.equal(2, k:call_ok("x.counter"))
    assert.is_false(k:call_ok("y.peek").seen.shared_counter)
  end)

  it("37: a method file cannot be bytecode", function()
    local f = assert(io.open(path, "wb"))
    f:write(string.dump(function() return 1 end))
    f:close()
    local k2 = kit.new({ operator_files = { path } })
    assert.matches("attempt to load a binary chunk", k2.summary.skipped[1].error, 1, true)
    k = kit.new({ operator_files = { tmp.file(ATTEMPTS) }, operator_capabilities = { "system.read" } })
  end)

  it("38: a file whose top level never ends is skipped, and the others load", function()
    local looping = tmp.file("while true do pcall(function() while true do end end) end")
    local k2 = kit.new({ operator_files = { looping, tmp.file(ATTEMPTS) }, operator_capabilities = { "system.read" } })
    assert.equal(1, #k2.summary.skipped)
    assert.matches("the file's top level took more than", k2.summary.skipped[1].error, 1, true)
    assert.equal("fine", k2:call_ok("x.ok"))
    k = k2
  end)

  it("38b: a file whose top level grows memory without end is skipped, and the others load", function()
    local growing = tmp.file("local t = {}\nfor i = 1, math.maxinteger do t[i] = { i } end")
    local k2 = kit.new({ operator_files = { growing, tmp.file(ATTEMPTS) }, operator_capabilities = { "system.read" } })
    assert.equal(1, #k2.summary.skipped)
    assert.matches(":2: the file's top level used more than 65536 KiB of memory", k2.summary.skipped[1].error, 1, true)
    assert.equal("fine", k2:call_ok("x.ok"))
    k = k2
  end)

  it("39: example data cannot carry code that the host would run later", function()
    local sneaky = tmp.file([[
return method({ name = "z.sneaky", summary = "s", since = "2026-12-01", stability = "stable",
  permission = "public", result = T.any(),
  examples = { { name = "e", result = setmetatable({}, { __index = function() while true do end end }) } },
  handler = function() end })]])
    local k2 = kit.new({ operator_files = { sneaky, path }, operator_capabilities = { "system.read" } })
    assert.matches("examples[1].result must be plain data", k2.summary.skipped[1].error, 1, true)
    k = k2
  end)

  it("40: a binding cannot start waiting where the call cannot yield (a table.sort comparator)", function()
    local r = k:call_ok("x.wait_in_sort")
    assert.is_false(r[1])
    assert.matches("agent.sleep cannot wait here", r[2], 1, true)
    -- Nothing was left pending to resume the call early: the next wait takes its time.
    assert.equal(200, r[3])
  end)

  it("41: cannot tamper with the ctx of later calls", function()
    assert.equal("tampered", k:call_ok("x.ctx_tamper"))
    assert.same({ "function", "req-1" }, k:call_ok("x.ctx_check"))
  end)
end)
