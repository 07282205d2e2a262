/*
 * clients/client.c - libsurge: the client side of the surge wire protocol
 * (include/surge/client.h, docs/protocol.md).
 *
 * DESIGN. One client is one ZeroMQ DEALER socket in its own context,
 * connected to the server's ROUTER. Frames go out exactly as the protocol
 * says: header, then for data one payload frame (no empty delimiter).
 *
 * Small slices are packed: their float32 values are appended to a
 * "pending" buffer and an item is added to a pending data header; the pair
 * leaves as one message when the buffer would overflow, when 256 items are
 * queued, when flush_ms has passed at the next call, or on flush/close.
 * Large slices leave at once as their own message. Either way the payload
 * is written (copied or converted from float64) into a buffer from a small
 * per-client pool and handed to ZeroMQ without another copy
 * (zmq_msg_init_data); ZeroMQ's I/O thread gives it back through
 * buf_free_cb once the bytes are on the wire, so steady-state sending
 * neither allocates nor page-faults.
 *
 * Sends never block blindly: a send that hits the high-water mark polls
 * for POLLOUT and POLLIN together until the deadline, so a reject from the
 * server (for example after a server restart) is seen even while blocked.
 * ZMQ_IMMEDIATE keeps messages from queueing while no server is connected:
 * they block, and time out, instead of piling up in memory.
 *
 * Threads: the application thread owns everything except the buffer pool's
 * free list, which ZeroMQ's I/O thread also touches (pool.lock). Lock
 * order: only pool.lock exists.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zmq.h>

#include <surge/client.h>

#include "common/auth.h"
#include "common/protocol.h"
#include "common/util.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the surge wire format is little-endian; add byte swapping here"
#endif

#define DEFAULT_TIMEOUT_MS 30000
#define DEFAULT_COALESCE_BYTES 262144
#define DEFAULT_FLUSH_MS 100
#define DEFAULT_SNDHWM_BYTES ((uint64_t)64 << 20)
#define MAX_ENDPOINT 255
#define MAX_PATH_LEN 4095 /* options.curve_keys */
/* A CURVE handshake the server refuses looks like silence to a client. */
#define CURVE_HINT                                                             \
    " (CURVE is on: do the client keys belong to this server's study?)"
#define RECENT_STEPS 32    /* steps remembered per field */
#define MAX_INCOMING 65536 /* largest message we accept */
#define POOL_CACHE_CAP ((size_t)1 << 30)
/* ZMTP heartbeats: a server that vanished without a TCP reset (a dead
 * host) is noticed within seconds, so sends block and time out instead of
 * queueing towards nobody. */
#define HEARTBEAT_IVL_MS 2000
#define HEARTBEAT_TIMEOUT_MS 10000

/* ------------------------------------------------------------ errors */

static _Thread_local char options_error[256];
static _Thread_local char open_error[512];
static _Thread_local char close_error[512];

static void
set_text(char *dst, size_t cap, const char *fmt, va_list ap)
{
    vsnprintf(dst, cap, fmt, ap);
}

static int options_fail(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static int
options_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_text(options_error, sizeof options_error, fmt, ap);
    va_end(ap);
    return SURGE_ECONFIG;
}

static int open_fail(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int
open_fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_text(open_error, sizeof open_error, fmt, ap);
    va_end(ap);
    return code;
}

/* ------------------------------------------------------------ buffer pool */

/* A payload buffer. The header is padded to 64 bytes so data[] is
 * cache-line aligned (malloc gives 16). */
struct buf {
    struct buf *next;  /* free list link (pool.lock) */
    struct pool *pool; /* owner */
    size_t cap;        /* bytes in data[] */
    unsigned char pad[64 - 3 * sizeof(void *)];
    unsigned char data[];
};

struct pool {
    pthread_mutex_t lock; /* guards free and cached */
    struct buf *free;     /* buffers ready for reuse */
    size_t cached;        /* bytes on the free list */
    size_t max_cached;    /* beyond this, returned buffers are freed */
};

static void
pool_init(struct pool *p, size_t max_cached)
{
    pthread_mutex_init(&p->lock, NULL);
    p->free = NULL;
    p->cached = 0;
    p->max_cached = max_cached;
}

/* Only once ZeroMQ has released every message (after zmq_ctx_term). */
static void
pool_fini(struct pool *p)
{
    struct buf *b = p->free;
    while (b != NULL) {
        struct buf *next = b->next;
        free(b);
        b = next;
    }
    p->free = NULL;
    pthread_mutex_destroy(&p->lock);
}

static struct buf *
pool_get(struct pool *p, size_t bytes)
{
    struct buf *b = NULL;
    pthread_mutex_lock(&p->lock);
    for (struct buf **pp = &p->free; *pp != NULL; pp = &(*pp)->next) {
        if ((*pp)->cap >= bytes) {
            b = *pp;
            *pp = b->next;
            p->cached -= b->cap;
            break;
        }
    }
    pthread_mutex_unlock(&p->lock);
    if (b == NULL) {
        b = malloc(sizeof *b + bytes);
        if (b == NULL) {
            return NULL;
        }
        b->pool = p;
        b->cap = bytes;
    }
    b->next = NULL;
    return b;
}

static void
pool_put(struct pool *p, struct buf *b)
{
    pthread_mutex_lock(&p->lock);
    if (p->cached + b->cap <= p->max_cached) {
        b->next = p->free;
        p->free = b;
        p->cached += b->cap;
        b = NULL;
    }
    pthread_mutex_unlock(&p->lock);
    free(b);
}

/* ZeroMQ's free callback (its I/O thread, or ours when a message is
 * closed unsent). */
static void
buf_free_cb(void *data, void *hint)
{
    (void)data;
    struct buf *b = hint;
    pool_put(b->pool, b);
}

/* ------------------------------------------------------------ client */

struct field_state {
    char name[SURGE_MAX_NAME + 1];
    uint64_t global_size;         /* elements */
    uint64_t offset;              /* this rank's first element */
    uint64_t count;               /* this rank's elements */
    int64_t recent[RECENT_STEPS]; /* ring of the last steps sent */
    uint32_t nrecent;             /* valid entries in recent */
    uint32_t head;                /* next slot to overwrite */
};

/* The connection to one server rank (the only one, with a server of one
 * rank). Each has its own packing state: a packed message goes to one
 * rank. */
struct conn {
    void *sock; /* DEALER; NULL while not connected */
    char endpoint[MAX_ENDPOINT + 1];
    uint32_t index;  /* server rank */
    int session;     /* welcomed: this rank holds our session */
    int got_bye_ack; /* close: this rank confirmed */
    uint64_t bye_ack_slices;
    uint64_t slices_sent;   /* data items sent to this rank */
    struct buf *pend;       /* payload being packed, or NULL */
    size_t pend_bytes;      /* bytes used in pend */
    uint64_t pend_since_ns; /* when the first item was added */
    surge_msg pend_msg;     /* its data header (type DATA) */
};

struct surge_client {
    void *ctx;                       /* ZeroMQ context (one per client) */
    char endpoint[MAX_ENDPOINT + 1]; /* the one given (options.endpoint) */
    struct conn *conns;              /* (nconns): one per server rank */
    uint32_t nconns;   /* R, the server's ranks (1: today's server) */
    uint8_t route;     /* enum surge_route, with nconns > 1 */
    uint32_t nsockets; /* sockets made so far (each its own routing id) */
    bool curve;        /* the connection uses CURVE (options.curve_keys) */
    int64_t sim;
    uint32_t rank;
    int timeout_ms;
    int flush_ms;
    size_t coalesce_cap;  /* payload bytes per packed message;
                             0 = no packing */
    uint64_t max_payload; /* from the welcome */
    uint32_t nfields;
    uint32_t last_field;        /* index of the last field sent */
    struct field_state *fields; /* (nfields) */

