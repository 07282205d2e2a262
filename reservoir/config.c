/*
 * reservoir/config.c - the reservoir's configuration: defaults, policy
 * names and the checks that name the study file's key of what is wrong.
 * Checks that span several options (which policy allows which option) are
 * kept in one function on purpose: one place answers "is this config
 * valid", in a fixed order of messages.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#include "reservoir/reservoir_impl.h"

const char *
surge_reservoir_policy_name(enum surge_reservoir_policy p)
{
    switch (p) {
    case SURGE_RESERVOIR_FIFO:
        return "fifo";
    case SURGE_RESERVOIR_FIRO:
        return "firo";
    case SURGE_RESERVOIR_RESERVOIR:
        return "reservoir";
    }
    return "unknown";
}

int
surge_reservoir_policy_parse(const char *name, enum surge_reservoir_policy *p)
{
    if (name == NULL) {
        return -EINVAL;
    }
    if (strcmp(name, "fifo") == 0) {
        *p = SURGE_RESERVOIR_FIFO;
    } else if (strcmp(name, "firo") == 0) {
        *p = SURGE_RESERVOIR_FIRO;
    } else if (strcmp(name, "reservoir") == 0) {
        *p = SURGE_RESERVOIR_RESERVOIR;
    } else {
        return -EINVAL;
    }
    return 0;
}

void
surge_reservoir_config_init(surge_reservoir_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->policy = SURGE_RESERVOIR_RESERVOIR;
    cfg->capacity_bytes = (size_t)1 << 30;
    cfg->max_batch = 256;
    cfg->seed = 1;
    cfg->epochs = 1;
    cfg->rate.samples_per_insert = 0.0;
    cfg->rate.min_diff = -1e300;
    cfg->rate.max_diff = 1e300;
    cfg->prioritized.alpha = 0.6;
    cfg->prioritized.beta = 0.4;
    cfg->prioritized.epsilon = 1e-6;
}

int
res_derive_sizes(const surge_reservoir_config *cfg, size_t *sample_bytes,
                 size_t *slot_bytes, size_t *nslots, char *err, size_t errlen)
{
    const size_t maxdim = SIZE_MAX / 8 / sizeof(float);
    if (cfg->input_dim > maxdim) {
        surge_set_err(err, errlen, "reservoir.input_dim: %zu is too large",
                      cfg->input_dim);
        return SURGE_ECONFIG;
    }
    if (cfg->output_dim > maxdim) {
        surge_set_err(err, errlen, "reservoir.output_dim: %zu is too large",
                      cfg->output_dim);
        return SURGE_ECONFIG;
    }
    if (cfg->input_dim + cfg->output_dim == 0) {
        surge_set_err(
            err, errlen,
            "reservoir.output_dim: input_dim + output_dim must be >= 1 "
            "(both are 0: set the sample's shape)");
        return SURGE_ECONFIG;
    }
    *sample_bytes = (cfg->input_dim + cfg->output_dim) * sizeof(float);
    *slot_bytes = (*sample_bytes + SLOT_ALIGN - 1) / SLOT_ALIGN * SLOT_ALIGN;
    *nslots = cfg->capacity_bytes / *slot_bytes;
    return 0;
}

const char *
surge_reservoir_storage_name(enum surge_reservoir_storage st)
{
    switch (st) {
    case SURGE_RESERVOIR_STORAGE_HOST:
        return "host";
    case SURGE_RESERVOIR_STORAGE_DEVICE:
        return "device";
    }
    return "unknown";
}

int
surge_reservoir_storage_parse(const char *name,
                              enum surge_reservoir_storage *st)
{
    if (name == NULL) {
        return -EINVAL;
    }
    if (strcmp(name, "host") == 0) {
        *st = SURGE_RESERVOIR_STORAGE_HOST;
    } else if (strcmp(name, "device") == 0) {
        *st = SURGE_RESERVOIR_STORAGE_DEVICE;
    } else {
        return -EINVAL;
    }
    return 0;
}

int
surge_reservoir_config_check(const surge_reservoir_config *cfg, char *err,
                             size_t errlen)
{
#ifdef HAVE_CUDA
    return res_config_check(cfg, true, err, errlen);
#else
    return res_config_check(cfg, false, err, errlen);
#endif
}

int
res_config_check(const surge_reservoir_config *cfg, bool allow_device,
                 char *err, size_t errlen)
{
    size_t sample_bytes, slot_bytes, nslots;
    const char *pname = surge_reservoir_policy_name(cfg->policy);
    bool fifo = cfg->policy == SURGE_RESERVOIR_FIFO;
    bool firo = cfg->policy == SURGE_RESERVOIR_FIRO;
    bool resv = cfg->policy == SURGE_RESERVOIR_RESERVOIR;

    surge_set_err(err, errlen, "ok");
    if (!fifo && !firo && !resv) {
        surge_set_err(err, errlen,
                      "reservoir.policy: unknown policy %d (fifo, firo or "
                      "reservoir)",
                      (int)cfg->policy);
        return SURGE_ECONFIG;
    }
    int rc =
        res_derive_sizes(cfg, &sample_bytes, &slot_bytes, &nslots, err, errlen);
    if (rc != 0) {
        return rc;
    }
    if (cfg->max_batch == 0) {
        surge_set_err(err, errlen, "reservoir.max_batch: must be >= 1");
        return SURGE_ECONFIG;
    }
    if (cfg->max_batch > MAX_SLOTS) {
        surge_set_err(err, errlen, "reservoir.max_batch: %zu is too large",
                      cfg->max_batch);
        return SURGE_ECONFIG;
    }
    if (nslots == 0) {
        surge_set_err(
            err, errlen,
            "reservoir.capacity_bytes: %zu bytes cannot hold one sample "
            "of %zu bytes (slot %zu bytes)",
            cfg->capacity_bytes, sample_bytes, slot_bytes);
        return SURGE_ECONFIG;
    }
    if (nslots > MAX_SLOTS) {
        surge_set_err(
            err, errlen,
            "reservoir.capacity_bytes: %zu slots of %zu bytes is more "
            "than the %u a reservoir can index",
            nslots, slot_bytes, (unsigned)MAX_SLOTS);
        return SURGE_ECONFIG;
    }
    if ((fifo || firo) && nslots < cfg->max_batch) {
        surge_set_err(
            err, errlen,
            "reservoir.capacity_bytes: holds %zu samples of %zu bytes; "
            "policy %s needs at least max_batch (%zu)",
            nslots, slot_bytes, pname, cfg->max_batch);
        return SURGE_ECONFIG;
    }
    if (cfg->watermark > nslots) {
        surge_set_err(
            err, errlen,
            "reservoir.watermark: must be <= capacity in samples (%zu)",
            nslots);
        return SURGE_ECONFIG;
    }
    if (cfg->epochs == 0) {
        surge_set_err(err, errlen, "reservoir.epochs: must be >= 1");
        return SURGE_ECONFIG;
    }
    if (cfg->epochs != 1 && !firo) {
        surge_set_err(err, errlen,
                      "reservoir.epochs: only policy firo has pseudo-epochs "
                      "(policy is %s; leave epochs at 1)",
                      pname);
        return SURGE_ECONFIG;
    }
    if (cfg->max_uses != 0 && !resv) {
        surge_set_err(err, errlen,
                      "reservoir.max_uses: only for policy reservoir (%s uses "
                      "each sample %s)",
                      pname, fifo ? "once" : "epochs times");
        return SURGE_ECONFIG;
    }
    double spi = cfg->rate.samples_per_insert;
    if (!(spi >= 0.0) || !isfinite(spi)) {
        surge_set_err(
            err, errlen,
            "reservoir.rate.samples_per_insert: must be a finite number "
            ">= 0 (0 = no rate limiter)");
        return SURGE_ECONFIG;
    }
    if (spi > 0.0) {
        double lo = cfg->rate.min_diff, hi = cfg->rate.max_diff;
        if (!resv) {
            surge_set_err(
                err, errlen,
                "reservoir.rate.samples_per_insert: the rate limiter is "
                "only for policy reservoir (%s is paced by its data)",
                pname);
            return SURGE_ECONFIG;
        }
        if (isnan(lo)) {
            surge_set_err(err, errlen, "reservoir.rate.min_diff: not a number");
            return SURGE_ECONFIG;
        }
        if (isnan(hi)) {
            surge_set_err(err, errlen, "reservoir.rate.max_diff: not a number");
            return SURGE_ECONFIG;
        }
        if (!(hi - lo >= (double)cfg->max_batch + spi)) {
            surge_set_err(
                err, errlen,
                "reservoir.rate.max_diff: max_diff - min_diff (%g) must "
                "be >= max_batch + samples_per_insert (%g), or the "
                "producer and consumers could both wait",
                hi - lo, (double)cfg->max_batch + spi);
            return SURGE_ECONFIG;
        }
    }
    if (cfg->balance_sims && fifo) {
        surge_set_err(
            err, errlen,
            "reservoir.balance_sims: not with policy fifo (a fifo batch "
            "is the oldest samples)");
        return SURGE_ECONFIG;
    }
    if (cfg->storage != SURGE_RESERVOIR_STORAGE_HOST &&
        cfg->storage != SURGE_RESERVOIR_STORAGE_DEVICE) {
        surge_set_err(err, errlen,
                      "reservoir.storage: unknown storage %d (host or "
                      "device)",
                      (int)cfg->storage);
        return SURGE_ECONFIG;
    }
    if (cfg->storage == SURGE_RESERVOIR_STORAGE_DEVICE && !allow_device) {
        surge_set_err(err, errlen,
                      "reservoir.storage: device needs a build with CUDA "
                      "(configure --with-cuda); use host");
        return SURGE_ECONFIG;
    }
    if (cfg->device < 0) {
        surge_set_err(err, errlen,
                      "reservoir.device: must be a CUDA device ordinal >= 0");
        return SURGE_ECONFIG;
    }
    if (cfg->prioritized.enabled) {
        if (fifo) {
            surge_set_err(
                err, errlen,
                "reservoir.prioritized.enabled: not with policy fifo (a "
                "fifo batch is the oldest samples)");
            return SURGE_ECONFIG;
        }
        if (cfg->balance_sims) {
            surge_set_err(err, errlen,
                          "reservoir.prioritized.enabled: not together with "
                          "balance_sims (choose one way of drawing)");
            return SURGE_ECONFIG;
        }
        double a = cfg->prioritized.alpha, b = cfg->prioritized.beta;
        double e = cfg->prioritized.epsilon;
        if (!(a >= 0.0 && a <= 1.0)) {
            surge_set_err(err, errlen,
                          "reservoir.prioritized.alpha: must be in [0, 1]");
            return SURGE_ECONFIG;
        }
        if (!(b >= 0.0 && b <= 1.0)) {
            surge_set_err(err, errlen,
                          "reservoir.prioritized.beta: must be in [0, 1]");
            return SURGE_ECONFIG;
        }
        if (!(e > 0.0) || !isfinite(e)) {
            surge_set_err(
                err, errlen,
                "reservoir.prioritized.epsilon: must be finite and > 0");
            return SURGE_ECONFIG;
        }
    }
    return 0;
}
