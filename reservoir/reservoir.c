/*
 * reservoir/reservoir.c - the sample buffer: slots, policies, waiting.
 *
 * DESIGN
 *
 * Memory. One pool of nslots fixed-size slots (sample rounded up to 64
 * bytes: input floats then output floats) is mapped, backed by huge pages
 * and pre-faulted at creation; all bookkeeping arrays are sized by nslots
 * and allocated at creation too. A put copies into a free slot, a batch
 * copies out of slots: no allocation on the hot path (balance_sims alone
 * grows a per-simulation index array now and then, amortized O(1)).
 *
 * Slot life: FREE -> WRITING (reserved by put or put_begin, filled outside
 * the lock; put_abort, or a commit after shutdown, takes it back to FREE)
 * -> PRESENT (drawable) -> RETIRED (its last allowed use was served but a
 * consumer is still copying it) -> FREE. A RESERVOIR eviction takes a
 * PRESENT slot with uses > 0 and pins == 0 straight back to WRITING. A
 * consumer pins every slot of its batch (pins++) under the lock, copies
 * without the lock, then unpins; a pinned slot is never evicted or freed,
 * so the copy reads stable data. Each reservation bumps the slot's
 * generation, which is how stale priority updates are recognised.
 *
 * Drawable set (the PRESENT samples), one structure per policy:
 *   FIFO           ring[] of slot ids in put order.
 *   uniform        active[] with each slot's index in slot.pos: O(1) add,
 *                  remove (swap with last) and uniform draw.
 *   balance_sims   one slot array per simulation plus sims_live[] of the
 *                  simulations present: a batch first picks simulations
 *                  (partial Fisher-Yates over sims_live), round robin,
 *                  then a sample uniformly within each.
 *   prioritized    sum tree and min tree over the slots (leaf = priority^
 *                  alpha, 0 when not drawable): draw and update O(log n).
 * Within one batch some samples must not be drawn again (all of them when
 * drawing without replacement, those that reached max_uses otherwise):
 * they are "taken" (moved to the front of active[] / of their simulation's
 * array, or their leaf set to 0) and put back or removed when the batch is
 * complete, all inside one hold of the lock.
 *
 * Waiting. One mutex, two condition variables on CLOCK_MONOTONIC: cv_put
 * (producers wait for room or the rate limiter) and cv_get (consumers wait
 * for data or the rate limiter). The rate limiter never blocks a side while
 * the other side waits for data or room (see rate_*_ok), which with the
 * window check of config_check makes a deadlock impossible.
 *
 * Lock order: r->mu is the only lock; nothing else is called while it is
 * held except the save/load callbacks (documented in the header).
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define HAVE_STREAM_STORES 1
#endif

#include "common/alloc.h"
#include "common/rng.h"
#include "common/util.h"
#include "reservoir/reservoir.h"
#include "reservoir/reservoir_internal.h"

#define NONE UINT32_MAX
#define SLOT_ALIGN 64
#define MAX_SLOTS (UINT32_MAX - 2u)
#define STACK_ROWS 512
/* A batch at least this big is written with non-temporal (streaming)
 * stores: it would not stay in the 32 MiB L3 anyway, and skipping the
 * read-for-ownership of each destination line makes the gather ~1.7x
 * faster than memcpy here (bench/reservoir). Smaller batches use memcpy and
 * stay in cache for the trainer that reads them next. */
#define STREAM_MIN_BATCH_BYTES ((size_t)8 << 20)
/* A write into a slot at least this big uses streaming stores too: a pool
 * slot is cold memory that a consumer's gather reads later, not the
 * producer, so reading each line before writing it is wasted (measured in
 * surge serve at 1 MiB samples: memcpy into the pool cost 2.3x the
 * streaming gather of the same bytes). */
#define STREAM_MIN_WRITE_BYTES ((size_t)256 << 10)

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
    bool uniform;               /* FIRO/RESERVOIR drawing from active[] */
    uint8_t *pool;              /* (nslots, slot_bytes) */
    void (*copy_stream)(uint8_t *dst, const uint8_t *src, size_t n);
    /* streaming copy for big batches, or NULL */
    size_t pool_mapped; /* bytes asked of surge_huge_alloc */
    struct slot *slots; /* (nslots) */

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
    bool producer_refused; /* a put timed out since the last notify */
    bool ended;            /* end_reception called */
    bool closed;           /* shutdown called */
};

/* ---------------------------------------------------------------- utils */

static int64_t
now_ns(void)
{
    return (int64_t)surge_now_ns();
}

/* Uniform integer in [0, n), n >= 1, without modulo bias (Lemire). */
static uint32_t
rng_below(surge_reservoir *r, uint32_t n)
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

/* Uniform double in [0, 1). */
static double
rng_double(surge_reservoir *r)
{
    return surge_rng_uniform(&r->rng);
}

static unsigned
bucket(uint32_t uses)
{
    return uses < SURGE_RESERVOIR_USES_BUCKETS - 1
               ? uses
               : SURGE_RESERVOIR_USES_BUCKETS - 1;
}

/* ------------------------------------------------------------- config */

const char *
surge_reservoir_policy_name(enum surge_reservoir_policy p)
{
    switch (p) {
    case SURGE_RESERVOIR_FIFO:
        return "fifo";
    case SURGE_RESERVOIR_FIRO:
        return "firo";
    case SURGE_RESERVOIR_RESERVOIR:
        return "reservoir";
    }
    return "unknown";
}

int
surge_reservoir_policy_parse(const char *name, enum surge_reservoir_policy *p)
{
    if (name == NULL) {
        return -EINVAL;
    }
    if (strcmp(name, "fifo") == 0) {
        *p = SURGE_RESERVOIR_FIFO;
    } else if (strcmp(name, "firo") == 0) {
        *p = SURGE_RESERVOIR_FIRO;
    } else if (strcmp(name, "reservoir") == 0) {
        *p = SURGE_RESERVOIR_RESERVOIR;
    } else {
        return -EINVAL;
    }
    return 0;
}

void
surge_reservoir_config_init(surge_reservoir_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->policy = SURGE_RESERVOIR_RESERVOIR;
    cfg->capacity_bytes = (size_t)1 << 30;
    cfg->max_batch = 256;
    cfg->seed = 1;
    cfg->epochs = 1;
    cfg->rate.samples_per_insert = 0.0;
    cfg->rate.min_diff = -1e300;
    cfg->rate.max_diff = 1e300;
    cfg->prioritized.alpha = 0.6;
    cfg->prioritized.beta = 0.4;
    cfg->prioritized.epsilon = 1e-6;
}

/* Sizes derived from a config; 0 on success, SURGE_ECONFIG with err. */
static int
derive_sizes(const surge_reservoir_config *cfg, size_t *sample_bytes,
             size_t *slot_bytes, size_t *nslots, char *err, size_t errlen)
{
    const size_t maxdim = SIZE_MAX / 8 / sizeof(float);
    if (cfg->input_dim > maxdim) {
        surge_set_err(err, errlen, "reservoir.input_dim: %zu is too large",
                      cfg->input_dim);
        return SURGE_ECONFIG;
    }
    if (cfg->output_dim > maxdim) {
        surge_set_err(err, errlen, "reservoir.output_dim: %zu is too large",
                      cfg->output_dim);
        return SURGE_ECONFIG;
    }
    if (cfg->input_dim + cfg->output_dim == 0) {
        surge_set_err(
            err, errlen,
            "reservoir.output_dim: input_dim + output_dim must be >= 1 "
            "(both are 0: set the sample's shape)");
        return SURGE_ECONFIG;
    }
    *sample_bytes = (cfg->input_dim + cfg->output_dim) * sizeof(float);
    *slot_bytes = (*sample_bytes + SLOT_ALIGN - 1) / SLOT_ALIGN * SLOT_ALIGN;
    *nslots = cfg->capacity_bytes / *slot_bytes;
    return 0;
}

