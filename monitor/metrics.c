/*
 * monitor/metrics.c - the metrics registry and its renderings (see
 * metrics.h).
 *
 * DESIGN. Entries live in one array in registration order; each records the
 * index of the first entry of its family so Prometheus output groups a
 * family's series under one HELP/TYPE pair without sorting. Values are read
 * at render time: plain references directly (the renderer is the thread
 * that writes them), atomics with relaxed loads (a scrape needs no ordering
 * between two counters), callbacks by calling them. Doubles that several
 * threads update (gauges, histogram sums) are stored as their bit pattern
 * in an _Atomic uint64_t.
 *
 * The preview is the one piece of state another thread writes in bulk: it
 * sits behind preview_lock, held only for a memcpy on either side; PNG
 * encoding happens outside the lock on a private copy, and the encoded
 * images are cached until the trainer posts a new preview.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "monitor/metrics.h"
#include "common/image.h"

/* Largest text a render may produce; a registry of SURGE_METRICS_MAX
 * entries stays far below it. */
#define RENDER_CAP (16u << 20)
#define INFO_MAX 32
#define PREVIEW_MAX_SIDE 4096

enum mtype { T_COUNTER, T_GAUGE, T_HISTOGRAM };

enum mkind {
    K_REF,     /* const uint64_t *, rendering thread writes */
    K_AREF,    /* const _Atomic uint64_t *, any thread */
    K_COUNTER, /* surge_counter owned here */
    K_GAUGE,   /* surge_gauge owned here */
    K_FN,      /* value callback */
    K_HIST,    /* surge_histogram owned here */
    K_HIST_FN  /* histogram callback */
};

struct surge_counter {
    _Atomic uint64_t v; /* count */
};

struct surge_gauge {
    _Atomic uint64_t bits; /* the double's bit pattern */
};

struct surge_histogram {
    size_t n;                                               /* finite buckets */
    double bounds[SURGE_METRICS_MAX_BUCKETS];               /* upper bounds */
    _Atomic uint64_t counts[SURGE_METRICS_MAX_BUCKETS + 1]; /* per bucket,
                                                       non-cumulative; last
                                                       is +Inf */
    _Atomic uint64_t sum_bits;                              /* sum, as bits */
};

struct entry {
    char name[SURGE_METRICS_NAME_MAX + 1];     /* family name */
    char labels[SURGE_METRICS_LABELS_MAX + 1]; /* "" or a=\"b\",... */
    char help[SURGE_METRICS_HELP_MAX + 1];     /* one line */
    enum mtype type;                           /* Prometheus TYPE */
    enum mkind kind;                           /* where the value lives */
    size_t family;                             /* first entry of family */
    const uint64_t *ref;                       /* K_REF */
    const _Atomic uint64_t *aref;              /* K_AREF */
    surge_counter *counter;                    /* K_COUNTER (owned) */
    surge_gauge *gauge;                        /* K_GAUGE (owned) */
    surge_metrics_value_cb fn;                 /* K_FN */
    surge_metrics_hist_cb hist_fn;             /* K_HIST_FN */
    void *arg;                                 /* for fn / hist_fn */
    surge_histogram *hist;                     /* K_HIST (owned); for
                                                  K_HIST_FN holds bounds */
};

struct point {
    double wall_s;                  /* Unix time of the point */
    double v[SURGE_METRICS_SERIES]; /* columns, NaN unknown */
};

/* Counters the series turns into rates, remembered from the last point. */
enum rate_src {
    R_SAMPLES,
    R_BYTES,
    R_BATCHES,
    R_TRAINED,
    R_PROD_WAIT,
    R_TRAIN_WAIT,
    R_COUNT
};

static const char *const rate_family[R_COUNT] = {
    "surge_samples_received_total",
    "surge_bytes_received_total",
    "surge_trainer_batches_total",
    "surge_trainer_samples_total",
    "surge_reservoir_producer_wait_seconds_total",
    "surge_trainer_wait_seconds_total",
};

const char *const surge_metrics_series_names[SURGE_METRICS_SERIES] = {
    "samples_in_per_s",      "mb_in_per_s",  "batches_per_s",
    "samples_trained_per_s", "occupancy",    "reuse",
    "producer_wait",         "trainer_wait", "loss",
    "validation_loss",
};

struct info {
    char key[64];    /* info key */
    char value[256]; /* info value */
};

struct surge_metrics {
    struct entry *entries; /* registration order */
    size_t n_entries;      /* used */
    size_t cap_entries;    /* allocated */
    double created_mono;   /* monotonic seconds at create */

    struct point *ring;   /* series ring (ring_cap points) */
    size_t ring_cap;      /* capacity in points */
    size_t ring_head;     /* index of the next write */
    size_t ring_count;    /* points held */
    double prev_mono;     /* time of the previous sample, <0 none */
    double prev[R_COUNT]; /* counter values at the previous sample */

    surge_metrics_runs_cb runs_cb;     /* per-run progress, or NULL */
    surge_metrics_status_cb status_cb; /* extra status keys, or NULL */
    void *status_arg;                  /* its argument */
    void *runs_arg;                    /* its argument */
    struct surge_run_info *runs;       /* scratch for runs_cb */
    struct info infos[INFO_MAX];       /* "info" in the status JSON */
    size_t n_infos;                    /* used */

    pthread_mutex_t lock;          /* guards everything above: entries,
                                      ring, runs, infos (see the top) */
    pthread_mutex_t preview_lock;  /* guards the preview_* fields below */
    float *preview_truth;          /* (ny, nx), under preview_lock */
    float *preview_pred;           /* (ny, nx), under preview_lock */
    size_t preview_ny, preview_nx; /* under preview_lock; 0 none */
    uint64_t preview_step;         /* under preview_lock */
    uint64_t preview_version;      /* bumped per post, under preview_lock */
    int preview_lines;             /* rows are 1-D fields to plot as lines
                                      (set_preview_lines), under
                                      preview_lock */

    unsigned char *png[2];  /* cached PNGs (rendering thread) */
    size_t png_len[2];      /* their sizes */
    uint64_t png_version;   /* preview_version they show; 0 none */
    float png_min, png_max; /* color scale of the cached PNGs */
    size_t png_ny, png_nx;  /* their size */
    uint64_t png_step;      /* their step */
    int png_lines;          /* they are line plots */
};

/* ------------------------------------------------------------ helpers */

