-- Renders a T schema as JSON Schema (draft-07 keywords) for the OpenRPC document. Arrays in
-- the output (required, enum, oneOf, examples) carry the json array mark so that they encode
-- as JSON arrays even when empty.

local json = require("exo.json")
local schema = require("sandbox.schema")
local pattern = require("sandbox.pattern")

local M = {}

local renderers = {}

function M.to_json_schema(s)
  local d = schema.definition(s)
  local out = renderers[d.kind](d)
  out.description = d.description
  if d.examples then
    local examples = json.array()
    for i, v in ipairs(d.examples) do
      examples[i] = schema.normalize(s, v)
    end
    out.examples = examples
  end
  return out
end

local function list(values)
  local out = json.array()
  for i, v in ipairs(values) do
    out[i] = v
  end
  return out
end

function renderers.string(d)
  -- A Lua pattern is published only when it has an exact ECMA equivalent (sandbox/pattern.lua).
  local regex = d.pattern and pattern.to_ecma(d.pattern)
  return { type = "string", minLength = d.min_len, maxLength = d.max_len, pattern = regex }
end

function renderers.integer(d)
  return { type = "integer", minimum = d.min, maximum = d.max }
end

function renderers.number(d)
  return { type = "number", minimum = d.min, maximum = d.max }
end

function renderers.boolean()
  return { type = "boolean" }
end

function renderers.null()
  return { type = "null" }
end

function renderers.any()
  return {}
end

function renderers.enum(d)
  local out = { enum = list(d.values) }
  local t = type(d.values[1])
  for _, v in ipairs(d.values) do
    if type(v) ~= t then
      return out
    end
  end
  out.type = t
  return out
end

function renderers.array(d)
  return {
    type = "array",
    items = M.to_json_schema(d.item),
    minItems = d.min_items,
    maxItems = d.max_items,
  }
end

function renderers.object(d)
  local properties, required = {}, json.array()
  for _, name in ipairs(d.names) do
    local f = d.fields[name]
    properties[name] = M.to_json_schema(f)
    if not schema.is_optional(f) then
      required[#required + 1] = name
    end
  end
  return {
    type = "object",
    properties = properties,
    required = #required > 0 and required or nil,
    additionalProperties = d.additional or false,
  }
end

function renderers.one_of(d)
  local alternatives = json.array()
  for i, alt in ipairs(d.alternatives) do
    alternatives[i] = M.to_json_schema(alt)
  end
  return { oneOf = alternatives }
end

function renderers.nullable(d)
  return { oneOf = list({ M.to_json_schema(d.inner), { type = "null" } }) }
end

return M
