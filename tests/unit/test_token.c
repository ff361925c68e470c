/* Unit tests of the login tokens (runtime/token.c): issue and verify, every way a token can be
 * malformed, tampered with, expired or revoked, claims that are wrong although correctly signed,
 * the key file, and the revocation set and its file. Files go to a mkdtemp directory under /tmp
 * that is removed at the end. EXO_TOKEN_BENCH=N times N verifications (default 20000). */
#include "token.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "test.h"

static char dir_[] = "/tmp/exo-test-token-XXXXXX";
static char err_[512];
static unsigned char key1_[EXO_TOKEN_KEY_LEN], key2_[EXO_TOKEN_KEY_LEN];
static const int64_t NOW = 1700000000;

/* ---------------------------------------------------------------------------------------- */
/* Helpers */

static const char alphabet_[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Unpadded base64url of in[0..n) appended to out (NUL-terminated); returns out. */
static char *b64url_cat(char *out, const void *in, size_t n)
{
    const unsigned char *p = in;
    char *o = out + strlen(out);
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *o++ = alphabet_[v >> 18];
        *o++ = alphabet_[(v >> 12) & 63];
        *o++ = alphabet_[(v >> 6) & 63];
        *o++ = alphabet_[v & 63];
    }
    if (n - i > 0) {
        uint32_t v = (uint32_t)p[i] << 16 | (n - i == 2 ? (uint32_t)p[i + 1] << 8 : 0);
        *o++ = alphabet_[v >> 18];
        *o++ = alphabet_[(v >> 12) & 63];
        if (n - i == 2) *o++ = alphabet_[(v >> 6) & 63];
    }
    *o = '\0';
    return out;
}

static int b64val(char c)
{
    const char *p = c ? strchr(alphabet_, c) : NULL;
    return p ? (int)(p - alphabet_) : -1;
}

/* Lenient decoder for looking inside tokens we made. Returns the length. */
static size_t b64url_dec(const char *in, size_t n, char *out)
{
    uint32_t v = 0;
    size_t o = 0, bits = 0;
    for (size_t i = 0; i < n; i++) {
        v = v << 6 | (uint32_t)b64val(in[i]);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)(v >> bits);
        }
    }
    out[o] = '\0';
    return o;
}

/* A token with the given header and payload text, signed with key: what an attacker who had
 * the key (or a bug in our own issuing) could produce. */
static char *sign_raw(char *out, const unsigned char *key, const char *header, const char *payload)
{
    unsigned char mac[32];
    unsigned int maclen = 0;
    out[0] = '\0';
    b64url_cat(out, header, strlen(header));
    strcat(out, ".");
    b64url_cat(out, payload, strlen(payload));
    HMAC(EVP_sha256(), key, EXO_TOKEN_KEY_LEN, (const unsigned char *)out, strlen(out), mac,
         &maclen);
    strcat(out, ".");
    b64url_cat(out, mac, maclen);
    return out;
}

static const char HEADER[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
static const char JTI[] = "0123456789abcdef0123456789abcdef";

static char *sign_payload(char *out, const char *payload)
{
    return sign_raw(out, key1_, HEADER, payload);
}

static exo_token_status_t verify_s(const char *text)
{
    return exo_token_verify(key1_, text, strlen(text), NOW, NULL, NULL);
}

/* The status of a payload signed with key1_. */
static exo_token_status_t verify_payload(const char *payload)
{
    static char tok[16384];
    return verify_s(sign_payload(tok, payload));
}

static void claims(exo_token_claims_t *c, const char *user, const char *groups)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->user, sizeof(c->user), "%s", user);
    snprintf(c->groups, sizeof(c->groups), "%s", groups);
    c->uid = 1000;
    c->gid = 1001;
    c->iat = NOW - 10;
    c->exp = NOW + 3600;
}

static int is_lower_hex32(const char *s)
{
    if (strlen(s) != 32) return 0;
    for (int i = 0; i < 32; i++)
        if (!strchr("0123456789abcdef", s[i])) return 0;
    return 1;
}

static void write_text(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    if (fd < 0) return;
    if (write(fd, text, strlen(text)) < 0) perror("write");
    fchmod(fd, mode);
    close(fd);
}

static char *path_in(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", dir_, name);
    return buf;
}

/* ---------------------------------------------------------------------------------------- */
/* Tokens */

static void test_round_trip(void)
{
    exo_token_claims_t c, got;
    char tok[EXO_TOKEN_MAX + 1], payload[EXO_TOKEN_MAX], want[1024];

    claims(&c, "alice", "alice,wheel,docker-users");
    strcpy(c.jti, "stale");
    int n = exo_token_issue(key1_, &c, tok, sizeof(tok));
    REQUIRE(n > 0);
    CHECK((size_t)n == strlen(tok));
    CHECK(is_lower_hex32(c.jti));
    /* header and payload are exactly as documented */
    CHECK(strncmp(tok, "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.", 37) == 0);
    char *dot = strchr(tok + 37, '.');
    REQUIRE(dot != NULL);
    b64url_dec(tok + 37, (size_t)(dot - tok - 37), payload);
    snprintf(want, sizeof(want),
             "{\"sub\":\"alice\",\"uid\":1000,\"gid\":1001,\"grp\":[\"alice\",\"wheel\","
             "\"docker-users\"],\"iat\":%" PRId64 ",\"exp\":%" PRId64 ",\"jti\":\"%s\"}",
             NOW - 10, NOW + 3600, c.jti);
    CHECK_STR(payload, want);
    CHECK(strlen(dot + 1) == 43);

    memset(&got, 0x55, sizeof(got));
    CHECK(exo_token_verify(key1_, tok, (size_t)n, NOW, NULL, &got) == EXO_TOKEN_VALID);
    CHECK_STR(got.user, "alice");
    CHECK(got.uid == 1000 && got.gid == 1001);
    CHECK_STR(got.groups, "alice,wheel,docker-users");
    CHECK(got.iat == NOW - 10 && got.exp == NOW + 3600);
    CHECK_STR(got.jti, c.jti);
    CHECK(exo_token_verify(key1_, tok, (size_t)n, NOW, NULL, NULL) == EXO_TOKEN_VALID);

    /* not NUL-terminated: only len bytes count */
    char copy[EXO_TOKEN_MAX + 16];
    memcpy(copy, tok, (size_t)n);
    memcpy(copy + n, "garbage", 8);
    CHECK(exo_token_verify(key1_, copy, (size_t)n, NOW, NULL, NULL) == EXO_TOKEN_VALID);
    CHECK(exo_token_verify(key1_, copy, (size_t)n + 1, NOW, NULL, NULL) == EXO_TOKEN_MALFORMED);

    /* every issue has a fresh jti */
    char jti1[33];
    strcpy(jti1, c.jti);
    CHECK(exo_token_issue(key1_, &c, tok, sizeof(tok)) > 0);
    CHECK(strcmp(jti1, c.jti) != 0);

    /* no groups; extreme values */
    claims(&c, "a", "");
    c.uid = UINT32_MAX;
    c.gid = 0;
    c.iat = 0;
    c.exp = INT64_MAX;
    n = exo_token_issue(key1_, &c, tok, sizeof(tok));
    REQUIRE(n > 0);
    CHECK(exo_token_verify(key1_, tok, (size_t)n, NOW, NULL, &got) == EXO_TOKEN_VALID);
    CHECK_STR(got.user, "a");
    CHECK_STR(got.groups, "");
    CHECK(got.uid == UINT32_MAX && got.gid == 0 && got.iat == 0 && got.exp == INT64_MAX);

    /* the longest names */
    claims(&c, "abcdefghijklmnopqrstuvwxyz._-012", "ABCDEFGHIJKLMNOPQRSTUVWXYZ._-789,x");
    n = exo_token_issue(key1_, &c, tok, sizeof(tok));
    REQUIRE(n > 0);
    CHECK(exo_token_verify(key1_, tok, (size_t)n, NOW, NULL, &got) == EXO_TOKEN_VALID);
    CHECK_STR(got.user, c.user);
    CHECK_STR(got.groups, c.groups);
}

