/*
 * tests/unit/server/test_feed.c - the trainer's batch feed (server/feed.c):
 * every mode serves the very batches a plain get_batch loop would (same
 * seed, same rows, same order); prefetch double-buffers without losing a
 * batch on a timeout, draws nothing ahead when told not to, and stops
 * cleanly with a draw in flight; the device mode (on the emulated device
 * of tests/unit/reservoir/emu_device.h) alternates its device buffers.
 */
#include "config.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "common/pool.h"
#include "reservoir/reservoir_internal.h"
#include "server/feed.h"
#include "tests/unit/reservoir/emu_device.h"

#define NIN 2
#define NOUT 6
#define B 8

static surge_reservoir *
make(int device, enum surge_reservoir_policy p)
{
    surge_reservoir_config c;
    surge_reservoir_config_init(&c);
    c.policy = p;
    c.input_dim = NIN;
    c.output_dim = NOUT;
    c.capacity_bytes = 256 * 64;
    c.max_batch = B;
    c.seed = 3;
    surge_reservoir *r = NULL;
    char err[256];
    int rc;
    if (device) {
        c.storage = SURGE_RESERVOIR_STORAGE_DEVICE;
        rc = surge_reservoir_create_on_(&r, &c, &surge_test_emu_device, err,
                                        sizeof err);
    } else {
        rc = surge_reservoir_create(&r, &c, err, sizeof err);
    }
    assert_int_equal(rc, 0);
    return r;
}

static void
put_id(surge_reservoir *r, uint64_t id)
{
    float in[NIN], out[NOUT];
    for (int k = 0; k < NIN; k++) {
        in[k] = (float)id + (float)k;
    }
    for (int k = 0; k < NOUT; k++) {
        out[k] = (float)id * 10.0f + (float)k;
    }
    surge_sample_meta m = {id % 4, id, 0};
    assert_int_equal(surge_reservoir_put(r, in, out, &m, 0), 0);
}

static void *
feed_test_alloc(void *arg, size_t bytes)
{
    (void)arg;
    return calloc(1, bytes);
}

static void
feed_test_free(void *arg, void *p, size_t bytes)
{
    (void)arg;
    (void)bytes;
    free(p);
}

static const surge_feed_alloc ALLOC = {feed_test_alloc, feed_test_free, NULL};

/* Batches of a feed in `mode` equal a get_batch loop's on a twin, in
 * order; a prefetch feed's batches come alternately from its two sets. */
static void
check_same_as_get_batch(enum surge_feed_mode mode, int device, void *stream,
                        surge_pool *pool)
{
    surge_reservoir *twin = make(0, SURGE_RESERVOIR_RESERVOIR);
    surge_reservoir *r = make(device, SURGE_RESERVOIR_RESERVOIR);
    for (uint64_t id = 0; id < 200; id++) {
        put_id(twin, id);
        put_id(r, id);
    }
    float x0[B * NIN], y0[B * NOUT], tx[B * NIN], ty[B * NOUT];
    surge_batch_info i0[B], ti[B];
    surge_feed *f = NULL;
    assert_int_equal(
        surge_feed_create(&f, r, mode, B, NIN, NOUT, x0, y0, i0, &ALLOC), 0);
    assert_int_equal(surge_feed_mode_of(f), mode);
    if (stream != NULL) {
        surge_feed_set_stream(f, stream);
    }
    surge_feed_set_pool(f, pool);
    float *prev = NULL;
    for (int k = 0; k < 30; k++) {
        float *x, *y;
        surge_batch_info *info;
        long n = surge_feed_next(f, &x, &y, &info, 1, 1000);
        long tn = surge_reservoir_get_batch(twin, B, tx, ty, ti, 0);
        assert_int_equal(n, B);
        assert_int_equal(tn, B);
        assert_memory_equal(info, ti, sizeof ti);
        assert_memory_equal(x, tx, sizeof tx);
        assert_memory_equal(y, ty, sizeof ty);
        if (mode != SURGE_FEED_SYNC) {
            assert_ptr_not_equal(x, prev); /* double buffered */
        } else {
            assert_ptr_equal(x, x0);
        }
        prev = x;
    }
    assert_true(surge_feed_wait_s(f) >= 0.0);
    surge_feed_destroy(&f);
    assert_null(f);
    if (stream != NULL) {
        /* Each batch's rows were held until the next one (or the feed's
         * end) waited for its gather. */
        assert_int_equal(surge_test_emu_last->waits, 30);
    }
    surge_reservoir_stats a, b;
    surge_reservoir_get_stats(twin, &a);
    surge_reservoir_get_stats(r, &b);
    /* The prefetch feed may have drawn one batch ahead before it was
     * stopped with that draw asked for. */
    if (mode == SURGE_FEED_PREFETCH) {
        assert_true(b.gets == a.gets || b.gets == a.gets + B);
    } else {
        assert_int_equal(b.gets, a.gets);
    }
    surge_reservoir_destroy(&twin);
    surge_reservoir_destroy(&r);
}

static void
test_sync(void **state)
{
    (void)state;
    check_same_as_get_batch(SURGE_FEED_SYNC, 0, NULL, NULL);
}

/* SYNC with the trainer's thread pool gathering: the same batches (and
 * PREFETCH ignores the pool). */
static void
test_sync_pool(void **state)
{
    (void)state;
    surge_pool *pool = NULL;
    assert_int_equal(surge_pool_create(&pool, 3), 0);
    check_same_as_get_batch(SURGE_FEED_SYNC, 0, NULL, pool);
    /* PREFETCH gathers beside the step: the pool is not its to use. */
    check_same_as_get_batch(SURGE_FEED_PREFETCH, 0, NULL, pool);
    surge_pool_destroy(&pool);
}

