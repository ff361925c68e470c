local setup = require("tests.lua.helpers.setup")
local tmp = require("tests.lua.helpers.tmp")
local kit = require("tests.lua.helpers.kit")

local json = setup.json

-- Method files used below; each handler shows one behaviour of host.call.
local METHODS = [[
local Item = T.object({ name = T.string(), size = T.integer():optional() })

local function m(name, fields)
  fields.name = name
  fields.summary = fields.summary or "Test"
  fields.since = "2026-12-01"
  fields.stability = fields.stability or "experimental"
  fields.permission = "user"
  fields.result = fields.result or T.any()
  fields.examples = fields.examples or { { name = "x", result = 1 } }
  return method(fields)
end

return {
  m("demo.find", {
    params = T.object({
      kind = T.enum({ "volume", "share", "other" }),
      filter = T.object({ items = T.array(Item) }):optional(),
    }),
    param_order = { "kind", "filter" },
    result = T.object({ kind = T.string(), count = T.integer() }),
    examples = { { name = "x", params = { kind = "volume" }, result = { kind = "volume", count = 0 } } },
    handler = function(ctx, params)
      local n = params.filter and #params.filter.items or 0
      return { kind = params.kind, count = n }
    end,
  }),
  m("demo.ctx", {
    handler = function(ctx, params)
      ctx.log("info", "hello")
      return { request_id = ctx.request_id, transport = ctx.transport, peer = ctx.peer, dev = ctx.dev,
               method = ctx.method }
    end,
  }),
  m("demo.not_found", {
    errors = { errors.NotFound },
    handler = function() error(errors.NotFound("volume vdb not found", { device = "vdb" })) end,
  }),
  m("demo.busy", { handler = function() error(errors.Busy) end }),
  m("demo.bad_data", { handler = function() error(errors.Failed("no", { f = agent.sleep })) end }),
  m("demo.boom", { handler = function() local t = nil; return t.x end }),
  m("demo.boom_table", { handler = function() error({ 1 }) end }),
  m("demo.bad_log", { handler = function(ctx) ctx.log("loud", "x") end }),
  m("demo.wrong_result", {
    result = T.object({ count = T.integer() }),
    examples = { { name = "x", result = { count = 1 } } },
    handler = function() return { count = "many" } end,
  }),
  m("demo.empty_list", {
    result = T.object({ items = T.array(T.string()), gpus = T.nullable(T.array(T.integer())) }),
    examples = { { name = "x", result = { items = {}, gpus = json.null } } },
    handler = function() return { items = {} } end,
  }),
  m("demo.own_metatable", {
    result = T.array(T.integer()),
    examples = { { name = "x", result = { 1 } } },
    handler = function() return setmetatable({ 1, 2 }, { __index = function() return 0 end }) end,
  }),
  m("demo.nothing", { result = T.null(), examples = { { name = "x", result = json.null } }, handler = function() end }),
  m("demo.wait", {
    capabilities = { "system.read" },
    result = T.object({ waited_ms = T.integer(), meminfo = T.string(), caught = T.boolean() }),
    examples = { { name = "x", result = { waited_ms = 250, meminfo = "", caught = true } } },
    handler = function(ctx)
      local t0 = agent.now_ms()
      agent.sleep(250)
      -- A yield inside pcall, then an error after it, both in one protected call.
      local ok = pcall(function()
        agent.sleep(1)
        error("after the yield")
      end)
      local text = agent.read_file("/proc/meminfo")
      return { waited_ms = agent.now_ms() - t0 - 1, meminfo = text, caught = not ok }
    end,
  }),
}
]]