static void test_other_key(void)
{
    exo_token_claims_t c, got;
    char tok[EXO_TOKEN_MAX + 1];
    claims(&c, "alice", "wheel");
    int n = exo_token_issue(key2_, &c, tok, sizeof(tok));
    REQUIRE(n > 0);
    memset(&got, 0x55, sizeof(got));
    exo_token_claims_t before = got;
    CHECK(exo_token_verify(key1_, tok, (size_t)n, NOW, NULL, &got) == EXO_TOKEN_BAD_SIGNATURE);
    CHECK(memcmp(&got, &before, sizeof(got)) == 0); /* untouched unless valid */
    CHECK(exo_token_verify(key2_, tok, (size_t)n, NOW, NULL, &got) == EXO_TOKEN_VALID);
}

static void test_tampering(void)
{
    exo_token_claims_t c;
    char tok[EXO_TOKEN_MAX + 1], t[EXO_TOKEN_MAX + 64], payload[EXO_TOKEN_MAX];
    claims(&c, "alice", "wheel");
    int n = exo_token_issue(key1_, &c, tok, sizeof(tok));
    REQUIRE(n > 0);
    char *dot1 = strchr(tok, '.'), *dot2 = strrchr(tok, '.');
    const char *rest = dot1; /* ".payload.sig" */

    /* header alg none, keeping the rest; and as an unsigned token with empty signature */
    t[0] = '\0';
    b64url_cat(t, "{\"alg\":\"none\",\"typ\":\"JWT\"}", 26);
    strcat(t, rest);
    CHECK(verify_s(t) == EXO_TOKEN_MALFORMED);
    t[0] = '\0';
    b64url_cat(t, "{\"alg\":\"none\",\"typ\":\"JWT\"}", 26);
    strncat(t, rest, (size_t)(dot2 - dot1 + 1));
    CHECK(verify_s(t) == EXO_TOKEN_MALFORMED);
    /* HS512 header, kept signature and correctly re-signed */
    t[0] = '\0';
    b64url_cat(t, "{\"alg\":\"HS512\",\"typ\":\"JWT\"}", 27);
    strcat(t, rest);
    CHECK(verify_s(t) == EXO_TOKEN_MALFORMED);
    b64url_dec(dot1 + 1, (size_t)(dot2 - dot1 - 1), payload);
    CHECK(verify_payload(payload) == EXO_TOKEN_VALID); /* the helper signs as issue does */
    CHECK(verify_s(sign_raw(t, key1_, "{\"alg\":\"HS512\",\"typ\":\"JWT\"}", payload)) ==
          EXO_TOKEN_MALFORMED);
    CHECK(verify_s(sign_raw(t, key1_, "{\"alg\":\"none\",\"typ\":\"JWT\"}", payload)) ==
          EXO_TOKEN_MALFORMED);
    /* an equivalent but different header, correctly signed */
    CHECK(verify_s(sign_raw(t, key1_, "{\"typ\":\"JWT\",\"alg\":\"HS256\"}", payload)) ==
          EXO_TOKEN_MALFORMED);
    CHECK(verify_s(sign_raw(t, key1_, "{\"alg\":\"HS256\", \"typ\":\"JWT\"}", payload)) ==
          EXO_TOKEN_MALFORMED);
    CHECK(verify_s(sign_raw(t, key1_, "{\"alg\":\"HS256\"}", payload)) == EXO_TOKEN_MALFORMED);

    /* payload changed, signature kept: every position, to another alphabet character */
    int bad = 0;
    for (char *p = dot1 + 1; p < dot2; p++) {
        strcpy(t, tok);
        char *q = t + (p - tok);
        *q = *q == 'A' ? 'B' : 'A';
        exo_token_status_t s = verify_s(t);
        if (s != EXO_TOKEN_BAD_SIGNATURE && s != EXO_TOKEN_MALFORMED) bad++;
    }
    CHECK(bad == 0);
    /* a payload with a real change (a different uid) keeps getting BAD_SIGNATURE */
    claims(&c, "alice", "wheel");
    c.uid = 0;
    char tok0[EXO_TOKEN_MAX + 1];
    REQUIRE(exo_token_issue(key2_, &c, tok0, sizeof(tok0)) > 0);
    char *p0 = strchr(tok0, '.'), *s0 = strrchr(tok0, '.');
    snprintf(t, sizeof(t), "%.*s%.*s%s", (int)(dot1 - tok), tok, (int)(s0 - p0), p0, dot2);
    CHECK(verify_s(t) == EXO_TOKEN_BAD_SIGNATURE);
    /* the signature from another token */
    snprintf(t, sizeof(t), "%.*s%s", (int)(dot2 - tok), tok, s0);
    CHECK(verify_s(t) == EXO_TOKEN_BAD_SIGNATURE);

    /* signature truncated, extended, a bit flipped, a non-canonical last character */
    snprintf(t, sizeof(t), "%.*s", n - 1, tok);
    CHECK(verify_s(t) == EXO_TOKEN_MALFORMED);
    snprintf(t, sizeof(t), "%sA", tok);
    CHECK(verify_s(t) == EXO_TOKEN_MALFORMED);
    snprintf(t, sizeof(t), "%.*s", (int)(dot2 - tok + 1), tok);
    CHECK(verify_s(t) == EXO_TOKEN_MALFORMED);
    strcpy(t, tok);
    t[n - 2] = t[n - 2] == 'A' ? 'B' : 'A';
    CHECK(verify_s(t) == EXO_TOKEN_BAD_SIGNATURE);
    /* the last of 43 characters carries 4 bits and 2 zero bits: 'A'+1 = 'B' sets a zero bit */
    strcpy(t, tok);
    int v = b64val(t[n - 1]);
    t[n - 1] = alphabet_[(v & ~3) | 1];
    CHECK(verify_s(t) == EXO_TOKEN_MALFORMED);
    t[n - 1] = alphabet_[(v & ~3) ^ 4];
    CHECK(verify_s(t) == EXO_TOKEN_BAD_SIGNATURE);
    CHECK(verify_s(tok) == EXO_TOKEN_VALID);
}

