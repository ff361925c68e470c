/* Password checks through PAM (pam.h).
 *
 * Why the monitor, as root: pam_unix, the module behind nearly every PAM stack, can verify
 * another user's password only when its caller is root. An unprivileged caller cannot read
 * /etc/shadow, so pam_unix falls back to its setuid helper unix_chkpwd, and that helper checks
 * only the password of the user who runs it: asked about anyone else, it drops its privileges
 * first and fails. pam_faillock, for one, keeps its tally where only root may write. So the
 * unprivileged worker cannot check logins; it asks the root monitor, and the monitor forks a
 * short-lived child per login that calls exo_pam_check and hands the result back, so that a
 * slow module (pam_unix sleeps after a failure) or a crashing one never blocks the monitor.
 *
 * What is run: pam_start, pam_authenticate (with PAM_DISALLOW_NULL_AUTHTOK), pam_acct_mgmt,
 * pam_end. No pam_setcred and no session: the agent starts nothing as the user, it issues a
 * token naming them. pam_chauthtok is never run either: an expired password is reported as
 * EXO_PAM_PASSWORD_EXPIRED and changed some other way.
 *
 * How PAM's answers map (the password is proven only once pam_authenticate succeeds, so every
 * refusal before that is EXO_PAM_BAD_CREDENTIALS: the outcome says nothing about a user name to
 * someone who does not know the password):
 *   pam_start, pam_set_item      anything but PAM_SUCCESS           -> EXO_PAM_ERROR
 *   pam_authenticate             PAM_AUTH_ERR, PAM_USER_UNKNOWN,
 *                                PAM_CRED_INSUFFICIENT, PAM_MAXTRIES,
 *                                PAM_PERM_DENIED (also what PAM says
 *                                when no module is configured),
 *                                PAM_ACCT_EXPIRED, PAM_CRED_EXPIRED,
 *                                PAM_NEW_AUTHTOK_REQD,
 *                                PAM_AUTHTOK_EXPIRED                 -> EXO_PAM_BAD_CREDENTIALS
 *                                anything else, PAM_AUTHINFO_UNAVAIL
 *                                included (the backend, say sssd or
 *                                LDAP, cannot be reached: not the
 *                                user's fault, and the operator must
 *                                see it as a failure)                -> EXO_PAM_ERROR
 *   pam_acct_mgmt                PAM_ACCT_EXPIRED                    -> EXO_PAM_ACCOUNT_EXPIRED
 *                                PAM_NEW_AUTHTOK_REQD,
 *                                PAM_AUTHTOK_EXPIRED                 -> EXO_PAM_PASSWORD_EXPIRED
 *                                PAM_PERM_DENIED, PAM_AUTH_ERR (what
 *                                pam_deny says), PAM_USER_UNKNOWN,
 *                                PAM_MAXTRIES, PAM_CRED_INSUFFICIENT,
 *                                PAM_CRED_EXPIRED                    -> EXO_PAM_ACCOUNT_DENIED
 *                                anything else                       -> EXO_PAM_ERROR
 *   then getpwnam_r of PAM_USER  no entry, or a name that is not a
 *                                plain account name                  -> EXO_PAM_ERROR
 * What a stack returns is up to it: Debian's common-account, for one, turns pam_unix's
 * PAM_ACCT_EXPIRED into pam_deny's PAM_AUTH_ERR, so there an expired account is
 * EXO_PAM_ACCOUNT_DENIED (a password that must be changed still shows as such).
 *
 * The password: the conversation hands PAM a strdup of it per echo-off prompt, which PAM (the
 * module that asked) frees; the copies this file frees itself, when a conversation fails half
 * way, are wiped first. Nothing else copies it, and it never reaches detail or a log. */
#include "pam.h"

#include <errno.h>
#include <grp.h>
#include <openssl/crypto.h>
#include <pwd.h>
#include <security/pam_appl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"

#define NAME_MAX_LEN 32
#define NSS_BUF_MAX (16u << 20) /* largest getpwnam_r/getgrgid_r buffer tried (huge groups) */
#define GROUPS_COUNT_MAX 65536  /* Linux's NGROUPS_MAX */

