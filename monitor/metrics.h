/*
 * monitor/metrics.h - the server's metrics registry: counters, gauges and
 * histograms with fixed buckets, rendered as Prometheus text (/metrics), a
 * JSON status snapshot (/api/v1/status), a time series ring sampled at a
 * fixed interval (/api/v1/series) and a field preview as PNG images
 * (/api/v1/preview).
 *
 * DESIGN. The registry never owns the hot counters of other modules: it
 * holds a pointer to them and reads them when it renders. Two kinds exist:
 *  - plain `uint64_t` written only by the I/O thread (the thread that also
 *    renders), registered with surge_metrics_counter_ref();
 *  - atomics written by any thread (trainer, reservoir), registered with
 *    surge_metrics_counter_ref_atomic(), or owned by the registry and bumped
 *    through a handle (surge_metrics_counter() + surge_counter_add(),
 *    surge_metrics_gauge() + surge_gauge_set(), surge_metrics_histogram() +
 *    surge_histogram_observe()), all lock-free.
 * Values that must be computed (the reservoir's occupancy under its lock) are
 * registered as callbacks run by the rendering thread.
 *
 * Threads: every call is thread-safe. Registration, set_info, the runs
 * callback, sampling and rendering take the registry's lock (rendering holds
 * it for the length of one render, well under a millisecond for a few
 * hundred entries); the handle updates (surge_counter_add, surge_gauge_set,
 * surge_histogram_observe) are lock-free atomics; surge_metrics_set_preview
 * takes only a leaf lock of its own (after the registry lock when a
 * preview is rendered). Lock order: the registry lock is taken
 * before whatever locks the value callbacks take, so a callback must never
 * call into the registry. Plain counters registered with
 * surge_metrics_counter_ref must be written by the rendering thread only.
 *
 * Typical server code:
 *
 *     surge_metrics_counter_ref(m, "surge_samples_received_total", NULL,
 *                               "Complete samples assembled", &st->samples);
 *     surge_metrics_counter_ref(m, "surge_samples_dropped_total",
 *                               "reason=\"bad_token\"",
 *                               "Messages dropped, by reason", &st->bad_tok);
 *     surge_metrics_gauge_fn(m, "surge_reservoir_bytes", NULL,
 *                            "Bytes held by the reservoir", res_bytes, res);
 *
 * Well-known names. The series ring and the status JSON look for these
 * families (a missing family gives null in JSON, never an error):
 *   surge_samples_received_total          counter  complete samples in
 *   surge_bytes_received_total            counter  payload bytes in
 *   surge_samples_dropped_total{reason}   counter  assembled samples lost
 *   surge_steps_dropped_total{reason}     counter  partial steps lost
 *   surge_reservoir_samples               gauge    samples held
 *   surge_reservoir_capacity_samples      gauge    sample slots
 *   surge_reservoir_bytes                 gauge    bytes held
 *   surge_reservoir_capacity_bytes        gauge    configured capacity
 *   surge_reservoir_producer_wait_seconds_total  counter  time puts waited
 *   surge_trainer_wait_seconds_total      counter  time the trainer waited
 *   surge_sample_reuse                    histogram times each sample was
 *                                                   used when it left
 *   surge_trainer_batches_total           counter  batches trained
 *   surge_trainer_samples_total           counter  samples trained on
 *   surge_trainer_step                    gauge    optimizer step
 *   surge_trainer_loss                    gauge    last training loss
 *   surge_trainer_validation_loss         gauge    last validation loss
 *   surge_trainer_data_wait_ratio         gauge    share of the trainer's
 *                                                   wall time waiting for
 *                                                   batches
 * docs/monitoring.md lists them with the series derived from them.
 */
#ifndef SURGE_SERVER_METRICS_H
#define SURGE_SERVER_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct surge_metrics surge_metrics;
typedef struct surge_counter surge_counter;
typedef struct surge_gauge surge_gauge;
typedef struct surge_histogram surge_histogram;

/* Limits: a registry holds at most SURGE_METRICS_MAX entries, a histogram
 * at most SURGE_METRICS_MAX_BUCKETS finite buckets (+Inf is implicit). */
#define SURGE_METRICS_MAX 512
#define SURGE_METRICS_MAX_BUCKETS 32
#define SURGE_METRICS_NAME_MAX 96    /* bytes of a name, NUL excluded */
#define SURGE_METRICS_LABELS_MAX 160 /* bytes of a label set */
#define SURGE_METRICS_HELP_MAX 200   /* bytes of a HELP text */

/* surge_metrics_create - an empty registry with a series ring of
 * `series_points` points (0 gives 600: ten minutes at one per second).
 * Fills *out and returns 0, or returns -ENOMEM / -EINVAL and leaves *out
 * untouched. */
int surge_metrics_create(size_t series_points, surge_metrics **out);

