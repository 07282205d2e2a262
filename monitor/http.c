/*
 * monitor/http.c - the monitoring HTTP server and a blocking client (see
 * http.h).
 *
 * DESIGN. Each connection owns a uv_tcp_t, a uv_timer_t and an input
 * buffer that libuv reads into directly. libhttp-parser runs over that
 * buffer; it is paused after each complete request so that the response is
 * queued before the next pipelined request is parsed. When a connection's
 * queued responses exceed max_pending_write_bytes, reading stops and the
 * unparsed bytes wait in the buffer until the writes drain: a client that
 * pipelines requests and never reads cannot make the server buffer more
 * than that.
 *
 * The timer enforces two deadlines: between requests the idle timeout
 * (then the connection closes silently), inside a request the request
 * timeout counted from its first byte (then 408). Reads never extend a
 * request's deadline, so a client trickling one byte at a time is cut off.
 *
 * Errors the parser reports, and limits our callbacks enforce (they return
 * -1 after setting err_status), end the connection after one 4xx answer.
 *
 * A full table does not lock the port. When max_connections are open, a
 * new connection evicts the one that has waited longest without being
 * worth anything: idle since its accept or its last answer, or inside a
 * request that started long ago (a slowloris trickling bytes does not
 * renew that start); failing those, one whose client has not taken an
 * answer for STALLED_WRITE_MS (it pipelines and never reads). A status
 * poll, which sends its whole request at once and is the newest
 * connection, is thus answered however many idle, slow or non-reading
 * peers hold the table; only when every open connection is being answered
 * right now does a new one get 503.
 *
 * Closing: a connection is freed when both of its handles have closed; the
 * server when its listener, its timer and every connection have. Lock-free
 * throughout: all of it runs on the loop's thread.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <http_parser.h>
#include <jansson.h>

#include <surge/error.h>

#include "common/auth.h"
#include "common/log.h"
#include "monitor/http.h"

#define IN_CAP 16384          /* input buffer per connection */
#define FIELD_CAP 32          /* header names we care about are short */
#define AUTH_CAP 512          /* Authorization header value */
#define TOKEN_MAX 256         /* study token */
#define HEAD_CAP 512          /* response status line + headers */
#define LINGER_MS 1000        /* discard input this long after an error */
#define LINGER_CAP (1u << 20) /* ... or this many bytes */
#define STALLED_WRITE_MS                                                       \
    1000 /* an answer not taken in this long marks                             \
            a stalled reader (evictable) */

struct surge_http {
    uv_loop_t *loop;               /* borrowed */
    uv_tcp_t listener;             /* listening socket */
    uv_timer_t sampler;            /* series sampling timer */
    surge_metrics *metrics;        /* borrowed */
    struct surge_http_config cfg;  /* copy, defaults filled in */
    char token[TOKEN_MAX + 1];     /* copy of cfg.token */
    int require_token;             /* bound to a non-loopback address */
    int port;                      /* bound port */
    int closing;                   /* destroy called */
    int handles;                   /* open handles, incl. connections' */
    struct conn *conns;            /* open connections (list) */
    struct surge_http_stats stats; /* counters */
    http_parser_settings settings; /* parser callbacks (shared) */
    surge_counter *by_class[3];    /* requests answered 2xx/4xx/5xx, in
                                      the registry (NULL if absent) */
    surge_counter *evicted;        /* connections evicted (or NULL) */
    surge_histogram *duration;     /* time to build a response */
};

struct conn {
    uv_tcp_t tcp;             /* the socket; data = this */
    uv_timer_t timer;         /* idle / request deadline */
    http_parser parser;       /* request parser; data = this */
    surge_http *srv;          /* owner */
    struct conn *next, *prev; /* in srv->conns */
    int handles;              /* open handles of this conn (0..2) */
    int closing;              /* close started */
    int close_after;          /* close once writes drain */
    int linger;               /* after an error answer: discard input for
                                 a while before closing (see finish) */
    int shut;                 /* uv_shutdown started */
    size_t discarded;         /* input bytes discarded while lingering */
    uv_shutdown_t shut_req;   /* the write side's FIN */
    int blocked;              /* reading stopped for backpressure */
    int reading;              /* uv_read_start active */
    int in_request;           /* a request has started */
    uint64_t since;           /* uv_now (ms) when the current state began:
                                 accept, request start or last answer;
                                 the oldest is evicted first */
    int err_status;           /* status our callbacks rejected with */
    size_t header_bytes;      /* bytes of this request's headers */
    size_t request_bytes;     /* bytes of this request so far */
    size_t pending;           /* bytes queued in uv_write */
    uint64_t write_since;     /* uv_now (ms) when pending last left 0 */
    char url[8192];           /* request target (capped by cfg) */
    size_t url_len;           /* bytes in url */
    char field[FIELD_CAP];    /* current header name, lowercased */
    size_t field_len;         /* bytes in field (may exceed cap) */
    int last_was_value;       /* parser moved from value to field */
    char auth[AUTH_CAP];      /* Authorization value */
    size_t auth_len;          /* bytes in auth */
    int auth_overflow;        /* value longer than AUTH_CAP */
    char in[IN_CAP];          /* unparsed input */
    size_t in_len;            /* bytes in `in` */
};

struct wreq {
    uv_write_t req; /* libuv request; data = this */
    struct conn *c; /* connection */
    char *head;     /* response head (malloc'd) */
    void *body;     /* owned body, or NULL */
    size_t bytes;   /* head + body bytes */
};

struct response {
    int status;        /* HTTP status */
    const char *ctype; /* Content-Type */
    const void *body;  /* body bytes */
    size_t len;        /* body length */
    void *owned;       /* free() after writing, or NULL */
    const char *extra; /* extra header lines ("X: y\r\n"), or "" */
};

static void conn_close(struct conn *c);
static void conn_process(struct conn *c);
static void finish(struct conn *c);

/* ------------------------------------------------------------ helpers */