int
surge_reservoir_config_check(const surge_reservoir_config *cfg, char *err,
                             size_t errlen)
{
    size_t sample_bytes, slot_bytes, nslots;
    const char *pname = surge_reservoir_policy_name(cfg->policy);
    bool fifo = cfg->policy == SURGE_RESERVOIR_FIFO;
    bool firo = cfg->policy == SURGE_RESERVOIR_FIRO;
    bool resv = cfg->policy == SURGE_RESERVOIR_RESERVOIR;

    surge_set_err(err, errlen, "ok");
    if (!fifo && !firo && !resv) {
        surge_set_err(err, errlen,
                      "reservoir.policy: unknown policy %d (fifo, firo or "
                      "reservoir)",
                      (int)cfg->policy);
        return SURGE_ECONFIG;
    }
    int rc =
        derive_sizes(cfg, &sample_bytes, &slot_bytes, &nslots, err, errlen);
    if (rc != 0) {
        return rc;
    }
    if (cfg->max_batch == 0) {
        surge_set_err(err, errlen, "reservoir.max_batch: must be >= 1");
        return SURGE_ECONFIG;
    }
    if (cfg->max_batch > MAX_SLOTS) {
        surge_set_err(err, errlen, "reservoir.max_batch: %zu is too large",
                      cfg->max_batch);
        return SURGE_ECONFIG;
    }
    if (nslots == 0) {
        surge_set_err(
            err, errlen,
            "reservoir.capacity_bytes: %zu bytes cannot hold one sample "
            "of %zu bytes (slot %zu bytes)",
            cfg->capacity_bytes, sample_bytes, slot_bytes);
        return SURGE_ECONFIG;
    }
    if (nslots > MAX_SLOTS) {
        surge_set_err(
            err, errlen,
            "reservoir.capacity_bytes: %zu slots of %zu bytes is more "
            "than the %u a reservoir can index",
            nslots, slot_bytes, (unsigned)MAX_SLOTS);
        return SURGE_ECONFIG;
    }
    if ((fifo || firo) && nslots < cfg->max_batch) {
        surge_set_err(
            err, errlen,
            "reservoir.capacity_bytes: holds %zu samples of %zu bytes; "
            "policy %s needs at least max_batch (%zu)",
            nslots, slot_bytes, pname, cfg->max_batch);
        return SURGE_ECONFIG;
    }
    if (cfg->watermark > nslots) {
        surge_set_err(
            err, errlen,
            "reservoir.watermark: must be <= capacity in samples (%zu)",
            nslots);
        return SURGE_ECONFIG;
    }
    if (cfg->epochs == 0) {
        surge_set_err(err, errlen, "reservoir.epochs: must be >= 1");
        return SURGE_ECONFIG;
    }
    if (cfg->epochs != 1 && !firo) {
        surge_set_err(err, errlen,
                      "reservoir.epochs: only policy firo has pseudo-epochs "
                      "(policy is %s; leave epochs at 1)",
                      pname);
        return SURGE_ECONFIG;
    }
    if (cfg->max_uses != 0 && !resv) {
        surge_set_err(err, errlen,
                      "reservoir.max_uses: only for policy reservoir (%s uses "
                      "each sample %s)",
                      pname, fifo ? "once" : "epochs times");
        return SURGE_ECONFIG;
    }
    double spi = cfg->rate.samples_per_insert;
    if (!(spi >= 0.0) || !isfinite(spi)) {
        surge_set_err(
            err, errlen,
            "reservoir.rate.samples_per_insert: must be a finite number "
            ">= 0 (0 = no rate limiter)");
        return SURGE_ECONFIG;
    }
    if (spi > 0.0) {
        double lo = cfg->rate.min_diff, hi = cfg->rate.max_diff;
        if (!resv) {
            surge_set_err(
                err, errlen,
                "reservoir.rate.samples_per_insert: the rate limiter is "
                "only for policy reservoir (%s is paced by its data)",
                pname);
            return SURGE_ECONFIG;
        }
        if (isnan(lo)) {
            surge_set_err(err, errlen, "reservoir.rate.min_diff: not a number");
            return SURGE_ECONFIG;
        }
        if (isnan(hi)) {
            surge_set_err(err, errlen, "reservoir.rate.max_diff: not a number");
            return SURGE_ECONFIG;
        }
        if (!(hi - lo >= (double)cfg->max_batch + spi)) {
            surge_set_err(
                err, errlen,
                "reservoir.rate.max_diff: max_diff - min_diff (%g) must "
                "be >= max_batch + samples_per_insert (%g), or the "
                "producer and consumers could both wait",
                hi - lo, (double)cfg->max_batch + spi);
            return SURGE_ECONFIG;
        }
    }
    if (cfg->balance_sims && fifo) {
        surge_set_err(
            err, errlen,
            "reservoir.balance_sims: not with policy fifo (a fifo batch "
            "is the oldest samples)");
        return SURGE_ECONFIG;
    }
    if (cfg->prioritized.enabled) {
        if (fifo) {
            surge_set_err(
                err, errlen,
                "reservoir.prioritized.enabled: not with policy fifo (a "
                "fifo batch is the oldest samples)");
            return SURGE_ECONFIG;
        }
        if (cfg->balance_sims) {
            surge_set_err(err, errlen,
                          "reservoir.prioritized.enabled: not together with "
                          "balance_sims (choose one way of drawing)");
            return SURGE_ECONFIG;
        }
        double a = cfg->prioritized.alpha, b = cfg->prioritized.beta;
        double e = cfg->prioritized.epsilon;
        if (!(a >= 0.0 && a <= 1.0)) {
            surge_set_err(err, errlen,
                          "reservoir.prioritized.alpha: must be in [0, 1]");
            return SURGE_ECONFIG;
        }
        if (!(b >= 0.0 && b <= 1.0)) {
            surge_set_err(err, errlen,
                          "reservoir.prioritized.beta: must be in [0, 1]");
            return SURGE_ECONFIG;
        }
        if (!(e > 0.0) || !isfinite(e)) {
            surge_set_err(
                err, errlen,
                "reservoir.prioritized.epsilon: must be finite and > 0");
            return SURGE_ECONFIG;
        }
    }
    return 0;
}

/* --------------------------------------------------------- sim table */

static uint32_t
hash_home(const surge_reservoir *r, uint64_t id)
{
    uint64_t x = id;
    return (uint32_t)surge_splitmix64(&x) & r->hash_mask;
}

/* Entry of id, created when absent. Never fails: at most nslots entries
 * are in use (each holds a WRITING or PRESENT slot) and the table has at
 * least twice as many buckets. */
static uint32_t
sim_get(surge_reservoir *r, uint64_t id)
{
    uint32_t i = hash_home(r, id);
    for (;;) {
        uint32_t v = r->sim_hash[i];
        if (v == 0) {
            break;
        }
        if (r->sims[v - 1].id == id) {
            return v - 1;
        }
        i = (i + 1) & r->hash_mask;
    }
    uint32_t e = r->sims_free[--r->nsims_free];
    struct sim_entry *se = &r->sims[e];
    se->id = id;
    se->count = 0;
    se->pending = 0;
    se->taken = 0;
    se->live_pos = NONE;
    r->sim_hash[i] = e + 1;
    return e;
}

/* Drop entry e (count == pending == 0) from the hash table: linear probing
 * with backward-shift deletion, so no tombstones pile up. */
static void
sim_drop(surge_reservoir *r, uint32_t e)
{
    struct sim_entry *se = &r->sims[e];
    uint32_t i = hash_home(r, se->id);
    while (r->sim_hash[i] != e + 1) {
        i = (i + 1) & r->hash_mask;
    }
    r->sim_hash[i] = 0;
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & r->hash_mask;
        uint32_t v = r->sim_hash[j];
        if (v == 0) {
            break;
        }
        uint32_t k = hash_home(r, r->sims[v - 1].id);
        /* Move v back to the hole at i unless its home lies cyclically in
         * (i, j]: then it is already as close to home as it may be. */
        bool stay = (i <= j) ? (i < k && k <= j) : (i < k || k <= j);
        if (!stay) {
            r->sim_hash[i] = v;
            r->sim_hash[j] = 0;
            i = j;
        }
    }
    /* Keep small index arrays for reuse; give big ones back so memory
     * stays bounded by the samples present. */
    if (se->cap > 64) {
        free(se->slots);
        se->slots = NULL;
        se->cap = 0;
    }
    r->sims_free[r->nsims_free++] = e;
}

/* balance_sims: make room for one more slot in entry e's array. */
static int
sim_reserve_array(surge_reservoir *r, uint32_t e)
{
    struct sim_entry *se = &r->sims[e];
    uint32_t need = se->count + se->pending + 1;
    if (need <= se->cap) {
        return 0;
    }
    uint32_t ncap = se->cap < 16 ? 16 : se->cap;
    while (ncap < need) {
        ncap = ncap > r->nslots / 2 ? r->nslots : ncap * 2;
    }
    uint32_t *p = surge_realloc(se->slots, (size_t)ncap * sizeof(*p));
    if (p == NULL) {
        return -ENOMEM;
    }
    se->slots = p;
    se->cap = ncap;
    return 0;
}

static void
live_add(surge_reservoir *r, uint32_t e)
{
    r->sims[e].live_pos = r->nlive;
    r->sims_live[r->nlive++] = e;
}

static void
live_remove(surge_reservoir *r, uint32_t e)
{
    uint32_t p = r->sims[e].live_pos;
    uint32_t last = r->sims_live[--r->nlive];
    r->sims_live[p] = last;
    r->sims[last].live_pos = p;
    r->sims[e].live_pos = NONE;
}

static void
live_swap(surge_reservoir *r, uint32_t a, uint32_t b)
{
    uint32_t ea = r->sims_live[a], eb = r->sims_live[b];
    r->sims_live[a] = eb;
    r->sims_live[b] = ea;
    r->sims[eb].live_pos = a;
    r->sims[ea].live_pos = b;
}

/* ------------------------------------------------------------- trees */

static void
tree_set(surge_reservoir *r, uint32_t s, double v)
{
    uint32_t i = r->tleaves + s;
    r->tsum[i] = v;
    r->tmin[i] = v > 0.0 ? v : INFINITY;
    for (i >>= 1; i >= 1; i >>= 1) {
        r->tsum[i] = r->tsum[2 * i] + r->tsum[2 * i + 1];
        r->tmin[i] = fmin(r->tmin[2 * i], r->tmin[2 * i + 1]);
    }
}

/* A slot with probability leaf / total. The caller knows total > 0. */
static uint32_t
tree_draw(surge_reservoir *r)
{
    for (int attempt = 0; attempt < 16; attempt++) {
        double u = rng_double(r) * r->tsum[1];
        uint32_t i = 1;
        while (i < r->tleaves) {
            uint32_t l = 2 * i;
            if (u < r->tsum[l]) {
                i = l;
            } else {
                u -= r->tsum[l];
                i = l + 1;
            }
        }
        /* Rounding can walk onto an empty leaf at a boundary: draw again. */
        if (r->tsum[i] > 0.0) {
            return i - r->tleaves;
        }
    }
    for (uint32_t s = 0; s < r->nslots; s++) {
        if (r->tsum[r->tleaves + s] > 0.0) {
            return s;
        }
    }
    return 0; /* unreachable while total > 0 */
}

/* ------------------------------------------------------ drawable set */

static void
evict_add(surge_reservoir *r, uint32_t s)
{
    r->slots[s].pos_evict = r->nevictable;
    r->evictable[r->nevictable++] = s;
}

static void
evict_remove(surge_reservoir *r, uint32_t s)
{
    uint32_t p = r->slots[s].pos_evict;
    if (p == NONE) {
        return;
    }
    uint32_t last = r->evictable[--r->nevictable];
    r->evictable[p] = last;
    r->slots[last].pos_evict = p;
    r->slots[s].pos_evict = NONE;
}

