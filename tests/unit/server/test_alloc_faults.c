/*
 * tests/unit/server/test_alloc_faults.c - allocation failures on the paths
 * that handle peer input (common/alloc.h's injector): the codec, the
 * server's sessions and assembly (server/ingest.c with its store), and the
 * reservoir. Each test runs its path with the n-th allocation failing, for
 * n = 1, 2, ... until a run sees no injected failure: every failure must
 * come back as an error (or a counted drop or reject), the counts must
 * still add up, and nothing may leak (run under AddressSanitizer's leak
 * checker in the sanitizer build).
 */
#include "config.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "common/log.h"
#include "reservoir/reservoir.h"
#include "server_test.h"

/* Every path here makes fewer allocations than this. */
#define MAX_N 5000

static const double P[2] = {0.5, 1.5};
static const struct tfield F0[2] = {{"u", 8, 0, 4}, {"v", 2, 0, 2}};
static const struct tfield F1[2] = {{"u", 8, 4, 4}, {"v", 2, 2, 0}};

/* The codec allocates nothing, so it cannot fail for lack of memory: a
 * decode and an encode with the injector armed at the first allocation
 * must succeed without triggering it. */
static void
codec_allocates_nothing(void **state)
{
    (void)state;
    unsigned char buf[SURGE_MAX_HEADER_BYTES];
    surge_msg m, out;
    make_hello(&m, "t", 3, 1, 2, P, 2, F1, 2);
    surge_alloc_fail_nth(1);
    int n = surge_proto_encode(&m, buf, sizeof buf);
    assert_true(n > 0);
    assert_int_equal(surge_proto_decode(buf, (size_t)n, &out, NULL), 0);
    assert_false(surge_alloc_failed());
    surge_alloc_fail_nth(0);
}

/* One study's worth of protocol: two sims of two ranks, partial steps and
 * eviction, a bye, a failure, a retry, a malformed hello, the end. Returns
 * 1 when the injected failure happened during it. */
static int
ingest_run(uint64_t n)
{
    surge_server_options o;
    surge_server_options_init(&o);
    o.token[0] = '\0';
    o.log_level = 0;
    o.max_partial_bytes = 3 * surge_ingest_block_bytes(10, 4);
    static surge_reservoir_config rc;
    surge_reservoir_config_init(&rc);
    rc.policy = SURGE_RESERVOIR_FIFO;
    rc.capacity_bytes = 1 << 16;
    rc.max_batch = 2;
    surge_store_config sc = {"train", SURGE_STORE_STREAM, 0, &rc};
    surge_store *train = NULL;
    surge_ingest *ing = NULL;
    surge_alloc_fail_nth(n);
    int r = surge_store_create(&train, &sc);
    if (r != 0) {
        assert_int_equal(r, -ENOMEM);
        assert_null(train);
        goto out;
    }
    r = surge_ingest_create(&ing, &o, train, NULL, NULL);
    if (r != 0) {
        assert_int_equal(r, -ENOMEM);
        assert_null(ing);
        goto out;
    }
    float u[4] = {1, 2, 3, 4}, v[2] = {5, 6};
    for (int64_t sim = 1; sim <= 2; sim++) {
        char r0[8], r1[8];
        snprintf(r0, sizeof r0, "a%d", (int)sim);
        snprintf(r1, sizeof r1, "b%d", (int)sim);
        say_hello(ing, r0, "", sim, 0, 2, P, 2, F0, 2);
        say_hello(ing, r1, "", sim, 1, 2, P, 2, F1, 2);
        for (int64_t step = 0; step < 5; step++) {
            send_slice(ing, r0, sim, 0, step, 0.1 * step, 0, 0, 4, u);
            send_slice(ing, r0, sim, 0, step, 0.1 * step, 1, 0, 2, v);
            if (step != 3) {
                send_slice(ing, r1, sim, 1, step, 0.1 * step, 0, 4, 4, u);
            }
        }
    }
    say_bye(ing, "a1", 1, 0, 14);
    say_bye(ing, "b1", 1, 1, 4);
    control(ing, "", SURGE_CTL_SIM_FAILED, 2);
    control(ing, "", SURGE_CTL_SIM_RETRY, 2);
    say_hello(ing, "c2", "", 2, 0, 2, P, 2, F0, 2);
    /* A hello the codec refuses (sim -1), through the raw path. */
    static const unsigned char bad[] = {0x83, 0xa1, 'v',  0x01, 0xa4, 't', 'y',
                                        'p',  'e',  0xa5, 'h',  'e',  'l', 'l',
                                        'o',  0xa3, 's',  'i',  'm',  0xff};
    surge_ingest_handle_raw(ing, RID("z"), bad, sizeof bad, NULL, 0, 0,
                            sizeof bad, 2000, &treply);
    control(ing, "", SURGE_CTL_END_RECEPTION, -1);
    surge_ingest_tick(ing, 3000);
    (void)surge_ingest_flush(ing);
    surge_ingest_stop(ing);
    assert_true(counts_add_up(ing));
out:;
    int failed = surge_alloc_failed();
    surge_alloc_fail_nth(0);
    surge_ingest_destroy(&ing);
    surge_store_destroy(&train);
    return failed;
}

