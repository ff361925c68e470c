-- Notifications: declarations and their mistakes, the OpenRPC x-notifications, the
-- notifications.* methods over a (fake) WebSocket session and over HTTP, emitting, dropped
-- sessions, permissions and the notify.mounts.* diff.
local setup = require("tests.lua.helpers.setup")
local kit = require("tests.lua.helpers.kit")
local tmp = require("tests.lua.helpers.tmp")

local json = setup.json

-- A method file declaring one method and the notifications given as Lua source.
local function notification_file(...)
  local decls = { ...  }
  return ([[
local ping = method {
  name = "demo.ping", summary = "Ping", since = "2026-12-01", stability = "stable",
  permission = "public", params = T.object({}), result = T.string(),
  examples = { { name = "pong", params = {}, result = "pong" } },
  handler = function() return "pong" end,
}
return { ping, %s }
]]):format(table.concat(decls, ", "))
end

local function note(name, extra)
  return ([[notification {
  name = %q, summary = "Something happened", since = "2026-12-01", stability = "experimental",
  permission = "user", params = T.object({ n = T.integer({ min = 0 }), tags = T.array(T.string()) }),
  examples = { { name = "one", params = { n = 1, tags = {} } } },%s
}]]):format(name, extra or "")
end

local function session_ctx(id, auth)
  return { session = id, transport = "websocket", auth = auth }
end

local function decoded(text)
  return assert(json.decode(text))
end

