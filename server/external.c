/*
 * server/external.c - the "external" consumer: serves training batches to
 * trainers in other processes (PyTorch: python/surge/torch.py) over one
 * ZeroMQ ROUTER socket. Protocol: docs/protocol.md, "External trainers".
 *
 * DESIGN. prepare() binds the socket (so its endpoint is known when
 * server.json is written: info()); run() on the consumer thread owns it.
 * A consumer (DEALER) says hello with the study token and grants credit;
 * every credit buys one batch, gathered by the policy from the training
 * reservoir straight into a pooled buffer that the ZeroMQ frames point
 * into (zmq_msg_init_data: no copy on the server after the gather; the
 * buffer returns to the pool when ZeroMQ has sent the last frame). With
 * no credit the server takes nothing, so a slow consumer holds the
 * reservoir full and the producers wait (backpressure); a consumer that
 * cannot keep up with credit simply has none outstanding.
 *
 * Accounting, per consumer: rows_served = rows_acked + rows_unacked; a
 * batch is acked by an "ack" (with its per-row losses, used as priorities
 * when the policy is prioritized). A consumer silent for timeout_s, or
 * that leaves with batches unacked, has those rows counted as unacked
 * (with its identity in server-stats.json), so the served total still
 * adds up to the reservoir's taken count.
 *
 * Threads: create, prepare, info, destroy on the main thread; run on the
 * consumer thread; stats (atomics) and info (under mu) on any thread; the
 * buffer free callback on ZeroMQ's I/O thread (pool under pool_mu).
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <msgpack.h>
#include <zmq.h>

#include <surge/error.h>

#include "common/log.h"
#include "common/protocol.h"
#include "common/util.h"
#include "reservoir/reservoir.h"
#include "server/consumer.h"
#include "server/shmring.h"

#define COMPONENT "external"
#define MAX_PEERS 64
#define MAX_CREDIT 16       /* outstanding batches per consumer */
#define MAX_HEADER 4096     /* largest request header accepted */
#define MAX_VALIDATION 4096 /* rows per validation reply */
#define POOL_KEEP 8         /* free buffers kept for reuse */
#define POLL_MS 20
#define SHM_SLOTS 4  /* most ring slots per consumer (2 at least) */
#define SHM_ALIGN 64 /* region alignment inside a slot */

enum peer_state { P_ACTIVE, P_LEFT, P_TIMED_OUT };

struct outstanding {
    uint64_t id;
    uint32_t rows;
    int32_t slot;           /* ring slot holding the batch; -1 = ZeroMQ */
    surge_batch_info *info; /* rows entries (priorities) */
};

struct peer {
    uint8_t ident[256];
    size_t ident_len;
    enum peer_state state;
    uint32_t credit;
    uint64_t last_seen_ns, last_sent_ns;
    int ended_sent;
    struct outstanding out[MAX_CREDIT];
    uint32_t n_out;
    /* Shared-memory transfer (docs/protocol.md): the consumer's ring, NULL
     * when its batches go over ZeroMQ. Offered in the welcome; no batch is
     * served until the consumer attached (or declined: ring freed). */
    surge_shm_ring *ring;
    int shm_pending;         /* offered, not attached yet */
    int attached;            /* it took batches in shared memory (for
                                info(), which reads it under mu) */
    uint64_t shm_offered_ns; /* when */
    char transport_why[96];  /* why ZeroMQ, for the welcome and info */
    /* Counts (under ext.mu for info(); written by the consumer thread). */
    uint64_t batches, rows_served, rows_acked, rows_unacked, losses_applied,
        validation_rows;
};

struct buf {
    struct ext *e;
    atomic_int refs; /* frames still referencing it */
    size_t bytes;
    unsigned char *data;
    struct buf *next;
};

struct ext {
    char bind[256];
    char endpoint[256];
    char token[SURGE_MAX_TOKEN + 1];
    uint32_t batch;
    double timeout_s;
    int prio;
    void *zctx, *sock;
    pthread_mutex_t mu; /* peers' counts, for info() */
    struct peer peers[MAX_PEERS];
    int n_peers;
    uint64_t next_id;
    uint64_t bad_messages, rejected;
    _Atomic uint64_t batches, samples;
    /* Normalisation statistics, from the first batch served (shared by
     * every consumer, so DDP ranks normalise alike). */
    int have_stats;
    float *stats; /* in_mean, in_std (nin each), out_mean, out_std (nout) */
    uint32_t nin;
    uint64_t nout;
    pthread_mutex_t pool_mu;
    struct buf *pool;
    int pool_n;
    /* Shared-memory rings: the budget (--external-shm) and what the rings
     * of the consumers hold now; the slot layout (offsets in bytes of the
     * regions for a full batch), set once the shape is known. */
    uint64_t shm_budget, shm_used;
    char boot_id[64]; /* this host's identity; "" = unknown: no shm */
    size_t off_out, off_ids, off_w, slot_bytes;
    /* Checkpoints (below): where, how often, whose; what the checkpoint
     * resumed from carried (read-only once prepare returned). */
    char ckpt[SURGE_SERVER_MAX_PATH + 32]; /* "" = none */
    char resume[SURGE_SERVER_MAX_PATH + 32];
    char study_id[65];
    double ckpt_every_s;      /* 0 = none */
    uint64_t last_ckpt_ns;    /* consumer thread */
    uint64_t ckpts;           /* written */
    json_t *carried;          /* server_counts resumed from, or NULL */
    json_t *carried_finished; /* its sims_finished, or NULL */
};

/* ---------------------------------------------------------- buffer pool */

static struct buf *
buf_get(struct ext *e, size_t bytes)
{
    pthread_mutex_lock(&e->pool_mu);
    struct buf *b = e->pool;
    if (b != NULL) {
        e->pool = b->next;
        e->pool_n--;
    }
    pthread_mutex_unlock(&e->pool_mu);
    if (b != NULL && b->bytes == bytes) {
        return b;
    }
    if (b != NULL) {
        surge_huge_free(b->data, b->bytes);
        free(b);
    }
    b = calloc(1, sizeof *b);
    if (b == NULL) {
        return NULL;
    }
    b->data = surge_huge_alloc(bytes);
    if (b->data == NULL) {
        free(b);
        return NULL;
    }
    b->e = e;
    b->bytes = bytes;
    return b;
}

static void
buf_put(struct ext *e, struct buf *b)
{
    pthread_mutex_lock(&e->pool_mu);
    if (e->pool_n < POOL_KEEP) {
        b->next = e->pool;
        e->pool = b;
        e->pool_n++;
        b = NULL;
    }
    pthread_mutex_unlock(&e->pool_mu);
    if (b != NULL) {
        surge_huge_free(b->data, b->bytes);
        free(b);
    }
}

/* zmq_free_fn: ZeroMQ is done with one frame over b. */
static void
buf_unref(void *data, void *hint)
{
    (void)data;
    struct buf *b = hint;
    if (atomic_fetch_sub(&b->refs, 1) == 1) {
        buf_put(b->e, b);
    }
}

/* ---------------------------------------------------------- msgpack */

static int
pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    return msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, s, n);
}

static int
pack_kv_u64(msgpack_packer *pk, const char *k, uint64_t v)
{
    return pack_str(pk, k) || msgpack_pack_uint64(pk, v);
}

static int
pack_kv_str(msgpack_packer *pk, const char *k, const char *v)
{
    return pack_str(pk, k) ||
           (v != NULL ? pack_str(pk, v) : msgpack_pack_nil(pk));
}

/* header_begin - start a reply header in sb: a map of nkeys entries whose
 * first is "type" = type (nkeys counts it). The caller destroys sb. */
static void
header_begin(msgpack_sbuffer *sb, msgpack_packer *pk, uint32_t nkeys,
             const char *type)
{
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(pk, nkeys);
    pack_kv_str(pk, "type", type);
}

/* Find key k of map o: the value, or NULL. */
static const msgpack_object *
map_get(const msgpack_object *o, const char *k)
{
    if (o->type != MSGPACK_OBJECT_MAP) {
        return NULL;
    }
    size_t n = strlen(k);
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *key = &o->via.map.ptr[i].key;
        if (key->type == MSGPACK_OBJECT_STR && key->via.str.size == n &&
            memcmp(key->via.str.ptr, k, n) == 0) {
            return &o->via.map.ptr[i].val;
        }
    }
    return NULL;
}

