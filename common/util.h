/*
 * common/util.h - small utilities every surge part shares: a monotonic
 * clock, strict number parsing, atomic file writes, pre-faulted huge-page
 * memory, glibc malloc tuning, a rate limiter for log lines, and a
 * growable byte buffer with a bounded reader (binary checkpoint blobs).
 *
 * All functions are thread-safe unless a declaration says otherwise, and
 * none prints or exits.
 */
#ifndef SURGE_COMMON_UTIL_H
#define SURGE_COMMON_UTIL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

/* surge_now_ns - CLOCK_MONOTONIC in nanoseconds. Only differences mean
 * anything. */
uint64_t surge_now_ns(void);

/* surge_now_s - the same clock in seconds (for timeouts and durations
 * kept as doubles). */
double surge_now_s(void);

/* surge_parse_int64 / surge_parse_uint64 / surge_parse_double - parse the
 * whole string s as one number, strictly: no leading or trailing spaces or
 * junk, not empty, no overflow. Integers are decimal ("-12", "+7");
 * surge_parse_uint64 refuses any sign. surge_parse_double accepts what
 * strtod accepts (e.g. "1e-3", "0x1p-2") but refuses nan and infinities.
 * Return 0 and store into *out, -EINVAL (not a number, junk, NULL or
 * empty) or -ERANGE (overflow); *out is untouched on failure. */
int surge_parse_int64(const char *s, int64_t *out);
int surge_parse_uint64(const char *s, uint64_t *out);
int surge_parse_double(const char *s, double *out);

/* surge_cond_init_monotonic - pthread_cond_init(cv) with the clock
 * CLOCK_MONOTONIC, so that pthread_cond_timedwait deadlines (made with
 * surge_deadline_after_ms) do not jump with the wall clock. Returns 0 or
 * -errno (-ENOMEM, -EAGAIN); cv is not initialised on failure. */
int surge_cond_init_monotonic(pthread_cond_t *cv);

/* surge_deadline_after_ms - *ts = CLOCK_MONOTONIC now + ms (ms >= 0): the
 * absolute deadline pthread_cond_timedwait takes for a condition variable
 * made by surge_cond_init_monotonic. */
void surge_deadline_after_ms(struct timespec *ts, int64_t ms);

/* surge_set_err - format an error message into err (errlen bytes, always
 * NUL-terminated, truncated to fit) like snprintf. err may be NULL or
 * errlen 0: then nothing is written. For the `char *err, size_t errlen`
 * out-parameters that parsers and loaders take. */
void surge_set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* surge_write_all - write all n bytes of p to fd, retrying after short
 * writes and EINTR (in pieces of at most 1 GiB). Returns 0 or -errno; on
 * failure an unknown prefix may have been written. */
int surge_write_all(int fd, const void *p, size_t n);

/* surge_write_file_atomic - replace the file at path with len bytes of
 * data so that a reader (or a crash) sees either the old or the new
 * content, never a mix: write "path.tmp.<pid>" in the same directory,
 * fsync it, rename it over path, fsync the directory. Mode 0644 (before
 * umask). Returns 0 or -errno; the temporary file is removed on failure. */
int surge_write_file_atomic(const char *path, const void *data, size_t len);

/* surge_write_file_atomic_mode - the same with the file's mode given
 * (0600 for a secret: set exactly, whatever the umask). */
int surge_write_file_atomic_mode(const char *path, const void *data, size_t len,
                                 mode_t mode);

/* surge_huge_alloc - bytes of zeroed anonymous memory, aligned to 2 MiB,
 * advised MADV_HUGEPAGE (when the kernel allows transparent huge pages) and
 * pre-faulted by touching every page, so that no page fault happens later
 * on a hot path (faults are very slow on these VMs: PERF-NOTES.md), on
 * surge_prefault_threads(bytes) threads at once (the calling thread and
 * short-lived helpers, joined before it returns). For long-lived big
 * buffers (reservoir, batch buffers). Returns NULL when bytes is 0 or mmap
 * fails. Release with surge_huge_free(p, bytes) with the same bytes. */
void *surge_huge_alloc(size_t bytes);
void surge_huge_free(void *p, size_t bytes);

/* surge_huge_alloc_logged - surge_huge_alloc, with two log lines (info,
 * component what) when bytes is at least 64 MiB: one before, with the size
 * and the threads, one after, with the time taken (a big reservoir takes
 * seconds to pre-fault, and the server accepts nothing meanwhile). */
void *surge_huge_alloc_logged(size_t bytes, const char *what);