static double
wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const char *
reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Payload Too Large";
    case 414:
        return "URI Too Long";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "Unknown";
    }
}

/* A JSON error body {"error": msg}; msg must not need escaping. */
static void
json_error(struct response *r, int status, const char *msg)
{
    size_t cap = strlen(msg) + 16;
    char *s = malloc(cap);
    r->status = status;
    r->ctype = "application/json";
    r->extra = "";
    if (s == NULL) {
        r->body = "{\"error\":\"out of memory\"}";
        r->len = strlen(r->body);
        r->owned = NULL;
        return;
    }
    int n = snprintf(s, cap, "{\"error\":\"%s\"}", msg);
    r->body = s;
    r->len = n > 0 ? (size_t)n : 0;
    r->owned = s;
}

/* A presented token against the study token, in constant time. */
static int
token_equal(const char *a, size_t alen, const char *b)
{
    return surge_ct_equal(a, alen, b, strlen(b));
}

/* Finds `key` in a query string; sets *val and *vlen to its raw value. */
static int
query_get(const char *q, size_t qlen, const char *key, const char **val,
          size_t *vlen)
{
    size_t klen = strlen(key);
    size_t i = 0;
    while (i < qlen) {
        size_t j = i;
        while (j < qlen && q[j] != '&') {
            j++;
        }
        if (j - i > klen && memcmp(q + i, key, klen) == 0 &&
            q[i + klen] == '=') {
            *val = q + i + klen + 1;
            *vlen = j - i - klen - 1;
            return 1;
        }
        i = j + 1;
    }
    return 0;
}

/* ------------------------------------------------------------- routing */

static int
authorized(struct conn *c, const char *query, size_t qlen)
{
    const char *v;
    size_t vlen;
    if (!c->srv->require_token) {
        return 1;
    }
    if (!c->auth_overflow && c->auth_len > 7 &&
        strncasecmp(c->auth, "Bearer ", 7) == 0) {
        const char *t = c->auth + 7;
        size_t tlen = c->auth_len - 7;
        while (tlen > 0 && (t[tlen - 1] == ' ' || t[tlen - 1] == '\t')) {
            tlen--;
        }
        if (token_equal(t, tlen, c->srv->token)) {
            return 1;
        }
    }
    if (query_get(query, qlen, "token", &v, &vlen)) {
        return token_equal(v, vlen, c->srv->token);
    }
    return 0;
}

static void
set_rendered(struct response *r, int rc, char *s, size_t len, const char *ctype)
{
    if (rc < 0) {
        json_error(r, 503, "could not render the response (out of memory)");
        return;
    }
    r->status = 200;
    r->ctype = ctype;
    r->body = s;
    r->len = len;
    r->owned = s;
    r->extra = "";
}

static void
route(struct conn *c, struct response *r)
{
    struct http_parser_url u;
    surge_metrics *m = c->srv->metrics;
    char path[256];
    const char *query = "";
    size_t qlen = 0;
    char *s = NULL;
    size_t len = 0;

    http_parser_url_init(&u);
    if (http_parser_parse_url(c->url, c->url_len, 0, &u) != 0 ||
        !(u.field_set & (1 << UF_PATH))) {
        json_error(r, 400, "malformed request target");
        return;
    }
    if (u.field_data[UF_PATH].len >= sizeof path) {
        json_error(r, 404, "no such page");
        return;
    }
    memcpy(path, c->url + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
    path[u.field_data[UF_PATH].len] = '\0';
    if (u.field_set & (1 << UF_QUERY)) {
        query = c->url + u.field_data[UF_QUERY].off;
        qlen = u.field_data[UF_QUERY].len;
    }
    if (!authorized(c, query, qlen)) {
        json_error(r, 401,
                   "this server needs the study token: send "
                   "'Authorization: Bearer TOKEN' or add ?token=TOKEN");
        r->extra = "WWW-Authenticate: Bearer realm=\"surge\"\r\n";
        return;
    }

    if (strcmp(path, "/") == 0 || strcmp(path, "/index.html") == 0) {
        r->status = 200;
        r->ctype = "text/html; charset=utf-8";
        r->body = surge_dashboard_html;
        r->len = surge_dashboard_html_len;
        r->owned = NULL;
        r->extra = "";
    } else if (strcmp(path, "/metrics") == 0) {
        int rc = surge_metrics_render_prometheus(m, &s, &len);
        set_rendered(r, rc, s, len, "text/plain; version=0.0.4; charset=utf-8");
    } else if (strcmp(path, "/api/v1/status") == 0) {
        int rc = surge_metrics_render_status(m, wall_now(), &s, &len);
        set_rendered(r, rc, s, len, "application/json");
    } else if (strcmp(path, "/api/v1/series") == 0) {
        double last = 0.0;
        const char *v;
        size_t vlen;
        if (query_get(query, qlen, "last", &v, &vlen)) {
            char num[32];
            char *end;
            if (vlen == 0 || vlen >= sizeof num) {
                json_error(r, 400, "last= wants a number of seconds");
                return;
            }
            memcpy(num, v, vlen);
            num[vlen] = '\0';
            errno = 0;
            last = strtod(num, &end);
            if (errno != 0 || *end != '\0' || !(last >= 0.0) ||
                !isfinite(last)) {
                json_error(r, 400, "last= wants a number of seconds");
                return;
            }
        }
        int rc = surge_metrics_render_series(m, last, &s, &len);
        set_rendered(r, rc, s, len, "application/json");
    } else if (strcmp(path, "/api/v1/preview") == 0) {
        int rc = surge_metrics_render_preview(m, &s, &len);
        if (rc == -ENOENT) {
            json_error(r, 404,
                       "no preview yet: the trainer has not posted a "
                       "validation prediction");
            return;
        }
        set_rendered(r, rc, s, len, "application/json");
    } else if (strcmp(path, "/api/v1/preview/truth.png") == 0 ||
               strcmp(path, "/api/v1/preview/prediction.png") == 0) {
        unsigned char *png = NULL;
        int which = strstr(path, "truth") != NULL ? 0 : 1;
        int rc = surge_metrics_preview_png(m, which, &png, &len);
        if (rc == -ENOENT) {
            json_error(r, 404,
                       "no preview yet: the trainer has not posted a "
                       "validation prediction");
            return;
        }
        set_rendered(r, rc, (char *)png, len, "image/png");
    } else {
        json_error(r, 404, "no such page");
    }
}

/* ------------------------------------------------------------- writing */

static void
on_write(uv_write_t *req, int status)
{
    struct wreq *w = req->data;
    struct conn *c = w->c;
    c->pending -= w->bytes;
    free(w->head);
    free(w->body);
    free(w);
    if (c->closing) {
        return;
    }
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->close_after && c->pending == 0) {
        finish(c);
        return;
    }
    if (c->blocked && c->pending <= c->srv->cfg.max_pending_write_bytes) {
        c->blocked = 0;
        conn_process(c);
    }
}

