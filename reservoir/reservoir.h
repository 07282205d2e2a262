/*
 * reservoir/reservoir.h - the sample buffer between ingest and training.
 *
 * A reservoir holds complete samples (one simulation time step: an input
 * vector of input_dim floats and an output vector of output_dim floats) in
 * fixed-size slots of one memory pool that is allocated once at creation,
 * pre-faulted and backed by huge pages where the kernel allows. A producer
 * (the server's I/O thread) puts samples one at a time; consumers (trainer
 * threads) get batches gathered straight into their own contiguous arrays.
 * A policy decides which samples a batch takes, how often a sample may be
 * used, when a put must wait and which sample leaves to make room.
 *
 * Policies (docs/reservoir.md has the full rules):
 *   FIFO       a batch takes the oldest samples; each is used once.
 *   FIRO       a batch takes samples drawn uniformly at random, distinct
 *              within the batch; each is used `epochs` times, then removed.
 *   RESERVOIR  (Melissa / SC'23) batches are served once occupancy reaches
 *              the watermark; draws are uniform with replacement; a put into
 *              a full reservoir evicts a random sample already used at least
 *              once; when none has been used the put waits. Unseen data is
 *              never dropped.
 * Options on top (valid combinations are checked by create):
 *   max_uses      (RESERVOIR) a sample is removed after this many uses.
 *   rate          (RESERVOIR) samples-per-insert rate limiter with Reverb's
 *                 bounds: the side that runs ahead waits; neither deadlocks.
 *   balance_sims  (FIRO, RESERVOIR) each batch spreads over as many distinct
 *                 simulations as are present, evenly.
 *   prioritized   (FIRO, RESERVOIR) draws proportional to priority^alpha,
 *                 priority from the per-sample loss the trainer reports,
 *                 importance weights with exponent beta; a sum tree, O(log n).
 *
 * Storage (docs/reservoir.md, "Storage"): the pool is host memory; with
 * storage device (a CUDA build) a copy of it lives on a CUDA device too:
 * each sample is uploaded once, in batches, and get_batch_device gathers
 * a batch there. Policies, counts and checkpoints are the same either way.
 *
 * End of reception (surge_reservoir_end_reception): no more puts, and every
 * policy drains so that a study always ends. The watermark and the rate
 * limiter no longer apply and batches may come back short (1..B rows):
 *   FIFO       serves what is left, oldest first;
 *   FIRO       keeps its rule: every sample still present gets its remaining
 *              uses (epochs), distinct within a batch;
 *   RESERVOIR  serves every sample still present exactly once more, drawn
 *              without replacement (uniform, balanced or by priority), and
 *              removes it.
 * Once nothing is left get_batch returns 0: the reservoir is finished.
 *
 * Threads: every function is thread-safe unless it says otherwise. Designed
 * for one producer and one or more consumers; several producers also work.
 * The bulk copies of put and get_batch run outside the reservoir's lock (the
 * slots involved are reserved or pinned), so a consumer copying a batch
 * never stalls the producer's bookkeeping and vice versa. No thread of its
 * own, no I/O, no logging on the hot path.
 *
 * Blocking: put and get_batch wait at most timeout_ms milliseconds (0 = try
 * once and return at once; -1 = no time limit, only shutdown ends the wait).
 * surge_reservoir_shutdown() wakes every waiter with SURGE_ECLOSED.
 *
 * Errors: 0 or a count on success, otherwise a negative SURGE_E* code from
 * <surge/error.h> or -errno. Nothing is ever lost on an error: a put that
 * fails stored nothing and can be retried; a get that fails used nothing.
 */
#ifndef SURGE_RESERVOIR_H
#define SURGE_RESERVOIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <surge/error.h>

#include "common/keytab.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct surge_reservoir surge_reservoir;
struct surge_pool; /* common/pool.h */

enum surge_reservoir_policy {
    SURGE_RESERVOIR_FIFO = 0,     /* oldest first, each used once */
    SURGE_RESERVOIR_FIRO = 1,     /* random, each used `epochs` times */
    SURGE_RESERVOIR_RESERVOIR = 2 /* watermark, with replacement, evict used */
};

