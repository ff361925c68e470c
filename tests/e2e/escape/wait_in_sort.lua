-- A binding called where the call cannot yield (a table.sort comparator): refused before the
-- runtime starts anything, so no stray answer resumes the call later at the wrong place.
return method({
  name = "escape.wait_in_sort", summary = "Sleeps inside table.sort", since = "2026-12-01",
  stability = "experimental", permission = "public",
  result = T.object({ ok = T.boolean(), err = T.string(), waited_ms = T.integer() }),
  examples = { { name = "refused", result = { ok = false, err = "...", waited_ms = 200 } } },
  handler = function()
    local ok, err = pcall(table.sort, { 3, 2, 1 }, function(a, b)
      agent.sleep(5)
      return a < b
    end)
    local t0 = agent.now_ms()
    agent.sleep(200)
    return { ok = ok, err = err, waited_ms = agent.now_ms() - t0 }
  end,
})
