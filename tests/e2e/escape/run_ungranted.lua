-- Runs a program without declaring process.run (which operators did not grant anyway).
return method({
  name = "escape.run_ungranted", summary = "Runs id without the capability", since = "2026-12-01",
  stability = "experimental", permission = "public", result = T.any(),
  examples = { { name = "refused", result = 1 } },
  handler = function()
    local res = agent.run({ "id" })
    return res
  end,
})
