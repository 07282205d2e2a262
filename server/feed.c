/*
 * server/feed.c - the trainer's batch feed (see feed.h).
 *
 * DESIGN. Two buffer sets; the caller holds set cur. PREFETCH: next()
 * asks the feed thread to fill set fill = cur ^ 1 (want), waits for ready,
 * then hands that set out (cur = fill) and, when allowed, asks at once for
 * the set the caller just gave back. The feed thread retries
 * get_batch every FETCH_TIMEOUT_MS until it has a result or is stopped,
 * so a timeout of next() never loses a drawn batch: it stays in flight.
 *
 * Lock order: f->mu only; never held while calling into the reservoir.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <surge/error.h>

#include "common/util.h"
#include "server/feed.h"

#define FETCH_TIMEOUT_MS 200

struct surge_feed {
    surge_reservoir *r;
    enum surge_feed_mode mode;
    size_t B, nin, nout;
    float *x[2], *y[2];        /* (B, nin), (B, nout) per set */
    surge_batch_info *info[2]; /* (B) per set */
    int own[2];                /* set allocated by the feed */
    surge_feed_alloc a;        /* for the feed's sets */
    int cur;                   /* the set the caller holds */
    void *stream;              /* DEVICE: the trainer's stream, or NULL */
    struct surge_pool *pool;   /* SYNC: the gather's threads, or NULL */
    double wait_s;             /* time next() waited (caller thread) */
    pthread_t th;              /* PREFETCH: the feed thread */
    int th_started;
    pthread_mutex_t mu; /* guards want, fill, ready, result */
    pthread_cond_t cv;  /* want or stop (thread), ready (caller) */
    int want;           /* a fill of set `fill` is asked for */
    int fill;           /* the set being filled */
    int ready;          /* result holds a finished fill */
    long result;        /* get_batch's return for set fill */
    atomic_int stop;    /* the thread must end */
};

const char *
surge_feed_mode_name(enum surge_feed_mode m)
{
    switch (m) {
    case SURGE_FEED_SYNC:
        return "sync";
    case SURGE_FEED_PREFETCH:
        return "prefetch";
    case SURGE_FEED_DEVICE:
        return "device";
    }
    return "unknown";
}

