/*
 * reservoir/reservoir_impl.h - the reservoir's insides, shared by its own
 * files only (nothing outside reservoir/ may include it).
 *
 * DESIGN. reservoir.c is the shared core: slots and their life, waiting,
 * put, batch selection, stats. What differs between configurations sits
 * behind three tables of operations, chosen once at create:
 *   struct res_policy_ops   the policy's rules: when a batch may be
 *                           served, whether draws replace, when a sample
 *                           is used up (policy_fifo.c, policy_firo.c,
 *                           policy_reservoir.c; the use cap max_uses is
 *                           part of policy_reservoir.c);
 *   struct res_draw_ops     the drawable set and how a batch draws from it:
 *                           the FIFO ring (policy_fifo.c), uniform
 *                           (draw_uniform.c), balanced over simulations
 *                           (draw_balanced.c), prioritized (sum tree,
 *                           draw_prioritized.c);
 *   struct res_storage_ops  where the samples' bytes live and how a batch
 *                           is gathered (storage_host.c);
 *   struct surge_reservoir_device_ops (reservoir_internal.h)  the device
 *                           of the device storage, which keeps a copy of
 *                           the pool there (storage_device.c: what goes
 *                           up when; storage_cuda.cu: CUDA).
 * The rate limiter (rate.c), the simulation table (sims.c), the config
 * checks (config.c) and checkpoints (checkpoint.c) have files of their own.
 * Every function here is called with r->mu held unless it says otherwise.
 */
#ifndef SURGE_RESERVOIR_IMPL_H
#define SURGE_RESERVOIR_IMPL_H

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/alloc.h"
#include "common/rng.h"
#include "common/util.h"
#include "reservoir/reservoir.h"
#include "reservoir/reservoir_internal.h"

#define NONE UINT32_MAX
#define SLOT_ALIGN 64
#define MAX_SLOTS (UINT32_MAX - 2u)

struct res_policy_ops;
struct res_draw_ops;
struct res_storage_ops;

/* Exact sums of 64-bit values over up to 2^32 samples (for mean ages
 * without a scan). */
__extension__ typedef __int128 i128;

enum slot_state {
    SLOT_FREE = 0,    /* in free_stack */
    SLOT_WRITING = 1, /* reserved by a put that is copying into it */
    SLOT_PRESENT = 2, /* in the drawable set */
    SLOT_RETIRED = 3  /* used up, still pinned by a copying consumer */
};

struct slot {
    uint64_t sim;        /* simulation id */
    uint64_t step;       /* time step */
    int64_t arrival_ns;  /* CLOCK_MONOTONIC ns of arrival */
    uint64_t put_index;  /* r->puts right after this sample was stored */
    double prio;         /* prioritized: priority^alpha (the leaf value) */
    uint32_t generation; /* bumped at each reservation */
    uint32_t uses;       /* times served */
    uint32_t pins;       /* consumers copying it right now */
    uint32_t pos;        /* index in active[] or in its sim's slots[] */
    uint32_t pos_evict;  /* index in evictable[], NONE when absent */
    uint32_t sim_entry;  /* index in sims[] while WRITING or PRESENT */
    uint32_t older;      /* put-order list of PRESENT samples: previous */
    uint32_t newer;      /* ... and next (NONE at the ends) */
    uint8_t state;       /* enum slot_state */
};

struct sim_entry {
    uint64_t id;       /* simulation id */
    uint32_t count;    /* PRESENT samples of this simulation */
    uint32_t pending;  /* WRITING samples of this simulation */
    uint32_t live_pos; /* index in sims_live[] while count > 0, else NONE */
    uint32_t taken;    /* balance_sims, during a batch: slots[0..taken) are
                          excluded from further draws */
    uint32_t *slots;   /* balance_sims: (count) PRESENT slots, capacity cap */
    uint32_t cap;      /* allocated length of slots */
};

