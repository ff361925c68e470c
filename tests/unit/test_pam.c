/* Unit tests of pam.c against the real Linux-PAM library, with pam_wrapper (Debian's
 * libpam-wrapper) so that no root and no /etc/pam.d are needed: the test writes its own service
 * files and pam_matrix password database into a directory it makes under /tmp, and points
 * pam_wrapper at it before the first pam_start (pam_wrapper reads PAM_WRAPPER and
 * PAM_WRAPPER_SERVICE_DIR then, not at load). Only the preload comes from outside:
 *   LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libpam_wrapper.so build/test_pam
 * (ctest sets it; see CMakeLists.txt). Without it the test reports itself skipped (exit 77).
 *
 * The account is the one running the test, so that getpwnam resolves it whoever that is.
 * TEST_PAM_VERBOSE=1 prints every check's outcome and detail. PAM's own log lines (its syslog)
 * come out on stderr as PWRAP_ERROR lines; "no default config other" is expected (there is
 * no "other" service here, on purpose: see test_missing_service).
 *
 * pam.c is compiled into this file, with its calloc, strdup, pam_start and pam_end routed
 * through counters, so that the conversation function (static) can be driven directly, an
 * allocation can be made to fail, and every pam_start can be checked to have its pam_end. */
#include <dlfcn.h>
#include <errno.h>
#include <ftw.h>
#include <grp.h>
#include <openssl/crypto.h>
#include <pwd.h>
#include <security/pam_appl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int calloc_fail_in;  /* > 0: the calloc this many calls from now fails */
static int strdup_fail_in;  /* likewise for strdup */
static int strdup_calls;    /* strdups by pam.c since the counter was last reset */
static int pam_starts;      /* pam_start calls by pam.c that returned a handle */
static int pam_ends;        /* pam_end calls by pam.c */
static int pam_start_calls; /* every pam_start call by pam.c */

static void *test_calloc(size_t n, size_t size)
{
    if (calloc_fail_in > 0 && --calloc_fail_in == 0) return NULL;
    return calloc(n, size);
}

static char *test_strdup(const char *s)
{
    strdup_calls++;
    if (strdup_fail_in > 0 && --strdup_fail_in == 0) return NULL;
    return strdup(s);
}

static int test_pam_start(const char *service, const char *user, const struct pam_conv *conv,
                          pam_handle_t **pamh)
{
    pam_start_calls++;
    int rc = pam_start(service, user, conv, pamh);
    if (*pamh != NULL) pam_starts++;
    return rc;
}

static int test_pam_end(pam_handle_t *pamh, int status)
{
    pam_ends++;
    return pam_end(pamh, status);
}

#define calloc test_calloc
#define strdup test_strdup
#define pam_start test_pam_start
#define pam_end test_pam_end
#include "pam.c"
#undef calloc
#undef strdup
#undef pam_start
#undef pam_end

#include "test.h"

/* Linux-PAM 1.5.2 loses a block when pam_start fails (test_missing_service): valgrind has
 * tests/unit/pam/valgrind.supp for it, and LeakSanitizer this, which it looks up by name. Its
 * stack through libpam (no frame pointers) is cut short, so it is named by module. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:libpam.so.0\n";
}

/* An Exosphere passphrase: 11 upper-case words separated by single spaces. */
#define PASSPHRASE "ABLE BAKE CAT DOG EASY FOX GAME HAT ICE JAM KEY"
#define SERVICE "exo-test"
#define RHOST_DENIED "203.0.113.5"
#define RHOST_ALLOWED "198.51.100.7"

static char dir_[256];      /* the temporary directory */
static char services_[300]; /* its services/ */
static char matrix_[512];   /* pam_matrix.so, beside libpam_wrapper.so */
static char me_[33];        /* the user running the test */
static uid_t my_uid_;
static gid_t my_gid_;
static char my_group_[64]; /* the name of my_gid_ ("" if none) */

/* Writes dir_/name (name may contain a '/') with the text. Returns 0 or -1. */
static int write_file(const char *name, const char *text)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/%s", dir_, name);
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        fprintf(stderr, "test_pam: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    fputs(text, f);
    return fclose(f) == 0 ? 0 : -1;
}

/* Writes services/<name> with the lines (each ending in '\n'), where %P stands for the passdb,
 * %M for pam_matrix.so and %D for the temporary directory. */
