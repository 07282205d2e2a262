/*
 * server/server.c - the I/O thread: libuv loop, ZeroMQ ROUTER and monitor,
 * backpressure, stop sequence, server.json and server-stats.json (see
 * server.h).
 *
 * Lock order: this file takes one lock, io_mu (a leaf: the consumer's
 * io_call requests; never held while calling anything else). The stores
 * lock internally (leaf locks); the consumer thread touches only the
 * stores, its own state, the uv_async handle and io_mu.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>
#include <zmq.h>

#include "common/auth.h"
#include "common/log.h"
#include "common/protocol.h"
#include "common/util.h"
#include "server/consumer.h"
#include "server/ingest.h"
#include "server/monitor.h"
#include "server/ranks.h"
#include "server/server.h"
#include "server/store.h"
#include "server/u64map.h"

#define COMPONENT "server"
#define PACKED_MSG_BYTES (256 * 1024) /* client's default packed message */
#define TICK_MS 200
#define RETRY_MS 1
#define DRAIN_BUDGET 1024 /* messages per turn of the loop */
#define REPLY_CAP (SURGE_MAX_HEADER_BYTES)
#define JI(x) json_integer((json_int_t)(x))
#define MPI_POLL_MS 20 /* server ranks: ranks->io is tested this often */
#define FIG_MS 1000    /* server ranks: figures go to rank 0 this often */
#define TAG_CTL 1      /* rank 0 -> ranks: {op, sim, seq} (int64) */
#define TAG_FIG 2      /* ranks -> rank 0: figures (uint64, FIG_N) */
#define TAG_ACK 3      /* ranks -> rank 0: {seq, code} of a control done */
#define TAG_RUNS 4     /* ranks -> rank 0: their runs table (bytes) */
#define END_ACK_MS                                                             \
    2000 /* END_RECEPTION's reply waits this long for the                      \
            ranks (under the launcher's ping timeout) */

/* A rank's figures, as they travel to rank 0: every counter (the struct
 * as an array: its fields are all uint64_t) and then these. */
#define NCOUNTERS (sizeof(surge_counters) / sizeof(uint64_t))
_Static_assert(sizeof(surge_counters) % sizeof(uint64_t) == 0,
               "surge_counters must be an array of uint64_t");
enum fig_extra {
    FX_RES_SIZE,        /* samples in the training store */
    FX_RES_CAP,         /* its slots */
    FX_RES_BYTES,       /* its bytes */
    FX_RES_CAP_BYTES,   /* its capacity, bytes */
    FX_TRAINER_SAMPLES, /* samples the consumer took */
    FX_SIMS_ACTIVE,     /* simulations open */
    FX_IDLE_MS,         /* since the last message received */
    FX_N
};
#define FIG_N (NCOUNTERS + FX_N)

/* What rank 0 knows of one rank (itself included). */
struct rank_fig {
    uint64_t v[FIG_N]; /* the latest figures */
    uint64_t at_ns;    /* when they came; 0 = none yet */
    uint64_t prev_ns;  /* the report before (for the rate) */
    uint64_t prev_samples;
    double rate; /* samples assembled per second, NaN unknown */
};

/* A small message in flight between ranks (a relayed control, an ack). */
struct relay {
    struct relay *next;
    int64_t buf[3]; /* MPI owns it until req completes */
    MPI_Request req;
};

/* Rank 0: the END_RECEPTION reply held until every rank applied it. */
struct end_wait {
    int active;
    int64_t seq;          /* the relay it waits for */
    int acks;             /* ranks that confirmed */
    uint64_t deadline_ns; /* reply anyway then, saying who did not */
    unsigned char rid[256];
    size_t rid_len;
    surge_msg reply;
};

/* A message read under backpressure from a peer with a session, held (its
 * frames moved, not copied) until the store has room again: reading goes
 * on meanwhile, so peers without a session are answered or dropped at once
 * instead of filling ZeroMQ's queues while nobody reads. */
struct held {
    struct held *next;
    zmq_msg_t rid, hdr, payload;
    int have_hdr, have_payload;
    unsigned npayload; /* payload frames (only the first is kept) */
    uint64_t total;    /* bytes of all frames */
};

enum phase {
    PHASE_RUNNING = 0, /* reading */
    PHASE_DRAINING,    /* stopped reading; consumer drains the store */
    PHASE_CLOSING      /* handles closing; the loop is about to end */
};

struct surge_server {
    const surge_server_options *o;
    char endpoint[256];      /* bound endpoint, port resolved */
    void *zctx;              /* ZeroMQ context */
    void *router;            /* clients talk to this */
    void *mon;               /* PAIR receiving the ROUTER's events */
    void *zap;               /* REP answering ZAP requests (CURVE), or NULL */
    surge_curve_keys *curve; /* --curve-keys, loaded; NULL = plain */
    surge_ratelimit zap_log; /* "refused a CURVE client" lines */
    uv_loop_t loop;
    uv_poll_t poll_router; /* on the ROUTER's ZMQ_FD */
    uv_poll_t poll_mon;    /* on the monitor PAIR's ZMQ_FD */
    uv_poll_t poll_zap;    /* on the ZAP REP's ZMQ_FD (CURVE only) */
    uv_timer_t tick;       /* timeouts, end condition */
    uv_timer_t retry;      /* store-full retry while paused */
    uv_timer_t stop_timer; /* bounds the drain after a stop */
    uv_timer_t more;       /* continues a drain cut short by its budget */
    uv_signal_t sigint, sigterm;
    uv_async_t wake;        /* consumer -> loop */
    int handles_open;       /* the uv handles above are initialized */
    int reading;            /* poll_router is active */
    int holding;            /* under backpressure: messages of peers with a
                               session go to the held list */
    uint64_t paused_at_ns;  /* when backpressure began */
    struct held *held_head; /* read under backpressure, in order */
    struct held *held_tail;
    uint64_t held_bytes;        /* frames of the held messages, bytes */
    surge_ratelimit refused_rl; /* log lines: over --max-connections */
    surge_ratelimit cut_rl;     /* log lines: pre-session abuse */
    enum phase phase;
    int stop_reason_end; /* stopping after END_RECEPTION */
    surge_store *train;
    surge_store *validation; /* NULL when nothing is held out */
    surge_ingest *ing;
    FILE *checksum; /* --checksum-log, or NULL */
    const surge_consumer_ops *cops;
    void *cstate;
    surge_consumer_ctx cctx;
    pthread_t cthread;
    int cthread_started;
    atomic_int consumer_done; /* set by the consumer thread */
    int consumer_rc;          /* written by the consumer thread before
                                 consumer_done */
    uint64_t start_ns;
    uint64_t last_msg_ns; /* last message received */
    uint64_t last_log_ns; /* last periodic progress line */
    unsigned char reply_buf[REPLY_CAP];
    surge_msg reply;        /* reply being encoded */
    surge_monitor *monitor; /* HTTP monitoring (server/monitor.h); NULL
                               with --http off */
    pthread_mutex_t io_mu;  /* guards io_req and io_closed */
    pthread_cond_t io_cv;   /* an io_call request ended */
    struct io_req *io_req;  /* posted by io_call, taken by on_wake */
    int io_closed;          /* the loop is closing: no more requests */
    int io_init;            /* io_mu and io_cv are initialized */
    /* Server ranks (server/ranks.h). R = 1: none of this is used. */
    const surge_ranks *ranks;   /* borrowed */
    surge_msg_welcome *servers; /* R > 1: every rank's endpoint, rank order */
    uv_timer_t mpi_timer;       /* R > 1: tests ranks->io (never blocks) */
    struct relay *relays;       /* rank 0: control sends in flight */
    struct rank_fig *figs;      /* rank 0: (R) every rank's figures */
    uint64_t fig_out[FIG_N];    /* ranks > 0: figures being sent */
    MPI_Request fig_req;        /* their send, or MPI_REQUEST_NULL */
    uint64_t fig_last_ns;       /* when figures were last taken */
    surge_counters sum;         /* rank 0, R > 1: counters summed over the
                                   ranks, what monitoring shows */
    struct rank_series *rank_series;   /* rank 0, R > 1: metric arguments */
    int64_t relay_seq;                 /* rank 0: controls relayed so far */
    int64_t defer_seq;                 /* rank 0: set while the message being
                                          handled is an END_RECEPTION to hold */
    struct end_wait end_wait;          /* rank 0: its held reply */
    int close_pending;                 /* rank 0: close once it is sent */
    uint64_t sum_active;               /* rank 0: open sims over the ranks */
    struct surge_run_info *runs_out;   /* ranks > 0: runs table being sent */
    MPI_Request runs_req;              /* its send, or MPI_REQUEST_NULL */
    struct surge_run_info **rank_runs; /* rank 0: (R) each rank's table */
    int *rank_nruns;                   /* rank 0: (R) entries in each */
};

/* A consumer's request to run a function on the I/O thread (io_call). */
struct io_req {
    surge_consumer_io_fn fn;
    void *arg;
    int rc;   /* fn's return */
    int done; /* fn ran (guarded by io_mu) */
};

static void begin_stop(surge_server *srv, int end_of_reception);
static int multi(const surge_server *srv);
static int all_ranks_idle(const surge_server *srv, uint64_t now);
static void relay_control(void *arg, int op, int64_t sim);
static void on_mpi(uv_timer_t *t);
static int exchange_endpoints(surge_server *srv);
static int status_ranks_cb(void *arg, json_t *root);
static int register_rank_series(surge_server *srv, surge_metrics *m);
static int collect_stats(surge_server *srv, json_t *mine);
static int rank_bind(const surge_server *srv, char *out, size_t cap);
static int mpi_wait(MPI_Request *req, double timeout_s, const char *what);
static void hold_end_reply(surge_server *srv, const void *rid, size_t len,
                           uint64_t now);
static void release_end_reply(surge_server *srv, uint64_t now);
static void rank_path(const surge_server *srv, const char *path, char *out,
                      size_t cap);
static int io_export_assembled(void *io, int (*cb)(void *, int64_t, int64_t),
                               void *arg);
static int io_export_finished(void *io, int (*cb)(void *, int64_t), void *arg);
static int io_export_counts(void *io, json_t **out);
static void counter_sections(const surge_counters *c, json_t *j);
static void on_retry(uv_timer_t *t);
static void drain_router(surge_server *srv);

/* ------------------------------------------------------------ replies */

static void
send_reply(surge_server *srv, const void *rid, size_t rid_len)
{
    surge_counters *c = surge_ingest_counters(srv->ing);
    int n =
        surge_proto_encode(&srv->reply, srv->reply_buf, sizeof srv->reply_buf);
    if (n <= 0) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "cannot encode a '%s' reply: %s",
                  surge_proto_type_name(srv->reply.type), surge_strerror(n));
        c->io.replies_dropped++;
        return;
    }
    if (zmq_send(srv->router, rid, rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_send(srv->router, srv->reply_buf, (size_t)n, ZMQ_DONTWAIT) < 0) {
        /* EHOSTUNREACH: the peer is gone (ROUTER_MANDATORY); EAGAIN: its
         * queue is full. Never wait for a peer. */
        c->io.replies_dropped++;
        return;
    }
    c->io.replies_sent++;
}

/* ------------------------------------------------------------ reading */

/* 1 when fd is a connection accepted on our endpoint: the descriptor a
 * message or a monitor event named may have been closed and reused since
 * (by another connection, the HTTP server...), and only ours may be cut. */
static int
fd_is_ours(const surge_server *srv, int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &len) != 0) {
        return 0;
    }
    const char *ep = srv->endpoint;
    if (strncmp(ep, "ipc://", 6) == 0 && ss.ss_family == AF_UNIX) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)&ss;
        return strncmp(un->sun_path, ep + 6, sizeof un->sun_path) == 0;
    }
    const char *colon = strrchr(ep, ':');
    uint64_t port = 0;
    if (strncmp(ep, "tcp://", 6) != 0 || colon == NULL ||
        surge_parse_uint64(colon + 1, &port) < 0) {
        return 0;
    }
    if (ss.ss_family == AF_INET) {
        return ntohs(((const struct sockaddr_in *)&ss)->sin_port) == port;
    }
    if (ss.ss_family == AF_INET6) {
        return ntohs(((const struct sockaddr_in6 *)&ss)->sin6_port) == port;
    }
    return 0;
}

/* Cut a client connection: ZeroMQ owns the descriptor, so shut it down
 * rather than close it; ZeroMQ then sees the end of the stream, closes
 * it and frees what it held for it. */
static void
cut_connection(surge_server *srv, int fd, surge_ratelimit *rl, const char *why)
{
    if (!fd_is_ours(srv, fd)) {
        return;
    }
    (void)shutdown(fd, SHUT_RDWR);
    uint64_t skipped = 0;
    if (!surge_ratelimit_allow(rl, surge_now_ns(), &skipped)) {
        return;
    }
    if (skipped > 0) {
        SURGE_LOG(SURGE_LOG_WARN, COMPONENT,
                  "connection cut: %s (%" PRIu64 " similar not logged)", why,
                  skipped);
    } else {
        SURGE_LOG(SURGE_LOG_WARN, COMPONENT, "connection cut: %s", why);
    }
}

static void
held_free(struct held *m)
{
    zmq_msg_close(&m->payload);
    zmq_msg_close(&m->hdr);
    zmq_msg_close(&m->rid);
}