    int failed; /* sticky error (reject, broken socket) */
    char last_error[512];

    surge_msg scratch; /* encode/decode of other messages */
    unsigned char hdr[SURGE_MAX_HEADER_BYTES];
    unsigned char hello[SURGE_MAX_HEADER_BYTES]; /* encoded, for each rank */
    size_t hello_len;

    surge_client_stats stats;
    struct pool pool;
};

static void set_error(surge_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void
set_error(surge_client *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_text(c->last_error, sizeof c->last_error, fmt, ap);
    va_end(ap);
}

static int
deadline_left_ms(uint64_t deadline_ns)
{
    uint64_t now = surge_now_ns();
    if (now >= deadline_ns) {
        return 0;
    }
    uint64_t ms = (deadline_ns - now + 999999) / 1000000;
    return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

/* Handle one message from the server. A reject makes the client fail for
 * good; a bye_ack is recorded; anything else is ignored (a welcome echo,
 * or garbage we have no use for). */
static void
handle_incoming(surge_client *c, struct conn *k, const void *hdr, size_t len)
{
    const char *why = NULL;
    surge_msg *m = &c->scratch;
    if (surge_proto_decode(hdr, len, m, &why) != 0) {
        return;
    }
    if (m->type == SURGE_MSG_REJECT) {
        c->failed =
            m->u.reject.code == SURGE_ETOKEN ? SURGE_ETOKEN : SURGE_EREJECTED;
        if (c->nconns > 1) {
            set_error(c, "server rank %u (%s) rejected this client: %s",
                      k->index, k->endpoint, m->u.reject.reason);
        } else {
            set_error(c, "server rejected this client: %s", m->u.reject.reason);
        }
    } else if (m->type == SURGE_MSG_BYE_ACK && m->u.bye_ack.sim == c->sim &&
               m->u.bye_ack.rank == c->rank) {
        k->got_bye_ack = 1;
        k->bye_ack_slices = m->u.bye_ack.slices;
    }
}

/* Receive every message waiting, without blocking. Extra frames of a
 * message are read and dropped. */
static void
drain_incoming(surge_client *c, struct conn *k)
{
    for (;;) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, k->sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&msg);
            return;
        }
        int more = zmq_msg_more(&msg);
        handle_incoming(c, k, zmq_msg_data(&msg), zmq_msg_size(&msg));
        zmq_msg_close(&msg);
        while (more) {
            zmq_msg_init(&msg);
            if (zmq_msg_recv(&msg, k->sock, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&msg);
                return;
            }
            more = zmq_msg_more(&msg);
            zmq_msg_close(&msg);
        }
    }
}

/* Wait until the socket can take a message, watching for incoming ones
 * meanwhile. Returns 0, SURGE_ETIMEDOUT, or the client's failure. */
static int
wait_writable(surge_client *c, struct conn *k, uint64_t deadline_ns)
{
    for (;;) {
        zmq_pollitem_t it = {k->sock, 0, ZMQ_POLLIN | ZMQ_POLLOUT, 0};
        int left = deadline_left_ms(deadline_ns);
        int rc = zmq_poll(&it, 1, left);
        if (rc < 0 && zmq_errno() != EINTR) {
            return -zmq_errno();
        }
        if (rc > 0 && (it.revents & ZMQ_POLLIN)) {
            drain_incoming(c, k);
            if (c->failed) {
                return c->failed;
            }
        }
        if (rc > 0 && (it.revents & ZMQ_POLLOUT)) {
            return 0;
        }
        if (left == 0) {
            return SURGE_ETIMEDOUT;
        }
    }
}

/* Send one frame, blocking (polling) up to the deadline when the pipe is
 * full. *msg is consumed on success and left for the caller on failure. */
static int
send_frame(surge_client *c, struct conn *k, zmq_msg_t *msg, int more,
           uint64_t deadline_ns)
{
    int flags = ZMQ_DONTWAIT | (more ? ZMQ_SNDMORE : 0);
    uint64_t t0 = 0;
    for (;;) {
        if (zmq_msg_send(msg, k->sock, flags) >= 0) {
            if (t0 != 0) {
                c->stats.send_wait_ns += surge_now_ns() - t0;
            }
            return 0;
        }
        int e = zmq_errno();
        if (e == EINTR) {
            continue;
        }
        if (e != EAGAIN) {
            return -e;
        }
        if (t0 == 0) {
            t0 = surge_now_ns();
        }
        int rc = wait_writable(c, k, deadline_ns);
        if (rc != 0) {
            c->stats.send_wait_ns += surge_now_ns() - t0;
            return rc;
        }
    }
}

/* Send header + optional payload buffer *bp. The payload frame is built
 * only once the header frame is accepted, so on a timeout or reject the
 * buffer is still the caller's (*bp unchanged) and nothing was sent. On
 * success, and on the one failure after the header went out, ZeroMQ owns
 * the buffer and *bp is set to NULL. */
static int
send_message(surge_client *c, struct conn *k, const void *hdr, size_t hdr_len,
             struct buf **bp, size_t payload_len, uint64_t deadline_ns)
{
    struct buf *b = bp != NULL ? *bp : NULL;
    zmq_msg_t h, p;
    int rc;

    if (zmq_msg_init_size(&h, hdr_len) != 0) {
        return -ENOMEM;
    }
    memcpy(zmq_msg_data(&h), hdr, hdr_len);
    rc = send_frame(c, k, &h, b != NULL, deadline_ns);
    if (rc != 0) {
        zmq_msg_close(&h);
        return rc;
    }
    if (b == NULL) {
        return 0;
    }
    *bp = NULL;
    /* From here the socket holds half a message: any failure breaks the
     * stream for good. libzmq counts the HWM per complete message, so a
     * payload frame after an accepted header is never refused for room. */
    if (zmq_msg_init_data(&p, b->data, payload_len, buf_free_cb, b) != 0) {
        pool_put(&c->pool, b);
        rc = SURGE_EINTERNAL;
    } else {
        rc = send_frame(c, k, &p, 0, deadline_ns);
        if (rc != 0) {
            zmq_msg_close(&p); /* runs buf_free_cb */
        }
    }
    if (rc != 0) {
        c->failed = SURGE_EINTERNAL;
        set_error(c, "ZeroMQ refused a payload frame after its header (%s)",
                  surge_strerror(rc));
        return SURGE_EINTERNAL;
    }
    return 0;
}

static uint64_t
deadline_from_now(const surge_client *c)
{
    return surge_now_ns() + (uint64_t)c->timeout_ms * 1000000u;
}

static int
send_error(surge_client *c, struct conn *k, int rc)
{
    if (rc == SURGE_ETIMEDOUT) {
        set_error(c,
                  "send blocked for %d ms: the surge server at %s is not "
                  "reading (backpressure) or is gone",
                  c->timeout_ms, k->endpoint);
    } else if (rc == SURGE_EREJECTED || rc == SURGE_ETOKEN) {
        /* last_error already holds the server's reason */
    } else {
        set_error(c, "send to %s failed: %s", k->endpoint,
                  rc > -4096 && rc < 0 ? zmq_strerror(-rc)
                                       : surge_strerror(rc));
    }
    return rc;
}

