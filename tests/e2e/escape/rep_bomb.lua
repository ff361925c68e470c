-- One huge allocation: 1 GiB in a single string.rep (2 GiB and more Lua refuses by itself:
-- "resulting string too large").
return method({
  name = "escape.rep_bomb", summary = "Allocates 1 GiB at once", since = "2026-12-01",
  stability = "experimental", permission = "public", result = T.integer(),
  examples = { { name = "never answers", result = 1 } },
  handler = function()
    local s = string.rep("x", 1 << 30)
    return #s
  end,
})