/* Handle one message read (whole) from the router. */
static void
handle_one(surge_server *srv, struct held *m)
{
    uint64_t t = surge_now_ns();
    srv->last_msg_ns = t;
    int r = surge_ingest_handle_raw(
        srv->ing, zmq_msg_data(&m->rid), zmq_msg_size(&m->rid),
        m->have_hdr ? zmq_msg_data(&m->hdr) : NULL,
        m->have_hdr ? zmq_msg_size(&m->hdr) : 0,
        m->have_payload ? zmq_msg_data(&m->payload) : NULL,
        m->have_payload ? zmq_msg_size(&m->payload) : 0, m->npayload, m->total,
        t, &srv->reply);
    if (r == 1 && srv->defer_seq != 0 &&
        srv->reply.type == SURGE_MSG_CONTROL_REPLY &&
        zmq_msg_size(&m->rid) <= sizeof srv->end_wait.rid) {
        hold_end_reply(srv, zmq_msg_data(&m->rid), zmq_msg_size(&m->rid), t);
    } else if (r == 1) {
        send_reply(srv, zmq_msg_data(&m->rid), zmq_msg_size(&m->rid));
    }
    srv->defer_seq = 0;
}

/* Receive one whole message into m. 1 when one came, 0 when none was
 * waiting (EAGAIN) or the socket failed, -1 for EINTR. */
static int
recv_whole(surge_server *srv, struct held *m)
{
    zmq_msg_t extra;
    memset(m, 0, sizeof *m);
    zmq_msg_init(&m->rid);
    zmq_msg_init(&m->hdr);
    zmq_msg_init(&m->payload);
    if (zmq_msg_recv(&m->rid, srv->router, ZMQ_DONTWAIT) < 0) {
        int e = zmq_errno();
        held_free(m);
        if (e != EAGAIN && e != EINTR) {
            SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "receive failed: %s",
                      zmq_strerror(e));
        }
        return e == EINTR ? -1 : 0;
    }
    m->total = zmq_msg_size(&m->rid);
    if (zmq_msg_more(&m->rid) && zmq_msg_recv(&m->hdr, srv->router, 0) >= 0) {
        m->have_hdr = 1;
        m->total += zmq_msg_size(&m->hdr);
        /* Whole multipart messages are delivered atomically, so the other
         * frames are already here: these receives do not block. */
        int more = zmq_msg_more(&m->hdr);
        while (more) {
            zmq_msg_t *dst = &m->payload;
            if (m->have_payload) {
                zmq_msg_init(&extra);
                dst = &extra;
            }
            if (zmq_msg_recv(dst, srv->router, 0) < 0) {
                if (dst == &extra) {
                    zmq_msg_close(&extra);
                }
                break;
            }
            m->npayload++;
            m->total += zmq_msg_size(dst);
            more = zmq_msg_more(dst);
            if (dst == &extra) {
                zmq_msg_close(&extra);
            } else {
                m->have_payload = 1;
            }
        }
    }
    return 1;
}

/* Receive and handle (or hold) one message. 1 when one was read, 0 when
 * none was waiting (EAGAIN) or the socket failed. */
static int
recv_one(surge_server *srv)
{
    struct held m;
    int rc = recv_whole(srv, &m);
    if (rc <= 0) {
        return rc < 0 ? 1 : 0;
    }
    const void *rid = zmq_msg_data(&m.rid);
    size_t rid_len = zmq_msg_size(&m.rid);
    int session = surge_ingest_has_session(srv->ing, rid, rid_len);
    if (!session && m.total > srv->o->max_presession_bytes) {
        /* Dropped before anything looks at it: a peer that has proven
         * nothing gets no more of our memory than this one message. */
        int r = surge_ingest_refuse_presession(srv->ing, rid, rid_len, m.total,
                                               surge_now_ns(), &srv->reply);
        if (r == 1) {
            send_reply(srv, rid, rid_len);
        } else if (m.have_hdr) {
            surge_ingest_counters(srv->ing)->io.cut++;
            cut_connection(srv, zmq_msg_get(&m.hdr, ZMQ_SRCFD), &srv->cut_rl,
                           "a peer without a session kept sending large "
                           "messages (--max-presession-bytes)");
        }
        held_free(&m);
        return 1;
    }
    if (session && srv->holding) {
        struct held *h = malloc(sizeof *h);
        if (h != NULL) {
            /* Move the frames (no copy of their data). */
            zmq_msg_init(&h->rid);
            zmq_msg_init(&h->hdr);
            zmq_msg_init(&h->payload);
            zmq_msg_move(&h->rid, &m.rid);
            zmq_msg_move(&h->hdr, &m.hdr);
            zmq_msg_move(&h->payload, &m.payload);
            h->have_hdr = m.have_hdr;
            h->have_payload = m.have_payload;
            h->npayload = m.npayload;
            h->total = m.total;
            held_free(&m);
            h->next = NULL;
            if (srv->held_tail != NULL) {
                srv->held_tail->next = h;
            } else {
                srv->held_head = h;
            }
            srv->held_tail = h;
            srv->held_bytes += h->total;
            surge_ingest_counters(srv->ing)->io.held++;
            return 1;
        }
        /* No memory to hold it: handle it now (it queues as pending). */
    }
    handle_one(srv, &m);
    held_free(&m);
    return 1;
}

/* Handle held messages in order while the store takes samples; with
 * force (the server is stopping), all of them. */
static void
replay_held(surge_server *srv, int force)
{
    while (srv->held_head != NULL &&
           (force || !surge_ingest_has_pending(srv->ing))) {
        struct held *h = srv->held_head;
        srv->held_head = h->next;
        if (srv->held_head == NULL) {
            srv->held_tail = NULL;
        }
        srv->held_bytes -= h->total;
        handle_one(srv, h);
        held_free(h);
        free(h);
    }
}

/* Backpressure, in two stages. When a sample waits for store space the
 * server starts holding: it goes on reading, handles at once what peers
 * without a session send (hellos, control, refusals), and holds messages of
 * peers with a session, in order, up to --max-held-bytes. Past that it
 * stops reading (ZeroMQ's queues then fill and the clients' sends block).
 * The retry timer puts pending samples, replays what is held, and ends
 * both stages when nothing waits any more. */
static void
start_holding(surge_server *srv)
{
    if (srv->holding) {
        return;
    }
    srv->holding = 1;
    srv->paused_at_ns = surge_now_ns();
    surge_ingest_counters(srv->ing)->io.read_pauses++;
    uv_timer_start(&srv->retry, on_retry, RETRY_MS, RETRY_MS);
}

static void
pause_reading(surge_server *srv)
{
    if (!srv->reading) {
        return;
    }
    uv_poll_stop(&srv->poll_router);
    srv->reading = 0;
}

static void on_router(uv_poll_t *h, int status, int events);

/* Backpressure is over: nothing pending, nothing held. */
static void
end_holding(surge_server *srv)
{
    if (!srv->holding || srv->phase != PHASE_RUNNING) {
        return;
    }
    uv_timer_stop(&srv->retry);
    surge_ingest_counters(srv->ing)->io.read_paused_ns +=
        surge_now_ns() - srv->paused_at_ns;
    srv->holding = 0;
    if (!srv->reading) {
        srv->reading = 1;
        uv_poll_start(&srv->poll_router, UV_READABLE, on_router);
    }
    /* Edge-triggered: messages that came while paused raised no new edge. */
    drain_router(srv);
}

static void
check_requests(surge_server *srv)
{
    if (srv->phase != PHASE_RUNNING) {
        return;
    }
    if (surge_ingest_shutdown_requested(srv->ing)) {
        begin_stop(srv, 0);
    } else if (surge_ingest_end_requested(srv->ing) && srv->held_head == NULL &&
               surge_ingest_all_done(srv->ing)) {
        begin_stop(srv, 1);
    }
}

static void
on_more(uv_timer_t *t)
{
    drain_router(t->data);
}

/* Read until EAGAIN (ZMQ_FD is edge-triggered: a drain that stops early
 * gets no new wake-up), but at most DRAIN_BUDGET messages per turn of the
 * loop: a client that sends faster than we read must not starve the
 * timers, signals and HTTP requests. The rest is read on the next turn
 * (a zero-delay timer), so the socket is still drained fully. */
static void
drain_router(surge_server *srv)
{
    unsigned budget = DRAIN_BUDGET;
    while (srv->reading && srv->phase == PHASE_RUNNING) {
        if (surge_ingest_has_pending(srv->ing)) {
            start_holding(srv);
        }
        if (srv->holding && srv->held_bytes >= srv->o->max_held_bytes) {
            pause_reading(srv);
            break;
        }
        if (budget == 0) {
            uv_timer_start(&srv->more, on_more, 0, 0);
            break;
        }
        if (recv_one(srv)) {
            budget--;
            continue;
        }
        /* EAGAIN. ZMQ_EVENTS both tells whether more came in the meantime
         * and re-arms the edge-triggered ZMQ_FD. */
        int ev = 0;
        size_t len = sizeof ev;
        if (zmq_getsockopt(srv->router, ZMQ_EVENTS, &ev, &len) != 0 ||
            !(ev & ZMQ_POLLIN)) {
            break;
        }
    }
    check_requests(srv);
}

static void
on_router(uv_poll_t *h, int status, int events)
{
    surge_server *srv = h->data;
    (void)status;
    (void)events;
    drain_router(srv);
}

static void
try_flush(surge_server *srv)
{
    if (surge_ingest_flush(srv->ing) != 0) {
        return;
    }
    replay_held(srv, 0);
    if (!surge_ingest_has_pending(srv->ing) && srv->held_head == NULL) {
        end_holding(srv);
    } else if (!srv->reading && srv->phase == PHASE_RUNNING &&
               srv->held_bytes < srv->o->max_held_bytes) {
        /* Room to hold again: read on (the holding stage). */
        srv->reading = 1;
        uv_poll_start(&srv->poll_router, UV_READABLE, on_router);
        drain_router(srv);
    }
    check_requests(srv);
}

static void
on_retry(uv_timer_t *t)
{
    try_flush(t->data);
}

/* ------------------------------------------------------------ monitor */

static void
drain_monitor(surge_server *srv)
{
    surge_counters *c = surge_ingest_counters(srv->ing);
    for (;;) {
        zmq_msg_t ev, addr;
        zmq_msg_init(&ev);
        if (zmq_msg_recv(&ev, srv->mon, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&ev);
            int e = 0;
            size_t len = sizeof e;
            if (zmq_getsockopt(srv->mon, ZMQ_EVENTS, &e, &len) == 0 &&
                (e & ZMQ_POLLIN)) {
                continue;
            }
            return;
        }
        uint16_t event = 0;
        uint32_t value = 0; /* the descriptor, for ACCEPTED */
        if (zmq_msg_size(&ev) >= 6) {
            memcpy(&event, zmq_msg_data(&ev), sizeof event);
            memcpy(&value, (const char *)zmq_msg_data(&ev) + 2, sizeof value);
        }
        if (zmq_msg_more(&ev)) {
            zmq_msg_init(&addr);
            (void)zmq_msg_recv(&addr, srv->mon, 0);
            zmq_msg_close(&addr);
        }
        zmq_msg_close(&ev);
        switch (event) {
        case ZMQ_EVENT_ACCEPTED:
            c->io.accepted++;
            /* Connections still open, this one included (a cut one counts
             * until its DISCONNECTED event comes). */
            if (c->io.accepted - c->io.disconnected > srv->o->max_connections) {
                c->io.refused++;
                char why[96];
                snprintf(why, sizeof why,
                         "%" PRIu64 " connections open, --max-connections %u",
                         c->io.accepted - c->io.disconnected,
                         srv->o->max_connections);
                cut_connection(srv, (int)value, &srv->refused_rl, why);
            }
            break;
        case ZMQ_EVENT_DISCONNECTED:
            c->io.disconnected++;
            break;
        case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
        case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
            c->io.handshake_failed++;
            SURGE_LOG(SURGE_LOG_DEBUG, COMPONENT,
                      "a connection failed the ZeroMQ handshake");
            break;
        default:
            break;
        }
    }
}

static void
on_monitor(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    drain_monitor(h->data);
}

/* ------------------------------------------------------------ ZAP */

/* ZeroMQ asks the ZAP handler (RFC 27) about every CURVE handshake on the
 * ROUTER: request frames version, request id, domain, address, routing
 * id, mechanism, credentials (the client's 32-byte public key); the answer
 * is version, request id, status code, status text, user id, metadata.
 * Only the study's client keys get "200": any other client never
 * completes its handshake, so nothing it sends reaches us and nothing we
 * send reaches it. Runs on the I/O thread, like every other socket. */
#define ZAP_FRAMES 7

static void
drain_zap(surge_server *srv)
{
    for (;;) {
        zmq_msg_t f[ZAP_FRAMES];
        int n = 0, more = 1;
        while (more) {
            zmq_msg_t part;
            zmq_msg_init(&part);
            if (zmq_msg_recv(&part, srv->zap, n == 0 ? ZMQ_DONTWAIT : 0) < 0) {
                zmq_msg_close(&part);
                break;
            }
            more = zmq_msg_more(&part);
            if (n < ZAP_FRAMES) {
                f[n++] = part;
            } else {
                zmq_msg_close(&part); /* not RFC 27: answered "400" below */
                n = ZAP_FRAMES + 1;
            }
        }
        if (n == 0) {
            int e = 0;
            size_t len = sizeof e;
            if (zmq_getsockopt(srv->zap, ZMQ_EVENTS, &e, &len) == 0 &&
                (e & ZMQ_POLLIN)) {
                continue;
            }
            return;
        }
        int ok = n == ZAP_FRAMES &&
                 surge_curve_zap_ok(srv->curve, zmq_msg_data(&f[5]),
                                    zmq_msg_size(&f[5]), zmq_msg_data(&f[6]),
                                    zmq_msg_size(&f[6]));
        /* REP: the answer must go out whatever the request was. */
        const char *code = ok ? "200" : "400";
        const char *text = ok ? "OK" : "not a client key of this study";
        zmq_send(srv->zap, "1.0", 3, ZMQ_SNDMORE);
        if (n >= 2) {
            zmq_send(srv->zap, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]),
                     ZMQ_SNDMORE);
        } else {
            zmq_send(srv->zap, "", 0, ZMQ_SNDMORE);
        }
        zmq_send(srv->zap, code, 3, ZMQ_SNDMORE);
        zmq_send(srv->zap, text, strlen(text), ZMQ_SNDMORE);
        zmq_send(srv->zap, "", 0, ZMQ_SNDMORE);
        zmq_send(srv->zap, "", 0, 0);
        for (int i = 0; i < n && i < ZAP_FRAMES; i++) {
            zmq_msg_close(&f[i]);
        }
        if (!ok) {
            surge_counters *c = surge_ingest_counters(srv->ing);
            c->io.curve_refused++;
            if (surge_ratelimit_allow(&srv->zap_log, surge_now_ns(), NULL)) {
                SURGE_LOG(SURGE_LOG_WARN, COMPONENT,
                          "refused a CURVE client whose key is not one of "
                          "the study's (%" PRIu64 " so far)",
                          c->io.curve_refused);
            }
        }
    }
}