/* Send the packed slices, if any. */
static int
flush_pending(surge_client *c, struct conn *k, uint64_t deadline_ns)
{
    if (k->pend == NULL || k->pend_msg.u.data.nitems == 0) {
        return 0;
    }
    int n = surge_proto_encode(&k->pend_msg, c->hdr, sizeof c->hdr);
    if (n < 0) {
        /* Cannot happen with items validated at send; keep the data. */
        set_error(c, "cannot encode a data header: %s", surge_strerror(n));
        return SURGE_EINTERNAL;
    }
    size_t bytes = k->pend_bytes;
    uint32_t nitems = k->pend_msg.u.data.nitems;
    int rc =
        send_message(c, k, c->hdr, (size_t)n, &k->pend, bytes, deadline_ns);
    if (rc != 0) {
        /* On a timeout the packed slices stay pending (k->pend kept) and
         * a later flush or close sends them. */
        return send_error(c, k, rc);
    }
    k->pend_bytes = 0;
    k->pend_msg.u.data.nitems = 0;
    k->slices_sent += nitems;
    c->stats.slices_sent += nitems;
    c->stats.messages_sent++;
    c->stats.bytes_sent += bytes;
    return 0;
}

static void
copy_values(void *dst, const void *src, uint64_t count, surge_dtype dtype)
{
    if (dtype == SURGE_FLOAT32) {
        memcpy(dst, src, count * sizeof(float));
        return;
    }
    float *d = dst;
    const double *s = src;
    for (uint64_t i = 0; i < count; i++) {
        d[i] = (float)s[i]; /* round to nearest, as the header says */
    }
}

