/*
 * tests/unit/server/test_store.c - the server's sample stores
 * (server/store.c): fifo order, a full store refusing puts without losing
 * anything, end of reception draining, the keep store for validation, shape
 * rules, the space callback, and a producer/consumer run across threads.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <surge/error.h>

#include "server/store.h"

/* A stream store of `bytes` with policy p and batches of at most B. */
static surge_store *
stream(enum surge_reservoir_policy p, size_t bytes, size_t B)
{
    static surge_reservoir_config rc;
    surge_reservoir_config_init(&rc);
    rc.policy = p;
    rc.capacity_bytes = bytes;
    rc.max_batch = B;
    surge_store_config c = {"t", SURGE_STORE_STREAM, 0, &rc};
    surge_store *s = NULL;
    assert_int_equal(surge_store_create(&s, &c), 0);
    return s;
}

/* Shape 2 in, 5 out: 28 bytes, a 64-byte slot (keep store: 16 bytes of
 * sim and step + 28, also 64). */
#define NIN 2
#define NOUT 5

static void
fill(float *in, float *out, int k)
{
    for (int i = 0; i < NIN; i++) {
        in[i] = (float)(k * 10 + i);
    }
    for (int i = 0; i < NOUT; i++) {
        out[i] = (float)(k * 100 + i);
    }
}

static void
fifo_order_and_full(void **state)
{
    (void)state;
    surge_store *s = stream(SURGE_RESERVOIR_FIFO, 3 * 64, 2);
    float in[NIN], out[NOUT];
    fill(in, out, 0);
    assert_int_equal(surge_store_try_put(s, 0, 0, in, out), SURGE_ESTATE);
    assert_int_equal(surge_store_set_shape(s, NIN, NOUT), 0);
    for (int k = 0; k < 3; k++) {
        fill(in, out, k);
        assert_int_equal(surge_store_try_put(s, 1, k, in, out), 0);
    }
    assert_int_equal(surge_store_try_put(s, 1, 3, in, out), -EAGAIN);
    float bin[2 * NIN], bout[2 * NOUT];
    int64_t steps[2];
    assert_int_equal(surge_store_get_batch(s, 2, bin, bout, NULL, steps, 0), 2);
    assert_int_equal(steps[0], 0);
    assert_int_equal(steps[1], 1);
    assert_true(bout[NOUT + 4] == 104.0f);
    assert_true(bin[NIN + 1] == 11.0f);
    fill(in, out, 3);
    assert_int_equal(surge_store_try_put(s, 1, 3, in, out), 0);
    assert_int_equal(surge_store_try_put(s, 1, 4, in, out), 0);
    surge_store_stats st;
    surge_store_get_stats(s, &st);
    assert_int_equal(st.occupancy, 3);
    assert_int_equal(st.put_refused, 1);
    assert_int_equal(st.puts, 5);
    /* End of reception: no more puts; the rest drains, then closes. */
    surge_store_end_reception(s);
    assert_int_equal(surge_store_try_put(s, 1, 5, in, out), SURGE_ECLOSED);
    assert_int_equal(surge_store_get_batch(s, 8, bin, bout, NULL, NULL, 0),
                     -EINVAL); /* more than max_batch */
    assert_int_equal(surge_store_get_batch(s, 2, bin, bout, NULL, steps, 0), 2);
    assert_int_equal(steps[0], 2);
    /* Draining after the end: a short batch, then closed. */
    assert_int_equal(surge_store_get_batch(s, 2, bin, bout, NULL, steps, 0), 1);
    assert_int_equal(steps[0], 4);
    assert_int_equal(surge_store_get_batch(s, 2, bin, bout, NULL, NULL, 10),
                     SURGE_ECLOSED);
    surge_store_get_stats(s, &st);
    assert_int_equal(st.puts, st.occupancy + st.evicted + st.retired);
    surge_store_destroy(&s);
    assert_null(s);
}

static void
timeout_and_stop(void **state)
{
    (void)state;
    surge_store *s = stream(SURGE_RESERVOIR_FIFO, 4096, 1);
    uint32_t nin;
    uint64_t nout;
    assert_int_equal(surge_store_wait_shape(s, 10, &nin, &nout),
                     SURGE_ETIMEDOUT);
    assert_int_equal(surge_store_set_shape(s, NIN, NOUT), 0);
    assert_int_equal(surge_store_wait_shape(s, 10, &nin, &nout), 0);
    assert_int_equal(nin, NIN);
    assert_int_equal(nout, NOUT);
    float bin[NIN], bout[NOUT];
    assert_int_equal(surge_store_get_batch(s, 1, bin, bout, NULL, NULL, 20),
                     SURGE_ETIMEDOUT);
    surge_store_stop(s);
    assert_int_equal(surge_store_get_batch(s, 1, bin, bout, NULL, NULL, 20),
                     SURGE_ECLOSED);
    surge_store_destroy(&s);
}

