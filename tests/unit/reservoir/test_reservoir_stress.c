/*
 * tests/unit/reservoir/test_reservoir_stress.c - one producer, two
 * consumers, every policy, real threads. Built with -fsanitize=thread and
 * the reservoir's sources compiled in (tests/unit/reservoir/local.mk), so
 * ThreadSanitizer sees every access of the library, including the copies
 * made outside its lock. The producer mixes surge_reservoir_put with the
 * in-place put (put_begin, fill the slot, commit), and aborts some
 * reservations after writing garbage into them; one consumer copies its
 * batches, the other reads them in place (get_batch_view).
 *
 * Each row is checked against the sample it claims to be (content is a
 * function of the id), so a torn copy or a slot overwritten while pinned
 * fails the test. The counts must add up: rows received by the consumers =
 * the reservoir's gets; for fifo and firo every sample exactly once (or
 * epochs times); for reservoir every sample at least once, and puts =
 * evictions + retired at the end.
 */
#include "config.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "reservoir/reservoir.h"

#define IN_DIM 3
#define OUT_DIM 29 /* 128 bytes a sample */
#define NSAMPLES 20000
#define BATCH 16

struct shared {
    surge_reservoir *r;
    _Atomic unsigned *uses; /* (NSAMPLES) rows seen per sample */
    int bad_rows;           /* rows whose content did not match */
    int put_errors;
    bool prio; /* report losses back (prioritized) */
};

struct consumer {
    struct shared *sh;
    bool view; /* read rows in place (get_batch_view) instead of copies */
    uint64_t rows;
    int bad;
    long last_rc;
};

static void
fill(uint64_t id, float *in, float *out)
{
    for (int k = 0; k < IN_DIM; k++) {
        in[k] = (float)id + (float)k * 0.5f;
    }
    for (int k = 0; k < OUT_DIM; k++) {
        out[k] = (float)id * 2.0f + (float)k;
    }
}

static void *
producer_main(void *arg)
{
    struct shared *sh = arg;
    float in[IN_DIM], out[OUT_DIM];
    for (uint64_t id = 0; id < NSAMPLES;) {
        surge_sample_meta m = {.sim = id % 7, .step = id, .arrival_ns = 0};
        int rc;
        if (id % 3 == 0) {
            fill(id, in, out);
            rc = surge_reservoir_put(sh->r, in, out, &m, 50);
        } else {
            /* The in-place put: fill the reserved slot without the lock
             * while consumers copy other slots; every 5th reservation is
             * first written with garbage and aborted (a slot a consumer
             * must never see), then tried again. */
            surge_reservoir_slot slot;
            rc = surge_reservoir_put_begin(sh->r, &m, 50, &slot);
            if (rc == 0 && id % 5 == 0) {
                fill(id + NSAMPLES, slot.input, slot.output);
                surge_reservoir_put_abort(sh->r, &slot);
                rc = surge_reservoir_put_begin(sh->r, &m, 50, &slot);
            }
            if (rc == 0) {
                fill(id, slot.input, slot.output);
                rc = surge_reservoir_put_commit(sh->r, &slot);
            }
        }
        if (rc == SURGE_ETIMEDOUT) {
            continue; /* backpressure: retry, nothing lost */
        }
        if (rc != 0) {
            sh->put_errors++;
            break;
        }
        id++;
    }
    surge_reservoir_end_reception(sh->r);
    return NULL;
}

static void *
consumer_main(void *arg)
{
    struct consumer *c = arg;
    float in[BATCH * IN_DIM], out[BATCH * OUT_DIM];
    const float *vin[BATCH], *vout[BATCH];
    uint32_t slots[BATCH];
    surge_batch_info info[BATCH];
    for (;;) {
        long n;
        if (c->view) {
            n = surge_reservoir_get_batch_view(c->sh->r, BATCH, slots, vin,
                                               vout, info, 50);
        } else {
            n = surge_reservoir_get_batch(c->sh->r, BATCH, in, out, info, 50);
        }
        if (n == SURGE_ETIMEDOUT) {
            continue;
        }
        if (n <= 0) {
            c->last_rc = n;
            break;
        }
        for (long i = 0; i < n; i++) {
            uint64_t id = info[i].step;
            float want_in[IN_DIM], want_out[OUT_DIM];
            if (id >= NSAMPLES) {
                c->bad++;
                continue;
            }
            fill(id, want_in, want_out);
            /* A view reads the pinned slot itself: a put overwriting it
             * now would be a data race TSan reports, or a mismatch. */
            const float *ri = c->view ? vin[i] : in + i * IN_DIM;
            const float *ro = c->view ? vout[i] : out + i * OUT_DIM;
            if (memcmp(ri, want_in, sizeof(want_in)) != 0 ||
                memcmp(ro, want_out, sizeof(want_out)) != 0 ||
                info[i].sim != id % 7) {
                c->bad++;
            }
            c->sh->uses[id]++;
        }
        if (c->view) {
            surge_reservoir_release_view(c->sh->r, slots, (size_t)n);
        }
        if (c->sh->prio) {
            /* A loss per row, as a trainer would report it. */
            float loss[BATCH];
            for (long i = 0; i < n; i++) {
                loss[i] = (float)(info[i].step % 10);
            }
            if (surge_reservoir_update_priorities(c->sh->r, info, loss,
                                                  (size_t)n) < 0) {
                c->bad++;
            }
        }
        c->rows += (uint64_t)n;
    }
    return NULL;
}