/* Queues a response; takes ownership of r->owned in every case. */
static void
respond(struct conn *c, struct response *r, int head_only, int keep_alive)
{
    surge_http *srv = c->srv;
    struct wreq *w = calloc(1, sizeof *w);
    char *head = malloc(HEAD_CAP);
    if (w == NULL || head == NULL) {
        free(w);
        free(head);
        free(r->owned);
        conn_close(c);
        return;
    }
    int n = snprintf(head, HEAD_CAP,
                     "HTTP/1.1 %d %s\r\n"
                     "Content-Type: %s\r\n"
                     "Content-Length: %zu\r\n"
                     "Cache-Control: no-store\r\n"
                     "X-Content-Type-Options: nosniff\r\n"
                     "%s"
                     "Connection: %s\r\n\r\n",
                     r->status, reason(r->status), r->ctype, r->len,
                     r->extra != NULL ? r->extra : "",
                     keep_alive ? "keep-alive" : "close");
    if (n < 0 || n >= HEAD_CAP) {
        n = snprintf(head, HEAD_CAP,
                     "HTTP/1.1 500 Internal Server Error\r\n"
                     "Content-Length: 0\r\nConnection: close\r\n\r\n");
        head_only = 1;
        keep_alive = 0;
    }
    uv_buf_t bufs[2];
    unsigned nbufs = 1;
    bufs[0] = uv_buf_init(head, (unsigned)n);
    if (!head_only && r->len > 0) {
        bufs[1] = uv_buf_init((char *)r->body, (unsigned)r->len);
        nbufs = 2;
    }
    w->req.data = w;
    w->c = c;
    w->head = head;
    w->body = r->owned;
    w->bytes = (size_t)n + (nbufs == 2 ? r->len : 0);
    r->owned = NULL;

    srv->stats.requests++;
    if (r->status >= 200 && r->status < 300) {
        srv->stats.status_2xx++;
    } else if (r->status >= 400 && r->status < 500) {
        srv->stats.status_4xx++;
    } else if (r->status >= 500) {
        srv->stats.status_5xx++;
    }
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, nbufs, on_write);
    if (rc < 0) {
        free(w->head);
        free(w->body);
        free(w);
        conn_close(c);
        return;
    }
    srv->stats.bytes_sent += w->bytes;
    if (c->pending == 0) {
        c->write_since = uv_now(srv->loop);
    }
    c->pending += w->bytes;
    if (!keep_alive) {
        c->close_after = 1;
    }
}

static void
respond_error(struct conn *c, int status, const char *msg)
{
    struct response r;
    json_error(&r, status, msg);
    respond(c, &r, 0, 0);
    c->close_after = 1;
    c->linger = 1;
    c->in_len = 0;
    if (!c->closing && c->pending == 0) {
        finish(c);
    }
}

/* ------------------------------------------------------- parser hooks */

static void arm_timer(struct conn *c, unsigned ms);

static int
on_message_begin(http_parser *p)
{
    struct conn *c = p->data;
    c->in_request = 1;
    c->header_bytes = 0;
    c->url_len = 0;
    c->field_len = 0;
    c->last_was_value = 0;
    c->auth_len = 0;
    c->auth_overflow = 0;
    c->err_status = 0;
    c->since = uv_now(c->srv->loop);
    arm_timer(c, c->srv->cfg.request_timeout_ms);
    return 0;
}

static int
count_header(struct conn *c, size_t n)
{
    c->header_bytes += n;
    c->request_bytes += n;
    if (c->header_bytes > c->srv->cfg.max_header_bytes) {
        c->err_status = 431;
        return -1;
    }
    return 0;
}

static int
on_url(http_parser *p, const char *at, size_t n)
{
    struct conn *c = p->data;
    if (c->url_len + n > c->srv->cfg.max_url_bytes ||
        c->url_len + n > sizeof c->url) {
        c->err_status = 414;
        return -1;
    }
    memcpy(c->url + c->url_len, at, n);
    c->url_len += n;
    return count_header(c, n);
}

static int
on_header_field(http_parser *p, const char *at, size_t n)
{
    struct conn *c = p->data;
    if (c->last_was_value) {
        c->field_len = 0;
        c->last_was_value = 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (c->field_len < FIELD_CAP) {
            c->field[c->field_len] = (char)tolower((unsigned char)at[i]);
        }
        c->field_len++;
    }
    /* Separators (": ", CRLF) are not passed to callbacks: count 4 per
     * header line so many tiny headers still hit the limit. */
    return count_header(c, n + 4);
}

static int
on_header_value(http_parser *p, const char *at, size_t n)
{
    struct conn *c = p->data;
    c->last_was_value = 1;
    if (c->field_len == 13 && memcmp(c->field, "authorization", 13) == 0) {
        if (c->auth_len + n > AUTH_CAP) {
            c->auth_overflow = 1;
        } else {
            memcpy(c->auth + c->auth_len, at, n);
            c->auth_len += n;
        }
    }
    return count_header(c, n);
}