struct surge_reservoir {
    /* Immutable after create. */
    surge_reservoir_config cfg; /* copy of the caller's config */
    size_t in_bytes;            /* input_dim * 4 */
    size_t out_bytes;           /* output_dim * 4 */
    size_t sample_bytes;        /* in_bytes + out_bytes */
    size_t slot_bytes;          /* sample_bytes rounded up to SLOT_ALIGN */
    uint32_t nslots;            /* slots in the pool */
    uint32_t wm;                /* effective watermark, samples */
    const struct res_policy_ops *pol;    /* the policy's rules */
    const struct res_draw_ops *draw;     /* the drawable set */
    const struct res_storage_ops *store; /* the pool and the gather */
    uint8_t *pool;                       /* (nslots, slot_bytes) */
    void (*copy_stream)(uint8_t *dst, const uint8_t *src, size_t n);
    /* streaming copy for big batches, or NULL */
    size_t pool_mapped;       /* bytes asked of surge_huge_alloc */
    surge_prefault *prefault; /* the pool's background pre-fault, or NULL
                                 (storage_host.c) */
    struct slot *slots;       /* (nslots) */

    pthread_mutex_t mu;    /* guards everything below */
    pthread_cond_t cv_put; /* producers: room, rate limiter, end, shutdown */
    pthread_cond_t cv_get; /* consumers: data, rate limiter, end, shutdown */

    uint32_t *free_stack; /* (nslots) FREE slot ids, nfree of them */
    uint32_t nfree;
    uint32_t *ring; /* FIFO: (nslots) PRESENT slot ids, oldest at ring_head */
    uint32_t ring_head;
    uint32_t ring_count;
    uint32_t *active; /* uniform: (nslots) PRESENT slot ids, nactive */
    uint32_t nactive;
    uint32_t active_taken; /* during a batch: active[0..taken) excluded */
    uint32_t *evictable;   /* RESERVOIR: (nslots) PRESENT, used, unpinned */
    uint32_t nevictable;

    struct sim_entry *sims; /* (nslots) entries; a free one has no hash key */
    uint32_t *sims_free;    /* (nslots) free entry ids, nsims_free of them */
    uint32_t nsims_free;
    uint32_t *sims_live; /* (nslots) entries with count > 0, nlive */
    uint32_t nlive;
    uint32_t *sim_hash; /* open addressing, entry id + 1, 0 = empty */
    uint32_t hash_mask; /* table length - 1 (a power of two) */

    double *tsum;      /* prioritized: (2 * tleaves) sum tree, root at 1 */
    double *tmin;      /* prioritized: (2 * tleaves) min tree, +inf empty */
    uint32_t tleaves;  /* power of two >= nslots */
    double max_prio;   /* largest priority^alpha seen (new samples get it) */
    double beta;       /* current importance weight exponent */
    uint32_t taken_n;  /* during a batch: samples excluded so far */
    uint32_t *taken_s; /* prioritized: (nslots) slots whose leaf is zeroed
                          during the batch in progress */

    uint32_t npresent;        /* PRESENT samples */
    uint32_t oldest, newest;  /* ends of the put-order list, NONE if empty */
    i128 sum_put_index;       /* over PRESENT samples, exact */
    i128 sum_arrival_ns;      /* over PRESENT samples, exact */
    uint32_t nwriting;        /* WRITING samples */
    uint64_t uses_left_total; /* max_uses: sum of (max_uses - uses) */
    surge_rng rng;            /* xoshiro256** state (common/rng.h) */

    uint64_t puts, gets, batches, evictions, retired;
    uint64_t uses_present[SURGE_RESERVOIR_USES_BUCKETS];
    uint64_t uses_removed[SURGE_RESERVOIR_USES_BUCKETS];
    double served_age_sum; /* sum over rows served of (puts - put_index) */
    uint64_t producer_waits, consumer_waits;
    double producer_wait_s, consumer_wait_s;
    uint64_t rate_overrides;
    uint64_t prio_updates, prio_ignored;
    surge_reservoir_notify_cb notify_cb; /* see set_notify */
    void *notify_arg;
    /* Device storage (storage_device.c); dev == NULL: host storage. */
    const struct surge_reservoir_device_ops *dev; /* the device's ops */
    void *dev_ctx;                                /* its context (dev_mu) */
    pthread_mutex_t dev_mu; /* guards dev_ctx calls, flush[], run_*,
                               dev_err; taken before mu, never while
                               mu is held */
    uint32_t *pend;         /* (nslots) slots committed and not yet
                               uploaded, npend of them (mu) */
    uint32_t npend;         /* (mu) */
    bool pend_all;          /* upload every present slot (pend[]
                               overflowed, or a load) (mu) */
    uint32_t *flush;        /* (nslots) the slots being uploaded (dev_mu) */
    size_t *run_off;        /* (nslots) their byte runs (dev_mu) */
    size_t *run_len;        /* (nslots) (dev_mu) */
    char dev_err[256];      /* last device error (dev_mu) */
    uint32_t *held;         /* (max_batch) rows of the last async device batch,
                               pinned until its gather is complete (dev_mu) */
    size_t nheld;           /* (dev_mu) */
    uint64_t dev_uploads, dev_upload_bytes, dev_gathers; /* (mu) */
    bool producer_refused; /* a put timed out since the last notify */
    bool ended;            /* end_reception called */
    bool closed;           /* shutdown called */
};

