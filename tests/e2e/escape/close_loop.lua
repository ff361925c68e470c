-- An endless loop in a __close handler, which runs when the handler returns.
return method({
  name = "escape.close_loop", summary = "Loops forever in __close", since = "2026-12-01",
  stability = "experimental", permission = "public", result = T.integer(),
  examples = { { name = "never answers", result = 1 } },
  handler = function()
    local guard <close> = setmetatable({}, { __close = function()
      while true do end
    end })
    return 1
  end,
})
