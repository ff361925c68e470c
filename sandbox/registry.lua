-- The method registry: loads method files into their own sandbox environments and keeps the
-- checked declarations by name.
--
-- A file either loads completely or not at all: a syntax error, a failing declaration, a
-- capability it may not have or a name that is already taken skips the whole file, which
-- is logged with its path and line and recorded for agent.info, and the other files still
-- load. Shipped methods load before the operator's. An operator method cannot take a
-- shipped method's name unless the configuration allows overrides, and then it replaces it.

local loader = require("sandbox.loader")
local capabilities = require("sandbox.capabilities")

local M = {}

M.MAX_FILE_BYTES = loader.MAX_FILE_BYTES

local Registry = {}
Registry.__index = Registry

-- opts: operator_capabilities = set of names granted to operator methods (default none),
-- allow_override = whether an operator method may replace a shipped one.
function M.new(opts)
  opts = opts or {}
  return setmetatable({
    by_name = {}, origin = {}, kind = {}, skipped = {}, count = 0,
    -- Notifications (sandbox/notification.lua) by name, and the file that declared each.
    notifications = {}, notification_origin = {},
    operator_grants = opts.operator_capabilities or {}, allow_override = opts.allow_override == true,
  }, Registry)
end

-- Why an operator file may not have what it declares, or nil.
local function capability_error(self, list, origin)
  for _, d in ipairs(list) do
    for _, c in ipairs(d.capabilities) do
      if not self.operator_grants[c] then
        return loader.name_file(origin, ("method '%s' declares capability '%s', which is not granted "
          .. "to operator methods; add it to %s to allow it"):format(d.name, c, capabilities.OPERATOR_KEY))
      end
    end
  end
end

-- Splits a file's declarations into methods and notifications.
local function split(list)
  local methods, notes = {}, {}
  for _, d in ipairs(list) do
    if d.notification then
      notes[#notes + 1] = d
    else
      methods[#methods + 1] = d
    end
  end
  return methods, notes
end

-- Why the notifications of a file cannot be added, or nil. A notification is never replaced,
-- not even by an operator file with allow_override: its subscribers rely on its params.
local function notification_clash(self, notes, origin)
  local seen = {}
  for _, d in ipairs(notes) do
    local other = seen[d.name] or self.notification_origin[d.name]
    if other then
      return loader.name_file(origin, ("notification '%s' is already defined in %s"):format(d.name, other))
    end
    seen[d.name] = origin
  end
end

-- Adds checked declarations (methods and notifications) from `origin` (a path, or
-- "<builtin>"), of `kind` "shipped" (the default) or "operator". Returns true, or nil and why
-- nothing was added; `log` gets the overrides.
function Registry:add(list, origin, kind, log)
  local notes
  list, notes = split(list)
  local clash = notification_clash(self, notes, origin)
  if clash then
    return nil, clash
  end
  local ok, err = self:add_methods(list, origin, kind, log)
  if not ok then
    return nil, err
  end
  for _, d in ipairs(notes) do
    self.notifications[d.name], self.notification_origin[d.name] = d, origin
  end
  return true
end

function Registry:add_methods(list, origin, kind, log)
  kind = kind or "shipped"
  if kind == "operator" then
    local err = capability_error(self, list, origin)
    if err then
      return nil, err
    end
  end
  local seen, replaces = {}, {}
  for _, d in ipairs(list) do
    local other = seen[d.name] or self.origin[d.name]
    if seen[d.name] or (other and not (kind == "operator" and self.kind[d.name] == "shipped" and self.allow_override)) then
      local hint = ""
      if kind == "operator" and self.kind[d.name] == "shipped" and not seen[d.name] then
        hint = "; set [methods] allow_override = true to replace the shipped method"
      end
      return nil, loader.name_file(origin, ("method '%s' is already defined in %s%s"):format(d.name, other, hint))
    end
    seen[d.name] = origin
    replaces[d.name] = other
  end
  for _, d in ipairs(list) do
    if replaces[d.name] then
      if log then
        log("warn", ("operator method file %s overrides method '%s' of %s (allow_override is set)"):format(
          origin, d.name, replaces[d.name]))
      end
    else
      self.count = self.count + 1
    end
    self.by_name[d.name], self.origin[d.name], self.kind[d.name] = d, origin, kind
  end
  return true
end

-- Loads a method file of `kind`; a failure is logged through `log` and recorded in
-- self.skipped as { file, line (when known), error }.
function Registry:load_file(path, env, log, kind)
  local list, err = loader.load_file(path, env)
  if list then
    list, err = self:add(list, path, kind, log)
  end
  if not list then
    self.skipped[#self.skipped + 1] = { file = path, line = loader.line_of(path, err), error = err }
    log("error", "skipping method file " .. path .. ": " .. err)
    return false
  end
  return true
end

-- Method files in a directory listing, sorted so that load order (and so which of two
-- clashing files wins) does not depend on the file system. Hidden files are editor or
-- package-manager leftovers.
function M.method_files(names)
  local files = {}
  for _, name in ipairs(names) do
    if name:sub(-4) == ".lua" and name:sub(1, 1) ~= "." then
      files[#files + 1] = name
    end
  end
  table.sort(files)
  return files
end

function Registry:get(name)
  return self.by_name[name]
end

-- The declaration of notification `name`, or nil.
function Registry:notification(name)
  return self.notifications[name]
end

-- The notification names, sorted.
function Registry:notification_names()
  local names = {}
  for name in pairs(self.notifications) do
    names[#names + 1] = name
  end
  table.sort(names)
  return names
end

function Registry:names()
  local names = {}
  for name in pairs(self.by_name) do
    names[#names + 1] = name
  end
  table.sort(names)
  return names
end

return M
