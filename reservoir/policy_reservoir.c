/*
 * reservoir/policy_reservoir.c - policy reservoir (Melissa / SC'23):
 * batches are served once occupancy reaches the watermark; draws are with
 * replacement; a put into a full reservoir evicts a random sample already
 * used at least once (evictable[], kept by the core); when none has been
 * used the put waits, so unseen data is never dropped. After end of
 * reception every sample left is served exactly once more, without
 * replacement, and removed.
 *
 * The use cap (reservoir.max_uses) lives here too: a sample used max_uses
 * times is removed; uses_left_total (the uses still allowed, over the
 * samples present) tells whether a whole batch can be served.
 */
#include "config.h"

#include "reservoir/reservoir_impl.h"

/* Default watermark: one batch (capped to the capacity). */
static uint32_t
resv_watermark(const surge_reservoir_config *cfg, size_t nslots)
{
    size_t wm = cfg->watermark;
    if (wm == 0) {
        wm = cfg->max_batch < nslots ? cfg->max_batch : nslots;
    }
    return (uint32_t)wm;
}

static bool
resv_data_ready(const surge_reservoir *r, size_t B)
{
    if (r->npresent < (r->wm > 0 ? r->wm : 1)) {
        return false;
    }
    return r->cfg.max_uses == 0 || r->uses_left_total >= B;
}

static bool
resv_replace(const surge_reservoir *r)
{
    return !r->ended;
}

static bool
resv_used_up(const surge_reservoir *r, const struct slot *sl)
{
    return r->ended || (r->cfg.max_uses > 0 && sl->uses >= r->cfg.max_uses);
}

static bool
resv_uses_valid(const surge_reservoir *r, uint32_t uses)
{
    return r->cfg.max_uses == 0 || uses < r->cfg.max_uses;
}

/* The use cap: one use fewer left; with replacement, a sample that reached
 * max_uses mid-batch must not be drawn again in it. */
static void
resv_served(surge_reservoir *r, uint32_t s, bool replace)
{
    if (r->cfg.max_uses == 0) {
        return;
    }
    r->uses_left_total--;
    if (replace && r->slots[s].uses >= r->cfg.max_uses) {
        r->draw->exclude(r, s);
    }
}

const struct res_policy_ops res_policy_reservoir = {
    .policy = SURGE_RESERVOIR_RESERVOIR,
    .watermark = resv_watermark,
    .data_ready = resv_data_ready,
    .replace = resv_replace,
    .used_up = resv_used_up,
    .uses_valid = resv_uses_valid,
    .served = resv_served,
    .evicts = true,
};
