/* common/util.c - see common/util.h. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <surge/error.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/util.h"

#define HUGE_PAGE ((size_t)2 << 20)

uint64_t
surge_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * UINT64_C(1000000000) + (uint64_t)ts.tv_nsec;
}

double
surge_now_s(void)
{
    return (double)surge_now_ns() * 1e-9;
}

/* strtol and friends skip leading white space and accept a sign; we want
 * neither silently, so look at the first character ourselves. */
static int
starts_ok(const char *s, int allow_sign)
{
    if (s == NULL || s[0] == '\0') {
        return 0;
    }
    if (s[0] == '-' || s[0] == '+') {
        return allow_sign && s[1] != '\0';
    }
    return 1;
}

int
surge_cond_init_monotonic(pthread_cond_t *cv)
{
    pthread_condattr_t ca;
    int rc = pthread_condattr_init(&ca);
    if (rc != 0) {
        return -rc;
    }
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    rc = pthread_cond_init(cv, &ca);
    pthread_condattr_destroy(&ca);
    return -rc;
}

void
surge_deadline_after_ms(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += (time_t)(ms / 1000);
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

void
surge_set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
}

int
surge_parse_int64(const char *s, int64_t *out)
{
    char *end = NULL;
    if (!starts_ok(s, 1) ||
        !(s[0] == '-' || s[0] == '+' || (s[0] >= '0' && s[0] <= '9'))) {
        return -EINVAL;
    }
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end != '\0') {
        return -EINVAL;
    }
    if (errno == ERANGE) {
        return -ERANGE;
    }
    *out = (int64_t)v;
    return 0;
}

int
surge_parse_uint64(const char *s, uint64_t *out)
{
    char *end = NULL;
    /* strtoull accepts "-1" and wraps it: refuse every sign up front. */
    if (!starts_ok(s, 0) || !(s[0] >= '0' && s[0] <= '9')) {
        return -EINVAL;
    }
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || *end != '\0') {
        return -EINVAL;
    }
    if (errno == ERANGE) {
        return -ERANGE;
    }
    *out = (uint64_t)v;
    return 0;
}

int
surge_parse_double(const char *s, double *out)
{
    char *end = NULL;
    if (!starts_ok(s, 1)) {
        return -EINVAL;
    }
    const char *d = (s[0] == '-' || s[0] == '+') ? s + 1 : s;
    /* A digit or a point must come first: this refuses " 1", "nan",
     * "inf" and "infinity" before strtod sees them. */
    if (!((d[0] >= '0' && d[0] <= '9') || d[0] == '.')) {
        return -EINVAL;
    }
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != '\0') {
        return -EINVAL;
    }
    if (errno == ERANGE && isinf(v)) {
        return -ERANGE;
    }
    /* Underflow to a subnormal or zero is a representable answer. */
    if (!isfinite(v)) {
        return -ERANGE;
    }
    *out = v;
    return 0;
}

int
surge_write_all(int fd, const void *p, size_t n)
{
    const unsigned char *b = p;
    while (n > 0) {
        size_t chunk = n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n;
        ssize_t w = write(fd, b, chunk);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

int
surge_write_file_atomic(const char *path, const void *data, size_t len)
{
    return surge_write_file_atomic_mode(path, data, len, 0644);
}

int
surge_write_file_atomic_mode(const char *path, const void *data, size_t len,
                             mode_t mode)
{
    char tmp[PATH_MAX];
    char dir[PATH_MAX];
    int fd = -1;
    int rc = 0;

    if (path == NULL || (data == NULL && len > 0)) {
        return -EINVAL;
    }
    int n = snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof tmp) {
        return -ENAMETOOLONG;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        return -errno;
    }
    /* A private file (no group or other bits) gets exactly its mode
     * before its first byte is written; others keep the umask's say. */
    if ((mode & 077) == 0 && fchmod(fd, mode) != 0) {
        rc = -errno;
        goto fail_unlink;
    }
    rc = surge_write_all(fd, data, len);
    if (rc != 0) {
        goto fail_unlink;
    }
    if (fsync(fd) != 0) {
        rc = -errno;
        goto fail_unlink;
    }
    if (close(fd) != 0) {
        fd = -1;
        rc = -errno;
        goto fail_unlink;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        rc = -errno;
        goto fail_unlink;
    }
    /* The rename is durable only once the directory entry is. */
    n = snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == NULL) {
        dir[0] = '.';
        dir[1] = '\0';
    } else if (slash == dir) {
        dir[1] = '\0';
    } else {
        *slash = '\0';
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        if (fsync(dfd) != 0) {
            rc = -errno;
        }
        close(dfd);
    }
    return rc;

fail_unlink:
    if (fd >= 0) {
        close(fd);
    }
    unlink(tmp);
    return rc;
}