static int
on_headers_complete(http_parser *p)
{
    struct conn *c = p->data;
    size_t limit = c->srv->cfg.max_request_bytes;
    size_t room = c->request_bytes < limit ? limit - c->request_bytes : 0;
    if (p->method != HTTP_GET && p->method != HTTP_HEAD) {
        c->err_status = 405;
        return -1;
    }
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > room) {
        c->err_status = 413;
        return -1;
    }
    return 0;
}

static int
on_body(http_parser *p, const char *at, size_t n)
{
    struct conn *c = p->data;
    (void)at;
    c->request_bytes += n;
    if (c->request_bytes > c->srv->cfg.max_request_bytes) {
        c->err_status = 413;
        return -1;
    }
    return 0;
}

static int
on_message_complete(http_parser *p)
{
    struct conn *c = p->data;
    struct response r = {0};
    int keep_alive = http_should_keep_alive(p) && !p->upgrade;
    uint64_t t0 = uv_hrtime();
    route(c, &r);
    int status = r.status;
    respond(c, &r, p->method == HTTP_HEAD, keep_alive);
    surge_histogram_observe(c->srv->duration,
                            (double)(uv_hrtime() - t0) * 1e-9);
    if (status >= 200 && status < 600 && status / 100 != 3) {
        surge_counter_add(c->srv->by_class[status < 300   ? 0
                                           : status < 500 ? 1
                                                          : 2],
                          1);
    }
    c->in_request = 0;
    c->request_bytes = 0;
    c->header_bytes = 0;
    c->since = uv_now(c->srv->loop);
    if (!c->closing) {
        arm_timer(c, c->srv->cfg.idle_timeout_ms);
    }
    /* Stop here so the next pipelined request waits for backpressure. */
    http_parser_pause(p, 1);
    return 0;
}

/* ---------------------------------------------------------- connections */

static void
on_handle_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    surge_http *srv = c->srv;
    if (--c->handles > 0) {
        return;
    }
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        srv->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    free(c);
    if (--srv->handles == 0 && srv->closing) {
        free(srv);
    }
}

static void
conn_close(struct conn *c)
{
    if (c->closing) {
        return;
    }
    c->closing = 1;
    /* The slot is free from now on, not from the close callback: libuv
     * polls for new connections before it runs close callbacks, so a
     * client that saw this connection end could otherwise be refused. */
    c->srv->stats.open--;
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

static void
on_timer(uv_timer_t *t)
{
    struct conn *c = t->data;
    if (c->linger) {
        conn_close(c);
    } else if (c->in_request && c->pending == 0) {
        respond_error(c, 408, "request not completed in time");
    } else {
        conn_close(c);
    }
}

static void
arm_timer(struct conn *c, unsigned ms)
{
    uv_timer_start(&c->timer, on_timer, ms, 0);
}

static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;
    (void)suggested;
    buf->base = c->in + c->in_len;
    buf->len = IN_CAP - c->in_len;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static const char *
limit_reason(int status)
{
    switch (status) {
    case 405:
        return "only GET and HEAD are served here";
    case 413:
        return "request too large";
    case 414:
        return "request target too long";
    default:
        return "request headers too large";
    }
}

/* Parses buffered input, answering requests until the buffer is empty, a
 * response backlog blocks us, or the connection must close. */
static void
conn_process(struct conn *c)
{
    surge_http *srv = c->srv;
    while (!c->closing && !c->close_after && c->in_len > 0) {
        if (c->pending > srv->cfg.max_pending_write_bytes) {
            c->blocked = 1;
            break;
        }
        size_t used =
            http_parser_execute(&c->parser, &srv->settings, c->in, c->in_len);
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (used > c->in_len) {
            used = c->in_len;
        }
        memmove(c->in, c->in + used, c->in_len - used);
        c->in_len -= used;
        if (e == HPE_PAUSED) {
            http_parser_pause(&c->parser, 0);
            if (c->parser.upgrade) {
                c->close_after = 1;
            }
            continue;
        }
        if (e != HPE_OK) {
            if (c->err_status != 0) {
                respond_error(c, c->err_status, limit_reason(c->err_status));
            } else if (e == HPE_HEADER_OVERFLOW) {
                respond_error(c, 431, "request headers too large");
            } else {
                respond_error(c, 400, "malformed HTTP request");
            }
            return;
        }
        if (c->parser.upgrade) {
            c->close_after = 1;
            break;
        }
    }
    if (c->closing) {
        return;
    }
    if (c->close_after) {
        c->in_len = 0;
        if (c->pending == 0) {
            finish(c);
        } else if (c->linger) {
            /* Keep reading (and discarding) so that a client still
             * sending does not stall before it reads our answer. */
            if (!c->reading &&
                uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0) {
                c->reading = 1;
            }
        } else if (c->reading) {
            uv_read_stop((uv_stream_t *)&c->tcp);
            c->reading = 0;
        }
        return;
    }
    if (c->blocked || c->in_len == IN_CAP) {
        if (c->reading) {
            uv_read_stop((uv_stream_t *)&c->tcp);
            c->reading = 0;
        }
    } else if (!c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0) {
            c->reading = 1;
        } else {
            conn_close(c);
        }
    }
}

static void
on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    (void)buf;
    if (c->linger) {
        /* Answered with an error: drop whatever still comes, up to a cap,
         * until the peer closes or the linger timer fires. */
        c->in_len = 0;
        if (n < 0 || (c->discarded += (size_t)n) > LINGER_CAP) {
            conn_close(c);
        }
        return;
    }
    if (n == UV_EOF) {
        /* The peer finished sending (it may have half-closed after its
         * request): let queued responses drain, then close. */
        uv_read_stop(s);
        c->reading = 0;
        c->close_after = 1;
        if (c->pending == 0) {
            conn_close(c);
        }
        return;
    }
    if (n < 0) {
        conn_close(c);
        return;
    }
    if (n == 0) {
        return;
    }
    c->in_len += (size_t)n;
    conn_process(c);
}

