/*
 * reservoir/checkpoint.c - save and load: the policy state (counters,
 * random state, per sample: meta, times used, priority) and the data of
 * every sample present, streamed through the caller's callbacks in a
 * versioned little-endian format. Records go in drawing order (the draw
 * ops' each), so a loaded reservoir draws exactly as the saved one would.
 */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "reservoir/reservoir_impl.h"

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

/* Where save_one writes to. */
struct save_to {
    int64_t now; /* CLOCK_MONOTONIC ns of the save */
    surge_reservoir_write_cb cb;
    void *arg;
};

static int
save_one(surge_reservoir *r, uint32_t s, void *to_)
{
    const struct save_to *to = to_;
    int64_t now = to->now;
    surge_reservoir_write_cb cb = to->cb;
    void *arg = to->arg;
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
    int64_t now = res_now_ns();
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
    if (rc == 0) {
        struct save_to to = {now, cb, arg};
        rc = r->draw->each(r, save_one, &to);
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
        res_age_link(r, k[i].slot);
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
    int64_t now = res_now_ns();
    for (uint64_t k = 0; k < h.nsamples; k++) {
        struct save_record rec;
        rc = cb(arg, &rec, sizeof(rec));
        if (rc != 0) {
            surge_set_err(err, errlen, "reservoir checkpoint: read failed (%d)",
                          rc);
            return rc;
        }
        bool bad_uses = !r->pol->uses_valid(r, rec.uses);
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
        uint32_t e = res_sim_get(r, rec.sim);
        if (r->draw->reserve != NULL && r->draw->reserve(r, e) != 0) {
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
        res_ds_add(r, s);
        if (r->cfg.prioritized.enabled) {
            sl->prio = rec.prio; /* ds_add gave it max_prio */
            res_tree_set(r, s, sl->prio);
        }
        r->npresent++;
        r->uses_present[res_bucket(sl->uses)]++;
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
    if (nev > h.nsamples || (nev > 0 && !r->pol->evicts)) {
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
        res_evict_add(r, s);
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
        res_reset_state(r);
    } else {
        /* The device storage's copy: every sample restored goes up before
         * the next device batch. */
        r->pend_all = r->dev != NULL;
        pthread_cond_broadcast(&r->cv_get);
        pthread_cond_broadcast(&r->cv_put);
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}
