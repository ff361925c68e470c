-- bench.*: a method for bench/run.sh only; not shipped (packages install methods/ alone).
-- It answers its params unchanged, so the benchmark measures the runtime (TLS, HTTP,
-- JSON-RPC, the per-call coroutine, parameter checks) rather than any work of a method.

local Params = {
  message = T.string():optional():describe("Any text; echoed back"),
  n = T.integer():optional():describe("Any integer; echoed back"),
}

return method({
  name = "bench.echo",
  summary = "Echo the params (benchmark only)",
  description = "Returns its params as they came. Loaded only by bench/run.sh, which adds "
    .. "bench/methods to [methods] dirs.",
  since = "2026-12-01",
  stability = "experimental",
  permission = "public",
  params = T.object(Params),
  result = T.object(Params),
  examples = {
    { name = "the benchmark's call", params = { message = "hello", n = 42 }, result = { message = "hello", n = 42 } },
  },
  handler = function(ctx, params)
    return params
  end,
})
