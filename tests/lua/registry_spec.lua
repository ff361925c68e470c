local setup = require("tests.lua.helpers.setup")
local tmp = require("tests.lua.helpers.tmp")
local kit = require("tests.lua.helpers.kit")
local registry = require("sandbox.registry")

-- The text of a valid method file declaring `name` (and returning `extra` after it).
local function method_file(name, result)
  return ([[
return method {
  name = %q, summary = "Test method", since = "2026-12-01", stability = "experimental",
  permission = "user", result = T.integer(),
  examples = { { name = "one", result = 1 } },
  handler = function(ctx, params) return %d end,
}
]]):format(name, result or 1)
end

local function names(k)
  local list = {}
  for _, m in ipairs(k.host.discover().methods) do
    list[#list + 1] = m.name
  end
  return list
end

describe("loading method files", function()
  after_each(function()
    tmp.cleanup()
    setup.restore_string_metatable()
  end)

  it("loads the good files of a directory and skips a broken one with its path and line", function()
    local dir = tmp.dir({
      ["good.lua"] = method_file("demo.good"),
      ["broken.lua"] = "return method {\n  name = = 'x',\n}\n",
    })
    local k = kit.new({ dirs = { dir } })
    assert.equal(9, k.summary.methods) -- demo.good, rpc.discover, rpc.hello, notifications.* and jobs.*
    assert.equal(1, #k.summary.skipped)
    assert.equal(dir .. "/broken.lua", k.summary.skipped[1].file)
    assert.matches("^" .. (dir .. "/broken.lua:2: "):gsub("%p", "%%%0"), k.summary.skipped[1].error)
    local logged = k:logged("error", "skipping method file " .. dir .. "/broken.lua")
    assert.equal(1, #logged)
    assert.matches("broken.lua:2: unexpected symbol", logged[1], 1, true)
    assert.same({ true, 1 }, { k:call("demo.good") })
  end)

  it("loads directories in order and the files of each sorted by name", function()
    local first = tmp.dir({ ["b.lua"] = method_file("demo.b"), ["a.lua"] = method_file("demo.a") })
    local second = tmp.dir({ ["0.lua"] = method_file("demo.a", 2) })
    local k = kit.new({ dirs = { first, second } })
    assert.same({ "demo.a", "demo.b", "jobs.cancel", "jobs.get", "jobs.list", "notifications.list", "notifications.subscribe", "notifications.unsubscribe", "rpc.discover", "rpc.hello" }, names(k))
    assert.same({ true, 1 }, { k:call("demo.a") })
    assert.equal(second .. "/0.lua:2: method 'demo.a' is already defined in " .. first .. "/a.lua",
      k.summary.skipped[1].error)
  end)

  it("ignores files that are not method files", function()
    assert.same({ "a.lua", "b.lua" }, registry.method_files({ "b.lua", "notes.txt", ".a.lua", "a.lua", "x.lua~" }))
  end)

  it("skips a whole file when one of its names is taken, even by itself", function()
    local path = tmp.file("return { " .. method_file("demo.x"):gsub("^return ", "") .. ", "
      .. method_file("demo.x"):gsub("^return ", "") .. " }")
    local k = kit.new({ files = { path } })
    assert.matches("method 'demo.x' is already defined in " .. path, k.summary.skipped[1].error, 1, true)
    assert.same({ "jobs.cancel", "jobs.get", "jobs.list", "notifications.list", "notifications.subscribe", "notifications.unsubscribe", "rpc.discover", "rpc.hello" }, names(k))
  end)

  it("refuses to let a file take the host's own rpc.discover", function()
    local path = tmp.file(method_file("rpc.discover"))
    local k = kit.new({ files = { path } })
    assert.matches("reserved by JSON-RPC", k.summary.skipped[1].error, 1, true)
  end)

  it("accepts a file returning an array of methods", function()
    local path = tmp.file("return { " .. method_file("demo.one"):gsub("^return ", "") .. ", "
      .. method_file("demo.two"):gsub("^return ", "") .. " }")
    assert.same({ "demo.one", "demo.two", "jobs.cancel", "jobs.get", "jobs.list", "notifications.list", "notifications.subscribe", "notifications.unsubscribe", "rpc.discover", "rpc.hello" }, names(kit.new({ files = { path } })))
  end)

  local bad_files = {
    { "returns nothing", "local x = 1", ": must return method { ... } or an array of them" },
    { "returns a plain table", "return { name = 'demo.x' }", ": must return method { ... } or an array of them" },
    { "returns a list with a stranger", "return { 1 }", ": returned value 1 is not a method { ... }" },
    { "raises at load", "local x = nil\nreturn x.y", ":2: attempt to index a nil value" },
    { "raises a non-string", "error({})", ": (error object is a table value" },
    { "waits at load", "agent.sleep(10)", ":1: sleep: this function waits and can only be used while handling a call" },
    { "reads an unknown global", "return mehtod {}", ":1: unknown global 'mehtod'" },
  }
  for _, case in ipairs(bad_files) do
    it("skips a file that " .. case[1], function()
      local path = tmp.file(case[2])
      local k = kit.new({ files = { path } })
      assert.matches(case[3], k.summary.skipped[1].error, 1, true)
      assert.equal(path, k.summary.skipped[1].file)
    end)
  end

  it("refuses bytecode", function()
    local path = tmp.file(string.dump(function() return 1 end))
    local k = kit.new({ files = { path } })
    assert.matches("attempt to load a binary chunk", k.summary.skipped[1].error, 1, true)
  end)

  it("refuses files that are too large", function()
    local path = tmp.file("-- " .. ("x"):rep(registry.MAX_FILE_BYTES))
    local k = kit.new({ files = { path } })
    assert.matches("larger than", k.summary.skipped[1].error, 1, true)
  end)

  it("reports a file that cannot be read", function()
    local k = kit.new({ files = { "/nonexistent/x.lua" } })
    assert.matches("/nonexistent/x.lua: No such file or directory", k.summary.skipped[1].error, 1, true)
  end)

  it("warns about a missing directory and starts anyway", function()
    local k = kit.new({ dirs = { "/nonexistent/methods.d" } })
    assert.equal(8, k.summary.methods) -- the host's own
    assert.equal(1, #k:logged("warn", "method directory /nonexistent/methods.d not loaded"))
  end)

  it("replaces the previous methods on a new init", function()
    local k = kit.new({ files = { tmp.file(method_file("demo.old")) } })
    assert.same({ "demo.old", "jobs.cancel", "jobs.get", "jobs.list", "notifications.list", "notifications.subscribe", "notifications.unsubscribe", "rpc.discover", "rpc.hello" }, names(k))
    k = kit.new({ files = { tmp.file(method_file("demo.new")) } })
    assert.same({ "demo.new", "jobs.cancel", "jobs.get", "jobs.list", "notifications.list", "notifications.subscribe", "notifications.unsubscribe", "rpc.discover", "rpc.hello" }, names(k))
    assert.same(-32601, select(2, k:call("demo.old")).code)
  end)

  it("rejects bad init options loudly", function()
    local host = require("sandbox.host")
    assert.has_error(function() host.init({ method_dirs = "methods" }) end,
      "host.init: method_dirs must be an array of strings")
  end)

  it("gives every file its own environment", function()
    local a = tmp.file("local shared = {}\n" .. method_file("demo.a"))
    local b = tmp.file("return shared")
    local k = kit.new({ files = { a, b } })
    assert.matches("unknown global 'shared'", k.summary.skipped[1].error, 1, true)
  end)
end)
