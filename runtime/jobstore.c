/* The monitor's store of job records; see jobstore.h. */
#include "jobstore.h"
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

int exo_job_store_init(exo_job_store_t *s, size_t max)
{
    memset(s, 0, sizeof(*s));
    if (max == 0) return -EINVAL;
    s->max = max;
    return 0;
}

void exo_job_store_free(exo_job_store_t *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->r[i].blob);
    free(s->r);
    memset(s, 0, sizeof(*s));
}

/* ---- checks --------------------------------------------------------------------------------- */

const char *exo_job_id_check(const char *p, size_t len)
{
    if (len != EXO_JOB_ID_LEN) return "a job id that is not 32 characters long";
    for (size_t i = 0; i < len; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return "a job id that is not lower-case hex";
    return NULL;
}

const char *exo_job_blob_check(const char *p, size_t len)
{
    if (len == 0) return "an empty job record";
    if (len > EXO_JOB_MAX_BLOB) return "a job record over 6144 bytes";
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)p[i] < 0x20) return "a job record with a control character";
    return NULL;
}

/* A decimal number of p[0..len) with no sign and no leading zero, at most INT64_MAX. */
static int parse_epoch(const char *p, size_t len, int64_t *out)
{
    if (len == 0 || len > 19 || (len > 1 && p[0] == '0')) return -EINVAL;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9') return -EINVAL;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    if (v > (uint64_t)INT64_MAX) return -EINVAL;
    *out = (int64_t)v;
    return 0;
}

const char *exo_job_put_check(const exo_priv_field_t *f, size_t n, int64_t now, int64_t max_ahead,
                              int64_t *expiry)
{
    if (n != 3) return "a job record without exactly 3 fields";
    const char *why = exo_job_id_check(f[0].p, f[0].len);
    if (why) return why;
    if (parse_epoch(f[1].p, f[1].len, expiry) < 0) return "a job record with a bad expiry";
    if (*expiry > now + max_ahead) return "a job record that expires after [jobs] keep";
    return exo_job_blob_check(f[2].p, f[2].len);
}

/* ---- the store ------------------------------------------------------------------------------ */

/* The index of id in s, or where it would go (with *found 0). */
static size_t find(const exo_job_store_t *s, const char *id, int *found)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(s->r[mid].id, id);
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = 0;
    return lo;
}

static void remove_at(exo_job_store_t *s, size_t i)
{
    free(s->r[i].blob);
    memmove(&s->r[i], &s->r[i + 1], (s->n - i - 1) * sizeof(s->r[0]));
    s->n--;
}

/* The index of the record that expires first. */
static size_t first_to_expire(const exo_job_store_t *s)
{
    size_t best = 0;
    for (size_t i = 1; i < s->n; i++)
        if (s->r[i].expiry < s->r[best].expiry) best = i;
    return best;
}

int exo_job_store_put(exo_job_store_t *s, const char *id, int64_t expiry, const char *blob,
                      size_t len, int64_t now)
{
    int found;
    size_t i = find(s, id, &found);
    if (expiry <= now) {
        if (found) remove_at(s, i);
        return 0;
    }
    char *copy = malloc(len + 1);
    if (copy == NULL) return -ENOMEM;
    memcpy(copy, blob, len);
    copy[len] = '\0';
    if (found) {
        free(s->r[i].blob);
        s->r[i].blob = copy;
        s->r[i].len = len;
        s->r[i].expiry = expiry;
        return 0;
    }
    if (s->n == s->max) {
        size_t victim = first_to_expire(s);
        if (s->r[victim].expiry > expiry) {
            /* The new record would be the first to go: it is not kept. */
            free(copy);
            return 0;
        }
        remove_at(s, victim);
        i = find(s, id, &found);
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        if (cap > s->max) cap = s->max;
        exo_job_rec_t *r = realloc(s->r, cap * sizeof(*r));
        if (r == NULL) {
            free(copy);
            return -ENOMEM;
        }
        s->r = r;
        s->cap = cap;
    }
    memmove(&s->r[i + 1], &s->r[i], (s->n - i) * sizeof(s->r[0]));
    memcpy(s->r[i].id, id, EXO_JOB_ID_LEN);
    s->r[i].id[EXO_JOB_ID_LEN] = '\0';
    s->r[i].expiry = expiry;
    s->r[i].blob = copy;
    s->r[i].len = len;
    s->n++;
    return 0;
}

size_t exo_job_store_expire(exo_job_store_t *s, int64_t now)
{
    size_t dropped = 0;
    for (size_t i = s->n; i > 0; i--) {
        if (s->r[i - 1].expiry <= now) {
            remove_at(s, i - 1);
            dropped++;
        }
    }
    return dropped;
}