/* A plain account name (exo_account_name_ok, auth.h): the rule tokens use, so that every name
 * here can go into a token. */
static int name_ok(const char *s)
{
    return exo_account_name_ok(s, strnlen(s, NAME_MAX_LEN + 1));
}

const char *exo_pam_outcome_name(exo_pam_outcome_t o)
{
    switch (o) {
    case EXO_PAM_OK:
        return "ok";
    case EXO_PAM_BAD_CREDENTIALS:
        return "bad_credentials";
    case EXO_PAM_ACCOUNT_EXPIRED:
        return "account_expired";
    case EXO_PAM_PASSWORD_EXPIRED:
        return "password_expired";
    case EXO_PAM_ACCOUNT_DENIED:
        return "account_denied";
    case EXO_PAM_ERROR:
        return "error";
    }
    return "error";
}

/* The symbolic name of a PAM return code, for the log. */
static const char *code_name(int rc)
{
    switch (rc) {
    case PAM_SUCCESS:
        return "PAM_SUCCESS";
    case PAM_OPEN_ERR:
        return "PAM_OPEN_ERR";
    case PAM_SYMBOL_ERR:
        return "PAM_SYMBOL_ERR";
    case PAM_SERVICE_ERR:
        return "PAM_SERVICE_ERR";
    case PAM_SYSTEM_ERR:
        return "PAM_SYSTEM_ERR";
    case PAM_BUF_ERR:
        return "PAM_BUF_ERR";
    case PAM_PERM_DENIED:
        return "PAM_PERM_DENIED";
    case PAM_AUTH_ERR:
        return "PAM_AUTH_ERR";
    case PAM_CRED_INSUFFICIENT:
        return "PAM_CRED_INSUFFICIENT";
    case PAM_AUTHINFO_UNAVAIL:
        return "PAM_AUTHINFO_UNAVAIL";
    case PAM_USER_UNKNOWN:
        return "PAM_USER_UNKNOWN";
    case PAM_MAXTRIES:
        return "PAM_MAXTRIES";
    case PAM_NEW_AUTHTOK_REQD:
        return "PAM_NEW_AUTHTOK_REQD";
    case PAM_ACCT_EXPIRED:
        return "PAM_ACCT_EXPIRED";
    case PAM_CRED_UNAVAIL:
        return "PAM_CRED_UNAVAIL";
    case PAM_CRED_EXPIRED:
        return "PAM_CRED_EXPIRED";
    case PAM_CRED_ERR:
        return "PAM_CRED_ERR";
    case PAM_CONV_ERR:
        return "PAM_CONV_ERR";
    case PAM_AUTHTOK_ERR:
        return "PAM_AUTHTOK_ERR";
    case PAM_AUTHTOK_EXPIRED:
        return "PAM_AUTHTOK_EXPIRED";
    case PAM_IGNORE:
        return "PAM_IGNORE";
    case PAM_ABORT:
        return "PAM_ABORT";
    case PAM_MODULE_UNKNOWN:
        return "PAM_MODULE_UNKNOWN";
    case PAM_BAD_ITEM:
        return "PAM_BAD_ITEM";
    default:
        return "PAM code";
    }
}

static exo_pam_outcome_t map_authenticate(int rc)
{
    switch (rc) {
    case PAM_SUCCESS:
        return EXO_PAM_OK;
    case PAM_AUTH_ERR:
    case PAM_USER_UNKNOWN:
    case PAM_CRED_INSUFFICIENT:
    case PAM_MAXTRIES:
    case PAM_PERM_DENIED:
    case PAM_ACCT_EXPIRED:
    case PAM_CRED_EXPIRED:
    case PAM_NEW_AUTHTOK_REQD:
    case PAM_AUTHTOK_EXPIRED:
        return EXO_PAM_BAD_CREDENTIALS;
    default:
        return EXO_PAM_ERROR;
    }
}

