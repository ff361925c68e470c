-- API version 2027-01-15: what changed from 2026-12-01, and how clients of 2026-12-01 keep
-- seeing what they were written for (docs/compatibility.md).
--
-- `before` is the older contract, frozen: the schemas and examples of 2026-12-01 for what this
-- version changed. The functions translate between the two: `request` takes a 2026-12-01
-- request up to this version, `result`, `error` and `notification` take this version's
-- answers down to 2026-12-01. They never change the tables they are given (a notification's
-- params are shared by every subscriber), and run under the calling client's budgets.

local Percent = T.integer({ min = 0, max = 100 })

-- A load sample as 2026-12-01 has it: gpuPctUsed is null without a GPU.
local Load = T.object({
  epoch = T.integer({ min = 0 }):describe("When the sample was taken, in Unix seconds"),
  cpuPctUsed = Percent:describe("CPU busy share over the latest sampling window of /proc/stat"),
  memPctUsed = Percent:describe("Memory in use: 100 - MemAvailable / MemTotal * 100, rounded"),
  rootfsPctUsed = Percent:describe("Used share of the root file system, as df shows it"),
  gpuPctUsed = T.nullable(T.array(Percent))
    :describe("Utilisation of each NVIDIA GPU, or null when there is none"),
})

local function copy(t)
  local out = {}
  for k, v in pairs(t) do
    out[k] = v
  end
  return out
end

-- A sample of this version as 2026-12-01 has it: [] becomes null.
local function load_down(sample)
  local out = copy(sample)
  if type(out.gpuPctUsed) == "table" and #out.gpuPctUsed == 0 then
    out.gpuPctUsed = json.null
  end
  return out
end

