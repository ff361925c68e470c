-- Operator methods (methods.d): loading after the shipped ones, name clashes and overrides,
-- capability grants, broken files; and host.check_files, behind `exosphere-guest-agent check`.
local setup = require("tests.lua.helpers.setup")
local tmp = require("tests.lua.helpers.tmp")
local kit = require("tests.lua.helpers.kit")

-- A method file declaring `name`, with optional capabilities and handler body.
local function method_file(name, opts)
  opts = opts or {}
  return ([[
return method({
  name = %q, summary = "Test", since = "2026-12-01", stability = "experimental",
  permission = "public", capabilities = %s, result = T.any(),
  examples = { { name = "x", result = 1 } },
  handler = function() %s end,
})
]]):format(name, opts.caps or "{}", opts.body or ("return %q"):format(opts.answer or name))
end

describe("operator methods", function()
  after_each(function()
    tmp.cleanup()
    setup.restore_string_metatable()
  end)

  it("load from the operator directories, after the shipped methods", function()
    local dir = tmp.dir({ ["b.lua"] = method_file("site.b"), ["a.lua"] = method_file("site.a"),
                          ["notes.txt"] = "not a method", [".hidden.lua"] = "syntax error here" })
    local k = kit.new({ dirs = { "methods" }, operator_dirs = { dir .. "/" } })
    assert.same({}, k.summary.skipped)
    assert.equal("site.a", k:call_ok("site.a"))
    assert.equal("site.b", k:call_ok("site.b"))
    assert.equal(22, k.summary.methods) -- 20 shipped (the host's 8 included) and 2 here
  end)

  describe("that take a shipped method's name", function()
    local shipped, op

    before_each(function()
      shipped = tmp.file(method_file("demo.shared", { answer = "shipped" }))
      op = tmp.file(method_file("demo.shared", { answer = "operator" }))
    end)

    it("are skipped with an error that names both files and the setting", function()
      local k = kit.new({ files = { shipped }, operator_files = { op } })
      assert.equal("shipped", k:call_ok("demo.shared"))
      local s = k.summary.skipped[1]
      assert.same({ op, 2 }, { s.file, s.line })
      assert.equal(op .. ":2: method 'demo.shared' is already defined in " .. shipped
        .. "; set [methods] allow_override = true to replace the shipped method", s.error)
      assert.equal(1, #k:logged("error", "skipping method file " .. op))
    end)

    it("replace it when allow_override is set, and the log says so", function()
      local k = kit.new({ files = { shipped }, operator_files = { op }, allow_override = true })
      assert.same({}, k.summary.skipped)
      assert.equal("operator", k:call_ok("demo.shared"))
      assert.equal(9, k.summary.methods) -- and the host's 8
      assert.equal(1, #k:logged("warn", ("operator method file %s overrides method 'demo.shared' of %s"):format(op, shipped)))
    end)

    it("never replace another operator method, override or not", function()
      local op2 = tmp.file(method_file("demo.shared", { answer = "second" }))
      local k = kit.new({ operator_files = { op, op2 }, allow_override = true })
      assert.equal("operator", k:call_ok("demo.shared"))
      assert.equal(op2 .. ":2: method 'demo.shared' is already defined in " .. op, k.summary.skipped[1].error)
    end)
  end)

  describe("capabilities", function()
    it("an operator method may only declare what the configuration grants", function()
      local runs = tmp.file(method_file("site.runs", { caps = '{ "process.run" }' }))
      local reads = tmp.file(method_file("site.reads", { caps = '{ "system.read" }' }))
      local k = kit.new({ operator_files = { runs, reads }, operator_capabilities = { "system.read" } })
      assert.equal(1, #k.summary.skipped)
      assert.equal(runs .. ":2: method 'site.runs' declares capability 'process.run', which is not granted to "
        .. "operator methods; add it to [methods] operator_capabilities to allow it", k.summary.skipped[1].error)
      assert.equal("site.reads", k:call_ok("site.reads"))
    end)

    it("shipped methods get what they declare", function()
      local runs = tmp.file(method_file("demo.runs", { caps = '{ "process.run" }', body = 'return agent.run({ "true" })' }))
      local k = kit.new({ files = { runs } })
      k.core.programs["true"] = function() return { exit = 0 } end
      assert.equal(0, k:call_ok("demo.runs").exit)
    end)

    it("a granted capability still has to be declared to be used", function()
      local sneaky = tmp.file(method_file("site.sneaky", { body = 'return agent.read_file("/proc/loadavg")' }))
      local k = kit.new({ operator_files = { sneaky }, operator_capabilities = { "system.read" }, dev = false })
      local ok, err = k:call("site.sneaky")
      assert.same({ false, -32603 }, { ok, err.code })
      assert.matches("capability 'system.read' is not granted to this method", k:logged("error")[1], 1, true)
    end)

    it("the runtime is told each call's grants exactly once", function()
      local calls = 0
      local k = kit.new({ dirs = { "methods" } })
      local real = k.core.set_capabilities
      k.core.set_capabilities = function(list)
        calls = calls + 1
        return real(list)
      end
      k:call("agent.info")
      k:call("no.such_method")
      k.core.set_capabilities = real
      assert.equal(2, calls)
    end)

    it("a grant the agent does not know stops the start", function()
      local host = require("sandbox.host")
      assert.has_error(function() host.init({ operator_capabilities = { "mounts.raed" } }) end,
        'host.init: operator_capabilities[1]: unknown capability "mounts.raed" (known: metadata.read, mounts.read, mounts.write, packages.read, packages.write, process.run, system.read)')
    end)
  end)

  it("a broken file is skipped with its path and line, and the others load", function()
    local broken = tmp.file("local x = 1\nreturn method({ name = \n")
    local bad_decl = tmp.file("local unused = 1\n\nreturn method({ name = 'site.bad' })\n")
    local good = tmp.file(method_file("site.good"))
    local k = kit.new({ files = { "methods/agent.lua" }, operator_files = { broken, bad_decl, good } })
    assert.equal("site.good", k:call_ok("site.good"))
    local skipped = k:call_ok("agent.info").methods.skipped
    assert.equal(2, #skipped)
    assert.same({ broken, 3 }, { skipped[1].file, skipped[1].line })
    assert.matches(broken .. ":3: ", skipped[1].error, 1, true)
    assert.same({ bad_decl, 3 }, { skipped[2].file, skipped[2].line })
    assert.equal(bad_decl .. ":3: method 'site.bad': summary is required (a one-line string)", skipped[2].error)
  end)

  it("a long path is named in full in the error, not shortened as Lua does", function()
    local dir = tmp.dir({ [("x"):rep(80) .. ".lua"] = "return method({ name = 'site.long' })" })
    local path = dir .. "/" .. ("x"):rep(80) .. ".lua"
    local k = kit.new({ operator_dirs = { dir } })
    assert.same({ path, 1 }, { k.summary.skipped[1].file, k.summary.skipped[1].line })
    assert.equal(path .. ":1: ", k.summary.skipped[1].error:sub(1, #path + 4))
  end)
end)

describe("host.check_files", function()
  local host

  before_each(function()
    setup.core.reset()
    host = require("sandbox.host")
  end)

  after_each(function()
    tmp.cleanup()
    setup.restore_string_metatable()
  end)

  it("passes good files, naming their methods, including several in one file", function()
    local one = tmp.file(method_file("site.one"))
    local two = tmp.file("return { " .. method_file("site.two"):gsub("^return ", "") .. ", "
      .. method_file("site.three"):gsub("^return ", "") .. " }")
    local r = host.check_files({ one, two })
    assert.same({ { file = one, ok = true, errors = {}, methods = { "site.one" } },
                  { file = two, ok = true, errors = {}, methods = { "site.two", "site.three" } } }, r)
  end)

  it("reports a syntax error with its line", function()
    local bad = tmp.file("return method({\n  name = 'site.x',\n  summary = ,\n})")
    local r = host.check_files({ bad })[1]
    assert.is_false(r.ok)
    assert.matches("^" .. bad:gsub("%p", "%%%0") .. ":3: unexpected symbol near ','", r.errors[1])
  end)

  it("reports every failing declaration of a file, each at its line", function()
    local file = tmp.file(table.concat({
      "return {",
      "  method({ name = 'site.a', summary = 'A', since = '2026-12-01', stability = 'beta',",
      "    permission = 'public', result = T.any(), examples = { { name = 'e', result = 1 } }, handler = function() end }),",
      "  method({ name = 'site.b', summary = 'B', since = '2026-12-01', stability = 'stable',",
      "    permission = 'public', result = T.integer(), examples = { { name = 'e', result = 'one' } },",
      "    handler = function() end }),",
      "  method({ name = 'site.c', summary = 'C', since = '2026-12-01', stability = 'stable',",
      "    permission = 'public', params = T.object({ n = T.integer() }), result = T.any(),",
      "    examples = { { name = 'e', params = { n = 'x' }, result = 1 } }, handler = function() end }),",
      "  method({ name = 'site.d', summary = 'D', since = '2026-12-01', stability = 'stable',",
      "    permission = 'public', result = T.any(), capabilities = { 'disks.write' },",
      "    examples = { { name = 'e', result = 1 } }, handler = function() end }),",
      "}",
    }, "\n"))
    local r = host.check_files({ file })[1]
    assert.is_false(r.ok)
    assert.same({}, r.methods)
    assert.same({
      file .. ":2: method 'site.a': stability must be one of experimental, stable, deprecated (got \"beta\")",
      file .. ":4: method 'site.b': examples[1] does not match its schema: examples[1].result expected an integer, got a string",
      file .. ":7: method 'site.c': examples[1] does not match its schema: examples[1].params.n expected an integer, got a string",
      file .. ":10: method 'site.d': capabilities[1]: unknown capability \"disks.write\" (known: metadata.read, mounts.read, mounts.write, packages.read, packages.write, process.run, system.read)",
    }, r.errors)
  end)

  it("reports a file that returns something else", function()
    local file = tmp.file("return 42")
    assert.same({ file .. ": must return method { ... } or an array of them" }, host.check_files({ file })[1].errors)
  end)

  it("reports capabilities the operator grants do not cover, when told them", function()
    local file = tmp.file(method_file("site.runs", { caps = '{ "process.run" }' }))
    assert.is_true(host.check_files({ file })[1].ok)
    local r = host.check_files({ file }, { operator_capabilities = { "system.read" } })[1]
    assert.is_false(r.ok)
    assert.matches("declares capability 'process.run', which is not granted to operator methods; add it to "
      .. "[methods] operator_capabilities", r.errors[1], 1, true)
  end)

  it("reports names taken by another checked file, or by the shipped methods when told where", function()
    local a = tmp.file(method_file("site.same"))
    local b = tmp.file(method_file("site.same"))
    local r = host.check_files({ a, b })
    assert.is_true(r[1].ok)
    assert.same({ b .. ":2: method 'site.same' is already defined in " .. a }, r[2].errors)
    local clash = tmp.file(method_file("agent.info"))
    r = host.check_files({ clash }, { method_dirs = { "methods" } })[1]
    assert.same({ clash .. ":2: method 'agent.info' is already defined in methods/agent.lua" }, r.errors)
    assert.is_true(host.check_files({ clash }, { method_dirs = { "methods" }, allow_override = true })[1].ok)
  end)

  it("reports a file that cannot be read", function()
    local r = host.check_files({ "/nonexistent/x.lua" })[1]
    assert.is_false(r.ok)
    assert.matches("/nonexistent/x.lua: No such file or directory", r.errors[1], 1, true)
  end)
end)
