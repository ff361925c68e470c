-- A syntax error on line 5: the file is skipped, with its path and line.
return method({
  name = "escape.broken", summary = "Broken", since = "2026-12-01",
  stability = "experimental", permission = "public",
  result = T.any(), examples = { { name = "x", result = 1 } } ]
})
