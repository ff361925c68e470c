/* The monitor's store of job records (docs/decisions/0012-jobs.md).
 *
 * The worker hands the monitor each job record that starts or ends (EXO_OP_JOB_PUT: an id,
 * an expiry and the record's JSON text) so that a new worker finds them after the old one
 * died (EXO_OP_JOB_LIST). The monitor never parses the JSON: a record is an opaque blob of at
 * most EXO_JOB_MAX_BLOB bytes of text without control characters, kept under its id until its
 * expiry. The store holds at most `max` records (the one expiring first goes when a new one
 * does not fit), ordered by id, and is saved as one line per record, "ID EXPIRY BLOB\n", in a
 * root-only file replaced atomically.
 *
 * Plain C with no event loop, shared by the monitor and the unit tests. Functions return 0 or
 * a negative errno unless said otherwise. */
#ifndef EXO_JOBSTORE_H
#define EXO_JOBSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "privsep.h"

#define EXO_JOB_ID_LEN 32 /* 128 random bits in lower-case hex */
#define EXO_JOB_MAX_BLOB 6144
/* The longest line: the id, a 19-digit expiry, the blob, two spaces and "\n". */
#define EXO_JOB_LINE_MAX (EXO_JOB_ID_LEN + 1 + 19 + 1 + EXO_JOB_MAX_BLOB + 1)
/* Bytes of lines one JOB_LIST answer carries at most: what fits in a message next to the
 * header and the two other fields (privsep.h). */
#define EXO_JOB_PAGE_MAX (EXO_PRIV_MAX_MESSAGE - 12 - 3 * 4 - 2 - 1)

typedef struct exo_job_rec_s {
    char id[EXO_JOB_ID_LEN + 1];
    int64_t expiry; /* unix seconds */
    char *blob;
    size_t len;
} exo_job_rec_t;

typedef struct exo_job_store_s {
    exo_job_rec_t *r; /* sorted by id */
    size_t n, cap, max;
} exo_job_store_t;

/* An empty store of at most max (>= 1) records. */
int exo_job_store_init(exo_job_store_t *s, size_t max);
void exo_job_store_free(exo_job_store_t *s);

/* NULL if p[0..len) is a job id (EXO_JOB_ID_LEN lower-case hex digits), else what is wrong. */
const char *exo_job_id_check(const char *p, size_t len);
/* NULL if p[0..len) may be stored as a record (1..EXO_JOB_MAX_BLOB bytes, none below 0x20),
 * else what is wrong. */
const char *exo_job_blob_check(const char *p, size_t len);
/* Reads the fields of a JOB_PUT request (id, expiry as decimal, blob) strictly: an expiry after
 * now + max_ahead is refused (no record is kept longer than [jobs] keep). NULL, or what is
 * wrong (static text); on success *expiry is set. */
const char *exo_job_put_check(const exo_priv_field_t *f, size_t n, int64_t now, int64_t max_ahead,
                              int64_t *expiry);

/* Keeps the record (replacing one with the same id). An expiry not after now removes it
 * instead. When the store is full, the record expiring first goes (the new one itself if it
 * expires first). 0 or -ENOMEM (the store is unchanged). The id and blob must have passed
 * their checks. */
int exo_job_store_put(exo_job_store_t *s, const char *id, int64_t expiry, const char *blob,
                      size_t len, int64_t now);
/* Drops the records whose expiry is not after now; returns how many. */
size_t exo_job_store_expire(exo_job_store_t *s, int64_t now);
/* The lines of the records whose id sorts after `after` (len 0: from the first), in id order,
 * as many as fit in cap bytes (at least one when there is one and cap >= EXO_JOB_LINE_MAX).
 * Returns the bytes written; *more is 1 when records are left after them. */
size_t exo_job_store_page(const exo_job_store_t *s, const char *after, size_t after_len, char *out,
                          size_t cap, int *more);

/* Parses one line (len bytes, with or without its "\n") strictly. 0 or -EINVAL; id is
 * NUL-terminated, *blob points into line. */
int exo_job_line_parse(const char *line, size_t len, char id[EXO_JOB_ID_LEN + 1], int64_t *expiry,
                       const char **blob, size_t *blob_len);
/* Reads path into s (a missing file is an empty store), skipping damaged lines and expired
 * records: *lines counts the lines read, *damaged those skipped as damaged. -ENOENT is not an
 * error; others come with a message in err. */
int exo_job_file_load(exo_job_store_t *s, const char *path, int64_t now, size_t *lines,
                      size_t *damaged, char *err, size_t errlen);
/* Replaces path with the records of s: written to path.tmp (0600), synced, renamed. */
int exo_job_file_save(const exo_job_store_t *s, const char *path, char *err, size_t errlen);

#endif