static void
run(enum surge_reservoir_policy p, unsigned epochs, bool balance, bool prio,
    bool rate)
{
    surge_reservoir_config cfg;
    surge_reservoir_config_init(&cfg);
    cfg.policy = p;
    cfg.input_dim = IN_DIM;
    cfg.output_dim = OUT_DIM;
    cfg.capacity_bytes = 256 * 128; /* 256 slots: waits on both sides */
    cfg.max_batch = BATCH;
    cfg.watermark = p == SURGE_RESERVOIR_RESERVOIR ? 64 : 0;
    cfg.epochs = epochs;
    cfg.balance_sims = balance;
    cfg.prioritized.enabled = prio;
    cfg.seed = 7;
    if (rate) {
        cfg.rate.samples_per_insert = 1.5;
        cfg.rate.min_diff = -64;
        cfg.rate.max_diff = 64;
    }
    surge_reservoir *r = NULL;
    char err[256];
    assert_int_equal(surge_reservoir_create(&r, &cfg, err, sizeof(err)), 0);

    struct shared sh = {.r = r, .prio = prio};
    sh.uses = calloc(NSAMPLES, sizeof(*sh.uses));
    assert_non_null(sh.uses);
    struct consumer c1 = {.sh = &sh}, c2 = {.sh = &sh, .view = true};
    pthread_t tp, t1, t2;
    assert_int_equal(pthread_create(&t1, NULL, consumer_main, &c1), 0);
    assert_int_equal(pthread_create(&t2, NULL, consumer_main, &c2), 0);
    assert_int_equal(pthread_create(&tp, NULL, producer_main, &sh), 0);
    pthread_join(tp, NULL);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);

    surge_reservoir_stats st;
    surge_reservoir_get_stats(r, &st);
    print_message("# %s epochs=%u balance=%d prio=%d rate=%d: puts %llu "
                  "gets %llu evictions %llu retired %llu producer waits "
                  "%llu consumer waits %llu overrides %llu\n",
                  surge_reservoir_policy_name(p), epochs, balance, prio, rate,
                  (unsigned long long)st.puts, (unsigned long long)st.gets,
                  (unsigned long long)st.evictions,
                  (unsigned long long)st.retired,
                  (unsigned long long)st.producer_waits,
                  (unsigned long long)st.consumer_waits,
                  (unsigned long long)st.rate_overrides);
    assert_int_equal(sh.put_errors, 0);
    assert_int_equal(c1.bad + c2.bad, 0);
    assert_int_equal(c1.last_rc, 0); /* finished, not an error */
    assert_int_equal(c2.last_rc, 0);
    assert_true(st.finished);
    assert_int_equal(st.puts, NSAMPLES);
    assert_int_equal(st.gets, c1.rows + c2.rows);
    assert_int_equal(st.evictions + st.retired, NSAMPLES);
    assert_int_equal(st.occupancy_samples, 0);
    assert_int_equal(st.uses_removed[0], 0); /* nothing left unseen */
    for (uint64_t id = 0; id < NSAMPLES; id++) {
        unsigned u = sh.uses[id];
        if (p == SURGE_RESERVOIR_RESERVOIR) {
            assert_true(u >= 1);
        } else {
            assert_int_equal(u, epochs);
        }
    }
    if (p != SURGE_RESERVOIR_RESERVOIR) {
        assert_int_equal(st.gets, (uint64_t)NSAMPLES * epochs);
        assert_int_equal(st.evictions, 0);
    }
    free(sh.uses);
    surge_reservoir_destroy(&r);
}

static void
test_stress_fifo(void **state)
{
    (void)state;
    run(SURGE_RESERVOIR_FIFO, 1, false, false, false);
}

static void
test_stress_firo(void **state)
{
    (void)state;
    run(SURGE_RESERVOIR_FIRO, 2, false, false, false);
    run(SURGE_RESERVOIR_FIRO, 1, true, false, false);
}

static void
test_stress_reservoir(void **state)
{
    (void)state;
    run(SURGE_RESERVOIR_RESERVOIR, 1, false, false, false);
    run(SURGE_RESERVOIR_RESERVOIR, 1, true, false, true);
    run(SURGE_RESERVOIR_RESERVOIR, 1, false, true, false);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stress_fifo),
        cmocka_unit_test(test_stress_firo),
        cmocka_unit_test(test_stress_reservoir),
    };
    return cmocka_run_group_tests_name("reservoir_stress", tests, NULL, NULL);
}
