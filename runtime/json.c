/* The JSON codec. Decoding and encoding each run as a C function under lua_pcall: a syntax or
 * encoding error is recorded in the caller's exo_json_err_t and raised, which unwinds every
 * half-built table at once, and a memory error raised by Lua itself lands in the same place.
 * The raw-span helpers at the end read text only and touch no Lua state. */
#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

/* How a byte behaves inside a string. One lookup keeps runs of plain bytes a tight loop. */
enum { STR_PLAIN, STR_SPECIAL, STR_HIGH };
static const unsigned char str_class[256] = {
    [0x00 ... 0x1f] = STR_SPECIAL, /* control characters must be escaped */
    ['"'] = STR_SPECIAL,
    ['\\'] = STR_SPECIAL,
    [0x80 ... 0xff] = STR_HIGH, /* part of a multi-byte UTF-8 sequence, or invalid */
};

/* What each single-letter escape stands for; 0 for letters that are not escapes. */
static const char unescape_table[256] = {
    ['"'] = '"',  ['\\'] = '\\', ['/'] = '/',  ['b'] = '\b',
    ['f'] = '\f', ['n'] = '\n',  ['r'] = '\r', ['t'] = '\t',
};

/* The short escape letter of the control characters that have one; the rest use \u00XX. */
static const char escape_table[0x20] = {
    ['\b'] = 'b', ['\f'] = 'f', ['\n'] = 'n', ['\r'] = 'r', ['\t'] = 't',
};

/* Returns the length of the well-formed (RFC 3629) UTF-8 sequence at p, whose first byte is
 * >= 0x80 and which must end by `end`, or 0. */
static inline size_t utf8_seq(const unsigned char *p, const unsigned char *end)
{
    unsigned char c = p[0], lo, hi;
    if (c < 0xc2 || c > 0xf4) return 0; /* continuation bytes, overlong forms, > U+10FFFF */
    size_t need = c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
    lo = c == 0xe0 ? 0xa0 : c == 0xf0 ? 0x90 : 0x80; /* overlong forms */
    hi = c == 0xed ? 0x9f : c == 0xf4 ? 0x8f : 0xbf; /* surrogates (CESU-8), > U+10FFFF */
    if ((size_t)(end - p) < need || p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < need; i++)
        if ((p[i] & 0xc0) != 0x80) return 0;
    return need;
}

/* Writes code point cp as UTF-8 at o and returns the end. */
static unsigned char *utf8_put(unsigned char *o, unsigned cp)
{
    static const unsigned char lead[] = {0, 0, 0xc0, 0xe0, 0xf0};
    if (cp < 0x80) {
        *o = (unsigned char)cp;
        return o + 1;
    }
    int n = cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    for (int i = n - 1; i > 0; i--, cp >>= 6)
        o[i] = (unsigned char)(0x80 | (cp & 0x3f));
    o[0] = (unsigned char)(lead[n] | cp);
    return o + n;
}

static inline int is_digit(unsigned char c)
{
    return (unsigned)(c - '0') < 10;
}

/* Returns the value of the four hex digits at p, or -1. */
static int hex4(const unsigned char *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int c = p[i], lower = c | 0x20;
        if (is_digit((unsigned char)c))
            v = v << 4 | (c - '0');
        else if (lower >= 'a' && lower <= 'f')
            v = v << 4 | (lower - 'a' + 10);
        else
            return -1;
    }
    return v;
}

