/*
 * tests/unit/monitor/test_metrics.c - the metrics registry: registration
 * rules, Prometheus text, the series ring, the status JSON and the preview
 * images.
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

#include <cmocka.h>
#include <jansson.h>

#include "monitor/metrics.h"

static int
setup(void **state)
{
    surge_metrics *m = NULL;
    if (surge_metrics_create(4, &m) != 0) {
        return -1;
    }
    *state = m;
    return 0;
}

static int
teardown(void **state)
{
    surge_metrics *m = *state;
    surge_metrics_destroy(&m);
    assert_null(m);
    return 0;
}

static char *
prom(surge_metrics *m)
{
    char *s = NULL;
    size_t len = 0;
    assert_int_equal(surge_metrics_render_prometheus(m, &s, &len), 0);
    assert_non_null(s);
    assert_int_equal(strlen(s), len);
    return s;
}

static void
test_registration_rules(void **state)
{
    surge_metrics *m = *state;
    uint64_t v = 0;
    surge_gauge *g = NULL;

    assert_int_equal(surge_metrics_counter_ref(m, "1bad", NULL, "x", &v),
                     -EINVAL);
    assert_int_equal(surge_metrics_counter_ref(m, "bad-name", NULL, "x", &v),
                     -EINVAL);
    assert_int_equal(surge_metrics_counter_ref(m, "", NULL, "x", &v), -EINVAL);
    assert_int_equal(
        surge_metrics_counter_ref(m, "a_total", NULL, "two\nlines", &v),
        -EINVAL);
    /* Label sets: quoted values, no reserved names, no junk. */
    assert_int_equal(
        surge_metrics_counter_ref(m, "a_total", "reason=bad", "x", &v),
        -EINVAL);
    assert_int_equal(
        surge_metrics_counter_ref(m, "a_total", "__x=\"1\"", "x", &v), -EINVAL);
    assert_int_equal(
        surge_metrics_counter_ref(m, "a_total", "le=\"1\"", "x", &v), -EINVAL);
    assert_int_equal(
        surge_metrics_counter_ref(m, "a_total", "a=\"1\",", "x", &v), -EINVAL);
    assert_int_equal(surge_metrics_counter_ref(m, "a_total", "a=\"1", "x", &v),
                     -EINVAL);
    assert_int_equal(
        surge_metrics_counter_ref(m, "a_total", "a=\"\\q\"", "x", &v), -EINVAL);
    assert_int_equal(surge_metrics_counter_ref(m, "a_total",
                                               "a=\"1\",b=\"x\\\"y\"", "x", &v),
                     0);
    /* Same name and labels twice; same family with another type. */
    assert_int_equal(surge_metrics_counter_ref(m, "a_total",
                                               "a=\"1\",b=\"x\\\"y\"", "x", &v),
                     -EEXIST);
    assert_int_equal(surge_metrics_gauge(m, "a_total", "c=\"2\"", "x", &g),
                     -EINVAL);
    assert_null(g);
    assert_int_equal(surge_metrics_counter_ref(m, "a_total", NULL, "x", NULL),
                     -EINVAL);
    double bad[] = {1.0, 1.0};
    surge_histogram *h = NULL;
    assert_int_equal(surge_metrics_histogram(m, "h", NULL, "x", bad, 2, &h),
                     -EINVAL);
    double inf[] = {1.0, INFINITY};
    assert_int_equal(surge_metrics_histogram(m, "h", NULL, "x", inf, 2, &h),
                     -EINVAL);
    assert_null(h);
    assert_true(isnan(surge_metrics_value(m, "missing")));
}

static void
test_capacity_limit(void **state)
{
    surge_metrics *m = *state;
    static uint64_t v;
    char name[32];
    int rc = 0;
    size_t n = 0;
    for (; n < SURGE_METRICS_MAX + 1 && rc == 0; n++) {
        snprintf(name, sizeof name, "m%zu_total", n);
        rc = surge_metrics_counter_ref(m, name, NULL, "x", &v);
    }
    assert_int_equal(rc, -ENOSPC);
    assert_int_equal(n, SURGE_METRICS_MAX + 1);
}

static double
fn_value(void *arg)
{
    return *(double *)arg;
}

static int
hist_fill(void *arg, uint64_t *counts, double *sum)
{
    (void)arg;
    counts[0] = 5; /* used once */
    counts[1] = 3; /* twice */
    counts[2] = 2; /* more */
    *sum = 5 * 1 + 3 * 2 + 2 * 4;
    return 0;
}

