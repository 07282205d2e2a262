/*
 * server/store.c - the bounded sample stores of the server (see store.h):
 * a ring of fixed-size slots allocated once, pre-faulted with huge pages
 * where the kernel allows (page faults are slow on these machines).
 *
 * Lock order: s->mu only (a leaf lock). The space callback is called after
 * unlocking.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <surge/error.h>

#include "server/store.h"

#define SLOT_ALIGN 64

struct surge_store {
    char name[32];              /* for logs */
    enum surge_store_kind kind; /* stream or keep */
    uint64_t capacity_bytes;    /* configured capacity */
    pthread_mutex_t mu;         /* guards everything below */
    pthread_cond_t cv;          /* signalled on put, shape, end, stop */
    int has_shape;              /* set once */
    uint32_t nin;               /* floats per sample input */
    uint64_t nout;              /* floats per sample output */
    size_t slot_bytes;          /* header + (nin + nout) floats, aligned */
    uint64_t nslots;            /* slots in the ring */
    unsigned char *mem;         /* (nslots, slot_bytes), mmap'ed */
    size_t mem_bytes;           /* mapping size */
    uint64_t head;              /* index of the oldest sample (mod nslots) */
    uint64_t count;             /* samples held */
    int ended;                  /* end of reception */
    int stopped;                /* stop: gets return ECLOSED at once */
    int producer_refused;       /* a put was refused since the last take */
    uint64_t puts, put_refused, taken, batches; /* counters */
    uint64_t consumer_wait_ns; /* time spent waiting in get_batch */
    void (*space_cb)(void *);  /* set before threads start */
    void *space_arg;
};

struct slot_head {
    int64_t sim;
    int64_t step;
};

static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int
surge_store_create(surge_store **out, const surge_store_config *cfg)
{
    if (out == NULL || cfg == NULL || cfg->capacity_bytes == 0) {
        return -EINVAL;
    }
    surge_store *s = calloc(1, sizeof *s);
    if (s == NULL) {
        return -ENOMEM;
    }
    snprintf(s->name, sizeof s->name, "%s",
             cfg->name != NULL ? cfg->name : "store");
    s->kind = cfg->kind;
    s->capacity_bytes = cfg->capacity_bytes;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        goto fail_mutex;
    }
    if (pthread_cond_init(&s->cv, &ca) != 0) {
        goto fail_cond;
    }
    pthread_condattr_destroy(&ca);
    *out = s;
    return 0;

fail_cond:
    pthread_mutex_destroy(&s->mu);
fail_mutex:
    pthread_condattr_destroy(&ca);
    free(s);
    return -ENOMEM;
}

void
surge_store_destroy(surge_store **sp)
{
    if (sp == NULL || *sp == NULL) {
        return;
    }
    surge_store *s = *sp;
    if (s->mem != NULL) {
        munmap(s->mem, s->mem_bytes);
    }
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
    *sp = NULL;
}

void
surge_store_set_space_cb(surge_store *s, void (*cb)(void *), void *arg)
{
    s->space_cb = cb;
    s->space_arg = arg;
}

static unsigned char *
slot(const surge_store *s, uint64_t i)
{
    return s->mem + (size_t)(i % s->nslots) * s->slot_bytes;
}

int
surge_store_set_shape(surge_store *s, uint32_t nin, uint64_t nout)
{
    pthread_mutex_lock(&s->mu);
    if (s->has_shape) {
        int same = s->nin == nin && s->nout == nout;
        pthread_mutex_unlock(&s->mu);
        return same ? 0 : SURGE_ECONFIG;
    }
    pthread_mutex_unlock(&s->mu);

    /* Only the producer sets the shape, so allocating unlocked is safe:
     * consumers see has_shape only once everything is in place. */
    if (nout == 0 || nout > (UINT64_MAX / 8) || nin > (1u << 20)) {
        return SURGE_ELIMIT;
    }
    uint64_t raw = sizeof(struct slot_head) + ((uint64_t)nin + nout) * 4;
    uint64_t sb = (raw + SLOT_ALIGN - 1) / SLOT_ALIGN * SLOT_ALIGN;
    uint64_t nslots = s->capacity_bytes / sb;
    if (nslots == 0) {
        return SURGE_ELIMIT;
    }
    size_t bytes = (size_t)(nslots * sb);
    void *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        return -ENOMEM;
    }
#ifdef MADV_HUGEPAGE
    (void)madvise(mem, bytes, MADV_HUGEPAGE);
#endif
    /* Pre-fault now rather than on the hot path. */
    memset(mem, 0, bytes);

    pthread_mutex_lock(&s->mu);
    s->mem = mem;
    s->mem_bytes = bytes;
    s->slot_bytes = (size_t)sb;
    s->nslots = nslots;
    s->nin = nin;
    s->nout = nout;
    s->has_shape = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

int
surge_store_shape(surge_store *s, uint32_t *nin, uint64_t *nout)
{
    pthread_mutex_lock(&s->mu);
    int has = s->has_shape;
    if (has) {
        *nin = s->nin;
        *nout = s->nout;
    }
    pthread_mutex_unlock(&s->mu);
    return has;
}

