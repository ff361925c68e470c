-- The `coroutine` library of method code, and which call a piece of code runs for.
--
-- Each call runs in a coroutine of its own (the call thread) that the runtime resumes: when
-- a binding waits, it yields the innermost running coroutine with no values, and the runtime
-- later resumes the call thread with the binding's results; the count hook may also yield
-- with no values (preemption, or a call that is stopped and never resumed). Method code that
-- creates its own coroutines must not see those yields, and must not be able to forge them.
-- So user yields are tagged with a private value, and `resume` passes every untagged yield of
-- the coroutine it resumes up to the enclosing coroutine (which passes it further up, to the
-- call thread and the runtime), then resumes the inner coroutine with what comes back, until
-- the inner one yields with the tag, returns or fails.
--
-- Rules beyond the standard library's, each for a reason:
--   * coroutine.yield outside a user coroutine raises "coroutine.yield outside a coroutine":
--     a raw yield of the call thread would leave the runtime with a call it cannot resume.
--   * coroutine.running() outside a user coroutine returns a stand-in thread (and true), not
--     the call thread, which method code must never resume or close.
--   * A coroutine belongs to the call that created it; another call (or the file's top level)
--     cannot resume or close it, since bindings inside it would act for the wrong call.
--   * A coroutine can only be resumed where the enclosing coroutine could yield (not from a
--     table.sort comparator, a gsub replacement function or a __tostring called from C):
--     otherwise a binding inside it could not wait.

local M = {}

local raw = {
  create = coroutine.create, resume = coroutine.resume, yield = coroutine.yield,
  status = coroutine.status, running = coroutine.running, isyieldable = coroutine.isyieldable,
  close = coroutine.close,
}

-- The tag of user yields: a private table that method code can never obtain.
local USER = setmetatable({}, { __metatable = "yield tag" })

-- Every coroutine made by M.api().create, mapped to the thread of the call (or of the file
-- load) that made it. Weak keys and values: a coroutine that nobody references is collected,
-- and one kept in a file-level local does not keep its (finished or stopped) call's thread
-- alive; the runtime holds a call's thread for as long as the call runs.
local owner = setmetatable({}, { __mode = "kv" })

-- What coroutine.running() returns outside a user coroutine: a thread that has finished, so
-- it can be compared and passed around but never resumed.
local STAND_IN = raw.create(function() end)
raw.resume(STAND_IN)

-- The thread of the call (or file load) that the running code belongs to: the running
-- coroutine itself unless it is a user coroutine, whose owner is recorded at creation.
function M.call_thread()
  local co = raw.running()
  return owner[co] or co
end

-- The user coroutine running now, or nil at the top level of a call.
local function current_user()
  local co = raw.running()
  if owner[co] then
    return co
  end
  return nil
end

local function bad_argument(n, fname, what)
  error(("bad argument #%d to '%s' (%s)"):format(n, fname, what), 3)
end

local function check_user(co, fname)
  if type(co) ~= "thread" then
    bad_argument(1, fname, "coroutine expected")
  end
  return owner[co] ~= nil
end

-- Handles what raw.resume(co, ...) gave: a tagged yield or an end goes back to the caller;
-- an untagged yield (a binding's wait, the hook's preemption) is passed up and its answer
-- handed back down, over and over.
local function settle(co, ok, ...)
  if not ok then
    return false, (...)
  elseif raw.status(co) == "dead" then
    return true, ...
  elseif select("#", ...) > 0 and (...) == USER then
    return true, select(2, ...)
  end
  -- Exactly the values it yielded (none, from the runtime), up; exactly the answer, down.
  return settle(co, raw.resume(co, raw.yield(...)))
end

local function resume(co, ...)
  if not check_user(co, "resume") then
    return false, "cannot resume non-suspended coroutine"
  elseif owner[co] ~= M.call_thread() then
    return false, "cannot resume a coroutine that another call created"
  elseif not raw.isyieldable() and raw.status(co) == "suspended" then
    return false, "cannot resume a coroutine here: a C function that cannot wait (table.sort, "
      .. "string.gsub, tostring...) is running; resume it outside that function"
  end
  return settle(co, raw.resume(co, ...))
end

-- The library method code sees as `coroutine`.
function M.api()
  local api = {}

  function api.create(f)
    if type(f) ~= "function" then
      bad_argument(1, "create", "function expected")
    end
    local co = raw.create(f)
    owner[co] = M.call_thread()
    return co
  end

  api.resume = resume

  function api.yield(...)
    if not current_user() then
      error("coroutine.yield outside a coroutine: a handler can only yield from inside a "
        .. "coroutine it created", 2)
    end
    return raw.yield(USER, ...)
  end

  function api.status(co)
    if check_user(co, "status") then
      return raw.status(co)
    elseif co == STAND_IN then
      return current_user() and "normal" or "running"
    end
    bad_argument(1, "status", "not a coroutine of this method")
  end

  function api.running()
    local co = current_user()
    if co then
      return co, false
    end
    return STAND_IN, true
  end

  function api.isyieldable()
    return current_user() ~= nil and raw.isyieldable()
  end

  function api.wrap(f)
    local co = api.create(f)
    return function(...)
      local out = table.pack(resume(co, ...))
      if not out[1] then
        local err = out[2]
        if raw.status(co) == "dead" then
          raw.close(co)
        end
        -- Like the standard wrap: a string error gets the caller's position.
        error(err, type(err) == "string" and 2 or 0)
      end
      return table.unpack(out, 2, out.n)
    end
  end

  function api.close(co)
    if not check_user(co, "close") then
      error("cannot close a running coroutine", 2)
    elseif owner[co] ~= M.call_thread() then
      error("cannot close a coroutine that another call created", 2)
    end
    local status = raw.status(co)
    if status == "running" or status == "normal" then
      error(("cannot close a %s coroutine"):format(status), 2)
    end
    return raw.close(co)
  end

  return api
end

return M
