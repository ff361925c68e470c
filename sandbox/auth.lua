-- The authenticate.* methods. The host declares them (names under "authenticate." are
-- reserved, like "rpc."), and they are the only code that reaches the exo.auth bindings: a
-- login, a token or a logout changes who the rest of the request or session runs as.
--
-- Refusals use the documented codes: NotAuthenticated (-32001) for credentials that do not
-- prove who the caller is, NotPermitted (-32002) for a known caller who may not do this,
-- LimitExceeded (-32007) while a user name is backing off after failed logins, Busy (-32005)
-- when too many logins are being checked, Unavailable (-32009) when no monitor can check.

local errors = require("sandbox.errors")
local notify = require("sandbox.notify")
local method = require("sandbox.method")
local schema = require("sandbox.schema")

local T = schema.T
-- On a WebSocket session a login, token or logout changes who the session is from then on:
-- the notifications it subscribed to were allowed for the identity it had, so they are dropped.
local function identity_changed(ctx)
  if ctx and ctx.session then
    notify.identity_changed(ctx.session)
  end
end

local M = {}

local Login = T.object({
  username = T.string():describe("The account name, as the passwd database spells it"),
  token = T.string():describe("A bearer token: send it as `Authorization: Bearer <token>` or "
    .. "with authenticate.token"),
  expires = T.integer({ min = 0 }):describe("When the token expires, in Unix seconds"),
})

local Me = T.object({
  username = T.string():describe("The account name"),
  uid = T.integer({ min = 0 }):describe("Its user id"),
  groups = T.array(T.string()):describe("The groups it was in when it logged in"),
  admin = T.boolean():describe("Whether it may call admin methods"),
  via = T.enum({ "token", "unix" }):describe("How it is known: a token (from a login), or the "
    .. "Unix socket's peer credentials"),
  expires = T.integer({ min = 0 }):optional():describe("When its token expires, in Unix seconds"),
})

local SAMPLE_TOKEN = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjE3OTY2MjA0MDAsImdpZCI6MTAwMCwiZ3JwIjpbImV4b3VzZXIiLCJzdWRvIl0sImlhdCI6MTc5NjU3NzIwMCwianRpIjoiMGYxZTJkM2M0YjVhNjk3ODg3OTZhNWI0YzNkMmUxZjAiLCJzdWIiOiJleG91c2VyIiwidWlkIjoxMDAwfQ.c2lnbmF0dXJlLW9mLXRoZS1leGFtcGxlLXRva2VuLi4u"

local REASONS = {
  bad_credentials = "Invalid user name or password",
  account_expired = "The account has expired",
  password_expired = "The password has expired; change it over SSH or the console first",
  account_denied = "The account may not log in now",
}

local function login_error(status, retry, why)
  if REASONS[status] then
    return errors.NotAuthenticated(REASONS[status], { reason = status })
  elseif status == "backoff" then
    return errors.LimitExceeded("Too many failed logins for this user name; retry later",
      { reason = "backoff", retry_after_ms = retry })
  elseif status == "busy" then
    return errors.Busy("Too many logins are being checked; retry shortly",
      { reason = "busy", retry_after_ms = retry })
  elseif status == "unavailable" then
    return errors.Unavailable("Logins are unavailable: " .. tostring(why or "no monitor"),
      { reason = "unavailable" })
  end
  return errors.Unavailable("The login could not be checked; see the agent's log", { reason = "error" })
end