static void prefault(char *p, size_t len, int threads);

/* Each pre-fault thread takes at least this much: below it, starting a
 * thread costs more than the faults it takes over. */
#define PREFAULT_MIN_PER_THREAD ((size_t)64 << 20)
#define PREFAULT_MAX_THREADS 64
/* Allocations at least this big get log lines (and, with _background,
 * their pre-fault in the background). */
#define LOGGED_ALLOC_MIN ((size_t)64 << 20)

/* Map len bytes (a multiple of HUGE_PAGE) aligned to 2 MiB, advised
 * MADV_HUGEPAGE, not yet touched. */
static char *
huge_map(size_t len)
{
    /* Over-map by one huge page so the start can be aligned to 2 MiB: the
     * kernel only backs aligned 2 MiB ranges with huge pages. */
    size_t map = len + HUGE_PAGE;
    char *raw = mmap(NULL, map, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) {
        return NULL;
    }
    uintptr_t a =
        ((uintptr_t)raw + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
    char *p = (char *)a;
    size_t head = (size_t)(p - raw);
    size_t tail = map - head - len;
    if (head > 0) {
        munmap(raw, head);
    }
    if (tail > 0) {
        munmap(p + len, tail);
    }
#ifdef MADV_HUGEPAGE
    /* Advice only: without transparent huge pages this fails harmlessly. */
    (void)madvise(p, len, MADV_HUGEPAGE);
#endif
    return p;
}

static size_t
huge_len(size_t bytes)
{
    return (bytes + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
}

void *
surge_huge_alloc(size_t bytes)
{
    if (bytes == 0 || bytes > SIZE_MAX - 2 * HUGE_PAGE) {
        return NULL;
    }
    if (surge_alloc_should_fail()) {
        return NULL;
    }
    size_t len = huge_len(bytes);
    char *p = huge_map(len);
    if (p != NULL) {
        prefault(p, len, surge_prefault_threads(len));
    }
    return p;
}

/* A background pre-fault: threads take CHUNK-sized pieces in address
 * order from `next` (so the front of the buffer, which a reservoir fills
 * first, is faulted first) until none is left or stop is set. */
#define BG_CHUNK ((size_t)32 << 20)

struct surge_prefault {
    char *p;
    size_t len;
    const char *what; /* log component (a string literal) */
    int threads;
    pthread_t th[PREFAULT_MAX_THREADS];
    int started;
    atomic_size_t next; /* next chunk's offset */
    atomic_int stop;
    atomic_int running; /* threads not yet done; the last one logs */
    atomic_size_t done; /* bytes populated */
    uint64_t t0_ns;
};

static void *
bg_run(void *arg)
{
    surge_prefault *pf = arg;
    for (;;) {
        if (atomic_load_explicit(&pf->stop, memory_order_relaxed)) {
            break;
        }
        size_t off = atomic_fetch_add(&pf->next, BG_CHUNK);
        if (off >= pf->len) {
            break;
        }
        size_t n = pf->len - off < BG_CHUNK ? pf->len - off : BG_CHUNK;
        /* Populate without writing: the owner may already be storing
         * data in these pages. */
        (void)madvise(pf->p + off, n, MADV_POPULATE_WRITE);
        atomic_fetch_add(&pf->done, n);
    }
    if (atomic_fetch_sub(&pf->running, 1) == 1 && !atomic_load(&pf->stop)) {
        double s = (double)(surge_now_ns() - pf->t0_ns) * 1e-9;
        SURGE_LOG(SURGE_LOG_INFO, pf->what,
                  "%.2f GiB pre-faulted in the background in %.2f s "
                  "(%.2f GB/s)",
                  (double)pf->len / (double)(1u << 30), s,
                  s > 0.0 ? (double)pf->len / s * 1e-9 : 0.0);
    }
    return NULL;
}

void *
surge_huge_alloc_background(size_t bytes, const char *what,
                            surge_prefault **pfp)
{
    *pfp = NULL;
    if (bytes == 0 || bytes > SIZE_MAX - 2 * HUGE_PAGE) {
        return NULL;
    }
    if (bytes < LOGGED_ALLOC_MIN) {
        return surge_huge_alloc(bytes);
    }
    if (surge_alloc_should_fail()) {
        return NULL;
    }
    size_t len = huge_len(bytes);
    char *p = huge_map(len);
    if (p == NULL) {
        SURGE_LOG(SURGE_LOG_ERROR, what, "mapping %.2f GiB failed",
                  (double)len / (double)(1u << 30));
        return NULL;
    }
    surge_prefault *pf = calloc(1, sizeof *pf);
    /* The first chunk now, which also tells whether the kernel can
     * populate without writing (MADV_POPULATE_WRITE, Linux 5.14). */
    size_t first = len < BG_CHUNK ? len : BG_CHUNK;
    if (pf == NULL || madvise(p, first, MADV_POPULATE_WRITE) != 0) {
        free(pf);
        double gib = (double)len / (double)(1u << 30);
        SURGE_LOG(SURGE_LOG_INFO, what,
                  "pre-faulting %.2f GiB on %d thread(s); no sample is "
                  "accepted until it is done",
                  gib, surge_prefault_threads(len));
        uint64_t t0 = surge_now_ns();
        prefault(p, len, surge_prefault_threads(len));
        double s = (double)(surge_now_ns() - t0) * 1e-9;
        SURGE_LOG(SURGE_LOG_INFO, what,
                  "%.2f GiB pre-faulted in %.2f s (%.2f GB/s)", gib, s,
                  s > 0.0 ? (double)len / s * 1e-9 : 0.0);
        return p;
    }
    pf->p = p;
    pf->len = len;
    pf->what = what;
    pf->t0_ns = surge_now_ns();
    atomic_init(&pf->next, first);
    atomic_init(&pf->stop, 0);
    atomic_init(&pf->done, first);
    pf->threads = surge_prefault_threads(len - first);
    atomic_init(&pf->running, pf->threads);
    SURGE_LOG(SURGE_LOG_INFO, what,
              "pre-faulting %.2f GiB in the background on %d thread(s), "
              "front first, while it is already in use",
              (double)len / (double)(1u << 30), pf->threads);
    for (int i = 0; i < pf->threads; i++) {
        if (pthread_create(&pf->th[i], NULL, bg_run, pf) != 0) {
            break;
        }
        pf->started++;
    }
    /* Threads that did not start are done already (the pages they would
     * have faulted are faulted on first use). */
    int missing = pf->threads - pf->started;
    if (missing > 0 && atomic_fetch_sub(&pf->running, missing) == missing) {
        SURGE_LOG(SURGE_LOG_WARN, what,
                  "no pre-fault thread started: pages fault on first use");
    }
    *pfp = pf;
    return p;
}

void
surge_prefault_stop(surge_prefault **pfp)
{
    if (pfp == NULL || *pfp == NULL) {
        return;
    }
    surge_prefault *pf = *pfp;
    int was_running = atomic_load(&pf->running) > 0;
    atomic_store(&pf->stop, 1);
    for (int i = 0; i < pf->started; i++) {
        pthread_join(pf->th[i], NULL);
    }
    if (was_running) {
        /* The owner is done with the memory before the pre-fault was. */
        SURGE_LOG(SURGE_LOG_INFO, pf->what,
                  "background pre-fault stopped after %.2f of %.2f GiB "
                  "(%.2f s)",
                  (double)atomic_load(&pf->done) / (double)(1u << 30),
                  (double)pf->len / (double)(1u << 30),
                  (double)(surge_now_ns() - pf->t0_ns) * 1e-9);
    }
    free(pf);
    *pfp = NULL;
}

void *
surge_huge_alloc_logged(size_t bytes, const char *what)
{
    if (bytes < LOGGED_ALLOC_MIN) {
        return surge_huge_alloc(bytes);
    }
    double gib = (double)bytes / (double)(1u << 30);
    SURGE_LOG(SURGE_LOG_INFO, what,
              "mapping %.2f GiB and pre-faulting it on %d thread(s)", gib,
              surge_prefault_threads(bytes));
    uint64_t t0 = surge_now_ns();
    void *p = surge_huge_alloc(bytes);
    double s = (double)(surge_now_ns() - t0) * 1e-9;
    if (p == NULL) {
        SURGE_LOG(SURGE_LOG_ERROR, what, "mapping %.2f GiB failed after %.2f s",
                  gib, s);
    } else {
        SURGE_LOG(SURGE_LOG_INFO, what,
                  "%.2f GiB mapped and pre-faulted in %.2f s (%.2f GB/s)", gib,
                  s, s > 0.0 ? (double)bytes / s * 1e-9 : 0.0);
    }
    return p;
}

/* One thread's share of a pre-fault: touch a byte of every page. */
struct prefault_part {
    char *p;
    size_t len;
};

static void *
prefault_run(void *arg)
{
    const struct prefault_part *a = arg;
    long page = sysconf(_SC_PAGESIZE);
    size_t step = page > 0 ? (size_t)page : 4096;
    for (size_t off = 0; off < a->len; off += step) {
        ((volatile char *)a->p)[off] = 0;
    }
    return NULL;
}

int
surge_prefault_threads(size_t bytes)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    size_t t = bytes / PREFAULT_MIN_PER_THREAD;
    if (cpus > 0 && t > (size_t)cpus) {
        t = (size_t)cpus;
    }
    if (t > PREFAULT_MAX_THREADS) {
        t = PREFAULT_MAX_THREADS;
    }
    return t > 1 ? (int)t : 1;
}

/* Touch every page of [p, p + len) on threads threads: first touches
 * cost the kernel (and a virtual machine's host) a zeroed page each, and
 * that work spreads over cores (PERF-NOTES: 0.2-1.4 GB/s on one). A
 * thread that cannot start leaves its share to the caller. */
static void
prefault(char *p, size_t len, int threads)
{
    pthread_t th[PREFAULT_MAX_THREADS];
    struct prefault_part part[PREFAULT_MAX_THREADS];
    int started[PREFAULT_MAX_THREADS] = {0};
    if (threads < 1) {
        threads = 1;
    }
    if (threads > PREFAULT_MAX_THREADS) {
        threads = PREFAULT_MAX_THREADS;
    }
    /* Whole huge pages per share, so no huge page is split between two
     * threads' faults. */
    size_t pages = len / HUGE_PAGE;
    size_t off = 0;
    for (int i = 0; i < threads; i++) {
        size_t n = pages / (size_t)threads + ((size_t)i < pages % threads);
        part[i].p = p + off;
        part[i].len = i == threads - 1 ? len - off : n * HUGE_PAGE;
        off += part[i].len;
    }
    for (int i = 1; i < threads; i++) {
        started[i] = pthread_create(&th[i], NULL, prefault_run, &part[i]) == 0;
    }
    prefault_run(&part[0]);
    for (int i = 1; i < threads; i++) {
        if (started[i]) {
            pthread_join(th[i], NULL);
        } else {
            prefault_run(&part[i]);
        }
    }
}

void
surge_huge_free(void *p, size_t bytes)
{
    if (p == NULL || bytes == 0) {
        return;
    }
    size_t len = (bytes + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
    munmap(p, len);
}

int
surge_malloc_tune(void)
{
    int ok = mallopt(M_MMAP_THRESHOLD, 32 << 20);
    ok &= mallopt(M_TRIM_THRESHOLD, 1 << 30);
    return ok == 1 ? 0 : -EINVAL;
}

void
surge_ratelimit_init(surge_ratelimit *rl, uint32_t burst, uint64_t interval_ns)
{
    rl->interval_ns = interval_ns;
    rl->burst = burst > 0 ? burst : 1;
    rl->used = 0;
    rl->window_ns = 0;
    rl->suppressed = 0;
}

int
surge_ratelimit_allow(surge_ratelimit *rl, uint64_t now_ns,
                      uint64_t *suppressed)
{
    if (rl->window_ns == 0 || now_ns - rl->window_ns >= rl->interval_ns) {
        /* A new window; now_ns 0 would read as "none yet", so nudge it. */
        rl->window_ns = now_ns != 0 ? now_ns : 1;
        rl->used = 0;
    }
    if (rl->used >= rl->burst) {
        rl->suppressed++;
        return 0;
    }
    rl->used++;
    if (suppressed != NULL) {
        *suppressed = rl->suppressed;
    }
    rl->suppressed = 0;
    return 1;
}

int
surge_bytes_put(surge_bytes *b, const void *src, size_t n)
{
    if (n > SIZE_MAX / 2 - b->len) {
        return -ENOMEM;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap < 4096 ? 4096 : b->cap;
        while (cap < b->len + n) {
            cap *= 2;
        }
        unsigned char *q = realloc(b->p, cap);
        if (q == NULL) {
            return -ENOMEM;
        }
        b->p = q;
        b->cap = cap;
    }
    if (n > 0) {
        memcpy(b->p + b->len, src, n);
    }
    b->len += n;
    return 0;
}

int
surge_bytes_u64(surge_bytes *b, uint64_t v)
{
    return surge_bytes_put(b, &v, sizeof v);
}

void
surge_bytes_free(surge_bytes *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

int
surge_reader_get(surge_reader *r, void *dst, size_t n)
{
    if (n > r->len - r->off) {
        return SURGE_EPROTO;
    }
    if (dst != NULL && n > 0) {
        memcpy(dst, r->p + r->off, n);
    }
    r->off += n;
    return 0;
}