static size_t line_format(const exo_job_rec_t *r, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s %lld ", r->id, (long long)r->expiry);
    if (n < 0 || (size_t)n + r->len + 1 > cap) return 0;
    memcpy(out + n, r->blob, r->len);
    out[(size_t)n + r->len] = '\n';
    return (size_t)n + r->len + 1;
}

size_t exo_job_store_page(const exo_job_store_t *s, const char *after, size_t after_len, char *out,
                          size_t cap, int *more)
{
    size_t i = 0;
    *more = 0;
    if (after_len > 0) {
        char key[EXO_JOB_ID_LEN + 1];
        size_t k = after_len < EXO_JOB_ID_LEN ? after_len : EXO_JOB_ID_LEN;
        memcpy(key, after, k);
        key[k] = '\0';
        int found;
        i = find(s, key, &found);
        if (found) i++;
    }
    size_t used = 0;
    for (; i < s->n; i++) {
        size_t n = line_format(&s->r[i], out + used, cap - used);
        if (n == 0) {
            *more = 1;
            break;
        }
        used += n;
    }
    return used;
}

/* ---- lines and the file --------------------------------------------------------------------- */

int exo_job_line_parse(const char *line, size_t len, char id[EXO_JOB_ID_LEN + 1], int64_t *expiry,
                       const char **blob, size_t *blob_len)
{
    if (len > 0 && line[len - 1] == '\n') len--;
    if (len < EXO_JOB_ID_LEN + 3 || line[EXO_JOB_ID_LEN] != ' ') return -EINVAL;
    if (exo_job_id_check(line, EXO_JOB_ID_LEN) != NULL) return -EINVAL;
    const char *p = line + EXO_JOB_ID_LEN + 1;
    const char *sp = memchr(p, ' ', len - (size_t)(p - line));
    if (sp == NULL || parse_epoch(p, (size_t)(sp - p), expiry) < 0) return -EINVAL;
    *blob = sp + 1;
    *blob_len = len - (size_t)(*blob - line);
    if (exo_job_blob_check(*blob, *blob_len) != NULL) return -EINVAL;
    memcpy(id, line, EXO_JOB_ID_LEN);
    id[EXO_JOB_ID_LEN] = '\0';
    return 0;
}

int exo_job_file_load(exo_job_store_t *s, const char *path, int64_t now, size_t *lines,
                      size_t *damaged, char *err, size_t errlen)
{
    *lines = *damaged = 0;
    int rc;
    FILE *f = exo_statefile_open(path, &rc, err, errlen);
    if (f == NULL) return rc;
    char *buf = malloc(EXO_JOB_LINE_MAX + 2);
    if (buf == NULL) {
        fclose(f);
        set_err(err, errlen, "%s: out of memory", path);
        return -ENOMEM;
    }
    /* As the load history (loadhist.c): a line longer than any good one is read in pieces,
     * and counts once as damaged. */
    int whole = 1;
    while (rc == 0 && fgets(buf, EXO_JOB_LINE_MAX + 2, f)) {
        size_t len = strlen(buf);
        int ends = len > 0 && buf[len - 1] == '\n';
        int starts = whole;
        whole = ends;
        if (!starts) continue;
        (*lines)++;
        char id[EXO_JOB_ID_LEN + 1];
        int64_t expiry;
        const char *blob;
        size_t blob_len;
        if (!ends || exo_job_line_parse(buf, len, id, &expiry, &blob, &blob_len) < 0) {
            (*damaged)++;
            continue;
        }
        rc = exo_job_store_put(s, id, expiry, blob, blob_len, now);
    }
    if (rc == 0 && ferror(f)) rc = -EIO;
    if (rc < 0) set_err(err, errlen, "%s: %s", path, rc == -EIO ? "read error" : strerror(-rc));
    free(buf);
    fclose(f);
    return rc;
}

int exo_job_file_save(const exo_job_store_t *s, const char *path, char *err, size_t errlen)
{
    exo_statefile_t w;
    int rc = exo_statefile_begin(&w, path, 0600, err, errlen);
    if (rc < 0) return rc;
    char *line = malloc(EXO_JOB_LINE_MAX);
    for (size_t i = 0; line && i < s->n; i++)
        exo_statefile_write(&w, line, line_format(&s->r[i], line, EXO_JOB_LINE_MAX));
    free(line);
    return exo_statefile_commit(&w, path, line ? 0 : -ENOMEM, err, errlen);
}
