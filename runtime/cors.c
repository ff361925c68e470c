/* CORS: the check of configured origins and the headers of requests and responses. */
#include "cors.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* The headers a cross-origin page may send besides the CORS-safelisted ones: the Bearer token
 * or Basic credentials, the JSON Content-Type, and the API version a client was written for
 * (DESIGN.md "API versions and compatibility"). Browsers compare names without case. */
#define CORS_ALLOW_HEADERS "Authorization, Content-Type, Exosphere-Agent-Version"
#define CORS_ALLOW_METHODS "GET, POST, OPTIONS"
/* Response headers a page may read besides the safelisted ones: the request id that the
 * agent's log names, and how long to wait after a 429 or 503. */
#define CORS_EXPOSE_HEADERS "X-Request-Id, Retry-After"

enum { TARGET_NONE, TARGET_ORIGIN, TARGET_REQUEST_METHOD };

/* Checks the port after the ':' of an origin: digits only, no leading zero (browsers write
 * ports in plain decimal), 1..65535, and not the scheme's default, which browsers omit. */
static const char *check_port(const char *p, unsigned default_port)
{
    size_t n = strspn(p, "0123456789");
    if (n == 0 || n > 5 || p[0] == '0') return "has a port that is not a number 1..65535";
    if (p[n] != '\0') return "has a path, query or fragment; an origin is scheme://host[:port]";
    long port = strtol(p, NULL, 10);
    if (port > 65535) return "has a port that is not a number 1..65535";
    if ((unsigned)port == default_port)
        return "names the scheme's default port, which browsers leave out of the Origin header; "
               "remove it";
    return NULL;
}

/* Checks a bracketed IPv6 host at h ("[...]"), and sets *end past the ']'. Browsers send the
 * address in its shortest lower-case form, so only that form can ever match. */
static const char *check_ipv6(const char *h, const char **end)
{
    const char *close = strchr(h, ']');
    char text[64], canon[INET6_ADDRSTRLEN];
    unsigned char bin[16];
    size_t n = close != NULL ? (size_t)(close - h - 1) : 0;
    if (close == NULL || n == 0 || n >= sizeof(text)) return "has an invalid IPv6 address";
    memcpy(text, h + 1, n);
    text[n] = '\0';
    if (inet_pton(AF_INET6, text, bin) != 1) return "has an invalid IPv6 address";
    if (inet_ntop(AF_INET6, bin, canon, sizeof(canon)) == NULL || strcmp(canon, text) != 0)
        return "has an IPv6 address not in the shortest lower-case form that browsers send";
    *end = close + 1;
    return NULL;
}

/* Checks a host name or IPv4 address at h, up to the ':' of a port or the end, and sets *end
 * there: dot-separated labels of 1 to 63 lower-case letters, digits and '-'. Browsers lower
 * the case of host names, so a name with capitals could never match. */
static const char *check_name(const char *h, const char **end)
{
    size_t label = 0;
    const char *p = h;
    for (; *p != '\0' && *p != ':' && *p != '/'; p++) {
        if (*p >= 'A' && *p <= 'Z')
            return "has capital letters in its host; browsers send host names in lower case";
        if (*p == '.') {
            if (label == 0) return "has an empty label in its host name";
            label = 0;
        } else if ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-') {
            if (++label > 63) return "has a host name label longer than 63 bytes";
        } else {
            return "has a character that is not allowed in a host name (only a-z, 0-9, '-', "
                   "'.'; IPv6 addresses in brackets); an origin is scheme://host[:port]";
        }
    }
    if (p == h) return "has no host; an origin is scheme://host[:port]";
    if (label == 0) return "has an empty label in its host name";
    *end = p;
    return NULL;
}

const char *exo_cors_origin_check(const char *origin)
{
    const char *host, *end = NULL, *why;
    unsigned default_port;
    if (origin == NULL) return "is not an origin";
    if (strchr(origin, '*') != NULL)
        return "has a wildcard; CORS here is for exact origins only, so list each one";
    if (strlen(origin) > EXO_CORS_ORIGIN_MAX) return "is longer than 270 bytes";
    if (strncmp(origin, "https://", 8) == 0) {
        host = origin + 8;
        default_port = 443;
    } else if (strncmp(origin, "http://", 7) == 0) {
        host = origin + 7;
        default_port = 80;
    } else {
        return "does not start with http:// or https://";
    }
    why = host[0] == '[' ? check_ipv6(host, &end) : check_name(host, &end);
    if (why != NULL) return why;
    if (*end == ':') return check_port(end + 1, default_port);
    if (*end != '\0')
        return "has a path, query or fragment (or a trailing '/'); an origin is "
               "scheme://host[:port]";
    return NULL;
}

