/* The monitor's own state files (load history, job records): root's, opened strictly and
 * replaced atomically. One place for what each of them needs:
 *   - reading: no symlink followed, no FIFO to hang on, a regular file only;
 *   - replacing: a fresh path.tmp (a leftover from a crash is removed first, then O_EXCL, so
 *     the bytes go to the file we created), written, fsync'ed, renamed over path;
 *   - appending one line: the same checks as reading. */
#ifndef EXO_STATEFILE_H
#define EXO_STATEFILE_H

#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

#define EXO_STATEFILE_PATH_MAX 4096

/* Opens path for reading. Returns the stream, or NULL with *rc a negative errno: -ENOENT when
 * there is no such file (err untouched: a first start), else err says what is wrong
 * ("<path>: not a regular file", "<path>: <strerror>"). */
FILE *exo_statefile_open(const char *path, int *rc, char *err, size_t errlen);

/* A replacement being written. */
typedef struct exo_statefile_s {
    int fd;
    int rc; /* the first error of a write, kept for commit */
    char tmp[EXO_STATEFILE_PATH_MAX + 8];
} exo_statefile_t;

/* Starts replacing path: creates path.tmp with mode. Returns 0, or a negative errno with err
 * saying which file and why. */
int exo_statefile_begin(exo_statefile_t *w, const char *path, mode_t mode, char *err,
                        size_t errlen);
/* Appends n bytes to the replacement. Returns 0 or the (sticky) negative errno. */
int exo_statefile_write(exo_statefile_t *w, const void *data, size_t n);
/* Ends the replacement: fsync, close, rename over path; on any error (including an earlier
 * write's) the temporary file is removed and path is left as it was. rc_in: a negative errno
 * of the caller's own (say -ENOMEM) to abandon the replacement, else 0. Returns 0 or a
 * negative errno with err set. */
int exo_statefile_commit(exo_statefile_t *w, const char *path, int rc_in, char *err, size_t errlen);
/* Appends one line (len bytes) to path, created with mode 0600 when missing. Returns 0 or a
 * negative errno with err set; -EINVAL when path is not a regular file. */
int exo_statefile_append(const char *path, const char *line, size_t len, char *err, size_t errlen);

#endif
