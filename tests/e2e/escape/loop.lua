-- An endless loop: the call's instruction budget (or its deadline) stops it.
return method({
  name = "escape.loop", summary = "Loops forever", since = "2026-12-01", stability = "experimental",
  permission = "public", result = T.null(), examples = { { name = "never answers", result = json.null } },
  handler = function()
    local n = 0
    while true do
      n = n + 1
    end
  end,
})
