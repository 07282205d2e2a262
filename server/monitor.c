/*
 * server/monitor.c - the server's metrics and HTTP server in one object
 * (see monitor.h).
 *
 * DESIGN. The ingest counters are plain uint64_t written by the I/O thread,
 * which is also the thread that renders, so they are registered by
 * reference. The stores and the consumer belong to other threads: their
 * values come from callbacks that call the locked (stores) or atomic
 * (consumer) stats functions. Each such callback reads one snapshot per
 * render at most once per metric; the cost is a few short leaf locks per
 * scrape, never a wait on another thread's work.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <surge/error.h>

#include "common/log.h"
#include "server/monitor.h"

#define COMPONENT "monitor"

struct surge_monitor {
    surge_metrics *metrics;          /* registry (owned) */
    surge_http *http;                /* HTTP server (owned) */
    char url[96];                    /* http://host:port */
    int have_server;                 /* add_server was called */
    struct surge_monitor_server src; /* copy of the sources */
};

int
surge_monitor_parse_listen(const char *s, char *host, size_t hostcap, int *port)
{
    const char *colon;
    const char *hs;
    size_t hlen;
    if (s == NULL || host == NULL || port == NULL || hostcap == 0) {
        return SURGE_ECONFIG;
    }
    if (*s == '\0' || strcmp(s, "off") == 0 || strcmp(s, "none") == 0) {
        return 1;
    }
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':') {
            return SURGE_ECONFIG;
        }
        hs = s + 1;
        hlen = (size_t)(close - hs);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL) {
            hs = "127.0.0.1";
            hlen = strlen(hs);
            colon = s - 1; /* the whole string is the port */
        } else {
            hs = s;
            hlen = (size_t)(colon - s);
            if (memchr(s, ':', hlen) != NULL) {
                return SURGE_ECONFIG; /* bare IPv6 needs brackets */
            }
        }
    }
    const char *ps = colon + 1;
    char *end;
    errno = 0;
    long p = strtol(ps, &end, 10);
    if (*ps == '\0' || *end != '\0' || errno != 0 || p < 0 || p > 65535 ||
        hlen == 0 || hlen >= hostcap) {
        return SURGE_ECONFIG;
    }
    memcpy(host, hs, hlen);
    host[hlen] = '\0';
    if (strcmp(host, "localhost") == 0 && hostcap > 9) {
        snprintf(host, hostcap, "127.0.0.1");
    }
    *port = (int)p;
    return 0;
}

int
surge_monitor_create(uv_loop_t *loop, const char *listen, const char *token,
                     surge_monitor **out)
{
    char host[64];
    int port = 0;
    if (loop == NULL || out == NULL) {
        return -EINVAL;
    }
    if (listen == NULL) {
        listen = "127.0.0.1:0";
    }
    int rc = surge_monitor_parse_listen(listen, host, sizeof host, &port);
    if (rc == 1) {
        *out = NULL;
        return 0;
    }
    if (rc < 0) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
                  "monitoring address '%s' is not HOST:PORT, PORT or off",
                  listen);
        return rc;
    }
    surge_monitor *mon = calloc(1, sizeof *mon);
    if (mon == NULL) {
        return -ENOMEM;
    }
    rc = surge_metrics_create(0, &mon->metrics);
    if (rc < 0) {
        goto fail;
    }
    struct surge_http_config cfg;
    surge_http_config_init(&cfg);
    cfg.host = host;
    cfg.port = port;
    cfg.token = token;
    rc = surge_http_create(loop, &cfg, mon->metrics, &mon->http);
    if (rc < 0) {
        if (rc != SURGE_ECONFIG) {
            SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
                      "cannot listen for monitoring on %s: %s", listen,
                      surge_strerror(rc));
        }
        goto fail_metrics;
    }
    int v6 = strchr(host, ':') != NULL;
    const char *shown = host;
    if (strcmp(host, "0.0.0.0") == 0) {
        shown = "127.0.0.1";
    } else if (strcmp(host, "::") == 0) {
        shown = "::1";
    }
    snprintf(mon->url, sizeof mon->url, "http://%s%s%s:%d", v6 ? "[" : "",
             shown, v6 ? "]" : "", surge_http_port(mon->http));
    *out = mon;
    return 0;

fail_metrics:
    surge_metrics_destroy(&mon->metrics);
fail:
    free(mon);
    return rc;
}

surge_metrics *
surge_monitor_metrics(surge_monitor *mon)
{
    return mon != NULL ? mon->metrics : NULL;
}

const char *
surge_monitor_url(const surge_monitor *mon)
{
    return mon != NULL ? mon->url : "";
}