static int write_service(const char *name, const char *lines)
{
    char text[2048], path[64];
    size_t n = 0;
    for (const char *p = lines; *p && n + 600 < sizeof(text); p++) {
        if (p[0] == '%' && p[1] == 'P') {
            n += (size_t)snprintf(text + n, sizeof(text) - n, "%s/passdb", dir_);
            p++;
        } else if (p[0] == '%' && p[1] == 'M') {
            n += (size_t)snprintf(text + n, sizeof(text) - n, "%s", matrix_);
            p++;
        } else if (p[0] == '%' && p[1] == 'D') {
            n += (size_t)snprintf(text + n, sizeof(text) - n, "%s", dir_);
            p++;
        } else {
            text[n++] = *p;
        }
    }
    text[n] = '\0';
    snprintf(path, sizeof(path), "services/%s", name);
    return write_file(path, text);
}

/* The pam_debug return values whose mapping is checked through PAM, per phase. */
typedef struct code_case_s {
    const char *value; /* pam_debug's name */
    int code;
    exo_pam_outcome_t auth; /* the outcome when pam_authenticate returns it */
    exo_pam_outcome_t acct; /* when pam_acct_mgmt does */
} code_case_t;

static const code_case_t codes_[] = {
    {"auth_err", PAM_AUTH_ERR, EXO_PAM_BAD_CREDENTIALS, EXO_PAM_ACCOUNT_DENIED},
    {"user_unknown", PAM_USER_UNKNOWN, EXO_PAM_BAD_CREDENTIALS, EXO_PAM_ACCOUNT_DENIED},
    {"cred_insufficient", PAM_CRED_INSUFFICIENT, EXO_PAM_BAD_CREDENTIALS, EXO_PAM_ACCOUNT_DENIED},
    {"maxtries", PAM_MAXTRIES, EXO_PAM_BAD_CREDENTIALS, EXO_PAM_ACCOUNT_DENIED},
    {"perm_denied", PAM_PERM_DENIED, EXO_PAM_BAD_CREDENTIALS, EXO_PAM_ACCOUNT_DENIED},
    {"cred_expired", PAM_CRED_EXPIRED, EXO_PAM_BAD_CREDENTIALS, EXO_PAM_ACCOUNT_DENIED},
    {"acct_expired", PAM_ACCT_EXPIRED, EXO_PAM_BAD_CREDENTIALS, EXO_PAM_ACCOUNT_EXPIRED},
    {"new_authtok_reqd", PAM_NEW_AUTHTOK_REQD, EXO_PAM_BAD_CREDENTIALS, EXO_PAM_PASSWORD_EXPIRED},
    {"authtok_expired", PAM_AUTHTOK_EXPIRED, EXO_PAM_BAD_CREDENTIALS, EXO_PAM_PASSWORD_EXPIRED},
    {"authinfo_unavail", PAM_AUTHINFO_UNAVAIL, EXO_PAM_ERROR, EXO_PAM_ERROR},
    {"system_err", PAM_SYSTEM_ERR, EXO_PAM_ERROR, EXO_PAM_ERROR},
    {"service_err", PAM_SERVICE_ERR, EXO_PAM_ERROR, EXO_PAM_ERROR},
    {"buf_err", PAM_BUF_ERR, EXO_PAM_ERROR, EXO_PAM_ERROR},
    {"conv_err", PAM_CONV_ERR, EXO_PAM_ERROR, EXO_PAM_ERROR},
    {"cred_unavail", PAM_CRED_UNAVAIL, EXO_PAM_ERROR, EXO_PAM_ERROR},
    {"authtok_err", PAM_AUTHTOK_ERR, EXO_PAM_ERROR, EXO_PAM_ERROR},
    {"abort", PAM_ABORT, EXO_PAM_ERROR, EXO_PAM_ERROR},
};
#define NCODES (sizeof(codes_) / sizeof(codes_[0]))

