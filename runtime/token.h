/* Login tokens: JWTs (RFC 7519) signed with HMAC-SHA256 under a 32-byte key that the monitor
 * keeps in the state directory, and the revocation set of token ids (jti) that outlive a
 * logout until the token would have expired anyway. token.c says why the format is as it is.
 *
 * Every function that can fail returns a negative errno; those that take err/errlen also
 * leave a NUL-terminated message there (err may be NULL). Nothing here is thread-safe against
 * concurrent writers of the same exo_revoked_t. */
#ifndef EXO_TOKEN_H
#define EXO_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#define EXO_TOKEN_KEY_LEN 32
#define EXO_TOKEN_MAX 4096 /* longest token text accepted or produced (without the NUL) */

/* How far in the future a token's "iat" may be, for clock skew between issue and check. */
#define EXO_TOKEN_IAT_SKEW 60

typedef struct exo_token_claims_s {
    char user[33];     /* "sub" */
    uint32_t uid, gid; /* "uid", "gid" */
    char groups[2048]; /* "grp": JSON array of names; here comma-separated, in order */
    int64_t iat, exp;  /* unix seconds, never negative */
    char jti[33];      /* 32 lower-case hex chars (128 random bits) */
} exo_token_claims_t;

/* Reads <state_dir>/token-key (exactly 32 raw bytes). When it does not exist, creates it with
 * 32 bytes from RAND_bytes: written to a temporary file in state_dir (mode 0600,
 * O_EXCL|O_NOFOLLOW), fsynced, then hard-linked into place, so that the key file either does
 * not exist or is complete, and a concurrent creator's key wins rather than being overwritten.
 * Refuses a key file that is a symbolic link (-ELOOP), is not a regular file or has the wrong
 * size (-EINVAL), is not owned by the effective uid or grants any permission to group or
 * others (-EPERM). */
int exo_token_key_load_or_create(const char *state_dir, unsigned char key[EXO_TOKEN_KEY_LEN],
                                 char *err, size_t errlen);

/* Fills c->jti with a fresh random id, then writes the token (header {"alg":"HS256","typ":"JWT"},
 * payload {"sub","uid","gid","grp","iat","exp","jti"} in that order) NUL-terminated to out.
 * Returns its length, or -EINVAL for a user or group name that is not a plain account name
 * [A-Za-z0-9_.-]{1,32} (groups: "" for none, else names joined by single commas), a negative
 * iat or exp, or claims whose token would be longer than EXO_TOKEN_MAX; -ENOSPC if out is too
 * small; -EIO if the random generator fails. On failure out holds "" (when outlen > 0); c->jti
 * is only changed once the claims have been found valid. */
int exo_token_issue(const unsigned char key[EXO_TOKEN_KEY_LEN], exo_token_claims_t *c, char *out,
                    size_t outlen);

typedef enum {
    EXO_TOKEN_VALID = 0,
    EXO_TOKEN_MALFORMED,
    EXO_TOKEN_BAD_SIGNATURE,
    EXO_TOKEN_EXPIRED,
    EXO_TOKEN_REVOKED
} exo_token_status_t;

struct exo_revoked_s;

/* Verifies text[0..len) (not necessarily NUL-terminated): three base64url parts without
 * padding, characters outside the alphabet or non-zero leftover bits (else MALFORMED); the
 * header exactly the one exo_token_issue writes (so alg HS256 only); the signature 43
 * characters (32 bytes), compared in constant time (else BAD_SIGNATURE) before the payload's
 * JSON is parsed; then the payload must be exactly what exo_token_issue writes for the claims it
 * holds (every claim once, of its type, in order, no whitespace or escapes); then
 * iat <= now + EXO_TOKEN_IAT_SKEW (else MALFORMED: a token from the future was not issued by
 * a sane clock), exp > now (else EXPIRED), and jti not in rev (may be NULL; else REVOKED).
 * Fills *out (may be NULL) only when the token is VALID. */
exo_token_status_t exo_token_verify(const unsigned char key[EXO_TOKEN_KEY_LEN], const char *text,
                                    size_t len, int64_t now, const struct exo_revoked_s *rev,
                                    exo_token_claims_t *out);

/* "valid", "malformed token", "bad signature", "token expired", "token revoked" */
const char *exo_token_status_reason(exo_token_status_t s);

/* The revocation set: jti -> exp, an open-addressing hash table (linear probing, at most half
 * full) keyed by the 16 bytes of the jti under a random SipHash key, so that lookups stay
 * O(1) whoever picks the ids. Bounded at EXO_REVOKED_MAX entries: when full, adding prunes
 * the entries expired at time(NULL) first, and fails with -ENOSPC if still full. */
#define EXO_REVOKED_MAX 100000

typedef struct exo_revoked_slot_s {
    int64_t exp; /* INT64_MIN marks an empty slot */
    unsigned char id[16];
} exo_revoked_slot_t;

typedef struct exo_revoked_s {
    exo_revoked_slot_t *slots; /* NULL until the first add */
    size_t cap;                /* number of slots: 0 or a power of two */
    size_t count;
    uint64_t k0, k1; /* the hash key */
} exo_revoked_t;

void exo_revoked_init(exo_revoked_t *r);
/* 0, or -EINVAL (jti not 32 hex digits, either case), -ENOMEM, -ENOSPC. Adding an id that is
 * already there keeps the later of the two expiry times. */
int exo_revoked_add(exo_revoked_t *r, const char *jti, int64_t exp);
/* 1 if jti (a NUL-terminated string) is in the set, else 0 (also for a jti that is not hex). */
int exo_revoked_contains(const exo_revoked_t *r, const char *jti);
size_t exo_revoked_count(const exo_revoked_t *r);
/* Drops entries with exp <= now. */
void exo_revoked_prune(exo_revoked_t *r, int64_t now);

/* The file holds one "jti exp\n" line per entry: jti 32 hex digits (save writes lower case, load
 * takes either), exp a non-negative decimal without leading zeros.
 * load replaces the contents of r (initialized) with the file's entries that have not expired at
 * now. A missing file gives an empty set; a symbolic link is refused (-ELOOP), so is a file with
 * more than EXO_REVOKED_MAX unexpired entries (-ENOSPC). Malformed lines (including a last line
 * without its newline) are skipped and counted in *skipped (may be NULL). On failure r is left
 * as it was.
 * save writes <path>.tmp (a leftover one is removed first) with mode 0600, fsyncs it, renames it
 * over path and fsyncs the directory. Entries with a negative exp are not written. */
int exo_revoked_load(exo_revoked_t *r, const char *path, int64_t now, size_t *skipped, char *err,
                     size_t errlen);
int exo_revoked_save(const exo_revoked_t *r, const char *path, char *err, size_t errlen);
/* Frees the table; r is then empty and may be used again. */
void exo_revoked_free(exo_revoked_t *r);

#endif
