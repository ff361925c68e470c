/* The worker's client of the monitor; see monclient.h. */
#include "monclient.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"

typedef struct pending_s {
    struct pending_s *next;
    uint32_t seq;
    exo_mon_cb cb;
    void *data;
    size_t len; /* bytes in msg not sent yet (0 once sent) */
    uint8_t msg[];
} pending_t;

static struct {
    uv_poll_t poll;
    int fd;
    int open, lost;
    uint32_t seq;
    pending_t *head; /* in the order sent; unsent ones at the tail */
    void (*on_lost)(void *);
    void *lost_data;
    uint8_t buf[EXO_PRIV_MAX_MESSAGE + 1];
} mon_ = {.fd = -1};

int exo_mon_available(void)
{
    return mon_.open && !mon_.lost;
}

const char *exo_mon_unavailable_reason(void)
{
    return mon_.lost ? "the agent's monitor has gone away"
                     : "the agent runs without its root monitor (it was not started as root)";
}

static void fail_all(int status)
{
    while (mon_.head) {
        pending_t *p = mon_.head;
        mon_.head = p->next;
        OPENSSL_cleanse(p->msg, p->len);
        p->cb(p->data, status, NULL);
        free(p);
    }
}

static void lost(const char *why)
{
    if (mon_.lost) return;
    mon_.lost = 1;
    exo_error("the monitor connection is lost (%s): stopping", why);
    uv_poll_stop(&mon_.poll);
    fail_all(-EPIPE);
    if (mon_.on_lost) mon_.on_lost(mon_.lost_data);
}

/* Sends what is unsent, in order. Returns 1 if something still waits for the socket. */
static int flush(void)
{
    for (pending_t *p = mon_.head; p; p = p->next) {
        if (p->len == 0) continue;
        ssize_t n = send(mon_.fd, p->msg, p->len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 1;
        if (n < 0) {
            lost(strerror(errno));
            return 0;
        }
        OPENSSL_cleanse(p->msg, p->len);
        p->len = 0;
    }
    return 0;
}

static void on_answer(const uint8_t *buf, size_t len)
{
    exo_priv_msg_t m;
    const char *why;
    if (exo_priv_decode(buf, len, &m, &why) < 0 || !(m.op & EXO_OP_ANSWER) || m.n == 0) {
        exo_error("the monitor sent a malformed answer (%s)", m.n == 0 ? "no status" : why);
        return;
    }
    pending_t **pp = &mon_.head;
    while (*pp && (*pp)->seq != m.seq)
        pp = &(*pp)->next;
    pending_t *p = *pp;
    if (p == NULL || p->len != 0) {
        exo_error("the monitor answered request %u, which is not waiting", (unsigned)m.seq);
        return;
    }
    *pp = p->next;
    p->cb(p->data, 0, &m);
    free(p);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    if (status < 0) {
        lost(uv_strerror(status));
        return;
    }
    if (events & UV_READABLE) {
        for (;;) {
            ssize_t n = recv(mon_.fd, mon_.buf, sizeof(mon_.buf), MSG_DONTWAIT | MSG_TRUNC);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                lost(n == 0 ? "closed" : strerror(errno));
                return;
            }
            if ((size_t)n > EXO_PRIV_MAX_MESSAGE) {
                exo_error("the monitor sent an answer of %zd bytes, over the limit", n);
                continue;
            }
            on_answer(mon_.buf, (size_t)n);
            if (mon_.lost) return;
        }
    }
    int more = flush();
    if (!mon_.lost) uv_poll_start(&mon_.poll, UV_READABLE | (more ? UV_WRITABLE : 0), on_poll);
}

int exo_mon_start(uv_loop_t *loop, int fd, void (*on_lost)(void *), void *lost_data)
{
    mon_.fd = fd;
    mon_.on_lost = on_lost;
    mon_.lost_data = lost_data;
    int rc = uv_poll_init(loop, &mon_.poll, fd);
    if (rc < 0) return rc;
    rc = uv_poll_start(&mon_.poll, UV_READABLE, on_poll);
    if (rc < 0) return rc;
    /* The poll alone must not keep the loop running once everything else has stopped. */
    uv_unref((uv_handle_t *)&mon_.poll);
    mon_.open = 1;
    return 0;
}

int exo_mon_request(uint32_t op, const exo_priv_field_t *f, size_t n, exo_mon_cb cb, void *data)
{
    if (!exo_mon_available()) return -ENOTCONN;
    pending_t *p = malloc(sizeof(*p) + EXO_PRIV_MAX_MESSAGE);
    if (p == NULL) return -ENOMEM;
    uint32_t seq = ++mon_.seq;
    if (seq == 0) seq = ++mon_.seq;
    int len = exo_priv_encode(p->msg, EXO_PRIV_MAX_MESSAGE, op, seq, f, n);
    if (len < 0) {
        free(p);
        return len;
    }
    p->seq = seq;
    p->cb = cb;
    p->data = data;
    p->len = (size_t)len;
    p->next = NULL;
    pending_t **pp = &mon_.head;
    while (*pp)
        pp = &(*pp)->next;
    *pp = p;
    /* Sent from the poll callback, so cb never runs inside this call. */
    uv_poll_start(&mon_.poll, UV_READABLE | UV_WRITABLE, on_poll);
    return 0;
}

void exo_mon_stop(void)
{
    if (!mon_.open) return;
    fail_all(-ECANCELED);
    mon_.open = 0;
    uv_poll_stop(&mon_.poll);
    uv_close((uv_handle_t *)&mon_.poll, NULL);
    close(mon_.fd);
    mon_.fd = -1;
}