static double
mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t
dbits(double v)
{
    uint64_t b;
    memcpy(&b, &v, sizeof b);
    return b;
}

static double
bitsd(uint64_t b)
{
    double v;
    memcpy(&v, &b, sizeof v);
    return v;
}

static int
valid_name(const char *s)
{
    size_t n = 0;
    if (s == NULL || *s == '\0') {
        return 0;
    }
    for (const char *p = s; *p != '\0'; p++, n++) {
        char c = *p;
        int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    c == '_' || c == ':';
        int digit = c >= '0' && c <= '9';
        if (!alpha && !(digit && p != s)) {
            return 0;
        }
    }
    return n <= SURGE_METRICS_NAME_MAX;
}

/* A label set without braces: name="value"(,name="value")*, values with
 * only the escapes \\ \" \n; names not reserved (__ prefix, le). */
static int
valid_labels(const char *s)
{
    const char *p = s;
    if (strlen(s) > SURGE_METRICS_LABELS_MAX) {
        return 0;
    }
    while (*p != '\0') {
        const char *start = p;
        while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
               *p == '_' || (p != start && *p >= '0' && *p <= '9')) {
            p++;
        }
        if (p == start ||
            (p - start >= 2 && start[0] == '_' && start[1] == '_')) {
            return 0;
        }
        if (p - start == 2 && start[0] == 'l' && start[1] == 'e') {
            return 0;
        }
        if (p[0] != '=' || p[1] != '"') {
            return 0;
        }
        p += 2;
        while (*p != '"') {
            if (*p == '\0' || *p == '\n') {
                return 0;
            }
            if (*p == '\\') {
                if (p[1] != '\\' && p[1] != '"' && p[1] != 'n') {
                    return 0;
                }
                p++;
            }
            p++;
        }
        p++;
        if (*p == ',') {
            p++;
            if (*p == '\0') {
                return 0;
            }
        } else if (*p != '\0') {
            return 0;
        }
    }
    return 1;
}

static int
valid_help(const char *s)
{
    if (s == NULL) {
        return 1;
    }
    if (strlen(s) > SURGE_METRICS_HELP_MAX) {
        return 0;
    }
    return strchr(s, '\n') == NULL;
}

static size_t
find_family(const surge_metrics *m, const char *name)
{
    for (size_t i = 0; i < m->n_entries; i++) {
        if (strcmp(m->entries[i].name, name) == 0) {
            return i;
        }
    }
    return SIZE_MAX;
}

/* Fills a new entry's identity after validating it. */
static int
init_entry(struct entry *e, const char *name, const char *labels,
           const char *help, enum mtype type, enum mkind kind)
{
    if (!valid_name(name) || !valid_help(help)) {
        return -EINVAL;
    }
    if (labels == NULL) {
        labels = "";
    }
    if (!valid_labels(labels)) {
        return -EINVAL;
    }
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    snprintf(e->labels, sizeof e->labels, "%s", labels);
    snprintf(e->help, sizeof e->help, "%s", help != NULL ? help : "");
    e->type = type;
    e->kind = kind;
    return 0;
}

/* Appends a filled entry under the registry lock: checks its family's type,
 * duplicates and the capacity. On failure nothing changed and the caller
 * still owns e's handles. */
