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
 * Files. This is the shared core; the policies, the ways of drawing, the
 * storage, the rate limiter, the simulation table, the config checks and
 * checkpoints have files of their own behind tables of operations
 * (reservoir_impl.h says which).
 *
 * Lock order: r->mu is the only lock; nothing else is called while it is
 * held except the save/load callbacks (documented in the header).
 */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "reservoir/reservoir_impl.h"
#include "reservoir/reservoir_internal.h"

#define STACK_ROWS 512

/* ------------------------------------------------------ drawable set */

void
res_evict_add(surge_reservoir *r, uint32_t s)
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
void
res_ds_add(surge_reservoir *r, uint32_t s)
{
    struct slot *sl = &r->slots[s];
    struct sim_entry *se = &r->sims[sl->sim_entry];
    r->draw->add(r, s);
    se->pending--;
    if (se->count++ == 0) {
        res_live_add(r, sl->sim_entry);
    }
}

/* A PRESENT slot leaves the drawable set. Called outside of batch
 * selection only (no sample is taken). */
static void
ds_remove(surge_reservoir *r, uint32_t s)
{
    struct slot *sl = &r->slots[s];
    uint32_t e = sl->sim_entry;
    struct sim_entry *se = &r->sims[e];
    r->draw->remove(r, s);
    sl->pos = NONE;
    sl->sim_entry = NONE;
    if (--se->count == 0) {
        res_live_remove(r, e);
        if (se->pending == 0) {
            res_sim_drop(r, e);
        }
    }
}

/* Put-order list and age sums: a sample becomes PRESENT (appended: it is
 * the newest) or leaves. They make the age stats O(1). */
void
res_age_link(surge_reservoir *r, uint32_t s)
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
    r->uses_present[res_bucket(sl->uses)]--;
    r->uses_removed[res_bucket(sl->uses)]++;
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

/* ------------------------------------------------------------ create */

/* Empty every structure and counter, as right after create (the pool's
 * bytes stay as they are). Used by create and by a failed load. */
void
res_reset_state(surge_reservoir *r)
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
    r->nevictable = 0;
    r->draw->reset(r);
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

static const struct res_policy_ops *
policy_ops(enum surge_reservoir_policy p)
{
    switch (p) {
    case SURGE_RESERVOIR_FIFO:
        return &res_policy_fifo;
    case SURGE_RESERVOIR_FIRO:
        return &res_policy_firo;
    case SURGE_RESERVOIR_RESERVOIR:
        break;
    }
    return &res_policy_reservoir;
}

/* The way of drawing a (checked) config asks for. */
static const struct res_draw_ops *
draw_ops(const surge_reservoir_config *cfg)
{
    if (cfg->policy == SURGE_RESERVOIR_FIFO) {
        return &res_draw_ring;
    }
    if (cfg->prioritized.enabled) {
        return &res_draw_prioritized;
    }
    if (cfg->balance_sims) {
        return &res_draw_balanced;
    }
    return &res_draw_uniform;
}

/* Free what create allocated (any of it may be NULL), the pool included. */
static void
free_all(surge_reservoir *r)
{
    res_dev_destroy(r);
    if (r->pool != NULL) {
        r->store->destroy(r);
    }
    if (r->sims != NULL) {
        for (uint32_t i = 0; i < r->nslots; i++) {
            free(r->sims[i].slots);
        }
    }
    r->draw->destroy(r);
    free(r->evictable);
    free(r->sim_hash);
    free(r->sims_live);
    free(r->sims_free);
    free(r->sims);
    free(r->free_stack);
    free(r->slots);
    free(r);
}

