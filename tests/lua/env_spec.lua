local setup = require("tests.lua.helpers.setup")
local env = require("sandbox.env")
local schema = require("sandbox.schema")

-- Runs `code` in a fresh sandbox environment; returns pcall's results.
local function run(code, list)
  local chunk = assert(load(code, "=method", "t", env.build(list or env.allow_list({ T = schema.T }))))
  return pcall(chunk)
end

local function fails_with(code, message, list)
  local ok, err = run(code, list)
  assert.is_false(ok, code)
  assert.matches(message, err, 1, true)
end

describe("sandbox environment", function()
  it("raises on reading an unknown global", function()
    fails_with("return x", "unknown global 'x'")
  end)

  it("has none of the dangerous globals", function()
    for _, name in ipairs({ "io", "os", "package", "debug", "require", "load", "loadstring", "dofile",
                            "loadfile", "print", "collectgarbage", "rawset", "_G" }) do
      fails_with("return " .. name, "unknown global '" .. name .. "'")
    end
  end)

  it("has the allowed base functions and libraries", function()
    local ok, v = run("return select('#', assert, error, ipairs, next, pairs, pcall, xpcall, tonumber, "
      .. "tostring, type, rawequal, rawlen, rawget, setmetatable, getmetatable, string.format, "
      .. "table.concat, math.floor, utf8.char, T.string)")
    assert.is_true(ok)
    assert.equal(20, v)
  end)

  it("has no string.dump", function()
    assert.same({ true, true }, { run("return string.dump == nil") })
  end)

  it("refuses every assignment to a global", function()
    fails_with("x = 1", "assignment to global 'x' is not allowed")
    fails_with("T = nil", "assignment to global 'T' is not allowed")
  end)

  it("keeps shared tables read-only", function()
    fails_with("string.upper = nil", "string is read-only (cannot set 'upper')")
    fails_with("table.insert = nil", "table is read-only")
    fails_with("math.pi = 3", "math is read-only")
    fails_with("T.string = 1", "T is read-only")
  end)

  it("hides the metatables of shared tables", function()
    assert.same({ true, "string" }, { run("return getmetatable(string)") })
    fails_with("setmetatable(string, {})", "cannot change a protected metatable")
    assert.same({ true, "sandbox" }, { run("return getmetatable(_ENV)") })
  end)

  it("still lets shared tables be iterated and measured", function()
    assert.same({ true, true }, { run("for k in pairs(math) do if k == 'floor' then return true end end")})
  end)

  describe("deep read-only views", function()
    local list = env.allow_list({ cfg = { inner = { x = 1, list = { 10, 20 } }, n = 2 } })

    it("refuse writes at every depth", function()
      fails_with("cfg.inner.x = 2", "cfg.inner is read-only (cannot set 'x')", list)
      fails_with("cfg.inner.list[1] = 0", "cfg.inner.list is read-only (cannot set '1')", list)
      assert.same({ true, 1, 2, 20 }, { run("return cfg.inner.x, #cfg.inner.list, cfg.inner.list[2]", list) })
    end)

    it("keep one view per table, so identity and iteration work", function()
      assert.same({ true, true, "cfg.inner", 2 }, { run([[
        local n = 0
        for _, v in pairs(cfg.inner.list) do n = n + 1 end
        return cfg.inner == cfg.inner, getmetatable(cfg.inner), n]], list) })
      assert.same({ true, true }, { run("for k, v in pairs(cfg) do if k == 'inner' then return v == cfg.inner end end", list) })
    end)

    it("refuse a shared object whose metatable method code could change", function()
      assert.has_error(function() env.allow_list({ bad = setmetatable({}, {}) }) end,
        "sandbox: bad has a metatable that method code could change; lock it with __metatable")
    end)
  end)

  it("gives each file its own environment", function()
    local list = env.allow_list({})
    assert.are_not.equal(env.build(list), env.build(list))
  end)

  describe("the string metatable", function()
    after_each(setup.restore_string_metatable)

    it("is hidden and leads to the safe string copy once protected", function()
      env.protect_string_metatable()
      assert.same({ true, "string", true, "AB" }, { run("return getmetatable(''), ('').dump == nil, ('ab'):upper()") })
    end)
  end)
end)
