/*
 * server/consumer.h - the consumer slot of the server: what drains the
 * training store (the trainer, later) behind one table of operations.
 *
 * DESIGN. The server starts one consumer thread before its loop runs and
 * calls ops->run on it. run takes batches from ctx->train with
 * surge_store_get_batch() (and may read ctx->validation with
 * surge_store_read()) until the store returns SURGE_ECLOSED: that happens
 * when reception has ended and the store is drained, or at once when the
 * server stops (surge_store_stop). The server learns that run returned
 * and finishes. The sample shape is known only after the first hello:
 * wait for it with surge_store_wait_shape() (it returns SURGE_ECLOSED if
 * the server stops before any simulation came).
 *
 * A trainer plugs in by providing its own surge_consumer_ops (create from
 * the server options, run, stats, destroy, optionally prepare) and adding
 * it to the table in consumer.c; --consumer NAME picks it.
 *
 * Threads: create and destroy run on the main thread, run on the consumer
 * thread, stats on the I/O thread while run is running (so what stats
 * reads must be atomic or locked).
 */
#ifndef SURGE_SERVER_CONSUMER_H
#define SURGE_SERVER_CONSUMER_H

#include <stdint.h>

#include <jansson.h>

#include "monitor/metrics.h"
#include "server/options.h"
#include "server/store.h"

struct json_t;      /* jansson's json_t */
struct surge_ranks; /* server/ranks.h */

/* What a consumer's io_call function may read on the I/O thread. */
typedef struct surge_consumer_io_view {
    /* export_assembled - cb(cb_arg, sim, step) for every step assembled so
     * far that reached a store (surge_ingest_export_assembled). */
    int (*export_assembled)(void *io, int (*cb)(void *, int64_t, int64_t),
                            void *cb_arg);
    /* export_finished - cb(cb_arg, sim) for every simulation finished with
     * all it sent in a store (surge_ingest_export_finished). */
    int (*export_finished)(void *io, int (*cb)(void *, int64_t), void *cb_arg);
    /* export_counts - the slices, steps and samples counters (as in
     * server-stats.json) of what a checkpoint taken now holds, as a new
     * jansson object in *out (the caller owns it). 0 or <0. */
    int (*export_counts)(void *io, struct json_t **out);
    void *io;
} surge_consumer_io_view;

typedef int (*surge_consumer_io_fn)(void *arg,
                                    const surge_consumer_io_view *view);

typedef struct surge_consumer_ctx {
    surge_store *train;      /* stream store: take batches */
    surge_store *validation; /* keep store: read samples; may be NULL */
    const surge_server_options *opts;
    /* ranks - this process's place in the server's MPI job
     * (server/ranks.h): rank, R, and the communicator the consumer thread
     * alone may use (ranks->train). surge serve always sets it (R = 1
     * without MPI); a consumer run outside the server (unit tests,
     * benchmarks) may get NULL, which means one rank. */
    const struct surge_ranks *ranks;
    surge_metrics *metrics; /* the monitoring registry, NULL with --http
                               off: a trainer registers its metrics here
                               (surge_trainer_loss, ... in metrics.h) and
                               posts the field preview; thread-safe;
                               valid until run returns */
    /* io_call - run fn(fn_arg, view) on the I/O thread between two
     * messages: nothing is put into the stores while fn runs, so what fn
     * reads there and through view is one consistent snapshot (a
     * checkpoint). Waits at most timeout_ms for fn to start; once started
     * it waits for fn to end. Returns fn's return, SURGE_ETIMEDOUT (fn did
     * not run and never will) or SURGE_ECLOSED (the loop is closing).
     * Consumer thread; one call at a time. */
    int (*io_call)(void *io, surge_consumer_io_fn fn, void *fn_arg,
                   int timeout_ms);
    void *io;
    /* output_fields - the output vector's fields as JSON
     * (surge_ingest_output_fields), NULL before the first simulation was
     * welcomed; safe to call from the consumer thread once it has taken a
     * sample. May be NULL itself (no ingest, e.g. in tests). */
    const char *(*output_fields)(void *io);
} surge_consumer_ctx;

