-- Notifications on the host's side: the notifications.* methods, who is subscribed to what,
-- emitting, and the mount-table diff behind notify.mounts.* (docs/decisions/0011-notifications.md).
--
-- Subscriptions belong to WebSocket sessions, which only the runtime knows: it gives each
-- session an integer id (ctx.session in a call), sends text to it with core.session_send(id,
-- text), and says when it ends with host.session_closed(id). The host keeps, per VM, the
-- names each session is subscribed to and the sessions subscribed to each name, so that
-- emitting costs one encode and one send per subscriber, and nothing else.
--
-- The notifications.* methods live here rather than in a method file: the subscription
-- table must be out of reach of method code (a method could otherwise read or forge other
-- sessions' subscriptions), and like rpc.discover they describe the host's own registry.

local core = require("exo.core")
local json = require("exo.json")
local schema = require("sandbox.schema")
local render = require("sandbox.schema_render")
local errors = require("sandbox.errors")
local method = require("sandbox.method")
local versions = require("sandbox.versions")

local T = schema.T

local M = {}

M.MOUNTS_PREFIX = "notify.mounts."
-- Names one subscribe or unsubscribe call may carry: more than the agent declares.
M.MAX_NAMES = 64
M.MAX_NAME_LEN = 128

-- Set by M.reset: { registry, events, refusal, by_session = {id -> {name -> true}},
-- by_name = {name -> {id -> true}}, version = {id -> the API version it subscribed under},
-- mounts_names = {...}, mounts = nil or the last list, versions = the API versions' set }.
local state

local function log(level, msg)
  core.log(level, "notifications: " .. msg)
end

--------------------------------------------------------------------------------------------
-- Subscriptions.

local function sorted_names(set)
  local list = json.array()
  for name in pairs(set or {}) do
    list[#list + 1] = name
  end
  table.sort(list)
  return list
end

-- True while a session is subscribed to one of the notify.mounts.* names.
function M.mounts_wanted()
  if not state then
    return false
  end
  for _, name in ipairs(state.mounts_names) do
    if next(state.by_name[name] or {}) ~= nil then
      return true
    end
  end
  return false
end

-- The previous mount list is only worth keeping while someone will be told of a change.
local function forget_mounts_unless_wanted()
  if not M.mounts_wanted() then
    state.mounts = nil
  end
end

-- A first subscriber to notify.mounts.* needs a list to compare the next change with: the
-- runtime takes one (an internal mounts.list call) and hands it to M.mounts_update.
local function want_baseline(was_wanted)
  if was_wanted or state.mounts ~= nil or not M.mounts_wanted() then
    return
  end
  local events = state.events
  if not (events and events.mounts_snapshot) then
    log("warn", "this runtime cannot list the mounts on its own (no exo.events); notify.mounts.* "
      .. "starts with the first change instead of the current mounts")
    return
  end
  local ok, err = events.mounts_snapshot()
  if not ok then
    log("warn", "cannot take the mounts baseline: " .. tostring(err))
  end
end

local function subscribe(id, names, who, version)
  local was_wanted = M.mounts_wanted()
  state.who[id] = who
  state.version[id] = version
  local mine = state.by_session[id] or {}
  state.by_session[id] = mine
  for _, name in ipairs(names) do
    mine[name] = true
    local set = state.by_name[name] or {}
    state.by_name[name] = set
    set[id] = true
  end
  want_baseline(was_wanted)
  return sorted_names(mine)
end

local function unsubscribe(id, names)
  local mine = state.by_session[id]
  for _, name in ipairs(names) do
    if mine then
      mine[name] = nil
    end
    local set = state.by_name[name]
    if set then
      set[id] = nil
    end
  end
  if mine and next(mine) == nil then
    state.by_session[id] = nil
    state.who[id] = nil
    state.version[id] = nil
  end
  forget_mounts_unless_wanted()
  return sorted_names(mine)
end

-- Drops every subscription of session id (it ended, or it can no longer be sent to).
local function drop(id)
  local mine = state.by_session[id]
  if not mine then
    return
  end
  for name in pairs(mine) do
    local set = state.by_name[name]
    if set then
      set[id] = nil
    end
  end
  state.by_session[id] = nil
  state.who[id] = nil
  state.version[id] = nil
  forget_mounts_unless_wanted()
end

-- host.session_closed(id): the runtime ended session id.
function M.session_closed(id)
  if state then
    drop(id)
  end
end

-- A login, token or logout on session id changed who it is: its subscriptions were allowed
-- for the identity it had, so they go, and the client subscribes again as whoever it is now.
function M.identity_changed(id)
  if state and id then
    drop(id)
  end
end

-- The sorted names session id is subscribed to (for tests and the runtime's logs).
function M.subscriptions(id)
  return sorted_names(state and state.by_session[id])
end

--------------------------------------------------------------------------------------------
-- Emitting.

-- host.emit(name, params): sends {"jsonrpc":"2.0","method":name,"params":params} to every
-- session subscribed to name, encoded once. A session that session_send refuses (gone or
-- closing) loses its subscriptions. Returns how many sessions it was sent to. An undeclared
-- name raises (a bug in the caller); params that do not match the declaration are logged and
-- not sent, so a subscriber only ever sees what the documentation promises.
-- The params of notification `name`, normalised, validated and encoded once: the text, or
-- nil (a mismatch or an encoding failure is logged).
local function encode(d, name, params)
  params = schema.normalize(d.params, params)
  local ok, path, reason = schema.validate(d.params, params, "params")
  if not ok then
    log("error", ("%s not sent: its params do not match the declaration: %s %s"):format(name, path, reason))
    return nil
  end
  local encoded, text = pcall(json.encode, { jsonrpc = "2.0", method = name, params = params })
  if not encoded then
    log("error", ("%s not sent: its params cannot be encoded: %s"):format(name, tostring(text)))
    return nil
  end
  return text
end

-- Sends text to each session of the list; a session that session_send refuses (gone or
-- closing) loses its subscriptions. Returns how many it was sent to.
local function send_all(ids, text)
  local sent, gone = 0, {}
  for _, id in ipairs(ids) do
    if core.session_send(id, text) then
      sent = sent + 1
    else
      gone[#gone + 1] = id
    end
  end
  for _, id in ipairs(gone) do
    drop(id)
  end
  return sent
end

-- host.emit(name, params): sends {"jsonrpc":"2.0","method":name,"params":params} to every
-- session subscribed to name, encoded once. A session that session_send refuses (gone or
-- closing) loses its subscriptions. Returns how many sessions it was sent to. An undeclared
-- name raises (a bug in the caller); params that do not match the declaration are logged and
-- not sent, so a subscriber only ever sees what the documentation promises.
function M.emit(name, params)
  return M.emit_to(name, params)
end

-- Like emit, but only to the subscribers for whom allow(who) is true (who = { user, admin }
-- as the session was logged in when it subscribed), and also to session `extra` (subscribed
-- or not) when it is given: the jobs' notifications (sandbox/jobs.lua) go to the session that
-- started the job and to those who may see it.
function M.emit_to(name, params, extra, allow)
  if not state then
    error("host.emit: host.init has not run", 2)
  end
  if not state.registry:notification(name) then
    error(("host.emit: no notification named %s is declared"):format(tostring(name)), 2)
  end
  local set = state.by_name[name] or {}
  local ids = {}
  for id in pairs(set) do
    if id ~= extra and (allow == nil or allow(state.who[id])) then
      ids[#ids + 1] = id
    end
  end
  if math.type(extra) == "integer" then
    ids[#ids + 1] = extra
  end
  if #ids == 0 or type(core.session_send) ~= "function" then
    return 0
  end
  -- One encoding per API version among the recipients (most often one): each session gets
  -- the params in the shape of the version it subscribed under (sandbox/versions.lua).
  local set = state.versions
  local current = set and set.current
  local groups, order = {}, {}
  for _, id in ipairs(ids) do
    local v = state.version[id] or current or ""
    if not groups[v] then
      groups[v] = {}
      order[#order + 1] = v
    end
    table.insert(groups[v], id)
  end
  local sent = 0
  for _, v in ipairs(order) do
    local d, p = state.registry:notification(name), params
    if set and v ~= current then
      d = versions.notification(set, v, name)
      local ok, down = pcall(versions.downgrade_notification, set, v, name, params)
      if not ok then
        log("error", ("%s not sent to sessions of API version %s: its shim failed: %s"):format(name, v, tostring(down)))
        d = nil
      end
      p = down
    end
    local text = d and encode(d, name, p)
    if text then
      sent = sent + send_all(groups[v], text)
    end
  end
  return sent
end

--------------------------------------------------------------------------------------------
-- notify.mounts.*: the diff of two mounts.list results.

local function index_mounts(list)
  local by, order = {}, {}
  for _, m in ipairs(type(list) == "table" and list or {}) do
    if type(m) == "table" and type(m.mountpoint) == "string" then
      if by[m.mountpoint] == nil then
        order[#order + 1] = m.mountpoint
      end
      -- Mounts stacked on one mountpoint: the last in mountinfo is the one visible there.
      by[m.mountpoint] = m
    end
  end
  return { by = by, order = order }
end

local function same_options(a, b)
  a, b = type(a) == "table" and a or {}, type(b) == "table" and b or {}
  if #a ~= #b then
    return false
  end
  for i = 1, #a do
    if a[i] ~= b[i] then
      return false
    end
  end
  return true
end

-- Changed: what mounting decides (the source, the file system, the options). Sizes move all
-- the time and are not a change of the mount.
local function changed(a, b)
  return a.device ~= b.device or a.fstype ~= b.fstype or a.read_only ~= b.read_only
    or not same_options(a.options, b.options)
end

-- The notifications that turn mount list `before` into `now`, in order: unmounted, then
-- mounted, then changed; each { name, mount }.
function M.diff_mounts(before, now)
  local out = {}
  for _, mp in ipairs(before.order) do
    if now.by[mp] == nil then
      out[#out + 1] = { "notify.mounts.unmounted", before.by[mp] }
    end
  end
  for _, mp in ipairs(now.order) do
    local old, m = before.by[mp], now.by[mp]
    if old == nil then
      out[#out + 1] = { "notify.mounts.mounted", m }
    elseif changed(old, m) then
      out[#out + 1] = { "notify.mounts.changed", m }
    end
  end
  return out
end
M.index_mounts = index_mounts

-- host.mounts_update(list): the runtime's mounts.list result after the mount table changed
-- (or the baseline it took for a first subscriber). The first list is only kept; each later
-- one is compared with the one before, and the differences are emitted. Returns how many
-- notifications were emitted.
function M.mounts_update(list)
  if not state then
    return 0
  end
  if not M.mounts_wanted() then
    state.mounts = nil
    return 0
  end
  local now, before = index_mounts(list), state.mounts
  state.mounts = now
  if before == nil then
    return 0
  end
  local n = 0
  for _, change in ipairs(M.diff_mounts(before, now)) do
    -- emit may drop sessions (and with the last one the list): the diff is already made.
    if state.registry:notification(change[1]) then
      M.emit(change[1], change[2])
      n = n + 1
    end
  end
  return n
end

--------------------------------------------------------------------------------------------
-- The notifications.* methods.

local Names = T.array(T.string({ min_len = 1, max_len = M.MAX_NAME_LEN }), { min_items = 1, max_items = M.MAX_NAMES })
  :describe("Notification names, like \"notify.system_load\"")
local Subscriptions = T.object({
  names = T.array(T.string()):describe("Every name the session is subscribed to now, sorted"),
})

local Info = T.object({
  name = T.string(),
  summary = T.string(),
  description = T.string():optional(),
  since = T.string():describe("The API version that introduced it"),
  stability = T.enum(method.STABILITY),
  permission = T.enum(method.PERMISSION):describe("Who may subscribe to it"),
  params = T.any():describe("The JSON Schema of its params"),
})

-- The session of a call, or the Unsupported error of a call that has none (plain HTTP, the
-- Unix socket).
local function session_of(ctx)
  local id = ctx.session
  if math.type(id) ~= "integer" then
    error(errors.Unsupported("notifications need a WebSocket session: open GET /rpc with "
      .. "\"Upgrade: websocket\" and subscribe there", { reason = "no_session" }))
  end
  return id
end

-- The notification `name` as API version v sees it, or nil when v has none of that name.
local function notification_of(name, v)
  if state.versions and v then
    return versions.notification(state.versions, v, name)
  end
  return state.registry:notification(name)
end

-- The names, deduplicated; raises InvalidParams naming every unknown one (unknown to the
-- caller's API version v).
local function known(names, v)
  local out, seen, unknown = {}, {}, {}
  for _, name in ipairs(names) do
    if not seen[name] then
      seen[name] = true
      if notification_of(name, v) then
        out[#out + 1] = name
      else
        unknown[#unknown + 1] = name
      end
    end
  end
  if #unknown > 0 then
    error(errors.InvalidParams("params.names", ("unknown notification%s: %s (notifications.list "
      .. "names them all)"):format(#unknown > 1 and "s" or "", table.concat(unknown, ", "))))
  end
  return out
end

local function info_of(d)
  return {
    name = d.name, summary = d.summary, description = d.description, since = d.since,
    stability = d.stability, permission = d.permission, params = render.to_json_schema(d.params),
  }
end

local function list_declaration()
  return method.check({
    name = "notifications.list",
    summary = "List the notifications a WebSocket session may subscribe to",
    description = "Every notification the agent sends, with the JSON Schema of its params and who "
      .. "may subscribe to it; the OpenRPC document lists them too, under x-notifications.",
    since = "2026-12-01",
    stability = "experimental",
    permission = "user",
    result = T.array(Info),
    examples = { {
      name = "one of them",
      params = {},
      result = { {
        name = "notify.example", summary = "An example", since = "2026-12-01", stability = "experimental",
        permission = "user", params = { type = "object", properties = {} },
      } },
    } },
    handler = function(ctx)
      local out = {}
      for _, name in ipairs(state.registry:notification_names()) do
        local d = notification_of(name, ctx.api_version)
        if d then
          out[#out + 1] = info_of(d)
        end
      end
      return out
    end,
  })
end

local function subscribe_declaration()
  return method.check({
    name = "notifications.subscribe",
    summary = "Subscribe this WebSocket session to notifications",
    description = "Adds the names to the session's subscriptions and returns them all. Each "
      .. "notification has a permission, checked against the session's login now: names "
      .. "that the caller may not receive fail the whole call. Over plain HTTP there is no "
      .. "session to send to, and the call fails with Unsupported.",
    since = "2026-12-01",
    stability = "experimental",
    -- Each notification's own permission decides; a public one needs no login.
    permission = "public",
    params = T.object({ names = Names }),
    result = Subscriptions,
    errors = { errors.Unsupported, errors.NotAuthenticated, errors.NotPermitted },
    examples = { {
      name = "the load", params = { names = { "notify.system_load" } },
      result = { names = { "notify.system_load" } },
    } },
    handler = function(ctx, params)
      local id = session_of(ctx)
      local names = known(params.names, ctx.api_version)
      for _, name in ipairs(names) do
        local refusal = state.refusal(ctx, name, state.registry:notification(name).permission)
        if refusal then
          error(refusal)
        end
      end
      -- Who subscribed, for the notifications that only some may receive (notify.jobs.*).
      local a = ctx.auth
      local who = a and { user = a.user, admin = a.admin == true } or nil
      return { names = subscribe(id, names, who, ctx.api_version) }
    end,
  })
end

local function unsubscribe_declaration()
  return method.check({
    name = "notifications.unsubscribe",
    summary = "Unsubscribe this WebSocket session from notifications",
    description = "Removes the names from the session's subscriptions (a name it is not "
      .. "subscribed to is no error) and returns those left.",
    since = "2026-12-01",
    stability = "experimental",
    permission = "public",
    params = T.object({ names = Names }),
    result = Subscriptions,
    errors = { errors.Unsupported },
    examples = { {
      name = "no more load", params = { names = { "notify.system_load" } }, result = { names = {} },
    } },
    handler = function(ctx, params)
      return { names = unsubscribe(session_of(ctx), known(params.names, ctx.api_version)) }
    end,
  })
end

-- The declarations of the notifications.* methods, for the registry.
function M.declarations()
  return { method.get(list_declaration()), method.get(subscribe_declaration()), method.get(unsubscribe_declaration()) }
end

-- Starts afresh for a newly loaded registry. opts: events = the runtime's exo.events (or a
-- stand-in), refusal = function(handler_ctx, name, level) -> the error of a caller who may
-- not receive name, or nil.
function M.reset(registry, opts)
  local mounts_names = {}
  for _, name in ipairs(registry:notification_names()) do
    if name:sub(1, #M.MOUNTS_PREFIX) == M.MOUNTS_PREFIX then
      mounts_names[#mounts_names + 1] = name
    end
  end
  state = {
    registry = registry, events = opts.events, refusal = opts.refusal, versions = opts.versions,
    by_session = {}, by_name = {}, who = {}, version = {}, mounts_names = mounts_names, mounts = nil,
  }
end

return M
