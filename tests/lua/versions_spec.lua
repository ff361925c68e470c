-- API versions (sandbox/versions.lua, docs/compatibility.md): the chain of shims between a
-- client's version and the methods, the documents per version, rpc.hello, what an unknown
-- version gets, broken version files, and deprecated methods.
local setup = require("tests.lua.helpers.setup")
local kit = require("tests.lua.helpers.kit")
local tmp = require("tests.lua.helpers.tmp")

local json = setup.json

after_each(function()
  setup.restore_string_metatable()
  tmp.cleanup()
end)

-- Three versions of a made-up method, demo.sum: 2026-12-01 took {a, b} and answered a
-- number; 2027-02-01 renamed a and b to x and y; 2027-03-01 answers {sum = n}, and added
-- demo.new. Each answer down the chain passes through every shim in between.
local METHODS = [[
return {
  method {
    name = "demo.sum", summary = "Adds", since = "2026-12-01", stability = "stable", permission = "public",
    params = T.object({ x = T.integer(), y = T.integer() }), param_order = { "x", "y" },
    result = T.object({ sum = T.integer() }),
    errors = { errors.Failed },
    examples = { { name = "two", params = { x = 1, y = 2 }, result = { sum = 3 } } },
    handler = function(ctx, p)
      if p.x < 0 then error(errors.Failed("x is negative", { field = "x" })) end
      return { sum = p.x + p.y }
    end,
  },
  method {
    name = "demo.which", summary = "The caller's version", since = "2026-12-01", stability = "stable",
    permission = "public", result = T.string(), examples = { { name = "it", params = {}, result = "2026-12-01" } },
    handler = function(ctx) return ctx.api_version end,
  },
  method {
    name = "demo.new", summary = "New", since = "2027-03-01", stability = "experimental", permission = "public",
    result = T.string(), examples = { { name = "it", params = {}, result = "new" } },
    handler = function() return "new" end,
  },
  method {
    name = "demo.old", summary = "Old", since = "2026-12-01", stability = "deprecated", permission = "public",
    result = T.string(), examples = { { name = "it", params = {}, result = "old" } },
    handler = function() return "old" end,
  },
  notification {
    name = "notify.demo", summary = "Demo", since = "2026-12-01", stability = "experimental", permission = "public",
    params = T.object({ sum = T.integer() }), examples = { { name = "one", params = { sum = 1 } } },
  },
  notification {
    name = "notify.later", summary = "Later", since = "2027-03-01", stability = "experimental", permission = "public",
    params = T.object({}), examples = { { name = "one", params = {} } },
  },
}
]]

local V1 = [[return { version = "2026-12-01", summary = "first" }]]
local V2 = [[
return {
  version = "2027-02-01", summary = "a and b are x and y",
  changes = { { method = "demo.sum", kind = "renamed_param", description = "a, b -> x, y" } },
  before = {
    ["demo.sum"] = {
      params = T.object({ a = T.integer(), b = T.integer() }), param_order = { "a", "b" },
      result = T.integer(),
      examples = { { name = "two", params = { a = 1, b = 2 }, result = 3 } },
    },
  },
  request = { ["demo.sum"] = function(p) return { x = p.a, y = p.b } end },
  error = {
    ["demo.sum"] = function(e)
      if e.data and e.data.field == "x" then
        return { code = e.code, message = "a is negative", data = { field = "a" } }
      end
      return e
    end,
  },
}
]]
local V3 = [[
return {
  version = "2027-03-01", summary = "sum is an object",
  changes = { { method = "demo.sum", kind = "result_changed", description = "{sum}" },
              { method = "demo.new", kind = "added", description = "new" } },
  before = {
    ["demo.sum"] = { result = T.integer(), examples = { { name = "two", params = { x = 1, y = 2 }, result = 3 } } },
    ["notify.demo"] = { params = T.array(T.integer()), examples = { { name = "one", params = { 1 } } } },
  },
  result = { ["demo.sum"] = function(r) return r.sum end },
  notification = { ["notify.demo"] = function(p) return json.array({ p.sum }) end },
}
]]

