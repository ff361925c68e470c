/* Test tool: sends one message, as the worker would, on the worker's socket to the monitor.
 *
 *     exo_inject WORKER_PID HEX
 *
 * It takes a copy of the worker's SOCK_SEQPACKET descriptor with pidfd_getfd(2) (root, or
 * ptrace rights over the worker), so tests can prove what the monitor does with malformed or
 * unpermitted requests from a compromised worker without any hook in the agent itself. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: exo_inject WORKER_PID HEX\n");
        return 2;
    }
    size_t n = strlen(argv[2]) / 2;
    unsigned char *msg = malloc(n ? n : 1);
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(argv[2][2 * i]), lo = hexval(argv[2][2 * i + 1]);
        if (msg == NULL || hi < 0 || lo < 0) {
            fprintf(stderr, "exo_inject: bad hex\n");
            return 2;
        }
        msg[i] = (unsigned char)(hi * 16 + lo);
    }
    int pidfd = (int)syscall(SYS_pidfd_open, atoi(argv[1]), 0);
    if (pidfd < 0) {
        fprintf(stderr, "exo_inject: pidfd_open: %s\n", strerror(errno));
        return 1;
    }
    for (int fd = 0; fd < 1024; fd++) {
        int copy = (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
        if (copy < 0) continue;
        int type = 0;
        socklen_t len = sizeof(type);
        if (getsockopt(copy, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_SEQPACKET) {
            ssize_t w = send(copy, msg, n, MSG_NOSIGNAL);
            if (w != (ssize_t)n) {
                fprintf(stderr, "exo_inject: send: %s\n", strerror(errno));
                return 1;
            }
            printf("sent %zu bytes on descriptor %d\n", n, fd);
            return 0;
        }
        close(copy);
    }
    fprintf(stderr, "exo_inject: the process has no SOCK_SEQPACKET descriptor\n");
    return 1;
}
