/*
 * tests/unit/common/test_pool.c - the fork-join thread pool of
 * common/pool.h: every task runs exactly once per run, for any thread and
 * task count, over many back-to-back runs (the generation hand-over) and
 * after the workers went to sleep; the split helper covers a range
 * exactly; bad arguments are refused.
 */
#include "config.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/pool.h"

struct counts {
    atomic_int *hits; /* (ntasks) */
    size_t ntasks;
};

static void
count_task(void *arg, size_t task)
{
    struct counts *c = arg;
    assert_true(task < c->ntasks);
    atomic_fetch_add(&c->hits[task], 1);
}

static void
run_and_check(surge_pool *p, size_t ntasks)
{
    struct counts c = {calloc(ntasks + 1, sizeof(atomic_int)), ntasks};
    assert_non_null(c.hits);
    surge_pool_run(p, ntasks, count_task, &c);
    for (size_t i = 0; i < ntasks; i++) {
        assert_int_equal(atomic_load(&c.hits[i]), 1);
    }
    free(c.hits);
}

static void
test_every_task_once(void **state)
{
    (void)state;
    static const size_t sizes[] = {0, 1, 2, 3, 7, 64, 1000, 100000};
    for (int threads = 1; threads <= 5; threads++) {
        surge_pool *p = NULL;
        assert_int_equal(surge_pool_create(&p, threads), 0);
        assert_int_equal(surge_pool_threads(p), threads);
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            run_and_check(p, sizes[k]);
        }
        surge_pool_destroy(&p);
        assert_null(p);
    }
}

/* Many short runs in a row (workers catch them while spinning), and runs
 * after a pause (workers asleep on the condition variable). */
static void
test_back_to_back_and_after_sleep(void **state)
{
    (void)state;
    surge_pool *p = NULL;
    assert_int_equal(surge_pool_create(&p, 4), 0);
    for (int i = 0; i < 3000; i++) {
        run_and_check(p, (size_t)(i % 9));
    }
    for (int i = 0; i < 3; i++) {
        usleep(20000);
        run_and_check(p, 17);
    }
    surge_pool_destroy(&p);
}

struct sum_job {
    const double *x;
    double *part; /* (ntasks) */
    size_t n, ntasks;
};

static void
sum_task(void *arg, size_t task)
{
    struct sum_job *j = arg;
    size_t lo, hi;
    surge_pool_split(j->n, j->ntasks, task, &lo, &hi);
    double s = 0.0;
    for (size_t i = lo; i < hi; i++) {
        s += j->x[i];
    }
    j->part[task] = s;
}

/* The determinism recipe of pool.h: fixed tasks, partials combined in task
 * order, the same bits whatever the thread count. */
static void
test_fixed_tasks_same_bits(void **state)
{
    (void)state;
    enum { N = 100003, TASKS = 37 };
    double *x = malloc(N * sizeof *x);
    double part[TASKS];
    assert_non_null(x);
    for (size_t i = 0; i < N; i++) {
        x[i] = 1.0 / (double)(i + 1) * ((i % 3) ? 1.0 : -1.0);
    }
    double first = 0.0;
    for (int threads = 1; threads <= 4; threads++) {
        surge_pool *p = NULL;
        assert_int_equal(surge_pool_create(&p, threads), 0);
        struct sum_job j = {x, part, N, TASKS};
        surge_pool_run(p, TASKS, sum_task, &j);
        double total = 0.0;
        for (int t = 0; t < TASKS; t++) {
            total += part[t];
        }
        if (threads == 1) {
            first = total;
        }
        assert_memory_equal(&total, &first, sizeof total);
        surge_pool_destroy(&p);
    }
    free(x);
}

static void
test_split(void **state)
{
    (void)state;
    for (size_t n = 0; n < 50; n++) {
        for (size_t t = 1; t < 12; t++) {
            size_t next = 0;
            for (size_t i = 0; i < t; i++) {
                size_t lo, hi;
                surge_pool_split(n, t, i, &lo, &hi);
                assert_int_equal(lo, next);
                assert_true(hi >= lo);
                assert_true(hi - lo <= n / t + 1);
                next = hi;
            }
            assert_int_equal(next, n);
        }
    }
}

static void
test_bad_arguments(void **state)
{
    (void)state;
    surge_pool *p = (surge_pool *)&p;
    assert_int_equal(surge_pool_create(&p, 0), -EINVAL);
    assert_int_equal(surge_pool_create(&p, SURGE_POOL_MAX_THREADS + 1),
                     -EINVAL);
    assert_int_equal(surge_pool_create(NULL, 2), -EINVAL);
    assert_ptr_equal(p, (surge_pool *)&p); /* untouched on failure */
    assert_int_equal(surge_pool_threads(NULL), 1);
    surge_pool_destroy(NULL);
    surge_pool *none = NULL;
    surge_pool_destroy(&none);
    /* A NULL pool runs on the caller. */
    run_and_check(NULL, 5);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_task_once),
        cmocka_unit_test(test_back_to_back_and_after_sleep),
        cmocka_unit_test(test_fixed_tasks_same_bits),
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests_name("pool", tests, NULL, NULL);
}