static int
map_u64(const msgpack_object *o, const char *k, uint64_t *v)
{
    const msgpack_object *x = map_get(o, k);
    if (x == NULL || x->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        return -EINVAL;
    }
    *v = x->via.u64;
    return 0;
}

/* Compare a token in constant time (as the client protocol does). */
static int
token_ok(const struct ext *e, const msgpack_object *t)
{
    if (e->token[0] == '\0') {
        return 1;
    }
    if (t == NULL || t->type != MSGPACK_OBJECT_STR) {
        return 0;
    }
    size_t lw = strlen(e->token), lt = t->via.str.size;
    unsigned diff = (unsigned)(lw != lt);
    for (size_t i = 0; i < lw; i++) {
        diff |= (unsigned)(unsigned char)e->token[i] ^
                (unsigned)(unsigned char)(i < lt ? t->via.str.ptr[i] : 0);
    }
    return diff == 0;
}

/* ---------------------------------------------------------- sending */

/* Send [ident][header][frames...]; header from sb. The data frames are
 * either copied (b == NULL: small replies) or point into b. 0 or <0. */
static int
send_msg(struct ext *e, const struct peer *p, const msgpack_sbuffer *sb,
         struct buf *b, void *const *data, const size_t *len, int n)
{
    if (zmq_send(e->sock, p->ident, p->ident_len, ZMQ_SNDMORE) < 0 ||
        zmq_send(e->sock, sb->data, sb->size, n > 0 ? ZMQ_SNDMORE : 0) < 0) {
        return -errno;
    }
    if (b != NULL) {
        atomic_store(&b->refs, n);
    }
    for (int i = 0; i < n; i++) {
        int more = i + 1 < n ? ZMQ_SNDMORE : 0;
        if (b == NULL) {
            if (zmq_send(e->sock, data[i], len[i], more) < 0) {
                return -errno;
            }
            continue;
        }
        zmq_msg_t m;
        if (zmq_msg_init_data(&m, data[i], len[i], buf_unref, b) != 0) {
            return -errno;
        }
        if (zmq_msg_send(&m, e->sock, more) < 0) {
            int err = errno;
            zmq_msg_close(&m); /* drops this frame's reference */
            for (int j = i + 1; j < n; j++) {
                buf_unref(NULL, b);
            }
            return -err;
        }
    }
    return 0;
}

static void
send_error(struct ext *e, const struct peer *p, int code, const char *what)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    header_begin(&sb, &pk, 3, "error");
    pack_str(&pk, "code");
    msgpack_pack_int(&pk, code);
    pack_kv_str(&pk, "message", what);
    (void)send_msg(e, p, &sb, NULL, NULL, NULL, 0);
    msgpack_sbuffer_destroy(&sb);
}

static void
send_simple(struct ext *e, const struct peer *p, const char *type)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    header_begin(&sb, &pk, 1, type);
    (void)send_msg(e, p, &sb, NULL, NULL, NULL, 0);
    msgpack_sbuffer_destroy(&sb);
}

static void
send_welcome(struct ext *e, const struct peer *p, int idx,
             const surge_consumer_ctx *ctx)
{
    const char *fields =
        ctx->output_fields != NULL ? ctx->output_fields(ctx->io) : NULL;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    header_begin(&sb, &pk, 13, "welcome");
    pack_kv_u64(&pk, "consumer", (uint64_t)idx);
    pack_kv_u64(&pk, "nin", e->nin);
    pack_kv_u64(&pk, "nout", e->nout);
    pack_kv_u64(&pk, "batch", e->batch);
    pack_kv_u64(&pk, "max_credit", MAX_CREDIT);
    pack_str(&pk, "prioritized");
    e->prio ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk);
    pack_str(&pk, "timeout_s");
    msgpack_pack_double(&pk, e->timeout_s);
    pack_kv_str(&pk, "fields", fields);
    pack_kv_str(&pk, "field_shapes", ctx->opts->field_shapes);
    pack_kv_str(&pk, "transport", p->ring != NULL ? "shm" : "zmq");
    pack_kv_str(&pk, "transport_reason",
                p->ring != NULL ? NULL : p->transport_why);
    pack_str(&pk, "shm");
    if (p->ring == NULL) {
        msgpack_pack_nil(&pk);
    } else {
        /* The slot layout: a batch of r rows has its inputs at in (r x nin
         * floats), outputs at out (r x nout), sample ids at ids (r x 2
         * int64) and weights at w (r floats), from the slot's start. */
        msgpack_pack_map(&pk, 7);
        pack_kv_str(&pk, "name", surge_shm_ring_name(p->ring));
        pack_kv_u64(&pk, "slots", surge_shm_ring_slots(p->ring));
        pack_kv_u64(&pk, "slot_bytes", e->slot_bytes);
        pack_kv_u64(&pk, "in", 0);
        pack_kv_u64(&pk, "out", e->off_out);
        pack_kv_u64(&pk, "ids", e->off_ids);
        pack_kv_u64(&pk, "w", e->off_w);
    }
    (void)send_msg(e, p, &sb, NULL, NULL, NULL, 0);
    msgpack_sbuffer_destroy(&sb);
}

/* ---------------------------------------------------------- shared memory */

static size_t
align_up(size_t v, size_t a)
{
    return (v + a - 1) / a * a;
}

/* The slot layout for full batches of the store's shape. */
static void
set_layout(struct ext *e)
{
    size_t B = e->batch;
    e->off_out = align_up(B * e->nin * 4, SHM_ALIGN);
    e->off_ids = align_up(e->off_out + B * e->nout * 4, SHM_ALIGN);
    e->off_w = align_up(e->off_ids + B * 16, SHM_ALIGN);
    long page = sysconf(_SC_PAGESIZE);
    e->slot_bytes = align_up(e->off_w + B * 4, page > 0 ? (size_t)page : 4096);
}

/* This host's boot id: two processes that read the same one run on the
 * same kernel (and share its /dev/shm unless a container separates them;
 * then the consumer's attach fails and it says so). */
static void
read_boot_id(char *out, size_t cap)
{
    out[0] = '\0';
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (f == NULL) {
        return;
    }
    if (fgets(out, (int)cap, f) == NULL) {
        out[0] = '\0';
    }
    out[strcspn(out, "\r\n")] = '\0';
    fclose(f);
}

static int
str_is(const msgpack_object *o, const char *s)
{
    return o != NULL && o->type == MSGPACK_OBJECT_STR &&
           o->via.str.size == strlen(s) &&
           memcmp(o->via.str.ptr, s, o->via.str.size) == 0;
}

/* The consumer's ring goes (it left, declined or never attached): its
 * memory returns to the budget. Its slots must not be in use any more. */
static void
free_ring(struct ext *e, struct peer *p)
{
    pthread_mutex_lock(&e->mu); /* info() reads ring and shm_used */
    surge_shm_ring *ring = p->ring;
    p->ring = NULL;
    if (ring != NULL) {
        e->shm_used -= surge_shm_ring_bytes(ring);
    }
    pthread_mutex_unlock(&e->mu);
    surge_shm_ring_destroy(&ring);
    p->shm_pending = 0;
}

/* A hello: offer p a ring when it asked for one ("transport": "shm"), runs
 * on this host ("host" = our boot id) and the budget holds 2 slots or
 * more; otherwise say why it gets ZeroMQ. */
static void
offer_shm(struct ext *e, struct peer *p, const msgpack_object *h)
{
    if (p->ring != NULL || p->transport_why[0] != '\0') {
        return; /* decided at its first hello */
    }
    const char *why = NULL;
    uint64_t left = e->shm_budget - e->shm_used;
    uint64_t slots = e->slot_bytes > 0 ? left / e->slot_bytes : 0;
    slots = slots > SHM_SLOTS ? SHM_SLOTS : slots;
    if (!str_is(map_get(h, "transport"), "shm")) {
        why = "not asked for";
    } else if (e->shm_budget == 0) {
        why = "disabled (--external-shm 0)";
    } else if (e->boot_id[0] == '\0' ||
               !str_is(map_get(h, "host"), e->boot_id)) {
        why = "consumer on another host";
    } else if (slots < 2) {
        why = "--external-shm budget used up";
    }
    if (why == NULL) {
        surge_shm_ring *ring = NULL;
        int rc = surge_shm_ring_create(&ring, (uint32_t)slots, e->slot_bytes);
        if (rc == 0) {
            pthread_mutex_lock(&e->mu);
            p->ring = ring;
            e->shm_used += surge_shm_ring_bytes(ring);
            pthread_mutex_unlock(&e->mu);
            p->shm_pending = 1;
            p->shm_offered_ns = surge_now_ns();
            return;
        }
        SURGE_LOG(SURGE_LOG_WARN, COMPONENT,
                  "shared memory of %" PRIu64 " bytes: %s",
                  slots * (uint64_t)e->slot_bytes, surge_strerror(rc));
        why = "cannot create the shared memory";
    }
    snprintf(p->transport_why, sizeof p->transport_why, "%s", why);
}