static void
on_zap(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    drain_zap(h->data);
}

/* ------------------------------------------------------------ stopping */

static void
on_close(uv_handle_t *h)
{
    (void)h;
}

static void
close_handles(surge_server *srv)
{
    if (srv->phase == PHASE_CLOSING) {
        return;
    }
    /* A held END_RECEPTION reply must go first: the MPI timer keeps
     * running until the ranks confirmed or its deadline, then closes. */
    if (multi(srv) && srv->ranks->rank == 0 && srv->end_wait.active) {
        srv->close_pending = 1;
        return;
    }
    srv->close_pending = 0;
    srv->phase = PHASE_CLOSING;
    /* A request posted from now on would never run. */
    pthread_mutex_lock(&srv->io_mu);
    srv->io_closed = 1;
    pthread_cond_broadcast(&srv->io_cv);
    pthread_mutex_unlock(&srv->io_mu);
    /* Its handles close with ours; the registry goes now (nothing renders
     * any more). */
    surge_monitor_destroy(&srv->monitor);
    uv_handle_t *hs[] = {
        (uv_handle_t *)&srv->poll_router, (uv_handle_t *)&srv->poll_mon,
        (uv_handle_t *)&srv->tick,        (uv_handle_t *)&srv->retry,
        (uv_handle_t *)&srv->stop_timer,  (uv_handle_t *)&srv->sigint,
        (uv_handle_t *)&srv->sigterm,     (uv_handle_t *)&srv->wake,
        (uv_handle_t *)&srv->more,        (uv_handle_t *)&srv->mpi_timer};
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) {
        if (!uv_is_closing(hs[i])) {
            uv_close(hs[i], on_close);
        }
    }
    if (srv->zap != NULL && !uv_is_closing((uv_handle_t *)&srv->poll_zap)) {
        uv_close((uv_handle_t *)&srv->poll_zap, on_close);
    }
    /* Closing a signal's last uv_signal_t restores its default action, so
     * a second SIGTERM now (timeout(1) signals the child and then its whole
     * process group; a user may press Ctrl-C twice) would kill us before
     * server-stats.json is written. We are stopping anyway: ignore them. */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
}

static void
on_stop_timeout(uv_timer_t *t)
{
    surge_server *srv = t->data;
    SURGE_LOG(SURGE_LOG_WARN, COMPONENT,
              "consumer did not drain the store within %.1f s; stopping it",
              srv->o->stop_timeout_s);
    surge_store_stop(srv->train);
    if (srv->validation != NULL) {
        surge_store_stop(srv->validation);
    }
}

static void
begin_stop(surge_server *srv, int end_of_reception)
{
    if (srv->phase != PHASE_RUNNING) {
        return;
    }
    srv->phase = PHASE_DRAINING;
    srv->stop_reason_end = end_of_reception;
    if (srv->reading) {
        uv_poll_stop(&srv->poll_router);
        srv->reading = 0;
    }
    if (srv->holding) {
        uv_timer_stop(&srv->retry);
        surge_ingest_counters(srv->ing)->io.read_paused_ns +=
            surge_now_ns() - srv->paused_at_ns;
        srv->holding = 0;
    }
    /* Held messages were received: handle them so that they are counted
     * (their steps are then dropped with the rest, as server_stop). */
    replay_held(srv, 1);
    /* Whatever is not assembled now never will be. */
    surge_ingest_stop(srv->ing);
    SURGE_LOG(SURGE_LOG_INFO, COMPONENT, "stopping (%s): draining the store",
              end_of_reception ? "end of reception" : "stop requested");
    surge_store_end_reception(srv->train);
    if (srv->validation != NULL) {
        surge_store_end_reception(srv->validation);
    }
    uv_timer_start(&srv->stop_timer, on_stop_timeout,
                   (uint64_t)(srv->o->stop_timeout_s * 1000.0), 0);
    if (atomic_load(&srv->consumer_done)) {
        close_handles(srv);
    }
}

static void
on_signal(uv_signal_t *h, int signum)
{
    surge_server *srv = h->data;
    SURGE_LOG(SURGE_LOG_INFO, COMPONENT, "signal %d received", signum);
    if (srv->phase == PHASE_DRAINING) {
        /* A second signal: do not wait for the consumer any more. */
        on_stop_timeout(&srv->stop_timer);
        return;
    }
    begin_stop(srv, 0);
}

/* Run the consumer's io_call request, if one is posted (I/O thread). */
static void
run_io_request(surge_server *srv)
{
    pthread_mutex_lock(&srv->io_mu);
    struct io_req *req = srv->io_req;
    srv->io_req = NULL; /* taken: io_call now waits for it to end */
    pthread_mutex_unlock(&srv->io_mu);
    if (req == NULL) {
        return;
    }
    surge_consumer_io_view view = {io_export_assembled, io_export_finished,
                                   io_export_counts, srv->ing};
    int rc = req->fn(req->arg, &view);
    pthread_mutex_lock(&srv->io_mu);
    req->rc = rc;
    req->done = 1;
    pthread_cond_broadcast(&srv->io_cv);
    pthread_mutex_unlock(&srv->io_mu);
}

static void
on_wake(uv_async_t *h)
{
    surge_server *srv = h->data;
    run_io_request(srv);
    if (srv->holding && srv->phase == PHASE_RUNNING) {
        try_flush(srv);
    }
    if (atomic_load(&srv->consumer_done)) {
        if (srv->phase == PHASE_RUNNING) {
            SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
                      "consumer stopped (%s); stopping the server",
                      surge_strerror(srv->consumer_rc));
            begin_stop(srv, 0);
        }
        if (srv->phase == PHASE_DRAINING) {
            close_handles(srv);
        }
    }
}

static void
log_progress(surge_server *srv, uint64_t t)
{
    const surge_counters *c = surge_ingest_counters(srv->ing);
    surge_store_stats st;
    surge_store_get_stats(srv->train, &st);
    SURGE_LOG(SURGE_LOG_INFO, COMPONENT,
              "messages %" PRIu64 ", slices %" PRIu64 ", samples %" PRIu64
              " (+%" PRIu64 " validation), partial %" PRIu64 ", store %" PRIu64
              "/%" PRIu64 ", consumed %" PRIu64 ", active sims %" PRIu64,
              c->messages.received, c->slices.accepted, c->samples.train,
              c->samples.validation, c->steps.in_progress, st.occupancy,
              st.capacity, st.taken, surge_ingest_active_sims(srv->ing));
    srv->last_log_ns = t;
}

static void
on_tick(uv_timer_t *t)
{
    surge_server *srv = t->data;
    uint64_t now = surge_now_ns();
    if (srv->phase != PHASE_RUNNING) {
        return;
    }
    surge_ingest_tick(srv->ing, now);
    if (srv->checksum != NULL) {
        fflush(srv->checksum);
    }
    if (now - srv->last_log_ns > UINT64_C(10) * 1000000000u) {
        log_progress(srv, now);
    }
    /* With several ranks, rank 0 decides for all (and tells them): a
     * rank that left alone would refuse the next simulation routed to it. */
    if (srv->o->exit_idle_s > 0 && surge_ingest_active_sims(srv->ing) == 0 &&
        surge_ingest_all_done(srv->ing) &&
        now - srv->last_msg_ns > (uint64_t)(srv->o->exit_idle_s * 1e9) &&
        (!multi(srv) || (srv->ranks->rank == 0 && all_ranks_idle(srv, now)))) {
        SURGE_LOG(SURGE_LOG_INFO, COMPONENT,
                  "idle for %.1f s with no active simulation: exiting",
                  srv->o->exit_idle_s);
        if (multi(srv)) {
            relay_control(srv, SURGE_CTL_END_RECEPTION, -1);
            srv->defer_seq = 0; /* no launcher waits for a reply */
        }
        begin_stop(srv, 1);
        return;
    }
    check_requests(srv);
}

/* ------------------------------------------------------------ consumer */

static int
io_export_assembled(void *io, int (*cb)(void *, int64_t, int64_t), void *arg)
{
    return surge_ingest_export_assembled(io, cb, arg);
}

/* surge_consumer_ctx.output_fields (consumer thread, after a sample). */
static const char *
output_fields(void *io)
{
    struct surge_server *srv = io;
    return srv->ing != NULL ? surge_ingest_output_fields(srv->ing) : NULL;
}

static int
io_export_finished(void *io, int (*cb)(void *, int64_t), void *arg)
{
    return surge_ingest_export_finished(io, cb, arg);
}

static int
io_export_counts(void *io, json_t **out)
{
    surge_counters c = *surge_ingest_counters(io);
    /* What a checkpoint taken now holds: steps still being assembled and
     * samples still waiting for store space are not in it (a rerun sends
     * them again and they are counted then). */
    c.steps.started -= c.steps.in_progress + c.samples.pending;
    c.steps.assembled -= c.samples.pending;
    c.steps.in_progress = 0;
    c.samples.pending = 0;
    json_t *j = json_object();
    if (j == NULL) {
        return -ENOMEM;
    }
    counter_sections(&c, j);
    *out = j;
    return 0;
}

/* surge_consumer_ctx.io_call (consumer thread). */
static int
io_call(void *io, surge_consumer_io_fn fn, void *fn_arg, int timeout_ms)
{
    surge_server *srv = io;
    struct io_req req = {fn, fn_arg, 0, 0};
    pthread_mutex_lock(&srv->io_mu);
    if (srv->io_closed || srv->io_req != NULL) {
        pthread_mutex_unlock(&srv->io_mu);
        return SURGE_ECLOSED;
    }
    srv->io_req = &req;
    pthread_mutex_unlock(&srv->io_mu);
    uv_async_send(&srv->wake);
    struct timespec dl;
    surge_deadline_after_ms(&dl, timeout_ms);
    int rc = 0;
    pthread_mutex_lock(&srv->io_mu);
    while (!req.done && srv->io_req == &req && !srv->io_closed) {
        if (pthread_cond_timedwait(&srv->io_cv, &srv->io_mu, &dl) ==
            ETIMEDOUT) {
            break;
        }
    }
    if (!req.done && srv->io_req == &req) {
        /* Not taken: withdraw it. */
        srv->io_req = NULL;
        rc = srv->io_closed ? SURGE_ECLOSED : SURGE_ETIMEDOUT;
    } else {
        /* Taken by the I/O thread: it runs to its end. */
        while (!req.done) {
            pthread_cond_wait(&srv->io_cv, &srv->io_mu);
        }
        rc = req.rc;
    }
    pthread_mutex_unlock(&srv->io_mu);
    return rc;
}

static int
mark_assembled(void *arg, int64_t sim, int64_t step)
{
    return surge_ingest_preload_assembled(arg, sim, step);
}

static void
space_cb(void *arg)
{
    surge_server *srv = arg;
    uv_async_send(&srv->wake);
}

static void *
consumer_main(void *arg)
{
    surge_server *srv = arg;
    int rc = srv->cops->run(srv->cstate, &srv->cctx);
    srv->consumer_rc = rc;
    atomic_store(&srv->consumer_done, 1);
    uv_async_send(&srv->wake);
    return NULL;
}

/* ------------------------------------------------------------ ranks */

/* A server of several ranks (server/ranks.h): rank 0 relays control to
 * the others and collects their figures, all over ranks->io from the I/O
 * thread with nonblocking calls tested on a timer (the loop never waits on
 * MPI). The blocking exchanges (endpoints before the loop, the final
 * counts after it) run on the main thread while no loop runs, each with a
 * deadline. */

static int
multi(const surge_server *srv)
{
    return srv->ranks != NULL && srv->ranks->size > 1;
}

/* Wait for req, testing it, at most timeout_s: 0, or SURGE_ETIMEDOUT /
 * SURGE_EINTERNAL (logged, naming what). Main thread, no loop running. */
static int
mpi_wait(MPI_Request *req, double timeout_s, const char *what)
{
    uint64_t t0 = surge_now_ns(), last_log = t0;
    for (;;) {
        int done = 0;
        int rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) {
            SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "%s: MPI error %d", what, rc);
            return SURGE_EINTERNAL;
        }
        if (done) {
            return 0;
        }
        uint64_t now = surge_now_ns();
        if ((double)(now - t0) / 1e9 > timeout_s) {
            SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
                      "%s: the other server ranks did not answer within "
                      "%.0f s",
                      what, timeout_s);
            return SURGE_ETIMEDOUT;
        }
        if (now - last_log > UINT64_C(10) * 1000000000u) {
            SURGE_LOG(SURGE_LOG_INFO, COMPONENT,
                      "%s: waiting for the other server ranks (%.0f s)", what,
                      (double)(now - t0) / 1e9);
            last_log = now;
        }
        struct timespec ts = {0, 1000000}; /* 1 ms */
        nanosleep(&ts, NULL);
    }
}