static void
shape_rules(void **state)
{
    (void)state;
    surge_store *s = stream(SURGE_RESERVOIR_FIFO, 128, 1);
    assert_int_equal(surge_store_set_shape(s, 1, 1000), SURGE_ELIMIT);
    assert_non_null(strstr(surge_store_error(s), "does not fit"));
    assert_null(surge_store_reservoir(s));
    assert_int_equal(surge_store_set_shape(s, NIN, NOUT), 0);
    assert_non_null(surge_store_reservoir(s));
    assert_int_equal(surge_store_set_shape(s, NIN, NOUT), 0);
    assert_int_equal(surge_store_set_shape(s, NIN, NOUT + 1), SURGE_EFIELD);
    surge_store_destroy(&s);
    /* The reservoir's own rules, named by its option: fifo needs room for
     * a whole batch. */
    s = stream(SURGE_RESERVOIR_FIFO, 128, 4);
    assert_int_equal(surge_store_set_shape(s, NIN, NOUT), SURGE_ECONFIG);
    assert_non_null(strstr(surge_store_error(s), "reservoir.capacity_bytes"));
    surge_store_destroy(&s);
    surge_store_destroy(NULL);
}

static void
keep_store(void **state)
{
    (void)state;
    surge_store *s = NULL;
    surge_store_config c = {"v", SURGE_STORE_KEEP, 2 * 64, NULL};
    assert_int_equal(surge_store_create(&s, &c), 0);
    assert_int_equal(surge_store_set_shape(s, NIN, NOUT), 0);
    float in[NIN], out[NOUT];
    for (int k = 0; k < 2; k++) {
        fill(in, out, k);
        assert_int_equal(surge_store_try_put(s, 7, k, in, out), 0);
    }
    assert_int_equal(surge_store_try_put(s, 7, 2, in, out), -ENOSPC);
    int64_t sim, step;
    assert_int_equal(surge_store_read(s, 1, in, out, &sim, &step), 0);
    assert_int_equal(sim, 7);
    assert_int_equal(step, 1);
    assert_true(out[3] == 103.0f);
    assert_int_equal(surge_store_read(s, 2, in, out, &sim, &step), -ERANGE);
    assert_int_equal(surge_store_get_batch(s, 1, in, out, NULL, NULL, 0),
                     SURGE_ESTATE);
    surge_store_destroy(&s);
}

static int space_calls;

static void
on_space(void *arg)
{
    (void)arg;
    space_calls++;
}

static void
space_callback_after_refusal(void **state)
{
    (void)state;
    surge_store *s = stream(SURGE_RESERVOIR_FIFO, 64, 1);
    surge_store_set_space_cb(s, on_space, NULL);
    assert_int_equal(surge_store_set_shape(s, NIN, NOUT), 0);
    float in[NIN], out[NOUT];
    fill(in, out, 0);
    assert_int_equal(surge_store_try_put(s, 0, 0, in, out), 0);
    assert_int_equal(surge_store_get_batch(s, 1, in, out, NULL, NULL, 0), 1);
    assert_int_equal(space_calls, 0); /* nobody was refused */
    assert_int_equal(surge_store_try_put(s, 0, 1, in, out), 0);
    assert_int_equal(surge_store_try_put(s, 0, 2, in, out), -EAGAIN);
    assert_int_equal(surge_store_get_batch(s, 1, in, out, NULL, NULL, 0), 1);
    assert_int_equal(space_calls, 1);
    surge_store_destroy(&s);
}

/* The in-place put and the copy-free take: the same rules and counts as
 * try_put and get_batch, and the space callback after a refusal. */
static void
in_place_put_and_take(void **state)
{
    (void)state;
    surge_store *s = stream(SURGE_RESERVOIR_FIFO, 2 * 64, 2);
    surge_store_set_space_cb(s, on_space, NULL);
    space_calls = 0;
    surge_reservoir_slot slot;
    uint32_t slots[2];
    assert_int_equal(surge_store_put_begin(s, 0, 0, &slot), SURGE_ESTATE);
    assert_int_equal(surge_store_take_batch(s, 1, slots, 0), SURGE_ESTATE);
    assert_int_equal(surge_store_set_shape(s, NIN, NOUT), 0);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(surge_store_put_begin(s, 3, k, &slot), 0);
        float in[NIN], out[NOUT];
        fill(in, out, k);
        surge_store_slot_write(s, slot.input, in, sizeof in);
        surge_store_slot_write(s, slot.output, out, sizeof out);
        assert_int_equal(surge_store_put_commit(s, &slot), 0);
    }
    assert_int_equal(surge_store_put_begin(s, 3, 2, &slot), -EAGAIN);
    float in[2 * NIN], out[2 * NOUT];
    int64_t steps[2];
    assert_int_equal(surge_store_get_batch(s, 1, in, out, NULL, steps, 0), 1);
    assert_int_equal(steps[0], 0);
    assert_true(out[0] == 0.0f && in[1] == 1.0f);
    assert_int_equal(space_calls, 1);
    /* An aborted reservation stores nothing. */
    assert_int_equal(surge_store_put_begin(s, 3, 2, &slot), 0);
    surge_store_put_abort(s, &slot);
    assert_int_equal(surge_store_take_batch(s, 3, slots, 0), -EINVAL);
    assert_int_equal(surge_store_take_batch(s, 1, slots, 0), 1);
    assert_int_equal(surge_store_take_batch(s, 1, slots, 0), SURGE_ETIMEDOUT);
    surge_store_stats st;
    surge_store_get_stats(s, &st);
    assert_int_equal(st.puts, 2);
    assert_int_equal(st.taken, 2);
    assert_int_equal(st.batches, 2);
    assert_int_equal(st.occupancy, 0);
    surge_store_end_reception(s);
    assert_int_equal(surge_store_take_batch(s, 1, slots, 0), SURGE_ECLOSED);
    surge_store_destroy(&s);
}