/* "attach": the consumer mapped the ring ("ok": true; the name goes, so
 * nothing stays behind in /dev/shm) or could not ("ok": false, "reason":
 * its batches go over ZeroMQ). */
static void
handle_attach(struct ext *e, struct peer *p, int idx, const msgpack_object *h)
{
    const msgpack_object *ok = map_get(h, "ok");
    if (!p->shm_pending || ok == NULL || ok->type != MSGPACK_OBJECT_BOOLEAN) {
        e->bad_messages++;
        send_error(e, p, -EPROTO,
                   p->shm_pending ? "attach: ok (a boolean) required"
                                  : "attach: no shared memory offered");
        return;
    }
    if (ok->via.boolean) {
        surge_shm_ring_unlink(p->ring);
        p->shm_pending = 0;
        pthread_mutex_lock(&e->mu);
        p->attached = 1;
        pthread_mutex_unlock(&e->mu);
        SURGE_LOG(SURGE_LOG_INFO, COMPONENT,
                  "external consumer %d: batches in shared memory (%" PRIu32
                  " slots of %zu bytes)",
                  idx, surge_shm_ring_slots(p->ring), e->slot_bytes);
        return;
    }
    const msgpack_object *why = map_get(h, "reason");
    int n = why != NULL && why->type == MSGPACK_OBJECT_STR
                ? (int)(why->via.str.size > 80 ? 80 : why->via.str.size)
                : 0;
    SURGE_LOG(SURGE_LOG_WARN, COMPONENT,
              "external consumer %d cannot map the shared memory (%.*s): "
              "batches over ZeroMQ",
              idx, n, n > 0 ? why->via.str.ptr : "");
    free_ring(e, p);
    snprintf(p->transport_why, sizeof p->transport_why, "%s",
             "the consumer could not map the shared memory");
}

/* Normalisation statistics of the first batch (double sums): inputs per
 * feature, outputs over the whole vector (a field's values share units; the
 * first batch may come from one run, where a per-element std is ~0). A
 * feature that is constant in the batch (a run's parameters) is scaled by
 * max(|mean|, 1), so it stays O(1) without dividing by ~0. */
static int
compute_stats(struct ext *e, const float *in, const float *out, uint32_t n)
{
    e->stats = calloc(2 * ((size_t)e->nin + e->nout), sizeof(float));
    if (e->stats == NULL) {
        return -ENOMEM;
    }
    for (uint32_t j = 0; j < e->nin; j++) {
        double s = 0, s2 = 0;
        for (uint32_t i = 0; i < n; i++) {
            double v = in[(size_t)i * e->nin + j];
            s += v;
            s2 += v * v;
        }
        double m = s / n, var = s2 / n - m * m;
        e->stats[j] = (float)m;
        e->stats[e->nin + j] = var > 1e-12 * (1 + m * m)
                                   ? (float)sqrt(var)
                                   : (float)(fabs(m) > 1 ? fabs(m) : 1);
    }
    double s = 0, s2 = 0;
    size_t total = (size_t)n * e->nout;
    for (size_t i = 0; i < total; i++) {
        s += out[i];
        s2 += (double)out[i] * out[i];
    }
    double m = total ? s / (double)total : 0,
           var = total ? s2 / (double)total - m * m : 0;
    float sd = var > 1e-12 * (1 + m * m) ? (float)sqrt(var)
                                         : (float)(fabs(m) > 1 ? fabs(m) : 1);
    float *om = e->stats + 2 * (size_t)e->nin, *os = om + e->nout;
    for (uint64_t j = 0; j < e->nout; j++) {
        om[j] = (float)m;
        os[j] = sd;
    }
    e->have_stats = 1;
    return 0;
}

static void
send_stats(struct ext *e, const struct peer *p)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    header_begin(&sb, &pk, 3, "stats");
    pack_kv_u64(&pk, "nin", e->nin);
    pack_kv_u64(&pk, "nout", e->nout);
    void *d[4] = {e->stats, e->stats + e->nin, e->stats + 2 * e->nin,
                  e->stats + 2 * e->nin + e->nout};
    size_t l[4] = {e->nin * 4, e->nin * 4, e->nout * 4, e->nout * 4};
    (void)send_msg(e, p, &sb, NULL, d, l, 4);
    msgpack_sbuffer_destroy(&sb);
}

/* ---------------------------------------------------------- accounting */

/* Count p's outstanding batches as unacked (it left or went silent); its
 * ring, if any, goes. */
static void
drop_outstanding(struct ext *e, struct peer *p, enum peer_state why)
{
    pthread_mutex_lock(&e->mu);
    for (uint32_t i = 0; i < p->n_out; i++) {
        p->rows_unacked += p->out[i].rows;
        free(p->out[i].info);
    }
    p->n_out = 0;
    p->credit = 0;
    p->state = why;
    pthread_mutex_unlock(&e->mu);
    free_ring(e, p);
}

/* An ack of batch id; in shared memory it names the batch's slot too (a
 * check that both sides agree on which slot is given back). A refused ack
 * leaves the batch outstanding. */
static void
handle_ack(struct ext *e, struct peer *p, uint64_t id,
           const msgpack_object *slot, const zmq_msg_t *loss,
           surge_reservoir *r)
{
    uint32_t i = 0;
    while (i < p->n_out && p->out[i].id != id) {
        i++;
    }
    if (i == p->n_out) {
        e->bad_messages++;
        SURGE_LOG(SURGE_LOG_WARN, COMPONENT,
                  "consumer acked unknown batch %" PRIu64, id);
        return;
    }
    int slot_ok = p->out[i].slot < 0
                      ? slot == NULL
                      : slot != NULL &&
                            slot->type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
                            slot->via.u64 == (uint64_t)p->out[i].slot;
    if (!slot_ok) {
        e->bad_messages++;
        send_error(e, p, -EINVAL,
                   p->out[i].slot < 0
                       ? "ack: a slot, but this batch came over ZeroMQ"
                       : "ack: slot missing or not the batch's slot");
        return;
    }
    struct outstanding o = p->out[i];
    if (o.slot >= 0 && p->ring != NULL) {
        int rc = surge_shm_ring_release(p->ring, o.slot);
        if (rc < 0) {
            SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
                      "slot %" PRId32 " of batch %" PRIu64 ": %s", o.slot, id,
                      surge_strerror(rc));
        }
    }
    memmove(&p->out[i], &p->out[i + 1], (p->n_out - i - 1) * sizeof p->out[0]);
    p->n_out--;
    long applied = 0;
    if (loss != NULL) {
        if (zmq_msg_size((zmq_msg_t *)loss) != (size_t)o.rows * sizeof(float)) {
            e->bad_messages++;
            SURGE_LOG(SURGE_LOG_WARN, COMPONENT,
                      "losses of batch %" PRIu64 ": %zu bytes, want %zu", id,
                      zmq_msg_size((zmq_msg_t *)loss),
                      (size_t)o.rows * sizeof(float));
        } else if (e->prio) {
            /* The frame may be unaligned: copy the losses out. */
            float *l = malloc((size_t)o.rows * sizeof(float));
            if (l != NULL) {
                memcpy(l, zmq_msg_data((zmq_msg_t *)loss),
                       (size_t)o.rows * sizeof(float));
                applied =
                    surge_reservoir_update_priorities(r, o.info, l, o.rows);
                free(l);
            }
        }
    }
    pthread_mutex_lock(&e->mu);
    p->rows_acked += o.rows;
    p->losses_applied += applied > 0 ? (uint64_t)applied : 0;
    pthread_mutex_unlock(&e->mu);
    free(o.info);
}

