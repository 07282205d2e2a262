/*
 * tests/unit/reservoir/test_reservoir.c - the reservoir's policies, options,
 * end of reception, waiting, stats and checkpoint, one thread at a time
 * (tests/unit/reservoir/test_reservoir_stress.c runs threads under TSan).
 *
 * Every random choice comes from fixed seeds, so each run draws the same
 * batches. The statistical tests state their significance level: with a
 * fixed seed they either always pass or always fail, and the level says how
 * unlikely a failure would be for a correct implementation over seeds.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/pool.h"
#include "reservoir/reservoir.h"

#define IN_DIM 2
#define OUT_DIM 6
#define SLOT 64 /* (IN_DIM + OUT_DIM) * 4 = 32 bytes, rounded up to 64 */

/* A sample's content is a function of its id, so every row can be checked
 * for the sample it claims to be (no torn or misplaced copy). */
static void
fill(uint64_t id, float *in, float *out)
{
    in[0] = (float)id;
    in[1] = -(float)id;
    for (int k = 0; k < OUT_DIM; k++) {
        out[k] = (float)id * 8.0f + (float)k;
    }
}

static void
check_row(const float *in, const float *out, uint64_t *id)
{
    *id = (uint64_t)in[0];
    assert_true(in[1] == -in[0]);
    for (int k = 0; k < OUT_DIM; k++) {
        assert_true(out[k] == in[0] * 8.0f + (float)k);
    }
}

static surge_reservoir_config
cfg_for(enum surge_reservoir_policy p, size_t nslots, size_t max_batch)
{
    surge_reservoir_config c;
    surge_reservoir_config_init(&c);
    c.policy = p;
    c.input_dim = IN_DIM;
    c.output_dim = OUT_DIM;
    c.capacity_bytes = nslots * SLOT;
    c.max_batch = max_batch;
    c.seed = 12345;
    return c;
}

static surge_reservoir *
make(const surge_reservoir_config *c)
{
    surge_reservoir *r = NULL;
    char err[256];
    int rc = surge_reservoir_create(&r, c, err, sizeof(err));
    if (rc != 0) {
        print_error("create failed: %s\n", err);
    }
    assert_int_equal(rc, 0);
    assert_non_null(r);
    return r;
}

/* Put sample id of simulation sim; the id doubles as the step. */
static int
put(surge_reservoir *r, uint64_t id, uint64_t sim, int timeout_ms)
{
    float in[IN_DIM], out[OUT_DIM];
    fill(id, in, out);
    surge_sample_meta m = {.sim = sim, .step = id, .arrival_ns = 0};
    return surge_reservoir_put(r, in, out, &m, timeout_ms);
}

/* Put samples first .. end - 1 of simulation sim (ids doubling as steps),
 * each accepted at once. */
static void
put_ids(surge_reservoir *r, uint64_t first, uint64_t end, uint64_t sim)
{
    for (uint64_t id = first; id < end; id++) {
        assert_int_equal(put(r, id, sim, 0), 0);
    }
}

/* Get a batch of up to B (<= 512) rows; check each row and store the ids. */
static long
get(surge_reservoir *r, size_t B, uint64_t *ids, surge_batch_info *info,
    int timeout_ms)
{
    float in[512 * IN_DIM], out[512 * OUT_DIM];
    surge_batch_info local[512];
    assert_true(B <= 512);
    surge_batch_info *inf = info != NULL ? info : local;
    long n = surge_reservoir_get_batch(r, B, in, out, inf, timeout_ms);
    for (long i = 0; i < n; i++) {
        uint64_t id;
        check_row(in + i * IN_DIM, out + i * OUT_DIM, &id);
        assert_int_equal(inf[i].step, id);
        assert_true(inf[i].uses >= 1);
        if (ids != NULL) {
            ids[i] = id;
        }
    }
    return n;
}

static surge_reservoir_stats
stats(surge_reservoir *r)
{
    surge_reservoir_stats st;
    surge_reservoir_get_stats(r, &st);
    return st;
}

/* ------------------------------------------------------------ config */

struct bad_case {
    const char *key; /* the message must start with it */
    void (*mutate)(surge_reservoir_config *c);
};

static void
m_policy(surge_reservoir_config *c)
{
    c->policy = (enum surge_reservoir_policy)7;
}
static void
m_dims(surge_reservoir_config *c)
{
    c->input_dim = 0;
    c->output_dim = 0;
}
static void
m_in_huge(surge_reservoir_config *c)
{
    c->input_dim = SIZE_MAX / 2;
}
static void
m_out_huge(surge_reservoir_config *c)
{
    c->output_dim = SIZE_MAX / 3;
}
static void
m_batch0(surge_reservoir_config *c)
{
    c->max_batch = 0;
}
static void
m_cap0(surge_reservoir_config *c)
{
    c->capacity_bytes = 10;
}
static void
m_cap_small_fifo(surge_reservoir_config *c)
{
    c->policy = SURGE_RESERVOIR_FIFO;
    c->capacity_bytes = 8 * SLOT;
    c->max_batch = 9;
}
static void
m_cap_small_firo(surge_reservoir_config *c)
{
    c->policy = SURGE_RESERVOIR_FIRO;
    c->capacity_bytes = 8 * SLOT;
    c->max_batch = 9;
}
static void
m_watermark(surge_reservoir_config *c)
{
    c->capacity_bytes = 12 * SLOT;
    c->watermark = 13;
}
static void
m_epochs0(surge_reservoir_config *c)
{
    c->policy = SURGE_RESERVOIR_FIRO;
    c->epochs = 0;
}
static void
m_epochs_fifo(surge_reservoir_config *c)
{
    c->policy = SURGE_RESERVOIR_FIFO;
    c->epochs = 2;
}
static void
m_epochs_resv(surge_reservoir_config *c)
{
    c->epochs = 3;
}
static void
m_max_uses_firo(surge_reservoir_config *c)
{
    c->policy = SURGE_RESERVOIR_FIRO;
    c->max_uses = 2;
}
static void
m_spi_neg(surge_reservoir_config *c)
{
    c->rate.samples_per_insert = -1.0;
}
static void
m_spi_nan(surge_reservoir_config *c)
{
    c->rate.samples_per_insert = NAN;
}
static void
m_spi_inf(surge_reservoir_config *c)
{
    c->rate.samples_per_insert = INFINITY;
}
static void
m_spi_fifo(surge_reservoir_config *c)
{
    c->policy = SURGE_RESERVOIR_FIFO;
    c->rate.samples_per_insert = 1.0;
}
static void
m_rate_window(surge_reservoir_config *c)
{
    c->rate.samples_per_insert = 4.0;
    c->rate.min_diff = 0.0;
    c->rate.max_diff = 10.0; /* < max_batch (8) + 4 */
}
static void
m_rate_min_nan(surge_reservoir_config *c)
{
    c->rate.samples_per_insert = 1.0;
    c->rate.min_diff = NAN;
}
static void
m_rate_max_nan(surge_reservoir_config *c)
{
    c->rate.samples_per_insert = 1.0;
    c->rate.max_diff = NAN;
}
static void
m_balance_fifo(surge_reservoir_config *c)
{
    c->policy = SURGE_RESERVOIR_FIFO;
    c->balance_sims = true;
}
static void
m_prio_fifo(surge_reservoir_config *c)
{
    c->policy = SURGE_RESERVOIR_FIFO;
    c->prioritized.enabled = true;
}
static void
m_prio_balance(surge_reservoir_config *c)
{
    c->prioritized.enabled = true;
    c->balance_sims = true;
}
static void
m_alpha(surge_reservoir_config *c)
{
    c->prioritized.enabled = true;
    c->prioritized.alpha = 1.5;
}
static void
m_alpha_nan(surge_reservoir_config *c)
{
    c->prioritized.enabled = true;
    c->prioritized.alpha = NAN;
}
static void
m_beta(surge_reservoir_config *c)
{
    c->prioritized.enabled = true;
    c->prioritized.beta = -0.1;
}
static void
m_eps(surge_reservoir_config *c)
{
    c->prioritized.enabled = true;
    c->prioritized.epsilon = 0.0;
}

static void
test_config_invalid(void **state)
{
    (void)state;
    const struct bad_case cases[] = {
        {"reservoir.policy:", m_policy},
        {"reservoir.output_dim:", m_dims},
        {"reservoir.input_dim:", m_in_huge},
        {"reservoir.output_dim:", m_out_huge},
        {"reservoir.max_batch:", m_batch0},
        {"reservoir.capacity_bytes:", m_cap0},
        {"reservoir.capacity_bytes:", m_cap_small_fifo},
        {"reservoir.capacity_bytes:", m_cap_small_firo},
        {"reservoir.watermark: must be <= capacity in samples (12)",
         m_watermark},
        {"reservoir.epochs:", m_epochs0},
        {"reservoir.epochs:", m_epochs_fifo},
        {"reservoir.epochs:", m_epochs_resv},
        {"reservoir.max_uses:", m_max_uses_firo},
        {"reservoir.rate.samples_per_insert:", m_spi_neg},
        {"reservoir.rate.samples_per_insert:", m_spi_nan},
        {"reservoir.rate.samples_per_insert:", m_spi_inf},
        {"reservoir.rate.samples_per_insert:", m_spi_fifo},
        {"reservoir.rate.max_diff:", m_rate_window},
        {"reservoir.rate.min_diff:", m_rate_min_nan},
        {"reservoir.rate.max_diff:", m_rate_max_nan},
        {"reservoir.balance_sims:", m_balance_fifo},
        {"reservoir.prioritized.enabled:", m_prio_fifo},
        {"reservoir.prioritized.enabled:", m_prio_balance},
        {"reservoir.prioritized.alpha:", m_alpha},
        {"reservoir.prioritized.alpha:", m_alpha_nan},
        {"reservoir.prioritized.beta:", m_beta},
        {"reservoir.prioritized.epsilon:", m_eps},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        surge_reservoir_config c = cfg_for(SURGE_RESERVOIR_RESERVOIR, 64, 8);
        cases[i].mutate(&c);
        char err[256] = "";
        surge_reservoir *r = (surge_reservoir *)&c; /* must stay untouched */
        surge_reservoir *keep = r;
        int rc = surge_reservoir_create(&r, &c, err, sizeof(err));
        if (rc != SURGE_ECONFIG ||
            strncmp(err, cases[i].key, strlen(cases[i].key)) != 0) {
            print_error("case %zu: rc %d, message \"%s\", want \"%s...\"\n", i,
                        rc, err, cases[i].key);
        }
        assert_int_equal(rc, SURGE_ECONFIG);
        assert_true(strncmp(err, cases[i].key, strlen(cases[i].key)) == 0);
        assert_ptr_equal(r, keep);
        assert_int_equal(surge_reservoir_config_check(&c, NULL, 0),
                         SURGE_ECONFIG);
    }
    /* A tiny error buffer is still NUL-terminated. */
    surge_reservoir_config c = cfg_for(SURGE_RESERVOIR_RESERVOIR, 64, 8);
    c.max_batch = 0;
    char small[8];
    memset(small, 'x', sizeof(small));
    assert_int_equal(surge_reservoir_config_check(&c, small, sizeof(small)),
                     SURGE_ECONFIG);
    assert_int_equal(small[7], '\0');
}

