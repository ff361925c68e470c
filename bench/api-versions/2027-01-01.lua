-- bench/versions.sh only: words (the previous version's name) became body.
local function fields(name)
  return { [name] = T.string():optional(), n = T.integer():optional() }
end
return {
  version = "2027-01-01",
  summary = "bench: words is body",
  changes = { { method = "bench.echo", kind = "renamed_param", description = "words -> body" } },
  before = {
    ["bench.echo"] = {
      params = T.object(fields("words")), result = T.object(fields("words")), param_order = { "words", "n" },
      examples = { { name = "the benchmark's call", params = { words = "hello", n = 42 }, result = { words = "hello", n = 42 } } },
    },
  },
  request = { ["bench.echo"] = function(p) return { body = p.words, n = p.n } end },
  result = { ["bench.echo"] = function(r) return { words = r.body, n = r.n } end },
}
