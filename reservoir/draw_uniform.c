/*
 * reservoir/draw_uniform.c - uniform draws (policies firo and reservoir
 * without balance_sims or prioritized): active[] holds the PRESENT slots,
 * each slot knows its index (slot.pos), so adding, removing (swap with the
 * last) and drawing are O(1). Within a batch, a sample that must not come
 * again is swapped into active[0..active_taken), which later draws skip;
 * batch_end just forgets that prefix.
 */
#include "config.h"

#include <stdlib.h>

#include "reservoir/reservoir_impl.h"

static int
uniform_create(surge_reservoir *r)
{
    r->active = surge_malloc((size_t)r->nslots * sizeof(uint32_t));
    return r->active == NULL ? -ENOMEM : 0;
}

static void
uniform_destroy(surge_reservoir *r)
{
    free(r->active);
    r->active = NULL;
}

static void
uniform_reset(surge_reservoir *r)
{
    r->nactive = 0;
    r->active_taken = 0;
}

static void
uniform_add(surge_reservoir *r, uint32_t s)
{
    r->slots[s].pos = r->nactive;
    r->active[r->nactive++] = s;
}

static void
uniform_remove(surge_reservoir *r, uint32_t s)
{
    struct slot *sl = &r->slots[s];
    uint32_t last = r->active[--r->nactive];
    r->active[sl->pos] = last;
    r->slots[last].pos = sl->pos;
}

/* Move the sample at active[j] into the taken prefix. */
static void
take(surge_reservoir *r, uint32_t j)
{
    uint32_t s = r->active[j];
    uint32_t t = r->active[r->active_taken];
    r->active[r->active_taken] = s;
    r->active[j] = t;
    r->slots[s].pos = r->active_taken;
    r->slots[t].pos = j;
    r->active_taken++;
    r->taken_n++;
}

static uint32_t
uniform_draw(surge_reservoir *r, bool replace, struct res_draw_state *ds)
{
    (void)ds;
    uint32_t j =
        r->active_taken + res_rng_below(r, r->nactive - r->active_taken);
    uint32_t s = r->active[j];
    if (!replace) {
        take(r, j);
    }
    return s;
}

static void
uniform_exclude(surge_reservoir *r, uint32_t s)
{
    take(r, r->slots[s].pos);
}

static void
uniform_batch_end(surge_reservoir *r, const struct res_draw_state *ds)
{
    (void)ds;
    r->active_taken = 0;
}

static int
uniform_each(surge_reservoir *r, int (*fn)(surge_reservoir *, uint32_t, void *),
             void *arg)
{
    int rc = 0;
    for (uint32_t k = 0; rc == 0 && k < r->nactive; k++) {
        rc = fn(r, r->active[k], arg);
    }
    return rc;
}

const struct res_draw_ops res_draw_uniform = {
    .create = uniform_create,
    .destroy = uniform_destroy,
    .reset = uniform_reset,
    .reserve = NULL,
    .add = uniform_add,
    .remove = uniform_remove,
    .draw = uniform_draw,
    .exclude = uniform_exclude,
    .batch_end = uniform_batch_end,
    .each = uniform_each,
};