static void
handle_validation(struct ext *e, struct peer *p, const msgpack_object *h,
                  const surge_consumer_ctx *ctx)
{
    uint64_t start = 0, count = 0;
    if (map_u64(h, "start", &start) < 0 || map_u64(h, "count", &count) < 0 ||
        count == 0 || count > MAX_VALIDATION) {
        e->bad_messages++;
        send_error(e, p, -EINVAL,
                   "validation: start and count (1..4096) required");
        return;
    }
    uint64_t total = 0, gen = 0;
    if (ctx->validation != NULL) {
        surge_store_stats st;
        surge_store_get_stats(ctx->validation, &st);
        total = st.occupancy;
        gen = st.generation;
    }
    uint64_t rows = start < total ? total - start : 0;
    rows = rows < count ? rows : count;
    size_t bin = rows * e->nin * 4, bout = rows * e->nout * 4;
    unsigned char *data = malloc(bin + bout + rows * 16 + 1);
    if (data == NULL) {
        send_error(e, p, -ENOMEM, "validation: out of memory");
        return;
    }
    float *in = (float *)data, *out = (float *)(data + bin);
    int64_t *ids = (int64_t *)(data + bin + bout);
    uint64_t got = 0;
    for (; got < rows; got++) {
        if (surge_store_read(ctx->validation, start + got, in + got * e->nin,
                             out + got * e->nout, &ids[2 * got],
                             &ids[2 * got + 1]) < 0) {
            break; /* evicted meanwhile: serve what was read */
        }
    }
    msgpack_sbuffer sb;
    msgpack_packer pk;
    header_begin(&sb, &pk, 5, "validation");
    pack_kv_u64(&pk, "start", start);
    pack_kv_u64(&pk, "rows", got);
    pack_kv_u64(&pk, "total", total);
    pack_kv_u64(&pk, "generation", gen);
    /* Repack contiguously when fewer rows were read than planned. */
    if (got < rows) {
        memmove(data + got * e->nin * 4, out, got * e->nout * 4);
        memmove(data + got * (e->nin + e->nout) * 4, ids, got * 16);
    }
    size_t gin = got * e->nin * 4, gout = got * e->nout * 4;
    void *d[3] = {data, data + gin, data + gin + gout};
    size_t l[3] = {gin, gout, got * 16};
    (void)send_msg(e, p, &sb, NULL, d, l, 3);
    msgpack_sbuffer_destroy(&sb);
    free(data);
    pthread_mutex_lock(&e->mu);
    p->validation_rows += got;
    pthread_mutex_unlock(&e->mu);
}

static struct peer *
find_peer(struct ext *e, const zmq_msg_t *id, int *idx)
{
    size_t n = zmq_msg_size((zmq_msg_t *)id);
    for (int i = 0; i < e->n_peers; i++) {
        if (e->peers[i].ident_len == n &&
            memcmp(e->peers[i].ident, zmq_msg_data((zmq_msg_t *)id), n) == 0) {
            *idx = i;
            return &e->peers[i];
        }
    }
    return NULL;
}

/* Read one message ([ident][header][optional frame]) and act on it.
 * 0 when one was handled, -EAGAIN when none was waiting. */
static int
handle_one(struct ext *e, const surge_consumer_ctx *ctx, surge_reservoir *r)
{
    zmq_msg_t f[3];
    int nf = 0, extra = 0;
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, e->sock, nf == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            int err = errno;
            zmq_msg_close(&m);
            for (int i = 0; i < nf; i++) {
                zmq_msg_close(&f[i]);
            }
            return err == EAGAIN ? -EAGAIN : -err;
        }
        int more = zmq_msg_more(&m);
        if (nf < 3) {
            f[nf++] = m;
        } else {
            extra++;
            zmq_msg_close(&m);
        }
        if (!more) {
            break;
        }
    }
    int rc = 0;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    int idx = -1;
    struct peer *p = nf >= 2 ? find_peer(e, &f[0], &idx) : NULL;
    struct peer anon = {0};
    if (p == NULL && nf >= 1 && zmq_msg_size(&f[0]) <= sizeof anon.ident) {
        anon.ident_len = zmq_msg_size(&f[0]);
        memcpy(anon.ident, zmq_msg_data(&f[0]), anon.ident_len);
    }
    const struct peer *to = p != NULL ? p : &anon;
    if (nf < 2 || extra > 0 || zmq_msg_size(&f[1]) > MAX_HEADER ||
        msgpack_unpack_next(&up, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]),
                            NULL) != MSGPACK_UNPACK_SUCCESS) {
        e->bad_messages++;
        send_error(e, to, -EPROTO, "malformed message");
        goto out;
    }
    const msgpack_object *h = &up.data;
    const msgpack_object *type = map_get(h, "type");
    char t[16] = "";
    if (type != NULL && type->type == MSGPACK_OBJECT_STR &&
        type->via.str.size < sizeof t) {
        memcpy(t, type->via.str.ptr, type->via.str.size);
    }
    if (strcmp(t, "hello") == 0) {
        if (!token_ok(e, map_get(h, "token"))) {
            e->rejected++;
            SURGE_LOG(SURGE_LOG_WARN, COMPONENT,
                      "external consumer refused: wrong study token");
            send_error(e, to, SURGE_ETOKEN, "wrong study token");
            goto out;
        }
        if (p == NULL) {
            if (e->n_peers == MAX_PEERS || anon.ident_len == 0) {
                e->rejected++;
                send_error(e, to, -EBUSY, "too many consumers");
                goto out;
            }
            pthread_mutex_lock(&e->mu);
            idx = e->n_peers;
            p = &e->peers[e->n_peers++];
            *p = anon;
            pthread_mutex_unlock(&e->mu);
        } else if (p->state != P_ACTIVE) {
            e->rejected++;
            send_error(e, to, SURGE_ESTATE,
                       "this consumer identity already left; connect anew");
            goto out;
        }
        p->last_seen_ns = surge_now_ns();
        offer_shm(e, p, h);
        SURGE_LOG(SURGE_LOG_INFO, COMPONENT,
                  "external consumer %d joined (%s%s%s)", idx,
                  p->ring != NULL ? "shared memory offered" : "ZeroMQ",
                  p->ring != NULL ? "" : ": ", p->transport_why);
        send_welcome(e, p, idx, ctx);
        if (e->have_stats) {
            send_stats(e, p);
        }
        goto out;
    }
    if (p == NULL || p->state != P_ACTIVE) {
        e->bad_messages++;
        send_error(e, to, SURGE_ESTATE, "say hello first");
        goto out;
    }
    p->last_seen_ns = surge_now_ns();
    uint64_t v = 0;
    if (strcmp(t, "credit") == 0 && map_u64(h, "n", &v) == 0) {
        uint64_t c = p->credit + v;
        p->credit = (uint32_t)(c > MAX_CREDIT ? MAX_CREDIT : c);
    } else if (strcmp(t, "ack") == 0 && map_u64(h, "id", &v) == 0) {
        handle_ack(e, p, v, map_get(h, "slot"), nf == 3 ? &f[2] : NULL, r);
    } else if (strcmp(t, "attach") == 0) {
        handle_attach(e, p, idx, h);
    } else if (strcmp(t, "ping") == 0) {
        send_simple(e, p, "pong");
    } else if (strcmp(t, "validation") == 0) {
        handle_validation(e, p, h, ctx);
    } else if (strcmp(t, "bye") == 0) {
        if (p->n_out > 0) {
            SURGE_LOG(SURGE_LOG_WARN, COMPONENT,
                      "external consumer %d left with %" PRIu32
                      " batches unacked",
                      idx, p->n_out);
        }
        drop_outstanding(e, p, P_LEFT);
        send_simple(e, p, "bye");
    } else {
        e->bad_messages++;
        send_error(e, p, -EPROTO, "unknown or incomplete request");
    }
out:
    msgpack_unpacked_destroy(&up);
    for (int i = 0; i < nf; i++) {
        zmq_msg_close(&f[i]);
    }
    return rc;
}

/* Gather one batch for p and send it. 1 sent, 0 nothing yet, SURGE_ECLOSED
 * (the reservoir is finished or shut down), <0 error. */
