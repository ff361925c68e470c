-- The schema DSL (`T` in method code). One schema both validates a value (parameters before
-- a handler runs, results in dev mode and in tests) and renders JSON Schema (draft-07) for the
-- OpenRPC document, so the two cannot drift apart.
--
-- A schema is an opaque, read-only object: its definition lives in a private table keyed by
-- the object, so method code can use and share schemas but never alter one after the host
-- has checked it. Modifiers (:optional(), :describe(), :example()) return a new schema.
--
-- Values are JSON as Lua sees it: decoded arrays carry the exo.json array mark, objects are
-- plain tables, JSON null is json.null. Lua code builds arrays as plain tables, so a plain
-- table whose keys are 1..n (or an empty one) is accepted where an array is expected, and
-- M.normalize marks it so that it encodes as an array.

local json = require("exo.json")
local pattern_guard = require("sandbox.pattern_guard")

local M = {}

local defs = setmetatable({}, { __mode = "k" })

local Schema = {}
local SchemaMT = {
  __index = Schema,
  __newindex = function() error("schemas are read-only", 2) end,
  __metatable = "schema",
}

local function new(def)
  local s = setmetatable({}, SchemaMT)
  defs[s] = def
  return s
end

-- Schema-construction mistakes are the method author's: raise them at the author's line.
local function misuse(fmt, ...)
  error(fmt:format(...), 0)
end

local function def_of(s, what)
  local d = defs[s]
  if not d then
    misuse("%s must be a schema made with T, got %s", what, type(s))
  end
  return d
end

function M.is_schema(v)
  return defs[v] ~= nil
end

local function copy(t)
  local c = {}
  for k, v in pairs(t) do
    c[k] = v
  end
  return c
end

local function derive(s, changes)
  local d = copy(defs[s])
  for k, v in pairs(changes) do
    d[k] = v
  end
  return new(d)
end

--------------------------------------------------------------------------------------------
-- Values and paths.

local function is_marked(v)
  return type(v) == "table" and json.is_array(v)
end

-- A table usable as an array: a decoded JSON array, or a plain table whose keys are exactly
-- 1..n. An empty plain table qualifies because that is how Lua code writes an empty array.
local function is_array_like(v)
  if type(v) ~= "table" then
    return false
  elseif json.is_array(v) then
    return true
  end
  local n = 0
  for k in pairs(v) do
    if math.type(k) ~= "integer" or k < 1 then
      return false
    end
    n = n + 1
  end
  for i = 1, n do
    if v[i] == nil then
      return false
    end
  end
  return true
end
M.is_array_like = is_array_like

-- How a value looks to a JSON client, for error reasons.
local function describe_value(v)
  if v == nil then
    return "nothing"
  elseif v == json.null then
    return "null"
  elseif type(v) == "table" then
    if is_marked(v) or (next(v) ~= nil and is_array_like(v)) then
      return "an array"
    end
    return next(v) == nil and "an empty object" or "an object"
  elseif math.type(v) == "integer" then
    return "an integer"
  end
  return type(v) == "number" and "a number" or "a " .. type(v)
end

-- JSON-style quoting, so reasons read the same to a client as the values it sent. Lua's
-- quoting stands in for strings JSON cannot hold (invalid UTF-8 in a result, say), because
-- building an error message must not fail.
function M.quote(v)
  if type(v) ~= "string" then
    return tostring(v)
  end
  local ok, quoted = pcall(json.encode, v)
  return ok and quoted or ("%q"):format(v)
end
local quote = M.quote

-- Paths name the offending value as a client would: params.filter.items[2].name. Indices
-- count from 1, like positional parameters (docs/methods.md says so).
function M.field_path(path, name)
  if name:find("^[%a_][%w_]*$") then
    return path .. "." .. name
  end
  return path .. "[" .. quote(name) .. "]"
end
local field_path = M.field_path

function M.index_path(path, i)
  return path .. "[" .. i .. "]"
end

--------------------------------------------------------------------------------------------
-- Validation. Each validator returns true, or false, path, reason for the first offence.

local validators = {}

function M.validate(s, v, path)
  local d = defs[s]
  return validators[d.kind](d, v, path or "value")
end

local function expected(what, v, path)
  return false, path, ("expected %s, got %s"):format(what, describe_value(v))
end

local function check_range(d, v, path)
  if d.min and v < d.min then
    return false, path, ("must be at least %s"):format(d.min)
  elseif d.max and v > d.max then
    return false, path, ("must be at most %s"):format(d.max)
  end
  return true
