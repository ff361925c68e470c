-- Not an attack: an operator method that declares what the configuration grants works.
return method({
  name = "escape.read_granted", summary = "Reads /proc/loadavg", since = "2026-12-01",
  stability = "experimental", permission = "public", capabilities = { "system.read" },
  result = T.string(), examples = { { name = "x", result = "0.00 0.01 0.05 1/100 4242\n" } },
  handler = function() return (agent.read_file("/proc/loadavg")) end,
})