static void test_structure(void)
{
    exo_token_claims_t c;
    char tok[EXO_TOKEN_MAX + 1], t[EXO_TOKEN_MAX + 64];
    claims(&c, "alice", "wheel");
    int n = exo_token_issue(key1_, &c, tok, sizeof(tok));
    REQUIRE(n > 0);
    int d1 = (int)(strchr(tok, '.') - tok), d2 = (int)(strrchr(tok, '.') - tok);

    /* dots */
    snprintf(t, sizeof(t), "%s.", tok);
    CHECK(verify_s(t) == EXO_TOKEN_MALFORMED);
    snprintf(t, sizeof(t), "%s.x", tok);
    CHECK(verify_s(t) == EXO_TOKEN_MALFORMED);
    snprintf(t, sizeof(t), ".%s", tok);
    CHECK(verify_s(t) == EXO_TOKEN_MALFORMED);
    snprintf(t, sizeof(t), "%.*s.%s", d2, tok, tok + d2); /* two dots in a row */
    CHECK(verify_s(t) == EXO_TOKEN_MALFORMED);
    snprintf(t, sizeof(t), "%.*s.%s", d1 + 5, tok, tok + d1 + 5); /* a dot inside the payload */
    CHECK(verify_s(t) == EXO_TOKEN_MALFORMED);
    snprintf(t, sizeof(t), "%.*s%s", d2, tok, tok + d2 + 1); /* no second dot */
    CHECK(verify_s(t) == EXO_TOKEN_MALFORMED);
    snprintf(t, sizeof(t), "%.*s%s", d1, tok, tok + d1 + 1); /* no first dot */
    CHECK(verify_s(t) == EXO_TOKEN_MALFORMED);
    snprintf(t, sizeof(t), "%.*s..%s", d1, tok, tok + d2 + 1); /* empty payload */
    CHECK(verify_s(t) == EXO_TOKEN_MALFORMED);
    CHECK(verify_s("..") == EXO_TOKEN_MALFORMED);
    CHECK(verify_s(".") == EXO_TOKEN_MALFORMED);

    /* padding, in each part */
    snprintf(t, sizeof(t), "%s=", tok);
    CHECK(verify_s(t) == EXO_TOKEN_MALFORMED);
    snprintf(t, sizeof(t), "%.*s=%s", d2, tok, tok + d2);
    CHECK(verify_s(t) == EXO_TOKEN_MALFORMED);
    snprintf(t, sizeof(t), "%.*s==%s", d2, tok, tok + d2);
    CHECK(verify_s(t) == EXO_TOKEN_MALFORMED);
    snprintf(t, sizeof(t), "%.*s=%s", d1, tok, tok + d1);
    CHECK(verify_s(t) == EXO_TOKEN_MALFORMED);

    /* characters outside the alphabet, in each part: standard base64's, blanks, NUL, 8-bit */
    const char bad[] = {'+', '/', ' ', '\n', '\0', '=', '*', (char)0xff, (char)0x80};
    int at[] = {3, d1 + 3, d2 - 1, d2 + 3, n - 1};
    int wrong = 0;
    for (size_t i = 0; i < sizeof(bad); i++) {
        for (size_t j = 0; j < sizeof(at) / sizeof(at[0]); j++) {
            memcpy(t, tok, (size_t)n + 1);
            t[at[j]] = bad[i];
            if (exo_token_verify(key1_, t, (size_t)n, NOW, NULL, NULL) != EXO_TOKEN_MALFORMED) {
                fprintf(stderr, "char %02x at %d not refused\n", (unsigned char)bad[i], at[j]);
                wrong++;
            }
        }
    }
    CHECK(wrong == 0);

    /* empty, NULL, and too long */
    CHECK(verify_s("") == EXO_TOKEN_MALFORMED);
    CHECK(exo_token_verify(key1_, tok, 0, NOW, NULL, NULL) == EXO_TOKEN_MALFORMED);
    CHECK(exo_token_verify(key1_, NULL, 10, NOW, NULL, NULL) == EXO_TOKEN_MALFORMED);
    CHECK(verify_s("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9") == EXO_TOKEN_MALFORMED);
    CHECK(verify_s("garbage") == EXO_TOKEN_MALFORMED);

    /* A correctly signed token just over EXO_TOKEN_MAX: a payload padded with a long (and
     * otherwise harmless) group list. */
    static char big[3 * EXO_TOKEN_MAX], groups[EXO_TOKEN_MAX], payload[2 * EXO_TOKEN_MAX];
    groups[0] = '\0';
    size_t tlen = 0;
    for (int k = 0; tlen <= EXO_TOKEN_MAX; k++) {
        strcat(groups, k ? ",\"g\"" : "\"g\"");
        snprintf(payload, sizeof(payload),
                 "{\"sub\":\"alice\",\"uid\":1,\"gid\":1,\"grp\":[%s],\"iat\":%" PRId64
                 ",\"exp\":%" PRId64 ",\"jti\":\"%s\"}",
                 groups, NOW, NOW + 60, JTI);
        tlen = strlen(sign_payload(big, payload));
        if (tlen <= EXO_TOKEN_MAX) CHECK(verify_s(big) == EXO_TOKEN_VALID);
    }
    CHECK(tlen > EXO_TOKEN_MAX);
    CHECK(verify_s(big) == EXO_TOKEN_MALFORMED);
}

static void test_size_bounds(void)
{
    /* The longest group list that issue accepts gives a token of at most EXO_TOKEN_MAX that
     * verifies; one more group is refused with -EINVAL, whatever the room in out. */
    exo_token_claims_t c, got;
    static char tok[2 * EXO_TOKEN_MAX];
    claims(&c, "abcdefghijklmnopqrstuvwxyz012345", "");
    c.uid = c.gid = UINT32_MAX;
    int last = 0, k, n;
    for (k = 0; k < 1000; k++) {
        size_t len = strlen(c.groups);
        snprintf(c.groups + len, sizeof(c.groups) - len, "%s%03d", k ? "," : "", k);
        n = exo_token_issue(key1_, &c, tok, sizeof(tok));
        if (n < 0) break;
        last = n;
    }
    CHECK(n == -EINVAL);
    CHECK(k > 100);
    CHECK(last <= EXO_TOKEN_MAX && last > EXO_TOKEN_MAX - 40);
    *strrchr(c.groups, ',') = '\0';
    n = exo_token_issue(key1_, &c, tok, EXO_TOKEN_MAX + 1);
    CHECK(n == last);
    CHECK(exo_token_verify(key1_, tok, (size_t)n, NOW, NULL, &got) == EXO_TOKEN_VALID);
    CHECK_STR(got.groups, c.groups);
    CHECK(exo_token_verify(key1_, tok, (size_t)n, NOW, NULL, &got) == EXO_TOKEN_VALID);

    /* a full 2047-character group field is refused as too long a token, not overrun */
    memset(c.groups, 'a', sizeof(c.groups) - 1);
    c.groups[sizeof(c.groups) - 1] = '\0';
    for (size_t i = 1; i < sizeof(c.groups) - 1; i += 2)
        c.groups[i] = ',';
    CHECK(exo_token_issue(key1_, &c, tok, sizeof(tok)) == -EINVAL);
}

static void test_times(void)
{
    exo_token_claims_t c;
    char tok[EXO_TOKEN_MAX + 1];
    claims(&c, "alice", "wheel");
    c.exp = NOW;
    int n = exo_token_issue(key1_, &c, tok, sizeof(tok));
    REQUIRE(n > 0);
    CHECK(exo_token_verify(key1_, tok, (size_t)n, NOW, NULL, NULL) == EXO_TOKEN_EXPIRED);
    CHECK(exo_token_verify(key1_, tok, (size_t)n, NOW + 1000, NULL, NULL) == EXO_TOKEN_EXPIRED);
    CHECK(exo_token_verify(key1_, tok, (size_t)n, NOW - 1, NULL, NULL) == EXO_TOKEN_VALID);

    /* iat: up to EXO_TOKEN_IAT_SKEW (60) seconds ahead is clock skew; beyond, refused */
    claims(&c, "alice", "wheel");
    c.iat = NOW + 60;
    n = exo_token_issue(key1_, &c, tok, sizeof(tok));
    CHECK(exo_token_verify(key1_, tok, (size_t)n, NOW, NULL, NULL) == EXO_TOKEN_VALID);
    c.iat = NOW + 61;
    n = exo_token_issue(key1_, &c, tok, sizeof(tok));
    CHECK(exo_token_verify(key1_, tok, (size_t)n, NOW, NULL, NULL) == EXO_TOKEN_MALFORMED);
    c.iat = INT64_MAX;
    c.exp = INT64_MAX;
    n = exo_token_issue(key1_, &c, tok, sizeof(tok));
    CHECK(exo_token_verify(key1_, tok, (size_t)n, NOW, NULL, NULL) == EXO_TOKEN_MALFORMED);
    CHECK(exo_token_verify(key1_, tok, (size_t)n, INT64_MAX - 1, NULL, NULL) == EXO_TOKEN_VALID);
    /* a future iat weighs more than expiry */
    c.iat = NOW + 1000;
    c.exp = NOW;
    n = exo_token_issue(key1_, &c, tok, sizeof(tok));
    CHECK(exo_token_verify(key1_, tok, (size_t)n, NOW, NULL, NULL) == EXO_TOKEN_MALFORMED);
}

