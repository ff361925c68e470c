-- An endless loop inside a coroutine of the method's own.
return method({
  name = "escape.coroutine_loop", summary = "Loops forever in a coroutine", since = "2026-12-01",
  stability = "experimental", permission = "public", result = T.null(),
  examples = { { name = "never answers", result = json.null } },
  handler = function()
    coroutine.wrap(function()
      while true do end
    end)()
  end,
})