/* Where the samples live (docs/reservoir.md, "Storage"). */
enum surge_reservoir_storage {
    SURGE_RESERVOIR_STORAGE_HOST = 0,  /* host memory only; batches are
                                          gathered into the caller's host
                                          arrays */
    SURGE_RESERVOIR_STORAGE_DEVICE = 1 /* host memory plus a copy of every
                                          sample on a CUDA device, uploaded
                                          once; get_batch_device gathers
                                          there */
};

/* Buckets of the times-used histograms: bucket i counts samples used i
 * times, the last bucket those used SURGE_RESERVOIR_USES_BUCKETS-1 times or
 * more. */
#define SURGE_RESERVOIR_USES_BUCKETS 16

/* Configuration. Fill it with surge_reservoir_config_init(), then change
 * what you need. The names in comments are the study file's keys that the
 * error messages of surge_reservoir_create() use. */
typedef struct surge_reservoir_config {
    enum surge_reservoir_policy policy; /* reservoir.policy; default RESERVOIR*/
    size_t capacity_bytes; /* reservoir.capacity_bytes: size of the sample
                              pool; slots = capacity_bytes / slot size, where
                              the slot size is the sample size rounded up to
                              64 bytes. Default 1 GiB. */
    size_t input_dim;      /* reservoir.input_dim: floats per sample input
                              (parameters + time); no default (0 = unset) */
    size_t output_dim;     /* reservoir.output_dim: floats per sample output
                              (the fields); no default; input_dim +
                              output_dim must be >= 1 */
    size_t max_batch;      /* reservoir.max_batch: the largest B any
                              get_batch call passes; FIFO and FIRO need at
                              least this many slots; the rate limiter's
                              window is checked against it. Default 256. */
    size_t watermark;      /* reservoir.watermark: samples present before the
                              first batch is served (until end of reception).
                              RESERVOIR: default 0 means max_batch (capped to
                              the capacity). FIFO/FIRO always wait for B
                              samples; a larger watermark delays the start.
                              Must be <= capacity in samples. */
    uint64_t seed;         /* reservoir.seed: seeds every random draw;
                              default 1. Same seed, same calls from one
                              consumer: same batches. */
    unsigned epochs;       /* reservoir.epochs: FIRO pseudo-epochs E: each
                              sample is used E times (never twice in one
                              batch), then removed. Default 1; must be 1 for
                              other policies. */
    unsigned max_uses;     /* reservoir.max_uses: RESERVOIR only: a sample
                              used this many times is removed (counted as
                              retired). 0 = no cap (default). */
    struct {
        double samples_per_insert; /* reservoir.rate.samples_per_insert:
                                      target rows served per sample put;
                                      0 = no rate limiter (default) */
        double min_diff; /* reservoir.rate.min_diff: a batch of B is served
                            only while puts*spi - (rows_served + B) >=
                            min_diff (consumer ahead waits) */
        double max_diff; /* reservoir.rate.max_diff: a put proceeds only while
                            (puts+1)*spi - rows_served <= max_diff (producer
                            ahead waits). Must satisfy max_diff - min_diff >=
                            max_batch + spi. Reverb's SampleToInsertRatio(spi,
                            min_size, error_buffer) is min_diff = spi*min_size
                            - error_buffer, max_diff = spi*min_size +
                            error_buffer. Defaults -1e300 / +1e300. */
    } rate;
    bool balance_sims; /* reservoir.balance_sims: FIRO/RESERVOIR: spread each
                          batch evenly over the simulations present (counts
                          per simulation differ by at most one; a simulation
                          is chosen before its sample). Not with
                          prioritized. Default false. */
    struct {
        bool enabled;   /* reservoir.prioritized.enabled: FIRO/RESERVOIR:
                           draw with probability priority^alpha / sum.
                           Default false. */
        double alpha;   /* reservoir.prioritized.alpha: in [0, 1]; 0 =
                           uniform. Default 0.6. */
        double beta;    /* reservoir.prioritized.beta: importance weight
                           exponent in [0, 1]. Default 0.4. */
        double epsilon; /* reservoir.prioritized.epsilon: added to each loss
                           so no priority is zero; > 0. Default 1e-6. A new
                           sample gets the largest priority seen so far. */
    } prioritized;
    enum surge_reservoir_storage storage; /* reservoir.storage: host (the
                           default) or device (a CUDA build only). The
                           policy, its counts and checkpoints are the same
                           in both. */
    int device; /* reservoir.device: the CUDA device ordinal of the
                   device storage, >= 0. Default 0. */
} surge_reservoir_config;