static void test_revoked_token(void)
{
    exo_token_claims_t c, got;
    exo_revoked_t rev, other;
    char tok[EXO_TOKEN_MAX + 1];
    exo_revoked_init(&rev);
    exo_revoked_init(&other);
    claims(&c, "alice", "wheel");
    int n = exo_token_issue(key1_, &c, tok, sizeof(tok));
    REQUIRE(n > 0);
    CHECK(exo_revoked_add(&other, JTI, NOW + 100) == 0);
    CHECK(exo_token_verify(key1_, tok, (size_t)n, NOW, &rev, NULL) == EXO_TOKEN_VALID);
    CHECK(exo_token_verify(key1_, tok, (size_t)n, NOW, &other, NULL) == EXO_TOKEN_VALID);
    CHECK(exo_revoked_add(&rev, c.jti, c.exp) == 0);
    memset(&got, 0, sizeof(got));
    CHECK(exo_token_verify(key1_, tok, (size_t)n, NOW, &rev, &got) == EXO_TOKEN_REVOKED);
    CHECK(got.user[0] == '\0');
    CHECK(exo_token_verify(key1_, tok, (size_t)n, NOW, NULL, NULL) == EXO_TOKEN_VALID);
    /* expiry is reported before revocation */
    CHECK(exo_token_verify(key1_, tok, (size_t)n, c.exp, &rev, NULL) == EXO_TOKEN_EXPIRED);
    exo_revoked_free(&rev);
    exo_revoked_free(&other);
}

static void test_bad_claims(void)
{
    char p[2048];
#define CLAIMS(sub, uid, gid, grp, iat, exp, jti)                                                  \
    (snprintf(p, sizeof(p),                                                                        \
              "{\"sub\":" sub ",\"uid\":" uid ",\"gid\":" gid ",\"grp\":" grp ",\"iat\":" iat      \
              ",\"exp\":" exp ",\"jti\":" jti "}"),                                                \
     verify_payload(p))
#define OK_SUB "\"alice\""
#define OK_GRP "[\"wheel\",\"adm\"]"
#define OK_IAT "1699999999"
#define OK_EXP "1700000100"
#define OK_JTI "\"0123456789abcdef0123456789abcdef\""
#define BAD(...) CHECK(CLAIMS(__VA_ARGS__) == EXO_TOKEN_MALFORMED)

    CHECK(CLAIMS(OK_SUB, "1000", "0", OK_GRP, OK_IAT, OK_EXP, OK_JTI) == EXO_TOKEN_VALID);
    CHECK(CLAIMS(OK_SUB, "4294967295", "0", "[]", "0", "9223372036854775807", OK_JTI) ==
          EXO_TOKEN_VALID);

    /* sub */
    BAD("\"al\\u0069ce\"", "1000", "0", OK_GRP, OK_IAT, OK_EXP, OK_JTI);
    BAD("\"al\\\"ice\"", "1000", "0", OK_GRP, OK_IAT, OK_EXP, OK_JTI);
    BAD("\"al\\/ice\"", "1000", "0", OK_GRP, OK_IAT, OK_EXP, OK_JTI);
    BAD("\"\"", "1000", "0", OK_GRP, OK_IAT, OK_EXP, OK_JTI);
    BAD("\"al ice\"", "1000", "0", OK_GRP, OK_IAT, OK_EXP, OK_JTI);
    BAD("\"al/ice\"", "1000", "0", OK_GRP, OK_IAT, OK_EXP, OK_JTI);
    BAD("\"abcdefghijklmnopqrstuvwxyz0123456\"", "1000", "0", OK_GRP, OK_IAT, OK_EXP, OK_JTI);
    BAD("\"\xc3\xa9\"", "1000", "0", OK_GRP, OK_IAT, OK_EXP, OK_JTI);
    BAD("1000", "1000", "0", OK_GRP, OK_IAT, OK_EXP, OK_JTI);
    BAD("null", "1000", "0", OK_GRP, OK_IAT, OK_EXP, OK_JTI);
    BAD("[\"alice\"]", "1000", "0", OK_GRP, OK_IAT, OK_EXP, OK_JTI);
    BAD("\"alice", "1000", "0", OK_GRP, OK_IAT, OK_EXP, OK_JTI);
    /* uid, gid */
    BAD(OK_SUB, "\"1000\"", "0", OK_GRP, OK_IAT, OK_EXP, OK_JTI);
    BAD(OK_SUB, "-1", "0", OK_GRP, OK_IAT, OK_EXP, OK_JTI);
    BAD(OK_SUB, "-0", "0", OK_GRP, OK_IAT, OK_EXP, OK_JTI);
    BAD(OK_SUB, "+1", "0", OK_GRP, OK_IAT, OK_EXP, OK_JTI);
    BAD(OK_SUB, "1e3", "0", OK_GRP, OK_IAT, OK_EXP, OK_JTI);
    BAD(OK_SUB, "1000.0", "0", OK_GRP, OK_IAT, OK_EXP, OK_JTI);
    BAD(OK_SUB, "01000", "0", OK_GRP, OK_IAT, OK_EXP, OK_JTI);
    BAD(OK_SUB, "4294967296", "0", OK_GRP, OK_IAT, OK_EXP, OK_JTI);
    BAD(OK_SUB, "18446744073709551616", "0", OK_GRP, OK_IAT, OK_EXP, OK_JTI);
    BAD(OK_SUB, "true", "0", OK_GRP, OK_IAT, OK_EXP, OK_JTI);
    BAD(OK_SUB, "null", "0", OK_GRP, OK_IAT, OK_EXP, OK_JTI);
    BAD(OK_SUB, "1000", "\"0\"", OK_GRP, OK_IAT, OK_EXP, OK_JTI);
    BAD(OK_SUB, "1000", "-5", OK_GRP, OK_IAT, OK_EXP, OK_JTI);
    BAD(OK_SUB, "1000", "00", OK_GRP, OK_IAT, OK_EXP, OK_JTI);
    /* grp */
    BAD(OK_SUB, "1000", "0", "\"wheel\"", OK_IAT, OK_EXP, OK_JTI);
    BAD(OK_SUB, "1000", "0", "\"wheel,adm\"", OK_IAT, OK_EXP, OK_JTI);
    BAD(OK_SUB, "1000", "0", "[\"wheel\",1]", OK_IAT, OK_EXP, OK_JTI);
    BAD(OK_SUB, "1000", "0", "[\"wh\\u0065el\"]", OK_IAT, OK_EXP, OK_JTI);
    BAD(OK_SUB, "1000", "0", "[\"\"]", OK_IAT, OK_EXP, OK_JTI);
    BAD(OK_SUB, "1000", "0", "[\"a,b\"]", OK_IAT, OK_EXP, OK_JTI);
    BAD(OK_SUB, "1000", "0", "[\"wheel\",]", OK_IAT, OK_EXP, OK_JTI);
    BAD(OK_SUB, "1000", "0", "[\"wheel\" \"adm\"]", OK_IAT, OK_EXP, OK_JTI);
    BAD(OK_SUB, "1000", "0", "[[\"wheel\"]]", OK_IAT, OK_EXP, OK_JTI);
    BAD(OK_SUB, "1000", "0", "{\"wheel\":1}", OK_IAT, OK_EXP, OK_JTI);
    BAD(OK_SUB, "1000", "0", "null", OK_IAT, OK_EXP, OK_JTI);
    BAD(OK_SUB, "1000", "0", "[null]", OK_IAT, OK_EXP, OK_JTI);
    BAD(OK_SUB, "1000", "0", "[", OK_IAT, OK_EXP, OK_JTI);
    /* iat, exp */
    BAD(OK_SUB, "1000", "0", OK_GRP, "\"1699999999\"", OK_EXP, OK_JTI);
    BAD(OK_SUB, "1000", "0", OK_GRP, "-1", OK_EXP, OK_JTI);
    BAD(OK_SUB, "1000", "0", OK_GRP, "1699999999.5", OK_EXP, OK_JTI);
    BAD(OK_SUB, "1000", "0", OK_GRP, OK_IAT, "9223372036854775808", OK_JTI);
    BAD(OK_SUB, "1000", "0", OK_GRP, OK_IAT, "99999999999999999999", OK_JTI);
    BAD(OK_SUB, "1000", "0", OK_GRP, OK_IAT, "1.7e9", OK_JTI);
    BAD(OK_SUB, "1000", "0", OK_GRP, OK_IAT, "\"1700000100\"", OK_JTI);
    BAD(OK_SUB, "1000", "0", OK_GRP, OK_IAT, "false", OK_JTI);
    /* jti */
    BAD(OK_SUB, "1000", "0", OK_GRP, OK_IAT, OK_EXP, "\"0123456789ABCDEF0123456789abcdef\"");
    BAD(OK_SUB, "1000", "0", OK_GRP, OK_IAT, OK_EXP, "\"0123456789abcdef0123456789abcde\"");
    BAD(OK_SUB, "1000", "0", OK_GRP, OK_IAT, OK_EXP, "\"0123456789abcdef0123456789abcdef0\"");
    BAD(OK_SUB, "1000", "0", OK_GRP, OK_IAT, OK_EXP, "\"0123456789abcdef0123456789abcdeg\"");
    BAD(OK_SUB, "1000", "0", OK_GRP, OK_IAT, OK_EXP, "\"0123456789abcdef0123456789abcd\\u0065f\"");
    BAD(OK_SUB, "1000", "0", OK_GRP, OK_IAT, OK_EXP, "123456789");
    BAD(OK_SUB, "1000", "0", OK_GRP, OK_IAT, OK_EXP, "null");

    /* missing claims, one at a time */
    static const char *missing[] = {
        "{\"uid\":1,\"gid\":1,\"grp\":[],\"iat\":1,\"exp\":1700000100,\"jti\":" OK_JTI "}",
        "{\"sub\":\"a\",\"gid\":1,\"grp\":[],\"iat\":1,\"exp\":1700000100,\"jti\":" OK_JTI "}",
        "{\"sub\":\"a\",\"uid\":1,\"grp\":[],\"iat\":1,\"exp\":1700000100,\"jti\":" OK_JTI "}",
        "{\"sub\":\"a\",\"uid\":1,\"gid\":1,\"iat\":1,\"exp\":1700000100,\"jti\":" OK_JTI "}",
        "{\"sub\":\"a\",\"uid\":1,\"gid\":1,\"grp\":[],\"exp\":1700000100,\"jti\":" OK_JTI "}",
        "{\"sub\":\"a\",\"uid\":1,\"gid\":1,\"grp\":[],\"iat\":1,\"jti\":" OK_JTI "}",
        "{\"sub\":\"a\",\"uid\":1,\"gid\":1,\"grp\":[],\"iat\":1,\"exp\":1700000100}",
    };
    for (size_t i = 0; i < sizeof(missing) / sizeof(missing[0]); i++)
        CHECK(verify_payload(missing[i]) == EXO_TOKEN_MALFORMED);
    const char *ok = "{\"sub\":\"a\",\"uid\":1,\"gid\":1,\"grp\":[],\"iat\":1,\"exp\":1700000100,"
                     "\"jti\":" OK_JTI "}";
    CHECK(verify_payload(ok) == EXO_TOKEN_VALID);

    /* not the canonical form: duplicates, unknown claims, whitespace, order, escaped names */
    static const char *noncanon[] = {
        "{\"sub\":\"a\",\"sub\":\"root\",\"uid\":1,\"gid\":1,\"grp\":[],\"iat\":1,\"exp\":"
        "1700000100,"
        "\"jti\":" OK_JTI "}",
        "{\"sub\":\"root\",\"uid\":1,\"gid\":1,\"grp\":[],\"iat\":1,\"exp\":1700000100,"
        "\"jti\":" OK_JTI ",\"sub\":\"a\"}",
        "{\"sub\":\"a\",\"uid\":1,\"gid\":1,\"grp\":[],\"iat\":1,\"exp\":1700000100,"
        "\"jti\":" OK_JTI ",\"admin\":true}",
        "{\"admin\":true,\"sub\":\"a\",\"uid\":1,\"gid\":1,\"grp\":[],\"iat\":1,\"exp\":1700000100,"
        "\"jti\":" OK_JTI "}",
        "{ \"sub\":\"a\",\"uid\":1,\"gid\":1,\"grp\":[],\"iat\":1,\"exp\":1700000100,"
        "\"jti\":" OK_JTI "}",
        "{\"sub\": \"a\",\"uid\":1,\"gid\":1,\"grp\":[],\"iat\":1,\"exp\":1700000100,"
        "\"jti\":" OK_JTI "}",
        "{\"sub\":\"a\",\"uid\":1,\"gid\":1,\"grp\":[ ],\"iat\":1,\"exp\":1700000100,"
        "\"jti\":" OK_JTI "}",
        "{\"sub\":\"a\",\"uid\":1,\"gid\":1,\"grp\":[],\"iat\":1,\"exp\":1700000100,"
        "\"jti\":" OK_JTI "}\n",
        "{\"sub\":\"a\",\"uid\":1,\"gid\":1,\"grp\":[],\"iat\":1,\"exp\":1700000100,"
        "\"jti\":" OK_JTI "}x",
        "{\"uid\":1,\"sub\":\"a\",\"gid\":1,\"grp\":[],\"iat\":1,\"exp\":1700000100,"
        "\"jti\":" OK_JTI "}",
        "{\"\\u0073ub\":\"a\",\"uid\":1,\"gid\":1,\"grp\":[],\"iat\":1,\"exp\":1700000100,"
        "\"jti\":" OK_JTI "}",
        "{\"sub\":\"a\",\"uid\":1,\"gid\":1,\"grp\":[],\"iat\":1,\"exp\":1700000100,"
        "\"jti\":" OK_JTI "",
        "[]",
        "{}",
        "null",
        "\"a\"",
        "x",
    };
    for (size_t i = 0; i < sizeof(noncanon) / sizeof(noncanon[0]); i++) {
        exo_token_status_t s = verify_payload(noncanon[i]);
        if (s != EXO_TOKEN_MALFORMED) fprintf(stderr, "accepted: %s\n", noncanon[i]);
        CHECK(s == EXO_TOKEN_MALFORMED);
    }
#undef BAD
#undef CLAIMS
}

