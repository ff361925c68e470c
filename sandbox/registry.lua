-- The method registry: loads method files into their own sandbox environments and keeps the
-- checked declarations by name.
--
-- A file either loads completely or not at all: a syntax error, a failing declaration or a
-- name that is already taken skips the whole file, which is logged with its path and line and
-- recorded for agent.info, and the other files still load. Shipped methods load before the
-- operator's, so an operator file cannot replace a shipped method by reusing its name.

local method = require("sandbox.method")

local M = {}

-- Method files are small; a bigger one is a mistake (or not a method file at all).
M.MAX_FILE_BYTES = 1024 * 1024

local Registry = {}
Registry.__index = Registry

function M.new()
  return setmetatable({ by_name = {}, origin = {}, skipped = {}, count = 0 }, Registry)
end

-- Reads a whole file in the host state (full standard library, at load time, before any
-- request runs). Returns the text or nil, err.
local function read_text(path)
  local f, err = io.open(path, "rb")
  if not f then
    return nil, err
  end
  local text, rerr = f:read(M.MAX_FILE_BYTES + 1)
  f:close()
  if text == nil and rerr then
    return nil, path .. ": " .. rerr
  elseif text and #text > M.MAX_FILE_BYTES then
    return nil, ("%s: larger than %d bytes"):format(path, M.MAX_FILE_BYTES)
  end
  return text or ""
end

local function message_of(e)
  if type(e) == "string" then
    return e
  end
  return ("(error object is a %s value: %s)"):format(type(e), tostring(e))
end

-- The checked declarations a file's chunk returned: one token or an array of them.
local function declarations_of(path, value)
  local d = method.get(value)
  if d then
    return { d }
  elseif type(value) ~= "table" or value[1] == nil then
    return nil, path .. ": must return method { ... } or an array of them"
  end
  local list = {}
  for i, token in ipairs(value) do
    list[i] = method.get(token)
    if not list[i] then
      return nil, ("%s: returned value %d is not a method { ... }"):format(path, i)
    end
  end
  return list
end

-- Loads one file with `env` as its environment. Returns the declarations or nil, err.
local function load_file(path, env)
  local text, err = read_text(path)
  if not text then
    return nil, err
  end
  -- Text only ("t"): bytecode could break the VM's invariants, so it is never loaded.
  local chunk, lerr = load(text, "@" .. path, "t", env)
  if not chunk then
    return nil, lerr
  end
  local ok, value = pcall(chunk)
  if not ok then
    local msg = message_of(value)
    -- Errors raised without a position (error(x, 0), tail calls) still name the file.
    if msg:sub(1, #path + 1) ~= path .. ":" then
      msg = path .. ": " .. msg
    end
    return nil, msg
  end
  return declarations_of(path, value)
end

-- Adds checked declarations from `origin` (a path, or "<builtin>") if none of their names is
-- taken. Returns true or nil, err.
function Registry:add(list, origin)
  local seen = {}
  for _, d in ipairs(list) do
    local other = self.origin[d.name] or seen[d.name]
    if other then
      return nil, ("%s: method '%s' is already defined in %s"):format(origin, d.name, other)
    end
    seen[d.name] = origin
  end
  for _, d in ipairs(list) do
    self.by_name[d.name], self.origin[d.name] = d, origin
    self.count = self.count + 1
  end
  return true
end

-- Loads a method file; a failure is logged through `log` and recorded in self.skipped.
function Registry:load_file(path, env, log)
  local list, err = load_file(path, env)
  if list then
    list, err = self:add(list, path)
  end
  if not list then
    self.skipped[#self.skipped + 1] = { file = path, error = err }
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
    if name:find("%.lua$") and not name:find("^%.") then
      files[#files + 1] = name
    end
  end
  table.sort(files)
  return files
end

function Registry:get(name)
  return self.by_name[name]
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
