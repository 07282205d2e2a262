/*
 * server/store.h - the server's sample stores: where assembled samples go
 * and where the consumer (the trainer slot) takes them from.
 *
 * DESIGN. This is the one boundary between ingest and training. The I/O
 * thread puts with surge_store_try_put(), which never blocks: when the
 * store's policy makes a put wait it returns -EAGAIN and the I/O thread
 * stops reading its socket until a consumer frees space (backpressure, never
 * loss). Consumers take batches with surge_store_get_batch(), which blocks
 * with a timeout. Two kinds:
 *   - a "stream" store, the training store: the reservoir library
 *     (reservoir/reservoir.h) with the policy and options of the server's
 *     options (fifo, firo, reservoir; watermark, rate limiter, ...);
 *     consumers that need more than batches (per-row info, priorities) use
 *     surge_store_reservoir() directly;
 *   - a "keep" store, the validation store: a bounded ring whose samples
 *     stay and are read by index; a full keep store refuses puts with
 *     -ENOSPC (the server counts them as dropped, "validation_full").
 *
 * Sample shape: every sample of a study has the same input size nin
 * (parameters + time) and output size nout (the fields concatenated). The
 * shape is fixed by the first surge_store_set_shape() call (the first
 * simulation's hello); memory (capacity bytes) is allocated and pre-faulted
 * then, once.
 *
 * Threads: one producer thread (the I/O thread) and any number of consumer
 * threads. Lock order: the store's one mutex is a leaf (no other lock is
 * taken while holding it; the space callback runs without it).
 */
#ifndef SURGE_SERVER_STORE_H
#define SURGE_SERVER_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "reservoir/reservoir.h"

typedef struct surge_store surge_store;

enum surge_store_kind {
    SURGE_STORE_STREAM = 0, /* the reservoir, with a policy */
    SURGE_STORE_KEEP = 1    /* validation: samples stay, read by index */
};

typedef struct surge_store_config {
    const char *name; /* for logs and stats ("train", ...) */
    enum surge_store_kind kind;
    uint64_t capacity_bytes; /* keep store: bytes of sample slots (a stream
                                store takes reservoir->capacity_bytes) */
    const surge_reservoir_config *reservoir; /* stream store: policy and
                                options, copied; NULL = fifo defaults with
                                capacity_bytes. input_dim and output_dim
                                are set by surge_store_set_shape(). */
} surge_store_config;

typedef struct surge_store_stats {
    uint64_t puts;             /* samples stored */
    uint64_t put_refused;      /* try_put calls refused (the policy said
                                  wait, or full) */
    uint64_t taken;            /* rows handed to consumers (a sample served
                                  twice counts twice) */
    uint64_t batches;          /* get_batch calls that returned samples */
    uint64_t occupancy;        /* samples held now */
    uint64_t capacity;         /* slots (0 before the shape is set) */
    uint64_t bytes;            /* bytes held now */
    uint64_t evicted;          /* stream: used samples removed for room;
                                  keep: samples removed by evict_sim */
    uint64_t generation;       /* keep: evict_sim calls that removed
                                  something; a reader that copied samples
                                  by index copies again when it changes */
    uint64_t retired;          /* stream: removed after their last allowed
                                  use; puts = occupancy + evicted + retired */
    uint64_t consumer_wait_ns; /* time consumers blocked */
    int ended;                 /* end of reception was signalled */
} surge_store_stats;

/* surge_store_create - a store with no shape yet. 0, -EINVAL, -ENOMEM. */
int surge_store_create(surge_store **out, const surge_store_config *cfg);
/* surge_store_destroy - free everything; no thread may use it any more.
 * Sets *s to NULL; NULL is a no-op. */
void surge_store_destroy(surge_store **s);

/* surge_store_set_shape - fix the sample shape and allocate the slots (the
 * reservoir for a stream store) on the first call, or check a later shape
 * against it. Returns 0; SURGE_EFIELD (shape differs from the first one);
 * SURGE_ELIMIT (one sample is larger than the capacity); SURGE_ECONFIG (the
 * reservoir refused its configuration for this shape:
 * surge_store_error() says which option and why); -ENOMEM. Producer
 * thread. */
int surge_store_set_shape(surge_store *s, uint32_t nin, uint64_t nout);
/* surge_store_set_storage - where a stream store's reservoir will keep its
 * samples (surge_reservoir_config.storage). Before the shape is set (main
 * thread, before other threads start): 0; SURGE_ESTATE once the shape is
 * set or for a keep store. */
int surge_store_set_storage(surge_store *s, enum surge_reservoir_storage st);
/* surge_store_error - the detail of the last set_shape failure ("" when
 * none). Producer thread. */
const char *surge_store_error(const surge_store *s);
/* surge_store_reservoir - the reservoir of a stream store once its shape
 * is set, else NULL (keep store: always NULL). For consumers that need
 * surge_reservoir_get_batch's per-row info or priority updates; the store
 * keeps ownership. Any thread. */
surge_reservoir *surge_store_reservoir(surge_store *s);
/* surge_store_shape - 1 and the shape when set, else 0. Any thread. */
int surge_store_shape(surge_store *s, uint32_t *nin, uint64_t *nout);