static void test_issue_errors(void)
{
    exo_token_claims_t c;
    char tok[EXO_TOKEN_MAX + 1];
    static const char *bad_users[] = {"",         "a b",     "al/ice",
                                      "al\\ice",  "al\"ice", "al,ice",
                                      "\xc3\xa9", "a\n",     "abcdefghijklmnopqrstuvwxyz0123456"};
    for (size_t i = 0; i < sizeof(bad_users) / sizeof(bad_users[0]); i++) {
        claims(&c, "x", "wheel");
        memset(c.user, 0, sizeof(c.user));
        memcpy(c.user, bad_users[i], strnlen(bad_users[i], sizeof(c.user)));
        strcpy(c.jti, "untouched");
        strcpy(tok, "junk");
        CHECK(exo_token_issue(key1_, &c, tok, sizeof(tok)) == -EINVAL);
        CHECK_STR(c.jti, "untouched");
        CHECK_STR(tok, "");
    }
    /* a user field with no NUL in it */
    claims(&c, "x", "wheel");
    memset(c.user, 'a', sizeof(c.user));
    CHECK(exo_token_issue(key1_, &c, tok, sizeof(tok)) == -EINVAL);

    static const char *bad_groups[] = {",",
                                       "a,",
                                       ",a",
                                       "a,,b",
                                       "a b",
                                       "wheel,a b",
                                       "a;b",
                                       "\"a\"",
                                       "a\\b",
                                       "a,\xc3\xa9",
                                       "wheel,abcdefghijklmnopqrstuvwxyz0123456"};
    for (size_t i = 0; i < sizeof(bad_groups) / sizeof(bad_groups[0]); i++) {
        claims(&c, "alice", bad_groups[i]);
        CHECK(exo_token_issue(key1_, &c, tok, sizeof(tok)) == -EINVAL);
    }
    claims(&c, "alice", "");
    memset(c.groups, 'a', sizeof(c.groups));
    CHECK(exo_token_issue(key1_, &c, tok, sizeof(tok)) == -EINVAL);

    claims(&c, "alice", "wheel");
    c.iat = -1;
    CHECK(exo_token_issue(key1_, &c, tok, sizeof(tok)) == -EINVAL);
    claims(&c, "alice", "wheel");
    c.exp = INT64_MIN;
    CHECK(exo_token_issue(key1_, &c, tok, sizeof(tok)) == -EINVAL);

    /* out too small, by one and by all */
    claims(&c, "alice", "wheel");
    int n = exo_token_issue(key1_, &c, tok, sizeof(tok));
    REQUIRE(n > 0);
    char small[EXO_TOKEN_MAX];
    memset(small, 'x', sizeof(small));
    CHECK(exo_token_issue(key1_, &c, small, (size_t)n) == -ENOSPC);
    CHECK(small[0] == '\0');
    CHECK(exo_token_issue(key1_, &c, small, 1) == -ENOSPC);
    CHECK(exo_token_issue(key1_, &c, small, 0) == -ENOSPC);
    CHECK(exo_token_issue(key1_, &c, NULL, 0) == -ENOSPC);
    CHECK(exo_token_issue(key1_, &c, small, (size_t)n + 1) == n);
    CHECK(small[n] == '\0');
    CHECK(exo_token_verify(key1_, small, (size_t)n, NOW, NULL, NULL) == EXO_TOKEN_VALID);
}