local function versions_dir(files)
  return tmp.dir(files or { ["2026-12-01.lua"] = V1, ["2027-02-01.lua"] = V2, ["2027-03-01.lua"] = V3 })
end

local function new_kit(opts)
  opts = opts or {}
  return kit.new({ files = { tmp.file(METHODS) }, api_versions_dir = opts.dir or versions_dir(opts.files),
                   dev = opts.dev })
end

local function at(v)
  return { api_version = v, auth = false }
end

describe("API versions", function()
  it("serve each version's shapes through the chain of shims, both ways", function()
    local k = new_kit()
    assert.same({ "2026-12-01", "2027-02-01", "2027-03-01" }, k.summary.api_versions)
    -- The current version (and no version at all) runs the method as it is.
    assert.same({ sum = 3 }, k:call_ok("demo.sum", { x = 1, y = 2 }, { auth = false }))
    assert.same({ sum = 3 }, k:call_ok("demo.sum", { x = 1, y = 2 }, at("2027-03-01")))
    -- 2027-02-01: the params are current, the result is the older number.
    assert.equal(3, k:call_ok("demo.sum", { x = 1, y = 2 }, at("2027-02-01")))
    -- 2026-12-01: both shims; positional params follow the older order.
    assert.equal(7, k:call_ok("demo.sum", { a = 3, b = 4 }, at("2026-12-01")))
    assert.equal(7, k:call_ok("demo.sum", json.array({ 3, 4 }), at("2026-12-01")))
  end)

  it("check a client's params against its own version, naming its own fields", function()
    local k = new_kit()
    local ok, err = k:call("demo.sum", { x = 1, y = 2 }, at("2026-12-01"))
    assert.same({ false, -32602, "params.a" }, { ok, err.code, err.data.path })
    ok, err = k:call("demo.sum", { a = 1, b = 2 }, at("2027-03-01"))
    assert.same({ false, -32602, "params.x" }, { ok, err.code, err.data.path })
  end)

  it("take the method's errors down the chain", function()
    local k = new_kit()
    local ok, err = k:call("demo.sum", { a = -1, b = 2 }, at("2026-12-01"))
    assert.same({ false, { code = -32000, message = "a is negative", data = { field = "a" } } }, { ok, err })
    ok, err = k:call("demo.sum", { x = -1, y = 2 }, at("2027-03-01"))
    assert.same({ false, { code = -32000, message = "x is negative", data = { field = "x" } } }, { ok, err })
  end)

  it("tell the handler the client's version", function()
    local k = new_kit()
    assert.equal("2026-12-01", k:call_ok("demo.which", {}, at("2026-12-01")))
    assert.equal("2027-03-01", k:call_ok("demo.which", {}, { auth = false }))
  end)

  it("hide a method from the versions before its since, saying so", function()
    local k = new_kit()
    assert.equal("new", k:call_ok("demo.new", {}, at("2027-03-01")))
    local ok, err = k:call("demo.new", {}, at("2027-02-01"))
    assert.is_false(ok)
    assert.same({ code = -32601, message = "Method not found",
                  data = { method = "demo.new", reason = "not_in_api_version", api_version = "2027-02-01",
                           since = "2027-03-01" } }, err)
  end)

  it("refuse an unknown or malformed version, listing the supported ones", function()
    local k = new_kit()
    for _, v in ipairs({ "2025-01-01", "2027-03-02", "latest", "2026-12-01,2027-03-01", ("9"):rep(100) }) do
      local ok, err = k:call("demo.sum", { x = 1, y = 2 }, at(v))
      assert.is_false(ok)
      assert.equal(-32008, err.code)
      assert.equal("unsupported_api_version", err.data.reason)
      assert.same({ "2026-12-01", "2027-02-01", "2027-03-01" }, err.data.supported)
      assert.equal("2027-03-01", err.data.current)
      assert.matches("this agent supports 2026%-12%-01, 2027%-02%-01, 2027%-03%-01", err.message)
      assert.is_true(#err.message < 200)
    end
    local _, err = k:call("demo.sum", {}, at("latest"))
    assert.matches("^API version latest is not a version %(YYYY%-MM%-DD%)", err.message)
    _, err = k:call("demo.sum", {}, at("2025-01-01"))
    assert.matches("^API version 2025%-01%-01 is not supported", err.message)
  end)

  it("give each version its own document: methods, params, results, examples, notifications", function()
    local k = new_kit()
    local function method_of(doc, name)
      for _, m in ipairs(doc.methods) do
        if m.name == name then
          return m
        end
      end
    end
    local function notes_of(doc)
      local out = {}
      for _, n in ipairs(doc["x-notifications"]) do
        out[n.name] = n
      end
      return out
    end
    local cur, mid, old = k.host.discover(), k.host.discover("2027-02-01"), k.host.discover("2026-12-01")
    assert.equal(cur, k.host.discover("2027-03-01"))
    assert.same({ "2027-03-01", "2027-02-01", "2026-12-01" },
      { cur.info["x-api-version"], mid.info["x-api-version"], old.info["x-api-version"] })
    assert.truthy(method_of(cur, "demo.new"))
    assert.is_nil(method_of(mid, "demo.new"))
    assert.equal("object", method_of(cur, "demo.sum").result.schema.type)
    assert.equal("integer", method_of(mid, "demo.sum").result.schema.type)
    assert.same({ "x", "y" }, { method_of(mid, "demo.sum").params[1].name, method_of(mid, "demo.sum").params[2].name })
    assert.same({ "a", "b" }, { method_of(old, "demo.sum").params[1].name, method_of(old, "demo.sum").params[2].name })
    assert.same({ { name = "a", value = 1 }, { name = "b", value = 2 } }, method_of(old, "demo.sum").examples[1].params)
    assert.equal(3, method_of(old, "demo.sum").examples[1].result.value)
    assert.truthy(notes_of(cur)["notify.later"])
    assert.is_nil(notes_of(mid)["notify.later"])
    assert.equal("array", notes_of(mid)["notify.demo"].params.type)
    assert.equal("object", notes_of(cur)["notify.demo"].params.type)
    assert.same(old, k:call_ok("rpc.discover", {}, at("2026-12-01")))
    assert.has_error(function() k.host.discover("2020-01-01") end,
      "API version 2020-01-01 is not supported; this agent supports 2026-12-01, 2027-02-01, 2027-03-01 "
        .. "(the current one is 2027-03-01)")
  end)

  it("send each subscriber the notification in the shape of its version, once per version", function()
    local k = new_kit()
    k:call_ok("notifications.subscribe", { names = { "notify.demo" } }, { session = 1, api_version = "2026-12-01" })
    k:call_ok("notifications.subscribe", { names = { "notify.demo" } }, { session = 2 })
    k:call_ok("notifications.subscribe", { names = { "notify.demo" } }, { session = 3, api_version = "2027-03-01" })
    assert.equal(3, k.host.emit("notify.demo", { sum = 5 }))
    assert.same({ '{"jsonrpc":"2.0","method":"notify.demo","params":[5]}' }, k.core.sent[1])
    assert.same({ '{"jsonrpc":"2.0","method":"notify.demo","params":{"sum":5}}' }, k.core.sent[2])
    assert.same(k.core.sent[2], k.core.sent[3])
    -- A notification newer than the session's version cannot be subscribed to.
    local ok, err = k:call("notifications.subscribe", { names = { "notify.later" } }, { session = 1, api_version = "2027-02-01" })
    assert.same({ false, -32602 }, { ok, err.code })
    assert.matches("unknown notification: notify.later", err.data.reason)
    local names = {}
    for i, n in ipairs(k:call_ok("notifications.list", {}, { api_version = "2027-02-01" })) do
      names[i] = n.name
    end
    assert.is_nil(table.concat(names, " "):find("notify.later", 1, true))
  end)

  it("check a downgraded result against the older schema in dev mode", function()
    local bad = V3:gsub("function%(r%) return r.sum end", "function(r) return tostring(r.sum) end")
    local k = new_kit({ files = { ["2026-12-01.lua"] = V1, ["2027-02-01.lua"] = V2, ["2027-03-01.lua"] = bad } })
    local ok, err = k:call("demo.sum", { x = 1, y = 2 }, at("2027-02-01"))
    assert.same({ false, -32603, "result does not match schema" }, { ok, err.code, err.data.reason })
  end)

  it("turn a failing shim into an internal error, logged, and pass an agent error on", function()
    local bad = V2:gsub("return { x = p.a, y = p.b }", "if p.a == 0 then error(errors.InvalidParams('params.a', 'is zero')) end "
      .. "if p.a == 1 then error('boom') end return { x = p.a, y = p.b }")
    local k = new_kit({ files = { ["2026-12-01.lua"] = V1, ["2027-02-01.lua"] = bad, ["2027-03-01.lua"] = V3 } })
    local ok, err = k:call("demo.sum", { a = 0, b = 2 }, at("2026-12-01"))
    assert.same({ false, -32602, "params.a", "is zero" }, { ok, err.code, err.data.path, err.data.reason })
    ok, err = k:call("demo.sum", { a = 1, b = 2 }, at("2026-12-01"))
    assert.same({ false, -32603 }, { ok, err.code })
    assert.equal(1, #k:logged("error", "boom"))
  end)

  it("answer an internal error when an error shim gives no error object", function()
    local bad = V2:gsub('return { code = e.code, message = "a is negative", data = { field = "a" } }', 'return "oops"')
    local k = new_kit({ files = { ["2026-12-01.lua"] = V1, ["2027-02-01.lua"] = bad, ["2027-03-01.lua"] = V3 } })
    local ok, err = k:call("demo.sum", { a = -1, b = 2 }, at("2026-12-01"))
    assert.same({ false, -32603, "API version shim failed" }, { ok, err.code, err.data.reason })
    assert.equal(1, #k:logged("error", "the error shim of demo.sum gave no error object"))
  end)

  it("drop a broken version and every older one, and still serve the newer", function()
    local k = new_kit({ files = { ["2026-12-01.lua"] = V1, ["2027-02-01.lua"] = "return {", ["2027-03-01.lua"] = V3 } })
    assert.same({ "2027-03-01" }, k.summary.api_versions)
    assert.equal(1, #k:logged("error", "API version 2027-02-01 and older are not served"))
    local ok, err = k:call("demo.sum", { a = 1, b = 2 }, at("2026-12-01"))
    assert.same({ false, -32008 }, { ok, err.code })
    assert.equal(1, #k.summary.skipped)
  end)

  it("serve the newest version even when its own file is broken", function()
    local k = new_kit({ files = { ["2026-12-01.lua"] = V1, ["2027-02-01.lua"] = V2,
                                  ["2027-03-01.lua"] = [[return { version = "2027-03-02", summary = "x" }]] } })
    assert.same({ "2027-03-01" }, k.summary.api_versions)
    assert.equal(1, #k:logged("error", "version must be \"2027-03-01\", as the file's name says"))
    assert.equal(1, #k:logged("error", "served without its file, and no older one"))
    assert.same({ sum = 3 }, k:call_ok("demo.sum", { x = 1, y = 2 }, { auth = false }))
  end)

  it("refuse older shapes whose examples do not fit them", function()
    local bad = V3:gsub("result = 3 } } }", "result = \"three\" } } }")
    local k = new_kit({ files = { ["2026-12-01.lua"] = V1, ["2027-02-01.lua"] = V2, ["2027-03-01.lua"] = bad } })
    assert.same({ "2027-03-01" }, k.summary.api_versions)
    assert.equal(1, #k:logged("error", "examples[1] does not match its schema"))
  end)

  it("refuse shims in the oldest version, unknown fields and bad changes", function()
    local cases = {
      { [[return { version = "2026-12-01", summary = "x", request = { ["demo.sum"] = function(p) return p end } }]],
        "the oldest version has nothing older" },
      { [[return { version = "2026-12-01", summary = "x", colour = 1 }]], "unknown field \"colour\"" },
      { [[return { version = "2026-12-01", summary = "x", changes = { { method = "a", kind = "moved", description = "d" } } }]],
        "changes%[1%]%.kind must be one of" },
      { [[return { version = "2026-12-01" }]], "summary is required" },
    }
    for _, case in ipairs(cases) do
      local k = new_kit({ files = { ["2026-12-01.lua"] = case[1], ["2027-02-01.lua"] = V2, ["2027-03-01.lua"] = V3 } })
      assert.same({ "2027-02-01", "2027-03-01" }, k.summary.api_versions)
      assert.equal(1, #k:logged("error", case[2]:gsub("%%", "")), case[2])
    end
  end)

  it("serve at most MAX_VERSIONS versions, the newest, and say so", function()
    local versions = require("sandbox.versions")
    local files = {}
    for i = 1, versions.MAX_VERSIONS + 2 do
      local v = ("2026-%02d-%02d"):format(1 + (i - 1) // 28, 1 + (i - 1) % 28)
      files[v .. ".lua"] = ("return { version = %q, summary = \"v%d\" }"):format(v, i)
    end
    files["notes.txt"], files["2026-1-1.lua"] = "not a version", "return {}"
    local k = kit.new({ files = { "methods/agent.lua" }, api_versions_dir = tmp.dir(files) })
    assert.equal(versions.MAX_VERSIONS, #k.summary.api_versions)
    assert.equal("2026-01-03", k.summary.api_versions[1])
    assert.equal("2026-02-06", k.summary.api_versions[versions.MAX_VERSIONS])
    assert.equal(1, #k:logged("warn", "has 34 API versions; only the newest 32 are served"))
  end)

  it("without version files serve the methods under the newest version any of them names", function()
    local k = kit.new({ files = { tmp.file(METHODS) }, api_versions_dir = tmp.dir({ ["README"] = "x" }) })
    assert.same({ "2027-03-01" }, k.summary.api_versions)
    assert.equal(1, #k:logged("error", "has no <YYYY-MM-DD>.lua file"))
    k = kit.new({ files = { tmp.file(METHODS) }, api_versions_dir = false })
    assert.same({ "2027-03-01" }, k.summary.api_versions)
  end)
end)

describe("a method removed by a version", function()
  it("stays for the older versions and is gone from that version on, saying when", function()
    local v4 = [[return { version = "2027-04-01", summary = "no more demo.old",
      changes = { { method = "demo.old", kind = "removed", description = "gone" } }, removed = { "demo.old" } }]]
    local k = new_kit({ files = { ["2026-12-01.lua"] = V1, ["2027-02-01.lua"] = V2, ["2027-03-01.lua"] = V3,
                                  ["2027-04-01.lua"] = v4 } })
    assert.equal("old", k:call_ok("demo.old", {}, at("2027-03-01")))
    assert.equal("old", k:call_ok("demo.old", {}, at("2026-12-01")))
    local ok, err = k:call("demo.old", {}, { auth = false })
    assert.same({ false, -32601, "not_in_api_version", "2027-04-01" }, { ok, err.code, err.data.reason, err.data.removed_in })
    local names = {}
    for _, m in ipairs(k.host.discover().methods) do
      names[m.name] = true
    end
    assert.is_nil(names["demo.old"])
    assert.is_true(names["demo.sum"])
  end)
end)

describe("rpc.hello", function()
  it("sets a WebSocket session's version when it is the first call", function()
    local k = new_kit()
    assert.same({ version = "2026-12-01", current = "2027-03-01", supported = { "2026-12-01", "2027-02-01", "2027-03-01" } },
      k:call_ok("rpc.hello", { version = "2026-12-01" }, { session = 7, session_calls = 0, auth = false }))
    assert.equal("2026-12-01", k.core.session_versions[7])
  end)

  it("refuses to change the version after other calls", function()
    local k = new_kit()
    local ok, err = k:call("rpc.hello", { version = "2026-12-01" }, { session = 7, session_calls = 2, auth = false })
    assert.same({ false, -32002, "not_first_call" }, { ok, err.code, err.data.reason })
    assert.is_nil(k.core.session_versions[7])
  end)

  it("refuses an unknown version with the supported ones", function()
    local k = new_kit()
    local ok, err = k:call("rpc.hello", { version = "2030-01-01" }, { session = 7, session_calls = 0, auth = false })
    assert.same({ false, -32008, "unsupported_api_version" }, { ok, err.code, err.data.reason })
    assert.same({ "2026-12-01", "2027-02-01", "2027-03-01" }, err.data.supported)
    ok, err = k:call("rpc.hello", { version = "soon" }, { auth = false })
    assert.same({ false, -32602, "params.version" }, { ok, err.code, err.data.path })
  end)

  it("over HTTP names the version in effect (the header's) and changes nothing", function()
    local k = new_kit()
    assert.equal("2027-02-01", k:call_ok("rpc.hello", {}, { api_version = "2027-02-01", auth = false }).version)
    assert.equal("2027-03-01", k:call_ok("rpc.hello", {}, { auth = false }).version)
    assert.equal("2026-12-01", k:call_ok("rpc.hello", { version = "2026-12-01" }, { auth = false }).version)
    assert.same({}, k.core.session_versions)
    -- A bad header does not stop rpc.hello from saying what is served.
    local ok, err = k:call("rpc.hello", {}, { api_version = "2019-01-01", auth = false })
    assert.same({ false, -32008 }, { ok, err.code })
    assert.equal("2026-12-01", k:call_ok("rpc.hello", { version = "2026-12-01" }, { api_version = "2019-01-01", auth = false }).version)
  end)
end)

describe("deprecated methods", function()
  it("work, and are logged at the first call and then at most once a minute with a count", function()
    local k = new_kit()
    for _ = 1, 3 do
      assert.equal("old", k:call_ok("demo.old", {}, { auth = false }))
    end
    local lines = k:logged("warn", "deprecated method demo.old called")
    assert.equal(1, #lines)
    k.core.clock_ms = k.core.clock_ms + 61000
    k:call_ok("demo.old", {}, { auth = false })
    lines = k:logged("warn", "deprecated method demo.old called")
    assert.equal(2, #lines)
    assert.matches("3 calls since the last such line", lines[2])
    local doc = k.host.discover()
    for _, m in ipairs(doc.methods) do
      if m.name == "demo.old" then
        assert.same({ true, "deprecated" }, { m.deprecated, m["x-stability"] })
      elseif m.name == "demo.new" then
        assert.same({ false, "experimental", "2027-03-01" }, { m.deprecated, m["x-stability"], m["x-since"] })
      end
    end
  end)
end)

describe("the shipped API versions", function()
  it("name only shipped methods and notifications, and every version loads", function()
    local files = {}
    for _, f in ipairs({ "agent", "mounts", "packages", "system_load" }) do
      files[#files + 1] = "methods/" .. f .. ".lua"
    end
    local k = kit.new({ files = files })
    assert.same({}, k.summary.skipped)
    local known = {}
    for _, m in ipairs(k.host.discover().methods) do
      known[m.name] = true
    end
    for _, n in ipairs(k.host.discover()["x-notifications"]) do
      known[n.name] = true
    end
    local versions = require("sandbox.versions")
    for _, v in ipairs(k.summary.api_versions) do
      local env = setmetatable({ T = require("sandbox.schema").T, json = json, errors = require("sandbox.errors").api() },
        { __index = _G })
      local t = assert(loadfile("api-versions/" .. v .. ".lua", "t", env))()
      for _, field in ipairs({ "before", "request", "result", "error", "notification" }) do
        for name in pairs(t[field] or {}) do
          assert.is_true(known[name] == true, ("%s: %s[%s] names nothing shipped"):format(v, field, name))
        end
      end
      for i, c in ipairs(t.changes or {}) do
        assert.is_true(known[c.method or c.notification] == true, ("%s: changes[%d]"):format(v, i))
      end
      assert.truthy(versions.is_version(v))
    end
    assert.same({ "2026-12-01", "2027-01-15" }, k.summary.api_versions)
  end)
end)
