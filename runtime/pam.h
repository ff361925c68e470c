/* Password checks through PAM, run by the root monitor in a short-lived child forked per login
 * (monitor.c); pam.c says why there and not in the worker. */
#ifndef EXO_PAM_H
#define EXO_PAM_H

#include <sys/types.h>

typedef enum {
    EXO_PAM_OK = 0,
    EXO_PAM_BAD_CREDENTIALS,  /* wrong password, unknown user, locked password: indistinguishable on
                                 purpose */
    EXO_PAM_ACCOUNT_EXPIRED,  /* PAM_ACCT_EXPIRED */
    EXO_PAM_PASSWORD_EXPIRED, /* PAM_NEW_AUTHTOK_REQD / PAM_AUTHTOK_EXPIRED: must change it first */
    EXO_PAM_ACCOUNT_DENIED,   /* PAM_PERM_DENIED and other account-phase refusals */
    EXO_PAM_ERROR, /* PAM itself failed (service missing, module error, no passwd entry ...) */
} exo_pam_outcome_t;

#define EXO_PAM_GROUPS_MAX 2048
typedef struct exo_pam_result_s {
    exo_pam_outcome_t outcome;
    uid_t uid;     /* set when outcome is EXO_PAM_OK; (uid_t)-1 otherwise */
    gid_t gid;     /* likewise, (gid_t)-1 otherwise */
    char user[33]; /* the account's name as the passwd database spells it ("" unless OK) */
    char groups[EXO_PAM_GROUPS_MAX]; /* comma-separated names of every group the user is in,
                                        primary first, no duplicates; names that are not plain
                                        account names ([A-Za-z0-9_.-], 1..32, not starting with
                                        '-') are left out, and so are those that no longer fit
                                        (then detail says so) */
    char detail[200]; /* for the log: which PAM step failed and pam_strerror; never the password */
} exo_pam_result_t;

/* Runs pam_start(service, user) + pam_authenticate + pam_acct_mgmt for `user` with `password`,
 * answering the conversation's echo-off prompts with the password and echo-on prompts with the
 * user name; rhost (may be NULL) is set as PAM_RHOST. Blocking. On EXO_PAM_OK also resolves
 * uid, gid and groups through getpwnam_r/getgrouplist (no passwd entry -> EXO_PAM_ERROR), for
 * the user name PAM ends with (PAM_USER, which a module may have canonicalised).
 * An empty password, one longer than PAM_MAX_RESP_SIZE (512) bytes, or a user name that is not
 * a plain account name gives EXO_PAM_BAD_CREDENTIALS without calling PAM.
 * Returns the outcome (also stored in out->outcome). Never logs or keeps the password: every
 * copy it frees itself is wiped (OPENSSL_cleanse) first; the copies it answers prompts with are
 * PAM's to wipe and free, as the conversation protocol has it. */
exo_pam_outcome_t exo_pam_check(const char *service, const char *user, const char *password,
                                const char *rhost, exo_pam_result_t *out);

/* "ok", "bad_credentials", "account_expired", "password_expired", "account_denied", "error"
 * ("error" also for a value outside the enum). */
const char *exo_pam_outcome_name(exo_pam_outcome_t o);

/* The account database's groups of `user` (primary group gid), as logins and tokens carry them:
 * comma-separated names in groups, the primary first, no duplicates, plain account names only
 * (others are left out). Returns how many groups the user is in, with *cut set when the list
 * did not fit, or -ENOMEM / -EIO when the databases failed (groups is then empty). */
int exo_user_groups(const char *user, gid_t gid, char groups[EXO_PAM_GROUPS_MAX], int *cut);

#endif