static int
serve_one(struct ext *e, struct peer *p, surge_reservoir *r, int timeout_ms)
{
    uint32_t B = e->batch;
    size_t bin = (size_t)B * e->nin * 4, bout = (size_t)B * e->nout * 4;
    size_t bytes = bin + bout + (size_t)B * 16 + (size_t)B * 4;
    /* Shared memory: the gather writes straight into a slot of the
     * consumer's ring, and only the header crosses ZeroMQ. */
    int slot = p->ring != NULL ? surge_shm_ring_acquire(p->ring) : -1;
    if (p->ring != NULL && slot < 0) {
        return 0; /* every slot held: wait for an ack */
    }
    struct buf *b = slot < 0 ? buf_get(e, bytes) : NULL;
    surge_batch_info *info = malloc((size_t)B * sizeof *info);
    if ((slot < 0 && b == NULL) || info == NULL) {
        free(info);
        if (b != NULL) {
            buf_put(e, b);
        }
        if (slot >= 0) {
            (void)surge_shm_ring_release(p->ring, slot);
        }
        return -ENOMEM;
    }
    unsigned char *base =
        slot >= 0 ? surge_shm_ring_slot(p->ring, slot) : b->data;
    size_t off_out = slot >= 0 ? e->off_out : bin;
    size_t off_ids = slot >= 0 ? e->off_ids : bin + bout;
    size_t off_w = slot >= 0 ? e->off_w : bin + bout + (size_t)B * 16;
    float *in = (float *)base, *out = (float *)(base + off_out);
    long n = surge_reservoir_get_batch(r, B, in, out, info, timeout_ms);
    if (n <= 0) {
        free(info);
        if (b != NULL) {
            buf_put(e, b);
        }
        if (slot >= 0) {
            (void)surge_shm_ring_release(p->ring, slot);
        }
        if (n == SURGE_ETIMEDOUT) {
            return 0;
        }
        /* 0: the policy has nothing left (finished); SURGE_ECLOSED: the
         * store was stopped (a stop now, not a drain). */
        return n == 0               ? SURGE_ECLOSED
               : n == SURGE_ECLOSED ? -ECANCELED
                                    : (int)n;
    }
    if (!e->have_stats && compute_stats(e, in, out, (uint32_t)n) == 0) {
        for (int i = 0; i < e->n_peers; i++) {
            if (e->peers[i].state == P_ACTIVE) {
                send_stats(e, &e->peers[i]);
            }
        }
    }
    /* Rows, then ids and weights: when n < B (the drain) the frames just
     * cover the first n rows of each region. */
    int64_t *ids = (int64_t *)(base + off_ids);
    float *w = (float *)(base + off_w);
    for (long i = 0; i < n; i++) {
        ids[2 * i] = (int64_t)info[i].sim;
        ids[2 * i + 1] = (int64_t)info[i].step;
        w[i] = info[i].weight;
    }
    uint64_t id = e->next_id++;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    header_begin(&sb, &pk, slot >= 0 ? 6 : 5, "batch");
    pack_kv_u64(&pk, "id", id);
    pack_kv_u64(&pk, "rows", (uint64_t)n);
    pack_kv_u64(&pk, "nin", e->nin);
    pack_kv_u64(&pk, "nout", e->nout);
    int rc;
    if (slot >= 0) {
        pack_kv_u64(&pk, "slot", (uint64_t)slot);
        rc = send_msg(e, p, &sb, NULL, NULL, NULL, 0);
        if (rc < 0) {
            (void)surge_shm_ring_release(p->ring, slot);
        }
    } else {
        void *d[4] = {in, out, ids, w};
        size_t l[4] = {(size_t)n * e->nin * 4, (size_t)n * e->nout * 4,
                       (size_t)n * 16, (size_t)n * 4};
        rc = send_msg(e, p, &sb, b, d, l, e->prio ? 4 : 3);
    }
    msgpack_sbuffer_destroy(&sb);
    pthread_mutex_lock(&e->mu);
    p->last_sent_ns = surge_now_ns();
    p->credit--;
    p->batches++;
    p->rows_served += (uint64_t)n;
    if (rc < 0) {
        /* The rows were taken but never reached the consumer: count them
         * as unacked against it. */
        p->rows_unacked += (uint64_t)n;
        free(info);
    } else {
        p->out[p->n_out++] =
            (struct outstanding){id, (uint32_t)n, (int32_t)slot, info};
    }
    pthread_mutex_unlock(&e->mu);
    atomic_fetch_add(&e->batches, 1);
    atomic_fetch_add(&e->samples, (uint64_t)n);
    if (rc < 0) {
        SURGE_LOG(SURGE_LOG_WARN, COMPONENT, "batch %" PRIu64 " not sent: %s",
                  id, surge_strerror(rc));
    }
    return 1;
}

/* ---------------------------------------------------------- checkpoint */

/* What a checkpoint of the external consumer holds (the model is the
 * user's: surge.torch never gives it to the server), in
 * <output_dir>/external-checkpoint.bin, written atomically every
 * --checkpoint-interval seconds (default 10) and read back by --resume
 * (surge launch passes it to a restarted server). Host byte order:
 *     "SURGEEX1"                           magic and version (8 bytes)
 *     u32 nin, u32 0, u64 nout             sample shape
 *     u64 len, len bytes of JSON           progress: study_id,
 *                                          sims_finished, server_counts
 *     u64 n, n x (i64 sim, i64 step)       steps assembled (record)
 *     u64 n, n floats                      normalisation statistics (0 or
 *                                          2 (nin + nout): in_mean, in_std,
 *                                          out_mean, out_std)
 *     u64 n, n x (i64 sim, i64 step, f32 in[nin], f32 out[nout])
 *                                          validation samples
 *     u64 len, len bytes                   surge_reservoir_save stream
 * server_counts are the server's counters at the snapshot plus, as
 * "consumer" (batches, samples) and "external" (rows_served, rows_acked,
 * rows_unacked), what this consumer had done; batches outstanding at the
 * snapshot count as unacked (a server resumed from it never sees their
 * acks). All carry on across restarts: a resumed server adds its
 * checkpoint's server_counts to its own in the next, and reports them as
 * external.carried_counts. The store's own counters (taken, evicted,
 * retired) need no carrying: they are part of the reservoir state. */
#define CKPT_NAME "external-checkpoint.bin"
#define CKPT_MAGIC "SURGEEX1"
#define CKPT_DEFAULT_S 10.0
#define IO_CALL_TIMEOUT_MS 10000

struct snap {
    struct ext *e;
    surge_bytes rec; /* (sim, step) pairs */
    uint64_t nrec;
    surge_bytes val; /* validation rows */
    uint64_t nval;
    surge_bytes res;  /* reservoir stream */
    json_t *finished; /* sims finished with all they sent in a store */
    json_t *counts;   /* the server's counters */
    surge_store *train, *validation;
};

static int
snap_rec_cb(void *arg, int64_t sim, int64_t step)
{
    struct snap *s = arg;
    int64_t ss[2] = {sim, step};
    s->nrec++;
    return surge_bytes_put(&s->rec, ss, sizeof ss);
}

static int
snap_fin_cb(void *arg, int64_t sim)
{
    struct snap *s = arg;
    return json_array_append_new(s->finished, json_integer(sim)) == 0 ? 0
                                                                      : -ENOMEM;
}

static int
snap_res_cb(void *arg, const void *p, size_t n)
{
    return surge_bytes_put(arg, p, n);
}

/* On the I/O thread: nothing is put meanwhile, and the consumer thread
 * waits in io_call, so record, counters, store, validation and reservoir
 * describe one instant. */
static int
snap_fn(void *arg, const surge_consumer_io_view *view)
{
    struct snap *s = arg;
    struct ext *e = s->e;
    int rc = view->export_assembled(view->io, snap_rec_cb, s);
    rc = rc < 0 ? rc : view->export_finished(view->io, snap_fin_cb, s);
    rc = rc < 0 ? rc : view->export_counts(view->io, &s->counts);
    if (rc < 0) {
        return rc;
    }
    rc = surge_reservoir_save(surge_store_reservoir(s->train), snap_res_cb,
                              &s->res);
    if (rc < 0 || s->validation == NULL) {
        return rc;
    }
    surge_store_stats st;
    surge_store_get_stats(s->validation, &st);
    size_t row = 16 + 4 * ((size_t)e->nin + e->nout);
    unsigned char *tmp = malloc(row);
    if (tmp == NULL) {
        return -ENOMEM;
    }
    for (uint64_t i = 0; i < st.occupancy && rc == 0; i++) {
        int64_t *ss = (int64_t *)tmp;
        float *in = (float *)(tmp + 16), *out = in + e->nin;
        if (surge_store_read(s->validation, i, in, out, &ss[0], &ss[1]) < 0) {
            break;
        }
        rc = surge_bytes_put(&s->val, tmp, row);
        s->nval++;
    }
    free(tmp);
    return rc;
}

