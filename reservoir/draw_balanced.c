/*
 * reservoir/draw_balanced.c - draws balanced over simulations (option
 * reservoir.balance_sims, policies firo and reservoir): each simulation
 * entry keeps its PRESENT slots in its own array (slot.pos is the index
 * there). A batch first picks simulations at random among those not yet in
 * it (a partial Fisher-Yates over sims_live[]), round robin, then a sample
 * uniformly within each, so counts per simulation differ by at most one.
 * Within a batch, a sample that must not come again is swapped into its
 * simulation's slots[0..taken) prefix.
 */
#include "config.h"

#include <stdlib.h>

#include "reservoir/reservoir_impl.h"

static int
balanced_create(surge_reservoir *r)
{
    (void)r; /* the per-simulation arrays grow in balanced_reserve */
    return 0;
}

static void
balanced_destroy(surge_reservoir *r)
{
    (void)r; /* the per-simulation arrays belong to the sim table */
}

static void
balanced_reset(surge_reservoir *r)
{
    (void)r; /* res_reset_state empties the sim table */
}

/* Make room for one more slot in entry e's array (amortized O(1)). */
static int
balanced_reserve(surge_reservoir *r, uint32_t e)
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
balanced_add(surge_reservoir *r, uint32_t s)
{
    struct slot *sl = &r->slots[s];
    struct sim_entry *se = &r->sims[sl->sim_entry];
    sl->pos = se->count; /* room reserved by balanced_reserve */
    se->slots[se->count] = s;
}

static void
balanced_remove(surge_reservoir *r, uint32_t s)
{
    struct slot *sl = &r->slots[s];
    struct sim_entry *se = &r->sims[sl->sim_entry];
    uint32_t last = se->slots[se->count - 1];
    se->slots[sl->pos] = last;
    r->slots[last].pos = sl->pos;
}

/* Move the sample at se->slots[j] into the taken prefix. */
static void
take(surge_reservoir *r, struct sim_entry *se, uint32_t j)
{
    uint32_t s = se->slots[j];
    uint32_t t = se->slots[se->taken];
    se->slots[se->taken] = s;
    se->slots[j] = t;
    r->slots[s].pos = se->taken;
    r->slots[t].pos = j;
    se->taken++;
    r->taken_n++;
}

static uint32_t
balanced_draw(surge_reservoir *r, bool replace, struct res_draw_state *ds)
{
    struct sim_entry *se;
    for (;;) {
        /* First round: pick the next simulation at random among those not
         * yet in this batch (partial Fisher-Yates). Later rounds cycle over
         * all of them. */
        if (ds->m < r->nlive && ds->cursor == ds->m) {
            uint32_t j = ds->m + res_rng_below(r, r->nlive - ds->m);
            res_live_swap(r, ds->m, j);
            ds->m++;
        }
        if (ds->cursor >= ds->m) {
            ds->cursor = 0;
        }
        se = &r->sims[r->sims_live[ds->cursor++]];
        if (se->count > se->taken) {
            break;
        }
    }
    uint32_t j = se->taken + res_rng_below(r, se->count - se->taken);
    uint32_t s = se->slots[j];
    if (!replace) {
        take(r, se, j);
    }
    return s;
}

static void
balanced_exclude(surge_reservoir *r, uint32_t s)
{
    struct slot *sl = &r->slots[s];
    take(r, &r->sims[sl->sim_entry], sl->pos);
}

static void
balanced_batch_end(surge_reservoir *r, const struct res_draw_state *ds)
{
    for (uint32_t k = 0; k < ds->m; k++) {
        r->sims[r->sims_live[k]].taken = 0;
    }
}

static int
balanced_each(surge_reservoir *r,
              int (*fn)(surge_reservoir *, uint32_t, void *), void *arg)
{
    int rc = 0;
    for (uint32_t k = 0; rc == 0 && k < r->nlive; k++) {
        const struct sim_entry *se = &r->sims[r->sims_live[k]];
        for (uint32_t j = 0; rc == 0 && j < se->count; j++) {
            rc = fn(r, se->slots[j], arg);
        }
    }
    return rc;
}

const struct res_draw_ops res_draw_balanced = {
    .create = balanced_create,
    .destroy = balanced_destroy,
    .reset = balanced_reset,
    .reserve = balanced_reserve,
    .add = balanced_add,
    .remove = balanced_remove,
    .draw = balanced_draw,
    .exclude = balanced_exclude,
    .batch_end = balanced_batch_end,
    .each = balanced_each,
};
