/*
 * reservoir/config.c - the reservoir's configuration: its table of keys
 * (the one place where each key's name, type, bounds, names and default
 * live; the study parser reads the same rows, deploy/study.c), defaults,
 * policy names and the checks that name the study file's key of what is
 * wrong. Checks that span several options (which policy allows which
 * option) are kept in one function on purpose: one place answers "is
 * this config valid", in a fixed order of messages.
 */
#include "config.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/keytab.h"
#include "reservoir/reservoir_impl.h"

#define OFF(f) offsetof(surge_reservoir_config, f)
#define SZ(f) sizeof(((surge_reservoir_config *)0)->f)
#define UNSIGNED SURGE_KEY_UNSIGNED
#define NOMAX SURGE_KEY_NO_MAX

/* The table stores an ENUM as an int and a SIZE as a uint64_t. */
static_assert(sizeof(enum surge_reservoir_policy) == sizeof(int),
              "policy is an ENUM key");
static_assert(sizeof(size_t) == sizeof(uint64_t), "capacity is a SIZE key");

/* Every key of the "reservoir" section that means the same in the study
 * file as here: name, type, field, count field, default (JSON text), min,
 * max, flags, names (index order = the enum's), field size. Not keys:
 * input_dim and output_dim (the sample's shape, from the data), max_batch
 * (the consumer's batch; the study's key also has 0 = the trainer's
 * batch_size) and storage (the study's key also has auto, which the
 * server resolves): their defaults and checks are below.
 * docs/configuration.md documents each key (a unit test compares). */
const struct surge_key surge_reservoir_keys[] = {
    {"policy", SURGE_KEY_ENUM, OFF(policy), 0, "\"reservoir\"", 0, 0, 0,
     SURGE_KEY_CHOICES("fifo", "firo", "reservoir"), SZ(policy), NULL},
    {"capacity_bytes", SURGE_KEY_SIZE, OFF(capacity_bytes), 0, "\"1GiB\"", 1, 0,
     NOMAX, NULL, SZ(capacity_bytes), NULL},
    {"watermark", SURGE_KEY_INT, OFF(watermark), 0, "0", 0, 0, NOMAX | UNSIGNED,
     NULL, SZ(watermark), NULL},
    {"seed", SURGE_KEY_INT, OFF(seed), 0, "1", 0, 0, NOMAX | UNSIGNED, NULL,
     SZ(seed), NULL},
    {"epochs", SURGE_KEY_INT, OFF(epochs), 0, "1", 1, 4294967295.0, UNSIGNED,
     NULL, SZ(epochs), NULL},
    {"max_uses", SURGE_KEY_INT, OFF(max_uses), 0, "0", 0, 4294967295.0,
     UNSIGNED, NULL, SZ(max_uses), NULL},
    {"rate.samples_per_insert", SURGE_KEY_NUM, OFF(rate.samples_per_insert), 0,
     "0", 0, 0, NOMAX, NULL, SZ(rate.samples_per_insert), NULL},
    {"rate.min_diff", SURGE_KEY_NUM, OFF(rate.min_diff), 0, "-1e300", 0, 0,
     SURGE_KEY_NO_MIN | NOMAX, NULL, SZ(rate.min_diff), NULL},
    {"rate.max_diff", SURGE_KEY_NUM, OFF(rate.max_diff), 0, "1e300", 0, 0,
     SURGE_KEY_NO_MIN | NOMAX, NULL, SZ(rate.max_diff), NULL},
    {"balance_sims", SURGE_KEY_BOOL, OFF(balance_sims), 0, "false", 0, 0, 0,
     NULL, SZ(balance_sims), NULL},
    {"prioritized.enabled", SURGE_KEY_BOOL, OFF(prioritized.enabled), 0,
     "false", 0, 0, 0, NULL, SZ(prioritized.enabled), NULL},
    {"prioritized.alpha", SURGE_KEY_NUM, OFF(prioritized.alpha), 0, "0.6", 0, 1,
     0, NULL, SZ(prioritized.alpha), NULL},
    {"prioritized.beta", SURGE_KEY_NUM, OFF(prioritized.beta), 0, "0.4", 0, 1,
     0, NULL, SZ(prioritized.beta), NULL},
    {"prioritized.epsilon", SURGE_KEY_NUM, OFF(prioritized.epsilon), 0, "1e-06",
     0, 0, NOMAX | SURGE_KEY_MIN_EXCL, NULL, SZ(prioritized.epsilon), NULL},
    {"device", SURGE_KEY_INT, OFF(device), 0, "0", 0, 1024, 0, NULL, SZ(device),
     NULL},
    {NULL, SURGE_KEY_CUSTOM, 0, 0, NULL, 0, 0, 0, NULL, 0, NULL},
};

static const struct surge_key *
key(const char *name)
{
    return surge_keytab_find(surge_reservoir_keys, name);
}

const char *
surge_reservoir_policy_name(enum surge_reservoir_policy p)
{
    const char *name = surge_keytab_choice(key("policy"), (int)p);
    return strcmp(name, "?") != 0 ? name : "unknown";
}

int
surge_reservoir_policy_parse(const char *name, enum surge_reservoir_policy *p)
{
    int i = surge_keytab_choice_index(key("policy"), name);
    if (i < 0) {
        return -EINVAL;
    }
    *p = (enum surge_reservoir_policy)i;
    return 0;
}

