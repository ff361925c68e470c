-- The agent's error kinds and the JSON-RPC errors the host itself returns.
--
-- A handler fails with `error(errors.NotFound("volume vdb not found", { device = "vdb" }))`;
-- the host turns that object into a JSON-RPC error with the kind's code. Each kind is also a
-- declaration value (`errors = { errors.NotFound }`) that the OpenRPC document lists, so a
-- kind carries its code and default message. The codes are public API (docs/methods.md) and
-- the C runtime uses the same numbers for timeouts and shutdown: never renumber them.

local M = {}

-- Ordered by code; the order is the one docs/methods.md and the OpenRPC components use.
local KINDS = {
  { "Failed", -32000, "Failed" },
  { "NotAuthenticated", -32001, "Not authenticated" },
  { "NotPermitted", -32002, "Not permitted" },
  { "NotFound", -32003, "Not found" },
  { "Timeout", -32004, "Timed out" },
  { "Busy", -32005, "Busy" },
  { "AlreadyExists", -32006, "Already exists" },
  { "LimitExceeded", -32007, "Limit exceeded" },
  { "Unsupported", -32008, "Unsupported" },
  { "Unavailable", -32009, "Unavailable" },
}

-- The standard JSON-RPC 2.0 codes that the host (and the C runtime) answer with.
M.PARSE_ERROR = -32700
M.INVALID_REQUEST = -32600
M.METHOD_NOT_FOUND = -32601
M.INVALID_PARAMS = -32602
M.INTERNAL_ERROR = -32603

-- Private markers: only objects made here count as agent errors, so a handler cannot forge
-- one by raising a table that merely has a `code` field.
local kinds = setmetatable({}, { __mode = "k" })
local instances = setmetatable({}, { __mode = "k" })

local function read_only()
  error("error objects are read-only", 2)
end

local function new_error(kind, message, data)
  local fields = { kind = kind.name, code = kind.code, message = message, data = data }
  local e = setmetatable({}, {
    __index = fields,
    __newindex = read_only,
    __metatable = "error",
    -- Readable if it ever reaches a log line or an uncaught-error message.
    __tostring = function() return kind.name .. ": " .. message end,
  })
  instances[e] = fields
  return e
end

local function new_kind(name, code, message)
  local fields = { name = name, code = code, message = message }
  local kind = setmetatable({}, {
    __index = fields,
    __newindex = read_only,
    __metatable = "error kind",
    __tostring = function() return name end,
    __call = function(_, msg, data)
      if msg ~= nil and type(msg) ~= "string" then
        error(("errors.%s: message must be a string, got %s"):format(name, type(msg)), 2)
      end
      return new_error(fields, msg or message, data)
    end,
  })
  kinds[kind] = fields
  return kind
end

M.kinds = {}
for _, k in ipairs(KINDS) do
  local kind = new_kind(k[1], k[2], k[3])
  M[k[1]] = kind
  M.kinds[#M.kinds + 1] = kind
end

-- True when v was made by one of the constructors above.
function M.is_error(v)
  return instances[v] ~= nil
end

-- True when v is one of the kinds themselves (errors.NotFound, not errors.NotFound("...")).
function M.is_kind(v)
  return kinds[v] ~= nil
end

-- The JSON-RPC error object for an agent error or a kind; nil for anything else. A kind
-- raised without calling it (`error(errors.Busy)`) is taken as its default instance.
function M.to_rpc(v)
  local f = instances[v]
  if f then
    return { code = f.code, message = f.message, data = f.data }
  end
  f = kinds[v]
  if f then
    return { code = f.code, message = f.message }
  end
  return nil
end

function M.method_not_found(name)
  return { code = M.METHOD_NOT_FOUND, message = "Method not found", data = { method = name } }
end

function M.invalid_params(path, reason)
  return { code = M.INVALID_PARAMS, message = "Invalid params", data = { path = path, reason = reason } }
end

function M.internal(data)
  return { code = M.INTERNAL_ERROR, message = "Internal error", data = data }
end

-- -32602 for a check the params schema cannot state (one field against another, like
-- system_load.historical's until >= since), in exactly the shape of the host's own:
-- message "Invalid params", data {path, reason}. Not a kind: every method may answer -32602,
-- so no declaration lists it.
local invalid_params_fields = { name = "InvalidParams", code = M.INVALID_PARAMS, message = "Invalid params" }

function M.InvalidParams(path, reason)
  if type(path) ~= "string" or type(reason) ~= "string" then
    error("errors.InvalidParams: expected a path (like \"params.until\") and a reason, both strings", 2)
  end
  return new_error(invalid_params_fields, "Invalid params", { path = path, reason = reason })
end

-- What method code sees as the global `errors`: the kinds, a predicate and InvalidParams,
-- nothing that can build a JSON-RPC error of another code.
function M.api()
  local api = { is = M.is_error, InvalidParams = M.InvalidParams }
  for _, kind in ipairs(M.kinds) do
    api[kind.name] = kind
  end
  return api
end

return M