/* This rank's figures into v (I/O thread). */
static void
take_figures(surge_server *srv, uint64_t *v, uint64_t now)
{
    memcpy(v, surge_ingest_counters(srv->ing), sizeof(surge_counters));
    uint64_t *x = v + NCOUNTERS;
    surge_store_stats st;
    surge_store_get_stats(srv->train, &st);
    surge_consumer_stats cs = {0, 0};
    srv->cops->stats(srv->cstate, &cs);
    x[FX_RES_SIZE] = st.occupancy;
    x[FX_RES_CAP] = st.capacity;
    x[FX_RES_BYTES] = st.bytes;
    x[FX_RES_CAP_BYTES] = srv->o->store_bytes;
    x[FX_TRAINER_SAMPLES] = cs.samples;
    x[FX_SIMS_ACTIVE] = surge_ingest_active_sims(srv->ing);
    x[FX_IDLE_MS] = (now - srv->last_msg_ns) / 1000000u;
}

/* Rank 0: rank r's figures v came at now. */
static void
store_figures(surge_server *srv, int r, const uint64_t *v, uint64_t now)
{
    struct rank_fig *f = &srv->figs[r];
    const surge_counters *c = (const surge_counters *)(const void *)v;
    uint64_t samples = c->steps.assembled;
    if (f->at_ns != 0 && now > f->at_ns && samples >= f->prev_samples) {
        f->rate = (double)(samples - f->prev_samples) /
                  ((double)(now - f->at_ns) / 1e9);
    }
    f->prev_samples = samples;
    f->prev_ns = f->at_ns;
    memcpy(f->v, v, sizeof f->v);
    f->at_ns = now;
}

/* Rank 0: the counters monitoring and PING show, summed over the ranks'
 * latest figures and its own counters as they are now. */
static void
sum_figures(surge_server *srv)
{
    uint64_t *dst = (uint64_t *)(void *)&srv->sum;
    memcpy(dst, surge_ingest_counters(srv->ing), sizeof srv->sum);
    srv->sum_active = surge_ingest_active_sims(srv->ing);
    for (int r = 1; r < srv->ranks->size; r++) {
        for (size_t i = 0; i < NCOUNTERS; i++) {
            dst[i] += srv->figs[r].v[i];
        }
        srv->sum_active += srv->figs[r].v[NCOUNTERS + FX_SIMS_ACTIVE];
    }
}

/* Send n (<= 3) int64 to rank dest with tag, without waiting: the send
 * joins srv->relays until it completes. 0 or -1 (logged). */
static int
post_send(surge_server *srv, int dest, int tag, const int64_t *v, int n)
{
    struct relay *rl = calloc(1, sizeof *rl);
    if (rl == NULL) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
                  "out of memory sending to server rank %d", dest);
        return -1;
    }
    memcpy(rl->buf, v, (size_t)n * sizeof *v);
    int rc =
        MPI_Isend(rl->buf, n, MPI_INT64_T, dest, tag, srv->ranks->io, &rl->req);
    if (rc != MPI_SUCCESS) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
                  "cannot send to server rank %d (MPI error %d)", dest, rc);
        free(rl);
        return -1;
    }
    rl->next = srv->relays;
    srv->relays = rl;
    return 0;
}

/* surge_ingest control_cb (rank 0, I/O thread): send the operation to
 * every other rank, without waiting. Each rank acknowledges it; the reply
 * to an END_RECEPTION waits for those (hold_end_reply). */
static void
relay_control(void *arg, int op, int64_t sim)
{
    surge_server *srv = arg;
    int64_t v[3] = {op, sim, ++srv->relay_seq};
    for (int r = 1; r < srv->ranks->size; r++) {
        post_send(srv, r, TAG_CTL, v, 3);
    }
    if (op == SURGE_CTL_END_RECEPTION) {
        srv->defer_seq = v[2];
    }
}

/* Rank 0: keep the END_RECEPTION reply just built until every rank
 * confirmed (or END_ACK_MS passed): the launcher's "end of reception"
 * then means every rank has ended it. */
static void
hold_end_reply(surge_server *srv, const void *rid, size_t len, uint64_t now)
{
    struct end_wait *w = &srv->end_wait;
    if (w->active) {
        release_end_reply(srv, 0); /* an earlier one: answer it now */
    }
    w->active = 1;
    w->seq = srv->defer_seq;
    w->acks = 0;
    w->deadline_ns = now + UINT64_C(1000000) * END_ACK_MS;
    memcpy(w->rid, rid, len);
    w->rid_len = len;
    w->reply = srv->reply;
}

/* Rank 0: send the held reply when every rank confirmed, or when now is
 * past its deadline (now 0: at once), saying how many did. */
static void
release_end_reply(surge_server *srv, uint64_t now)
{
    struct end_wait *w = &srv->end_wait;
    int others = srv->ranks->size - 1;
    if (!w->active || (w->acks < others && now != 0 && now < w->deadline_ns)) {
        return;
    }
    w->active = 0;
    srv->reply = w->reply;
    surge_msg_control_reply *cr = &srv->reply.u.control_reply;
    if (w->acks < others) {
        SURGE_LOG(SURGE_LOG_WARN, COMPONENT,
                  "end of reception: %d of %d ranks confirmed within %d ms",
                  w->acks, others, END_ACK_MS);
        cr->code = SURGE_ETIMEDOUT;
        snprintf(cr->message, sizeof cr->message,
                 "end of reception relayed; %d of the other %d server ranks "
                 "confirmed within %d ms",
                 w->acks, others, END_ACK_MS);
    } else {
        snprintf(cr->message, sizeof cr->message,
                 "end of reception (every one of %d server ranks)", others + 1);
    }
    send_reply(srv, w->rid, w->rid_len);
}

/* Free the small sends that completed. */
static void
reap_relays(surge_server *srv)
{
    struct relay **pp = &srv->relays;
    while (*pp != NULL) {
        struct relay *rl = *pp;
        int done = 0;
        MPI_Test(&rl->req, &done, MPI_STATUS_IGNORE);
        if (done) {
            *pp = rl->next;
            free(rl);
        } else {
            pp = &rl->next;
        }
    }
}

/* Receive one message matched by st of n elements of type t into a
 * buffer of cap elements; a message of another size is received whole
 * and discarded. 1 when it fit exactly. */
static int
recv_exact(surge_server *srv, MPI_Status *st, MPI_Datatype t, size_t esize,
           void *buf, int cap)
{
    int n = -1;
    MPI_Get_count(st, t, &n);
    if (n == cap) {
        MPI_Recv(buf, cap, t, st->MPI_SOURCE, st->MPI_TAG, srv->ranks->io,
                 MPI_STATUS_IGNORE);
        return 1;
    }
    int bytes = 0;
    MPI_Get_count(st, MPI_BYTE, &bytes);
    void *junk = malloc(bytes > 0 ? (size_t)bytes : 1);
    if (junk != NULL) {
        MPI_Recv(junk, bytes, MPI_BYTE, st->MPI_SOURCE, st->MPI_TAG,
                 srv->ranks->io, MPI_STATUS_IGNORE);
        free(junk);
    }
    SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
              "message of %d bytes from server rank %d (tag %d) dropped: "
              "expected %zu",
              bytes, st->MPI_SOURCE, st->MPI_TAG, (size_t)cap * esize);
    return 0;
}

/* Ranks > 0: apply the controls rank 0 relayed. */
static void
recv_controls(surge_server *srv)
{
    for (;;) {
        int flag = 0;
        MPI_Status st;
        if (MPI_Iprobe(0, TAG_CTL, srv->ranks->io, &flag, &st) != MPI_SUCCESS ||
            !flag) {
            return;
        }
        int64_t v[3];
        if (!recv_exact(srv, &st, MPI_INT64_T, sizeof(int64_t), v, 3)) {
            continue;
        }
        int rc = surge_ingest_relayed_control(srv->ing, (int)v[0], v[1],
                                              surge_now_ns());
        int64_t ack[2] = {v[2], rc};
        post_send(srv, 0, TAG_ACK, ack, 2);
        SURGE_LOG(rc == 0 ? SURGE_LOG_DEBUG : SURGE_LOG_WARN, COMPONENT,
                  "control %" PRId64 " (sim %" PRId64 ") from rank 0: %s", v[0],
                  v[1], rc == 0 ? "done" : surge_strerror(rc));
    }
}

/* Ranks > 0: this rank's runs table to rank 0, for its runs table over
 * the whole server (once the last one left). */
static void
send_runs(surge_server *srv, uint64_t now)
{
    int done = 1;
    if (srv->runs_req != MPI_REQUEST_NULL) {
        MPI_Test(&srv->runs_req, &done, MPI_STATUS_IGNORE);
    }
    if (!done) {
        return;
    }
    if (srv->runs_out == NULL) {
        srv->runs_out = calloc(SURGE_METRICS_MAX_RUNS, sizeof *srv->runs_out);
        if (srv->runs_out == NULL) {
            return;
        }
    }
    int n =
        surge_ingest_runs(srv->ing, srv->runs_out, SURGE_METRICS_MAX_RUNS, now);
    MPI_Isend(srv->runs_out, n * (int)sizeof *srv->runs_out, MPI_BYTE, 0,
              TAG_RUNS, srv->ranks->io, &srv->runs_req);
}

/* Rank 0: keep each rank's latest runs table. A table of a size that is
 * not whole records, or over the limit, is dropped. */
static void
recv_runs(surge_server *srv)
{
    for (;;) {
        int flag = 0;
        MPI_Status st;
        if (MPI_Iprobe(MPI_ANY_SOURCE, TAG_RUNS, srv->ranks->io, &flag, &st) !=
                MPI_SUCCESS ||
            !flag) {
            return;
        }
        int bytes = 0;
        MPI_Get_count(&st, MPI_BYTE, &bytes);
        int r = st.MPI_SOURCE;
        size_t rec = sizeof(struct surge_run_info);
        size_t n = bytes > 0 ? (size_t)bytes / rec : 0;
        struct surge_run_info *buf = malloc(bytes > 0 ? (size_t)bytes : 1);
        if (buf == NULL) {
            return; /* still queued: tried again next turn */
        }
        MPI_Recv(buf, bytes, MPI_BYTE, r, TAG_RUNS, srv->ranks->io,
                 MPI_STATUS_IGNORE);
        if (bytes < 0 || (size_t)bytes % rec != 0 ||
            n > SURGE_METRICS_MAX_RUNS || r <= 0 || r >= srv->ranks->size) {
            SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
                      "runs table of %d bytes from server rank %d dropped",
                      bytes, r);
            free(buf);
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            buf[i].state[sizeof buf[i].state - 1] = '\0';
        }
        free(srv->rank_runs[r]);
        srv->rank_runs[r] = buf;
        srv->rank_nruns[r] = (int)n;
    }
}

static int
state_rank(const char *state)
{
    /* Which state a run shows when ranks disagree: any rank still
     * receiving it wins, then any that failed it. */
    if (strcmp(state, "running") == 0 || strcmp(state, "retrying") == 0) {
        return 3;
    }
    return strcmp(state, "done") == 0 ? 1 : 2;
}

/* Rank 0: add rank r's view of a run to the merged record m. */
static void
merge_run(struct surge_run_info *m, const struct surge_run_info *o)
{
    m->steps += o->steps;
    m->dropped += o->dropped;
    if (o->ranks_joined > m->ranks_joined) {
        m->ranks_joined = o->ranks_joined;
    }
    if (o->ranks_done > m->ranks_done) {
        m->ranks_done = o->ranks_done;
    }
    if (o->steps_expected > m->steps_expected) {
        m->steps_expected = o->steps_expected;
    }
    if (o->elapsed_s > m->elapsed_s) {
        m->elapsed_s = o->elapsed_s;
    }
    if (o->last_seen_s >= 0 &&
        (m->last_seen_s < 0 || o->last_seen_s < m->last_seen_s)) {
        m->last_seen_s = o->last_seen_s;
    }
    if (state_rank(o->state) > state_rank(m->state)) {
        memcpy(m->state, o->state, sizeof m->state);
    }
}

/* Rank 0 of several: the runs table over every rank (steps and drops
 * summed, since each step is assembled on one rank). */
static int
merged_runs(surge_server *srv, struct surge_run_info *runs, size_t cap,
            uint64_t now)
{
    int n = surge_ingest_runs(srv->ing, runs, cap, now);
    if (n < 0) {
        return n;
    }
    surge_u64map idx;
    surge_u64map_init(&idx);
    for (int i = 0; i < n; i++) {
        if (surge_u64map_put(&idx, (uint64_t)runs[i].sim,
                             (void *)(uintptr_t)(i + 1)) != 0) {
            surge_u64map_fini(&idx);
            return -ENOMEM;
        }
    }
    for (int r = 1; r < srv->ranks->size; r++) {
        for (int k = 0; k < srv->rank_nruns[r]; k++) {
            const struct surge_run_info *o = &srv->rank_runs[r][k];
            uintptr_t at = (uintptr_t)surge_u64map_get(&idx, (uint64_t)o->sim);
            if (at != 0) {
                merge_run(&runs[at - 1], o);
            } else if ((size_t)n < cap &&
                       surge_u64map_put(&idx, (uint64_t)o->sim,
                                        (void *)(uintptr_t)(n + 1)) == 0) {
                runs[n++] = *o;
            }
        }
    }
    surge_u64map_fini(&idx);
    return n;
}

/* Rank 0: count the ranks' confirmations of relayed controls. */
static void
recv_acks(surge_server *srv, uint64_t now)
{
    for (;;) {
        int flag = 0;
        MPI_Status st;
        if (MPI_Iprobe(MPI_ANY_SOURCE, TAG_ACK, srv->ranks->io, &flag, &st) !=
                MPI_SUCCESS ||
            !flag) {
            break;
        }
        int64_t v[2];
        if (recv_exact(srv, &st, MPI_INT64_T, sizeof(int64_t), v, 2) &&
            srv->end_wait.active && v[0] == srv->end_wait.seq) {
            srv->end_wait.acks++;
        }
    }
    release_end_reply(srv, now);
}

