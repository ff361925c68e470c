/* The system load history (docs/decisions/0007-load-history.md): one sample of
 * system_load.current as plain integers, a ring of samples ordered by time, the compact text
 * line each sample is stored as in the monitor's history file, the console line Exosphere
 * reads, and the strict checks both processes apply to a sample.
 *
 * Plain C with no event loop, shared by the monitor (which keeps the persisted ring and writes
 * the console line) and the worker (which takes the samples and serves system_load.historical
 * from its own copy of the ring). Functions return 0 or a negative errno unless said otherwise. */
#ifndef EXO_LOADHIST_H
#define EXO_LOADHIST_H

#include <stddef.h>
#include <stdint.h>

#include "privsep.h"

#define EXO_LOAD_MAX_GPUS 16
/* The most samples a ring holds: 7 days of minutes, and the largest `limit` of
 * system_load.historical. */
#define EXO_LOAD_MAX_SAMPLES 10080
/* A sample a day ahead of the clock is refused: no sampler takes one, and a history that far
 * ahead would hide every real sample after it. */
#define EXO_LOAD_MAX_FUTURE_S 86400
/* The longest history line: 19-digit epoch, three percentages, 16 GPUs, separators, "\n". */
#define EXO_LOAD_LINE_MAX 128
/* The longest console line, with 16 GPUs at 100 %. */
#define EXO_LOAD_CONSOLE_MAX 256

/* One sample: 32 bytes (an 8-byte epoch and 24 bytes of percentages), so the largest ring is
 * 10080 x 32 = 315 KiB. n_gpu 0 means gpuPctUsed is null. */
typedef struct exo_load_sample_s {
    int64_t epoch; /* Unix seconds, >= 0 */
    uint8_t cpu, mem, rootfs;
    uint8_t n_gpu;
    uint8_t gpu[EXO_LOAD_MAX_GPUS];
} exo_load_sample_t;

/* NULL if every field of s is in range and its epoch is at most EXO_LOAD_MAX_FUTURE_S after
 * now, else what is wrong (static text). */
const char *exo_load_sample_check(const exo_load_sample_t *s, int64_t now);

/* The ring: the newest `cap` samples, oldest first, with strictly increasing epochs. */
typedef struct exo_load_ring_s {
    exo_load_sample_t *s;
    size_t cap, start, n;
} exo_load_ring_t;

/* Allocates a ring of cap samples (1..EXO_LOAD_MAX_SAMPLES): 0, -EINVAL or -ENOMEM. */
int exo_load_ring_init(exo_load_ring_t *r, size_t cap);
void exo_load_ring_free(exo_load_ring_t *r);
/* Adds s as the newest sample. The samples whose epoch is not before s's are dropped first
 * (the clock was set back, or a sample of the same second was taken twice), so epochs stay
 * strictly increasing; when the ring is full, the oldest goes. */
void exo_load_ring_push(exo_load_ring_t *r, const exo_load_sample_t *s);
/* Sample i, 0 being the oldest; i < r->n. */
const exo_load_sample_t *exo_load_ring_at(const exo_load_ring_t *r, size_t i);
/* The index of the first sample whose epoch is after `epoch` (r->n when there is none). */
size_t exo_load_ring_after(const exo_load_ring_t *r, int64_t epoch);
/* The newest `limit` samples with since <= epoch <= until: returns how many, and in *first the
 * index of the oldest of them. */
size_t exo_load_ring_range(const exo_load_ring_t *r, int64_t since, int64_t until, size_t limit,
                           size_t *first);
/* The ring capacity for `history_ms` of samples taken every `interval_ms`, at most
 * EXO_LOAD_MAX_SAMPLES (so a 1 s interval keeps 2.8 hours, not 7 days). */
size_t exo_load_ring_capacity(uint64_t history_ms, uint64_t interval_ms);

/* The history line of s, "EPOCH CPU MEM ROOTFS GPUS\n" with GPUS "-" for null or the
 * comma-separated percentages; returns its length (< EXO_LOAD_LINE_MAX). */
size_t exo_load_line_format(const exo_load_sample_t *s, char *out, size_t cap);
/* Parses one history line (len bytes, without or with its "\n") strictly: decimal numbers
 * without signs or leading zeros, single spaces, at most 16 GPUs, values in range (future
 * epochs are for exo_load_sample_check). 0 or -EINVAL. */
int exo_load_line_parse(const char *line, size_t len, exo_load_sample_t *s);
/* Exosphere's console line, built from the integers alone:
 * {"epoch":E,"cpuPctUsed":C,"memPctUsed":M,"rootfsPctUsed":R,"gpuPctUsed":null|[..]} and
 * "\n"; returns its length (< EXO_LOAD_CONSOLE_MAX). */
size_t exo_load_console_format(const exo_load_sample_t *s, char *out, size_t cap);

/* The fields of a LOAD_SAMPLE request (privsep.h): epoch, cpu, mem, rootfs as decimal text, and
 * the GPUs as comma-separated decimal text, empty for null. `text` holds the texts
 * (EXO_LOAD_LINE_MAX bytes) that f points into. */
void exo_load_sample_fields(const exo_load_sample_t *s, char text[EXO_LOAD_LINE_MAX],
                            exo_priv_field_t f[5]);
/* Reads the fields of a LOAD_SAMPLE request strictly. NULL, or what is wrong (static text). */
const char *exo_load_sample_from_fields(const exo_priv_field_t *f, size_t n, int64_t now,
                                        exo_load_sample_t *s);

/* The history file. load reads `path` into r (a missing file is an empty history), skipping
 * damaged lines and samples that fail exo_load_sample_check: *lines counts the lines read and
 * *damaged those skipped. -ENOENT is not an error; others come with a message in err. */
int exo_load_file_load(exo_load_ring_t *r, const char *path, int64_t now, size_t *lines,
                       size_t *damaged, char *err, size_t errlen);
/* Appends s's line to path, creating it with mode 0600. */
int exo_load_file_append(const char *path, const exo_load_sample_t *s, char *err, size_t errlen);
/* Replaces path with the samples of r: written to path.tmp, synced, renamed over path. */
int exo_load_file_compact(const exo_load_ring_t *r, const char *path, char *err, size_t errlen);

#endif