/* A WRITING slot becomes PRESENT and drawable. */
static void
ds_add(surge_reservoir *r, uint32_t s)
{
    struct slot *sl = &r->slots[s];
    struct sim_entry *se = &r->sims[sl->sim_entry];
    if (r->cfg.policy == SURGE_RESERVOIR_FIFO) {
        uint32_t tail = (r->ring_head + r->ring_count) % r->nslots;
        r->ring[tail] = s;
        r->ring_count++;
    } else if (r->cfg.prioritized.enabled) {
        sl->prio = r->max_prio;
        tree_set(r, s, sl->prio);
    } else if (r->cfg.balance_sims) {
        sl->pos = se->count; /* room reserved by sim_reserve_array */
        se->slots[se->count] = s;
    } else {
        sl->pos = r->nactive;
        r->active[r->nactive++] = s;
    }
    se->pending--;
    if (se->count++ == 0) {
        live_add(r, sl->sim_entry);
    }
}

/* A PRESENT slot leaves the drawable set (FIFO: already popped). Called
 * outside of batch selection only (no sample is taken). */
static void
ds_remove(surge_reservoir *r, uint32_t s)
{
    struct slot *sl = &r->slots[s];
    uint32_t e = sl->sim_entry;
    struct sim_entry *se = &r->sims[e];
    if (r->cfg.policy == SURGE_RESERVOIR_FIFO) {
        /* popped from the ring when it was selected */
    } else if (r->cfg.prioritized.enabled) {
        tree_set(r, s, 0.0);
    } else if (r->cfg.balance_sims) {
        uint32_t last = se->slots[se->count - 1];
        se->slots[sl->pos] = last;
        r->slots[last].pos = sl->pos;
    } else {
        uint32_t last = r->active[--r->nactive];
        r->active[sl->pos] = last;
        r->slots[last].pos = sl->pos;
    }
    sl->pos = NONE;
    sl->sim_entry = NONE;
    if (--se->count == 0) {
        live_remove(r, e);
        if (se->pending == 0) {
            sim_drop(r, e);
        }
    }
}

/* Put-order list and age sums: a sample becomes PRESENT (appended: it is
 * the newest) or leaves. They make the age stats O(1). */
static void
age_link(surge_reservoir *r, uint32_t s)
{
    struct slot *sl = &r->slots[s];
    sl->older = r->newest;
    sl->newer = NONE;
    if (r->newest != NONE) {
        r->slots[r->newest].newer = s;
    } else {
        r->oldest = s;
    }
    r->newest = s;
    r->sum_put_index += (i128)sl->put_index;
    r->sum_arrival_ns += (i128)sl->arrival_ns;
}

static void
age_unlink(surge_reservoir *r, uint32_t s)
{
    struct slot *sl = &r->slots[s];
    if (sl->older != NONE) {
        r->slots[sl->older].newer = sl->newer;
    } else {
        r->oldest = sl->newer;
    }
    if (sl->newer != NONE) {
        r->slots[sl->newer].older = sl->older;
    } else {
        r->newest = sl->older;
    }
    sl->older = sl->newer = NONE;
    r->sum_put_index -= (i128)sl->put_index;
    r->sum_arrival_ns -= (i128)sl->arrival_ns;
}

/* Remove PRESENT sample s: evicted (a put takes its slot) or retired
 * (used up; freed when its last pin goes). */
static void
remove_sample(surge_reservoir *r, uint32_t s, bool evicted)
{
    struct slot *sl = &r->slots[s];
    age_unlink(r, s);
    evict_remove(r, s);
    ds_remove(r, s);
    r->npresent--;
    r->uses_present[bucket(sl->uses)]--;
    r->uses_removed[bucket(sl->uses)]++;
    if (r->cfg.max_uses > 0) {
        r->uses_left_total -= r->cfg.max_uses - sl->uses;
    }
    if (evicted) {
        r->evictions++;
    } else {
        r->retired++;
        sl->state = SLOT_RETIRED;
    }
}

/* ------------------------------------------------------ streaming copy */

#ifdef HAVE_STREAM_STORES
/* Copy n bytes with streaming stores: memcpy up to a 16-byte aligned dst,
 * then 64 bytes per step, then memcpy the tail. SSE2 is in every x86-64. */
static void
copy_stream_sse2(uint8_t *dst, const uint8_t *src, size_t n)
{
    size_t head = (16 - ((uintptr_t)dst & 15)) & 15;
    if (head > n) {
        head = n;
    }
    memcpy(dst, src, head);
    size_t i = head;
    for (; i + 64 <= n; i += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)(src + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(src + i + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(src + i + 32));
        __m128i d = _mm_loadu_si128((const __m128i *)(src + i + 48));
        _mm_stream_si128((__m128i *)(dst + i), a);
        _mm_stream_si128((__m128i *)(dst + i + 16), b);
        _mm_stream_si128((__m128i *)(dst + i + 32), c);
        _mm_stream_si128((__m128i *)(dst + i + 48), d);
    }
    memcpy(dst + i, src + i, n - i);
}

/* The same with 32-byte AVX2 registers, 128 bytes per step. */
__attribute__((target("avx2"))) static void
copy_stream_avx2(uint8_t *dst, const uint8_t *src, size_t n)
{
    size_t head = (32 - ((uintptr_t)dst & 31)) & 31;
    if (head > n) {
        head = n;
    }
    memcpy(dst, src, head);
    size_t i = head;
    for (; i + 128 <= n; i += 128) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(src + i));
        __m256i b = _mm256_loadu_si256((const __m256i *)(src + i + 32));
        __m256i c = _mm256_loadu_si256((const __m256i *)(src + i + 64));
        __m256i d = _mm256_loadu_si256((const __m256i *)(src + i + 96));
        _mm256_stream_si256((__m256i *)(dst + i), a);
        _mm256_stream_si256((__m256i *)(dst + i + 32), b);
        _mm256_stream_si256((__m256i *)(dst + i + 64), c);
        _mm256_stream_si256((__m256i *)(dst + i + 96), d);
    }
    memcpy(dst + i, src + i, n - i);
}
#endif

/* ------------------------------------------------------------ create */

/* Empty every structure and counter, as right after create (the pool's
 * bytes stay as they are). Used by create and by a failed load. */
static void
reset_state(surge_reservoir *r)
{
    uint32_t n = r->nslots;
    for (uint32_t i = 0; i < n; i++) {
        /* Pop order 0, 1, 2...: the pool fills from its start. */
        r->free_stack[i] = n - 1 - i;
        r->sims_free[i] = n - 1 - i;
        struct slot *sl = &r->slots[i];
        uint32_t gen = sl->generation; /* stays unique across a reset */
        memset(sl, 0, sizeof(*sl));
        sl->generation = gen + 1;
        sl->pos = NONE;
        sl->pos_evict = NONE;
        sl->sim_entry = NONE;
        sl->older = sl->newer = NONE;
        struct sim_entry *se = &r->sims[i];
        se->count = 0;
        se->pending = 0;
        se->taken = 0;
        se->live_pos = NONE;
    }
    memset(r->sim_hash, 0, ((size_t)r->hash_mask + 1) * sizeof(uint32_t));
    r->nfree = n;
    r->nsims_free = n;
    r->nlive = 0;
    r->ring_head = 0;
    r->ring_count = 0;
    r->nactive = 0;
    r->active_taken = 0;
    r->nevictable = 0;
    if (r->tsum != NULL) {
        for (size_t i = 0; i < 2 * (size_t)r->tleaves; i++) {
            r->tsum[i] = 0.0;
            r->tmin[i] = INFINITY;
        }
    }
    r->max_prio = 1.0;
    r->beta = r->cfg.prioritized.beta;
    r->taken_n = 0;
    r->npresent = 0;
    r->nwriting = 0;
    r->oldest = r->newest = NONE;
    r->sum_put_index = 0;
    r->sum_arrival_ns = 0;
    r->uses_left_total = 0;
    surge_rng_seed(&r->rng, r->cfg.seed);
    r->puts = r->gets = r->batches = r->evictions = r->retired = 0;
    memset(r->uses_present, 0, sizeof(r->uses_present));
    memset(r->uses_removed, 0, sizeof(r->uses_removed));
    r->served_age_sum = 0.0;
    r->producer_waits = r->consumer_waits = 0;
    r->producer_wait_s = r->consumer_wait_s = 0.0;
    r->rate_overrides = 0;
    r->prio_updates = r->prio_ignored = 0;
}

