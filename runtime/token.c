/* Login tokens and their revocation set.
 *
 * Format. A token is a JWT (RFC 7519) in compact JWS form (RFC 7515):
 *   base64url(header) "." base64url(payload) "." base64url(HMAC-SHA256(key, first two parts))
 * with base64url unpadded (RFC 7515 section 2), the header always the same 27 bytes
 *   {"alg":"HS256","typ":"JWT"}
 * and the payload, compact and in this order,
 *   {"sub":"alice","uid":1000,"gid":1000,"grp":["alice","wheel"],"iat":1700000000,
 *    "exp":1700003600,"jti":"<32 lower-case hex digits>"}
 * The key is 32 random bytes, the hash's output size that RFC 7518 section 3.2 requires at least
 * for HS256; only the root monitor's state directory holds it on disk.
 *
 * Security choices.
 * - HS256 only, and the header must be byte for byte the one we write, so there is no algorithm
 *   negotiation at all: "alg":"none", HS512, RS256-with-the-HMAC-key confusion and the rest are
 *   not even looked at, they are MALFORMED. The only issuer and the only verifier are this
 *   agent, which shares one symmetric key between its monitor and its worker; nothing needs
 *   public-key tokens.
 * - Everything about the text is checked before anything is trusted: length (at most
 *   EXO_TOKEN_MAX), exactly two dots, strict base64url (no '=' padding, no character outside the
 *   alphabet, no non-zero bits left over in the last character, so each token has one spelling),
 *   a signature of exactly 32 bytes. The HMAC is then compared with CRYPTO_memcmp, in constant
 *   time, BEFORE the payload's JSON is looked at: a forged payload never reaches a parser (only
 *   the base64url decoder, a fixed mapping), and the comparison leaks no prefix length to a
 *   timing attacker.
 * - Even a correctly signed payload is parsed strictly (defence in depth, should the key leak or
 *   a bug ever sign something odd): the parser accepts exactly the text that the writer
 *   produces and nothing else. Names must be plain account names (so no escapes), numbers
 *   plain decimal without sign, fraction, exponent or leading zeros, every claim present once,
 *   in order, without whitespace. That rules out duplicate members (JSON parsers disagree on
 *   which one wins) and unknown claims, and needs no general JSON parser on this path.
 * - "jti" is 128 bits from RAND_bytes: unguessable and, for practical purposes, unique, so a
 *   logout can revoke exactly one token, server-side, without a session table. The revocation
 *   set only needs each id until its token's exp, after which the token is dead anyway, which
 *   keeps the set (and its file) bounded; and it is capped at EXO_REVOKED_MAX entries, refusing
 *   more rather than growing without limit.
 * - iat more than EXO_TOKEN_IAT_SKEW seconds in the future is MALFORMED: we never issue such a
 *   token, so it means a clock jump or a forged token, and refusing it is the safe side.
 *
 * The revocation set is an open-addressing hash table with linear probing, at most half full,
 * hashed with SipHash-2-4 under a per-set random key so that ids chosen by somebody else
 * (e.g. an operator revoking by id) cannot be picked to collide. */
#include "token.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#define JTI_BYTES 16
#define SIG_BYTES 32
#define SIG_B64_LEN 43 /* 32 bytes, unpadded */

/* base64url of {"alg":"HS256","typ":"JWT"} */
static const char header_b64[] = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";
#define HEADER_B64_LEN (sizeof(header_b64) - 1)

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---------------------------------------------------------------------------------------- */
/* base64url (RFC 4648 section 5) without padding */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static size_t b64url_len(size_t n)
{
    return n / 3 * 4 + (n % 3 == 0 ? 0 : n % 3 + 1);
}

