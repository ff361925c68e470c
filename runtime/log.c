#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static exo_log_level_t min_level_ = EXO_LOG_INFO;
static int journal_ = 0;

void exo_log_init(exo_log_level_t min_level)
{
    min_level_ = min_level;
    journal_ = getenv("JOURNAL_STREAM") != NULL;
}

void exo_log_set_level(exo_log_level_t min_level)
{
    min_level_ = min_level;
}

int exo_log_enabled(exo_log_level_t level)
{
    return level >= min_level_;
}

void exo_log(exo_log_level_t level, const char *fmt, ...)
{
    static const int syslog_prio[] = {7, 6, 4, 3};
    static const char *const names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    if (level < min_level_) return;
    char line[2048];
    size_t n = 0;
    if (journal_) {
        n = (size_t)snprintf(line, sizeof(line), "<%d>", syslog_prio[level]);
    } else {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
        n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ %-5s ", ts.tv_nsec / 1000000,
                              names[level]);
    }
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    va_end(ap);
    if (m < 0) m = 0;
    n += (size_t)m;
    if (n > sizeof(line) - 2) n = sizeof(line) - 2;
    /* One line per event: a newline inside a message would let a client forge log lines. */
    for (size_t i = 0; i < n; i++)
        if (line[i] == '\n' || line[i] == '\r') line[i] = ' ';
    line[n++] = '\n';
    fwrite(line, 1, n, stderr);
}