static void
on_shutdown(uv_shutdown_t *req, int status)
{
    struct conn *c = req->data;
    if (status < 0 && !c->closing) {
        conn_close(c);
    }
}

/* All responses are written and the connection must end. After an error
 * answer the client may still be sending the rest of a request we refused
 * (a huge header or body): closing now, with its bytes unread, would make
 * the kernel send a reset that can destroy our answer before the client
 * reads it. So, like other servers' "lingering close", send FIN, read and
 * discard for up to LINGER_MS or LINGER_CAP bytes, then close. */
static void
finish(struct conn *c)
{
    if (c->closing) {
        return;
    }
    if (!c->linger) {
        conn_close(c);
        return;
    }
    if (c->shut) {
        return;
    }
    c->shut = 1;
    c->in_request = 0;
    c->shut_req.data = c;
    if (uv_shutdown(&c->shut_req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        conn_close(c);
        return;
    }
    arm_timer(c, LINGER_MS);
    if (!c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0) {
            c->reading = 1;
        } else {
            conn_close(c);
        }
    }
}

/* Answers 503 without allocating a connection and closes. */
static void
on_reject_closed(uv_handle_t *h)
{
    surge_http *srv = h->data;
    free(h);
    if (--srv->handles == 0 && srv->closing) {
        free(srv);
    }
}

static void
reject(surge_http *srv, uv_tcp_t *tcp)
{
    static const char msg[] = "HTTP/1.1 503 Service Unavailable\r\n"
                              "Content-Type: application/json\r\n"
                              "Content-Length: 36\r\n"
                              "Connection: close\r\n\r\n"
                              "{\"error\":\"too many open connections\"}";
    uv_buf_t b = uv_buf_init((char *)msg, sizeof msg - 1);
    (void)uv_try_write((uv_stream_t *)tcp, &b, 1);
    srv->stats.rejected++;
    uv_close((uv_handle_t *)tcp, on_reject_closed);
}

/* The connection to close to make room for a new one (see DESIGN): the
 * oldest idle or mid-request one; else the one whose reader has left an
 * answer untaken longest, once that is over STALLED_WRITE_MS (a client
 * that pipelines requests and never reads); else NULL: every connection is
 * being answered or already ending. Ties go to the older connection (the
 * list is newest first). */
static struct conn *
eviction_victim(surge_http *srv)
{
    struct conn *idle = NULL, *stalled = NULL;
    uint64_t now = uv_now(srv->loop);
    for (struct conn *c = srv->conns; c != NULL; c = c->next) {
        if (c->closing) {
            continue;
        }
        if (c->pending > 0) {
            if (now - c->write_since >= STALLED_WRITE_MS &&
                (stalled == NULL || c->write_since <= stalled->write_since)) {
                stalled = c;
            }
        } else if (!c->close_after && !c->linger &&
                   (idle == NULL || c->since <= idle->since)) {
            idle = c;
        }
    }
    return idle != NULL ? idle : stalled;
}

static void
evict(surge_http *srv, struct conn *victim)
{
    srv->stats.evicted++;
    surge_counter_add(srv->evicted, 1);
    /* One line per power of two: a flood says so without flooding the
     * log. */
    if ((srv->stats.evicted & (srv->stats.evicted - 1)) == 0) {
        SURGE_LOG(SURGE_LOG_WARN, "http",
                  "%u connections open (the limit): closed the longest idle "
                  "or stalled one to admit a new one (%llu so far)",
                  srv->cfg.max_connections,
                  (unsigned long long)srv->stats.evicted);
    }
    conn_close(victim);
}

static void
on_connection(uv_stream_t *server, int status)
{
    surge_http *srv = server->data;
    if (status < 0 || srv->closing) {
        return;
    }
    if (srv->stats.open >= srv->cfg.max_connections) {
        struct conn *victim = eviction_victim(srv);
        if (victim != NULL) {
            evict(srv, victim);
        }
    }
    if (srv->stats.open >= srv->cfg.max_connections) {
        uv_tcp_t *tmp = malloc(sizeof *tmp);
        if (tmp == NULL || uv_tcp_init(srv->loop, tmp) != 0) {
            free(tmp);
            return;
        }
        tmp->data = srv;
        srv->handles++;
        if (uv_accept(server, (uv_stream_t *)tmp) == 0) {
            reject(srv, tmp);
        } else {
            uv_close((uv_handle_t *)tmp, on_reject_closed);
        }
        return;
    }
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return;
    }
    c->srv = srv;
    if (uv_tcp_init(srv->loop, &c->tcp) != 0) {
        free(c);
        return;
    }
    c->tcp.data = c;
    c->timer.data = c;
    c->handles = 1;
    srv->handles++;
    srv->stats.open++;
    c->next = srv->conns;
    if (srv->conns != NULL) {
        srv->conns->prev = c;
    }
    srv->conns = c;
    if (uv_timer_init(srv->loop, &c->timer) != 0) {
        c->closing = 1;
        srv->stats.open--;
        uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
        return;
    }
    c->handles = 2;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    srv->stats.connections++;
    c->since = uv_now(srv->loop);
    uv_tcp_nodelay(&c->tcp, 1);
    arm_timer(c, srv->cfg.idle_timeout_ms);
    conn_process(c);
}

/* ---------------------------------------------------------------- server */

static void
on_sample(uv_timer_t *t)
{
    surge_http *srv = t->data;
    surge_metrics_sample(srv->metrics, (double)uv_hrtime() * 1e-9, wall_now());
}

void
surge_http_config_init(struct surge_http_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->host = "127.0.0.1";
}

static int
is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        return IN6_IS_ADDR_LOOPBACK(&a->sin6_addr);
    }
    return 0;
}

/* The server's own metrics, owned by the registry (so they outlive the
 * server). A second server on the same registry finds the names taken
 * (-EEXIST) and runs without them. */