describe("host.call", function()
  local k

  before_each(function()
    k = kit.new({ files = { tmp.file(METHODS) } })
    assert.same({}, k.summary.skipped)
  end)

  after_each(function()
    tmp.cleanup()
    setup.restore_string_metatable()
  end)

  local function call(name, params, ctx)
    return { k:call(name, params, ctx) }
  end

  it("runs a handler with params by name", function()
    assert.same({ true, { kind = "share", count = 0 } }, call("demo.find", { kind = "share" }))
  end)

  it("maps positional params onto param_order", function()
    local params = json.decode('["volume", {"items": [{"name": "a"}, {"name": "b"}]}]')
    assert.same({ true, { kind = "volume", count = 2 } }, call("demo.find", params))
  end)

  it("treats absent params as none", function()
    assert.same({ true, json.null }, call("demo.nothing", nil))
  end)

  describe("answers -32601", function()
    it("for a method that does not exist", function()
      assert.same({ false, { code = -32601, message = "Method not found", data = { method = "demo.nope" } } },
        call("demo.nope", {}))
    end)
  end)

  describe("answers -32602 naming the first offending path", function()
    local function invalid(path, reason)
      return { false, { code = -32602, message = "Invalid params", data = { path = path, reason = reason } } }
    end

    it("for a wrong value by name", function()
      assert.same(invalid("params.kind", 'expected one of "volume", "share", "other"'),
        call("demo.find", { kind = "disk" }))
    end)

    it("for a nested value", function()
      local params = json.decode('{"kind":"volume","filter":{"items":[{"name":"a"},{"name":2}]}}')
      assert.same(invalid("params.filter.items[2].name", "expected a string, got an integer"),
        call("demo.find", params))
    end)

    it("for a missing or unknown parameter", function()
      assert.same(invalid("params.kind", "is required"), call("demo.find", {}))
      assert.same(invalid("params.colour", "is not a parameter of this method"),
        call("demo.find", { kind = "volume", colour = "red" }))
    end)

    it("by position", function()
      assert.same(invalid("params[1]", 'expected one of "volume", "share", "other"'),
        call("demo.find", json.decode('["disk"]')))
      assert.same(invalid("params[2].items[1].name", "is required"),
        call("demo.find", json.decode('["volume", {"items": [{}]}]')))
      assert.same(invalid("params[1]", "is required"), call("demo.find", json.array()))
      assert.same(invalid("params[3]", "is one parameter too many: the method takes 2"),
        call("demo.find", json.decode('["volume", {"items": []}, 1]')))
    end)

    it("for params that are neither object nor array", function()
      assert.same(invalid("params", "expected an object or an array"), call("demo.find", "volume"))
    end)
  end)

  describe("turns agent errors into their JSON-RPC errors", function()
    it("with message and data", function()
      assert.same({ false, { code = -32003, message = "volume vdb not found", data = { device = "vdb" } } },
        call("demo.not_found"))
    end)

    it("with the default message for a bare kind", function()
      assert.same({ false, { code = -32005, message = "Busy" } }, call("demo.busy"))
    end)

    it("dropping data that JSON cannot hold", function()
      assert.same({ false, { code = -32000, message = "no" } }, call("demo.bad_data"))
      assert.equal(1, #k:logged("warn", "method demo.bad_data raised an error whose data is not JSON"))
    end)
  end)

  describe("answers -32603 for other errors", function()
    it("logging the error and hiding the traceback outside dev mode", function()
      local ok, err = k:call("demo.boom", {}, { request_id = "r-7", dev = false })
      assert.is_false(ok)
      assert.same({ code = -32603, message = "Internal error", data = { request_id = "r-7" } }, err)
      local logged = k:logged("error", "method demo.boom failed (request r-7): ")
      assert.equal(1, #logged)
      assert.matches("%.lua:%d+: attempt to index a nil value", logged[1])
    end)

    it("with a traceback in dev mode", function()
      local ok, err = k:call("demo.boom", {}, { request_id = "r-8", dev = true })
      assert.is_false(ok)
      assert.equal("r-8", err.data.request_id)
      assert.matches("stack traceback:", err.data.traceback, 1, true)
      assert.matches("attempt to index a nil value", err.data.traceback, 1, true)
    end)

    it("for errors that are not strings", function()
      local ok, err = k:call("demo.boom_table", {}, { dev = false })
      assert.is_false(ok)
      assert.equal(-32603, err.code)
      assert.equal(1, #k:logged("error", "(error object is a table value"))
    end)

    it("for a misused ctx.log, at the method's line", function()
      local ok, err = k:call("demo.bad_log", {}, { dev = false })
      assert.is_false(ok)
      assert.equal(-32603, err.code)
      assert.matches("%.lua:%d+: ctx.log: log level must be one of", k:logged("error")[1])
    end)
  end)

  describe("results", function()
    it("are checked against the result schema in dev mode", function()
      local ok, err = k:call("demo.wrong_result", {}, { request_id = "r-9", dev = true })
      assert.is_false(ok)
      assert.same({ code = -32603, message = "Internal error", data = {
        reason = "result does not match schema", path = "result.count",
        detail = "expected an integer, got a string", request_id = "r-9",
      } }, err)
      assert.equal(1, #k:logged("error", "result does not match schema: result.count"))
    end)

    it("are passed through unchecked outside dev mode", function()
      assert.same({ true, { count = "many" } }, call("demo.wrong_result", {}, { dev = false }))
    end)

    it("encode arrays as arrays even when empty, and missing nullable fields as null", function()
      local ok, text = k:rpc_text("demo.empty_list")
      assert.is_true(ok)
      assert.equal('{"gpus":null,"items":[]}', text)
    end)

    it("keep a table with its own metatable as it is rather than fail", function()
      local ok, value = k:call("demo.own_metatable")
      assert.is_true(ok)
      assert.same({ 1, 2 }, { value[1], value[2] })
    end)

    it("become null when the handler returns nothing", function()
      assert.same({ true, json.null }, call("demo.nothing"))
    end)
  end)

  it("gives the handler the call's context and a prefixed log", function()
    local ctx = { request_id = "abc", transport = "https", peer = "10.0.0.1:5555", dev = false }
    assert.same({ true, { request_id = "abc", transport = "https", peer = "10.0.0.1:5555", dev = false,
      method = "demo.ctx" } }, call("demo.ctx", {}, ctx))
    assert.same({ "demo.ctx (request abc): hello" }, k:logged("info", "hello"))
  end)

  it("lets handlers yield, inside pcall too, and resumes them with the results", function()
    k.core.files["/proc/meminfo"] = "MemTotal: 100 kB\n"
    local yields = k.core.yields
    assert.same({ true, { waited_ms = 250, meminfo = "MemTotal: 100 kB\n", caught = true } }, call("demo.wait"))
    assert.equal(3, k.core.yields - yields)
  end)

  it("never raises, even without a ctx (which is an anonymous caller)", function()
    local ok, err = k.core.drive(k.host.call, "demo.find", { kind = "share" }, nil)
    assert.is_false(ok)
    assert.equal(-32001, err.code)
    ok, err = k.core.drive(k.host.call, "demo.find", { kind = "share" }, { auth = kit.ADMIN })
    assert.is_true(ok)
    assert.same({ kind = "share", count = 0 }, err)
  end)

  describe("check helpers", function()
    it("check a result like dev mode does", function()
      assert.same({ true }, { k.host.check_result("demo.find", { kind = "a", count = 1 }) })
      assert.same({ false, "result.count", "is required" }, { k.host.check_result("demo.find", { kind = "a" }) })
      assert.equal(k.host.check_result, k.host.validate_result)
      assert.same({ false, nil, "no such method: demo.nope" }, { k.host.check_result("demo.nope", 1) })
    end)

    it("check params like a call does", function()
      assert.same({ true }, { k.host.check_params("demo.find", { kind = "volume" }) })
      assert.same({ false, "params[1]", 'expected one of "volume", "share", "other"' },
        { k.host.check_params("demo.find", json.decode('["x"]')) })
    end)
  end)
end)
