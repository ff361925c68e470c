-- Declares process.run, which the configuration does not grant to operator methods: the
-- file is skipped.
return method({
  name = "escape.declares_run", summary = "Wants to run programs", since = "2026-12-01",
  stability = "experimental", permission = "public", capabilities = { "process.run" },
  result = T.any(), examples = { { name = "never loads", result = 1 } },
  handler = function() return agent.run({ "id" }) end,
})
