/*
 * reservoir/rate.c - the rate limiter (policy reservoir, option
 * reservoir.rate): Reverb's samples-per-insert bounds. The side that runs
 * ahead waits, but never while the other side waits for data or room, which
 * with the window check of config_check makes a deadlock impossible.
 */
#include "config.h"

#include "reservoir/reservoir_impl.h"

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
bool
res_rate_put_ok(surge_reservoir *r, bool count)
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
bool
res_rate_get_ok(surge_reservoir *r, size_t B)
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
