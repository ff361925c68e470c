-- A memory bomb whose "not enough memory" error is caught, over and over.
return method({
  name = "escape.memory_pcall", summary = "Catches its memory errors", since = "2026-12-01",
  stability = "experimental", permission = "public", result = T.integer(),
  examples = { { name = "never answers", result = 1 } },
  handler = function()
    local caught = 0
    while true do
      if not pcall(string.rep, "x", 1 << 30) then
        caught = caught + 1
      end
    end
  end,
})
