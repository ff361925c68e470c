/* Identities and the [auth] policy; see auth.h. */
#include "auth.h"
#include "pam.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static struct {
    const unsigned char *key;
    exo_revoked_t *revoked;
} auth_;

int exo_account_name_ok(const char *s, size_t len)
{
    if (len == 0 || len > 32 || s[0] == '-') return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return 0;
    }
    return 1;
}

void exo_log_quote(char *out, size_t cap, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t j = 0;
    if (cap < 3) {
        if (cap) out[0] = '\0';
        return;
    }
    out[j++] = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        int plain = c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
        if (j + (plain ? 1 : 4) + 2 > cap) break;
        if (plain) {
            out[j++] = (char)c;
        } else {
            out[j++] = '\\';
            out[j++] = 'x';
            out[j++] = hex[c >> 4];
            out[j++] = hex[c & 15];
        }
    }
    out[j++] = '"';
    out[j] = '\0';
}

static int in_list(const exo_strlist_t *l, const char *s, size_t len)
{
    for (size_t i = 0; i < l->n; i++)
        if (strlen(l->items[i]) == len && memcmp(l->items[i], s, len) == 0) return 1;
    return 0;
}

/* 1 if one of the comma-separated groups is in l. */
static int any_group_in(const exo_strlist_t *l, const char *groups)
{
    const char *p = groups;
    while (p && *p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len && in_list(l, p, len)) return 1;
        p = comma ? comma + 1 : NULL;
    }
    return 0;
}

int exo_policy_allowed(const exo_config_t *cfg, const char *user, uint32_t uid, const char *groups)
{
    if (uid == 0 && !cfg->allow_root_login) return 0;
    if (cfg->allow_users.n == 0 && cfg->allow_groups.n == 0) return 1;
    return in_list(&cfg->allow_users, user, strlen(user)) ||
           any_group_in(&cfg->allow_groups, groups);
}

int exo_policy_admin(const exo_config_t *cfg, uint32_t uid, const char *groups)
{
    return uid == 0 || any_group_in(&cfg->admin_groups, groups);
}

void exo_auth_init(const unsigned char *key, exo_revoked_t *revoked)
{
    auth_.key = key;
    auth_.revoked = revoked;
}

int exo_auth_has_key(void)
{
    return auth_.key != NULL;
}

const unsigned char *exo_auth_key(void)
{
    return auth_.key;
}

exo_revoked_t *exo_auth_revoked(void)
{
    return auth_.revoked;
}

void exo_identity_clear(exo_identity_t *id)
{
    free(id->token);
    memset(id, 0, sizeof(*id));
}

int exo_identity_copy(exo_identity_t *dst, const exo_identity_t *src)
{
    if (dst == src) return 0;
    exo_identity_clear(dst);
    *dst = *src;
    dst->token = NULL;
    if (src->token && (dst->token = strdup(src->token)) == NULL) {
        memset(dst, 0, sizeof(*dst));
        return -ENOMEM;
    }
    return 0;
}

void exo_identity_from_token(exo_identity_t *id, const char *token, size_t len)
{
    exo_identity_clear(id);
    if (auth_.key == NULL) {
        id->error = "no token is valid: the agent runs without its root monitor";
        return;
    }
    exo_token_claims_t c;
    exo_token_status_t st =
        exo_token_verify(auth_.key, token, len, (int64_t)time(NULL), auth_.revoked, &c);
    if (st != EXO_TOKEN_VALID) {
        id->error = exo_token_status_reason(st);
        return;
    }
    id->token = strndup(token, len);
    if (id->token == NULL) {
        id->error = "out of memory";
        return;
    }
    id->set = 1;
    snprintf(id->via, sizeof(id->via), "token");
    memcpy(id->user, c.user, sizeof(id->user));
    id->uid = c.uid;
    id->gid = c.gid;
    memcpy(id->groups, c.groups, sizeof(id->groups));
    id->expires = c.exp;
}

int exo_identity_from_uid(exo_identity_t *id, uid_t uid)
{
    exo_identity_clear(id);
    struct passwd pw, *res = NULL;
    char buf[4096];
    if (getpwuid_r(uid, &pw, buf, sizeof(buf), &res) != 0 || res == NULL ||
        !exo_account_name_ok(pw.pw_name, strlen(pw.pw_name))) {
        id->error = "the Unix socket peer's uid has no usable passwd entry";
        return -ENOENT;
    }
    id->set = 1;
    snprintf(id->via, sizeof(id->via), "unix");
    snprintf(id->user, sizeof(id->user), "%s", pw.pw_name);
    id->uid = (uint32_t)uid;
    id->gid = (uint32_t)pw.pw_gid;
    int cut;
    exo_user_groups(pw.pw_name, pw.pw_gid, id->groups, &cut);
    return 0;
}

void exo_identity_internal(exo_identity_t *id)
{
    exo_identity_clear(id);
    id->set = 1;
    memcpy(id->via, "agent", 6);
    memcpy(id->user, "(agent)", 8);
    id->uid = (uint32_t)getuid();
    id->gid = (uint32_t)getgid();
}

static int is_internal(const exo_identity_t *id)
{
    return id->set && strcmp(id->via, "agent") == 0;
}

int exo_identity_admin(const exo_config_t *cfg, const exo_identity_t *id)
{
    if (is_internal(id)) return 1;
    return id->set && exo_policy_admin(cfg, id->uid, id->groups);
}

int exo_identity_allowed(const exo_config_t *cfg, const exo_identity_t *id)
{
    if (!id->set) return 0;
    if (is_internal(id)) return 1;
    if (id->uid == 0 && strcmp(id->via, "unix") == 0) return 1;
    return exo_policy_allowed(cfg, id->user, id->uid, id->groups);
}