/* What a consumer may do before any thread runs (surge serve --resume):
 * set the store shape and load the reservoir state, and tell ingest which
 * steps an earlier server already assembled. */
typedef struct surge_consumer_prep {
    surge_store *train;      /* shape not set yet */
    surge_store *validation; /* may be NULL */
    /* mark_assembled - (sim, step) was assembled by an earlier server:
     * refuse it when a rerun sends it again. 0 or <0. */
    int (*mark_assembled)(void *arg, int64_t sim, int64_t step);
    void *arg;
} surge_consumer_prep;

typedef struct surge_consumer_stats {
    uint64_t batches; /* batches consumed */
    uint64_t samples; /* samples consumed */
} surge_consumer_stats;

typedef struct surge_consumer_ops {
    const char *name;
    /* create - allocate the consumer's state into *state. 0 or <0. */
    int (*create)(void **state, const surge_server_options *o);
    /* run - consume until the training store says SURGE_ECLOSED. Returns 0
     * or a negative code (logged; the server then stops). */
    int (*run)(void *state, const surge_consumer_ctx *ctx);
    /* stats - what has been consumed so far (any thread). */
    void (*stats)(void *state, surge_consumer_stats *out);
    /* destroy - free state (NULL is a no-op). */
    void (*destroy)(void *state);
    /* prepare - optional (NULL): called once on the main thread after
     * create, before the loop and the consumer thread start. 0 or <0
     * (the server does not start). */
    int (*prepare)(void *state, const surge_consumer_prep *prep);
    /* info - optional (NULL): add the consumer's own keys to obj, which
     * becomes server.json (after prepare) or server-stats.json (any
     * thread: what it reads must be locked). */
    void (*info)(void *state, json_t *obj);
} surge_consumer_ops;

/* surge_train_checkpoint_progress - the progress object that the trainer
 * consumer keeps in its checkpoints (counters, "study_id", "sims_finished":
 * the runs the checkpoint holds whole) into *out (a jansson object; the
 * caller owns it). 0, or <0 with err: not a readable checkpoint of the
 * server's trainer. Any thread. */
int surge_train_checkpoint_progress(const char *path, struct json_t **out,
                                    char *err, size_t errlen);

/* surge_train_counts_add - add the integer leaves of the object add into
 * the object into, key by key, recursing into objects (counters that a
 * checkpoint carries: server_counts, trainer.json's carried_counts).
 * add NULL is a no-op. 0, SURGE_EPROTO (not objects, or a key that is a
 * number in one and not in the other) or -ENOMEM. */
int surge_train_counts_add(struct json_t *into, struct json_t *add);

/* surge_consumer_find - the consumer called name, or NULL. */
const surge_consumer_ops *surge_consumer_find(const char *name);

/* The "discard" consumer: takes batches of opts->batch_size, gathered into
 * its own buffers (allocated once, pre-faulted) as a trainer would, counts
 * them, optionally sleeps opts->consumer_delay_ms per batch (a slow
 * trainer). */
extern const surge_consumer_ops surge_consumer_discard;
/* The "count" consumer: the same, but takes each batch with
 * surge_store_take_batch: the same policy, counts and uses, no copy. It
 * measures ingest without the trainer's gather. */
extern const surge_consumer_ops surge_consumer_count;
/* The "trainer" consumer (server/train.c): trains the surrogate. */
extern const surge_consumer_ops surge_consumer_trainer;
/* The "writer" consumer (server/writer.c): appends every sample to
 * <output_dir>/samples.f32, as an offline pipeline would (benchmarks). */
extern const surge_consumer_ops surge_consumer_writer;

/* The "external" consumer (server/external.c): serves batches to trainers
 * in other processes (surge.torch) over ZeroMQ; docs/protocol.md. */
extern const surge_consumer_ops surge_consumer_external;

/* surge_external_checkpoint_progress - the progress object of the external
 * consumer's checkpoint at path ("study_id", "sims_finished",
 * "server_counts") into *out (the caller owns it). 0, or <0 with err: not
 * a readable checkpoint of the external consumer. Any thread. */
int surge_external_checkpoint_progress(const char *path, struct json_t **out,
                                       char *err, size_t errlen);

#endif /* SURGE_SERVER_CONSUMER_H */
