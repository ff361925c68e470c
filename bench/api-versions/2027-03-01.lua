-- bench/versions.sh only: text (the previous version's name) became message.
local function fields(name)
  return { [name] = T.string():optional(), n = T.integer():optional() }
end
return {
  version = "2027-03-01",
  summary = "bench: text is message",
  changes = { { method = "bench.echo", kind = "renamed_param", description = "text -> message" } },
  before = {
    ["bench.echo"] = {
      params = T.object(fields("text")), result = T.object(fields("text")), param_order = { "text", "n" },
      examples = { { name = "the benchmark's call", params = { text = "hello", n = 42 }, result = { text = "hello", n = 42 } } },
    },
  },
  request = { ["bench.echo"] = function(p) return { message = p.text, n = p.n } end },
  result = { ["bench.echo"] = function(r) return { text = r.message, n = r.n } end },
}
