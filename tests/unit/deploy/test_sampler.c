/*
 * tests/unit/deploy/test_sampler.c - design of experiments: the seeded
 * generator, uniform points, Latin hypercube stratification, the first
 * points of GSL's Halton and Sobol sequences (and skip / scramble), scaling
 * into the parameter box, CSV parameter files (good and every error), and
 * parameters.csv reading back bit-identical. Fixed seeds throughout.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "deploy/sampler.h"
#include "deploy/study.h"

static surge_study *
make_study(const char *sampler, const char *params)
{
    char text[4096];
    snprintf(text, sizeof text,
             "{\"parameters\": %s, \"sampler\": %s, \"solver\": "
             "{\"command\": \"p\"}, \"study\": {\"seed\": 11}}",
             params, sampler);
    surge_study *s = NULL;
    char err[256];
    int rc = surge_study_parse(&s, text, "<test>", "/tmp", err, sizeof err);
    if (rc != 0) {
        print_error("%s\n", err);
    }
    assert_int_equal(rc, 0);
    return s;
}

#define P3                                                                     \
    "[{\"name\": \"x\", \"min\": -1, \"max\": 1}, {\"name\": \"y\", \"min\": " \
    "10, \"max\": 20}, {\"name\": \"z\", \"min\": 0, \"max\": 1e-3}]"

static void
test_rng(void **state)
{
    (void)state;
    surge_rng a, b, c;
    surge_rng_seed(&a, 5);
    surge_rng_seed(&b, 5);
    surge_rng_seed(&c, 6);
    int same_c = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = surge_rng_next(&a);
        assert_true(x == surge_rng_next(&b));
        same_c += x == surge_rng_next(&c);
    }
    assert_int_equal(same_c, 0);
    /* Uniform doubles in [0, 1), unbiased integers below n. */
    double sum = 0;
    int hist[7] = {0};
    for (int i = 0; i < 70000; i++) {
        double u = surge_rng_uniform(&a);
        assert_true(u >= 0.0 && u < 1.0);
        sum += u;
        uint64_t k = surge_rng_below(&a, 7);
        assert_true(k < 7);
        hist[k]++;
    }
    assert_true(fabs(sum / 70000 - 0.5) < 0.01);
    for (int k = 0; k < 7; k++) {
        assert_true(abs(hist[k] - 10000) < 500);
    }
}

static void
test_uniform(void **state)
{
    (void)state;
    double u[300], v[300];
    assert_int_equal(
        surge_sampler_unit(SURGE_SAMPLER_UNIFORM, 3, 100, 9, 0, 0, u), 0);
    assert_int_equal(
        surge_sampler_unit(SURGE_SAMPLER_UNIFORM, 3, 100, 9, 0, 0, v), 0);
    assert_memory_equal(u, v, sizeof u);
    for (int i = 0; i < 300; i++) {
        assert_true(u[i] >= 0 && u[i] < 1);
    }
    assert_int_equal(
        surge_sampler_unit(SURGE_SAMPLER_UNIFORM, 3, 100, 10, 0, 0, v), 0);
    assert_true(memcmp(u, v, sizeof u) != 0);
    assert_int_equal(
        surge_sampler_unit(SURGE_SAMPLER_UNIFORM, 0, 10, 1, 0, 0, u), -EINVAL);
    assert_int_equal(surge_sampler_unit(99, 2, 10, 1, 0, 0, u), -EINVAL);
}

/* Latin hypercube: in every column, each of the n strata [k/n, (k+1)/n)
 * holds exactly one point. */
