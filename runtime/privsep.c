/* The monitor protocol's framing; see privsep.h. */
#include "privsep.h"

#include <errno.h>
#include <string.h>

static void put32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

int exo_priv_encode(uint8_t *buf, size_t cap, uint32_t op, uint32_t seq, const exo_priv_field_t *f,
                    size_t n)
{
    if (n > EXO_PRIV_MAX_FIELDS) return -EINVAL;
    if (cap > EXO_PRIV_MAX_MESSAGE) cap = EXO_PRIV_MAX_MESSAGE;
    size_t need = 12;
    for (size_t i = 0; i < n; i++) {
        if (f[i].len > EXO_PRIV_MAX_MESSAGE) return -EMSGSIZE;
        need += 4 + f[i].len;
    }
    if (need > cap) return -EMSGSIZE;
    put32(buf, op);
    put32(buf + 4, seq);
    put32(buf + 8, (uint32_t)n);
    size_t pos = 12;
    for (size_t i = 0; i < n; i++) {
        put32(buf + pos, (uint32_t)f[i].len);
        if (f[i].len) memcpy(buf + pos + 4, f[i].p, f[i].len);
        pos += 4 + f[i].len;
    }
    return (int)pos;
}

int exo_priv_decode(const uint8_t *buf, size_t len, exo_priv_msg_t *m, const char **why)
{
    memset(m, 0, sizeof(*m));
    if (len < 12 || len > EXO_PRIV_MAX_MESSAGE) {
        *why = len < 12 ? "shorter than a header" : "longer than the message limit";
        return -EBADMSG;
    }
    m->op = get32(buf);
    m->seq = get32(buf + 4);
    uint32_t n = get32(buf + 8);
    if (n > EXO_PRIV_MAX_FIELDS) {
        *why = "too many fields";
        return -EBADMSG;
    }
    size_t pos = 12;
    for (uint32_t i = 0; i < n; i++) {
        if (len - pos < 4) {
            *why = "a field length runs past the end";
            return -EBADMSG;
        }
        uint32_t flen = get32(buf + pos);
        pos += 4;
        if (flen > len - pos) {
            *why = "a field runs past the end";
            return -EBADMSG;
        }
        m->f[i].p = (const char *)buf + pos;
        m->f[i].len = flen;
        pos += flen;
    }
    if (pos != len) {
        *why = "bytes after the last field";
        return -EBADMSG;
    }
    m->n = n;
    return 0;
}

int exo_priv_field_is(const exo_priv_field_t *f, const char *s)
{
    size_t n = strlen(s);
    return f->len == n && memcmp(f->p, s, n) == 0;
}

int exo_priv_field_copy(const exo_priv_field_t *f, char *out, size_t cap)
{
    if (f->len >= cap || memchr(f->p, '\0', f->len) != NULL) return -1;
    memcpy(out, f->p, f->len);
    out[f->len] = '\0';
    return 0;
}
