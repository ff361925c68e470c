-- Every shipped method loads, and has at least one example whose params and result
-- validate against its schemas (the examples are what clients and docs/methods.md show).
local setup = require("tests.lua.helpers.setup")
local kit = require("tests.lua.helpers.kit")

describe("shipped methods", function()
  local k

  before_each(function()
    k = kit.new({ dirs = { "methods" } })
  end)

  after_each(setup.restore_string_metatable)

  it("all load", function()
    assert.same({}, k.summary.skipped)
  end)

  it("each have examples whose params and results validate", function()
    for _, m in ipairs(k.host.discover().methods) do
      assert.is_true(#m.examples > 0, m.name .. " has no example")
      for _, ex in ipairs(m.examples) do
        local params = {}
        for _, p in ipairs(ex.params) do
          params[p.name] = p.value
        end
        local what = m.name .. ", example " .. ex.name
        assert.same({ true }, { k.host.check_params(m.name, params) }, what)
        assert.same({ true }, { k.host.check_result(m.name, ex.result.value) }, what)
      end
    end
  end)
end)
