-- A yield at the top of a handler would leave the call suspended with nothing to resume it.
return method({
  name = "escape.top_yield", summary = "Yields outside a coroutine", since = "2026-12-01",
  stability = "experimental", permission = "public", result = T.any(),
  examples = { { name = "x", result = 1 } },
  handler = function() return coroutine.yield(1) end,
})