/* create, on dev for storage device (NULL: host storage only). */
static int
create_on(surge_reservoir **rp, const surge_reservoir_config *cfg,
          const struct surge_reservoir_device_ops *dev, char *err,
          size_t errlen)
{
    size_t sample_bytes, slot_bytes, nslots;
    int rc = res_config_check(cfg, dev != NULL, err, errlen);
    if (rc != 0) {
        return rc;
    }
    res_derive_sizes(cfg, &sample_bytes, &slot_bytes, &nslots, NULL, 0);

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
    r->pol = policy_ops(cfg->policy);
    r->draw = draw_ops(cfg);
    r->store = &res_storage_host;
    r->wm = r->pol->watermark(cfg, nslots);

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
    if (r->draw->create(r) != 0) {
        goto fail_nomem;
    }
    if (r->pol->evicts) {
        r->evictable = surge_malloc(n * sizeof(uint32_t));
        if (r->evictable == NULL) {
            goto fail_nomem;
        }
    }
    res_reset_state(r);

    rc = r->store->create(r, err, errlen);
    if (rc != 0) {
        goto fail;
    }
    if (cfg->storage == SURGE_RESERVOIR_STORAGE_DEVICE) {
        rc = res_dev_create(r, dev, err, errlen);
        if (rc != 0) {
            goto fail;
        }
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
    free_all(r);
    return rc;
}

int
surge_reservoir_create(surge_reservoir **rp, const surge_reservoir_config *cfg,
                       char *err, size_t errlen)
{
#ifdef HAVE_CUDA
    return create_on(rp, cfg, &surge_reservoir_device_cuda, err, errlen);
#else
    return create_on(rp, cfg, NULL, err, errlen);
#endif
}

int
surge_reservoir_create_on_(surge_reservoir **rp,
                           const surge_reservoir_config *cfg,
                           const struct surge_reservoir_device_ops *dev,
                           char *err, size_t errlen)
{
    if (dev == NULL) {
        return -EINVAL;
    }
    return create_on(rp, cfg, dev, err, errlen);
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
    free_all(r);
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
        w->t0 = res_now_ns();
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
    return w->t0 == 0 ? 0.0 : (double)(res_now_ns() - w->t0) * 1e-9;
}

static bool
room_for_put(const surge_reservoir *r)
{
    return r->nfree > 0 || r->nevictable > 0;
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
        res_sim_drop(r, e);
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
        if (room_for_put(r) && res_rate_put_ok(r, true)) {
            break;
        }
        if (waiter_wait(&w, &r->cv_put, &r->mu) != 0) {
            /* One last look: the condition may have turned true just as
             * the deadline passed. */
            if (!r->closed && !r->ended && room_for_put(r) &&
                res_rate_put_ok(r, true)) {
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
        s = r->evictable[res_rng_below(r, r->nevictable)];
        remove_sample(r, s, true);
    }
    uint32_t e = res_sim_get(r, sim);
    if (r->draw->reserve != NULL) {
        rc = r->draw->reserve(r, e);
        if (rc != 0) {
            /* Out of memory: the slot goes back to the free list (an
             * evicted sample had been used: nothing unseen is lost). */
            if (r->sims[e].count == 0 && r->sims[e].pending == 0) {
                res_sim_drop(r, e);
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
    r->store->write(r, dst, src, n);
}

int
surge_reservoir_put_commit(surge_reservoir *r, surge_reservoir_slot *ps)
{
    r->store->commit_fence(r);
    int64_t arrival = ps != NULL && ps->meta.arrival_ns != 0
                          ? ps->meta.arrival_ns
                          : res_now_ns();
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
    res_ds_add(r, s);
    r->nwriting--;
    r->npresent++;
    r->puts++;
    sl->put_index = r->puts;
    res_age_link(r, s);
    r->uses_present[0]++;
    r->uses_left_total += r->cfg.max_uses;
    bool flush = r->dev != NULL && res_dev_committed(r, s);
    pthread_cond_broadcast(&r->cv_get);
    pthread_mutex_unlock(&r->mu);
    if (flush) {
        res_dev_flush_try(r);
    }
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

/* Select n rows under the lock: pin, count uses, fill info, retire what is
 * used up. */
static void
select_rows(surge_reservoir *r, size_t n, uint32_t *rows,
            surge_batch_info *info)
{
    bool replace = r->pol->replace(r);
    bool prio = r->cfg.prioritized.enabled;
    double pmin = prio ? r->tmin[1] : 0.0;
    struct res_draw_state ds = {0, 0};

    r->taken_n = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t s = r->draw->draw(r, replace, &ds);
        struct slot *sl = &r->slots[s];
        rows[i] = s;
        if (sl->pins++ == 0) {
            evict_remove(r, s);
        }
        r->uses_present[res_bucket(sl->uses)]--;
        sl->uses++;
        r->uses_present[res_bucket(sl->uses)]++;
        if (r->pol->served != NULL) {
            r->pol->served(r, s, replace);
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
    r->draw->batch_end(r, &ds);
    r->taken_n = 0;

    for (size_t i = 0; i < n; i++) {
        uint32_t s = rows[i];
        struct slot *sl = &r->slots[s];
        if (sl->state != SLOT_PRESENT) {
            continue; /* drawn twice in this batch and already retired */
        }
        if (r->pol->used_up(r, sl)) {
            remove_sample(r, s, false);
        }
    }
}

/* Release the pins of a batch after its copy. */
static void
unpin_rows(surge_reservoir *r, size_t n, const uint32_t *rows)
{
    bool wake = false;
    bool resv = r->pol->evicts;
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
            res_evict_add(r, s);
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
long
res_take_rows(surge_reservoir *r, size_t B, uint32_t *rows,
              surge_batch_info *info, int timeout_ms)
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
        } else if (r->pol->data_ready(r, B) && res_rate_get_ok(r, B)) {
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
                } else if (!r->ended && r->pol->data_ready(r, B) &&
                           res_rate_get_ok(r, B)) {
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
void
res_release_rows(surge_reservoir *r, size_t n, const uint32_t *rows)
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
        !r->closed && room_for_put(r) && res_rate_put_ok(r, false)) {
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
    return surge_reservoir_get_batch_pool(r, B, inputs, outputs, info,
                                          timeout_ms, NULL);
}

long
surge_reservoir_get_batch_pool(surge_reservoir *r, size_t B, float *inputs,
                               float *outputs, surge_batch_info *info,
                               int timeout_ms, struct surge_pool *pool)
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
    long got = res_take_rows(r, B, rows, info, timeout_ms);
    if (got <= 0) {
        if (rows != stack_rows) {
            free(rows);
        }
        return got;
    }
    size_t n = (size_t)got;

    /* Gather without the lock: the rows are pinned. */
    r->store->gather(r, rows, n, inputs, outputs, pool);

    res_release_rows(r, n, rows);
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
    long n = res_take_rows(r, B, slots, info, timeout_ms);
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
        res_release_rows(r, n, slots);
    }
}

/* ------------------------------------------------------------ notify */

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
    int64_t now = res_now_ns();
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
    st->storage = r->cfg.storage;
    st->device_uploads = r->dev_uploads;
    st->device_upload_bytes = r->dev_upload_bytes;
    st->device_gathers = r->dev_gathers;
    if (r->dev != NULL) {
        st->device_bytes = r->pool_mapped + (size_t)r->cfg.max_batch * 4;
    }
    st->reception_ended = r->ended;
    st->finished = r->ended && r->npresent == 0 && r->nwriting == 0;
    st->closed = r->closed;
    pthread_mutex_unlock(&r->mu);
}

/* ------------------------------------------------------------ internal */

const uint8_t *
surge_reservoir_pool_(const surge_reservoir *r, size_t *slot_bytes)
{
    *slot_bytes = r->slot_bytes;
    return r->pool;
}