static int
find_field(surge_client *c, const char *name)
{
    if (name == NULL) {
        return -1;
    }
    if (c->last_field < c->nfields &&
        strcmp(c->fields[c->last_field].name, name) == 0) {
        return (int)c->last_field;
    }
    for (uint32_t i = 0; i < c->nfields; i++) {
        if (strcmp(c->fields[i].name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

static bool
seen_step(const struct field_state *f, int64_t step)
{
    for (uint32_t i = 0; i < f->nrecent; i++) {
        if (f->recent[i] == step) {
            return true;
        }
    }
    return false;
}

static void
remember_step(struct field_state *f, int64_t step)
{
    f->recent[f->head] = step;
    f->head = (f->head + 1) % RECENT_STEPS;
    if (f->nrecent < RECENT_STEPS) {
        f->nrecent++;
    }
}

/* The server rank a step goes to (docs/protocol.md, "Server ranks"): all
 * ranks of a simulation compute the same, so a step is assembled on one
 * server rank. */
static struct conn *
route(surge_client *c, int64_t step)
{
    if (c->nconns == 1) {
        return &c->conns[0];
    }
    uint64_t key =
        c->route == SURGE_ROUTE_SIM ? (uint64_t)c->sim : (uint64_t)step;
    return &c->conns[key % c->nconns];
}

SURGE_API int
surge_client_send_checked(surge_client *c, const char *field, int64_t step,
                          double time, const void *data, uint64_t count,
                          surge_dtype dtype)
{
    if (c == NULL) {
        return -EINVAL;
    }
    if (c->failed) {
        return c->failed;
    }
    int fi = find_field(c, field);
    if (fi >= 0 && count != c->fields[fi].count) {
        /* The one thing the unchecked form cannot see: a buffer of another
         * length than this rank's slice. Nothing is sent. */
        set_error(c,
                  "field \"%s\" step %lld: %llu elements given, this rank "
                  "declared %llu (offset %llu of %llu)",
                  c->fields[fi].name, (long long)step,
                  (unsigned long long)count,
                  (unsigned long long)c->fields[fi].count,
                  (unsigned long long)c->fields[fi].offset,
                  (unsigned long long)c->fields[fi].global_size);
        return SURGE_EBOUNDS;
    }
    return surge_client_send(c, field, step, time, data, dtype);
}

SURGE_API int
surge_client_send(surge_client *c, const char *field, int64_t step, double time,
                  const void *data, surge_dtype dtype)
{
    if (c == NULL) {
        return -EINVAL;
    }
    if (c->failed) {
        return c->failed;
    }
    int fi = find_field(c, field);
    if (fi < 0) {
        set_error(c, "field \"%s\" was not declared at open",
                  field != NULL ? field : "(null)");
        return SURGE_EFIELD;
    }
    struct field_state *f = &c->fields[fi];
    if (dtype != SURGE_FLOAT32 && dtype != SURGE_FLOAT64) {
        set_error(c,
                  "field \"%s\": dtype %d is neither SURGE_FLOAT32 nor "
                  "SURGE_FLOAT64",
                  f->name, (int)dtype);
        return SURGE_EDTYPE;
    }
    if (step < 0) {
        set_error(c, "field \"%s\": step %lld is negative", f->name,
                  (long long)step);
        return -EINVAL;
    }
    if (!isfinite(time)) {
        set_error(c, "field \"%s\" step %lld: time is not finite", f->name,
                  (long long)step);
        return -EINVAL;
    }
    if (seen_step(f, step)) {
        set_error(c, "field \"%s\": step %lld was already sent", f->name,
                  (long long)step);
        return SURGE_EDUPLICATE;
    }
    if (f->count > 0 && data == NULL) {
        set_error(c, "field \"%s\" step %lld: data is NULL", f->name,
                  (long long)step);
        return -EINVAL;
    }
    c->last_field = (uint32_t)fi;
    struct conn *k = route(c, step);

    /* A reject may be waiting (server restarted and does not know us). */
    drain_incoming(c, k);
    if (c->failed) {
        return c->failed;
    }
    if (f->count == 0) {
        remember_step(f, step);
        return 0; /* nothing of this field lives on this rank */
    }

    uint64_t deadline = 0;
    size_t bytes = (size_t)f->count * sizeof(float);
    surge_data_item item = {step, time, (uint32_t)fi, f->offset, f->count};
    int rc;

    if (k->pend != NULL) {
        bool expired = c->flush_ms == 0 || surge_now_ns() - k->pend_since_ns >=
                                               (uint64_t)c->flush_ms * 1000000u;
        bool full = bytes < c->coalesce_cap &&
                    (k->pend_bytes + bytes > c->coalesce_cap ||
                     k->pend_msg.u.data.nitems >= SURGE_MAX_ITEMS);
        if (expired || full) {
            deadline = deadline_from_now(c);
            rc = flush_pending(c, k, deadline);
            if (rc != 0) {
                return rc;
            }
        }
    }

    if (bytes < c->coalesce_cap) {
        if (k->pend == NULL) {
            k->pend = pool_get(&c->pool, c->coalesce_cap);
            if (k->pend == NULL) {
                set_error(c, "out of memory for a %zu-byte buffer",
                          c->coalesce_cap);
                return -ENOMEM;
            }
            k->pend_bytes = 0;
            k->pend_since_ns = surge_now_ns();
        }
        copy_values(k->pend->data + k->pend_bytes, data, f->count, dtype);
        k->pend_bytes += bytes;
        k->pend_msg.u.data.items[k->pend_msg.u.data.nitems++] = item;
        remember_step(f, step);
        if (k->pend_bytes == c->coalesce_cap ||
            k->pend_msg.u.data.nitems == SURGE_MAX_ITEMS) {
            return flush_pending(
                c, k, deadline != 0 ? deadline : deadline_from_now(c));
        }
        return 0;
    }

    /* A large slice: its own message, header of one item. */
    surge_msg *m = &c->scratch;
    m->type = SURGE_MSG_DATA;
    m->u.data.sim = c->sim;
    m->u.data.rank = c->rank;
    m->u.data.dtype = SURGE_WIRE_F32;
    m->u.data.nitems = 1;
    m->u.data.items[0] = item;
    int n = surge_proto_encode(m, c->hdr, sizeof c->hdr);
    if (n < 0) {
        set_error(c, "cannot encode a data header: %s", surge_strerror(n));
        return SURGE_EINTERNAL;
    }
    struct buf *b = pool_get(&c->pool, bytes);
    if (b == NULL) {
        set_error(c, "out of memory for a %zu-byte buffer", bytes);
        return -ENOMEM;
    }
    copy_values(b->data, data, f->count, dtype);
    rc = send_message(c, k, c->hdr, (size_t)n, &b, bytes,
                      deadline != 0 ? deadline : deadline_from_now(c));
    if (b != NULL) {
        pool_put(&c->pool, b); /* not sent: the caller may retry */
    }
    if (rc != 0) {
        return send_error(c, k, rc);
    }
    remember_step(f, step);
    k->slices_sent++;
    c->stats.slices_sent++;
    c->stats.messages_sent++;
    c->stats.bytes_sent += bytes;
    return 0;
}

SURGE_API int
surge_client_flush(surge_client *c)
{
    if (c == NULL) {
        return -EINVAL;
    }
    if (c->failed) {
        return c->failed;
    }
    uint64_t deadline = deadline_from_now(c);
    for (uint32_t i = 0; i < c->nconns; i++) {
        int rc = flush_pending(c, &c->conns[i], deadline);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

/* ------------------------------------------------------------ options */

static _Thread_local double env_params[SURGE_MAX_PARAMS];
static _Thread_local char env_endpoint[MAX_ENDPOINT + 1];
static _Thread_local char env_token[SURGE_MAX_TOKEN + 1];
static _Thread_local char env_run_key[SURGE_RUN_KEY_HEX + 1];
static _Thread_local char env_curve_keys[MAX_PATH_LEN + 1];

static int
env_int(const char *var, int64_t min, int64_t max, int64_t *out, bool *set)
{
    const char *s = getenv(var);
    int64_t v;
    *set = false;
    if (s == NULL) {
        return 0;
    }
    int rc = surge_parse_int64(s, &v);
    if (rc == -ERANGE || (rc == 0 && (v < min || v > max))) {
        return options_fail("%s: \"%s\" is out of range (%lld..%lld)", var, s,
                            (long long)min, (long long)max);
    }
    if (rc != 0) {
        return options_fail("%s: \"%s\" is not an integer", var, s);
    }
    *out = v;
    *set = true;
    return 0;
}

static int
env_string(const char *var, char *dst, size_t cap, const char **out)
{
    const char *s = getenv(var);
    if (s == NULL) {
        return 0;
    }
    size_t n = strlen(s);
    if (n > cap) {
        return options_fail("%s: longer than %zu bytes", var, cap);
    }
    memcpy(dst, s, n + 1);
    *out = dst;
    return 0;
}

/* "1.5, 2,-3e2": numbers separated by commas, spaces around them allowed.
 * An empty or all-space value means no parameters. */
static int
env_params_parse(const char *s, size_t *nparams)
{
    char item[128];
    size_t n = 0;
    const char *p = s;

    while (*p == ' ' || *p == '\t') {
        p++;
    }
    if (*p == '\0') {
        *nparams = 0;
        return 0;
    }
    for (;;) {
        const char *start = p;
        const char *comma = strchr(p, ',');
        const char *end = comma != NULL ? comma : p + strlen(p);
        while (start < end && (*start == ' ' || *start == '\t')) {
            start++;
        }
        const char *stop = end;
        while (stop > start && (stop[-1] == ' ' || stop[-1] == '\t')) {
            stop--;
        }
        size_t len = (size_t)(stop - start);
        if (n >= SURGE_MAX_PARAMS) {
            return options_fail("SURGE_PARAMS: more than %d values",
                                SURGE_MAX_PARAMS);
        }
        if (len == 0 || len >= sizeof item) {
            return options_fail("SURGE_PARAMS: value %zu is %s", n + 1,
                                len == 0 ? "empty" : "too long");
        }
        memcpy(item, start, len);
        item[len] = '\0';
        if (surge_parse_double(item, &env_params[n]) != 0) {
            return options_fail("SURGE_PARAMS: value %zu (\"%s\") is not a "
                                "finite number",
                                n + 1, item);
        }
        n++;
        if (comma == NULL) {
            break;
        }
        p = comma + 1;
    }
    *nparams = n;
    return 0;
}

SURGE_API const char *
surge_client_options_error(void)
{
    return options_error;
}

SURGE_API int
surge_client_options_init(surge_client_options *opts)
{
    int64_t v;
    bool set;
    int rc;

    options_error[0] = '\0';
    if (opts == NULL) {
        return options_fail("options: NULL pointer");
    }
    memset(opts, 0, sizeof *opts);
    opts->sim_id = 0;
    opts->rank = 0;
    opts->nranks = 1;
    opts->token = "";
    opts->timeout_ms = DEFAULT_TIMEOUT_MS;
    opts->coalesce_bytes = DEFAULT_COALESCE_BYTES;
    opts->flush_ms = DEFAULT_FLUSH_MS;
    opts->sndhwm_bytes = DEFAULT_SNDHWM_BYTES;

    if ((rc = env_string("SURGE_ENDPOINT", env_endpoint, MAX_ENDPOINT,
                         &opts->endpoint)) ||
        (rc = env_string("SURGE_TOKEN", env_token, SURGE_MAX_TOKEN,
                         &opts->token)) ||
        (rc = env_string("SURGE_RUN_KEY", env_run_key, SURGE_RUN_KEY_HEX,
                         &opts->run_key)) ||
        (rc = env_string("SURGE_CURVE_KEYS", env_curve_keys, MAX_PATH_LEN,
                         &opts->curve_keys))) {
        return rc;
    }
    if ((rc = env_int("SURGE_SIM_ID", 0, INT64_MAX, &v, &set))) {
        return rc;
    }
    if (set) {
        opts->sim_id = v;
    }
    const char *ps = getenv("SURGE_PARAMS");
    if (ps != NULL) {
        if ((rc = env_params_parse(ps, &opts->nparams))) {
            return rc;
        }
        opts->params = env_params;
    }
    if ((rc = env_int("SURGE_TIMEOUT_MS", 1, INT32_MAX, &v, &set))) {
        return rc;
    }
    if (set) {
        opts->timeout_ms = (int)v;
    }
    if ((rc = env_int("SURGE_COALESCE_BYTES", 0, SURGE_MAX_PAYLOAD_BYTES, &v,
                      &set))) {
        return rc;
    }
    if (set) {
        opts->coalesce_bytes = (size_t)v;
    }
    if ((rc = env_int("SURGE_FLUSH_MS", 0, INT32_MAX, &v, &set))) {
        return rc;
    }
    if (set) {
        opts->flush_ms = (int)v;
    }
    if ((rc = env_int("SURGE_SNDHWM_BYTES", 1, INT64_MAX, &v, &set))) {
        return rc;
    }
    if (set) {
        opts->sndhwm_bytes = (uint64_t)v;
    }
    if ((rc = env_int("SURGE_STEPS", 0, (int64_t)SURGE_MAX_STEPS, &v, &set))) {
        return rc;
    }
    if (set) {
        opts->steps = (uint64_t)v;
    }

    /* Rank and size from whichever launcher started us. */
    static const char *const rank_vars[][2] = {
        {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"},
        {"PMIX_RANK", NULL},
        {"SLURM_PROCID", "SLURM_NTASKS"},
    };
    for (size_t i = 0; i < sizeof rank_vars / sizeof rank_vars[0]; i++) {
        bool rset, sset = false;
        int64_t r = 0, n = 0;
        if ((rc =
                 env_int(rank_vars[i][0], 0, SURGE_MAX_RANKS - 1, &r, &rset))) {
            return rc;
        }
        if (!rset) {
            continue;
        }
        if (rank_vars[i][1] != NULL &&
            (rc = env_int(rank_vars[i][1], 1, SURGE_MAX_RANKS, &n, &sset))) {
            return rc;
        }
        /* PMIX_RANK comes without a size: nranks stays as it is, and
         * open() names the mismatch unless the caller sets it (e.g. with
         * surge_client_options_set_comm). */
        opts->rank = (int32_t)r;
        if (sset) {
            opts->nranks = (int32_t)n;
        }
        if (sset && r >= n) {
            return options_fail("%s: rank %lld is not below %s=%lld",
                                rank_vars[i][0], (long long)r, rank_vars[i][1],
                                (long long)n);
        }
        break;
    }
    return 0;
}

/* ------------------------------------------------------------ open */

static int
check_options(const surge_client_options *o)
{
    if (o->endpoint == NULL || o->endpoint[0] == '\0') {
        return open_fail(SURGE_ECONFIG, "no endpoint: set SURGE_ENDPOINT or "
                                        "options.endpoint");
    }
    if (strlen(o->endpoint) > MAX_ENDPOINT) {
        return open_fail(SURGE_ECONFIG,
                         "options.endpoint: longer than %d "
                         "bytes",
                         MAX_ENDPOINT);
    }
    if (o->token != NULL && strlen(o->token) > SURGE_MAX_TOKEN) {
        return open_fail(SURGE_ECONFIG, "options.token: longer than %d bytes",
                         SURGE_MAX_TOKEN);
    }
    if (o->run_key != NULL && o->run_key[0] != '\0') {
        size_t n = strspn(o->run_key, "0123456789abcdef");
        if (n != SURGE_RUN_KEY_HEX || o->run_key[n] != '\0') {
            return open_fail(SURGE_ECONFIG,
                             "options.run_key: must be %d "
                             "lowercase hex digits",
                             SURGE_RUN_KEY_HEX);
        }
    }
    if (o->curve_keys != NULL && strlen(o->curve_keys) > MAX_PATH_LEN) {
        return open_fail(SURGE_ECONFIG,
                         "options.curve_keys: longer than %d bytes",
                         MAX_PATH_LEN);
    }
    if (o->sim_id < 0) {
        return open_fail(SURGE_ECONFIG, "options.sim_id: %lld is negative",
                         (long long)o->sim_id);
    }
    if (o->nranks < 1 || o->nranks > SURGE_MAX_RANKS) {
        return open_fail(SURGE_ECONFIG, "options.nranks: %d is not in 1..%d",
                         (int)o->nranks, SURGE_MAX_RANKS);
    }
    if (o->rank < 0 || o->rank >= o->nranks) {
        return open_fail(SURGE_ECONFIG,
                         "options.rank: %d is not in 0..%d (nranks - 1)",
                         (int)o->rank, (int)o->nranks - 1);
    }
    if (o->nparams > SURGE_MAX_PARAMS) {
        return open_fail(SURGE_ECONFIG, "options.nparams: %zu is over %d",
                         o->nparams, SURGE_MAX_PARAMS);
    }
    if (o->nparams > 0 && o->params == NULL) {
        return open_fail(SURGE_ECONFIG,
                         "options.params: NULL with nparams "
                         "%zu",
                         o->nparams);
    }
    for (size_t i = 0; i < o->nparams; i++) {
        if (!isfinite(o->params[i])) {
            return open_fail(SURGE_ECONFIG,
                             "options.params[%zu]: not a finite number", i);
        }
    }
    if (o->nfields < 1 || o->nfields > SURGE_MAX_FIELDS || o->fields == NULL) {
        return open_fail(SURGE_ECONFIG, "options.fields: need 1..%d fields",
                         SURGE_MAX_FIELDS);
    }
    for (size_t i = 0; i < o->nfields; i++) {
        const surge_field *f = &o->fields[i];
        if (!surge_proto_valid_name(f->name)) {
            return open_fail(SURGE_ECONFIG,
                             "options.fields[%zu].name: must be 1..%d bytes "
                             "of [A-Za-z0-9_.-]",
                             i, SURGE_MAX_NAME);
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(o->fields[j].name, f->name) == 0) {
                return open_fail(SURGE_ECONFIG,
                                 "options.fields[%zu].name: \"%s\" declared "
                                 "twice",
                                 i, f->name);
            }
        }
        if (f->global_size < 1 || f->global_size > SURGE_MAX_FIELD_ELEMS) {
            return open_fail(SURGE_ECONFIG,
                             "options.fields[%zu] (\"%s\"): global_size must "
                             "be 1..2^30",
                             i, f->name);
        }
        if (f->offset > f->global_size ||
            f->count > f->global_size - f->offset) {
            return open_fail(SURGE_EBOUNDS,
                             "options.fields[%zu] (\"%s\"): offset %llu + "
                             "count %llu exceeds global_size %llu",
                             i, f->name, (unsigned long long)f->offset,
                             (unsigned long long)f->count,
                             (unsigned long long)f->global_size);
        }
    }
    if (o->timeout_ms < 1) {
        return open_fail(SURGE_ECONFIG, "options.timeout_ms: must be >= 1");
    }
    if (o->flush_ms < 0) {
        return open_fail(SURGE_ECONFIG, "options.flush_ms: must be >= 0");
    }
    if (o->sndhwm_bytes < 1) {
        return open_fail(SURGE_ECONFIG, "options.sndhwm_bytes: must be >= 1");
    }
    if (o->coalesce_bytes > SURGE_MAX_PAYLOAD_BYTES) {
        return open_fail(SURGE_ECONFIG,
                         "options.coalesce_bytes: over 2^31 bytes");
    }
    if (o->steps > SURGE_MAX_STEPS) {
        return open_fail(SURGE_ECONFIG, "options.steps: over 2^53");
    }
    return 0;
}

static void
client_free(surge_client *c)
{
    for (uint32_t i = 0; c->conns != NULL && i < c->nconns; i++) {
        struct conn *k = &c->conns[i];
        if (k->pend != NULL) {
            pool_put(&c->pool, k->pend);
            k->pend = NULL;
        }
        if (k->sock != NULL) {
            int zero = 0;
            zmq_setsockopt(k->sock, ZMQ_LINGER, &zero, sizeof zero);
            zmq_close(k->sock);
            k->sock = NULL;
        }
    }
    if (c->ctx != NULL) {
        /* Returns once every message is released: buffers are back. */
        while (zmq_ctx_term(c->ctx) != 0 && zmq_errno() == EINTR) {
        }
        c->ctx = NULL;
    }
    pool_fini(&c->pool);
    free(c->conns);
    free(c->fields);
    free(c);
}

static int
set_sockopt_int(void *sock, int opt, int value)
{
    return zmq_setsockopt(sock, opt, &value, sizeof value);
}

/* The high-water mark is in messages; the option is in bytes: divide by
 * the largest message this client will send. */
static int
hwm_messages(const surge_client_options *o, size_t coalesce_cap)
{
    uint64_t largest = coalesce_cap;
    for (size_t i = 0; i < o->nfields; i++) {
        uint64_t b = o->fields[i].count * sizeof(float);
        if (b >= coalesce_cap && b > largest) {
            largest = b;
        }
    }
    if (largest == 0) {
        largest = 1;
    }
    uint64_t n = o->sndhwm_bytes / largest;
    if (n < 2) {
        n = 2;
    }
    return n > 1000000 ? 1000000 : (int)n;
}

static void
random_routing_id(surge_client *c, unsigned char id[16])
{
    /* A unique id keeps the server's session across a reconnect of the
     * same socket; the first byte must not be 0 (reserved by ZeroMQ). */
    uint64_t a =
        surge_now_ns() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)c;
    uint64_t b = (uint64_t)c->sim * 0x9e3779b97f4a7c15ULL + c->rank;
    id[0] = 'S';
    for (int i = 1; i < 16; i++) {
        a ^= a >> 12;
        a ^= a << 25;
        a ^= a >> 27;
        id[i] = (unsigned char)((a * 0x2545f4914f6cdd1dULL + b) >> 56);
    }
}

/* Encryption and authentication of this connection (ZeroMQ CURVE) with
 * the keys of the client key file at path (common/auth.h). */
static int
curve_setup(surge_client *c, void *sock, const char *path)
{
    surge_curve_keys k;
    char err[512];
    if (!zmq_has("curve")) {
        return open_fail(SURGE_ECONFIG, "options.curve_keys: this libzmq "
                                        "was built without CURVE");
    }
    int rc = surge_curve_keys_load(path, 0, &k, err, sizeof err);
    if (rc == 0 && (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, k.server_key,
                                   sizeof k.server_key) != 0 ||
                    zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, k.public_key,
                                   sizeof k.public_key) != 0 ||
                    zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, k.secret_key,
                                   sizeof k.secret_key) != 0)) {
        snprintf(err, sizeof err, "cannot set the CURVE keys: %s",
                 zmq_strerror(zmq_errno()));
        rc = SURGE_EINTERNAL;
    }
    explicit_bzero(&k, sizeof k);
    if (rc != 0) {
        return open_fail(rc, "options.curve_keys: %s", err);
    }
    c->curve = true;
    return 0;
}

SURGE_API const char *
surge_client_open_error(void)
{
    return open_error;
}

/* Connect conn k to endpoint ep with this client's socket options (the
 * same for every server rank). 0 or an open_fail code. */
static int
conn_connect(surge_client *c, struct conn *k, const char *ep,
             const surge_client_options *o, const unsigned char id[16])
{
    snprintf(k->endpoint, sizeof k->endpoint, "%s", ep);
    k->pend_msg.type = SURGE_MSG_DATA;
    k->pend_msg.u.data.sim = c->sim;
    k->pend_msg.u.data.rank = c->rank;
    k->pend_msg.u.data.dtype = SURGE_WIRE_F32;
    k->sock = zmq_socket(c->ctx, ZMQ_DEALER);
    if (k->sock == NULL) {
        return open_fail(-ENOMEM, "cannot create a ZeroMQ socket: %s",
                         zmq_strerror(zmq_errno()));
    }
    int hwm = hwm_messages(o, c->coalesce_cap);
    int64_t maxmsg = MAX_INCOMING;
    /* One routing id per server rank: two of the list's entries that
     * reach the same ROUTER (a lying or misconfigured server) then give
     * two sessions whose welcomes disagree, not a refused connection. */
    unsigned char rid[16];
    memcpy(rid, id, sizeof rid);
    rid[15] = (unsigned char)(rid[15] + c->nsockets++);
    if (set_sockopt_int(k->sock, ZMQ_LINGER, 0) != 0 ||
        set_sockopt_int(k->sock, ZMQ_IMMEDIATE, 1) != 0 ||
        set_sockopt_int(k->sock, ZMQ_SNDHWM, hwm) != 0 ||
        set_sockopt_int(k->sock, ZMQ_RCVHWM, 64) != 0 ||
        set_sockopt_int(k->sock, ZMQ_SNDTIMEO, o->timeout_ms) != 0 ||
        set_sockopt_int(k->sock, ZMQ_RCVTIMEO, o->timeout_ms) != 0 ||
        set_sockopt_int(k->sock, ZMQ_HEARTBEAT_IVL, HEARTBEAT_IVL_MS) != 0 ||
        set_sockopt_int(k->sock, ZMQ_HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS) !=
            0 ||
        zmq_setsockopt(k->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) != 0 ||
        zmq_setsockopt(k->sock, ZMQ_ROUTING_ID, rid, sizeof rid) != 0) {
        return open_fail(SURGE_EINTERNAL, "cannot set ZeroMQ options: %s",
                         zmq_strerror(zmq_errno()));
    }
    if (o->curve_keys != NULL && o->curve_keys[0] != '\0') {
        int rc = curve_setup(c, k->sock, o->curve_keys);
        if (rc != 0) {
            return rc;
        }
    }
    if (zmq_connect(k->sock, k->endpoint) != 0) {
        return open_fail(
            SURGE_ECONFIG, "%s: ZeroMQ cannot connect to \"%s\": %s",
            k->index == 0 && c->nconns == 1 ? "options.endpoint"
                                            : "the server's list of ranks",
            k->endpoint, zmq_strerror(zmq_errno()));
    }
    return 0;
}

/* Say hello on conn k and wait (until deadline) for its welcome, left in
 * c->scratch. 0 or an open_fail code. */
static int
conn_hello(surge_client *c, struct conn *k, uint64_t deadline)
{
    surge_msg *m = &c->scratch;
    int rc = send_message(c, k, c->hello, c->hello_len, NULL, 0, deadline);
    if (rc == SURGE_ETIMEDOUT) {
        return open_fail(
            SURGE_ENOSERVER, "no surge server answered at %s within %d ms%s",
            k->endpoint, c->timeout_ms, c->curve ? CURVE_HINT : "");
    }
    if (rc != 0) {
        return open_fail(rc, "%s",
                         c->failed ? c->last_error : surge_strerror(rc));
    }
    for (;;) {
        zmq_pollitem_t it = {k->sock, 0, ZMQ_POLLIN, 0};
        int left = deadline_left_ms(deadline);
        int prc = zmq_poll(&it, 1, left);
        if (prc < 0 && zmq_errno() == EINTR) {
            continue;
        }
        if (prc <= 0) {
            return open_fail(SURGE_ENOSERVER,
                             "no surge server answered at %s within %d ms "
                             "(connected, but no welcome came)",
                             k->endpoint, c->timeout_ms);
        }
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, k->sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&msg);
            continue;
        }
        int more = zmq_msg_more(&msg);
        const char *why = NULL;
        int drc =
            surge_proto_decode(zmq_msg_data(&msg), zmq_msg_size(&msg), m, &why);
        zmq_msg_close(&msg);
        while (more) {
            zmq_msg_init(&msg);
            if (zmq_msg_recv(&msg, k->sock, ZMQ_DONTWAIT) < 0) {
                more = 0;
            } else {
                more = zmq_msg_more(&msg);
            }
            zmq_msg_close(&msg);
        }
        if (drc != 0) {
            /* A welcome with a bad server list lands here too: nothing
             * of it is used. */
            return open_fail(SURGE_EPROTO,
                             "the peer at %s answered with an invalid message "
                             "(%s): is it a surge server of this version?",
                             k->endpoint, why);
        }
        if (m->type == SURGE_MSG_REJECT) {
            rc = m->u.reject.code == SURGE_ETOKEN ? SURGE_ETOKEN
                                                  : SURGE_EREJECTED;
            return open_fail(rc, "server rejected this client: %s",
                             m->u.reject.reason);
        }
        if (m->type == SURGE_MSG_WELCOME && m->u.welcome.sim == c->sim &&
            m->u.welcome.rank == c->rank) {
            if (m->u.welcome.max_payload_bytes < c->max_payload ||
                c->max_payload == 0) {
                c->max_payload = m->u.welcome.max_payload_bytes;
            }
            return 0;
        }
        /* Anything else is not for this handshake: keep waiting. */
    }
}