static void
test_lhs_stratified(void **state)
{
    (void)state;
    const size_t n = 97, d = 5;
    double *u = malloc(n * d * sizeof *u);
    double *w = malloc(n * d * sizeof *w);
    assert_non_null(u);
    assert_non_null(w);
    assert_int_equal(surge_sampler_unit(SURGE_SAMPLER_LHS, d, n, 3, 0, 0, u),
                     0);
    for (size_t j = 0; j < d; j++) {
        int seen[97] = {0};
        for (size_t i = 0; i < n; i++) {
            double x = u[i * d + j];
            assert_true(x >= 0 && x < 1);
            size_t k = (size_t)floor(x * (double)n);
            assert_true(k < n);
            seen[k]++;
        }
        for (size_t k = 0; k < n; k++) {
            assert_int_equal(seen[k], 1);
        }
    }
    /* Reproducible with the seed, different with another. */
    assert_int_equal(surge_sampler_unit(SURGE_SAMPLER_LHS, d, n, 3, 0, 0, w),
                     0);
    assert_memory_equal(u, w, n * d * sizeof *u);
    assert_int_equal(surge_sampler_unit(SURGE_SAMPLER_LHS, d, n, 4, 0, 0, w),
                     0);
    assert_true(memcmp(u, w, n * d * sizeof *u) != 0);
    /* One run: one stratum. */
    assert_int_equal(surge_sampler_unit(SURGE_SAMPLER_LHS, d, 1, 3, 0, 0, w),
                     0);
    free(u);
    free(w);
}

static void
test_halton_first_points(void **state)
{
    (void)state;
    /* Radical inverses in bases 2 and 3 of 1, 2, 3, 4. */
    static const double want[4][2] = {
        {1.0 / 2, 1.0 / 3},
        {1.0 / 4, 2.0 / 3},
        {3.0 / 4, 1.0 / 9},
        {1.0 / 8, 4.0 / 9},
    };
    double u[8];
    assert_int_equal(surge_sampler_unit(SURGE_SAMPLER_HALTON, 2, 4, 1, 0, 0, u),
                     0);
    for (int i = 0; i < 4; i++) {
        assert_true(fabs(u[2 * i] - want[i][0]) < 1e-15);
        assert_true(fabs(u[2 * i + 1] - want[i][1]) < 1e-15);
    }
    /* skip drops the first points. */
    double v[6];
    assert_int_equal(surge_sampler_unit(SURGE_SAMPLER_HALTON, 2, 3, 1, 0, 1, v),
                     0);
    assert_memory_equal(v, u + 2, sizeof v);
}

static void
test_sobol_first_points(void **state)
{
    (void)state;
    /* GSL's Sobol sequence (Bratley-Fox), dimension 2. */
    static const double want[4][2] = {
        {0.5, 0.5},
        {0.75, 0.25},
        {0.25, 0.75},
        {0.375, 0.375},
    };
    double u[8];
    assert_int_equal(surge_sampler_unit(SURGE_SAMPLER_SOBOL, 2, 4, 1, 0, 0, u),
                     0);
    for (int i = 0; i < 4; i++) {
        assert_true(fabs(u[2 * i] - want[i][0]) < 1e-15);
        assert_true(fabs(u[2 * i + 1] - want[i][1]) < 1e-15);
    }
    /* Beyond 40 dimensions GSL has no direction numbers. */
    double big[41];
    assert_int_equal(
        surge_sampler_unit(SURGE_SAMPLER_SOBOL, 41, 1, 1, 0, 0, big), -EINVAL);
}

/* A scrambled sequence is the plain one shifted by a constant per
 * dimension, modulo 1, the shift drawn from the seed. */
static void
test_scramble(void **state)
{
    (void)state;
    double u[64], v[64], w[64];
    for (int kind = SURGE_SAMPLER_HALTON; kind <= SURGE_SAMPLER_SOBOL; kind++) {
        assert_int_equal(surge_sampler_unit(kind, 4, 16, 8, 0, 0, u), 0);
        assert_int_equal(surge_sampler_unit(kind, 4, 16, 8, 1, 0, v), 0);
        assert_int_equal(surge_sampler_unit(kind, 4, 16, 8, 1, 0, w), 0);
        assert_memory_equal(v, w, sizeof v);
        assert_true(memcmp(u, v, sizeof u) != 0);
        for (int j = 0; j < 4; j++) {
            double shift = fmod(v[j] - u[j] + 1.0, 1.0);
            for (int i = 0; i < 16; i++) {
                double x = v[i * 4 + j];
                assert_true(x >= 0 && x < 1);
                double s = fmod(x - u[i * 4 + j] + 1.0, 1.0);
                assert_true(fabs(s - shift) < 1e-12 ||
                            fabs(fabs(s - shift) - 1.0) < 1e-12);
            }
        }
        assert_int_equal(surge_sampler_unit(kind, 4, 16, 9, 1, 0, w), 0);
        assert_true(memcmp(v, w, sizeof v) != 0);
    }
}