static inline int is_ws(unsigned char c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

/* What the decoder and the encoder share. rc is recorded just before raising; it stays 0 when
 * Lua itself raised, which with no Lua code running inside means it ran out of memory. */
typedef struct json_ctx_s {
    lua_State *L;
    exo_json_err_t *err;
    int rc;
} json_ctx_t;

/* Records rc and unwinds to the protected call; err->msg must already be set. */
__attribute__((noreturn)) static void ctx_raise(json_ctx_t *c, int rc)
{
    c->rc = rc;
    if (rc == -ENOMEM) snprintf(c->err->msg, sizeof(c->err->msg), "out of memory");
    lua_error(c->L);
    abort(); /* not reached: lua_error never returns, but lua.h does not declare it noreturn */
}

/* Calls fn under lua_pcall with the value at idx (unless idx is 0) and c, which starts the
 * decoder's or encoder's state, as arguments; returns 0 or the negative errno. */
static int ctx_call(json_ctx_t *c, lua_CFunction fn, int idx, int nresults)
{
    c->err->offset = 0;
    c->err->msg[0] = '\0';
    if (!lua_checkstack(c->L, 3)) {
        snprintf(c->err->msg, sizeof(c->err->msg), "out of memory");
        return -ENOMEM;
    }
    lua_pushcfunction(c->L, fn);
    if (idx != 0) lua_pushvalue(c->L, idx);
    lua_pushlightuserdata(c->L, c);
    int status = lua_pcall(c->L, idx != 0 ? 2 : 1, nresults, 0);
    if (status == LUA_OK) return 0;
    if (c->rc == 0) {
        const char *m = lua_tostring(c->L, -1);
        c->rc = status == LUA_ERRMEM ? -ENOMEM : -EINVAL;
        snprintf(c->err->msg, sizeof(c->err->msg), "%s",
                 c->rc == -ENOMEM || m == NULL ? "out of memory" : m);
    }
    lua_pop(c->L, 1);
    return c->rc;
}

/* ---------------------------------------------------------------------------------------- */
/* Decoding */

/* The array metatable sits at this index of the decoder's frame, fetched once per call. */
#define DEC_MT 2

typedef struct dec_s {
    json_ctx_t c; /* first, so that the context pointer is also the decoder's */
    const unsigned char *start, *p, *end;
    exo_buf_t scratch; /* escaped strings and long number tokens; freed by exo_json_decode */
    int depth;
} dec_t;

static void dec_value(dec_t *d);

__attribute__((noreturn, format(printf, 3, 4))) static void
dec_fail(dec_t *d, const unsigned char *at, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->c.err->msg, sizeof(d->c.err->msg), fmt, ap);
    va_end(ap);
    d->c.err->offset = (size_t)(at - d->start);
    ctx_raise(&d->c, -EINVAL);
}

/* Reports the byte at d->p as out of place; `expected`, if given, says what belongs there. */
__attribute__((noreturn)) static void dec_unexpected(dec_t *d, const char *expected)
{
    const unsigned char *p = d->p;
    if (p == d->end) dec_fail(d, p, "unexpected end of input");
    if (expected != NULL) dec_fail(d, p, "expected %s", expected);
    if (*p >= 0x20 && *p < 0x7f) dec_fail(d, p, "unexpected character '%c'", *p);
    dec_fail(d, p, "unexpected byte 0x%02x", *p);
}

static inline void dec_skip_ws(dec_t *d)
{
    while (d->p < d->end && is_ws(*d->p))
        d->p++;
}

/* The slow path of dec_string, from the first backslash at p in the string whose contents
 * begin at start. No escape decodes to more bytes than it occupies, so the text up to the
 * closing quote bounds the output and the copy needs no capacity checks; the copy consumes
 * escapes exactly as the search for the quote skipped them, so it stops precisely there. */
static void dec_string_escaped(dec_t *d, const unsigned char *start, const unsigned char *p)
{
    const unsigned char *q = p;
    while (q < d->end && *q != '"')
        q += *q == '\\' ? 2 : 1;
    if (q >= d->end) dec_fail(d, start - 1, "unterminated string");
    if (exo_buf_reserve(&d->scratch, (size_t)(q - start)) < 0) ctx_raise(&d->c, -ENOMEM);

    unsigned char *out = (unsigned char *)d->scratch.data, *o = out;
    memcpy(o, start, (size_t)(p - start));
    o += p - start;
    while (p < q) {
        unsigned char c = *p;
        if (str_class[c] == STR_PLAIN) {
            *o++ = c;
            p++;
        } else if (c >= 0x80) {
            size_t n = utf8_seq(p, q);
            if (n == 0) dec_fail(d, p, "invalid UTF-8 in string");
            memcpy(o, p, n);
            o += n;
            p += n;
        } else if (c != '\\') {
            dec_fail(d, p, "unescaped control character 0x%02x in string", c);
        } else if (p[1] != 'u') {
            if (unescape_table[p[1]] == 0) dec_fail(d, p, "invalid escape in string");
            *o++ = (unsigned char)unescape_table[p[1]];
            p += 2;
        } else {
            int cp, lo;
            if (q - p < 6 || (cp = hex4(p + 2)) < 0) dec_fail(d, p, "invalid \\u escape in string");
            if (cp >= 0xd800 && cp <= 0xdbff) {
                /* Only a high and a low surrogate together make a code point. */
                if (q - p < 12 || p[6] != '\\' || p[7] != 'u' || (lo = hex4(p + 8)) < 0xdc00 ||
                    lo > 0xdfff)
                    dec_fail(d, p, "lone surrogate in \\u escape");
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                p += 6;
            } else if (cp >= 0xdc00 && cp <= 0xdfff) {
                dec_fail(d, p, "lone surrogate in \\u escape");
            }
            o = utf8_put(o, (unsigned)cp);
            p += 6;
        }
    }
    lua_pushlstring(d->c.L, (const char *)out, (size_t)(o - out));
    d->p = q + 1;
}

