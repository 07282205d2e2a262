/*
 * tests/unit/monitor/test_http.c - the monitoring HTTP server over real
 * sockets: routes, keep-alive and pipelining, every limit (headers, URL,
 * body, connections, request deadline, idle timeout), malformed input, the
 * token on a non-loopback bind, and the blocking client.
 *
 * The server runs on a libuv loop in a second thread (the "I/O thread");
 * the test thread talks to it with plain blocking sockets.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <http_parser.h>
#include <jansson.h>
#include <uv.h>

#include <surge/error.h>

#include "monitor/http.h"
#include "monitor/metrics.h"

struct fixture {
    uv_loop_t loop;                /* run by the I/O thread */
    uv_async_t stop;               /* wakes it to shut down */
    pthread_t thread;              /* the I/O thread */
    surge_metrics *m;              /* registry */
    surge_http *h;                 /* server (I/O thread's) */
    int port;                      /* its port */
    _Atomic uint64_t samples;      /* a counter the test moves */
    uv_async_t stats_req;          /* asks the I/O thread for the stats */
    sem_t stats_done;              /* ... posted once they are in `stats` */
    struct surge_http_stats stats; /* written by the I/O thread */
};

static void
on_stop(uv_async_t *a)
{
    struct fixture *f = a->data;
    surge_http_destroy(&f->h);
    uv_close((uv_handle_t *)a, NULL);
    uv_close((uv_handle_t *)&f->stats_req, NULL);
}

static void
on_stats_req(uv_async_t *a)
{
    struct fixture *f = a->data;
    surge_http_get_stats(f->h, &f->stats);
    sem_post(&f->stats_done);
}

/* The server's counters, read on its own thread (http.h: stats is an I/O
 * thread call; the semaphore orders the copy before our read). */
static struct surge_http_stats
get_stats(struct fixture *f)
{
    assert_int_equal(uv_async_send(&f->stats_req), 0);
    while (sem_wait(&f->stats_done) != 0) {
        assert_int_equal(errno, EINTR);
    }
    return f->stats;
}

static void *
io_thread(void *arg)
{
    struct fixture *f = arg;
    uv_run(&f->loop, UV_RUN_DEFAULT);
    return NULL;
}

static struct fixture *
start(const struct surge_http_config *cfg)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(surge_metrics_create(0, &f->m), 0);
    assert_int_equal(surge_metrics_counter_ref_atomic(
                         f->m, "surge_samples_received_total", NULL,
                         "Complete samples assembled", &f->samples),
                     0);
    assert_int_equal(surge_http_create(&f->loop, cfg, f->m, &f->h), 0);
    f->port = surge_http_port(f->h);
    assert_true(f->port > 0);
    assert_int_equal(uv_async_init(&f->loop, &f->stop, on_stop), 0);
    f->stop.data = f;
    assert_int_equal(uv_async_init(&f->loop, &f->stats_req, on_stats_req), 0);
    f->stats_req.data = f;
    assert_int_equal(sem_init(&f->stats_done, 0, 0), 0);
    assert_int_equal(pthread_create(&f->thread, NULL, io_thread, f), 0);
    return f;
}

static void
stop(struct fixture *f)
{
    uv_async_send(&f->stop);
    assert_int_equal(pthread_join(f->thread, NULL), 0);
    assert_null(f->h);
    assert_int_equal(uv_loop_close(&f->loop), 0); /* nothing left open */
    sem_destroy(&f->stats_done);
    surge_metrics_destroy(&f->m);
    free(f);
}

static struct surge_http_config
small_config(void)
{
    struct surge_http_config cfg;
    surge_http_config_init(&cfg);
    cfg.max_header_bytes = 1024;
    cfg.max_request_bytes = 2048;
    cfg.max_url_bytes = 256;
    cfg.max_connections = 4;
    cfg.idle_timeout_ms = 5000;
    cfg.request_timeout_ms = 5000;
    return cfg;
}

