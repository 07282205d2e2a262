/*
 * common/log.c - the log handler hook and the default stderr handler.
 *
 * The handler and its argument are set once at program start-up, before
 * threads exist; the level is an atomic so any thread may read it.
 */
#include "config.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

static surge_log_cb log_handler; /* NULL: default stderr handler */
static void *log_handler_arg;
static atomic_int log_level = -1; /* -1: not read from environment yet */

static const char *const level_names[] = {"error", "warn", "info", "debug"};

int
surge_log_level_parse(const char *name)
{
    for (int i = 0; i < 4; i++) {
        if (name != NULL && strcasecmp(name, level_names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

void
surge_log_set_handler(surge_log_cb cb, void *arg)
{
    log_handler = cb;
    log_handler_arg = arg;
}

void
surge_log_set_level(int level)
{
    atomic_store(&log_level, level);
}

int
surge_log_get_level(void)
{
    int level = atomic_load(&log_level);
    if (level < 0) {
        level = surge_log_level_parse(getenv("SURGE_LOG_LEVEL"));
        if (level < 0) {
            level = SURGE_LOG_INFO;
        }
        atomic_store(&log_level, level);
    }
    return level;
}

static atomic_int log_rank = -1;

void
surge_log_set_rank(int rank)
{
    atomic_store(&log_rank, rank);
}

static void
default_handler(int level, const char *component, const char *message)
{
    struct timespec ts;
    struct tm tm;
    char stamp[32];
    char line[1024];

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    int rank = atomic_load(&log_rank);
    char comp[96];
    if (rank >= 0) {
        snprintf(comp, sizeof comp, "%s[%d]", component, rank);
    } else {
        snprintf(comp, sizeof comp, "%s", component);
    }
    int n = snprintf(line, sizeof line, "%s.%03ldZ %s %s %s\n", stamp,
                     ts.tv_nsec / 1000000L, level_names[level], comp, message);
    if (n < 0) {
        return;
    }
    if ((size_t)n >= sizeof line) {
        n = (int)sizeof line - 1;
        line[n - 1] = '\n';
    }
    /* One write(2) per line keeps lines from different threads whole. */
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}

void
surge_log(int level, const char *component, const char *fmt, ...)
{
    char message[768];
    va_list ap;

    if (level < SURGE_LOG_ERROR) {
        level = SURGE_LOG_ERROR;
    }
    if (level > SURGE_LOG_DEBUG) {
        level = SURGE_LOG_DEBUG;
    }
    if (level > surge_log_get_level()) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    if (log_handler != NULL) {
        log_handler(level, component, message, log_handler_arg);
    } else {
        default_handler(level, component, message);
    }
}
