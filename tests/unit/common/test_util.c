/*
 * tests/unit/common/test_util.c - the shared utilities of common/util.h.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <surge/error.h>

#include "common/util.h"

static void
test_now_ns(void **state)
{
    (void)state;
    uint64_t a = surge_now_ns();
    usleep(2000);
    uint64_t b = surge_now_ns();
    assert_true(b > a);
    assert_true(b - a >= 2000000);
}

static void
test_parse_int64(void **state)
{
    (void)state;
    int64_t v = 99;
    assert_int_equal(surge_parse_int64("0", &v), 0);
    assert_true(v == 0);
    assert_int_equal(surge_parse_int64("-12", &v), 0);
    assert_true(v == -12);
    assert_int_equal(surge_parse_int64("+7", &v), 0);
    assert_true(v == 7);
    assert_int_equal(surge_parse_int64("9223372036854775807", &v), 0);
    assert_true(v == INT64_MAX);
    assert_int_equal(surge_parse_int64("-9223372036854775808", &v), 0);
    assert_true(v == INT64_MIN);
    v = 5;
    const char *bad[] = {"",  " 1",   "1 ",  "1x",  "x1",  "-",
                         "+", "0x10", "1.0", "--1", "1e3", "\t2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(surge_parse_int64(bad[i], &v), -EINVAL);
    }
    assert_int_equal(surge_parse_int64(NULL, &v), -EINVAL);
    assert_int_equal(surge_parse_int64("9223372036854775808", &v), -ERANGE);
    assert_int_equal(surge_parse_int64("-9223372036854775809", &v), -ERANGE);
    assert_true(v == 5); /* untouched on failure */
}

static void
test_parse_uint64(void **state)
{
    (void)state;
    uint64_t v = 0;
    assert_int_equal(surge_parse_uint64("18446744073709551615", &v), 0);
    assert_true(v == UINT64_MAX);
    assert_int_equal(surge_parse_uint64("18446744073709551616", &v), -ERANGE);
    assert_int_equal(surge_parse_uint64("-1", &v), -EINVAL);
    assert_int_equal(surge_parse_uint64("+1", &v), -EINVAL);
    assert_int_equal(surge_parse_uint64(" 1", &v), -EINVAL);
    assert_int_equal(surge_parse_uint64("12k", &v), -EINVAL);
    assert_int_equal(surge_parse_uint64("", &v), -EINVAL);
}

static void
test_parse_double(void **state)
{
    (void)state;
    double v = 0;
    assert_int_equal(surge_parse_double("1.5", &v), 0);
    assert_true(v == 1.5);
    assert_int_equal(surge_parse_double("-2e-3", &v), 0);
    assert_true(v == -2e-3);
    assert_int_equal(surge_parse_double(".5", &v), 0);
    assert_true(v == 0.5);
    assert_int_equal(surge_parse_double("1e-310", &v), 0); /* subnormal */
    assert_true(v > 0);
    const char *bad[] = {"",   "nan", "-inf", "inf", "infinity", " 1",
                         "1 ", "1,5", "1.5.", "e3",  "-",        "abc"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = 7;
        assert_int_equal(surge_parse_double(bad[i], &v), -EINVAL);
        assert_true(v == 7);
    }
    assert_int_equal(surge_parse_double("1e999", &v), -ERANGE);
    assert_int_equal(surge_parse_double("-1e999", &v), -ERANGE);
}

static void
test_write_file_atomic(void **state)
{
    (void)state;
    char dir[] = "/tmp/surge-test-util-XXXXXX";
    char path[512];
    char got[64];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/out.json", dir);
    assert_int_equal(surge_write_file_atomic(path, "first", 5), 0);
    assert_int_equal(surge_write_file_atomic(path, "second!", 7), 0);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(got, 1, sizeof got, f);
    fclose(f);
    assert_int_equal(n, 7);
    assert_memory_equal(got, "second!", 7);
    /* No temporary left behind. */
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    assert_int_equal(access(tmp, F_OK), -1);
    /* A directory that does not exist: -ENOENT, nothing created. */
    char bad[600];
    snprintf(bad, sizeof bad, "%s/missing/x", dir);
    assert_int_equal(surge_write_file_atomic(bad, "x", 1), -ENOENT);
    unlink(path);
    rmdir(dir);
}

static void
test_huge_alloc(void **state)
{
    (void)state;
    size_t bytes = (size_t)5 << 20;
    unsigned char *p = surge_huge_alloc(bytes);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % ((size_t)2 << 20), 0);
    for (size_t i = 0; i < bytes; i += 4093) {
        assert_int_equal(p[i], 0);
        p[i] = (unsigned char)i;
    }
    p[bytes - 1] = 1;
    surge_huge_free(p, bytes);
    assert_null(surge_huge_alloc(0));
    /* Big enough to be pre-faulted on several threads (one per 64 MiB, at
     * most the CPUs): every page zeroed and writable, none missed at the
     * shares' edges (an odd number of huge pages, a tail below one). */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    assert_int_equal(surge_prefault_threads(1), 1);
    assert_int_equal(surge_prefault_threads((size_t)1 << 40),
                     cpus > 64 ? 64 : (cpus > 0 ? (int)cpus : 1));
    size_t big = ((size_t)193 << 20) + 12345;
    unsigned char *q = surge_huge_alloc_logged(big, "test");
    assert_non_null(q);
    for (size_t i = 0; i < big; i += 4096) {
        assert_int_equal(q[i], 0);
        q[i] = 1;
    }
    assert_int_equal(q[big - 1], 0);
    surge_huge_free(q, big);
    surge_huge_free(NULL, 10);
}