static int
commit(surge_metrics *m, struct entry *e)
{
    int rc = 0;
    pthread_mutex_lock(&m->lock);
    size_t fam = find_family(m, e->name);
    if (fam != SIZE_MAX) {
        if (m->entries[fam].type != e->type) {
            rc = -EINVAL;
            goto out;
        }
        for (size_t i = fam; i < m->n_entries; i++) {
            if (m->entries[i].family == fam &&
                strcmp(m->entries[i].labels, e->labels) == 0) {
                rc = -EEXIST;
                goto out;
            }
        }
    }
    if (m->n_entries == SURGE_METRICS_MAX) {
        rc = -ENOSPC;
        goto out;
    }
    if (m->n_entries == m->cap_entries) {
        size_t cap = m->cap_entries == 0 ? 32 : m->cap_entries * 2;
        if (cap > SURGE_METRICS_MAX) {
            cap = SURGE_METRICS_MAX;
        }
        struct entry *grown = realloc(m->entries, cap * sizeof *grown);
        if (grown == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        m->entries = grown;
        m->cap_entries = cap;
    }
    e->family = fam != SIZE_MAX ? fam : m->n_entries;
    m->entries[m->n_entries++] = *e;
out:
    pthread_mutex_unlock(&m->lock);
    return rc;
}

/* ------------------------------------------------------- create/destroy */

int
surge_metrics_create(size_t series_points, surge_metrics **out)
{
    if (out == NULL || series_points > 1000000) {
        return -EINVAL;
    }
    if (series_points == 0) {
        series_points = 600;
    }
    surge_metrics *m = calloc(1, sizeof *m);
    if (m == NULL) {
        goto fail;
    }
    m->ring = calloc(series_points, sizeof *m->ring);
    if (m->ring == NULL) {
        goto fail_m;
    }
    m->runs = calloc(SURGE_METRICS_MAX_RUNS, sizeof *m->runs);
    if (m->runs == NULL) {
        goto fail_ring;
    }
    if (pthread_mutex_init(&m->lock, NULL) != 0) {
        goto fail_runs;
    }
    if (pthread_mutex_init(&m->preview_lock, NULL) != 0) {
        pthread_mutex_destroy(&m->lock);
        goto fail_runs;
    }
    m->ring_cap = series_points;
    m->prev_mono = -1.0;
    m->created_mono = mono_now();
    *out = m;
    return 0;

fail_runs:
    free(m->runs);
fail_ring:
    free(m->ring);
fail_m:
    free(m);
fail:
    return -ENOMEM;
}

void
surge_metrics_destroy(surge_metrics **mp)
{
    if (mp == NULL || *mp == NULL) {
        return;
    }
    surge_metrics *m = *mp;
    for (size_t i = 0; i < m->n_entries; i++) {
        free(m->entries[i].counter);
        free(m->entries[i].gauge);
        free(m->entries[i].hist);
    }
    free(m->entries);
    free(m->ring);
    free(m->runs);
    pthread_mutex_destroy(&m->preview_lock);
    pthread_mutex_destroy(&m->lock);
    free(m->preview_truth);
    free(m->preview_pred);
    free(m->png[0]);
    free(m->png[1]);
    free(m);
    *mp = NULL;
}

/* ---------------------------------------------------------- registration */

int
surge_metrics_counter_ref(surge_metrics *m, const char *name,
                          const char *labels, const char *help,
                          const uint64_t *value)
{
    struct entry e;
    if (m == NULL || value == NULL) {
        return -EINVAL;
    }
    int rc = init_entry(&e, name, labels, help, T_COUNTER, K_REF);
    if (rc < 0) {
        return rc;
    }
    e.ref = value;
    return commit(m, &e);
}

int
surge_metrics_counter_ref_atomic(surge_metrics *m, const char *name,
                                 const char *labels, const char *help,
                                 const _Atomic uint64_t *value)
{
    struct entry e;
    if (m == NULL || value == NULL) {
        return -EINVAL;
    }
    int rc = init_entry(&e, name, labels, help, T_COUNTER, K_AREF);
    if (rc < 0) {
        return rc;
    }
    e.aref = value;
    return commit(m, &e);
}

int
surge_metrics_counter(surge_metrics *m, const char *name, const char *labels,
                      const char *help, surge_counter **out)
{
    struct entry e;
    if (m == NULL || out == NULL) {
        return -EINVAL;
    }
    int rc = init_entry(&e, name, labels, help, T_COUNTER, K_COUNTER);
    if (rc < 0) {
        return rc;
    }
    e.counter = calloc(1, sizeof *e.counter);
    if (e.counter == NULL) {
        return -ENOMEM;
    }
    rc = commit(m, &e);
    if (rc < 0) {
        free(e.counter);
        return rc;
    }
    *out = e.counter;
    return 0;
}

int
surge_metrics_gauge(surge_metrics *m, const char *name, const char *labels,
                    const char *help, surge_gauge **out)
{
    struct entry e;
    if (m == NULL || out == NULL) {
        return -EINVAL;
    }
    int rc = init_entry(&e, name, labels, help, T_GAUGE, K_GAUGE);
    if (rc < 0) {
        return rc;
    }
    e.gauge = calloc(1, sizeof *e.gauge);
    if (e.gauge == NULL) {
        return -ENOMEM;
    }
    atomic_store(&e.gauge->bits, dbits(NAN));
    rc = commit(m, &e);
    if (rc < 0) {
        free(e.gauge);
        return rc;
    }
    *out = e.gauge;
    return 0;
}

static int
add_fn(surge_metrics *m, const char *name, const char *labels, const char *help,
       enum mtype type, surge_metrics_value_cb fn, void *arg)
{
    struct entry e;
    if (m == NULL || fn == NULL) {
        return -EINVAL;
    }
    int rc = init_entry(&e, name, labels, help, type, K_FN);
    if (rc < 0) {
        return rc;
    }
    e.fn = fn;
    e.arg = arg;
    return commit(m, &e);
}

int
surge_metrics_gauge_fn(surge_metrics *m, const char *name, const char *labels,
                       const char *help, surge_metrics_value_cb fn, void *arg)
{
    return add_fn(m, name, labels, help, T_GAUGE, fn, arg);
}

int
surge_metrics_counter_fn(surge_metrics *m, const char *name, const char *labels,
                         const char *help, surge_metrics_value_cb fn, void *arg)
{
    return add_fn(m, name, labels, help, T_COUNTER, fn, arg);
}

static int
new_hist(const double *bounds, size_t n, surge_histogram **out)
{
    if (bounds == NULL || n == 0 || n > SURGE_METRICS_MAX_BUCKETS) {
        return -EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1])) {
            return -EINVAL;
        }
    }
    surge_histogram *h = calloc(1, sizeof *h);
    if (h == NULL) {
        return -ENOMEM;
    }
    h->n = n;
    memcpy(h->bounds, bounds, n * sizeof *bounds);
    atomic_store(&h->sum_bits, dbits(0.0));
    *out = h;
    return 0;
}

static int
add_hist(surge_metrics *m, const char *name, const char *labels,
         const char *help, const double *bounds, size_t n, enum mkind kind,
         surge_metrics_hist_cb fill, void *arg, surge_histogram **out)
{
    struct entry e;
    if (m == NULL) {
        return -EINVAL;
    }
    int rc = init_entry(&e, name, labels, help, T_HISTOGRAM, kind);
    if (rc < 0) {
        return rc;
    }
    rc = new_hist(bounds, n, &e.hist);
    if (rc < 0) {
        return rc;
    }
    e.hist_fn = fill;
    e.arg = arg;
    rc = commit(m, &e);
    if (rc < 0) {
        free(e.hist);
        return rc;
    }
    if (out != NULL) {
        *out = e.hist;
    }
    return 0;
}

int
surge_metrics_histogram(surge_metrics *m, const char *name, const char *labels,
                        const char *help, const double *bounds, size_t n,
                        surge_histogram **out)
{
    if (out == NULL) {
        return -EINVAL;
    }
    return add_hist(m, name, labels, help, bounds, n, K_HIST, NULL, NULL, out);
}

int
surge_metrics_histogram_fn(surge_metrics *m, const char *name,
                           const char *labels, const char *help,
                           const double *bounds, size_t n,
                           surge_metrics_hist_cb fill, void *arg)
{
    if (fill == NULL) {
        return -EINVAL;
    }
    return add_hist(m, name, labels, help, bounds, n, K_HIST_FN, fill, arg,
                    NULL);
}

void
surge_counter_add(surge_counter *c, uint64_t n)
{
    if (c != NULL) {
        atomic_fetch_add_explicit(&c->v, n, memory_order_relaxed);
    }
}

uint64_t
surge_counter_get(const surge_counter *c)
{
    if (c == NULL) {
        return 0;
    }
    return atomic_load_explicit(&((surge_counter *)c)->v, memory_order_relaxed);
}

void
surge_gauge_set(surge_gauge *g, double v)
{
    if (g != NULL) {
        atomic_store_explicit(&g->bits, dbits(v), memory_order_relaxed);
    }
}

double
surge_gauge_get(const surge_gauge *g)
{
    if (g == NULL) {
        return NAN;
    }
    return bitsd(
        atomic_load_explicit(&((surge_gauge *)g)->bits, memory_order_relaxed));
}

