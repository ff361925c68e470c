#include "buf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int exo_buf_reserve(exo_buf_t *b, size_t extra)
{
    if (b->cap - b->len >= extra && b->data != NULL) return 0;
    if (extra > ((size_t)-1) / 2 - b->len) return -ENOMEM;
    size_t need = b->len + extra;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (p == NULL) return -ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int exo_buf_append(exo_buf_t *b, const void *data, size_t len)
{
    int rc = exo_buf_reserve(b, len);
    if (rc < 0) return rc;
    if (len > 0) memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

int exo_buf_appends(exo_buf_t *b, const char *s)
{
    return exo_buf_append(b, s, strlen(s));
}

int exo_buf_appendc(exo_buf_t *b, char c)
{
    return exo_buf_append(b, &c, 1);
}

int exo_buf_printf(exo_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return -EINVAL;
    int rc = exo_buf_reserve(b, (size_t)n + 1);
    if (rc < 0) return rc;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void exo_buf_consume(exo_buf_t *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void exo_buf_reset(exo_buf_t *b)
{
    b->len = 0;
}

void exo_buf_free(exo_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

char *exo_buf_steal(exo_buf_t *b, size_t *len)
{
    char *p = b->data;
    if (len) *len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}
