/*
 * reservoir/policy_firo.c - policy firo: a batch takes samples drawn at
 * random (uniform, balanced or prioritized: the draw ops), distinct within
 * the batch; each sample is used `epochs` times (pseudo-epochs), then
 * removed. Batches wait for B samples (and the watermark).
 */
#include "config.h"

#include "reservoir/reservoir_impl.h"

static uint32_t
firo_watermark(const surge_reservoir_config *cfg, size_t nslots)
{
    (void)nslots;
    return (uint32_t)cfg->watermark;
}

static bool
firo_data_ready(const surge_reservoir *r, size_t B)
{
    size_t need = B > r->wm ? B : r->wm;
    return r->npresent >= need;
}

static bool
firo_replace(const surge_reservoir *r)
{
    (void)r;
    return false;
}

static bool
firo_used_up(const surge_reservoir *r, const struct slot *sl)
{
    return sl->uses >= r->cfg.epochs;
}

static bool
firo_uses_valid(const surge_reservoir *r, uint32_t uses)
{
    return uses < r->cfg.epochs;
}

const struct res_policy_ops res_policy_firo = {
    .policy = SURGE_RESERVOIR_FIRO,
    .watermark = firo_watermark,
    .data_ready = firo_data_ready,
    .replace = firo_replace,
    .used_up = firo_used_up,
    .uses_valid = firo_uses_valid,
    .served = NULL,
    .evicts = false,
};
