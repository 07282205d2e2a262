/*
 * server/feed.h - how batches reach the trainer: from the training store's
 * reservoir into the trainer's batch buffers, and how long the trainer
 * waited for them (docs/reservoir.md, "Feeding the trainer").
 *
 * Modes:
 *   SYNC      get_batch on the caller's thread, into the caller's buffers
 *             (the CPU trainer: its compute and the gather share cores).
 *   PREFETCH  double buffering: a feed thread gathers batch k+1 into the
 *             second set of buffers (pinned, from the caller's allocator)
 *             while the caller steps on batch k.
 *   DEVICE    storage device: each batch is gathered on the device, into
 *             one of two sets of device buffers (the caller's device
 *             allocator), so a step still reading batch k never sees its
 *             buffers overwritten by batch k+1.
 *
 * A batch is drawn (its rows counted as served by the reservoir) when its
 * gather starts, so a prefetched batch is drawn one step early. The caller
 * that must see nothing drawn and not consumed (a checkpoint, the end of
 * training) asks next() not to prefetch and checks surge_feed_busy().
 *
 * Threads: one caller thread (the consumer's); the PREFETCH feed thread is
 * the feed's own. Errors: 0 or a count, else a negative SURGE_E* / -errno.
 */
#ifndef SURGE_SERVER_FEED_H
#define SURGE_SERVER_FEED_H

#include <stddef.h>
#include <stdint.h>

#include "reservoir/reservoir.h"

typedef struct surge_feed surge_feed;

enum surge_feed_mode {
    SURGE_FEED_SYNC = 0,
    SURGE_FEED_PREFETCH = 1,
    SURGE_FEED_DEVICE = 2
};

/* Memory for the feed's own buffer sets: host memory fit for upload
 * (PREFETCH: the trainer's host_alloc, pinned with CUDA) or device memory
 * (DEVICE). alloc returns zeroed memory or NULL; free takes the same
 * bytes. */
typedef struct surge_feed_alloc {
    void *(*alloc)(void *arg, size_t bytes);
    void (*free)(void *arg, void *p, size_t bytes);
    void *arg;
} surge_feed_alloc;

/* surge_feed_create - a feed of batches of up to B rows of nin inputs and
 * nout outputs from r. x0 (B, nin), y0 (B, nout) and info0 (B) are the
 * caller's buffers: SYNC and PREFETCH use them as the first set (the
 * caller keeps owning them); the second set (PREFETCH) or both (DEVICE,
 * whose x/y are device memory; info stays host memory) come from a.
 * PREFETCH starts the feed thread. SURGE_ESTATE for DEVICE on a host
 * storage reservoir, -ENOMEM, -EINVAL. */
int surge_feed_create(surge_feed **out, surge_reservoir *r,
                      enum surge_feed_mode mode, size_t B, size_t nin,
                      size_t nout, float *x0, float *y0,
                      surge_batch_info *info0, const surge_feed_alloc *a);

/* surge_feed_set_pool - SYNC: gather each batch on pool's threads
 * (common/pool.h: the CPU trainer's, idle while the caller gathers;
 * NULL: the caller alone). Ignored in the other modes, whose gathers run
 * beside the step. The feed does not own pool. */
void surge_feed_set_pool(surge_feed *f, struct surge_pool *pool);

/* surge_feed_set_stream - DEVICE: queue each gather on stream (a
 * cudaStream_t, the trainer's: surge_trainer_stream) instead of waiting
 * for it, so a step queued next on that stream sees the rows and the
 * gather never overwrites a batch an earlier step on it still reads
 * (surge_reservoir_get_batch_device_async). Before the first next(). */
void surge_feed_set_stream(surge_feed *f, void *stream);

/* surge_feed_destroy - stop the feed thread (a gather in flight ends
 * within 200 ms), release the rows of a queued device gather, free the
 * feed's buffers, set *fp to NULL. */
void surge_feed_destroy(surge_feed **fp);

/* surge_feed_next - the next batch: n rows in *x, *y (device pointers in
 * DEVICE mode) and *info, valid until the next call (the previous batch's
 * buffers may be refilled from then on). prefetch: whether to start
 * drawing the batch after this one now (PREFETCH mode; ignored
 * otherwise). Returns as surge_reservoir_get_batch: n > 0, 0 (finished),
 * SURGE_ETIMEDOUT (nothing within timeout_ms; a prefetched draw goes on
 * and the next call picks it up), SURGE_ECLOSED, SURGE_EINTERNAL (DEVICE:
 * a CUDA failure, text in surge_reservoir_device_error). The time spent
 * in the call is counted as time waited for data. */
long surge_feed_next(surge_feed *f, float **x, float **y,
                     surge_batch_info **info, int prefetch, int timeout_ms);

/* surge_feed_busy - 1 when a batch is drawn or being drawn that next()
 * has not returned yet (PREFETCH only), else 0. */
int surge_feed_busy(surge_feed *f);

/* surge_feed_wait_s - total seconds next() spent waiting for data. */
double surge_feed_wait_s(const surge_feed *f);

/* surge_feed_mode_of - the mode f was created with. */
enum surge_feed_mode surge_feed_mode_of(const surge_feed *f);

/* surge_feed_mode_name - "sync", "prefetch" or "device" (static). */
const char *surge_feed_mode_name(enum surge_feed_mode m);

#endif /* SURGE_SERVER_FEED_H */