/* surge_huge_alloc_background - for a buffer the caller fills from its
 * start (a reservoir's pool): like surge_huge_alloc_logged, but when bytes
 * is at least 64 MiB and the kernel can populate pages without writing
 * them (MADV_POPULATE_WRITE, Linux 5.14+), only the first 32 MiB are
 * faulted before it returns; the rest is faulted in the background, front
 * first, on surge_prefault_threads threads, while the caller already uses
 * the memory (a page it reaches first it faults itself; contents are
 * never touched). *pf receives the background job (NULL when there is
 * none: small, or pre-faulted synchronously on an older kernel), which
 * the caller must end with surge_prefault_stop before freeing. Logs when
 * it starts (size, threads) and when it is done (time). NULL and *pf NULL
 * when mmap fails. */
typedef struct surge_prefault surge_prefault;
void *surge_huge_alloc_background(size_t bytes, const char *what,
                                  surge_prefault **pf);

/* surge_prefault_stop - stop a background pre-fault (its threads finish
 * their current 32 MiB), join it and set *pf to NULL. NULL or *pf NULL:
 * no-op. */
void surge_prefault_stop(surge_prefault **pf);

/* surge_prefault_threads - the threads surge_huge_alloc pre-faults bytes
 * on: one per 64 MiB, at most the online CPUs (and 64). */
int surge_prefault_threads(size_t bytes);

/* surge_malloc_tune - keep glibc from returning freed memory to the kernel
 * (mallopt M_MMAP_THRESHOLD = 32 MiB, M_TRIM_THRESHOLD = 1 GiB): freeing
 * and re-faulting message buffers costs 2-4x in ZeroMQ here. Programs call
 * it once at start-up, before threads; libraries never do (it changes the
 * whole process). Returns 0, or -EINVAL when mallopt refused (as under
 * AddressSanitizer, whose allocator replaces glibc's). */
int surge_malloc_tune(void);

/* surge_ratelimit - at most `burst` events per `interval_ns`, for log lines
 * about bad input that an attacker could otherwise use to flood the log:
 *
 *     static surge_ratelimit rl = SURGE_RATELIMIT_INIT(5, 1000000000);
 *     uint64_t skipped;
 *     if (surge_ratelimit_allow(&rl, surge_now_ns(), &skipped))
 *         SURGE_LOG(SURGE_LOG_WARN, "server", "bad header (%llu more "
 *                   "suppressed)", (unsigned long long)skipped);
 *
 * Not thread-safe: one limiter per thread (or under the caller's lock). */
typedef struct surge_ratelimit {
    uint64_t interval_ns; /* window length */
    uint32_t burst;       /* events allowed per window */
    uint32_t used;        /* events allowed in the current window */
    uint64_t window_ns;   /* start of the current window (0: none yet) */
    uint64_t suppressed;  /* events refused since the last allowed one */
} surge_ratelimit;

#define SURGE_RATELIMIT_INIT(burst, interval_ns)                               \
    {                                                                          \
        (uint64_t)(interval_ns), (uint32_t)(burst), 0, 0, 0                    \
    }

/* surge_ratelimit_init - burst events per interval_ns (burst >= 1). */
void surge_ratelimit_init(surge_ratelimit *rl, uint32_t burst,
                          uint64_t interval_ns);

/* surge_ratelimit_allow - 1 when the event at now_ns may be logged, and
 * then *suppressed (when not NULL) receives the number of events refused
 * since the previous allowed one; 0 when it should be dropped (counted). */
int surge_ratelimit_allow(surge_ratelimit *rl, uint64_t now_ns,
                          uint64_t *suppressed);

/* A growable byte buffer: zero-initialise, append, free. Not thread-safe. */
typedef struct surge_bytes {
    unsigned char *p;
    size_t len, cap;
} surge_bytes;

/* surge_bytes_put - append n bytes of src. 0 or -ENOMEM (b unchanged). */
int surge_bytes_put(surge_bytes *b, const void *src, size_t n);
/* surge_bytes_u64 - append v (host byte order). 0 or -ENOMEM. */
int surge_bytes_u64(surge_bytes *b, uint64_t v);
/* surge_bytes_free - free the bytes; b is empty again. */
void surge_bytes_free(surge_bytes *b);

/* A bounded reader over len bytes at p, from offset off. */
typedef struct surge_reader {
    const unsigned char *p;
    size_t len, off;
} surge_reader;

/* surge_reader_get - copy the next n bytes to dst (NULL: skip them). 0, or
 * SURGE_EPROTO when fewer than n are left (nothing read). */
int surge_reader_get(surge_reader *r, void *dst, size_t n);

#endif /* SURGE_COMMON_UTIL_H */
