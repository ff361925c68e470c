-- Translates a Lua pattern into an ECMA-262 regular expression for JSON Schema's `pattern`,
-- but only when both accept exactly the same strings. Validation always uses the Lua pattern;
-- the translation is documentation for clients, so when in doubt we give none (nil) rather
-- than publish a regex that disagrees with what the agent enforces.
--
-- What cannot be translated safely, and why:
--   * negated sets and classes (%D, [^x]) and a bare `.`: Lua matches bytes, ECMA matches
--     code points, so they disagree on non-ASCII text;
--   * non-ASCII literals: a quantifier after one applies to its last byte in Lua;
--   * %b, %f, captures and back-references: no equal ECMA construct we want to vouch for.
-- `.` followed by `*`, `+` or `-` is safe: any run of bytes between ASCII items is a run of
-- whole characters in valid UTF-8, so both sides accept the same strings.

local M = {}

-- Lua's character classes in the C locale, as ECMA set contents (without the brackets).
local CLASSES = {
  a = "A-Za-z",
  d = "0-9",
  l = "a-z",
  u = "A-Z",
  w = "A-Za-z0-9",
  x = "0-9A-Fa-f",
  s = "\\t\\n\\v\\f\\r ",
  p = "!-\\/:-@\\[-`{-~",
  c = "\\x00-\\x1f\\x7f",
  g = "!-~",
}

local ECMA_SPECIAL = "[\\^$.|?*+()%[%]{}/]"
local SET_SPECIAL = "[\\%]%[%^%-]"

local function ascii(c)
  return c:byte() < 0x80
end

local function escape(c, special)
  if c:find(special) then
    return "\\" .. c
  end
  return c
end

-- Parses the set starting at pat[i] == "[". Returns its ECMA text and the index after it.
local function parse_set(pat, i)
  i = i + 1
  local c = pat:sub(i, i)
  if c == "^" or c == "]" then
    return nil
  end
  local out = {}
  while true do
    c = pat:sub(i, i)
    if c == "" then
      return nil
    elseif c == "]" then
      return "[" .. table.concat(out) .. "]", i + 1
    elseif c == "%" then
      local d = pat:sub(i + 1, i + 1)
      if d:find("%a") then
        if not CLASSES[d] then
          return nil
        end
        out[#out + 1] = CLASSES[d]
      elseif d == "" or not ascii(d) then
        return nil
      else
        out[#out + 1] = escape(d, SET_SPECIAL)
      end
      i = i + 2
    elseif not ascii(c) then
      return nil
    elseif pat:sub(i + 1, i + 1) == "-" and pat:sub(i + 2, i + 2) ~= "]" and pat:sub(i + 2, i + 2) ~= "" then
      local hi = pat:sub(i + 2, i + 2)
      if not ascii(hi) or hi == "%" then
        return nil
      end
      out[#out + 1] = escape(c, SET_SPECIAL) .. "-" .. escape(hi, SET_SPECIAL)
      i = i + 3
    else
      out[#out + 1] = escape(c, SET_SPECIAL)
      i = i + 1
    end
  end
end

-- Parses one single-character class at pat[i]. Returns its ECMA text, whether it can match
-- non-ASCII bytes (only `.` gets that far), and the index after it; nil when unsafe.
local function parse_item(pat, i)
  local c = pat:sub(i, i)
  if c == "." then
    return "[\\s\\S]", true, i + 1
  elseif c == "[" then
    local set, nexti = parse_set(pat, i)
    return set, false, nexti
  elseif c == "(" or c == ")" or not ascii(c) then
    return nil
  elseif c == "%" then
    local d = pat:sub(i + 1, i + 1)
    if d:find("%a") then
      return CLASSES[d] and "[" .. CLASSES[d] .. "]", false, i + 2
    elseif d == "" or d:find("%d") or not ascii(d) then
      return nil
    end
    return escape(d, ECMA_SPECIAL), false, i + 2
  end
  return escape(c, ECMA_SPECIAL), false, i + 1
end

local QUANTIFIERS = { ["*"] = "*", ["+"] = "+", ["?"] = "?", ["-"] = "*?" }

-- The ECMA regex for Lua pattern `pat`, or nil when no equivalent one is certain.
function M.to_ecma(pat)
  local out, i, n = {}, 1, #pat
  if pat:sub(1, 1) == "^" then
    out[1], i = "^", 2
  end
  while i <= n do
    if i == n and pat:sub(i, i) == "$" then
      out[#out + 1] = "$"
      break
    end
    local re, wide, nexti = parse_item(pat, i)
    if not re then
      return nil
    end
    local q = QUANTIFIERS[pat:sub(nexti, nexti)]
    if wide and (q == nil or q == "?") then
      return nil
    end
    out[#out + 1] = re .. (q or "")
    i = q and nexti + 1 or nexti
  end
  return table.concat(out)
end

return M