/* Rank 0: take the figures the ranks sent. */
static void
recv_figures(surge_server *srv, uint64_t now)
{
    uint64_t v[FIG_N];
    for (;;) {
        int flag = 0;
        MPI_Status st;
        if (MPI_Iprobe(MPI_ANY_SOURCE, TAG_FIG, srv->ranks->io, &flag, &st) !=
                MPI_SUCCESS ||
            !flag) {
            return;
        }
        if (recv_exact(srv, &st, MPI_UINT64_T, sizeof(uint64_t), v,
                       (int)FIG_N) &&
            st.MPI_SOURCE > 0 && st.MPI_SOURCE < srv->ranks->size) {
            store_figures(srv, st.MPI_SOURCE, v, now);
        }
    }
}

/* Rank 0, with --exit-idle: the whole server is idle when every rank
 * reported lately that it has no open simulation and no message for
 * exit_idle_s. */
static int
all_ranks_idle(const surge_server *srv, uint64_t now)
{
    uint64_t idle_ms = (uint64_t)(srv->o->exit_idle_s * 1000.0);
    for (int r = 1; r < srv->ranks->size; r++) {
        const struct rank_fig *f = &srv->figs[r];
        if (f->at_ns == 0 || now - f->at_ns > UINT64_C(3) * FIG_MS * 1000000u ||
            f->v[NCOUNTERS + FX_SIMS_ACTIVE] != 0 ||
            f->v[NCOUNTERS + FX_IDLE_MS] < idle_ms) {
            return 0;
        }
    }
    return 1;
}

static void
on_mpi(uv_timer_t *t)
{
    surge_server *srv = t->data;
    uint64_t now = surge_now_ns();
    reap_relays(srv);
    if (srv->ranks->rank == 0) {
        recv_figures(srv, now);
        recv_runs(srv);
        recv_acks(srv, now);
        if (srv->close_pending && !srv->end_wait.active) {
            close_handles(srv);
            return;
        }
    } else {
        recv_controls(srv);
    }
    if (now - srv->fig_last_ns >= UINT64_C(1000000) * FIG_MS) {
        srv->fig_last_ns = now;
        if (srv->ranks->rank == 0) {
            uint64_t v[FIG_N];
            take_figures(srv, v, now);
            store_figures(srv, 0, v, now);
        } else {
            int done = 1;
            if (srv->fig_req != MPI_REQUEST_NULL) {
                MPI_Test(&srv->fig_req, &done, MPI_STATUS_IGNORE);
            }
            if (done) {
                /* The last send completed: fig_out is ours again. */
                take_figures(srv, srv->fig_out, now);
                MPI_Isend(srv->fig_out, (int)FIG_N, MPI_UINT64_T, 0, TAG_FIG,
                          srv->ranks->io, &srv->fig_req);
            }
            send_runs(srv, now);
        }
    }
    if (srv->ranks->rank == 0) {
        sum_figures(srv);
    }
    check_requests(srv);
}

/* Every rank's endpoint, in rank order, into srv->servers (main thread,
 * before the loop). */
static int
exchange_endpoints(surge_server *srv)
{
    int R = srv->ranks->size;
    char *all = calloc((size_t)R, SURGE_MAX_ENDPOINT + 1);
    char mine[SURGE_MAX_ENDPOINT + 1] = "";
    srv->servers = calloc(1, sizeof *srv->servers);
    srv->figs = calloc((size_t)R, sizeof *srv->figs);
    srv->rank_runs = calloc((size_t)R, sizeof *srv->rank_runs);
    srv->rank_nruns = calloc((size_t)R, sizeof *srv->rank_nruns);
    if (all == NULL || srv->servers == NULL || srv->figs == NULL ||
        srv->rank_runs == NULL || srv->rank_nruns == NULL) {
        free(all);
        return -ENOMEM;
    }
    for (int r = 0; r < R; r++) {
        srv->figs[r].rate = NAN;
    }
    if (strlen(srv->endpoint) > SURGE_MAX_ENDPOINT) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
                  "endpoint %s is longer than %d bytes", srv->endpoint,
                  SURGE_MAX_ENDPOINT);
        free(all);
        return SURGE_ECONFIG;
    }
    snprintf(mine, sizeof mine, "%s", srv->endpoint);
    MPI_Request req;
    int rc =
        MPI_Iallgather(mine, SURGE_MAX_ENDPOINT + 1, MPI_CHAR, all,
                       SURGE_MAX_ENDPOINT + 1, MPI_CHAR, srv->ranks->io, &req);
    if (rc != MPI_SUCCESS) {
        free(all);
        return SURGE_EINTERNAL;
    }
    rc = mpi_wait(&req, 60.0, "exchanging the ranks' endpoints");
    for (int r = 0; rc == 0 && r < R; r++) {
        char *e = all + (size_t)r * (SURGE_MAX_ENDPOINT + 1);
        e[SURGE_MAX_ENDPOINT] = '\0';
        if (surge_proto_welcome_add_endpoint(srv->servers, e) != 0) {
            SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
                      "the endpoints of %d ranks do not fit in a welcome "
                      "(%d bytes at most, %d ranks)",
                      R, SURGE_MAX_HEADER_BYTES / 2, SURGE_MAX_SERVER_RANKS);
            rc = SURGE_ELIMIT;
        }
    }
    free(all);
    if (rc != 0) {
        return rc;
    }
    /* A list the clients would refuse must stop us here, not them. */
    const char *why = NULL;
    surge_msg probe;
    memset(&probe, 0, sizeof probe);
    probe.type = SURGE_MSG_WELCOME;
    probe.u.welcome = *srv->servers;
    probe.u.welcome.max_payload_bytes = 1;
    probe.u.welcome.server_rank = (uint32_t)srv->ranks->rank;
    probe.u.welcome.route =
        srv->o->bind_simulation ? SURGE_ROUTE_SIM : SURGE_ROUTE_STEP;
    unsigned char *hdr = malloc(SURGE_MAX_HEADER_BYTES);
    surge_msg *back = malloc(sizeof *back);
    int n = hdr != NULL
                ? surge_proto_encode(&probe, hdr, SURGE_MAX_HEADER_BYTES)
                : -ENOMEM;
    if (n < 0 || back == NULL ||
        surge_proto_decode(hdr, (size_t)n, back, &why) != 0) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
                  "the ranks' endpoints make no valid welcome: %s",
                  why != NULL ? why : "too long for one header");
        rc = SURGE_ECONFIG;
    }
    free(hdr);
    free(back);
    if (rc != 0) {
        return rc;
    }
    surge_ingest_set_ranks(
        srv->ing, (uint32_t)srv->ranks->rank, (uint32_t)R,
        srv->o->bind_simulation ? SURGE_ROUTE_SIM : SURGE_ROUTE_STEP,
        srv->servers, srv->ranks->rank == 0 ? relay_control : NULL, srv);
    if (srv->ranks->rank == 0) {
        sum_figures(srv);
        surge_ingest_set_totals(srv->ing, &srv->sum, &srv->sum_active);
    }
    return 0;
}

/* The status JSON's "ranks" array (docs/monitoring.md), rendering thread
 * (the I/O thread): rank 0's figures table, or this rank alone. */
static int
status_ranks_cb(void *arg, json_t *root)
{
    surge_server *srv = arg;
    uint64_t now = surge_now_ns();
    int R = multi(srv) ? srv->ranks->size : 1;
    json_t *arr = json_array();
    if (arr == NULL) {
        return -ENOMEM;
    }
    for (int r = 0; r < R; r++) {
        uint64_t own[FIG_N];
        const uint64_t *v = NULL;
        double age = NAN, rate = NAN;
        if (r == 0) {
            take_figures(srv, own, now);
            v = own;
            age = 0.0;
            rate = multi(srv) ? srv->figs[0].rate : NAN;
        } else if (srv->figs[r].at_ns != 0) {
            v = srv->figs[r].v;
            age = (double)(now - srv->figs[r].at_ns) / 1e9;
            rate = srv->figs[r].rate;
        }
        const char *ep =
            multi(srv) ? surge_proto_welcome_endpoint(srv->servers, (uint32_t)r)
                       : srv->endpoint;
        json_t *o =
            json_pack("{s:i,s:s}", "rank", r, "endpoint", ep != NULL ? ep : "");
        if (o == NULL) {
            json_decref(arr);
            return -ENOMEM;
        }
        json_object_set_new(o, "age_s",
                            isfinite(age) ? json_real(age) : json_null());
        json_object_set_new(o, "received_per_s",
                            isfinite(rate) ? json_real(rate) : json_null());
        if (v != NULL) {
            const surge_counters *c = (const surge_counters *)(const void *)v;
            const uint64_t *x = v + NCOUNTERS;
            uint64_t dropped = 0;
            for (int i = 0; i < SURGE_TDROP__COUNT; i++) {
                dropped += c->steps.dropped[i];
            }
            for (int i = 0; i < SURGE_PDROP__COUNT; i++) {
                dropped += c->samples.dropped[i];
            }
            double occ =
                x[FX_RES_CAP] > 0
                    ? (double)x[FX_RES_SIZE] / (double)x[FX_RES_CAP]
                : x[FX_RES_CAP_BYTES] > 0
                    ? (double)x[FX_RES_BYTES] / (double)x[FX_RES_CAP_BYTES]
                    : 0.0;
            json_object_set_new(o, "samples", JI(c->steps.assembled));
            json_object_set_new(o, "slices", JI(c->slices.accepted));
            json_object_set_new(o, "bytes", JI(c->slices.bytes));
            json_object_set_new(o, "dropped", JI(dropped));
            json_object_set_new(o, "steps_in_progress",
                                JI(c->steps.in_progress));
            json_object_set_new(o, "reservoir_size", JI(x[FX_RES_SIZE]));
            json_object_set_new(o, "reservoir_capacity", JI(x[FX_RES_CAP]));
            json_object_set_new(o, "reservoir_bytes", JI(x[FX_RES_BYTES]));
            json_object_set_new(o, "reservoir_capacity_bytes",
                                JI(x[FX_RES_CAP_BYTES]));
            json_object_set_new(o, "occupancy", json_real(occ));
            json_object_set_new(o, "trainer_samples",
                                JI(x[FX_TRAINER_SAMPLES]));
            json_object_set_new(o, "sims_active", JI(x[FX_SIMS_ACTIVE]));
        }
        json_array_append_new(arr, o);
    }
    return json_object_set_new(root, "ranks", arr) == 0 ? 0 : -ENOMEM;
}

/* Per-rank Prometheus series: one callback argument per (rank, figure). */
struct rank_series {
    surge_server *srv;
    int rank;
    int index; /* into rank_fig.v, or -1 for the report's age */
};

static double
rank_series_value(void *arg)
{
    const struct rank_series *rs = arg;
    const struct rank_fig *f = &rs->srv->figs[rs->rank];
    if (rs->rank == 0) {
        /* Its own figures as they are now, like the sums. */
        uint64_t now = surge_now_ns();
        uint64_t v[FIG_N];
        if (rs->index < 0) {
            return 0.0;
        }
        take_figures(rs->srv, v, now);
        return (double)v[rs->index];
    }
    if (f->at_ns == 0) {
        return NAN;
    }
    if (rs->index < 0) {
        return (double)(surge_now_ns() - f->at_ns) / 1e9;
    }
    return (double)f->v[rs->index];
}

#define COUNTER_INDEX(field)                                                   \
    (offsetof(surge_counters, field) / sizeof(uint64_t))

static int
register_rank_series(surge_server *srv, surge_metrics *m)
{
    static const struct {
        const char *name;
        int counter;
        long index;
        const char *help;
    } series[] = {
        {"surge_rank_samples_received_total", 1, COUNTER_INDEX(steps.assembled),
         "Complete samples assembled on this server rank"},
        {"surge_rank_slices_accepted_total", 1, COUNTER_INDEX(slices.accepted),
         "Field slices accepted on this server rank"},
        {"surge_rank_bytes_accepted_total", 1, COUNTER_INDEX(slices.bytes),
         "Payload bytes accepted on this server rank"},
        {"surge_rank_steps_in_progress", 0, COUNTER_INDEX(steps.in_progress),
         "Partial steps alive on this server rank"},
        {"surge_rank_reservoir_samples", 0, NCOUNTERS + FX_RES_SIZE,
         "Samples in this server rank's reservoir shard"},
        {"surge_rank_reservoir_capacity_samples", 0, NCOUNTERS + FX_RES_CAP,
         "Slots of this server rank's reservoir shard"},
        {"surge_rank_reservoir_bytes", 0, NCOUNTERS + FX_RES_BYTES,
         "Bytes in this server rank's reservoir shard"},
        {"surge_rank_trainer_samples_total", 1, NCOUNTERS + FX_TRAINER_SAMPLES,
         "Samples the consumer of this server rank took"},
        {"surge_rank_report_age_seconds", 0, -1,
         "Time since rank 0 last received this server rank's figures"},
    };
    size_t ns = sizeof series / sizeof series[0];
    int R = srv->ranks->size;
    struct rank_series *args = calloc(ns * (size_t)R, sizeof *args);
    if (args == NULL) {
        return -ENOMEM;
    }
    /* Owned by the server from here (freed at destroy). */
    srv->rank_series = args;
    for (int r = 0; r < R; r++) {
        char labels[32];
        snprintf(labels, sizeof labels, "rank=\"%d\"", r);
        for (size_t i = 0; i < ns; i++) {
            struct rank_series *a = &args[(size_t)r * ns + i];
            a->srv = srv;
            a->rank = r;
            a->index = (int)series[i].index;
            int rc = series[i].counter
                         ? surge_metrics_counter_fn(m, series[i].name, labels,
                                                    series[i].help,
                                                    rank_series_value, a)
                         : surge_metrics_gauge_fn(m, series[i].name, labels,
                                                  series[i].help,
                                                  rank_series_value, a);
            if (rc < 0) {
                return rc;
            }
        }
    }
    return 0;
}