static void
test_prefetch(void **state)
{
    (void)state;
    check_same_as_get_batch(SURGE_FEED_PREFETCH, 0, NULL, NULL);
}

static void
test_device(void **state)
{
    (void)state;
    check_same_as_get_batch(SURGE_FEED_DEVICE, 1, NULL, NULL);
}

/* Device batches queued on the trainer's stream: the same batches; the
 * feed releases the last one's rows when it is destroyed. */
static void
test_device_stream(void **state)
{
    (void)state;
    int fake_stream;
    check_same_as_get_batch(SURGE_FEED_DEVICE, 1, &fake_stream, NULL);
}

/* Prefetch with the reservoir empty: next times out, the draw stays in
 * flight (busy) and is handed out once data comes; with prefetch 0
 * nothing is drawn ahead (gets equal the rows handed out, not busy). */
static void
test_prefetch_timeout_and_quiet(void **state)
{
    (void)state;
    surge_reservoir *r = make(0, SURGE_RESERVOIR_FIFO);
    float x0[B * NIN], y0[B * NOUT];
    surge_batch_info i0[B];
    surge_feed *f = NULL;
    assert_int_equal(surge_feed_create(&f, r, SURGE_FEED_PREFETCH, B, NIN, NOUT,
                                       x0, y0, i0, &ALLOC),
                     0);
    float *x, *y;
    surge_batch_info *info;
    assert_int_equal(surge_feed_next(f, &x, &y, &info, 1, 20), SURGE_ETIMEDOUT);
    assert_int_equal(surge_feed_busy(f), 1);
    for (uint64_t id = 0; id < 3 * B; id++) {
        put_id(r, id);
    }
    assert_int_equal(surge_feed_next(f, &x, &y, &info, 0, 5000), B);
    assert_int_equal(info[0].step, 0); /* fifo: the oldest first */
    assert_int_equal(surge_feed_busy(f), 0);
    surge_reservoir_stats st;
    surge_reservoir_get_stats(r, &st);
    assert_int_equal(st.gets, B);
    assert_int_equal(surge_feed_next(f, &x, &y, &info, 1, 5000), B);
    assert_int_equal(info[0].step, B);
    /* Drawn ahead now: wait until the feed thread has it, then check. */
    for (int k = 0; k < 500; k++) {
        surge_reservoir_get_stats(r, &st);
        if (st.gets == 3 * B) {
            break;
        }
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(st.gets, 3 * B);
    assert_int_equal(surge_feed_busy(f), 1);
    assert_int_equal(surge_feed_next(f, &x, &y, &info, 0, 5000), B);
    assert_int_equal(info[0].step, 2 * B);
    surge_reservoir_end_reception(r);
    assert_int_equal(surge_feed_next(f, &x, &y, &info, 1, 5000), 0);
    surge_feed_destroy(&f);
    surge_reservoir_destroy(&r);
}

/* A feed destroyed while its thread waits for data ends promptly. */
static void
test_destroy_in_flight(void **state)
{
    (void)state;
    surge_reservoir *r = make(0, SURGE_RESERVOIR_FIRO);
    float x0[B * NIN], y0[B * NOUT];
    surge_batch_info i0[B];
    surge_feed *f = NULL;
    assert_int_equal(surge_feed_create(&f, r, SURGE_FEED_PREFETCH, B, NIN, NOUT,
                                       x0, y0, i0, &ALLOC),
                     0);
    float *x, *y;
    surge_batch_info *info;
    assert_int_equal(surge_feed_next(f, &x, &y, &info, 1, 0), SURGE_ETIMEDOUT);
    surge_feed_destroy(&f);
    assert_null(f);
    surge_reservoir_destroy(&r);
}

static void
test_errors(void **state)
{
    (void)state;
    surge_reservoir *r = make(0, SURGE_RESERVOIR_FIFO);
    float x0[B * NIN], y0[B * NOUT];
    surge_batch_info i0[B];
    surge_feed *f = NULL;
    assert_int_equal(surge_feed_create(&f, r, SURGE_FEED_DEVICE, B, NIN, NOUT,
                                       x0, y0, i0, &ALLOC),
                     SURGE_ESTATE);
    assert_int_equal(surge_feed_create(&f, r, SURGE_FEED_PREFETCH, B, NIN, NOUT,
                                       x0, y0, i0, NULL),
                     -EINVAL);
    assert_int_equal(surge_feed_create(&f, r, SURGE_FEED_SYNC, 0, NIN, NOUT, x0,
                                       y0, i0, NULL),
                     -EINVAL);
    assert_null(f);
    assert_string_equal(surge_feed_mode_name(SURGE_FEED_PREFETCH), "prefetch");
    assert_string_equal(surge_feed_mode_name(SURGE_FEED_DEVICE), "device");
    assert_string_equal(surge_feed_mode_name(SURGE_FEED_SYNC), "sync");
    surge_feed_destroy(NULL);
    surge_reservoir_destroy(&r);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sync),
        cmocka_unit_test(test_sync_pool),
        cmocka_unit_test(test_prefetch),
        cmocka_unit_test(test_device),
        cmocka_unit_test(test_device_stream),
        cmocka_unit_test(test_prefetch_timeout_and_quiet),
        cmocka_unit_test(test_destroy_in_flight),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests_name("feed", tests, NULL, NULL);
}