/* Pushes the string whose opening quote is at d->p. Strings without escapes, the usual case,
 * are validated in place and pushed straight from the input. */
static void dec_string(dec_t *d)
{
    const unsigned char *start = d->p + 1, *p = start, *end = d->end;
    for (;;) {
        while (p < end && str_class[*p] == STR_PLAIN)
            p++;
        if (p == end) dec_fail(d, d->p, "unterminated string");
        if (*p == '"') break;
        if (*p == '\\') {
            dec_string_escaped(d, start, p);
            return;
        }
        if (*p < 0x20) dec_fail(d, p, "unescaped control character 0x%02x in string", *p);
        size_t n = utf8_seq(p, end);
        if (n == 0) dec_fail(d, p, "invalid UTF-8 in string");
        p += n;
    }
    lua_pushlstring(d->c.L, (const char *)start, (size_t)(p - start));
    d->p = p + 1;
}

/* Pushes the number at d->p: a lua_Integer when the token has no fraction or exponent and
 * fits, so that ids and counters survive exactly; otherwise a float from strtod. */
static void dec_number(dec_t *d)
{
    const unsigned char *start = d->p, *p = start, *end = d->end;
    int neg = *p == '-', integral = 1, overflow = 0;
    lua_Unsigned u = 0;
    p += neg;
    if (p == end || !is_digit(*p)) dec_fail(d, p, "invalid number: expected a digit");
    if (*p == '0' && p + 1 < end && is_digit(p[1]))
        dec_fail(d, start, "invalid number: leading zero");
    for (; p < end && is_digit(*p); p++) {
        unsigned digit = *p - '0';
        if (u > ((lua_Unsigned)-1 - digit) / 10)
            overflow = 1;
        else
            u = u * 10 + digit;
    }
    if (p < end && *p == '.') {
        integral = 0;
        if (++p == end || !is_digit(*p))
            dec_fail(d, p, "invalid number: expected a digit after '.'");
        while (p < end && is_digit(*p))
            p++;
    }
    if (p < end && (*p | 0x20) == 'e') {
        integral = 0;
        if (++p < end && (*p == '+' || *p == '-')) p++;
        if (p == end || !is_digit(*p))
            dec_fail(d, p, "invalid number: expected a digit in the exponent");
        while (p < end && is_digit(*p))
            p++;
    }
    d->p = p;

    if (integral && !overflow && u <= (lua_Unsigned)LUA_MAXINTEGER + (lua_Unsigned)neg) {
        /* -(u - 1) - 1 reaches LUA_MININTEGER without overflowing on the way. */
        lua_pushinteger(d->c.L, neg && u > 0 ? -(lua_Integer)(u - 1) - 1 : (lua_Integer)u);
        return;
    }
    /* strtod needs a terminated string and the input is not one. */
    size_t n = (size_t)(p - start);
    char local[64], *tok = local;
    if (n >= sizeof(local)) {
        if (exo_buf_reserve(&d->scratch, n + 1) < 0) ctx_raise(&d->c, -ENOMEM);
        tok = d->scratch.data;
    }
    memcpy(tok, start, n);
    tok[n] = '\0';
    double v = strtod(tok, NULL);
    /* Infinity could not be encoded again, so overflow is refused; underflow rounds to 0. */
    if (isinf(v)) dec_fail(d, start, "number out of range");
    lua_pushnumber(d->c.L, v);
}