static void
test_prometheus_text(void **state)
{
    surge_metrics *m = *state;
    uint64_t recv = 42;
    _Atomic uint64_t trained = 7;
    surge_counter *c = NULL;
    surge_gauge *loss = NULL;
    surge_histogram *lat = NULL;
    double bytes = 1024.5;
    double lat_b[] = {0.1, 0.5, 1};
    double reuse_b[] = {1, 2};

    assert_int_equal(
        surge_metrics_counter_ref(m, "surge_samples_received_total", NULL,
                                  "Complete samples assembled", &recv),
        0);
    assert_int_equal(
        surge_metrics_counter_ref_atomic(m, "surge_trainer_samples_total", NULL,
                                         "Samples trained on", &trained),
        0);
    assert_int_equal(surge_metrics_counter(m, "surge_samples_dropped_total",
                                           "reason=\"bad_token\"",
                                           "Dropped, by reason \\ why", &c),
                     0);
    surge_counter *c2 = NULL;
    assert_int_equal(surge_metrics_counter(m, "surge_samples_dropped_total",
                                           "reason=\"duplicate\"", "ignored",
                                           &c2),
                     0);
    assert_int_equal(surge_metrics_gauge(m, "surge_trainer_loss", NULL,
                                         "Last training loss", &loss),
                     0);
    assert_int_equal(surge_metrics_gauge_fn(m, "surge_reservoir_bytes", NULL,
                                            "Bytes held", fn_value, &bytes),
                     0);
    assert_int_equal(surge_metrics_histogram(m, "surge_sample_latency_seconds",
                                             "stage=\"in\"", "Latency", lat_b,
                                             3, &lat),
                     0);
    assert_int_equal(surge_metrics_histogram_fn(m, "surge_sample_reuse", NULL,
                                                "Times used", reuse_b, 2,
                                                hist_fill, NULL),
                     0);
    surge_counter_add(c, 3);
    surge_counter_add(c2, 1);
    surge_counter_add(NULL, 1); /* ignored */
    surge_histogram_observe(lat, 0.125);
    surge_histogram_observe(lat, 0.5);
    surge_histogram_observe(lat, 8.0);
    surge_histogram_observe(lat, NAN); /* ignored */

    char *s = prom(m);
    const char *want =
        "# HELP surge_samples_received_total Complete samples assembled\n"
        "# TYPE surge_samples_received_total counter\n"
        "surge_samples_received_total 42\n"
        "# HELP surge_trainer_samples_total Samples trained on\n"
        "# TYPE surge_trainer_samples_total counter\n"
        "surge_trainer_samples_total 7\n"
        "# HELP surge_samples_dropped_total Dropped, by reason \\\\ why\n"
        "# TYPE surge_samples_dropped_total counter\n"
        "surge_samples_dropped_total{reason=\"bad_token\"} 3\n"
        "surge_samples_dropped_total{reason=\"duplicate\"} 1\n"
        "# HELP surge_trainer_loss Last training loss\n"
        "# TYPE surge_trainer_loss gauge\n"
        "surge_trainer_loss NaN\n"
        "# HELP surge_reservoir_bytes Bytes held\n"
        "# TYPE surge_reservoir_bytes gauge\n"
        "surge_reservoir_bytes 1024.5\n"
        "# HELP surge_sample_latency_seconds Latency\n"
        "# TYPE surge_sample_latency_seconds histogram\n"
        "surge_sample_latency_seconds_bucket{stage=\"in\",le=\"0.1\"} 0\n"
        "surge_sample_latency_seconds_bucket{stage=\"in\",le=\"0.5\"} 2\n"
        "surge_sample_latency_seconds_bucket{stage=\"in\",le=\"1\"} 2\n"
        "surge_sample_latency_seconds_bucket{stage=\"in\",le=\"+Inf\"} 3\n"
        "surge_sample_latency_seconds_sum{stage=\"in\"} 8.625\n"
        "surge_sample_latency_seconds_count{stage=\"in\"} 3\n"
        "# HELP surge_sample_reuse Times used\n"
        "# TYPE surge_sample_reuse histogram\n"
        "surge_sample_reuse_bucket{le=\"1\"} 5\n"
        "surge_sample_reuse_bucket{le=\"2\"} 8\n"
        "surge_sample_reuse_bucket{le=\"+Inf\"} 10\n"
        "surge_sample_reuse_sum 19\n"
        "surge_sample_reuse_count 10\n";
    assert_string_equal(s, want);
    free(s);

    /* Values move; a family's value sums its label sets. */
    recv = 50;
    surge_gauge_set(loss, 0.25);
    assert_true(surge_metrics_value(m, "surge_samples_received_total") == 50.0);
    assert_true(surge_metrics_value(m, "surge_samples_dropped_total") == 4.0);
    assert_true(surge_metrics_value(m, "surge_trainer_loss") == 0.25);
    assert_true(surge_metrics_value(m, "surge_sample_reuse") == 10.0);
    s = prom(m);
    assert_non_null(strstr(s, "\nsurge_samples_received_total 50\n"));
    assert_non_null(strstr(s, "\nsurge_trainer_loss 0.25\n"));
    free(s);
}