static void
test_config_valid_and_names(void **state)
{
    (void)state;
    surge_reservoir_config c;
    surge_reservoir_config_init(&c);
    assert_int_equal(c.policy, SURGE_RESERVOIR_RESERVOIR);
    assert_int_equal(c.max_batch, 256);
    assert_int_equal(c.epochs, 1);
    /* Shape unset by default: create says so. */
    char err[256];
    assert_int_equal(surge_reservoir_config_check(&c, err, sizeof(err)),
                     SURGE_ECONFIG);
    assert_non_null(strstr(err, "reservoir.output_dim"));
    /* Every policy with its options is accepted. */
    for (int p = 0; p < 3; p++) {
        c = cfg_for((enum surge_reservoir_policy)p, 64, 8);
        assert_int_equal(surge_reservoir_config_check(&c, err, sizeof(err)), 0);
        if (p != SURGE_RESERVOIR_FIFO) {
            c.balance_sims = true;
            assert_int_equal(surge_reservoir_config_check(&c, NULL, 0), 0);
            c.balance_sims = false;
            c.prioritized.enabled = true;
            assert_int_equal(surge_reservoir_config_check(&c, NULL, 0), 0);
        }
    }
    c = cfg_for(SURGE_RESERVOIR_RESERVOIR, 64, 8);
    c.max_uses = 3;
    c.rate.samples_per_insert = 2.0;
    c.rate.min_diff = -10;
    c.rate.max_diff = 0; /* window 10 = max_batch 8 + spi 2 */
    assert_int_equal(surge_reservoir_config_check(&c, err, sizeof(err)), 0);

    enum surge_reservoir_policy p;
    assert_int_equal(surge_reservoir_policy_parse("firo", &p), 0);
    assert_int_equal(p, SURGE_RESERVOIR_FIRO);
    assert_int_equal(surge_reservoir_policy_parse("reservoir", &p), 0);
    assert_int_equal(p, SURGE_RESERVOIR_RESERVOIR);
    assert_int_equal(surge_reservoir_policy_parse("fifo", &p), 0);
    assert_int_equal(p, SURGE_RESERVOIR_FIFO);
    assert_int_equal(surge_reservoir_policy_parse("FIFO", &p), -EINVAL);
    assert_int_equal(surge_reservoir_policy_parse(NULL, &p), -EINVAL);
    assert_string_equal(surge_reservoir_policy_name(SURGE_RESERVOIR_FIRO),
                        "firo");

    /* Bad arguments of the calls themselves. */
    surge_reservoir *r = make(&c);
    float in[IN_DIM], out[OUT_DIM];
    assert_int_equal(surge_reservoir_put(r, NULL, out, NULL, 0), -EINVAL);
    assert_int_equal(surge_reservoir_put(r, in, NULL, NULL, 0), -EINVAL);
    assert_int_equal(surge_reservoir_get_batch(r, 0, in, out, NULL, 0),
                     -EINVAL);
    assert_int_equal(surge_reservoir_get_batch(r, 9, in, out, NULL, 0),
                     -EINVAL);
    assert_int_equal(surge_reservoir_get_batch(r, 1, NULL, out, NULL, 0),
                     -EINVAL);
    assert_int_equal(surge_reservoir_update_priorities(r, NULL, NULL, 0),
                     SURGE_ESTATE);
    assert_int_equal(surge_reservoir_set_beta(r, 0.5), SURGE_ESTATE);
    surge_reservoir_destroy(&r);
    assert_null(r);
    surge_reservoir_destroy(&r); /* no-op */
    surge_reservoir_destroy(NULL);
}

/* --------------------------------------------------------------- fifo */

static void
test_fifo(void **state)
{
    (void)state;
    surge_reservoir_config c = cfg_for(SURGE_RESERVOIR_FIFO, 8, 4);
    surge_reservoir *r = make(&c);
    uint64_t ids[8];

    /* Fewer than B present: no batch. */
    put_ids(r, 0, 3, 0);
    assert_int_equal(get(r, 4, ids, NULL, 0), SURGE_ETIMEDOUT);
    put_ids(r, 3, 8, 0);
    /* Full: the put waits, then times out; nothing stored. */
    assert_int_equal(put(r, 99, 0, 0), SURGE_ETIMEDOUT);
    assert_int_equal(put(r, 99, 0, 20), SURGE_ETIMEDOUT);
    assert_int_equal(stats(r).puts, 8);
    /* timeout 0 never waits: only the second attempt counts. */
    assert_int_equal(stats(r).producer_waits, 1);

    /* Oldest first, each once. */
    assert_int_equal(get(r, 4, ids, NULL, 0), 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(ids[i], i);
    }
    put_ids(r, 8, 12, 0);
    assert_int_equal(get(r, 3, ids, NULL, 0), 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(ids[i], 4 + i);
    }
    surge_reservoir_stats st = stats(r);
    assert_int_equal(st.occupancy_samples, 5);
    assert_int_equal(st.occupancy_bytes, 5 * 32);
    assert_int_equal(st.retired, 7);
    assert_int_equal(st.uses_removed[1], 7);
    assert_int_equal(st.uses_present[0], 5);
    assert_int_equal(st.evictions, 0);

    /* End of reception: the rest in order, a short batch, then 0. */
    surge_reservoir_end_reception(r);
    assert_int_equal(put(r, 100, 0, 0), SURGE_ESTATE);
    assert_int_equal(get(r, 4, ids, NULL, 0), 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(ids[i], 7 + i);
    }
    assert_int_equal(get(r, 4, ids, NULL, 0), 1);
    assert_int_equal(ids[0], 11);
    assert_int_equal(get(r, 4, ids, NULL, 0), 0);
    assert_int_equal(get(r, 4, ids, NULL, -1), 0); /* never blocks now */
    st = stats(r);
    assert_true(st.finished);
    assert_int_equal(st.puts, 12);
    assert_int_equal(st.gets, 12);
    assert_int_equal(st.retired, 12);
    surge_reservoir_destroy(&r);
}

static void
test_fifo_watermark(void **state)
{
    (void)state;
    surge_reservoir_config c = cfg_for(SURGE_RESERVOIR_FIFO, 16, 2);
    c.watermark = 5;
    surge_reservoir *r = make(&c);
    put_ids(r, 0, 4, 0);
    assert_int_equal(get(r, 2, NULL, NULL, 0), SURGE_ETIMEDOUT);
    assert_int_equal(put(r, 4, 0, 0), 0);
    assert_int_equal(get(r, 2, NULL, NULL, 0), 2);
    /* Below the watermark again (3 left): it applies at every batch. */
    assert_int_equal(get(r, 2, NULL, NULL, 0), SURGE_ETIMEDOUT);
    /* After end of reception the watermark no longer applies. */
    surge_reservoir_end_reception(r);
    assert_int_equal(get(r, 2, NULL, NULL, 0), 2);
    assert_int_equal(get(r, 2, NULL, NULL, 0), 1);
    assert_int_equal(get(r, 2, NULL, NULL, 0), 0);
    surge_reservoir_destroy(&r);
}

/* --------------------------------------------------------------- firo */

static void
run_firo_epochs(unsigned epochs, bool balance, bool prio)
{
    const size_t N = 200, CAP = 64, B = 16;
    surge_reservoir_config c = cfg_for(SURGE_RESERVOIR_FIRO, CAP, B);
    c.epochs = epochs;
    c.balance_sims = balance;
    c.prioritized.enabled = prio;
    surge_reservoir *r = make(&c);
    unsigned *count = calloc(N, sizeof(unsigned));
    assert_non_null(count);
    uint64_t ids[16];
    uint64_t next = 0, rows = 0;
    unsigned order_changes = 0;
    uint64_t last = 0;
    bool ended = false;
    for (;;) {
        /* Fill as far as the reservoir takes, then draw one batch. */
        while (next < N && put(r, next, next % 5, 0) == 0) {
            next++;
        }
        if (next == N && !ended) {
            surge_reservoir_end_reception(r);
            ended = true;
        }
        long n = get(r, B, ids, NULL, 0);
        if (n == 0) {
            break;
        }
        assert_true(n > 0);
        assert_true(ended || n == (long)B);
        for (long i = 0; i < n; i++) {
            /* Distinct within a batch. */
            for (long j = 0; j < i; j++) {
                assert_true(ids[i] != ids[j]);
            }
            assert_true(ids[i] < next);
            count[ids[i]]++;
            if (ids[i] != last + 1) {
                order_changes++;
            }
            last = ids[i];
        }
        rows += (uint64_t)n;
    }
    /* Every sample used exactly `epochs` times, drain included. */
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(count[i], epochs);
    }
    assert_true(order_changes > N / 2); /* random, not in put order */
    surge_reservoir_stats st = stats(r);
    assert_int_equal(st.puts, N);
    assert_int_equal(st.gets, N * epochs);
    assert_int_equal(rows, N * epochs);
    assert_int_equal(st.retired, N);
    assert_int_equal(st.uses_removed[epochs], N);
    assert_int_equal(st.occupancy_samples, 0);
    assert_int_equal(st.distinct_sims, 0);
    assert_true(st.finished);
    free(count);
    surge_reservoir_destroy(&r);
}

static void
test_firo(void **state)
{
    (void)state;
    run_firo_epochs(1, false, false);
}

static void
test_firo_epochs(void **state)
{
    (void)state;
    run_firo_epochs(3, false, false);
    run_firo_epochs(2, true, false);
    run_firo_epochs(2, false, true);
}

/* ----------------------------------------------------------- reservoir */

