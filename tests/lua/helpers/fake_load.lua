-- A fake exo.load for the busted specs, with the C module's interface (runtime/l_load.c):
--
--   load.samples = { { epoch = 1764072000, cpuPctUsed = 3, memPctUsed = 21, rootfsPctUsed = 35,
--                      gpuPctUsed = json.null }, ... }             -- oldest first
--
-- history(since, until, limit) answers as the C module does: the samples with
-- since <= epoch <= until (nil: no bound), the newest `limit` (nil: 10080), oldest first, as
-- fresh tables (gpuPctUsed arrays marked as JSON arrays); misuse raises; inside a call it needs
-- the capability "system.read", like the binding (exo_call_require).

local json = require("exo.json")
local core = require("tests.lua.helpers.fake_core")

local M = { MAX = 10080 }

function M.reset()
  M.samples = {}
  M.calls = 0
end
M.reset()

local function copy(s)
  local gpus = s.gpuPctUsed
  if type(gpus) == "table" then
    local list = json.array()
    for i, v in ipairs(gpus) do
      list[i] = v
    end
    gpus = list
  end
  return { epoch = s.epoch, cpuPctUsed = s.cpuPctUsed, memPctUsed = s.memPctUsed,
           rootfsPctUsed = s.rootfsPctUsed, gpuPctUsed = gpus }
end

function M.history(since, until_, limit)
  M.calls = M.calls + 1
  if core.call and not (core.call.capabilities or {})["system.read"] then
    error("capability 'system.read' is not granted to this method", 2)
  end
  assert(since == nil or math.type(since) == "integer", "bad argument #1 to 'history'")
  assert(until_ == nil or math.type(until_) == "integer", "bad argument #2 to 'history'")
  limit = limit or M.MAX
  assert(math.type(limit) == "integer" and limit >= 1 and limit <= M.MAX, "bad argument #3 to 'history'")
  assert(since == nil or until_ == nil or until_ >= since, "bad argument #2 to 'history'")
  local picked = {}
  for _, s in ipairs(M.samples) do
    if (since == nil or s.epoch >= since) and (until_ == nil or s.epoch <= until_) then
      picked[#picked + 1] = s
    end
  end
  local out = json.array()
  for i = math.max(1, #picked - limit + 1), #picked do
    out[#out + 1] = copy(picked[i])
  end
  return out
end

return M