void
surge_histogram_observe(surge_histogram *h, double v)
{
    if (h == NULL || isnan(v)) {
        return;
    }
    size_t i = 0;
    while (i < h->n && v > h->bounds[i]) {
        i++;
    }
    atomic_fetch_add_explicit(&h->counts[i], 1, memory_order_relaxed);
    uint64_t old = atomic_load_explicit(&h->sum_bits, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(
        &h->sum_bits, &old, dbits(bitsd(old) + v), memory_order_relaxed,
        memory_order_relaxed)) {
    }
}

/* ---------------------------------------------------------------- reading */

/* A scalar entry's value (counters and gauges); NaN for histograms. */
static double
scalar_value(const struct entry *e, uint64_t *exact, int *is_exact)
{
    *is_exact = 0;
    switch (e->kind) {
    case K_REF:
        *exact = *e->ref;
        *is_exact = 1;
        return (double)*exact;
    case K_AREF:
        *exact = atomic_load_explicit((_Atomic uint64_t *)e->aref,
                                      memory_order_relaxed);
        *is_exact = 1;
        return (double)*exact;
    case K_COUNTER:
        *exact = surge_counter_get(e->counter);
        *is_exact = 1;
        return (double)*exact;
    case K_GAUGE:
        return surge_gauge_get(e->gauge);
    case K_FN:
        return e->fn(e->arg);
    default:
        return NAN;
    }
}

/* A histogram's non-cumulative counts (n+1) and sum; <0 to skip it. */
static int
hist_read(const struct entry *e, uint64_t *counts, double *sum)
{
    const surge_histogram *h = e->hist;
    if (e->kind == K_HIST_FN) {
        memset(counts, 0, (h->n + 1) * sizeof *counts);
        *sum = 0.0;
        return e->hist_fn(e->arg, counts, sum);
    }
    for (size_t i = 0; i <= h->n; i++) {
        counts[i] = atomic_load_explicit(&((surge_histogram *)h)->counts[i],
                                         memory_order_relaxed);
    }
    *sum = bitsd(atomic_load_explicit(&((surge_histogram *)h)->sum_bits,
                                      memory_order_relaxed));
    return 0;
}

static double
hist_total(const struct entry *e, double *sum)
{
    uint64_t counts[SURGE_METRICS_MAX_BUCKETS + 1];
    double s;
    if (hist_read(e, counts, &s) < 0) {
        *sum = NAN;
        return NAN;
    }
    uint64_t total = 0;
    for (size_t i = 0; i <= e->hist->n; i++) {
        total += counts[i];
    }
    *sum = s;
    return (double)total;
}

/* Family value: sum over label sets; histogram count (and sum in *hsum). */
static double
family_value(surge_metrics *m, const char *name, double *hsum)
{
    size_t fam = find_family(m, name);
    double total = 0.0;
    double hs = 0.0;
    int seen = 0;
    if (fam == SIZE_MAX) {
        if (hsum != NULL) {
            *hsum = NAN;
        }
        return NAN;
    }
    for (size_t i = fam; i < m->n_entries; i++) {
        const struct entry *e = &m->entries[i];
        if (e->family != fam) {
            continue;
        }
        double v;
        if (e->type == T_HISTOGRAM) {
            double s;
            v = hist_total(e, &s);
            hs += s;
        } else {
            uint64_t x;
            int exact;
            v = scalar_value(e, &x, &exact);
        }
        if (!isnan(v)) {
            total += v;
            seen = 1;
        }
    }
    if (hsum != NULL) {
        *hsum = seen ? hs : NAN;
    }
    return seen ? total : NAN;
}

double
surge_metrics_value(surge_metrics *m, const char *name)
{
    if (m == NULL || name == NULL) {
        return NAN;
    }
    pthread_mutex_lock(&m->lock);
    double v = family_value(m, name, NULL);
    pthread_mutex_unlock(&m->lock);
    return v;
}

void
surge_metrics_set_status_cb(surge_metrics *m, surge_metrics_status_cb cb,
                            void *arg)
{
    if (m != NULL) {
        pthread_mutex_lock(&m->lock);
        m->status_cb = cb;
        m->status_arg = arg;
        pthread_mutex_unlock(&m->lock);
    }
}

void
surge_metrics_set_runs_cb(surge_metrics *m, surge_metrics_runs_cb cb, void *arg)
{
    if (m != NULL) {
        pthread_mutex_lock(&m->lock);
        m->runs_cb = cb;
        m->runs_arg = arg;
        pthread_mutex_unlock(&m->lock);
    }
}

int
surge_metrics_set_info(surge_metrics *m, const char *key, const char *value)
{
    if (m == NULL || key == NULL || value == NULL || *key == '\0' ||
        strlen(key) >= sizeof m->infos[0].key ||
        strlen(value) >= sizeof m->infos[0].value) {
        return -EINVAL;
    }
    size_t i;
    pthread_mutex_lock(&m->lock);
    for (i = 0; i < m->n_infos; i++) {
        if (strcmp(m->infos[i].key, key) == 0) {
            break;
        }
    }
    if (i == m->n_infos) {
        if (m->n_infos == INFO_MAX) {
            pthread_mutex_unlock(&m->lock);
            return -ENOSPC;
        }
        m->n_infos++;
    }
    snprintf(m->infos[i].key, sizeof m->infos[i].key, "%s", key);
    snprintf(m->infos[i].value, sizeof m->infos[i].value, "%s", value);
    pthread_mutex_unlock(&m->lock);
    return 0;
}

/* Reservoir occupancy in [0, 1]: samples over sample slots when both are
 * known (exact), else bytes over the configured capacity in bytes. */
static double
occupancy(surge_metrics *m)
{
    double n = family_value(m, "surge_reservoir_samples", NULL);
    double cap_n = family_value(m, "surge_reservoir_capacity_samples", NULL);
    if (cap_n > 0.0 && !isnan(n)) {
        return n / cap_n;
    }
    double bytes = family_value(m, "surge_reservoir_bytes", NULL);
    double cap = family_value(m, "surge_reservoir_capacity_bytes", NULL);
    return cap > 0.0 ? bytes / cap : NAN;
}

/* Samples lost for good: assembled ones that entered no store plus partial
 * steps dropped before completion. NaN when neither family exists. */
static double
dropped(surge_metrics *m)
{
    double a = family_value(m, "surge_samples_dropped_total", NULL);
    double b = family_value(m, "surge_steps_dropped_total", NULL);
    if (isnan(a)) {
        return b;
    }
    return isnan(b) ? a : a + b;
}

/* ------------------------------------------------------------ series */

