/*
 * reservoir/draw_prioritized.c - prioritized draws (option
 * reservoir.prioritized, policies firo and reservoir): a sum tree and a min
 * tree over the slots (leaf = priority^alpha, 0 when not drawable), so a
 * draw and an update are O(log n). A new sample gets the largest priority
 * seen so far. Within a batch, a sample that must not come again has its
 * leaf set to 0 and is listed in taken_s[]; batch_end restores the leaves.
 */
#include "config.h"

#include <math.h>
#include <stdlib.h>

#include "reservoir/reservoir_impl.h"

void
res_tree_set(surge_reservoir *r, uint32_t s, double v)
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
        double u = surge_rng_uniform(&r->rng) * r->tsum[1];
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

static int
prio_create(surge_reservoir *r)
{
    r->tleaves = 1;
    while (r->tleaves < r->nslots) {
        r->tleaves <<= 1;
    }
    r->tsum = surge_calloc(2 * (size_t)r->tleaves, sizeof(double));
    r->tmin = surge_malloc(2 * (size_t)r->tleaves * sizeof(double));
    r->taken_s = surge_malloc((size_t)r->nslots * sizeof(uint32_t));
    if (r->tsum == NULL || r->tmin == NULL || r->taken_s == NULL) {
        return -ENOMEM;
    }
    return 0;
}

static void
prio_destroy(surge_reservoir *r)
{
    free(r->taken_s);
    free(r->tmin);
    free(r->tsum);
    r->taken_s = NULL;
    r->tmin = r->tsum = NULL;
}

static void
prio_reset(surge_reservoir *r)
{
    for (size_t i = 0; i < 2 * (size_t)r->tleaves; i++) {
        r->tsum[i] = 0.0;
        r->tmin[i] = INFINITY;
    }
}

static void
prio_add(surge_reservoir *r, uint32_t s)
{
    struct slot *sl = &r->slots[s];
    sl->prio = r->max_prio;
    res_tree_set(r, s, sl->prio);
}

static void
prio_remove(surge_reservoir *r, uint32_t s)
{
    res_tree_set(r, s, 0.0);
}

static void
prio_exclude(surge_reservoir *r, uint32_t s)
{
    res_tree_set(r, s, 0.0);
    r->taken_s[r->taken_n++] = s;
}

static uint32_t
prio_draw(surge_reservoir *r, bool replace, struct res_draw_state *ds)
{
    (void)ds;
    uint32_t s = tree_draw(r);
    if (!replace) {
        prio_exclude(r, s);
    }
    return s;
}

static void
prio_batch_end(surge_reservoir *r, const struct res_draw_state *ds)
{
    (void)ds;
    for (uint32_t k = 0; k < r->taken_n; k++) {
        uint32_t s = r->taken_s[k];
        res_tree_set(r, s, r->slots[s].prio);
    }
}

static int
prio_each(surge_reservoir *r, int (*fn)(surge_reservoir *, uint32_t, void *),
          void *arg)
{
    int rc = 0;
    for (uint32_t s = 0; rc == 0 && s < r->nslots; s++) {
        if (r->slots[s].state == SLOT_PRESENT) {
            rc = fn(r, s, arg);
        }
    }
    return rc;
}

const struct res_draw_ops res_draw_prioritized = {
    .create = prio_create,
    .destroy = prio_destroy,
    .reset = prio_reset,
    .reserve = NULL,
    .add = prio_add,
    .remove = prio_remove,
    .draw = prio_draw,
    .exclude = prio_exclude,
    .batch_end = prio_batch_end,
    .each = prio_each,
};

/* ------------------------------------------------------------- public */

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
        res_tree_set(r, s, p);
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
