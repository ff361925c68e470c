/* TLS: the server context, the self-signed certificate made at first start, and the glue
 * between an SSL object and a libuv stream through memory BIOs. Works with OpenSSL 1.1.1
 * and 3.x. */
#ifndef EXO_TLS_H
#define EXO_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>

/* Ensures a certificate and key exist: the configured pair, or a self-signed ECDSA P-256
 * pair in state_dir (created once, reused after; key 0600). Builds the server context
 * (TLS 1.2 and newer) into *out and writes the certificate's SHA-256 fingerprint
 * ("AB:CD:...") into fingerprint. Returns 0 or a negative errno with a message in err. */
int exo_tls_setup(const char *cert_path, const char *key_path, const char *state_dir, SSL_CTX **out,
                  char *fingerprint, size_t fplen, char *err, size_t errlen);

/* Creates a key and a self-signed certificate for host names `cn` and localhost, valid ten
 * years, and writes them to the two paths (the key with mode 0600, both atomically). */
int exo_tls_make_self_signed(const char *cert_path, const char *key_path, const char *cn, char *err,
                             size_t errlen);

/* The first OpenSSL error on this thread's queue as text (and clears the queue). */
const char *exo_tls_strerror(char *buf, size_t len);

#endif