static void
test_reservoir_watermark_and_eviction(void **state)
{
    (void)state;
    surge_reservoir_config c = cfg_for(SURGE_RESERVOIR_RESERVOIR, 10, 4);
    c.watermark = 6;
    surge_reservoir *r = make(&c);
    uint64_t ids[4];
    surge_batch_info info[4];
    put_ids(r, 0, 5, 0);
    assert_int_equal(get(r, 4, ids, NULL, 0), SURGE_ETIMEDOUT);
    assert_int_equal(put(r, 5, 0, 0), 0);
    assert_int_equal(get(r, 4, ids, info, 0), 4);
    for (int i = 0; i < 4; i++) {
        assert_true(ids[i] < 6);
        assert_true(info[i].weight == 1.0f);
    }
    /* Fill up to capacity; nothing used yet among the new ones. */
    put_ids(r, 6, 10, 0);
    assert_int_equal(stats(r).evictions, 0);
    /* Full: a put evicts a used sample (some of 0..5 were used). */
    surge_reservoir_stats st = stats(r);
    uint64_t used = st.occupancy_samples - st.uses_present[0];
    assert_true(used >= 1);
    put_ids(r, 100, 100 + used, 0);
    /* Now every sample present is unseen: the put must wait. */
    assert_int_equal(put(r, 200, 0, 0), SURGE_ETIMEDOUT);
    st = stats(r);
    assert_int_equal(st.evictions, used);
    assert_int_equal(st.uses_present[0], 10);
    assert_int_equal(st.occupancy_samples, 10);
    surge_reservoir_destroy(&r);
}

/* The reservoir's promise, checked over a long random interleaving: no
 * sample is evicted before it was used, and at the end of the drain every
 * sample put has been served at least once. */
static void
test_reservoir_never_evicts_unseen(void **state)
{
    (void)state;
    const uint64_t N = 5000;
    surge_reservoir_config c = cfg_for(SURGE_RESERVOIR_RESERVOIR, 50, 8);
    c.watermark = 20;
    surge_reservoir *r = make(&c);
    unsigned *served = calloc(N, sizeof(unsigned));
    assert_non_null(served);
    uint64_t ids[8];
    uint64_t next = 0;
    uint64_t x = 987654321; /* the test's own LCG decides the interleaving */
    while (next < N) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        unsigned burst = (unsigned)(x >> 60); /* 0..15 puts */
        for (unsigned k = 0; k < burst && next < N; k++) {
            int rc = put(r, next, 0, 0);
            if (rc == SURGE_ETIMEDOUT) {
                /* Waiting is only allowed when nothing present is used. */
                surge_reservoir_stats st = stats(r);
                assert_int_equal(st.uses_present[0], st.occupancy_samples);
                assert_int_equal(st.occupancy_samples, 50);
                break;
            }
            assert_int_equal(rc, 0);
            next++;
        }
        long n = get(r, 8, ids, NULL, 0);
        for (long i = 0; i < n; i++) {
            served[ids[i]]++;
        }
        /* Evicted samples left with >= 1 use, every one of them. */
        assert_int_equal(stats(r).uses_removed[0], 0);
    }
    surge_reservoir_end_reception(r);
    long n;
    while ((n = get(r, 8, ids, NULL, 0)) > 0) {
        for (long i = 0; i < n; i++) {
            served[ids[i]]++;
        }
    }
    assert_int_equal(n, 0);
    for (uint64_t i = 0; i < N; i++) {
        assert_true(served[i] >= 1);
    }
    surge_reservoir_stats st = stats(r);
    assert_int_equal(st.uses_removed[0], 0);
    assert_int_equal(st.puts, N);
    /* Counts add up: every sample put left by eviction or retirement. */
    assert_int_equal(st.evictions + st.retired, N);
    assert_true(st.evictions > 0);
    assert_true(st.finished);
    free(served);
    surge_reservoir_destroy(&r);
}

/* Draws of the reservoir policy are uniform over the samples present:
 * Pearson's chi-square over K = 40 samples and 40,000 rows; 39 degrees of
 * freedom, critical value 72.05 at significance 0.001. */
static void
test_reservoir_uniform_chi_square(void **state)
{
    (void)state;
    const int K = 40, ROWS = 40000, B = 64;
    surge_reservoir_config c = cfg_for(SURGE_RESERVOIR_RESERVOIR, K, B);
    c.watermark = K;
    surge_reservoir *r = make(&c);
    for (int i = 0; i < K; i++) {
        assert_int_equal(put(r, (uint64_t)i, 0, 0), 0);
    }
    double obs[40] = {0};
    uint64_t ids[64];
    int dups = 0;
    for (int got = 0; got < ROWS; got += B) {
        assert_int_equal(get(r, (size_t)B, ids, NULL, 0), B);
        for (int i = 0; i < B; i++) {
            obs[ids[i]] += 1.0;
            for (int j = 0; j < i; j++) {
                dups += ids[i] == ids[j];
            }
        }
    }
    double n = (double)(ROWS / B * B), e = n / K, chi2 = 0.0;
    for (int i = 0; i < K; i++) {
        chi2 += (obs[i] - e) * (obs[i] - e) / e;
    }
    print_message("# reservoir uniform chi2 = %.2f (39 dof, crit 72.05)\n",
                  chi2);
    assert_true(chi2 < 72.05);
    /* With replacement: batches of 64 from 40 must repeat samples. */
    assert_true(dups > 0);
    surge_reservoir_stats st = stats(r);
    assert_int_equal(st.uses_present[0], 0);
    assert_int_equal(st.gets, (uint64_t)n);
    surge_reservoir_destroy(&r);
}

/* FIRO draws are uniform too: K = 20 samples that stay (epochs large),
 * 4000 batches of B = 5 distinct samples; chi-square on how often each is
 * drawn, 19 dof, critical value 43.82 at significance 0.001. (Drawing
 * without replacement within a batch shrinks the statistic by about
 * (K - B) / (K - 1), so the test is conservative.) */
static void
test_firo_uniform_chi_square(void **state)
{
    (void)state;
    const int K = 20, B = 5, BATCHES = 4000;
    surge_reservoir_config c = cfg_for(SURGE_RESERVOIR_FIRO, K, B);
    c.epochs = 1000000;
    surge_reservoir *r = make(&c);
    for (int i = 0; i < K; i++) {
        assert_int_equal(put(r, (uint64_t)i, 0, 0), 0);
    }
    double obs[20] = {0};
    uint64_t ids[5];
    for (int t = 0; t < BATCHES; t++) {
        assert_int_equal(get(r, (size_t)B, ids, NULL, 0), B);
        for (int i = 0; i < B; i++) {
            obs[ids[i]] += 1.0;
            for (int j = 0; j < i; j++) {
                assert_true(ids[i] != ids[j]);
            }
        }
    }
    double e = (double)BATCHES * B / K, chi2 = 0.0;
    for (int i = 0; i < K; i++) {
        chi2 += (obs[i] - e) * (obs[i] - e) / e;
    }
    print_message("# firo uniform chi2 = %.2f (19 dof, crit 43.82)\n", chi2);
    assert_true(chi2 < 43.82);
    surge_reservoir_destroy(&r);
}

static void
test_reservoir_max_uses(void **state)
{
    (void)state;
    const uint64_t N = 300;
    surge_reservoir_config c = cfg_for(SURGE_RESERVOIR_RESERVOIR, 16, 8);
    c.watermark = 4;
    c.max_uses = 3;
    surge_reservoir *r = make(&c);
    unsigned served[300] = {0};
    uint64_t ids[8];
    uint64_t next = 0;
    while (next < N) {
        while (next < N && put(r, next, 0, 0) == 0) {
            next++;
        }
        long n = get(r, 8, ids, NULL, 0);
        if (n == SURGE_ETIMEDOUT) {
            /* Only for lack of data: the reservoir is not full of usable
             * samples (uses left < B or below the watermark). */
            assert_true(next < N);
            continue;
        }
        assert_int_equal(n, 8);
        for (long i = 0; i < n; i++) {
            served[ids[i]]++;
            assert_true(served[ids[i]] <= 3);
        }
    }
    surge_reservoir_end_reception(r);
    long n;
    while ((n = get(r, 8, ids, NULL, 0)) > 0) {
        for (long i = 0; i < n; i++) {
            served[ids[i]]++;
            assert_true(served[ids[i]] <= 3);
        }
    }
    uint64_t total = 0;
    for (uint64_t i = 0; i < N; i++) {
        assert_true(served[i] >= 1 && served[i] <= 3);
        total += served[i];
    }
    surge_reservoir_stats st = stats(r);
    assert_int_equal(st.gets, total);
    assert_int_equal(st.evictions + st.retired, N);
    assert_true(st.uses_removed[3] > 0);
    for (int b = 4; b < SURGE_RESERVOIR_USES_BUCKETS; b++) {
        assert_int_equal(st.uses_removed[b], 0);
    }
    surge_reservoir_destroy(&r);
}

/* A batch when only one sample with uses left remains: with replacement,
 * a sample at its cap is not drawn again within the batch. */
static void
test_reservoir_max_uses_within_batch(void **state)
{
    (void)state;
    surge_reservoir_config c = cfg_for(SURGE_RESERVOIR_RESERVOIR, 8, 4);
    c.watermark = 2;
    c.max_uses = 2;
    surge_reservoir *r = make(&c);
    uint64_t ids[4];
    assert_int_equal(put(r, 0, 0, 0), 0);
    assert_int_equal(put(r, 1, 0, 0), 0);
    /* 4 uses left in total: exactly one batch of 4, each sample twice. */
    assert_int_equal(get(r, 4, ids, NULL, 0), 4);
    unsigned c0 = 0;
    for (int i = 0; i < 4; i++) {
        c0 += ids[i] == 0;
    }
    assert_int_equal(c0, 2);
    assert_int_equal(stats(r).occupancy_samples, 0);
    assert_int_equal(get(r, 1, ids, NULL, 0), SURGE_ETIMEDOUT);
    assert_int_equal(stats(r).retired, 2);
    surge_reservoir_destroy(&r);
}

/* After end of reception the reservoir serves each sample once more, with
 * no repeat, then reports finished. */
static void
test_reservoir_drain(void **state)
{
    (void)state;
    surge_reservoir_config c = cfg_for(SURGE_RESERVOIR_RESERVOIR, 32, 8);
    c.watermark = 30; /* not reached: the drain ignores it */
    surge_reservoir *r = make(&c);
    put_ids(r, 0, 20, 0);
    uint64_t ids[8];
    assert_int_equal(get(r, 8, ids, NULL, 0), SURGE_ETIMEDOUT);
    surge_reservoir_end_reception(r);
    unsigned seen[20] = {0};
    long n, total = 0;
    while ((n = get(r, 8, ids, NULL, 0)) > 0) {
        for (long i = 0; i < n; i++) {
            seen[ids[i]]++;
        }
        total += n;
    }
    assert_int_equal(n, 0);
    assert_int_equal(total, 20);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(seen[i], 1);
    }
    surge_reservoir_destroy(&r);
}