int exo_cors_origin_allowed(const exo_config_t *cfg, const char *origin, size_t len)
{
    if (cfg == NULL || origin == NULL || len > EXO_CORS_ORIGIN_MAX) return 0;
    for (size_t i = 0; i < cfg->cors_origins.n; i++) {
        const char *item = cfg->cors_origins.items[i];
        if (strlen(item) == len && memcmp(item, origin, len) == 0) return 1;
    }
    return 0;
}

int exo_cors_header_field(exo_cors_req_t *cr, const char *name)
{
    if (strcmp(name, "origin") == 0) {
        cr->target = TARGET_ORIGIN;
        if (cr->origins < UINT8_MAX) cr->origins++;
        cr->origin_len = 0;
        cr->origin[0] = '\0';
        return 1;
    }
    if (strcmp(name, "access-control-request-method") == 0) {
        /* Its value does not matter: only GET and POST are routed, and the browser checks the
         * method against Access-Control-Allow-Methods itself. */
        cr->target = TARGET_REQUEST_METHOD;
        cr->preflight = 1;
        return 0;
    }
    cr->target = TARGET_NONE;
    return 0;
}

void exo_cors_header_value(exo_cors_req_t *cr, const char *at, size_t len)
{
    if (cr->target != TARGET_ORIGIN || cr->too_long) return;
    if (cr->origin_len + len > EXO_CORS_ORIGIN_MAX) {
        cr->too_long = 1;
        return;
    }
    memcpy(cr->origin + cr->origin_len, at, len);
    cr->origin_len += len;
    cr->origin[cr->origin_len] = '\0';
}

/* The length of the request's origin when it names exactly one origin and that origin is
 * listed, else 0. Trailing blanks are not part of a header value (RFC 9110 5.5), but the
 * parser leaves them in. */
static size_t allowed_len(const exo_config_t *cfg, const exo_cors_req_t *cr)
{
    size_t n = cr->origin_len;
    if (cr->origins != 1 || cr->too_long) return 0;
    while (n > 0 && (cr->origin[n - 1] == ' ' || cr->origin[n - 1] == '\t'))
        n--;
    return exo_cors_origin_allowed(cfg, cr->origin, n) ? n : 0;
}

int exo_cors_preflight_refused(const exo_config_t *cfg, const exo_cors_req_t *cr)
{
    return cfg->cors_origins.n > 0 && cr->preflight && allowed_len(cfg, cr) == 0;
}

int exo_cors_append(const exo_config_t *cfg, const exo_cors_req_t *cr, int preflight_ok,
                    exo_buf_t *o)
{
    int rc = 0;
    if (cfg->cors_origins.n == 0) return 0;
    /* The answer differs by Origin even when it carries no CORS header, so caches must know. */
    rc |= exo_buf_appends(o, "Vary: Origin\r\n");
    size_t n = allowed_len(cfg, cr);
    if (n == 0) return rc ? -ENOMEM : 0;
    rc |= exo_buf_appends(o, "Access-Control-Allow-Origin: ");
    rc |= exo_buf_append(o, cr->origin, n);
    rc |= exo_buf_appends(o, "\r\n");
    if (preflight_ok && cr->preflight) {
        rc |= exo_buf_appends(o, "Access-Control-Allow-Methods: " CORS_ALLOW_METHODS "\r\n"
                                 "Access-Control-Allow-Headers: " CORS_ALLOW_HEADERS "\r\n");
        rc |= exo_buf_printf(o, "Access-Control-Max-Age: %u\r\n", cfg->cors_max_age_ms / 1000);
    } else {
        rc |= exo_buf_appends(o, "Access-Control-Expose-Headers: " CORS_EXPOSE_HEADERS "\r\n");
    }
    return rc ? -ENOMEM : 0;
}
