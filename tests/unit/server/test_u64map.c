/*
 * tests/unit/server/test_u64map.c - the server's uint64 -> pointer map
 * (server/u64map.c): a long random run of puts, gets and deletes checked
 * against a plain array, so that backward-shift deletion keeps every
 * probe run intact; dense keys; replacing values.
 */
#include "config.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "server/u64map.h"

#define NKEYS 4096

static uint64_t rng = 88172645463325252u;

static uint64_t
next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void
random_against_reference(void **state)
{
    (void)state;
    static void *ref[NKEYS]; /* key i -> value, NULL = absent */
    static char vals[NKEYS];
    surge_u64map m;
    surge_u64map_init(&m);
    size_t len = 0;
    for (int it = 0; it < 200000; it++) {
        /* Keys spread over a small range so probe runs collide often;
         * some keys are huge, like steps of long runs. */
        uint64_t k = next() % NKEYS;
        uint64_t key = (k & 1) ? k : (k << 40);
        uint64_t op = next() % 3;
        if (op == 0) {
            void *v = &vals[k];
            assert_int_equal(surge_u64map_put(&m, key, v), 0);
            len += ref[k] == NULL;
            ref[k] = v;
        } else if (op == 1) {
            void *old = surge_u64map_del(&m, key);
            assert_ptr_equal(old, ref[k]);
            len -= ref[k] != NULL;
            ref[k] = NULL;
        } else {
            assert_ptr_equal(surge_u64map_get(&m, key), ref[k]);
        }
        assert_int_equal(m.len, len);
    }
    for (uint64_t k = 0; k < NKEYS; k++) {
        uint64_t key = (k & 1) ? k : (k << 40);
        assert_ptr_equal(surge_u64map_get(&m, key), ref[k]);
    }
    surge_u64map_fini(&m);
    assert_null(m.keys);
}

static void
dense_keys_and_replace(void **state)
{
    (void)state;
    static int v[100000];
    surge_u64map m;
    surge_u64map_init(&m);
    assert_null(surge_u64map_get(&m, 5));
    assert_null(surge_u64map_del(&m, 5));
    assert_int_equal(surge_u64map_put(&m, 1, NULL), -EINVAL);
    for (int i = 0; i < 100000; i++) {
        assert_int_equal(surge_u64map_put(&m, (uint64_t)i, &v[i]), 0);
    }
    assert_int_equal(m.len, 100000);
    assert_true(m.len * 2 <= m.cap);
    assert_int_equal(surge_u64map_put(&m, 7, &v[8]), 0);
    assert_int_equal(m.len, 100000);
    assert_ptr_equal(surge_u64map_get(&m, 7), &v[8]);
    for (int i = 0; i < 100000; i += 2) {
        assert_non_null(surge_u64map_del(&m, (uint64_t)i));
    }
    for (int i = 1; i < 100000; i += 2) {
        assert_ptr_equal(surge_u64map_get(&m, (uint64_t)i),
                         i == 7 ? &v[8] : &v[i]);
    }
    surge_u64map_fini(&m);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(random_against_reference),
        cmocka_unit_test(dense_keys_and_replace),
    };
    return cmocka_run_group_tests_name("server_u64map", tests, NULL, NULL);
}