/* ------------------------------------------------------------ files */

static int
write_json(const surge_server_options *o, const char *name, json_t *j)
{
    char path[SURGE_SERVER_MAX_PATH + 64];
    snprintf(path, sizeof path, "%s/%s", o->output_dir, name);
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (text == NULL) {
        return -ENOMEM;
    }
    size_t len = strlen(text);
    char *withnl = realloc(text, len + 2);
    if (withnl == NULL) {
        free(text);
        return -ENOMEM;
    }
    withnl[len] = '\n';
    withnl[len + 1] = '\0';
    int rc = surge_write_file_atomic(path, withnl, len + 1);
    free(withnl);
    if (rc < 0) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "cannot write %s: %s", path,
                  surge_strerror(rc));
    }
    return rc;
}

static json_t *
reasons_json(const uint64_t *v, int n, const char *(*name)(int))
{
    json_t *o = json_object();
    for (int i = 0; i < n; i++) {
        json_object_set_new(o, name(i), json_integer((json_int_t)v[i]));
    }
    return o;
}

static json_t *
store_json(surge_store *s)
{
    surge_store_stats st;
    surge_store_get_stats(s, &st);
    json_t *j =
        json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:f}", "puts",
                  JI(st.puts), "put_refused", JI(st.put_refused), "taken",
                  JI(st.taken), "batches", JI(st.batches), "occupancy",
                  JI(st.occupancy), "capacity", JI(st.capacity), "bytes",
                  JI(st.bytes), "evicted", JI(st.evicted), "retired",
                  JI(st.retired), "consumer_wait_s", st.consumer_wait_ns / 1e9);
    surge_reservoir *r = surge_store_reservoir(s);
    if (j != NULL && r != NULL) {
        /* The reservoir's own view: policy, reuse, who waited. */
        surge_reservoir_stats rs;
        surge_reservoir_get_stats(r, &rs);
        json_t *removed = json_array();
        for (int i = 0; i < SURGE_RESERVOIR_USES_BUCKETS; i++) {
            json_array_append_new(removed, JI(rs.uses_removed[i]));
        }
        json_object_set_new(
            j, "reservoir",
            json_pack("{s:s,s:o,s:o,s:f,s:o,s:o}", "policy",
                      surge_reservoir_policy_name(rs.policy), "uses_removed",
                      removed, "producer_waits", JI(rs.producer_waits),
                      "served_age_mean_puts", rs.served_age_mean_puts,
                      "distinct_sims", JI(rs.distinct_sims), "rate_overrides",
                      JI(rs.rate_overrides)));
        /* Where the samples lived (docs/reservoir.md, "Storage"). */
        json_object_set_new(json_object_get(j, "reservoir"), "storage",
                            json_pack("{s:s,s:o,s:o,s:o,s:o}", "kind",
                                      surge_reservoir_storage_name(rs.storage),
                                      "device_bytes", JI(rs.device_bytes),
                                      "device_uploads", JI(rs.device_uploads),
                                      "device_upload_bytes",
                                      JI(rs.device_upload_bytes),
                                      "device_gathers", JI(rs.device_gathers)));
    }
    return j;
}

/* The slices, steps and samples sections of server-stats.json (the
 * counts a checkpoint carries too) into j. */
static void
counter_sections(const surge_counters *c, json_t *j)
{
    json_object_set_new(
        j, "slices",
        json_pack("{s:o,s:o,s:o,s:o,s:o}", "sent_by_clients",
                  JI(c->slices.sent_by_clients), "received",
                  JI(c->slices.received), "accepted", JI(c->slices.accepted),
                  "bytes", JI(c->slices.bytes), "dropped",
                  reasons_json(c->slices.dropped, SURGE_SDROP__COUNT,
                               surge_slice_drop_name)));
    json_object_set_new(
        j, "steps",
        json_pack("{s:o,s:o,s:o,s:o}", "started", JI(c->steps.started),
                  "assembled", JI(c->steps.assembled), "in_progress",
                  JI(c->steps.in_progress), "dropped",
                  reasons_json(c->steps.dropped, SURGE_TDROP__COUNT,
                               surge_step_drop_name)));
    json_object_set_new(
        j, "samples",
        json_pack("{s:o,s:o,s:o,s:o,s:o}", "train", JI(c->samples.train),
                  "validation", JI(c->samples.validation), "validation_evicted",
                  JI(c->samples.validation_evicted), "pending",
                  JI(c->samples.pending), "dropped",
                  reasons_json(c->samples.dropped, SURGE_PDROP__COUNT,
                               surge_sample_drop_name)));
}

/* Everything server-stats.json says about this rank (NULL: no memory). */
static json_t *
stats_json(surge_server *srv)
{
    const surge_counters *c = surge_ingest_counters(srv->ing);
    surge_consumer_stats cs = {0, 0};
    srv->cops->stats(srv->cstate, &cs);
    const char *bad = NULL;
    int consistent = surge_counters_check(c, &bad) == 0;
    if (!consistent) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "counts do not add up: %s", bad);
    }
    json_t *j = json_object();
    if (j == NULL) {
        return NULL;
    }
    json_object_set_new(j, "endpoint", json_string(srv->endpoint));
    json_object_set_new(j, "rank",
                        JI(srv->ranks != NULL ? srv->ranks->rank : 0));
    json_object_set_new(j, "pid", JI(getpid()));
    json_object_set_new(j, "wall_s",
                        json_real((surge_now_ns() - srv->start_ns) / 1e9));
    json_object_set_new(
        j, "stop_reason",
        json_string(srv->stop_reason_end ? "end_of_reception" : "stop"));
    json_object_set_new(j, "counts_add_up", json_boolean(consistent));
    json_object_set_new(
        j, "messages",
        json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "received",
                  JI(c->messages.received), "bytes", JI(c->messages.bytes),
                  "handled", JI(c->messages.handled), "hello",
                  JI(c->messages.hello), "data", JI(c->messages.data), "bye",
                  JI(c->messages.bye), "control", JI(c->messages.control),
                  "dropped",
                  reasons_json(c->messages.dropped, SURGE_MDROP__COUNT,
                               surge_msg_drop_name)));
    counter_sections(c, j);
    json_object_set_new(
        j, "sims",
        json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "hello",
                  JI(c->sims.hello), "rejected", JI(c->sims.rejected), "joined",
                  JI(c->sims.joined), "finished", JI(c->sims.finished),
                  "failed", JI(c->sims.failed), "timed_out",
                  JI(c->sims.timed_out), "not_joined", JI(c->sims.not_joined),
                  "retried", JI(c->sims.retried), "bye", JI(c->sims.bye),
                  "validation_runs", JI(c->sims.validation_runs),
                  "validation_runs_kept", JI(c->sims.validation_runs_kept)));
    json_object_set_new(json_object_get(j, "sims"), "redirected",
                        JI(c->sims.redirected));
    json_object_set_new(
        j, "io",
        json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:f}",
                  "accepted", JI(c->io.accepted), "disconnected",
                  JI(c->io.disconnected), "handshake_failed",
                  JI(c->io.handshake_failed), "curve_refused",
                  JI(c->io.curve_refused), "refused", JI(c->io.refused), "cut",
                  JI(c->io.cut), "held", JI(c->io.held), "replies_sent",
                  JI(c->io.replies_sent), "replies_dropped",
                  JI(c->io.replies_dropped), "control_ok", JI(c->io.control_ok),
                  "read_pauses", JI(c->io.read_pauses), "read_paused_s",
                  c->io.read_paused_ns / 1e9));
    json_object_set_new(j, "store", store_json(srv->train));
    if (srv->validation != NULL) {
        json_object_set_new(j, "validation_store", store_json(srv->validation));
    }
    json_object_set_new(j, "consumer",
                        json_pack("{s:s,s:o,s:o}", "name", srv->cops->name,
                                  "batches", JI(cs.batches), "samples",
                                  JI(cs.samples)));
    if (srv->cops->info != NULL) {
        srv->cops->info(srv->cstate, j);
    }
    return j;
}

/* dst += src for the numbers of two stats objects of the same shape:
 * integers and arrays of integers add up; reals add up too, except means
 * (keys with "mean"), which stay dst's; strings stay dst's. */
static void
json_sum(json_t *dst, const json_t *src)
{
    const char *key;
    json_t *sv;
    json_object_foreach((json_t *)src, key, sv)
    {
        json_t *dv = json_object_get(dst, key);
        if (dv == NULL) {
            continue;
        }
        if (json_is_object(dv) && json_is_object(sv)) {
            json_sum(dv, sv);
        } else if (json_is_integer(dv) && json_is_integer(sv)) {
            json_integer_set(dv,
                             json_integer_value(dv) + json_integer_value(sv));
        } else if (json_is_real(dv) && json_is_real(sv) &&
                   strstr(key, "mean") == NULL) {
            json_real_set(dv, json_real_value(dv) + json_real_value(sv));
        } else if (json_is_array(dv) && json_is_array(sv) &&
                   json_array_size(dv) == json_array_size(sv)) {
            for (size_t i = 0; i < json_array_size(dv); i++) {
                json_t *a = json_array_get(dv, i);
                json_t *b = json_array_get(sv, i);
                if (json_is_integer(a) && json_is_integer(b)) {
                    json_integer_set(a, json_integer_value(a) +
                                            json_integer_value(b));
                }
            }
        }
    }
}

/* The sections of server-stats.json that are counts of this rank and
 * add up over the ranks; the others (the trainer's, the endpoint) are
 * rank 0's. */
static const char *const summed_sections[] = {
    "messages", "slices",           "steps",   "samples", "sims", "io",
    "store",    "validation_store", "consumer"};

/* After the last collective: receive and drop what the other ranks sent
 * this one after its loop stopped listening (late figures, runs tables,
 * acks, relays), so that no message is left unmatched at MPI_Finalize. */
static void
drain_late(surge_server *srv)
{
    for (int i = 0; i < 100000; i++) {
        int flag = 0;
        MPI_Status st;
        if (MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, srv->ranks->io, &flag,
                       &st) != MPI_SUCCESS ||
            !flag) {
            return;
        }
        int bytes = 0;
        MPI_Get_count(&st, MPI_BYTE, &bytes);
        void *junk = malloc(bytes > 0 ? (size_t)bytes : 1);
        if (junk == NULL) {
            return;
        }
        MPI_Recv(junk, bytes, MPI_BYTE, st.MPI_SOURCE, st.MPI_TAG,
                 srv->ranks->io, MPI_STATUS_IGNORE);
        free(junk);
    }
}

/* R > 1, main thread after the loop and the consumer ended: every rank
 * gives rank 0 its stats and counters; rank 0 writes server-stats.json
 * with the totals (the sums, checked), the list per rank and what it
 * could not collect. Takes mine. */
static int
collect_stats(surge_server *srv, json_t *mine)
{
    const surge_ranks *rk = srv->ranks;
    int R = rk->size;
    double limit = srv->o->stop_timeout_s + 60.0 +
                   (srv->o->sim_timeout_s > 0 ? srv->o->sim_timeout_s : 0.0);
    int rc = 0;
    /* Our own sends first: a relay or figures still in flight. */
    if (srv->fig_req != MPI_REQUEST_NULL) {
        rc = mpi_wait(&srv->fig_req, limit, "sending the last figures");
    }
    if (rc == 0 && srv->runs_req != MPI_REQUEST_NULL) {
        rc = mpi_wait(&srv->runs_req, limit, "sending the runs table");
    }
    while (rc == 0 && srv->relays != NULL) {
        struct relay *rl = srv->relays;
        rc = mpi_wait(&rl->req, limit, "relaying control");
        srv->relays = rl->next;
        free(rl);
    }
    char *text = json_dumps(mine, JSON_COMPACT);
    int len = text != NULL ? (int)strlen(text) + 1 : 1;
    int *lens = rk->rank == 0 ? calloc((size_t)R, sizeof *lens) : NULL;
    int *displs = rk->rank == 0 ? calloc((size_t)R, sizeof *displs) : NULL;
    uint64_t *sum = rk->rank == 0 ? calloc(NCOUNTERS, sizeof *sum) : NULL;
    char *all = NULL;
    MPI_Request req;
    if (rc == 0 && rk->rank == 0 &&
        (lens == NULL || displs == NULL || sum == NULL)) {
        rc = -ENOMEM;
    }
    if (rc == 0 && MPI_Igather(&len, 1, MPI_INT, lens, 1, MPI_INT, 0, rk->io,
                               &req) == MPI_SUCCESS) {
        rc = mpi_wait(&req, limit, "collecting the ranks' figures");
    }
    size_t total = 0;
    if (rc == 0 && rk->rank == 0) {
        for (int r = 0; r < R; r++) {
            displs[r] = (int)total;
            total += lens[r] > 0 ? (size_t)lens[r] : 0;
        }
        all = malloc(total > 0 ? total : 1);
        if (all == NULL) {
            rc = -ENOMEM;
        }
    }
    if (rc == 0 &&
        MPI_Igatherv(text != NULL ? text : "", len, MPI_CHAR, all, lens, displs,
                     MPI_CHAR, 0, rk->io, &req) == MPI_SUCCESS) {
        rc = mpi_wait(&req, limit, "collecting the ranks' figures");
    }
    if (rc == 0 &&
        MPI_Ireduce(surge_ingest_counters(srv->ing), sum, (int)NCOUNTERS,
                    MPI_UINT64_T, MPI_SUM, 0, rk->io, &req) == MPI_SUCCESS) {
        rc = mpi_wait(&req, limit, "summing the ranks' counts");
    }
    free(text);
    drain_late(srv);
    if (rk->rank != 0) {
        json_decref(mine);
        if (rc != 0) {
            /* See below: a collective left open cannot be finished. */
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        return rc;
    }
    /* Rank 0: the totals start as its own stats. */
    json_t *per = json_array();
    int all_add_up = 1, collected = rc == 0;
    for (int r = 0; collected && r < R; r++) {
        json_error_t jerr;
        json_t *one =
            all != NULL && lens[r] > 0 && all[displs[r] + lens[r] - 1] == '\0'
                ? json_loads(all + displs[r], 0, &jerr)
                : NULL;
        if (!json_is_object(one)) {
            SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
                      "server rank %d sent unreadable stats", r);
            json_decref(one);
            collected = 0;
            break;
        }
        all_add_up &= json_is_true(json_object_get(one, "counts_add_up"));
        if (r > 0) {
            for (size_t k = 0;
                 k < sizeof summed_sections / sizeof summed_sections[0]; k++) {
                json_t *d = json_object_get(mine, summed_sections[k]);
                json_t *v = json_object_get(one, summed_sections[k]);
                if (d != NULL && v != NULL) {
                    json_sum(d, v);
                }
            }
            double w = json_real_value(json_object_get(one, "wall_s"));
            if (w > json_real_value(json_object_get(mine, "wall_s"))) {
                json_object_set_new(mine, "wall_s", json_real(w));
            }
        }
        json_array_append_new(per, one);
    }
    const char *bad = "not collected from every rank";
    int sums_add_up =
        collected && surge_counters_check(
                         (const surge_counters *)(const void *)sum, &bad) == 0;
    if (!sums_add_up) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
                  "counts over the %d ranks do not add up: %s", R, bad);
    }
    json_object_set_new(mine, "counts_add_up",
                        json_boolean(sums_add_up && all_add_up));
    json_object_set_new(mine, "ranks", JI(R));
    json_object_set_new(mine, "ranks_collected", json_boolean(collected));
    json_t *eps = json_array();
    for (uint32_t r = 0; r < srv->servers->nservers; r++) {
        json_array_append_new(
            eps, json_string(surge_proto_welcome_endpoint(srv->servers, r)));
    }
    json_object_set_new(mine, "endpoints", eps);
    json_object_set_new(mine, "route",
                        json_string(srv->o->bind_simulation ? "sim" : "step"));
    json_object_set_new(mine, "per_rank", per);
    int wrc = write_json(srv->o, "server-stats.json", mine);
    json_decref(mine);
    free(all);
    free(lens);
    free(displs);
    free(sum);
    if (rc != 0) {
        /* A rank that never came leaves a collective open that MPI cannot
         * finish: what we know is written; end the whole job. */
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
                  "ending the server's MPI job: a rank is not answering");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    return wrc < 0 ? wrc : rc;
}