static void
test_series_rates_and_ring(void **state)
{
    surge_metrics *m = *state; /* ring of 4 points */
    uint64_t samples = 0, bytes = 0;
    double res_bytes = 0, cap = 1000;
    surge_gauge *loss = NULL;
    assert_int_equal(surge_metrics_counter_ref(m,
                                               "surge_samples_received_total",
                                               NULL, "s", &samples),
                     0);
    assert_int_equal(surge_metrics_counter_ref(m, "surge_bytes_received_total",
                                               NULL, "b", &bytes),
                     0);
    assert_int_equal(surge_metrics_gauge_fn(m, "surge_reservoir_bytes", NULL,
                                            "r", fn_value, &res_bytes),
                     0);
    assert_int_equal(surge_metrics_gauge_fn(m, "surge_reservoir_capacity_bytes",
                                            NULL, "c", fn_value, &cap),
                     0);
    assert_int_equal(
        surge_metrics_gauge(m, "surge_trainer_loss", NULL, "l", &loss), 0);

    assert_int_equal(surge_metrics_series_count(m), 0);
    assert_true(isnan(surge_metrics_series_last(m, 0)));
    surge_metrics_sample(m, 100.0, 1000.0);
    assert_int_equal(surge_metrics_series_count(m), 1);
    assert_true(isnan(surge_metrics_series_last(m, 0))); /* no rate yet */
    assert_true(surge_metrics_series_last(m, 4) == 0.0);

    samples = 500;
    bytes = 4000000;
    res_bytes = 250;
    surge_gauge_set(loss, 0.5);
    surge_metrics_sample(m, 102.0, 1002.0);
    assert_true(surge_metrics_series_last(m, 0) == 250.0); /* samples/s */
    assert_true(surge_metrics_series_last(m, 1) == 2.0);   /* MB/s */
    assert_true(surge_metrics_series_last(m, 4) == 0.25);  /* occupancy */
    assert_true(surge_metrics_series_last(m, 8) == 0.5);   /* loss */
    assert_true(isnan(surge_metrics_series_last(m, 2)));   /* no trainer */
    assert_true(isnan(surge_metrics_series_last(m, 9)));

    /* The ring keeps the last 4 points. */
    for (int i = 0; i < 5; i++) {
        samples += 100;
        surge_metrics_sample(m, 103.0 + i, 1003.0 + i);
    }
    assert_int_equal(surge_metrics_series_count(m), 4);
    assert_true(surge_metrics_series_last(m, 0) == 100.0);

    char *s = NULL;
    size_t len;
    assert_int_equal(surge_metrics_render_series(m, 0, &s, &len), 0);
    json_error_t jerr;
    json_t *root = json_loads(s, 0, &jerr);
    assert_non_null(root);
    assert_int_equal(json_integer_value(json_object_get(root, "points")), 4);
    json_t *t = json_object_get(root, "t");
    assert_int_equal(json_array_size(t), 4);
    assert_true(json_number_value(json_array_get(t, 0)) == 1004.0);
    assert_true(json_number_value(json_array_get(t, 3)) == 1007.0);
    json_t *series = json_object_get(root, "series");
    for (size_t i = 0; i < SURGE_METRICS_SERIES; i++) {
        json_t *col = json_object_get(series, surge_metrics_series_names[i]);
        assert_non_null(col);
        assert_int_equal(json_array_size(col), 4);
    }
    assert_true(json_is_null(
        json_array_get(json_object_get(series, "batches_per_s"), 0)));
    json_decref(root);
    free(s);

    /* Unix times keep their milliseconds. */
    surge_metrics_sample(m, 108.0, 1795925526.125);
    assert_int_equal(surge_metrics_render_series(m, 0, &s, &len), 0);
    root = json_loads(s, 0, &jerr);
    assert_non_null(root);
    t = json_object_get(root, "t");
    assert_true(json_number_value(json_array_get(t, 3)) == 1795925526.125);
    json_decref(root);
    free(s);
    surge_metrics_sample(m, 109.0, 1795925527.0);
    surge_metrics_sample(m, 110.0, 1795925528.0);

    /* ?last=1.5 keeps points within 1.5 s of the newest. */
    assert_int_equal(surge_metrics_render_series(m, 1.5, &s, &len), 0);
    root = json_loads(s, 0, &jerr);
    assert_non_null(root);
    assert_int_equal(json_integer_value(json_object_get(root, "points")), 2);
    json_decref(root);
    free(s);
}

