/*
 * reservoir/policy_fifo.c - policy fifo: a batch takes the oldest samples,
 * each is used once. The drawable set is ring[], the PRESENT slots in put
 * order (oldest at ring_head); a draw pops the oldest, so a batch never
 * takes a sample twice and nothing is ever excluded.
 */
#include "config.h"

#include <stdlib.h>

#include "reservoir/reservoir_impl.h"

static uint32_t
fifo_watermark(const surge_reservoir_config *cfg, size_t nslots)
{
    (void)nslots;
    return (uint32_t)cfg->watermark;
}

/* A batch of B needs B samples, and the watermark before the first. */
static bool
fifo_data_ready(const surge_reservoir *r, size_t B)
{
    size_t need = B > r->wm ? B : r->wm;
    return r->npresent >= need;
}

static bool
fifo_replace(const surge_reservoir *r)
{
    (void)r;
    return false;
}

static bool
fifo_used_up(const surge_reservoir *r, const struct slot *sl)
{
    (void)r;
    (void)sl;
    return true;
}

static bool
fifo_uses_valid(const surge_reservoir *r, uint32_t uses)
{
    (void)r;
    return uses == 0;
}

const struct res_policy_ops res_policy_fifo = {
    .policy = SURGE_RESERVOIR_FIFO,
    .watermark = fifo_watermark,
    .data_ready = fifo_data_ready,
    .replace = fifo_replace,
    .used_up = fifo_used_up,
    .uses_valid = fifo_uses_valid,
    .served = NULL,
    .evicts = false,
};

/* --------------------------------------------------------------- ring */

static int
ring_create(surge_reservoir *r)
{
    r->ring = surge_malloc((size_t)r->nslots * sizeof(uint32_t));
    return r->ring == NULL ? -ENOMEM : 0;
}

static void
ring_destroy(surge_reservoir *r)
{
    free(r->ring);
    r->ring = NULL;
}

static void
ring_reset(surge_reservoir *r)
{
    r->ring_head = 0;
    r->ring_count = 0;
}

static void
ring_add(surge_reservoir *r, uint32_t s)
{
    uint32_t tail = (r->ring_head + r->ring_count) % r->nslots;
    r->ring[tail] = s;
    r->ring_count++;
}

static void
ring_remove(surge_reservoir *r, uint32_t s)
{
    (void)r;
    (void)s; /* popped from the ring when it was drawn */
}

static uint32_t
ring_draw(surge_reservoir *r, bool replace, struct res_draw_state *ds)
{
    (void)replace;
    (void)ds;
    uint32_t s = r->ring[r->ring_head];
    r->ring_head = (r->ring_head + 1) % r->nslots;
    r->ring_count--;
    return s;
}

static void
ring_batch_end(surge_reservoir *r, const struct res_draw_state *ds)
{
    (void)r;
    (void)ds;
}

static int
ring_each(surge_reservoir *r, int (*fn)(surge_reservoir *, uint32_t, void *),
          void *arg)
{
    int rc = 0;
    for (uint32_t k = 0; rc == 0 && k < r->ring_count; k++) {
        rc = fn(r, r->ring[(r->ring_head + k) % r->nslots], arg);
    }
    return rc;
}

const struct res_draw_ops res_draw_ring = {
    .create = ring_create,
    .destroy = ring_destroy,
    .reset = ring_reset,
    .reserve = NULL,
    .add = ring_add,
    .remove = ring_remove,
    .draw = ring_draw,
    .exclude = NULL,
    .batch_end = ring_batch_end,
    .each = ring_each,
};