static void
test_generate_scales_into_box(void **state)
{
    (void)state;
    static const char *const kinds[] = {"uniform", "lhs", "halton", "sobol"};
    for (size_t k = 0; k < 4; k++) {
        char sampler[128];
        snprintf(sampler, sizeof sampler, "{\"kind\": \"%s\", \"runs\": 50}",
                 kinds[k]);
        surge_study *s = make_study(sampler, P3);
        double *x = NULL, *x2 = NULL;
        size_t n = 0, n2 = 0;
        char err[256];
        assert_int_equal(surge_sampler_generate(s, &x, &n, err, sizeof err), 0);
        assert_int_equal(n, 50);
        for (size_t i = 0; i < n; i++) {
            for (size_t j = 0; j < 3; j++) {
                double v = x[i * 3 + j];
                assert_true(v >= s->params[j].min && v <= s->params[j].max);
            }
        }
        /* Same study, same points. */
        assert_int_equal(surge_sampler_generate(s, &x2, &n2, err, sizeof err),
                         0);
        assert_memory_equal(x, x2, n * 3 * sizeof *x);
        free(x);
        free(x2);
        surge_study_destroy(&s);
    }
}

static char csv_path[] = "/tmp/surge-test-sampler-XXXXXX";

static void
write_csv(const char *text)
{
    FILE *f = fopen(csv_path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int
csv_generate(const char *text, const char *runs, double **x, size_t *n,
             char *err, size_t errcap)
{
    char sampler[512];
    write_csv(text);
    snprintf(sampler, sizeof sampler,
             "{\"kind\": \"csv\", \"file\": \"%s\"%s%s}", csv_path,
             runs ? ", \"runs\": " : "", runs ? runs : "");
    surge_study *s = make_study(sampler, P3);
    int rc = surge_sampler_generate(s, x, n, err, errcap);
    surge_study_destroy(&s);
    return rc;
}

static void
test_csv_good(void **state)
{
    (void)state;
    int fd = mkstemp(csv_path);
    assert_true(fd >= 0);
    close(fd);
    double *x = NULL;
    size_t n = 0;
    char err[512];
    /* Columns in any order, a sim column ignored, comments and blank
     * lines skipped, spaces and CRLF tolerated. */
    assert_int_equal(csv_generate("# sets\n z , sim,x,y\r\n\n"
                                  "0.0005,0,0.5,15\r\n"
                                  "# middle\n"
                                  "1e-3,1,-1,10\n"
                                  "0,2,1,20",
                                  NULL, &x, &n, err, sizeof err),
                     0);
    assert_int_equal(n, 3);
    assert_true(x[0] == 0.5 && x[1] == 15 && x[2] == 0.0005);
    assert_true(x[3] == -1 && x[4] == 10 && x[5] == 1e-3);
    assert_true(x[6] == 1 && x[7] == 20 && x[8] == 0);
    free(x);
    /* sampler.runs takes the first rows. */
    assert_int_equal(csv_generate("x,y,z\n0,10,0\n0.5,11,0\n1,12,0\n", "2", &x,
                                  &n, err, sizeof err),
                     0);
    assert_int_equal(n, 2);
    assert_true(x[3] == 0.5);
    free(x);
}

static void
test_csv_errors(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        const char *runs;
        const char *want;
    } cases[] = {
        {"x,y\n0,10\n", NULL, ":1: no column for parameter 'z'"},
        {"x,y,z,w\n0,10,0,0\n", NULL, ":1: column 'w' is not a parameter"},
        {"x,y,x,z\n0,10,0,0\n", NULL, ":1: column 'x' is repeated"},
        {"x,y,z\n0,ten,0\n", NULL, ":2: y = 'ten' is not a number"},
        {"x,y,z\n0,10,\n", NULL, ":2: z = '' is not a number"},
        {"x,y,z\n0,10,nan\n", NULL, ":2: z = 'nan' is not a number"},
        {"x,y,z\n\n2,10,0\n", NULL, ":3: x = 2 is outside [-1, 1]"},
        {"x,y,z\n0,10\n", NULL, ":2: 2 values, the header has 3 columns"},
        {"x,y,z\n0,10,0,5\n", NULL, ":2: 4 values, the header has 3"},
        {"x,y,z\n", NULL, "no parameter rows"},
        {"# only a comment\n", NULL, "no header line"},
        {"x,y,z\n0,10,0\n", "2", "1 rows, sampler.runs asks for 2"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double *x = NULL;
        size_t n = 0;
        char err[512] = "";
        int rc =
            csv_generate(cases[i].text, cases[i].runs, &x, &n, err, sizeof err);
        if (rc != SURGE_ECONFIG || strstr(err, cases[i].want) == NULL ||
            strncmp(err, "sampler.file: ", 14) != 0) {
            print_error("case %zu: want '%s', got %d '%s'\n", i, cases[i].want,
                        rc, err);
        }
        assert_int_equal(rc, SURGE_ECONFIG);
        assert_null(x);
        assert_non_null(strstr(err, cases[i].want));
    }
    /* A missing file. */
    double *x = NULL;
    size_t n = 0;
    char err[512];
    unlink(csv_path);
    surge_study *s = make_study(
        "{\"kind\": \"csv\", \"file\": \"/nonexistent/sets.csv\"}", P3);
    assert_int_equal(surge_sampler_generate(s, &x, &n, err, sizeof err),
                     -ENOENT);
    assert_non_null(strstr(err, "sampler.file: /nonexistent/sets.csv: "));
    surge_study_destroy(&s);
}

/* parameters.csv, fed back as a csv sampler, gives the same bits. */
static void
test_parameters_csv_round_trip(void **state)
{
    (void)state;
    surge_study *s = make_study("{\"kind\": \"lhs\", \"runs\": 20}", P3);
    double *x = NULL, *y = NULL;
    size_t n = 0, m = 0;
    char err[512];
    assert_int_equal(surge_sampler_generate(s, &x, &n, err, sizeof err), 0);
    char tmpl[] = "/tmp/surge-test-params-XXXXXX";
    int fd = mkstemp(tmpl);
    assert_true(fd >= 0);
    close(fd);
    snprintf(csv_path, sizeof csv_path, "%s", tmpl);
    assert_int_equal(surge_sampler_write_csv(s, x, n, csv_path), 0);
    char sampler[256];
    snprintf(sampler, sizeof sampler, "{\"kind\": \"csv\", \"file\": \"%s\"}",
             csv_path);
    surge_study *t = make_study(sampler, P3);
    assert_int_equal(surge_sampler_generate(t, &y, &m, err, sizeof err), 0);
    assert_int_equal(m, n);
    assert_memory_equal(x, y, n * 3 * sizeof *x);
    FILE *f = fopen(csv_path, "r");
    char line[256];
    assert_non_null(fgets(line, sizeof line, f));
    assert_string_equal(line, "sim,x,y,z\n");
    fclose(f);
    unlink(csv_path);
    free(x);
    free(y);
    surge_study_destroy(&s);
    surge_study_destroy(&t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rng),
        cmocka_unit_test(test_uniform),
        cmocka_unit_test(test_lhs_stratified),
        cmocka_unit_test(test_halton_first_points),
        cmocka_unit_test(test_sobol_first_points),
        cmocka_unit_test(test_scramble),
        cmocka_unit_test(test_generate_scales_into_box),
        cmocka_unit_test(test_csv_good),
        cmocka_unit_test(test_csv_errors),
        cmocka_unit_test(test_parameters_csv_round_trip),
    };
    return cmocka_run_group_tests_name("deploy/sampler", tests, NULL, NULL);
}