/* The first welcome w named a server of w->nservers ranks: set up one
 * conn per rank (the first one, conn 0 so far, becomes w->server_rank's),
 * say hello to each rank this client will send to, and check that they
 * all describe the same server. 0 or an open_fail code. */
static int
open_ranks(surge_client *c, const surge_msg_welcome *first,
           const surge_client_options *o, const unsigned char id[16])
{
    uint32_t R = first->nservers;
    uint32_t here = first->server_rank;
    /* A copy: c->scratch is reused for every other rank's welcome. */
    surge_msg_welcome *w0 = malloc(sizeof *w0);
    struct conn *conns = calloc(R, sizeof *conns);
    if (w0 == NULL || conns == NULL) {
        free(w0);
        free(conns);
        return open_fail(-ENOMEM, "out of memory");
    }
    *w0 = *first;
    conns[here] = c->conns[0];
    conns[here].index = here;
    conns[here].session = !w0->redirect;
    if (w0->redirect && conns[here].sock != NULL) {
        /* Nothing goes to this rank: no connection left open to it. */
        zmq_close(conns[here].sock);
        conns[here].sock = NULL;
    }
    free(c->conns);
    c->conns = conns;
    c->nconns = R;
    c->route = w0->route;
    uint32_t home = (uint32_t)((uint64_t)c->sim % R);
    int rc = 0;
    if (w0->route == SURGE_ROUTE_STEP && w0->redirect) {
        rc = open_fail(SURGE_EPROTO,
                       "server rank %u at %s redirected this client, but its "
                       "server routes by step (a redirect only exists for "
                       "route \"sim\")",
                       here, c->endpoint);
    } else if (w0->route == SURGE_ROUTE_SIM && (home == here) == w0->redirect) {
        rc = open_fail(SURGE_EPROTO,
                       "server rank %u at %s %s sim %lld, which belongs to "
                       "rank %u of %u (route \"sim\")",
                       here, c->endpoint,
                       w0->redirect ? "redirected" : "opened a session for",
                       (long long)c->sim, home, R);
    }
    for (uint32_t r = 0; rc == 0 && r < R; r++) {
        if (r == here || (w0->route == SURGE_ROUTE_SIM && r != home)) {
            continue;
        }
        struct conn *k = &c->conns[r];
        k->index = r;
        rc = conn_connect(c, k, surge_proto_welcome_endpoint(w0, r), o, id);
        if (rc == 0) {
            rc = conn_hello(c, k, deadline_from_now(c));
        }
        if (rc != 0) {
            char why[512];
            snprintf(why, sizeof why, "%s", open_error);
            rc = open_fail(rc,
                           "server rank %u of %u (from the welcome of %s): "
                           "%s",
                           r, R, c->endpoint, why);
            break;
        }
        const surge_msg_welcome *w = &c->scratch.u.welcome;
        if (w->nservers != R || w->endpoints_len != w0->endpoints_len ||
            memcmp(w->endpoints, w0->endpoints, w0->endpoints_len) != 0 ||
            w->server_rank != r || w->route != w0->route || w->redirect) {
            rc = open_fail(SURGE_EPROTO,
                           "server rank %u at %s describes another server "
                           "than rank %u at %s did (%u ranks, it says it is "
                           "rank %u, route %s%s): refusing to send",
                           r, k->endpoint, here, c->endpoint, w->nservers,
                           w->server_rank,
                           w->route == SURGE_ROUTE_SIM ? "sim" : "step",
                           w->redirect ? ", redirect" : "");
            break;
        }
        k->session = 1;
    }
    free(w0);
    return rc;
}