static void
register_metrics(surge_http *srv)
{
    static const double bounds[] = {0.0001, 0.00025, 0.0005, 0.001,
                                    0.0025, 0.005,   0.01,   0.05};
    static const char *const classes[3] = {"code=\"2xx\"", "code=\"4xx\"",
                                           "code=\"5xx\""};
    for (int i = 0; i < 3; i++) {
        (void)surge_metrics_counter(srv->metrics, "surge_http_requests_total",
                                    classes[i],
                                    "Monitoring HTTP requests answered, by "
                                    "status class",
                                    &srv->by_class[i]);
    }
    (void)surge_metrics_histogram(
        srv->metrics, "surge_http_request_duration_seconds", NULL,
        "Time to build a monitoring HTTP response", bounds,
        sizeof bounds / sizeof bounds[0], &srv->duration);
    (void)surge_metrics_counter(
        srv->metrics, "surge_http_connections_evicted_total", NULL,
        "Idle or stalled monitoring connections closed to admit a new one",
        &srv->evicted);
}

static void
on_srv_handle_closed(uv_handle_t *h)
{
    surge_http *srv = h->data;
    if (--srv->handles == 0) {
        free(srv);
    }
}

int
surge_http_create(uv_loop_t *loop, const struct surge_http_config *cfg_in,
                  surge_metrics *metrics, surge_http **out)
{
    struct surge_http_config cfg;
    struct sockaddr_storage ss;
    int rc;

    if (loop == NULL || metrics == NULL || out == NULL) {
        return -EINVAL;
    }
    if (cfg_in != NULL) {
        cfg = *cfg_in;
    } else {
        surge_http_config_init(&cfg);
    }
    if (cfg.host == NULL || strcmp(cfg.host, "localhost") == 0) {
        cfg.host = "127.0.0.1";
    }
    if (cfg.port < 0 || cfg.port > 65535) {
        SURGE_LOG(SURGE_LOG_ERROR, "http", "port %d is not a TCP port",
                  cfg.port);
        return SURGE_ECONFIG;
    }
    memset(&ss, 0, sizeof ss);
    if (uv_ip4_addr(cfg.host, cfg.port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(cfg.host, cfg.port, (struct sockaddr_in6 *)&ss) != 0) {
        SURGE_LOG(SURGE_LOG_ERROR, "http",
                  "bind address '%s' is not a numeric IP address", cfg.host);
        return SURGE_ECONFIG;
    }
    int loopback = is_loopback(&ss);
    if (cfg.token != NULL && strlen(cfg.token) > TOKEN_MAX) {
        SURGE_LOG(SURGE_LOG_ERROR, "http", "study token longer than %d bytes",
                  TOKEN_MAX);
        return SURGE_ECONFIG;
    }
    if (!loopback && (cfg.token == NULL || cfg.token[0] == '\0')) {
        SURGE_LOG(SURGE_LOG_ERROR, "http",
                  "binding the monitor to %s (not loopback) needs the study "
                  "token",
                  cfg.host);
        return SURGE_ECONFIG;
    }
    if (cfg.max_header_bytes == 0) {
        cfg.max_header_bytes = 8192;
    }
    if (cfg.max_request_bytes == 0) {
        cfg.max_request_bytes = 16384;
    }
    if (cfg.max_request_bytes < cfg.max_header_bytes) {
        cfg.max_request_bytes = cfg.max_header_bytes;
    }
    if (cfg.max_url_bytes == 0 || cfg.max_url_bytes > 8192) {
        cfg.max_url_bytes = cfg.max_url_bytes == 0 ? 2048 : 8192;
    }
    if (cfg.max_connections == 0) {
        cfg.max_connections = 64;
    }
    if (cfg.idle_timeout_ms == 0) {
        cfg.idle_timeout_ms = 15000;
    }
    if (cfg.request_timeout_ms == 0) {
        cfg.request_timeout_ms = 10000;
    }
    if (cfg.sample_interval_ms == 0) {
        cfg.sample_interval_ms = 1000;
    }
    if (cfg.max_pending_write_bytes == 0) {
        cfg.max_pending_write_bytes = 8u << 20;
    }

    surge_http *srv = calloc(1, sizeof *srv);
    if (srv == NULL) {
        return -ENOMEM;
    }
    srv->loop = loop;
    srv->metrics = metrics;
    srv->require_token = !loopback;
    if (cfg.token != NULL) {
        snprintf(srv->token, sizeof srv->token, "%s", cfg.token);
    }
    cfg.token = NULL; /* the copy lives in srv->token */
    cfg.host = NULL;
    srv->cfg = cfg;
    http_parser_settings_init(&srv->settings);
    srv->settings.on_message_begin = on_message_begin;
    srv->settings.on_url = on_url;
    srv->settings.on_header_field = on_header_field;
    srv->settings.on_header_value = on_header_value;
    srv->settings.on_headers_complete = on_headers_complete;
    srv->settings.on_body = on_body;
    srv->settings.on_message_complete = on_message_complete;

    rc = uv_tcp_init(loop, &srv->listener);
    if (rc < 0) {
        goto fail_srv;
    }
    srv->listener.data = srv;
    srv->handles = 1;
    rc = uv_tcp_bind(&srv->listener, (const struct sockaddr *)&ss, 0);
    if (rc == 0) {
        rc = uv_listen((uv_stream_t *)&srv->listener, 64, on_connection);
    }
    if (rc < 0) {
        goto fail_listener;
    }
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    rc = uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&bound, &blen);
    if (rc < 0) {
        goto fail_listener;
    }
    srv->port = bound.ss_family == AF_INET
                    ? ntohs(((struct sockaddr_in *)&bound)->sin_port)
                    : ntohs(((struct sockaddr_in6 *)&bound)->sin6_port);
    rc = uv_timer_init(loop, &srv->sampler);
    if (rc < 0) {
        goto fail_listener;
    }
    srv->sampler.data = srv;
    srv->handles = 2;
    register_metrics(srv);
    /* One point right away so the first status has a row to show. */
    surge_metrics_sample(metrics, (double)uv_hrtime() * 1e-9, wall_now());
    uv_timer_start(&srv->sampler, on_sample, cfg.sample_interval_ms,
                   cfg.sample_interval_ms);
    /* The timer alone must not keep a loop alive that has nothing else. */
    uv_unref((uv_handle_t *)&srv->sampler);
    *out = srv;
    return 0;

fail_listener:
    /* The handle is closed and srv freed from its close callback. */
    srv->closing = 1;
    uv_close((uv_handle_t *)&srv->listener, on_srv_handle_closed);
    return rc;
fail_srv:
    free(srv);
    return rc;
}