static int
write_stats(surge_server *srv)
{
    json_t *j = stats_json(srv);
    if (j == NULL) {
        return -ENOMEM;
    }
    if (multi(srv)) {
        return collect_stats(srv, j); /* takes j */
    }
    json_object_set_new(j, "ranks", JI(1));
    int rc = write_json(srv->o, "server-stats.json", j);
    json_decref(j);
    return rc;
}

/* ------------------------------------------------------------ setup */

/* A server bound to every interface (tcp://0.0.0.0:PORT, e.g. on a cluster)
 * must not advertise 0.0.0.0 in server.json: clients on other nodes would
 * connect to themselves. Node names of a cluster need not resolve either,
 * so advertise an address instead: SURGE_ADVERTISE_HOST when set, else the
 * first IPv4 address of an interface that is up and not loopback. */
static void
advertise_reachable_host(char *endpoint, size_t cap)
{
    static const char wildcard[] = "tcp://0.0.0.0:";
    char host[INET_ADDRSTRLEN] = "";
    if (strncmp(endpoint, wildcard, sizeof wildcard - 1) != 0) {
        return;
    }
    const char *port = endpoint + sizeof wildcard - 1;
    const char *env = getenv("SURGE_ADVERTISE_HOST");
    if (env != NULL && env[0] != '\0' && strlen(env) < sizeof host) {
        snprintf(host, sizeof host, "%s", env);
    } else {
        struct ifaddrs *ifs = NULL;
        if (getifaddrs(&ifs) == 0) {
            for (struct ifaddrs *i = ifs; i != NULL; i = i->ifa_next) {
                if (i->ifa_addr == NULL || i->ifa_addr->sa_family != AF_INET ||
                    (i->ifa_flags & IFF_UP) == 0 ||
                    (i->ifa_flags & IFF_LOOPBACK) != 0) {
                    continue;
                }
                const struct sockaddr_in *sin =
                    (const struct sockaddr_in *)(const void *)i->ifa_addr;
                if (inet_ntop(AF_INET, &sin->sin_addr, host, sizeof host) !=
                    NULL) {
                    break;
                }
                host[0] = '\0';
            }
            freeifaddrs(ifs);
        }
    }
    if (host[0] == '\0') {
        snprintf(host, sizeof host, "127.0.0.1");
    }
    char port_copy[16];
    snprintf(port_copy, sizeof port_copy, "%s", port);
    snprintf(endpoint, cap, "tcp://%s:%s", host, port_copy);
    SURGE_LOG(SURGE_LOG_INFO, COMPONENT,
              "bound to every interface; "
              "advertising %s",
              endpoint);
}

/* CURVE on the ROUTER, with a ZAP handler that knows the study's client
 * keys. The handler is bound before the ROUTER is, so that no handshake
 * can happen without it (libzmq lets every CURVE client in when no handler
 * is bound). */
static int
curve_setup(surge_server *srv)
{
    const surge_server_options *o = srv->o;
    char err[512];
    int one = 1, zero = 0;
    if (!zmq_has("curve")) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
                  "--curve-keys: this libzmq was built without CURVE");
        return -1;
    }
    srv->curve = calloc(1, sizeof *srv->curve);
    if (srv->curve == NULL) {
        return -1;
    }
    if (surge_curve_keys_load(o->curve_keys, 1, srv->curve, err, sizeof err) !=
        0) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "--curve-keys: %s", err);
        return -1;
    }
    surge_ratelimit_init(&srv->zap_log, 5, 10ull * 1000000000ull);
    srv->zap = zmq_socket(srv->zctx, ZMQ_REP);
    if (srv->zap == NULL ||
        zmq_setsockopt(srv->zap, ZMQ_LINGER, &zero, sizeof zero) ||
        zmq_bind(srv->zap, "inproc://zeromq.zap.01") != 0 ||
        zmq_setsockopt(srv->router, ZMQ_CURVE_SERVER, &one, sizeof one) ||
        zmq_setsockopt(srv->router, ZMQ_CURVE_SECRETKEY, srv->curve->secret_key,
                       sizeof srv->curve->secret_key) ||
        zmq_setsockopt(srv->router, ZMQ_ZAP_DOMAIN, "surge", 5)) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "CURVE setup: %s",
                  zmq_strerror(zmq_errno()));
        return -1;
    }
    SURGE_LOG(SURGE_LOG_INFO, COMPONENT,
              "CURVE on: connections are encrypted; %zu client key(s) "
              "accepted",
              srv->curve->nclients);
    return 0;
}

static int
zmq_setup(surge_server *srv)
{
    const surge_server_options *o = srv->o;
    srv->zctx = zmq_ctx_new();
    if (srv->zctx == NULL) {
        return -ENOMEM;
    }
    srv->router = zmq_socket(srv->zctx, ZMQ_ROUTER);
    if (srv->router == NULL) {
        return -ENOMEM;
    }
    int64_t maxmsg = (int64_t)o->max_message_bytes;
    uint64_t hwm64 = o->rcvhwm_bytes / PACKED_MSG_BYTES;
    int hwm = hwm64 < 16 ? 16 : hwm64 > 1000000 ? 1000000 : (int)hwm64;
    int one = 1, zero = 0, hb_ivl = 2000, hb_timeout = 10000;
    int sndhwm = 1000; /* replies are small */
    if (zmq_setsockopt(srv->router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) ||
        zmq_setsockopt(srv->router, ZMQ_RCVHWM, &hwm, sizeof hwm) ||
        zmq_setsockopt(srv->router, ZMQ_SNDHWM, &sndhwm, sizeof sndhwm) ||
        zmq_setsockopt(srv->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one) ||
        zmq_setsockopt(srv->router, ZMQ_LINGER, &zero, sizeof zero) ||
        zmq_setsockopt(srv->router, ZMQ_HEARTBEAT_IVL, &hb_ivl,
                       sizeof hb_ivl) ||
        zmq_setsockopt(srv->router, ZMQ_HEARTBEAT_TIMEOUT, &hb_timeout,
                       sizeof hb_timeout)) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "socket options: %s",
                  zmq_strerror(zmq_errno()));
        return SURGE_EINTERNAL;
    }
    /* The monitor must exist before bind so no accept goes unseen. */
    char monep[64];
    snprintf(monep, sizeof monep, "inproc://surge-monitor-%p", (void *)srv);
    if (zmq_socket_monitor(srv->router, monep,
                           ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED |
                               ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) != 0) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "socket monitor: %s",
                  zmq_strerror(zmq_errno()));
        return SURGE_EINTERNAL;
    }
    srv->mon = zmq_socket(srv->zctx, ZMQ_PAIR);
    if (srv->mon == NULL ||
        zmq_setsockopt(srv->mon, ZMQ_LINGER, &zero, sizeof zero) ||
        zmq_connect(srv->mon, monep) != 0) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "monitor socket: %s",
                  zmq_strerror(zmq_errno()));
        return SURGE_EINTERNAL;
    }
    if (o->curve_keys[0] != '\0' && curve_setup(srv) != 0) {
        return SURGE_ECONFIG;
    }
    char bind[sizeof o->bind + 16];
    if (rank_bind(srv, bind, sizeof bind) != 0) {
        return SURGE_ECONFIG;
    }
    if (zmq_bind(srv->router, bind) != 0) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "cannot bind %s: %s", bind,
                  zmq_strerror(zmq_errno()));
        return SURGE_ECONFIG;
    }
    size_t len = sizeof srv->endpoint;
    if (zmq_getsockopt(srv->router, ZMQ_LAST_ENDPOINT, srv->endpoint, &len) !=
        0) {
        snprintf(srv->endpoint, sizeof srv->endpoint, "%.255s", bind);
    }
    advertise_reachable_host(srv->endpoint, sizeof srv->endpoint);
    return 0;
}

/* A per-rank file name: PATH itself with one rank, else PATH.rankN. */
static void
rank_path(const surge_server *srv, const char *path, char *out, size_t cap)
{
    if (multi(srv)) {
        snprintf(out, cap, "%s.rank%d", path, srv->ranks->rank);
    } else {
        snprintf(out, cap, "%s", path);
    }
}

/* With several ranks on one node, each binds its own endpoint: a fixed
 * tcp port P becomes P + rank, an ipc path PATH becomes PATH.rankN; port
 * 0 (or *) already gives each rank a free port of its own. */
static int
rank_bind(const surge_server *srv, char *out, size_t cap)
{
    const char *b = srv->o->bind;
    snprintf(out, cap, "%s", b);
    if (!multi(srv)) {
        return 0;
    }
    /* Ranks given binds of their own (an MPMD mpirun line) keep them:
     * only a --bind every rank shares is made per rank. */
    int same = 0;
    char mine[sizeof srv->o->bind];
    snprintf(mine, sizeof mine, "%s", b);
    size_t blen = sizeof mine;
    char *all = calloc((size_t)srv->ranks->size, blen);
    MPI_Request req;
    if (all == NULL ||
        MPI_Iallgather(mine, (int)blen, MPI_CHAR, all, (int)blen, MPI_CHAR,
                       srv->ranks->io, &req) != MPI_SUCCESS ||
        mpi_wait(&req, 60.0, "comparing the ranks' --bind") != 0) {
        free(all);
        return SURGE_ECONFIG;
    }
    same = 1;
    for (int k = 0; k < srv->ranks->size; k++) {
        same &= strncmp(all + (size_t)k * blen, mine, blen) == 0;
    }
    free(all);
    if (!same) {
        return 0;
    }
    int r = srv->ranks->rank;
    if (strncmp(b, "ipc://", 6) == 0) {
        snprintf(out, cap, "%s.rank%d", b, r);
        return 0;
    }
    const char *colon = strrchr(b, ':');
    if (strncmp(b, "tcp://", 6) != 0 || colon == NULL || colon[1] == '*') {
        return 0;
    }
    char *end = NULL;
    errno = 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (errno != 0 || end == colon + 1 || *end != '\0' || port > 65535) {
        return 0; /* zmq_bind names the problem */
    }
    if (port == 0) {
        return 0;
    }
    if (port + (unsigned long)r > 65535) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
                  "--bind %s: port %lu + rank %d is over 65535", b, port, r);
        return SURGE_ECONFIG;
    }
    snprintf(out, cap, "%.*s:%lu", (int)(colon - b), b,
             port + (unsigned long)r);
    return 0;
}

