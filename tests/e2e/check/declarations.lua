-- For `exosphere-guest-agent check`: two methods, each with a mistake on a known line.
return {
  method({
    name = "check.stability", summary = "Bad stability", since = "2026-12-01", stability = "beta",
    permission = "public", result = T.any(), examples = { { name = "x", result = 1 } },
    handler = function() end,
  }),
  method({
    name = "check.example", summary = "Example that does not match", since = "2026-12-01",
    stability = "stable", permission = "public", result = T.integer(),
    examples = { { name = "x", result = "one" } },
    handler = function() end,
  }),
  method({
    name = "check.fine", summary = "Fine", since = "2026-12-01", stability = "stable",
    permission = "public", result = T.integer(), examples = { { name = "x", result = 1 } },
    handler = function() return 1 end,
  }),
}