void
surge_monitor_destroy(surge_monitor **monp)
{
    if (monp == NULL || *monp == NULL) {
        return;
    }
    surge_monitor *mon = *monp;
    /* The HTTP server's close callbacks never touch the registry, and no
     * request can be served once destroy started: the registry can go
     * now. */
    surge_http_destroy(&mon->http);
    surge_metrics_destroy(&mon->metrics);
    free(mon);
    *monp = NULL;
}

/* ------------------------------------------------------------- sources */

static double
train_samples(void *arg)
{
    surge_store_stats st;
    surge_store_get_stats(arg, &st);
    return (double)st.occupancy;
}

static double
train_bytes(void *arg)
{
    surge_store_stats st;
    surge_store_get_stats(arg, &st);
    return (double)st.bytes;
}

static double
train_capacity(void *arg)
{
    surge_store_stats st;
    surge_store_get_stats(arg, &st);
    return st.capacity > 0 ? (double)st.capacity : NAN;
}

static double
train_puts(void *arg)
{
    surge_store_stats st;
    surge_store_get_stats(arg, &st);
    return (double)st.puts;
}

static double
train_consumer_wait(void *arg)
{
    surge_store_stats st;
    surge_store_get_stats(arg, &st);
    return (double)st.consumer_wait_ns * 1e-9;
}

/* The reservoir's own statistics (policy, reuse, ages); 0, or -1 before
 * the sample shape is known (no reservoir yet). */
static int
res_stats(surge_store *s, surge_reservoir_stats *st)
{
    surge_reservoir *r = surge_store_reservoir(s);
    if (r == NULL) {
        return -1;
    }
    surge_reservoir_get_stats(r, st);
    return 0;
}

/* Times each sample had been used when it left the reservoir (evicted or
 * retired): bucket i of the reservoir's histogram is "used i times", its
 * last bucket "REUSE_LAST or more" (counted as REUSE_LAST in the sum, so
 * the mean is a lower bound when that bucket is not empty). */
#define REUSE_LAST (SURGE_RESERVOIR_USES_BUCKETS - 1)
static int
train_reuse(void *arg, uint64_t *counts, double *sum)
{
    surge_reservoir_stats st;
    if (res_stats(arg, &st) < 0) {
        return -1;
    }
    *sum = 0.0;
    for (int i = 0; i <= REUSE_LAST; i++) {
        counts[i] = st.uses_removed[i];
        *sum += (double)i * (double)st.uses_removed[i];
    }
    return 0;
}

static double
res_age_mean(void *arg)
{
    surge_reservoir_stats st;
    if (res_stats(arg, &st) < 0 || st.occupancy_samples == 0) {
        return NAN;
    }
    return st.age_mean_s;
}

static double
res_age_max(void *arg)
{
    surge_reservoir_stats st;
    if (res_stats(arg, &st) < 0 || st.occupancy_samples == 0) {
        return NAN;
    }
    return st.age_max_s;
}

static double
res_distinct_sims(void *arg)
{
    surge_reservoir_stats st;
    return res_stats(arg, &st) < 0 ? NAN : (double)st.distinct_sims;
}

static double
res_rows_served(void *arg)
{
    surge_reservoir_stats st;
    return res_stats(arg, &st) < 0 ? 0.0 : (double)st.gets;
}

static double
train_evicted(void *arg)
{
    surge_store_stats st;
    surge_store_get_stats(arg, &st);
    return (double)st.evicted;
}

static double
train_retired(void *arg)
{
    surge_store_stats st;
    surge_store_get_stats(arg, &st);
    return (double)st.retired;
}

static double
io_paused_seconds(void *arg)
{
    const surge_counters *c = arg;
    return (double)c->io.read_paused_ns * 1e-9;
}

static double
consumer_batches(void *arg)
{
    struct surge_monitor_server *s = arg;
    surge_consumer_stats st = {0};
    s->consumer->stats(s->consumer_state, &st);
    return (double)st.batches;
}

static double
consumer_samples(void *arg)
{
    struct surge_monitor_server *s = arg;
    surge_consumer_stats st = {0};
    s->consumer->stats(s->consumer_state, &st);
    return (double)st.samples;
}

static double
const_value(void *arg)
{
    return (double)*(const uint64_t *)arg;
}

/* Registration helpers that stop at the first error. */
struct reg {
    surge_metrics *m; /* registry */
    int rc;           /* first error */
};

static void
ref(struct reg *r, const char *name, const char *labels, const char *help,
    const uint64_t *v)
{
    if (r->rc == 0) {
        r->rc = surge_metrics_counter_ref(r->m, name, labels, help, v);
    }
}