int
surge_server_create(surge_server **out, const surge_server_options *o,
                    const struct surge_ranks *ranks)
{
    int rc;
    surge_server *srv = calloc(1, sizeof *srv);
    if (srv == NULL) {
        return -ENOMEM;
    }
    srv->o = o;
    srv->ranks = ranks;
    srv->fig_req = MPI_REQUEST_NULL;
    srv->runs_req = MPI_REQUEST_NULL;
    surge_ratelimit_init(&srv->refused_rl, 5, UINT64_C(10) * 1000000000u);
    surge_ratelimit_init(&srv->cut_rl, 5, UINT64_C(10) * 1000000000u);
    if (pthread_mutex_init(&srv->io_mu, NULL) != 0) {
        free(srv);
        return -ENOMEM;
    }
    if (surge_cond_init_monotonic(&srv->io_cv) != 0) {
        pthread_mutex_destroy(&srv->io_mu);
        free(srv);
        return -ENOMEM;
    }
    srv->io_init = 1;
    srv->cops = surge_consumer_find(o->consumer);
    if (srv->cops == NULL) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "unknown consumer '%s'",
                  o->consumer);
        rc = SURGE_ECONFIG;
        goto fail;
    }
    struct stat sb;
    if (stat(o->output_dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        if (mkdir(o->output_dir, 0755) != 0 && errno != EEXIST) {
            SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
                      "output folder '%s' cannot be created: %s", o->output_dir,
                      strerror(errno));
            rc = SURGE_ECONFIG;
            goto fail;
        }
    }
    /* The training store is the reservoir, with the study's policy. */
    surge_reservoir_config rcfg;
    rc = surge_server_reservoir_config(o, &rcfg);
    if (rc < 0) {
        goto fail;
    }
    surge_store_config sc = {"train", SURGE_STORE_STREAM, o->store_bytes,
                             &rcfg};
    rc = surge_store_create(&srv->train, &sc);
    if (rc < 0) {
        goto fail;
    }
    if (o->validation_every > 0 || o->nvalidation_sims > 0) {
        surge_store_config vc = {"validation", SURGE_STORE_KEEP,
                                 o->validation_bytes, NULL};
        rc = surge_store_create(&srv->validation, &vc);
        if (rc < 0) {
            goto fail;
        }
    }
    if (o->checksum_log[0] != '\0') {
        /* Ranks share the output folder: each its own file. */
        char cpath[SURGE_SERVER_MAX_PATH + 32];
        rank_path(srv, o->checksum_log, cpath, sizeof cpath);
        srv->checksum = fopen(cpath, "a");
        if (srv->checksum == NULL) {
            SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
                      "--checksum-log: cannot open '%s': %s", cpath,
                      strerror(errno));
            rc = SURGE_ECONFIG;
            goto fail;
        }
        /* Line-buffered: each line reaches the kernel as it is written, so
         * a server killed with SIGKILL loses none (tests compare it with
         * what the clients sent; it is a debugging aid, not a hot path). */
        setvbuf(srv->checksum, NULL, _IOLBF, 0);
    }
    rc = surge_ingest_create(&srv->ing, o, srv->train, srv->validation,
                             srv->checksum);
    if (rc < 0) {
        goto fail;
    }
    rc = srv->cops->create(&srv->cstate, o);
    if (rc < 0) {
        goto fail;
    }
    srv->cctx.train = srv->train;
    srv->cctx.validation = srv->validation;
    srv->cctx.opts = o;
    srv->cctx.ranks = ranks;
    srv->cctx.io_call = io_call;
    srv->cctx.io = srv;
    srv->cctx.output_fields = output_fields;
    if (srv->cops->prepare != NULL) {
        /* Before any thread: e.g. a resumed trainer's reservoir and the
         * steps the earlier server assembled. */
        surge_consumer_prep prep = {srv->train, srv->validation, mark_assembled,
                                    srv->ing};
        rc = srv->cops->prepare(srv->cstate, &prep);
        if (rc < 0) {
            goto fail;
        }
    }
    rc = zmq_setup(srv);
    if (rc < 0) {
        goto fail;
    }
    *out = srv;
    return 0;

fail:
    surge_server_destroy(&srv);
    return rc;
}

const char *
surge_server_endpoint(const surge_server *srv)
{
    return srv->endpoint;
}

static int
init_handles(surge_server *srv)
{
    int fd_router, fd_mon;
    size_t len = sizeof fd_router;
    if (zmq_getsockopt(srv->router, ZMQ_FD, &fd_router, &len) != 0) {
        return SURGE_EINTERNAL;
    }
    len = sizeof fd_mon;
    if (zmq_getsockopt(srv->mon, ZMQ_FD, &fd_mon, &len) != 0) {
        return SURGE_EINTERNAL;
    }
    if (uv_loop_init(&srv->loop) != 0) {
        return -ENOMEM;
    }
    uv_poll_init(&srv->loop, &srv->poll_router, fd_router);
    uv_poll_init(&srv->loop, &srv->poll_mon, fd_mon);
    uv_timer_init(&srv->loop, &srv->tick);
    uv_timer_init(&srv->loop, &srv->retry);
    uv_timer_init(&srv->loop, &srv->stop_timer);
    uv_timer_init(&srv->loop, &srv->more);
    uv_timer_init(&srv->loop, &srv->mpi_timer);
    srv->mpi_timer.data = srv;
    uv_signal_init(&srv->loop, &srv->sigint);
    uv_signal_init(&srv->loop, &srv->sigterm);
    uv_async_init(&srv->loop, &srv->wake, on_wake);
    srv->poll_router.data = srv->poll_mon.data = srv;
    srv->tick.data = srv->retry.data = srv->stop_timer.data = srv;
    srv->more.data = srv;
    srv->sigint.data = srv->sigterm.data = srv;
    srv->wake.data = srv;
    srv->handles_open = 1;
    uv_poll_start(&srv->poll_mon, UV_READABLE, on_monitor);
    if (srv->zap != NULL) {
        int fd_zap;
        len = sizeof fd_zap;
        if (zmq_getsockopt(srv->zap, ZMQ_FD, &fd_zap, &len) != 0) {
            return SURGE_EINTERNAL;
        }
        uv_poll_init(&srv->loop, &srv->poll_zap, fd_zap);
        srv->poll_zap.data = srv;
        uv_poll_start(&srv->poll_zap, UV_READABLE, on_zap);
        /* ZMQ_FD is edge-triggered: a request that came before the loop
         * started would otherwise wait forever. */
        drain_zap(srv);
    }
    uv_poll_start(&srv->poll_router, UV_READABLE, on_router);
    srv->reading = 1;
    uv_timer_start(&srv->tick, on_tick, TICK_MS, TICK_MS);
    if (multi(srv)) {
        uv_timer_start(&srv->mpi_timer, on_mpi, MPI_POLL_MS, MPI_POLL_MS);
    }
    uv_signal_start(&srv->sigint, on_signal, SIGINT);
    uv_signal_start(&srv->sigterm, on_signal, SIGTERM);
    return 0;
}

/* The runs table of the dashboard and `surge top` (I/O thread). */
static int
runs_cb(void *arg, struct surge_run_info *runs, size_t cap)
{
    surge_server *srv = arg;
    if (multi(srv)) {
        return merged_runs(srv, runs, cap, surge_now_ns());
    }
    return surge_ingest_runs(srv->ing, runs, cap, surge_now_ns());
}

/* The monitoring HTTP server on our loop, with the server's metrics. */
static int
start_monitor(surge_server *srv)
{
    int rc = surge_monitor_create(&srv->loop, srv->o->http, srv->o->token,
                                  &srv->monitor);
    if (rc < 0 || srv->monitor == NULL) {
        return rc;
    }
    /* Several ranks: monitoring shows the counters summed over them. */
    struct surge_monitor_server src = {
        .counters = multi(srv) ? &srv->sum : surge_ingest_counters(srv->ing),
        .train = srv->train,
        .validation = srv->validation,
        .store_bytes = srv->o->store_bytes,
        .consumer = srv->cops,
        .consumer_state = srv->cstate};
    surge_metrics *m = surge_monitor_metrics(srv->monitor);
    srv->cctx.metrics = m; /* the consumer thread starts after this */
    surge_metrics_set_runs_cb(m, runs_cb, srv);
    surge_metrics_set_status_cb(m, status_ranks_cb, srv);
    rc = surge_monitor_add_server(srv->monitor, &src);
    if (rc == 0 && multi(srv)) {
        rc = register_rank_series(srv, m);
    }
    if (rc == 0) {
        rc = surge_metrics_set_info(m, "endpoint", srv->endpoint);
    }
    if (rc == 0) {
        rc = surge_metrics_set_info(m, "policy", srv->o->policy);
    }
    if (rc < 0) {
        return rc;
    }
    SURGE_LOG(SURGE_LOG_INFO, COMPONENT, "dashboard and metrics at %s",
              surge_monitor_url(srv->monitor));
    return 0;
}

static int run_loop(surge_server *srv);

int
surge_server_run(surge_server *srv)
{
    srv->start_ns = srv->last_msg_ns = srv->last_log_ns = surge_now_ns();
    int rc = init_handles(srv);
    if (rc < 0) {
        return rc;
    }
    if (multi(srv)) {
        rc = exchange_endpoints(srv);
        if (rc < 0) {
            return rc;
        }
        /* Rank 0 speaks for the server: HTTP, server.json. */
        if (srv->ranks->rank > 0) {
            return run_loop(srv);
        }
    }
    rc = start_monitor(srv);
    if (rc < 0) {
        return rc; /* destroy closes the handles */
    }
    json_t *info = json_pack("{s:s,s:o,s:s}", "endpoint", srv->endpoint, "pid",
                             JI(getpid()), "bind", srv->o->bind);
    if (info != NULL) {
        json_t *eps = json_array();
        if (multi(srv)) {
            for (uint32_t r = 0; r < srv->servers->nservers; r++) {
                json_array_append_new(
                    eps,
                    json_string(surge_proto_welcome_endpoint(srv->servers, r)));
            }
        } else {
            json_array_append_new(eps, json_string(srv->endpoint));
        }
        json_object_set_new(info, "endpoints", eps);
        json_object_set_new(info, "ranks",
                            JI(multi(srv) ? srv->ranks->size : 1));
        json_object_set_new(
            info, "route",
            json_string(srv->o->bind_simulation ? "sim" : "step"));
    }
    if (info != NULL && srv->monitor != NULL) {
        json_object_set_new(info, "http",
                            json_string(surge_monitor_url(srv->monitor)));
    }
    if (info != NULL && srv->cops->info != NULL) {
        srv->cops->info(srv->cstate, info);
    }
    rc = write_json(srv->o, "server.json", info);
    json_decref(info);
    if (rc < 0) {
        return rc;
    }
    return run_loop(srv);
}

/* Start the consumer, run the loop to its end, write the stats. */
static int
run_loop(surge_server *srv)
{
    int rc;
    surge_store_set_space_cb(srv->train, space_cb, srv);
    if (pthread_create(&srv->cthread, NULL, consumer_main, srv) != 0) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
                  "cannot start the consumer thread");
        close_handles(srv);
        uv_run(&srv->loop, UV_RUN_DEFAULT);
        return -EAGAIN;
    }
    srv->cthread_started = 1;
    SURGE_LOG(SURGE_LOG_INFO, COMPONENT,
              "listening on %s (pid %ld, consumer %s, policy %s)",
              srv->endpoint, (long)getpid(), srv->cops->name, srv->o->policy);
    /* The monitor may have queued events before the poll started. */
    drain_monitor(srv);
    drain_router(srv);
    uv_run(&srv->loop, UV_RUN_DEFAULT);
    pthread_join(srv->cthread, NULL);
    srv->cthread_started = 0;
    drain_monitor(srv);
    if (srv->checksum != NULL) {
        fflush(srv->checksum);
    }
    log_progress(srv, surge_now_ns());
    rc = write_stats(srv);
    if (rc == 0 && srv->consumer_rc < 0) {
        rc = srv->consumer_rc;
    }
    return rc;
}

void
surge_server_destroy(surge_server **srvp)
{
    if (srvp == NULL || *srvp == NULL) {
        return;
    }
    surge_server *srv = *srvp;
    if (srv->cthread_started) {
        surge_store_stop(srv->train);
        pthread_join(srv->cthread, NULL);
    }
    if (srv->handles_open) {
        srv->end_wait.active = 0; /* nothing is answered any more */
        close_handles(srv);
        uv_run(&srv->loop, UV_RUN_DEFAULT);
        uv_loop_close(&srv->loop);
    }
    while (srv->held_head != NULL) {
        struct held *h = srv->held_head;
        srv->held_head = h->next;
        held_free(h);
        free(h);
    }
    if (srv->mon != NULL) {
        zmq_close(srv->mon);
    }
    if (srv->zap != NULL) {
        zmq_close(srv->zap);
    }
    if (srv->curve != NULL) {
        explicit_bzero(srv->curve, sizeof *srv->curve);
        free(srv->curve);
    }
    if (srv->router != NULL) {
        zmq_socket_monitor(srv->router, NULL, 0);
        zmq_close(srv->router);
    }
    if (srv->zctx != NULL) {
        zmq_ctx_term(srv->zctx);
    }
    if (srv->cops != NULL && srv->cstate != NULL) {
        srv->cops->destroy(srv->cstate);
    }
    surge_ingest_destroy(&srv->ing);
    if (srv->checksum != NULL) {
        fclose(srv->checksum);
    }
    surge_store_destroy(&srv->validation);
    surge_store_destroy(&srv->train);
    while (srv->relays != NULL) {
        /* Only after a failed run: a send still in flight is cancelled. */
        struct relay *rl = srv->relays;
        srv->relays = rl->next;
        MPI_Cancel(&rl->req);
        MPI_Request_free(&rl->req);
        free(rl);
    }
    if (srv->fig_req != MPI_REQUEST_NULL) {
        MPI_Cancel(&srv->fig_req);
        MPI_Request_free(&srv->fig_req);
    }
    if (srv->runs_req != MPI_REQUEST_NULL) {
        MPI_Cancel(&srv->runs_req);
        MPI_Request_free(&srv->runs_req);
    }
    for (int r = 0; srv->rank_runs != NULL && r < srv->ranks->size; r++) {
        free(srv->rank_runs[r]);
    }
    free(srv->rank_runs);
    free(srv->rank_nruns);
    free(srv->runs_out);
    free(srv->servers);
    free(srv->figs);
    free(srv->rank_series);
    if (srv->io_init) {
        pthread_cond_destroy(&srv->io_cv);
        pthread_mutex_destroy(&srv->io_mu);
    }
    free(srv);
    *srvp = NULL;
}
