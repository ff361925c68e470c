/* The system load history: samples, the ring, the history file; see loadhist.h. */
#include "loadhist.h"
#include "statefile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

const char *exo_load_sample_check(const exo_load_sample_t *s, int64_t now)
{
    if (s->epoch < 0) return "a negative epoch";
    if (s->epoch > now + EXO_LOAD_MAX_FUTURE_S) return "an epoch more than a day in the future";
    if (s->cpu > 100 || s->mem > 100 || s->rootfs > 100) return "a percentage over 100";
    if (s->n_gpu > EXO_LOAD_MAX_GPUS) return "more than 16 GPUs";
    for (size_t i = 0; i < s->n_gpu; i++)
        if (s->gpu[i] > 100) return "a GPU percentage over 100";
    return NULL;
}

/* ---- the ring ----------------------------------------------------------------------------- */

int exo_load_ring_init(exo_load_ring_t *r, size_t cap)
{
    memset(r, 0, sizeof(*r));
    if (cap == 0 || cap > EXO_LOAD_MAX_SAMPLES) return -EINVAL;
    r->s = calloc(cap, sizeof(*r->s));
    if (r->s == NULL) return -ENOMEM;
    r->cap = cap;
    return 0;
}

void exo_load_ring_free(exo_load_ring_t *r)
{
    free(r->s);
    memset(r, 0, sizeof(*r));
}

const exo_load_sample_t *exo_load_ring_at(const exo_load_ring_t *r, size_t i)
{
    return &r->s[(r->start + i) % r->cap];
}

void exo_load_ring_push(exo_load_ring_t *r, const exo_load_sample_t *s)
{
    while (r->n > 0 && exo_load_ring_at(r, r->n - 1)->epoch >= s->epoch)
        r->n--;
    if (r->n == r->cap) {
        r->start = (r->start + 1) % r->cap;
        r->n--;
    }
    r->s[(r->start + r->n) % r->cap] = *s;
    r->n++;
}

