-- Guards Lua's pattern matcher (string.find, match, gmatch, gsub) against catastrophic
-- backtracking. The matcher is C code: while it runs, the runtime's count hook sees no
-- instructions, so neither the call deadline nor preemption can stop it, and one bad pattern
-- on a long subject holds the whole event loop. So every call is estimated BEFORE it runs,
-- from the pattern's structure and the subject's length, and refused when the estimate is
-- over a budget (docs/method-authoring.md, "Patterns", has the rule for authors).
--
-- The estimate counts matcher steps (one step is one character tested against one pattern
-- item, about 5-10 ns). Walking the pattern from its end, c is the worst-case cost of trying
-- the rest of the pattern at one subject position, for a subject of n bytes:
--
--   plain item (a, %d, [set], .)      c = 1 + c
--   X* X+ X- whose rest cannot fail    c = n + c        one scan, the rest tried once
--   X* X+ X- that cannot backtrack     c = 2n + c       X shares no character with what the
--                                                       rest starts with, so each retry of
--                                                       the rest fails at its first item
--   X* X+ X- that backtracks           c = n + n*c      the rest is retried at every one of
--                                                       up to n positions: the costs nest,
--                                                       so k such items give n^k
--   X? that backtracks                 c = 1 + 2c       (a?a?a?...aaa is 2^k)
--   %bxy, back-reference %1            c = n + c        one scan, no retries
--   $, %f[set], captures              c = 1 + c
--
-- "What the rest starts with" is the union of the sets of the following items up to and
-- including the first one that must consume a character; "cannot fail" means every item of
-- the rest may match the empty string (a `.*` or `.-` also lets a rest that only needs the
-- end of the subject, like `%s*$`, always succeed).
--
-- Anchored calls (a leading ^ for find, match and gsub) try one start position: the total is
-- c. Unanchored ones try up to n start positions, so the total is n*c, except when
--   * every attempt fails at its first character or succeeds (the pattern's rest after its
--     first item cannot fail: `[^\n]+`, `%d+`): then failed attempts cost 1 each and the
--     matches do not overlap, so the total is n + c;
--   * the pattern starts with a plain item P that no repeated item can match
--     (`MemTotal:%s*(%d+)`): every scan stops before the next place an attempt can get past
--     P, so the attempts cover the subject about once per plain item that matches P:
--     n + c*k.
-- gmatch and gsub walk the whole subject, trying each start position at most once, which is
-- the same cost as an unanchored find that never matches.
--
-- Plain finds (the 4th argument true, or a pattern without special characters) compare the
-- needle at each position where its first byte occurs: at most #subject * #needle byte
-- comparisons, done with memcmp; they have their own, larger budget.

local M = {}

-- Estimated matcher steps one call may take: about 50-80 ms of C on a current CPU. A linear
-- pattern may scan a few MiB; a quadratic one a few KiB.
M.BUDGET = 2 ^ 23
-- Byte comparisons one plain find may take (memcmp is about 20x faster per byte).
M.PLAIN_BUDGET = 2 ^ 30

local raw = {
  find = string.find, match = string.match, gmatch = string.gmatch, gsub = string.gsub,
  byte = string.byte, char = string.char, sub = string.sub,
}

-- A set of bytes is four 64-bit integers: byte b is bit b % 64 of word b // 64 + 1.
local function empty()
  return { 0, 0, 0, 0 }
end

local function add(set, b)
  local w = (b >> 6) + 1
  set[w] = set[w] | (1 << (b & 63))
end

local function overlaps(a, b)
  return ((a[1] & b[1]) | (a[2] & b[2]) | (a[3] & b[3]) | (a[4] & b[4])) ~= 0
end

local function union(a, b)
  return { a[1] | b[1], a[2] | b[2], a[3] | b[3], a[4] | b[4] }
end

local function subset(a, b)
  return ((a[1] & ~b[1]) | (a[2] & ~b[2]) | (a[3] & ~b[3]) | (a[4] & ~b[4])) == 0
end

local ALL = { -1, -1, -1, -1 }

-- Sets of the classes met so far, by their text; emptied when it gets large.
local classes, classes_n = {}, 0
local CLASSES_MAX = 256