int
surge_http_port(const surge_http *h)
{
    return h != NULL ? h->port : -1;
}

void
surge_http_get_stats(const surge_http *h, struct surge_http_stats *st)
{
    if (h != NULL && st != NULL) {
        *st = h->stats;
    }
}

void
surge_http_destroy(surge_http **hp)
{
    if (hp == NULL || *hp == NULL) {
        return;
    }
    surge_http *srv = *hp;
    *hp = NULL;
    srv->closing = 1;
    uv_close((uv_handle_t *)&srv->listener, on_srv_handle_closed);
    uv_close((uv_handle_t *)&srv->sampler, on_srv_handle_closed);
    for (struct conn *c = srv->conns; c != NULL; c = c->next) {
        conn_close(c);
    }
}

/* ---------------------------------------------------------------- client */

struct client {
    struct surge_http_response *resp; /* being filled */
    size_t max_body;                  /* cap */
    int too_big;                      /* body exceeded the cap */
    int done;                         /* message complete */
    char field[32];                   /* current header, lowercased */
    size_t field_len;                 /* bytes (may exceed the cap) */
    int last_was_value;               /* see on_header_field */
    size_t body_cap;                  /* allocated body bytes */
};

static int
c_on_header_field(http_parser *p, const char *at, size_t n)
{
    struct client *cl = p->data;
    if (cl->last_was_value) {
        cl->field_len = 0;
        cl->last_was_value = 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (cl->field_len < sizeof cl->field) {
            cl->field[cl->field_len] = (char)tolower((unsigned char)at[i]);
        }
        cl->field_len++;
    }
    return 0;
}

static int
c_on_header_value(http_parser *p, const char *at, size_t n)
{
    struct client *cl = p->data;
    cl->last_was_value = 1;
    if (cl->field_len == 12 && memcmp(cl->field, "content-type", 12) == 0) {
        char *ct = cl->resp->content_type;
        size_t have = strlen(ct);
        size_t room = sizeof cl->resp->content_type - 1 - have;
        memcpy(ct + have, at, n < room ? n : room);
        ct[have + (n < room ? n : room)] = '\0';
    }
    return 0;
}

static int
c_on_headers_complete(http_parser *p)
{
    struct client *cl = p->data;
    cl->resp->status = (int)p->status_code;
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > cl->max_body) {
        cl->too_big = 1;
        return -1;
    }
    return 0;
}

static int
c_on_body(http_parser *p, const char *at, size_t n)
{
    struct client *cl = p->data;
    struct surge_http_response *r = cl->resp;
    if (r->body_len + n > cl->max_body) {
        cl->too_big = 1;
        return -1;
    }
    if (r->body_len + n + 1 > cl->body_cap) {
        size_t cap = cl->body_cap == 0 ? 4096 : cl->body_cap;
        while (cap < r->body_len + n + 1) {
            cap *= 2;
        }
        char *b = realloc(r->body, cap);
        if (b == NULL) {
            return -1;
        }
        r->body = b;
        cl->body_cap = cap;
    }
    memcpy(r->body + r->body_len, at, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
    return 0;
}

static int
c_on_message_complete(http_parser *p)
{
    struct client *cl = p->data;
    cl->done = 1;
    return 0;
}

static int64_t
ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for `events` on fd until the deadline; 0, SURGE_ETIMEDOUT, -errno. */
static int
wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - ms_now();
        if (left <= 0) {
            return SURGE_ETIMEDOUT;
        }
        struct pollfd pfd = {.fd = fd, .events = events};
        int n = poll(&pfd, 1, (int)left);
        if (n > 0) {
            return 0;
        }
        if (n == 0) {
            return SURGE_ETIMEDOUT;
        }
        if (errno != EINTR) {
            return -errno;
        }
    }
}

static int
client_connect(const char *host, const char *port, int64_t deadline, int *fdp)
{
    struct addrinfo hints = {0};
    struct addrinfo *ai = NULL;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    if (strcmp(host, "localhost") == 0) {
        host = "127.0.0.1";
    } else {
        hints.ai_flags |= AI_NUMERICHOST;
    }
    if (getaddrinfo(host, port, &hints, &ai) != 0 || ai == NULL) {
        return SURGE_ECONFIG;
    }
    int fd =
        socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
               ai->ai_protocol);
    if (fd < 0) {
        int e = -errno;
        freeaddrinfo(ai);
        return e;
    }
    int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    if (rc < 0 && errno != EINPROGRESS) {
        rc = errno == ECONNREFUSED ? SURGE_ENOSERVER : -errno;
        close(fd);
        return rc;
    }
    if (rc < 0) {
        rc = wait_fd(fd, POLLOUT, deadline);
        if (rc < 0) {
            close(fd);
            return rc;
        }
        int err = 0;
        socklen_t elen = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen);
        if (err != 0) {
            close(fd);
            return err == ECONNREFUSED ? SURGE_ENOSERVER : -err;
        }
    }
    *fdp = fd;
    return 0;
}

