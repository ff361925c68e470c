/* The URL parser (url.h). */
#include "url.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

__attribute__((format(printf, 3, 4))) static int url_fail(char *err, size_t errlen, const char *fmt,
                                                          ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

/* A DNS name: dot-separated labels of letters, digits and '-', not starting or ending with '-'
 * (a trailing dot, the root, is allowed). */
static int is_hostname(const char *s, size_t len)
{
    size_t label = 0;
    if (len == 0 || len > EXO_URL_HOST_MAX) return 0;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (ch == '.') {
            if (label == 0 || s[i - 1] == '-') return 0;
            label = 0;
        } else if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                   (ch >= '0' && ch <= '9') || (ch == '-' && label > 0)) {
            if (++label > 63) return 0;
        } else {
            return 0;
        }
    }
    return s[len - 1] != '-';
}

static int parse_host(const char *s, size_t len, exo_url_t *out, char *err, size_t errlen)
{
    unsigned char addr[16];
    if (len > EXO_URL_HOST_MAX) return url_fail(err, errlen, "the host name is too long");
    memcpy(out->host, s, len);
    out->host[len] = '\0';
    if (s[0] == '[') {
        if (len < 3 || s[len - 1] != ']')
            return url_fail(err, errlen,
                            "an IPv6 address must be in brackets, like [fe80::a9fe:a9fe]");
        memmove(out->host, s + 1, len - 2);
        out->host[len - 2] = '\0';
        if (strchr(out->host, '%') != NULL)
            return url_fail(err, errlen, "IPv6 zone ids (%%eth0) are not supported");
        if (inet_pton(AF_INET6, out->host, addr) != 1)
            return url_fail(err, errlen, "'%s' is not an IPv6 address", out->host);
        out->host_kind = EXO_URL_IPV6;
        return 0;
    }
    if (len == 0) return url_fail(err, errlen, "the host is missing");
    /* Something that looks like an IPv4 address must be one; 999.1.1.1 is not a name. */
    if (strspn(out->host, "0123456789.") == len) {
        if (inet_pton(AF_INET, out->host, addr) != 1)
            return url_fail(err, errlen, "'%s' is not an IPv4 address", out->host);
        out->host_kind = EXO_URL_IPV4;
        return 0;
    }
    if (!is_hostname(s, len))
        return url_fail(err, errlen,
                        "the host must be an IPv4 address, an IPv6 address in brackets or a DNS "
                        "name");
    out->host_kind = EXO_URL_NAME;
    return 0;
}

static int parse_port(const char *s, size_t len, exo_url_t *out, char *err, size_t errlen)
{
    unsigned long port = 0;
    if (len == 0 || len > 5 || strspn(s, "0123456789") < len)
        return url_fail(err, errlen, "the port must be a number from 1 to 65535");
    for (size_t i = 0; i < len; i++)
        port = port * 10 + (unsigned long)(s[i] - '0');
    if (port == 0 || port > 65535)
        return url_fail(err, errlen, "the port must be a number from 1 to 65535");
    out->port = (uint16_t)port;
    return 0;
}

int exo_url_parse(const char *url, exo_url_t *out, char *err, size_t errlen)
{
    static const char scheme[] = "http://";
    memset(out, 0, sizeof(*out));
    size_t n = strlen(url);
    if (n > EXO_URL_MAX) return url_fail(err, errlen, "longer than %d bytes", EXO_URL_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)url[i];
        if (ch <= 0x20 || ch >= 0x7f)
            return url_fail(err, errlen,
                            "only printable ASCII without spaces is allowed (percent-encode the "
                            "rest)");
    }
    if (strncasecmp(url, "https://", 8) == 0)
        return url_fail(err, errlen,
                        "https is not supported: the metadata service is plain HTTP on the "
                        "link-local network; use http://");
    if (strncasecmp(url, scheme, sizeof(scheme) - 1) != 0)
        return url_fail(err, errlen,
                        strstr(url, "://")
                            ? "only http:// URLs are supported"
                            : "expected a URL like "
                              "http://169.254.169.254/openstack/latest/meta_data.json");
    const char *auth = url + sizeof(scheme) - 1;
    size_t alen = strcspn(auth, "/?#");
    const char *rest = auth + alen;
    if (memchr(auth, '@', alen) != NULL)
        return url_fail(err, errlen, "user information (user@host) is not supported");
    /* The port follows the last ':' outside the brackets of an IPv6 address. */
    const char *close = auth[0] == '[' ? memchr(auth, ']', alen) : NULL;
    const char *colon = NULL;
    int colons = 0;
    for (const char *p = close ? close : auth; p < auth + alen; p++)
        if (*p == ':') colon = p, colons++;
    if (colons > 1)
        return url_fail(err, errlen, "an IPv6 address must be in brackets, like [fe80::a9fe:a9fe]");
    if (close != NULL && close + 1 < auth + alen && close[1] != ':')
        return url_fail(err, errlen, "expected ':port' or the path after ']'");
    size_t hlen = colon ? (size_t)(colon - auth) : alen;
    int rc = parse_host(auth, hlen, out, err, errlen);
    if (rc < 0) return rc;
    out->port = 80;
    if (colon != NULL && (rc = parse_port(colon + 1, alen - hlen - 1, out, err, errlen)) < 0)
        return rc;
    if (strchr(rest, '#') != NULL) return url_fail(err, errlen, "a fragment (#...) is not allowed");
    size_t plen = strlen(rest);
    int slash = rest[0] != '/';
    if (plen + (size_t)slash > EXO_URL_PATH_MAX)
        return url_fail(err, errlen, "the path is longer than %d bytes", EXO_URL_PATH_MAX);
    out->path[0] = '/';
    memcpy(out->path + slash, rest, plen + 1);
    return 0;
}
