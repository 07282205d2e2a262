/*
 * tests/integration/monitor_feed.c - the monitoring layer alone in a
 * process: a libuv loop with the HTTP server and a registry carrying every
 * well-known metric, moved by a timer with a fixed, deterministic pattern
 * (nothing is received or trained: info.source says "monitor_feed"). Used by
 * the monitor_*.sh tests to check the HTTP layer, the Prometheus output and
 * the dashboard independently of the ingest path, and by `surge top` tests.
 *
 * usage: monitor_feed PORTFILE [SECONDS]
 * Writes the bound port to PORTFILE, runs SECONDS (default 30) or until
 * SIGTERM/SIGINT, exits 0.
 */
#include "config.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "monitor/http.h"
#include "monitor/metrics.h"

struct feed {
    uv_loop_t *loop;             /* default loop */
    uv_timer_t tick;             /* moves the values */
    uv_timer_t end;              /* run time */
    uv_signal_t sigterm, sigint; /* stop */
    surge_http *http;            /* server */
    surge_metrics *m;            /* registry */
    uint64_t samples, bytes;     /* I/O-thread counters */
    surge_counter *batches, *trained, *dropped;
    surge_gauge *loss, *vloss, *step, *res_samples, *res_bytes, *res_cap;
    uint64_t pwait_us, twait_us; /* wait time, microseconds */
    surge_histogram *latency;
    uint64_t ticks; /* timer firings */
};

static double
wait_seconds(void *arg)
{
    return (double)*(uint64_t *)arg * 1e-6;
}

static int
reuse_fill(void *arg, uint64_t *counts, double *sum)
{
    struct feed *f = arg;
    counts[0] = f->ticks * 3;
    counts[1] = f->ticks * 2;
    counts[2] = f->ticks;
    *sum = (double)(counts[0] + 2 * counts[1] + 4 * counts[2]);
    return 0;
}

static int
runs_fill(void *arg, struct surge_run_info *runs, size_t cap)
{
    struct feed *f = arg;
    size_t n = cap < 4 ? cap : 4;
    for (size_t i = 0; i < n; i++) {
        uint64_t steps = f->ticks * 10 / (i + 1);
        runs[i].sim = (int64_t)i;
        runs[i].ranks = 2;
        runs[i].steps_expected = 500;
        runs[i].steps = steps < 500 ? steps : 500;
        runs[i].ranks_joined = 2;
        runs[i].ranks_done = steps < 500 ? 0 : 2;
        snprintf(runs[i].state, sizeof runs[i].state, "%s",
                 steps < 500 ? "running" : "done");
        runs[i].last_seen_s = 0.1 * (double)i;
        runs[i].elapsed_s = 0.1 * (double)f->ticks; /* for the ETA */
    }
    return (int)n;
}

static void
on_tick(uv_timer_t *t)
{
    struct feed *f = t->data;
    f->ticks++;
    double k = (double)f->ticks;
    f->samples += 400 + (f->ticks % 7) * 10;
    f->bytes += (400 + (f->ticks % 7) * 10) * 16384;
    surge_counter_add(f->batches, 3);
    surge_counter_add(f->trained, 3 * 256);
    f->pwait_us += 20000 + (f->ticks % 5) * 1000;
    f->twait_us += 50000;
    surge_gauge_set(f->loss, 1.0 / (1.0 + 0.1 * k));
    surge_gauge_set(f->vloss, 1.2 / (1.0 + 0.1 * k));
    surge_gauge_set(f->step, 3 * k);
    surge_gauge_set(f->res_samples, fmin(50.0 * k, 4000.0));
    surge_gauge_set(f->res_bytes, fmin(50.0 * k, 4000.0) * 16384.0);
    surge_histogram_observe(f->latency, 0.001 * (double)(f->ticks % 9));
    if (f->ticks % 4 == 1) {
        float truth[32 * 32], pred[32 * 32];
        for (int y = 0; y < 32; y++) {
            for (int x = 0; x < 32; x++) {
                float v = (float)(sin(x * 0.2) * cos(y * 0.15));
                truth[y * 32 + x] = v;
                pred[y * 32 + x] =
                    v + (float)(0.3 / (1.0 + 0.1 * k) * sin(x * 0.9 + y * 0.7));
            }
        }
        surge_metrics_set_preview(f->m, truth, pred, 32, 32, f->ticks * 3);
    }
}

static void
stop(struct feed *f)
{
    uv_timer_stop(&f->tick);
    uv_timer_stop(&f->end);
    uv_close((uv_handle_t *)&f->tick, NULL);
    uv_close((uv_handle_t *)&f->end, NULL);
    uv_close((uv_handle_t *)&f->sigterm, NULL);
    uv_close((uv_handle_t *)&f->sigint, NULL);
    surge_http_destroy(&f->http);
}

static void
on_end(uv_timer_t *t)
{
    stop(t->data);
}