int
surge_http_get(const char *url, const char *token, int timeout_ms,
               size_t max_body, struct surge_http_response *resp)
{
    struct http_parser_url u;
    char host[256];
    char port[8];
    char req[4096];
    int fd = -1;
    int rc;

    if (url == NULL || resp == NULL || timeout_ms <= 0) {
        return -EINVAL;
    }
    memset(resp, 0, sizeof *resp);
    http_parser_url_init(&u);
    if (strncmp(url, "http://", 7) != 0 ||
        http_parser_parse_url(url, strlen(url), 0, &u) != 0 ||
        !(u.field_set & (1 << UF_HOST)) || !(u.field_set & (1 << UF_PORT)) ||
        u.field_data[UF_HOST].len >= sizeof host) {
        return SURGE_ECONFIG;
    }
    memcpy(host, url + u.field_data[UF_HOST].off, u.field_data[UF_HOST].len);
    host[u.field_data[UF_HOST].len] = '\0';
    snprintf(port, sizeof port, "%u", (unsigned)u.port);
    const char *target = "/";
    size_t tlen = 1;
    if (u.field_set & (1 << UF_PATH)) {
        target = url + u.field_data[UF_PATH].off;
        tlen = strlen(target); /* path, query and fragment */
    }
    int n;
    if (token != NULL && token[0] != '\0') {
        n = snprintf(req, sizeof req,
                     "GET %.*s HTTP/1.1\r\nHost: %s:%s\r\n"
                     "Authorization: Bearer %s\r\n"
                     "User-Agent: surge\r\nConnection: close\r\n\r\n",
                     (int)tlen, target, host, port, token);
    } else {
        n = snprintf(req, sizeof req,
                     "GET %.*s HTTP/1.1\r\nHost: %s:%s\r\n"
                     "User-Agent: surge\r\nConnection: close\r\n\r\n",
                     (int)tlen, target, host, port);
    }
    if (n < 0 || (size_t)n >= sizeof req) {
        return SURGE_ECONFIG;
    }

    int64_t deadline = ms_now() + timeout_ms;
    rc = client_connect(host, port, deadline, &fd);
    if (rc < 0) {
        return rc;
    }
    size_t sent = 0;
    while (sent < (size_t)n) {
        ssize_t w = send(fd, req + sent, (size_t)n - sent, MSG_NOSIGNAL);
        if (w > 0) {
            sent += (size_t)w;
            continue;
        }
        if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            rc = wait_fd(fd, POLLOUT, deadline);
            if (rc < 0) {
                goto out;
            }
            continue;
        }
        rc = -errno;
        goto out;
    }

    http_parser_settings st;
    http_parser p;
    struct client cl = {.resp = resp, .max_body = max_body};
    http_parser_settings_init(&st);
    st.on_header_field = c_on_header_field;
    st.on_header_value = c_on_header_value;
    st.on_headers_complete = c_on_headers_complete;
    st.on_body = c_on_body;
    st.on_message_complete = c_on_message_complete;
    http_parser_init(&p, HTTP_RESPONSE);
    p.data = &cl;
    char buf[16384];
    while (!cl.done) {
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
            rc = wait_fd(fd, POLLIN, deadline);
            if (rc < 0) {
                goto out;
            }
            continue;
        }
        if (r < 0) {
            rc = -errno;
            goto out;
        }
        /* r == 0 (EOF) is passed on: it completes a body without length. */
        size_t used = http_parser_execute(&p, &st, buf, (size_t)r);
        if (HTTP_PARSER_ERRNO(&p) != HPE_OK) {
            rc = cl.too_big                             ? -EFBIG
                 : HTTP_PARSER_ERRNO(&p) == HPE_CB_body ? -ENOMEM
                                                        : SURGE_EPROTO;
            goto out;
        }
        if (r == 0 || used != (size_t)r) {
            if (!cl.done) {
                rc = SURGE_EPROTO;
                goto out;
            }
        }
    }
    if (resp->body == NULL) {
        resp->body = calloc(1, 1);
        if (resp->body == NULL) {
            rc = -ENOMEM;
            goto out;
        }
    }
    rc = 0;
out:
    close(fd);
    if (rc < 0) {
        surge_http_response_fini(resp);
    }
    return rc;
}

static double
jget(json_t *root, const char *obj, const char *key)
{
    json_t *v = json_object_get(json_object_get(root, obj), key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

int
surge_http_get_status(const char *base_url, const char *token, int timeout_ms,
                      struct surge_status_summary *out)
{
    char url[1024];
    struct surge_http_response r;
    json_error_t jerr;
    if (base_url == NULL || out == NULL) {
        return -EINVAL;
    }
    size_t n = strlen(base_url);
    while (n > 0 && base_url[n - 1] == '/') {
        n--;
    }
    if ((size_t)snprintf(url, sizeof url, "%.*s/api/v1/status", (int)n,
                         base_url) >= sizeof url) {
        return SURGE_ECONFIG;
    }
    int rc = surge_http_get(url, token, timeout_ms, 16u << 20, &r);
    if (rc < 0) {
        return rc;
    }
    json_t *root =
        r.status == 200 ? json_loadb(r.body, r.body_len, 0, &jerr) : NULL;
    surge_http_response_fini(&r);
    if (!json_is_object(root)) {
        json_decref(root);
        return SURGE_EPROTO;
    }
    out->samples = jget(root, "ingest", "samples");
    out->dropped = jget(root, "ingest", "dropped");
    out->samples_in_per_s = jget(root, "rates", "samples_in_per_s");
    out->mb_in_per_s = jget(root, "rates", "mb_in_per_s");
    out->batches_per_s = jget(root, "rates", "batches_per_s");
    out->samples_trained_per_s = jget(root, "rates", "samples_trained_per_s");
    out->occupancy = jget(root, "reservoir", "occupancy");
    out->step = jget(root, "trainer", "step");
    out->loss = jget(root, "trainer", "loss");
    out->validation_loss = jget(root, "trainer", "validation_loss");
    json_decref(root);
    return 0;
}

void
surge_http_response_fini(struct surge_http_response *resp)
{
    if (resp != NULL) {
        free(resp->body);
        resp->body = NULL;
        resp->body_len = 0;
    }
}