/* ---------------------------------------------------------------- ops */

/* Carried across the rows of one batch by a draw (balance_sims' round
 * robin over simulations). */
struct res_draw_state {
    uint32_t cursor; /* next entry of sims_live[] to draw from */
    uint32_t m;      /* sims_live[0..m) are in this batch's rotation */
};

/* A policy's rules. */
struct res_policy_ops {
    enum surge_reservoir_policy policy;
    /* watermark: the effective watermark in samples for cfg. */
    uint32_t (*watermark)(const surge_reservoir_config *cfg, size_t nslots);
    /* data_ready: before end of reception, is there data for a batch of
     * B (the rate limiter aside)? */
    bool (*data_ready)(const surge_reservoir *r, size_t B);
    /* replace: may a sample come twice in the batch being selected? */
    bool (*replace)(const surge_reservoir *r);
    /* used_up: after a batch, must this PRESENT sample be retired? */
    bool (*used_up)(const surge_reservoir *r, const struct slot *sl);
    /* uses_valid: may a present sample have been used this often (a
     * checkpoint's record)? */
    bool (*uses_valid)(const surge_reservoir *r, uint32_t uses);
    /* served: slot s was just served once more (its uses counted) in a
     * batch drawn with or without replace; NULL: nothing to do. */
    void (*served)(surge_reservoir *r, uint32_t s, bool replace);
    bool evicts; /* a put may evict a used sample (keeps evictable[]) */
};

extern const struct res_policy_ops res_policy_fifo;
extern const struct res_policy_ops res_policy_firo;
extern const struct res_policy_ops res_policy_reservoir;

/* The drawable set (PRESENT samples) and the draws of a batch. */
struct res_draw_ops {
    /* create: allocate its arrays for r->nslots (once); 0 or -ENOMEM
     * (destroy then frees what was allocated). reset: empty it. */
    int (*create)(surge_reservoir *r);
    void (*destroy)(surge_reservoir *r);
    void (*reset)(surge_reservoir *r);
    /* reserve: room for one more sample of simulation entry e, before a
     * put reserves its slot; 0 or -ENOMEM. NULL: never needed. */
    int (*reserve)(surge_reservoir *r, uint32_t e);
    /* add: PRESENT slot s becomes drawable; remove: it leaves (outside of
     * a batch's selection). */
    void (*add)(surge_reservoir *r, uint32_t s);
    void (*remove)(surge_reservoir *r, uint32_t s);
    /* draw: one slot for the batch being selected; without replace the
     * sample is excluded from the rest of the batch. */
    uint32_t (*draw)(surge_reservoir *r, bool replace,
                     struct res_draw_state *ds);
    /* exclude: no more draws of s in this batch (max_uses reached while
     * drawing with replacement). NULL for FIFO (never replaces). */
    void (*exclude)(surge_reservoir *r, uint32_t s);
    /* batch_end: put the excluded samples back, before any removal. */
    void (*batch_end)(surge_reservoir *r, const struct res_draw_state *ds);
    /* each: call fn on every drawable slot in drawing order (checkpoints
     * save in that order so a loaded reservoir draws the same); stops at
     * and returns fn's first non-zero. */
    int (*each)(surge_reservoir *r,
                int (*fn)(surge_reservoir *, uint32_t, void *), void *arg);
};

extern const struct res_draw_ops res_draw_ring;
extern const struct res_draw_ops res_draw_uniform;
extern const struct res_draw_ops res_draw_balanced;
extern const struct res_draw_ops res_draw_prioritized;

/* Where the samples' bytes live. The pool is always host memory (put
 * writes it, checkpoints read it). */