static void
ingest_survives_every_allocation_failure(void **state)
{
    (void)state;
    uint64_t n = 1;
    while (ingest_run(n)) {
        n++;
        assert_true(n < MAX_N);
    }
    /* The path allocates: the loop walked real failure branches. */
    assert_true(n > 10);
    print_message("# ingest path: %llu allocations walked\n",
                  (unsigned long long)(n - 1));
}

/* The reservoir with the options that allocate the most (balanced sims or
 * prioritized draws, which exclude each other): create, puts from several
 * sims, a batch, destroy. */
static int
reservoir_run(uint64_t n, int prioritized)
{
    surge_reservoir_config c;
    surge_reservoir_config_init(&c);
    c.policy = SURGE_RESERVOIR_RESERVOIR;
    c.capacity_bytes = 1 << 14;
    c.input_dim = 3;
    c.output_dim = 8;
    c.max_batch = 4;
    c.watermark = 4;
    c.balance_sims = !prioritized;
    c.prioritized.enabled = prioritized;
    char err[256];
    surge_reservoir *r = NULL;
    surge_alloc_fail_nth(n);
    int rc = surge_reservoir_create(&r, &c, err, sizeof err);
    if (rc != 0) {
        if (rc != -ENOMEM) {
            print_message("# create: %s\n", err);
        }
        assert_int_equal(rc, -ENOMEM);
        assert_null(r);
    } else {
        float in[3] = {1, 2, 3}, out[8] = {0};
        for (int i = 0; i < 12; i++) {
            surge_sample_meta meta = {0};
            meta.sim = i % 5;
            meta.step = i;
            rc = surge_reservoir_put(r, in, out, &meta, 0);
            assert_true(rc == 0 || rc == -ENOMEM || rc == SURGE_ETIMEDOUT);
        }
        float bin[4 * 3], bout[4 * 8];
        long got = surge_reservoir_get_batch(r, 4, bin, bout, NULL, 0);
        assert_true(got > 0 || got == -ENOMEM || got == SURGE_ETIMEDOUT);
    }
    int failed = surge_alloc_failed();
    surge_alloc_fail_nth(0);
    surge_reservoir_destroy(&r);
    return failed;
}

static void
reservoir_survives_every_allocation_failure(void **state)
{
    (void)state;
    for (int prioritized = 0; prioritized < 2; prioritized++) {
        uint64_t n = 1;
        while (reservoir_run(n, prioritized)) {
            n++;
            assert_true(n < MAX_N);
        }
        assert_true(n > 5);
        print_message("# reservoir path (%s): %llu allocations walked\n",
                      prioritized ? "prioritized" : "balance_sims",
                      (unsigned long long)(n - 1));
    }
}

int
main(void)
{
    /* Out-of-memory paths log errors by design: keep the output short. */
    surge_log_set_level(SURGE_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(codec_allocates_nothing),
        cmocka_unit_test(ingest_survives_every_allocation_failure),
        cmocka_unit_test(reservoir_survives_every_allocation_failure),
    };
    return cmocka_run_group_tests_name("server_alloc_faults", tests, NULL,
                                       NULL);
}