static void
gauge_fn(struct reg *r, const char *name, const char *help,
         surge_metrics_value_cb fn, void *arg)
{
    if (r->rc == 0) {
        r->rc = surge_metrics_gauge_fn(r->m, name, NULL, help, fn, arg);
    }
}

static void
counter_fn(struct reg *r, const char *name, const char *help,
           surge_metrics_value_cb fn, void *arg)
{
    if (r->rc == 0) {
        r->rc = surge_metrics_counter_fn(r->m, name, NULL, help, fn, arg);
    }
}

static void
by_reason(struct reg *r, const char *name, const char *help, const uint64_t *v,
          int n, const char *(*reason)(int))
{
    char labels[64];
    for (int i = 0; i < n; i++) {
        snprintf(labels, sizeof labels, "reason=\"%s\"", reason(i));
        ref(r, name, labels, help, &v[i]);
    }
}

int
surge_monitor_add_server(surge_monitor *mon,
                         const struct surge_monitor_server *src)
{
    double reuse_bounds[REUSE_LAST];
    for (int i = 0; i < REUSE_LAST; i++) {
        reuse_bounds[i] = i; /* le="0" never used, le="1" once, ... */
    }
    if (mon == NULL) {
        return 0;
    }
    if (src == NULL || src->counters == NULL) {
        return -EINVAL;
    }
    if (mon->have_server) {
        return -EEXIST;
    }
    mon->have_server = 1;
    mon->src = *src;
    const surge_counters *c = src->counters;
    struct reg r = {mon->metrics, 0};

    /* Messages and bytes on the wire. */
    ref(&r, "surge_messages_received_total", NULL,
        "Multipart messages received from clients", &c->messages.received);
    ref(&r, "surge_bytes_received_total", NULL,
        "Bytes received from clients, all frames", &c->messages.bytes);
    ref(&r, "surge_messages_handled_total", NULL,
        "Messages processed (not dropped)", &c->messages.handled);
    by_reason(&r, "surge_messages_dropped_total",
              "Messages dropped whole, by reason", c->messages.dropped,
              SURGE_MDROP__COUNT, surge_msg_drop_name);
    /* Slices (one field of one rank for one step). */
    ref(&r, "surge_slices_received_total", NULL,
        "Field slices in well-formed data messages", &c->slices.received);
    ref(&r, "surge_slices_accepted_total", NULL,
        "Field slices copied into a partial step", &c->slices.accepted);
    ref(&r, "surge_slices_sent_by_clients_total", NULL,
        "Field slices the clients that said bye report they sent",
        &c->slices.sent_by_clients);
    ref(&r, "surge_payload_bytes_accepted_total", NULL,
        "Payload bytes of accepted slices", &c->slices.bytes);
    by_reason(&r, "surge_slices_dropped_total",
              "Field slices not used, by "
              "reason",
              c->slices.dropped, SURGE_SDROP__COUNT, surge_slice_drop_name);
    /* Steps and samples. */
    ref(&r, "surge_steps_started_total", NULL,
        "Partial steps created (one per simulation step)", &c->steps.started);
    ref(&r, "surge_samples_received_total", NULL,
        "Complete samples assembled from all ranks and fields",
        &c->steps.assembled);
    by_reason(&r, "surge_steps_dropped_total",
              "Partial steps dropped before completion, by reason",
              c->steps.dropped, SURGE_TDROP__COUNT, surge_step_drop_name);
    ref(&r, "surge_samples_stored_total", "store=\"train\"",
        "Assembled samples put into a store", &c->samples.train);
    ref(&r, "surge_samples_stored_total", "store=\"validation\"",
        "Assembled samples put into a store", &c->samples.validation);
    by_reason(&r, "surge_samples_dropped_total",
              "Assembled samples that entered no store, by reason",
              c->samples.dropped, SURGE_PDROP__COUNT, surge_sample_drop_name);
    gauge_fn(&r, "surge_steps_in_progress", "Partial steps alive now",
             const_value, (void *)&c->steps.in_progress);
    gauge_fn(&r, "surge_samples_pending",
             "Assembled samples waiting for "
             "store space",
             const_value, (void *)&c->samples.pending);
    /* Simulations and sessions. */
    ref(&r, "surge_hellos_total", "result=\"welcome\"",
        "Client rank hellos, by answer", &c->sims.hello);
    ref(&r, "surge_hellos_total", "result=\"reject\"",
        "Client rank hellos, by answer", &c->sims.rejected);
    ref(&r, "surge_sims_total", "event=\"joined\"",
        "Simulation events: all ranks joined, finished, failed, timed out, "
        "retried",
        &c->sims.joined);
    ref(&r, "surge_sims_total", "event=\"finished\"", "", &c->sims.finished);
    ref(&r, "surge_sims_total", "event=\"failed\"", "", &c->sims.failed);
    ref(&r, "surge_sims_total", "event=\"timed_out\"", "", &c->sims.timed_out);
    ref(&r, "surge_sims_total", "event=\"not_joined\"", "",
        &c->sims.not_joined);
    ref(&r, "surge_sims_total", "event=\"retried\"", "", &c->sims.retried);
    /* Connections and backpressure. */
    ref(&r, "surge_connections_total", "event=\"accepted\"",
        "ZeroMQ connection events", &c->io.accepted);
    ref(&r, "surge_connections_total", "event=\"disconnected\"", "",
        &c->io.disconnected);
    ref(&r, "surge_connections_total", "event=\"handshake_failed\"", "",
        &c->io.handshake_failed);
    ref(&r, "surge_connections_total", "event=\"curve_refused\"", "",
        &c->io.curve_refused);
    ref(&r, "surge_connections_total", "event=\"refused\"", "", &c->io.refused);
    ref(&r, "surge_connections_total", "event=\"cut\"", "", &c->io.cut);
    ref(&r, "surge_replies_total", "result=\"sent\"",
        "Replies to clients, sent or dropped", &c->io.replies_sent);
    ref(&r, "surge_replies_total", "result=\"dropped\"", "",
        &c->io.replies_dropped);
    ref(&r, "surge_read_pauses_total", NULL,
        "Times reading stopped because the training store was full",
        &c->io.read_pauses);
    counter_fn(&r, "surge_reservoir_producer_wait_seconds_total",
               "Time reading was stopped by a full training store "
               "(producers blocked)",
               io_paused_seconds, (void *)c);

    if (src->train != NULL) {
        gauge_fn(&r, "surge_reservoir_samples",
                 "Samples in the training "
                 "store",
                 train_samples, src->train);
        gauge_fn(&r, "surge_reservoir_bytes",
                 "Bytes of samples in the "
                 "training store",
                 train_bytes, src->train);
        gauge_fn(&r, "surge_reservoir_capacity_samples",
                 "Sample slots of the training store", train_capacity,
                 src->train);
        gauge_fn(&r, "surge_reservoir_capacity_bytes",
                 "Configured training store capacity", const_value,
                 (void *)&mon->src.store_bytes);
        counter_fn(&r, "surge_reservoir_puts_total",
                   "Samples put into the training store", train_puts,
                   src->train);
        counter_fn(&r, "surge_reservoir_evictions_total",
                   "Used samples removed to make room", train_evicted,
                   src->train);
        counter_fn(&r, "surge_reservoir_retired_total",
                   "Samples removed after their last allowed use",
                   train_retired, src->train);
        counter_fn(&r, "surge_reservoir_rows_served_total",
                   "Rows served in batches (a sample served twice counts "
                   "twice)",
                   res_rows_served, src->train);
        gauge_fn(&r, "surge_reservoir_sample_age_seconds",
                 "Mean time since the samples present arrived", res_age_mean,
                 src->train);
        gauge_fn(&r, "surge_reservoir_sample_age_max_seconds",
                 "Time since the oldest sample present arrived", res_age_max,
                 src->train);
        gauge_fn(&r, "surge_reservoir_distinct_sims",
                 "Distinct simulations among the samples present",
                 res_distinct_sims, src->train);
        counter_fn(&r, "surge_trainer_wait_seconds_total",
                   "Time the consumer waited on an empty training store",
                   train_consumer_wait, src->train);
        if (r.rc == 0) {
            r.rc = surge_metrics_histogram_fn(
                mon->metrics, "surge_sample_reuse", NULL,
                "Times each sample had been used when it left the "
                "reservoir",
                reuse_bounds, sizeof reuse_bounds / sizeof reuse_bounds[0],
                train_reuse, src->train);
        }
    }
    if (src->validation != NULL) {
        gauge_fn(&r, "surge_validation_samples",
                 "Samples in the validation store", train_samples,
                 src->validation);
    }
    if (src->consumer != NULL && src->consumer->stats != NULL) {
        counter_fn(&r, "surge_trainer_batches_total",
                   "Batches taken by the consumer (trainer)", consumer_batches,
                   &mon->src);
        counter_fn(&r, "surge_trainer_samples_total",
                   "Samples taken by the consumer (trainer)", consumer_samples,
                   &mon->src);
        if (r.rc == 0) {
            r.rc = surge_metrics_set_info(mon->metrics, "consumer",
                                          src->consumer->name);
        }
    }
    if (r.rc < 0) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
                  "cannot register the server's metrics: %s",
                  surge_strerror(r.rc));
    }
    return r.rc;
}
