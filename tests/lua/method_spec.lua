local setup = require("tests.lua.helpers.setup")
local tmp = require("tests.lua.helpers.tmp")
local kit = require("tests.lua.helpers.kit")
local method = require("sandbox.method")
local schema = require("sandbox.schema")
local errors = require("sandbox.errors")

local T = schema.T

-- A valid declaration with `changes` applied (a field set to false is removed).
local function decl(changes)
  local d = {
    name = "demo.echo",
    summary = "Echo",
    since = "2026-12-01",
    stability = "experimental",
    permission = "user",
    params = T.object({ kind = T.enum({ "volume", "share", "other" }):optional() }),
    result = T.object({ kind = T.string() }),
    examples = { { name = "a volume", params = { kind = "volume" }, result = { kind = "volume" } } },
    handler = function(_, params) return { kind = params.kind or "none" } end,
  }
  for k, v in pairs(changes or {}) do
    d[k] = v or nil
  end
  return d
end

local function check_error(changes)
  local ok, err = pcall(method.check, decl(changes))
  assert.is_false(ok, "expected the declaration to fail")
  return err
end

describe("method declarations", function()
  it("accept a valid declaration and default the optional fields", function()
    local d = method.get(method.check(decl({ params = false, examples = { { name = "x", result = { kind = "a" } } } })))
    assert.equal("demo.echo", d.name)
    assert.same({}, d.param_order)
    assert.same({}, d.capabilities)
    assert.same({}, d.errors)
  end)

  it("order parameters by name unless param_order says otherwise", function()
    local params = T.object({ b = T.integer(), a = T.integer(), c = T.integer():optional() })
    local ex = { { name = "x", params = { a = 1, b = 2 }, result = { kind = "k" } } }
    assert.same({ "a", "b", "c" }, method.get(method.check(decl({ params = params, examples = ex }))).param_order)
    local d = method.get(method.check(decl({ params = params, examples = ex, param_order = { "b", "a", "c" } })))
    assert.same({ "b", "a", "c" }, d.param_order)
  end)

  it("return opaque, read-only tokens", function()
    local token = method.check(decl())
    assert.equal("method", getmetatable(token))
    assert.has_error(function() token.handler = print end, "method declarations are read-only")
    assert.is_nil(method.get({}))
  end)

  describe("name each mistake and its field", function()
    local cases = {
      { { name = false }, 'method: name is required (a string like "namespace.verb")' },
      { { name = "Echo" }, "method 'Echo': name must be dotted lower-case words like \"system_load.current\"" },
      { { name = "demo..echo" }, "name must be dotted lower-case words" },
      { { name = "rpc.echo" }, "method 'rpc.echo': names starting with \"rpc.\" are reserved by JSON-RPC" },
      { { stabilty = "stable" }, "method 'demo.echo': unknown field \"stabilty\"" },
      { { summary = false }, "method 'demo.echo': summary is required" },
      { { since = "yesterday" }, "method 'demo.echo': since must be the API version date" },
      { { stability = "beta" },
        "method 'demo.echo': stability must be one of experimental, stable, deprecated (got \"beta\")" },
      { { permission = "root" }, "method 'demo.echo': permission must be one of public, user, admin (got \"root\")" },
      { { handler = "echo" }, "method 'demo.echo': handler must be a function(ctx, params), got string" },
      { { resume = true }, "method 'demo.echo': resume must be a function(job, data), got boolean" },
      { { result = { type = "object" } }, "method 'demo.echo': result must be a schema made with T" },
      { { params = T.string() }, "method 'demo.echo': params must be a T.object schema" },
      { { capabilities = { "Mounts" } }, "method 'demo.echo': capabilities[1]: unknown capability \"Mounts\" (known: metadata.read, mounts.read, mounts.write, packages.read, packages.write, process.run, system.read)" },
      { { capabilities = { 1 } }, "method 'demo.echo': capabilities[1] must be a name" },
      { { errors = { "NotFound" } }, "method 'demo.echo': errors[1] must be an error kind like errors.NotFound" },
      { { param_order = { "knd" } }, "method 'demo.echo': param_order[1]: \"knd\" is not a parameter" },
      { { param_order = { "kind", "kind" } }, "param_order[2]: \"kind\" appears twice" },
      { { param_order = {} }, "method 'demo.echo': param_order: parameter \"kind\" is missing" },
      { { examples = {} }, "method 'demo.echo': examples must be an array with at least one example" },
      { { examples = { { params = {}, result = { kind = "a" } } } }, "method 'demo.echo': examples[1] needs a name" },
      { { examples = { { name = "x", params = { kind = "disk" }, result = { kind = "a" } } } },
        "method 'demo.echo': examples[1] does not match its schema: examples[1].params.kind "
          .. "expected one of \"volume\", \"share\", \"other\"" },
      { { examples = { { name = "x", params = { size = 1 }, result = { kind = "a" } } } },
        "examples[1].params.size is not a parameter of this method" },
      { { examples = { { name = "x", params = {}, result = { kind = 1 } } } },
        "method 'demo.echo': examples[1] does not match its schema: examples[1].result.kind "
          .. "expected a string, got an integer" },
      { { examples = { { name = "x", params = {} } } }, "examples[1].result expected an object, got nothing" },
      { { examples = { { name = "x", result = { kind = "a" }, output = 1 } } }, "examples[1]: unknown field \"output\"" },
    }
    for _, case in ipairs(cases) do
      it(case[2], function()
        assert.matches(case[2], check_error(case[1]), 1, true)
      end)
    end

    it("refuses a required parameter after an optional one", function()
      local params = T.object({ a = T.integer():optional(), b = T.integer() })
      local err = check_error({ params = params, param_order = { "a", "b" },
                                examples = { { name = "x", params = { b = 1 }, result = { kind = "k" } } } })
      assert.matches("param_order: required \"b\" follows optional \"a\"", err, 1, true)
    end)

    it("refuses a declaration that is not a table", function()
      local ok, err = pcall(method.check, "demo.echo")
      assert.is_false(ok)
      assert.equal("method: the declaration must be a table, got string", err)
    end)
  end)

  describe("in method files", function()
    after_each(function()
      tmp.cleanup()
      setup.restore_string_metatable()
    end)

    local function skipped_error(text)
      local path = tmp.file(text)
      local k = kit.new({ files = { path } })
      assert.equal(1, #k.summary.skipped)
      return path, k.summary.skipped[1].error
    end

    it("report the file and the line of the call", function()
      local path, err = skipped_error(table.concat({
        "local m = method {",
        "  name = 'demo.echo', summary = 'Echo', since = '2026-12-01', stability = 'beta',",
        "  permission = 'user', result = T.any(),",
        "  examples = { { name = 'x', result = 1 } },",
        "  handler = function() end,",
        "}",
        "return m",
      }, "\n"))
      assert.matches("^" .. path:gsub("%p", "%%%0") .. ":%d+: method 'demo.echo': stability must be one of", err)
    end)

    it("report the file and the handler's line for `return method { ... }`", function()
      local path, err = skipped_error(table.concat({
        "return method {",
        "  name = 'demo.echo', summary = 'Echo', since = '2026-12-01', stability = 'stable',",
        "  permission = 'user', result = T.integer(),",
        "  examples = { { name = 'x', result = 'one' } },",
        "  handler = function() return 1 end,",
        "}",
      }, "\n"))
      assert.equal(path .. ":5: method 'demo.echo': examples[1] does not match its schema: "
        .. "examples[1].result expected an integer, got a string", err)
    end)

    it("report the line where the name is written when the call leaves none", function()
      local path, err = skipped_error("\nreturn method { name = 'demo.echo' }")
      assert.equal(path .. ":2: method 'demo.echo': summary is required (a one-line string)", err)
    end)

    it("report the file when there is no line to give", function()
      local path, err = skipped_error("local n = 'demo' .. '.echo'\nreturn method { name = n }")
      assert.equal(path .. ": method 'demo.echo': summary is required (a one-line string)", err)
    end)
  end)

  it("check named params for the host", function()
    local d = method.get(method.check(decl()))
    assert.same({ true }, { method.check_named_params(d, { kind = "share" }) })
    assert.same({ false, "params.kind", 'expected one of "volume", "share", "other"' },
      { method.check_named_params(d, { kind = "disk" }) })
    assert.same({ false, "params.size", "is not a parameter of this method" },
      { method.check_named_params(d, { size = 1 }) })
  end)

  it("accept error kinds in errors", function()
    local d = method.get(method.check(decl({ errors = { errors.NotFound, errors.Busy } })))
    assert.equal(-32003, d.errors[1].code)
  end)
end)
