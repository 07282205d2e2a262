/*
 * tests/unit/common/test_checksum.c - the order-independent sample
 * checksum: slices add up to the whole, position matters, and the float64
 * path hashes exactly the float32 rounding that goes on the wire.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <surge/client.h>

#define N 10007

static float vf[N];  /* (N,) */
static double vd[N]; /* (N,) */

static void
fill(void)
{
    uint64_t s = 42;
    for (int i = 0; i < N; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        vd[i] = ((double)(s >> 11) / 9007199254740992.0 - 0.5) * 1e3;
        vf[i] = (float)vd[i];
    }
}

static void
test_slices_sum_to_whole(void **state)
{
    (void)state;
    fill();
    uint64_t whole = surge_checksum_f32(vf, 0, N);
    /* Uneven cuts, summed in a scrambled order. */
    const uint64_t cuts[] = {0, 1, 17, 4096, 4097, 9000, N};
    uint64_t sum = 0;
    for (int i = 5; i >= 0; i--) {
        sum += surge_checksum_f32(vf + cuts[i], cuts[i], cuts[i + 1] - cuts[i]);
    }
    assert_true(sum == whole);
    assert_true(surge_checksum_f32(vf, 0, 0) == 0);
}

static void
test_position_and_value_matter(void **state)
{
    (void)state;
    fill();
    uint64_t a = surge_checksum_f32(vf, 0, 100);
    assert_true(surge_checksum_f32(vf, 1, 100) != a);
    float w[100];
    memcpy(w, vf, sizeof w);
    w[50] = -w[50];
    assert_true(surge_checksum_f32(w, 0, 100) != a);
    /* Swapping two values changes the sum (they sit at other positions). */
    memcpy(w, vf, sizeof w);
    float t = w[3];
    w[3] = w[4];
    w[4] = t;
    assert_true(surge_checksum_f32(w, 0, 100) != a);
    /* -0.0 and 0.0 are different bits on the wire. */
    float z0 = 0.0f, z1 = -0.0f;
    assert_true(surge_checksum_f32(&z0, 0, 1) != surge_checksum_f32(&z1, 0, 1));
}

static void
test_f64_hashes_f32_rounding(void **state)
{
    (void)state;
    fill();
    assert_true(surge_checksum_f64(vd, 5, N) == surge_checksum_f32(vf, 5, N));
    /* A double that is not a float: its rounding, not its bits. */
    double d = 0.1;
    float f = 0.1f;
    assert_true(surge_checksum_f64(&d, 0, 1) == surge_checksum_f32(&f, 0, 1));
    double d2 = 0.1 + 1e-12; /* rounds to the same float */
    assert_true(surge_checksum_f64(&d2, 0, 1) == surge_checksum_f32(&f, 0, 1));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slices_sum_to_whole),
        cmocka_unit_test(test_position_and_value_matter),
        cmocka_unit_test(test_f64_hashes_f32_rounding),
    };
    return cmocka_run_group_tests_name("checksum", tests, NULL, NULL);
}
