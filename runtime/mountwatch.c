/* The mount table watcher: a uv_poll with UV_PRIORITIZED on /proc/self/mountinfo.
 *
 * The kernel's poll for that file (mounts_poll) always reports it readable and adds
 * POLLERR|POLLPRI when the namespace's event counter differs from what this open file last
 * saw; the poll itself records the new count, so nothing needs to be read and, with the
 * level-triggered epoll libuv uses, each change is reported once. libuv's uv_poll reports
 * POLLERR together with POLLPRI as UV_PRIORITIZED (it does so for sysfs attributes, which
 * signal the same way); a POLLERR alone would stop the handle with UV_EBADF, which is handled
 * by counting a change and starting it again. */
#include "mountwatch.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "log.h"

typedef struct subscriber_s {
    exo_mountwatch_cb cb;
    void *data;
} subscriber_t;

static struct {
    uv_loop_t *loop;
    int fd;
    int running; /* the poll and the timer are open */
    int pending; /* changes not yet reported in a round */
    uint64_t generation;
    uint64_t reported; /* the generation the last round reported */
    uv_poll_t poll;
    uv_timer_t quiet;
    subscriber_t subs[EXO_MOUNTWATCH_MAX_SUBSCRIBERS];
} mw_ = {.fd = -1};

/* Both handles close before the descriptor: libuv must stop polling it first. */
static int closing_;

static void round_now(void)
{
    uint64_t changes = mw_.generation - mw_.reported;
    mw_.pending = 0;
    mw_.reported = mw_.generation;
    exo_debug("mount table changed: generation %llu (%llu changes in this round)",
              (unsigned long long)mw_.generation, (unsigned long long)changes);
    /* Indexes, not pointers: a callback may unsubscribe anyone, or subscribe again. */
    for (size_t i = 0; i < EXO_MOUNTWATCH_MAX_SUBSCRIBERS; i++) {
        subscriber_t s = mw_.subs[i];
        if (s.cb != NULL) s.cb(s.data, mw_.generation);
    }
}

static void on_quiet(uv_timer_t *t)
{
    /* Changes that came during the quiet time get their round now, and a new quiet time. */
    if (!mw_.pending) return;
    round_now();
    uv_timer_start(&mw_.quiet, on_quiet, EXO_MOUNTWATCH_QUIET_MS, 0);
}

static void on_change(void)
{
    mw_.generation++;
    mw_.pending = 1;
    if (uv_is_active((uv_handle_t *)&mw_.quiet)) return;
    round_now();
    uv_timer_start(&mw_.quiet, on_quiet, EXO_MOUNTWATCH_QUIET_MS, 0);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    if (status < 0) {
        /* libuv stopped the handle. A change is the only reason the kernel sets POLLERR on
         * this file, so it counts as one; polling resumes at once. */
        on_change();
        int rc = uv_poll_start(&mw_.poll, UV_PRIORITIZED, on_poll);
        if (rc < 0)
            exo_warn("mount table watch stopped: %s; mount changes are no longer seen",
                     uv_strerror(rc));
        return;
    }
    if (events & UV_PRIORITIZED) on_change();
}

static void on_closed(uv_handle_t *h)
{
    if (--closing_ > 0) return;
    if (mw_.fd >= 0) close(mw_.fd);
    mw_.fd = -1;
}

int exo_mountwatch_start(uv_loop_t *loop, const char *path)
{
    if (mw_.running || closing_ > 0) return -EALREADY;
    int fd = open(path ? path : "/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    int rc = uv_poll_init(loop, &mw_.poll, fd);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    mw_.fd = fd;
    mw_.loop = loop;
    uv_timer_init(loop, &mw_.quiet);
    mw_.running = 1;
    rc = uv_poll_start(&mw_.poll, UV_PRIORITIZED, on_poll);
    if (rc < 0) {
        exo_mountwatch_stop();
        return rc;
    }
    /* The watch alone must not keep the loop running at shutdown. */
    uv_unref((uv_handle_t *)&mw_.poll);
    uv_unref((uv_handle_t *)&mw_.quiet);
    return 0;
}

void exo_mountwatch_stop(void)
{
    if (!mw_.running) return;
    mw_.running = 0;
    mw_.pending = 0;
    closing_ = 2;
    uv_close((uv_handle_t *)&mw_.poll, on_closed);
    uv_close((uv_handle_t *)&mw_.quiet, on_closed);
}

int exo_mountwatch_active(void)
{
    return mw_.running;
}

uint64_t exo_mountwatch_generation(void)
{
    return mw_.generation;
}

int exo_mountwatch_subscribe(exo_mountwatch_cb cb, void *data)
{
    subscriber_t *free_slot = NULL;
    for (size_t i = 0; i < EXO_MOUNTWATCH_MAX_SUBSCRIBERS; i++) {
        subscriber_t *s = &mw_.subs[i];
        if (s->cb == cb && s->data == data) return -EEXIST;
        if (s->cb == NULL && free_slot == NULL) free_slot = s;
    }
    if (free_slot == NULL) return -ENOSPC;
    free_slot->cb = cb;
    free_slot->data = data;
    return 0;
}

int exo_mountwatch_unsubscribe(exo_mountwatch_cb cb, void *data)
{
    for (size_t i = 0; i < EXO_MOUNTWATCH_MAX_SUBSCRIBERS; i++) {
        subscriber_t *s = &mw_.subs[i];
        if (s->cb == cb && s->data == data) {
            s->cb = NULL;
            s->data = NULL;
            return 0;
        }
    }
    return -ENOENT;
}