/* Who and when a sample is. */
typedef struct surge_sample_meta {
    uint64_t sim;       /* simulation id (balance_sims groups by it) */
    uint64_t step;      /* time step within the simulation */
    int64_t arrival_ns; /* CLOCK_MONOTONIC time the data arrived, in ns;
                           0 = stamp it at put. Sample ages in seconds are
                           measured from it. */
} surge_sample_meta;

/* What one row of a batch is. Keep it to report losses back. */
typedef struct surge_batch_info {
    uint32_t slot;       /* slot the row was copied from */
    uint32_t generation; /* the slot's generation when copied: a priority
                            update for an overwritten slot is ignored */
    uint64_t sim;        /* sample's simulation id */
    uint64_t step;       /* sample's time step */
    uint32_t uses;       /* times this sample has been served, this row
                            included (1 = first use) */
    float weight;        /* importance weight in (0, 1] (prioritized: the
                            largest possible weight is 1); 1 otherwise */
} surge_batch_info;

/* Counters and gauges, all taken in one consistent snapshot. */
typedef struct surge_reservoir_stats {
    enum surge_reservoir_policy policy;
    size_t capacity_samples;  /* slots in the pool */
    size_t capacity_bytes;    /* pool bytes actually allocated for slots */
    size_t sample_bytes;      /* (input_dim + output_dim) * 4 */
    size_t slot_bytes;        /* sample_bytes rounded up to 64 */
    size_t occupancy_samples; /* samples present (being copied in: not) */
    size_t occupancy_bytes;   /* occupancy_samples * sample_bytes */
    uint64_t puts;            /* samples stored */
    uint64_t gets;            /* rows served (a sample served twice: 2) */
    uint64_t batches;         /* get_batch calls that returned rows */
    uint64_t evictions;       /* used samples removed by a put for room */
    uint64_t retired;         /* samples removed after their last allowed
                                 use (FIFO, FIRO, max_uses, drain) */
    uint64_t uses_present[SURGE_RESERVOIR_USES_BUCKETS]; /* samples present,
                                  by times used so far */
    uint64_t uses_removed[SURGE_RESERVOIR_USES_BUCKETS]; /* samples that left
                                  (evicted or retired), by times used */
    double age_mean_puts;        /* present samples: mean puts since theirs */
    uint64_t age_max_puts;       /* oldest present sample (first put of
                                    those present), in puts */
    double age_mean_s;           /* present samples: mean seconds since
                                    arrival */
    double age_max_s;            /* the same sample, seconds since its
                                    arrival */
    double served_age_mean_puts; /* mean age in puts of the rows served so
                                    far (freshness of training data) */
    size_t distinct_sims;        /* distinct simulation ids present */
    uint64_t producer_waits;     /* puts that had to wait */
    double producer_wait_s;      /* total time puts spent waiting */
    uint64_t consumer_waits;     /* get_batch calls that had to wait */
    double consumer_wait_s;      /* total time get_batch calls spent waiting,
                                    all consumers together */
    uint64_t rate_overrides;     /* times the rate limiter let a side through
                                    because the other side was waiting for
                                    data or room (deadlock avoidance) */
    uint64_t priority_updates;   /* priorities applied */
    uint64_t priority_updates_ignored;    /* stale slot or non-finite loss */
    enum surge_reservoir_storage storage; /* as configured */
    size_t device_bytes;          /* device storage: device memory held (the
                                     slots' copy and the gather's buffers) */
    uint64_t device_uploads;      /* device storage: samples uploaded */
    uint64_t device_upload_bytes; /* ... and their bytes */
    uint64_t device_gathers;      /* device storage: get_batch_device batches */
    bool reception_ended;         /* surge_reservoir_end_reception called */
    bool finished;                /* reception ended and nothing left to serve*/
    bool closed;                  /* surge_reservoir_shutdown called */
} surge_reservoir_stats;

/* surge_reservoir_keys - the study file's "reservoir" keys that fill this
 * struct, one row each (name under "reservoir.", type, field, bounds,
 * names, default; common/keytab.h), ended by a row whose name is NULL.
 * The one place where their defaults and bounds live: config_init and
 * config_check read it, and so does the study parser (deploy/study.c). */
