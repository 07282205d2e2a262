/*
 * server/consumer.c - the consumer table and the "discard" and "count"
 * consumers (stand-ins for a trainer that take every batch and count it;
 * discard gathers each batch into its buffers as a trainer does, count
 * copies nothing).
 */
#include "config.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <surge/error.h>

#include "common/log.h"
#include "common/util.h"
#include "server/consumer.h"

struct discard {
    int gather;               /* copy each batch out (discard) or not (count) */
    uint32_t batch;           /* samples per batch */
    double delay_ms;          /* sleep per batch */
    _Atomic uint64_t batches; /* written by the consumer thread */
    _Atomic uint64_t samples;
};

static int
create(void **state, const surge_server_options *o, int gather)
{
    struct discard *d = calloc(1, sizeof *d);
    if (d == NULL) {
        return -ENOMEM;
    }
    d->gather = gather;
    d->batch = o->batch_size;
    d->delay_ms = o->consumer_delay_ms;
    *state = d;
    return 0;
}

static int
discard_create(void **state, const surge_server_options *o)
{
    return create(state, o, 1);
}

static int
count_create(void **state, const surge_server_options *o)
{
    return create(state, o, 0);
}

static int
discard_run(void *state, const surge_consumer_ctx *ctx)
{
    struct discard *d = state;
    uint32_t nin;
    uint64_t nout;
    int rc = surge_store_await_shape(ctx->train, &nin, &nout);
    if (rc == SURGE_ECLOSED) {
        return 0;
    }
    /* One allocation for the whole run, pre-faulted with huge pages (a
     * trainer gathers into the same kind of buffers): a batch of 64
     * samples of 8 MiB is 512 MiB, and first-touch page faults at 4 KiB
     * would cost more than the gather itself on these machines. */
    size_t in_bytes = d->gather ? (size_t)d->batch * nin * sizeof(float) : 0;
    size_t out_bytes = d->gather
                           ? (size_t)d->batch * nout * sizeof(float)
                           : (size_t)d->batch * sizeof(uint32_t); /* slot ids */
    float *in = d->gather ? surge_huge_alloc(in_bytes) : NULL;
    float *out = surge_huge_alloc(out_bytes);
    if ((d->gather && in == NULL) || out == NULL) {
        surge_huge_free(in, in_bytes);
        surge_huge_free(out, out_bytes);
        return -ENOMEM;
    }
    for (;;) {
        if (d->gather) {
            rc = surge_store_get_batch(ctx->train, d->batch, in, out, NULL,
                                       NULL, 500);
        } else {
            rc = surge_store_take_batch(ctx->train, d->batch, (uint32_t *)out,
                                        500);
        }
        if (rc == SURGE_ETIMEDOUT) {
            continue;
        }
        if (rc < 0) {
            break;
        }
        atomic_fetch_add(&d->batches, 1);
        atomic_fetch_add(&d->samples, (uint64_t)rc);
        if (d->delay_ms > 0) {
            struct timespec ts;
            ts.tv_sec = (time_t)(d->delay_ms / 1000.0);
            ts.tv_nsec = (long)((d->delay_ms - ts.tv_sec * 1000.0) * 1e6);
            while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
            }
        }
    }
    surge_huge_free(in, in_bytes);
    surge_huge_free(out, out_bytes);
    return rc == SURGE_ECLOSED ? 0 : rc;
}

static void
discard_stats(void *state, surge_consumer_stats *out)
{
    struct discard *d = state;
    out->batches = atomic_load(&d->batches);
    out->samples = atomic_load(&d->samples);
}

static void
discard_destroy(void *state)
{
    free(state);
}

const surge_consumer_ops surge_consumer_discard = {.name = "discard",
                                                   .create = discard_create,
                                                   .run = discard_run,
                                                   .stats = discard_stats,
                                                   .destroy = discard_destroy};

const surge_consumer_ops surge_consumer_count = {.name = "count",
                                                 .create = count_create,
                                                 .run = discard_run,
                                                 .stats = discard_stats,
                                                 .destroy = discard_destroy};

static const surge_consumer_ops *const consumers[] = {
    &surge_consumer_discard, &surge_consumer_count,    &surge_consumer_trainer,
    &surge_consumer_writer,  &surge_consumer_external,
};

const surge_consumer_ops *
surge_consumer_find(const char *name)
{
    for (size_t i = 0; i < sizeof consumers / sizeof consumers[0]; i++) {
        if (strcmp(consumers[i]->name, name) == 0) {
            return consumers[i];
        }
    }
    return NULL;
}
