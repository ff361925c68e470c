-- A __gc finaliser would run outside the call, whenever the collector gets to it.
return method({
  name = "escape.gc", summary = "Sets a finaliser", since = "2026-12-01",
  stability = "experimental", permission = "public", result = T.any(),
  examples = { { name = "x", result = 1 } },
  handler = function()
    setmetatable({}, { __gc = function() while true do end end })
    return 1
  end,
})
