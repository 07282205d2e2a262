/*
 * reservoir/sims.c - the simulation table: one entry per simulation id
 * with samples WRITING or PRESENT (an open-addressing hash from id to
 * entry), and sims_live[], the simulations with samples present, whose
 * count is distinct_sims and which balance_sims draws from.
 */
#include "config.h"

#include <stdlib.h>

#include "reservoir/reservoir_impl.h"

static uint32_t
hash_home(const surge_reservoir *r, uint64_t id)
{
    uint64_t x = id;
    return (uint32_t)surge_splitmix64(&x) & r->hash_mask;
}

/* Entry of id, created when absent. Never fails: at most nslots entries
 * are in use (each holds a WRITING or PRESENT slot) and the table has at
 * least twice as many buckets. */
uint32_t
res_sim_get(surge_reservoir *r, uint64_t id)
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
void
res_sim_drop(surge_reservoir *r, uint32_t e)
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

void
res_live_add(surge_reservoir *r, uint32_t e)
{
    r->sims[e].live_pos = r->nlive;
    r->sims_live[r->nlive++] = e;
}

void
res_live_remove(surge_reservoir *r, uint32_t e)
{
    uint32_t p = r->sims[e].live_pos;
    uint32_t last = r->sims_live[--r->nlive];
    r->sims_live[p] = last;
    r->sims[last].live_pos = p;
    r->sims[e].live_pos = NONE;
}

void
res_live_swap(surge_reservoir *r, uint32_t a, uint32_t b)
{
    uint32_t ea = r->sims_live[a], eb = r->sims_live[b];
    r->sims_live[a] = eb;
    r->sims_live[b] = ea;
    r->sims[eb].live_pos = a;
    r->sims[ea].live_pos = b;
}
