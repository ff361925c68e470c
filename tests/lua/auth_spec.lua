-- The permission check before every handler, the [auth] overrides, and the authenticate.*
-- methods on a stand-in for the runtime's exo.auth (the real one is tested end to end in
-- tests/e2e/auth.test.mjs with real PAM).
local setup = require("tests.lua.helpers.setup")
local tmp = require("tests.lua.helpers.tmp")
local kit = require("tests.lua.helpers.kit")
local auth = require("sandbox.auth")

local METHODS = [[
local function m(name, permission)
  return method({ name = name, summary = "Test", since = "2026-12-01", stability = "experimental",
    permission = permission, result = T.string(), examples = { { name = "x", result = "ok" } },
    handler = function(ctx)
      -- What a handler sees of its caller; changing it must not matter to the host.
      if ctx.auth then
        ctx.auth.admin = true
        return ctx.auth.user
      end
      return "anonymous"
    end })
end
return { m("perm.public", "public"), m("perm.user", "user"), m("perm.admin", "admin") }
]]

-- A stand-in for exo.auth: records what it was asked and answers what the test says.
local function fake_auth(answers)
  local log = {}
  return {
    log = log,
    login = function(user, password)
      log[#log + 1] = { "login", user, password }
      return table.unpack(answers.login or {})
    end,
    use_token = function(token)
      log[#log + 1] = { "use_token", token }
      return table.unpack(answers.use_token or {})
    end,
    logout = function()
      log[#log + 1] = { "logout" }
      return table.unpack(answers.logout or { true })
    end,
  }
end

describe("permissions", function()
  local dir, k
  before_each(function()
    dir = tmp.dir({ ["perm.lua"] = METHODS })
    k = kit.new({ dirs = { dir } })
  end)
  after_each(function() tmp.cleanup() end)

  local NOT_ALLOWED = { user = "mallory", uid = 1002, gid = 1002, groups = {}, admin = false, allowed = false, via = "token" }

  for _, case in ipairs({
    { "perm.public", false, true },
    { "perm.public", kit.USER, true },
    { "perm.user", false, -32001 },
    { "perm.user", kit.USER, true },
    { "perm.user", NOT_ALLOWED, -32002 },
    { "perm.user", kit.ADMIN, true },
    { "perm.admin", false, -32001 },
    { "perm.admin", kit.USER, -32002 },
    { "perm.admin", NOT_ALLOWED, -32002 },
    { "perm.admin", kit.ADMIN, true },
  }) do
    local name, who, want = case[1], case[2], case[3]
    it(("%s as %s: %s"):format(name, who and who.user or "anonymous", tostring(want)), function()
      local ok, v = k:call(name, nil, { auth = who })
      if want == true then
        assert.is_true(ok, v and v.message)
      else
        assert.is_false(ok)
        assert.equal(want, v.code)
        assert.equal(name, v.data.method)
      end
    end)
  end

  it("says why a presented credential was refused", function()
    local ok, v = k:call("perm.user", nil, { auth = false, auth_error = "token expired" })
    assert.is_false(ok)
    assert.same({ reason = "token expired", method = "perm.user", permission = "user" }, v.data)
    assert.matches("needs a login %(token expired%)", v.message)
  end)

  it("refuses before the parameters are checked, so an anonymous caller learns nothing", function()
    local ok, v = k:call("perm.admin", { unexpected = 1 }, { auth = false })
    assert.is_false(ok)
    assert.equal(-32001, v.code)
  end)

  it("a handler gets a copy of its caller: changing it changes nothing for the next call", function()
    assert.same({ true, "alice" }, { k:call("perm.user", nil, { auth = kit.USER }) })
    assert.is_false(kit.USER.admin)
    local ok, v = k:call("perm.admin", nil, { auth = kit.USER })
    assert.is_false(ok)
    assert.equal(-32002, v.code)
  end)

  it("the configuration's overrides replace a method's level", function()
    k = kit.new({ dirs = { dir }, admin_methods = { "perm.public" }, public_methods = { "perm.admin" } })
    local ok, v = k:call("perm.public", nil, { auth = kit.USER })
    assert.is_false(ok)
    assert.equal(-32002, v.code)
    assert.same({ true, "anonymous" }, { k:call("perm.admin", nil, { auth = false }) })
  end)

  it("an override that names no method is logged", function()
    kit.new({ dirs = { dir }, user_methods = { "perm.nothing" } })
    local found
    for _, l in ipairs(setup.core.logs) do
      if l.message:find("user_methods names perm.nothing", 1, true) then found = l.level end
    end
    assert.equal("warn", found)
  end)
end)

describe("authenticate.*", function()
  it("are loaded only with an auth module, and their names are reserved", function()
    local k = kit.new({})
    assert.is_false(k:call("authenticate.me", nil))
    k = kit.new({ auth_module = fake_auth({}) })
    assert.is_true((k:call("authenticate.me", nil)))
    local dir = tmp.dir({ ["fake.lua"] = [[return method({ name = "authenticate.steal", summary = "x",
      since = "2026-12-01", stability = "experimental", permission = "public", result = T.any(),
      examples = { { name = "x", result = 1 } }, handler = function() return 1 end })]] })
    k = kit.new({ dirs = { dir }, auth_module = fake_auth({}) })
    assert.equal(1, #k.summary.skipped)
    assert.matches("reserved for the agent's logins", k.summary.skipped[1].error)
    tmp.cleanup()
  end)

  it("login passes the credentials and returns the token", function()
    local a = fake_auth({ login = { { username = "exouser", token = "t.o.k", expires = 99 } } })
    local k = kit.new({ auth_module = a })
    local ok, v = k:call("authenticate.login", { username = "exouser", password = "A B:C" }, { auth = false })
    assert.is_true(ok)
    assert.same({ username = "exouser", token = "t.o.k", expires = 99 }, v)
    assert.same({ "login", "exouser", "A B:C" }, a.log[1])
  end)

  for status, want in pairs({
    bad_credentials = { -32001, "Invalid user name or password" },
    account_expired = { -32001, "The account has expired" },
    password_expired = { -32001, "The password has expired; change it over SSH or the console first" },
    account_denied = { -32001, "The account may not log in now" },
    backoff = { -32007 },
    busy = { -32005 },
    unavailable = { -32009 },
    error = { -32009 },
  }) do
    it("a login that fails with " .. status .. " answers " .. want[1], function()
      local k = kit.new({ auth_module = fake_auth({ login = { nil, status, 2000, "why" } }) })
      local ok, v = k:call("authenticate.login", { username = "u", password = "p" }, { auth = false })
      assert.is_false(ok)
      assert.equal(want[1], v.code)
      if want[2] then assert.equal(want[2], v.message) end
      assert.equal(status, v.data.reason)
      if status == "backoff" or status == "busy" then assert.equal(2000, v.data.retry_after_ms) end
    end)
  end

  it("token refuses with the reason", function()
    local k = kit.new({ auth_module = fake_auth({ use_token = { nil, "token expired" } }) })
    local ok, v = k:call("authenticate.token", { token = "x" }, { auth = false })
    assert.is_false(ok)
    assert.equal(-32001, v.code)
    assert.equal("token expired", v.data.reason)
  end)

  it("me describes the caller", function()
    local k = kit.new({ auth_module = fake_auth({}) })
    assert.same({ username = "alice", uid = 1001, groups = { "alice" }, admin = false, via = "token", expires = 4102444800 },
      k:call_ok("authenticate.me", nil, { auth = kit.USER }))
  end)

  it("logout revokes a token, and has nothing to do for a Unix socket peer", function()
    local a = fake_auth({})
    local k = kit.new({ auth_module = a })
    assert.same({ revoked = true }, k:call_ok("authenticate.logout", nil, { auth = kit.USER }))
    local ok, v = k:call("authenticate.logout", nil, { auth = kit.ADMIN })
    assert.is_false(ok)
    assert.equal(-32008, v.code)
    assert.equal(1, #a.log)
    a = fake_auth({ logout = { nil, "unavailable" } })
    k = kit.new({ auth_module = a })
    ok, v = k:call("authenticate.logout", nil, { auth = kit.USER })
    assert.equal(-32009, v.code)
  end)

  it("refusal is nil for public methods whoever calls", function()
    assert.is_nil(auth.refusal("x.y", "public", {}))
  end)
end)