extern const struct surge_key surge_reservoir_keys[];

/* surge_reservoir_config_init - fill cfg with the defaults listed above
 * (those of surge_reservoir_keys, max_batch 256, storage host).
 * input_dim and output_dim stay 0: the caller must set them. */
void surge_reservoir_config_init(surge_reservoir_config *cfg);

/* surge_reservoir_config_check_keys - the part of config_check that
 * needs neither the sample's shape nor the build: each key against its
 * row of surge_reservoir_keys, max_batch >= 1, storage a known value, and
 * the rules across keys (which policy allows which option, the rate
 * limiter's window). For a study file, checked before its samples' size
 * is known. 0 or SURGE_ECONFIG, as config_check. */
int surge_reservoir_config_check_keys(const surge_reservoir_config *cfg,
                                      char *err, size_t errlen);

/* surge_reservoir_config_check - validate cfg without allocating anything.
 * Returns 0, or SURGE_ECONFIG with a sentence in err (at most errlen bytes,
 * always NUL-terminated when errlen > 0; err may be NULL) that starts with
 * the option's key, e.g. "reservoir.watermark: must be <= capacity in
 * samples (12)". */
int surge_reservoir_config_check(const surge_reservoir_config *cfg, char *err,
                                 size_t errlen);

/* surge_reservoir_create - validate cfg (as config_check), allocate the
 * pool and all bookkeeping once, pre-fault it, and set *rp. The config is
 * copied. On error *rp is untouched and the return is SURGE_ECONFIG (err
 * says which option and why) or -ENOMEM (err says how much). Pre-faulting
 * costs about 1 s per 1.4 GB on these machines. */
int surge_reservoir_create(surge_reservoir **rp,
                           const surge_reservoir_config *cfg, char *err,
                           size_t errlen);

/* surge_reservoir_destroy - free everything and set *rp to NULL; NULL or
 * *rp == NULL is a no-op. No other call may be running or start on r: call
 * surge_reservoir_shutdown() and join the threads first. */
void surge_reservoir_destroy(surge_reservoir **rp);

/* surge_reservoir_put - copy one sample (input: (input_dim) floats, output:
 * (output_dim) floats; either may be NULL when its dim is 0) into a slot.
 * meta may be NULL (sim 0, step 0, stamped now). O(1) apart from the copy
 * (O(log n) with prioritized, amortized O(1) with balance_sims).
 * Returns 0 when stored;
 *   SURGE_ETIMEDOUT  the policy made it wait longer than timeout_ms (full
 *                    with nothing evictable, or the rate limiter): nothing
 *                    stored, nothing lost, retry later;
 *   SURGE_ECLOSED    the reservoir was shut down;
 *   SURGE_ESTATE     called after surge_reservoir_end_reception().
 * The arrays are only read during the call. */
int surge_reservoir_put(surge_reservoir *r, const float *input,
                        const float *output, const surge_sample_meta *meta,
                        int timeout_ms);

/* A slot reserved by surge_reservoir_put_begin(): the caller writes the
 * sample in place, then ends the reservation with exactly one
 * surge_reservoir_put_commit() or surge_reservoir_put_abort(). Caller
 * storage; the pointers stay valid until that call. */
typedef struct surge_reservoir_slot {
    float *input;           /* (input_dim) floats of the slot; NULL when
                               input_dim is 0 */
    float *output;          /* (output_dim) floats of the slot; NULL when
                               output_dim is 0 */
    surge_sample_meta meta; /* as given to put_begin; the caller may still
                               change step and arrival_ns before commit
                               (not sim: it is counted at begin) */
    uint32_t slot;          /* internal: the slot id */
    uint32_t generation;    /* internal: the slot's generation at begin */
} surge_reservoir_slot;

/* surge_reservoir_put_begin - the zero-extra-copy put: reserve a slot with
 * the same rules, waiting and errors as surge_reservoir_put() (policy,
 * eviction of a used sample, rate limiter, timeout_ms, SURGE_ETIMEDOUT /
 * SURGE_ECLOSED / SURGE_ESTATE, -ENOMEM with balance_sims) and fill *slot
 * with pointers into the pool, so the producer can assemble the sample
 * there (e.g. straight from a network buffer) instead of copying it from
 * its own buffer. The slot's content is undefined until written; the
 * caller must write all of input and output before commit. -EINVAL when
 * slot is NULL. On error *slot is untouched and nothing is reserved.
 * While reserved, the slot is neither drawable nor evictable, it counts
 * as a put for the rate limiter, it is not saved, and a draining reservoir
 * is not finished (consumers wait for it): do not keep a reservation for
 * long, and never wait for a consumer while holding one (with every slot
 * reserved no batch can ever be served). Any thread may commit or abort;
 * destroy discards a reservation still open. */