/* The consumer's counts for a checkpoint (consumer thread). */
static json_t *
own_counts(struct ext *e)
{
    uint64_t served = 0, acked = 0, unacked = 0;
    pthread_mutex_lock(&e->mu);
    for (int i = 0; i < e->n_peers; i++) {
        const struct peer *p = &e->peers[i];
        served += p->rows_served;
        acked += p->rows_acked;
        unacked += p->rows_served - p->rows_acked; /* pending: unacked */
    }
    pthread_mutex_unlock(&e->mu);
    return json_pack("{s:{s:I,s:I,s:I},s:{s:I,s:I}}", "external", "rows_served",
                     (json_int_t)served, "rows_acked", (json_int_t)acked,
                     "rows_unacked", (json_int_t)unacked, "consumer", "batches",
                     (json_int_t)atomic_load(&e->batches), "samples",
                     (json_int_t)atomic_load(&e->samples));
}

static int
write_checkpoint(struct ext *e, const surge_consumer_ctx *ctx)
{
    struct snap s = {
        .e = e, .train = ctx->train, .validation = ctx->validation};
    surge_bytes b = {0};
    char *ptext = NULL;
    json_t *pj = NULL, *own = own_counts(e);
    s.finished = json_array();
    int rc = s.finished != NULL && own != NULL ? 0 : -ENOMEM;
    if (rc == 0 && e->carried_finished != NULL) {
        json_array_extend(s.finished, e->carried_finished);
    }
    if (rc == 0) {
        rc = ctx->io_call(ctx->io, snap_fn, &s, IO_CALL_TIMEOUT_MS);
    }
    if (rc == 0 && (surge_train_counts_add(s.counts, own) != 0 ||
                    surge_train_counts_add(s.counts, e->carried) != 0)) {
        rc = SURGE_EPROTO;
    }
    if (rc == 0) {
        pj = json_pack("{s:s,s:O,s:O}", "study_id", e->study_id,
                       "sims_finished", s.finished, "server_counts", s.counts);
        ptext = pj != NULL ? json_dumps(pj, JSON_COMPACT) : NULL;
        rc = ptext != NULL ? 0 : -ENOMEM;
    }
    uint32_t nin = e->nin, zero = 0;
    uint64_t nstats = e->have_stats ? 2 * ((uint64_t)e->nin + e->nout) : 0;
    rc = rc ? rc : surge_bytes_put(&b, CKPT_MAGIC, 8);
    rc = rc ? rc : surge_bytes_put(&b, &nin, 4);
    rc = rc ? rc : surge_bytes_put(&b, &zero, 4);
    rc = rc ? rc : surge_bytes_u64(&b, e->nout);
    rc = rc ? rc : surge_bytes_u64(&b, ptext != NULL ? strlen(ptext) : 0);
    rc =
        rc ? rc : surge_bytes_put(&b, ptext, ptext != NULL ? strlen(ptext) : 0);
    rc = rc ? rc : surge_bytes_u64(&b, s.nrec);
    rc = rc ? rc : surge_bytes_put(&b, s.rec.p, s.rec.len);
    rc = rc ? rc : surge_bytes_u64(&b, nstats);
    rc = rc ? rc : surge_bytes_put(&b, e->stats, nstats * 4);
    rc = rc ? rc : surge_bytes_u64(&b, s.nval);
    rc = rc ? rc : surge_bytes_put(&b, s.val.p, s.val.len);
    rc = rc ? rc : surge_bytes_u64(&b, s.res.len);
    rc = rc ? rc : surge_bytes_put(&b, s.res.p, s.res.len);
    rc = rc ? rc : surge_write_file_atomic(e->ckpt, b.p, b.len);
    if (rc < 0) {
        SURGE_LOG(SURGE_LOG_WARN, COMPONENT, "checkpoint %s skipped: %s",
                  e->ckpt, surge_strerror(rc));
    } else {
        e->ckpts++;
        SURGE_LOG(SURGE_LOG_DEBUG, COMPONENT,
                  "checkpoint %s: %zu bytes, %" PRIu64 " steps assembled",
                  e->ckpt, b.len, s.nrec);
    }
    free(ptext);
    json_decref(pj);
    json_decref(own);
    json_decref(s.finished);
    json_decref(s.counts);
    surge_bytes_free(&s.rec);
    surge_bytes_free(&s.val);
    surge_bytes_free(&s.res);
    surge_bytes_free(&b);
    return rc;
}

/* Read the whole file at path into *blob (the caller frees it). */
static int
read_file(const char *path, unsigned char **blob, size_t *len, char *err,
          size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        int rc = -errno;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return rc;
    }
    int rc = 0;
    long n = -1;
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 ||
        fseek(f, 0, SEEK_SET) != 0) {
        rc = -EIO;
    }
    unsigned char *p = rc == 0 ? malloc(n > 0 ? (size_t)n : 1) : NULL;
    if (rc == 0 && p == NULL) {
        rc = -ENOMEM;
    }
    if (rc == 0 && fread(p, 1, (size_t)n, f) != (size_t)n) {
        rc = -EIO;
    }
    fclose(f);
    if (rc != 0) {
        free(p);
        snprintf(err, errlen, "%s: %s", path, surge_strerror(rc));
        return rc;
    }
    *blob = p;
    *len = (size_t)n;
    return 0;
}

/* The parts of a checkpoint blob, checked (pointers into the blob). */
struct ckpt {
    uint32_t nin;
    uint64_t nout;
    json_t *progress;
    surge_reader rec, val, res;
    uint64_t nrec, nstats, nval;
    const unsigned char *stats;
};

static int
ckpt_parse(const unsigned char *blob, size_t len, struct ckpt *c, char *err,
           size_t errlen)
{
    surge_reader r = {blob, len, 0};
    char magic[8];
    uint32_t pad;
    uint64_t jlen, rlen;
    memset(c, 0, sizeof *c);
    if (surge_reader_get(&r, magic, 8) != 0 ||
        memcmp(magic, CKPT_MAGIC, 8) != 0) {
        snprintf(err, errlen, "not a checkpoint of the external consumer");
        return SURGE_EPROTO;
    }
    if (surge_reader_get(&r, &c->nin, 4) || surge_reader_get(&r, &pad, 4) ||
        surge_reader_get(&r, &c->nout, 8) || c->nin < 1 ||
        c->nin > (1u << 20) || c->nout < 1 ||
        c->nout > (uint64_t)SURGE_MAX_FIELDS * SURGE_MAX_FIELD_ELEMS ||
        surge_reader_get(&r, &jlen, 8) || jlen > len - r.off) {
        snprintf(err, errlen, "corrupt checkpoint (shape)");
        return SURGE_EPROTO;
    }
    json_error_t je;
    c->progress = json_loadb((const char *)blob + r.off, (size_t)jlen, 0, &je);
    r.off += (size_t)jlen;
    size_t row = 16 + 4 * ((size_t)c->nin + c->nout);
    const char *what = NULL;
    if (!json_is_object(c->progress)) {
        what = "progress JSON";
    } else if (surge_reader_get(&r, &c->nrec, 8) ||
               c->nrec > (len - r.off) / 16) {
        what = "record";
    }
    if (what == NULL) {
        c->rec = (surge_reader){blob + r.off, (size_t)c->nrec * 16, 0};
        r.off += (size_t)c->nrec * 16;
        if (surge_reader_get(&r, &c->nstats, 8) ||
            (c->nstats != 0 && c->nstats != 2 * ((uint64_t)c->nin + c->nout)) ||
            c->nstats * 4 > len - r.off) {
            what = "statistics";
        }
    }
    if (what == NULL) {
        c->stats = blob + r.off;
        r.off += (size_t)c->nstats * 4;
        if (surge_reader_get(&r, &c->nval, 8) ||
            c->nval > (len - r.off) / row) {
            what = "validation";
        }
    }
    if (what == NULL) {
        c->val = (surge_reader){blob + r.off, (size_t)c->nval * row, 0};
        r.off += (size_t)c->nval * row;
        if (surge_reader_get(&r, &rlen, 8) || rlen != len - r.off) {
            what = "reservoir length";
        }
    }
    if (what != NULL) {
        snprintf(err, errlen, "corrupt checkpoint (%s)", what);
        json_decref(c->progress);
        c->progress = NULL;
        return SURGE_EPROTO;
    }
    c->res = (surge_reader){blob + r.off, (size_t)rlen, 0};
    return 0;
}