static exo_pam_outcome_t map_acct_mgmt(int rc)
{
    switch (rc) {
    case PAM_SUCCESS:
        return EXO_PAM_OK;
    case PAM_ACCT_EXPIRED:
        return EXO_PAM_ACCOUNT_EXPIRED;
    case PAM_NEW_AUTHTOK_REQD:
    case PAM_AUTHTOK_EXPIRED:
        return EXO_PAM_PASSWORD_EXPIRED;
    case PAM_PERM_DENIED:
    case PAM_AUTH_ERR:
    case PAM_USER_UNKNOWN:
    case PAM_MAXTRIES:
    case PAM_CRED_INSUFFICIENT:
    case PAM_CRED_EXPIRED:
        return EXO_PAM_ACCOUNT_DENIED;
    default:
        return EXO_PAM_ERROR;
    }
}

typedef struct conv_data_s {
    const char *user;
    const char *password;
} conv_data_t;

static void drop_responses(struct pam_response *r, int n)
{
    for (int i = 0; i < n; i++) {
        if (r[i].resp == NULL) continue;
        OPENSSL_cleanse(r[i].resp, strlen(r[i].resp));
        free(r[i].resp);
    }
    free(r);
}

/* The conversation: every echo-off prompt is answered with the password, every echo-on prompt
 * with the user name; error and info messages are ignored (their response is NULL). Anything
 * else (binary or radio prompts) fails the conversation, as does a count out of PAM's range. On
 * success *resp is a calloc'd array of num_msg responses that the caller (PAM) frees. */
static int conv(int num_msg, const struct pam_message **msg, struct pam_response **resp,
                void *appdata)
{
    const conv_data_t *d = appdata;
    if (resp == NULL) return PAM_CONV_ERR;
    *resp = NULL;
    if (num_msg <= 0 || num_msg > PAM_MAX_NUM_MSG || msg == NULL || d == NULL) return PAM_CONV_ERR;
    struct pam_response *r = calloc((size_t)num_msg, sizeof(*r));
    if (r == NULL) return PAM_BUF_ERR;
    for (int i = 0; i < num_msg; i++) {
        const char *answer;
        if (msg[i] == NULL) {
            drop_responses(r, num_msg);
            return PAM_CONV_ERR;
        }
        switch (msg[i]->msg_style) {
        case PAM_PROMPT_ECHO_OFF:
            answer = d->password;
            break;
        case PAM_PROMPT_ECHO_ON:
            answer = d->user;
            break;
        case PAM_ERROR_MSG:
        case PAM_TEXT_INFO:
            continue;
        default:
            drop_responses(r, num_msg);
            return PAM_CONV_ERR;
        }
        r[i].resp = strdup(answer);
        if (r[i].resp == NULL) {
            drop_responses(r, num_msg);
            return PAM_BUF_ERR;
        }
    }
    *resp = r;
    return PAM_SUCCESS;
}

/* Sets out->detail to "<step>: <pam_strerror> (<code name>)"; call before pam_end. */
static void pam_detail(exo_pam_result_t *out, pam_handle_t *pamh, const char *step, int rc)
{
    const char *s = pam_strerror(pamh, rc);
    snprintf(out->detail, sizeof(out->detail), "%s: %s (%s %d)", step, s ? s : "?", code_name(rc),
             rc);
}

static exo_pam_outcome_t finish(exo_pam_result_t *out, exo_pam_outcome_t o)
{
    out->outcome = o;
    if (o != EXO_PAM_OK) {
        out->uid = (uid_t)-1;
        out->gid = (gid_t)-1;
        out->user[0] = '\0';
        out->groups[0] = '\0';
    }
    return o;
}

/* Grows *buf (of *cap bytes) for an NSS call that said ERANGE. Returns 0 or -1. */
static int grow(char **buf, size_t *cap)
{
    if (*cap >= NSS_BUF_MAX) return -1;
    size_t n = *cap * 2;
    char *b = realloc(*buf, n);
    if (b == NULL) return -1;
    *buf = b;
    *cap = n;
    return 0;
}

/* 1 if list (comma-separated, len bytes) holds name. */
static int list_has(const char *list, size_t len, const char *name, size_t nlen)
{
    for (size_t p = 0; p < len;) {
        const char *comma = memchr(list + p, ',', len - p);
        size_t e = comma ? (size_t)(comma - list) : len;
        if (e - p == nlen && memcmp(list + p, name, nlen) == 0) return 1;
        p = e + 1;
    }
    return 0;
}

