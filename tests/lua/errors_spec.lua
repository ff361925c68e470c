require("tests.lua.helpers.setup")
local errors = require("sandbox.errors")

describe("errors", function()
  it("has the documented codes, in order", function()
    local codes = {}
    for _, kind in ipairs(errors.kinds) do
      codes[#codes + 1] = kind.name .. "=" .. kind.code
    end
    assert.same({ "Failed=-32000", "NotAuthenticated=-32001", "NotPermitted=-32002", "NotFound=-32003",
      "Timeout=-32004", "Busy=-32005", "AlreadyExists=-32006", "LimitExceeded=-32007",
      "Unsupported=-32008", "Unavailable=-32009" }, codes)
  end)

  it("builds error objects with a message and data", function()
    local e = errors.NotFound("volume vdb not found", { device = "vdb" })
    assert.is_true(errors.is_error(e))
    assert.same({ code = -32003, message = "volume vdb not found", data = { device = "vdb" } }, errors.to_rpc(e))
    assert.equal("NotFound: volume vdb not found", tostring(e))
  end)

  it("uses the kind's message when none is given, and a bare kind as its default instance", function()
    assert.same({ code = -32005, message = "Busy" }, errors.to_rpc(errors.Busy()))
    assert.same({ code = -32005, message = "Busy" }, errors.to_rpc(errors.Busy))
  end)

  it("does not take look-alike tables for agent errors", function()
    assert.is_false(errors.is_error({ code = -32003, message = "x" }))
    assert.is_nil(errors.to_rpc({ code = -32003, message = "x" }))
  end)

  it("keeps kinds and objects read-only", function()
    assert.has_error(function() errors.NotFound.code = 1 end, "error objects are read-only")
    assert.has_error(function() errors.NotFound("x").code = 1 end, "error objects are read-only")
    assert.equal("error kind", getmetatable(errors.NotFound))
  end)

  it("rejects a message that is not a string", function()
    assert.has_error(function() errors.Failed(42) end, "errors.Failed: message must be a string, got number")
  end)

  it("offers methods only the kinds and a predicate", function()
    local api = errors.api()
    assert.equal(errors.NotFound, api.NotFound)
    assert.is_function(api.is)
    assert.is_nil(api.internal)
    assert.is_nil(api.to_rpc)
  end)

  it("lets methods answer -32602 in the host's shape for checks a schema cannot state", function()
    local api = errors.api()
    local e = api.InvalidParams("params.until", "must not be before since")
    assert.is_true(errors.is_error(e))
    assert.same({ code = -32602, message = "Invalid params",
                  data = { path = "params.until", reason = "must not be before since" } }, errors.to_rpc(e))
    assert.has_error(function() api.InvalidParams("params.x") end,
      'errors.InvalidParams: expected a path (like "params.until") and a reason, both strings')
  end)
end)