static int
dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static void
send_str(int fd, const char *s)
{
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        assert_true(w > 0);
        s += w;
        n -= (size_t)w;
    }
}

/* Reads responses until `want` are complete (or EOF/timeout); fills
 * statuses and the last body (capped); returns how many were complete and
 * sets *eof when the server closed the connection. */
struct reader {
    int statuses[16];   /* per response */
    int n;              /* complete */
    char body[1 << 16]; /* last body */
    size_t body_len;    /* its bytes */
    int keep_alive;     /* last response said keep-alive */
};

static int
r_begin(http_parser *p)
{
    struct reader *r = p->data;
    r->body_len = 0;
    return 0;
}

static int
r_body(http_parser *p, const char *at, size_t n)
{
    struct reader *r = p->data;
    if (r->body_len + n < sizeof r->body) {
        memcpy(r->body + r->body_len, at, n);
        r->body_len += n;
        r->body[r->body_len] = '\0';
    }
    return 0;
}

static int
r_complete(http_parser *p)
{
    struct reader *r = p->data;
    if (r->n < 16) {
        r->statuses[r->n] = (int)p->status_code;
    }
    r->keep_alive = http_should_keep_alive(p);
    r->n++;
    return 0;
}

/* A HEAD response has a Content-Length but no body: 1 tells the parser. */
static int
r_skip_body(http_parser *p)
{
    (void)p;
    return 1;
}

static int
read_responses(int fd, struct reader *r, int want, int head, int *eof)
{
    http_parser p;
    http_parser_settings st;
    char buf[8192];
    memset(r, 0, sizeof *r);
    http_parser_settings_init(&st);
    st.on_message_begin = r_begin;
    st.on_body = r_body;
    st.on_message_complete = r_complete;
    if (head) {
        st.on_headers_complete = r_skip_body;
    }
    http_parser_init(&p, HTTP_RESPONSE);
    p.data = r;
    *eof = 0;
    while (r->n < want) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0) {
            *eof = 1;
            break;
        }
        http_parser_execute(&p, &st, buf, (size_t)n);
    }
    return r->n;
}