/* --------------------------------------------------------- rate limiter */

static void
test_rate_limiter(void **state)
{
    (void)state;
    /* Reverb SampleToInsertRatio(spi = 2, min_size = 8, error_buffer = 12):
     * min_diff = 16 - 12 = 4, max_diff = 16 + 12 = 28 (window 24 >= B 4 +
     * spi 2). */
    surge_reservoir_config c = cfg_for(SURGE_RESERVOIR_RESERVOIR, 1000, 4);
    c.watermark = 8;
    c.rate.samples_per_insert = 2.0;
    c.rate.min_diff = 4.0;
    c.rate.max_diff = 28.0;
    surge_reservoir *r = make(&c);
    uint64_t next = 0;
    uint64_t blocked_put = 0, blocked_get = 0;
    uint64_t x = 42;
    for (int round = 0; round < 2000; round++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        /* First half: 3 puts in 4 (the producer runs ahead and meets
         * max_diff); second half: 1 in 4 (the consumer meets min_diff). */
        bool do_put = round < 1000 ? (x >> 62) != 0 : (x >> 62) == 0;
        if (do_put) {
            int rc = put(r, next, 0, 0);
            if (rc == 0) {
                next++;
            } else {
                assert_int_equal(rc, SURGE_ETIMEDOUT);
                blocked_put++;
            }
        } else {
            long n = get(r, 4, NULL, NULL, 0);
            if (n == SURGE_ETIMEDOUT) {
                blocked_get++;
            } else {
                assert_int_equal(n, 4);
            }
        }
        surge_reservoir_stats st = stats(r);
        double diff = 2.0 * (double)st.puts - (double)st.gets;
        /* Once past the watermark, the limiter keeps the difference in
         * its window (below it the producer may run ahead of min_diff). */
        assert_true(diff <= 28.0);
        if (st.puts >= 8) {
            assert_true(diff >= 4.0);
        }
    }
    assert_true(blocked_put > 0);
    assert_true(blocked_get > 0);
    surge_reservoir_stats st = stats(r);
    /* About 2 rows per put over the run. */
    assert_true(st.gets >= 2 * st.puts - 28 && st.gets <= 2 * st.puts - 4);
    assert_int_equal(st.rate_overrides, 0);
    /* End of reception lifts the limiter: the consumer drains freely. */
    surge_reservoir_end_reception(r);
    long n, total = 0;
    while ((n = get(r, 4, NULL, NULL, 0)) > 0) {
        total += n;
    }
    assert_int_equal(n, 0);
    assert_int_equal(total, (long)st.occupancy_samples);
    surge_reservoir_destroy(&r);
}

/* The limiter would hold the producer back (spi tiny, max_diff 0 ... ) but
 * the consumer is starved below the watermark: the producer goes through.
 * And it would hold the consumer back while the producer waits for room
 * (full, nothing used): the consumer goes through. Neither deadlocks. */
static void
test_rate_limiter_no_deadlock(void **state)
{
    (void)state;
    surge_reservoir_config c = cfg_for(SURGE_RESERVOIR_RESERVOIR, 8, 2);
    c.watermark = 6;
    c.rate.samples_per_insert = 10.0;
    c.rate.min_diff = -5.0;
    c.rate.max_diff = 8.0; /* window 13 >= 2 + 10; one put already past */
    surge_reservoir *r = make(&c);
    /* (0+1)*10 - 0 = 10 > 8: the limiter says wait, but no batch can be
     * served below the watermark, so the puts proceed. */
    put_ids(r, 0, 6, 0);
    assert_int_equal(stats(r).rate_overrides, 6);
    /* Now at the watermark: the limiter holds the producer. */
    assert_int_equal(put(r, 6, 0, 0), SURGE_ETIMEDOUT);
    assert_int_equal(get(r, 2, NULL, NULL, 0), 2);
    surge_reservoir_destroy(&r);

    /* spi = 0.1: the consumer may take little; a full reservoir of unseen
     * samples makes the producer wait, so the consumer is let through. */
    c = cfg_for(SURGE_RESERVOIR_RESERVOIR, 4, 2);
    c.watermark = 4;
    c.rate.samples_per_insert = 0.1;
    c.rate.min_diff = 0.0;
    c.rate.max_diff = 3.0;
    r = make(&c);
    put_ids(r, 0, 4, 0);
    assert_int_equal(put(r, 4, 0, 0), SURGE_ETIMEDOUT);
    /* 4 * 0.1 - 2 < 0, yet the batch is served (override). */
    assert_int_equal(get(r, 2, NULL, NULL, 0), 2);
    assert_true(stats(r).rate_overrides >= 1);
    assert_int_equal(put(r, 4, 0, 0), 0); /* evicts a used one */
    surge_reservoir_destroy(&r);
}

/* ------------------------------------------------------------- balance */

static void
run_balance(enum surge_reservoir_policy p)
{
    /* Simulation 0 is fast: 60 samples; simulations 1..4 have 5 each. */
    bool firo = p == SURGE_RESERVOIR_FIRO;
    surge_reservoir_config c = cfg_for(p, 100, 10);
    c.balance_sims = true;
    c.watermark = firo ? 0 : 80; /* firo's watermark applies every batch */
    surge_reservoir *r = make(&c);
    uint64_t id = 0;
    for (int i = 0; i < 60; i++) {
        assert_int_equal(put(r, id++, 0, 0), 0);
    }
    for (uint64_t s = 1; s <= 4; s++) {
        for (int i = 0; i < 5; i++) {
            assert_int_equal(put(r, id++, s, 0), 0);
        }
    }
    assert_int_equal(stats(r).distinct_sims, 5);
    surge_batch_info info[10];
    /* firo uses each sample once: simulations 1..4 last 2 batches. */
    for (int b = 0; b < (firo ? 2 : 4); b++) {
        /* B = 10 over 5 simulations: exactly 2 from each. */
        assert_int_equal(get(r, 10, NULL, info, 0), 10);
        unsigned per[5] = {0};
        for (int i = 0; i < 10; i++) {
            per[info[i].sim]++;
        }
        for (int s = 0; s < 5; s++) {
            assert_int_equal(per[s], 2);
        }
    }
    surge_reservoir_destroy(&r);

    /* B < simulations: B distinct ones, each simulation equally often
     * over many batches (chi-square, 19 dof, crit 43.82 at 0.001). */
    c = cfg_for(p, 400, 4);
    c.balance_sims = true;
    c.epochs = p == SURGE_RESERVOIR_FIRO ? 1000 : 1;
    c.watermark = 300;
    r = make(&c);
    id = 0;
    for (uint64_t s = 0; s < 20; s++) {
        for (uint64_t i = 0; i < 1 + s * 1; i++) { /* 1..20 samples */
            assert_int_equal(put(r, id++, s, 0), 0);
        }
    }
    for (; id < 300; id++) {
        assert_int_equal(put(r, id, 0, 0), 0); /* sim 0 floods */
    }
    double obs[20] = {0};
    surge_batch_info inf4[4];
    for (int b = 0; b < 2000; b++) {
        assert_int_equal(get(r, 4, NULL, inf4, 0), 4);
        for (int i = 0; i < 4; i++) {
            for (int j = 0; j < i; j++) {
                assert_true(inf4[i].sim != inf4[j].sim);
            }
            obs[inf4[i].sim] += 1.0;
        }
    }
    double e = 2000.0 * 4 / 20, chi2 = 0.0;
    for (int s = 0; s < 20; s++) {
        chi2 += (obs[s] - e) * (obs[s] - e) / e;
    }
    print_message("# %s balance chi2 = %.2f (19 dof, crit 43.82)\n",
                  surge_reservoir_policy_name(p), chi2);
    assert_true(chi2 < 43.82);
    surge_reservoir_destroy(&r);
}

static void
test_balance_sims(void **state)
{
    (void)state;
    run_balance(SURGE_RESERVOIR_RESERVOIR);
    run_balance(SURGE_RESERVOIR_FIRO);
}

/* Within a batch without replacement, simulations that run out are
 * skipped and the rest fill the batch as evenly as they can. */
static void
test_balance_drain(void **state)
{
    (void)state;
    surge_reservoir_config c = cfg_for(SURGE_RESERVOIR_FIRO, 64, 12);
    c.balance_sims = true;
    surge_reservoir *r = make(&c);
    uint64_t id = 0;
    /* sim 0: 1 sample, sim 1: 2, sim 2: 20 */
    assert_int_equal(put(r, id++, 0, 0), 0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(put(r, id++, 1, 0), 0);
    }
    for (int i = 0; i < 20; i++) {
        assert_int_equal(put(r, id++, 2, 0), 0);
    }
    surge_batch_info info[12];
    assert_int_equal(get(r, 12, NULL, info, 0), 12);
    unsigned per[3] = {0};
    for (int i = 0; i < 12; i++) {
        per[info[i].sim]++;
    }
    assert_int_equal(per[0], 1);
    assert_int_equal(per[1], 2);
    assert_int_equal(per[2], 9);
    assert_int_equal(stats(r).distinct_sims, 1);
    surge_reservoir_end_reception(r);
    assert_int_equal(get(r, 12, NULL, info, 0), 11);
    assert_int_equal(get(r, 12, NULL, info, 0), 0);
    assert_int_equal(stats(r).distinct_sims, 0);
    surge_reservoir_destroy(&r);
}

/* --------------------------------------------------------- prioritized */

/* Draw frequencies follow priority^alpha: 4 samples with losses 0, 1, 3, 8,
 * alpha 0.5, 64,000 rows. Chi-square with 3 dof, critical value 16.27 at
 * significance 0.001; and each count within 4 standard deviations of its
 * binomial expectation. Importance weights are (p_min / p_i)^beta. */