int
surge_reservoir_create(surge_reservoir **rp, const surge_reservoir_config *cfg,
                       char *err, size_t errlen)
{
    size_t sample_bytes, slot_bytes, nslots;
    int rc = surge_reservoir_config_check(cfg, err, errlen);
    if (rc != 0) {
        return rc;
    }
    derive_sizes(cfg, &sample_bytes, &slot_bytes, &nslots, NULL, 0);

    surge_reservoir *r = surge_calloc(1, sizeof(*r));
    if (r == NULL) {
        surge_set_err(err, errlen, "reservoir: out of memory");
        return -ENOMEM;
    }
    r->cfg = *cfg;
    r->in_bytes = cfg->input_dim * sizeof(float);
    r->out_bytes = cfg->output_dim * sizeof(float);
    r->sample_bytes = sample_bytes;
    r->slot_bytes = slot_bytes;
    r->nslots = (uint32_t)nslots;
    if (cfg->policy == SURGE_RESERVOIR_RESERVOIR) {
        size_t wm = cfg->watermark;
        if (wm == 0) {
            wm = cfg->max_batch < nslots ? cfg->max_batch : nslots;
        }
        r->wm = (uint32_t)wm;
    } else {
        r->wm = (uint32_t)cfg->watermark;
    }
#ifdef HAVE_STREAM_STORES
    __builtin_cpu_init();
    r->copy_stream =
        __builtin_cpu_supports("avx2") ? copy_stream_avx2 : copy_stream_sse2;
#endif
    r->uniform = cfg->policy != SURGE_RESERVOIR_FIFO &&
                 !cfg->prioritized.enabled && !cfg->balance_sims;

    /* Every array is sized by nslots and allocated once. */
    size_t n = nslots;
    uint32_t hlen = 1;
    while (hlen < 2 * n) {
        hlen <<= 1;
    }
    r->hash_mask = hlen - 1;
    r->slots = surge_calloc(n, sizeof(*r->slots));
    r->free_stack = surge_malloc(n * sizeof(uint32_t));
    r->sims = surge_calloc(n, sizeof(*r->sims));
    r->sims_free = surge_malloc(n * sizeof(uint32_t));
    r->sims_live = surge_malloc(n * sizeof(uint32_t));
    r->sim_hash = surge_calloc(hlen, sizeof(uint32_t));
    if (r->slots == NULL || r->free_stack == NULL || r->sims == NULL ||
        r->sims_free == NULL || r->sims_live == NULL || r->sim_hash == NULL) {
        goto fail_nomem;
    }
    if (cfg->policy == SURGE_RESERVOIR_FIFO) {
        r->ring = surge_malloc(n * sizeof(uint32_t));
        if (r->ring == NULL) {
            goto fail_nomem;
        }
    }
    if (r->uniform) {
        r->active = surge_malloc(n * sizeof(uint32_t));
        if (r->active == NULL) {
            goto fail_nomem;
        }
    }
    if (cfg->policy == SURGE_RESERVOIR_RESERVOIR) {
        r->evictable = surge_malloc(n * sizeof(uint32_t));
        if (r->evictable == NULL) {
            goto fail_nomem;
        }
    }
    if (cfg->prioritized.enabled) {
        r->tleaves = 1;
        while (r->tleaves < n) {
            r->tleaves <<= 1;
        }
        r->tsum = surge_calloc(2 * (size_t)r->tleaves, sizeof(double));
        r->tmin = surge_malloc(2 * (size_t)r->tleaves * sizeof(double));
        r->taken_s = surge_malloc(n * sizeof(uint32_t));
        if (r->tsum == NULL || r->tmin == NULL || r->taken_s == NULL) {
            goto fail_nomem;
        }
    }
    reset_state(r);

    r->pool_mapped = n * slot_bytes;
    r->pool = surge_huge_alloc(r->pool_mapped);
    if (r->pool == NULL) {
        surge_set_err(err, errlen,
                      "reservoir.capacity_bytes: cannot map %zu bytes for %zu "
                      "slots: out of memory",
                      n * slot_bytes, n);
        rc = -ENOMEM;
        goto fail;
    }

    if (pthread_mutex_init(&r->mu, NULL) != 0) {
        goto fail_nomem;
    }
    if (surge_cond_init_monotonic(&r->cv_put) != 0) {
        goto fail_mutex;
    }
    if (surge_cond_init_monotonic(&r->cv_get) != 0) {
        goto fail_cv_put;
    }
    *rp = r;
    return 0;

fail_cv_put:
    pthread_cond_destroy(&r->cv_put);
fail_mutex:
    pthread_mutex_destroy(&r->mu);
fail_nomem:
    surge_set_err(err, errlen, "reservoir: out of memory for %zu slots", n);
    rc = -ENOMEM;
fail:
    surge_huge_free(r->pool, r->pool_mapped);
    free(r->taken_s);
    free(r->tmin);
    free(r->tsum);
    free(r->evictable);
    free(r->active);
    free(r->ring);
    free(r->sim_hash);
    free(r->sims_live);
    free(r->sims_free);
    free(r->sims);
    free(r->free_stack);
    free(r->slots);
    free(r);
    return rc;
}

void
surge_reservoir_destroy(surge_reservoir **rp)
{
    if (rp == NULL || *rp == NULL) {
        return;
    }
    surge_reservoir *r = *rp;
    pthread_cond_destroy(&r->cv_get);
    pthread_cond_destroy(&r->cv_put);
    pthread_mutex_destroy(&r->mu);
    surge_huge_free(r->pool, r->pool_mapped);
    for (uint32_t i = 0; i < r->nslots; i++) {
        free(r->sims[i].slots);
    }
    free(r->taken_s);
    free(r->tmin);
    free(r->tsum);
    free(r->evictable);
    free(r->active);
    free(r->ring);
    free(r->sim_hash);
    free(r->sims_live);
    free(r->sims_free);
    free(r->sims);
    free(r->free_stack);
    free(r->slots);
    free(r);
    *rp = NULL;
}

/* ------------------------------------------------------------ waiting */

struct waiter {
    int timeout_ms;     /* as given by the caller */
    struct timespec dl; /* absolute CLOCK_MONOTONIC deadline */
    int64_t t0;         /* when the first wait began, 0 = not yet */
};

static void
waiter_init(struct waiter *w, int timeout_ms)
{
    w->timeout_ms = timeout_ms;
    w->t0 = 0;
}

/* Wait once on cv. Returns 0 to re-check the condition, or
 * SURGE_ETIMEDOUT when the deadline has passed (check one last time
 * before giving up is the caller's loop: it re-checks first). */
static int
waiter_wait(struct waiter *w, pthread_cond_t *cv, pthread_mutex_t *mu)
{
    if (w->timeout_ms == 0) {
        return SURGE_ETIMEDOUT;
    }
    if (w->t0 == 0) {
        w->t0 = now_ns();
        if (w->timeout_ms > 0) {
            int64_t dl = w->t0 + (int64_t)w->timeout_ms * 1000000;
            w->dl.tv_sec = dl / 1000000000;
            w->dl.tv_nsec = dl % 1000000000;
        }
    }
    if (w->timeout_ms < 0) {
        pthread_cond_wait(cv, mu);
        return 0;
    }
    int rc = pthread_cond_timedwait(cv, mu, &w->dl);
    return rc == ETIMEDOUT ? SURGE_ETIMEDOUT : 0;
}

static double
waiter_elapsed(const struct waiter *w)
{
    return w->t0 == 0 ? 0.0 : (double)(now_ns() - w->t0) * 1e-9;
}

/* Would a consumer be starved of data right now (RESERVOIR, before end of
 * reception)? Then the producer must not be held back. */
static bool
consumer_starved(const surge_reservoir *r)
{
    if (r->npresent < (r->wm > 0 ? r->wm : 1)) {
        return true;
    }
    return r->cfg.max_uses > 0 && r->uses_left_total < r->cfg.max_batch;
}

/* Rate limiter, producer side: may one more sample be put? count: this
 * is the real decision (count an override), not a look. */
static bool
rate_put_ok(surge_reservoir *r, bool count)
{
    double spi = r->cfg.rate.samples_per_insert;
    if (spi <= 0.0) {
        return true;
    }
    double p = (double)(r->puts + r->nwriting);
    if ((p + 1.0) * spi - (double)r->gets <= r->cfg.rate.max_diff) {
        return true;
    }
    if (consumer_starved(r)) {
        r->rate_overrides += count;
        return true;
    }
    return false;
}

/* Rate limiter, consumer side: may a batch of B rows be served? */
static bool
rate_get_ok(surge_reservoir *r, size_t B)
{
    double spi = r->cfg.rate.samples_per_insert;
    if (spi <= 0.0) {
        return true;
    }
    double p = (double)(r->puts + r->nwriting);
    if (p * spi - (double)(r->gets + B) >= r->cfg.rate.min_diff) {
        return true;
    }
    /* The producer waits for room (full, nothing evictable): only a batch
     * can make room, so let it through. */
    if (r->nfree == 0 && r->nevictable == 0) {
        r->rate_overrides++;
        return true;
    }
    return false;
}

static bool
room_for_put(const surge_reservoir *r)
{
    return r->nfree > 0 || r->nevictable > 0;
}

/* Before end of reception: is there data for a batch of B? */
static bool
data_ready(const surge_reservoir *r, size_t B)
{
    if (r->cfg.policy == SURGE_RESERVOIR_RESERVOIR) {
        if (r->npresent < (r->wm > 0 ? r->wm : 1)) {
            return false;
        }
        return r->cfg.max_uses == 0 || r->uses_left_total >= B;
    }
    size_t need = B > r->wm ? B : r->wm;
    return r->npresent >= need;
}

/* ---------------------------------------------------------------- put */

/* A reservation ends without a sample (abort, or commit after shutdown):
 * the WRITING slot goes back to the free list. Lock held. */
static void
release_reservation(surge_reservoir *r, uint32_t s)
{
    struct slot *sl = &r->slots[s];
    uint32_t e = sl->sim_entry;
    struct sim_entry *se = &r->sims[e];
    se->pending--;
    if (se->count == 0 && se->pending == 0) {
        sim_drop(r, e);
    }
    sl->sim_entry = NONE;
    sl->state = SLOT_FREE;
    r->free_stack[r->nfree++] = s;
    r->nwriting--;
    /* Room for a producer, a lower count for the rate limiter, and maybe
     * the last reservation a draining consumer was waiting for. */
    pthread_cond_broadcast(&r->cv_put);
    pthread_cond_broadcast(&r->cv_get);
}

/* Does ps name a reservation of r that is still open? Lock held. */
static bool
reservation_open(const surge_reservoir *r, const surge_reservoir_slot *ps)
{
    return ps != NULL && ps->slot < r->nslots &&
           r->slots[ps->slot].state == SLOT_WRITING &&
           r->slots[ps->slot].generation == ps->generation;
}