/* True when the peer closed (recv returns 0 or ECONNRESET) in 5 s. */
static int
closed_by_peer(int fd)
{
    char c;
    ssize_t n = recv(fd, &c, 1, 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

/* One request on a fresh connection; returns the status. */
static int
one(struct fixture *f, const char *req, struct reader *r)
{
    int eof;
    int fd = dial(f->port);
    send_str(fd, req);
    int n = read_responses(fd, r, 1, 0, &eof);
    close(fd);
    return n == 1 ? r->statuses[0] : -1;
}

/* The server still answers a normal request. */
static void
assert_serving(struct fixture *f)
{
    struct reader *r = malloc(sizeof *r);
    assert_non_null(r);
    assert_int_equal(one(f, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", r),
                     200);
    assert_non_null(strstr(r->body, "surge_samples_received_total"));
    free(r);
}

static void
test_routes(void **state)
{
    (void)state;
    struct surge_http_config cfg = small_config();
    struct fixture *f = start(&cfg);
    struct reader *r = malloc(sizeof *r);
    assert_non_null(r);

    f->samples = 123;
    assert_int_equal(one(f, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", r),
                     200);
    assert_non_null(strstr(r->body, "surge_samples_received_total 123\n"));
    assert_non_null(strstr(r->body, "# TYPE surge_samples_received_total "
                                    "counter\n"));

    assert_int_equal(one(f, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", r), 200);
    assert_int_equal(r->body_len, surge_dashboard_html_len);
    assert_non_null(strstr(r->body, "<html"));

    assert_int_equal(
        one(f, "GET /api/v1/status HTTP/1.1\r\nHost: x\r\n\r\n", r), 200);
    json_error_t jerr;
    json_t *root = json_loads(r->body, 0, &jerr);
    assert_non_null(root);
    assert_true(json_number_value(json_object_get(
                    json_object_get(root, "ingest"), "samples")) == 123);
    json_decref(root);

    assert_int_equal(
        one(f, "GET /api/v1/series?last=60 HTTP/1.1\r\nHost: x\r\n\r\n", r),
        200);
    root = json_loads(r->body, 0, &jerr);
    assert_non_null(root);
    assert_true(json_integer_value(json_object_get(root, "points")) >= 1);
    json_decref(root);
    assert_int_equal(
        one(f, "GET /api/v1/series?last=abc HTTP/1.1\r\nHost: x\r\n\r\n", r),
        400);

    /* No preview yet: 404 with a reason, then the PNGs once posted. */
    assert_int_equal(
        one(f, "GET /api/v1/preview HTTP/1.1\r\nHost: x\r\n\r\n", r), 404);
    assert_non_null(strstr(r->body, "no preview yet"));
    assert_int_equal(one(f,
                         "GET /api/v1/preview/truth.png HTTP/1.1\r\n"
                         "Host: x\r\n\r\n",
                         r),
                     404);
    float t[4] = {0, 1, 2, 3}, p[4] = {0, 1, 2, 4};
    assert_int_equal(surge_metrics_set_preview(f->m, t, p, 2, 2, 5), 0);
    assert_int_equal(
        one(f, "GET /api/v1/preview HTTP/1.1\r\nHost: x\r\n\r\n", r), 200);
    assert_non_null(strstr(r->body, "\"step\":5"));
    assert_int_equal(one(f,
                         "GET /api/v1/preview/prediction.png HTTP/1.1\r\n"
                         "Host: x\r\n\r\n",
                         r),
                     200);
    assert_memory_equal(r->body, "\x89PNG", 4);

    assert_int_equal(one(f, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", r), 404);
    /* An absolute-form target works too. */
    assert_int_equal(
        one(f, "GET http://127.0.0.1/metrics HTTP/1.1\r\nHost: x\r\n\r\n", r),
        200);

    /* HEAD: headers only. */
    int eof;
    int fd = dial(f->port);
    send_str(fd, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(read_responses(fd, r, 1, 1, &eof), 1);
    assert_int_equal(r->statuses[0], 200);
    assert_int_equal(r->body_len, 0);
    close(fd);

    struct surge_http_stats st = get_stats(f);
    assert_true(st.requests >= 10);
    free(r);
    stop(f);
}

static void
test_keep_alive_and_pipelining(void **state)
{
    (void)state;
    struct surge_http_config cfg = small_config();
    struct fixture *f = start(&cfg);
    struct reader *r = malloc(sizeof *r);
    int eof;
    assert_non_null(r);

    /* Two requests one after the other on one connection. */
    int fd = dial(f->port);
    send_str(fd, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(read_responses(fd, r, 1, 0, &eof), 1);
    assert_int_equal(r->keep_alive, 1);
    send_str(fd, "GET /api/v1/status HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(read_responses(fd, r, 1, 0, &eof), 1);
    assert_int_equal(r->statuses[0], 200);

    /* Three pipelined in one write, answered in order; the last asks to
     * close and the server does. */
    send_str(fd, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
                 "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
                 "GET /api/v1/series HTTP/1.1\r\nHost: x\r\n"
                 "Connection: close\r\n\r\n");
    assert_int_equal(read_responses(fd, r, 3, 0, &eof), 3);
    assert_int_equal(r->statuses[0], 200);
    assert_int_equal(r->statuses[1], 404);
    assert_int_equal(r->statuses[2], 200);
    assert_int_equal(r->keep_alive, 0);
    assert_true(closed_by_peer(fd));
    close(fd);

    /* HTTP/1.0 without keep-alive: one answer, then close. */
    fd = dial(f->port);
    send_str(fd, "GET /metrics HTTP/1.0\r\n\r\n");
    assert_int_equal(read_responses(fd, r, 1, 0, &eof), 1);
    assert_int_equal(r->statuses[0], 200);
    assert_true(closed_by_peer(fd));
    close(fd);

    /* A client that half-closes after its request still gets the answer. */
    fd = dial(f->port);
    send_str(fd, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    shutdown(fd, SHUT_WR);
    assert_int_equal(read_responses(fd, r, 1, 0, &eof), 1);
    assert_int_equal(r->statuses[0], 200);
    close(fd);
    free(r);
    stop(f);
}

static void
test_bad_requests(void **state)
{
    (void)state;
    struct surge_http_config cfg = small_config();
    struct fixture *f = start(&cfg);
    struct reader *r = malloc(sizeof *r);
    char *big = malloc(8192);
    int eof;
    assert_non_null(r);
    assert_non_null(big);

    /* Garbage, a bad version, a bad header line: 400 and close. */
    static const char *const malformed[] = {
        "\x01\x02\x03\x04 garbage\r\n\r\n",
        "GET / HTTP/9x\r\n\r\n",
        "GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++) {
        int fd = dial(f->port);
        send_str(fd, malformed[i]);
        assert_int_equal(read_responses(fd, r, 1, 0, &eof), 1);
        assert_int_equal(r->statuses[0], 400);
        assert_int_equal(r->keep_alive, 0);
        assert_true(closed_by_peer(fd));
        close(fd);
        assert_serving(f);
    }

    /* Methods other than GET/HEAD: 405. */
    assert_int_equal(one(f,
                         "POST /metrics HTTP/1.1\r\nHost: x\r\n"
                         "Content-Length: 2\r\n\r\nhi",
                         r),
                     405);
    assert_int_equal(one(f, "DELETE / HTTP/1.1\r\nHost: x\r\n\r\n", r), 405);
    assert_serving(f);

    /* Headers over max_header_bytes (1 KiB): 431. */
    memset(big, 'a', 2000);
    big[2000] = '\0';
    char *req = malloc(4096);
    assert_non_null(req);
    snprintf(req, 4096, "GET / HTTP/1.1\r\nX-Big: %s\r\n\r\n", big);
    assert_int_equal(one(f, req, r), 431);
    /* Many small headers add up too. */
    size_t off = (size_t)snprintf(req, 4096, "GET / HTTP/1.1\r\n");
    for (int i = 0; i < 200 && off < 4000; i++) {
        off += (size_t)snprintf(req + off, 4096 - off, "A: b\r\n");
    }
    snprintf(req + off, 4096 - off, "\r\n");
    assert_int_equal(one(f, req, r), 431);
    assert_serving(f);

    /* A client that keeps sending a huge header after the server refused
     * it still reads the 431 (lingering close, no reset). */
    {
        size_t huge = 300 * 1024;
        char *h = malloc(huge + 64);
        assert_non_null(h);
        int n = snprintf(h, 64, "GET / HTTP/1.1\r\nX-Huge: ");
        memset(h + n, 'h', huge);
        memcpy(h + n + huge, "\r\n\r\n", 5);
        int fd = dial(f->port);
        send_str(fd, h);
        assert_int_equal(read_responses(fd, r, 1, 0, &eof), 1);
        assert_int_equal(r->statuses[0], 431);
        assert_true(closed_by_peer(fd));
        close(fd);
        free(h);
    }

    /* A target over max_url_bytes (256): 414. */
    memset(big, 'u', 600);
    big[600] = '\0';
    snprintf(req, 4096, "GET /%s HTTP/1.1\r\nHost: x\r\n\r\n", big);
    assert_int_equal(one(f, req, r), 414);

    /* A body over max_request_bytes (2 KiB): 413, by its Content-Length
     * before any body byte, and by counting a chunked body. */
    assert_int_equal(one(f,
                         "GET / HTTP/1.1\r\nHost: x\r\n"
                         "Content-Length: 100000000\r\n\r\n",
                         r),
                     413);
    memset(big, 'b', 3000);
    big[3000] = '\0';
    snprintf(req, 4096,
             "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
             "bb8\r\n%s\r\n0\r\n\r\n",
             big);
    assert_int_equal(one(f, req, r), 413);
    assert_serving(f);

    /* A small body on a GET is read and ignored. */
    assert_int_equal(one(f,
                         "GET /metrics HTTP/1.1\r\nHost: x\r\n"
                         "Content-Length: 3\r\n\r\nabc",
                         r),
                     200);
    free(req);
    free(big);
    free(r);
    stop(f);
}

static void
test_limits_and_timeouts(void **state)
{
    (void)state;
    struct surge_http_config cfg = small_config();
    cfg.max_connections = 2;
    cfg.idle_timeout_ms = 300;
    cfg.request_timeout_ms = 300;
    struct fixture *f = start(&cfg);
    struct reader *r = malloc(sizeof *r);
    int eof;
    assert_non_null(r);

    /* Two connections held open; a third is served and evicts the one
     * idle the longest. */
    int a = dial(f->port);
    int b = dial(f->port);
    send_str(a, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(read_responses(a, r, 1, 0, &eof), 1);
    send_str(b, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(read_responses(b, r, 1, 0, &eof), 1);
    int c = dial(f->port);
    send_str(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(read_responses(c, r, 1, 0, &eof), 1);
    assert_int_equal(r->statuses[0], 200);
    assert_true(closed_by_peer(a));
    close(a);

    /* Idle keep-alive connections are closed after idle_timeout_ms. */
    assert_true(closed_by_peer(b));
    assert_true(closed_by_peer(c));
    close(b);
    close(c);

    /* A request that never completes gets 408 within request_timeout_ms,
     * even when bytes keep trickling in. */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    a = dial(f->port);
    send_str(a, "GET /metrics HTTP/1.1\r\n");
    for (int i = 0; i < 3; i++) {
        usleep(100 * 1000);
        /* On a loaded machine the server may already have answered and
         * closed: a failed send is fine here, the answer is what counts. */
        (void)send(a, "X: y\r\n", 6, MSG_NOSIGNAL);
    }
    assert_int_equal(read_responses(a, r, 1, 0, &eof), 1);
    assert_int_equal(r->statuses[0], 408);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) +
               (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    assert_true(s < 3.0);
    assert_true(closed_by_peer(a));
    close(a);

    /* Slots were freed: a new connection is served. */
    assert_serving(f);
    free(r);
    stop(f);
}

/* Found by running (issue 9, item 5): 60 slowloris connections (a request
 * started and never finished) plus 200 idle ones (connected, nothing sent)
 * filled the 64-connection table, and 10 of 12 status polls got 503 for as
 * long as the attack went on. With the default limits, every poll must now
 * be answered: a new connection evicts the oldest idle or stalled one. */
static void
test_lockout(void **state)
{
    (void)state;
    enum { SLOW = 60, IDLE = 200, POLLS = 12 };
    struct surge_http_config cfg;
    surge_http_config_init(&cfg); /* the defaults the server runs with */
    struct fixture *f = start(&cfg);
    struct reader *r = malloc(sizeof *r);
    assert_non_null(r);
    int fds[SLOW + IDLE];
    for (int i = 0; i < SLOW; i++) {
        fds[i] = dial(f->port);
        send_str(fds[i], "GET /api/v1/status HTTP/1.1\r\nHost: x\r\n");
    }
    for (int i = SLOW; i < SLOW + IDLE; i++) {
        fds[i] = dial(f->port);
    }
    int ok = 0;
    for (int i = 0; i < POLLS; i++) {
        /* Each poll follows more attack: an idle connection starts a slow
         * request (it may have been closed already: then the send fails). */
        (void)send(fds[SLOW + IDLE - 1 - i], "GET / HTTP/1.1\r\n", 16,
                   MSG_NOSIGNAL);
        if (one(f, "GET /api/v1/status HTTP/1.1\r\nHost: x\r\n\r\n", r) ==
            200) {
            ok++;
        }
    }
    assert_int_equal(ok, POLLS);
    struct surge_http_stats st = get_stats(f);
    /* Every attack connection beyond the 64 slots evicted an older one
     * (each poll took a slot too, but may have ended on its own). */
    assert_true(st.evicted >= SLOW + IDLE - 64);
    assert_true(st.open <= 64);
    assert_int_equal(st.rejected, 0);
    for (int i = 0; i < SLOW + IDLE; i++) {
        close(fds[i]);
    }
    assert_serving(f);
    free(r);
    stop(f);
}

/* Clients that pipeline requests and never read their answers hold their
 * slots with answers in flight; once an answer has waited a second, such
 * a connection is evicted for a new one too (else the table stays locked
 * until their idle timeout). */
static void
test_stalled_readers(void **state)
{
    (void)state;
    enum { CONNS = 4, REQUESTS = 600 };
    struct surge_http_config cfg = small_config();
    cfg.max_connections = CONNS;
    struct fixture *f = start(&cfg);
    struct reader *r = malloc(sizeof *r);
    assert_non_null(r);
    static char reqs[REQUESTS * 32];
    size_t len = 0;
    for (int i = 0; i < REQUESTS; i++) {
        len += (size_t)snprintf(reqs + len, sizeof reqs - len,
                                "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    int fds[CONNS];
    for (int i = 0; i < CONNS; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        assert_true(fds[i] >= 0);
        int small = 4096; /* a reader that takes next to nothing */
        setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)f->port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        assert_int_equal(connect(fds[i], (struct sockaddr *)&a, sizeof a), 0);
        struct timeval tv = {.tv_sec = 5};
        setsockopt(fds[i], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        /* ~10 MB of dashboard answers: more than the socket buffers and
         * the server's max_pending_write_bytes hold. */
        (void)send(fds[i], reqs, len, MSG_NOSIGNAL);
    }
    usleep(1500 * 1000);
    assert_int_equal(
        one(f, "GET /api/v1/status HTTP/1.1\r\nHost: x\r\n\r\n", r), 200);
    struct surge_http_stats st = get_stats(f);
    assert_true(st.evicted >= 1);
    assert_int_equal(st.rejected, 0);
    for (int i = 0; i < CONNS; i++) {
        close(fds[i]);
    }
    free(r);
    stop(f);
}

static void
test_token_on_public_bind(void **state)
{
    (void)state;
    struct surge_http_config cfg = small_config();
    uv_loop_t loop;
    surge_metrics *m = NULL;
    surge_http *h = NULL;

    /* A non-loopback bind without a token is refused before binding. */
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(surge_metrics_create(0, &m), 0);
    cfg.host = "0.0.0.0";
    assert_int_equal(surge_http_create(&loop, &cfg, m, &h), SURGE_ECONFIG);
    cfg.token = "";
    assert_int_equal(surge_http_create(&loop, &cfg, m, &h), SURGE_ECONFIG);
    cfg.host = "not-an-address";
    assert_int_equal(surge_http_create(&loop, &cfg, m, &h), SURGE_ECONFIG);
    assert_null(h);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    surge_metrics_destroy(&m);

    /* With a token: every request must carry it. (Bound to 0.0.0.0 but
     * only ever reached over 127.0.0.1.) */
    cfg.host = "0.0.0.0";
    cfg.token = "s3cret-token";
    struct fixture *f = start(&cfg);
    struct reader *r = malloc(sizeof *r);
    assert_non_null(r);
    assert_int_equal(one(f, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", r),
                     401);
    assert_int_equal(one(f,
                         "GET /metrics HTTP/1.1\r\nHost: x\r\n"
                         "Authorization: Bearer wrong\r\n\r\n",
                         r),
                     401);
    assert_int_equal(one(f,
                         "GET /metrics HTTP/1.1\r\nHost: x\r\n"
                         "Authorization: Bearer s3cret-token\r\n\r\n",
                         r),
                     200);
    assert_int_equal(one(f,
                         "GET /metrics?token=s3cret-token HTTP/1.1\r\n"
                         "Host: x\r\n\r\n",
                         r),
                     200);
    assert_int_equal(one(f,
                         "GET /metrics?token=s3cret-tokenX HTTP/1.1\r\n"
                         "Host: x\r\n\r\n",
                         r),
                     401);

    /* The client sends the token as a Bearer header. */
    char url[64];
    struct surge_http_response resp;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/api/v1/status", f->port);
    assert_int_equal(surge_http_get(url, "s3cret-token", 5000, 1 << 20, &resp),
                     0);
    assert_int_equal(resp.status, 200);
    surge_http_response_fini(&resp);
    free(r);
    stop(f);
}

static void
test_client(void **state)
{
    (void)state;
    struct surge_http_config cfg = small_config();
    struct fixture *f = start(&cfg);
    struct surge_http_response resp;
    char url[128];

    f->samples = 9;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", f->port);
    assert_int_equal(surge_http_get(url, NULL, 5000, 1 << 20, &resp), 0);
    assert_int_equal(resp.status, 200);
    assert_non_null(strstr(resp.content_type, "text/plain"));
    assert_non_null(strstr(resp.body, "surge_samples_received_total 9\n"));
    assert_int_equal(strlen(resp.body), resp.body_len);
    surge_http_response_fini(&resp);

    /* The summary a progress line prints. */
    struct surge_status_summary sum;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", f->port);
    assert_int_equal(surge_http_get_status(url, NULL, 5000, &sum), 0);
    assert_true(sum.samples == 9.0);
    assert_true(isnan(sum.loss));
    assert_true(isnan(sum.dropped)); /* no drop counters registered */

    snprintf(url, sizeof url, "http://localhost:%d/nope", f->port);
    assert_int_equal(surge_http_get(url, NULL, 5000, 1 << 20, &resp), 0);
    assert_int_equal(resp.status, 404);
    surge_http_response_fini(&resp);

    /* A body over the cap. */
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", f->port);
    assert_int_equal(surge_http_get(url, NULL, 5000, 16, &resp), -EFBIG);
    assert_null(resp.body);

    /* Bad URLs. */
    assert_int_equal(surge_http_get("ftp://x/", NULL, 100, 16, &resp),
                     SURGE_ECONFIG);
    assert_int_equal(surge_http_get("http://127.0.0.1/", NULL, 100, 16, &resp),
                     SURGE_ECONFIG); /* no port */
    assert_int_equal(
        surge_http_get("http://example.invalid:80/", NULL, 100, 16, &resp),
        SURGE_ECONFIG); /* names other than localhost are not resolved */
    int port = f->port;
    stop(f);

    /* Nobody listening any more: refused. */
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", port);
    assert_int_equal(surge_http_get(url, NULL, 2000, 1 << 20, &resp),
                     SURGE_ENOSERVER);

    /* A listener that never answers: the timeout. */
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(ls, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(ls, 4), 0);
    socklen_t alen = sizeof a;
    getsockname(ls, (struct sockaddr *)&a, &alen);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", ntohs(a.sin_port));
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(surge_http_get(url, NULL, 300, 1 << 20, &resp),
                     SURGE_ETIMEDOUT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) +
               (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    assert_true(s >= 0.25 && s < 3.0);
    close(ls);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes),
        cmocka_unit_test(test_keep_alive_and_pipelining),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_limits_and_timeouts),
        cmocka_unit_test(test_lockout),
        cmocka_unit_test(test_stalled_readers),
        cmocka_unit_test(test_token_on_public_bind),
        cmocka_unit_test(test_client),
    };
    return cmocka_run_group_tests_name("monitor/http", tests, NULL, NULL);
}
