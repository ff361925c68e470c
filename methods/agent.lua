-- agent.*: about the agent itself.

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
  -- Optional in the schema: added after 2026-12-01's first release of this result, so a
  -- client must expect agents that do not send it.
  packages_backend = T.enum({ "apt", "dnf", "packagekit", "none" }):optional()
    :describe("The package manager the packages.* methods drive, chosen at start ([packages] "
      .. "backend): PackageKit (over D-Bus) where it is installed, else apt or dnf; none when "
      .. "there is none or it is disabled. Absent from older agents."),
})

return method({
  name = "agent.info",
  summary = "Describe the running agent",
  description = "Version, supported API versions and uptime of the agent, and which method "
    .. "files loaded. Needs no login, so that a client can find out what it talks to first.",
  since = "2026-12-01",
  stability = "stable",
  permission = "public",
  params = T.object({}),
  result = Info,
  examples = {
    {
      name = "a freshly started agent",
      params = {},
      result = {
        version = "0.1.0",
        api_versions = { "2026-12-01" },
        current_api_version = "2026-12-01",
        lua_api_level = 2,
        hostname = "my-instance",
        started = 1764072000,
        uptime = 42,
        methods = { loaded = 3, skipped = {} },
        packages_backend = "apt",
      },
    },
  },
  handler = function(ctx, params)
    local info = agent.info()
    -- Why an operator's file failed names paths and code: administrators see it, others see
    -- only that a file was skipped.
    local methods = info.methods
    if not (ctx.auth and ctx.auth.admin) and #methods.skipped > 0 then
      local skipped = {}
      for i, s in ipairs(methods.skipped) do
        skipped[i] = { file = s.file:match("[^/]*$"), error = "details are shown to administrators" }
      end
      methods = { loaded = methods.loaded, skipped = skipped }
    end
    return {
      version = info.version,
      api_versions = info.api_versions,
      current_api_version = info.current_api_version,
      lua_api_level = info.lua_api_level,
      hostname = agent.hostname(),
      started = info.started,
      uptime = info.uptime,
      methods = methods,
      packages_backend = info.packages_backend,
    }
  end,
})
