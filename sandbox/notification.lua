-- Notification declarations: `notification { ... }` in a method file, next to `method`
-- (DESIGN.md "Jobs and notifications", docs/method-authoring.md).
--
-- A notification is what the agent sends, unasked, to the WebSocket sessions subscribed to
-- it: {"jsonrpc":"2.0","method":<name>,"params":<params>}. Like a method it is declared as
-- data and checked once when its file loads, with the same messages ("<file>:<line>:
-- notification 'x': <field> ..."), and a mistake skips the file. What passes is frozen into
-- an opaque token that the registry reads back with M.get. Emitting is the host's job
-- (sandbox/notify.lua); a declaration only says what a notification carries.

local json = require("exo.json")
local schema = require("sandbox.schema")
local method = require("sandbox.method")

local shared = method.shared
local fail = shared.fail

local M = {}

M.PREFIX = "notify."

local FIELDS = {
  name = true, summary = true, description = true, since = true, stability = true,
  permission = true, params = true, examples = true,
}

local declarations = setmetatable({}, { __mode = "k" })

local function check_params(decl)
  local params = decl.params
  if not schema.is_schema(params) then
    fail(decl, "params must be a schema made with T (usually T.object { ... }): the notification's params")
  end
  local kind = schema.kind(params)
  if kind ~= "object" and kind ~= "array" then
    -- JSON-RPC 2.0: params, when present, is an object or an array.
    fail(decl, "params must be a T.object or T.array schema (JSON-RPC params are structured), got %s", kind)
  end
  return params
end

local function check_example(decl, d, i, ex)
  local at = ("examples[%d]"):format(i)
  if type(ex) ~= "table" or type(ex.name) ~= "string" or ex.name == "" then
    fail(decl, "%s needs a name", at)
  end
  for k in pairs(ex) do
    if k ~= "name" and k ~= "description" and k ~= "params" then
      fail(decl, "%s: unknown field %s", at, schema.quote(tostring(k)))
    end
  end
  if ex.description ~= nil and type(ex.description) ~= "string" then
    fail(decl, "%s.description must be a string", at)
  end
  local params = shared.plain_copy(decl, at .. ".params", ex.params, { nodes = 0 }, 0)
  local ok, p, r = schema.validate(d.params, schema.normalize(d.params, params), at .. ".params")
  if not ok then
    fail(decl, "%s does not match its schema: %s %s", at, p, r)
  end
  return { name = ex.name, description = ex.description, params = params }
end

local function check_examples(decl, d)
  if not shared.is_array(decl.examples) or decl.examples[1] == nil then
    fail(decl, "examples must be an array with at least one example")
  end
  local out = {}
  for i, ex in ipairs(decl.examples) do
    out[i] = check_example(decl, d, i, ex)
  end
  return out
end

-- Checks a declaration table and returns its token. Raises a message without a position.
function M.check(decl)
  if type(decl) ~= "table" then
    error("notification: the declaration must be a table, got " .. type(decl), 0)
  end
  shared.as(decl, "notification")
  -- Dotted lower-case words, as method names; reserved_ok lets "notify." through, which is
  -- the one prefix a notification must have.
  shared.check_name(decl, true)
  if decl.name:sub(1, #M.PREFIX) ~= M.PREFIX then
    fail(decl, "name must start with \"notify.\", like \"notify.system_load\"")
  end
  for k in pairs(decl) do
    if not FIELDS[k] then
      fail(decl, "unknown field %s", schema.quote(tostring(k)))
    end
  end
  shared.check_text(decl)
  shared.check_choice(decl, "stability", method.STABILITY)
  shared.check_choice(decl, "permission", method.PERMISSION)
  local d = {
    notification = true,
    name = decl.name, summary = decl.summary, description = decl.description,
    since = decl.since, stability = decl.stability, permission = decl.permission,
    -- No code runs for a notification, so it needs no capability; the empty list keeps the
    -- registry's and the checker's loops over declarations simple.
    capabilities = {},
    params = check_params(decl),
  }
  d.examples = check_examples(decl, d)
  local token = setmetatable({}, { __metatable = "notification", __newindex = function()
    error("notification declarations are read-only", 2)
  end, __tostring = function() return "notification " .. d.name end })
  declarations[token] = d
  return token
end

-- The `notification` global of method code: a mistake is raised at the caller's line.
function M.declare(decl)
  local ok, r = pcall(M.check, decl)
  if ok then
    return r
  end
  error(shared.where(decl) .. r, 0)
end

-- The `notification` global in check mode: mistakes go to record() and the file goes on.
function M.collecting_declare(record)
  return function(decl)
    local ok, r = pcall(M.check, decl)
    if ok then
      return r
    end
    record(shared.where(decl) .. r)
    return method.FAILED
  end
end

-- The checked declaration behind a token, or nil when v is not one.
function M.get(token)
  return declarations[token]
end

-- An example's params as they go on the wire (arrays marked, as the OpenRPC document needs).
function M.example_params(d, ex)
  local v = schema.normalize(d.params, ex.params)
  return v == nil and json.null or v
end

return M