int surge_reservoir_put_begin(surge_reservoir *r, const surge_sample_meta *meta,
                              int timeout_ms, surge_reservoir_slot *slot);

/* surge_reservoir_slot_write - copy n bytes from src to dst, where dst lies
 * inside a slot reserved by put_begin (slot->input or slot->output and the
 * bytes after it, up to the slot's end), the way the reservoir writes a
 * put: with streaming (non-temporal) stores for large copies (>= 256 KiB;
 * the pool is cold memory that a consumer reads later, so skipping the
 * read of each destination line is faster), memcpy otherwise. Any other
 * way to write the slot is fine too; put_commit orders these stores
 * before the sample becomes visible. The reservation's thread. */
void surge_reservoir_slot_write(surge_reservoir *r, void *dst, const void *src,
                                size_t n);

/* surge_reservoir_put_commit - the sample written into *slot becomes
 * present (drawable), exactly as if surge_reservoir_put() had copied it
 * (meta taken from slot->meta; arrival_ns 0 is stamped now). It also
 * succeeds after end of reception (the put began before). Returns 0;
 * SURGE_ECLOSED when the reservoir was shut down meanwhile: nothing is
 * stored and the slot is freed; -EINVAL when *slot is not an open
 * reservation of r (already committed or aborted). Either way the
 * reservation is over and slot->input/output are set to NULL. */
int surge_reservoir_put_commit(surge_reservoir *r, surge_reservoir_slot *slot);

/* surge_reservoir_put_abort - end the reservation without storing: the
 * slot is free again (a sample evicted to make room for it stays gone:
 * it had been used) and waiting producers and consumers are woken. A
 * no-op when *slot is not an open reservation (so calling it after a
 * failed commit is safe). */
void surge_reservoir_put_abort(surge_reservoir *r, surge_reservoir_slot *slot);

/* surge_reservoir_get_batch - serve up to B rows (1 <= B <= max_batch)
 * chosen by the policy, copied into inputs (B, input_dim) and outputs
 * (B, output_dim), row-major and contiguous, and describe each row in
 * info[B] (may be NULL). inputs/outputs may be NULL when their dim is 0.
 * Returns the number of rows n: n == B, except while draining after end of
 * reception, when 1 <= n <= B; only the first n rows are written.
 *   0                the reservoir is finished: reception ended and the
 *                    policy has nothing left to serve (every later call
 *                    returns 0 too);
 *   SURGE_ETIMEDOUT  no batch within timeout_ms (below the watermark, not
 *                    enough samples, or the rate limiter): nothing used;
 *   SURGE_ECLOSED    the reservoir was shut down;
 *   -EINVAL          B is 0 or larger than max_batch, or a needed array is
 *                    NULL.
 * Several consumers may call it at once; each row is served to exactly one
 * of them. */
long surge_reservoir_get_batch(surge_reservoir *r, size_t B, float *inputs,
                               float *outputs, surge_batch_info *info,
                               int timeout_ms);

/* surge_reservoir_get_batch_pool - get_batch with the copy into inputs
 * and outputs spread over the threads of pool (common/pool.h; NULL: the
 * caller alone, as get_batch), which the caller must own: the CPU
 * trainer's thread passes the trainer's pool, idle between steps. Same
 * rows, results and return values as get_batch. */
long surge_reservoir_get_batch_pool(surge_reservoir *r, size_t B, float *inputs,
                                    float *outputs, surge_batch_info *info,
                                    int timeout_ms, struct surge_pool *pool);

