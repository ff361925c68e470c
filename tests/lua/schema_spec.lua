local setup = require("tests.lua.helpers.setup")
local schema = require("sandbox.schema")
local render = require("sandbox.schema_render")

local json = setup.json
local T = schema.T

-- validate's three results as one table, for assert.same.
local function check(s, v, root)
  return { schema.validate(s, v, root) }
end

local function rendered(s)
  return json.decode(json.encode(render.to_json_schema(s)))
end

describe("schema DSL", function()
  describe("scalars", function()
    it("checks strings, their length in characters and their Lua pattern", function()
      local s = T.string({ min_len = 2, max_len = 3, pattern = "^%l+$" })
      assert.same({ true }, check(s, "ab"))
      assert.same({ true }, check(T.string({ max_len = 2 }), "éé"))
      assert.same({ false, "value", "expected a string, got an integer" }, check(s, 12))
      assert.same({ false, "value", "must be at least 2 characters long" }, check(s, "a"))
      assert.same({ false, "value", "must be at most 3 characters long" }, check(s, "abcd"))
      assert.same({ false, "value", 'must match the Lua pattern "^%l+$"' }, check(s, "aB"))
    end)

    it("accepts integers and floats with an integral value as integers", function()
      local s = T.integer({ min = 0, max = 100 })
      assert.same({ true }, check(s, 42))
      assert.same({ true }, check(s, 42.0))
      assert.same({ false, "value", "expected an integer, got a number" }, check(s, 4.5))
      assert.same({ false, "value", "expected an integer, got a string" }, check(s, "4"))
      assert.same({ false, "value", "expected an integer, got a number" }, check(s, math.huge))
      assert.same({ false, "value", "must be at least 0" }, check(s, -1))
      assert.same({ false, "value", "must be at most 100" }, check(s, 101))
    end)

    it("accepts finite numbers", function()
      local s = T.number({ min = 0.5 })
      assert.same({ true }, check(s, 1))
      assert.same({ true }, check(s, 0.5))
      assert.same({ false, "value", "must be at least 0.5" }, check(s, 0.25))
      assert.is_false(schema.validate(s, 0 / 0))
      assert.is_false(schema.validate(s, math.huge))
    end)

    it("checks booleans, null and any", function()
      assert.same({ true }, check(T.boolean(), false))
      assert.same({ false, "value", "expected a boolean, got a string" }, check(T.boolean(), "true"))
      assert.same({ true }, check(T.null(), json.null))
      assert.same({ false, "value", "expected null, got nothing" }, check(T.null(), nil))
      assert.same({ true }, check(T.any(), { 1, 2 }))
      assert.same({ true }, check(T.any(), json.null))
      assert.same({ false, "value", "expected a value, got nothing" }, check(T.any(), nil))
    end)

    it("checks enums by value and type, quoting values as JSON", function()
      local s = T.enum({ "volume", "share", "other" })
      assert.same({ true }, check(s, "share"))
      assert.same({ false, "params.kind", 'expected one of "volume", "share", "other"' },
        check(s, "disk", "params.kind"))
      assert.is_false(schema.validate(T.enum({ 1, 2 }), "1"))
      assert.is_true(schema.validate(T.enum({ 1, 2 }), 2))
    end)
  end)

  describe("arrays", function()
    local s = T.array(T.integer(), { min_items = 1, max_items = 3 })

    it("accepts decoded arrays and plain Lua sequences", function()
      assert.same({ true }, check(s, json.decode("[1,2]")))
      assert.same({ true }, check(s, { 1, 2, 3 }))
    end)

    it("accepts an empty plain table as an empty array", function()
      assert.same({ true }, check(T.array(T.string()), {}))
      assert.same({ true }, check(T.array(T.string()), json.array()))
    end)

    it("rejects objects, holes and wrong items with the item's index", function()
      assert.same({ false, "value", "expected an array, got an object" }, check(s, { a = 1 }))
      assert.same({ false, "value", "expected an array, got an object" }, check(s, { [1] = 1, [3] = 3 }))
      assert.same({ false, "value[2]", "expected an integer, got a string" }, check(s, { 1, "2" }))
      assert.same({ false, "value", "must have at least 1 items" }, check(s, {}))
      assert.same({ false, "value", "must have at most 3 items" }, check(s, { 1, 2, 3, 4 }))
    end)
  end)

  describe("objects", function()
    local Item = T.object({ name = T.string(), size = T.integer():optional() })
    local Filter = T.object({ filter = T.object({ items = T.array(Item) }) })

    it("names the first offending path, nested", function()
      local v = json.decode('{"filter":{"items":[{"name":"a"},{"name":5}]}}')
      assert.same({ false, "params.filter.items[2].name", "expected a string, got an integer" },
        check(Filter, v, "params"))
    end)

    it("requires non-optional fields and allows optional ones to be absent", function()
      assert.same({ true }, check(Item, { name = "a" }))
      assert.same({ false, "value.name", "is required" }, check(Item, { size = 1 }))
    end)

    it("rejects unknown fields unless told otherwise", function()
      assert.same({ false, "value.colour", "is not a known field" }, check(Item, { name = "a", colour = "red" }))
      assert.same({ true }, check(T.object({ name = T.string() }, { additional = true }), { name = "a", colour = 1 }))
    end)

    it("quotes field names that are not identifiers", function()
      local s = T.object({ ["a-b"] = T.integer() })
      assert.same({ false, 'value["a-b"]', "expected an integer, got a string" }, check(s, { ["a-b"] = "x" }))
    end)

    it("rejects arrays and non-tables", function()
      assert.same({ false, "value", "expected an object, got an array" }, check(Item, json.array({})))
      assert.same({ false, "value", "expected an object, got an array" }, check(Item, { "a" }))
      assert.same({ false, "value", "expected an object, got a string" }, check(Item, "a"))
    end)

    it("accepts an empty plain table as an empty object", function()
      assert.same({ true }, check(T.object({}), {}))
    end)
  end)

  describe("one_of and nullable", function()
    it("requires exactly one alternative to match", function()
      local s = T.one_of({ T.string(), T.integer() })
      assert.same({ true }, check(s, "a"))
      assert.same({ true }, check(s, 1))
      local ok, path, reason = schema.validate(s, true)
      assert.is_false(ok)
      assert.equal("value", path)
      assert.equal("matches none of the alternatives (1: expected a string, got a boolean; "
        .. "2: expected an integer, got a boolean)", reason)
      assert.same({ false, "value", "matches more than one alternative" },
        check(T.one_of({ T.integer(), T.number() }), 1))
    end)

    it("accepts null or the inner schema", function()
      local s = T.nullable(T.array(T.integer()))
      assert.same({ true }, check(s, json.null))
      assert.same({ true }, check(s, { 1 }))
      assert.same({ false, "value[1]", "expected an integer, got a string" }, check(s, { "x" }))
    end)
  end)

  describe("modifiers", function()
    it("return new schemas and leave the original alone", function()
      local base = T.string()
      local opt = base:optional()
      local s = T.object({ a = base, b = opt })
      assert.same({ false, "value.a", "is required" }, check(s, {}))
      assert.is_true(schema.is_optional(opt))
      assert.is_false(schema.is_optional(base))
      assert.equal("text", schema.description(base:describe("text")))
      assert.is_nil(schema.description(base))
    end)

    it("check examples against the schema", function()
      assert.has_error(function() T.integer():example("x") end, "example: example expected an integer, got a string")
      assert.equal("schema", getmetatable(T.integer():example(3)))
    end)

    it("let method code validate values", function()
      assert.same({ false, "x", "expected an integer, got a string" }, { T.integer():validate("1", "x") })
    end)

    it("cannot be changed", function()
      assert.has_error(function() T.string().kind = "integer" end, "schemas are read-only")
    end)
  end)

  describe("constructor misuse", function()
    it("is reported with the option at fault", function()
      assert.has_error(function() T.string({ minlen = 1 }) end)
      local ok, err = pcall(T.string, { minlen = 1 })
      assert.is_false(ok)
      assert.matches("T.string: unknown option 'minlen'", err, 1, true)
      assert.has_error(function() T.integer({ min = 1.5 }) end)
      assert.has_error(function() T.integer({ min = 5, max = 1 }) end)
      assert.has_error(function() T.string({ pattern = "[a" }) end)
      assert.has_error(function() T.enum({}) end)
      assert.has_error(function() T.enum({ "a", "a" }) end)
      assert.has_error(function() T.array("string") end)
      assert.has_error(function() T.array(T.string(), T.integer()) end)
      assert.has_error(function() T.object({ a = "string" }) end)
      assert.has_error(function() T.one_of({ T.string() }) end)
      assert.has_error(function() T.nullable({}) end)
      assert.has_error(function() T.boolean({}) end)
    end)

    it("points at the caller's line", function()
      local ok, err = pcall(load("local T = ...\nlocal s = T.integer({ min = 'x' })", "@my_method.lua"), T)
      assert.is_false(ok)
      assert.equal("my_method.lua:2: T.integer: min must be an integer", err)
    end)
  end)

  describe("normalisation", function()
    it("marks arrays, nested ones included, so that empty ones encode as []", function()
      local s = T.object({ list = T.array(T.object({ tags = T.array(T.string()) })) })
      local v = schema.normalize(s, { list = { { tags = {} } } })
      assert.equal('{"list":[{"tags":[]}]}', json.encode(v))
    end)

    it("turns integral floats into integers", function()
      local v = schema.normalize(T.array(T.integer()), { 3.0, 4 })
      assert.equal("integer", math.type(v[1]))
    end)

    it("fills a required nullable field left nil with null", function()
      local s = T.object({ gpu = T.nullable(T.array(T.integer())), opt = T.nullable(T.integer()):optional() })
      assert.equal('{"gpu":null}', json.encode(schema.normalize(s, {})))
    end)

    it("normalises with the matching one_of alternative", function()
      local s = T.one_of({ T.string(), T.array(T.integer()) })
      assert.equal("[]", json.encode(schema.normalize(s, {})))
    end)
  end)

  describe("JSON Schema rendering", function()
    it("renders scalars with their bounds", function()
      assert.same({ type = "string", minLength = 1, maxLength = 8, pattern = "^[a-z]+$" },
        rendered(T.string({ min_len = 1, max_len = 8, pattern = "^%l+$" })))
      assert.same({ type = "integer", minimum = 0, maximum = 100 }, rendered(T.integer({ min = 0, max = 100 })))
      assert.same({ type = "number", minimum = 0.5 }, rendered(T.number({ min = 0.5 })))
      assert.same({ type = "boolean" }, rendered(T.boolean()))
      assert.same({ type = "null" }, rendered(T.null()))
      assert.same({}, rendered(T.any()))
    end)

    it("renders enums as arrays, with a type when all values share one", function()
      assert.equal('{"enum":["a","b"],"type":"string"}', json.encode(render.to_json_schema(T.enum({ "a", "b" }))))
      assert.equal('{"enum":["a",1]}', json.encode(render.to_json_schema(T.enum({ "a", 1 }))))
    end)

    it("renders objects with required names and no additional properties", function()
      local s = T.object({ b = T.string():describe("B"), a = T.integer():optional() })
      assert.equal('{"additionalProperties":false,"properties":{"a":{"type":"integer"},'
        .. '"b":{"description":"B","type":"string"}},"required":["b"],"type":"object"}',
        json.encode(render.to_json_schema(s)))
    end)

    it("leaves out an empty required list and renders empty properties as an object", function()
      assert.equal('{"additionalProperties":false,"properties":{},"type":"object"}',
        json.encode(render.to_json_schema(T.object({}))))
      assert.equal('{"additionalProperties":true,"properties":{},"type":"object"}',
        json.encode(render.to_json_schema(T.object({}, { additional = true }))))
    end)

    it("renders arrays, one_of and nullable", function()
      assert.equal('{"items":{"type":"integer"},"maxItems":2,"minItems":1,"type":"array"}',
        json.encode(render.to_json_schema(T.array(T.integer(), { min_items = 1, max_items = 2 }))))
      assert.equal('{"oneOf":[{"type":"string"},{"type":"integer"}]}',
        json.encode(render.to_json_schema(T.one_of({ T.string(), T.integer() }))))
      assert.equal('{"description":"GPUs","oneOf":[{"items":{"type":"integer"},"type":"array"},{"type":"null"}]}',
        json.encode(render.to_json_schema(T.nullable(T.array(T.integer())):describe("GPUs"))))
    end)

    it("renders examples, normalised", function()
      assert.equal('{"examples":[[]],"items":{"type":"string"},"type":"array"}',
        json.encode(render.to_json_schema(T.array(T.string()):example({}))))
    end)

    it("leaves out a Lua pattern that has no exact regex equivalent", function()
      assert.same({ type = "string" }, rendered(T.string({ pattern = "^%b()$" })))
    end)
  end)
end)