describe("notifications", function()
  after_each(function()
    tmp.cleanup()
    setup.restore_string_metatable()
  end)

  describe("declared in method files", function()
    it("load next to methods and are listed with their params schema", function()
      local k = kit.new({ files = { tmp.file(notification_file(note("notify.demo.ping"))) } })
      assert.same({}, k.summary.skipped)
      assert.equal("pong", k:call_ok("demo.ping"))
      local list = k:call_ok("notifications.list", {}, { auth = kit.USER })
      -- The host's notify.jobs.* come first in name order.
      assert.equal(3, #list)
      assert.same({ "notify.demo.ping", "notify.jobs.done", "notify.jobs.progress" },
        { list[1].name, list[2].name, list[3].name })
      assert.equal("Something happened", list[1].summary)
      assert.equal("user", list[1].permission)
      assert.equal("object", list[1].params.type)
      assert.equal("integer", list[1].params.properties.n.type)
    end)

    local bad = {
      { "a name outside notify.", note("demo.happened"), "notification 'demo.happened': name must start with \"notify.\"" },
      { "a name that is not dotted words", note("notify.Bad"), "notification 'notify.Bad': name must be dotted lower-case words" },
      { "an unknown field", note("notify.demo.x", "\n  handler = function() end,"), "notification 'notify.demo.x': unknown field \"handler\"" },
      { "no summary", [[notification { name = "notify.demo.x", since = "2026-12-01", stability = "stable",
          permission = "user", params = T.object({}), examples = { { name = "e", params = {} } } }]],
        "notification 'notify.demo.x': summary is required" },
      { "a bad permission", [[notification { name = "notify.demo.x", summary = "s", since = "2026-12-01",
          stability = "stable", permission = "root", params = T.object({}), examples = { { name = "e", params = {} } } }]],
        "notification 'notify.demo.x': permission must be one of public, user, admin" },
      { "params that are not a schema", [[notification { name = "notify.demo.x", summary = "s", since = "2026-12-01",
          stability = "stable", permission = "user", params = { n = 1 }, examples = { { name = "e", params = {} } } }]],
        "notification 'notify.demo.x': params must be a schema made with T" },
      { "params of a scalar schema", [[notification { name = "notify.demo.x", summary = "s", since = "2026-12-01",
          stability = "stable", permission = "user", params = T.string(), examples = { { name = "e", params = "x" } } }]],
        "params must be a T.object or T.array schema" },
      { "no example", [[notification { name = "notify.demo.x", summary = "s", since = "2026-12-01",
          stability = "stable", permission = "user", params = T.object({}), examples = {} }]],
        "examples must be an array with at least one example" },
      { "an example that does not match", [[notification { name = "notify.demo.x", summary = "s",
          since = "2026-12-01", stability = "stable", permission = "user", params = T.object({ n = T.integer() }),
          examples = { { name = "e", params = { n = "one" } } } }]],
        "examples[1] does not match its schema: examples[1].params.n" },
    }
    for _, case in ipairs(bad) do
      it("skip the file for " .. case[1] .. ", with a clear message", function()
        local path = tmp.file(notification_file(case[2]))
        local k = kit.new({ files = { path } })
        assert.equal(1, #k.summary.skipped)
        assert.matches(case[3], k.summary.skipped[1].error, 1, true)
        assert.matches("^" .. path:gsub("%p", "%%%0") .. ":%d+: ", k.summary.skipped[1].error)
        assert.equal(-32601, select(2, k:call("demo.ping")).code)
      end)
    end

    it("cannot be declared as a method", function()
      local path = tmp.file([[return method { name = "notify.demo.x", summary = "s", since = "2026-12-01",
        stability = "stable", permission = "user", result = T.null(), examples = { { name = "e", params = {}, result = json.null } },
        handler = function() end }]])
      local k = kit.new({ files = { path } })
      assert.matches("names starting with \"notify.\" are notifications; declare them with notification { ... }",
        k.summary.skipped[1].error, 1, true)
    end)

    it("skip a second file that declares a taken name", function()
      local first, second = tmp.file(notification_file(note("notify.demo.x"))), tmp.file("return " .. note("notify.demo.x"))
      local k = kit.new({ files = { first, second } })
      assert.equal(second, k.summary.skipped[1].file)
      assert.matches("notification 'notify.demo.x' is already defined in " .. first, k.summary.skipped[1].error, 1, true)
    end)

    it("are checked by exosphere-guest-agent check, every mistake of a file reported", function()
      local path = tmp.file(notification_file(note("demo.one"), note("notify.demo.two", "\n  extra = 1,")))
      local report = require("sandbox.host").check_files({ path })[1]
      setup.restore_string_metatable()
      assert.is_false(report.ok)
      assert.equal(2, #report.errors)
      assert.matches("notification 'demo.one': name must start with", report.errors[1], 1, true)
      assert.matches("notification 'notify.demo.two': unknown field \"extra\"", report.errors[2], 1, true)
    end)
  end)

  describe("in the OpenRPC document", function()
    it("are listed under x-notifications with their params schema and examples, and not as methods", function()
      local k = kit.new({ files = { tmp.file(notification_file(note("notify.demo.b"), note("notify.demo.a"))) } })
      local doc = k.host.discover()
      local notes = doc["x-notifications"]
      assert.is_true(json.is_array(notes))
      assert.same({ "notify.demo.a", "notify.demo.b" }, { notes[1].name, notes[2].name })
      local a = notes[1]
      assert.equal("Something happened", a.summary)
      assert.equal("object", a.params.type)
      assert.same({ "n", "tags" }, a.params.required)
      assert.equal("one", a.examples[1].name)
      assert.equal('{"n":1,"tags":[]}', json.encode(a.examples[1].params))
      assert.equal("user", a["x-permission"])
      for _, m in ipairs(doc.methods) do
        assert.is_nil(m.name:find("^notify%."), m.name)
      end
    end)

    it("holds only the host's notify.jobs.* when no method file declares any", function()
      local k = kit.new({})
      local names = {}
      for i, n in ipairs(k.host.discover()["x-notifications"]) do
        names[i] = n.name
      end
      assert.same({ "notify.jobs.done", "notify.jobs.progress" }, names)
    end)
  end)

  describe("subscriptions", function()
    local k

    before_each(function()
      k = kit.new({ files = { tmp.file(notification_file(note("notify.demo.b"), note("notify.demo.a"),
        (note("notify.demo.secret"):gsub('permission = "user"', 'permission = "admin"')))) } })
    end)

    it("are made and undone per session, and answered sorted", function()
      assert.same({ names = { "notify.demo.b" } }, k:call_ok("notifications.subscribe", { names = { "notify.demo.b" } }, session_ctx(7)))
      local r = k:call_ok("notifications.subscribe", { names = { "notify.demo.a", "notify.demo.b" } }, session_ctx(7))
      assert.same({ "notify.demo.a", "notify.demo.b" }, r.names)
      assert.same({ names = { "notify.demo.a" } }, k:call_ok("notifications.subscribe", { names = { "notify.demo.a" } }, session_ctx(8)))
      assert.same({ names = { "notify.demo.a" } }, k:call_ok("notifications.unsubscribe", { names = { "notify.demo.b" } }, session_ctx(7)))
      assert.same({ names = {} }, k:call_ok("notifications.unsubscribe", { names = { "notify.demo.a" } }, session_ctx(7)))
      assert.same({ "notify.demo.a" }, k.host.subscriptions(8))
      local ok, text = k:rpc_text("notifications.unsubscribe", { names = { "notify.demo.a" } }, session_ctx(9))
      assert.is_true(ok)
      assert.equal('{"names":[]}', text)
    end)

    it("refuse unknown names, naming every one, and change nothing", function()
      local ok, err = k:call("notifications.subscribe", { names = { "notify.demo.a", "notify.nope", "notify.gone" } }, session_ctx(7))
      assert.is_false(ok)
      assert.equal(-32602, err.code)
      assert.equal("params.names", err.data.path)
      assert.matches("unknown notifications: notify.nope, notify.gone", err.data.reason, 1, true)
      assert.same({}, k.host.subscriptions(7))
      ok, err = k:call("notifications.unsubscribe", { names = { "notify.nope" } }, session_ctx(7))
      assert.equal(-32602, err.code)
      assert.matches("unknown notification: notify.nope", err.data.reason, 1, true)
    end)

    it("bound the names of one call", function()
      local names = {}
      for i = 1, 65 do
        names[i] = "notify.demo.a"
      end
      local ok, err = k:call("notifications.subscribe", { names = names }, session_ctx(7))
      assert.is_false(ok)
      assert.equal(-32602, err.code)
      assert.matches("at most 64", err.data.reason, 1, true)
      ok, err = k:call("notifications.subscribe", { names = {} }, session_ctx(7))
      assert.equal(-32602, err.code)
    end)

    it("need a WebSocket session: over HTTP they fail with Unsupported", function()
      for _, name in ipairs({ "notifications.subscribe", "notifications.unsubscribe" }) do
        local ok, err = k:call(name, { names = { "notify.demo.a" } }, { transport = "https" })
        assert.is_false(ok)
        assert.equal(-32008, err.code)
        assert.matches("notifications need a WebSocket session", err.message, 1, true)
        assert.equal("no_session", err.data.reason)
      end
    end)

    it("check each notification's permission against the caller", function()
      local ok, err = k:call("notifications.subscribe", { names = { "notify.demo.a", "notify.demo.secret" } }, session_ctx(7, kit.USER))
      assert.is_false(ok)
      assert.equal("not_admin", err.data.reason)
      assert.equal("notify.demo.secret", err.data.method)
      assert.same({}, k.host.subscriptions(7))
      ok, err = k:call("notifications.subscribe", { names = { "notify.demo.a" } }, session_ctx(7, false))
      assert.is_false(ok)
      assert.equal("no credentials", err.data.reason)
      assert.same({ names = { "notify.demo.a" } }, k:call_ok("notifications.subscribe", { names = { "notify.demo.a" } }, session_ctx(7, kit.USER)))
      assert.same({ names = { "notify.demo.a", "notify.demo.secret" } },
        k:call_ok("notifications.subscribe", { names = { "notify.demo.secret" } }, session_ctx(7, kit.ADMIN)))
    end)

    it("list needs a login", function()
      local ok, err = k:call("notifications.list", {}, { auth = false })
      assert.is_false(ok)
      assert.equal("no credentials", err.data.reason)
    end)
  end)

  describe("emitted", function()
    local k

    before_each(function()
      k = kit.new({ files = { tmp.file(notification_file(note("notify.demo.a"), note("notify.demo.b"))) } })
      k:call_ok("notifications.subscribe", { names = { "notify.demo.a" } }, session_ctx(1))
      k:call_ok("notifications.subscribe", { names = { "notify.demo.a", "notify.demo.b" } }, session_ctx(2))
      k:call_ok("notifications.subscribe", { names = { "notify.demo.b" } }, session_ctx(3))
    end)

    it("reach the subscribers of that name only, as JSON-RPC notifications", function()
      assert.equal(2, k.host.emit("notify.demo.a", { n = 5, tags = {} }))
      assert.equal(1, #k.core.sent[1])
      assert.equal(1, #k.core.sent[2])
      assert.is_nil(k.core.sent[3])
      assert.equal('{"jsonrpc":"2.0","method":"notify.demo.a","params":{"n":5,"tags":[]}}', k.core.sent[1][1])
      assert.equal(k.core.sent[1][1], k.core.sent[2][1])
      assert.is_nil(decoded(k.core.sent[1][1]).id)
    end)

    it("reach nobody when nobody subscribed", function()
      k.host.session_closed(1)
      k.host.session_closed(2)
      assert.equal(0, k.host.emit("notify.demo.a", { n = 5, tags = {} }))
      assert.same({}, k.core.sent)
    end)

    it("drop a session that session_send refuses, from every name", function()
      k.core.closed_sessions[2] = true
      assert.equal(1, k.host.emit("notify.demo.a", { n = 1, tags = {} }))
      assert.same({}, k.host.subscriptions(2))
      k.core.closed_sessions[2] = nil
      assert.equal(1, k.host.emit("notify.demo.b", { n = 1, tags = {} }))
      assert.is_nil(k.core.sent[2])
      assert.equal(1, #k.core.sent[3])
    end)

    it("stop when the runtime closes the session", function()
      k.host.session_closed(2)
      k.host.session_closed(42) -- never subscribed: nothing to do
      assert.same({}, k.host.subscriptions(2))
      assert.equal(1, k.host.emit("notify.demo.b", { n = 1, tags = {} }))
      assert.is_nil(k.core.sent[2])
    end)

    it("are not sent when the params do not match the declaration", function()
      assert.equal(0, k.host.emit("notify.demo.a", { n = -1, tags = {} }))
      assert.same({}, k.core.sent)
      assert.equal(1, #k:logged("error", "notify.demo.a not sent: its params do not match the declaration: params.n"))
    end)

    it("of an undeclared name is an error of the caller", function()
      assert.has_error(function() k.host.emit("notify.nope", {}) end, "host.emit: no notification named notify.nope is declared")
    end)
  end)

  describe("notify.mounts.*", function()
    local function mount(mp, device, extra)
      local m = { kind = "other", mountpoint = mp, device = device, kernel_name = json.null, fstype = "ext4",
                  label = json.null, uuid = json.null, options = { "rw" }, read_only = false, size_bytes = 100,
                  used_bytes = 10, free_bytes = 90, unit = json.null, volume_id = json.null, volume_name = json.null }
      for key, v in pairs(extra or {}) do
        m[key] = v
      end
      return m
    end

    local k

    before_each(function()
      k = kit.new({ files = { "methods/mounts.lua", "methods/system_load.lua" } })
    end)

    local function sent(id)
      local out = {}
      for i, text in ipairs(k.core.sent[id] or {}) do
        local v = decoded(text)
        out[i] = { v.method, v.params.mountpoint }
      end
      return out
    end

    it("ask for a baseline once a first session listens, and send nothing for it", function()
      assert.is_false(k.host.mounts_wanted())
      k:call_ok("notifications.subscribe", { names = { "notify.system_load" } }, session_ctx(1))
      assert.equal(0, k.core.snapshots) -- not a mounts name
      assert.is_false(k.host.mounts_wanted())
      k:call_ok("notifications.subscribe", { names = { "notify.mounts.changed" } }, session_ctx(1))
      assert.equal(1, k.core.snapshots)
      assert.is_true(k.host.mounts_wanted())
      assert.equal(0, k.host.mounts_update({ mount("/", "/dev/vda1") }))
      assert.same({}, k.core.sent)
    end)

    it("diff two mount tables by mountpoint: mounted, unmounted, changed", function()
      k:call_ok("notifications.subscribe", { names = { "notify.mounts.mounted", "notify.mounts.unmounted",
        "notify.mounts.changed" } }, session_ctx(1))
      k:call_ok("notifications.subscribe", { names = { "notify.mounts.mounted" } }, session_ctx(2))
      assert.equal(1, k.core.snapshots)
      assert.is_true(k.host.mounts_wanted())
      local before = { mount("/", "/dev/vda1"), mount("/media/volume/a", "/dev/vdb"), mount("/media/volume/b", "/dev/vdc"),
                       mount("/media/volume/c", "/dev/vdd"), mount("/media/volume/d", "/dev/vde") }
      assert.equal(0, k.host.mounts_update(before))
      assert.same({}, k.core.sent)
      local now = {
        mount("/", "/dev/vda1", { used_bytes = 50, free_bytes = 50 }), -- sizes move: no change
        mount("/media/volume/b", "/dev/vdc", { options = { "ro" }, read_only = true }),
        mount("/media/volume/c", "/dev/vdf"),
        mount("/media/volume/d", "/dev/vde", { fstype = "xfs" }),
        mount("/media/volume/e", "/dev/vdg"),
      }
      assert.equal(5, k.host.mounts_update(now))
      assert.same({
        { "notify.mounts.unmounted", "/media/volume/a" },
        { "notify.mounts.changed", "/media/volume/b" },
        { "notify.mounts.changed", "/media/volume/c" },
        { "notify.mounts.changed", "/media/volume/d" },
        { "notify.mounts.mounted", "/media/volume/e" },
      }, (function()
        -- In emission order: unmounted, then the new list's order.
        return sent(1)
      end)())
      assert.same({ { "notify.mounts.mounted", "/media/volume/e" } }, sent(2))
      -- The unmounted mount is sent as last seen; the options stay an array on the wire.
      local gone = decoded(k.core.sent[1][1]).params
      assert.equal("/dev/vdb", gone.device)
      assert.matches('"options":["rw"]', k.core.sent[1][1], 1, true)
      assert.matches('"options":["ro"]', k.core.sent[1][2], 1, true)
    end)

    it("keep the previous list only while a session listens", function()
      k:call_ok("notifications.subscribe", { names = { "notify.mounts.mounted" } }, session_ctx(1))
      k.host.mounts_update({ mount("/", "/dev/vda1") })
      k.host.session_closed(1)
      assert.is_false(k.host.mounts_wanted())
      assert.equal(0, k.host.mounts_update({ mount("/", "/dev/vda1"), mount("/x", "/dev/vdb") }))
      -- A new subscriber starts from a new baseline, not from the list before it came.
      k:call_ok("notifications.subscribe", { names = { "notify.mounts.mounted" } }, session_ctx(2))
      assert.equal(2, k.core.snapshots)
      assert.equal(0, k.host.mounts_update({ mount("/", "/dev/vda1"), mount("/x", "/dev/vdb") }))
      assert.equal(1, k.host.mounts_update({ mount("/", "/dev/vda1"), mount("/x", "/dev/vdb"), mount("/y", "/dev/vdc") }))
      assert.same({ { "notify.mounts.mounted", "/y" } }, sent(2))
    end)

    it("ask for no second baseline while one is kept", function()
      k:call_ok("notifications.subscribe", { names = { "notify.mounts.mounted" } }, session_ctx(1))
      k.host.mounts_update({ mount("/", "/dev/vda1") })
      k:call_ok("notifications.subscribe", { names = { "notify.mounts.changed" } }, session_ctx(2))
      assert.equal(1, k.core.snapshots)
    end)
  end)
end)