static void test_status_reason(void)
{
    CHECK_STR(exo_token_status_reason(EXO_TOKEN_VALID), "valid");
    CHECK_STR(exo_token_status_reason(EXO_TOKEN_MALFORMED), "malformed token");
    CHECK_STR(exo_token_status_reason(EXO_TOKEN_BAD_SIGNATURE), "bad signature");
    CHECK_STR(exo_token_status_reason(EXO_TOKEN_EXPIRED), "token expired");
    CHECK_STR(exo_token_status_reason(EXO_TOKEN_REVOKED), "token revoked");
    CHECK(exo_token_status_reason((exo_token_status_t)99) != NULL);
}

/* ---------------------------------------------------------------------------------------- */
/* The key file */

static void test_key_file(void)
{
    unsigned char k1[EXO_TOKEN_KEY_LEN], k2[EXO_TOKEN_KEY_LEN], k3[EXO_TOKEN_KEY_LEN];
    char sd[256], kp[512], other[256];
    struct stat st;

    path_in(sd, sizeof(sd), "state1");
    REQUIRE(mkdir(sd, 0700) == 0);
    snprintf(kp, sizeof(kp), "%s/token-key", sd);
    err_[0] = 'x';
    CHECK(exo_token_key_load_or_create(sd, k1, err_, sizeof(err_)) == 0);
    CHECK_STR(err_, "");
    REQUIRE(lstat(kp, &st) == 0);
    CHECK(S_ISREG(st.st_mode));
    CHECK((st.st_mode & 07777) == 0600);
    CHECK(st.st_size == EXO_TOKEN_KEY_LEN);
    CHECK(st.st_nlink == 1); /* the temporary name is gone */
    unsigned char zero[EXO_TOKEN_KEY_LEN] = {0};
    CHECK(memcmp(k1, zero, sizeof(zero)) != 0);
    /* nothing else was left in the directory */
    int files = 0;
    DIR *d = opendir(sd);
    REQUIRE(d != NULL);
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) files++;
    closedir(d);
    CHECK(files == 1);

    /* loaded again: the same key */
    CHECK(exo_token_key_load_or_create(sd, k2, err_, sizeof(err_)) == 0);
    CHECK(memcmp(k1, k2, sizeof(k1)) == 0);
    /* another directory: another key */
    path_in(other, sizeof(other), "state2");
    REQUIRE(mkdir(other, 0700) == 0);
    CHECK(exo_token_key_load_or_create(other, k3, err_, sizeof(err_)) == 0);
    CHECK(memcmp(k1, k3, sizeof(k1)) != 0);

    /* permissions for group or others */
    static const mode_t modes[] = {0644, 0640, 0604, 0602, 0620, 0610, 0601};
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        chmod(kp, modes[i]);
        err_[0] = '\0';
        CHECK(exo_token_key_load_or_create(sd, k2, err_, sizeof(err_)) == -EPERM);
        CHECK(strstr(err_, "token-key") != NULL && strstr(err_, "0600") != NULL);
    }
    chmod(kp, 0400);
    CHECK(exo_token_key_load_or_create(sd, k2, err_, sizeof(err_)) == 0);
    CHECK(memcmp(k1, k2, sizeof(k1)) == 0);
    chmod(kp, 0600);

    /* wrong size: the file is refused, not replaced */
    CHECK(truncate(kp, 31) == 0);
    CHECK(exo_token_key_load_or_create(sd, k2, err_, sizeof(err_)) == -EINVAL);
    CHECK(strstr(err_, "31 bytes") != NULL);
    CHECK(truncate(kp, 33) == 0);
    CHECK(exo_token_key_load_or_create(sd, k2, err_, sizeof(err_)) == -EINVAL);
    CHECK(truncate(kp, 0) == 0);
    CHECK(exo_token_key_load_or_create(sd, k2, err_, sizeof(err_)) == -EINVAL);
    CHECK(stat(kp, &st) == 0 && st.st_size == 0);

    /* a symbolic link to a good key file */
    unlink(kp);
    CHECK(symlink(other, kp) == 0); /* to a directory */
    CHECK(exo_token_key_load_or_create(sd, k2, err_, sizeof(err_)) == -ELOOP);
    unlink(kp);
    char target[600];
    snprintf(target, sizeof(target), "%s/token-key", other);
    CHECK(symlink(target, kp) == 0);
    err_[0] = '\0';
    CHECK(exo_token_key_load_or_create(sd, k2, err_, sizeof(err_)) == -ELOOP);
    CHECK(strstr(err_, "symbolic link") != NULL);
    /* a dangling one is not followed to create the key somewhere else */
    unlink(kp);
    snprintf(target, sizeof(target), "%s/elsewhere", dir_);
    CHECK(symlink(target, kp) == 0);
    CHECK(exo_token_key_load_or_create(sd, k2, err_, sizeof(err_)) == -ELOOP);
    CHECK(access(target, F_OK) != 0);
    unlink(kp);

    /* not a regular file: a directory, a FIFO (which must not block) */
    CHECK(mkdir(kp, 0700) == 0);
    CHECK(exo_token_key_load_or_create(sd, k2, err_, sizeof(err_)) == -EINVAL);
    CHECK(strstr(err_, "regular") != NULL);
    rmdir(kp);
    CHECK(mkfifo(kp, 0600) == 0);
    CHECK(exo_token_key_load_or_create(sd, k2, err_, sizeof(err_)) == -EINVAL);
    unlink(kp);

    /* another owner */
    if (geteuid() == 0) {
        CHECK(exo_token_key_load_or_create(sd, k2, err_, sizeof(err_)) == 0);
        CHECK(chown(kp, 65534, 65534) == 0);
        CHECK(exo_token_key_load_or_create(sd, k3, err_, sizeof(err_)) == -EPERM);
        CHECK(strstr(err_, "owned by uid 65534") != NULL);
        CHECK(chown(kp, 0, 0) == 0);
        CHECK(exo_token_key_load_or_create(sd, k3, err_, sizeof(err_)) == 0);
        CHECK(memcmp(k2, k3, sizeof(k2)) == 0);
        unlink(kp);
    }

    /* a temporary file left by a crashed process with our pid does not get in the way */
    char tmp[600];
    snprintf(tmp, sizeof(tmp), "%s/.token-key.%ld.tmp", sd, (long)getpid());
    write_text(tmp, "leftover", 0644);
    CHECK(exo_token_key_load_or_create(sd, k2, err_, sizeof(err_)) == 0);
    CHECK(access(tmp, F_OK) != 0);
    CHECK(stat(kp, &st) == 0 && (st.st_mode & 07777) == 0600 && st.st_size == 32);

    /* a state directory that does not exist */
    snprintf(target, sizeof(target), "%s/missing", dir_);
    err_[0] = '\0';
    CHECK(exo_token_key_load_or_create(target, k2, err_, sizeof(err_)) == -ENOENT);
    CHECK(err_[0] != '\0');
    CHECK(exo_token_key_load_or_create(target, k2, NULL, 0) == -ENOENT);
}

