-- A pattern with catastrophic backtracking: in C, out of the hook's reach.
return method({
  name = "escape.pattern", summary = "Backtracks forever", since = "2026-12-01",
  stability = "experimental", permission = "public", result = T.any(),
  examples = { { name = "never answers", result = 1 } },
  handler = function()
    local at = ("a"):rep(30000):find("a*a*a*a*b")
    return at
  end,
})