/* Appends the name of group gid to groups (EXO_PAM_GROUPS_MAX bytes; *pos used) unless it has
 * no name, is not a plain account name, or is there already. Returns 0, 1 when it did not fit,
 * or -1 when the group database failed. */
static int add_group(char *groups, size_t *pos, gid_t gid, char **buf, size_t *cap)
{
    struct group gr, *res = NULL;
    int e;
    while ((e = getgrgid_r(gid, &gr, *buf, *cap, &res)) == ERANGE)
        if (grow(buf, cap) != 0) return -1;
    if (e != 0 && e != ENOENT && e != ESRCH) return -1;
    if (res == NULL || !name_ok(res->gr_name)) return 0;
    size_t len = strlen(res->gr_name);
    if (list_has(groups, *pos, res->gr_name, len)) return 0;
    if (*pos + (*pos ? 1 : 0) + len + 1 > EXO_PAM_GROUPS_MAX) return 1;
    if (*pos) groups[(*pos)++] = ',';
    memcpy(groups + *pos, res->gr_name, len);
    *pos += len;
    groups[*pos] = '\0';
    return 0;
}

int exo_user_groups(const char *user, gid_t gid, char groups[EXO_PAM_GROUPS_MAX], int *cut)
{
    size_t cap = 16384, pos = 0;
    char *buf = malloc(cap);
    gid_t *gids = NULL;
    int n = 64, rc = -ENOMEM;
    groups[0] = '\0';
    *cut = 0;
    if (buf == NULL) return -ENOMEM;
    /* getgrouplist says how many groups there are when the array is too small. */
    for (int tries = 0;; tries++) {
        gid_t *g = realloc(gids, (size_t)n * sizeof(*g));
        if (g == NULL) goto done;
        gids = g;
        int want = n;
        if (getgrouplist(user, gid, gids, &want) >= 0) {
            n = want;
            break;
        }
        if (tries >= 8 || n >= GROUPS_COUNT_MAX) {
            rc = -EIO;
            goto done;
        }
        n = want > n ? want : n * 2;
        if (n > GROUPS_COUNT_MAX) n = GROUPS_COUNT_MAX;
    }
    /* The primary group first, then the others in getgrouplist's order. */
    int r = add_group(groups, &pos, gid, &buf, &cap);
    for (int i = 0; r == 0 && i < n; i++)
        if (gids[i] != gid) r = add_group(groups, &pos, gids[i], &buf, &cap);
    if (r < 0) {
        rc = -EIO;
        goto done;
    }
    *cut = r == 1;
    rc = n;
done:
    free(gids);
    free(buf);
    return rc;
}

/* Fills out's user, uid, gid and groups for the account `name`. */
static exo_pam_outcome_t resolve(const char *name, exo_pam_result_t *out)
{
    long hint = sysconf(_SC_GETPW_R_SIZE_MAX);
    size_t cap = hint > 1024 && hint < 65536 ? (size_t)hint : 16384;
    char *buf = malloc(cap);
    exo_pam_outcome_t o = EXO_PAM_ERROR;
    if (buf == NULL) {
        snprintf(out->detail, sizeof(out->detail), "resolving the user: out of memory");
        return EXO_PAM_ERROR;
    }
    struct passwd pw, *pres = NULL;
    int e;
    while ((e = getpwnam_r(name, &pw, buf, cap, &pres)) == ERANGE)
        if (grow(&buf, &cap) != 0) break;
    if (pres == NULL) {
        snprintf(out->detail, sizeof(out->detail),
                 "getpwnam_r: no passwd entry for the user PAM authenticated%s%s",
                 e != 0 ? ": " : "", e != 0 ? strerror(e) : "");
        goto done;
    }
    if (!name_ok(pw.pw_name)) {
        snprintf(out->detail, sizeof(out->detail),
                 "the passwd entry's name is not a plain account name");
        goto done;
    }
    snprintf(out->user, sizeof(out->user), "%s", pw.pw_name);
    out->uid = pw.pw_uid;
    out->gid = pw.pw_gid;

    int cut, n = exo_user_groups(out->user, out->gid, out->groups, &cut);
    if (n < 0) {
        snprintf(out->detail, sizeof(out->detail), "listing the user's groups failed: %s",
                 strerror(-n));
        goto done;
    }
    if (cut)
        snprintf(out->detail, sizeof(out->detail),
                 "ok, but the group list was cut to %zu bytes: some of the user's %d groups "
                 "are left out",
                 strlen(out->groups), n);
    o = EXO_PAM_OK;
done:
    free(buf);
    return o;
}

