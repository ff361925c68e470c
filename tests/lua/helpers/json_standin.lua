-- A pure-Lua stand-in for the exo.json C module, used ONLY by the busted specs and ONLY when
-- build/lua/exo/json.so is not built (see helpers/setup.lua). Same interface: encode (sorted
-- keys; raises on what JSON cannot hold), decode (nil, err on bad input), null (a light
-- userdata), array / is_array (the array mark). The agent itself never loads this file.

local M = {}

-- A light userdata, like the C module's NULL sentinel.
local anchor = {}
M.null = debug.upvalueid(function() return anchor end, 1)

-- Like the C module, the mark is a shared metatable that hides itself behind its name.
local ARRAY_MT = { __metatable = "exo.json.array" }

local function is_marked(t)
  return type(t) == "table" and debug.getmetatable(t) == ARRAY_MT
end

-- Like the C module, refuses a table that has a metatable of its own.
function M.array(t)
  t = t or {}
  if type(t) ~= "table" then
    error("bad argument #1 to 'array' (table expected, got " .. type(t) .. ")", 2)
  elseif not is_marked(t) and getmetatable(t) ~= nil then
    error("bad argument #1 to 'array' (table already has a metatable)", 2)
  end
  return setmetatable(t, ARRAY_MT)
end

function M.is_array(t)
  return is_marked(t)
end

local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n",
                  ["\r"] = "\\r", ["\t"] = "\\t" }

local function encode_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return ESCAPES[c] or ("\\u%04x"):format(c:byte())
  end) .. '"'
end

-- Array when marked or when the keys are exactly 1..n (n > 0); object when all keys are
-- strings; anything else cannot be JSON.
local function table_kind(t)
  if is_marked(t) then
    return "array"
  end
  local n, strings = 0, 0
  for k in pairs(t) do
    n = n + 1
    if type(k) == "string" then
      strings = strings + 1
    end
  end
  if strings == n then
    return "object"
  elseif strings == 0 and #t == n then
    return "array"
  end
  error("json.encode: table mixes array and object keys")
end

local encode

local function encode_table(t, depth)
  if depth > 100 then
    error("json.encode: nesting too deep (a cycle?)")
  end
  local out = {}
  if table_kind(t) == "array" then
    for i = 1, #t do
      out[i] = encode(t[i], depth + 1)
    end
    return "[" .. table.concat(out, ",") .. "]"
  end
  local keys = {}
  for k in pairs(t) do
    keys[#keys + 1] = k
  end
  table.sort(keys)
  for i, k in ipairs(keys) do
    out[i] = encode_string(k) .. ":" .. encode(t[k], depth + 1)
  end
  return "{" .. table.concat(out, ",") .. "}"
end

function encode(v, depth)
  local t = type(v)
  if v == M.null then
    return "null"
  elseif t == "boolean" then
    return tostring(v)
  elseif math.type(v) == "integer" then
    return ("%d"):format(v)
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then
      error("json.encode: cannot encode " .. tostring(v))
    end
    return ("%.17g"):format(v)
  elseif t == "string" then
    return encode_string(v)
  elseif t == "table" then
    return encode_table(v, depth)
  end
  error("json.encode: cannot encode a " .. t)
end

function M.encode(v)
  return encode(v, 0)
end

-- Decoding: a small recursive-descent parser.

local decode_value

local function skip(s, i)
  return s:find("[^ \t\r\n]", i) or #s + 1
end

local function decode_string(s, i)
  local out, j = {}, i + 1
  while true do
    local c = s:sub(j, j)
    if c == "" then
      error("unterminated string")
    elseif c == '"' then
      return table.concat(out), j + 1
    elseif c == "\\" then
      local e = s:sub(j + 1, j + 1)
      local simple = { b = "\b", f = "\f", n = "\n", r = "\r", t = "\t", ['"'] = '"', ["\\"] = "\\", ["/"] = "/" }
      if simple[e] then
        out[#out + 1], j = simple[e], j + 2
      elseif e == "u" and s:sub(j + 2, j + 5):find("^%x%x%x%x$") then
        out[#out + 1], j = utf8.char(tonumber(s:sub(j + 2, j + 5), 16)), j + 6
      else
        error("bad escape at " .. j)
      end
    else
      out[#out + 1], j = c, j + 1
    end
  end
end

local function decode_number(s, i)
  local text = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", i)
  if not text or text == "" or text == "-" then
    error("bad number at " .. i)
  end
  local v = tonumber(text)
  if not v then
    error("bad number at " .. i)
  end
  return v, i + #text
end

local function decode_list(s, i, close, item)
  i = skip(s, i + 1)
  if s:sub(i, i) == close then
    return i + 1
  end
  while true do
    i = skip(s, item(s, i))
    local c = s:sub(i, i)
    if c == close then
      return i + 1
    elseif c ~= "," then
      error("expected ',' or '" .. close .. "' at " .. i)
    end
    i = skip(s, i + 1)
  end
end

function decode_value(s, i)
  i = skip(s, i)
  local c = s:sub(i, i)
  if c == "{" then
    local obj = {}
    local nexti = decode_list(s, i, "}", function(_, j)
      if s:sub(j, j) ~= '"' then
        error("expected a key at " .. j)
      end
      local k, after = decode_string(s, j)
      after = skip(s, after)
      if s:sub(after, after) ~= ":" then
        error("expected ':' at " .. after)
      end
      local v
      v, after = decode_value(s, after + 1)
      obj[k] = v
      return after
    end)
    return obj, nexti
  elseif c == "[" then
    local arr = M.array({})
    local nexti = decode_list(s, i, "]", function(_, j)
      local v, after = decode_value(s, j)
      arr[#arr + 1] = v
      return after
    end)
    return arr, nexti
  elseif c == '"' then
    return decode_string(s, i)
  end
  for word, v in pairs({ ["true"] = true, ["false"] = false, null = M.null }) do
    if s:sub(i, i + #word - 1) == word then
      return v, i + #word
    end
  end
  return decode_number(s, i)
end

function M.decode(s)
  if type(s) ~= "string" then
    return nil, "json.decode: expected a string"
  end
  local ok, v, i = pcall(decode_value, s, 1)
  if not ok then
    return nil, "json.decode: " .. tostring(v):gsub("^.-:%d+: ", "")
  end
  if skip(s, i) <= #s then
    return nil, "json.decode: trailing characters at " .. i
  end
  return v
end

return M