int
surge_external_checkpoint_progress(const char *path, json_t **out, char *err,
                                   size_t errlen)
{
    unsigned char *blob = NULL;
    size_t len = 0;
    struct ckpt c = {0};
    int rc = read_file(path, &blob, &len, err, errlen);
    if (rc == 0) {
        rc = ckpt_parse(blob, len, &c, err, errlen);
    }
    free(blob);
    if (rc == 0) {
        *out = c.progress;
    }
    return rc;
}

static int
ckpt_res_cb(void *arg, void *dst, size_t n)
{
    return surge_reader_get(arg, dst, n);
}

/* --resume: restore the record, the shape, the statistics, the held-out
 * samples and the reservoir, and keep the counts to carry on. A failure
 * before anything was changed leaves the server as it was; after, the
 * server does not start. */
static int
resume(struct ext *e, const surge_consumer_prep *prep, const char *path)
{
    char err[1024] = "";
    unsigned char *blob = NULL;
    size_t len = 0;
    struct ckpt c = {0};
    int rc = read_file(path, &blob, &len, err, sizeof err);
    if (rc == 0) {
        rc = ckpt_parse(blob, len, &c, err, sizeof err);
    }
    if (rc == 0) {
        const char *id =
            json_string_value(json_object_get(c.progress, "study_id"));
        if (strcmp(id != NULL ? id : "", e->study_id) != 0) {
            snprintf(err, sizeof err,
                     "written for study '%.64s', this server works for "
                     "study '%.64s' (--study-id): refused",
                     id != NULL ? id : "", e->study_id);
            rc = SURGE_EPROTO;
        }
    }
    for (uint64_t i = 0; rc == 0 && i < c.nrec; i++) {
        int64_t ss[2];
        (void)surge_reader_get(&c.rec, ss, sizeof ss);
        rc = prep->mark_assembled(prep->arg, ss[0], ss[1]);
        if (rc < 0) {
            snprintf(err, sizeof err, "record of assembled steps: %s",
                     surge_strerror(rc));
        }
    }
    if (rc == 0) {
        rc = surge_store_set_shape(prep->train, c.nin, c.nout);
        if (rc < 0) {
            snprintf(err, sizeof err, "training store: %s",
                     surge_store_error(prep->train));
        }
    }
    if (rc == 0 && c.res.len > 0) {
        char why[256] = "";
        rc = surge_reservoir_load(surge_store_reservoir(prep->train),
                                  ckpt_res_cb, &c.res, why, sizeof why);
        if (rc < 0) {
            snprintf(err, sizeof err, "reservoir state: %s (%s)", why,
                     surge_strerror(rc));
        }
    }
    if (rc == 0 && c.nval > 0 && prep->validation != NULL) {
        rc = surge_store_set_shape(prep->validation, c.nin, c.nout);
        size_t row = 16 + 4 * ((size_t)c.nin + c.nout);
        unsigned char *tmp = malloc(row);
        rc = rc == 0 && tmp == NULL ? -ENOMEM : rc;
        for (uint64_t i = 0; rc == 0 && i < c.nval; i++) {
            (void)surge_reader_get(&c.val, tmp, row);
            const int64_t *ss = (const int64_t *)tmp;
            const float *in = (const float *)(tmp + 16);
            /* A full validation store keeps what it has: the rest was
             * evicted before too. */
            (void)surge_store_try_put(prep->validation, ss[0], ss[1], in,
                                      in + c.nin);
        }
        free(tmp);
        if (rc < 0) {
            snprintf(err, sizeof err, "validation store: %s",
                     surge_strerror(rc));
        }
    }
    if (rc == 0 && c.nstats > 0) {
        e->nin = c.nin;
        e->nout = c.nout;
        e->stats = malloc((size_t)c.nstats * 4);
        rc = e->stats != NULL ? 0 : -ENOMEM;
        if (rc == 0) {
            memcpy(e->stats, c.stats, (size_t)c.nstats * 4);
            e->have_stats = 1;
        }
    }
    if (rc == 0) {
        e->carried = json_incref(json_object_get(c.progress, "server_counts"));
        e->carried_finished =
            json_incref(json_object_get(c.progress, "sims_finished"));
        surge_store_stats st;
        surge_store_get_stats(prep->train, &st);
        SURGE_LOG(
            SURGE_LOG_INFO, COMPONENT,
            "resuming from %s: %" PRIu64 " steps already assembled, %" PRIu64
            " samples back in the reservoir, %" PRIu64 " held-out samples",
            path, c.nrec, st.occupancy, c.nval);
    } else {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "--resume: %s: %s", path, err);
    }
    json_decref(c.progress);
    free(blob);
    return rc;
}

/* ---------------------------------------------------------- ops */

static int
ext_create(void **state, const surge_server_options *o)
{
    struct ext *e = calloc(1, sizeof *e);
    if (e == NULL) {
        return -ENOMEM;
    }
    snprintf(e->bind, sizeof e->bind, "%s", o->external_bind);
    snprintf(e->token, sizeof e->token, "%s", o->token);
    e->batch = o->batch_size;
    e->timeout_s = o->external_timeout_s;
    e->prio = o->reservoir.prioritized.enabled;
    e->shm_budget = o->external_shm_bytes;
    read_boot_id(e->boot_id, sizeof e->boot_id);
    snprintf(e->study_id, sizeof e->study_id, "%s", o->study_id);
    e->ckpt_every_s = o->checkpoint_interval_s >= 0 ? o->checkpoint_interval_s
                                                    : CKPT_DEFAULT_S;
    if (o->output_dir[0] != '\0') {
        snprintf(e->ckpt, sizeof e->ckpt, "%s/" CKPT_NAME, o->output_dir);
    }
    if (o->resume[0] != '\0') {
        snprintf(e->resume, sizeof e->resume, "%s", o->resume);
    } else if (o->resume_default) {
        snprintf(e->resume, sizeof e->resume, "%s", e->ckpt);
    }
    pthread_mutex_init(&e->mu, NULL);
    pthread_mutex_init(&e->pool_mu, NULL);
    *state = e;
    return 0;
}