exo_pam_outcome_t exo_pam_check(const char *service, const char *user, const char *password,
                                const char *rhost, exo_pam_result_t *out)
{
    if (out == NULL) return EXO_PAM_ERROR;
    memset(out, 0, sizeof(*out));
    if (service == NULL || !name_ok(service)) {
        snprintf(out->detail, sizeof(out->detail), "no usable PAM service name");
        return finish(out, EXO_PAM_ERROR);
    }
    if (user == NULL || !name_ok(user)) {
        snprintf(out->detail, sizeof(out->detail), "the user name is not a plain account name");
        return finish(out, EXO_PAM_BAD_CREDENTIALS);
    }
    if (password == NULL || password[0] == '\0') {
        snprintf(out->detail, sizeof(out->detail), "empty password");
        return finish(out, EXO_PAM_BAD_CREDENTIALS);
    }
    /* PAM's limit on a response: some modules read no more (pam_unix's helper), and would
     * check a cut password. No passphrase is that long. */
    if (strnlen(password, PAM_MAX_RESP_SIZE + 1) > PAM_MAX_RESP_SIZE) {
        snprintf(out->detail, sizeof(out->detail), "password longer than %d bytes",
                 PAM_MAX_RESP_SIZE);
        return finish(out, EXO_PAM_BAD_CREDENTIALS);
    }

    conv_data_t data = {user, password};
    struct pam_conv pc = {conv, &data};
    pam_handle_t *pamh = NULL;
    int rc = pam_start(service, user, &pc, &pamh);
    if (rc != PAM_SUCCESS || pamh == NULL) {
        pam_detail(out, pamh, "pam_start", rc);
        if (pamh != NULL) pam_end(pamh, rc);
        return finish(out, EXO_PAM_ERROR);
    }
    exo_pam_outcome_t o = EXO_PAM_ERROR;
    const void *item = NULL;
    char who[NAME_MAX_LEN + 1] = "";
    if (rhost != NULL && rhost[0] != '\0') {
        rc = pam_set_item(pamh, PAM_RHOST, rhost);
        if (rc != PAM_SUCCESS) {
            pam_detail(out, pamh, "pam_set_item(PAM_RHOST)", rc);
            goto end;
        }
    }
    rc = pam_authenticate(pamh, PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK);
    if (rc != PAM_SUCCESS) {
        pam_detail(out, pamh, "pam_authenticate", rc);
        o = map_authenticate(rc);
        goto end;
    }
    rc = pam_acct_mgmt(pamh, PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK);
    if (rc != PAM_SUCCESS) {
        pam_detail(out, pamh, "pam_acct_mgmt", rc);
        o = map_acct_mgmt(rc);
        goto end;
    }
    /* The user PAM authenticated: a module may have canonicalised the name. */
    rc = pam_get_item(pamh, PAM_USER, &item);
    if (rc != PAM_SUCCESS) {
        pam_detail(out, pamh, "pam_get_item(PAM_USER)", rc);
        goto end;
    }
    if (item == NULL) item = user;
    if (!name_ok(item)) {
        snprintf(out->detail, sizeof(out->detail),
                 "PAM changed the user name to one that is not a plain account name");
        rc = PAM_USER_UNKNOWN;
        goto end;
    }
    snprintf(who, sizeof(who), "%s", (const char *)item);
    o = EXO_PAM_OK;
end:
    pam_end(pamh, rc);
    if (o == EXO_PAM_OK) o = resolve(who, out);
    return finish(out, o);
}