/* Pushes the literal true, false or null at d->p. */
static void dec_literal(dec_t *d)
{
    const char *word = *d->p == 't' ? "true" : *d->p == 'f' ? "false" : "null";
    size_t n = strlen(word);
    if ((size_t)(d->end - d->p) < n || memcmp(d->p, word, n) != 0)
        dec_fail(d, d->p, "invalid literal");
    d->p += n;
    if (*word == 'n')
        exo_json_push_null(d->c.L);
    else
        lua_pushboolean(d->c.L, *word == 't');
}

/* Pushes the object or array that opens at d->p. The depth limit also bounds the recursion. */
static void dec_container(dec_t *d)
{
    lua_State *L = d->c.L;
    int object = *d->p == '{';
    unsigned char close = object ? '}' : ']';
    lua_Integer n = 0;

    if (++d->depth > EXO_JSON_MAX_DEPTH)
        dec_fail(d, d->p, "nesting deeper than %d", EXO_JSON_MAX_DEPTH);
    if (!lua_checkstack(L, 3)) ctx_raise(&d->c, -ENOMEM);
    /* Room for a few members up front saves most of the rehashing as the table fills. */
    lua_createtable(L, object ? 0 : 4, object ? 4 : 0);
    if (!object) {
        lua_pushvalue(L, DEC_MT);
        lua_setmetatable(L, -2);
    }
    /* stack: ..., container */
    for (;;) {
        d->p++; /* past the bracket or a comma */
        dec_skip_ws(d);
        if (n == 0 && d->p < d->end && *d->p == close) break;
        if (object) {
            if (d->p == d->end || *d->p != '"') dec_unexpected(d, "a string as object key");
            dec_string(d);
            dec_skip_ws(d);
            if (d->p == d->end || *d->p != ':') dec_unexpected(d, "':' after object key");
            d->p++;
            dec_skip_ws(d);
        }
        dec_value(d);
        /* stack: ..., object, key, value or ..., array, value. A repeated key overwrites the
         * earlier one, so the last occurrence wins. */
        if (object)
            lua_rawset(L, -3);
        else
            lua_rawseti(L, -2, n + 1);
        n++;
        dec_skip_ws(d);
        if (d->p < d->end && *d->p == close) break;
        if (d->p == d->end || *d->p != ',')
            dec_unexpected(d, object ? "',' or '}' in object" : "',' or ']' in array");
    }
    d->p++;
    d->depth--;
}

/* Pushes the value at d->p, where the caller has already skipped whitespace. */
static void dec_value(dec_t *d)
{
    unsigned char c = d->p < d->end ? *d->p : '\0';
    if (c == '{' || c == '[')
        dec_container(d);
    else if (c == '"')
        dec_string(d);
    else if (c == 't' || c == 'f' || c == 'n')
        dec_literal(d);
    else if (c == '-' || is_digit(c))
        dec_number(d);
    else
        dec_unexpected(d, NULL);
}

static int dec_run(lua_State *L)
{
    dec_t *d = lua_touserdata(L, 1);
    exo_json_push_array_mt(L);
    /* stack: ctx, array_mt */
    dec_skip_ws(d);
    if (d->p == d->end) dec_fail(d, d->p, "empty input");
    dec_value(d);
    /* stack: ctx, array_mt, value */
    dec_skip_ws(d);
    if (d->p != d->end) dec_fail(d, d->p, "trailing characters after JSON value");
    return 1;
}

