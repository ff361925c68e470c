/* See statefile.h. */
#include "statefile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
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

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -errno;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

FILE *exo_statefile_open(const char *path, int *rc, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        *rc = -errno;
        if (*rc != -ENOENT) set_err(err, errlen, "%s: %s", path, strerror(-*rc));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        *rc = -EINVAL;
        set_err(err, errlen, "%s: not a regular file", path);
        return NULL;
    }
    FILE *f = fdopen(fd, "r");
    if (f == NULL) {
        *rc = -errno;
        close(fd);
        set_err(err, errlen, "%s: %s", path, strerror(-*rc));
        return NULL;
    }
    *rc = 0;
    return f;
}

int exo_statefile_begin(exo_statefile_t *w, const char *path, mode_t mode, char *err, size_t errlen)
{
    w->fd = -1;
    w->rc = 0;
    if ((size_t)snprintf(w->tmp, sizeof(w->tmp), "%s.tmp", path) >= sizeof(w->tmp)) {
        set_err(err, errlen, "%s: path too long", path);
        return -ENAMETOOLONG;
    }
    /* A leftover from a crash is ours to replace; O_EXCL then makes sure we write to the file
     * we created, not to something put in its place. */
    if (unlink(w->tmp) != 0 && errno != ENOENT) {
        int rc = -errno;
        set_err(err, errlen, "%s: %s", w->tmp, strerror(-rc));
        return rc;
    }
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (w->fd < 0) {
        int rc = -errno;
        set_err(err, errlen, "%s: %s", w->tmp, strerror(-rc));
        return rc;
    }
    /* The mode asked for, whatever the umask. */
    if (fchmod(w->fd, mode) != 0) w->rc = -errno;
    return 0;
}

int exo_statefile_write(exo_statefile_t *w, const void *data, size_t n)
{
    if (w->rc == 0) w->rc = write_all(w->fd, data, n);
    return w->rc;
}

int exo_statefile_commit(exo_statefile_t *w, const char *path, int rc_in, char *err, size_t errlen)
{
    int rc = rc_in ? rc_in : w->rc;
    if (rc == 0 && fsync(w->fd) != 0) rc = -errno;
    if (close(w->fd) != 0 && rc == 0) rc = -errno;
    w->fd = -1;
    if (rc == 0 && rename(w->tmp, path) != 0) rc = -errno;
    if (rc != 0) {
        set_err(err, errlen, "%s: %s", w->tmp, strerror(-rc));
        unlink(w->tmp);
    }
    return rc;
}

int exo_statefile_append(const char *path, const char *line, size_t len, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600);
    if (fd < 0) {
        int rc = -errno;
        set_err(err, errlen, "%s: %s", path, strerror(-rc));
        return rc;
    }
    struct stat st;
    int rc = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? 0 : -EINVAL;
    if (rc == 0) rc = write_all(fd, line, len);
    if (close(fd) != 0 && rc == 0) rc = -errno;
    if (rc < 0)
        set_err(err, errlen, "%s: %s", path, rc == -EINVAL ? "not a regular file" : strerror(-rc));
    return rc;
}