#define NPUT 20000

static void *
consumer(void *arg)
{
    surge_store *s = arg;
    float in[8 * NIN], out[8 * NOUT];
    int64_t steps[8];
    int64_t expect = 0;
    for (;;) {
        int n = surge_store_get_batch(s, 8, in, out, NULL, steps, 100);
        if (n == SURGE_ETIMEDOUT) {
            continue;
        }
        if (n < 0) {
            break;
        }
        for (int i = 0; i < n; i++) {
            if (steps[i] != expect || out[i * NOUT] != (float)(expect % 1000)) {
                return (void *)1;
            }
            expect++;
        }
    }
    return expect == NPUT ? NULL : (void *)2;
}

static void
producer_consumer_threads(void **state)
{
    (void)state;
    surge_store *s = stream(SURGE_RESERVOIR_FIFO, 16 * 64, 8);
    assert_int_equal(surge_store_set_shape(s, NIN, NOUT), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, consumer, s), 0);
    float in[NIN] = {0}, out[NOUT] = {0};
    uint64_t refused = 0;
    for (int k = 0; k < NPUT;) {
        out[0] = (float)(k % 1000);
        int rc = surge_store_try_put(s, 0, k, in, out);
        if (rc == -EAGAIN) {
            refused++;
            sched_yield();
            continue;
        }
        assert_int_equal(rc, 0);
        k++;
    }
    surge_store_end_reception(s);
    void *res = (void *)3;
    pthread_join(t, &res);
    assert_null(res);
    surge_store_stats st;
    surge_store_get_stats(s, &st);
    assert_int_equal(st.puts, NPUT);
    assert_int_equal(st.taken, NPUT);
    assert_int_equal(st.put_refused, refused);
    surge_store_destroy(&s);
}

/* Policy reservoir: a put into a store full of unseen samples is refused
 * (never evicts unseen data); once samples were used, a put evicts one. */
static void
reservoir_policy_backpressure(void **state)
{
    (void)state;
    surge_store *s = stream(SURGE_RESERVOIR_RESERVOIR, 4 * 64, 2);
    assert_int_equal(surge_store_set_shape(s, NIN, NOUT), 0);
    float in[2 * NIN], out[2 * NOUT];
    fill(in, out, 0);
    for (int k = 0; k < 4; k++) {
        assert_int_equal(surge_store_try_put(s, k % 2, k, in, out), 0);
    }
    assert_int_equal(surge_store_try_put(s, 0, 4, in, out), -EAGAIN);
    int64_t sims[2];
    assert_int_equal(surge_store_get_batch(s, 2, in, out, sims, NULL, 0), 2);
    assert_true(sims[0] == 0 || sims[0] == 1);
    assert_int_equal(surge_store_try_put(s, 0, 4, in, out), 0);
    surge_store_stats st;
    surge_store_get_stats(s, &st);
    assert_int_equal(st.evicted, 1);
    assert_int_equal(st.put_refused, 1);
    assert_int_equal(st.puts, st.occupancy + st.evicted + st.retired);
    /* After the end, every sample left is served once more, then none. */
    surge_store_end_reception(s);
    int served = 0, n;
    while ((n = surge_store_get_batch(s, 2, in, out, NULL, NULL, 0)) > 0) {
        served += n;
    }
    assert_int_equal(n, SURGE_ECLOSED);
    assert_int_equal(served, 4);
    surge_store_get_stats(s, &st);
    assert_int_equal(st.occupancy, 0);
    assert_int_equal(st.puts, st.evicted + st.retired);
    surge_store_destroy(&s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fifo_order_and_full),
        cmocka_unit_test(timeout_and_stop),
        cmocka_unit_test(shape_rules),
        cmocka_unit_test(keep_store),
        cmocka_unit_test(space_callback_after_refusal),
        cmocka_unit_test(producer_consumer_threads),
        cmocka_unit_test(reservoir_policy_backpressure),
        cmocka_unit_test(in_place_put_and_take),
    };
    return cmocka_run_group_tests_name("server_store", tests, NULL, NULL);
}
