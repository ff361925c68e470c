-- Memory growth in small steps: a table that never stops growing.
return method({
  name = "escape.table_bomb", summary = "Grows a table forever", since = "2026-12-01",
  stability = "experimental", permission = "public", result = T.integer(),
  examples = { { name = "never answers", result = 1 } },
  handler = function()
    local t = {}
    for i = 1, math.maxinteger do
      t[i] = { i, i, i, i }
    end
    return #t
  end,
})
