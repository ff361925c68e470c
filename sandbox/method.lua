-- Method declarations: `method { ... }` in a method file (DESIGN.md "Methods").
--
-- The declaration is data, checked once when the file loads: a mistake is raised at the
-- author's line, naming the method and the field, and the file is skipped. What passes is
-- frozen into an opaque token; the registry reads it back with M.get, so nothing can change
-- a method (its handler, its permission) after it was checked.

local json = require("exo.json")
local schema = require("sandbox.schema")
local errors = require("sandbox.errors")
local capabilities = require("sandbox.capabilities")

local M = {}

M.STABILITY = { "experimental", "stable", "deprecated" }
M.PERMISSION = { "public", "user", "admin" }

local FIELDS = {
  name = true, summary = true, description = true, since = true, stability = true,
  permission = true, capabilities = true, params = true, param_order = true, result = true,
  errors = true, examples = true, handler = true, idempotent = true, resume = true,
}

-- The parameter that `idempotent = true` adds (sandbox/jobs.lua): a repeat of a call with the
-- same key answers what the first one did.
M.IDEMPOTENCY_KEY = "idempotency_key"
local IdempotencyKey = schema.T.string({ min_len = 1, max_len = 128 }):optional():describe(
  "Any text of 1 to 128 bytes, chosen by the client: a repeat of this call with the same key (by "
    .. "the same user) returns the first call's answer (or its job) instead of acting again, for "
    .. "[jobs] keep after it answered. A repeat with other params still gets the first answer.")

local declarations = setmetatable({}, { __mode = "k" })
-- What a declaration being checked declares, for messages: "method" unless a notification
-- declaration (sandbox/notification.lua) said otherwise.
local what_of = setmetatable({}, { __mode = "k" })

local function one_of(list, v)
  for _, x in ipairs(list) do
    if x == v then
      return true
    end
  end
  return false
end

-- Raised without a position; M.declare's caller adds the author's line.
local function fail(decl, fmt, ...)
  local what = what_of[decl] or "method"
  local who = type(decl.name) == "string" and ("%s '%s'"):format(what, decl.name) or what
  error(who .. ": " .. fmt:format(...), 0)
end

local function is_array(v)
  return type(v) == "table" and schema.is_array_like(v)
end

local function check_name(decl, reserved_ok)
  local name = decl.name
  if type(name) ~= "string" then
    fail(decl, "name is required (a string like \"namespace.verb\")")
  end
  -- The length first: the pattern below is quadratic on long subjects.
  local ok = #name <= 128
  for part in (ok and name .. "." or ""):gmatch("([^.]*)%.") do
    ok = ok and part:find("^[a-z][a-z0-9_]*$") ~= nil
  end
  if not ok or not name:find(".", 1, true) then
    fail(decl, "name must be dotted lower-case words like \"system_load.current\"")
  elseif name:find("^rpc%.") and not reserved_ok then
    fail(decl, "names starting with \"rpc.\" are reserved by JSON-RPC")
  elseif name:find("^authenticate%.") and not reserved_ok then
    fail(decl, "names starting with \"authenticate.\" are reserved for the agent's logins")
  elseif name:find("^notify%.") and not reserved_ok then
    fail(decl, "names starting with \"notify.\" are notifications; declare them with notification { ... }")
  end
end

local function check_text(decl)
  if type(decl.summary) ~= "string" or decl.summary == "" then
    fail(decl, "summary is required (a one-line string)")
  elseif decl.description ~= nil and type(decl.description) ~= "string" then
    fail(decl, "description must be a string")
  elseif type(decl.since) ~= "string" or not decl.since:find("^%d%d%d%d%-%d%d%-%d%d$") then
    fail(decl, "since must be the API version date that introduced the method, like \"2026-12-01\"")
  end
end

local function check_choice(decl, field, choices)
  if not one_of(choices, decl[field]) then
    fail(decl, "%s must be one of %s (got %s)", field, table.concat(choices, ", "),
      schema.quote(tostring(decl[field])))
  end
end