/* Writes b64url_len(n) characters to out (no NUL). */
static void b64url_encode(const unsigned char *in, size_t n, char *out)
{
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *out++ = b64_alphabet[v >> 18];
        *out++ = b64_alphabet[(v >> 12) & 63];
        *out++ = b64_alphabet[(v >> 6) & 63];
        *out++ = b64_alphabet[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        *out++ = b64_alphabet[v >> 18];
        *out++ = b64_alphabet[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        *out++ = b64_alphabet[v >> 18];
        *out++ = b64_alphabet[(v >> 12) & 63];
        *out++ = b64_alphabet[(v >> 6) & 63];
    }
}

/* The value of each base64url character, -1 for every other byte. */
static const signed char b64url_values[256] = {
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 62, -1, -1,
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, -1, -1, -1, -1, -1, -1, -1, 0,  1,  2,  3,  4,  5,  6,
    7,  8,  9,  10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, -1, -1, -1, -1, 63,
    -1, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48,
    49, 50, 51, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
};

/* Decodes in[0..n) into out (room for cap bytes). Strict: only the 64 characters of the
 * alphabet (so no '=' padding), no length that leaves a lone character, and the bits below the
 * last whole byte must be zero, so that every byte string has exactly one encoding. Returns the
 * decoded length or -1. */
static long b64url_decode(const char *in, size_t n, unsigned char *out, size_t cap)
{
    size_t rem = n % 4, olen = n / 4 * 3 + (rem == 0 ? 0 : rem - 1), o = 0;
    uint32_t v = 0;
    if (rem == 1 || olen > cap) return -1;
    for (size_t i = 0; i < n; i++) {
        int d = b64url_values[(unsigned char)in[i]];
        if (d < 0) return -1;
        v = v << 6 | (uint32_t)d;
        if (i % 4 == 3) {
            out[o++] = (unsigned char)(v >> 16);
            out[o++] = (unsigned char)(v >> 8);
            out[o++] = (unsigned char)v;
            v = 0;
        }
    }
    if (rem == 2) {
        if (v & 0xf) return -1;
        out[o++] = (unsigned char)(v >> 4);
    } else if (rem == 3) {
        if (v & 0x3) return -1;
        out[o++] = (unsigned char)(v >> 10);
        out[o++] = (unsigned char)(v >> 2);
    }
    return (long)o;
}

/* ---------------------------------------------------------------------------------------- */
/* Claims */

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static void hex_encode(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int is_name_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

/* A plain account name: [A-Za-z0-9_.-]{1,32}. */
static int is_name(const char *s, size_t n)
{
    if (n == 0 || n > 32) return 0;
    for (size_t i = 0; i < n; i++)
        if (!is_name_char((unsigned char)s[i])) return 0;
    return 1;
}

/* "" or names joined by single commas, NUL-terminated within the field. */
static int groups_valid(const char *g, size_t cap)
{
    size_t len = strnlen(g, cap);
    if (len == cap) return 0;
    if (len == 0) return 1;
    for (const char *p = g;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (!is_name(p, n)) return 0;
        if (comma == NULL) return 1;
        p = comma + 1;
    }
}

/* A bounded string builder: writes what fits, remembers whether anything did not. */
typedef struct {
    char *p;
    size_t len, cap;
    int over;
} sbuf_t;

static void sb_put(sbuf_t *b, const char *s, size_t n)
{
    if (b->over || n > b->cap - b->len) {
        b->over = 1;
        return;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void sb_puts(sbuf_t *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void sb_uint(sbuf_t *b, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    sb_put(b, tmp + i, sizeof(tmp) - i);
}

/* The payload for c, whose names are known to be valid and iat, exp >= 0. parse_claims accepts
 * exactly this form. */
static void write_payload(sbuf_t *b, const exo_token_claims_t *c)
{
    sb_puts(b, "{\"sub\":\"");
    sb_puts(b, c->user);
    sb_puts(b, "\",\"uid\":");
    sb_uint(b, c->uid);
    sb_puts(b, ",\"gid\":");
    sb_uint(b, c->gid);
    sb_puts(b, ",\"grp\":[");
    for (const char *p = c->groups; *p != '\0';) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (p != c->groups) sb_put(b, ",", 1);
        sb_put(b, "\"", 1);
        sb_put(b, p, n);
        sb_put(b, "\"", 1);
        p += n + (comma != NULL);
    }
    sb_puts(b, "],\"iat\":");
    sb_uint(b, (uint64_t)c->iat);
    sb_puts(b, ",\"exp\":");
    sb_uint(b, (uint64_t)c->exp);
    sb_puts(b, ",\"jti\":\"");
    sb_puts(b, c->jti);
    sb_puts(b, "\"}");
}

/* v[0..n) is a plain decimal integer in [0, max]: digits only, no leading zero. */
static int get_uint(const char *v, size_t n, uint64_t max, uint64_t *out)
{
    uint64_t x = 0;
    if (n == 0 || (n > 1 && v[0] == '0')) return 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9') return 0;
        unsigned d = (unsigned)(v[i] - '0');
        if (x > (max - d) / 10) return 0;
        x = x * 10 + d;
    }
    *out = x;
    return 1;
}

/* The payload parser: a cursor that matches exactly the text write_payload produces, so that
 * anything else (whitespace, other order, duplicate or unknown members, escapes, numbers with
 * sign, fraction, exponent or leading zeros) fails at the first byte that differs. Only our
 * own writer ever makes payloads, so there is no other JSON to accept. */
typedef struct {
    const char *p, *end;
} cursor_t;

static int cur_lit(cursor_t *k, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(k->end - k->p) < n || memcmp(k->p, lit, n) != 0) return 0;
    k->p += n;
    return 1;
}

/* A JSON string holding a plain account name, copied to dst. */
static int cur_name(cursor_t *k, char dst[33])
{
    if (!cur_lit(k, "\"")) return 0;
    const char *s = k->p;
    while (k->p < k->end && is_name_char((unsigned char)*k->p))
        k->p++;
    size_t n = (size_t)(k->p - s);
    if (!is_name(s, n) || !cur_lit(k, "\"")) return 0;
    memcpy(dst, s, n);
    dst[n] = '\0';
    return 1;
}

static int cur_uint(cursor_t *k, uint64_t max, uint64_t *out)
{
    const char *s = k->p;
    while (k->p < k->end && *k->p >= '0' && *k->p <= '9')
        k->p++;
    return get_uint(s, (size_t)(k->p - s), max, out);
}

/* Parses the claims out of a payload whose signature has been checked. Returns 1 or 0. */
static int parse_claims(const char *s, size_t n, exo_token_claims_t *c)
{
    cursor_t k = {s, s + n};
    uint64_t uid, gid, iat, exp;
    size_t glen = 0;

    memset(c, 0, sizeof(*c));
    if (!cur_lit(&k, "{\"sub\":") || !cur_name(&k, c->user) || !cur_lit(&k, ",\"uid\":") ||
        !cur_uint(&k, UINT32_MAX, &uid) || !cur_lit(&k, ",\"gid\":") ||
        !cur_uint(&k, UINT32_MAX, &gid) || !cur_lit(&k, ",\"grp\":["))
        return 0;
    if (!cur_lit(&k, "]")) {
        do {
            char name[33];
            if (!cur_name(&k, name)) return 0;
            size_t nl = strlen(name);
            if (glen + (glen > 0) + nl >= sizeof(c->groups)) return 0;
            if (glen > 0) c->groups[glen++] = ',';
            memcpy(c->groups + glen, name, nl + 1);
            glen += nl;
        } while (cur_lit(&k, ","));
        if (!cur_lit(&k, "]")) return 0;
    }
    if (!cur_lit(&k, ",\"iat\":") || !cur_uint(&k, INT64_MAX, &iat) || !cur_lit(&k, ",\"exp\":") ||
        !cur_uint(&k, INT64_MAX, &exp) || !cur_lit(&k, ",\"jti\":\"") ||
        k.end - k.p < 2 * JTI_BYTES)
        return 0;
    for (size_t i = 0; i < 2 * JTI_BYTES; i++)
        if (!((k.p[i] >= '0' && k.p[i] <= '9') || (k.p[i] >= 'a' && k.p[i] <= 'f'))) return 0;
    memcpy(c->jti, k.p, 2 * JTI_BYTES);
    c->jti[2 * JTI_BYTES] = '\0';
    k.p += 2 * JTI_BYTES;
    if (!cur_lit(&k, "\"}") || k.p != k.end) return 0;
    c->uid = (uint32_t)uid;
    c->gid = (uint32_t)gid;
    c->iat = (int64_t)iat;
    c->exp = (int64_t)exp;
    return 1;
}

/* ---------------------------------------------------------------------------------------- */
/* Issue and verify */

static int hmac_sha256(const unsigned char key[EXO_TOKEN_KEY_LEN], const char *data, size_t len,
                       unsigned char mac[SIG_BYTES])
{
    /* HMAC() is not deprecated in OpenSSL 3 (only the HMAC_CTX API is) and has the same
     * signature in 1.1.1. */
    unsigned int maclen = 0;
    if (HMAC(EVP_sha256(), key, EXO_TOKEN_KEY_LEN, (const unsigned char *)data, len, mac,
             &maclen) == NULL ||
        maclen != SIG_BYTES)
        return -1;
    return 0;
}

int exo_token_issue(const unsigned char key[EXO_TOKEN_KEY_LEN], exo_token_claims_t *c, char *out,
                    size_t outlen)
{
    unsigned char rnd[JTI_BYTES], mac[SIG_BYTES];
    char payload[EXO_TOKEN_MAX];
    sbuf_t b = {payload, 0, sizeof(payload), 0};

    if (out != NULL && outlen > 0) out[0] = '\0';
    if (key == NULL || c == NULL) return -EINVAL;
    if (!is_name(c->user, strnlen(c->user, sizeof(c->user))) ||
        !groups_valid(c->groups, sizeof(c->groups)) || c->iat < 0 || c->exp < 0)
        return -EINVAL;
    if (RAND_bytes(rnd, sizeof(rnd)) != 1) return -EIO;
    hex_encode(rnd, sizeof(rnd), c->jti);

    write_payload(&b, c);
    if (b.over) return -EINVAL;
    size_t plen = b64url_len(b.len);
    size_t total = HEADER_B64_LEN + 1 + plen + 1 + SIG_B64_LEN;
    if (total > EXO_TOKEN_MAX) return -EINVAL;
    if (out == NULL || total >= outlen) return -ENOSPC;

    memcpy(out, header_b64, HEADER_B64_LEN);
    out[HEADER_B64_LEN] = '.';
    b64url_encode((const unsigned char *)payload, b.len, out + HEADER_B64_LEN + 1);
    size_t signed_len = HEADER_B64_LEN + 1 + plen;
    if (hmac_sha256(key, out, signed_len, mac) != 0) {
        out[0] = '\0';
        return -EIO;
    }
    out[signed_len] = '.';
    b64url_encode(mac, sizeof(mac), out + signed_len + 1);
    out[total] = '\0';
    return (int)total;
}

exo_token_status_t exo_token_verify(const unsigned char key[EXO_TOKEN_KEY_LEN], const char *text,
                                    size_t len, int64_t now, const struct exo_revoked_s *rev,
                                    exo_token_claims_t *out)
{
    unsigned char sig[SIG_BYTES], mac[SIG_BYTES];
    char payload[EXO_TOKEN_MAX];
    exo_token_claims_t c;

    if (key == NULL || text == NULL || len == 0 || len > EXO_TOKEN_MAX) return EXO_TOKEN_MALFORMED;
    /* header "." payload "." signature: the header is fixed, so the first dot is where it ends */
    if (len < HEADER_B64_LEN + 2 + SIG_B64_LEN || memcmp(text, header_b64, HEADER_B64_LEN) != 0 ||
        text[HEADER_B64_LEN] != '.')
        return EXO_TOKEN_MALFORMED;
    const char *p = text + HEADER_B64_LEN + 1, *end = text + len;
    const char *dot = memchr(p, '.', (size_t)(end - p));
    if (dot == NULL || dot == p) return EXO_TOKEN_MALFORMED;
    const char *s = dot + 1;
    /* the decoder refuses any further dot in the signature */
    if ((size_t)(end - s) != SIG_B64_LEN ||
        b64url_decode(s, SIG_B64_LEN, sig, sizeof(sig)) != SIG_BYTES)
        return EXO_TOKEN_MALFORMED;

    /* Undoing the base64url of the payload is as safe as that of the signature (a fixed
     * mapping over the bytes, nothing in them steers it), and makes a payload part that is not
     * base64url MALFORMED whatever the signature. */
    long plen = b64url_decode(p, (size_t)(dot - p), (unsigned char *)payload, sizeof(payload));
    if (plen <= 0) return EXO_TOKEN_MALFORMED;

    if (hmac_sha256(key, text, (size_t)(dot - text), mac) != 0) return EXO_TOKEN_BAD_SIGNATURE;
    if (CRYPTO_memcmp(sig, mac, SIG_BYTES) != 0) return EXO_TOKEN_BAD_SIGNATURE;

    /* Only now is the payload parsed. */
    if (!parse_claims(payload, (size_t)plen, &c)) return EXO_TOKEN_MALFORMED;

    /* iat >= 0, so this cannot overflow where now + skew could */
    if (c.iat - EXO_TOKEN_IAT_SKEW > now) return EXO_TOKEN_MALFORMED;
    if (c.exp <= now) return EXO_TOKEN_EXPIRED;
    if (rev != NULL && exo_revoked_contains(rev, c.jti)) return EXO_TOKEN_REVOKED;
    if (out != NULL) *out = c;
    return EXO_TOKEN_VALID;
}

const char *exo_token_status_reason(exo_token_status_t s)
{
    switch (s) {
    case EXO_TOKEN_VALID:
        return "valid";
    case EXO_TOKEN_MALFORMED:
        return "malformed token";
    case EXO_TOKEN_BAD_SIGNATURE:
        return "bad signature";
    case EXO_TOKEN_EXPIRED:
        return "token expired";
    case EXO_TOKEN_REVOKED:
        return "token revoked";
    }
    return "invalid token";
}

/* ---------------------------------------------------------------------------------------- */
/* Files */

static int write_all(int fd, const void *data, size_t n)
{
    const char *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Makes a new or renamed entry of dir durable; best effort, as some file systems refuse. */
static void fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

/* Opens path for reading without following a symbolic link or blocking on a FIFO put in its
 * place, and checks that it is a regular file. Returns the descriptor (*st its stat), or a
 * negative errno with a message in err (-ENOENT when there is no such file). */
static int open_regular(const char *path, struct stat *st, char *err, size_t errlen)
{
    int rc = 0, fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        if (rc == -ELOOP)
            set_err(err, errlen, "%s: is a symbolic link, not a regular file", path);
        else
            set_err(err, errlen, "%s: %s", path, strerror(-rc));
        return rc;
    }
    if (fstat(fd, st) != 0) {
        rc = -errno;
        set_err(err, errlen, "%s: %s", path, strerror(-rc));
    } else if (!S_ISREG(st->st_mode)) {
        rc = -EINVAL;
        set_err(err, errlen, "%s: not a regular file", path);
    }
    if (rc != 0) {
        close(fd);
        return rc;
    }
    return fd;
}

static int key_read(const char *path, unsigned char key[EXO_TOKEN_KEY_LEN], char *err,
                    size_t errlen)
{
    unsigned char buf[EXO_TOKEN_KEY_LEN];
    struct stat st;
    size_t got = 0;
    int rc = 0;

    int fd = open_regular(path, &st, err, errlen);
    if (fd < 0) return fd;
    if (st.st_uid != geteuid()) {
        rc = -EPERM;
        set_err(err, errlen, "%s: owned by uid %u, not by uid %u", path, (unsigned)st.st_uid,
                (unsigned)geteuid());
    } else if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        rc = -EPERM;
        set_err(err, errlen, "%s: mode %04o gives group or others access; it must be 0600", path,
                (unsigned)(st.st_mode & 07777));
    } else if (st.st_size != EXO_TOKEN_KEY_LEN) {
        rc = -EINVAL;
        set_err(err, errlen, "%s: %lld bytes, not %d", path, (long long)st.st_size,
                EXO_TOKEN_KEY_LEN);
    }
    while (rc == 0 && got < sizeof(buf)) {
        ssize_t r = read(fd, buf + got, sizeof(buf) - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            rc = r < 0 ? -errno : -EIO;
            set_err(err, errlen, "%s: %s", path, r < 0 ? strerror(errno) : "file shrank");
            break;
        }
        got += (size_t)r;
    }
    close(fd);
    if (rc == 0) memcpy(key, buf, sizeof(buf));
    OPENSSL_cleanse(buf, sizeof(buf));
    return rc;
}

/* Creates the key file: a new random key in a temporary file, made durable, then linked to
 * path, which fails with EEXIST rather than replace a key somebody else created meanwhile. So
 * path never exists half-written, even after a crash. Returns 0 with the key, -EEXIST, or
 * another negative errno with a message. */
static int key_create(const char *dir, const char *path, unsigned char key[EXO_TOKEN_KEY_LEN],
                      char *err, size_t errlen)
{
    unsigned char buf[EXO_TOKEN_KEY_LEN];
    char tmp[PATH_MAX];
    int fd = -1, rc;

    if ((size_t)snprintf(tmp, sizeof(tmp), "%s/.token-key.%ld.tmp", dir, (long)getpid()) >=
        sizeof(tmp)) {
        set_err(err, errlen, "%s: path too long", dir);
        return -ENAMETOOLONG;
    }
    if (RAND_bytes(buf, sizeof(buf)) != 1) {
        set_err(err, errlen, "cannot create %s: the random generator failed", path);
        return -EIO;
    }
    for (int attempt = 0; fd < 0; attempt++) {
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        /* A leftover of a crashed process that had our pid: only we use this name now. */
        if (fd < 0 && errno == EEXIST && attempt == 0 && unlink(tmp) == 0) continue;
        if (fd < 0) {
            rc = -errno;
            set_err(err, errlen, "%s: %s", tmp, strerror(-rc));
            goto out;
        }
    }
    if (fchmod(fd, 0600) != 0 || (rc = write_all(fd, buf, sizeof(buf))) != 0 || fsync(fd) != 0) {
        rc = -errno;
        set_err(err, errlen, "%s: %s", tmp, strerror(-rc));
        close(fd);
        unlink(tmp);
        goto out;
    }
    if (close(fd) != 0) {
        rc = -errno;
        set_err(err, errlen, "%s: %s", tmp, strerror(-rc));
        unlink(tmp);
        goto out;
    }
    rc = link(tmp, path) == 0 ? 0 : -errno;
    unlink(tmp);
    if (rc != 0) {
        if (rc != -EEXIST) set_err(err, errlen, "%s: %s", path, strerror(-rc));
        goto out;
    }
    fsync_dir(dir);
    memcpy(key, buf, sizeof(buf));
out:
    OPENSSL_cleanse(buf, sizeof(buf));
    return rc;
}

int exo_token_key_load_or_create(const char *state_dir, unsigned char key[EXO_TOKEN_KEY_LEN],
                                 char *err, size_t errlen)
{
    char path[PATH_MAX];
    if (err != NULL && errlen > 0) err[0] = '\0';
    if (state_dir == NULL || key == NULL) {
        set_err(err, errlen, "no state directory");
        return -EINVAL;
    }
    if ((size_t)snprintf(path, sizeof(path), "%s/token-key", state_dir) >= sizeof(path)) {
        set_err(err, errlen, "%s: path too long", state_dir);
        return -ENAMETOOLONG;
    }
    /* Read; if missing, create; if another process created it meanwhile, read theirs. */
    for (int attempt = 0; attempt < 3; attempt++) {
        int rc = key_read(path, key, err, errlen);
        if (rc == -ENOENT) rc = key_create(state_dir, path, key, err, errlen);
        if (rc == 0 && err != NULL && errlen > 0) err[0] = '\0';
        if (rc != -EEXIST) return rc;
    }
    set_err(err, errlen, "%s: keeps appearing and disappearing", path);
    return -EAGAIN;
}

/* ---------------------------------------------------------------------------------------- */
/* The revocation set */

#define SLOT_EMPTY INT64_MIN
#define MIN_CAP 64

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

static uint64_t load_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* SipHash-2-4 of a 16-byte message. */
static uint64_t siphash16(uint64_t k0, uint64_t k1, const unsigned char in[JTI_BYTES])
{
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
    for (int i = 0; i < 3; i++) {
        uint64_t m = i < 2 ? load_le64(in + 8 * i) : (uint64_t)JTI_BYTES << 56;
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* Exactly 32 hex digits (either case) and the NUL. */
static int parse_jti(const char *s, unsigned char id[JTI_BYTES])
{
    if (s == NULL) return 0;
    for (size_t i = 0; i < JTI_BYTES; i++) {
        int hi = hex_value((unsigned char)s[2 * i]);
        if (hi < 0) return 0;
        int lo = hex_value((unsigned char)s[2 * i + 1]);
        if (lo < 0) return 0;
        id[i] = (unsigned char)(hi << 4 | lo);
    }
    return s[2 * JTI_BYTES] == '\0';
}

static size_t slot_home(const exo_revoked_t *r, const unsigned char id[JTI_BYTES])
{
    return (size_t)siphash16(r->k0, r->k1, id) & (r->cap - 1);
}

/* The slot holding id, or the empty slot where it would go. r->cap > 0. */
static size_t slot_find(const exo_revoked_t *r, const unsigned char id[JTI_BYTES], int *found)
{
    size_t i = slot_home(r, id), mask = r->cap - 1;
    for (;; i = (i + 1) & mask) {
        const exo_revoked_slot_t *sl = &r->slots[i];
        if (sl->exp == SLOT_EMPTY) {
            *found = 0;
            return i;
        }
        if (memcmp(sl->id, id, JTI_BYTES) == 0) {
            *found = 1;
            return i;
        }
    }
}

static int slots_resize(exo_revoked_t *r, size_t cap)
{
    exo_revoked_slot_t *old = r->slots;
    size_t oldcap = r->cap;
    exo_revoked_slot_t *slots = malloc(cap * sizeof(*slots));
    if (slots == NULL) return -ENOMEM;
    for (size_t i = 0; i < cap; i++)
        slots[i].exp = SLOT_EMPTY;
    r->slots = slots;
    r->cap = cap;
    for (size_t i = 0; i < oldcap; i++) {
        if (old[i].exp == SLOT_EMPTY) continue;
        int found;
        r->slots[slot_find(r, old[i].id, &found)] = old[i];
    }
    free(old);
    return 0;
}

void exo_revoked_init(exo_revoked_t *r)
{
    unsigned char seed[16];
    memset(r, 0, sizeof(*r));
    if (RAND_bytes(seed, sizeof(seed)) == 1) {
        r->k0 = load_le64(seed);
        r->k1 = load_le64(seed + 8);
    } else {
        /* Still a working table; only collision resistance against chosen ids is lost. */
        r->k0 = (uint64_t)(uintptr_t)r ^ (uint64_t)time(NULL);
        r->k1 = (uint64_t)getpid() * 0x9e3779b97f4a7c15ULL;
    }
}

int exo_revoked_add(exo_revoked_t *r, const char *jti, int64_t exp)
{
    unsigned char id[JTI_BYTES];
    int found = 0;
    size_t i;

    if (!parse_jti(jti, id)) return -EINVAL;
    if (exp == SLOT_EMPTY) exp = SLOT_EMPTY + 1; /* just as expired, and not the empty mark */
    if (r->cap > 0) {
        i = slot_find(r, id, &found);
        if (found) {
            if (exp > r->slots[i].exp) r->slots[i].exp = exp;
            return 0;
        }
    }
    if (r->count >= EXO_REVOKED_MAX) {
        exo_revoked_prune(r, (int64_t)time(NULL));
        if (r->count >= EXO_REVOKED_MAX) return -ENOSPC;
    }
    if ((r->count + 1) * 2 > r->cap && slots_resize(r, r->cap ? r->cap * 2 : MIN_CAP) != 0)
        return -ENOMEM;
    i = slot_find(r, id, &found);
    r->slots[i].exp = exp;
    memcpy(r->slots[i].id, id, JTI_BYTES);
    r->count++;
    return 0;
}

int exo_revoked_contains(const exo_revoked_t *r, const char *jti)
{
    unsigned char id[JTI_BYTES];
    int found = 0;
    if (r == NULL || r->count == 0 || !parse_jti(jti, id)) return 0;
    slot_find(r, id, &found);
    return found;
}

size_t exo_revoked_count(const exo_revoked_t *r)
{
    return r->count;
}

void exo_revoked_prune(exo_revoked_t *r, int64_t now)
{
    size_t start, removed = 0, mask = r->cap - 1;
    if (r->count == 0) return;
    /* An empty slot (there is one: the table is at most half full) that no probe sequence
     * crosses; every entry's run from its home slot lies in the cycle that starts after it. */
    for (start = 0; r->slots[start].exp != SLOT_EMPTY; start++)
        ;
    for (size_t i = 0; i < r->cap; i++) {
        if (r->slots[i].exp != SLOT_EMPTY && r->slots[i].exp <= now) {
            r->slots[i].exp = SLOT_EMPTY;
            removed++;
        }
    }
    if (removed == 0) return;
    r->count -= removed;
    /* Re-place every survivor in cycle order from start: each moves to the first free slot from
     * its home, which is at or before where it was, and no slot that an earlier survivor's run
     * crosses is freed later, so every run is again free of holes. */
    for (size_t k = 1; k < r->cap; k++) {
        size_t p = (start + k) & mask;
        if (r->slots[p].exp == SLOT_EMPTY) continue;
        exo_revoked_slot_t e = r->slots[p];
        r->slots[p].exp = SLOT_EMPTY;
        size_t q = slot_home(r, e.id);
        while (r->slots[q].exp != SLOT_EMPTY)
            q = (q + 1) & mask;
        r->slots[q] = e;
    }
}

void exo_revoked_free(exo_revoked_t *r)
{
    free(r->slots);
    r->slots = NULL;
    r->cap = 0;
    r->count = 0;
}

/* "<32 hex> <decimal>\n" with the decimal a non-negative int64 without leading zeros. */
static int parse_line(const char *line, size_t n, char jti[2 * JTI_BYTES + 1], int64_t *exp)
{
    uint64_t x;
    if (n < 2 * JTI_BYTES + 3 || line[n - 1] != '\n' || line[2 * JTI_BYTES] != ' ') return 0;
    for (size_t i = 0; i < 2 * JTI_BYTES; i++)
        if (hex_value((unsigned char)line[i]) < 0) return 0;
    if (!get_uint(line + 2 * JTI_BYTES + 1, n - 2 * JTI_BYTES - 2, INT64_MAX, &x)) return 0;
    memcpy(jti, line, 2 * JTI_BYTES);
    jti[2 * JTI_BYTES] = '\0';
    *exp = (int64_t)x;
    return 1;
}

int exo_revoked_load(exo_revoked_t *r, const char *path, int64_t now, size_t *skipped, char *err,
                     size_t errlen)
{
    exo_revoked_t n;
    struct stat st;
    char *line = NULL, jti[2 * JTI_BYTES + 1];
    size_t cap = 0, nskipped = 0;
    ssize_t got;
    int64_t exp;
    int rc = 0;

    if (err != NULL && errlen > 0) err[0] = '\0';
    if (skipped != NULL) *skipped = 0;
    exo_revoked_init(&n);
    int fd = open_regular(path, &st, err, errlen);
    if (fd == -ENOENT) {
        if (err != NULL && errlen > 0) err[0] = '\0';
        exo_revoked_free(r);
        *r = n;
        return 0;
    }
    if (fd < 0) return fd;
    FILE *f = fdopen(fd, "r");
    if (f == NULL) {
        rc = -errno;
        set_err(err, errlen, "%s: %s", path, strerror(-rc));
        close(fd);
        return rc;
    }
    while ((got = getline(&line, &cap, f)) >= 0) {
        if (!parse_line(line, (size_t)got, jti, &exp)) {
            nskipped++;
            continue;
        }
        if (exp <= now) continue;
        if ((rc = exo_revoked_add(&n, jti, exp)) != 0) {
            if (rc == -ENOSPC)
                set_err(err, errlen, "%s: more than %d unexpired entries", path, EXO_REVOKED_MAX);
            else
                set_err(err, errlen, "%s: %s", path, strerror(-rc));
            break;
        }
    }
    if (rc == 0 && ferror(f)) {
        rc = -EIO;
        set_err(err, errlen, "%s: read error", path);
    }
    free(line);
    fclose(f);
    if (rc != 0) {
        exo_revoked_free(&n);
        return rc;
    }
    exo_revoked_free(r);
    *r = n;
    if (skipped != NULL) *skipped = nskipped;
    return 0;
}

int exo_revoked_save(const exo_revoked_t *r, const char *path, char *err, size_t errlen)
{
    char tmp[PATH_MAX], dir[PATH_MAX], buf[16384];
    size_t used = 0;
    int rc = 0;

    if (err != NULL && errlen > 0) err[0] = '\0';
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp)) {
        set_err(err, errlen, "%s: path too long", path);
        return -ENAMETOOLONG;
    }
    /* A leftover temporary file from a crash is ours to replace; O_EXCL then makes sure that
     * what we write to is the new file we created, not something planted in its place. */
    if (unlink(tmp) != 0 && errno != ENOENT) {
        rc = -errno;
        set_err(err, errlen, "%s: %s", tmp, strerror(-rc));
        return rc;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = -errno;
        set_err(err, errlen, "%s: %s", tmp, strerror(-rc));
        return rc;
    }
    if (fchmod(fd, 0600) != 0) rc = -errno;
    for (size_t i = 0; rc == 0 && i < r->cap; i++) {
        const exo_revoked_slot_t *sl = &r->slots[i];
        /* a negative exp has expired at any real time, and load would take it as malformed */
        if (sl->exp < 0) continue;
        if (sizeof(buf) - used < 64) {
            rc = write_all(fd, buf, used);
            used = 0;
        }
        hex_encode(sl->id, JTI_BYTES, buf + used);
        used += 2 * JTI_BYTES;
        used += (size_t)snprintf(buf + used, sizeof(buf) - used, " %" PRId64 "\n", sl->exp);
    }
    if (rc == 0) rc = write_all(fd, buf, used);
    if (rc == 0 && fsync(fd) != 0) rc = -errno;
    if (close(fd) != 0 && rc == 0) rc = -errno;
    if (rc == 0 && rename(tmp, path) != 0) rc = -errno;
    if (rc != 0) {
        set_err(err, errlen, "%s: %s", tmp, strerror(-rc));
        unlink(tmp);
        return rc;
    }
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == NULL)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == dir)
        slash[1] = '\0';
    else
        *slash = '\0';
    fsync_dir(dir);
    return 0;
}
