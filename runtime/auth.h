/* Who is calling: the identity a request carries (from a token, a login earlier in the same
 * batch, or the Unix socket peer), the policy that decides whether that identity may use the
 * agent and whether it is an administrator, and the worker's token state (the signing key and
 * the revocation set it received from the monitor). DESIGN.md "Authentication and
 * authorisation"; docs/security.md. */
#ifndef EXO_AUTH_H
#define EXO_AUTH_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "token.h"

typedef struct exo_identity_s {
    int set;     /* 1 when the caller is authenticated */
    char via[8]; /* "token" (a bearer token or a login) or "unix" (the socket's peer) */
    char user[33];
    uint32_t uid, gid;
    char groups[2048]; /* comma-separated group names */
    int64_t expires;   /* unix seconds; 0 for a Unix socket peer */
    char *token;       /* the token text (owned), for logout; NULL for a Unix socket peer */
    const char *error; /* when a credential was presented and refused: why (static text) */
} exo_identity_t;

/* 1 if s (len bytes) is a plain account name: 1 to 32 of [A-Za-z0-9_.-], not starting with
 * '-'. User and group names outside this set are refused everywhere. */
int exo_account_name_ok(const char *s, size_t len);
/* Writes s as a double-quoted log value: printable ASCII as is except '"' and '\\', everything
 * else as \xNN, cut at cap. For names a client sent, which may hold anything. */
void exo_log_quote(char *out, size_t cap, const char *s, size_t len);

/* The policy ([auth] in the configuration). `groups` is comma-separated. A user may use the
 * agent when neither allow_users nor allow_groups is set, or when listed in allow_users or a
 * member of a group in allow_groups; uid 0 only with allow_root_login. An administrator is a
 * member of an admin group, or uid 0. */
int exo_policy_allowed(const exo_config_t *cfg, const char *user, uint32_t uid, const char *groups);
int exo_policy_admin(const exo_config_t *cfg, uint32_t uid, const char *groups);

/* Worker side: the signing key (NULL when there is no monitor: then no token is valid) and the
 * revocation set, both owned by the caller and kept for the life of the process. */
void exo_auth_init(const unsigned char *key, exo_revoked_t *revoked);
int exo_auth_has_key(void);
const unsigned char *exo_auth_key(void);
exo_revoked_t *exo_auth_revoked(void);

void exo_identity_clear(exo_identity_t *id);
/* Copies src into dst (dst's previous contents are cleared). Returns 0 or -ENOMEM. */
int exo_identity_copy(exo_identity_t *dst, const exo_identity_t *src);
/* Verifies a bearer token and makes id that identity; when the token is refused, id is left
 * unauthenticated with id->error saying why. */
void exo_identity_from_token(exo_identity_t *id, const char *token, size_t len);
/* Makes id the identity of a local user by uid (the Unix socket peer). Returns 0, or -ENOENT
 * when the uid has no passwd entry (id->error says so). */
int exo_identity_from_uid(exo_identity_t *id, uid_t uid);
/* Makes id the agent's own identity, "(agent)" via "agent", for the calls the worker makes
 * itself (the load sampler runs system_load.current through the host): allowed and an
 * administrator whatever the [auth] policy says. Only C code makes it; no credential a client
 * sends can. */
void exo_identity_internal(exo_identity_t *id);
/* The administrator and allowed flags of an authenticated identity, under cfg. A Unix socket
 * peer with uid 0 and the agent's own identity are always both. */
int exo_identity_admin(const exo_config_t *cfg, const exo_identity_t *id);
int exo_identity_allowed(const exo_config_t *cfg, const exo_identity_t *id);

/* Registers the host-only module "exo.auth" (l_auth.c): login, use_token, logout. */
void exo_auth_preload(lua_State *L);

#endif
