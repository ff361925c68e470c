-- The pattern guard's estimator (sandbox/pattern_guard.lua): linear patterns pass on long
-- subjects, backtracking ones are refused before the matcher runs, and what passes behaves
-- exactly like the standard functions.
local setup = require("tests.lua.helpers.setup")
local guard = require("sandbox.pattern_guard")

local MiB = 1024 * 1024

local function allowed(p, n, gmatch)
  return guard.estimate(p, n, gmatch) <= guard.BUDGET
end

describe("the pattern guard", function()
  after_each(setup.restore_string_metatable)

  describe("allows linear patterns on long subjects", function()
    local cases = {
      { "MemTotal:%s*(%d+)", MiB, false, "a selective first item" },
      { "[^\n]+", MiB, true, "a scan whose rest cannot fail (gmatch)" },
      { "%S+", MiB, true, "words" },
      { "%f[%w]%w+", MiB, true, "a frontier whose scans stay inside the runs it starts" },
      { "^%s*(%d+)%s*$", MiB, false, "anchored, repeated items disjoint from what follows" },
      { "^(%S+)%s+(%S+)%s+(%S+)", 256 * 1024, false, "fields of a line" },
      { "^(.-)$", MiB, false, "a lazy any-character scan that can only end at the end" },
      { "%.lua$", MiB, false, "a literal suffix" },
    }
    for _, c in ipairs(cases) do
      it(c[4] .. ": " .. c[1], function()
        assert.is_true(allowed(c[1], c[2], c[3]))
      end)
    end
  end)

  describe("refuses backtracking patterns on long subjects", function()
    local cases = {
      { "a*a*a*b", 5000, false, "nested repeats that match the same characters: n^3" },
      { "^%s*(.-)%s*$", 4096, false, "the trim idiom on 4 KiB: n^2" },
      { "x.*y", 10000, false, "an unanchored scan to the end: n^2" },
      { "%s*x", MiB, false, "a scan that fails after it at every start: n^2" },
      { "(%w+)=(%w+)", 100000, true, "key=value over a long word: n^2" },
      { "%b()", 100000, true, "unbalanced brackets rescanned from every start" },
      { ("a?"):rep(30) .. ("a"):rep(30), 30, false, "optional items: 2^k" },
      { "/+$", 8192, false, "trailing slashes on a long run of slashes" },
    }
    for _, c in ipairs(cases) do
      it(c[4] .. ": " .. c[1]:sub(1, 30), function()
        assert.is_false(allowed(c[1], c[2], c[3]))
      end)
    end

    it("without overflowing: n^4 and more on long subjects stay refused", function()
      assert.is_false(allowed("a*a*a*a*b", 30000))
      assert.is_false(allowed(("a*"):rep(40) .. "b", 1024 * MiB))
      assert.has_error(function() guard.find(("a"):rep(30000), "a*a*a*a*b") end)
    end)

    it("but allows the same patterns on short subjects", function()
      assert.is_true(allowed("^%s*(.-)%s*$", 1000))
      assert.is_true(allowed("(%w+)=(%w+)", 1000, true))
      assert.is_true(allowed("x.*y", 1000))
    end)
  end)

  it("reads ^ as an anchor except in gmatch, where it is a literal", function()
    assert.is_true(guard.estimate("^a*a*b", 1000) < guard.estimate("^a*a*b", 1000, true))
    local found = {}
    for m in guard.gmatch("^a^a", "^a") do
      found[#found + 1] = m
    end
    assert.same({ "^a", "^a" }, found)
  end)

  it("refuses malformed patterns before matching, with the matcher's messages", function()
    for p, msg in pairs({
      ["a*a*a*%"] = "malformed pattern (ends with '%')",
      ["[a"] = "malformed pattern (missing ']')",
      ["(a"] = "unfinished capture",
      ["a)"] = "invalid pattern capture",
      ["%b("] = "malformed pattern (missing arguments to '%b')",
      ["%fa"] = "missing '[' after '%f' in pattern",
      ["(a%1)"] = "invalid capture index %1",
    }) do
      local ok, err = pcall(guard.match, ("a"):rep(100), p)
      assert.is_false(ok, p)
      assert.matches("string.match: " .. msg, err, 1, true)
    end
  end)

  it("counts the start offset: only the bytes the matcher will see", function()
    local s = ("a"):rep(100000)
    assert.has_error(function() guard.find(s, "a*a*b") end)
    assert.equal(nil, guard.find(s, "a*a*b", -100))
  end)

  it("limits plain finds by subject length times needle length", function()
    local s = ("a"):rep(4 * MiB)
    assert.equal(nil, guard.find(s, ("a"):rep(64) .. "b", 1, true))
    assert.has_error(function() guard.find(s, ("a"):rep(1000) .. "b", 1, true) end)
    -- A pattern without special characters is compared as plain text too.
    assert.has_error(function() guard.find(s, ("a"):rep(1000) .. "b") end)
  end)

  it("raises what the host installs, after telling the host where", function()
    local seen
    local old_error, old_refuse = guard.limit_error, guard.on_refuse
    guard.limit_error = function(msg) return { refused = msg } end
    guard.on_refuse = function(msg, where) seen = where end
    local ok, err = pcall(function()
      local found = guard.match(("a"):rep(10000), "a*a*a*b")
      return found
    end)
    guard.limit_error, guard.on_refuse = old_error, old_refuse
    assert.is_false(ok)
    assert.matches("^string.match: pattern \"a%*a%*a%*b\" on a subject of 10000 bytes", err.refused)
    assert.matches("pattern_guard_spec.lua:%d+$", seen)
  end)

  it("gives the same answers as the standard functions when it allows a call", function()
    local subjects = { "", "a", "MemTotal:  123 kB\nMemFree: 4 kB\n", " x = 1, y = 22 ", "((a)(b))", "é\0z" }
    local patterns = { "%d+", "(%w+)%s*=%s*(%w+)", "^%s*(.-)%s*$", "%b()", "()", "[^\n]+", "%f[%w]%w+",
                       "(a)%1", "z$", "^", "", ".-", "\0" }
    for _, s in ipairs(subjects) do
      for _, p in ipairs(patterns) do
        local what = ("%q on %q"):format(p, s)
        assert.same({ string.find(s, p) }, { guard.find(s, p) }, what)
        assert.same({ string.find(s, p, 2) }, { guard.find(s, p, 2) }, what)
        assert.same({ string.match(s, p) }, { guard.match(s, p) }, what)
        assert.same({ string.gsub(s, p, "<%0>") }, { guard.gsub(s, p, "<%0>") }, what)
        local a, b = {}, {}
        for x in string.gmatch(s, p) do a[#a + 1] = x end
        for x in guard.gmatch(s, p) do b[#b + 1] = x end
        assert.same(a, b, what)
      end
    end
  end)

  it("leaves wrong argument types to the standard functions", function()
    assert.has_error(function() guard.find({}, "a") end, "bad argument #1 to 'find' (string expected, got table)")
    assert.equal(2, guard.find(123, "2"))
  end)
end)
