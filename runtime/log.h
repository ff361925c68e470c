/* Logging to standard error, one line per event. Under systemd (JOURNAL_STREAM set) each
 * line carries a sd-daemon "<N>" priority prefix so the journal keeps the level; elsewhere it
 * carries a UTC timestamp and the level name. Lines never contain request bodies or secrets. */
#ifndef EXO_LOG_H
#define EXO_LOG_H

#include "config.h"

void exo_log_init(exo_log_level_t min_level);
void exo_log_set_level(exo_log_level_t min_level);
int exo_log_enabled(exo_log_level_t level);
void exo_log(exo_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define exo_debug(...) exo_log(EXO_LOG_DEBUG, __VA_ARGS__)
#define exo_info(...) exo_log(EXO_LOG_INFO, __VA_ARGS__)
#define exo_warn(...) exo_log(EXO_LOG_WARN, __VA_ARGS__)
#define exo_error(...) exo_log(EXO_LOG_ERROR, __VA_ARGS__)

#endif
