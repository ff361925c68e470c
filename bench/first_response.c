/* Start-to-first-response timer for bench/run.sh.
 *
 *   first_response free-port
 *       prints a TCP port on 127.0.0.1 that is free right now
 *   first_response time PORT CAFILE RUNS -- COMMAND [ARG]...
 *       RUNS times: takes the time, fork/execs COMMAND (stdout and stderr to /dev/null),
 *       then every 0.2 ms tries a TCP connect to 127.0.0.1:PORT, a TLS handshake that
 *       verifies the server against CAFILE (SNI and host name "localhost") and
 *       "GET /healthz"; stops at the first "HTTP/1.1 200", takes the time again, sends the
 *       server SIGTERM and waits for it to exit. Prints one line per run: the elapsed
 *       milliseconds, and the CPU time the server and its children had used by then
 *       (/proc/PID/schedstat), which depends much less on other load on the machine. Then
 *       "median MS min MS max MS cpu_median MS".
 *
 * Built by run.sh with: cc -O2 -o first_response first_response.c -lssl -lcrypto */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* SIGTERM or SIGINT: the server being timed is stopped too, then this program exits. */
static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        perror("free-port");
        return 1;
    }
    printf("%d\n", ntohs(a.sin_port));
    close(fd);
    return 0;
}

/* One attempt: 1 when the server answered 200, 0 when it is not there yet, -1 when it
 * answered something else. */
static int try_once(SSL_CTX *ctx, int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        close(fd);
        return 0;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, "localhost");
    SSL_set1_host(ssl, "localhost");
    int rc = 0;
    static const char req[] = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
    char buf[512];
    if (SSL_connect(ssl) == 1 && SSL_write(ssl, req, sizeof(req) - 1) == (int)sizeof(req) - 1) {
        int n = SSL_read(ssl, buf, sizeof(buf) - 1);
        if (n > 0) {
            buf[n] = '\0';
            rc = strncmp(buf, "HTTP/1.1 200", 12) == 0 ? 1 : -1;
            if (rc < 0) fprintf(stderr, "first_response: unexpected answer: %.80s\n", buf);
        }
    } else if (SSL_get_verify_result(ssl) != X509_V_OK) {
        fprintf(stderr, "first_response: certificate not verified: %s\n",
                X509_verify_cert_error_string(SSL_get_verify_result(ssl)));
        rc = -1;
    }
    ERR_clear_error();
    SSL_free(ssl);
    close(fd);
    return rc;
}

static void stop(pid_t pid)
{
    kill(pid, SIGTERM);
    for (int i = 0; i < 5000; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid) return;
        usleep(1000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* CPU time (ms) that pid and its children (one level: nginx's workers) have used. */
static double cpu_ms(pid_t pid)
{
    char path[64], buf[4096];
    double ns = 0;
    snprintf(path, sizeof(path), "/proc/%d/schedstat", (int)pid);
    FILE *f = fopen(path, "re");
    if (f != NULL) {
        unsigned long long v = 0;
        if (fscanf(f, "%llu", &v) == 1) ns += (double)v;
        fclose(f);
    }
    snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)pid, (int)pid);
    f = fopen(path, "re");
    if (f != NULL) {
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        buf[n] = '\0';
        fclose(f);
        char *save = NULL;
        for (char *tok = strtok_r(buf, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save)) {
            snprintf(path, sizeof(path), "/proc/%s/schedstat", tok);
            FILE *g = fopen(path, "re");
            unsigned long long v = 0;
            if (g != NULL) {
                if (fscanf(g, "%llu", &v) == 1) ns += (double)v;
                fclose(g);
            }
        }
    }
    return ns / 1e6;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "free-port") == 0) return free_port();
    if (argc < 7 || strcmp(argv[1], "time") != 0 || strcmp(argv[5], "--") != 0) {
        fprintf(stderr, "usage: first_response free-port\n"
                        "       first_response time PORT CAFILE RUNS -- COMMAND [ARG]...\n");
        return 2;
    }
    int port = atoi(argv[2]), runs = atoi(argv[4]);
    if (runs < 1 || runs > 1000) runs = 10;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL || SSL_CTX_load_verify_locations(ctx, argv[3], NULL) != 1) {
        fprintf(stderr, "first_response: cannot load %s\n", argv[3]);
        return 1;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal; /* no SA_RESTART: sleeps and reads return at once */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    double *ms = calloc((size_t)runs, sizeof(*ms)), *cpu = calloc((size_t)runs, sizeof(*cpu));
    for (int i = 0; i < runs && !stopping; i++) {
        double t0 = now_ms();
        pid_t pid = fork();
        if (pid == 0) {
            int null = open("/dev/null", O_WRONLY);
            dup2(null, 1);
            dup2(null, 2);
            execvp(argv[6], argv + 6);
            _exit(127);
        }
        int rc = 0;
        const struct timespec pause = {.tv_nsec = 200000};
        while (!stopping && (rc = try_once(ctx, port)) == 0) {
            if (waitpid(pid, NULL, WNOHANG) == pid) {
                fprintf(stderr, "first_response: %s exited before answering\n", argv[6]);
                return 1;
            }
            if (now_ms() - t0 > 10000) {
                fprintf(stderr, "first_response: no answer within 10 s\n");
                stop(pid);
                return 1;
            }
            nanosleep(&pause, NULL);
        }
        ms[i] = now_ms() - t0;
        cpu[i] = cpu_ms(pid);
        stop(pid);
        if (stopping)
            return 1;
        if (rc < 0) return 1;
        printf("%.2f cpu %.2f\n", ms[i], cpu[i]);
        fflush(stdout);
    }
    qsort(ms, (size_t)runs, sizeof(*ms), cmp);
    qsort(cpu, (size_t)runs, sizeof(*cpu), cmp);
    double median = runs % 2 ? ms[runs / 2] : (ms[runs / 2 - 1] + ms[runs / 2]) / 2;
    double cpu_median = runs % 2 ? cpu[runs / 2] : (cpu[runs / 2 - 1] + cpu[runs / 2]) / 2;
    printf("median %.2f min %.2f max %.2f cpu_median %.2f\n", median, ms[0], ms[runs - 1],
           cpu_median);
    SSL_CTX_free(ctx);
    return 0;
}
