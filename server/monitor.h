/*
 * server/monitor.h - the server's live monitoring in one object: a metrics
 * registry filled from the server's own counters, stores and consumer, and
 * the HTTP server (dashboard, /metrics, /api/v1/...) on the I/O loop.
 *
 * What `surge serve` does with it (server/server.c):
 *
 *     surge_monitor *mon = NULL;
 *     rc = surge_monitor_create(&loop, o->http, o->token, &mon);
 *     // mon == NULL when o->http is "off"
 *     struct surge_monitor_server src = {
 *         .counters = surge_ingest_counters(ing), .train = train,
 *         .validation = validation, .store_bytes = o->store_bytes,
 *         .consumer = cops, .consumer_state = cstate};
 *     surge_monitor_add_server(mon, &src);
 *     // server.json gets "http": surge_monitor_url(mon)
 *     ...
 *     surge_monitor_destroy(&mon); // with the other handles, loop still run
 *
 * A trainer adds its own metrics through surge_monitor_metrics() (the
 * well-known names of metrics.h: surge_trainer_loss, ...; gauges and
 * counters made with surge_metrics_gauge/counter are updated lock-free from
 * the trainer thread) and posts the field preview with
 * surge_metrics_set_preview().
 *
 * Threads: create, add_server, url and destroy on the I/O thread (or before
 * the loop runs). Rendering reads the counters on the I/O thread (they are
 * written there), the stores through their locked stats call, the consumer
 * through ops->stats (atomic by contract).
 */
#ifndef SURGE_SERVER_MONITOR_H
#define SURGE_SERVER_MONITOR_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "server/consumer.h"
#include "server/counters.h"
#include "monitor/http.h"
#include "monitor/metrics.h"
#include "server/store.h"

typedef struct surge_monitor surge_monitor;

/* surge_monitor_parse_listen - "HOST:PORT", "PORT", "[V6]:PORT" or "off"
 * (also "" and "none"). Fills host (numeric; "127.0.0.1" for a bare PORT)
 * and *port; returns 0, 1 for "off", or SURGE_ECONFIG. PORT 0 lets the
 * kernel pick a free port. */
int surge_monitor_parse_listen(const char *s, char *host, size_t hostcap,
                               int *port);

/* surge_monitor_create - a registry and an HTTP server listening on
 * `listen` (see parse_listen; NULL means "127.0.0.1:0"). `token` is the
 * study token, required when listen is not a loopback address. With
 * "off", returns 0 and sets *out to NULL (every other call accepts NULL).
 * Errors: SURGE_ECONFIG (bad listen, non-loopback without token; logged),
 * -EADDRINUSE and other bind errors, -ENOMEM; *out untouched. */
int surge_monitor_create(uv_loop_t *loop, const char *listen, const char *token,
                         surge_monitor **out);

/* What the server exposes. Every pointer is borrowed and must outlive the
 * monitor; train, validation and consumer may be NULL. */
struct surge_monitor_server {
    const surge_counters *counters;     /* written by the I/O thread */
    surge_store *train;                 /* the training store (reservoir) */
    surge_store *validation;            /* held-out samples, or NULL */
    uint64_t store_bytes;               /* configured training capacity */
    const surge_consumer_ops *consumer; /* what drains the store */
    void *consumer_state;               /* its state (for ops->stats) */
};

/* surge_monitor_add_server - registers the server's metrics (names in
 * docs/monitoring.md). Call once. 0, -EEXIST when called twice, -ENOMEM. */
int surge_monitor_add_server(surge_monitor *mon,
                             const struct surge_monitor_server *src);

/* surge_monitor_metrics - the registry, to add metrics or the runs
 * callback; NULL when mon is NULL. */
surge_metrics *surge_monitor_metrics(surge_monitor *mon);

/* surge_monitor_url - "http://HOST:PORT" of the dashboard (what
 * server.json's "http" key holds); "" when mon is NULL. */
const char *surge_monitor_url(const surge_monitor *mon);

/* surge_monitor_destroy - closes the HTTP server (its handles close
 * asynchronously: the loop must run again, as for the server's own
 * handles), then frees the registry when they have. Sets *mon to NULL;
 * NULL is a no-op. */
void surge_monitor_destroy(surge_monitor **mon);

#endif /* SURGE_SERVER_MONITOR_H */