int
surge_reservoir_put_begin(surge_reservoir *r, const surge_sample_meta *meta,
                          int timeout_ms, surge_reservoir_slot *ps)
{
    if (ps == NULL) {
        return -EINVAL;
    }
    uint64_t sim = meta != NULL ? meta->sim : 0;
    struct waiter w;
    waiter_init(&w, timeout_ms);
    int rc = 0;

    pthread_mutex_lock(&r->mu);
    for (;;) {
        if (r->closed) {
            rc = SURGE_ECLOSED;
            break;
        }
        if (r->ended) {
            rc = SURGE_ESTATE;
            break;
        }
        if (room_for_put(r) && rate_put_ok(r, true)) {
            break;
        }
        if (waiter_wait(&w, &r->cv_put, &r->mu) != 0) {
            /* One last look: the condition may have turned true just as
             * the deadline passed. */
            if (!r->closed && !r->ended && room_for_put(r) &&
                rate_put_ok(r, true)) {
                break;
            }
            rc = r->closed ? SURGE_ECLOSED
                           : (r->ended ? SURGE_ESTATE : SURGE_ETIMEDOUT);
            break;
        }
    }
    if (w.t0 != 0) {
        r->producer_waits++;
        r->producer_wait_s += waiter_elapsed(&w);
    }
    if (rc == SURGE_ETIMEDOUT) {
        r->producer_refused = true;
    }
    if (rc != 0) {
        pthread_mutex_unlock(&r->mu);
        return rc;
    }

    /* Reserve a slot: a free one, else evict a used, unpinned sample. */
    uint32_t s;
    bool from_free = r->nfree > 0;
    if (from_free) {
        s = r->free_stack[--r->nfree];
    } else {
        s = r->evictable[rng_below(r, r->nevictable)];
        remove_sample(r, s, true);
    }
    uint32_t e = sim_get(r, sim);
    if (r->cfg.balance_sims) {
        rc = sim_reserve_array(r, e);
        if (rc != 0) {
            /* Out of memory: the slot goes back to the free list (an
             * evicted sample had been used: nothing unseen is lost). */
            if (r->sims[e].count == 0 && r->sims[e].pending == 0) {
                sim_drop(r, e);
            }
            r->slots[s].state = SLOT_FREE;
            r->free_stack[r->nfree++] = s;
            pthread_mutex_unlock(&r->mu);
            return rc;
        }
    }
    struct slot *sl = &r->slots[s];
    sl->state = SLOT_WRITING;
    sl->generation++;
    sl->sim_entry = e;
    r->sims[e].pending++;
    r->nwriting++;
    uint32_t gen = sl->generation;
    pthread_mutex_unlock(&r->mu);

    /* The caller fills the slot unlocked: nobody else touches a WRITING
     * slot (it is never drawn, evicted, saved or handed out again). */
    uint8_t *dst = r->pool + (size_t)s * r->slot_bytes;
    ps->input = r->in_bytes > 0 ? (float *)dst : NULL;
    ps->output = r->out_bytes > 0 ? (float *)(dst + r->in_bytes) : NULL;
    ps->slot = s;
    ps->generation = gen;
    if (meta != NULL) {
        ps->meta = *meta;
    } else {
        ps->meta = (surge_sample_meta){0, 0, 0};
    }
    return 0;
}

void
surge_reservoir_slot_write(surge_reservoir *r, void *dst, const void *src,
                           size_t n)
{
    if (r->copy_stream != NULL && n >= STREAM_MIN_WRITE_BYTES) {
        r->copy_stream(dst, src, n);
    } else {
        memcpy(dst, src, n);
    }
}

int
surge_reservoir_put_commit(surge_reservoir *r, surge_reservoir_slot *ps)
{
#ifdef HAVE_STREAM_STORES
    /* Streaming stores of slot_write are weakly ordered: make them visible
     * before the slot is published to consumers. */
    _mm_sfence();
#endif
    int64_t arrival =
        ps != NULL && ps->meta.arrival_ns != 0 ? ps->meta.arrival_ns : now_ns();
    pthread_mutex_lock(&r->mu);
    if (!reservation_open(r, ps)) {
        pthread_mutex_unlock(&r->mu);
        return -EINVAL;
    }
    uint32_t s = ps->slot;
    ps->slot = NONE;
    ps->input = ps->output = NULL;
    if (r->closed) {
        /* Shut down while reserved: nothing is stored, as for a put
         * waiting at that moment. */
        release_reservation(r, s);
        pthread_mutex_unlock(&r->mu);
        return SURGE_ECLOSED;
    }
    struct slot *sl = &r->slots[s];
    sl->sim = ps->meta.sim;
    sl->step = ps->meta.step;
    sl->arrival_ns = arrival;
    sl->uses = 0;
    sl->pins = 0;
    sl->pos_evict = NONE;
    sl->state = SLOT_PRESENT;
    ds_add(r, s);
    r->nwriting--;
    r->npresent++;
    r->puts++;
    sl->put_index = r->puts;
    age_link(r, s);
    r->uses_present[0]++;
    r->uses_left_total += r->cfg.max_uses;
    pthread_cond_broadcast(&r->cv_get);
    pthread_mutex_unlock(&r->mu);
    return 0;
}

void
surge_reservoir_put_abort(surge_reservoir *r, surge_reservoir_slot *ps)
{
    pthread_mutex_lock(&r->mu);
    if (reservation_open(r, ps)) {
        release_reservation(r, ps->slot);
    }
    if (ps != NULL) {
        ps->slot = NONE;
        ps->input = ps->output = NULL;
    }
    pthread_mutex_unlock(&r->mu);
}

int
surge_reservoir_put(surge_reservoir *r, const float *input, const float *output,
                    const surge_sample_meta *meta, int timeout_ms)
{
    if ((input == NULL && r->in_bytes > 0) ||
        (output == NULL && r->out_bytes > 0)) {
        return -EINVAL;
    }
    surge_reservoir_slot slot;
    int rc = surge_reservoir_put_begin(r, meta, timeout_ms, &slot);
    if (rc != 0) {
        return rc;
    }
    if (r->in_bytes > 0) {
        surge_reservoir_slot_write(r, slot.input, input, r->in_bytes);
    }
    if (r->out_bytes > 0) {
        surge_reservoir_slot_write(r, slot.output, output, r->out_bytes);
    }
    return surge_reservoir_put_commit(r, &slot);
}

/* ------------------------------------------------------------ batches */

/* Draw one slot for a batch in progress. replace: may the same sample come
 * again in this batch (RESERVOIR before end of reception)? *cursor and *m
 * carry the balance_sims round robin across rows. */
static uint32_t
draw_one(surge_reservoir *r, bool replace, uint32_t *cursor, uint32_t *m)
{
    uint32_t s;
    if (r->cfg.policy == SURGE_RESERVOIR_FIFO) {
        s = r->ring[r->ring_head];
        r->ring_head = (r->ring_head + 1) % r->nslots;
        r->ring_count--;
        return s;
    }
    if (r->cfg.prioritized.enabled) {
        s = tree_draw(r);
        if (!replace) {
            tree_set(r, s, 0.0);
            r->taken_s[r->taken_n++] = s;
        }
        return s;
    }
    if (r->cfg.balance_sims) {
        struct sim_entry *se;
        for (;;) {
            /* First round: pick the next simulation at random among those
             * not yet in this batch (partial Fisher-Yates). Later rounds
             * cycle over all of them. */
            if (*m < r->nlive && *cursor == *m) {
                uint32_t j = *m + rng_below(r, r->nlive - *m);
                live_swap(r, *m, j);
                (*m)++;
            }
            if (*cursor >= *m) {
                *cursor = 0;
            }
            se = &r->sims[r->sims_live[(*cursor)++]];
            if (se->count > se->taken) {
                break;
            }
        }
        uint32_t j = se->taken + rng_below(r, se->count - se->taken);
        s = se->slots[j];
        if (!replace) {
            uint32_t t = se->slots[se->taken];
            se->slots[se->taken] = s;
            se->slots[j] = t;
            r->slots[s].pos = se->taken;
            r->slots[t].pos = j;
            se->taken++;
            r->taken_n++;
        }
        return s;
    }
    uint32_t j = r->active_taken + rng_below(r, r->nactive - r->active_taken);
    s = r->active[j];
    if (!replace) {
        uint32_t t = r->active[r->active_taken];
        r->active[r->active_taken] = s;
        r->active[j] = t;
        r->slots[s].pos = r->active_taken;
        r->slots[t].pos = j;
        r->active_taken++;
        r->taken_n++;
    }
    return s;
}

/* With replacement, a sample that reached max_uses mid-batch must not be
 * drawn again: exclude it like a without-replacement draw. */
static void
exclude(surge_reservoir *r, uint32_t s)
{
    struct slot *sl = &r->slots[s];
    if (r->cfg.prioritized.enabled) {
        tree_set(r, s, 0.0);
        r->taken_s[r->taken_n++] = s;
    } else if (r->cfg.balance_sims) {
        struct sim_entry *se = &r->sims[sl->sim_entry];
        uint32_t j = sl->pos;
        uint32_t t = se->slots[se->taken];
        se->slots[se->taken] = s;
        se->slots[j] = t;
        r->slots[s].pos = se->taken;
        r->slots[t].pos = j;
        se->taken++;
        r->taken_n++;
    } else {
        uint32_t j = sl->pos;
        uint32_t t = r->active[r->active_taken];
        r->active[r->active_taken] = s;
        r->active[j] = t;
        r->slots[s].pos = r->active_taken;
        r->slots[t].pos = j;
        r->active_taken++;
        r->taken_n++;
    }
}

/* Select n rows under the lock: pin, count uses, fill info, retire what is
 * used up. */
