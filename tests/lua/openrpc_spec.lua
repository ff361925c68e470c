local setup = require("tests.lua.helpers.setup")
local tmp = require("tests.lua.helpers.tmp")
local kit = require("tests.lua.helpers.kit")

local json = setup.json

-- The document as a client receives it.
local function wire(k)
  return json.decode(json.encode(k.host.discover()))
end

local function find(doc, name)
  for _, m in ipairs(doc.methods) do
    if m.name == name then
      return m
    end
  end
end

describe("the OpenRPC document", function()
  after_each(function()
    tmp.cleanup()
    setup.restore_string_metatable()
  end)

  describe("for the shipped methods", function()
    local k, doc

    before_each(function()
      k = kit.new({ dirs = { "methods" } })
      doc = wire(k)
    end)

    it("has the top-level fields", function()
      assert.equal("1.3.2", doc.openrpc)
      assert.same({
        title = "Exosphere Guest Agent", version = "0.1.0", description = doc.info.description,
        ["x-api-version"] = "2027-01-15", ["x-api-versions"] = { "2026-12-01", "2027-01-15" }, ["x-lua-api-level"] = 2,
      }, doc.info)
      assert.is_string(doc.info.description)
      assert.same({ code = -32003, message = "Not found" }, doc.components.errors.NotFound)
    end)

    it("lists every method, sorted by name, rpc.discover included", function()
      local names = {}
      for i, m in ipairs(doc.methods) do
        names[i] = m.name
      end
      assert.same({ "agent.info", "jobs.cancel", "jobs.get", "jobs.list", "mounts.get", "mounts.list", "mounts.mount_cephfs", "mounts.mount_device", "mounts.unmount",
                    "notifications.list", "notifications.subscribe", "notifications.unsubscribe", "packages.check_updates", "packages.update", "rpc.discover", "rpc.hello", "self.check_updates", "self.upgrade", "system_load.current", "system_load.historical" }, names)
    end)

    it("gives each method the required fields", function()
      for _, m in ipairs(doc.methods) do
        assert.is_string(m.summary, m.name)
        assert.equal("either", m.paramStructure)
        assert.is_true(json.is_array(m.params), m.name)
        assert.equal("result", m.result.name)
        assert.is_table(m.result.schema)
        assert.is_true(json.is_array(m.errors), m.name)
        assert.is_true(json.is_array(m.examples) and #m.examples > 0, m.name)
        assert.is_boolean(m.deprecated)
        assert.is_string(m["x-stability"])
        assert.is_string(m["x-since"])
        assert.is_string(m["x-permission"])
        for _, ex in ipairs(m.examples) do
          assert.is_string(ex.name)
          assert.is_true(json.is_array(ex.params))
          assert.equal("result", ex.result.name)
          assert.is_not_nil(ex.result.value)
        end
      end
    end)

    it("encodes empty arrays as []", function()
      local text = json.encode(k.host.discover())
      assert.matches('"errors":[]', text, 1, true)
      assert.matches('"params":[]', text, 1, true)
      assert.matches('"skipped":[]', text, 1, true)
    end)

    it("declares rpc.discover as public and stable, returning the document", function()
      local m = find(doc, "rpc.discover")
      assert.same({ "public", "stable", false }, { m["x-permission"], m["x-stability"], m.deprecated })
      assert.same({ description = "The OpenRPC document" }, m.result.schema)
      assert.same({ true, k.host.discover() }, { k:call("rpc.discover") })
    end)

    it("shows permissions and the errors a method declares", function()
      local m = find(doc, "system_load.current")
      assert.equal("user", m["x-permission"])
      assert.same({ { code = -32009, message = "Unavailable" } }, m.errors)
    end)

    it("is built once per load", function()
      assert.equal(k.host.discover(), k.host.discover())
    end)
  end)

  it("describes parameters in param_order, with required flags and descriptions", function()
    local k = kit.new({ files = { tmp.file([[
return method {
  name = "demo.mount", summary = "Mount", since = "2026-12-01", stability = "deprecated",
  permission = "admin", capabilities = { "process.run" },
  params = T.object({
    device = T.string({ pattern = "^vd%l$" }):describe("Kernel name"),
    read_only = T.boolean():optional(),
  }),
  param_order = { "device", "read_only" },
  result = T.array(T.string()),
  errors = { errors.NotFound, errors.Busy },
  examples = { { name = "vdb", description = "Mount vdb", params = { device = "vdb", read_only = true }, result = {} } },
  handler = function() return {} end,
}]]) } })
    local m = find(wire(k), "demo.mount")
    assert.same({
      { name = "device", required = true, description = "Kernel name",
        schema = { type = "string", pattern = "^vd[a-z]$", description = "Kernel name" } },
      { name = "read_only", required = false, schema = { type = "boolean" } },
    }, m.params)
    assert.same({ { code = -32003, message = "Not found" }, { code = -32005, message = "Busy" } }, m.errors)
    assert.same({ name = "vdb", description = "Mount vdb",
      params = { { name = "device", value = "vdb" }, { name = "read_only", value = true } },
      result = { name = "result", value = {} } }, m.examples[1])
    assert.matches('"result":{"name":"result","value":[]}', json.encode(k.host.discover()), 1, true)
    assert.same({ true, "deprecated", "admin", { "process.run" } },
      { m.deprecated, m["x-stability"], m["x-permission"], m["x-capabilities"] })
  end)
end)