void
surge_metrics_sample(surge_metrics *m, double now_s, double wall_s)
{
    if (m == NULL) {
        return;
    }
    double cur[R_COUNT];
    double rate[R_COUNT];
    pthread_mutex_lock(&m->lock);
    double dt = m->prev_mono >= 0.0 ? now_s - m->prev_mono : -1.0;
    for (int r = 0; r < R_COUNT; r++) {
        cur[r] = family_value(m, rate_family[r], NULL);
        rate[r] = NAN;
        if (dt > 0.0 && !isnan(cur[r]) && !isnan(m->prev[r])) {
            double d = cur[r] - m->prev[r];
            /* A counter that went down was reset (a restarted component):
             * Prometheus treats that as a restart from zero. */
            rate[r] = (d >= 0.0 ? d : cur[r]) / dt;
        }
    }
    struct point *p = &m->ring[m->ring_head];
    p->wall_s = wall_s;
    p->v[0] = rate[R_SAMPLES];
    p->v[1] = rate[R_BYTES] / 1e6;
    p->v[2] = rate[R_BATCHES];
    p->v[3] = rate[R_TRAINED];
    p->v[4] = occupancy(m);
    double rsum;
    double rcount = family_value(m, "surge_sample_reuse", &rsum);
    p->v[5] = rcount > 0.0 ? rsum / rcount : NAN;
    p->v[6] = rate[R_PROD_WAIT];
    p->v[7] = rate[R_TRAIN_WAIT];
    p->v[8] = family_value(m, "surge_trainer_loss", NULL);
    p->v[9] = family_value(m, "surge_trainer_validation_loss", NULL);

    m->ring_head = (m->ring_head + 1) % m->ring_cap;
    if (m->ring_count < m->ring_cap) {
        m->ring_count++;
    }
    if (dt > 0.0 || m->prev_mono < 0.0) {
        m->prev_mono = now_s;
        memcpy(m->prev, cur, sizeof cur);
    }
    pthread_mutex_unlock(&m->lock);
}

static const struct point *
ring_at(const surge_metrics *m, size_t i)
{
    /* i = 0 is the oldest point held. */
    size_t start = (m->ring_head + m->ring_cap - m->ring_count) % m->ring_cap;
    return &m->ring[(start + i) % m->ring_cap];
}

static double
last_locked(const surge_metrics *m, size_t i)
{
    if (i >= SURGE_METRICS_SERIES || m->ring_count == 0) {
        return NAN;
    }
    return ring_at(m, m->ring_count - 1)->v[i];
}

double
surge_metrics_series_last(surge_metrics *m, size_t i)
{
    if (m == NULL) {
        return NAN;
    }
    pthread_mutex_lock(&m->lock);
    double v = last_locked(m, i);
    pthread_mutex_unlock(&m->lock);
    return v;
}

size_t
surge_metrics_series_count(surge_metrics *m)
{
    if (m == NULL) {
        return 0;
    }
    pthread_mutex_lock(&m->lock);
    size_t n = m->ring_count;
    pthread_mutex_unlock(&m->lock);
    return n;
}

/* ------------------------------------------------------- text buffers */

struct buf {
    char *p;    /* text, NUL-terminated while err == 0 */
    size_t len; /* bytes used */
    size_t cap; /* bytes allocated */
    int err;    /* first error, sticky */
};

