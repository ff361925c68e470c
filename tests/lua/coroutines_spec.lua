-- The method-visible coroutine library (sandbox/coroutines.lua): standard semantics for
-- method code, while the runtime's own yields (bindings waiting, preemption) pass through
-- the method's coroutines to the call, and nothing lets method code yield or resume what
-- belongs to the runtime or to another call.
local setup = require("tests.lua.helpers.setup")
local tmp = require("tests.lua.helpers.tmp")
local kit = require("tests.lua.helpers.kit")
local coroutines = require("sandbox.coroutines")

local core = setup.core

local METHODS = [[
local function m(name, handler, caps)
  return method({
    name = name, summary = "Test", since = "2026-12-01", stability = "experimental",
    permission = "public", capabilities = caps, result = T.any(),
    examples = { { name = "x", result = 1 } }, handler = handler,
  })
end

-- Made while the file loads: no call owns it.
local made_at_load = coroutine.create(function() return "ran" end)
local saved

return {
  m("co.generator", function()
    local out = {}
    for v in coroutine.wrap(function() for i = 1, 3 do coroutine.yield(i) end end) do
      out[#out + 1] = v
    end
    return out
  end),
  m("co.values", function()
    local co = coroutine.create(function(a, b)
      local c = coroutine.yield(a + b)
      return c * 2, "done"
    end)
    local r1 = { coroutine.resume(co, 1, 2) }
    local r2 = { coroutine.resume(co, 10) }
    local r3 = { coroutine.resume(co) }
    return { r1, r2, r3, coroutine.status(co) }
  end),
  m("co.bindings", function()
    -- Bindings wait from inside nested coroutines and a pcall; every result lands where
    -- it was asked for, and the method's own yields still reach the method.
    local log = {}
    local inner = coroutine.wrap(function()
      local ok = pcall(function()
        local t0 = agent.now_ms()
        agent.sleep(100)
        log[#log + 1] = "slept " .. (agent.now_ms() - t0)
        coroutine.yield("first")
        local text = agent.read_file("/proc/loadavg")
        log[#log + 1] = text
      end)
      log[#log + 1] = ok
      return "last"
    end)
    local outer = coroutine.wrap(function()
      coroutine.yield(inner())
      coroutine.yield(inner())
    end)
    for _ = 1, 2 do
      local v = outer()
      log[#log + 1] = v
    end
    return log
  end, { "system.read" }),
  m("co.top_yield", function() coroutine.yield(1) end),
  m("co.running", function()
    local co, main = coroutine.running()
    local ok, err = coroutine.resume(co)
    local closed, cerr = pcall(coroutine.close, co)
    local inside = coroutine.wrap(function()
      local me, is_main = coroutine.running()
      return { is_main, coroutine.status(me), coroutine.isyieldable(), coroutine.status(co) }
    end)()
    return { type(co), main, coroutine.status(co), ok, err, closed, cerr, coroutine.isyieldable(), inside }
  end),
  m("co.errors", function()
    local dead = coroutine.create(function() end)
    coroutine.resume(dead)
    local failing = coroutine.create(function() error("boom") end)
    local wrapped = coroutine.wrap(function() error("bang") end)
    local self_resume = coroutine.wrap(function()
      return { coroutine.resume((coroutine.running())) }
    end)
    return {
      { coroutine.resume(dead) },
      { coroutine.resume(failing) },
      { pcall(wrapped) },
      self_resume(),
      { pcall(coroutine.resume, 42) },
      { pcall(coroutine.create, 42) },
    }
  end),
  m("co.save", function()
    saved = coroutine.create(function() coroutine.yield(1); return 2 end)
    return { coroutine.resume(saved) }
  end),
  m("co.resume_saved", function()
    return { coroutine.resume(saved) }
  end),
  m("co.resume_from_load", function()
    return { coroutine.resume(made_at_load) }
  end),
  m("co.in_sort", function()
    local co = coroutine.create(function() while true do coroutine.yield(1) end end)
    local result
    table.sort({ 3, 2, 1 }, function(a, b)
      result = result or { coroutine.resume(co) }
      return a < b
    end)
    return result
  end),
  m("co.close", function()
    local closed = false
    local co = coroutine.create(function()
      local guard <close> = setmetatable({}, { __close = function() closed = true end })
      coroutine.yield(1)
    end)
    coroutine.resume(co)
    local r = { coroutine.close(co) }
    return { r, closed, coroutine.status(co) }
  end),
  m("co.spin", function()
    coroutine.wrap(function() while true do end end)()
  end),
  m("co.ok", function() return "fine" end),
}
]]

describe("the coroutine library of methods", function()
  local k

  before_each(function()
    k = kit.new({ files = { tmp.file(METHODS) }, instruction_limit = 2000000 })
    assert.same({}, k.summary.skipped)
    k.core.files["/proc/loadavg"] = "0.10 0.20 0.30 1/100 42\n"
  end)

  after_each(function()
    tmp.cleanup()
    setup.restore_string_metatable()
    assert.equal("fine", k:call_ok("co.ok"))
  end)

  it("runs generators with wrap", function()
    assert.same({ 1, 2, 3 }, k:call_ok("co.generator"))
  end)

  it("passes values in and out of resume and yield", function()
    assert.same({ { true, 3 }, { true, 20, "done" }, { false, "cannot resume dead coroutine" }, "dead" },
      k:call_ok("co.values"))
  end)

  it("passes the runtime's waits up through nested coroutines and pcall", function()
    local yields = k.core.yields
    assert.same({ "slept 100", "first", "0.10 0.20 0.30 1/100 42\n", true, "last" }, k:call_ok("co.bindings"))
    assert.equal(2, k.core.yields - yields)
  end)

  it("fails a yield at the top of a handler cleanly", function()
    local ok, err = k:call("co.top_yield", {}, { dev = false })
    assert.same({ false, -32603 }, { ok, err.code })
    assert.matches("coroutine.yield outside a coroutine", k:logged("error")[1], 1, true)
  end)

  it("gives the top level a stand-in thread, never the call's own", function()
    local r = k:call_ok("co.running")
    assert.same({ "thread", true, "running", false, "cannot resume non-suspended coroutine", false },
      { r[1], r[2], r[3], r[4], r[5], r[6] })
    assert.matches("cannot close a running coroutine", r[7], 1, true)
    assert.is_false(r[8])
    assert.same({ false, "running", true, "normal" }, r[9])
  end)

  it("reports errors like the standard library", function()
    local r = k:call_ok("co.errors")
    assert.same({ false, "cannot resume dead coroutine" }, r[1])
    assert.is_false(r[2][1])
    assert.matches(":%d+: boom$", r[2][2])
    assert.is_false(r[3][1])
    assert.matches(":%d+: bang$", r[3][2])
    assert.same({ false, "cannot resume non-suspended coroutine" }, r[4])
    assert.matches("bad argument #1 to 'resume' (coroutine expected)", r[5][2], 1, true)
    assert.matches("bad argument #1 to 'create' (function expected)", r[6][2], 1, true)
  end)

  it("does not let one call resume a coroutine of another", function()
    assert.same({ true, 1 }, k:call_ok("co.save"))
    assert.same({ false, "cannot resume a coroutine that another call created" }, k:call_ok("co.resume_saved"))
  end)

  it("does not let a call resume a coroutine made while the file loaded", function()
    assert.same({ false, "cannot resume a coroutine that another call created" }, k:call_ok("co.resume_from_load"))
  end)

  it("refuses to resume where a wait could not be passed up (a table.sort comparator)", function()
    local r = k:call_ok("co.in_sort")
    assert.is_false(r[1])
    assert.matches("cannot resume a coroutine here", r[2], 1, true)
  end)

  it("closes a suspended coroutine, running its __close handlers", function()
    assert.same({ { true }, true, "dead" }, k:call_ok("co.close"))
  end)

  it("counts instructions inside the method's coroutines", function()
    local ok, err = k:call("co.spin")
    assert.same({ false, -32007, "instructions" }, { ok, err.code, err.data.limit })
  end)
end)

describe("sandbox.coroutines on its own", function()
  after_each(setup.restore_string_metatable)

  it("passes a preemption (a yield without values) up and carries on", function()
    core.reset()
    local api = coroutines.api()
    local result = core.drive(function()
      local co = api.create(function()
        core.preempt()
        local v = api.yield("user")
        core.preempt()
        return v * 2
      end)
      local a = { api.resume(co) }
      local b = { api.resume(co, 21) }
      return { a, b }
    end)
    assert.same({ { true, "user" }, { true, 42 } }, result)
    assert.equal(2, core.preemptions)
  end)

  it("knows the call a nested coroutine belongs to", function()
    core.reset()
    local api = coroutines.api()
    local call, seen
    core.drive(function()
      call = coroutine.running()
      api.wrap(function()
        api.wrap(function() seen = coroutines.call_thread() end)()
      end)()
    end)
    assert.equal(call, seen)
  end)
end)