static int
ext_prepare(void *state, const surge_consumer_prep *prep)
{
    struct ext *e = state;
    if (e->resume[0] != '\0') {
        int rc = resume(e, prep, e->resume);
        if (rc < 0) {
            return rc;
        }
    }
    e->zctx = zmq_ctx_new();
    if (e->zctx == NULL) {
        return -ENOMEM;
    }
    e->sock = zmq_socket(e->zctx, ZMQ_ROUTER);
    if (e->sock == NULL) {
        return -errno;
    }
    int zero = 0, one = 1;
    /* Frames are the batch; a send never blocks the loop: a consumer's
     * credit already bounds what is queued for it. */
    zmq_setsockopt(e->sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(e->sock, ZMQ_SNDHWM, &zero, sizeof zero);
    zmq_setsockopt(e->sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    /* The largest request: a header and a losses frame of batch floats. */
    int64_t maxmsg = 2 * MAX_HEADER + (int64_t)e->batch * 4;
    zmq_setsockopt(e->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    if (zmq_bind(e->sock, e->bind) != 0) {
        int err = errno;
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "cannot bind %s: %s", e->bind,
                  zmq_strerror(err));
        return -err;
    }
    size_t len = sizeof e->endpoint;
    if (zmq_getsockopt(e->sock, ZMQ_LAST_ENDPOINT, e->endpoint, &len) != 0) {
        return -errno;
    }
    SURGE_LOG(SURGE_LOG_INFO, COMPONENT, "external trainers connect to %s",
              e->endpoint);
    return 0;
}

/* Can p be sent a batch now: credit, room for one more outstanding, and
 * with shared memory an attached ring with a free slot. */
static int
can_serve(const struct peer *p)
{
    return p->state == P_ACTIVE && p->credit > 0 && p->n_out < MAX_CREDIT &&
           !p->shm_pending &&
           (p->ring == NULL || surge_shm_ring_free(p->ring) > 0);
}

static int
any_active(const struct ext *e)
{
    for (int i = 0; i < e->n_peers; i++) {
        if (e->peers[i].state == P_ACTIVE) {
            return 1;
        }
    }
    return 0;
}

static int
ext_run(void *state, const surge_consumer_ctx *ctx)
{
    struct ext *e = state;
    int rc = surge_store_await_shape(ctx->train, &e->nin, &e->nout);
    if (rc == SURGE_ECLOSED) {
        return 0;
    }
    if (rc < 0) {
        return rc;
    }
    surge_reservoir *r = surge_store_reservoir(ctx->train);
    set_layout(e);
    const uint64_t tmo = (uint64_t)(e->timeout_s * 1e9);
    e->last_ckpt_ns = surge_now_ns();
    int finished = 0;
    uint64_t idle_since = surge_now_ns();
    int rr = 0;
    for (;;) {
        zmq_pollitem_t pi = {e->sock, 0, ZMQ_POLLIN, 0};
        int have_credit = 0;
        for (int i = 0; i < e->n_peers; i++) {
            have_credit |= can_serve(&e->peers[i]);
        }
        zmq_poll(&pi, 1, have_credit && !finished ? 0 : POLL_MS);
        while (handle_one(e, ctx, r) == 0) {
        }
        uint64_t now = surge_now_ns();
        if (e->ckpt[0] != '\0' && ctx->io_call != NULL && e->ckpt_every_s > 0 &&
            (now - e->last_ckpt_ns) / 1e9 >= e->ckpt_every_s) {
            (void)write_checkpoint(e, ctx);
            e->last_ckpt_ns = now = surge_now_ns();
        }
        for (int i = 0; i < e->n_peers; i++) {
            struct peer *p = &e->peers[i];
            /* Only a consumer that holds batches (or should say bye) can
             * be late: one waiting for a batch is waiting on us. */
            uint64_t last = p->last_seen_ns > p->last_sent_ns ? p->last_seen_ns
                                                              : p->last_sent_ns;
            if (p->shm_pending && now - p->shm_offered_ns > tmo) {
                /* Offered and never attached (nor declined): withdraw it,
                 * so the name does not stay in /dev/shm; an attach that
                 * comes later is refused. */
                SURGE_LOG(SURGE_LOG_WARN, COMPONENT,
                          "external consumer %d did not attach its shared "
                          "memory within %.1f s: batches over ZeroMQ",
                          i, e->timeout_s);
                free_ring(e, p);
                snprintf(p->transport_why, sizeof p->transport_why, "%s",
                         "shared memory not attached in time");
            }
            if (p->state == P_ACTIVE && (p->n_out > 0 || finished) &&
                now - last > tmo) {
                SURGE_LOG(SURGE_LOG_WARN, COMPONENT,
                          "external consumer %d silent for %.1f s: its %" PRIu32
                          " unacked batches are counted as unacked",
                          i, e->timeout_s, p->n_out);
                drop_outstanding(e, p, P_TIMED_OUT);
            }
        }
        if (finished) {
            /* Tell each consumer, then serve acks and validation requests
             * until each said bye or went silent for timeout_s (above). */
            int waiting = 0;
            for (int i = 0; i < e->n_peers; i++) {
                struct peer *p = &e->peers[i];
                if (p->state != P_ACTIVE) {
                    continue;
                }
                if (!p->ended_sent) {
                    send_simple(e, p, "end");
                    p->ended_sent = 1;
                }
                waiting = 1;
            }
            if (!waiting) {
                break;
            }
            continue;
        }
        if (!have_credit) {
            surge_reservoir_stats st;
            surge_reservoir_get_stats(r, &st);
            if (st.closed && !st.finished) {
                break; /* stopped: the server does not wait any more */
            }
            if (st.finished) {
                finished = 1;
            } else if (st.reception_ended && !any_active(e) &&
                       now - idle_since > tmo) {
                /* Nobody will take what is left: finish; the rows stay in
                 * the store's occupancy (server-stats.json). */
                SURGE_LOG(SURGE_LOG_WARN, COMPONENT,
                          "reception ended and no external consumer for "
                          "%.1f s: stopping",
                          e->timeout_s);
                break;
            }
            if (any_active(e)) {
                idle_since = now;
            }
            continue;
        }
        idle_since = now;
        /* Round robin over the consumers with credit. */
        for (int k = 0; k < e->n_peers; k++) {
            struct peer *p = &e->peers[(rr + k) % e->n_peers];
            if (!can_serve(p)) {
                continue;
            }
            rr = (rr + k + 1) % e->n_peers;
            rc = serve_one(e, p, r, POLL_MS);
            if (rc == SURGE_ECLOSED) {
                finished = 1;
            } else if (rc == -ECANCELED) {
                goto stopped;
            } else if (rc < 0) {
                return rc;
            }
            break;
        }
    }
stopped:
    /* Batches still held when the server stops count as unacked. */
    for (int i = 0; i < e->n_peers; i++) {
        if (e->peers[i].state == P_ACTIVE && e->peers[i].n_out > 0) {
            drop_outstanding(e, &e->peers[i], P_TIMED_OUT);
        }
    }
    return 0;
}

static void
ext_stats(void *state, surge_consumer_stats *out)
{
    struct ext *e = state;
    out->batches = atomic_load(&e->batches);
    out->samples = atomic_load(&e->samples);
}

static void
ext_info(void *state, json_t *obj)
{
    struct ext *e = state;
    static const char *const names[] = {"active", "left", "timed_out"};
    json_t *ext = json_object();
    json_t *arr = json_array();
    pthread_mutex_lock(&e->mu);
    uint64_t served = 0, acked = 0, unacked = 0;
    for (int i = 0; i < e->n_peers; i++) {
        const struct peer *p = &e->peers[i];
        uint64_t pending = 0;
        for (uint32_t j = 0; j < p->n_out; j++) {
            pending += p->out[j].rows;
        }
        served += p->rows_served;
        acked += p->rows_acked;
        unacked += p->rows_unacked;
        json_array_append_new(
            arr, json_pack("{s:i,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I}",
                           "consumer", i, "state", names[p->state], "transport",
                           p->attached ? "shm" : "zmq", "batches",
                           (json_int_t)p->batches, "rows_served",
                           (json_int_t)p->rows_served, "rows_acked",
                           (json_int_t)p->rows_acked, "rows_unacked",
                           (json_int_t)p->rows_unacked, "rows_pending",
                           (json_int_t)pending, "losses_applied",
                           (json_int_t)p->losses_applied, "validation_rows",
                           (json_int_t)p->validation_rows));
    }
    json_object_set_new(ext, "endpoint", json_string(e->endpoint));
    json_object_set_new(ext, "consumers", arr);
    json_object_set_new(ext, "rows_served", json_integer((json_int_t)served));
    json_object_set_new(ext, "rows_acked", json_integer((json_int_t)acked));
    json_object_set_new(ext, "rows_unacked", json_integer((json_int_t)unacked));
    json_object_set_new(ext, "bad_messages",
                        json_integer((json_int_t)e->bad_messages));
    json_object_set_new(ext, "rejected", json_integer((json_int_t)e->rejected));
    json_object_set_new(ext, "shm_bytes",
                        json_integer((json_int_t)e->shm_used));
    json_object_set_new(ext, "shm_limit",
                        json_integer((json_int_t)e->shm_budget));
    json_object_set_new(ext, "checkpoints", json_integer((json_int_t)e->ckpts));
    if (e->carried != NULL) {
        /* What earlier servers of the study did (surge launch adds it to
         * this server's counts). */
        json_object_set_new(ext, "carried_counts", json_deep_copy(e->carried));
    }
    pthread_mutex_unlock(&e->mu);
    json_object_set_new(obj, "external", ext);
}

static void
ext_destroy(void *state)
{
    struct ext *e = state;
    if (e == NULL) {
        return;
    }
    if (e->sock != NULL) {
        zmq_close(e->sock);
    }
    if (e->zctx != NULL) {
        /* Waits until ZeroMQ released every frame (buffers back in the
         * pool): LINGER is 0, so this does not wait for peers. */
        zmq_ctx_term(e->zctx);
    }
    for (int i = 0; i < e->n_peers; i++) {
        for (uint32_t j = 0; j < e->peers[i].n_out; j++) {
            free(e->peers[i].out[j].info);
        }
        surge_shm_ring_destroy(&e->peers[i].ring);
    }
    while (e->pool != NULL) {
        struct buf *b = e->pool;
        e->pool = b->next;
        surge_huge_free(b->data, b->bytes);
        free(b);
    }
    free(e->stats);
    json_decref(e->carried);
    json_decref(e->carried_finished);
    pthread_mutex_destroy(&e->mu);
    pthread_mutex_destroy(&e->pool_mu);
    free(e);
}

const surge_consumer_ops surge_consumer_external = {.name = "external",
                                                    .create = ext_create,
                                                    .run = ext_run,
                                                    .stats = ext_stats,
                                                    .destroy = ext_destroy,
                                                    .prepare = ext_prepare,
                                                    .info = ext_info};