int exo_json_decode(lua_State *L, const char *s, size_t len, exo_json_err_t *err)
{
    exo_json_err_t ignored;
    const unsigned char *text = (const unsigned char *)(s != NULL ? s : "");
    dec_t d = {.c = {L, err != NULL ? err : &ignored, 0},
               .start = text,
               .p = text,
               .end = text + len,
               .scratch = EXO_BUF_INIT};

    int rc = ctx_call(&d.c, dec_run, 0, 1);
    exo_buf_free(&d.scratch);
    if (rc == -ENOMEM) d.c.err->offset = (size_t)(d.p - d.start);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* Encoding */

/* The encoder's frame: the value at 1, the context at 2, the array metatable at 3. */
#define ENC_MT 3

/* Objects with up to this many keys sort them in an array on the C stack. */
#define ENC_SMALL_OBJECT 16

/* An object key; as a step in the path to a value, s is NULL for an array position and len
 * holds that position. */
typedef struct enc_key_s {
    const char *s;
    size_t len;
    int idx; /* stack slot of the key while its object is encoded */
} enc_key_t;

typedef struct enc_s {
    json_ctx_t c; /* first, so that the context pointer is also the encoder's */
    exo_buf_t *out;
    int depth; /* tables around the value being encoded, which is also the steps in path */
    enc_key_t path[EXO_JSON_MAX_DEPTH];
} enc_t;

static void enc_value(enc_t *e, int idx);

/* Appends to err->msg as much as fits. */
static void msg_put(exo_json_err_t *err, size_t *n, const char *s, size_t len)
{
    size_t room = sizeof(err->msg) - 1 - *n;
    len = len < room ? len : room;
    memcpy(err->msg + *n, s, len);
    *n += len;
    err->msg[*n] = '\0';
}

/* Appends the path to the current value: identifier-like keys as .name, others as ["name"]
 * with unprintable bytes shown as '?', so that the message stays readable ASCII. */
static void msg_put_path(const enc_t *e, size_t *n)
{
    exo_json_err_t *err = e->c.err;
    msg_put(err, n, " at $", 5);
    for (int i = 0; i < e->depth; i++) {
        const enc_key_t *step = &e->path[i];
        if (step->s == NULL) {
            char tmp[32];
            int len = snprintf(tmp, sizeof(tmp), "[%zu]", step->len);
            msg_put(err, n, tmp, (size_t)len);
            continue;
        }
        /* Lua strings are NUL-terminated, so strspn stays inside the key. */
        int ident = step->len > 0 && !is_digit((unsigned char)step->s[0]) &&
                    strspn(step->s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"
                                    "0123456789") == step->len;
        msg_put(err, n, ident ? "." : "[\"", ident ? 1 : 2);
        for (size_t j = 0; j < step->len; j++) {
            unsigned char c = (unsigned char)step->s[j];
            char shown = c >= 0x20 && c < 0x7f && c != '"' && c != '\\' ? (char)c : '?';
            msg_put(err, n, &shown, 1);
        }
        if (!ident) msg_put(err, n, "\"]", 2);
    }
}

__attribute__((noreturn, format(printf, 2, 3))) static void enc_fail(enc_t *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->c.err->msg, sizeof(e->c.err->msg), fmt, ap);
    va_end(ap);
    size_t n = strlen(e->c.err->msg);
    msg_put_path(e, &n);
    ctx_raise(&e->c, -EINVAL);
}

/* Appends to the output, calling into buf.c only when it must grow. */
static inline void enc_put(enc_t *e, const void *p, size_t n)
{
    exo_buf_t *b = e->out;
    if ((b->cap - b->len < n || b->data == NULL) && exo_buf_reserve(b, n) < 0)
        ctx_raise(&e->c, -ENOMEM);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

/* Writes v in decimal without going through printf. */
static void enc_integer(enc_t *e, lua_Integer v)
{
    char tmp[24], *p = tmp + sizeof(tmp);
    lua_Unsigned u = v < 0 ? 0 - (lua_Unsigned)v : (lua_Unsigned)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0) *--p = '-';
    enc_put(e, p, (size_t)(tmp + sizeof(tmp) - p));
}

/* Writes the shortest of %.15g, %.16g and %.17g that reads back as the same double. Negative
 * zero becomes -0.0 because "-0" would decode as the integer 0. */
static void enc_double(enc_t *e, double v)
{
    char tmp[32];
    int n = 0;
    if (isnan(v)) enc_fail(e, "cannot encode NaN");
    if (isinf(v)) enc_fail(e, "cannot encode %sinfinity", v < 0 ? "-" : "");
    if (v == 0 && signbit(v)) {
        enc_put(e, "-0.0", 4);
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
        if (strtod(tmp, NULL) == v) break;
    }
    enc_put(e, tmp, (size_t)n);
}

/* Writes s as a JSON string: runs of plain bytes are copied in one piece, the quote, the
 * backslash and control characters are escaped, and multi-byte UTF-8 sequences are validated
 * and copied unchanged. `what` names the string in an error message. */