SURGE_API int
surge_client_open(surge_client **out, const surge_client_options *o)
{
    surge_client *c;
    unsigned char id[16];
    int rc;

    open_error[0] = '\0';
    if (out == NULL || o == NULL) {
        return open_fail(SURGE_ECONFIG, "surge_client_open: NULL argument");
    }
    rc = check_options(o);
    if (rc != 0) {
        return rc;
    }
    c = calloc(1, sizeof *c);
    if (c == NULL) {
        return open_fail(-ENOMEM, "out of memory");
    }
    c->fields = calloc(o->nfields, sizeof *c->fields);
    c->conns = calloc(1, sizeof *c->conns);
    c->nconns = 1;
    if (c->fields == NULL || c->conns == NULL) {
        free(c->fields);
        free(c->conns);
        free(c);
        return open_fail(-ENOMEM, "out of memory");
    }
    snprintf(c->endpoint, sizeof c->endpoint, "%s", o->endpoint);
    c->sim = o->sim_id;
    c->rank = (uint32_t)o->rank;
    c->timeout_ms = o->timeout_ms;
    c->flush_ms = o->flush_ms;
    c->coalesce_cap = o->coalesce_bytes;
    c->nfields = (uint32_t)o->nfields;
    for (uint32_t i = 0; i < c->nfields; i++) {
        snprintf(c->fields[i].name, sizeof c->fields[i].name, "%s",
                 o->fields[i].name);
        c->fields[i].global_size = o->fields[i].global_size;
        c->fields[i].offset = o->fields[i].offset;
        c->fields[i].count = o->fields[i].count;
    }
    uint64_t cache = o->sndhwm_bytes * 2;
    pool_init(&c->pool, cache > POOL_CACHE_CAP ? POOL_CACHE_CAP : cache);

    c->ctx = zmq_ctx_new();
    if (c->ctx == NULL) {
        rc = open_fail(-ENOMEM, "cannot create a ZeroMQ context: %s",
                       zmq_strerror(zmq_errno()));
        goto fail;
    }
    random_routing_id(c, id);
    if (o->curve_keys != NULL && o->curve_keys[0] != '\0') {
        c->curve = true;
    }
    rc = conn_connect(c, &c->conns[0], c->endpoint, o, id);
    if (rc != 0) {
        goto fail;
    }

    /* hello, encoded once: every server rank gets the same */
    surge_msg *m = &c->scratch;
    memset(m, 0, sizeof *m);
    m->type = SURGE_MSG_HELLO;
    surge_msg_hello *h = &m->u.hello;
    /* The token never leaves this process: the hello carries the run key,
     * given (the launcher's SURGE_RUN_KEY) or derived from the token by
     * its holder (docs/protocol.md, "Trust"). */
    h->token[0] = '\0';
    if (o->run_key != NULL && o->run_key[0] != '\0') {
        snprintf(h->run_key, sizeof h->run_key, "%s", o->run_key);
    } else if (o->token != NULL && o->token[0] != '\0' &&
               surge_run_key(o->token, c->sim, h->run_key) != 0) {
        rc = open_fail(SURGE_EINTERNAL, "cannot derive the run key");
        goto fail;
    }
    h->sim = c->sim;
    h->rank = c->rank;
    h->nranks = (uint32_t)o->nranks;
    h->nparams = (uint32_t)o->nparams;
    for (size_t i = 0; i < o->nparams; i++) {
        h->params[i] = o->params[i];
    }
    h->nfields = c->nfields;
    for (uint32_t i = 0; i < c->nfields; i++) {
        memcpy(h->fields[i].name, c->fields[i].name, sizeof h->fields[i].name);
        h->fields[i].global_size = c->fields[i].global_size;
        h->fields[i].offset = c->fields[i].offset;
        h->fields[i].count = c->fields[i].count;
    }
    h->dtype = SURGE_WIRE_F32;
    h->steps = o->steps;
    int n = surge_proto_encode(m, c->hello, sizeof c->hello);
    if (n < 0) {
        rc = open_fail(SURGE_EINTERNAL, "cannot encode hello: %s",
                       surge_strerror(n));
        goto fail;
    }
    c->hello_len = (size_t)n;
    rc = conn_hello(c, &c->conns[0], deadline_from_now(c));
    if (rc != 0) {
        goto fail;
    }
    c->conns[0].session = 1;
    if (c->scratch.u.welcome.nservers > 0) {
        /* A server of several ranks (docs/protocol.md, "Server ranks"). */
        rc = open_ranks(c, &c->scratch.u.welcome, o, id);
        if (rc != 0) {
            goto fail;
        }
    }

    /* The server's limit on one data message bounds our packing and the
     * largest slice. */
    if (c->coalesce_cap > c->max_payload) {
        c->coalesce_cap = (size_t)c->max_payload;
    }
    for (uint32_t i = 0; i < c->nfields; i++) {
        uint64_t b = c->fields[i].count * sizeof(float);
        if (b > c->max_payload) {
            rc = open_fail(SURGE_ELIMIT,
                           "field \"%s\": this rank's slice is %llu bytes, "
                           "over the server's limit of %llu bytes per message",
                           c->fields[i].name, (unsigned long long)b,
                           (unsigned long long)c->max_payload);
            goto fail;
        }
    }
    *out = c;
    return 0;

fail:
    client_free(c);
    return rc;
}