static void
test_prioritized_frequencies(void **state)
{
    (void)state;
    surge_reservoir_config c = cfg_for(SURGE_RESERVOIR_RESERVOIR, 16, 64);
    c.watermark = 4;
    c.prioritized.enabled = true;
    c.prioritized.alpha = 0.5;
    c.prioritized.beta = 0.4;
    c.prioritized.epsilon = 1e-3;
    surge_reservoir *r = make(&c);
    put_ids(r, 0, 4, 0);
    /* New samples share the largest priority seen (1 at first): one batch
     * to learn the slots, then report the losses. */
    surge_batch_info info[64];
    assert_int_equal(get(r, 64, NULL, info, 0), 64);
    const float losses[4] = {0.0f, 1.0f, 3.0f, 8.0f};
    surge_batch_info upd[4];
    float lossv[4];
    bool have[4] = {false, false, false, false};
    size_t nu = 0;
    for (int i = 0; i < 64 && nu < 4; i++) {
        uint64_t id = info[i].step;
        if (!have[id]) {
            have[id] = true;
            upd[nu] = info[i];
            lossv[nu] = losses[id];
            nu++;
        }
    }
    assert_int_equal(nu, 4);
    assert_int_equal(surge_reservoir_update_priorities(r, upd, lossv, 4), 4);

    double p[4], sum = 0.0, pmin = INFINITY;
    for (int i = 0; i < 4; i++) {
        p[i] = pow(losses[i] + 1e-3, 0.5);
        sum += p[i];
        pmin = fmin(pmin, p[i]);
    }
    double obs[4] = {0};
    const int BATCHES = 1000;
    for (int b = 0; b < BATCHES; b++) {
        assert_int_equal(get(r, 64, NULL, info, 0), 64);
        for (int i = 0; i < 64; i++) {
            uint64_t id = info[i].step;
            obs[id] += 1.0;
            double w = pow(pmin / p[id], 0.4);
            assert_true(fabs(info[i].weight - w) < 1e-5);
        }
    }
    double chi2 = 0.0;
    for (int i = 0; i < 4; i++) {
        double e = BATCHES * 64.0 * p[i] / sum;
        chi2 += (obs[i] - e) * (obs[i] - e) / e;
        double q = p[i] / sum;
        assert_true(fabs(obs[i] - e) <
                    4.0 * sqrt(BATCHES * 64.0 * q * (1 - q)));
    }
    print_message("# prioritized chi2 = %.2f (3 dof, crit 16.27)\n", chi2);
    assert_true(chi2 < 16.27);

    /* beta changes the weights; bad values are refused. */
    assert_int_equal(surge_reservoir_set_beta(r, 1.0), 0);
    assert_int_equal(surge_reservoir_set_beta(r, 1.5), -EINVAL);
    assert_int_equal(get(r, 64, NULL, info, 0), 64);
    for (int i = 0; i < 64; i++) {
        double w = pmin / p[info[i].step];
        assert_true(fabs(info[i].weight - w) < 1e-5);
    }
    surge_reservoir_destroy(&r);
}

/* A priority update for a slot overwritten since it was sampled, and a
 * non-finite or negative loss, are ignored and counted. */
static void
test_prioritized_stale_updates(void **state)
{
    (void)state;
    surge_reservoir_config c = cfg_for(SURGE_RESERVOIR_RESERVOIR, 4, 4);
    c.watermark = 4;
    c.prioritized.enabled = true;
    surge_reservoir *r = make(&c);
    put_ids(r, 0, 4, 0);
    surge_batch_info info[4];
    assert_int_equal(get(r, 4, NULL, info, 0), 4);
    /* Overwrite every used slot (evictions): all 4 infos become stale
     * for the slots that were replaced. */
    surge_reservoir_stats st = stats(r);
    uint64_t used = st.occupancy_samples - st.uses_present[0];
    put_ids(r, 10, 10 + used, 0);
    float loss[4] = {1.0f, 1.0f, 1.0f, 1.0f};
    long applied = surge_reservoir_update_priorities(r, info, loss, 4);
    assert_int_equal(applied, 0);
    assert_int_equal(stats(r).priority_updates_ignored, 4);

    /* Fresh infos apply; bad losses do not. */
    surge_reservoir_end_reception(r);
    surge_batch_info fresh[4];
    surge_reservoir_config c2 = cfg_for(SURGE_RESERVOIR_FIRO, 8, 4);
    c2.prioritized.enabled = true;
    c2.epochs = 5;
    surge_reservoir *r2 = make(&c2);
    for (uint64_t i = 0; i < 4; i++) {
        assert_int_equal(put(r2, i, 0, 0), 0);
    }
    assert_int_equal(get(r2, 4, NULL, fresh, 0), 4);
    float bad[4] = {NAN, -1.0f, INFINITY, 2.0f};
    assert_int_equal(surge_reservoir_update_priorities(r2, fresh, bad, 4), 1);
    st = stats(r2);
    assert_int_equal(st.priority_updates, 1);
    assert_int_equal(st.priority_updates_ignored, 3);
    surge_reservoir_destroy(&r2);
    surge_reservoir_destroy(&r);
}

/* FIRO prioritized: without replacement within a batch, by priority. */
static void
test_prioritized_firo(void **state)
{
    (void)state;
    surge_reservoir_config c = cfg_for(SURGE_RESERVOIR_FIRO, 16, 4);
    c.prioritized.enabled = true;
    c.prioritized.alpha = 1.0;
    c.epochs = 1000;
    surge_reservoir *r = make(&c);
    put_ids(r, 0, 8, 0);
    surge_batch_info info[4];
    /* Learn all 8 slots, then give sample 7 a priority 1000x the rest. */
    surge_batch_info all[8];
    bool have[8] = {false};
    size_t nall = 0;
    while (nall < 8) {
        assert_int_equal(get(r, 4, NULL, info, 0), 4);
        for (int i = 0; i < 4; i++) {
            if (!have[info[i].step]) {
                have[info[i].step] = true;
                all[nall++] = info[i];
            }
        }
    }
    float loss[8];
    for (int i = 0; i < 8; i++) {
        loss[i] = all[i].step == 7 ? 1000.0f : 1.0f;
    }
    assert_int_equal(surge_reservoir_update_priorities(r, all, loss, 8), 8);
    unsigned with7 = 0;
    for (int b = 0; b < 200; b++) {
        assert_int_equal(get(r, 4, NULL, info, 0), 4);
        for (int i = 0; i < 4; i++) {
            for (int j = 0; j < i; j++) {
                assert_true(info[i].step != info[j].step);
            }
            with7 += info[i].step == 7;
        }
    }
    /* Sample 7 is in (almost) every batch, but only once per batch. */
    assert_true(with7 >= 195 && with7 <= 200);
    surge_reservoir_destroy(&r);
}

/* ------------------------------------------------- waiting and shutdown */

struct blocked {
    surge_reservoir *r;
    int is_put;
    long rc;
};

static void *
blocked_main(void *arg)
{
    struct blocked *b = arg;
    if (b->is_put) {
        b->rc = put(b->r, 1000, 0, -1);
    } else {
        float in[IN_DIM * 4], out[OUT_DIM * 4];
        b->rc = surge_reservoir_get_batch(b->r, 4, in, out, NULL, -1);
    }
    return NULL;
}

static void
test_shutdown_wakes_waiters(void **state)
{
    (void)state;
    surge_reservoir_config c = cfg_for(SURGE_RESERVOIR_FIFO, 4, 4);
    surge_reservoir *r = make(&c);
    /* A consumer waits (no data), no time limit. */
    struct blocked g = {r, 0, 1};
    pthread_t tg;
    assert_int_equal(pthread_create(&tg, NULL, blocked_main, &g), 0);
    usleep(50000);
    surge_reservoir_shutdown(r);
    pthread_join(tg, NULL);
    assert_int_equal(g.rc, SURGE_ECLOSED);
    assert_int_equal(put(r, 1, 0, 0), SURGE_ECLOSED);
    assert_int_equal(get(r, 1, NULL, NULL, 0), SURGE_ECLOSED);
    surge_reservoir_shutdown(r); /* idempotent */
    assert_true(stats(r).closed);
    surge_reservoir_destroy(&r);

    /* A producer waits (full), no time limit. */
    r = make(&c);
    put_ids(r, 0, 4, 0);
    struct blocked p = {r, 1, 1};
    pthread_t tp;
    assert_int_equal(pthread_create(&tp, NULL, blocked_main, &p), 0);
    usleep(50000);
    surge_reservoir_shutdown(r);
    pthread_join(tp, NULL);
    assert_int_equal(p.rc, SURGE_ECLOSED);
    surge_reservoir_stats st = stats(r);
    assert_int_equal(st.puts, 4);
    assert_int_equal(st.producer_waits, 1);
    assert_true(st.producer_wait_s >= 0.03);
    surge_reservoir_destroy(&r);
}

static void
test_end_reception_wakes_waiters(void **state)
{
    (void)state;
    /* A consumer waiting for data learns that the reservoir finished. */
    surge_reservoir_config c = cfg_for(SURGE_RESERVOIR_FIRO, 4, 4);
    surge_reservoir *r = make(&c);
    struct blocked g = {r, 0, 1};
    pthread_t tg;
    assert_int_equal(pthread_create(&tg, NULL, blocked_main, &g), 0);
    usleep(30000);
    surge_reservoir_end_reception(r);
    pthread_join(tg, NULL);
    assert_int_equal(g.rc, 0);
    surge_reservoir_destroy(&r);

    /* A producer waiting for room is told reception is over. */
    r = make(&c);
    put_ids(r, 0, 4, 0);
    struct blocked p = {r, 1, 1};
    pthread_t tp;
    assert_int_equal(pthread_create(&tp, NULL, blocked_main, &p), 0);
    usleep(30000);
    surge_reservoir_end_reception(r);
    pthread_join(tp, NULL);
    assert_int_equal(p.rc, SURGE_ESTATE);
    assert_int_equal(get(r, 4, NULL, NULL, 0), 4);
    assert_int_equal(get(r, 4, NULL, NULL, 0), 0);
    surge_reservoir_destroy(&r);
}

/* ------------------------------------------------- in-place (reserved) put */

/* Reserve, fill in place, commit: the same sample as put would store. */
static int
put_in_place(surge_reservoir *r, uint64_t id, uint64_t sim)
{
    surge_reservoir_slot slot;
    surge_sample_meta m = {.sim = sim, .step = 0, .arrival_ns = 0};
    int rc = surge_reservoir_put_begin(r, &m, 0, &slot);
    if (rc != 0) {
        return rc;
    }
    fill(id, slot.input, slot.output);
    slot.meta.step = id; /* step may still change before commit */
    return surge_reservoir_put_commit(r, &slot);
}