-- agent.info as 2026-12-01 has it: packages_backend without "packagekit" (the descriptions
-- are 2026-12-01's, frozen with it).
local MethodsLoaded = T.object({
  loaded = T.integer({ min = 0 }):describe("Methods that can be called, rpc.discover included"),
  skipped = T.array(T.object({
    file = T.string():describe("Path of the method file"),
    line = T.integer({ min = 1 }):optional():describe("Line of the mistake, when it is known"),
    error = T.string():describe("Why it was not loaded, with the file and line (for "
      .. "administrators; others see only the file's name)"),
  })):describe("Method files that failed to load; their methods are missing"),
})
local Info = T.object({
  version = T.string():describe("Version of the agent runtime"),
  api_versions = T.array(T.string({ pattern = "^%d%d%d%d%-%d%d%-%d%d$" }), { min_items = 1 })
    :describe("Dated API versions this agent serves, oldest first"),
  current_api_version = T.string({ pattern = "^%d%d%d%d%-%d%d%-%d%d$" })
    :describe("The API version a client gets when it names none"),
  lua_api_level = T.integer({ min = 1 }):describe("Lua API level of the runtime, for method packages"),
  hostname = T.string():describe("Host name of the instance"),
  started = T.integer({ min = 0 }):describe("When the agent started, in Unix seconds"),
  uptime = T.integer({ min = 0 }):describe("Seconds since the agent started"),
  methods = MethodsLoaded,
  packages_backend = T.enum({ "apt", "dnf", "none" }):optional()
    :describe("The package manager the packages.* methods drive, chosen at start ([packages] "
      .. "backend); none when there is none or it is disabled. Absent from older agents, and "
      .. "when it is one this version does not know (PackageKit)."),
})

local NO_GPU = { epoch = 1764072000, cpuPctUsed = 3, memPctUsed = 21, rootfsPctUsed = 35, gpuPctUsed = json.null }

return {
  version = "2027-01-15",
  summary = "system_load.historical takes from/to; gpuPctUsed is always a list; mounts.get; packages.*",
  changes = {
    { method = "system_load.historical", kind = "renamed_param",
      description = "The params since and until are now from and to (until is a reserved word in "
        .. "Lua, and since is also the name of a method's version field)." },
    { method = "system_load.current", kind = "result_changed",
      description = "gpuPctUsed is [] on an instance without a GPU; it was null. A client no longer "
        .. "needs a special case for null." },
    { method = "system_load.historical", kind = "result_changed",
      description = "gpuPctUsed of each sample is [] without a GPU; it was null." },
    { notification = "notify.system_load", kind = "notification_changed",
      description = "gpuPctUsed is [] without a GPU; it was null." },
    { method = "mounts.get", kind = "added",
      description = "One mount by its mountpoint, the Mount object mounts.list gives." },
    { method = "packages.check_updates", kind = "added",
      description = "The updates apt or dnf would install, with their origin and a security flag." },
    { method = "packages.update", kind = "added",
      description = "Updates named packages (on [packages] allow) or all of them, as a job with progress." },
    { method = "self.check_updates", kind = "added",
      description = "The updates of the agent's own packages that self.upgrade would install." },
    { method = "self.upgrade", kind = "added",
      description = "Upgrades the agent's own packages as a job that the restarted agent finishes." },
    { method = "agent.info", kind = "result_changed",
      description = "packages_backend may be packagekit (PackageKit over D-Bus); for a client of "
        .. "2026-12-01 the optional field is left out then." },
  },

  before = {
    ["agent.info"] = {
      result = Info,
      examples = {
        { name = "a freshly started agent", params = {},
          result = { version = "0.1.0", api_versions = { "2026-12-01" }, current_api_version = "2026-12-01",
                     lua_api_level = 2, hostname = "my-instance", started = 1764072000, uptime = 42,
                     methods = { loaded = 3, skipped = {} }, packages_backend = "apt" } },
      },
    },
    ["system_load.current"] = {
      result = Load,
      examples = {
        { name = "an instance with two GPUs", params = {},
          result = { epoch = 1764072000, cpuPctUsed = 12, memPctUsed = 43, rootfsPctUsed = 67, gpuPctUsed = { 5, 97 } } },
        { name = "an instance without a GPU", params = {}, result = NO_GPU },
      },
    },
    ["system_load.historical"] = {
      param_order = { "since", "until", "limit" },
      params = T.object({
        since = T.integer({ min = 0 }):optional():describe("The earliest epoch to return, in Unix seconds (inclusive)"),
        ["until"] = T.integer({ min = 0 }):optional():describe("The latest epoch to return, in Unix seconds (inclusive)"),
        limit = T.integer({ min = 1, max = 10080 }):optional()
          :describe("At most this many samples, the newest in the range (default and most: 10080)"),
      }),
      result = T.array(Load),
      examples = {
        { name = "the last three minutes", params = { since = 1764071880 },
          result = {
            { epoch = 1764071880, cpuPctUsed = 4, memPctUsed = 21, rootfsPctUsed = 35, gpuPctUsed = json.null },
            { epoch = 1764071940, cpuPctUsed = 97, memPctUsed = 22, rootfsPctUsed = 35, gpuPctUsed = json.null },
            NO_GPU,
          } },
        { name = "the newest sample of an instance with a GPU", params = { limit = 1 },
          result = { { epoch = 1764072000, cpuPctUsed = 12, memPctUsed = 43, rootfsPctUsed = 67, gpuPctUsed = { 5 } } } },
      },
    },
    ["notify.system_load"] = {
      params = Load,
      examples = { { name = "an instance without a GPU", params = NO_GPU } },
    },
  },

  request = {
    ["system_load.historical"] = function(params)
      return { from = params.since, to = params["until"], limit = params.limit }
    end,
  },

  result = {
    -- packages_backend is optional: a value 2026-12-01 does not know is left out.
    ["agent.info"] = function(info)
      if info.packages_backend == "packagekit" then
        local out = copy(info)
        out.packages_backend = nil
        return out
      end
      return info
    end,
    ["system_load.current"] = load_down,
    ["system_load.historical"] = function(samples)
      local out = json.array()
      for i, s in ipairs(samples) do
        out[i] = load_down(s)
      end
      return out
    end,
  },

  -- The one error that names a renamed param: "params.to ... before from" is, for a client of
  -- 2026-12-01, "params.until ... before since".
  error = {
    ["system_load.historical"] = function(err)
      local data = err.data
      if err.code ~= -32602 or type(data) ~= "table" or data.path ~= "params.to" then
        return err
      end
      local reason = type(data.reason) == "string" and data.reason:gsub("before from", "before since") or data.reason
      return { code = err.code, message = err.message, data = { path = "params.until", reason = reason } }
    end,
  },

  notification = {
    ["notify.system_load"] = load_down,
  },
}