/* surge_reservoir_get_batch_view - get_batch without the copy: serve up to
 * B rows exactly as get_batch would (same policy, waiting, counts, uses,
 * info and return values), but instead of gathering them, leave them
 * pinned in the pool and give pointers to them: inputs[i] ((input_dim)
 * floats) and outputs[i] ((output_dim) floats), for i < n; either array
 * may be NULL; a pointer is NULL when its dim is 0. slots[B] (required)
 * receives the rows' slot ids, to pass back. The rows are read-only and
 * stay valid until surge_reservoir_release_view(r, slots, n), which must
 * be called exactly once for every n > 0 (also after shutdown). While a
 * view is held its slots are neither evicted nor freed, so a producer may
 * wait for them: release soon. For a consumer that reads rows in place
 * (copies them to a device, or only counts them) and so needs no gather.
 * -EINVAL when B is 0 or larger than max_batch, or slots is NULL. */
long surge_reservoir_get_batch_view(surge_reservoir *r, size_t B,
                                    uint32_t *slots, const float **inputs,
                                    const float **outputs,
                                    surge_batch_info *info, int timeout_ms);

/* surge_reservoir_release_view - end a view: unpin the n rows of slots (as
 * returned by get_batch_view), free those used up and wake producers (and
 * the notify callback) as the end of a get_batch does. n == 0: no-op. */
void surge_reservoir_release_view(surge_reservoir *r, const uint32_t *slots,
                                  size_t n);

/* surge_reservoir_get_batch_device - storage device only: get_batch with
 * the rows gathered on the device instead of the host. d_inputs (B,
 * input_dim) and d_outputs (B, output_dim) are device pointers (CUDA
 * memory of the reservoir's device; either may be NULL when its dim is 0).
 * Serves rows exactly as get_batch would (same policy, waiting, counts,
 * info and return values). Before the gather, every sample stored since
 * the last upload is uploaded (once each, from pinned memory, on the
 * storage's own stream), so the rows are never stale. Returns when the
 * rows are in d_inputs/d_outputs (the device work is complete: the caller
 * may launch kernels on them from any stream). Errors as get_batch, and
 *   SURGE_ESTATE     storage is host;
 *   SURGE_EINTERNAL  a CUDA call failed: the rows were served (counted)
 *                    but the arrays hold garbage; the text is in
 *                    surge_reservoir_device_error().
 * Consumers on the device storage serialize their gathers (one device
 * lock); host get_batch keeps working alongside. */
long surge_reservoir_get_batch_device(surge_reservoir *r, size_t B,
                                      float *d_inputs, float *d_outputs,
                                      surge_batch_info *info, int timeout_ms);

/* surge_reservoir_get_batch_device_async - get_batch_device without the
 * wait: the gather is queued on stream (a cudaStream_t of the reservoir's
 * device, as void *) after the work already queued there (so it never
 * overwrites d_inputs/d_outputs before an earlier step on that stream has
 * read them) and before any work queued there later (a step queued next
 * sees the rows), and the call returns at once. The rows stay pinned until
 * the gather is complete: the reservoir releases them at this consumer's
 * next device batch or at surge_reservoir_device_release(). One consumer
 * of async device batches at a time. Returns as get_batch_device; -EINVAL
 * when stream is NULL. */
long surge_reservoir_get_batch_device_async(surge_reservoir *r, size_t B,
                                            float *d_inputs, float *d_outputs,
                                            surge_batch_info *info,
                                            int timeout_ms, void *stream);

/* surge_reservoir_device_release - wait for the last async device batch's
 * gather and release its rows (no-op when none is held, or for host
 * storage). Call it when the consumer stops taking device batches (the
 * reservoir cannot free pinned rows). 0, or SURGE_EINTERNAL (the rows are
 * released anyway). */
int surge_reservoir_device_release(surge_reservoir *r);

/* surge_reservoir_device_error - the last device error's text (which call,
 * file and line, and CUDA's message): a static string until the next
 * device call; "" when none. */
const char *surge_reservoir_device_error(surge_reservoir *r);

/* surge_reservoir_storage_name - "host" or "device" (static). */
const char *surge_reservoir_storage_name(enum surge_reservoir_storage s);

/* surge_reservoir_storage_parse - "host" or "device" to the enum; 0, or
 * -EINVAL for any other name. */
int surge_reservoir_storage_parse(const char *name,
                                  enum surge_reservoir_storage *s);

/* surge_reservoir_device_available - 1 when this build has CUDA and a
 * device is present, else 0 (what a default storage of "auto" picks). */
int surge_reservoir_device_available(void);

