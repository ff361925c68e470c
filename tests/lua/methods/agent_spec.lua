local setup = require("tests.lua.helpers.setup")
local tmp = require("tests.lua.helpers.tmp")
local kit = require("tests.lua.helpers.kit")

describe("agent.info", function()
  after_each(function()
    tmp.cleanup()
    setup.restore_string_metatable()
  end)

  it("describes the running agent", function()
    local k = kit.new({ files = { "methods/agent.lua" } })
    k.core.host_name = "exo-vm-1"
    k.core.started, k.core.unix_time = 1764000000, 1764000123
    local ok, text = k:rpc_text("agent.info", {})
    assert.is_true(ok)
    assert.equal('{"api_versions":["2026-12-01","2027-01-15"],"current_api_version":"2027-01-15","hostname":"exo-vm-1",'
      .. '"lua_api_level":2,"methods":{"loaded":9,"skipped":[]},"packages_backend":"apt","started":1764000000,"uptime":123,'
      .. '"version":"0.1.0"}', text)
  end)

  it("lists method files that failed to load", function()
    local broken = tmp.file("return method {")
    local k = kit.new({ files = { "methods/agent.lua", broken } })
    local result = k:call_ok("agent.info")
    assert.equal(9, result.methods.loaded) -- agent.info and the host's 8
    assert.equal(1, #result.methods.skipped)
    assert.equal(broken, result.methods.skipped[1].file)
    assert.matches(broken .. ":1: ", result.methods.skipped[1].error, 1, true)
  end)

  it("shows why a file failed only to administrators", function()
    local broken = tmp.file("return method {")
    local k = kit.new({ files = { "methods/agent.lua", broken } })
    for _, who in ipairs({ false, kit.USER }) do
      local result = k:call_ok("agent.info", nil, { auth = who })
      assert.same({ { file = broken:match("[^/]*$"), error = "details are shown to administrators" } },
        result.methods.skipped)
    end
  end)

  it("takes no params", function()
    local k = kit.new({ files = { "methods/agent.lua" } })
    local ok, err = k:call("agent.info", { verbose = true })
    assert.is_false(ok)
    assert.same({ path = "params.verbose", reason = "is not a parameter of this method" }, err.data)
  end)

  it("needs no login", function()
    local k = kit.new({ files = { "methods/agent.lua" } })
    local m = k.host.discover().methods[1]
    assert.same({ "agent.info", "public" }, { m.name, m["x-permission"] })
  end)
end)