static void
test_put_begin_commit(void **state)
{
    (void)state;
    surge_reservoir_config c = cfg_for(SURGE_RESERVOIR_FIFO, 8, 4);
    surge_reservoir *r = make(&c);
    /* Interleaved with plain puts, in put order. */
    for (uint64_t i = 0; i < 8; i++) {
        int rc = i % 2 == 0 ? put_in_place(r, i, 3) : put(r, i, 3, 0);
        assert_int_equal(rc, 0);
    }
    assert_int_equal(put_in_place(r, 8, 3), SURGE_ETIMEDOUT); /* full */
    surge_reservoir_stats st = stats(r);
    assert_int_equal(st.puts, 8);
    assert_int_equal(st.occupancy_samples, 8);
    uint64_t ids[4];
    surge_batch_info info[4];
    assert_int_equal(get(r, 4, ids, info, 0), 4);
    for (uint64_t i = 0; i < 4; i++) {
        assert_int_equal(ids[i], i);
        assert_int_equal(info[i].sim, 3);
    }
    /* A reserved slot is not drawable: 4 present + 1 reserved, B = 4. */
    surge_reservoir_slot slot;
    assert_int_equal(surge_reservoir_put_begin(r, NULL, 0, &slot), 0);
    assert_non_null(slot.input);
    assert_non_null(slot.output);
    assert_int_equal(stats(r).occupancy_samples, 4);
    assert_int_equal(get(r, 4, ids, NULL, 0), 4);
    assert_int_equal(get(r, 4, ids, NULL, 0), SURGE_ETIMEDOUT);
    fill(100, slot.input, slot.output);
    slot.meta.step = 100;
    assert_int_equal(surge_reservoir_put_commit(r, &slot), 0);
    assert_null(slot.output);
    /* The reservation is over: a second commit or an abort is refused or
     * ignored, and nothing changes. */
    assert_int_equal(surge_reservoir_put_commit(r, &slot), -EINVAL);
    surge_reservoir_put_abort(r, &slot);
    assert_int_equal(surge_reservoir_put_begin(r, NULL, 0, NULL), -EINVAL);
    surge_reservoir_end_reception(r);
    assert_int_equal(get(r, 4, ids, info, 0), 1);
    assert_int_equal(ids[0], 100);
    assert_int_equal(info[0].sim, 0); /* meta NULL: sim 0 */
    assert_int_equal(get(r, 4, ids, NULL, 0), 0);
    st = stats(r);
    assert_int_equal(st.puts, 9);
    assert_int_equal(st.puts, st.occupancy_samples + st.evictions + st.retired);
    surge_reservoir_destroy(&r);
}

static void
test_put_abort(void **state)
{
    (void)state;
    /* fifo: an aborted reservation frees its slot and stores nothing. */
    surge_reservoir_config c = cfg_for(SURGE_RESERVOIR_FIFO, 4, 4);
    surge_reservoir *r = make(&c);
    surge_reservoir_slot s[4];
    for (int i = 0; i < 4; i++) {
        surge_sample_meta m = {.sim = (uint64_t)i, .step = 0};
        assert_int_equal(surge_reservoir_put_begin(r, &m, 0, &s[i]), 0);
    }
    surge_reservoir_slot extra;
    assert_int_equal(surge_reservoir_put_begin(r, NULL, 0, &extra),
                     SURGE_ETIMEDOUT);
    assert_int_equal(put(r, 9, 0, 0), SURGE_ETIMEDOUT);
    for (int i = 0; i < 4; i++) {
        surge_reservoir_put_abort(r, &s[i]);
        assert_null(s[i].input);
        surge_reservoir_put_abort(r, &s[i]); /* no-op */
        assert_int_equal(surge_reservoir_put_commit(r, &s[i]), -EINVAL);
    }
    surge_reservoir_stats st = stats(r);
    assert_int_equal(st.puts, 0);
    assert_int_equal(st.occupancy_samples, 0);
    assert_int_equal(st.distinct_sims, 0);
    for (uint64_t i = 0; i < 4; i++) {
        assert_int_equal(put_in_place(r, i, 1), 0);
    }
    uint64_t ids[4];
    assert_int_equal(get(r, 4, ids, NULL, 0), 4);
    for (uint64_t i = 0; i < 4; i++) {
        assert_int_equal(ids[i], i);
    }
    surge_reservoir_destroy(&r);

    /* reservoir: a reservation may evict a used sample; aborting it leaves
     * that sample gone (it was used) and the slot free; nothing unseen is
     * ever removed; counts add up. */
    c = cfg_for(SURGE_RESERVOIR_RESERVOIR, 4, 2);
    r = make(&c);
    put_ids(r, 0, 4, 0);
    assert_int_equal(surge_reservoir_put_begin(r, NULL, 0, &extra),
                     SURGE_ETIMEDOUT); /* full, nothing used */
    assert_int_equal(get(r, 2, NULL, NULL, 0), 2);
    assert_int_equal(surge_reservoir_put_begin(r, NULL, 0, &extra), 0);
    st = stats(r);
    assert_int_equal(st.evictions, 1);
    assert_int_equal(st.occupancy_samples, 3);
    surge_reservoir_put_abort(r, &extra);
    st = stats(r);
    assert_int_equal(st.puts, 4);
    assert_int_equal(st.occupancy_samples, 3);
    assert_int_equal(st.uses_removed[0], 0);
    assert_int_equal(st.puts, st.occupancy_samples + st.evictions + st.retired);
    assert_int_equal(put_in_place(r, 10, 0), 0); /* the free slot */
    assert_int_equal(stats(r).evictions, 1);
    surge_reservoir_destroy(&r);
}

static int notified;
static void
count_notify(void *arg)
{
    (void)arg;
    notified++;
}

/* A view serves rows like get_batch (same counts, uses, order) but leaves
 * them pinned in the pool until released: a pinned slot is neither freed
 * (fifo: the producer waits) nor evicted (reservoir). */
static void
test_batch_view(void **state)
{
    (void)state;
    surge_reservoir_config c = cfg_for(SURGE_RESERVOIR_FIFO, 4, 4);
    surge_reservoir *r = make(&c);
    surge_reservoir_set_notify(r, count_notify, NULL);
    notified = 0;
    put_ids(r, 0, 4, 5);
    uint32_t slots[4];
    const float *vin[4], *vout[4];
    surge_batch_info info[4];
    assert_int_equal(
        surge_reservoir_get_batch_view(r, 4, slots, vin, vout, info, 0), 4);
    for (uint64_t i = 0; i < 4; i++) {
        uint64_t id;
        check_row(vin[i], vout[i], &id);
        assert_int_equal(id, i); /* fifo order */
        assert_int_equal(info[i].step, i);
        assert_int_equal(info[i].uses, 1);
    }
    surge_reservoir_stats st = stats(r);
    assert_int_equal(st.gets, 4);
    assert_int_equal(st.batches, 1);
    assert_int_equal(st.occupancy_samples, 0);
    /* Used up but pinned: no room until the view is released. */
    assert_int_equal(put(r, 10, 5, 0), SURGE_ETIMEDOUT);
    assert_int_equal(notified, 0);
    surge_reservoir_release_view(r, slots, 4);
    assert_int_equal(notified, 1); /* the refused producer is told */
    surge_reservoir_release_view(r, slots, 0); /* no-op */
    assert_int_equal(put(r, 10, 5, 0), 0);
    assert_int_equal(
        surge_reservoir_get_batch_view(r, 0, slots, NULL, NULL, NULL, 0),
        -EINVAL);
    assert_int_equal(
        surge_reservoir_get_batch_view(r, 1, NULL, NULL, NULL, NULL, 0),
        -EINVAL);
    surge_reservoir_end_reception(r);
    assert_int_equal(
        surge_reservoir_get_batch_view(r, 4, slots, NULL, vout, NULL, 0), 1);
    assert_true(vout[0][0] == 80.0f); /* sample 10: out[0] = 8 * id */
    surge_reservoir_release_view(r, slots, 1);
    assert_int_equal(
        surge_reservoir_get_batch_view(r, 4, slots, NULL, NULL, NULL, 0), 0);
    st = stats(r);
    assert_int_equal(st.puts, 5);
    assert_int_equal(st.puts, st.occupancy_samples + st.evictions + st.retired);
    assert_true(st.finished);
    surge_reservoir_destroy(&r);

    /* reservoir: a sample held in a view is never evicted. */
    c = cfg_for(SURGE_RESERVOIR_RESERVOIR, 2, 1);
    r = make(&c);
    assert_int_equal(put(r, 0, 0, 0), 0);
    assert_int_equal(put(r, 1, 0, 0), 0);
    assert_int_equal(
        surge_reservoir_get_batch_view(r, 1, slots, vin, vout, info, 0), 1);
    uint64_t held = info[0].step;
    /* The only used sample is pinned: nothing evictable, the put waits. */
    assert_int_equal(put(r, 2, 0, 0), SURGE_ETIMEDOUT);
    uint64_t id;
    check_row(vin[0], vout[0], &id);
    assert_int_equal(id, held);
    surge_reservoir_release_view(r, slots, 1);
    assert_int_equal(put(r, 2, 0, 0), 0); /* now it may go */
    assert_int_equal(stats(r).evictions, 1);
    surge_reservoir_destroy(&r);
}

static void *
drain_main(void *arg)
{
    struct blocked *b = arg;
    float in[IN_DIM * 4], out[OUT_DIM * 4];
    b->rc = surge_reservoir_get_batch(b->r, 4, in, out, NULL, 5000);
    return NULL;
}

