require("tests.lua.helpers.setup")
local pattern = require("sandbox.pattern")

describe("Lua pattern to ECMA regex", function()
  local function ecma(p)
    return pattern.to_ecma(p)
  end

  it("translates anchors, literals, classes, sets and quantifiers", function()
    assert.equal("^[a-z]+$", ecma("^%l+$"))
    assert.equal("^[0-9][0-9]-[A-Za-z0-9_]*?x?$", ecma("^%d%d%-[%w_]-x?$"))
    assert.equal("^[a-z\\-]+\\.lua$", ecma("^[a-z%-]+%.lua$"))
    assert.equal("^[0-9A-Fa-f]+$", ecma("^[%x]+$"))
    assert.equal("a[\\s\\S]*b", ecma("a.*b"))
    assert.equal("a[\\s\\S]+b", ecma("a.+b"))
  end)

  it("escapes characters that are special in ECMA but literal in Lua", function()
    assert.equal("a\\^b\\$c\\/", ecma("a^b$c/"))
    assert.equal("\\(x\\)", ecma("%(x%)"))
    assert.equal("\\{\\|\\}", ecma("{|}"))
  end)

  it("reads a dash after a set element as a range, and before ] as a literal", function()
    assert.equal("[a-c]", ecma("[a-c]"))
    assert.equal("[a\\-]", ecma("[a-]"))
  end)

  it("refuses what could disagree on non-ASCII text or has no ECMA equivalent", function()
    for _, p in ipairs({ "^.$", "a.?b", "[^a]", "%D", "%S+", "é+", "%b()", "%f[%w]", "(a)%1", "()", "[]a]" }) do
      assert.is_nil(ecma(p), p)
    end
  end)
end)
