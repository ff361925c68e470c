-- site_motd.lua: site.motd, a message of the day with the instance's load and uptime.
--
-- The example operator method of docs/method-authoring.md. To install it, copy this file to
-- /etc/exosphere-guest-agent/methods.d/ and grant operator methods what it declares:
--
--   [methods]
--   operator_capabilities = system.read
--
-- then reload the agent (systemctl reload exosphere-guest-agent). Its spec is
-- docs/examples/site_motd_spec.lua.

local Load = T.object({
  one = T.number({ min = 0 }):describe("Load average over the last minute"),
  five = T.number({ min = 0 }):describe("Load average over the last 5 minutes"),
  fifteen = T.number({ min = 0 }):describe("Load average over the last 15 minutes"),
})

-- Reads a file under /proc, or fails the call with Unavailable.
local function read_proc(path)
  local text, err = agent.read_file(path)
  if not text then
    error(errors.Unavailable(("cannot read %s: %s"):format(path, err)))
  end
  return text
end

-- /proc/loadavg reads "0.15 0.10 0.05 1/123 4567": three load averages, then tasks.
local function load_average()
  local fields = agent.split(read_proc("/proc/loadavg"))
  local one, five, fifteen = tonumber(fields[1]), tonumber(fields[2]), tonumber(fields[3])
  if not (one and five and fifteen) then
    error(errors.Unavailable("/proc/loadavg is not in the expected format"))
  end
  return { one = one, five = five, fifteen = fifteen }
end

-- /proc/uptime reads "350735.47 234388.90": seconds since boot, then idle seconds.
local function uptime_seconds()
  local seconds = tonumber(agent.split(read_proc("/proc/uptime"))[1])
  if not seconds then
    error(errors.Unavailable("/proc/uptime is not in the expected format"))
  end
  return math.floor(seconds)
end

-- "4 days", "1 hour", "12 minutes": the largest whole unit.
local function duration(seconds)
  for _, unit in ipairs({ { 86400, "day" }, { 3600, "hour" }, { 60, "minute" } }) do
    local n = seconds // unit[1]
    if n > 0 then
      return ("%d %s%s"):format(n, unit[2], n == 1 and "" or "s")
    end
  end
  return "less than a minute"
end

return method({
  name = "site.motd",
  summary = "A message of the day with the instance's load and uptime",
  description = "Greets the user with the host name, the load averages of /proc/loadavg and the "
    .. "time since boot, for a site's login banner.",
  since = "2026-12-01",
  stability = "experimental",
  permission = "user",
  capabilities = { "system.read" },
  params = T.object({
    greeting = T.string({ min_len = 1, max_len = 80 }):optional():describe("Replaces \"Welcome\""),
  }),
  result = T.object({
    text = T.string():describe("The message, one line"),
    load = Load,
    uptime_s = T.integer({ min = 0 }):describe("Seconds since the instance booted"),
  }),
  errors = { errors.Unavailable },
  examples = {
    {
      name = "the default greeting",
      params = {},
      result = {
        text = "Welcome to vm-1: load 0.15 0.10 0.05, up 4 days",
        load = { one = 0.15, five = 0.10, fifteen = 0.05 },
        uptime_s = 350735,
      },
    },
    {
      name = "a greeting of the site's own",
      params = { greeting = "Moin" },
      result = {
        text = "Moin to vm-1: load 2.50 1.00 0.75, up 1 hour",
        load = { one = 2.5, five = 1.0, fifteen = 0.75 },
        uptime_s = 3600,
      },
    },
  },
  handler = function(ctx, params)
    local load, up = load_average(), uptime_seconds()
    return {
      text = ("%s to %s: load %.2f %.2f %.2f, up %s"):format(params.greeting or "Welcome",
        agent.hostname(), load.one, load.five, load.fifteen, duration(up)),
      load = load,
      uptime_s = up,
    }
  end,
})