size_t exo_load_ring_after(const exo_load_ring_t *r, int64_t epoch)
{
    size_t lo = 0, hi = r->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (exo_load_ring_at(r, mid)->epoch <= epoch)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

size_t exo_load_ring_range(const exo_load_ring_t *r, int64_t since, int64_t until, size_t limit,
                           size_t *first)
{
    size_t lo = since == INT64_MIN ? 0 : exo_load_ring_after(r, since - 1);
    size_t hi = exo_load_ring_after(r, until);
    if (hi < lo) hi = lo;
    if (hi - lo > limit) lo = hi - limit;
    *first = lo;
    return hi - lo;
}

size_t exo_load_ring_capacity(uint64_t history_ms, uint64_t interval_ms)
{
    if (interval_ms == 0) interval_ms = 1;
    uint64_t n = (history_ms + interval_ms - 1) / interval_ms;
    if (n < 1) n = 1;
    return n > EXO_LOAD_MAX_SAMPLES ? EXO_LOAD_MAX_SAMPLES : (size_t)n;
}

/* ---- lines -------------------------------------------------------------------------------- */

static size_t gpus_format(const exo_load_sample_t *s, char *out, size_t cap, const char *none)
{
    if (s->n_gpu == 0) return (size_t)snprintf(out, cap, "%s", none);
    size_t n = 0;
    for (size_t i = 0; i < s->n_gpu && n < cap; i++)
        n += (size_t)snprintf(out + n, cap - n, "%s%u", i ? "," : "", (unsigned)s->gpu[i]);
    return n < cap ? n : cap - 1;
}

size_t exo_load_line_format(const exo_load_sample_t *s, char *out, size_t cap)
{
    char gpus[80];
    gpus_format(s, gpus, sizeof(gpus), "-");
    int n = snprintf(out, cap, "%lld %u %u %u %s\n", (long long)s->epoch, (unsigned)s->cpu,
                     (unsigned)s->mem, (unsigned)s->rootfs, gpus);
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

size_t exo_load_console_format(const exo_load_sample_t *s, char *out, size_t cap)
{
    char gpus[80];
    if (s->n_gpu == 0) {
        snprintf(gpus, sizeof(gpus), "null");
    } else {
        gpus[0] = '[';
        size_t n = 1 + gpus_format(s, gpus + 1, sizeof(gpus) - 2, "");
        gpus[n] = ']';
        gpus[n + 1] = '\0';
    }
    int n = snprintf(out, cap,
                     "{\"epoch\":%lld,\"cpuPctUsed\":%u,\"memPctUsed\":%u,\"rootfsPctUsed\":%u,"
                     "\"gpuPctUsed\":%s}\n",
                     (long long)s->epoch, (unsigned)s->cpu, (unsigned)s->mem, (unsigned)s->rootfs,
                     gpus);
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

/* A decimal number of p[0..len) with no sign and no leading zero, at most max. */
static int parse_uint(const char *p, size_t len, uint64_t max, uint64_t *out)
{
    if (len == 0 || len > 19 || (len > 1 && p[0] == '0')) return -EINVAL;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9') return -EINVAL;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    if (v > max) return -EINVAL;
    *out = v;
    return 0;
}

/* The GPU list "a,b,c" (len bytes; empty: none). */
static int parse_gpus(const char *p, size_t len, exo_load_sample_t *s)
{
    s->n_gpu = 0;
    if (len == 0) return 0;
    size_t pos = 0;
    for (;;) {
        const char *comma = memchr(p + pos, ',', len - pos);
        size_t end = comma ? (size_t)(comma - p) : len;
        uint64_t v;
        if (s->n_gpu == EXO_LOAD_MAX_GPUS || parse_uint(p + pos, end - pos, 100, &v) < 0)
            return -EINVAL;
        s->gpu[s->n_gpu++] = (uint8_t)v;
        if (comma == NULL) return 0;
        pos = end + 1;
    }
}

int exo_load_line_parse(const char *line, size_t len, exo_load_sample_t *s)
{
    const char *part[5];
    size_t plen[5], n = 0, pos = 0;
    if (len > 0 && line[len - 1] == '\n') len--;
    if (len == 0 || len >= EXO_LOAD_LINE_MAX) return -EINVAL;
    while (n < 5) {
        const char *sp = memchr(line + pos, ' ', len - pos);
        size_t end = sp ? (size_t)(sp - line) : len;
        part[n] = line + pos;
        plen[n++] = end - pos;
        if (sp == NULL) break;
        pos = end + 1;
    }
    if (n != 5 || part[4] + plen[4] != line + len) return -EINVAL;
    uint64_t v[4];
    for (int i = 0; i < 4; i++)
        if (parse_uint(part[i], plen[i], i == 0 ? (uint64_t)INT64_MAX : 100, &v[i]) < 0)
            return -EINVAL;
    memset(s, 0, sizeof(*s));
    s->epoch = (int64_t)v[0];
    s->cpu = (uint8_t)v[1];
    s->mem = (uint8_t)v[2];
    s->rootfs = (uint8_t)v[3];
    if (plen[4] == 1 && part[4][0] == '-') return 0;
    if (plen[4] == 0) return -EINVAL;
    return parse_gpus(part[4], plen[4], s);
}

/* ---- the privsep fields --------------------------------------------------------------------- */

void exo_load_sample_fields(const exo_load_sample_t *s, char text[EXO_LOAD_LINE_MAX],
                            exo_priv_field_t f[5])
{
    size_t pos = 0;
    unsigned v[3] = {s->cpu, s->mem, s->rootfs};
    int n = snprintf(text, EXO_LOAD_LINE_MAX, "%lld", (long long)s->epoch);
    f[0] = (exo_priv_field_t){text, (size_t)n};
    pos = (size_t)n;
    for (int i = 0; i < 3; i++) {
        n = snprintf(text + pos, EXO_LOAD_LINE_MAX - pos, "%u", v[i]);
        f[1 + i] = (exo_priv_field_t){text + pos, (size_t)n};
        pos += (size_t)n;
    }
    size_t g = gpus_format(s, text + pos, EXO_LOAD_LINE_MAX - pos, "");
    f[4] = (exo_priv_field_t){text + pos, g};
}

const char *exo_load_sample_from_fields(const exo_priv_field_t *f, size_t n, int64_t now,
                                        exo_load_sample_t *s)
{
    uint64_t v[4];
    if (n != 5) return "a load sample without exactly 5 fields";
    memset(s, 0, sizeof(*s));
    if (parse_uint(f[0].p, f[0].len, (uint64_t)INT64_MAX, &v[0]) < 0)
        return "a load sample with a bad epoch";
    for (int i = 1; i < 4; i++)
        if (parse_uint(f[i].p, f[i].len, 100, &v[i]) < 0)
            return "a load sample with a percentage that is not an integer from 0 to 100";
    if (parse_gpus(f[4].p, f[4].len, s) < 0) return "a load sample with a bad GPU list";
    s->epoch = (int64_t)v[0];
    s->cpu = (uint8_t)v[1];
    s->mem = (uint8_t)v[2];
    s->rootfs = (uint8_t)v[3];
    const char *why = exo_load_sample_check(s, now);
    return why ? "a load sample with an epoch more than a day in the future" : NULL;
}

/* ---- the file ----------------------------------------------------------------------------- */

int exo_load_file_load(exo_load_ring_t *r, const char *path, int64_t now, size_t *lines,
                       size_t *damaged, char *err, size_t errlen)
{
    *lines = *damaged = 0;
    int rc;
    FILE *f = exo_statefile_open(path, &rc, err, errlen);
    if (f == NULL) return rc;
    /* Lines longer than any good one are read in pieces, each of which counts as damaged
     * (a line without its "\n" is a piece of a longer one, or a write cut short). */
    char buf[EXO_LOAD_LINE_MAX + 2];
    int whole = 1;
    while (fgets(buf, sizeof(buf), f)) {
        size_t len = strlen(buf);
        int ends = len > 0 && buf[len - 1] == '\n';
        int starts = whole;
        whole = ends;
        if (!starts) continue; /* the rest of a damaged line, already counted */
        (*lines)++;
        exo_load_sample_t s;
        if (!ends || memchr(buf, '\0', len) != NULL || exo_load_line_parse(buf, len, &s) < 0 ||
            exo_load_sample_check(&s, now) != NULL) {
            (*damaged)++;
            continue;
        }
        exo_load_ring_push(r, &s);
    }
    rc = ferror(f) ? -EIO : 0;
    if (rc < 0) set_err(err, errlen, "%s: read error", path);
    fclose(f);
    return rc;
}

int exo_load_file_append(const char *path, const exo_load_sample_t *s, char *err, size_t errlen)
{
    char line[EXO_LOAD_LINE_MAX];
    size_t len = exo_load_line_format(s, line, sizeof(line));
    return exo_statefile_append(path, line, len, err, errlen);
}

int exo_load_file_compact(const exo_load_ring_t *r, const char *path, char *err, size_t errlen)
{
    exo_statefile_t w;
    int rc = exo_statefile_begin(&w, path, 0600, err, errlen);
    if (rc < 0) return rc;
    char buf[8192];
    size_t used = 0;
    for (size_t i = 0; i < r->n; i++) {
        if (sizeof(buf) - used < EXO_LOAD_LINE_MAX) {
            exo_statefile_write(&w, buf, used);
            used = 0;
        }
        used += exo_load_line_format(exo_load_ring_at(r, i), buf + used, sizeof(buf) - used);
    }
    exo_statefile_write(&w, buf, used);
    return exo_statefile_commit(&w, path, 0, err, errlen);
}