local function check_capabilities(decl)
  local caps = decl.capabilities or {}
  if not is_array(caps) then
    fail(decl, "capabilities must be an array of strings")
  end
  for i, c in ipairs(caps) do
    if type(c) ~= "string" then
      fail(decl, "capabilities[%d] must be a name like \"system.read\"", i)
    elseif capabilities.unknown(c) then
      fail(decl, "capabilities[%d]: %s", i, capabilities.unknown(c))
    end
  end
  return { table.unpack(caps) }
end

-- The parameter order: param_order as given (every parameter exactly once, required ones
-- first, since a positional call cannot skip a parameter), or the sorted names.
local function check_param_order(decl, params)
  local fields, order = schema.fields(params), decl.param_order
  if order == nil then
    return { table.unpack(schema.field_names(params)) }
  elseif not is_array(order) then
    fail(decl, "param_order must be an array of parameter names")
  end
  local seen, optional_seen = {}, nil
  for i, name in ipairs(order) do
    if fields[name] == nil then
      fail(decl, "param_order[%d]: %s is not a parameter", i, schema.quote(tostring(name)))
    elseif seen[name] then
      fail(decl, "param_order[%d]: %s appears twice", i, schema.quote(name))
    elseif schema.is_optional(fields[name]) then
      optional_seen = name
    elseif optional_seen then
      fail(decl, "param_order: required %s follows optional %s", schema.quote(name), schema.quote(optional_seen))
    end
    seen[name] = true
  end
  for _, name in ipairs(schema.field_names(params)) do
    if not seen[name] then
      fail(decl, "param_order: parameter %s is missing", schema.quote(name))
    end
  end
  return { table.unpack(order) }
end

