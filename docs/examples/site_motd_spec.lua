-- The spec of the example operator method docs/examples/methods.d/site_motd.lua, as
-- docs/method-authoring.md shows it. Run it from the repository root:
--   busted --lua=lua5.4 --cpath=build/lua/?.so docs/examples/site_motd_spec.lua
-- (tests/lua/docs_examples_spec.lua runs it with the other specs).
local setup = require("tests.lua.helpers.setup")
local kit = require("tests.lua.helpers.kit")

local FILE = "docs/examples/methods.d/site_motd.lua"

describe("site.motd", function()
  local k

  before_each(function()
    -- Loaded as the agent loads methods.d, with the grant the configuration would give.
    k = kit.new({ operator_files = { FILE }, operator_capabilities = { "system.read" } })
    k.core.host_name = "vm-1"
    k.core.files["/proc/loadavg"] = "0.15 0.10 0.05 1/123 4567\n"
    k.core.files["/proc/uptime"] = "350735.47 234388.90\n"
  end)

  after_each(setup.restore_string_metatable)

  it("loads", function()
    assert.same({}, k.summary.skipped)
  end)

  it("greets with the host name, the load and the uptime", function()
    assert.same({
      text = "Welcome to vm-1: load 0.15 0.10 0.05, up 4 days",
      load = { one = 0.15, five = 0.10, fifteen = 0.05 },
      uptime_s = 350735,
    }, k:call_ok("site.motd"))
  end)

  it("takes the site's own greeting, and names units in the singular", function()
    k.core.files["/proc/uptime"] = "3600.00 10.00\n"
    assert.equal("Moin to vm-1: load 0.15 0.10 0.05, up 1 hour", k:call_ok("site.motd", { greeting = "Moin" }).text)
  end)

  it("refuses a greeting that is too long", function()
    local ok, err = k:call("site.motd", { greeting = ("x"):rep(81) })
    assert.same({ false, -32602, "params.greeting" }, { ok, err.code, err.data.path })
  end)

  it("fails with Unavailable when /proc cannot be read", function()
    k.core.files["/proc/uptime"] = nil
    local ok, err = k:call("site.motd")
    assert.same({ false, -32009 }, { ok, err.code })
    assert.matches("^cannot read /proc/uptime: ", err.message)
  end)

  it("fails with Unavailable when /proc/loadavg is not what it expects", function()
    k.core.files["/proc/loadavg"] = "garbage\n"
    local ok, err = k:call("site.motd")
    assert.same({ false, -32009, "/proc/loadavg is not in the expected format" }, { ok, err.code, err.message })
  end)

  it("does not load unless the configuration grants system.read", function()
    local k2 = kit.new({ operator_files = { FILE } })
    assert.matches("add it to [methods] operator_capabilities", k2.summary.skipped[1].error, 1, true)
  end)

  it("passes `exosphere-guest-agent check`", function()
    assert.same({ { file = FILE, ok = true, errors = {}, methods = { "site.motd" } } },
      k.host.check_files({ FILE }, { operator_capabilities = { "system.read" } }))
  end)
end)