static void enc_string(enc_t *e, const char *s, size_t len, const char *what)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s, *end = p + len, *run = p;
    if (exo_buf_reserve(e->out, len + 2) < 0) ctx_raise(&e->c, -ENOMEM);
    enc_put(e, "\"", 1);
    while (p < end) {
        unsigned char c = *p;
        if (str_class[c] == STR_PLAIN) {
            p++;
        } else if (c >= 0x80) {
            size_t n = utf8_seq(p, end);
            if (n == 0) enc_fail(e, "invalid UTF-8 in %s", what);
            p += n;
        } else {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            char letter = c < 0x20 ? escape_table[c] : (char)c; /* '"' and '\\' escape as such */
            if (letter != 0) esc[1] = letter;
            enc_put(e, run, (size_t)(p - run));
            enc_put(e, esc, letter != 0 ? 2 : 6);
            run = ++p;
        }
    }
    enc_put(e, run, (size_t)(p - run));
    enc_put(e, "\"", 1);
}

static void enc_array(enc_t *e, int t, lua_Integer n)
{
    enc_put(e, "[", 1);
    for (lua_Integer i = 1; i <= n; i++) {
        if (i > 1) enc_put(e, ",", 1);
        e->path[e->depth++] = (enc_key_t){NULL, (size_t)i - 1, 0};
        lua_rawgeti(e->c.L, t, i);
        /* stack: ..., element */
        enc_value(e, lua_gettop(e->c.L));
        lua_pop(e->c.L, 1);
        e->depth--;
    }
    enc_put(e, "]", 1);
}

static int key_cmp(const void *a, const void *b)
{
    const enc_key_t *x = a, *y = b;
    int c = memcmp(x->s, y->s, x->len < y->len ? x->len : y->len);
    return c != 0 ? c : (x->len > y->len) - (x->len < y->len);
}

/* Writes the table at t, whose n keys are all strings, as an object with its keys sorted
 * bytewise. The key pointers stay valid because the table holds the strings and the collector
 * is paused for the whole encoding (see exo_json_encode). */
static void enc_object(enc_t *e, int t, size_t n)
{
    lua_State *L = e->c.L;
    enc_key_t small[ENC_SMALL_OBJECT], *keys = small;
    size_t i = 0;

    if (n == 0) {
        enc_put(e, "{}", 2);
        return;
    }
    /* The keys stay on the stack while they are encoded, so they are anchored whatever the
     * collector does; nothing below allocates a Lua object except the key array itself. */
    if (!lua_checkstack(L, (int)n + 4)) enc_fail(e, "object with too many keys");
    if (n > ENC_SMALL_OBJECT) keys = lua_newuserdatauv(L, n * sizeof(*keys), 0);
    int base = lua_gettop(L);
    /* stack: ..., [keys] */
    lua_pushnil(L);
    while (lua_next(L, t)) {
        /* stack: ..., [keys], key1..keyi, key, value */
        lua_pop(L, 1);
        if (i == n) {
            lua_pop(L, 1);
            break;
        }
        lua_pushvalue(L, -1); /* one copy stays, the other goes on to lua_next */
        keys[i].s = lua_tolstring(L, -1, &keys[i].len);
        keys[i].idx = base + 1 + (int)i;
        i++;
    }
    n = i;
    qsort(keys, n, sizeof(*keys), key_cmp);

    enc_put(e, "{", 1);
    for (i = 0; i < n; i++) {
        if (i > 0) enc_put(e, ",", 1);
        e->path[e->depth++] = keys[i];
        enc_string(e, keys[i].s, keys[i].len, "object key");
        enc_put(e, ":", 1);
        lua_pushvalue(L, keys[i].idx);
        lua_rawget(L, t);
        /* stack: ..., [keys], keys..., value */
        enc_value(e, lua_gettop(L));
        lua_pop(L, 1);
        e->depth--;
    }
    enc_put(e, "}", 1);
    lua_settop(L, keys != small ? base - 1 : base);
}

/* Decides between array and object from the table's raw keys: a table with the array
 * metatable, or a non-empty one whose keys are exactly 1..n, is an array; one whose keys are
 * all strings, or that has none, is an object; anything else has no JSON form. */