/* ------------------------------------------------------------ close */

SURGE_API const char *
surge_client_close_error(void)
{
    return close_error;
}

static int close_fail(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int
close_fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_text(close_error, sizeof close_error, fmt, ap);
    va_end(ap);
    return code;
}

SURGE_API int
surge_client_close(surge_client **pc)
{
    int rc = 0;
    close_error[0] = '\0';
    if (pc == NULL || *pc == NULL) {
        return 0;
    }
    surge_client *c = *pc;
    *pc = NULL;
    if (c->failed) {
        rc = close_fail(c->failed, "%s", c->last_error);
        goto out;
    }
    /* One deadline for the whole close, whatever the number of ranks. */
    uint64_t deadline = deadline_from_now(c);
    surge_msg *m = &c->scratch;
    uint32_t waiting = 0;
    for (uint32_t i = 0; i < c->nconns; i++) {
        struct conn *k = &c->conns[i];
        if (!k->session) {
            continue;
        }
        rc = flush_pending(c, k, deadline);
        if (rc != 0) {
            rc = close_fail(rc, "%s", c->last_error);
            goto out;
        }
        m->type = SURGE_MSG_BYE;
        m->u.bye.sim = c->sim;
        m->u.bye.rank = c->rank;
        m->u.bye.slices = k->slices_sent;
        int n = surge_proto_encode(m, c->hdr, sizeof c->hdr);
        if (n < 0) {
            rc = close_fail(SURGE_EINTERNAL, "cannot encode bye");
            goto out;
        }
        rc = send_message(c, k, c->hdr, (size_t)n, NULL, 0, deadline);
        if (rc != 0) {
            send_error(c, k, rc);
            rc = close_fail(rc, "%s", c->last_error);
            goto out;
        }
        waiting++;
    }
    /* Every rank we said hello to confirms what it got from us. */
    zmq_pollitem_t *items = calloc(c->nconns, sizeof *items);
    struct conn **of = calloc(c->nconns, sizeof *of);
    if (items == NULL || of == NULL) {
        free(items);
        free(of);
        rc = close_fail(-ENOMEM, "out of memory");
        goto out;
    }
    while (waiting > 0 && !c->failed) {
        int nitems = 0;
        for (uint32_t i = 0; i < c->nconns; i++) {
            struct conn *k = &c->conns[i];
            if (k->session && !k->got_bye_ack) {
                items[nitems].socket = k->sock;
                items[nitems].events = ZMQ_POLLIN;
                of[nitems++] = k;
            }
        }
        int left = deadline_left_ms(deadline);
        int prc = zmq_poll(items, nitems, left);
        if (prc < 0 && zmq_errno() == EINTR) {
            continue;
        }
        if (prc < 0) {
            rc = close_fail(-zmq_errno(), "waiting for bye_ack: %s",
                            zmq_strerror(zmq_errno()));
            break;
        }
        if (prc == 0 && left == 0) {
            rc = close_fail(SURGE_ETIMEDOUT,
                            "the surge server at %s did not confirm the end "
                            "of this client within %d ms (%llu slices sent)",
                            of[0]->endpoint, c->timeout_ms,
                            (unsigned long long)of[0]->slices_sent);
            break;
        }
        for (int i = 0; i < nitems; i++) {
            if (items[i].revents & ZMQ_POLLIN) {
                drain_incoming(c, of[i]);
                waiting -= of[i]->got_bye_ack;
            }
        }
    }
    free(items);
    free(of);
    if (rc != 0) {
        goto out;
    }
    if (c->failed) {
        rc = close_fail(c->failed, "%s", c->last_error);
        goto out;
    }
    for (uint32_t i = 0; i < c->nconns; i++) {
        const struct conn *k = &c->conns[i];
        if (k->session && k->bye_ack_slices != k->slices_sent) {
            rc = close_fail(SURGE_EPROTO,
                            "the surge server at %s confirmed %llu of the %llu "
                            "slices this client sent",
                            k->endpoint, (unsigned long long)k->bye_ack_slices,
                            (unsigned long long)k->slices_sent);
            break;
        }
    }
out:
    /* Everything the server confirmed has arrived; on error we waited
     * long enough: no linger either way (client_free sets LINGER 0). */
    client_free(c);
    return rc;
}

SURGE_API void
surge_client_abort(surge_client **pc)
{
    if (pc == NULL || *pc == NULL) {
        return;
    }
    client_free(*pc);
    *pc = NULL;
}

SURGE_API const char *
surge_client_last_error(const surge_client *c)
{
    return c != NULL ? c->last_error : "";
}

SURGE_API void
surge_client_get_stats(const surge_client *c, surge_client_stats *out)
{
    if (out == NULL) {
        return;
    }
    if (c == NULL) {
        memset(out, 0, sizeof *out);
        return;
    }
    *out = c->stats;
}

SURGE_API const char *
surge_version(void)
{
    return PACKAGE_VERSION;
}
