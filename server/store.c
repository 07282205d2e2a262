/*
 * server/store.c - the server's sample stores (see store.h): the training
 * store is the reservoir library with the study's policy; the validation
 * store is a bounded ring of fixed-size slots that keeps its samples. Both
 * allocate their memory once, pre-faulted with huge pages where the kernel
 * allows (surge_huge_alloc: page faults are slow on these machines).
 *
 * Lock order: s->mu, then the reservoir's own lock (only through
 * surge_reservoir_* calls made while holding s->info_mu, never s->mu). The
 * ring is guarded by s->mu; the reservoir pointer is set once under s->mu
 * and never changes after. The space callback runs with no lock held.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <surge/error.h>

#include "common/alloc.h"
#include "common/protocol.h"
#include "common/util.h"
#include "server/store.h"

#define SLOT_ALIGN 64

struct surge_store {
    char name[32];               /* for logs */
    enum surge_store_kind kind;  /* stream (reservoir) or keep (ring) */
    uint64_t capacity_bytes;     /* keep: ring bytes */
    surge_reservoir_config rcfg; /* stream: the reservoir's configuration */
    char err[256];               /* last set_shape failure (producer) */
    pthread_mutex_t mu;          /* guards the fields below */
    pthread_cond_t cv;           /* shape set, end, stop */
    int has_shape;               /* set once */
    uint32_t nin;                /* floats per sample input */
    uint64_t nout;               /* floats per sample output */
    surge_reservoir *res;        /* stream: set with the shape */
    size_t slot_bytes;           /* keep: header + (nin + nout) floats */
    uint64_t nslots;             /* keep: slots in the ring */
    unsigned char *mem;          /* keep: (nslots, slot_bytes) */
    size_t mem_bytes;            /* keep: bytes of mem */
    uint64_t count;              /* keep: samples held */
    int ended;                   /* end of reception */
    int stopped;                 /* stop: gets return ECLOSED at once */
    uint64_t puts, put_refused;  /* keep counters */
    uint64_t kept_evicted;       /* keep: samples removed by evict_sim */
    uint64_t generation;         /* keep: bumped by each evict_sim */
    uint64_t refused;            /* stream: puts refused (policy) */
    pthread_mutex_t info_mu;     /* guards info (one consumer at a time
                                    asks for sims/steps) */
    surge_batch_info *info;      /* stream: (max_batch) row descriptions */
    atomic_int producer_refused; /* a put was refused since the last take */
    void (*space_cb)(void *);    /* set before threads start */
    void *space_arg;
};

struct slot_head {
    int64_t sim;
    int64_t step;
};

int
surge_store_create(surge_store **out, const surge_store_config *cfg)
{
    if (out == NULL || cfg == NULL) {
        return -EINVAL;
    }
    surge_store *s = surge_calloc(1, sizeof *s);
    if (s == NULL) {
        return -ENOMEM;
    }
    snprintf(s->name, sizeof s->name, "%s",
             cfg->name != NULL ? cfg->name : "store");
    s->kind = cfg->kind;
    s->capacity_bytes = cfg->capacity_bytes;
    if (cfg->reservoir != NULL) {
        s->rcfg = *cfg->reservoir;
    } else {
        surge_reservoir_config_init(&s->rcfg);
        s->rcfg.policy = SURGE_RESERVOIR_FIFO;
        s->rcfg.capacity_bytes = (size_t)cfg->capacity_bytes;
    }
    if (s->kind == SURGE_STORE_KEEP && s->capacity_bytes == 0) {
        free(s);
        return -EINVAL;
    }
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        goto fail_mutex;
    }
    if (pthread_mutex_init(&s->info_mu, NULL) != 0) {
        goto fail_info;
    }
    if (surge_cond_init_monotonic(&s->cv) != 0) {
        goto fail_cond;
    }
    *out = s;
    return 0;

fail_cond:
    pthread_mutex_destroy(&s->info_mu);
fail_info:
    pthread_mutex_destroy(&s->mu);
fail_mutex:
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
    surge_reservoir_destroy(&s->res);
    if (s->mem != NULL) {
        surge_huge_free(s->mem, s->mem_bytes);
    }
    free(s->info);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->info_mu);
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

const char *
surge_store_error(const surge_store *s)
{
    return s->err;
}

surge_reservoir *
surge_store_reservoir(surge_store *s)
{
    pthread_mutex_lock(&s->mu);
    surge_reservoir *r = s->res;
    pthread_mutex_unlock(&s->mu);
    return r;
}