static void enc_table(enc_t *e, int t)
{
    lua_State *L = e->c.L;
    lua_Integer count = 0, strings = 0, max = 0;
    int marked = 0, other = 0;

    if (e->depth >= EXO_JSON_MAX_DEPTH)
        enc_fail(e, "tables nested deeper than %d (a cycle?)", EXO_JSON_MAX_DEPTH);
    if (!lua_checkstack(L, 4)) ctx_raise(&e->c, -ENOMEM);
    if (lua_getmetatable(L, t)) {
        marked = lua_rawequal(L, -1, ENC_MT);
        lua_pop(L, 1);
    }
    lua_pushnil(L);
    while (lua_next(L, t)) {
        /* stack: ..., key, value */
        lua_pop(L, 1);
        count++;
        if (lua_type(L, -1) == LUA_TSTRING)
            strings++;
        else if (lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 1)
            max = lua_tointeger(L, -1) > max ? lua_tointeger(L, -1) : max;
        else
            other = 1;
    }
    /* Distinct positive integer keys whose largest equals their number are exactly 1..n. */
    int sequence = !other && strings == 0 && max == count;
    if (marked && !sequence) enc_fail(e, "cannot encode array with keys other than 1..n");
    if (sequence && (marked || count > 0))
        enc_array(e, t, count);
    else if (strings == count)
        enc_object(e, t, (size_t)count);
    else if (!other && strings == 0)
        enc_fail(e, "cannot encode sparse array");
    else
        enc_fail(e, "cannot encode table with mixed or non-string keys");
}

static void enc_value(enc_t *e, int idx)
{
    lua_State *L = e->c.L;
    int type = lua_type(L, idx);
    size_t len = 0;
    const char *s = type == LUA_TSTRING ? lua_tolstring(L, idx, &len) : NULL;
    if (type == LUA_TNIL || (type == LUA_TLIGHTUSERDATA && lua_touserdata(L, idx) == NULL))
        enc_put(e, "null", 4);
    else if (type == LUA_TBOOLEAN)
        enc_put(e, lua_toboolean(L, idx) ? "true" : "false", lua_toboolean(L, idx) ? 4 : 5);
    else if (type == LUA_TNUMBER && lua_isinteger(L, idx))
        enc_integer(e, lua_tointeger(L, idx));
    else if (type == LUA_TNUMBER)
        enc_double(e, lua_tonumber(L, idx));
    else if (type == LUA_TSTRING)
        enc_string(e, s, len, "string");
    else if (type == LUA_TTABLE)
        enc_table(e, idx);
    else
        enc_fail(e, "cannot encode %s", luaL_typename(L, idx));
}

static int enc_run(lua_State *L)
{
    enc_t *e = lua_touserdata(L, 2);
    exo_json_push_array_mt(L);
    /* stack: value, ctx, array_mt */
    enc_value(e, 1);
    return 0;
}

int exo_json_encode(lua_State *L, int idx, exo_buf_t *out, exo_json_err_t *err)
{
    exo_json_err_t ignored;
    size_t mark = out->len;
    enc_t e = {.c = {L, err != NULL ? err : &ignored, 0}, .out = out};
    /* No pause of the collector: enc_object keeps the keys it points to on the stack. (A
     * LUA_GCSTOP/LUA_GCRESTART pair here used to cost a collection step per call, because
     * RESTART sets the collector's debt to zero.) */
    int rc = ctx_call(&e.c, enc_run, lua_absindex(L, idx), 0);
    if (rc < 0) out->len = mark;
    return rc;
}

void exo_json_push_null(lua_State *L)
{
    lua_pushlightuserdata(L, NULL);
}

void exo_json_push_array_mt(lua_State *L)
{
    if (luaL_newmetatable(L, EXO_JSON_ARRAY_MT)) {
        /* stack: mt */
        lua_pushliteral(L, EXO_JSON_ARRAY_MT);
        lua_setfield(L, -2, "__metatable");
    }
}

int exo_json_is_array(lua_State *L, int idx)
{
    if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx)) return 0;
    exo_json_push_array_mt(L);
    /* stack: mt, array_mt */
    int marked = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return marked;
}

void exo_json_mark_array(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    exo_json_push_array_mt(L);
    lua_setmetatable(L, idx);
}

/* ---------------------------------------------------------------------------------------- */
/* Raw spans */

static size_t skip_ws(const char *s, size_t len, size_t pos)
{
    while (pos < len && is_ws((unsigned char)s[pos]))
        pos++;
    return pos;
}

