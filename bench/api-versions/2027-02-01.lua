-- bench/versions.sh only: body (the previous version's name) became text.
local function fields(name)
  return { [name] = T.string():optional(), n = T.integer():optional() }
end
return {
  version = "2027-02-01",
  summary = "bench: body is text",
  changes = { { method = "bench.echo", kind = "renamed_param", description = "body -> text" } },
  before = {
    ["bench.echo"] = {
      params = T.object(fields("body")), result = T.object(fields("body")), param_order = { "body", "n" },
      examples = { { name = "the benchmark's call", params = { body = "hello", n = 42 }, result = { body = "hello", n = 42 } } },
    },
  },
  request = { ["bench.echo"] = function(p) return { text = p.body, n = p.n } end },
  result = { ["bench.echo"] = function(r) return { body = r.text, n = r.n } end },
}