-- The declarations, bound to the exo.auth module `auth`.
function M.declarations(auth)
  local decls = {}
  decls[#decls + 1] = method.check({
    name = "authenticate.login",
    summary = "Log in with a user name and password",
    description = "Checks the password through PAM (service exosphere-guest-agent) and returns a "
      .. "signed token. In a batch, the entries after a successful login run as that user; on a "
      .. "WebSocket, the rest of the session does. Failed logins for a user name slow down its "
      .. "next attempts (LimitExceeded with retry_after_ms).",
    since = "2026-12-01",
    stability = "stable",
    permission = "public",
    params = T.object({
      username = T.string({ max_len = 256 }):describe("The account name"),
      password = T.string({ max_len = 512 }):describe("Its password; passphrases with spaces "
        .. "and colons are fine"),
    }),
    result = Login,
    errors = { errors.NotAuthenticated, errors.LimitExceeded, errors.Busy, errors.Unavailable },
    examples = {
      {
        name = "exouser logs in",
        params = { username = "exouser", password = "ABLE BAKE CAT DOG EAR FIG GUM HAT ICE JAR KEY" },
        result = { username = "exouser", token = SAMPLE_TOKEN, expires = 1796620400 },
      },
    },
    handler = function(ctx, p)
      local result, status, retry, why = auth.login(p.username, p.password)
      if not result then
        error(login_error(status, retry, why))
      end
      identity_changed(ctx)
      return result
    end,
  }, true)
  decls[#decls + 1] = method.check({
    name = "authenticate.token",
    summary = "Authenticate with a token from an earlier login",
    description = "For clients that cannot send an Authorization header (a browser's WebSocket): "
      .. "the entries after it in a batch, or the rest of a WebSocket session, run as the "
      .. "token's user.",
    since = "2026-12-01",
    stability = "stable",
    permission = "public",
    params = T.object({ token = T.string({ max_len = 4096 }):describe("The token") }),
    result = T.object({
      username = T.string():describe("The token's user"),
      expires = T.integer({ min = 0 }):describe("When the token expires, in Unix seconds"),
    }),
    errors = { errors.NotAuthenticated },
    examples = {
      { name = "a valid token", params = { token = SAMPLE_TOKEN },
        result = { username = "exouser", expires = 1796620400 } },
    },
    handler = function(ctx, p)
      local result, reason = auth.use_token(p.token)
      if not result then
        error(errors.NotAuthenticated("The token is not valid: " .. reason, { reason = reason }))
      end
      identity_changed(ctx)
      return result
    end,
  }, true)
  decls[#decls + 1] = method.check({
    name = "authenticate.me",
    summary = "Who the caller is",
    since = "2026-12-01",
    stability = "stable",
    permission = "user",
    params = T.object({}),
    result = Me,
    examples = {
      { name = "a logged-in administrator", params = {},
        result = { username = "exouser", uid = 1000, groups = { "exouser", "sudo" }, admin = true,
                   via = "token", expires = 1796620400 } },
    },
    handler = function(ctx)
      local a = ctx.auth
      return { username = a.user, uid = a.uid, groups = a.groups, admin = a.admin, via = a.via,
               expires = a.expires }
    end,
  }, true)
  decls[#decls + 1] = method.check({
    name = "authenticate.logout",
    summary = "Revoke the token the caller authenticated with",
    description = "The token is refused from then on, also after a restart, until it would have "
      .. "expired. The entries after it in a batch run unauthenticated.",
    since = "2026-12-01",
    stability = "stable",
    permission = "user",
    params = T.object({}),
    result = T.object({ revoked = T.boolean():describe("Always true") }),
    errors = { errors.Unsupported, errors.Unavailable },
    examples = { { name = "log out", params = {}, result = { revoked = true } } },
    handler = function(ctx)
      if ctx.auth.via ~= "token" then
        error(errors.Unsupported("Nothing to log out: this caller is known by its Unix socket peer "
          .. "credentials, not a token", { reason = "no_token" }))
      end
      local ok, reason = auth.logout()
      if not ok then
        error(errors.Unavailable("The token could not be revoked: " .. tostring(reason),
          { reason = tostring(reason) }))
      end
      identity_changed(ctx)
      return { revoked = true }
    end,
  }, true)
  return decls
end

-- The permission check, before the handler runs. `level` is the method's level after the
-- configuration's overrides; ctx.auth is the caller's identity (nil when anonymous) and
-- ctx.auth_error why a presented credential was refused. Returns nil or the error to answer.
function M.refusal(name, level, ctx)
  if level == "public" then
    return nil
  end
  local a = ctx.auth
  if not a then
    local reason = ctx.auth_error or "no credentials"
    return errors.NotAuthenticated(("%s needs a login (%s)"):format(name, reason),
      { reason = reason, method = name, permission = level })
  elseif not a.allowed then
    return errors.NotPermitted(("user %s may not use the agent"):format(a.user),
      { reason = "user_not_allowed", method = name, permission = level })
  elseif level == "admin" and not a.admin then
    return errors.NotPermitted(("%s is for administrators; %s is not one"):format(name, a.user),
      { reason = "not_admin", method = name, permission = level })
  end
  return nil
end

return M
