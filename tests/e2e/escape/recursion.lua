-- Recursion without end: a stack overflow, which must be an ordinary error.
local function deeper(n)
  return deeper(n + 1) + 1
end

return method({
  name = "escape.recursion", summary = "Recurses forever", since = "2026-12-01",
  stability = "experimental", permission = "public", result = T.integer(),
  examples = { { name = "never answers", result = 1 } },
  handler = function() return deeper(1) end,
})