/* surge_metrics_destroy - frees the registry and every handle it gave out
 * (the caller's referenced storage stays the caller's). Sets *m to NULL;
 * NULL or *m == NULL is a no-op. */
void surge_metrics_destroy(surge_metrics **m);

/*
 * Registration. `name` follows Prometheus rules ([a-zA-Z_:][a-zA-Z0-9_:]*;
 * counters end in _total), `labels` is NULL or a label set without braces
 * (`reason="bad_token",field="T"`, values escaped by the caller), `help` is
 * one line of text. Entries of one family (same name) must have the same
 * type and distinct labels; HELP comes from the first. Returns 0, -EINVAL
 * for a bad name, label set, help or type clash (-EEXIST for a duplicate
 * name+labels), -ENOSPC when SURGE_METRICS_MAX entries exist, -ENOMEM.
 * The referenced storage and callback arguments must outlive the registry.
 */

/* A counter in the caller's storage, written only by the rendering thread. */
int surge_metrics_counter_ref(surge_metrics *m, const char *name,
                              const char *labels, const char *help,
                              const uint64_t *value);
/* A counter in the caller's storage, written by any thread with atomics. */
int surge_metrics_counter_ref_atomic(surge_metrics *m, const char *name,
                                     const char *labels, const char *help,
                                     const _Atomic uint64_t *value);
/* A counter owned by the registry; *out is valid until destroy. */
int surge_metrics_counter(surge_metrics *m, const char *name,
                          const char *labels, const char *help,
                          surge_counter **out);
/* A gauge owned by the registry, NaN ("no value yet") until first set. */
int surge_metrics_gauge(surge_metrics *m, const char *name, const char *labels,
                        const char *help, surge_gauge **out);
/* A gauge (or, with is_counter, a counter) computed by fn(arg) on the
 * rendering thread each time the registry is read. fn must not block for
 * long (it runs on the I/O thread); NaN means "no value". */
typedef double (*surge_metrics_value_cb)(void *arg);
int surge_metrics_gauge_fn(surge_metrics *m, const char *name,
                           const char *labels, const char *help,
                           surge_metrics_value_cb fn, void *arg);
int surge_metrics_counter_fn(surge_metrics *m, const char *name,
                             const char *labels, const char *help,
                             surge_metrics_value_cb fn, void *arg);
/* A histogram owned by the registry with `n` finite, strictly increasing
 * upper bounds (1 <= n <= SURGE_METRICS_MAX_BUCKETS); the bounds are
 * copied. */
int surge_metrics_histogram(surge_metrics *m, const char *name,
                            const char *labels, const char *help,
                            const double *bounds, size_t n,
                            surge_histogram **out);
/* A histogram computed on the rendering thread: fill(arg, counts, &sum)
 * writes n+1 NON-cumulative counts (the last for values above bounds[n-1])
 * and the sum of observed values; it returns 0, or <0 to skip this read. */
typedef int (*surge_metrics_hist_cb)(void *arg, uint64_t *counts, double *sum);
int surge_metrics_histogram_fn(surge_metrics *m, const char *name,
                               const char *labels, const char *help,
                               const double *bounds, size_t n,
                               surge_metrics_hist_cb fill, void *arg);

/* Updates through handles: lock-free, any thread. NULL handles are ignored
 * so optional metrics cost one branch. */
void surge_counter_add(surge_counter *c, uint64_t n);
uint64_t surge_counter_get(const surge_counter *c);
void surge_gauge_set(surge_gauge *g, double v);
double surge_gauge_get(const surge_gauge *g);
void surge_histogram_observe(surge_histogram *h, double v);

/* surge_metrics_value - the current value of a family (the sum over its
 * label sets; for a histogram, its count), or NaN when no entry has that
 * name. Rendering thread. */
double surge_metrics_value(surge_metrics *m, const char *name);

/*
 * Per-run progress, for the status JSON and `surge top`. The server
 * installs a callback that fills up to `cap` records and returns how many
 * it filled (or <0 on error); it runs on the rendering thread.
 */
struct surge_run_info {
    int64_t sim;             /* simulation id */
    char state[16];          /* "running", "done", "failed", "retrying" */
    int ranks;               /* client ranks in this run */
    int ranks_joined;        /* ranks that said hello (this attempt) */
    int ranks_done;          /* ranks that said bye */
    uint64_t steps;          /* complete steps (samples) assembled */
    uint64_t steps_expected; /* 0 when unknown */
    uint64_t dropped;        /* partial steps dropped */
    double last_seen_s;      /* seconds since its last message, <0 unknown */
    double elapsed_s;        /* seconds since its first hello, <0 unknown */
};
typedef int (*surge_metrics_runs_cb)(void *arg, struct surge_run_info *runs,
                                     size_t cap);
/* Install (or with NULL remove) the runs callback. At most
 * SURGE_METRICS_MAX_RUNS runs are shown. */