/* ---------------------------------------------------------------------------------------- */
/* The revocation set */

static void jti_of(char out[33], unsigned i)
{
    snprintf(out, 33, "%08x%08x%08x%08x", i, i * 2654435761u, ~i, 0x5eed1234u);
}

static void test_revoked_basic(void)
{
    exo_revoked_t r;
    char j[33];
    exo_revoked_init(&r);
    CHECK(exo_revoked_count(&r) == 0);
    CHECK(!exo_revoked_contains(&r, JTI));
    exo_revoked_prune(&r, NOW); /* on an empty set */
    CHECK(exo_revoked_add(&r, JTI, NOW + 100) == 0);
    CHECK(exo_revoked_contains(&r, JTI));
    CHECK(exo_revoked_contains(&r, "0123456789ABCDEF0123456789ABCDEF"));
    CHECK(exo_revoked_count(&r) == 1);
    CHECK(exo_revoked_add(&r, JTI, NOW + 50) == 0); /* twice: still one, later exp kept */
    CHECK(exo_revoked_count(&r) == 1);
    exo_revoked_prune(&r, NOW + 60);
    CHECK(exo_revoked_contains(&r, JTI));
    CHECK(exo_revoked_add(&r, JTI, NOW + 200) == 0);
    exo_revoked_prune(&r, NOW + 150);
    CHECK(exo_revoked_contains(&r, JTI));
    exo_revoked_prune(&r, NOW + 200); /* exp <= now goes */
    CHECK(!exo_revoked_contains(&r, JTI));
    CHECK(exo_revoked_count(&r) == 0);

    /* not 32 hex digits */
    static const char *bad[] = {"",
                                "0123456789abcdef0123456789abcde",
                                "0123456789abcdef0123456789abcdef0",
                                "0123456789abcdef0123456789abcdeg",
                                "0123456789abcdef 123456789abcdef",
                                "0123456789abcdef0123456789abcde\n",
                                "x0123456789abcdef0123456789abcdef"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK(exo_revoked_add(&r, bad[i], NOW + 100) == -EINVAL);
        CHECK(!exo_revoked_contains(&r, bad[i]));
    }
    CHECK(exo_revoked_add(&r, NULL, NOW + 100) == -EINVAL);
    CHECK(!exo_revoked_contains(&r, NULL));
    CHECK(!exo_revoked_contains(NULL, JTI));
    CHECK(exo_revoked_count(&r) == 0);

    /* many, pruned by halves */
    for (unsigned i = 1; i <= 1000; i++) {
        jti_of(j, i);
        CHECK(exo_revoked_add(&r, j, (int64_t)i) == 0);
    }
    CHECK(exo_revoked_count(&r) == 1000);
    exo_revoked_prune(&r, 500);
    CHECK(exo_revoked_count(&r) == 500);
    int wrong = 0;
    for (unsigned i = 1; i <= 1000; i++) {
        jti_of(j, i);
        if (exo_revoked_contains(&r, j) != (i > 500)) wrong++;
    }
    CHECK(wrong == 0);
    exo_revoked_free(&r);
    CHECK(exo_revoked_count(&r) == 0);
    CHECK(!exo_revoked_contains(&r, j));
    CHECK(exo_revoked_add(&r, j, 5) == 0); /* usable again after free */
    CHECK(exo_revoked_contains(&r, j));
    exo_revoked_free(&r);
}

/* Random adds and prunes against a plain array as the model: prune rebuilds the table in
 * place, which is where a hash table is easiest to get wrong. */
static void test_revoked_model(void)
{
    enum { N = 3000 };
    static int64_t model[N]; /* exp of jti_of(i), or -1 if absent */
    exo_revoked_t r;
    char j[33];
    unsigned seed = 12345;
    int wrong = 0;
    exo_revoked_init(&r);
    for (int i = 0; i < N; i++)
        model[i] = -1;
    for (int round = 0; round < 40; round++) {
        for (int k = 0; k < 200; k++) {
            seed = seed * 1103515245u + 12345u;
            unsigned i = (seed >> 8) % N;
            int64_t exp = (int64_t)((seed >> 4) % 1000) + round * 25;
            jti_of(j, i);
            CHECK(exo_revoked_add(&r, j, exp) == 0);
            if (exp > model[i]) model[i] = exp;
        }
        int64_t now = round * 25 + (int64_t)(seed % 300);
        exo_revoked_prune(&r, now);
        size_t count = 0;
        for (int i = 0; i < N; i++) {
            if (model[i] >= 0 && model[i] <= now) model[i] = -1;
            if (model[i] >= 0) count++;
            jti_of(j, (unsigned)i);
            if (exo_revoked_contains(&r, j) != (model[i] >= 0)) wrong++;
        }
        if (exo_revoked_count(&r) != count) wrong++;
    }
    CHECK(wrong == 0);
    exo_revoked_free(&r);
}

static void test_revoked_full(void)
{
    exo_revoked_t r;
    char j[33];
    int failed = 0;
    exo_revoked_init(&r);
    int64_t far = (int64_t)time(NULL) + 86400;
    for (unsigned i = 0; i < EXO_REVOKED_MAX; i++) {
        jti_of(j, i);
        /* every other entry has long expired */
        if (exo_revoked_add(&r, j, i % 2 ? far : 1) != 0) failed++;
    }
    CHECK(failed == 0);
    CHECK(exo_revoked_count(&r) == EXO_REVOKED_MAX);
    /* full: a known id is still fine, a new one makes room by pruning */
    jti_of(j, 1);
    CHECK(exo_revoked_add(&r, j, far + 1) == 0);
    CHECK(exo_revoked_count(&r) == EXO_REVOKED_MAX);
    jti_of(j, EXO_REVOKED_MAX);
    CHECK(exo_revoked_add(&r, j, far) == 0);
    CHECK(exo_revoked_count(&r) == EXO_REVOKED_MAX / 2 + 1);
    /* fill up with unexpired entries: then add fails */
    for (unsigned i = EXO_REVOKED_MAX + 1; exo_revoked_count(&r) < EXO_REVOKED_MAX; i++) {
        jti_of(j, i);
        if (exo_revoked_add(&r, j, far) != 0) failed++;
    }
    CHECK(failed == 0);
    CHECK(exo_revoked_add(&r, JTI, far) == -ENOSPC);
    CHECK(!exo_revoked_contains(&r, JTI));
    jti_of(j, 3);
    CHECK(exo_revoked_add(&r, j, far) == 0);
    CHECK(exo_revoked_count(&r) == EXO_REVOKED_MAX);
    jti_of(j, 2);
    CHECK(!exo_revoked_contains(&r, j)); /* pruned */
    exo_revoked_free(&r);
}