static void
on_signal(uv_signal_t *s, int signum)
{
    (void)signum;
    stop(s->data);
}

#define CHECK(x)                                                               \
    do {                                                                       \
        if ((x) != 0) {                                                        \
            fprintf(stderr, "monitor_feed: %s failed\n", #x);                  \
            return 1;                                                          \
        }                                                                      \
    } while (0)

int
main(int argc, char **argv)
{
    static struct feed f;
    static const double lat_b[] = {0.001, 0.0025, 0.005, 0.01};
    static const double reuse_b[] = {1, 2};
    double seconds = 30;
    if (argc < 2) {
        fprintf(stderr, "usage: monitor_feed PORTFILE [SECONDS]\n");
        return 2;
    }
    if (argc > 2) {
        char *end;
        seconds = strtod(argv[2], &end);
        if (*end != '\0' || !(seconds > 0)) {
            fprintf(stderr, "monitor_feed: bad SECONDS '%s'\n", argv[2]);
            return 2;
        }
    }
    f.loop = uv_default_loop();
    CHECK(surge_metrics_create(0, &f.m));
    CHECK(surge_metrics_set_info(f.m, "source", "monitor_feed"));
    CHECK(surge_metrics_counter_ref(f.m, "surge_samples_received_total", NULL,
                                    "Complete samples assembled", &f.samples));
    CHECK(surge_metrics_counter_ref(f.m, "surge_bytes_received_total", NULL,
                                    "Payload bytes received", &f.bytes));
    CHECK(surge_metrics_counter(f.m, "surge_samples_dropped_total",
                                "reason=\"duplicate\"",
                                "Samples dropped, by reason", &f.dropped));
    CHECK(surge_metrics_gauge(f.m, "surge_reservoir_samples", NULL,
                              "Samples held", &f.res_samples));
    CHECK(surge_metrics_gauge(f.m, "surge_reservoir_bytes", NULL, "Bytes held",
                              &f.res_bytes));
    CHECK(surge_metrics_gauge(f.m, "surge_reservoir_capacity_bytes", NULL,
                              "Capacity", &f.res_cap));
    CHECK(surge_metrics_counter_fn(
        f.m, "surge_reservoir_producer_wait_seconds_total", NULL,
        "Time producers waited", wait_seconds, &f.pwait_us));
    CHECK(surge_metrics_counter_fn(f.m, "surge_trainer_wait_seconds_total",
                                   NULL, "Time the trainer waited",
                                   wait_seconds, &f.twait_us));
    CHECK(surge_metrics_histogram_fn(f.m, "surge_sample_reuse", NULL,
                                     "Times each sample was used", reuse_b, 2,
                                     reuse_fill, &f));
    CHECK(surge_metrics_histogram(f.m, "surge_sample_latency_seconds", NULL,
                                  "Receipt to first use", lat_b, 4,
                                  &f.latency));
    CHECK(surge_metrics_counter(f.m, "surge_trainer_batches_total", NULL,
                                "Batches trained", &f.batches));
    CHECK(surge_metrics_counter(f.m, "surge_trainer_samples_total", NULL,
                                "Samples trained on", &f.trained));
    CHECK(surge_metrics_gauge(f.m, "surge_trainer_step", NULL, "Optimizer step",
                              &f.step));
    CHECK(surge_metrics_gauge(f.m, "surge_trainer_loss", NULL, "Training loss",
                              &f.loss));
    CHECK(surge_metrics_gauge(f.m, "surge_trainer_validation_loss", NULL,
                              "Validation loss", &f.vloss));
    surge_gauge_set(f.res_cap, 4000.0 * 16384.0);
    surge_metrics_set_runs_cb(f.m, runs_fill, &f);

    struct surge_http_config cfg;
    surge_http_config_init(&cfg);
    cfg.sample_interval_ms = 250;
    CHECK(surge_http_create(f.loop, &cfg, f.m, &f.http));
    FILE *pf = fopen(argv[1], "w");
    if (pf == NULL) {
        fprintf(stderr, "monitor_feed: cannot write %s\n", argv[1]);
        return 1;
    }
    fprintf(pf, "%d\n", surge_http_port(f.http));
    fclose(pf);

    uv_timer_init(f.loop, &f.tick);
    uv_timer_init(f.loop, &f.end);
    uv_signal_init(f.loop, &f.sigterm);
    uv_signal_init(f.loop, &f.sigint);
    f.tick.data = f.end.data = f.sigterm.data = f.sigint.data = &f;
    uv_timer_start(&f.tick, on_tick, 250, 250);
    uv_timer_start(&f.end, on_end, (uint64_t)(seconds * 1000), 0);
    uv_signal_start(&f.sigterm, on_signal, SIGTERM);
    uv_signal_start(&f.sigint, on_signal, SIGINT);
    uv_run(f.loop, UV_RUN_DEFAULT);
    uv_loop_close(f.loop);
    surge_metrics_destroy(&f.m);
    return 0;
}
