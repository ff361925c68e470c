-- The example methods of the JSON-RPC 2.0 specification (section 7, "Examples"), for the
-- end-to-end tests. Method names must be dotted, so the spec's "subtract" is "spec.subtract"
-- and so on; everything else (parameters by position and by name, results) is as the
-- specification shows it.

local Num = T.number()

-- What the last spec.update call received, so that update does something observable.
local last_update = {}

return {
  method({
    name = "spec.subtract",
    summary = "minuend - subtrahend",
    since = "2026-12-01",
    stability = "experimental",
    permission = "public",
    params = T.object({ minuend = Num, subtrahend = Num }),
    param_order = { "minuend", "subtrahend" },
    result = Num,
    examples = {
      { name = "by name", params = { minuend = 42, subtrahend = 23 }, result = 19 },
      { name = "the other way round", params = { minuend = 23, subtrahend = 42 }, result = -19 },
    },
    handler = function(ctx, params)
      return params.minuend - params.subtrahend
    end,
  }),
  method({
    name = "spec.sum",
    summary = "The sum of up to five numbers",
    since = "2026-12-01",
    stability = "experimental",
    permission = "public",
    params = T.object({
      a = Num, b = Num:optional(), c = Num:optional(), d = Num:optional(), e = Num:optional(),
    }),
    param_order = { "a", "b", "c", "d", "e" },
    result = Num,
    examples = { { name = "three numbers", params = { a = 1, b = 2, c = 4 }, result = 7 } },
    handler = function(ctx, params)
      local s = 0
      for _, k in ipairs({ "a", "b", "c", "d", "e" }) do
        s = s + (params[k] or 0)
      end
      return s
    end,
  }),
  method({
    name = "spec.update",
    summary = "Stores five numbers (called as a notification)",
    since = "2026-12-01",
    stability = "experimental",
    permission = "public",
    params = T.object({ a = Num, b = Num, c = Num, d = Num, e = Num }),
    param_order = { "a", "b", "c", "d", "e" },
    result = T.null(),
    examples = { { name = "five numbers", params = { a = 1, b = 2, c = 3, d = 4, e = 5 }, result = json.null } },
    handler = function(ctx, params)
      last_update = { params.a, params.b, params.c, params.d, params.e }
      return json.null
    end,
  }),
  method({
    name = "spec.notify_hello",
    summary = "Says hello (called as a notification)",
    since = "2026-12-01",
    stability = "experimental",
    permission = "public",
    params = T.object({ n = T.integer() }),
    result = T.string(),
    examples = { { name = "seven", params = { n = 7 }, result = "hello 7" } },
    handler = function(ctx, params)
      return "hello " .. params.n
    end,
  }),
  method({
    name = "spec.notify_sum",
    summary = "Sums three numbers (called as a notification)",
    since = "2026-12-01",
    stability = "experimental",
    permission = "public",
    params = T.object({ a = Num, b = Num, c = Num }),
    param_order = { "a", "b", "c" },
    result = Num,
    examples = { { name = "three numbers", params = { a = 1, b = 2, c = 4 }, result = 7 } },
    handler = function(ctx, params)
      return params.a + params.b + params.c
    end,
  }),
  method({
    name = "spec.get_data",
    summary = "Returns [\"hello\", 5]",
    since = "2026-12-01",
    stability = "experimental",
    permission = "public",
    result = T.array(T.one_of({ T.string(), T.integer() })),
    examples = { { name = "the data", params = {}, result = { "hello", 5 } } },
    handler = function(ctx, params)
      return { "hello", 5 }
    end,
  }),
  method({
    name = "spec.last_update",
    summary = "What spec.update stored last",
    since = "2026-12-01",
    stability = "experimental",
    permission = "public",
    result = T.array(Num),
    examples = { { name = "nothing yet", params = {}, result = {} } },
    handler = function(ctx, params)
      return { table.unpack(last_update) }
    end,
  }),
}