static unsigned char *
slot(const surge_store *s, uint64_t i)
{
    return s->mem + (size_t)(i % s->nslots) * s->slot_bytes;
}

/* Allocate the stream store's reservoir for shape (nin, nout). */
static int
shape_stream(surge_store *s, uint32_t nin, uint64_t nout)
{
    surge_reservoir_config c = s->rcfg;
    c.input_dim = nin;
    c.output_dim = (size_t)nout;
    uint64_t slotb = ((uint64_t)nin + nout) * 4;
    slotb = (slotb + SLOT_ALIGN - 1) / SLOT_ALIGN * SLOT_ALIGN;
    if (slotb > c.capacity_bytes) {
        snprintf(s->err, sizeof s->err,
                 "a sample of %llu bytes does not fit in %zu bytes",
                 (unsigned long long)slotb, c.capacity_bytes);
        return SURGE_ELIMIT;
    }
    surge_batch_info *info =
        surge_calloc(c.max_batch > 0 ? c.max_batch : 1, sizeof *info);
    if (info == NULL) {
        return -ENOMEM;
    }
    surge_reservoir *r = NULL;
    int rc = surge_reservoir_create(&r, &c, s->err, sizeof s->err);
    if (rc < 0) {
        free(info);
        return rc;
    }
    pthread_mutex_lock(&s->mu);
    s->res = r;
    s->info = info;
    int stopped = s->stopped, ended = s->ended;
    pthread_mutex_unlock(&s->mu);
    /* An end or stop that came before the shape applies to it too. */
    if (ended) {
        surge_reservoir_end_reception(r);
    }
    if (stopped) {
        surge_reservoir_shutdown(r);
    }
    return 0;
}