static int setup(void)
{
    struct passwd *pw = getpwuid(getuid());
    if (pw == NULL || !name_ok(pw->pw_name)) {
        fprintf(stderr, "test_pam: the running uid has no usable passwd entry\n");
        return -1;
    }
    snprintf(me_, sizeof(me_), "%s", pw->pw_name);
    my_uid_ = pw->pw_uid;
    my_gid_ = pw->pw_gid;
    struct group *gr = getgrgid(my_gid_);
    snprintf(my_group_, sizeof(my_group_), "%s", gr && name_ok(gr->gr_name) ? gr->gr_name : "");

    /* pam_wrapper's test modules live in pam_wrapper/ beside the preloaded library. (Its
     * pam_chatty is not used: it never frees the responses to its messages.) */
    Dl_info info;
    void *sym = dlsym(RTLD_DEFAULT, "pam_wrapper_enabled");
    if (sym == NULL || dladdr(sym, &info) == 0 || info.dli_fname == NULL) return -1;
    const char *slash = strrchr(info.dli_fname, '/');
    int dlen = slash ? (int)(slash - info.dli_fname) : 1;
    const char *d = slash ? info.dli_fname : ".";
    snprintf(matrix_, sizeof(matrix_), "%.*s/pam_wrapper/pam_matrix.so", dlen, d);
    if (access(matrix_, R_OK) != 0) {
        fprintf(stderr, "test_pam: %s is missing\n", matrix_);
        return -1;
    }

    snprintf(dir_, sizeof(dir_), "/tmp/exo-test-pam.XXXXXX");
    if (mkdtemp(dir_) == NULL) {
        fprintf(stderr, "test_pam: mkdtemp: %s\n", strerror(errno));
        return -1;
    }
    snprintf(services_, sizeof(services_), "%s/services", dir_);
    if (mkdir(services_, 0700) != 0) return -1;

    /* The password database: user:password:the one service whose account phase admits them.
     * exo-ghost-user has a password but no passwd entry; the echo database's password is the user
     * name, which the conversation answers echo-on prompts with. */
    char text[1024];
    snprintf(text, sizeof(text),
             "# user:password:service\n%s:" PASSPHRASE ":" SERVICE "\n"
             "exo-ghost-user:" PASSPHRASE ":" SERVICE "\n",
             me_);
    if (write_file("passdb", text) != 0) return -1;
    snprintf(text, sizeof(text), "%s:%s:exo-echo\n", me_, me_);
    if (write_file("passdb-echo", text) != 0) return -1;
    if (write_file("access.conf", "-:ALL:" RHOST_DENIED "\n+:ALL:ALL\n") != 0) return -1;

    int rc = 0;
    rc |= write_service(SERVICE, "auth required %M passdb=%P\n"
                                 "account required %M passdb=%P\n");
    /* The account phase refuses: pam_deny (PAM_AUTH_ERR), or pam_matrix for a service the
     * user is not admitted to (PAM_PERM_DENIED). */
    rc |= write_service("exo-deny", "auth required %M passdb=%P\n"
                                    "account required pam_deny.so\n");
    rc |= write_service("exo-other", "auth required %M passdb=%P\n"
                                     "account required %M passdb=%P\n");
    /* A module that cannot be loaded; a password database that cannot be read. */
    rc |= write_service("exo-nomodule", "auth required %D/no-such-module.so\n"
                                        "account required %M passdb=%P\n");
    rc |= write_service("exo-nopassdb", "auth required %M passdb=%D/no-such-passdb\n"
                                        "account required %M passdb=%D/no-such-passdb\n");
    /* pam_matrix's echo option asks for the password with an echo-on prompt. */
    rc |= write_service("exo-echo", "auth required %M passdb=%D/passdb-echo echo\n"
                                    "account required %M passdb=%D/passdb-echo\n");
    /* pam_access by PAM_RHOST. */
    rc |= write_service("exo-access", "auth required %M passdb=%P\n"
                                      "account required pam_access.so nodefgroup "
                                      "accessfile=%D/access.conf\n");
    for (size_t i = 0; i < NCODES; i++) {
        char name[64], lines[256];
        snprintf(name, sizeof(name), "t-auth-%s", codes_[i].value);
        snprintf(lines, sizeof(lines),
                 "auth required pam_debug.so auth=%s\naccount required pam_permit.so\n",
                 codes_[i].value);
        rc |= write_service(name, lines);
        snprintf(name, sizeof(name), "t-acct-%s", codes_[i].value);
        snprintf(lines, sizeof(lines),
                 "auth required %%M passdb=%%P\naccount required pam_debug.so acct=%s\n",
                 codes_[i].value);
        rc |= write_service(name, lines);
    }
    if (rc != 0) return -1;

    /* pam_wrapper reads these at the first pam_start, and copies the service files then. It
     * opens libpam with RTLD_DEEPBIND, which AddressSanitizer refuses, unless told not to: by
     * UID_WRAPPER_DISABLE_DEEPBIND in pam_wrapper 1.1.4 (sic), PAM_WRAPPER_DISABLE_DEEPBIND
     * later. */
    setenv("PAM_WRAPPER", "1", 1);
    setenv("PAM_WRAPPER_SERVICE_DIR", services_, 1);
    setenv("UID_WRAPPER_DISABLE_DEEPBIND", "1", 1);
    setenv("PAM_WRAPPER_DISABLE_DEEPBIND", "1", 1);
    unsetenv("PAM_MATRIX_PASSWD");
    return 0;
}