static void *
feed_thread(void *arg)
{
    surge_feed *f = arg;
    pthread_mutex_lock(&f->mu);
    for (;;) {
        while (!f->want && !atomic_load(&f->stop)) {
            pthread_cond_wait(&f->cv, &f->mu);
        }
        if (atomic_load(&f->stop)) {
            break;
        }
        int j = f->fill;
        pthread_mutex_unlock(&f->mu);
        long n;
        do {
            n = surge_reservoir_get_batch(f->r, f->B, f->x[j], f->y[j],
                                          f->info[j], FETCH_TIMEOUT_MS);
        } while (n == SURGE_ETIMEDOUT && !atomic_load(&f->stop));
        pthread_mutex_lock(&f->mu);
        f->want = 0;
        f->ready = 1;
        f->result = n;
        pthread_cond_broadcast(&f->cv);
    }
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

static int
alloc_set(surge_feed *f, int j, int with_info)
{
    f->x[j] = f->nin > 0 ? f->a.alloc(f->a.arg, f->B * f->nin * 4) : NULL;
    f->y[j] = f->nout > 0 ? f->a.alloc(f->a.arg, f->B * f->nout * 4) : NULL;
    f->own[j] = 1;
    if ((f->nin > 0 && f->x[j] == NULL) || (f->nout > 0 && f->y[j] == NULL)) {
        return -ENOMEM;
    }
    if (with_info) {
        f->info[j] = calloc(f->B, sizeof *f->info[j]);
        if (f->info[j] == NULL) {
            return -ENOMEM;
        }
    }
    return 0;
}

int
surge_feed_create(surge_feed **out, surge_reservoir *r,
                  enum surge_feed_mode mode, size_t B, size_t nin, size_t nout,
                  float *x0, float *y0, surge_batch_info *info0,
                  const surge_feed_alloc *a)
{
    if (out == NULL || r == NULL || B == 0 || info0 == NULL ||
        (mode != SURGE_FEED_SYNC && (a == NULL || a->alloc == NULL))) {
        return -EINVAL;
    }
    if (mode == SURGE_FEED_DEVICE) {
        surge_reservoir_stats st;
        surge_reservoir_get_stats(r, &st);
        if (st.storage != SURGE_RESERVOIR_STORAGE_DEVICE) {
            return SURGE_ESTATE;
        }
    }
    surge_feed *f = calloc(1, sizeof *f);
    if (f == NULL) {
        return -ENOMEM;
    }
    f->r = r;
    f->mode = mode;
    f->B = B;
    f->nin = nin;
    f->nout = nout;
    if (a != NULL) {
        f->a = *a;
    }
    f->info[0] = info0;
    f->cur = 1; /* the first fill goes to set 0 */
    int rc = 0;
    if (mode == SURGE_FEED_DEVICE) {
        rc = alloc_set(f, 0, 0);
        if (rc == 0) {
            rc = alloc_set(f, 1, 1);
        }
    } else {
        f->x[0] = x0;
        f->y[0] = y0;
        if (mode == SURGE_FEED_PREFETCH) {
            rc = alloc_set(f, 1, 1);
        }
    }
    if (rc == 0 && pthread_mutex_init(&f->mu, NULL) != 0) {
        rc = -ENOMEM;
    } else if (rc == 0 && surge_cond_init_monotonic(&f->cv) != 0) {
        pthread_mutex_destroy(&f->mu);
        rc = -ENOMEM;
    }
    if (rc != 0) {
        f->th_started = -1; /* no mutex, no condition to destroy */
        surge_feed_destroy(&f);
        return rc;
    }
    if (mode == SURGE_FEED_PREFETCH) {
        if (pthread_create(&f->th, NULL, feed_thread, f) != 0) {
            surge_feed_destroy(&f);
            return -EAGAIN;
        }
        f->th_started = 1;
    }
    *out = f;
    return 0;
}

void
surge_feed_destroy(surge_feed **fp)
{
    if (fp == NULL || *fp == NULL) {
        return;
    }
    surge_feed *f = *fp;
    if (f->mode == SURGE_FEED_DEVICE) {
        (void)surge_reservoir_device_release(f->r);
    }
    if (f->th_started == 1) {
        pthread_mutex_lock(&f->mu);
        atomic_store(&f->stop, 1);
        pthread_cond_broadcast(&f->cv);
        pthread_mutex_unlock(&f->mu);
        pthread_join(f->th, NULL);
    }
    if (f->th_started != -1) {
        pthread_cond_destroy(&f->cv);
        pthread_mutex_destroy(&f->mu);
    }
    for (int j = 0; j < 2; j++) {
        if (f->own[j]) {
            if (f->x[j] != NULL) {
                f->a.free(f->a.arg, f->x[j], f->B * f->nin * 4);
            }
            if (f->y[j] != NULL) {
                f->a.free(f->a.arg, f->y[j], f->B * f->nout * 4);
            }
            if (j == 1) {
                free(f->info[1]); /* set 0's info is the caller's */
            }
        }
    }
    free(f);
    *fp = NULL;
}

static long
next_prefetch(surge_feed *f, int prefetch, int timeout_ms)
{
    pthread_mutex_lock(&f->mu);
    if (!f->want && !f->ready) {
        f->fill = f->cur ^ 1;
        f->want = 1;
        pthread_cond_broadcast(&f->cv);
    }
    if (!f->ready && timeout_ms < 0) {
        while (!f->ready) {
            pthread_cond_wait(&f->cv, &f->mu);
        }
    } else if (!f->ready) {
        struct timespec dl;
        surge_deadline_after_ms(&dl, timeout_ms);
        while (!f->ready) {
            if (pthread_cond_timedwait(&f->cv, &f->mu, &dl) == ETIMEDOUT) {
                break;
            }
        }
    }
    if (!f->ready) {
        pthread_mutex_unlock(&f->mu);
        return SURGE_ETIMEDOUT;
    }
    f->ready = 0;
    long n = f->result;
    f->cur = f->fill;
    if (n > 0 && prefetch) {
        f->fill = f->cur ^ 1;
        f->want = 1;
        pthread_cond_broadcast(&f->cv);
    }
    pthread_mutex_unlock(&f->mu);
    return n;
}

long
surge_feed_next(surge_feed *f, float **x, float **y, surge_batch_info **info,
                int prefetch, int timeout_ms)
{
    uint64_t t0 = surge_now_ns();
    long n;
    switch (f->mode) {
    case SURGE_FEED_PREFETCH:
        n = next_prefetch(f, prefetch, timeout_ms);
        break;
    case SURGE_FEED_DEVICE:
        /* Alternate the device sets: the step on the last batch may
         * still be reading its set. */
        f->cur ^= 1;
        if (f->stream != NULL) {
            n = surge_reservoir_get_batch_device_async(f->r, f->B, f->x[f->cur],
                                                       f->y[f->cur], f->info[0],
                                                       timeout_ms, f->stream);
        } else {
            n = surge_reservoir_get_batch_device(
                f->r, f->B, f->x[f->cur], f->y[f->cur], f->info[0], timeout_ms);
        }
        break;
    default:
        f->cur = 0;
        n = surge_reservoir_get_batch_pool(f->r, f->B, f->x[0], f->y[0],
                                           f->info[0], timeout_ms, f->pool);
        break;
    }
    f->wait_s += (double)(surge_now_ns() - t0) * 1e-9;
    *x = f->x[f->cur];
    *y = f->y[f->cur];
    *info = f->mode == SURGE_FEED_DEVICE ? f->info[0] : f->info[f->cur];
    return n;
}

void
surge_feed_set_pool(surge_feed *f, struct surge_pool *pool)
{
    if (f->mode == SURGE_FEED_SYNC) {
        f->pool = pool;
    }
}

int
surge_feed_busy(surge_feed *f)
{
    if (f->mode != SURGE_FEED_PREFETCH) {
        return 0;
    }
    pthread_mutex_lock(&f->mu);
    int busy = f->want || f->ready;
    pthread_mutex_unlock(&f->mu);
    return busy;
}

void
surge_feed_set_stream(surge_feed *f, void *stream)
{
    f->stream = stream;
}

enum surge_feed_mode
surge_feed_mode_of(const surge_feed *f)
{
    return f->mode;
}

double
surge_feed_wait_s(const surge_feed *f)
{
    return f->wait_s;
}