static void
test_put_reserved_end_and_shutdown(void **state)
{
    (void)state;
    /* End of reception while a slot is reserved: the reservoir is not
     * finished until the reservation ends; commit still stores it and a
     * draining consumer gets it. */
    surge_reservoir_config c = cfg_for(SURGE_RESERVOIR_FIFO, 4, 4);
    surge_reservoir *r = make(&c);
    surge_reservoir_slot slot;
    surge_sample_meta m = {.sim = 2, .step = 7};
    assert_int_equal(surge_reservoir_put_begin(r, &m, 0, &slot), 0);
    surge_reservoir_end_reception(r);
    assert_false(stats(r).finished);
    assert_int_equal(get(r, 4, NULL, NULL, 0), SURGE_ETIMEDOUT);
    struct blocked g = {r, 0, 0};
    pthread_t tg;
    assert_int_equal(pthread_create(&tg, NULL, drain_main, &g), 0);
    usleep(30000);
    fill(7, slot.input, slot.output);
    assert_int_equal(surge_reservoir_put_commit(r, &slot), 0);
    pthread_join(tg, NULL);
    assert_int_equal(g.rc, 1);
    assert_int_equal(get(r, 4, NULL, NULL, 0), 0);
    assert_true(stats(r).finished);
    surge_reservoir_destroy(&r);

    /* ... and an abort then finishes it, waking the waiting consumer. */
    r = make(&c);
    assert_int_equal(surge_reservoir_put_begin(r, &m, 0, &slot), 0);
    surge_reservoir_end_reception(r);
    g = (struct blocked){r, 0, 0};
    assert_int_equal(pthread_create(&tg, NULL, drain_main, &g), 0);
    usleep(30000);
    surge_reservoir_put_abort(r, &slot);
    pthread_join(tg, NULL);
    assert_int_equal(g.rc, 0);
    assert_int_equal(stats(r).puts, 0);
    surge_reservoir_destroy(&r);

    /* Shutdown while reserved: commit stores nothing and says so. */
    r = make(&c);
    assert_int_equal(put(r, 1, 0, 0), 0);
    assert_int_equal(surge_reservoir_put_begin(r, &m, 0, &slot), 0);
    surge_reservoir_shutdown(r);
    fill(7, slot.input, slot.output); /* still writable until it ends */
    assert_int_equal(surge_reservoir_put_commit(r, &slot), SURGE_ECLOSED);
    surge_reservoir_put_abort(r, &slot); /* safe after a failed commit */
    assert_int_equal(surge_reservoir_put_begin(r, &m, 0, &slot), SURGE_ECLOSED);
    surge_reservoir_stats st = stats(r);
    assert_int_equal(st.puts, 1);
    assert_int_equal(st.occupancy_samples, 1);
    surge_reservoir_destroy(&r);

    /* destroy discards a reservation still open. */
    r = make(&c);
    assert_int_equal(surge_reservoir_put_begin(r, &m, 0, &slot), 0);
    surge_reservoir_shutdown(r);
    surge_reservoir_destroy(&r);
    assert_null(r);
}

