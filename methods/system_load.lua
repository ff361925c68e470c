-- system_load.*: how busy the instance is, in the shape of the console line that Exosphere
-- charts today: {"epoch":..,"cpuPctUsed":..,"memPctUsed":..,"rootfsPctUsed":..,"gpuPctUsed":[..]}.
-- Exosphere's decoder requires integers for the three percentages. Since API version
-- 2027-01-15 gpuPctUsed is [] without a GPU (the console line keeps null, and clients of
-- 2026-12-01 get null through api-versions/2027-01-15.lua).

local NVIDIA_SMI = { "nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits" }
local NVIDIA_SMI_TIMEOUT_MS = 5000

local Percent = T.integer({ min = 0, max = 100 })

local Load = T.object({
  epoch = T.integer({ min = 0 }):describe("When the sample was taken, in Unix seconds"),
  cpuPctUsed = Percent:describe("CPU busy share over the latest sampling window of /proc/stat"),
  memPctUsed = Percent:describe("Memory in use: 100 - MemAvailable / MemTotal * 100, rounded"),
  rootfsPctUsed = Percent:describe("Used share of the root file system, as df shows it"),
  gpuPctUsed = T.array(Percent, { max_items = 16 })
    :describe("Utilisation of each NVIDIA GPU; empty when there is none"),
})

-- Memory in use, rounded, from /proc/meminfo's MemTotal and MemAvailable (both in kB).
local function mem_pct_used()
  local text, err = agent.read_file("/proc/meminfo")
  if not text then
    error(errors.Unavailable("cannot read /proc/meminfo: " .. err))
  end
  local total = tonumber(text:match("MemTotal:%s*(%d+)"))
  local available = tonumber(text:match("MemAvailable:%s*(%d+)"))
  if not total or not available or total == 0 then
    error(errors.Unavailable("/proc/meminfo has no MemTotal or MemAvailable"))
  end
  return math.floor(100 - available * 100 / total + 0.5)
end

-- The used share of / as df computes it: used = blocks - bfree, out of what a user could
-- have (used + bavail, leaving out the reserved blocks), rounded up.
local function rootfs_pct_used()
  local fs, err = agent.statfs("/")
  if not fs then
    error(errors.Unavailable("cannot statfs /: " .. err))
  end
  local used = fs.blocks - fs.bfree
  local usable = used + fs.bavail
  if usable == 0 then
    return 0
  end
  return (used * 100 + usable - 1) // usable
end