static void test_revoked_file(void)
{
    exo_revoked_t r, s;
    char path[512], tmp[600], j[33];
    struct stat st;
    size_t skipped = 99;

    path_in(path, sizeof(path), "revoked");
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    exo_revoked_init(&r);
    exo_revoked_init(&s);

    /* missing file: empty set, and it replaces what was there */
    CHECK(exo_revoked_add(&s, JTI, NOW + 10) == 0);
    CHECK(exo_revoked_load(&s, path, NOW, &skipped, err_, sizeof(err_)) == 0);
    CHECK(exo_revoked_count(&s) == 0 && skipped == 0);

    /* round trip */
    for (unsigned i = 0; i < 5000; i++) {
        jti_of(j, i);
        CHECK(exo_revoked_add(&r, j, NOW + 1 + i) == 0);
    }
    CHECK(exo_revoked_add(&r, JTI, -5) == 0); /* negative exp: not written */
    CHECK(exo_revoked_save(&r, path, err_, sizeof(err_)) == 0);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 07777) == 0600 && S_ISREG(st.st_mode));
    CHECK(access(tmp, F_OK) != 0);
    CHECK(exo_revoked_add(&s, JTI, NOW + 10) == 0);
    CHECK(exo_revoked_load(&s, path, NOW, &skipped, err_, sizeof(err_)) == 0);
    CHECK(skipped == 0);
    CHECK(exo_revoked_count(&s) == 5000);
    CHECK(!exo_revoked_contains(&s, JTI));
    int wrong = 0;
    for (unsigned i = 0; i < 5000; i++) {
        jti_of(j, i);
        if (!exo_revoked_contains(&s, j)) wrong++;
    }
    CHECK(wrong == 0);
    /* loading at a later time drops what has expired by then; the exp values came through */
    CHECK(exo_revoked_load(&s, path, NOW + 1000, &skipped, err_, sizeof(err_)) == 0);
    CHECK(exo_revoked_count(&s) == 4000);
    jti_of(j, 999);
    CHECK(!exo_revoked_contains(&s, j));
    jti_of(j, 1000);
    CHECK(exo_revoked_contains(&s, j));

    /* malformed lines are skipped and counted, expired ones dropped silently */
    write_text(path,
               "0123456789abcdef0123456789abcdef 1700000100\n"          /* ok */
               "00000000000000000000000000000001 1700000000\n"          /* expired (exp == now) */
               "00000000000000000000000000000002 5\n"                   /* expired */
               "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA 1800000000\n"          /* ok, upper case */
               "00000000000000000000000000000003 9223372036854775807\n" /* ok */
               "zz000000000000000000000000000004 1800000000\n"          /* not hex */
               "0000000000000000000000000000005 1800000000\n"           /* 31 digits */
               "000000000000000000000000000000006 1800000000\n"         /* 33 digits */
               "00000000000000000000000000000007  1800000000\n"         /* two spaces */
               "00000000000000000000000000000008 01800000000\n"         /* leading zero */
               "00000000000000000000000000000009 -1800000000\n"         /* sign */
               "0000000000000000000000000000000a 9223372036854775808\n" /* too big */
               "0000000000000000000000000000000b 1800000000 x\n"        /* trailing */
               "0000000000000000000000000000000c 1800000000\r\n"        /* CR */
               "0000000000000000000000000000000d\n"                     /* no exp */
               "\n"                                                     /* empty */
               "0000000000000000000000000000000e 1800000000",           /* no newline */
               0600);
    CHECK(exo_revoked_load(&s, path, NOW, &skipped, err_, sizeof(err_)) == 0);
    CHECK(exo_revoked_count(&s) == 3);
    CHECK(skipped == 12);
    CHECK(exo_revoked_contains(&s, JTI));
    CHECK(exo_revoked_contains(&s, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
    CHECK(exo_revoked_contains(&s, "00000000000000000000000000000003"));
    CHECK(!exo_revoked_contains(&s, "00000000000000000000000000000001"));
    CHECK(!exo_revoked_contains(&s, "0000000000000000000000000000000e"));
    CHECK(exo_revoked_load(&s, path, NOW, NULL, NULL, 0) == 0);
    CHECK(exo_revoked_count(&s) == 3);
    /* an empty file */
    write_text(path, "", 0600);
    CHECK(exo_revoked_load(&s, path, NOW, &skipped, err_, sizeof(err_)) == 0);
    CHECK(exo_revoked_count(&s) == 0 && skipped == 0);

    /* save replaces a stale temporary file, even a symbolic link, without following it */
    char victim[512];
    path_in(victim, sizeof(victim), "victim");
    write_text(victim, "precious\n", 0644);
    CHECK(symlink(victim, tmp) == 0);
    CHECK(exo_revoked_save(&r, path, err_, sizeof(err_)) == 0);
    CHECK(stat(victim, &st) == 0 && st.st_size == 9 && (st.st_mode & 07777) == 0644);
    write_text(tmp, "stale", 0666);
    CHECK(exo_revoked_save(&r, path, err_, sizeof(err_)) == 0);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 07777) == 0600);
    CHECK(access(tmp, F_OK) != 0);

    /* an empty set saves as an empty file */
    exo_revoked_free(&s);
    CHECK(exo_revoked_save(&s, path, err_, sizeof(err_)) == 0);
    CHECK(stat(path, &st) == 0 && st.st_size == 0);

    /* errors: loading a directory, a symbolic link; saving into a missing directory. A failed
     * load leaves the set as it was. */
    CHECK(exo_revoked_add(&s, JTI, NOW + 10) == 0);
    err_[0] = '\0';
    CHECK(exo_revoked_load(&s, dir_, NOW, &skipped, err_, sizeof(err_)) == -EINVAL);
    CHECK(strstr(err_, "regular") != NULL);
    CHECK(exo_revoked_count(&s) == 1);
    char link[512];
    path_in(link, sizeof(link), "revoked-link");
    CHECK(symlink(path, link) == 0);
    CHECK(exo_revoked_load(&s, link, NOW, &skipped, err_, sizeof(err_)) == -ELOOP);
    CHECK(exo_revoked_contains(&s, JTI));
    char missing[512];
    path_in(missing, sizeof(missing), "no/such/dir/revoked");
    err_[0] = '\0';
    CHECK(exo_revoked_save(&r, missing, err_, sizeof(err_)) == -ENOENT);
    CHECK(strstr(err_, "no/such/dir") != NULL);

    /* a file with more than EXO_REVOKED_MAX live entries is an error, not a partial set */
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL);
    for (unsigned i = 0; i <= EXO_REVOKED_MAX; i++) {
        jti_of(j, i);
        fprintf(f, "%s %" PRId64 "\n", j, (int64_t)time(NULL) + 86400);
    }
    fclose(f);
    err_[0] = '\0';
    CHECK(exo_revoked_load(&s, path, NOW, &skipped, err_, sizeof(err_)) == -ENOSPC);
    CHECK(strstr(err_, "more than") != NULL);
    CHECK(exo_revoked_count(&s) == 1);

    exo_revoked_free(&r);
    exo_revoked_free(&s);
}

/* ---------------------------------------------------------------------------------------- */

static void test_bench(void)
{
    exo_token_claims_t c, got;
    exo_revoked_t rev;
    char tok[EXO_TOKEN_MAX + 1], j[33];
    const char *env = getenv("EXO_TOKEN_BENCH");
    long iters = env ? atol(env) : 20000;
    if (iters <= 0) return;
    exo_revoked_init(&rev);
    for (unsigned i = 0; i < 1000; i++) {
        jti_of(j, i);
        CHECK(exo_revoked_add(&rev, j, NOW + 1000) == 0);
    }
    claims(&c, "alice", "alice,wheel,docker");
    int n = exo_token_issue(key1_, &c, tok, sizeof(tok));
    REQUIRE(n > 0);
    struct timespec t0, t1;
    long bad = 0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < iters; i++)
        if (exo_token_verify(key1_, tok, (size_t)n, NOW, &rev, &got) != EXO_TOKEN_VALID) bad++;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CHECK(bad == 0);
    double us = ((double)(t1.tv_sec - t0.tv_sec) * 1e6 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e3);
    printf("verify: %ld tokens of %d bytes in %.1f ms, %.2f us each\n", iters, n, us / 1e3,
           us / (double)iters);
    exo_revoked_free(&rev);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int main(void)
{
    if (mkdtemp(dir_) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    for (int i = 0; i < EXO_TOKEN_KEY_LEN; i++) {
        key1_[i] = (unsigned char)(i * 7 + 1);
        key2_[i] = (unsigned char)(i * 7 + 2);
    }
    RUN(test_round_trip);
    RUN(test_other_key);
    RUN(test_tampering);
    RUN(test_structure);
    RUN(test_size_bounds);
    RUN(test_times);
    RUN(test_revoked_token);
    RUN(test_bad_claims);
    RUN(test_issue_errors);
    RUN(test_status_reason);
    RUN(test_key_file);
    RUN(test_revoked_basic);
    RUN(test_revoked_model);
    RUN(test_revoked_full);
    RUN(test_revoked_file);
    RUN(test_bench);
    nftw(dir_, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    TEST_END();
}