static void
test_timeouts(void **state)
{
    (void)state;
    surge_reservoir_config c = cfg_for(SURGE_RESERVOIR_FIFO, 4, 4);
    surge_reservoir *r = make(&c);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(get(r, 4, NULL, NULL, 60), SURGE_ETIMEDOUT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double dt = (double)(t1.tv_sec - t0.tv_sec) +
                (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    assert_true(dt >= 0.055);
    surge_reservoir_stats st = stats(r);
    assert_int_equal(st.consumer_waits, 1);
    assert_true(st.consumer_wait_s >= 0.055);
    /* timeout 0 never waits (and is not counted as a wait). */
    assert_int_equal(get(r, 4, NULL, NULL, 0), SURGE_ETIMEDOUT);
    surge_reservoir_destroy(&r);
}

static void
count_cb(void *arg)
{
    (*(int *)arg)++;
}

/* An event-loop producer puts with timeout 0 and learns from the notify
 * callback when to try again: once per episode of refused puts. */
static void
test_notify(void **state)
{
    (void)state;
    surge_reservoir_config c = cfg_for(SURGE_RESERVOIR_FIFO, 4, 2);
    surge_reservoir *r = make(&c);
    int calls = 0;
    surge_reservoir_set_notify(r, count_cb, &calls);
    put_ids(r, 0, 4, 0);
    assert_int_equal(get(r, 2, NULL, NULL, 0), 2);
    assert_int_equal(calls, 0); /* nobody was refused */
    assert_int_equal(put(r, 4, 0, 0), 0);
    assert_int_equal(put(r, 5, 0, 0), 0);
    assert_int_equal(put(r, 6, 0, 0), SURGE_ETIMEDOUT);
    assert_int_equal(put(r, 6, 0, 0), SURGE_ETIMEDOUT);
    assert_int_equal(calls, 0);
    assert_int_equal(get(r, 2, NULL, NULL, 0), 2);
    assert_int_equal(calls, 1);
    assert_int_equal(put(r, 6, 0, 0), 0);
    assert_int_equal(get(r, 2, NULL, NULL, 0), 2);
    assert_int_equal(calls, 1); /* edge-triggered */
    surge_reservoir_set_notify(r, NULL, NULL);
    surge_reservoir_destroy(&r);
}

/* --------------------------------------------------------------- stats */

static void
test_stats(void **state)
{
    (void)state;
    surge_reservoir_config c = cfg_for(SURGE_RESERVOIR_RESERVOIR, 32, 4);
    c.watermark = 1;
    surge_reservoir *r = make(&c);
    surge_reservoir_stats st = stats(r);
    assert_int_equal(st.capacity_samples, 32);
    assert_int_equal(st.capacity_bytes, 32 * SLOT);
    assert_int_equal(st.sample_bytes, 32);
    assert_int_equal(st.slot_bytes, SLOT);
    assert_int_equal(st.occupancy_samples, 0);
    assert_int_equal(st.policy, SURGE_RESERVOIR_RESERVOIR);

    /* Explicit arrival times: ages in seconds come from them. */
    float in[IN_DIM], out[OUT_DIM];
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t now_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
    for (uint64_t i = 0; i < 10; i++) {
        fill(i, in, out);
        surge_sample_meta m = {.sim = i % 3,
                               .step = i,
                               .arrival_ns =
                                   now_ns - (int64_t)(10 - i) * 1000000000};
        assert_int_equal(surge_reservoir_put(r, in, out, &m, 0), 0);
    }
    st = stats(r);
    assert_int_equal(st.occupancy_samples, 10);
    assert_int_equal(st.occupancy_bytes, 320);
    assert_int_equal(st.distinct_sims, 3);
    assert_int_equal(st.puts, 10);
    assert_int_equal(st.age_max_puts, 9);
    assert_true(fabs(st.age_mean_puts - 4.5) < 1e-9);
    assert_true(st.age_max_s >= 10.0 && st.age_max_s < 11.0);
    assert_true(st.age_mean_s >= 5.5 && st.age_mean_s < 6.5);
    assert_int_equal(st.uses_present[0], 10);

    surge_batch_info info[4];
    assert_int_equal(get(r, 4, NULL, info, 0), 4);
    st = stats(r);
    assert_int_equal(st.gets, 4);
    assert_int_equal(st.batches, 1);
    uint64_t hist_total = 0, uses_total = 0;
    for (int b = 0; b < SURGE_RESERVOIR_USES_BUCKETS; b++) {
        hist_total += st.uses_present[b];
        uses_total += st.uses_present[b] * (uint64_t)b;
    }
    assert_int_equal(hist_total, 10);
    assert_int_equal(uses_total, 4);
    /* Served ages: each row's (puts - put_index), averaged. */
    double want = 0.0;
    for (int i = 0; i < 4; i++) {
        want += (double)(10 - 1 - info[i].step);
    }
    assert_true(fabs(st.served_age_mean_puts - want / 4) < 1e-9);

    /* Ages follow removals: FIFO drops the oldest first. */
    surge_reservoir_config cf = cfg_for(SURGE_RESERVOIR_FIFO, 8, 2);
    surge_reservoir *rf = make(&cf);
    for (uint64_t i = 0; i < 6; i++) {
        assert_int_equal(put(rf, i, 0, 0), 0);
    }
    assert_int_equal(get(rf, 2, NULL, NULL, 0), 2);
    st = stats(rf);
    assert_int_equal(st.age_max_puts, 3); /* id 2, put 3 of 6 */
    assert_true(fabs(st.age_mean_puts - 1.5) < 1e-9);
    assert_int_equal(get(rf, 2, NULL, NULL, 0), 2);
    assert_int_equal(get(rf, 2, NULL, NULL, 0), 2);
    st = stats(rf);
    assert_int_equal(st.occupancy_samples, 0);
    assert_int_equal(st.age_max_puts, 0);
    assert_true(st.age_mean_puts == 0.0);
    surge_reservoir_destroy(&rf);

    /* A sample used 20 times lands in the last bucket. */
    surge_reservoir_config c1 = cfg_for(SURGE_RESERVOIR_RESERVOIR, 4, 4);
    c1.watermark = 1;
    surge_reservoir *r1 = make(&c1);
    assert_int_equal(put(r1, 0, 7, 0), 0);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(get(r1, 4, NULL, NULL, 0), 4);
    }
    st = stats(r1);
    assert_int_equal(st.uses_present[SURGE_RESERVOIR_USES_BUCKETS - 1], 1);
    assert_int_equal(st.distinct_sims, 1);
    surge_reservoir_destroy(&r1);
    surge_reservoir_destroy(&r);
}

/* A sample with only an output (input_dim 0) and slot rounding. */
static void
test_shapes(void **state)
{
    (void)state;
    surge_reservoir_config c;
    surge_reservoir_config_init(&c);
    c.policy = SURGE_RESERVOIR_FIFO;
    c.input_dim = 0;
    c.output_dim = 17; /* 68 bytes -> slot of 128 */
    c.capacity_bytes = 4 * 128 + 100;
    c.max_batch = 2;
    surge_reservoir *r = make(&c);
    assert_int_equal(stats(r).capacity_samples, 4);
    assert_int_equal(stats(r).slot_bytes, 128);
    float out[17], got[2 * 17];
    for (int k = 0; k < 17; k++) {
        out[k] = (float)k;
    }
    assert_int_equal(surge_reservoir_put(r, NULL, out, NULL, 0), 0);
    out[0] = 100.0f;
    assert_int_equal(surge_reservoir_put(r, NULL, out, NULL, 0), 0);
    assert_int_equal(surge_reservoir_get_batch(r, 2, NULL, got, NULL, 0), 2);
    assert_true(got[0] == 0.0f && got[16] == 16.0f);
    assert_true(got[17] == 100.0f && got[33] == 16.0f);
    surge_reservoir_destroy(&r);
}

/* Big batches are written with streaming stores: check every float of a
 * batch above that threshold (8 MiB), with rows of an odd size and caller
 * arrays that are not even 16-byte aligned. */
static void
test_big_batch_stream_copy(void **state)
{
    (void)state;
    const size_t in_dim = 3, out_dim = 300001, B = 8; /* 9.6 MB a batch */
    surge_reservoir_config c;
    surge_reservoir_config_init(&c);
    c.policy = SURGE_RESERVOIR_FIFO;
    c.input_dim = in_dim;
    c.output_dim = out_dim;
    c.capacity_bytes = 8 * 1200064;
    c.max_batch = B;
    surge_reservoir *r = make(&c);
    float *in = malloc(in_dim * sizeof(float));
    float *out = malloc(out_dim * sizeof(float));
    /* +1 float: misaligned by 4 bytes on purpose. */
    float *bin = malloc((B * in_dim + 1) * sizeof(float));
    float *bout = malloc((B * out_dim + 1) * sizeof(float));
    assert_non_null(in);
    assert_non_null(out);
    assert_non_null(bin);
    assert_non_null(bout);
    for (size_t k = 0; k < B; k++) {
        for (size_t j = 0; j < in_dim; j++) {
            in[j] = (float)(k * 10 + j);
        }
        for (size_t j = 0; j < out_dim; j++) {
            out[j] = (float)(k * 1000003 + j);
        }
        assert_int_equal(surge_reservoir_put(r, in, out, NULL, 0), 0);
    }
    assert_int_equal(
        surge_reservoir_get_batch(r, B, bin + 1, bout + 1, NULL, 0), (long)B);
    size_t bad = 0;
    for (size_t k = 0; k < B; k++) {
        for (size_t j = 0; j < in_dim; j++) {
            bad += bin[1 + k * in_dim + j] != (float)(k * 10 + j);
        }
        for (size_t j = 0; j < out_dim; j++) {
            bad += bout[1 + k * out_dim + j] != (float)(k * 1000003 + j);
        }
    }
    assert_int_equal(bad, 0);
    free(bout);
    free(bin);
    free(out);
    free(in);
    surge_reservoir_destroy(&r);
}

/* get_batch_pool: the gather spread over a thread pool gives the rows
 * get_batch gives, in order, on the memcpy path (16 KiB rows) and on the
 * streaming-store path (1.2 MB rows), with unaligned destinations. */
static void
gather_pool_case(size_t out_dim, size_t B, int threads)
{
    const size_t in_dim = 3;
    surge_reservoir_config c;
    surge_reservoir_config_init(&c);
    c.policy = SURGE_RESERVOIR_FIFO;
    c.input_dim = in_dim;
    c.output_dim = out_dim;
    c.capacity_bytes = B * ((in_dim + out_dim) * 4 + 4096);
    c.max_batch = B;
    surge_reservoir *r = make(&c);
    surge_pool *pool = NULL;
    assert_int_equal(surge_pool_create(&pool, threads), 0);
    float *in = malloc(in_dim * sizeof(float));
    float *out = malloc(out_dim * sizeof(float));
    float *bin = malloc((B * in_dim + 1) * sizeof(float));
    float *bout = malloc((B * out_dim + 1) * sizeof(float));
    assert_non_null(in);
    assert_non_null(out);
    assert_non_null(bin);
    assert_non_null(bout);
    for (size_t k = 0; k < B; k++) {
        for (size_t j = 0; j < in_dim; j++) {
            in[j] = (float)(k * 10 + j);
        }
        for (size_t j = 0; j < out_dim; j++) {
            out[j] = (float)(k * 1000003 + j);
        }
        assert_int_equal(surge_reservoir_put(r, in, out, NULL, 0), 0);
    }
    assert_int_equal(
        surge_reservoir_get_batch_pool(r, B, bin + 1, bout + 1, NULL, 0, pool),
        (long)B);
    size_t bad = 0;
    for (size_t k = 0; k < B; k++) {
        for (size_t j = 0; j < in_dim; j++) {
            bad += bin[1 + k * in_dim + j] != (float)(k * 10 + j);
        }
        for (size_t j = 0; j < out_dim; j++) {
            bad += bout[1 + k * out_dim + j] != (float)(k * 1000003 + j);
        }
    }
    assert_int_equal(bad, 0);
    free(bout);
    free(bin);
    free(out);
    free(in);
    surge_pool_destroy(&pool);
    surge_reservoir_destroy(&r);
}

static void
test_gather_pool(void **state)
{
    (void)state;
    for (int threads = 1; threads <= 3; threads++) {
        gather_pool_case(4096, 97, threads);
        gather_pool_case(300001, 8, threads);
    }
}

/* ---------------------------------------------------------- checkpoint */

struct membuf {
    unsigned char *p;
    size_t len, cap, off;
    int fail_after; /* fail the n-th call (0 = never) */
    int calls;
};

static int
mem_write(void *arg, const void *buf, size_t len)
{
    struct membuf *m = arg;
    if (m->fail_after > 0 && ++m->calls >= m->fail_after) {
        return -EIO;
    }
    if (m->len + len > m->cap) {
        size_t ncap = (m->len + len) * 2;
        unsigned char *np = realloc(m->p, ncap);
        if (np == NULL) {
            return -ENOMEM;
        }
        m->p = np;
        m->cap = ncap;
    }
    memcpy(m->p + m->len, buf, len);
    m->len += len;
    return 0;
}

static int
mem_read(void *arg, void *buf, size_t len)
{
    struct membuf *m = arg;
    if (m->off + len > m->len) {
        return -EIO;
    }
    memcpy(buf, m->p + m->off, len);
    m->off += len;
    return 0;
}

static void
test_save_load(void **state)
{
    (void)state;
    for (int p = 0; p < 3; p++) {
        surge_reservoir_config c =
            cfg_for((enum surge_reservoir_policy)p, 32, 4);
        c.watermark = 4;
        if (p == SURGE_RESERVOIR_FIRO) {
            c.epochs = 2;
        }
        surge_reservoir *a = make(&c);
        for (uint64_t i = 0; i < 20; i++) {
            assert_int_equal(put(a, i, i % 4, 0), 0);
        }
        assert_int_equal(get(a, 4, NULL, NULL, 0), 4);
        struct membuf m = {0};
        assert_int_equal(surge_reservoir_save(a, mem_write, &m), 0);
        surge_reservoir *b = make(&c);
        char err[256];
        assert_int_equal(
            surge_reservoir_load(b, mem_read, &m, err, sizeof(err)), 0);
        assert_int_equal(m.off, m.len);
        surge_reservoir_stats sa = stats(a), sb = stats(b);
        assert_int_equal(sa.occupancy_samples, sb.occupancy_samples);
        assert_int_equal(sa.puts, sb.puts);
        assert_int_equal(sa.gets, sb.gets);
        assert_int_equal(sa.retired, sb.retired);
        assert_int_equal(sa.distinct_sims, sb.distinct_sims);
        assert_int_equal(sa.age_max_puts, sb.age_max_puts);
        assert_true(fabs(sa.age_mean_puts - sb.age_mean_puts) < 1e-9);
        assert_memory_equal(sa.uses_present, sb.uses_present,
                            sizeof(sa.uses_present));
        /* Both continue identically: same draws, same content. */
        surge_reservoir_end_reception(a);
        surge_reservoir_end_reception(b);
        for (;;) {
            uint64_t ia[4], ib[4];
            long na = get(a, 4, ia, NULL, 0);
            long nb = get(b, 4, ib, NULL, 0);
            assert_int_equal(na, nb);
            if (na <= 0) {
                break;
            }
            assert_memory_equal(ia, ib, (size_t)na * sizeof(uint64_t));
        }
        /* Loading into a used reservoir is refused. */
        m.off = 0;
        assert_int_equal(
            surge_reservoir_load(b, mem_read, &m, err, sizeof(err)),
            SURGE_ESTATE);
        /* A corrupt or truncated stream is refused, and leaves r usable. */
        surge_reservoir *d = make(&c);
        m.off = 0;
        m.p[0] ^= 0xff;
        assert_int_equal(
            surge_reservoir_load(d, mem_read, &m, err, sizeof(err)),
            SURGE_EPROTO);
        m.p[0] ^= 0xff;
        m.off = 0;
        size_t full = m.len;
        m.len = full - 10;
        assert_int_equal(
            surge_reservoir_load(d, mem_read, &m, err, sizeof(err)), -EIO);
        m.len = full;
        assert_int_equal(stats(d).occupancy_samples, 0);
        assert_int_equal(put(d, 1, 0, 0), 0);
        surge_reservoir_destroy(&d);
        /* A reservoir of another shape is refused, naming why. */
        surge_reservoir_config c2 = c;
        c2.output_dim = OUT_DIM + 1;
        c2.capacity_bytes = 64 * 64;
        surge_reservoir *e = make(&c2);
        m.off = 0;
        assert_int_equal(
            surge_reservoir_load(e, mem_read, &m, err, sizeof(err)),
            SURGE_ECONFIG);
        assert_non_null(strstr(err, "output_dim"));
        surge_reservoir_destroy(&e);
        /* A failing writer aborts the save with its error. */
        struct membuf f = {0};
        f.fail_after = 2;
        assert_int_equal(surge_reservoir_save(a, mem_write, &f), -EIO);
        free(f.p);
        free(m.p);
        surge_reservoir_destroy(&a);
        surge_reservoir_destroy(&b);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_invalid),
        cmocka_unit_test(test_config_valid_and_names),
        cmocka_unit_test(test_fifo),
        cmocka_unit_test(test_fifo_watermark),
        cmocka_unit_test(test_firo),
        cmocka_unit_test(test_firo_epochs),
        cmocka_unit_test(test_firo_uniform_chi_square),
        cmocka_unit_test(test_reservoir_watermark_and_eviction),
        cmocka_unit_test(test_reservoir_never_evicts_unseen),
        cmocka_unit_test(test_reservoir_uniform_chi_square),
        cmocka_unit_test(test_reservoir_max_uses),
        cmocka_unit_test(test_reservoir_max_uses_within_batch),
        cmocka_unit_test(test_reservoir_drain),
        cmocka_unit_test(test_rate_limiter),
        cmocka_unit_test(test_rate_limiter_no_deadlock),
        cmocka_unit_test(test_balance_sims),
        cmocka_unit_test(test_balance_drain),
        cmocka_unit_test(test_prioritized_frequencies),
        cmocka_unit_test(test_prioritized_stale_updates),
        cmocka_unit_test(test_prioritized_firo),
        cmocka_unit_test(test_shutdown_wakes_waiters),
        cmocka_unit_test(test_end_reception_wakes_waiters),
        cmocka_unit_test(test_timeouts),
        cmocka_unit_test(test_notify),
        cmocka_unit_test(test_stats),
        cmocka_unit_test(test_shapes),
        cmocka_unit_test(test_big_batch_stream_copy),
        cmocka_unit_test(test_gather_pool),
        cmocka_unit_test(test_save_load),
        cmocka_unit_test(test_put_begin_commit),
        cmocka_unit_test(test_put_abort),
        cmocka_unit_test(test_put_reserved_end_and_shutdown),
        cmocka_unit_test(test_batch_view),
    };
    return cmocka_run_group_tests_name("reservoir", tests, NULL, NULL);
}
