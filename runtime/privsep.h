/* The monitor protocol: how the unprivileged worker asks the root monitor for the few things
 * that need privilege. One request or answer is one SOCK_SEQPACKET message on a socketpair, so
 * the kernel keeps the framing; a message is a fixed header and a list of length-prefixed
 * fields:
 *
 *     uint32 op | uint32 seq | uint32 n | n x (uint32 len | len bytes)
 *
 * in host byte order (both ends are the same binary on the same host). An answer carries the
 * request's op with EXO_OP_ANSWER set and the request's seq; its first field is a status word.
 * Nothing in a message is trusted by the side that reads it: the decoder checks the framing,
 * and the monitor checks each field against its permit table (monitor.c). */
#ifndef EXO_PRIVSEP_H
#define EXO_PRIVSEP_H

#include <stddef.h>
#include <stdint.h>

#define EXO_PRIV_MAX_MESSAGE 8192 /* bytes of one message, either way */
#define EXO_PRIV_MAX_FIELDS 12

/* The operations. New ones go here and in the monitor's permit table;
 * numbers are never reused. */
enum {
    EXO_OP_LOGIN = 1,  /* user, password, source, transport -> status, ... (monitor.c) */
    EXO_OP_REVOKE = 2, /* token -> status */
    EXO_OP_READY = 3,  /* (nothing) -> status: the worker is serving */
    /* epoch, cpu, mem, rootfs, gpus (loadhist.h) -> status: a load sample to keep and print */
    EXO_OP_LOAD_SAMPLE = 4,
    /* "" or an epoch -> status, more ("0"/"1"), history lines after it (monitor.c) */
    EXO_OP_LOAD_HISTORY = 5,
    /* The mount operations (mountop.h, which also describes their answers). */
    EXO_OP_MOUNT_PROBE = 6,   /* device -> status, ... */
    EXO_OP_MOUNT_MKFS = 7,    /* device, label, uuid or "" -> status */
    EXO_OP_MOUNT_MOUNT = 8,   /* device, mountpoint, read-only "0"|"1" -> status, ... */
    EXO_OP_MOUNT_UNMOUNT = 9, /* mountpoint, lazy "0"|"1" -> status, ... */
    EXO_OP_MOUNT_CEPHFS = 10, /* mountpoint, export, user, key, read-only -> status, ... */
    /* job id, expiry, the record's JSON text -> status: a job record to keep (jobstore.h) */
    EXO_OP_JOB_PUT = 11,
    /* "" or the last id of the previous page -> status, more ("0"/"1"), record lines */
    EXO_OP_JOB_LIST = 12,
    /* The package operations (pkgop.h, which also describes their answers). */
    EXO_OP_PKG_START = 13, /* action, 0..64 package names -> status, id, backend */
    EXO_OP_PKG_POLL = 14,  /* id, log offset, status offset -> status, state, exit, ... */
};
#define EXO_OP_ANSWER 0x80000000u

typedef struct exo_priv_field_s {
    const char *p;
    size_t len;
} exo_priv_field_t;

typedef struct exo_priv_msg_s {
    uint32_t op, seq;
    size_t n;
    exo_priv_field_t f[EXO_PRIV_MAX_FIELDS];
} exo_priv_msg_t;

/* Writes a message into buf (cap bytes). Returns its length, or -EMSGSIZE when it does not fit
 * in cap or in EXO_PRIV_MAX_MESSAGE, or -EINVAL for more than EXO_PRIV_MAX_FIELDS fields. */
int exo_priv_encode(uint8_t *buf, size_t cap, uint32_t op, uint32_t seq, const exo_priv_field_t *f,
                    size_t n);
/* Reads a message of len bytes; the fields of m point into buf. Returns 0, or -EBADMSG with
 * *why saying what is wrong with the framing. */
int exo_priv_decode(const uint8_t *buf, size_t len, exo_priv_msg_t *m, const char **why);
/* 1 if field f is exactly the NUL-free text s. */
int exo_priv_field_is(const exo_priv_field_t *f, const char *s);
/* Copies field f into out (cap bytes, NUL-terminated). Returns 0, or -1 if it does not fit or
 * holds a NUL byte. */
int exo_priv_field_copy(const exo_priv_field_t *f, char *out, size_t cap);

#endif
