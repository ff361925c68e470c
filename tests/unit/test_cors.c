/* Unit tests of CORS: the check of configured origins, the exact match of a request's Origin,
 * the header hooks, and the response headers for each case. */
#include "cors.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

static void test_valid_origins(void)
{
    static const char *const good[] = {
        "https://exosphere.example.org",
        "http://exosphere.example.org",
        "https://exosphere.example.org:8443",
        "http://127.0.0.1:8000",
        "http://localhost",
        "https://[::1]:8443",
        "https://[2001:db8::1]",
        "https://xn--bcher-kva.example",
        "http://a:1",
        "http://a:65535",
        "https://a:80",
        "http://a:443",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        const char *why = exo_cors_origin_check(good[i]);
        if (why != NULL) fprintf(stderr, "  %s: %s\n", good[i], why);
        CHECK(why == NULL);
    }
}

static void test_invalid_origins(void)
{
    static const struct {
        const char *origin, *why;
    } bad[] = {
        {"*", "has a wildcard; CORS here is for exact origins only, so list each one"},
        {"https://*.example.org", "has a wildcard; CORS here is for exact origins only, so "
                                  "list each one"},
        {"null", "does not start with http:// or https://"},
        {"", "does not start with http:// or https://"},
        {"ftp://x.example", "does not start with http:// or https://"},
        {"HTTPS://x.example", "does not start with http:// or https://"},
        {"x.example", "does not start with http:// or https://"},
        {"https://", "has no host; an origin is scheme://host[:port]"},
        {"https://:8443", "has no host; an origin is scheme://host[:port]"},
        {"https://x.example/", "has a path, query or fragment (or a trailing '/'); an origin is "
                               "scheme://host[:port]"},
        {"https://x.example/app", "has a path, query or fragment (or a trailing '/'); an origin "
                                  "is scheme://host[:port]"},
        {"https://x.example:8443/", "has a path, query or fragment; an origin is "
                                    "scheme://host[:port]"},
        {"https://x.example?a", "has a character that is not allowed in a host name (only a-z, "
                                "0-9, '-', '.'; IPv6 addresses in brackets); an origin is "
                                "scheme://host[:port]"},
        {"https://user@x.example", "has a character that is not allowed in a host name (only "
                                   "a-z, 0-9, '-', '.'; IPv6 addresses in brackets); an origin "
                                   "is scheme://host[:port]"},
        {"https://Exosphere.example.org", "has capital letters in its host; browsers send host "
                                          "names in lower case"},
        {"https://x..example", "has an empty label in its host name"},
        {"https://.x.example", "has an empty label in its host name"},
        {"https://x.example.", "has an empty label in its host name"},
        {"https://x.example:443", "names the scheme's default port, which browsers leave out of "
                                  "the Origin header; remove it"},
        {"http://x.example:80", "names the scheme's default port, which browsers leave out of "
                                "the Origin header; remove it"},
        {"https://x.example:", "has a port that is not a number 1..65535"},
        {"https://x.example:0", "has a port that is not a number 1..65535"},
        {"https://x.example:08443", "has a port that is not a number 1..65535"},
        {"https://x.example:65536", "has a port that is not a number 1..65535"},
        {"https://x.example:123456", "has a port that is not a number 1..65535"},
        {"https://x.example:-1", "has a port that is not a number 1..65535"},
        {"https://[::1", "has an invalid IPv6 address"},
        {"https://[]", "has an invalid IPv6 address"},
        {"https://[nope]", "has an invalid IPv6 address"},
        {"https://[::1]x", "has a path, query or fragment (or a trailing '/'); an origin is "
                           "scheme://host[:port]"},
        {"https://[0:0::1]", "has an IPv6 address not in the shortest lower-case form that "
                             "browsers send"},
        {"https://[2001:DB8::1]", "has an IPv6 address not in the shortest lower-case form that "
                                  "browsers send"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *why = exo_cors_origin_check(bad[i].origin);
        if (why == NULL || strcmp(why, bad[i].why) != 0)
            fprintf(stderr, "  '%s': got '%s'\n", bad[i].origin, why ? why : "(valid)");
        CHECK_STR(why, bad[i].why);
    }
    CHECK(exo_cors_origin_check(NULL) != NULL);
}

/* The limits: a label of 63 bytes and an origin of EXO_CORS_ORIGIN_MAX bytes pass, one more
 * byte of either does not. */
static void test_origin_limits(void)
{
    char o[EXO_CORS_ORIGIN_MAX + 2];
    strcpy(o, "https://");
    memset(o + 8, 'a', 63);
    strcpy(o + 8 + 63, ".example");
    CHECK(exo_cors_origin_check(o) == NULL);
    memset(o + 8, 'a', 64);
    strcpy(o + 8 + 64, ".example");
    CHECK_STR(exo_cors_origin_check(o), "has a host name label longer than 63 bytes");
    /* Labels of 9 bytes and dots up to the limit exactly. */
    strcpy(o, "https://");
    size_t n = 8;
    while (n + 10 <= EXO_CORS_ORIGIN_MAX) {
        memcpy(o + n, "aaaaaaaaa.", 10);
        n += 10;
    }
    while (n < EXO_CORS_ORIGIN_MAX)
        o[n++] = 'b';
    o[n] = '\0';
    CHECK(strlen(o) == EXO_CORS_ORIGIN_MAX);
    CHECK(exo_cors_origin_check(o) == NULL);
    o[n] = 'b';
    o[n + 1] = '\0';
    CHECK_STR(exo_cors_origin_check(o), "is longer than 270 bytes");
}

static void config_with(exo_config_t *c, const char *const *origins, size_t n)
{
    memset(c, 0, sizeof(*c));
    c->cors_max_age_ms = 600000;
    if (exo_config_set_list(&c->cors_origins, origins, n) != 0) abort();
}

static void test_allowed(void)
{
    static const char *const origins[] = {"https://exosphere.example.org", "http://127.0.0.1:8000"};
    exo_config_t c;
    config_with(&c, origins, 2);
    const char *o = "https://exosphere.example.org";
    CHECK(exo_cors_origin_allowed(&c, o, strlen(o)) == 1);
    CHECK(exo_cors_origin_allowed(&c, "http://127.0.0.1:8000", 21) == 1);
    /* Exact bytes only: no prefix, no longer value, no other case, no other port or scheme. */
    CHECK(exo_cors_origin_allowed(&c, o, strlen(o) - 1) == 0);
    CHECK(exo_cors_origin_allowed(&c, "https://exosphere.example.org.evil", 34) == 0);
    CHECK(exo_cors_origin_allowed(&c, "https://exosphere.example.org/", 30) == 0);
    CHECK(exo_cors_origin_allowed(&c, "https://Exosphere.example.org", 29) == 0);
    CHECK(exo_cors_origin_allowed(&c, "http://exosphere.example.org", 28) == 0);
    CHECK(exo_cors_origin_allowed(&c, "http://127.0.0.1:8001", 21) == 0);
    CHECK(exo_cors_origin_allowed(&c, "null", 4) == 0);
    CHECK(exo_cors_origin_allowed(&c, "", 0) == 0);
    CHECK(exo_cors_origin_allowed(&c, NULL, 0) == 0);
    CHECK(exo_cors_origin_allowed(NULL, o, strlen(o)) == 0);
    /* The length counts, not a NUL: a value with an embedded NUL matches nothing. */
    CHECK(exo_cors_origin_allowed(&c, "http://127.0.0.1:8000\0x", 23) == 0);
    exo_config_free(&c);
    /* Without configured origins nothing is allowed. */
    config_with(&c, NULL, 0);
    CHECK(exo_cors_origin_allowed(&c, o, strlen(o)) == 0);
    exo_config_free(&c);
}

/* Feeds one header to the hooks as http.c does: the lower-case name, then the value in
 * pieces of `piece` bytes when the hook asks for it. */
static void header(exo_cors_req_t *cr, const char *name, const char *value, size_t piece)
{
    if (!exo_cors_header_field(cr, name)) return;
    size_t len = strlen(value);
    for (size_t i = 0; i < len; i += piece)
        exo_cors_header_value(cr, value + i, len - i < piece ? len - i : piece);
}

/* The response headers for a request with the given headers, as a string. */
static char *answer(const exo_config_t *c, const exo_cors_req_t *cr, int preflight_ok)
{
    exo_buf_t b = EXO_BUF_INIT;
    if (exo_cors_append(c, cr, preflight_ok, &b) != 0 || exo_buf_appendc(&b, '\0') != 0) abort();
    return exo_buf_steal(&b, NULL);
}

static void test_headers(void)
{
    static const char *const origins[] = {"https://exosphere.example.org"};
    exo_config_t c;
    exo_cors_req_t cr;
    char *s;
    config_with(&c, origins, 1);

    memset(&cr, 0, sizeof(cr));
    header(&cr, "content-type", "application/json", 100);
    header(&cr, "origin", "https://exosphere.example.org", 3);
    s = answer(&c, &cr, 0);
    CHECK_STR(s, "Vary: Origin\r\nAccess-Control-Allow-Origin: https://exosphere.example.org\r\n"
                 "Access-Control-Expose-Headers: X-Request-Id, Retry-After\r\n");
    free(s);
    CHECK(exo_cors_preflight_refused(&c, &cr) == 0);

    /* A preflight: the 204 carries the methods, headers and max age. */
    header(&cr, "access-control-request-method", "POST", 100);
    header(&cr, "access-control-request-headers", "authorization,content-type", 100);
    CHECK(exo_cors_preflight_refused(&c, &cr) == 0);
    s = answer(&c, &cr, 1);
    CHECK_STR(s, "Vary: Origin\r\nAccess-Control-Allow-Origin: https://exosphere.example.org\r\n"
                 "Access-Control-Allow-Methods: GET, POST, OPTIONS\r\n"
                 "Access-Control-Allow-Headers: Authorization, Content-Type, "
                 "Exosphere-Agent-Version\r\n"
                 "Access-Control-Max-Age: 600\r\n");
    free(s);

    /* Trailing blanks are not part of the value. */
    memset(&cr, 0, sizeof(cr));
    header(&cr, "origin", "https://exosphere.example.org \t", 100);
    s = answer(&c, &cr, 0);
    CHECK(strstr(s, "Access-Control-Allow-Origin: https://exosphere.example.org\r\n") != NULL);
    free(s);

    /* An unlisted origin: Vary only, and its preflight is refused. */
    memset(&cr, 0, sizeof(cr));
    header(&cr, "origin", "https://evil.example", 100);
    s = answer(&c, &cr, 0);
    CHECK_STR(s, "Vary: Origin\r\n");
    free(s);
    CHECK(exo_cors_preflight_refused(&c, &cr) == 0);
    header(&cr, "access-control-request-method", "POST", 100);
    CHECK(exo_cors_preflight_refused(&c, &cr) == 1);

    /* Two Origin headers, even both listed, name no single origin. */
    memset(&cr, 0, sizeof(cr));
    header(&cr, "origin", "https://exosphere.example.org", 100);
    header(&cr, "origin", "https://exosphere.example.org", 100);
    s = answer(&c, &cr, 0);
    CHECK_STR(s, "Vary: Origin\r\n");
    free(s);

    /* A preflight without Origin is refused when origins are configured. */
    memset(&cr, 0, sizeof(cr));
    header(&cr, "access-control-request-method", "GET", 100);
    CHECK(exo_cors_preflight_refused(&c, &cr) == 1);

    /* An Origin longer than the limit is dropped, not cut to a prefix that might match. */
    memset(&cr, 0, sizeof(cr));
    char longer[EXO_CORS_ORIGIN_MAX + 40];
    snprintf(longer, sizeof(longer), "https://exosphere.example.org%0*d", 260, 0);
    header(&cr, "origin", longer, 7);
    CHECK(cr.too_long == 1 && cr.origin_len <= EXO_CORS_ORIGIN_MAX);
    s = answer(&c, &cr, 0);
    CHECK_STR(s, "Vary: Origin\r\n");
    free(s);
    exo_config_free(&c);

    /* Without configured origins: no header at all, and no preflight is refused. */
    config_with(&c, NULL, 0);
    memset(&cr, 0, sizeof(cr));
    header(&cr, "origin", "https://exosphere.example.org", 100);
    header(&cr, "access-control-request-method", "POST", 100);
    s = answer(&c, &cr, 1);
    CHECK_STR(s, "");
    free(s);
    CHECK(exo_cors_preflight_refused(&c, &cr) == 0);
    exo_config_free(&c);
}

int main(void)
{
    RUN(test_valid_origins);
    RUN(test_invalid_origins);
    RUN(test_origin_limits);
    RUN(test_allowed);
    RUN(test_headers);
    TEST_END();
}
