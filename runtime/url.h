/* The parser of the http:// URLs the agent itself fetches (the [metadata] url). Kept apart
 * from the client so that the configuration parser can check a URL without the event loop. */
#ifndef EXO_URL_H
#define EXO_URL_H

#include <stddef.h>
#include <stdint.h>

#define EXO_URL_MAX 2048
#define EXO_URL_HOST_MAX 253
#define EXO_URL_PATH_MAX 1024

/* A parsed http:// URL. */
typedef struct exo_url_s {
    char host[EXO_URL_HOST_MAX + 1]; /* a name, or an IP literal without its brackets */
    int host_kind;                   /* EXO_URL_NAME, EXO_URL_IPV4 or EXO_URL_IPV6 */
    uint16_t port;                   /* 80 when the URL gives none */
    char path[EXO_URL_PATH_MAX + 1]; /* starts with '/'; includes the query, if any */
} exo_url_t;

enum { EXO_URL_NAME, EXO_URL_IPV4, EXO_URL_IPV6 };

/* Parses url, which must be http://host[:port][/path][?query] with host an IPv4 literal, an
 * IPv6 literal in brackets or a DNS name. Refuses other schemes (https included: the metadata
 * service has no TLS), user information, fragments, and bytes outside printable ASCII.
 * Returns 0, or -EINVAL with the reason in err (a phrase that does not repeat the URL). */
int exo_url_parse(const char *url, exo_url_t *out, char *err, size_t errlen);

#endif