static int
runs_fill(void *arg, struct surge_run_info *runs, size_t cap)
{
    (void)arg;
    assert_true(cap >= 2);
    runs[0].sim = 3;
    snprintf(runs[0].state, sizeof runs[0].state, "running");
    runs[0].ranks = 2;
    runs[0].steps = 40;
    runs[0].steps_expected = 100;
    runs[0].last_seen_s = 0.5;
    runs[0].elapsed_s = 8.0; /* 40 steps in 8 s: 60 left take 12 s */
    runs[1].sim = 4;
    snprintf(runs[1].state, sizeof runs[1].state, "failed");
    runs[1].ranks = 2;
    runs[1].ranks_done = 1;
    runs[1].steps = 7;
    runs[1].dropped = 1;
    runs[1].last_seen_s = -1;
    runs[1].elapsed_s = 3.0;
    return 2;
}

static void
test_status_json(void **state)
{
    surge_metrics *m = *state;
    uint64_t samples = 12;
    surge_gauge *step = NULL;
    assert_int_equal(surge_metrics_counter_ref(m,
                                               "surge_samples_received_total",
                                               NULL, "s", &samples),
                     0);
    assert_int_equal(
        surge_metrics_gauge(m, "surge_trainer_step", NULL, "step", &step), 0);
    assert_int_equal(
        surge_metrics_counter_ref(m, "surge_x_total", "k=\"v\"", "x", &samples),
        0);
    surge_gauge_set(step, 17);
    surge_metrics_set_runs_cb(m, runs_fill, NULL);
    assert_int_equal(surge_metrics_set_info(m, "study", "heat2d"), 0);
    assert_int_equal(surge_metrics_set_info(m, "study", "heat2d-demo"), 0);
    assert_int_equal(surge_metrics_set_info(m, "", "x"), -EINVAL);
    surge_metrics_sample(m, 1.0, 1.0);

    char *s = NULL;
    size_t len;
    assert_int_equal(surge_metrics_render_status(m, 1234.5, &s, &len), 0);
    json_error_t jerr;
    json_t *root = json_loads(s, 0, &jerr);
    assert_non_null(root);
    assert_true(json_real_value(json_object_get(root, "time")) == 1234.5);
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(root, "info"), "study")),
                        "heat2d-demo");
    json_t *ingest = json_object_get(root, "ingest");
    assert_true(json_number_value(json_object_get(ingest, "samples")) == 12);
    assert_true(json_is_null(json_object_get(ingest, "bytes")));
    json_t *tr = json_object_get(root, "trainer");
    assert_true(json_number_value(json_object_get(tr, "step")) == 17);
    assert_true(json_is_null(json_object_get(tr, "loss")));
    json_t *rates = json_object_get(root, "rates");
    assert_int_equal(json_object_size(rates), SURGE_METRICS_SERIES);
    json_t *runs = json_object_get(root, "runs");
    assert_int_equal(json_array_size(runs), 2);
    json_t *r1 = json_array_get(runs, 1);
    assert_string_equal(json_string_value(json_object_get(r1, "state")),
                        "failed");
    assert_true(json_is_null(json_object_get(r1, "steps_expected")));
    assert_int_equal(json_integer_value(json_object_get(json_array_get(runs, 0),
                                                        "steps_expected")),
                     100);
    /* The ETA of a running run at its own pace; none for a failed one. */
    assert_true(fabs(json_number_value(
                         json_object_get(json_array_get(runs, 0), "eta_s")) -
                     12.0) < 1e-9);
    assert_true(json_is_null(json_object_get(r1, "eta_s")));
    json_t *metrics = json_object_get(root, "metrics");
    assert_int_equal(json_integer_value(json_object_get(
                         metrics, "surge_samples_received_total")),
                     12);
    assert_int_equal(
        json_integer_value(json_object_get(metrics, "surge_x_total{k=\"v\"}")),
        12);
    json_decref(root);
    free(s);
}

