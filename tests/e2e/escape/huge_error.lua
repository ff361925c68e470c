-- Errors of a megabyte: the agent bounds what it logs and answers.
return {
  method({
    name = "escape.huge_error", summary = "Raises a 1 MB string", since = "2026-12-01",
    stability = "experimental", permission = "public", result = T.any(),
    examples = { { name = "x", result = 1 } },
    handler = function() error(string.rep("x", 1000000)) end,
  }),
  method({
    name = "escape.huge_message", summary = "Raises a 1 MB agent error message", since = "2026-12-01",
    stability = "experimental", permission = "public", result = T.any(),
    errors = { errors.Failed }, examples = { { name = "x", result = 1 } },
    handler = function() error(errors.Failed(string.rep("y", 1000000), { blob = string.rep("z", 1000000) })) end,
  }),
}