-- The set of bytes a single-character item matches, and its size.
local function set_of(text)
  if #text == 1 and text ~= "." then
    local set = empty()
    add(set, raw.byte(text))
    return set, 1
  elseif #text == 2 and raw.byte(text) == 37 and not raw.find(text, "^.%w") then
    local set = empty()
    add(set, raw.byte(text, 2)) -- an escaped punctuation character
    return set, 1
  end
  local known = classes[text]
  if known then
    return known.set, known.size
  end
  -- Classes and sets: ask the matcher itself, so the estimate uses exactly its semantics.
  local set, size, anchored = empty(), 0, "^" .. text
  for b = 0, 255 do
    if raw.find(raw.char(b), anchored) then
      add(set, b)
      size = size + 1
    end
  end
  if classes_n >= CLASSES_MAX then
    classes, classes_n = {}, 0
  end
  classes[text], classes_n = { set = set, size = size }, classes_n + 1
  return set, size
end

local function malformed(why)
  error("malformed pattern (" .. why .. ")", 0)
end

-- The end of the single-character class starting at p[i] (mirrors lstrlib's classEnd).
local function class_end(p, i)
  local c = raw.sub(p, i, i)
  if c == "%" then
    if i >= #p then
      malformed("ends with '%'")
    end
    return i + 2
  elseif c == "[" then
    local j = i + 1
    if raw.sub(p, j, j) == "^" then
      j = j + 1
    end
    repeat -- the first character after [ or [^ is always part of the set
      if j > #p then
        malformed("missing ']'")
      end
      local d = raw.sub(p, j, j)
      j = j + 1
      if d == "%" then
        j = j + 1
      end
    until raw.sub(p, j, j) == "]"
    return j + 1
  end
  return i + 1
end

-- Splits a pattern into items: { kind, text, q (quantifier), set, size }.
local function parse(p, i)
  -- closed[k]: whether capture k has been closed so far (a back-reference needs that).
  local items, open, closed = {}, {}, {}
  while i <= #p do
    local c = raw.sub(p, i, i)
    if c == "(" then
      if raw.sub(p, i + 1, i + 1) == ")" then
        items[#items + 1] = { kind = "position" }
        closed[#closed + 1] = true
        i = i + 2
      else
        items[#items + 1] = { kind = "open" }
        closed[#closed + 1] = false
        open[#open + 1] = #closed
        i = i + 1
      end
    elseif c == ")" then
      if #open == 0 then
        error("invalid pattern capture", 0)
      end
      items[#items + 1] = { kind = "close" }
      closed[open[#open]], open[#open] = true, nil
      i = i + 1
    elseif c == "$" and i == #p then
      items[#items + 1] = { kind = "end" }
      i = i + 1
    elseif c == "%" and raw.sub(p, i + 1, i + 1) == "b" then
      if i + 3 > #p then
        malformed("missing arguments to '%b'")
      end
      local set = empty()
      add(set, raw.byte(p, i + 2))
      items[#items + 1] = { kind = "balance", set = set }
      i = i + 4
    elseif c == "%" and raw.sub(p, i + 1, i + 1) == "f" then
      if raw.sub(p, i + 2, i + 2) ~= "[" then
        error("missing '[' after '%f' in pattern", 0)
      end
      local e = class_end(p, i + 2)
      items[#items + 1] = { kind = "frontier", set = empty(), bracket = set_of(raw.sub(p, i + 2, e - 1)) }
      i = e
    elseif c == "%" and raw.find(raw.sub(p, i + 1, i + 1), "^%d") then
      local k = raw.byte(p, i + 1) - 48
      if not closed[k] then
        error(("invalid capture index %%%d"):format(k), 0)
      end
      items[#items + 1] = { kind = "backref" }
      i = i + 2
    else
      local e = class_end(p, i)
      local item = { kind = "char" }
      item.set, item.size = set_of(raw.sub(p, i, e - 1))
      local q = raw.sub(p, e, e)
      if q == "*" or q == "+" or q == "-" or q == "?" then
        item.q, e = q, e + 1
      end
      items[#items + 1] = item
      i = e
    end
  end
  if #open > 0 then
    error("unfinished capture", 0)
  end
  return items
end

-- Whether an item may match the empty string without conditions.
local function nullable(it)
  return it.kind == "open" or it.kind == "close" or it.kind == "position"
    or (it.kind == "char" and it.q ~= nil and it.q ~= "+")
end

-- Annotates items (from the end) with: first = what the rest after it starts with, fails =
-- whether the rest after it can fail, end_ok = whether the rest can match at the very end.
local function annotate(items)
  local first, fails, end_ok = empty(), false, true
  for i = #items, 1, -1 do
    local it = items[i]
    it.first, it.rest_fails, it.rest_end_ok = first, fails, end_ok
    local set = it.set or (it.kind == "backref" and ALL) or empty()
    if it.kind == "end" then
      first, fails = empty(), true
    elseif nullable(it) or it.kind == "frontier" or it.kind == "backref" then
      first = union(set, first)
      if it.kind == "char" and it.size == 256 and (it.q == "*" or it.q == "-") and end_ok then
        fails = false -- `.*` then a rest that only needs the end of the subject
      elseif it.kind == "frontier" or it.kind == "backref" then
        fails = true
      end
    else
      first, fails = set, true
    end
    end_ok = end_ok and (nullable(it) or it.kind == "end")
    -- Whether the rest is retried at many positions: it can fail, and this item can
    -- consume a character the rest could start with.
    it.retry = it.rest_fails and it.set ~= nil and overlaps(it.set, it.first)
  end
  return fails
end

local function repeated(it)
  return (it.kind == "char" and it.q ~= nil) or it.kind == "balance" or it.kind == "backref"
end

-- The plan of a pattern: its items and how the total is formed. Cached, since methods call
-- the same few patterns over and over; only short patterns are kept, and the cache is
-- emptied when it gets large, so that it stays small whatever patterns methods make.
local cache, cached = {}, 0
local CACHE_MAX = 128
local CACHE_PATTERN_MAX = 128

local function plan_of(p, literal_caret)
  local key = (literal_caret and "g" or "f") .. p
  local plan = cache[key]
  if plan then
    return plan
  end
  local anchored, start = false, 1
  if not literal_caret and raw.sub(p, 1, 1) == "^" then
    anchored, start = true, 2
  end
  local items = parse(p, start)
  plan = { items = items, anchored = anchored, can_fail = annotate(items) }
  -- The first item that consumes or tests something (captures are transparent).
  local f = 1
  while items[f] and (items[f].kind == "open" or items[f].kind == "close" or items[f].kind == "position") do
    f = f + 1
  end
  local it = items[f]
  if it == nil or it.kind == "end" then
    plan.cheap = true
  elseif (it.kind == "char" or it.kind == "frontier") and not it.rest_fails then
    plan.cheap = true
  elseif it.kind == "char" and it.q == nil then
    -- A selective first item: no repeated item (nor %b or a back-reference) can match it.
    local selective, k = true, 1
    for j = f + 1, #items do
      local other = items[j]
      if repeated(other) then
        selective = selective and other.kind == "char" and not overlaps(it.set, other.set)
      elseif other.kind == "char" and overlaps(it.set, other.set) then
        k = k + 1
      end
    end
    plan.selective, plan.reentries = selective, k
  elseif it.kind == "frontier" then
    -- %f[set] passes only where a run of set characters starts; when every repeated item
    -- stays inside such runs, scans from different starts do not overlap (`%f[%w]%w+`).
    local selective = true
    for j = f + 1, #items do
      local other = items[j]
      if repeated(other) then
        selective = selective and other.kind == "char" and subset(other.set, it.bracket)
      end
    end
    plan.selective, plan.reentries = selective, #items
  end
  if #p <= CACHE_PATTERN_MAX then
    if cached >= CACHE_MAX then
      cache, cached = {}, 0
    end
    cache[key], cached = plan, cached + 1
  end
  return plan
end

-- Worst-case steps of one attempt at one position (c in the header comment).
local function attempt_cost(items, n)
  local c = 1
  for i = #items, 1, -1 do
    local it = items[i]
    local retry = it.retry
    if it.kind == "char" and (it.q == "*" or it.q == "+" or it.q == "-") then
      if not it.rest_fails then
        c = n + c
      elseif retry then
        c = n + n * c
      else
        c = 2 * n + c
      end
    elseif it.kind == "char" and it.q == "?" then
      c = retry and 1 + 2 * c or 2 + c
    elseif it.kind == "balance" or it.kind == "backref" then
      c = n + c
    else
      c = 1 + c
    end
  end
  return c
end

-- Estimated steps of matching pattern p (a string) in a subject of n bytes. `literal_caret`
-- is true for gmatch, where a leading ^ is not an anchor. Raises "malformed pattern ..."
-- (and the matcher's other pattern errors) for a pattern the matcher would reject.
function M.estimate(p, n, literal_caret)
  -- In floats: the products overflow integers long before they reach the budget.
  n = math.max(n, 1) + 0.0
  local plan = plan_of(p, literal_caret)
  local c = attempt_cost(plan.items, n)
  if plan.anchored then
    return c
  elseif plan.cheap then
    return n + c
  elseif plan.selective then
    return n + c * plan.reentries
  end
  return n * c
end

-- Whether matching pattern p (find/match semantics) in n bytes is within the budget.
-- Raises on a malformed pattern.
function M.allowed(p, n)
  return M.estimate(p, n) <= M.BUDGET
end

-- lstrlib's nospecials: find compares such a pattern as plain text.
local function is_plain(p)
  return not raw.find(p, "[%^%$%*%+%?%.%(%[%%%-]")
end

-- Hook for the host: called with (message, "file:line" of the caller, or nil when unknown)
-- before a refusal is raised, so that the log names the method's line even when the method
-- catches the error.
M.on_refuse = nil

-- "file:line" of the Lua code that called the guarded function: levels 1 to 4 are this
-- module (caller_position, refuse, check, the guarded function); C frames (a pcall) are
-- skipped. nil when the call was a tail call (`return s:find(p)`), which leaves no frame.
local function caller_position()
  local called = debug.getinfo(4, "t")
  if called and called.istailcall then
    return nil
  end
  for level = 5, 12 do
    local info = debug.getinfo(level, "Sl")
    if not info then
      break
    elseif info.what ~= "C" then
      return ("%s:%d"):format(info.short_src, info.currentline)
    end
  end
  return nil
end

local function refuse(fname, p, n, steps, limit)
  local shown = #p > 60 and raw.sub(p, 1, 57) .. "..." or p
  local msg = ("%s: pattern %q on a subject of %d bytes could take about %.3g matcher steps, "
    .. "over the limit of %.3g; anchor it, make its repeated items unable to match what follows "
    .. "them, use plain find, agent.lines or agent.split, or shorten the subject"):format(fname, shown, n, steps, limit)
  if M.on_refuse then
    M.on_refuse(msg, caller_position())
  end
  error(M.limit_error(msg), 4)
end

-- Set by the host: builds the error object raised on refusal (errors.LimitExceeded with
-- data {limit = "pattern"}). A plain string until then.
function M.limit_error(msg)
  return msg
end

-- Subject length the matcher will see from `init` (Lua's rules for negative and large init).
local function span(len, init)
  if init == nil then
    return len
  end
  init = math.tointeger(init)
  if init == nil then
    return len
  elseif init < 0 then
    init = math.max(len + init + 1, 1)
  elseif init == 0 then
    init = 1
  end
  return math.max(len - init + 1, 0)
end

-- Checks one call; returns nothing, raises when it is refused. Arguments the matcher would
-- reject (wrong types) are left for the matcher to reject with its own message.
local function check(fname, s, p, init, plain, literal_caret)
  local ts, tp = type(s), type(p)
  if (ts ~= "string" and ts ~= "number") or (tp ~= "string" and tp ~= "number") then
    return
  end
  s, p = tostring(s), tostring(p)
  local n = span(#s, init)
  if plain or (fname == "string.find" and is_plain(p)) then
    local steps = (n + 0.0) * #p
    if steps > M.PLAIN_BUDGET then
      refuse(fname, p, n, steps, M.PLAIN_BUDGET)
    end
    return
  end
  -- A malformed pattern is refused here: the matcher only notices when it reaches the bad
  -- item, which may be after all the backtracking this guard exists to prevent.
  local ok, steps = pcall(M.estimate, p, n, literal_caret)
  if not ok then
    error(("%s: %s"):format(fname, steps), 3)
  end
  if steps > M.BUDGET then
    refuse(fname, p, n, steps, M.BUDGET)
  end
end

-- The guarded functions, with the standard signatures.
function M.find(s, p, init, plain)
  check("string.find", s, p, init, plain)
  return raw.find(s, p, init, plain)
end

function M.match(s, p, init)
  check("string.match", s, p, init)
  return raw.match(s, p, init)
end

function M.gmatch(s, p, init)
  check("string.gmatch", s, p, init, false, true)
  return raw.gmatch(s, p, init)
end

function M.gsub(s, p, repl, n)
  check("string.gsub", s, p)
  return raw.gsub(s, p, repl, n)
end

return M
