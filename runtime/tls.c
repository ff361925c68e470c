/* TLS context and the self-signed certificate. Only APIs present in both OpenSSL 1.1.1 and
 * 3.x are used, so one source builds on Debian 11 through 13 and EL8 through 10. */
#include "tls.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

const char *exo_tls_strerror(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    if (e == 0)
        snprintf(buf, len, "unknown TLS error");
    else
        ERR_error_string_n(e, buf, len);
    ERR_clear_error();
    return buf;
}

static EVP_PKEY *make_p256_key(void)
{
    EVP_PKEY *key = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_EC, NULL);
    if (ctx == NULL) return NULL;
    if (EVP_PKEY_keygen_init(ctx) <= 0 ||
        EVP_PKEY_CTX_set_ec_paramgen_curve_nid(ctx, NID_X9_62_prime256v1) <= 0 ||
        EVP_PKEY_keygen(ctx, &key) <= 0)
        key = NULL;
    EVP_PKEY_CTX_free(ctx);
    return key;
}

static int add_ext(X509 *cert, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, cert, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, (char *)(uintptr_t)value);
    if (ext == NULL) return -1;
    int ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

/* Writes through a temporary file and rename, so a crash never leaves half a key. */
static int write_pem(const char *path, mode_t mode, EVP_PKEY *key, X509 *cert, char *err,
                     size_t errlen)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
        return -errno;
    }
    FILE *f = fdopen(fd, "w");
    if (f == NULL) {
        close(fd);
        unlink(tmp);
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        return -EIO;
    }
    int ok =
        key ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) : PEM_write_X509(f, cert);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) ok = 0;
    if (fclose(f) != 0) ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        snprintf(err, errlen, "%s: cannot write", path);
        return -EIO;
    }
    return 0;
}

int exo_tls_make_self_signed(const char *cert_path, const char *key_path, const char *cn, char *err,
                             size_t errlen)
{
    int rc = -EIO;
    char ebuf[256];
    EVP_PKEY *key = make_p256_key();
    X509 *cert = X509_new();
    if (key == NULL || cert == NULL) {
        snprintf(err, errlen, "cannot create a key: %s", exo_tls_strerror(ebuf, sizeof(ebuf)));
        goto out;
    }
    unsigned char serial[16];
    if (RAND_bytes(serial, sizeof(serial)) != 1) goto fail;
    serial[0] &= 0x7f; /* a positive serial number */
    BIGNUM *bn = BN_bin2bn(serial, sizeof(serial), NULL);
    if (bn == NULL || BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)) == NULL) {
        BN_free(bn);
        goto fail;
    }
    BN_free(bn);
    char san[512];
    snprintf(san, sizeof(san), "DNS:%s,DNS:localhost,IP:127.0.0.1,IP:::1", cn);
    X509_NAME *name = X509_get_subject_name(cert);
    if (!X509_set_version(cert, 2) || !X509_gmtime_adj(X509_getm_notBefore(cert), -3600) ||
        !X509_gmtime_adj(X509_getm_notAfter(cert), 3650L * 24 * 3600) ||
        !X509_set_pubkey(cert, key) ||
        !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                                    (const unsigned char *)"Exosphere Guest Agent", -1, -1, 0) ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1,
                                    0) ||
        !X509_set_issuer_name(cert, name) ||
        add_ext(cert, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
        add_ext(cert, NID_key_usage, "critical,digitalSignature") < 0 ||
        add_ext(cert, NID_ext_key_usage, "serverAuth") < 0 ||
        add_ext(cert, NID_subject_alt_name, san) < 0 || X509_sign(cert, key, EVP_sha256()) == 0)
        goto fail;
    if ((rc = write_pem(key_path, 0600, key, NULL, err, errlen)) < 0) goto out;
    rc = write_pem(cert_path, 0644, NULL, cert, err, errlen);
    goto out;
fail:
    snprintf(err, errlen, "cannot create a certificate: %s", exo_tls_strerror(ebuf, sizeof(ebuf)));
    rc = -EIO;
out:
    EVP_PKEY_free(key);
    X509_free(cert);
    return rc;
}

static void fingerprint_of(SSL_CTX *ctx, char *out, size_t len)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    X509 *cert = SSL_CTX_get0_certificate(ctx);
    out[0] = '\0';
    if (cert == NULL || !X509_digest(cert, EVP_sha256(), md, &n)) return;
    size_t pos = 0;
    for (unsigned int i = 0; i < n && pos + 4 <= len; i++)
        pos += (size_t)snprintf(out + pos, len - pos, i ? ":%02X" : "%02X", md[i]);
}

int exo_tls_setup(const char *cert_path, const char *key_path, const char *state_dir, SSL_CTX **out,
                  char *fingerprint, size_t fplen, char *err, size_t errlen)
{
    char cbuf[4096], kbuf[4096], ebuf[256];
    if (cert_path == NULL) {
        snprintf(cbuf, sizeof(cbuf), "%s/tls-cert.pem", state_dir);
        snprintf(kbuf, sizeof(kbuf), "%s/tls-key.pem", state_dir);
        cert_path = cbuf;
        key_path = kbuf;
        if (access(cert_path, R_OK) != 0 || access(key_path, R_OK) != 0) {
            char host[256] = "localhost";
            gethostname(host, sizeof(host) - 1);
            int rc = exo_tls_make_self_signed(cert_path, key_path, host, err, errlen);
            if (rc < 0) return rc;
            exo_info("created a self-signed TLS certificate in %s", state_dir);
        }
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        snprintf(err, errlen, "cannot create a TLS context: %s",
                 exo_tls_strerror(ebuf, sizeof(ebuf)));
        return -ENOMEM;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* Forward-secret AEAD suites only for TLS 1.2; TLS 1.3 suites are all of that kind. */
    SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20");
    /* Idle connections give their buffers back: thousands of idle sessions stay small. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_ENABLE_PARTIAL_WRITE);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_path) != 1) {
        snprintf(err, errlen, "%s: cannot load the certificate: %s", cert_path,
                 exo_tls_strerror(ebuf, sizeof(ebuf)));
        SSL_CTX_free(ctx);
        return -EINVAL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_path, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "%s: cannot load the private key or it does not match: %s", key_path,
                 exo_tls_strerror(ebuf, sizeof(ebuf)));
        SSL_CTX_free(ctx);
        return -EINVAL;
    }
    fingerprint_of(ctx, fingerprint, fplen);
    *out = ctx;
    return 0;
}