-- params with the optional idempotency_key added (last in the positional order).
local function with_idempotency_key(decl, params, order)
  local fields = {}
  for name, f in pairs(schema.fields(params)) do
    fields[name] = f
  end
  if fields[M.IDEMPOTENCY_KEY] then
    fail(decl, "an idempotent method may not declare %s itself: the host adds it", M.IDEMPOTENCY_KEY)
  end
  fields[M.IDEMPOTENCY_KEY] = IdempotencyKey
  local def = schema.definition(params)
  local out = schema.T.object(fields, { additional = def.additional })
  if def.description then
    out = out:describe(def.description)
  end
  order[#order + 1] = M.IDEMPOTENCY_KEY
  return out, order
end

local function check_params(decl)
  local params = decl.params or schema.T.object({})
  if not schema.is_schema(params) or schema.kind(params) ~= "object" then
    fail(decl, "params must be a T.object schema (one field per parameter)")
  end
  local order = check_param_order(decl, params)
  if decl.idempotent == true then
    return with_idempotency_key(decl, params, order)
  end
  return params, order
end

local function check_errors(decl)
  local list = decl.errors or {}
  if not is_array(list) then
    fail(decl, "errors must be an array of error kinds like errors.NotFound")
  end
  for i, kind in ipairs(list) do
    if not errors.is_kind(kind) then
      fail(decl, "errors[%d] must be an error kind like errors.NotFound", i)
    end
  end
  return { table.unpack(list) }
end

-- Checks params given by name against the declaration; also used by the host for calls.
-- Returns true or false, path, reason.
function M.check_named_params(d, params, root)
  root = root or "params"
  local ok, p, r = schema.validate_fields(d.params, params, d.param_order, function(name)
    return schema.field_path(root, name)
  end)
  if not ok then
    return false, p, r
  end
  local unknown = schema.unknown_field(d.params, params)
  if unknown ~= nil then
    return false, schema.field_path(root, tostring(unknown)), "is not a parameter of this method"
  end
  return true
end

-- Examples are data that the host reads long after the file has loaded (the OpenRPC
-- document, the replay tests), outside any call and its budgets: so they are copied here,
-- with raw reads, into plain tables. A metatable (other than the JSON array mark) or a
-- function is refused, so no method code can run when the host walks them.
local MAX_EXAMPLE_NODES = 10000

local function plain_copy(decl, at, v, state, depth)
  local t = type(v)
  if t == "function" or t == "thread" or (t == "userdata" and v ~= json.null) then
    fail(decl, "%s must be plain data, got a %s", at, t)
  elseif t ~= "table" then
    return v
  elseif depth > 64 then
    fail(decl, "%s is nested too deeply", at)
  elseif getmetatable(v) ~= nil and not json.is_array(v) then
    fail(decl, "%s must be plain data, not a table with a metatable", at)
  end
  local out = json.is_array(v) and json.array() or {}
  local k, item = next(v)
  while k ~= nil do
    state.nodes = state.nodes + 1
    if state.nodes > MAX_EXAMPLE_NODES then
      fail(decl, "%s is too large (more than %d values)", at, MAX_EXAMPLE_NODES)
    end
    out[plain_copy(decl, at, k, state, depth + 1)] = plain_copy(decl, at, item, state, depth + 1)
    k, item = next(v, k)
  end
  return out
end

local function check_example(decl, d, i, ex)
  local at = ("examples[%d]"):format(i)
  if type(ex) ~= "table" or type(ex.name) ~= "string" or ex.name == "" then
    fail(decl, "%s needs a name", at)
  end
  for k in pairs(ex) do
    if k ~= "name" and k ~= "description" and k ~= "params" and k ~= "result" then
      fail(decl, "%s: unknown field %s", at, schema.quote(tostring(k)))
    end
  end
  if ex.description ~= nil and type(ex.description) ~= "string" then
    fail(decl, "%s.description must be a string", at)
  end
  local state = { nodes = 0 }
  local params = plain_copy(decl, at .. ".params", ex.params or {}, state, 0)
  if type(params) ~= "table" or json.is_array(params) then
    fail(decl, "%s.params must be a table of parameters by name", at)
  end
  ex = { name = ex.name, description = ex.description, params = params,
         result = plain_copy(decl, at .. ".result", ex.result, state, 0) }
  local ok, p, r = M.check_named_params(d, params, at .. ".params")
  if ok then
    ok, p, r = schema.validate(d.result, schema.normalize(d.result, ex.result), at .. ".result")
  end
  if not ok then
    fail(decl, "%s does not match its schema: %s %s", at, p, r)
  end
  return { name = ex.name, description = ex.description, params = params, result = ex.result }
end

local function check_examples(decl, d)
  if not is_array(decl.examples) or decl.examples[1] == nil then
    fail(decl, "examples must be an array with at least one example")
  end
  local out = {}
  for i, ex in ipairs(decl.examples) do
    out[i] = check_example(decl, d, i, ex)
  end
  return out
end

-- Checks a declaration table and returns its token. `reserved_ok` lets the host declare
-- rpc.* methods. Raises a message without a position (see `declare` below).
function M.check(decl, reserved_ok)
  if type(decl) ~= "table" then
    error("method: the declaration must be a table, got " .. type(decl), 0)
  end
  check_name(decl, reserved_ok)
  for k in pairs(decl) do
    if not FIELDS[k] then
      fail(decl, "unknown field %s", schema.quote(tostring(k)))
    end
  end
  check_text(decl)
  check_choice(decl, "stability", M.STABILITY)
  check_choice(decl, "permission", M.PERMISSION)
  if decl.idempotent ~= nil and type(decl.idempotent) ~= "boolean" then
    fail(decl, "idempotent must be a boolean")
  end
  if not schema.is_schema(decl.result) then
    fail(decl, "result must be a schema made with T")
  elseif type(decl.handler) ~= "function" then
    fail(decl, "handler must be a function(ctx, params), got %s", type(decl.handler))
  elseif decl.resume ~= nil and type(decl.resume) ~= "function" then
    fail(decl, "resume must be a function(job, data), got %s", type(decl.resume))
  end
  local d = {
    name = decl.name, summary = decl.summary, description = decl.description,
    since = decl.since, stability = decl.stability, permission = decl.permission,
    capabilities = check_capabilities(decl), result = decl.result, handler = decl.handler,
    errors = check_errors(decl), idempotent = decl.idempotent == true, resume = decl.resume,
  }
  d.params, d.param_order = check_params(decl)
  d.examples = check_examples(decl, d)
  local token = setmetatable({}, { __metatable = "method", __newindex = function()
    error("method declarations are read-only", 2)
  end, __tostring = function() return "method " .. d.name end })
  declarations[token] = d
  return token
end

-- "<file>:<line>: " of the method code that called a declare function, for messages. Called
-- by that function, so level 2 is the declare function and level 3 its caller.
local function where(decl)
  if not debug.getinfo(2, "t").istailcall then
    local info = debug.getinfo(3, "Sl")
    if info and info.source:sub(1, 1) == "@" and info.currentline > 0 then
      return ("%s:%d: "):format(info.source:sub(2), info.currentline)
    end
  end
  -- `return method { ... }` is a tail call, which leaves no caller frame to name. The
  -- handler is defined inside the declaration, so its line is the next best; without one
  -- the loader still names the file.
  local hf = type(decl) == "table" and rawget(decl, "handler")
  local h = type(hf) == "function" and debug.getinfo(hf, "S")
  if h and h.source:sub(1, 1) == "@" then
    return ("%s:%d: "):format(h.source:sub(2), h.linedefined)
  end
  return ""
end

-- The `method` global of method code: like M.check, but a mistake is raised at the line of
-- the caller, so the load error reads "<file>:<line>: method 'x': <field> ...".
function M.declare(decl)
  local ok, r = pcall(M.check, decl)
  if ok then
    return r
  end
  error(where(decl) .. r, 0)
end

-- What a failed declaration returns in check mode: a value the loader leaves out.
M.FAILED = setmetatable({}, { __metatable = "failed method", __newindex = function()
  error("method declarations are read-only", 2)
end })

-- The `method` global in check mode (`exosphere-guest-agent check`): a mistake is passed to
-- record("<file>:<line>: ...") and the file goes on loading, so that one run reports every
-- declaration of a file that has several.
function M.collecting_declare(record)
  return function(decl)
    local ok, r = pcall(M.check, decl)
    if ok then
      return r
    end
    record(where(decl) .. r)
    return M.FAILED
  end
end

-- The checks that notification declarations share with methods (sandbox/notification.lua).
-- `as(decl, "notification")` makes their messages say "notification 'x'" for that table.
M.shared = {
  as = function(decl, what) what_of[decl] = what end,
  fail = fail, check_name = check_name, check_text = check_text, check_choice = check_choice,
  plain_copy = plain_copy, is_array = is_array, where = where, one_of = one_of,
}

-- Method d as an older API version saw it (sandbox/versions.lua): `before` gives what that
-- version changed (params, param_order, result, examples, summary, description), checked like
-- a declaration; what it does not give is d's. Examples are required when params or the
-- result changed and d's own no longer match. Returns a declaration table (no token: views
-- are the host's own). Raises a message.
function M.older(d, before)
  local view = {}
  for k, v in pairs(d) do
    view[k] = v
  end
  local decl = { name = d.name, idempotent = d.idempotent, since = d.since }
  if before.summary ~= nil or before.description ~= nil then
    decl.summary, decl.description = before.summary or d.summary, before.description or d.description
    check_text(decl)
    view.summary, view.description = decl.summary, decl.description
  end
  if before.params ~= nil then
    decl.params, decl.param_order = before.params, before.param_order
    view.params, view.param_order = check_params(decl)
  elseif before.param_order ~= nil then
    fail(decl, "param_order without params: give the older params too")
  end
  if before.result ~= nil then
    if not schema.is_schema(before.result) then
      fail(decl, "result must be a schema made with T")
    end
    view.result = before.result
  end
  decl.examples = before.examples
  if decl.examples == nil then
    decl.examples = {}
    for i, ex in ipairs(d.examples) do
      decl.examples[i] = { name = ex.name, description = ex.description, params = ex.params, result = ex.result }
    end
  end
  local ok, examples = pcall(check_examples, decl, view)
  if not ok then
    fail(decl, "%s%s", before.examples == nil and "the newer examples do not fit the older shape, so give "
      .. "examples too: " or "", tostring(examples):gsub("^method '[^']*': ", ""))
  end
  view.examples = examples
  return view
end

-- The checked declaration behind a token, or nil when v is not one.
function M.get(token)
  return declarations[token]
end

return M