static void
test_preview(void **state)
{
    surge_metrics *m = *state;
    float truth[6] = {0, 1, 2, 3, 4, 5};
    float pred[6] = {0.5f, 1, 2, 3, 4, 9};
    char *s = NULL;
    size_t len = 0;
    unsigned char *png = NULL;

    assert_int_equal(surge_metrics_render_preview(m, &s, &len), -ENOENT);
    assert_int_equal(surge_metrics_preview_png(m, 0, &png, &len), -ENOENT);
    assert_int_equal(surge_metrics_set_preview(m, truth, pred, 0, 3, 1),
                     -EINVAL);
    assert_int_equal(surge_metrics_set_preview(m, truth, pred, 2, 3, 99), 0);

    assert_int_equal(surge_metrics_render_preview(m, &s, &len), 0);
    json_error_t jerr;
    json_t *root = json_loads(s, 0, &jerr);
    assert_non_null(root);
    assert_int_equal(json_integer_value(json_object_get(root, "step")), 99);
    assert_int_equal(json_integer_value(json_object_get(root, "ny")), 2);
    assert_int_equal(json_integer_value(json_object_get(root, "nx")), 3);
    assert_true(json_real_value(json_object_get(root, "max")) == 5.0);
    json_decref(root);
    free(s);

    static const unsigned char sig[8] = {0x89, 'P',  'N',  'G',
                                         '\r', '\n', 0x1a, '\n'};
    for (int which = 0; which < 2; which++) {
        assert_int_equal(surge_metrics_preview_png(m, which, &png, &len), 0);
        assert_true(len > 33);
        assert_memory_equal(png, sig, 8);
        /* IHDR: width 3, height 2 (big-endian at offsets 16 and 20). */
        assert_int_equal(png[19], 3);
        assert_int_equal(png[23], 2);
        free(png);
    }
    assert_int_equal(surge_metrics_preview_png(m, 2, &png, &len), -EINVAL);

    /* A new preview of another size replaces the cached images. */
    float big[64 * 32];
    for (size_t i = 0; i < 64 * 32; i++) {
        big[i] = (float)i;
    }
    assert_int_equal(surge_metrics_set_preview(m, big, big, 32, 64, 100), 0);
    assert_int_equal(surge_metrics_preview_png(m, 1, &png, &len), 0);
    assert_int_equal(png[19], 64);
    assert_int_equal(png[23], 32);
    free(png);

    /* Two 1-D fields of 1000 values: line plots of the preview's size,
     * not images one pixel high; the metadata says which kind. */
    assert_int_equal(surge_metrics_set_preview_lines(m, big, big, 2, 1000, 101),
                     0);
    assert_int_equal(surge_metrics_preview_png(m, 0, &png, &len), 0);
    assert_int_equal(png[18] * 256 + png[19], SURGE_METRICS_LINES_W);
    assert_int_equal(png[22] * 256 + png[23], SURGE_METRICS_LINES_H);
    free(png);
    assert_int_equal(surge_metrics_render_preview(m, &s, &len), 0);
    assert_true(strstr(s, "\"kind\":\"lines\"") != NULL ||
                strstr(s, "\"kind\": \"lines\"") != NULL);
    free(s);
    assert_int_equal(surge_metrics_set_preview_lines(
                         m, big, big, SURGE_METRICS_MAX_SERIES + 1, 10, 102),
                     -EINVAL);
}

/* Another thread registers metrics and moves handles while this one
 * renders: every render stays well-formed, and all entries end up there. */
static void *
registrar(void *arg)
{
    surge_metrics *m = arg;
    char name[48];
    for (int i = 0; i < 200; i++) {
        surge_gauge *g = NULL;
        snprintf(name, sizeof name, "surge_thread_gauge_%d", i);
        if (surge_metrics_gauge(m, name, NULL, "g", &g) != 0) {
            return (void *)1;
        }
        surge_gauge_set(g, i);
        surge_metrics_set_info(m, "i", name);
    }
    return NULL;
}

static void
test_concurrent_registration(void **state)
{
    surge_metrics *m = *state;
    pthread_t th;
    void *ret = (void *)2;
    assert_int_equal(pthread_create(&th, NULL, registrar, m), 0);
    for (int i = 0; i < 200; i++) {
        char *s = NULL;
        size_t len;
        assert_int_equal(surge_metrics_render_prometheus(m, &s, &len), 0);
        free(s);
        assert_int_equal(surge_metrics_render_status(m, 1.0, &s, &len), 0);
        json_error_t jerr;
        json_t *root = json_loads(s, 0, &jerr);
        assert_non_null(root);
        json_decref(root);
        free(s);
        surge_metrics_sample(m, (double)i, (double)i);
    }
    assert_int_equal(pthread_join(th, &ret), 0);
    assert_null(ret);
    assert_true(surge_metrics_value(m, "surge_thread_gauge_199") == 199.0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_registration_rules, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_capacity_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prometheus_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_series_rates_and_ring, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_status_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_preview, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_registration, setup,
                                        teardown),
    };
    return cmocka_run_group_tests_name("monitor/metrics", tests, NULL, NULL);
}
