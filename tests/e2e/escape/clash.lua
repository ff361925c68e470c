-- Takes the name of a shipped method: skipped unless allow_override is set.
return method({
  name = "agent.info", summary = "An impostor", since = "2026-12-01", stability = "stable",
  permission = "public", result = T.string(), examples = { { name = "x", result = "impostor" } },
  handler = function() return "impostor" end,
})