int
surge_store_try_put(surge_store *s, int64_t sim, int64_t step, const float *in,
                    const float *out)
{
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    if (!s->has_shape) {
        rc = SURGE_ESTATE;
    } else if (s->ended || s->stopped) {
        rc = SURGE_ECLOSED;
    } else if (s->count == s->nslots) {
        rc = s->kind == SURGE_STORE_KEEP ? -ENOSPC : -EAGAIN;
        s->put_refused++;
        s->producer_refused = 1;
    }
    if (rc != 0) {
        pthread_mutex_unlock(&s->mu);
        return rc;
    }
    /* Copy while holding the lock: consumers only touch slots that are
     * counted, and this slot is not counted yet, but the ring indices must
     * not move under us. The copy is a memcpy of one sample. */
    unsigned char *p = slot(s, s->head + s->count);
    struct slot_head h = {sim, step};
    memcpy(p, &h, sizeof h);
    memcpy(p + sizeof h, in, (size_t)s->nin * 4);
    memcpy(p + sizeof h + (size_t)s->nin * 4, out, (size_t)s->nout * 4);
    s->count++;
    s->puts++;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static void
deadline_after(struct timespec *ts, int timeout_ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += timeout_ms / 1000;
    ts->tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

int
surge_store_get_batch(surge_store *s, uint32_t max, float *in, float *out,
                      int64_t *sims, int64_t *steps, int timeout_ms)
{
    if (max == 0) {
        return -EINVAL;
    }
    struct timespec dl;
    deadline_after(&dl, timeout_ms < 0 ? 0 : timeout_ms);
    pthread_mutex_lock(&s->mu);
    if (s->kind != SURGE_STORE_STREAM) {
        pthread_mutex_unlock(&s->mu);
        return SURGE_ESTATE;
    }
    uint64_t t0 = now_ns();
    while (!s->stopped && s->count == 0 && !s->ended) {
        if (pthread_cond_timedwait(&s->cv, &s->mu, &dl) == ETIMEDOUT) {
            break;
        }
    }
    s->consumer_wait_ns += now_ns() - t0;
    if (s->stopped || (s->count == 0 && s->ended)) {
        pthread_mutex_unlock(&s->mu);
        return SURGE_ECLOSED;
    }
    if (s->count == 0) {
        pthread_mutex_unlock(&s->mu);
        return SURGE_ETIMEDOUT;
    }
    uint32_t n = s->count < max ? (uint32_t)s->count : max;
    for (uint32_t i = 0; i < n; i++) {
        const unsigned char *p = slot(s, s->head + i);
        struct slot_head h;
        memcpy(&h, p, sizeof h);
        if (sims != NULL) {
            sims[i] = h.sim;
        }
        if (steps != NULL) {
            steps[i] = h.step;
        }
        if (in != NULL) {
            memcpy(in + (size_t)i * s->nin, p + sizeof h, (size_t)s->nin * 4);
        }
        if (out != NULL) {
            memcpy(out + (size_t)i * s->nout, p + sizeof h + s->nin * 4,
                   (size_t)s->nout * 4);
        }
    }
    s->head = (s->head + n) % s->nslots;
    s->count -= n;
    s->taken += n;
    s->batches++;
    int notify = s->producer_refused;
    s->producer_refused = 0;
    void (*cb)(void *) = s->space_cb;
    void *arg = s->space_arg;
    pthread_mutex_unlock(&s->mu);
    if (notify && cb != NULL) {
        cb(arg);
    }
    return (int)n;
}

int
surge_store_read(surge_store *s, uint64_t i, float *in, float *out,
                 int64_t *sim, int64_t *step)
{
    pthread_mutex_lock(&s->mu);
    if (!s->has_shape || s->kind != SURGE_STORE_KEEP) {
        pthread_mutex_unlock(&s->mu);
        return SURGE_ESTATE;
    }
    if (i >= s->count) {
        pthread_mutex_unlock(&s->mu);
        return -ERANGE;
    }
    const unsigned char *p = slot(s, s->head + i);
    struct slot_head h;
    memcpy(&h, p, sizeof h);
    if (sim != NULL) {
        *sim = h.sim;
    }
    if (step != NULL) {
        *step = h.step;
    }
    if (in != NULL) {
        memcpy(in, p + sizeof h, (size_t)s->nin * 4);
    }
    if (out != NULL) {
        memcpy(out, p + sizeof h + s->nin * 4, (size_t)s->nout * 4);
    }
    pthread_mutex_unlock(&s->mu);
    return 0;
}

int
surge_store_wait_shape(surge_store *s, int timeout_ms, uint32_t *nin,
                       uint64_t *nout)
{
    struct timespec dl;
    deadline_after(&dl, timeout_ms < 0 ? 0 : timeout_ms);
    pthread_mutex_lock(&s->mu);
    while (!s->has_shape && !s->ended && !s->stopped) {
        if (pthread_cond_timedwait(&s->cv, &s->mu, &dl) == ETIMEDOUT) {
            break;
        }
    }
    int rc;
    if (s->has_shape) {
        *nin = s->nin;
        *nout = s->nout;
        rc = 0;
    } else if (s->ended || s->stopped) {
        rc = SURGE_ECLOSED;
    } else {
        rc = SURGE_ETIMEDOUT;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void
surge_store_end_reception(surge_store *s)
{
    pthread_mutex_lock(&s->mu);
    s->ended = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void
surge_store_stop(surge_store *s)
{
    pthread_mutex_lock(&s->mu);
    s->stopped = 1;
    s->ended = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void
surge_store_get_stats(surge_store *s, surge_store_stats *o)
{
    pthread_mutex_lock(&s->mu);
    o->puts = s->puts;
    o->put_refused = s->put_refused;
    o->taken = s->taken;
    o->batches = s->batches;
    o->occupancy = s->count;
    o->capacity = s->nslots;
    o->bytes = s->count * s->slot_bytes;
    o->consumer_wait_ns = s->consumer_wait_ns;
    o->ended = s->ended;
    pthread_mutex_unlock(&s->mu);
}