struct res_storage_ops {
    const char *name;
    /* create: map the pool (r->pool, r->pool_mapped) for r->nslots slots;
     * 0 or -ENOMEM with err set. destroy frees it (without the lock). */
    int (*create)(surge_reservoir *r, char *err, size_t errlen);
    void (*destroy)(surge_reservoir *r);
    /* write: n bytes into a reserved slot (the producer, no lock). */
    void (*write)(surge_reservoir *r, void *dst, const void *src, size_t n);
    /* commit_fence: make write's stores visible before the slot is
     * published (no lock). */
    void (*commit_fence)(surge_reservoir *r);
    /* gather: copy the n pinned rows into inputs (n, input_dim) and
     * outputs (n, output_dim) (no lock), on pool's threads (NULL: the
     * caller's alone). */
    void (*gather)(surge_reservoir *r, const uint32_t *rows, size_t n,
                   float *inputs, float *outputs, struct surge_pool *pool);
};

extern const struct res_storage_ops res_storage_host;

/* ------------------------------------------------------------ shared */

static inline int64_t
res_now_ns(void)
{
    return (int64_t)surge_now_ns();
}

/* Uniform integer in [0, n), n >= 1, without modulo bias (Lemire). */
static inline uint32_t
res_rng_below(surge_reservoir *r, uint32_t n)
{
    uint64_t m = (surge_rng_next(&r->rng) >> 32) * (uint64_t)n;
    uint32_t l = (uint32_t)m;
    if (l < n) {
        uint32_t t = (uint32_t)(-n) % n;
        while (l < t) {
            m = (surge_rng_next(&r->rng) >> 32) * (uint64_t)n;
            l = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

static inline unsigned
res_bucket(uint32_t uses)
{
    return uses < SURGE_RESERVOIR_USES_BUCKETS - 1
               ? uses
               : SURGE_RESERVOIR_USES_BUCKETS - 1;
}

/* config.c: surge_reservoir_config_check, with storage device allowed
 * (a CUDA build, or device ops given) or not. */
int res_config_check(const surge_reservoir_config *cfg, bool allow_device,
                     char *err, size_t errlen);

/* config.c: sizes derived from a config; 0, or SURGE_ECONFIG with err. */
int res_derive_sizes(const surge_reservoir_config *cfg, size_t *sample_bytes,
                     size_t *slot_bytes, size_t *nslots, char *err,
                     size_t errlen);

/* sims.c: the simulation table (see struct sim_entry). */
uint32_t res_sim_get(surge_reservoir *r, uint64_t id);
void res_sim_drop(surge_reservoir *r, uint32_t e);
void res_live_add(surge_reservoir *r, uint32_t e);
void res_live_remove(surge_reservoir *r, uint32_t e);
void res_live_swap(surge_reservoir *r, uint32_t a, uint32_t b);

/* rate.c: the rate limiter. put_ok: may one more sample be put (count:
 * this is the real decision, count an override)? get_ok: may a batch of B
 * rows be served? */
bool res_rate_put_ok(surge_reservoir *r, bool count);
bool res_rate_get_ok(surge_reservoir *r, size_t B);

/* reservoir.c: slot bookkeeping the other files share. */
void res_ds_add(surge_reservoir *r, uint32_t s);
void res_age_link(surge_reservoir *r, uint32_t s);
void res_evict_add(surge_reservoir *r, uint32_t s);
void res_reset_state(surge_reservoir *r);

/* reservoir.c: wait for a batch as the policy says, then select and pin
 * its n rows (slot ids in rows[n]): n > 0, 0 (finished) or an error, the
 * lock not held on return; release: unpin them after the copy. */
long res_take_rows(surge_reservoir *r, size_t B, uint32_t *rows,
                   surge_batch_info *info, int timeout_ms);
void res_release_rows(surge_reservoir *r, size_t n, const uint32_t *rows);

/* storage_device.c: the device storage. create: after the pool exists (no
 * lock; 0 or an error with err); destroy: before the pool goes. committed:
 * slot s became PRESENT (mu held); true when enough is pending that the
 * producer should call flush_try (no lock held) to upload it. */
int res_dev_create(surge_reservoir *r,
                   const struct surge_reservoir_device_ops *dev, char *err,
                   size_t errlen);
void res_dev_destroy(surge_reservoir *r);
bool res_dev_committed(surge_reservoir *r, uint32_t s);
void res_dev_flush_try(surge_reservoir *r);

/* draw_prioritized.c: set slot s's leaf to v (0 = not drawable). */
void res_tree_set(surge_reservoir *r, uint32_t s, double v);

#endif /* SURGE_RESERVOIR_IMPL_H */
