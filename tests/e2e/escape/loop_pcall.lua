-- An endless loop that catches every error it meets: the stop must not be catchable.
return method({
  name = "escape.loop_pcall", summary = "Loops forever under pcall", since = "2026-12-01",
  stability = "experimental", permission = "public", result = T.null(),
  examples = { { name = "never answers", result = json.null } },
  handler = function()
    while true do
      pcall(function()
        while true do end
      end)
    end
  end,
})
