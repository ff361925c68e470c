-- CPU-bound for params.ms milliseconds, then answers: other calls must keep being served.
return method({
  name = "escape.busy", summary = "Keeps the CPU busy", since = "2026-12-01",
  stability = "experimental", permission = "public",
  params = T.object({ ms = T.integer({ min = 0, max = 60000 }) }),
  result = T.object({ rounds = T.integer() }),
  examples = { { name = "a second", params = { ms = 1000 }, result = { rounds = 123456 } } },
  handler = function(ctx, params)
    local stop, rounds = agent.now_ms() + params.ms, 0
    while agent.now_ms() < stop do
      for _ = 1, 1000 do
        rounds = rounds + 1
      end
    end
    return { rounds = rounds }
  end,
})
