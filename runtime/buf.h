/* Growable byte buffers. Every function returns 0 or a negative errno. */
#ifndef EXO_BUF_H
#define EXO_BUF_H

#include <stddef.h>
#include <stdarg.h>

typedef struct exo_buf_s {
    char *data;
    size_t len;
    size_t cap;
} exo_buf_t;

#define EXO_BUF_INIT                                                                               \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

/* Makes room for at least `extra` more bytes past len. */
int exo_buf_reserve(exo_buf_t *b, size_t extra);
int exo_buf_append(exo_buf_t *b, const void *data, size_t len);
int exo_buf_appends(exo_buf_t *b, const char *s);
int exo_buf_appendc(exo_buf_t *b, char c);
int exo_buf_printf(exo_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drops the first n bytes, keeping the rest. */
void exo_buf_consume(exo_buf_t *b, size_t n);
void exo_buf_reset(exo_buf_t *b);
void exo_buf_free(exo_buf_t *b);
/* Hands the storage to the caller (who frees it) and leaves b empty. */
char *exo_buf_steal(exo_buf_t *b, size_t *len);

#endif