static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)type;
    (void)ftw;
    return remove(path) == 0 ? 0 : -1;
}

static void teardown(void)
{
    if (dir_[0] != '\0' && strncmp(dir_, "/tmp/exo-test-pam.", 18) == 0)
        nftw(dir_, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Runs a check and verifies what holds for every outcome: the outcome is stored, the password
 * never reaches detail, identity fields are empty unless OK, and pam_start has its pam_end. */
static exo_pam_outcome_t check(const char *service, const char *user, const char *password,
                               const char *rhost, exo_pam_result_t *r)
{
    int starts = pam_starts, ends = pam_ends;
    memset(r, 0x5a, sizeof(*r));
    exo_pam_outcome_t o = exo_pam_check(service, user, password, rhost, r);
    if (getenv("TEST_PAM_VERBOSE") != NULL)
        printf("  %s %s: %s: %s%s%s\n", service ? service : "(null)", user ? user : "(null)",
               exo_pam_outcome_name(o), r->detail, o == EXO_PAM_OK ? " groups=" : "",
               o == EXO_PAM_OK ? r->groups : "");
    CHECK(r->outcome == o);
    CHECK(memchr(r->detail, '\0', sizeof(r->detail)) != NULL);
    CHECK(memchr(r->user, '\0', sizeof(r->user)) != NULL);
    CHECK(memchr(r->groups, '\0', sizeof(r->groups)) != NULL);
    if (password != NULL && strlen(password) >= 4 && memchr(r->detail, '\0', sizeof(r->detail)))
        CHECK(strstr(r->detail, password) == NULL);
    CHECK(pam_starts - starts == pam_ends - ends);
    if (o != EXO_PAM_OK) {
        CHECK(r->uid == (uid_t)-1);
        CHECK(r->gid == (gid_t)-1);
        CHECK(r->user[0] == '\0');
        CHECK(r->groups[0] == '\0');
        CHECK(r->detail[0] != '\0');
    }
    return o;
}

static void test_outcome_names(void)
{
    CHECK_STR(exo_pam_outcome_name(EXO_PAM_OK), "ok");
    CHECK_STR(exo_pam_outcome_name(EXO_PAM_BAD_CREDENTIALS), "bad_credentials");
    CHECK_STR(exo_pam_outcome_name(EXO_PAM_ACCOUNT_EXPIRED), "account_expired");
    CHECK_STR(exo_pam_outcome_name(EXO_PAM_PASSWORD_EXPIRED), "password_expired");
    CHECK_STR(exo_pam_outcome_name(EXO_PAM_ACCOUNT_DENIED), "account_denied");
    CHECK_STR(exo_pam_outcome_name(EXO_PAM_ERROR), "error");
    CHECK_STR(exo_pam_outcome_name((exo_pam_outcome_t)99), "error");
}

/* Each name in the comma-separated list is a plain account name, and none repeats. */
static int groups_well_formed(const char *g)
{
    if (g[0] == '\0') return 1;
    size_t len = strlen(g);
    for (size_t p = 0; p <= len;) {
        const char *comma = strchr(g + p, ',');
        size_t e = comma ? (size_t)(comma - g) : len;
        char name[64];
        if (e - p == 0 || e - p >= sizeof(name)) return 0;
        memcpy(name, g + p, e - p);
        name[e - p] = '\0';
        if (!name_ok(name) || list_has(g, p ? p - 1 : 0, name, e - p)) return 0;
        p = e + 1;
    }
    return 1;
}

static void test_ok(void)
{
    exo_pam_result_t r;
    int starts = pam_start_calls;
    REQUIRE(check(SERVICE, me_, PASSPHRASE, RHOST_ALLOWED, &r) == EXO_PAM_OK);
    CHECK(pam_start_calls == starts + 1);
    CHECK_STR(r.user, me_);
    CHECK(r.uid == my_uid_);
    CHECK(r.gid == my_gid_);
    CHECK_STR(r.detail, "");
    CHECK(groups_well_formed(r.groups));
    /* Primary group first. */
    if (my_group_[0] != '\0') {
        size_t n = strlen(my_group_);
        CHECK(strncmp(r.groups, my_group_, n) == 0 && (r.groups[n] == ',' || !r.groups[n]));
    }
    /* Every group of the user with a plain name is there. */
    gid_t gids[256];
    int n = 256;
    REQUIRE(getgrouplist(me_, my_gid_, gids, &n) >= 0);
    for (int i = 0; i < n; i++) {
        struct group *gr = getgrgid(gids[i]);
        if (gr == NULL || !name_ok(gr->gr_name)) continue;
        CHECK(list_has(r.groups, strlen(r.groups), gr->gr_name, strlen(gr->gr_name)));
    }
    /* No rhost at all is fine too. */
    CHECK(check(SERVICE, me_, PASSPHRASE, NULL, &r) == EXO_PAM_OK);
    CHECK_STR(r.user, me_);
}

static void test_wrong_password(void)
{
    exo_pam_result_t r;
    CHECK(check(SERVICE, me_, "ABLE BAKE CAT DOG EASY FOX GAME HAT ICE JAM KEX", NULL, &r) ==
          EXO_PAM_BAD_CREDENTIALS);
    CHECK(strstr(r.detail, "pam_authenticate") != NULL);
    CHECK(strstr(r.detail, "PAM_AUTH_ERR") != NULL);
    CHECK(check(SERVICE, me_, "able bake cat dog easy fox game hat ice jam key", NULL, &r) ==
          EXO_PAM_BAD_CREDENTIALS);
    CHECK(check(SERVICE, me_, "ABLE BAKE CAT DOG EASY FOX GAME HAT ICE JAM", NULL, &r) ==
          EXO_PAM_BAD_CREDENTIALS);
    CHECK(check(SERVICE, me_, PASSPHRASE " ", NULL, &r) == EXO_PAM_BAD_CREDENTIALS);
    CHECK(check(SERVICE, me_, "x", NULL, &r) == EXO_PAM_BAD_CREDENTIALS);
    /* Authentication comes first: a wrong password on a service that would deny the account
     * says only that the credentials are bad. */
    CHECK(check("exo-deny", me_, "wrong", NULL, &r) == EXO_PAM_BAD_CREDENTIALS);
}

static void test_unknown_user(void)
{
    exo_pam_result_t r;
    CHECK(check(SERVICE, "exo-nosuchuser", PASSPHRASE, NULL, &r) == EXO_PAM_BAD_CREDENTIALS);
    CHECK(strstr(r.detail, "pam_authenticate") != NULL);
    /* PAM accepts the password of a user the passwd database does not know. */
    CHECK(check(SERVICE, "exo-ghost-user", PASSPHRASE, NULL, &r) == EXO_PAM_ERROR);
    CHECK(strstr(r.detail, "no passwd entry") != NULL);
}

/* Refused without PAM being asked. */
static void test_refused_before_pam(void)
{
    static const char *const bad_users[] = {
        "",
        "-rf",
        "a b",
        "a/b",
        "..a,b",
        "user:x",
        "r\xc3\xa9mi",
        "a\nb",
        "123456789012345678901234567890123", /* 33 */
    };
    exo_pam_result_t r;
    int calls = pam_start_calls;
    CHECK(check(SERVICE, me_, "", NULL, &r) == EXO_PAM_BAD_CREDENTIALS);
    CHECK_STR(r.detail, "empty password");
    CHECK(check(SERVICE, me_, NULL, NULL, &r) == EXO_PAM_BAD_CREDENTIALS);
    for (size_t i = 0; i < sizeof(bad_users) / sizeof(bad_users[0]); i++) {
        CHECK(check(SERVICE, bad_users[i], PASSPHRASE, NULL, &r) == EXO_PAM_BAD_CREDENTIALS);
        CHECK_STR(r.detail, "the user name is not a plain account name");
    }
    CHECK(check(SERVICE, NULL, PASSPHRASE, NULL, &r) == EXO_PAM_BAD_CREDENTIALS);
    char longpw[PAM_MAX_RESP_SIZE + 2];
    memset(longpw, 'A', sizeof(longpw) - 1);
    longpw[sizeof(longpw) - 1] = '\0';
    CHECK(check(SERVICE, me_, longpw, NULL, &r) == EXO_PAM_BAD_CREDENTIALS);
    /* No usable service: an error, not the user's fault. */
    CHECK(check(NULL, me_, PASSPHRASE, NULL, &r) == EXO_PAM_ERROR);
    CHECK(check("../etc/passwd", me_, PASSPHRASE, NULL, &r) == EXO_PAM_ERROR);
    CHECK(exo_pam_check(SERVICE, me_, PASSPHRASE, NULL, NULL) == EXO_PAM_ERROR);
    CHECK(pam_start_calls == calls);
    /* 32 characters is still a name; PAM says it does not know it. */
    CHECK(check(SERVICE, "12345678901234567890123456789012", PASSPHRASE, NULL, &r) ==
          EXO_PAM_BAD_CREDENTIALS);
    CHECK(pam_start_calls == calls + 1);
}

static void test_account_denied(void)
{
    exo_pam_result_t r;
    CHECK(check("exo-deny", me_, PASSPHRASE, NULL, &r) == EXO_PAM_ACCOUNT_DENIED);
    CHECK(strstr(r.detail, "pam_acct_mgmt") != NULL);
    CHECK(strstr(r.detail, "PAM_AUTH_ERR") != NULL);
    CHECK(check("exo-other", me_, PASSPHRASE, NULL, &r) == EXO_PAM_ACCOUNT_DENIED);
    CHECK(strstr(r.detail, "PAM_PERM_DENIED") != NULL);
}

/* PAM_RHOST reaches the modules: pam_access refuses one address and admits another. */
static void test_rhost(void)
{
    exo_pam_result_t r;
    CHECK(check("exo-access", me_, PASSPHRASE, RHOST_DENIED, &r) == EXO_PAM_ACCOUNT_DENIED);
    CHECK(strstr(r.detail, "PAM_PERM_DENIED") != NULL);
    CHECK(check("exo-access", me_, PASSPHRASE, RHOST_ALLOWED, &r) == EXO_PAM_OK);
}

/* With no file for the service, and no "other" to fall back to, pam_start fails (Linux-PAM
 * 1.5: "error reading PAM configuration file", PAM_ABORT): an error, not the user's fault. (On
 * a real system "other" answers instead: on Debian the common-* stacks, on RHEL pam_deny,
 * which is PAM_AUTH_ERR and so EXO_PAM_BAD_CREDENTIALS.) */
static void test_missing_service(void)
{
    exo_pam_result_t r;
    int starts = pam_start_calls;
    CHECK(check("exo-no-such-service", me_, PASSPHRASE, NULL, &r) == EXO_PAM_ERROR);
    CHECK(pam_start_calls == starts + 1);
    CHECK(strncmp(r.detail, "pam_start: ", 11) == 0);
}

static void test_module_errors(void)
{
    exo_pam_result_t r;
    /* A module that cannot be loaded. */
    CHECK(check("exo-nomodule", me_, PASSPHRASE, NULL, &r) == EXO_PAM_ERROR);
    CHECK(strstr(r.detail, "pam_authenticate") != NULL);
    /* pam_matrix's backend (the password database) is missing: PAM_AUTHINFO_UNAVAIL. */
    CHECK(check("exo-nopassdb", me_, PASSPHRASE, NULL, &r) == EXO_PAM_ERROR);
    CHECK(strstr(r.detail, "PAM_AUTHINFO_UNAVAIL") != NULL);
}

/* Every mapped code, returned by pam_debug in each phase, through Linux-PAM. */
static void test_code_mapping(void)
{
    for (size_t i = 0; i < NCODES; i++) {
        exo_pam_result_t r;
        char name[64], want[64];
        snprintf(want, sizeof(want), "(%s %d)", code_name(codes_[i].code), codes_[i].code);
        snprintf(name, sizeof(name), "t-auth-%s", codes_[i].value);
        exo_pam_outcome_t o = check(name, me_, PASSPHRASE, NULL, &r);
        if (o != codes_[i].auth || strstr(r.detail, "pam_authenticate") == NULL ||
            strstr(r.detail, want) == NULL) {
            fprintf(stderr, "  %s: %s, %s\n", name, exo_pam_outcome_name(o), r.detail);
            CHECK(!"authenticate mapping");
        }
        snprintf(name, sizeof(name), "t-acct-%s", codes_[i].value);
        o = check(name, me_, PASSPHRASE, NULL, &r);
        if (o != codes_[i].acct || strstr(r.detail, "pam_acct_mgmt") == NULL ||
            strstr(r.detail, want) == NULL) {
            fprintf(stderr, "  %s: %s, %s\n", name, exo_pam_outcome_name(o), r.detail);
            CHECK(!"acct_mgmt mapping");
        }
    }
    /* The mapping functions alone, for what pam_debug cannot return through PAM. */
    CHECK(map_authenticate(PAM_SUCCESS) == EXO_PAM_OK);
    CHECK(map_acct_mgmt(PAM_SUCCESS) == EXO_PAM_OK);
    CHECK(map_authenticate(PAM_IGNORE) == EXO_PAM_ERROR);
    CHECK(map_acct_mgmt(PAM_IGNORE) == EXO_PAM_ERROR);
    CHECK(map_authenticate(PAM_MODULE_UNKNOWN) == EXO_PAM_ERROR);
    CHECK(map_acct_mgmt(PAM_OPEN_ERR) == EXO_PAM_ERROR);
    CHECK(map_authenticate(12345) == EXO_PAM_ERROR);
    CHECK(map_acct_mgmt(-1) == EXO_PAM_ERROR);
}

/* Prompts of both kinds, and failed allocations, through PAM. Info and error messages, and
 * several messages in one call, are tested directly below (Linux-PAM's modules keep quiet
 * under PAM_SILENT, and pam_wrapper's pam_chatty, which does not, never frees the responses). */
static void test_conversation_through_pam(void)
{
    exo_pam_result_t r;
    /* The echo-on prompt is answered with the user name, which is this database's password. */
    CHECK(check("exo-echo", me_, PASSPHRASE, NULL, &r) == EXO_PAM_OK);
    CHECK_STR(r.user, me_);
    /* A failed allocation in the conversation: the module cannot get the password, and says
     * so with PAM_AUTHINFO_UNAVAIL; nothing leaks (valgrind, ASan). */
    strdup_fail_in = 1;
    CHECK(check(SERVICE, me_, PASSPHRASE, NULL, &r) == EXO_PAM_ERROR);
    CHECK(strdup_fail_in == 0);
    calloc_fail_in = 1;
    CHECK(check(SERVICE, me_, PASSPHRASE, NULL, &r) == EXO_PAM_ERROR);
    CHECK(calloc_fail_in == 0);
    strdup_fail_in = calloc_fail_in = 0;
    CHECK(check(SERVICE, me_, PASSPHRASE, NULL, &r) == EXO_PAM_OK);
}

/* The conversation function driven directly. */
static void test_conversation_direct(void)
{
    conv_data_t d = {"alice", PASSPHRASE};
    struct pam_message m[5] = {
        {PAM_TEXT_INFO, "Welcome"},       {PAM_PROMPT_ECHO_OFF, "Password: "},
        {PAM_ERROR_MSG, "Careful"},       {PAM_PROMPT_ECHO_ON, "login: "},
        {PAM_PROMPT_ECHO_OFF, "Again: "},
    };
    const struct pam_message *mp[PAM_MAX_NUM_MSG + 1];
    for (int i = 0; i < PAM_MAX_NUM_MSG + 1; i++)
        mp[i] = &m[i % 5];
    struct pam_response *resp = NULL;

    REQUIRE(conv(5, mp, &resp, &d) == PAM_SUCCESS);
    REQUIRE(resp != NULL);
    CHECK(resp[0].resp == NULL);
    CHECK_STR(resp[1].resp, PASSPHRASE);
    CHECK(resp[2].resp == NULL);
    CHECK_STR(resp[3].resp, "alice");
    CHECK_STR(resp[4].resp, PASSPHRASE);
    for (int i = 0; i < 5; i++)
        CHECK(resp[i].resp_retcode == 0);
    drop_responses(resp, 5);

    /* PAM's limit on the number of messages. */
    resp = NULL;
    CHECK(conv(PAM_MAX_NUM_MSG, mp, &resp, &d) == PAM_SUCCESS);
    if (resp) drop_responses(resp, PAM_MAX_NUM_MSG);
    struct pam_response sentinel;
    resp = &sentinel; /* must be reset on failure */
    CHECK(conv(PAM_MAX_NUM_MSG + 1, mp, &resp, &d) == PAM_CONV_ERR);
    CHECK(resp == NULL);
    CHECK(conv(0, mp, &resp, &d) == PAM_CONV_ERR);
    CHECK(conv(-1, mp, &resp, &d) == PAM_CONV_ERR);
    CHECK(conv(1, NULL, &resp, &d) == PAM_CONV_ERR);
    CHECK(conv(1, mp, &resp, NULL) == PAM_CONV_ERR);
    CHECK(conv(1, mp, NULL, &d) == PAM_CONV_ERR);

    /* A prompt it cannot answer, after answers were made: they are dropped. */
    struct pam_message bin = {PAM_BINARY_PROMPT, "\x01"};
    const struct pam_message *mb[3] = {&m[1], &m[3], &bin};
    CHECK(conv(3, mb, &resp, &d) == PAM_CONV_ERR);
    CHECK(resp == NULL);
    struct pam_message radio = {PAM_RADIO_TYPE, "yes?"};
    const struct pam_message *mr[1] = {&radio};
    CHECK(conv(1, mr, &resp, &d) == PAM_CONV_ERR);
    const struct pam_message *mn[2] = {&m[1], NULL};
    CHECK(conv(2, mn, &resp, &d) == PAM_CONV_ERR);
    CHECK(resp == NULL);

    /* Allocation failures, at the array and at each answer. */
    calloc_fail_in = 1;
    CHECK(conv(5, mp, &resp, &d) == PAM_BUF_ERR);
    CHECK(resp == NULL);
    for (int k = 1; k <= 3; k++) {
        strdup_fail_in = k;
        strdup_calls = 0;
        CHECK(conv(5, mp, &resp, &d) == PAM_BUF_ERR);
        CHECK(resp == NULL);
        CHECK(strdup_calls == k);
    }
    strdup_fail_in = calloc_fail_in = 0;
}

static void test_groups_cut(void)
{
    /* A group that no longer fits is left out, and add_group says so. */
    exo_pam_result_t r;
    memset(&r, 0, sizeof(r));
    size_t cap = 1024, pos = sizeof(r.groups) - 4;
    char *buf = malloc(cap);
    REQUIRE(buf != NULL);
    memset(r.groups, 'x', pos);
    r.groups[pos] = '\0';
    CHECK(add_group(r.groups, &pos, 0, &buf, &cap) == (getgrgid(0) != NULL ? 1 : 0));
    CHECK(pos == sizeof(r.groups) - 4);
    CHECK(strlen(r.groups) == pos);
    /* An empty list takes the group; a second time it is a duplicate and skipped. */
    if (my_group_[0] != '\0') {
        pos = 0;
        r.groups[0] = '\0';
        CHECK(add_group(r.groups, &pos, my_gid_, &buf, &cap) == 0);
        CHECK_STR(r.groups, my_group_);
        CHECK(add_group(r.groups, &pos, my_gid_, &buf, &cap) == 0);
        CHECK_STR(r.groups, my_group_);
    }
    free(buf);
    CHECK(list_has("a,bb,c", 6, "bb", 2));
    CHECK(list_has("a,bb,c", 6, "c", 1));
    CHECK(!list_has("a,bb,c", 6, "b", 1));
    CHECK(!list_has("", 0, "a", 1));
}

static void test_every_start_ended(void)
{
    CHECK(pam_starts > 0);
    CHECK(pam_starts == pam_ends);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (dlsym(RTLD_DEFAULT, "pam_wrapper_enabled") == NULL) {
        printf("test_pam: SKIPPED: libpam_wrapper.so is not preloaded (LD_PRELOAD; Debian "
               "package libpam-wrapper)\n");
        return 77;
    }
    if (getenv("PAM_WRAPPER_RUNTIME_DIR") != NULL) {
        fprintf(stderr, "test_pam: pam_wrapper was set up from the environment already; set "
                        "only LD_PRELOAD, the test points pam_wrapper at its own files\n");
        return 1;
    }
    if (setup() != 0) {
        teardown();
        fprintf(stderr, "test_pam: setup failed\n");
        printf("0 passed, 1 failed\n");
        return 1;
    }
    RUN(test_outcome_names);
    RUN(test_refused_before_pam);
    RUN(test_ok);
    RUN(test_wrong_password);
    RUN(test_unknown_user);
    RUN(test_account_denied);
    RUN(test_rhost);
    RUN(test_missing_service);
    RUN(test_module_errors);
    RUN(test_code_mapping);
    RUN(test_conversation_through_pam);
    RUN(test_conversation_direct);
    RUN(test_groups_cut);
    RUN(test_every_start_ended);
    teardown();
    TEST_END();
}