static void
select_rows(surge_reservoir *r, size_t n, uint32_t *rows,
            surge_batch_info *info)
{
    bool resv = r->cfg.policy == SURGE_RESERVOIR_RESERVOIR;
    bool replace = resv && !r->ended;
    bool prio = r->cfg.prioritized.enabled;
    double pmin = prio ? r->tmin[1] : 0.0;
    uint32_t cursor = 0, m = 0;

    r->taken_n = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t s = draw_one(r, replace, &cursor, &m);
        struct slot *sl = &r->slots[s];
        rows[i] = s;
        if (sl->pins++ == 0) {
            evict_remove(r, s);
        }
        r->uses_present[bucket(sl->uses)]--;
        sl->uses++;
        r->uses_present[bucket(sl->uses)]++;
        if (r->cfg.max_uses > 0) {
            r->uses_left_total--;
            if (replace && sl->uses >= r->cfg.max_uses) {
                exclude(r, s);
            }
        }
        r->served_age_sum += (double)(r->puts - sl->put_index);
        if (info != NULL) {
            info[i].slot = s;
            info[i].generation = sl->generation;
            info[i].sim = sl->sim;
            info[i].step = sl->step;
            info[i].uses = sl->uses;
            info[i].weight = prio && sl->prio > 0.0
                                 ? (float)pow(pmin / sl->prio, r->beta)
                                 : 1.0f;
        }
    }

    /* Put the excluded samples back before anything is removed: removal
     * swaps array entries and must see a batch-free layout. */
    if (prio) {
        for (uint32_t k = 0; k < r->taken_n; k++) {
            uint32_t s = r->taken_s[k];
            tree_set(r, s, r->slots[s].prio);
        }
    } else if (r->cfg.balance_sims) {
        for (uint32_t k = 0; k < m; k++) {
            r->sims[r->sims_live[k]].taken = 0;
        }
    }
    r->active_taken = 0;
    r->taken_n = 0;

    for (size_t i = 0; i < n; i++) {
        uint32_t s = rows[i];
        struct slot *sl = &r->slots[s];
        if (sl->state != SLOT_PRESENT) {
            continue; /* drawn twice in this batch and already retired */
        }
        bool done;
        switch (r->cfg.policy) {
        case SURGE_RESERVOIR_FIFO:
            done = true;
            break;
        case SURGE_RESERVOIR_FIRO:
            done = sl->uses >= r->cfg.epochs;
            break;
        default:
            done = r->ended ||
                   (r->cfg.max_uses > 0 && sl->uses >= r->cfg.max_uses);
            break;
        }
        if (done) {
            remove_sample(r, s, false);
        }
    }
}

/* Release the pins of a batch after its copy. */
static void
unpin_rows(surge_reservoir *r, size_t n, const uint32_t *rows)
{
    bool wake = false;
    bool resv = r->cfg.policy == SURGE_RESERVOIR_RESERVOIR;
    for (size_t i = 0; i < n; i++) {
        uint32_t s = rows[i];
        struct slot *sl = &r->slots[s];
        if (--sl->pins > 0) {
            continue;
        }
        if (sl->state == SLOT_RETIRED) {
            sl->state = SLOT_FREE;
            r->free_stack[r->nfree++] = s;
            wake = true;
        } else if (resv && sl->state == SLOT_PRESENT && sl->uses > 0 &&
                   sl->pos_evict == NONE) {
            evict_add(r, s);
            wake = true;
        }
    }
    if (wake) {
        pthread_cond_broadcast(&r->cv_put);
    }
}

/* Wait for a batch as the policy says, then select and pin its n rows
 * (slot ids in rows[n]). Returns n > 0, 0 (finished) or an error; the lock
 * is not held on return. */
static long
take_rows(surge_reservoir *r, size_t B, uint32_t *rows, surge_batch_info *info,
          int timeout_ms)
{
    struct waiter w;
    waiter_init(&w, timeout_ms);
    long rc = 0;
    size_t n = 0;

    pthread_mutex_lock(&r->mu);
    for (;;) {
        if (r->closed) {
            rc = SURGE_ECLOSED;
            break;
        }
        if (r->ended) {
            if (r->npresent > 0) {
                n = B < r->npresent ? B : r->npresent;
                break;
            }
            if (r->nwriting == 0) {
                rc = 0; /* finished */
                break;
            }
        } else if (data_ready(r, B) && rate_get_ok(r, B)) {
            n = B;
            break;
        }
        if (waiter_wait(&w, &r->cv_get, &r->mu) != 0) {
            rc = r->closed ? SURGE_ECLOSED : SURGE_ETIMEDOUT;
            /* One last look (as in put). */
            if (!r->closed) {
                if (r->ended && r->npresent > 0) {
                    n = B < r->npresent ? B : r->npresent;
                    rc = 0;
                } else if (r->ended && r->nwriting == 0) {
                    rc = 0;
                } else if (!r->ended && data_ready(r, B) && rate_get_ok(r, B)) {
                    n = B;
                    rc = 0;
                }
            }
            break;
        }
    }
    if (w.t0 != 0) {
        r->consumer_waits++;
        r->consumer_wait_s += waiter_elapsed(&w);
    }
    if (n == 0) {
        pthread_mutex_unlock(&r->mu);
        return rc;
    }
    select_rows(r, n, rows, info);
    r->gets += n;
    r->batches++;
    /* The rate limiter moved: a producer held back may go on. */
    pthread_cond_broadcast(&r->cv_put);
    pthread_mutex_unlock(&r->mu);

    return (long)n;
}

/* Unpin n rows taken by take_rows: free what is used up, wake producers,
 * and tell a refused producer once that it may put again. */
static void
release_rows(surge_reservoir *r, size_t n, const uint32_t *rows)
{
    pthread_mutex_lock(&r->mu);
    unpin_rows(r, n, rows);
    /* A drain may just have emptied the reservoir: other consumers waiting
     * for it must see that they are finished. */
    if (r->ended && r->npresent == 0) {
        pthread_cond_broadcast(&r->cv_get);
    }
    /* A producer that was turned away can put again: tell it once. */
    surge_reservoir_notify_cb cb = NULL;
    void *cb_arg = NULL;
    if (r->producer_refused && r->notify_cb != NULL && !r->ended &&
        !r->closed && room_for_put(r) && rate_put_ok(r, false)) {
        r->producer_refused = false;
        cb = r->notify_cb;
        cb_arg = r->notify_arg;
    }
    pthread_mutex_unlock(&r->mu);
    if (cb != NULL) {
        cb(cb_arg);
    }
}

long
surge_reservoir_get_batch(surge_reservoir *r, size_t B, float *inputs,
                          float *outputs, surge_batch_info *info,
                          int timeout_ms)
{
    if (B == 0 || B > r->cfg.max_batch || (inputs == NULL && r->in_bytes > 0) ||
        (outputs == NULL && r->out_bytes > 0)) {
        return -EINVAL;
    }
    uint32_t stack_rows[STACK_ROWS];
    uint32_t *rows = stack_rows;
    if (B > STACK_ROWS) {
        rows = surge_malloc(B * sizeof(uint32_t));
        if (rows == NULL) {
            return -ENOMEM;
        }
    }
    long got = take_rows(r, B, rows, info, timeout_ms);
    if (got <= 0) {
        if (rows != stack_rows) {
            free(rows);
        }
        return got;
    }
    size_t n = (size_t)got;

    /* Gather without the lock: the rows are pinned. */
    const size_t slot_bytes = r->slot_bytes;
    const size_t in_bytes = r->in_bytes, out_bytes = r->out_bytes;
    const uint8_t *pool = r->pool;
    uint8_t *in8 = (uint8_t *)inputs, *out8 = (uint8_t *)outputs;
    if (r->copy_stream != NULL &&
        n * r->sample_bytes >= STREAM_MIN_BATCH_BYTES) {
        for (size_t i = 0; i < n; i++) {
            const uint8_t *src = pool + (size_t)rows[i] * slot_bytes;
            if (in_bytes > 0) {
                memcpy(in8 + i * in_bytes, src, in_bytes);
            }
            if (out_bytes > 0) {
                r->copy_stream(out8 + i * out_bytes, src + in_bytes, out_bytes);
            }
        }
#ifdef HAVE_STREAM_STORES
        /* Streaming stores are weakly ordered: fence them before the
         * caller hands the batch to another thread or a device. */
        _mm_sfence();
#endif
    } else {
        for (size_t i = 0; i < n; i++) {
            const uint8_t *src = pool + (size_t)rows[i] * slot_bytes;
            if (in_bytes > 0) {
                memcpy(in8 + i * in_bytes, src, in_bytes);
            }
            if (out_bytes > 0) {
                memcpy(out8 + i * out_bytes, src + in_bytes, out_bytes);
            }
        }
    }

    release_rows(r, n, rows);
    if (rows != stack_rows) {
        free(rows);
    }
    return (long)n;
}

long
surge_reservoir_get_batch_view(surge_reservoir *r, size_t B, uint32_t *slots,
                               const float **inputs, const float **outputs,
                               surge_batch_info *info, int timeout_ms)
{
    if (B == 0 || B > r->cfg.max_batch || slots == NULL) {
        return -EINVAL;
    }
    long n = take_rows(r, B, slots, info, timeout_ms);
    for (long i = 0; i < n; i++) {
        const uint8_t *src = r->pool + (size_t)slots[i] * r->slot_bytes;
        if (inputs != NULL) {
            inputs[i] = r->in_bytes > 0 ? (const float *)src : NULL;
        }
        if (outputs != NULL) {
            outputs[i] =
                r->out_bytes > 0 ? (const float *)(src + r->in_bytes) : NULL;
        }
    }
    return n;
}

void
surge_reservoir_release_view(surge_reservoir *r, const uint32_t *slots,
                             size_t n)
{
    if (n > 0 && slots != NULL) {
        release_rows(r, n, slots);
    }
}

/* --------------------------------------------------------- priorities */

long
surge_reservoir_update_priorities(surge_reservoir *r,
                                  const surge_batch_info *info,
                                  const float *loss, size_t n)
{
    if (!r->cfg.prioritized.enabled) {
        return SURGE_ESTATE;
    }
    if (n > 0 && (info == NULL || loss == NULL)) {
        return -EINVAL;
    }
    long applied = 0;
    double alpha = r->cfg.prioritized.alpha;
    double eps = r->cfg.prioritized.epsilon;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < n; i++) {
        uint32_t s = info[i].slot;
        double l = loss[i];
        if (s >= r->nslots || r->slots[s].generation != info[i].generation ||
            r->slots[s].state != SLOT_PRESENT || !isfinite(l) || l < 0.0) {
            r->prio_ignored++;
            continue;
        }
        double p = pow(l + eps, alpha);
        if (!(p > 0.0) || !isfinite(p)) {
            r->prio_ignored++;
            continue;
        }
        r->slots[s].prio = p;
        if (p > r->max_prio) {
            r->max_prio = p;
        }
        tree_set(r, s, p);
        r->prio_updates++;
        applied++;
    }
    pthread_mutex_unlock(&r->mu);
    return applied;
}