/* Allocate the keep store's ring for shape (nin, nout). */
static int
shape_keep(surge_store *s, uint32_t nin, uint64_t nout)
{
    uint64_t raw = sizeof(struct slot_head) + ((uint64_t)nin + nout) * 4;
    uint64_t sb = (raw + SLOT_ALIGN - 1) / SLOT_ALIGN * SLOT_ALIGN;
    uint64_t nslots = s->capacity_bytes / sb;
    if (nslots == 0) {
        snprintf(s->err, sizeof s->err,
                 "a sample of %llu bytes does not fit in %llu bytes",
                 (unsigned long long)sb, (unsigned long long)s->capacity_bytes);
        return SURGE_ELIMIT;
    }
    size_t bytes = (size_t)(nslots * sb);
    unsigned char *mem = surge_huge_alloc_logged(bytes, "store");
    if (mem == NULL) {
        return -ENOMEM;
    }
    pthread_mutex_lock(&s->mu);
    s->mem = mem;
    s->mem_bytes = bytes;
    s->slot_bytes = (size_t)sb;
    s->nslots = nslots;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

int
surge_store_set_storage(surge_store *s, enum surge_reservoir_storage st)
{
    pthread_mutex_lock(&s->mu);
    int ok = s->kind == SURGE_STORE_STREAM && !s->has_shape;
    if (ok) {
        s->rcfg.storage = st;
    }
    pthread_mutex_unlock(&s->mu);
    return ok ? 0 : SURGE_ESTATE;
}

int
surge_store_set_shape(surge_store *s, uint32_t nin, uint64_t nout)
{
    s->err[0] = '\0';
    pthread_mutex_lock(&s->mu);
    if (s->has_shape) {
        int same = s->nin == nin && s->nout == nout;
        pthread_mutex_unlock(&s->mu);
        if (!same) {
            snprintf(s->err, sizeof s->err,
                     "shape (%u, %llu) differs from the first (%u, %llu)", nin,
                     (unsigned long long)nout, s->nin,
                     (unsigned long long)s->nout);
        }
        return same ? 0 : SURGE_EFIELD;
    }
    pthread_mutex_unlock(&s->mu);
    if (nout == 0 ||
        nout > (uint64_t)SURGE_MAX_FIELDS * SURGE_MAX_FIELD_ELEMS ||
        nin > (1u << 20)) {
        snprintf(s->err, sizeof s->err, "sample shape out of range");
        return SURGE_ELIMIT;
    }
    /* Only the producer sets the shape, so allocating unlocked is safe:
     * consumers see has_shape only once everything is in place. */
    int rc = s->kind == SURGE_STORE_STREAM ? shape_stream(s, nin, nout)
                                           : shape_keep(s, nin, nout);
    if (rc < 0) {
        return rc;
    }
    pthread_mutex_lock(&s->mu);
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

static int
put_keep(surge_store *s, int64_t sim, int64_t step, const float *in,
         const float *out)
{
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    if (s->ended || s->stopped) {
        rc = SURGE_ECLOSED;
    } else if (s->count == s->nslots) {
        rc = -ENOSPC;
        s->put_refused++;
    }
    if (rc != 0) {
        pthread_mutex_unlock(&s->mu);
        return rc;
    }
    unsigned char *p = slot(s, s->count);
    struct slot_head h = {sim, step};
    memcpy(p, &h, sizeof h);
    memcpy(p + sizeof h, in, (size_t)s->nin * 4);
    memcpy(p + sizeof h + (size_t)s->nin * 4, out, (size_t)s->nout * 4);
    s->count++;
    s->puts++;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* A stream store's answer to a put (or put_begin) with no wait. */
static int
stream_rc(surge_store *s, int rc)
{
    if (rc == SURGE_ETIMEDOUT) {
        /* Count under the lock-free flag first, so a consumer that takes
         * a batch right now sees it and wakes the producer. */
        atomic_store(&s->producer_refused, 1);
        pthread_mutex_lock(&s->mu);
        s->refused++;
        pthread_mutex_unlock(&s->mu);
        return -EAGAIN;
    }
    if (rc == SURGE_ESTATE) {
        return SURGE_ECLOSED;
    }
    return rc;
}

int
surge_store_try_put(surge_store *s, int64_t sim, int64_t step, const float *in,
                    const float *out)
{
    pthread_mutex_lock(&s->mu);
    int has = s->has_shape;
    surge_reservoir *r = s->res;
    pthread_mutex_unlock(&s->mu);
    if (!has) {
        return SURGE_ESTATE;
    }
    if (s->kind == SURGE_STORE_KEEP) {
        return put_keep(s, sim, step, in, out);
    }
    surge_sample_meta meta = {(uint64_t)sim, (uint64_t)step, 0};
    return stream_rc(s, surge_reservoir_put(r, in, out, &meta, 0));
}

int
surge_store_put_begin(surge_store *s, int64_t sim, int64_t step,
                      surge_reservoir_slot *slot)
{
    pthread_mutex_lock(&s->mu);
    int has = s->has_shape;
    surge_reservoir *r = s->res;
    pthread_mutex_unlock(&s->mu);
    if (!has) {
        return SURGE_ESTATE;
    }
    if (s->kind != SURGE_STORE_STREAM) {
        return -ENOTSUP;
    }
    surge_sample_meta meta = {(uint64_t)sim, (uint64_t)step, 0};
    return stream_rc(s, surge_reservoir_put_begin(r, &meta, 0, slot));
}

int
surge_store_put_commit(surge_store *s, surge_reservoir_slot *slot)
{
    /* The reservoir was set with the shape, before any begin succeeded. */
    return surge_reservoir_put_commit(s->res, slot);
}

void
surge_store_slot_write(surge_store *s, void *dst, const void *src, size_t n)
{
    surge_reservoir_slot_write(s->res, dst, src, n);
}

void
surge_store_put_abort(surge_store *s, surge_reservoir_slot *slot)
{
    surge_reservoir_put_abort(s->res, slot);
}

/* The reservoir of a stream store that knows its sample shape, for a batch
 * of at most max: 0 and *r, SURGE_ECLOSED (stopped before any shape),
 * SURGE_ESTATE (not a stream store, or no shape yet) or -EINVAL (max over
 * the reservoir's max_batch). */
static int
stream_reservoir(surge_store *s, uint32_t max, surge_reservoir **r)
{
    pthread_mutex_lock(&s->mu);
    int has = s->has_shape, stopped = s->stopped;
    *r = s->res;
    pthread_mutex_unlock(&s->mu);
    if (s->kind != SURGE_STORE_STREAM || !has) {
        return stopped ? SURGE_ECLOSED : SURGE_ESTATE;
    }
    if (max > s->rcfg.max_batch) {
        return -EINVAL;
    }
    return 0;
}

/* What a batch call returns once the reservoir gave n: SURGE_ECLOSED for
 * 0, n's error, or n after telling the producers (space_cb) that room was
 * made if a put was refused since the last time. */
static int
batch_done(surge_store *s, long n)
{
    if (n == 0) {
        return SURGE_ECLOSED; /* reception ended and nothing is left */
    }
    if (n < 0) {
        return (int)n;
    }
    if (atomic_exchange(&s->producer_refused, 0) && s->space_cb != NULL) {
        s->space_cb(s->space_arg);
    }
    return (int)n;
}

int
surge_store_get_batch(surge_store *s, uint32_t max, float *in, float *out,
                      int64_t *sims, int64_t *steps, int timeout_ms)
{
    if (max == 0) {
        return -EINVAL;
    }
    surge_reservoir *r = NULL;
    int rc = stream_reservoir(s, max, &r);
    if (rc != 0) {
        return rc;
    }
    long n;
    if (sims != NULL || steps != NULL) {
        pthread_mutex_lock(&s->info_mu);
        n = surge_reservoir_get_batch(r, max, in, out, s->info, timeout_ms);
        for (long i = 0; i < n; i++) {
            if (sims != NULL) {
                sims[i] = (int64_t)s->info[i].sim;
            }
            if (steps != NULL) {
                steps[i] = (int64_t)s->info[i].step;
            }
        }
        pthread_mutex_unlock(&s->info_mu);
    } else {
        n = surge_reservoir_get_batch(r, max, in, out, NULL, timeout_ms);
    }
    return batch_done(s, n);
}

int
surge_store_take_batch(surge_store *s, uint32_t max, uint32_t *slots,
                       int timeout_ms)
{
    if (max == 0 || slots == NULL) {
        return -EINVAL;
    }
    surge_reservoir *r = NULL;
    int rc = stream_reservoir(s, max, &r);
    if (rc != 0) {
        return rc;
    }
    long n = surge_reservoir_get_batch_view(r, max, slots, NULL, NULL, NULL,
                                            timeout_ms);
    if (n > 0) {
        surge_reservoir_release_view(r, slots, (size_t)n);
    }
    return batch_done(s, n);
}

uint64_t
surge_store_evict_sim(surge_store *s, int64_t sim)
{
    uint64_t n = 0;
    pthread_mutex_lock(&s->mu);
    if (s->has_shape && s->kind == SURGE_STORE_KEEP) {
        /* Fill each hole with the last sample: order is not kept. */
        uint64_t i = 0;
        while (i < s->count) {
            struct slot_head h;
            memcpy(&h, slot(s, i), sizeof h);
            if (h.sim != sim) {
                i++;
                continue;
            }
            s->count--;
            if (i < s->count) {
                memcpy(slot(s, i), slot(s, s->count), s->slot_bytes);
            }
            n++;
        }
        if (n > 0) {
            s->kept_evicted += n;
            s->generation++;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return n;
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
    const unsigned char *p = slot(s, i);
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
    surge_deadline_after_ms(&dl, timeout_ms < 0 ? 0 : timeout_ms);
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

int
surge_store_await_shape(surge_store *s, uint32_t *nin, uint64_t *nout)
{
    int rc;
    do {
        rc = surge_store_wait_shape(s, 500, nin, nout);
    } while (rc == SURGE_ETIMEDOUT);
    return rc;
}

void
surge_store_end_reception(surge_store *s)
{
    pthread_mutex_lock(&s->mu);
    s->ended = 1;
    surge_reservoir *r = s->res;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (r != NULL) {
        surge_reservoir_end_reception(r);
    }
}

void
surge_store_stop(surge_store *s)
{
    pthread_mutex_lock(&s->mu);
    s->stopped = 1;
    s->ended = 1;
    surge_reservoir *r = s->res;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (r != NULL) {
        surge_reservoir_shutdown(r);
    }
}

void
surge_store_get_stats(surge_store *s, surge_store_stats *o)
{
    memset(o, 0, sizeof *o);
    pthread_mutex_lock(&s->mu);
    surge_reservoir *r = s->res;
    o->ended = s->ended;
    if (s->kind == SURGE_STORE_KEEP) {
        o->puts = s->puts;
        o->put_refused = s->put_refused;
        o->occupancy = s->count;
        o->capacity = s->nslots;
        o->bytes = s->count * s->slot_bytes;
        o->evicted = s->kept_evicted;
        o->generation = s->generation;
    }
    o->put_refused += s->refused;
    pthread_mutex_unlock(&s->mu);
    if (r != NULL) {
        surge_reservoir_stats st;
        surge_reservoir_get_stats(r, &st);
        o->puts = st.puts;
        o->taken = st.gets;
        o->batches = st.batches;
        o->occupancy = st.occupancy_samples;
        o->capacity = st.capacity_samples;
        o->bytes = st.occupancy_bytes;
        o->evicted = st.evictions;
        o->retired = st.retired;
        o->consumer_wait_ns = (uint64_t)(st.consumer_wait_s * 1e9);
    }
}
