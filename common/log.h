/*
 * common/log.h - logging for surge programs and libraries.
 *
 * Libraries never print: they call the handler the program installs with
 * surge_log_set_handler(). The default handler writes one line per event to
 * stderr: "2026-11-29T04:05:06.123Z info server message". The level is
 * checked before formatting, so a disabled SURGE_LOG_DEBUG costs a compare.
 * Thread-safe: the handler may be called from any thread; the default one
 * writes each line with a single write(2).
 */
#ifndef SURGE_COMMON_LOG_H
#define SURGE_COMMON_LOG_H

#include <stdarg.h>

enum surge_log_level {
    SURGE_LOG_ERROR = 0,
    SURGE_LOG_WARN = 1,
    SURGE_LOG_INFO = 2,
    SURGE_LOG_DEBUG = 3
};

typedef void (*surge_log_cb)(int level, const char *component,
                             const char *message, void *arg);

/* Install handler (NULL restores the default stderr one). */
void surge_log_set_handler(surge_log_cb cb, void *arg);
/* Events above level are not formatted. Default SURGE_LOG_INFO, or
 * SURGE_LOG_LEVEL=error|warn|info|debug from the environment. */
void surge_log_set_level(int level);
/* surge_log_set_rank - name the process's rank in every line of the
 * default handler ("component[rank]"); -1 (the default) names none. */
void surge_log_set_rank(int rank);
int surge_log_get_level(void);
/* Parse "error", "warn", "info", "debug"; -1 when unknown. */
int surge_log_level_parse(const char *name);

void surge_log(int level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define SURGE_LOG(level, component, ...)                                       \
    do {                                                                       \
        if ((level) <= surge_log_get_level()) {                                \
            surge_log((level), (component), __VA_ARGS__);                      \
        }                                                                      \
    } while (0)

#endif /* SURGE_COMMON_LOG_H */