-- Each GPU's utilisation from nvidia-smi, one integer per line; nil when there is no
-- nvidia-smi (no GPU driver) or when its answer cannot be trusted.
local function gpu_pct_used(ctx)
  local res, err = agent.run(NVIDIA_SMI, { timeout_ms = NVIDIA_SMI_TIMEOUT_MS })
  if not res then
    if not err:find("^not found") then
      ctx.log("warn", "nvidia-smi failed: " .. err)
    end
    return nil
  elseif res.timed_out or res.exit ~= 0 then
    ctx.log("warn", ("nvidia-smi failed (exit %s, signal %s%s): %s"):format(tostring(res.exit),
      tostring(res.signal), res.timed_out and ", timed out" or "", res.stderr))
    return nil
  end
  local gpus = {}
  for line in res.stdout:gmatch("[^\n]+") do
    local pct = math.tointeger(tonumber(line:match("^%s*(%d+)%s*$")))
    if not pct or pct > 100 then
      ctx.log("warn", "nvidia-smi gave an unexpected line: " .. line)
      return nil
    end
    gpus[#gpus + 1] = pct
  end
  if #gpus == 0 then
    ctx.log("warn", "nvidia-smi listed no GPUs")
    return nil
  end
  return gpus
end

local current = method({
  name = "system_load.current",
  summary = "Current CPU, memory, root file system and GPU use",
  description = "The same object the agent writes to the console once a minute for older "
    .. "Exosphere versions. Percentages are integers from 0 to 100.",
  since = "2026-12-01",
  stability = "stable",
  permission = "user",
  -- /proc/meminfo and statfs("/"); nvidia-smi for the GPUs.
  capabilities = { "system.read", "process.run" },
  params = T.object({}),
  result = Load,
  errors = { errors.Unavailable },
  examples = {
    {
      name = "an instance with two GPUs",
      params = {},
      result = { epoch = 1764072000, cpuPctUsed = 12, memPctUsed = 43, rootfsPctUsed = 67, gpuPctUsed = { 5, 97 } },
    },
    {
      name = "an instance without a GPU",
      params = {},
      result = { epoch = 1764072000, cpuPctUsed = 3, memPctUsed = 21, rootfsPctUsed = 35, gpuPctUsed = {} },
    },
  },
  handler = function(ctx, params)
    return {
      epoch = agent.time(),
      cpuPctUsed = agent.cpu_percent(),
      memPctUsed = mem_pct_used(),
      rootfsPctUsed = rootfs_pct_used(),
      gpuPctUsed = gpu_pct_used(ctx) or json.array(),
    }
  end,
})

-- The most samples one call returns: 7 days of minutes, all the agent keeps.
local MAX_SAMPLES = 10080

local historical = method({
  name = "system_load.historical",
  summary = "CPU, memory, root file system and GPU use over time",
  description = "The samples the agent takes itself, by running system_load.current at each "
    .. "multiple of [system_load] interval (a minute by default), oldest first. The history "
    .. "survives agent restarts and covers [system_load] history (24 hours by default).",
  since = "2026-12-01",
  stability = "experimental",
  permission = "user",
  capabilities = { "system.read" },
  param_order = { "from", "to", "limit" },
  params = T.object({
    from = T.integer({ min = 0 }):optional():describe("The earliest epoch to return, in Unix seconds (inclusive)"),
    to = T.integer({ min = 0 }):optional():describe("The latest epoch to return, in Unix seconds (inclusive)"),
    limit = T.integer({ min = 1, max = MAX_SAMPLES }):optional()
      :describe("At most this many samples, the newest in the range (default and most: 10080)"),
  }),
  result = T.array(Load),
  examples = {
    {
      name = "the last three minutes",
      params = { from = 1764071880 },
      result = {
        { epoch = 1764071880, cpuPctUsed = 4, memPctUsed = 21, rootfsPctUsed = 35, gpuPctUsed = {} },
        { epoch = 1764071940, cpuPctUsed = 97, memPctUsed = 22, rootfsPctUsed = 35, gpuPctUsed = {} },
        { epoch = 1764072000, cpuPctUsed = 3, memPctUsed = 21, rootfsPctUsed = 35, gpuPctUsed = {} },
      },
    },
    {
      name = "the newest sample of an instance with a GPU",
      params = { limit = 1 },
      result = {
        { epoch = 1764072000, cpuPctUsed = 12, memPctUsed = 43, rootfsPctUsed = 67, gpuPctUsed = { 5 } },
      },
    },
  },
  handler = function(ctx, params)
    if params.from and params.to and params.to < params.from then
      error(errors.InvalidParams("params.to", ("is %d, before from (%d)"):format(params.to, params.from)))
    end
    return agent.load_history(params.from, params.to, params.limit)
  end,
})

local load_notification = notification({
  name = "notify.system_load",
  summary = "A load sample, each time the agent takes one",
  description = "Sent at each multiple of [system_load] interval (a minute by default) with the "
    .. "sample the agent has just taken by running system_load.current: the same object, the "
    .. "one system_load.historical returns last.",
  since = "2026-12-01",
  stability = "experimental",
  permission = "user",
  params = Load,
  examples = {
    {
      name = "an instance without a GPU",
      params = { epoch = 1764072000, cpuPctUsed = 3, memPctUsed = 21, rootfsPctUsed = 35, gpuPctUsed = {} },
    },
  },
})

return { current, historical, load_notification }
