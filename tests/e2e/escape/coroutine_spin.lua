-- Not an attack: CPU-bound work inside the method's own coroutine is preempted many times
-- (each preemption travels up through the coroutine wrapper) and still ends with its result.
return method({
  name = "escape.coroutine_spin", summary = "Counts inside a coroutine, long enough to be preempted",
  since = "2026-12-01", stability = "experimental", permission = "public", result = T.integer(),
  examples = { { name = "the count", result = 3000000 } },
  handler = function()
    local n = 0
    local spin = coroutine.wrap(function()
      for _ = 1, 3 do
        for _ = 1, 1000000 do n = n + 1 end
        coroutine.yield(n)
      end
    end)
    local last
    for _ = 1, 3 do last = spin() end
    return last
  end,
})
