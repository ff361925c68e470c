/* Test tool: plays systemd's side of sd_notify(3). Binds a datagram socket at PATH and prints
 * every message it receives on one line (newlines inside a message become '|'), flushing each,
 * until it has read COUNT messages or TIMEOUT_MS pass without one.
 *
 *     exo_notify_recv PATH COUNT TIMEOUT_MS */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: exo_notify_recv PATH COUNT TIMEOUT_MS\n");
        return 2;
    }
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(argv[1]) >= sizeof(sa.sun_path)) return 2;
    strcpy(sa.sun_path, argv[1]);
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    unlink(argv[1]);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        perror("exo_notify_recv: bind");
        return 1;
    }
    printf("listening\n");
    fflush(stdout);
    int want = atoi(argv[2]), got = 0;
    while (got < want) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, atoi(argv[3])) <= 0) break;
        char buf[4096];
        ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
        if (n < 0) break;
        buf[n] = '\0';
        for (char *c = buf; *c; c++)
            if (*c == '\n') *c = '|';
        printf("%s\n", buf);
        fflush(stdout);
        got++;
    }
    unlink(argv[1]);
    return got == want ? 0 : 1;
}