/* surge_reservoir_update_priorities - prioritized only: set the priority of
 * each row's sample to (loss[i] + epsilon)^alpha. info and loss are the n
 * rows of one get_batch. A row whose slot was overwritten or removed since
 * (generation check), or whose loss is negative or not finite, is ignored
 * and counted. O(n log capacity). Returns the number of rows applied, or
 * SURGE_ESTATE when prioritized sampling is off. */
long surge_reservoir_update_priorities(surge_reservoir *r,
                                       const surge_batch_info *info,
                                       const float *loss, size_t n);

/* surge_reservoir_set_beta - prioritized only: change the importance weight
 * exponent (callers anneal it towards 1). Returns 0, -EINVAL when beta is
 * outside [0, 1], SURGE_ESTATE when prioritized sampling is off. */
int surge_reservoir_set_beta(surge_reservoir *r, double beta);

/* surge_reservoir_set_notify - for a producer that must not block (an
 * event loop putting with timeout_ms = 0): after one of its puts failed
 * with SURGE_ETIMEDOUT, cb(arg) is called once, as soon as a put would
 * succeed again (a batch made room or moved the rate limiter). It is called
 * from the consuming thread, at the end of get_batch, without the
 * reservoir's lock: it must be quick and not block (uv_async_send is the
 * intended use); it may call into r. Edge-triggered: one call per episode
 * of refused puts; not called after end of reception or shutdown. cb NULL
 * turns it off. */
typedef void (*surge_reservoir_notify_cb)(void *arg);
void surge_reservoir_set_notify(surge_reservoir *r,
                                surge_reservoir_notify_cb cb, void *arg);

/* surge_reservoir_end_reception - no more samples will come: later puts
 * return SURGE_ESTATE, waiting puts return SURGE_ESTATE, and consumers drain
 * what is left (see the top of this file), then get 0. Idempotent. */
void surge_reservoir_end_reception(surge_reservoir *r);

/* surge_reservoir_shutdown - stop: every waiting put and get_batch returns
 * SURGE_ECLOSED at once, and so do all later ones. Samples still present
 * stay in memory (stats and save still work) until destroy. Idempotent. */
void surge_reservoir_shutdown(surge_reservoir *r);

/* surge_reservoir_get_stats - fill *st with one consistent snapshot, O(1)
 * under the lock (ages come from running sums and a put-order list). */
void surge_reservoir_get_stats(surge_reservoir *r, surge_reservoir_stats *st);

/* Checkpoint / resume. The reservoir does no I/O itself: save streams its
 * state through a write callback, load reads it back through a read
 * callback. Callbacks return 0 on success or a negative code, which aborts
 * the save/load and is returned as is. They are called with the reservoir's
 * lock held: they must not call back into r. */
typedef int (*surge_reservoir_write_cb)(void *arg, const void *buf, size_t len);
typedef int (*surge_reservoir_read_cb)(void *arg, void *buf, size_t len);

/* surge_reservoir_save - write the policy state (counters, random state,
 * per sample: meta, times used, priority) and the data of every sample
 * present, in a versioned little-endian format, through cb. Safe while
 * others put and get (they wait during the save). Returns 0 or the first
 * error of cb. */
int surge_reservoir_save(surge_reservoir *r, surge_reservoir_write_cb cb,
                         void *arg);

/* surge_reservoir_load - restore a saved state into r, which must be fresh
 * (no put yet) and created with the same policy, options, input_dim and
 * output_dim, and capacity for at least the samples saved. Returns 0;
 * SURGE_ECONFIG when the saved state does not fit r (err says why);
 * SURGE_EPROTO for a corrupt stream; SURGE_ESTATE when r is not fresh; or
 * cb's error. On error r is left empty and usable. */
int surge_reservoir_load(surge_reservoir *r, surge_reservoir_read_cb cb,
                         void *arg, char *err, size_t errlen);

/* surge_reservoir_policy_name - "fifo", "firo" or "reservoir" (static). */
const char *surge_reservoir_policy_name(enum surge_reservoir_policy p);

/* surge_reservoir_policy_parse - "fifo", "firo", "reservoir" to the enum;
 * returns 0 and sets *p, or -EINVAL for any other name. */
int surge_reservoir_policy_parse(const char *name,
                                 enum surge_reservoir_policy *p);

#ifdef __cplusplus
}
#endif
#endif /* SURGE_RESERVOIR_H */
