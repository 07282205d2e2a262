/*
 * monitor/http.h - the monitoring HTTP server (on the server's libuv loop)
 * and a minimal blocking HTTP client for `surge top` and the tests.
 *
 * The server is read-only: GET and HEAD of
 *   /                      the dashboard (one self-contained HTML page)
 *   /metrics               Prometheus text format
 *   /api/v1/status         JSON snapshot (see metrics.h)
 *   /api/v1/series         JSON time series; ?last=SECONDS keeps the tail
 *   /api/v1/preview        JSON about the field preview, 404 until one exists
 *   /api/v1/preview/truth.png, /api/v1/preview/prediction.png
 * Requests are parsed by libhttp-parser and bounded: header bytes, request
 * bytes, connections, a deadline per request and an idle timeout per
 * keep-alive connection. A malformed request gets 400, an unknown path 404,
 * another method 405, an oversized body 413, oversized headers 431, a URL
 * that is too long 414, a request that does not arrive in time 408; the
 * connection is then closed and the server keeps serving the others.
 * At max_connections a new connection evicts the open one idle or stalled
 * the longest (the oldest accept, last answer or request start, so a
 * trickling slowloris gains nothing), else one whose client has left an
 * answer unread for over a second; only when every open connection is
 * being answered right now does the new one get 503 and close.
 *
 * The server binds 127.0.0.1 by default. A bind to any other address needs
 * the study token: every request must carry `Authorization: Bearer TOKEN`
 * or `?token=TOKEN`, or gets 401.
 *
 * Threads: everything runs on the thread that runs the loop (the server's
 * I/O thread); create, destroy and stats are called on that thread (or
 * before it runs the loop). Handlers read the metrics registry, which never
 * blocks (metrics.h).
 */
#ifndef SURGE_SERVER_HTTP_H
#define SURGE_SERVER_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "monitor/metrics.h"

typedef struct surge_http surge_http;

struct surge_http_config {
    const char *host;               /* bind address (numeric or "localhost");
                                       NULL: 127.0.0.1 */
    int port;                       /* 0: the kernel picks a free port */
    const char *token;              /* study token; required (non-empty) when
                                       host is not a loopback address */
    size_t max_header_bytes;        /* request line + headers, 0: 8 KiB */
    size_t max_request_bytes;       /* headers + body, 0: 16 KiB */
    size_t max_url_bytes;           /* request target, 0: 2 KiB */
    unsigned max_connections;       /* open at once, 0: 64 */
    unsigned idle_timeout_ms;       /* keep-alive idle close, 0: 15 s */
    unsigned request_timeout_ms;    /* a started request must complete in,
                                       0: 10 s */
    unsigned sample_interval_ms;    /* series sampling period, 0: 1 s */
    size_t max_pending_write_bytes; /* per connection; reading pauses
                                       above it, 0: 8 MiB */
};

/* surge_http_config_init - fills cfg with the defaults above (all zeros
 * but host "127.0.0.1"). */
void surge_http_config_init(struct surge_http_config *cfg);

/* surge_http_create - binds and listens on cfg->host:cfg->port on `loop`,
 * and starts a uv_timer that samples the metrics series every
 * sample_interval_ms. `metrics` is borrowed and must outlive the server.
 * The token is copied. Fills *out and returns 0; on error returns
 * SURGE_ECONFIG (a non-loopback host without a token, an address that is
 * not numeric), a negated errno (-EADDRINUSE, -EACCES, ...: libuv's codes)
 * or -ENOMEM, and leaves *out untouched. After a failed bind the listener
 * is still closing: run the loop once more to release it. */
int surge_http_create(uv_loop_t *loop, const struct surge_http_config *cfg,
                      surge_metrics *metrics, surge_http **out);

/* surge_http_port - the port it listens on (useful with port 0). */
int surge_http_port(const surge_http *h);

struct surge_http_stats {
    uint64_t connections; /* accepted and served */
    uint64_t rejected;    /* refused with 503 (max_connections) */
    uint64_t evicted;     /* idle or stalled connections closed to make
                             room for a new one */
    uint64_t open;        /* open now, not counting ones being closed */
    uint64_t requests;    /* requests answered (all statuses) */
    uint64_t status_2xx;  /* ... with 2xx */
    uint64_t status_4xx;  /* ... with 4xx */
    uint64_t status_5xx;  /* ... with 5xx */
    uint64_t bytes_sent;  /* response bytes written */
};

/* surge_http_get_stats - counters since create. */
void surge_http_get_stats(const surge_http *h, struct surge_http_stats *st);

/* surge_http_destroy - stops listening, closes every connection and the
 * sampling timer. libuv closes handles asynchronously: the memory is
 * released from the close callbacks, so the loop must run once more (for
 * example uv_run(loop, UV_RUN_DEFAULT) until it returns). Sets *h to NULL;
 * NULL or *h == NULL is a no-op. */
void surge_http_destroy(surge_http **h);

/*
 * The client: one blocking GET over a plain socket, for `surge top` and the
 * tests. `url` is http://HOST:PORT/PATH?QUERY (HOST numeric or localhost).
 * Every connect, write and read waits at most timeout_ms in total. A body
 * larger than max_body fails with -EFBIG. Returns 0 and fills *resp (free it
 * with surge_http_response_fini), or SURGE_ECONFIG (bad URL),
 * SURGE_ETIMEDOUT, SURGE_ENOSERVER (connection refused), SURGE_EPROTO (not
 * HTTP), -ENOMEM, -errno. Any thread.
 */
struct surge_http_response {
    int status;             /* HTTP status code */
    char content_type[128]; /* Content-Type, truncated, "" if none */
    char *body;             /* body, NUL-terminated (malloc'd) */
    size_t body_len;        /* body bytes, NUL excluded */
};
int surge_http_get(const char *url, const char *token, int timeout_ms,
                   size_t max_body, struct surge_http_response *resp);
void surge_http_response_fini(struct surge_http_response *resp);

/*
 * surge_http_get_status - GET base_url/api/v1/status (base_url is the
 * "http" of server.json) and pick out the numbers a progress line shows,
 * so that `surge launch`, `surge top` and the dashboard print the same
 * figures. Unknown values are NaN. Same errors as surge_http_get, plus
 * SURGE_EPROTO when the answer is not a status (other status code, not
 * JSON). Any thread.
 */
struct surge_status_summary {
    double samples;               /* ingest.samples: assembled */
    double dropped;               /* ingest.dropped: lost for good */
    double samples_in_per_s;      /* rates.samples_in_per_s */
    double mb_in_per_s;           /* rates.mb_in_per_s */
    double batches_per_s;         /* rates.batches_per_s */
    double samples_trained_per_s; /* rates.samples_trained_per_s */
    double occupancy;             /* reservoir.occupancy, 0..1 */
    double step;                  /* trainer.step */
    double loss;                  /* trainer.loss */
    double validation_loss;       /* trainer.validation_loss */
};
int surge_http_get_status(const char *base_url, const char *token,
                          int timeout_ms, struct surge_status_summary *out);

/* The dashboard page, embedded at build time from monitor/dashboard.html
 * (generated monitor/dashboard_html.c). */
extern const unsigned char surge_dashboard_html[];
extern const size_t surge_dashboard_html_len;

#endif /* SURGE_SERVER_HTTP_H */