int
surge_reservoir_set_beta(surge_reservoir *r, double beta)
{
    if (!r->cfg.prioritized.enabled) {
        return SURGE_ESTATE;
    }
    if (!(beta >= 0.0 && beta <= 1.0)) {
        return -EINVAL;
    }
    pthread_mutex_lock(&r->mu);
    r->beta = beta;
    pthread_mutex_unlock(&r->mu);
    return 0;
}

void
surge_reservoir_set_notify(surge_reservoir *r, surge_reservoir_notify_cb cb,
                           void *arg)
{
    pthread_mutex_lock(&r->mu);
    r->notify_cb = cb;
    r->notify_arg = arg;
    pthread_mutex_unlock(&r->mu);
}

/* ------------------------------------------------------- end, shutdown */

void
surge_reservoir_end_reception(surge_reservoir *r)
{
    pthread_mutex_lock(&r->mu);
    r->ended = true;
    pthread_cond_broadcast(&r->cv_put);
    pthread_cond_broadcast(&r->cv_get);
    pthread_mutex_unlock(&r->mu);
}

void
surge_reservoir_shutdown(surge_reservoir *r)
{
    pthread_mutex_lock(&r->mu);
    r->closed = true;
    pthread_cond_broadcast(&r->cv_put);
    pthread_cond_broadcast(&r->cv_get);
    pthread_mutex_unlock(&r->mu);
}

/* -------------------------------------------------------------- stats */

void
surge_reservoir_get_stats(surge_reservoir *r, surge_reservoir_stats *st)
{
    memset(st, 0, sizeof(*st));
    int64_t now = now_ns();
    pthread_mutex_lock(&r->mu);
    st->policy = r->cfg.policy;
    st->capacity_samples = r->nslots;
    st->capacity_bytes = (size_t)r->nslots * r->slot_bytes;
    st->sample_bytes = r->sample_bytes;
    st->slot_bytes = r->slot_bytes;
    st->occupancy_samples = r->npresent;
    st->occupancy_bytes = (size_t)r->npresent * r->sample_bytes;
    st->puts = r->puts;
    st->gets = r->gets;
    st->batches = r->batches;
    st->evictions = r->evictions;
    st->retired = r->retired;
    memcpy(st->uses_present, r->uses_present, sizeof(st->uses_present));
    memcpy(st->uses_removed, r->uses_removed, sizeof(st->uses_removed));
    if (r->npresent > 0) {
        double n = (double)r->npresent;
        st->age_mean_puts = (double)r->puts - (double)r->sum_put_index / n;
        st->age_mean_s = ((double)now - (double)r->sum_arrival_ns / n) * 1e-9;
        const struct slot *old = &r->slots[r->oldest];
        st->age_max_puts = r->puts - old->put_index;
        st->age_max_s = (double)(now - old->arrival_ns) * 1e-9;
    }
    st->served_age_mean_puts =
        r->gets > 0 ? r->served_age_sum / (double)r->gets : 0.0;
    st->distinct_sims = r->nlive;
    st->producer_waits = r->producer_waits;
    st->producer_wait_s = r->producer_wait_s;
    st->consumer_waits = r->consumer_waits;
    st->consumer_wait_s = r->consumer_wait_s;
    st->rate_overrides = r->rate_overrides;
    st->priority_updates = r->prio_updates;
    st->priority_updates_ignored = r->prio_ignored;
    st->reception_ended = r->ended;
    st->finished = r->ended && r->npresent == 0 && r->nwriting == 0;
    st->closed = r->closed;
    pthread_mutex_unlock(&r->mu);
}

/* --------------------------------------------------- checkpoint/resume */

/* Stream format, version 1, host byte order (little-endian hosts only, see
 * the static assertion): header, one record per sample present in drawing
 * order (FIFO: oldest first), the eviction list, a trailer. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "reservoir checkpoints assume a little-endian host"
#endif

static const char SAVE_MAGIC[8] = {'S', 'U', 'R', 'G', 'R', 'S', 'V', '1'};
static const char SAVE_END[8] = {'S', 'U', 'R', 'G', 'E', 'N', 'D', '1'};
#define SAVE_VERSION 1u

struct save_header {
    char magic[8];
    uint32_t version;
    uint32_t policy;
    uint64_t input_dim, output_dim;
    uint32_t epochs, max_uses;
    uint32_t balance_sims, prioritized;
    uint64_t nslots; /* of the saved reservoir: slots are restored as is */
    uint64_t nsamples;
    uint64_t puts, gets, batches, evictions, retired;
    uint64_t uses_removed[SURGE_RESERVOIR_USES_BUCKETS];
    double served_age_sum, max_prio, beta;
    uint64_t rng[4];
    uint64_t producer_waits, consumer_waits;
    double producer_wait_s, consumer_wait_s;
    uint64_t rate_overrides, prio_updates, prio_ignored;
};

struct save_record {
    uint32_t slot, generation, uses, pad;
    uint64_t sim, step, put_index;
    int64_t age_ns; /* arrival is relative: monotonic clocks differ */
    double prio;
};

static int
save_one(surge_reservoir *r, uint32_t s, int64_t now,
         surge_reservoir_write_cb cb, void *arg)
{
    const struct slot *sl = &r->slots[s];
    struct save_record rec;
    memset(&rec, 0, sizeof(rec));
    rec.slot = s;
    rec.generation = sl->generation;
    rec.uses = sl->uses;
    rec.sim = sl->sim;
    rec.step = sl->step;
    rec.put_index = sl->put_index;
    rec.age_ns = now - sl->arrival_ns;
    rec.prio = sl->prio;
    int rc = cb(arg, &rec, sizeof(rec));
    if (rc == 0) {
        rc = cb(arg, r->pool + (size_t)s * r->slot_bytes, r->sample_bytes);
    }
    return rc;
}

