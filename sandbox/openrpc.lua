-- Builds the OpenRPC 1.3.2 document (rpc.discover, GET /openrpc.json) from the registry.
--
-- Every array is marked with json.array so it encodes as [] when empty; the meta-schema
-- rejects {} where it wants an array. Example values are normalised by their schemas for
-- the same reason.

local json = require("exo.json")
local schema = require("sandbox.schema")
local render = require("sandbox.schema_render")
local errors = require("sandbox.errors")

local M = {}

M.OPENRPC_VERSION = "1.3.2"

local DESCRIPTION = "JSON-RPC 2.0 interface of the Exosphere Guest Agent, the daemon on instances "
  .. "launched by Exosphere. Errors with codes -32000 to -32009 are the agent's own "
  .. "(components.errors); -32601, -32602 and -32603 are JSON-RPC's."

local function error_object(kind)
  return { code = kind.code, message = kind.message }
end

local function params_of(d)
  local list, fields = json.array(), schema.fields(d.params)
  for i, name in ipairs(d.param_order) do
    local f = fields[name]
    list[i] = {
      name = name,
      required = not schema.is_optional(f),
      schema = render.to_json_schema(f),
      description = schema.description(f),
    }
  end
  return list
end

-- An OpenRPC Example Pairing: params as an array of Example objects in parameter order,
-- the result as an Example object.
local function example_of(d, ex)
  local params, fields = json.array(), schema.fields(d.params)
  for _, name in ipairs(d.param_order) do
    local v = ex.params[name]
    if v ~= nil then
      params[#params + 1] = { name = name, value = schema.normalize(fields[name], v) }
    end
  end
  return {
    name = ex.name,
    description = ex.description,
    params = params,
    result = { name = "result", value = schema.normalize(d.result, ex.result) },
  }
end

local function method_of(d)
  local errs, examples = json.array(), json.array()
  for i, kind in ipairs(d.errors) do
    errs[i] = error_object(kind)
  end
  for i, ex in ipairs(d.examples) do
    examples[i] = example_of(d, ex)
  end
  return {
    name = d.name,
    summary = d.summary,
    description = d.description,
    paramStructure = "either",
    params = params_of(d),
    result = { name = "result", schema = render.to_json_schema(d.result), description = schema.description(d.result) },
    errors = errs,
    examples = examples,
    deprecated = d.stability == "deprecated",
    ["x-stability"] = d.stability,
    ["x-since"] = d.since,
    ["x-permission"] = d.permission,
    ["x-capabilities"] = json.array({ table.unpack(d.capabilities) }),
  }
end

-- A notification under x-notifications: what notifications.list says, with its examples
-- (params as they go on the wire).
local function notification_of(d)
  local examples = json.array()
  for i, ex in ipairs(d.examples) do
    examples[i] = { name = ex.name, description = ex.description, params = schema.normalize(d.params, ex.params) }
  end
  return {
    name = d.name,
    summary = d.summary,
    description = d.description,
    params = render.to_json_schema(d.params),
    examples = examples,
    deprecated = d.stability == "deprecated",
    ["x-stability"] = d.stability,
    ["x-since"] = d.since,
    ["x-permission"] = d.permission,
  }
end

-- The document of `method_list` and `notification_list` (declarations, as one API version
-- sees them: sandbox/versions.lua), sorted by name. `info` = { version =, api_version =,
-- api_versions =, lua_api_level = }.
function M.document(method_list, notification_list, info)
  local methods = json.array()
  for i, d in ipairs(method_list) do
    methods[i] = method_of(d)
  end
  local notifications = json.array()
  for i, d in ipairs(notification_list) do
    notifications[i] = notification_of(d)
  end
  local components = { errors = {} }
  for _, kind in ipairs(errors.kinds) do
    components.errors[kind.name] = error_object(kind)
  end
  return {
    openrpc = M.OPENRPC_VERSION,
    info = {
      title = "Exosphere Guest Agent",
      version = info.version,
      description = DESCRIPTION,
      ["x-api-version"] = info.api_version,
      -- Every version the agent serves, oldest first: a client of another one asks for its
      -- own document with the Exosphere-Agent-Version header.
      ["x-api-versions"] = json.array({ table.unpack(info.api_versions or { info.api_version }) }),
      ["x-lua-api-level"] = info.lua_api_level,
    },
    methods = methods,
    components = components,
    -- An extension (OpenRPC allows x- fields at the top level): the notifications a
    -- WebSocket session may subscribe to (notifications.subscribe), by name.
    ["x-notifications"] = notifications,
  }
end

return M