#define SURGE_METRICS_MAX_RUNS 4096
void surge_metrics_set_runs_cb(surge_metrics *m, surge_metrics_runs_cb cb,
                               void *arg);

/* surge_metrics_set_status_cb - install (or with NULL remove) a callback
 * that adds keys of its own to the status JSON's root object (a jansson
 * json_t; the server's "ranks" array). It runs on the rendering thread
 * with the registry locked: it must not call the registry. Returns 0, or
 * <0 to fail the rendering. */
struct json_t;
typedef int (*surge_metrics_status_cb)(void *arg, struct json_t *root);
void surge_metrics_set_status_cb(surge_metrics *m, surge_metrics_status_cb cb,
                                 void *arg);

/* surge_metrics_set_info - a free-form key/value string shown under "info"
 * in the status JSON (study name, output folder, backend...). Both strings
 * are copied (key up to 63 bytes, value up to 255); at most 32 keys; a
 * later call with the same key replaces the value. Rendering thread.
 * Returns 0, -EINVAL, -ENOSPC or -ENOMEM. */
int surge_metrics_set_info(surge_metrics *m, const char *key,
                           const char *value);

/*
 * Field preview: a validation sample's true field and the model's
 * prediction, shown as two PNG images with one color scale (the truth's
 * range). Any thread (the trainer): copies ny*nx floats of each under a
 * short lock; `step` is the optimizer step that made the prediction.
 * Returns 0, -EINVAL (sizes 0 or above 4096 x 4096) or -ENOMEM.
 */
int surge_metrics_set_preview(surge_metrics *m, const float *truth,
                              const float *pred, size_t ny, size_t nx,
                              uint64_t step);
/* surge_metrics_set_preview_lines - the same for 1-D fields: nseries
 * fields of n values each, one after the other, drawn as line plots (one
 * colour per field, SURGE_METRICS_LINES_W x SURGE_METRICS_LINES_H pixels)
 * instead of an image one pixel high. nseries at most
 * SURGE_METRICS_MAX_SERIES; /api/v1/preview then says "kind": "lines"
 * (else "image"). */
#define SURGE_METRICS_MAX_SERIES 16
#define SURGE_METRICS_LINES_W 640
#define SURGE_METRICS_LINES_H 240
int surge_metrics_set_preview_lines(surge_metrics *m, const float *truth,
                                    const float *pred, size_t nseries, size_t n,
                                    uint64_t step);

/*
 * Rendering (the rendering thread). Each returns a malloc'd NUL-terminated
 * string in *out (free() it) and its length in *len, or a negative code
 * (-ENOMEM) leaving *out untouched.
 */
/* Prometheus text exposition format 0.0.4. */
int surge_metrics_render_prometheus(surge_metrics *m, char **out, size_t *len);
/* The status snapshot; `now_s` is the wall clock (Unix seconds). */
int surge_metrics_render_status(surge_metrics *m, double now_s, char **out,
                                size_t *len);
/* The series ring, oldest point first; `last_s` > 0 keeps only the points
 * of the last last_s seconds. */
int surge_metrics_render_series(surge_metrics *m, double last_s, char **out,
                                size_t *len);
/* Preview metadata as JSON, or -ENOENT when no preview exists yet. */
int surge_metrics_render_preview(surge_metrics *m, char **out, size_t *len);
/* The preview as a PNG: which = 0 the truth, 1 the prediction. Returns
 * -ENOENT when no preview exists yet, -EIO when libpng fails. The PNG is
 * encoded once per new preview and copied out. */
int surge_metrics_preview_png(surge_metrics *m, int which, unsigned char **out,
                              size_t *len);

/*
 * The series ring. surge_metrics_sample() appends one point made from the
 * current values: `now_s` is a monotonic time in seconds (rates are deltas
 * of counters over the time since the previous point; the first point has
 * null rates). The HTTP server calls it from a uv_timer. The columns, in
 * order (docs/monitoring.md):
 *   samples_in_per_s, mb_in_per_s, batches_per_s, samples_trained_per_s,
 *   occupancy (reservoir samples / slots, else bytes / capacity bytes),
 *   reuse (mean times used),
 *   producer_wait (seconds waited per second), trainer_wait (same),
 *   loss, validation_loss
 */
#define SURGE_METRICS_SERIES 10
void surge_metrics_sample(surge_metrics *m, double now_s, double wall_s);
/* The column names above, for clients and tests. */
extern const char *const surge_metrics_series_names[SURGE_METRICS_SERIES];
/* The most recent point's column `i` (NaN when unknown); for tests and the
 * status JSON's "rates". */
double surge_metrics_series_last(surge_metrics *m, size_t i);
/* Points held now (<= capacity). */
size_t surge_metrics_series_count(surge_metrics *m);

#endif /* SURGE_SERVER_METRICS_H */
