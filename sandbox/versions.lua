-- Dated API versions (DESIGN.md "API versions and compatibility", docs/compatibility.md).
--
-- Methods are written once, for the newest version. Each file api-versions/<version>.lua says
-- what that version changed from the one before it, as data (summary, changes), as the older
-- shapes (`before`: a method's params, result and examples as the previous version had them;
-- a notification's params), and as functions that turn one into the other:
--   request[method](params)            previous version's params -> this version's
--   result[method](result, params)     this version's result -> the previous version's
--   error[method](err, params)         this version's error object -> the previous version's
--   notification[name](params)         this version's params -> the previous version's
-- A call of an older version goes up the chain (request shims, oldest first) to the method,
-- and its answer comes back down (result or error shims, newest first). A method or
-- notification whose `since` is newer than a version does not exist for that version.
--
-- The files run in the sandbox like method files (T, json, errors, nothing of the agent), with
-- the same budgets when loaded; their functions run inside the call that needs them, under
-- the call's budgets.

local json = require("exo.json")
local schema = require("sandbox.schema")
local errors = require("sandbox.errors")
local method = require("sandbox.method")
local loader = require("sandbox.loader")

local M = {}

M.VERSION_PATTERN = "^%d%d%d%d%-%d%d%-%d%d$"
local FILE_PATTERN = "^(%d%d%d%d%-%d%d%-%d%d)%.lua$"
-- More files than this in the directory: the newest are kept (each one costs every older
-- call a shim step; a support window is a handful of versions).
M.MAX_VERSIONS = 32

local FILE_FIELDS = {
  version = true, summary = true, changes = true, before = true, removed = true,
  request = true, result = true, error = true, notification = true,
}
local SHIM_KINDS = { "request", "result", "error", "notification" }
local CHANGE_FIELDS = { method = true, notification = true, kind = true, description = true }
M.CHANGE_KINDS = { "added", "removed", "renamed_param", "param_changed", "result_changed", "error_changed",
  "notification_changed", "deprecated", "behaviour" }
local BEFORE_METHOD = { params = true, param_order = true, result = true, examples = true,
  summary = true, description = true }
local BEFORE_NOTIFICATION = { params = true, examples = true, summary = true, description = true }

-- Whether v is a well-formed version string (a real calendar date is not checked: it is a
-- name, compared as text, and the files' own names are the only ones that exist).
function M.is_version(v)
  return type(v) == "string" and #v == 10 and v:match(M.VERSION_PATTERN) ~= nil
end

local one_of = method.shared.one_of

-- The version files of a directory listing, oldest first.
function M.version_files(names)
  local out = {}
  for _, name in ipairs(names) do
    local v = name:match(FILE_PATTERN)
    if v then
      out[#out + 1] = v
    end
  end
  table.sort(out)
  return out
end

--------------------------------------------------------------------------------------------
-- Checking one file's table (shape only; names are checked against the methods in bind).

local function check_changes(t)
  local list = t.changes or {}
  if type(list) ~= "table" or not schema.is_array_like(list) then
    error("changes must be an array of { method | notification, kind, description }", 0)
  end
  local out = {}
  for i, c in ipairs(list) do
    if type(c) ~= "table" then
      error(("changes[%d] must be a table"):format(i), 0)
    end
    for k in pairs(c) do
      if not CHANGE_FIELDS[k] then
        error(("changes[%d]: unknown field %s"):format(i, schema.quote(tostring(k))), 0)
      end
    end
    if (type(c.method) == "string") == (type(c.notification) == "string") then
      error(("changes[%d] must name exactly one method or notification"):format(i), 0)
    elseif not one_of(M.CHANGE_KINDS, c.kind) then
      error(("changes[%d].kind must be one of %s"):format(i, table.concat(M.CHANGE_KINDS, ", ")), 0)
    elseif type(c.description) ~= "string" or c.description == "" then
      error(("changes[%d] needs a description"):format(i), 0)
    end
    out[i] = { method = c.method, notification = c.notification, kind = c.kind, description = c.description }
  end
  return out
end

local function check_functions(t, kind)
  local map = t[kind] or {}
  if type(map) ~= "table" then
    error(("%s must be a table of functions by name"):format(kind), 0)
  end
  local out = {}
  for name, f in pairs(map) do
    if type(name) ~= "string" or type(f) ~= "function" then
      error(("%s[%s] must be a function"):format(kind, schema.quote(tostring(name))), 0)
    end
    out[name] = f
  end
  return out
end

local function check_file(v, t, oldest)
  if type(t) ~= "table" then
    error("the file must return a table", 0)
  end
  for k in pairs(t) do
    if not FILE_FIELDS[k] then
      error(("unknown field %s"):format(schema.quote(tostring(k))), 0)
    end
  end
  if t.version ~= v then
    error(("version must be %s, as the file's name says; it is %s"):format(schema.quote(v),
      schema.quote(tostring(t.version))), 0)
  elseif type(t.summary) ~= "string" or t.summary == "" then
    error("summary is required (one line on what this version changed)", 0)
  end
  local f = { version = v, summary = t.summary, changes = check_changes(t) }
  for _, kind in ipairs(SHIM_KINDS) do
    f[kind] = check_functions(t, kind)
  end
  f.before = t.before or {}
  if type(f.before) ~= "table" then
    error("before must be a table by method or notification name", 0)
  end
  -- Methods and notifications this version removed: they stay for the older versions.
  f.removed = {}
  local removed = t.removed or {}
  if type(removed) ~= "table" or not schema.is_array_like(removed) then
    error("removed must be an array of method or notification names", 0)
  end
  for i, name in ipairs(removed) do
    if type(name) ~= "string" then
      error(("removed[%d] must be a name"):format(i), 0)
    end
    f.removed[#f.removed + 1] = name
  end
  if oldest and (next(f.before) or next(f.request) or next(f.result) or next(f.error) or next(f.notification)
      or #f.removed > 0) then
    error("the oldest version has nothing older to describe: before and the shims must be empty", 0)
  end
  return f
end

--------------------------------------------------------------------------------------------
-- Loading.

-- A version with nothing to translate: the oldest served one, or one without its file.
local function bare_file(v)
  return { version = v, summary = "", changes = {}, before = {}, request = {}, result = {}, error = {},
           notification = {}, removed = {} }
end

-- Loads the version files of `dir` with `list_dir` and `env_of()` (a fresh sandbox per file).
-- A file that fails is logged; it and every older version are left out (the chain through it
-- is broken), but the newest version is always served: its methods need no shim. Returns the
-- set { list = {oldest..newest}, files = {[v] = checked file}, skipped = {{file, error}} }, or
-- nil when the directory has no version file.
function M.load(dir, join, list_dir, env_of, log)
  local names, err = list_dir(dir)
  if not names then
    log("error", ("API versions not loaded: cannot list %s: %s"):format(dir, tostring(err)))
    return nil
  end
  local all = M.version_files(names)
  if #all == 0 then
    log("error", ("API versions not loaded: %s has no <YYYY-MM-DD>.lua file"):format(dir))
    return nil
  end
  -- The oldest file of the directory has nothing older to translate to; when older files are
  -- left out, the oldest served one may well have shims (they are then never used).
  local trimmed = #all > M.MAX_VERSIONS
  if trimmed then
    log("warn", ("%s has %d API versions; only the newest %d are served"):format(dir, #all, M.MAX_VERSIONS))
    all = { table.unpack(all, #all - M.MAX_VERSIONS + 1) }
  end
  local set = { list = {}, files = {}, skipped = {} }
  local first = 1
  for i, v in ipairs(all) do
    local path = join(dir, v .. ".lua")
    local ok, value = loader.run_file(path, env_of())
    if ok then
      ok, value = pcall(check_file, v, value, i == 1 and not trimmed)
      if not ok then
        value = path .. ": " .. tostring(value)
      end
    end
    if ok then
      set.files[v] = value
    else
      set.skipped[#set.skipped + 1] = { file = path, error = value }
      if i < #all then
        log("error", ("API version %s and older are not served: %s"):format(v, value))
        first = i + 1
      else
        -- Its methods need no shim; older clients would need its shims, so they go too.
        log("error", ("API version %s is served without its file, and no older one: %s"):format(v, value))
        set.files[v] = bare_file(v)
        first = i
      end
    end
  end
  for i = first, #all do
    set.list[#set.list + 1] = all[i]
  end
  for i = 1, first - 1 do
    set.files[all[i]] = nil
  end
  -- The oldest served version has nothing older: its shims would never run.
  local oldest = set.files[set.list[1]]
  local bare = bare_file(oldest.version)
  bare.summary, bare.changes = oldest.summary, oldest.changes
  set.files[set.list[1]] = bare
  return set
end

-- A set of one version and no files: the agent could not load its version files, and serves
-- the methods as they are under the newest version any of them names.
function M.single(v)
  return { list = { v }, skipped = {}, files = { [v] = bare_file(v) } }
end

--------------------------------------------------------------------------------------------
-- Views: a method or notification as an older version sees it.

local function copy_fields(d)
  local out = {}
  for k, v in pairs(d) do
    out[k] = v
  end
  return out
end

-- d as it was before version file f changed it (f.before[d.name]), checked like a declaration.
local function method_before(d, b, where)
  for k in pairs(b) do
    if not BEFORE_METHOD[k] then
      error(("%s: unknown field %s"):format(where, schema.quote(tostring(k))), 0)
    end
  end
  local ok, view = pcall(method.older, d, b)
  if not ok then
    error(("%s: %s"):format(where, tostring(view)), 0)
  end
  return view
end

local function notification_before(d, b, where)
  for k in pairs(b) do
    if not BEFORE_NOTIFICATION[k] then
      error(("%s: unknown field %s"):format(where, schema.quote(tostring(k))), 0)
    end
  end
  local view = copy_fields(d)
  if b.params ~= nil then
    if not schema.is_schema(b.params) then
      error(where .. ": params must be a schema made with T", 0)
    end
    view.params = b.params
  end
  view.summary = b.summary or d.summary
  view.description = b.description or d.description
  local examples = b.examples or d.examples
  if type(examples) ~= "table" or examples[1] == nil then
    error(where .. ": examples must be an array with at least one example", 0)
  end
  view.examples = {}
  for i, ex in ipairs(examples) do
    local at = ("%s: examples[%d]"):format(where, i)
    if type(ex) ~= "table" or type(ex.name) ~= "string" then
      error(at .. " needs a name", 0)
    end
    local params = method.shared.plain_copy({ name = d.name }, at .. ".params", ex.params, { nodes = 0 }, 0)
    local vok, p, r = schema.validate(view.params, schema.normalize(view.params, params), "params")
    if not vok then
      error(("%s does not match the older params: %s %s"):format(at, p, r), 0)
    end
    view.examples[i] = { name = ex.name, description = ex.description, params = params }
  end
  return view
end

-- Checks the set against the loaded methods and notifications and builds every version's
-- views. An older shape that does not check (its examples against its schemas) drops that
-- version and all older ones from the set, with an error logged; names that no loaded method
-- or notification has are left alone (that method is not installed).
function M.bind(set, registry, log)
  set.current = set.list[#set.list]
  -- name -> the first version without it.
  set.removed_in = {}
  for _, v in ipairs(set.list) do
    for _, name in ipairs(set.files[v].removed) do
      set.removed_in[name] = set.removed_in[name] or v
    end
  end
  set.index = {}
  for i, v in ipairs(set.list) do
    set.index[v] = i
  end
  set.views = {}
  set.note_views = {}
  -- Views from the newest down: each older version starts from the next newer one's.
  local methods, notes = {}, {}
  for _, name in ipairs(registry:names()) do
    methods[name] = registry:get(name)
  end
  for _, name in ipairs(registry:notification_names()) do
    notes[name] = registry:notification(name)
  end
  set.views[set.current], set.note_views[set.current] = methods, notes
  for i = #set.list, 2, -1 do
    local v, f = set.list[i], set.files[set.list[i]]
    local older_m, older_n = {}, {}
    for name, d in pairs(methods) do
      older_m[name] = d
    end
    for name, d in pairs(notes) do
      older_n[name] = d
    end
    local ok, err = pcall(function()
      for name, b in pairs(f.before) do
        local where = ("%s: before[%s]"):format(v, schema.quote(tostring(name)))
        if type(b) ~= "table" then
          error(where .. " must be a table", 0)
        elseif methods[name] then
          older_m[name] = method_before(methods[name], b, where)
        elseif notes[name] then
          older_n[name] = notification_before(notes[name], b, where)
        end
        -- A name no loaded method has: that method is not installed here (a spec, or a
        -- site that left a method file out), and nothing of it needs translating.
        -- tests/lua/versions_spec.lua checks the shipped files' names against the shipped
        -- methods, so a misspelt name fails there.
      end
    end)
    if not ok then
      log("error", ("API version %s and older are not served: %s"):format(set.list[i - 1], err))
      set.skipped[#set.skipped + 1] = { file = v, error = err }
      local kept = {}
      for j = i, #set.list do
        kept[#kept + 1] = set.list[j]
      end
      set.list = kept
      set.index = {}
      for j, kv in ipairs(set.list) do
        set.index[kv] = j
      end
      break
    end
    methods, notes = older_m, older_n
    set.views[set.list[i - 1]], set.note_views[set.list[i - 1]] = methods, notes
  end
  return true
end

-- Whether method or notification declaration d exists in version v (set's).
local function exists(set, d, v)
  local gone = set.removed_in[d.name]
  return d.since <= v and (gone == nil or v < gone)
end

-- The method `name` as version v sees it, or nil (and the error to answer) when it has none.
function M.method(set, v, name)
  local d = set.views[v] and set.views[v][name]
  if not d then
    return nil, errors.method_not_found(name)
  elseif not exists(set, d, v) then
    local e = errors.method_not_found(name)
    e.data.reason = "not_in_api_version"
    e.data.api_version = v
    e.data.since = d.since
    e.data.removed_in = set.removed_in[name]
    return nil, e
  end
  return d
end

-- The names of the methods (sorted) and notifications (sorted) that version v has.
function M.names(set, v, registry)
  local ms, ns = {}, {}
  for _, name in ipairs(registry:names()) do
    if exists(set, set.views[v][name], v) then
      ms[#ms + 1] = name
    end
  end
  for _, name in ipairs(registry:notification_names()) do
    if exists(set, set.note_views[v][name], v) then
      ns[#ns + 1] = name
    end
  end
  return ms, ns
end

function M.notification(set, v, name)
  local d = set.note_views[v] and set.note_views[v][name]
  if d and exists(set, d, v) then
    return d
  end
  return nil
end

-- The Unsupported error of a version this set does not serve.
function M.unsupported(set, requested)
  local shown = type(requested) == "string" and #requested <= 64 and requested or "(not a version)"
  local supported = json.array({ table.unpack(set.list) })
  local why = M.is_version(requested) and "is not supported" or "is not a version (YYYY-MM-DD)"
  return errors.to_rpc(errors.Unsupported(("API version %s %s; this agent supports %s (the current one is %s)"):format(
    shown, why, table.concat(set.list, ", "), set.current),
    { reason = "unsupported_api_version", requested = shown, supported = supported, current = set.current }))
end

-- The version a call runs under: requested (a string from the header or the session) or the
-- current one; nil and the Unsupported error when it is not served.
function M.resolve(set, requested)
  if requested == nil or requested == "" then
    return set.current
  elseif set.index[requested] then
    return requested
  end
  return nil, M.unsupported(set, requested)
end

--------------------------------------------------------------------------------------------
-- The chains.

-- params (by name, as version v has them) through the request shims up to the current
-- version. Returns the params of each step: steps[v] .. steps[current].
function M.upgrade(set, v, name, params)
  local steps = { [v] = params }
  for i = set.index[v] + 1, #set.list do
    local f = set.files[set.list[i]].request[name]
    if f then
      params = f(params)
      if type(params) ~= "table" then
        error(("API version %s: request[%s] returned %s, not the params"):format(set.list[i], name, type(params)), 0)
      end
    end
    steps[set.list[i]] = params
  end
  return params, steps
end

-- A result (or, with kind "error", an error object) of the current version down to version v.
function M.downgrade(set, v, name, kind, value, steps)
  for i = #set.list, set.index[v] + 1, -1 do
    local f = set.files[set.list[i]][kind][name]
    if f then
      value = f(value, steps and steps[set.list[i - 1]] or nil)
    end
  end
  return value
end

-- Notification params of the current version, as version v sees them.
function M.downgrade_notification(set, v, name, params)
  for i = #set.list, set.index[v] + 1, -1 do
    local f = set.files[set.list[i]].notification[name]
    if f then
      params = f(params)
    end
  end
  return params
end

return M