/* Returns the offset past the closing quote of the string whose opening quote is at pos. */
static size_t skip_string(const char *s, size_t len, size_t pos)
{
    for (pos++; pos < len; pos++) {
        if (s[pos] == '"') return pos + 1;
        if (s[pos] == '\\') pos++;
    }
    return (size_t)-1;
}

size_t exo_json_skip(const char *s, size_t len, size_t pos)
{
    size_t depth = 0, start;
    pos = skip_ws(s, len, pos);
    /* The text is known to be valid, so counting brackets is enough to find the end of a
     * container; strings are skipped whole because they may contain brackets. */
    do {
        if (pos >= len) return (size_t)-1;
        char c = s[pos];
        if (c == '"') {
            if ((pos = skip_string(s, len, pos)) == (size_t)-1) return pos;
        } else if (c == '{' || c == '[') {
            depth++;
            pos++;
        } else if (c == '}' || c == ']') {
            if (depth-- == 0) return (size_t)-1;
            pos++;
        } else if (depth > 0) {
            pos++;
        } else {
            /* The characters of numbers and of true, false and null. */
            for (start = pos;
                 pos < len && s[pos] != '\0' && strchr("+-.0123456789Eaeflnrstu", s[pos]);)
                pos++;
            if (pos == start) return (size_t)-1;
        }
    } while (depth > 0);
    return pos;
}

/* Compares a raw member name (the text between its quotes) with a plain ASCII key, decoding
 * escapes as the decoder does, so that "\u0069d" matches "id" just as the decoder sees it. */
static int name_equals(const char *s, size_t n, const char *key, size_t klen)
{
    if (memchr(s, '\\', n) == NULL) return n == klen && memcmp(s, key, n) == 0;
    size_t k = 0;
    for (size_t i = 0; i < n; k++) {
        int c = (unsigned char)s[i++];
        if (c == '\\' && i < n && s[i] == 'u') {
            if (n - i < 5 || (c = hex4((const unsigned char *)s + i + 1)) < 0) return 0;
            i += 5;
        } else if (c == '\\' && i < n) {
            c = unescape_table[(unsigned char)s[i++]];
        }
        /* A decoded byte that is 0 (an invalid escape) or outside ASCII never matches. */
        if (k == klen || c == 0 || c != (unsigned char)key[k]) return 0;
    }
    return k == klen;
}

/* Steps through the array ('[') or object ('{') in s[0..len): the next value in *val, and for
 * an object the raw text between the quotes of its name in *name. *pos is 0 at first, then
 * the offset past the last value, which is never 0 since every value follows the bracket. */
static int container_next(const char *s, size_t len, char open, size_t *pos, const char **name,
                          size_t *nlen, const char **val, size_t *vlen)
{
    size_t p = skip_ws(s, len, *pos), end;
    if (*pos == 0) {
        if (p == len || s[p] != open) return 0;
        p = skip_ws(s, len, p + 1);
        if (p < len && s[p] == (open == '{' ? '}' : ']')) return 0;
    } else {
        if (p == len || s[p] != ',') return 0;
        p = skip_ws(s, len, p + 1);
    }
    if (open == '{') {
        if (p == len || s[p] != '"' || (end = skip_string(s, len, p)) == (size_t)-1) return 0;
        *name = s + p + 1;
        *nlen = end - p - 2;
        p = skip_ws(s, len, end);
        if (p == len || s[p] != ':') return 0;
        p = skip_ws(s, len, p + 1);
    }
    if ((end = exo_json_skip(s, len, p)) == (size_t)-1) return 0;
    *val = s + p;
    *vlen = end - p;
    *pos = end;
    return 1;
}

int exo_json_object_member(const char *s, size_t len, const char *key, const char **val,
                           size_t *vlen)
{
    size_t pos = 0, klen = strlen(key), nlen, n;
    const char *name, *v;
    int found = 0;

    while (container_next(s, len, '{', &pos, &name, &nlen, &v, &n)) {
        if (name_equals(name, nlen, key, klen)) {
            *val = v;
            *vlen = n;
            found = 1;
        }
    }
    return found;
}

int exo_json_array_next(const char *s, size_t len, size_t *pos, const char **elem, size_t *elen)
{
    return container_next(s, len, '[', pos, NULL, NULL, elem, elen);
}