end

function validators.string(d, v, path)
  if type(v) ~= "string" then
    return expected("a string", v, path)
  end
  local n = utf8.len(v) or #v
  if d.min_len and n < d.min_len then
    return false, path, ("must be at least %d characters long"):format(d.min_len)
  elseif d.max_len and n > d.max_len then
    return false, path, ("must be at most %d characters long"):format(d.max_len)
  elseif d.pattern and not pattern_guard.allowed(d.pattern, #v) then
    -- The client's string is too long for the method's pattern to be checked in bounded
    -- time (sandbox/pattern_guard.lua); the client can fix that, so it is invalid params.
    return false, path, ("is too long (%d bytes) to be checked against the Lua pattern %s"):format(#v, quote(d.pattern))
  elseif d.pattern and not v:find(d.pattern) then
    return false, path, ("must match the Lua pattern %s"):format(quote(d.pattern))
  end
  return true
end

function validators.integer(d, v, path)
  if type(v) ~= "number" or math.tointeger(v) == nil then
    return expected("an integer", v, path)
  end
  return check_range(d, v, path)
end

function validators.number(d, v, path)
  if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge then
    return expected("a finite number", v, path)
  end
  return check_range(d, v, path)
end

function validators.boolean(_, v, path)
  if type(v) ~= "boolean" then
    return expected("a boolean", v, path)
  end
  return true
end

function validators.null(_, v, path)
  if v ~= json.null then
    return expected("null", v, path)
  end
  return true
end

function validators.any(_, v, path)
  if v == nil then
    return expected("a value", v, path)
  end
  return true
end

function validators.enum(d, v, path)
  for _, allowed in ipairs(d.values) do
    if v == allowed and type(v) == type(allowed) then
      return true
    end
  end
  local shown = {}
  for i, allowed in ipairs(d.values) do
    shown[i] = quote(allowed)
  end
  return false, path, "expected one of " .. table.concat(shown, ", ")
end

function validators.array(d, v, path)
  if not is_array_like(v) then
    return expected("an array", v, path)
  end
  local n = #v
  if d.min_items and n < d.min_items then
    return false, path, ("must have at least %d items"):format(d.min_items)
  elseif d.max_items and n > d.max_items then
    return false, path, ("must have at most %d items"):format(d.max_items)
  end
  for i = 1, n do
    local ok, p, r = M.validate(d.item, v[i], M.index_path(path, i))
    if not ok then
      return false, p, r
    end
  end
  return true
end

-- Checks the named fields of object v in `order`; `path_of(name, i)` gives each field's path,
-- which lets the host report positional parameters as params[i]. Unknown fields are the
-- caller's to check, after the declared ones.
local function check_fields(d, v, order, path_of)
  for i, name in ipairs(order) do
    local f, value = d.fields[name], v[name]
    if value == nil then
      if not defs[f].optional then
        return false, path_of(name, i), "is required"
      end
    else
      -- The path is built only when the value is refused (a concatenation per field).
      if not M.validate(f, value, "") then
        return M.validate(f, value, path_of(name, i))
      end
    end
  end
  return true
end

-- The first key of v, in sorted order, that the object definition d does not declare.
local function unknown_field(d, v)
  -- No table (and no sort) unless some key is unknown, the rare case.
  local fields, all_known = d.fields, true
  for k in pairs(v) do
    if type(k) ~= "string" or fields[k] == nil then
      all_known = false
      break
    end
  end
  if all_known then
    return nil
  end
  local unknown = {}
  for k in pairs(v) do
    if type(k) ~= "string" or d.fields[k] == nil then
      unknown[#unknown + 1] = k
    end
  end
  table.sort(unknown, function(a, b) return tostring(a) < tostring(b) end)
  return unknown[1]
end

function M.validate_fields(s, v, order, path_of)
  return check_fields(defs[s], v, order, path_of)
end

function M.unknown_field(s, v)
  return unknown_field(defs[s], v)
end

function validators.object(d, v, path)
  if type(v) ~= "table" or json.is_array(v) or (next(v) ~= nil and is_array_like(v)) then
    return expected("an object", v, path)
  end
  local ok, p, r = check_fields(d, v, d.names, function(name) return field_path(path, name) end)
  if not ok then
    return false, p, r
  end
  if not d.additional then
    local k = unknown_field(d, v)
    if type(k) ~= "string" and k ~= nil then
      return false, path, ("has a key that is not a string (%s)"):format(tostring(k))
    elseif k ~= nil then
      return false, field_path(path, tostring(k)), "is not a known field"
    end
  end
  return true
end

function validators.one_of(d, v, path)
  local matched, failures = 0, {}
  for i, alt in ipairs(d.alternatives) do
    local ok, p, r = M.validate(alt, v, path)
    if ok then
      matched = matched + 1
    else
      failures[#failures + 1] = ("%d: %s%s"):format(i, p == path and "" or p .. " ", r)
    end
  end
  if matched == 1 then
    return true
  elseif matched == 0 then
    return false, path, "matches none of the alternatives (" .. table.concat(failures, "; ") .. ")"
  end
  return false, path, "matches more than one alternative"
end

function validators.nullable(d, v, path)
  if v == json.null then
    return true
  end
  return M.validate(d.inner, v, path)
end

--------------------------------------------------------------------------------------------
-- Normalisation: makes a valid value encode as its schema says. Arrays get the json array
-- mark (so `return {}` encodes as []), integral floats become integers, and a required
-- nullable field left nil becomes json.null (Lua cannot store nil in a table). Tables are
-- changed in place; the value is returned for convenience.

local normalizers = {}

function M.normalize(s, v)
  local f = normalizers[defs[s].kind]
  if f and v ~= nil then
    return f(defs[s], v)
  end
  return v
end

function normalizers.integer(_, v)
  return type(v) == "number" and math.tointeger(v) or v
end

function normalizers.array(d, v)
  if not is_array_like(v) then
    return v
  end
  -- exo.json refuses to mark a table that has a metatable of its own (it may be what
  -- protects the table); such a table is left for the encoder to judge.
  pcall(json.array, v)
  for i = 1, #v do
    v[i] = M.normalize(d.item, v[i])
  end
  return v
end

function normalizers.object(d, v)
  if type(v) ~= "table" then
    return v
  end
  for name, f in pairs(d.fields) do
    local fd = defs[f]
    if v[name] ~= nil then
      v[name] = M.normalize(f, v[name])
    elseif fd.kind == "nullable" and not fd.optional then
      v[name] = json.null
    end
  end
  return v
end

function normalizers.nullable(d, v)
  if v == json.null then
    return v
  end
  return M.normalize(d.inner, v)
end

function normalizers.one_of(d, v)
  for _, alt in ipairs(d.alternatives) do
    if M.validate(alt, v, "") then
      return M.normalize(alt, v)
    end
  end
  return v
end

--------------------------------------------------------------------------------------------
-- Accessors for the host (method declarations, OpenRPC rendering).

function M.kind(s) return defs[s].kind end
function M.is_optional(s) return defs[s].optional == true end
function M.description(s) return defs[s].description end
function M.fields(s) return defs[s].fields end
function M.field_names(s) return defs[s].names end
function M.definition(s) return defs[s] end

--------------------------------------------------------------------------------------------
-- Modifiers, available to method code as methods of every schema. `public` (below) makes
-- their misuse point at the caller's line.

local Modifiers = {}

function Modifiers.optional(self)
  def_of(self, "optional: self")
  return derive(self, { optional = true })
end

function Modifiers.describe(self, text)
  def_of(self, "describe: self")
  if type(text) ~= "string" then
    misuse("describe: text must be a string, got %s", type(text))
  end
  return derive(self, { description = text })
end

function Modifiers.example(self, v)
  def_of(self, "example: self")
  local ok, p, r = M.validate(self, v, "example")
  if not ok then
    misuse("example: %s %s", p, r)
  end
  local examples = copy(defs[self].examples or {})
  examples[#examples + 1] = v
  return derive(self, { examples = examples })
end

-- Lets method code check a value itself: schema:validate(v) → true | false, path, reason.
function Modifiers.validate(self, v, root)
  def_of(self, "validate: self")
  if root ~= nil and type(root) ~= "string" then
    misuse("validate: root must be a string")
  end
  return M.validate(self, v, root)
end

--------------------------------------------------------------------------------------------
-- Constructors (T.string, T.object, ...). A mistake in a schema is raised at the method
-- author's line: the constructors raise without a position and `public` re-raises at the
-- caller's.

local function public(f)
  return function(...)
    local r = table.pack(pcall(f, ...))
    if not r[1] then
      error(r[2], 2)
    end
    return table.unpack(r, 2, r.n)
  end
end

local function options(name, opts, allowed)
  if opts == nil then
    return {}
  elseif type(opts) ~= "table" or M.is_schema(opts) then
    misuse("%s: options must be a table, got %s", name, type(opts))
  end
  for k in pairs(opts) do
    if not allowed[k] then
      misuse("%s: unknown option '%s'", name, tostring(k))
    end
  end
  return opts
end

-- Checks opts[lo] <= opts[hi] and that both satisfy `ok` (a predicate named `what`).
local function bounds(name, opts, lo, hi, ok, what)
  for _, key in ipairs({ lo, hi }) do
    if opts[key] ~= nil and not ok(opts[key]) then
      misuse("%s: %s must be %s", name, key, what)
    end
  end
  if opts[lo] and opts[hi] and opts[lo] > opts[hi] then
    misuse("%s: %s is greater than %s", name, lo, hi)
  end
end

local function is_count(v)
  return math.type(v) == "integer" and v >= 0
end

local function is_int(v)
  return math.type(v) == "integer"
end

local function is_finite(v)
  return type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge
end

local T = {}

T.string = public(function(opts)
  opts = options("T.string", opts, { min_len = true, max_len = true, pattern = true })
  bounds("T.string", opts, "min_len", "max_len", is_count, "a non-negative integer")
  local pat = opts.pattern
  if pat ~= nil and type(pat) ~= "string" then
    misuse("T.string: pattern must be a valid Lua pattern")
  elseif pat ~= nil then
    local ok, err = pcall(pattern_guard.estimate, pat, 0)
    if not ok then
      misuse("T.string: pattern must be a valid Lua pattern: %s", err)
    end
  end
  return new({ kind = "string", min_len = opts.min_len, max_len = opts.max_len, pattern = pat })
end)

T.integer = public(function(opts)
  opts = options("T.integer", opts, { min = true, max = true })
  bounds("T.integer", opts, "min", "max", is_int, "an integer")
  return new({ kind = "integer", min = opts.min, max = opts.max })
end)

T.number = public(function(opts)
  opts = options("T.number", opts, { min = true, max = true })
  bounds("T.number", opts, "min", "max", is_finite, "a finite number")
  return new({ kind = "number", min = opts.min, max = opts.max })
end)

for _, kind in ipairs({ "boolean", "null", "any" }) do
  T[kind] = public(function(...)
    if select("#", ...) > 0 then
      misuse("T.%s takes no options", kind)
    end
    return new({ kind = kind })
  end)
end

T.enum = public(function(values)
  if type(values) ~= "table" or values[1] == nil then
    misuse("T.enum: values must be a non-empty array")
  end
  local copied, seen = {}, {}
  for i, v in ipairs(values) do
    local t = type(v)
    if t ~= "string" and t ~= "boolean" and not is_finite(v) then
      misuse("T.enum: value %d must be a string, number or boolean", i)
    elseif seen[v] then
      misuse("T.enum: value %s appears twice", quote(v))
    end
    seen[v], copied[i] = true, v
  end
  return new({ kind = "enum", values = copied })
end)

T.array = public(function(item, opts)
  def_of(item, "T.array: item")
  opts = options("T.array", opts, { min_items = true, max_items = true })
  bounds("T.array", opts, "min_items", "max_items", is_count, "a non-negative integer")
  return new({ kind = "array", item = item, min_items = opts.min_items, max_items = opts.max_items })
end)

T.object = public(function(fields, opts)
  if type(fields) ~= "table" or M.is_schema(fields) then
    misuse("T.object: fields must be a table of name = schema")
  end
  opts = options("T.object", opts, { additional = true })
  local copied, names = {}, {}
  for name, f in pairs(fields) do
    if type(name) ~= "string" then
      misuse("T.object: field names must be strings, got %s", type(name))
    end
    def_of(f, ("T.object: field '%s'"):format(name))
    copied[name], names[#names + 1] = f, name
  end
  table.sort(names)
  return new({ kind = "object", fields = copied, names = names, additional = opts.additional == true })
end)

T.one_of = public(function(alternatives)
  if type(alternatives) ~= "table" or M.is_schema(alternatives) or #alternatives < 2 then
    misuse("T.one_of: alternatives must be an array of at least two schemas")
  end
  local copied = {}
  for i, alt in ipairs(alternatives) do
    copied[i] = alt
    def_of(alt, ("T.one_of: alternative %d"):format(i))
  end
  return new({ kind = "one_of", alternatives = copied })
end)

T.nullable = public(function(inner)
  def_of(inner, "T.nullable: argument")
  return new({ kind = "nullable", inner = inner })
end)

for name, f in pairs(Modifiers) do
  Schema[name] = public(f)
end

M.T = T

return M
