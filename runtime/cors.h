/* Cross-origin resource sharing for browsers that reach the agent directly (clouds without
 * Exosphere's proxy). The agent answers CORS only for the exact origins that [server]
 * cors_origins lists: with the list empty it never sends a CORS header, because Exosphere's
 * proxy adds its own and a second Access-Control-Allow-Origin makes the browser refuse the
 * response. Credentials travel as Bearer tokens and Basic on /auth, never as cookies, so no
 * Access-Control-Allow-Credentials is sent and no origin is ever answered with "*".
 *
 * Configuration checks (exo_cors_origin_check) are kept apart from the request-time code
 * (the rest), which http.c calls through a few hooks. */
#ifndef EXO_CORS_H
#define EXO_CORS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "config.h"

/* Longest origin accepted, in the configuration and in a request: "https://", a host name of
 * 253 bytes and ":65535" fit. A longer Origin header matches nothing. */
#define EXO_CORS_ORIGIN_MAX 270

/* What a request said about CORS, collected from its headers by the hooks below. Zeroed
 * (as calloc leaves it) it means: no Origin, not a preflight. */
typedef struct exo_cors_req_s {
    char origin[EXO_CORS_ORIGIN_MAX + 1]; /* the Origin header, NUL-terminated */
    size_t origin_len;
    uint8_t origins;   /* Origin headers seen; anything but exactly one matches nothing */
    uint8_t too_long;  /* the Origin header was longer than EXO_CORS_ORIGIN_MAX */
    uint8_t preflight; /* Access-Control-Request-Method was present */
    uint8_t target;    /* the header whose value is arriving (internal) */
} exo_cors_req_t;

/* Checks one cors_origins item: an origin as a browser sends it in the Origin header,
 * "http://" or "https://", a lower-case host name, IPv4 address or bracketed IPv6 address,
 * and an optional port that is not the scheme's default; no path, no "*". Returns NULL when
 * it is valid, or else the reason it is not, as a phrase that follows the quoted item. */
const char *exo_cors_origin_check(const char *origin);

/* 1 if the `len` bytes at origin are exactly one of cfg's cors_origins, else 0 (always 0
 * with the list empty, for NULL, and for a value of more than EXO_CORS_ORIGIN_MAX bytes).
 * The WebSocket upgrade uses it to refuse pages from unlisted origins. */
int exo_cors_origin_allowed(const exo_config_t *cfg, const char *origin, size_t len);

/* Header hooks of the HTTP parser. exo_cors_header_field takes a complete header name in
 * lower case and returns 1 when its value is to be passed, in pieces, to
 * exo_cors_header_value, or 0 when CORS does not need it. */
int exo_cors_header_field(exo_cors_req_t *cr, const char *name);
void exo_cors_header_value(exo_cors_req_t *cr, const char *at, size_t len);

/* 1 if an OPTIONS request is a preflight that must be refused (403): origins are configured,
 * the request carries Access-Control-Request-Method, and its Origin is not listed. With no
 * origins configured the agent does not take part in CORS and OPTIONS stays a plain 204. */
int exo_cors_preflight_refused(const exo_config_t *cfg, const exo_cors_req_t *cr);

/* Appends the CORS response headers, each line ending in CRLF, to o: nothing without
 * configured origins; else "Vary: Origin" on every response, and for a listed origin one
 * Access-Control-Allow-Origin naming it and the exposed headers; when `preflight_ok` (the
 * 204 answer to an OPTIONS) and the request is a preflight from a listed origin, also the
 * allowed methods and headers and the max age. Returns 0 or -ENOMEM. */
int exo_cors_append(const exo_config_t *cfg, const exo_cors_req_t *cr, int preflight_ok,
                    exo_buf_t *o);

#endif