/* surge_store_try_put - copy one sample in (in: (nin), out: (nout)).
 * Never blocks. 0; -EAGAIN when the stream store's policy makes the put
 * wait (full with nothing evictable, or the rate limiter; retry later);
 * -ENOSPC when a keep store is full (it never frees space); SURGE_ESTATE
 * when no shape is set; SURGE_ECLOSED after end of reception/stop. */
int surge_store_try_put(surge_store *s, int64_t sim, int64_t step,
                        const float *in, const float *out);

/* surge_store_put_begin - the in-place put of a stream store (no extra
 * copy): reserve a slot without waiting and fill *slot with where the
 * producer writes the sample (slot->input: (nin) floats, slot->output:
 * (nout) floats), then end it with exactly one surge_store_put_commit() or
 * surge_store_put_abort(), without returning to the event loop in between
 * (a reservation held while reading pauses could starve the consumer: see
 * docs/architecture.md). Returns what try_put would: 0; -EAGAIN (counted
 * as refused; the space callback fires when room comes); SURGE_ESTATE (no
 * shape); SURGE_ECLOSED; and -ENOTSUP on a keep store (use try_put).
 * Producer thread. */
int surge_store_put_begin(surge_store *s, int64_t sim, int64_t step,
                          surge_reservoir_slot *slot);
/* surge_store_slot_write - copy n bytes into the reserved slot at dst
 * (surge_reservoir_slot_write: streaming stores for large copies). */
void surge_store_slot_write(surge_store *s, void *dst, const void *src,
                            size_t n);
/* surge_store_put_commit - store the sample written into *slot: 0;
 * SURGE_ECLOSED when the store was stopped meanwhile (nothing stored);
 * -EINVAL when *slot is not an open reservation. */
int surge_store_put_commit(surge_store *s, surge_reservoir_slot *slot);
/* surge_store_put_abort - give the reserved slot back, nothing stored. */
void surge_store_put_abort(surge_store *s, surge_reservoir_slot *slot);

/* surge_store_get_batch - a batch of max rows chosen by the policy (max <=
 * the reservoir's max_batch; fewer only while draining after end of
 * reception) from a stream store into in (max, nin), out (max, nout), sims
 * and steps (max; either may be NULL). Waits at most timeout_ms. Returns the
 * number of rows (> 0), SURGE_ETIMEDOUT, SURGE_ECLOSED when reception ended
 * and the policy has nothing left to serve (or the store was stopped),
 * SURGE_ESTATE on a keep store or before the shape is set, -EINVAL for a
 * bad max. Consumer threads. */
int surge_store_get_batch(surge_store *s, uint32_t max, float *in, float *out,
                          int64_t *sims, int64_t *steps, int timeout_ms);

/* surge_store_take_batch - take a batch exactly as surge_store_get_batch
 * does (policy, waiting, counts, uses, return values) but copy nothing:
 * the rows are served and released at once (surge_reservoir_get_batch_view
 * + release_view). For a consumer that only counts samples; slots is
 * caller scratch of max entries. Consumer threads. */
int surge_store_take_batch(surge_store *s, uint32_t max, uint32_t *slots,
                           int timeout_ms);

/* surge_store_evict_sim - keep store: remove every sample of simulation
 * sim, to make room for another held-out run (server/ingest.c keeps a
 * sample of whole runs). The last samples move into the holes, so indices
 * change: the generation (stats) goes up. Returns the samples removed (0
 * for a stream store). Producer thread. */
uint64_t surge_store_evict_sim(surge_store *s, int64_t sim);

/* surge_store_read - copy sample i (0..occupancy-1) of a keep store.
 * 0, -ERANGE, SURGE_ESTATE. Any thread. */
int surge_store_read(surge_store *s, uint64_t i, float *in, float *out,
                     int64_t *sim, int64_t *step);

/* surge_store_wait_shape - block up to timeout_ms until the shape is set.
 * 0 (shape in *nin, *nout), SURGE_ETIMEDOUT, SURGE_ECLOSED (ended or
 * stopped without any sample shape). Consumer threads. */
int surge_store_wait_shape(surge_store *s, int timeout_ms, uint32_t *nin,
                           uint64_t *nout);

/* surge_store_await_shape - surge_store_wait_shape without a timeout (it
 * waits in turns of 500 ms, so a stop is seen within one): what a consumer
 * does before its first batch. 0 (shape in *nin, *nout), SURGE_ECLOSED or
 * another negative error. Consumer threads. */
int surge_store_await_shape(surge_store *s, uint32_t *nin, uint64_t *nout);

/* surge_store_end_reception - no more puts will come: consumers drain what
 * is left, then get SURGE_ECLOSED. Any thread. */
void surge_store_end_reception(surge_store *s);
/* surge_store_stop - wake every waiter; from now on gets return
 * SURGE_ECLOSED at once even if samples remain (they are counted as
 * occupancy in the stats). Any thread. */
void surge_store_stop(surge_store *s);

/* surge_store_set_space_cb - cb(arg) is called by a consumer, with no lock
 * held, after it took samples from a store that had refused a put; the
 * server passes a function that calls uv_async_send. Set before threads
 * start. */
void surge_store_set_space_cb(surge_store *s, void (*cb)(void *), void *arg);

/* surge_store_get_stats - a consistent snapshot. Any thread. */
void surge_store_get_stats(surge_store *s, surge_store_stats *out);

#endif /* SURGE_SERVER_STORE_H */