void
surge_reservoir_config_init(surge_reservoir_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    /* Only a default its own key refuses fails here, which the unit tests
     * rule out (tests/unit/deploy/test_keys.c). */
    (void)surge_keytab_defaults(surge_reservoir_keys, cfg, NULL, 0);
    /* Not keys of the table (see there): storage is host (0). */
    cfg->max_batch = 256;
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
surge_reservoir_config_check_keys(const surge_reservoir_config *cfg, char *err,
                                  size_t errlen)
{
    bool fifo = cfg->policy == SURGE_RESERVOIR_FIFO;
    bool firo = cfg->policy == SURGE_RESERVOIR_FIRO;
    bool resv = cfg->policy == SURGE_RESERVOIR_RESERVOIR;

    surge_set_err(err, errlen, "ok");
    for (const struct surge_key *k = surge_reservoir_keys; k->name != NULL;
         k++) {
        char path[64];
        snprintf(path, sizeof path, "reservoir.%s", k->name);
        int rc = surge_keytab_check(k, cfg, path, err, errlen);
        if (rc != 0) {
            return rc;
        }
    }
    const char *pname = surge_reservoir_policy_name(cfg->policy);
    if (cfg->max_batch == 0) {
        return surge_keytab_error(err, errlen,
                                  "reservoir.max_batch: must be >= 1");
    }
    if (cfg->storage != SURGE_RESERVOIR_STORAGE_HOST &&
        cfg->storage != SURGE_RESERVOIR_STORAGE_DEVICE) {
        return surge_keytab_error(err, errlen,
                                  "reservoir.storage: unknown storage %d (host "
                                  "or device)",
                                  (int)cfg->storage);
    }
    /* Rules across keys. */
    if (cfg->epochs != 1 && !firo) {
        return surge_keytab_error(
            err, errlen,
            "reservoir.epochs: only policy firo has pseudo-epochs "
            "(policy is %s; leave epochs at 1)",
            pname);
    }
    if (cfg->max_uses != 0 && !resv) {
        return surge_keytab_error(
            err, errlen,
            "reservoir.max_uses: only for policy reservoir (%s uses each "
            "sample %s)",
            pname, fifo ? "once" : "epochs times");
    }
    double spi = cfg->rate.samples_per_insert;
    double lo = cfg->rate.min_diff, hi = cfg->rate.max_diff;
    if (!(hi > lo)) {
        return surge_keytab_error(err, errlen,
                                  "reservoir.rate.max_diff: must be > min_diff "
                                  "(%g) (got %g)",
                                  lo, hi);
    }
    if (spi > 0.0) {
        if (!resv) {
            return surge_keytab_error(
                err, errlen,
                "reservoir.rate.samples_per_insert: the rate limiter is "
                "only for policy reservoir (%s is paced by its data)",
                pname);
        }
        if (!(hi - lo >= (double)cfg->max_batch + spi)) {
            return surge_keytab_error(
                err, errlen,
                "reservoir.rate.max_diff: max_diff - min_diff (%g) must "
                "be >= max_batch + samples_per_insert (%g), or the "
                "producer and consumers could both wait",
                hi - lo, (double)cfg->max_batch + spi);
        }
    }
    if (cfg->balance_sims && fifo) {
        return surge_keytab_error(
            err, errlen,
            "reservoir.balance_sims: not with policy fifo (a fifo batch "
            "is the oldest samples)");
    }
    if (cfg->prioritized.enabled && fifo) {
        return surge_keytab_error(
            err, errlen,
            "reservoir.prioritized.enabled: not with policy fifo (a fifo "
            "batch is the oldest samples)");
    }
    if (cfg->prioritized.enabled && cfg->balance_sims) {
        return surge_keytab_error(
            err, errlen,
            "reservoir.prioritized.enabled: not together with balance_sims "
            "(choose one way of drawing)");
    }
    return 0;
}

int
res_config_check(const surge_reservoir_config *cfg, bool allow_device,
                 char *err, size_t errlen)
{
    size_t sample_bytes, slot_bytes, nslots;
    int rc = surge_reservoir_config_check_keys(cfg, err, errlen);
    if (rc != 0) {
        return rc;
    }
    rc =
        res_derive_sizes(cfg, &sample_bytes, &slot_bytes, &nslots, err, errlen);
    if (rc != 0) {
        return rc;
    }
    if (cfg->max_batch > MAX_SLOTS) {
        return surge_keytab_error(err, errlen,
                                  "reservoir.max_batch: %zu is too large",
                                  cfg->max_batch);
    }
    if (nslots == 0) {
        return surge_keytab_error(
            err, errlen,
            "reservoir.capacity_bytes: %zu bytes cannot hold one sample "
            "of %zu bytes (slot %zu bytes)",
            cfg->capacity_bytes, sample_bytes, slot_bytes);
    }
    if (nslots > MAX_SLOTS) {
        return surge_keytab_error(
            err, errlen,
            "reservoir.capacity_bytes: %zu slots of %zu bytes is more "
            "than the %u a reservoir can index",
            nslots, slot_bytes, (unsigned)MAX_SLOTS);
    }
    if (cfg->policy != SURGE_RESERVOIR_RESERVOIR && nslots < cfg->max_batch) {
        return surge_keytab_error(
            err, errlen,
            "reservoir.capacity_bytes: holds %zu samples of %zu bytes; "
            "policy %s needs at least max_batch (%zu)",
            nslots, slot_bytes, surge_reservoir_policy_name(cfg->policy),
            cfg->max_batch);
    }
    if (cfg->watermark > nslots) {
        return surge_keytab_error(
            err, errlen,
            "reservoir.watermark: must be <= capacity in samples (%zu)",
            nslots);
    }
    if (cfg->storage == SURGE_RESERVOIR_STORAGE_DEVICE && !allow_device) {
        return surge_keytab_error(err, errlen,
                                  "reservoir.storage: device needs a build "
                                  "with CUDA (configure --with-cuda); use "
                                  "host");
    }
    return 0;
}
