-- Not an attack: bindings must work inside the method's own coroutines (the runtime knows
-- the call, and its capabilities, there too), and the runtime's resumes must reach the right
-- coroutine.
return method({
  name = "escape.coroutine_sleep", summary = "Sleeps and reads inside nested coroutines",
  since = "2026-12-01", stability = "experimental", permission = "public",
  capabilities = { "system.read" },
  result = T.object({ values = T.array(T.any()), slept_ms = T.integer(), loadavg = T.string() }),
  examples = { { name = "a nap", result = { values = { "a", 30, "b" }, slept_ms = 30, loadavg = "0.00 0.01 0.05 1/100 4242\n" } } },
  handler = function()
    local t0 = agent.now_ms()
    local values, loadavg = {}, nil
    local gen = coroutine.wrap(function()
      coroutine.yield("a")
      local inner = coroutine.wrap(function()
        pcall(agent.sleep, 30)
        loadavg = agent.read_file("/proc/loadavg")
        coroutine.yield(agent.now_ms() - t0)
      end)
      coroutine.yield(inner())
      coroutine.yield("b")
    end)
    for _ = 1, 3 do
      local v = gen()
      values[#values + 1] = v
    end
    return { values = values, slept_ms = agent.now_ms() - t0, loadavg = loadavg }
  end,
})