int
surge_reservoir_save(surge_reservoir *r, surge_reservoir_write_cb cb, void *arg)
{
    struct save_header h;
    memset(&h, 0, sizeof(h));
    int64_t now = now_ns();
    int rc = 0;
    pthread_mutex_lock(&r->mu);
    memcpy(h.magic, SAVE_MAGIC, sizeof(h.magic));
    h.version = SAVE_VERSION;
    h.policy = (uint32_t)r->cfg.policy;
    h.input_dim = r->cfg.input_dim;
    h.output_dim = r->cfg.output_dim;
    h.epochs = r->cfg.epochs;
    h.max_uses = r->cfg.max_uses;
    h.balance_sims = r->cfg.balance_sims;
    h.prioritized = r->cfg.prioritized.enabled;
    h.nslots = r->nslots;
    h.nsamples = r->npresent;
    h.puts = r->puts;
    h.gets = r->gets;
    h.batches = r->batches;
    h.evictions = r->evictions;
    h.retired = r->retired;
    memcpy(h.uses_removed, r->uses_removed, sizeof(h.uses_removed));
    h.served_age_sum = r->served_age_sum;
    h.max_prio = r->max_prio;
    h.beta = r->beta;
    memcpy(h.rng, r->rng.s, sizeof(h.rng));
    h.producer_waits = r->producer_waits;
    h.consumer_waits = r->consumer_waits;
    h.producer_wait_s = r->producer_wait_s;
    h.consumer_wait_s = r->consumer_wait_s;
    h.rate_overrides = r->rate_overrides;
    h.prio_updates = r->prio_updates;
    h.prio_ignored = r->prio_ignored;
    rc = cb(arg, &h, sizeof(h));

    /* Records in drawing order, so a loaded reservoir draws the same. */
    if (r->cfg.policy == SURGE_RESERVOIR_FIFO) {
        for (uint32_t k = 0; rc == 0 && k < r->ring_count; k++) {
            rc = save_one(r, r->ring[(r->ring_head + k) % r->nslots], now, cb,
                          arg);
        }
    } else if (r->cfg.prioritized.enabled) {
        for (uint32_t s = 0; rc == 0 && s < r->nslots; s++) {
            if (r->slots[s].state == SLOT_PRESENT) {
                rc = save_one(r, s, now, cb, arg);
            }
        }
    } else if (r->cfg.balance_sims) {
        for (uint32_t k = 0; rc == 0 && k < r->nlive; k++) {
            const struct sim_entry *se = &r->sims[r->sims_live[k]];
            for (uint32_t j = 0; rc == 0 && j < se->count; j++) {
                rc = save_one(r, se->slots[j], now, cb, arg);
            }
        }
    } else {
        for (uint32_t k = 0; rc == 0 && k < r->nactive; k++) {
            rc = save_one(r, r->active[k], now, cb, arg);
        }
    }
    uint64_t nev = r->nevictable;
    if (rc == 0) {
        rc = cb(arg, &nev, sizeof(nev));
    }
    if (rc == 0 && nev > 0) {
        rc = cb(arg, r->evictable, nev * sizeof(uint32_t));
    }
    if (rc == 0) {
        rc = cb(arg, SAVE_END, sizeof(SAVE_END));
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

struct age_key {
    uint64_t put_index;
    uint32_t slot;
};

static int
cmp_age_key(const void *a, const void *b)
{
    uint64_t x = ((const struct age_key *)a)->put_index;
    uint64_t y = ((const struct age_key *)b)->put_index;
    return (x > y) - (x < y);
}

/* After a load: the put-order list of the samples restored. */
static int
link_by_put_index(surge_reservoir *r)
{
    if (r->npresent == 0) {
        return 0;
    }
    struct age_key *k = surge_malloc((size_t)r->npresent * sizeof(*k));
    if (k == NULL) {
        return -ENOMEM;
    }
    uint32_t n = 0;
    for (uint32_t s = 0; s < r->nslots; s++) {
        if (r->slots[s].state == SLOT_PRESENT) {
            k[n].put_index = r->slots[s].put_index;
            k[n].slot = s;
            n++;
        }
    }
    qsort(k, n, sizeof(*k), cmp_age_key);
    for (uint32_t i = 0; i < n; i++) {
        age_link(r, k[i].slot);
    }
    free(k);
    return 0;
}

/* The body of load, under the lock; on error the caller resets r. */
static int
load_locked(surge_reservoir *r, surge_reservoir_read_cb cb, void *arg,
            char *err, size_t errlen)
{
    struct save_header h;
    int rc = cb(arg, &h, sizeof(h));
    if (rc != 0) {
        surge_set_err(err, errlen, "reservoir checkpoint: read failed (%d)",
                      rc);
        return rc;
    }
    if (memcmp(h.magic, SAVE_MAGIC, sizeof(h.magic)) != 0 ||
        h.version != SAVE_VERSION) {
        surge_set_err(err, errlen,
                      "reservoir checkpoint: not a reservoir checkpoint of "
                      "version %u",
                      SAVE_VERSION);
        return SURGE_EPROTO;
    }
    struct {
        const char *key;
        uint64_t saved, ours;
    } same[] = {
        {"reservoir.policy", h.policy, (uint64_t)r->cfg.policy},
        {"reservoir.input_dim", h.input_dim, r->cfg.input_dim},
        {"reservoir.output_dim", h.output_dim, r->cfg.output_dim},
        {"reservoir.epochs", h.epochs, r->cfg.epochs},
        {"reservoir.max_uses", h.max_uses, r->cfg.max_uses},
        {"reservoir.balance_sims", h.balance_sims, r->cfg.balance_sims},
        {"reservoir.prioritized.enabled", h.prioritized,
         r->cfg.prioritized.enabled},
    };
    for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
        if (same[i].saved != same[i].ours) {
            surge_set_err(err, errlen,
                          "%s: the checkpoint was saved with %llu, this "
                          "reservoir has %llu",
                          same[i].key, (unsigned long long)same[i].saved,
                          (unsigned long long)same[i].ours);
            return SURGE_ECONFIG;
        }
    }
    if (h.nslots > r->nslots || h.nsamples > h.nslots) {
        surge_set_err(
            err, errlen,
            "reservoir.capacity_bytes: the checkpoint needs %llu slots, "
            "this reservoir has %u",
            (unsigned long long)h.nslots, (unsigned)r->nslots);
        return h.nsamples > h.nslots ? SURGE_EPROTO : SURGE_ECONFIG;
    }
    int64_t now = now_ns();
    for (uint64_t k = 0; k < h.nsamples; k++) {
        struct save_record rec;
        rc = cb(arg, &rec, sizeof(rec));
        if (rc != 0) {
            surge_set_err(err, errlen, "reservoir checkpoint: read failed (%d)",
                          rc);
            return rc;
        }
        bool bad_uses =
            (r->cfg.policy == SURGE_RESERVOIR_FIFO && rec.uses != 0) ||
            (r->cfg.policy == SURGE_RESERVOIR_FIRO &&
             rec.uses >= r->cfg.epochs) ||
            (r->cfg.max_uses > 0 && rec.uses >= r->cfg.max_uses);
        if (rec.slot >= h.nslots || r->slots[rec.slot].state != SLOT_FREE ||
            bad_uses || rec.put_index == 0 || rec.put_index > h.puts ||
            !(rec.prio >= 0.0) || !isfinite(rec.prio) ||
            (r->cfg.prioritized.enabled && !(rec.prio > 0.0))) {
            surge_set_err(err, errlen,
                          "reservoir checkpoint: sample record %llu is corrupt",
                          (unsigned long long)k);
            return SURGE_EPROTO;
        }
        uint32_t s = rec.slot;
        rc = cb(arg, r->pool + (size_t)s * r->slot_bytes, r->sample_bytes);
        if (rc != 0) {
            surge_set_err(err, errlen, "reservoir checkpoint: read failed (%d)",
                          rc);
            return rc;
        }
        uint32_t e = sim_get(r, rec.sim);
        if (r->cfg.balance_sims && sim_reserve_array(r, e) != 0) {
            surge_set_err(err, errlen, "reservoir checkpoint: out of memory");
            return -ENOMEM;
        }
        /* Take s off the free stack (rebuilt below) and publish it. */
        struct slot *sl = &r->slots[s];
        sl->state = SLOT_PRESENT;
        sl->generation = rec.generation;
        sl->uses = rec.uses;
        sl->sim = rec.sim;
        sl->step = rec.step;
        sl->put_index = rec.put_index;
        sl->arrival_ns = now - rec.age_ns;
        sl->sim_entry = e;
        r->sims[e].pending++;
        ds_add(r, s);
        if (r->cfg.prioritized.enabled) {
            sl->prio = rec.prio; /* ds_add gave it max_prio */
            tree_set(r, s, sl->prio);
        }
        r->npresent++;
        r->uses_present[bucket(sl->uses)]++;
        if (r->cfg.max_uses > 0) {
            r->uses_left_total += r->cfg.max_uses - sl->uses;
        }
    }
    rc = link_by_put_index(r);
    if (rc != 0) {
        surge_set_err(err, errlen, "reservoir checkpoint: out of memory");
        return rc;
    }
    uint64_t nev;
    rc = cb(arg, &nev, sizeof(nev));
    if (rc != 0) {
        surge_set_err(err, errlen, "reservoir checkpoint: read failed (%d)",
                      rc);
        return rc;
    }
    if (nev > h.nsamples ||
        (nev > 0 && r->cfg.policy != SURGE_RESERVOIR_RESERVOIR)) {
        surge_set_err(err, errlen,
                      "reservoir checkpoint: eviction list corrupt");
        return SURGE_EPROTO;
    }
    for (uint64_t k = 0; k < nev; k++) {
        uint32_t s;
        rc = cb(arg, &s, sizeof(s));
        if (rc != 0) {
            surge_set_err(err, errlen, "reservoir checkpoint: read failed (%d)",
                          rc);
            return rc;
        }
        if (s >= r->nslots || r->slots[s].state != SLOT_PRESENT ||
            r->slots[s].uses == 0 || r->slots[s].pos_evict != NONE) {
            surge_set_err(err, errlen,
                          "reservoir checkpoint: eviction list corrupt");
            return SURGE_EPROTO;
        }
        evict_add(r, s);
    }
    char end[8];
    rc = cb(arg, end, sizeof(end));
    if (rc != 0) {
        surge_set_err(err, errlen, "reservoir checkpoint: read failed (%d)",
                      rc);
        return rc;
    }
    if (memcmp(end, SAVE_END, sizeof(end)) != 0) {
        surge_set_err(err, errlen, "reservoir checkpoint: trailer missing");
        return SURGE_EPROTO;
    }
    /* Free stack: every slot not restored, lowest popped first. */
    r->nfree = 0;
    for (uint32_t i = r->nslots; i-- > 0;) {
        if (r->slots[i].state == SLOT_FREE) {
            r->free_stack[r->nfree++] = i;
        }
    }
    r->puts = h.puts;
    r->gets = h.gets;
    r->batches = h.batches;
    r->evictions = h.evictions;
    r->retired = h.retired;
    memcpy(r->uses_removed, h.uses_removed, sizeof(r->uses_removed));
    r->served_age_sum = h.served_age_sum;
    if (r->cfg.prioritized.enabled) {
        r->max_prio =
            h.max_prio > 0.0 && isfinite(h.max_prio) ? h.max_prio : 1.0;
        r->beta = h.beta >= 0.0 && h.beta <= 1.0 ? h.beta : r->beta;
    }
    memcpy(r->rng.s, h.rng, sizeof(r->rng.s));
    if ((r->rng.s[0] | r->rng.s[1] | r->rng.s[2] | r->rng.s[3]) == 0) {
        surge_set_err(err, errlen,
                      "reservoir checkpoint: random state corrupt");
        return SURGE_EPROTO;
    }
    r->producer_waits = h.producer_waits;
    r->consumer_waits = h.consumer_waits;
    r->producer_wait_s = h.producer_wait_s;
    r->consumer_wait_s = h.consumer_wait_s;
    r->rate_overrides = h.rate_overrides;
    r->prio_updates = h.prio_updates;
    r->prio_ignored = h.prio_ignored;
    return 0;
}

int
surge_reservoir_load(surge_reservoir *r, surge_reservoir_read_cb cb, void *arg,
                     char *err, size_t errlen)
{
    surge_set_err(err, errlen, "ok");
    pthread_mutex_lock(&r->mu);
    if (r->puts != 0 || r->npresent != 0 || r->nwriting != 0 || r->gets != 0) {
        pthread_mutex_unlock(&r->mu);
        surge_set_err(err, errlen,
                      "reservoir checkpoint: load needs a fresh reservoir");
        return SURGE_ESTATE;
    }
    int rc = load_locked(r, cb, arg, err, errlen);
    if (rc != 0) {
        /* Give back the simulation index arrays, then start empty. */
        for (uint32_t i = 0; i < r->nslots; i++) {
            free(r->sims[i].slots);
            r->sims[i].slots = NULL;
            r->sims[i].cap = 0;
        }
        reset_state(r);
    } else {
        pthread_cond_broadcast(&r->cv_get);
        pthread_cond_broadcast(&r->cv_put);
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

/* ------------------------------------------------------------ internal */

const uint8_t *
surge_reservoir_pool_(const surge_reservoir *r, size_t *slot_bytes)
{
    *slot_bytes = r->slot_bytes;
    return r->pool;
}