static void bput(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
bput(struct buf *b, const char *fmt, ...)
{
    if (b->err != 0) {
        return;
    }
    for (;;) {
        va_list ap;
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        int n = vsnprintf(b->p != NULL ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->err = -EINVAL;
            return;
        }
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t want = b->cap == 0 ? 4096 : b->cap * 2;
        while (want - b->len <= (size_t)n) {
            want *= 2;
        }
        if (want > RENDER_CAP) {
            b->err = -ENOMEM;
            return;
        }
        char *q = realloc(b->p, want);
        if (q == NULL) {
            b->err = -ENOMEM;
            return;
        }
        b->p = q;
        b->cap = want;
    }
}

static int
bfinish(struct buf *b, char **out, size_t *len)
{
    if (b->err == 0 && b->p == NULL) {
        bput(b, "%s", "");
    }
    if (b->err != 0) {
        free(b->p);
        return b->err;
    }
    *out = b->p;
    if (len != NULL) {
        *len = b->len;
    }
    return 0;
}

/* Prometheus float: NaN, +Inf, -Inf or a round-trippable number. */
static void
put_float(struct buf *b, double v)
{
    if (isnan(v)) {
        bput(b, "NaN");
    } else if (isinf(v)) {
        bput(b, "%s", v > 0 ? "+Inf" : "-Inf");
    } else {
        /* The shortest of 15 or 17 digits that reads back exactly, so 0.1
         * prints as 0.1. */
        char tmp[32];
        snprintf(tmp, sizeof tmp, "%.15g", v);
        if (strtod(tmp, NULL) != v) {
            snprintf(tmp, sizeof tmp, "%.17g", v);
        }
        bput(b, "%s", tmp);
    }
}

static void
put_help(struct buf *b, const char *name, const char *help)
{
    bput(b, "# HELP %s ", name);
    for (const char *p = help; *p != '\0'; p++) {
        if (*p == '\\') {
            bput(b, "\\\\");
        } else {
            bput(b, "%c", *p);
        }
    }
    bput(b, "\n");
}

static void
put_hist(struct buf *b, const struct entry *e)
{
    uint64_t counts[SURGE_METRICS_MAX_BUCKETS + 1];
    double sum;
    if (hist_read(e, counts, &sum) < 0) {
        return;
    }
    const char *sep = e->labels[0] != '\0' ? "," : "";
    uint64_t cum = 0;
    for (size_t i = 0; i <= e->hist->n; i++) {
        cum += counts[i];
        bput(b, "%s_bucket{%s%sle=\"", e->name, e->labels, sep);
        if (i < e->hist->n) {
            put_float(b, e->hist->bounds[i]);
        } else {
            bput(b, "+Inf");
        }
        bput(b, "\"} %" PRIu64 "\n", cum);
    }
    const char *lo = e->labels[0] != '\0' ? "{" : "";
    const char *lc = e->labels[0] != '\0' ? "}" : "";
    bput(b, "%s_sum%s%s%s ", e->name, lo, e->labels, lc);
    put_float(b, sum);
    bput(b, "\n%s_count%s%s%s %" PRIu64 "\n", e->name, lo, e->labels, lc, cum);
}

static int
render_prometheus_locked(surge_metrics *m, char **out, size_t *len)
{
    static const char *const tname[] = {"counter", "gauge", "histogram"};
    struct buf b = {0};
    if (m == NULL || out == NULL) {
        return -EINVAL;
    }
    for (size_t f = 0; f < m->n_entries; f++) {
        const struct entry *fe = &m->entries[f];
        if (fe->family != f) {
            continue;
        }
        put_help(&b, fe->name, fe->help);
        bput(&b, "# TYPE %s %s\n", fe->name, tname[fe->type]);
        for (size_t i = f; i < m->n_entries; i++) {
            const struct entry *e = &m->entries[i];
            if (e->family != f) {
                continue;
            }
            if (e->type == T_HISTOGRAM) {
                put_hist(&b, e);
                continue;
            }
            uint64_t x;
            int exact;
            double v = scalar_value(e, &x, &exact);
            if (e->labels[0] != '\0') {
                bput(&b, "%s{%s} ", e->name, e->labels);
            } else {
                bput(&b, "%s ", e->name);
            }
            if (exact) {
                bput(&b, "%" PRIu64 "\n", x);
            } else {
                put_float(&b, v);
                bput(&b, "\n");
            }
        }
    }
    return bfinish(&b, out, len);
}

int
surge_metrics_render_prometheus(surge_metrics *m, char **out, size_t *len)
{
    if (m == NULL || out == NULL) {
        return -EINVAL;
    }
    pthread_mutex_lock(&m->lock);
    int rc = render_prometheus_locked(m, out, len);
    pthread_mutex_unlock(&m->lock);
    return rc;
}

/* ------------------------------------------------------------------ JSON */

static json_t *
jnum(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

/* Sets key to a new value, tracking failure (jansson returns -1 / NULL on
 * allocation failure; json_object_set_new frees the value on error). */
static void
jset(json_t *o, const char *key, json_t *v, int *err)
{
    if (v == NULL || json_object_set_new(o, key, v) != 0) {
        *err = 1;
    }
}

static int
jfinish(json_t *root, int err, char **out, size_t *len)
{
    if (root == NULL || err) {
        json_decref(root);
        return -ENOMEM;
    }
    char *s = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(10));
    json_decref(root);
    if (s == NULL) {
        return -ENOMEM;
    }
    *out = s;
    if (len != NULL) {
        *len = strlen(s);
    }
    return 0;
}

static json_t *
runs_json(surge_metrics *m, int *err)
{
    json_t *arr = json_array();
    if (arr == NULL) {
        *err = 1;
        return NULL;
    }
    if (m->runs_cb == NULL) {
        return arr;
    }
    memset(m->runs, 0, SURGE_METRICS_MAX_RUNS * sizeof *m->runs);
    int n = m->runs_cb(m->runs_arg, m->runs, SURGE_METRICS_MAX_RUNS);
    if (n < 0) {
        return arr;
    }
    if (n > SURGE_METRICS_MAX_RUNS) {
        n = SURGE_METRICS_MAX_RUNS;
    }
    for (int i = 0; i < n; i++) {
        const struct surge_run_info *r = &m->runs[i];
        json_t *o = json_object();
        char state[sizeof r->state + 1];
        if (o == NULL || json_array_append_new(arr, o) != 0) {
            *err = 1;
            break;
        }
        memcpy(state, r->state, sizeof r->state);
        state[sizeof r->state] = '\0';
        jset(o, "sim", json_integer(r->sim), err);
        jset(o, "state", json_string(state), err);
        jset(o, "ranks", json_integer(r->ranks), err);
        jset(o, "ranks_joined", json_integer(r->ranks_joined), err);
        jset(o, "ranks_done", json_integer(r->ranks_done), err);
        jset(o, "steps", json_integer((json_int_t)r->steps), err);
        jset(o, "steps_expected",
             r->steps_expected > 0 ? json_integer((json_int_t)r->steps_expected)
                                   : json_null(),
             err);
        /* ETA of a running run from its own pace: the steps left at the
         * rate of the steps it assembled since its first hello. */
        int running =
            strcmp(state, "running") == 0 || strcmp(state, "retrying") == 0;
        double eta = -1.0;
        if (running && r->steps_expected > 0 && r->steps > 0 &&
            r->elapsed_s > 0.0) {
            uint64_t left =
                r->steps_expected > r->steps ? r->steps_expected - r->steps : 0;
            eta = r->elapsed_s * (double)left / (double)r->steps;
        }
        jset(o, "eta_s", eta >= 0.0 ? jnum(eta) : json_null(), err);
        jset(o, "dropped", json_integer((json_int_t)r->dropped), err);
        jset(o, "last_seen_s",
             r->last_seen_s >= 0.0 ? jnum(r->last_seen_s) : json_null(), err);
    }
    return arr;
}

/* Every scalar as "name{labels}": value; histograms as _count and _sum. */
static json_t *
metrics_json(surge_metrics *m, int *err)
{
    json_t *o = json_object();
    char key[SURGE_METRICS_NAME_MAX + SURGE_METRICS_LABELS_MAX + 16];
    if (o == NULL) {
        *err = 1;
        return NULL;
    }
    for (size_t i = 0; i < m->n_entries; i++) {
        const struct entry *e = &m->entries[i];
        const char *lo = e->labels[0] != '\0' ? "{" : "";
        const char *lc = e->labels[0] != '\0' ? "}" : "";
        if (e->type == T_HISTOGRAM) {
            double sum;
            double count = hist_total(e, &sum);
            snprintf(key, sizeof key, "%s_count%s%s%s", e->name, lo, e->labels,
                     lc);
            jset(o, key, jnum(count), err);
            snprintf(key, sizeof key, "%s_sum%s%s%s", e->name, lo, e->labels,
                     lc);
            jset(o, key, jnum(sum), err);
            continue;
        }
        uint64_t x;
        int exact;
        double v = scalar_value(e, &x, &exact);
        snprintf(key, sizeof key, "%s%s%s%s", e->name, lo, e->labels, lc);
        jset(o, key,
             exact ? json_integer((json_int_t)(x & INT64_MAX)) : jnum(v), err);
    }
    return o;
}

static int
render_status_locked(surge_metrics *m, double now_s, char **out, size_t *len)
{
    int err = 0;
    if (m == NULL || out == NULL) {
        return -EINVAL;
    }
    json_t *root = json_object();
    if (root == NULL) {
        return -ENOMEM;
    }
    jset(root, "version", json_string(PACKAGE_VERSION), &err);
    jset(root, "time", json_real(now_s), &err);
    jset(root, "uptime_s", json_real(mono_now() - m->created_mono), &err);

    json_t *info = json_object();
    jset(root, "info", info, &err);
    for (size_t i = 0; info != NULL && i < m->n_infos; i++) {
        jset(info, m->infos[i].key, json_string(m->infos[i].value), &err);
    }

    json_t *rates = json_object();
    jset(root, "rates", rates, &err);
    for (size_t i = 0; rates != NULL && i < SURGE_METRICS_SERIES; i++) {
        jset(rates, surge_metrics_series_names[i], jnum(last_locked(m, i)),
             &err);
    }

    json_t *ingest = json_object();
    jset(root, "ingest", ingest, &err);
    if (ingest != NULL) {
        jset(ingest, "samples",
             jnum(family_value(m, "surge_samples_received_total", NULL)), &err);
        jset(ingest, "bytes",
             jnum(family_value(m, "surge_bytes_received_total", NULL)), &err);
        jset(ingest, "dropped", jnum(dropped(m)), &err);
    }

    json_t *res = json_object();
    jset(root, "reservoir", res, &err);
    if (res != NULL) {
        double bytes = family_value(m, "surge_reservoir_bytes", NULL);
        double cap = family_value(m, "surge_reservoir_capacity_bytes", NULL);
        double rsum;
        double rcount = family_value(m, "surge_sample_reuse", &rsum);
        jset(res, "samples",
             jnum(family_value(m, "surge_reservoir_samples", NULL)), &err);
        jset(res, "bytes", jnum(bytes), &err);
        jset(res, "capacity_bytes", jnum(cap), &err);
        jset(res, "occupancy", jnum(occupancy(m)), &err);
        jset(res, "reuse_mean", jnum(rcount > 0.0 ? rsum / rcount : NAN), &err);
    }

    json_t *tr = json_object();
    jset(root, "trainer", tr, &err);
    if (tr != NULL) {
        jset(tr, "step", jnum(family_value(m, "surge_trainer_step", NULL)),
             &err);
        jset(tr, "batches",
             jnum(family_value(m, "surge_trainer_batches_total", NULL)), &err);
        jset(tr, "samples",
             jnum(family_value(m, "surge_trainer_samples_total", NULL)), &err);
        jset(tr, "loss", jnum(family_value(m, "surge_trainer_loss", NULL)),
             &err);
        jset(tr, "validation_loss",
             jnum(family_value(m, "surge_trainer_validation_loss", NULL)),
             &err);
        jset(tr, "data_wait_share",
             jnum(family_value(m, "surge_trainer_data_wait_ratio", NULL)),
             &err);
    }
    jset(root, "runs", runs_json(m, &err), &err);
    if (m->status_cb != NULL && m->status_cb(m->status_arg, root) < 0) {
        err = 1;
    }
    jset(root, "metrics", metrics_json(m, &err), &err);
    return jfinish(root, err, out, len);
}

int
surge_metrics_render_status(surge_metrics *m, double now_s, char **out,
                            size_t *len)
{
    if (m == NULL || out == NULL) {
        return -EINVAL;
    }
    pthread_mutex_lock(&m->lock);
    int rc = render_status_locked(m, now_s, out, len);
    pthread_mutex_unlock(&m->lock);
    return rc;
}

static int
render_series_locked(surge_metrics *m, double last_s, char **out, size_t *len)
{
    struct buf b = {0};
    if (m == NULL || out == NULL) {
        return -EINVAL;
    }
    size_t first = 0;
    if (last_s > 0.0 && m->ring_count > 0) {
        double newest = ring_at(m, m->ring_count - 1)->wall_s;
        while (first < m->ring_count &&
               ring_at(m, first)->wall_s < newest - last_s) {
            first++;
        }
    }
    /* Printed directly rather than through jansson: the dashboard asks for
     * the whole ring every second, on the I/O thread. Every value is a
     * finite number (10 significant digits, as the other JSON) or null. */
    bput(&b, "{\"points\":%zu,\"capacity\":%zu,\"t\":[", m->ring_count - first,
         m->ring_cap);
    for (size_t i = first; i < m->ring_count; i++) {
        /* Unix seconds to the millisecond. */
        bput(&b, "%s%.13g", i > first ? "," : "", ring_at(m, i)->wall_s);
    }
    bput(&b, "],\"series\":{");
    for (size_t c = 0; c < SURGE_METRICS_SERIES; c++) {
        bput(&b, "%s\"%s\":[", c > 0 ? "," : "", surge_metrics_series_names[c]);
        for (size_t i = first; i < m->ring_count; i++) {
            double v = ring_at(m, i)->v[c];
            if (isfinite(v)) {
                bput(&b, "%s%.10g", i > first ? "," : "", v);
            } else {
                bput(&b, "%snull", i > first ? "," : "");
            }
        }
        bput(&b, "]");
    }
    bput(&b, "}}");
    return bfinish(&b, out, len);
}

int
surge_metrics_render_series(surge_metrics *m, double last_s, char **out,
                            size_t *len)
{
    if (m == NULL || out == NULL) {
        return -EINVAL;
    }
    pthread_mutex_lock(&m->lock);
    int rc = render_series_locked(m, last_s, out, len);
    pthread_mutex_unlock(&m->lock);
    return rc;
}

/* -------------------------------------------------------------- preview */

static int set_preview(surge_metrics *m, const float *truth, const float *pred,
                       size_t ny, size_t nx, int lines, uint64_t step);

int
surge_metrics_set_preview(surge_metrics *m, const float *truth,
                          const float *pred, size_t ny, size_t nx,
                          uint64_t step)
{
    return set_preview(m, truth, pred, ny, nx, 0, step);
}

int
surge_metrics_set_preview_lines(surge_metrics *m, const float *truth,
                                const float *pred, size_t nseries, size_t n,
                                uint64_t step)
{
    if (nseries > SURGE_METRICS_MAX_SERIES) {
        return -EINVAL;
    }
    return set_preview(m, truth, pred, nseries, n, 1, step);
}

static int
set_preview(surge_metrics *m, const float *truth, const float *pred, size_t ny,
            size_t nx, int lines, uint64_t step)
{
    if (m == NULL || truth == NULL || pred == NULL || ny == 0 || nx == 0 ||
        ny > PREVIEW_MAX_SIDE || nx > PREVIEW_MAX_SIDE) {
        return -EINVAL;
    }
    size_t n = ny * nx;
    int rc = 0;
    pthread_mutex_lock(&m->preview_lock);
    if (m->preview_ny * m->preview_nx != n) {
        float *t = realloc(m->preview_truth, n * sizeof *t);
        if (t == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        m->preview_truth = t;
        float *p = realloc(m->preview_pred, n * sizeof *p);
        if (p == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        m->preview_pred = p;
    }
    memcpy(m->preview_truth, truth, n * sizeof *truth);
    memcpy(m->preview_pred, pred, n * sizeof *pred);
    m->preview_ny = ny;
    m->preview_nx = nx;
    m->preview_lines = lines;
    m->preview_step = step;
    m->preview_version++;
out:
    pthread_mutex_unlock(&m->preview_lock);
    return rc;
}

/* Brings the cached PNGs up to the latest preview; -ENOENT when none. */
static int
refresh_png(surge_metrics *m)
{
    float *t = NULL;
    float *p = NULL;
    size_t ny, nx;
    uint64_t version, step;
    int rc = 0, lines;

    pthread_mutex_lock(&m->preview_lock);
    version = m->preview_version;
    ny = m->preview_ny;
    nx = m->preview_nx;
    lines = m->preview_lines;
    step = m->preview_step;
    if (version != 0 && version != m->png_version) {
        t = malloc(ny * nx * sizeof *t);
        p = malloc(ny * nx * sizeof *p);
        if (t != NULL && p != NULL) {
            memcpy(t, m->preview_truth, ny * nx * sizeof *t);
            memcpy(p, m->preview_pred, ny * nx * sizeof *p);
        }
    }
    pthread_mutex_unlock(&m->preview_lock);

    if (version == 0) {
        return -ENOENT;
    }
    if (version == m->png_version) {
        return 0;
    }
    if (t == NULL || p == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    float lo = INFINITY;
    float hi = -INFINITY;
    for (size_t i = 0; i < ny * nx; i++) {
        if (isfinite(t[i])) {
            lo = t[i] < lo ? t[i] : lo;
            hi = t[i] > hi ? t[i] : hi;
        }
    }
    if (!(lo <= hi)) {
        lo = 0.0f;
        hi = 1.0f;
    }
    unsigned char *png[2] = {NULL, NULL};
    size_t plen[2] = {0, 0};
    if (lines) {
        /* One series per 1-D field (row), on one value scale. */
        const float *ts[SURGE_METRICS_MAX_SERIES],
            *ps[SURGE_METRICS_MAX_SERIES];
        for (size_t k = 0; k < ny; k++) {
            ts[k] = t + k * nx;
            ps[k] = p + k * nx;
        }
        rc = surge_image_png_lines(ts, ny, nx, SURGE_METRICS_LINES_W,
                                   SURGE_METRICS_LINES_H, lo, hi, &png[0],
                                   &plen[0]);
        if (rc == 0) {
            rc = surge_image_png_lines(ps, ny, nx, SURGE_METRICS_LINES_W,
                                       SURGE_METRICS_LINES_H, lo, hi, &png[1],
                                       &plen[1]);
        }
    } else {
        rc = surge_image_png_encode(t, ny, nx, 1, lo, hi, &png[0], &plen[0]);
        if (rc == 0) {
            rc =
                surge_image_png_encode(p, ny, nx, 1, lo, hi, &png[1], &plen[1]);
        }
    }
    if (rc < 0) {
        free(png[0]);
        goto out;
    }
    for (int i = 0; i < 2; i++) {
        free(m->png[i]);
        m->png[i] = png[i];
        m->png_len[i] = plen[i];
    }
    m->png_version = version;
    m->png_min = lo;
    m->png_max = hi;
    m->png_ny = ny;
    m->png_nx = nx;
    m->png_lines = lines;
    m->png_step = step;
out:
    free(t);
    free(p);
    return rc;
}

static int
render_preview_locked(surge_metrics *m, char **out, size_t *len)
{
    int err = 0;
    if (m == NULL || out == NULL) {
        return -EINVAL;
    }
    int rc = refresh_png(m);
    if (rc < 0) {
        return rc;
    }
    json_t *root = json_object();
    if (root == NULL) {
        return -ENOMEM;
    }
    jset(root, "step", json_integer((json_int_t)m->png_step), &err);
    jset(root, "version", json_integer((json_int_t)m->png_version), &err);
    jset(root, "ny", json_integer((json_int_t)m->png_ny), &err);
    jset(root, "nx", json_integer((json_int_t)m->png_nx), &err);
    jset(root, "kind", json_string(m->png_lines ? "lines" : "image"), &err);
    jset(root, "min", jnum(m->png_min), &err);
    jset(root, "max", jnum(m->png_max), &err);
    jset(root, "truth", json_string("/api/v1/preview/truth.png"), &err);
    jset(root, "prediction", json_string("/api/v1/preview/prediction.png"),
         &err);
    return jfinish(root, err, out, len);
}

int
surge_metrics_render_preview(surge_metrics *m, char **out, size_t *len)
{
    if (m == NULL || out == NULL) {
        return -EINVAL;
    }
    pthread_mutex_lock(&m->lock);
    int rc = render_preview_locked(m, out, len);
    pthread_mutex_unlock(&m->lock);
    return rc;
}

static int
preview_png_locked(surge_metrics *m, int which, unsigned char **out,
                   size_t *len)
{
    if (m == NULL || out == NULL || len == NULL || which < 0 || which > 1) {
        return -EINVAL;
    }
    int rc = refresh_png(m);
    if (rc < 0) {
        return rc;
    }
    unsigned char *copy = malloc(m->png_len[which]);
    if (copy == NULL) {
        return -ENOMEM;
    }
    memcpy(copy, m->png[which], m->png_len[which]);
    *out = copy;
    *len = m->png_len[which];
    return 0;
}

int
surge_metrics_preview_png(surge_metrics *m, int which, unsigned char **out,
                          size_t *len)
{
    if (m == NULL || out == NULL || len == NULL || which < 0 || which > 1) {
        return -EINVAL;
    }
    pthread_mutex_lock(&m->lock);
    int rc = preview_png_locked(m, which, out, len);
    pthread_mutex_unlock(&m->lock);
    return rc;
}