/* The background pre-fault never touches contents: data written while it
 * runs (ahead of it and behind it) stays, the rest reads zero; stopping
 * it early and freeing is safe; small buffers need no job. */
static void
test_huge_alloc_background(void **state)
{
    (void)state;
    surge_prefault *pf = (surge_prefault *)&pf;
    unsigned char *s = surge_huge_alloc_background(4096, "test", &pf);
    assert_non_null(s);
    assert_null(pf);
    surge_huge_free(s, 4096);
    for (int stop_early = 0; stop_early < 2; stop_early++) {
        size_t big = ((size_t)197 << 20) + 777;
        unsigned char *p = surge_huge_alloc_background(big, "test", &pf);
        assert_non_null(p);
        for (size_t i = 0; i < big; i += 3 * 4096 + 5) {
            p[i] = (unsigned char)(1 + i % 251);
        }
        if (stop_early) {
            surge_prefault_stop(&pf);
            assert_null(pf);
        }
        for (size_t i = big - 1; i > big - 100000; i -= 4099) {
            p[i] = 7;
        }
        surge_prefault_stop(&pf);
        assert_null(pf);
        size_t bad = 0;
        for (size_t i = 0; i < big - 100000; i++) {
            unsigned char want =
                i % (3 * 4096 + 5) == 0 ? (unsigned char)(1 + i % 251) : 0;
            bad += p[i] != want;
        }
        assert_int_equal(bad, 0);
        surge_huge_free(p, big);
    }
    surge_prefault_stop(NULL);
}

static void
test_malloc_tune(void **state)
{
    (void)state;
#if defined(__SANITIZE_ADDRESS__)
    /* ASan replaces glibc's allocator: its mallopt accepts nothing. */
    assert_int_equal(surge_malloc_tune(), -EINVAL);
#else
    assert_int_equal(surge_malloc_tune(), 0);
#endif
    void *p = malloc((size_t)8 << 20);
    assert_non_null(p);
    free(p);
}

static void
test_ratelimit(void **state)
{
    (void)state;
    surge_ratelimit rl = SURGE_RATELIMIT_INIT(3, 1000);
    uint64_t skipped = 99;
    uint64_t t = 5000;
    assert_true(surge_ratelimit_allow(&rl, t, &skipped));
    assert_true(skipped == 0);
    assert_true(surge_ratelimit_allow(&rl, t + 1, NULL));
    assert_true(surge_ratelimit_allow(&rl, t + 2, NULL));
    for (int i = 0; i < 10; i++) {
        assert_false(surge_ratelimit_allow(&rl, t + 3 + i, &skipped));
    }
    /* The next window allows again and reports what was dropped. */
    assert_true(surge_ratelimit_allow(&rl, t + 1000, &skipped));
    assert_true(skipped == 10);
    assert_true(surge_ratelimit_allow(&rl, t + 1001, &skipped));
    assert_true(skipped == 0);

    surge_ratelimit r2;
    surge_ratelimit_init(&r2, 0, 10); /* burst 0 means 1 */
    assert_true(surge_ratelimit_allow(&r2, 0, NULL));
    assert_false(surge_ratelimit_allow(&r2, 1, NULL));
    assert_true(surge_ratelimit_allow(&r2, 11, NULL));
}

/* The byte buffer grows past its first 4 KiB keeping what it holds; the
 * reader never reads past the end. */
static void
test_bytes(void **state)
{
    (void)state;
    surge_bytes b = {0};
    for (uint64_t i = 0; i < 1000; i++) {
        assert_int_equal(surge_bytes_u64(&b, i), 0);
    }
    assert_int_equal(surge_bytes_put(&b, "xyz", 3), 0);
    assert_int_equal(surge_bytes_put(&b, NULL, 0), 0);
    assert_int_equal(b.len, 8003);
    assert_int_equal(surge_bytes_put(&b, "x", SIZE_MAX / 2), -ENOMEM);
    assert_int_equal(b.len, 8003);
    surge_reader r = {b.p, b.len, 0};
    uint64_t v = 0;
    for (uint64_t i = 0; i < 1000; i++) {
        assert_int_equal(surge_reader_get(&r, &v, 8), 0);
        assert_int_equal(v, i);
    }
    char tail[4] = "";
    assert_int_equal(surge_reader_get(&r, tail, 4), SURGE_EPROTO);
    assert_int_equal(r.off, 8000);                      /* nothing read */
    assert_int_equal(surge_reader_get(&r, NULL, 1), 0); /* skip */
    assert_int_equal(surge_reader_get(&r, tail, 2), 0);
    assert_memory_equal(tail, "yz", 2);
    assert_int_equal(surge_reader_get(&r, tail, 1), SURGE_EPROTO);
    surge_bytes_free(&b);
    assert_null(b.p);
    assert_int_equal(b.len, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_now_ns),
        cmocka_unit_test(test_parse_int64),
        cmocka_unit_test(test_parse_uint64),
        cmocka_unit_test(test_parse_double),
        cmocka_unit_test(test_write_file_atomic),
        cmocka_unit_test(test_huge_alloc),
        cmocka_unit_test(test_huge_alloc_background),
        cmocka_unit_test(test_malloc_tune),
        cmocka_unit_test(test_ratelimit),
        cmocka_unit_test(test_bytes),
    };
    return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
