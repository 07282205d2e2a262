/*
 * server/ingest.c - sessions, validation and assembly (see ingest.h).
 *
 * DESIGN. Three tables, all u64maps:
 *   - peers: hash of the routing id -> chain of struct peer (one session
 *     per connection that said hello and has not said bye);
 *   - sims: simulation id -> struct sim (kept for the whole run, so that
 *     steps assembled before a retry stay refused);
 *   - per sim: step -> struct partial (steps being assembled), and the sets
 *     of steps assembled and steps dropped.
 * Partial steps also sit on two lists in creation order, one for all and
 * one per sim. Blocks (struct partial + output vector + bitmap) are
 * recycled through a free list; all blocks together stay under
 * max_partial_bytes. When that memory runs out, each sim assembling is
 * entitled to an equal share of it: a sim over its share evicts its own
 * oldest partial step, one under its share evicts the oldest of the sim
 * holding the most. So a sim that never completes its steps (a rank that
 * never joins) cannot evict the steps of the others.
 *
 * No locks: one thread (the I/O thread) owns all of this.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <surge/client.h>

#include "common/auth.h"
#include "common/alloc.h"
#include "common/log.h"
#include "common/rng.h"
#include "common/util.h"
#include "server/ingest.h"
#include "server/u64map.h"

#define COMPONENT "server"
#define MAX_RID 255
#define REJECTED_CAP 4096 /* peers remembered as already told "hello" */
#define MAX_SLICES                                                             \
    (1u << 20) /* ranks x fields of one simulation: bounds                     \
                  the per-sim tables a hello allocates */
#define DROPPED_RECORDS SURGE_INGEST_DROPPED_RECORDS
#define LOG_BURST 5 /* lines per reason before rate limiting */
#define LOG_PERIOD_NS (UINT64_C(10) * 1000000000u)

enum sim_state {
    SIM_OPEN = 0,  /* accepting hellos and data */
    SIM_FINISHED,  /* all ranks said bye */
    SIM_FAILED,    /* the launcher said so */
    SIM_TIMED_OUT, /* silent past the timeout */
    SIM_NOT_JOINED /* ranks missing past the join timeout or at the end */
};

static const char *const sim_state_names[] = {"open", "finished", "failed",
                                              "timed out", "not joined"};

/* A held-out run in the validation set's reservoir sampling of whole
 * runs (vsample_put). */
enum vstate {
    V_NEW = 0,     /* no sample stored yet */
    V_KEPT,        /* in the validation set */
    V_NOT_SAMPLED, /* left out or evicted: its samples are dropped */
};

struct peer;

struct sim {
    int64_t id;
    enum sim_state state;
    int declared;     /* the first hello fixed the fields below */
    int validation;   /* held out */
    int vstate;       /* held out: enum vstate (validation sampling) */
    uint32_t attempt; /* 0, then +1 per SIM_RETRY */
    uint32_t nranks;
    uint32_t nparams;
    uint32_t nfields;
    double *params;                    /* (nparams) */
    char (*names)[SURGE_MAX_NAME + 1]; /* (nfields) */
    uint64_t *global;                  /* (nfields) elements per field */
    uint64_t *base;      /* (nfields) position in the output vector */
    uint64_t nout;       /* floats per output vector */
    uint64_t *slice_off; /* (nranks, nfields), joined ranks only */
    uint64_t *slice_cnt; /* (nranks, nfields) */
    uint64_t *covered;   /* (nfields) elements claimed by joined ranks */
    uint8_t *joined;     /* (nranks) */
    uint8_t *said_bye;   /* (nranks) */
    uint64_t *accepted;  /* (nranks) slices of this attempt that are safe:
                            copied, or refused because their step was
                            assembled before (a retry resending it);
                            what bye_ack reports */
    struct peer **peers; /* (nranks) current session of each rank */
    uint32_t njoined;
    uint32_t nbye;
    int joining;          /* declared, open, ranks missing: counted in
                             ing->njoining */
    uint64_t declared_ns; /* first hello of this attempt (join timeout) */
    uint64_t expected;    /* slices per step, valid once all joined */
    size_t block_bytes;   /* bytes of one partial block of this sim */
    uint64_t last_activity_ns;
    uint64_t first_hello_ns;  /* the run's first welcome (any attempt) */
    uint64_t steps_expected;  /* largest hello.steps of its ranks; 0 unknown */
    surge_u64map partials;    /* step -> struct partial */
    surge_u64map assembled;   /* step -> (void *)1 */
    surge_u64map dropped;     /* step -> (void *)1: evicted this attempt;
                                 bounded, see DROPPED_RECORDS */
    struct partial *p_oldest; /* this sim's partial steps, creation order */
    struct partial *p_newest;
    uint64_t partial_bytes; /* blocks of those partial steps, bytes */
    uint64_t ndropped;      /* partial steps evicted this attempt */
};

struct peer {
    uint64_t hash; /* of the routing id */
    uint8_t rid_len;
    uint8_t rid[MAX_RID];
    struct sim *sim;
    uint32_t rank;
    struct peer *next; /* same hash bucket */
};

struct partial {
    struct sim *sim;
    int64_t step;
    double time;           /* simulated time of the first slice */
    uint64_t received;     /* slices copied */
    struct partial *older; /* creation-order list (in use only) */
    struct partial *newer;
    struct partial *sim_older; /* the same, within its sim */
    struct partial *sim_newer;
    struct partial *next_free; /* pool and pending list link */
    size_t block_bytes;        /* size of this allocation */
    float *out;                /* (nout) */
    uint64_t *bits;            /* (nranks * nfields) bits */
};

struct surge_ingest {
    const surge_server_options *o;
    surge_store *train;
    surge_store *validation;
    FILE *checksum_log;
    surge_counters c;
    surge_u64map peers;    /* rid hash -> struct peer chain */
    surge_u64map sims;     /* sim id -> struct sim */
    struct sim **sim_list; /* (nsims) for iteration */
    size_t nsims, sim_cap;
    uint32_t njoining;        /* sims waiting for their ranks (s->joining) */
    uint32_t nassembling;     /* sims with partial_bytes > 0 */
    uint64_t dropped_records; /* entries of all sims' dropped sets */
    surge_u64map told;        /* rid hash -> 1: unknown peers answered */
    struct partial *oldest;   /* creation-order list of partials in use */
    struct partial *newest;
    struct partial *pool;         /* free blocks */
    struct partial *pending_head; /* assembled, waiting for store space */
    struct partial *pending_tail;
    uint64_t partial_bytes; /* all blocks: in use, pending, pooled */
    int end_requested;
    int shutdown_requested;
    /* This server rank (surge_ingest_set_ranks); size 1: one rank. */
    uint32_t rank, nranks;
    int route;             /* enum surge_route */
    surge_msg_welcome *wl; /* the welcome's server list, or NULL */
    void (*control_cb)(void *arg, int op, int64_t sim); /* rank 0 relays */
    void *control_arg;
    const surge_counters *totals;      /* rank 0: the sums a PING reports */
    const uint64_t *totals_active;     /* rank 0: open sims over the ranks */
    uint64_t now_ns;                   /* clock of the message being handled */
    surge_ratelimit rl[4];             /* per log class */
    float inbuf[SURGE_MAX_PARAMS + 1]; /* input vector being put */
    surge_msg msg;                     /* the header being handled */
    int64_t *vkept; /* (nvkept) held-out runs in the validation set */
    size_t nvkept, vkept_cap;
    int vfull;      /* the validation store has refused a put: from now
                       on each new held-out run is drawn */
    surge_rng vrng; /* validation sampling draws (seeded) */
    /* The output vector's layout (record_layout), NULL until the first
     * declared simulation; written once on the I/O thread, never changed
     * after. Atomic: the consumer may read it before any sample of this
     * server reached it (a server resumed from a checkpoint trains on the
     * restored samples at once), so the store gives no ordering; found by
     * the TSan build (train_serve.sh). */
    _Atomic(char *) fields_json;
};

/* ------------------------------------------------------------ logging */

enum log_class { LC_MSG, LC_SLICE, LC_STEP, LC_SESSION };

static void drop_log(surge_ingest *ing, enum log_class cls, const char *fmt,
                     ...) __attribute__((format(printf, 3, 4)));

/* Log at most LOG_BURST lines per class and period; a line says how many
 * were left out before it. */
static void
drop_log(surge_ingest *ing, enum log_class cls, const char *fmt, ...)
{
    if (SURGE_LOG_WARN > surge_log_get_level()) {
        return;
    }
    uint64_t skipped = 0;
    if (!surge_ratelimit_allow(&ing->rl[cls], ing->now_ns, &skipped)) {
        return;
    }
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (skipped > 0) {
        surge_log(SURGE_LOG_WARN, COMPONENT,
                  "%s (%" PRIu64 " similar lines not logged)", line, skipped);
    } else {
        surge_log(SURGE_LOG_WARN, COMPONENT, "%s", line);
    }
}

/* ------------------------------------------------------------ replies */

static void set_reject(surge_msg *reply, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
set_reject(surge_msg *reply, int code, const char *fmt, ...)
{
    memset(reply, 0, sizeof *reply);
    reply->type = SURGE_MSG_REJECT;
    reply->u.reject.code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reply->u.reject.reason, sizeof reply->u.reject.reason, fmt, ap);
    va_end(ap);
}

static void set_control_reply(surge_msg *reply, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
set_control_reply(surge_msg *reply, int code, const char *fmt, ...)
{
    memset(reply, 0, sizeof *reply);
    reply->type = SURGE_MSG_CONTROL_REPLY;
    reply->u.control_reply.code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reply->u.control_reply.message,
              sizeof reply->u.control_reply.message, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------ peers */

static uint64_t
rid_hash(const void *rid, size_t len)
{
    /* FNV-1a then the mixer: routing ids are short. */
    uint64_t h = UINT64_C(1469598103934665603);
    const unsigned char *p = rid;
    for (size_t i = 0; i < len; i++) {
        h = (h ^ p[i]) * UINT64_C(1099511628211);
    }
    return surge_u64map_mix(h ^ len);
}

static struct peer *
peer_find(surge_ingest *ing, const void *rid, size_t len, uint64_t h)
{
    struct peer *p = surge_u64map_get(&ing->peers, h);
    for (; p != NULL; p = p->next) {
        if (p->rid_len == len && memcmp(p->rid, rid, len) == 0) {
            return p;
        }
    }
    return NULL;
}

static int
peer_add(surge_ingest *ing, const void *rid, size_t len, uint64_t h,
         struct sim *sim, uint32_t rank, struct peer **out)
{
    struct peer *p = surge_calloc(1, sizeof *p);
    if (p == NULL) {
        return -ENOMEM;
    }
    p->hash = h;
    p->rid_len = (uint8_t)len;
    memcpy(p->rid, rid, len);
    p->sim = sim;
    p->rank = rank;
    p->next = surge_u64map_get(&ing->peers, h);
    if (surge_u64map_put(&ing->peers, h, p) < 0) {
        free(p);
        return -ENOMEM;
    }
    *out = p;
    return 0;
}

static void
peer_remove(surge_ingest *ing, struct peer *p)
{
    struct peer *head = surge_u64map_get(&ing->peers, p->hash);
    if (head == p) {
        if (p->next != NULL) {
            (void)surge_u64map_put(&ing->peers, p->hash, p->next);
        } else {
            (void)surge_u64map_del(&ing->peers, p->hash);
        }
    } else {
        for (struct peer *q = head; q != NULL; q = q->next) {
            if (q->next == p) {
                q->next = p->next;
                break;
            }
        }
    }
    if (p->sim != NULL && p->sim->peers[p->rank] == p) {
        p->sim->peers[p->rank] = NULL;
    }
    free(p);
}

/* ------------------------------------------------------------ blocks */

static size_t
block_size(uint64_t nout, uint64_t nbits)
{
    size_t head = (sizeof(struct partial) + 63) / 64 * 64;
    size_t outb = (size_t)nout * sizeof(float);
    outb = (outb + 7) / 8 * 8;
    return head + outb + (size_t)((nbits + 63) / 64) * 8;
}

static void
list_unlink(surge_ingest *ing, struct partial *p)
{
    struct sim *s = p->sim;
    if (p->sim_older != NULL) {
        p->sim_older->sim_newer = p->sim_newer;
    } else {
        s->p_oldest = p->sim_newer;
    }
    if (p->sim_newer != NULL) {
        p->sim_newer->sim_older = p->sim_older;
    } else {
        s->p_newest = p->sim_older;
    }
    p->sim_older = p->sim_newer = NULL;
    s->partial_bytes -= p->block_bytes;
    if (s->partial_bytes == 0) {
        ing->nassembling--;
    }
    if (p->older != NULL) {
        p->older->newer = p->newer;
    } else {
        ing->oldest = p->newer;
    }
    if (p->newer != NULL) {
        p->newer->older = p->older;
    } else {
        ing->newest = p->older;
    }
    p->older = p->newer = NULL;
}

static void
block_release(surge_ingest *ing, struct partial *p)
{
    p->sim = NULL;
    p->next_free = ing->pool;
    ing->pool = p;
}

/* Forget the record of s's dropped steps. */
static void
dropped_forget(surge_ingest *ing, struct sim *s)
{
    ing->dropped_records -= s->dropped.len;
    surge_u64map_fini(&s->dropped);
}

/* Remember that step of s was evicted: its later slices cannot complete it
 * and are refused as "step_dropped" rather than start a partial step that
 * would only be evicted again. The record is bounded: when it is full the
 * sim adding to it forgets its own record first (the sim evicting most is
 * the one filling it). A step forgotten only costs memory its later slices
 * occupy until they are evicted in turn; nothing goes uncounted. */
static void
dropped_record(surge_ingest *ing, struct sim *s, int64_t step)
{
    if (ing->dropped_records >= DROPPED_RECORDS && s->dropped.len > 0) {
        drop_log(ing, LC_STEP,
                 "sim %" PRId64 ": forgetting the record of its %zu dropped "
                 "steps (the server keeps %d)",
                 s->id, (size_t)s->dropped.len, DROPPED_RECORDS);
        dropped_forget(ing, s);
    }
    if (ing->dropped_records >= DROPPED_RECORDS) {
        return;
    }
    size_t before = s->dropped.len;
    (void)surge_u64map_put(&s->dropped, (uint64_t)step, (void *)1);
    ing->dropped_records += s->dropped.len - before;
}

/* Drop one partial step that is in use, counting it under reason. */
static void
partial_drop(surge_ingest *ing, struct partial *p, enum surge_step_drop why)
{
    struct sim *s = p->sim;
    (void)surge_u64map_del(&s->partials, (uint64_t)p->step);
    if (why == SURGE_TDROP_ASSEMBLY_MEMORY) {
        s->ndropped++;
        dropped_record(ing, s, p->step);
    }
    list_unlink(ing, p);
    ing->c.steps.dropped[why]++;
    ing->c.steps.in_progress--;
    block_release(ing, p);
}

/* The partial step to evict so that s can start one of `bytes`: s's own
 * oldest when s would go over its fair share (the bound divided among the
 * sims assembling, s included), else the oldest of the sim holding the
 * most. NULL when nothing is in use. */
static struct partial *
pick_victim(surge_ingest *ing, const struct sim *s, size_t bytes)
{
    uint64_t n = ing->nassembling + (s->partial_bytes == 0);
    uint64_t share = ing->o->max_partial_bytes / (n > 0 ? n : 1);
    if (s->p_oldest != NULL && s->partial_bytes + bytes > share) {
        return s->p_oldest;
    }
    const struct sim *most = NULL;
    for (size_t i = 0; i < ing->nsims; i++) {
        const struct sim *t = ing->sim_list[i];
        if (t->p_oldest != NULL &&
            (most == NULL || t->partial_bytes > most->partial_bytes)) {
            most = t;
        }
    }
    return most != NULL ? most->p_oldest : NULL;
}

/* A block of `bytes` for a new partial step of s, within the memory bound:
 * reuse a pooled block of that size, else free pooled blocks, else evict a
 * partial step (pick_victim). NULL when nothing more can be freed. */
static struct partial *
block_get(surge_ingest *ing, const struct sim *s, size_t bytes)
{
    for (;;) {
        struct partial **pp = &ing->pool;
        while (*pp != NULL && (*pp)->block_bytes != bytes) {
            pp = &(*pp)->next_free;
        }
        if (*pp != NULL) {
            struct partial *p = *pp;
            *pp = p->next_free;
            p->next_free = NULL;
            return p;
        }
        if (ing->partial_bytes + bytes <= ing->o->max_partial_bytes) {
            struct partial *p = surge_malloc(bytes);
            if (p == NULL) {
                return NULL;
            }
            p->block_bytes = bytes;
            p->next_free = NULL;
            ing->partial_bytes += bytes;
            return p;
        }
        if (ing->pool != NULL) {
            struct partial *p = ing->pool;
            ing->pool = p->next_free;
            ing->partial_bytes -= p->block_bytes;
            free(p);
            continue;
        }
        struct partial *victim = pick_victim(ing, s, bytes);
        if (victim == NULL) {
            return NULL;
        }
        drop_log(ing, LC_STEP,
                 "assembly memory full (%" PRIu64
                 " bytes): dropping partial step %" PRId64 " of sim %" PRId64
                 " (%" PRIu64 "/%" PRIu64 " slices)",
                 ing->o->max_partial_bytes, victim->step, victim->sim->id,
                 victim->received, victim->sim->expected);
        partial_drop(ing, victim, SURGE_TDROP_ASSEMBLY_MEMORY);
    }
}

/* ------------------------------------------------------------ sims */

/* Free the per-rank tables (ranks x fields, may be large). */
static void
sim_free_rank_tables(struct sim *s)
{
    free(s->slice_off);
    free(s->slice_cnt);
    free(s->covered);
    free(s->joined);
    free(s->said_bye);
    free(s->accepted);
    free(s->peers);
    s->slice_off = s->slice_cnt = s->covered = NULL;
    s->joined = s->said_bye = NULL;
    s->accepted = NULL;
    s->peers = NULL;
}

/* Forget the declaration (for a retry) but keep the assembled set. */
static void
sim_undeclare(struct sim *s)
{
    free(s->params);
    free(s->names);
    free(s->global);
    free(s->base);
    s->params = NULL;
    s->names = NULL;
    s->global = s->base = NULL;
    sim_free_rank_tables(s);
    s->declared = 0;
    s->njoined = s->nbye = 0;
    s->expected = 0;
}

static void
sim_free(struct sim *s)
{
    if (s == NULL) {
        return;
    }
    sim_undeclare(s);
    surge_u64map_fini(&s->partials);
    surge_u64map_fini(&s->assembled);
    surge_u64map_fini(&s->dropped);
    free(s);
}

static int
sim_declare(struct sim *s, const surge_msg_hello *h)
{
    uint32_t nr = h->nranks, nf = h->nfields;
    s->nranks = nr;
    s->nparams = h->nparams;
    s->nfields = nf;
    s->params =
        surge_calloc(h->nparams > 0 ? h->nparams : 1, sizeof *s->params);
    s->names = surge_calloc(nf, sizeof *s->names);
    s->global = surge_calloc(nf, sizeof *s->global);
    s->base = surge_calloc(nf, sizeof *s->base);
    s->covered = surge_calloc(nf, sizeof *s->covered);
    s->slice_off = surge_calloc((size_t)nr * nf, sizeof *s->slice_off);
    s->slice_cnt = surge_calloc((size_t)nr * nf, sizeof *s->slice_cnt);
    s->joined = surge_calloc(nr, 1);
    s->said_bye = surge_calloc(nr, 1);
    s->accepted = surge_calloc(nr, sizeof *s->accepted);
    s->peers = surge_calloc(nr, sizeof *s->peers);
    if (s->params == NULL || s->names == NULL || s->global == NULL ||
        s->base == NULL || s->covered == NULL || s->slice_off == NULL ||
        s->slice_cnt == NULL || s->joined == NULL || s->said_bye == NULL ||
        s->accepted == NULL || s->peers == NULL) {
        sim_undeclare(s);
        return -ENOMEM;
    }
    memcpy(s->params, h->params, h->nparams * sizeof *s->params);
    uint64_t pos = 0;
    for (uint32_t f = 0; f < nf; f++) {
        memcpy(s->names[f], h->fields[f].name, sizeof s->names[f]);
        s->global[f] = h->fields[f].global_size;
        s->base[f] = pos;
        pos += h->fields[f].global_size;
    }
    s->nout = pos;
    s->block_bytes = block_size(pos, (uint64_t)nr * nf);
    s->declared = 1;
    return 0;
}

/* The first declared simulation fixes the study's output vector: its
 * fields' names, positions, sizes and shapes (--field-shapes, else 1-D),
 * as JSON for the model file ("output_fields", docs/model-file.md). A
 * declared shape whose product is not the field's size is left out with
 * a warning. No memory: the model just lacks the layout. */
static void
record_layout(surge_ingest *ing, const struct sim *s)
{
    size_t cap = 256 + (size_t)s->nfields * (SURGE_MAX_NAME + 160);
    char *j = malloc(cap);
    if (j == NULL || ing->fields_json != NULL) {
        free(j);
        return;
    }
    size_t n = (size_t)snprintf(j, cap, "[");
    for (uint32_t f = 0; f < s->nfields && n < cap; f++) {
        uint64_t dims[8];
        int nd = surge_server_field_shape(ing->o, s->names[f], dims, 8);
        uint64_t prod = 1;
        for (int d = 0; d < nd; d++) {
            prod *= dims[d];
        }
        if (nd > 0 && prod != s->global[f]) {
            SURGE_LOG(SURGE_LOG_WARN, COMPONENT,
                      "--field-shapes: field %s has %" PRIu64
                      " elements, its shape holds %" PRIu64 ": left 1-D",
                      s->names[f], s->global[f], prod);
            nd = 0;
        }
        if (nd == 0) {
            dims[0] = s->global[f];
            nd = 1;
        }
        n += (size_t)snprintf(j + n, cap - n,
                              "%s{\"name\":\"%s\",\"offset\":%" PRIu64
                              ",\"size\":%" PRIu64 ",\"shape\":[",
                              f > 0 ? "," : "", s->names[f], s->base[f],
                              s->global[f]);
        for (int d = 0; d < nd && n < cap; d++) {
            n += (size_t)snprintf(j + n, cap - n, "%s%" PRIu64, d ? "," : "",
                                  dims[d]);
        }
        n += n < cap ? (size_t)snprintf(j + n, cap - n, "]}") : 0;
    }
    n += n < cap ? (size_t)snprintf(j + n, cap - n, "]") : 0;
    if (n >= cap) {
        free(j); /* cannot happen with cap's bound; no layout then */
        return;
    }
    ing->fields_json = j;
}

const char *
surge_ingest_output_fields(const surge_ingest *ing)
{
    return ing->fields_json;
}

static struct sim *
sim_get_or_create(surge_ingest *ing, int64_t id)
{
    struct sim *s = surge_u64map_get(&ing->sims, (uint64_t)id);
    if (s != NULL) {
        return s;
    }
    if (ing->nsims == ing->sim_cap) {
        size_t ncap = ing->sim_cap == 0 ? 16 : ing->sim_cap * 2;
        struct sim **nl = surge_realloc(ing->sim_list, ncap * sizeof *nl);
        if (nl == NULL) {
            return NULL;
        }
        ing->sim_list = nl;
        ing->sim_cap = ncap;
    }
    s = surge_calloc(1, sizeof *s);
    if (s == NULL) {
        return NULL;
    }
    s->id = id;
    s->validation = surge_server_is_validation(ing->o, id);
    surge_u64map_init(&s->partials);
    surge_u64map_init(&s->assembled);
    surge_u64map_init(&s->dropped);
    if (surge_u64map_put(&ing->sims, (uint64_t)id, s) < 0) {
        sim_free(s);
        return NULL;
    }
    ing->sim_list[ing->nsims++] = s;
    return s;
}

/* Drop all partial steps of s under reason why. */
static void
sim_drop_partials(surge_ingest *ing, struct sim *s, enum surge_step_drop why)
{
    uint64_t n = 0;
    for (size_t i = 0; i < s->partials.cap; i++) {
        struct partial *p = s->partials.vals[i];
        if (p == NULL) {
            continue;
        }
        list_unlink(ing, p);
        ing->c.steps.dropped[why]++;
        ing->c.steps.in_progress--;
        block_release(ing, p);
        n++;
    }
    /* Clear the table in place (keep its storage for reuse). */
    for (size_t i = 0; i < s->partials.cap; i++) {
        s->partials.vals[i] = NULL;
    }
    s->partials.len = 0;
    if (n > 0) {
        drop_log(ing, LC_STEP,
                 "sim %" PRId64 ": dropped %" PRIu64 " incomplete step(s) (%s)",
                 s->id, n, surge_step_drop_name((int)why));
    }
}

static void
sim_end_sessions(surge_ingest *ing, struct sim *s)
{
    if (!s->declared || s->peers == NULL) {
        return;
    }
    for (uint32_t r = 0; r < s->nranks; r++) {
        if (s->peers[r] != NULL) {
            peer_remove(ing, s->peers[r]);
        }
    }
}

/* A simulation that ended keeps what its pending samples and a retry
 * need (parameters, fields, the assembled steps) and frees its per-rank
 * tables, which may be large (ranks x fields). */
static void
sim_release_ranks(surge_ingest *ing, struct sim *s)
{
    sim_free_rank_tables(s);
    dropped_forget(ing, s);
}

/* s no longer waits for its ranks (all joined, failed, retried). */
static void
joining_leave(surge_ingest *ing, struct sim *s)
{
    if (s->joining) {
        s->joining = 0;
        ing->njoining--;
    }
}

/* ------------------------------------------------------------ samples */

static void
pending_push(surge_ingest *ing, struct partial *p)
{
    p->next_free = NULL;
    if (ing->pending_tail != NULL) {
        ing->pending_tail->next_free = p;
    } else {
        ing->pending_head = p;
    }
    ing->pending_tail = p;
    ing->c.samples.pending++;
}

/* Remove run sim from the list of kept held-out runs. */
static void
vkept_remove(surge_ingest *ing, int64_t sim)
{
    for (size_t i = 0; i < ing->nvkept; i++) {
        if (ing->vkept[i] == sim) {
            ing->vkept[i] = ing->vkept[--ing->nvkept];
            return;
        }
    }
}

/* Evict a random kept held-out run other than keep (its samples leave
 * the validation store; if it still runs, its later samples are not
 * sampled). 0, or -ENOENT when there is no other run. */
static int
vevict_one(surge_ingest *ing, int64_t keep)
{
    size_t cand = 0;
    for (size_t i = 0; i < ing->nvkept; i++) {
        cand += ing->vkept[i] != keep;
    }
    if (cand == 0) {
        return -ENOENT;
    }
    uint64_t k = surge_rng_below(&ing->vrng, cand);
    int64_t victim = -1;
    for (size_t i = 0; i < ing->nvkept; i++) {
        if (ing->vkept[i] != keep && k-- == 0) {
            victim = ing->vkept[i];
            break;
        }
    }
    uint64_t n = surge_store_evict_sim(ing->validation, victim);
    ing->c.samples.validation_evicted += n;
    vkept_remove(ing, victim);
    ing->c.sims.validation_runs_kept = ing->nvkept;
    struct sim *v = surge_u64map_get(&ing->sims, (uint64_t)victim);
    if (v != NULL) {
        v->vstate = V_NOT_SAMPLED;
    }
    SURGE_LOG(SURGE_LOG_INFO, COMPONENT,
              "validation store full: held-out sim %" PRId64 " (%" PRIu64
              " samples) evicted for a later run",
              victim, n);
    return 0;
}

/* Put a held-out sample. The validation store holds whole runs, a
 * uniform sample of the held-out runs seen so far (Algorithm R over runs):
 * while it has room every held-out run enters; once full, the i-th
 * held-out run enters with probability K / i (K the runs kept) and
 * replaces a random kept run, whose samples are evicted when its own need
 * the room; a run not picked
 * has its samples dropped as validation_not_sampled. So later runs are
 * validated on as much as early ones, and every held-out sample is
 * counted: validation (stored; validation_evicted of them later removed)
 * or dropped with its reason. Returns the store's answer (0, or an error
 * already counted). */
static int
vsample_put(surge_ingest *ing, struct sim *s, struct partial *p)
{
    if (s->vstate == V_NOT_SAMPLED) {
        ing->c.samples.dropped[SURGE_PDROP_VALIDATION_NOT_SAMPLED]++;
        return 0;
    }
    if (s->vstate == V_NEW && ing->vfull) {
        /* The store has been full: draw whether this new run enters. */
        uint64_t i = ing->c.sims.validation_runs + 1;
        if (ing->nvkept == 0 ||
            surge_rng_below(&ing->vrng, i) >= (uint64_t)ing->nvkept) {
            ing->c.sims.validation_runs++;
            s->vstate = V_NOT_SAMPLED;
            ing->c.samples.dropped[SURGE_PDROP_VALIDATION_NOT_SAMPLED]++;
            return 0;
        }
    }
    int rc = surge_store_try_put(ing->validation, s->id, p->step, ing->inbuf,
                                 p->out);
    if (rc == -ENOSPC) {
        ing->vfull = 1;
    }
    /* Make room by evicting whole other runs (a kept run that grows, or
     * a new run that was picked). */
    while (rc == -ENOSPC && vevict_one(ing, s->id) == 0) {
        rc = surge_store_try_put(ing->validation, s->id, p->step, ing->inbuf,
                                 p->out);
    }
    if (rc == 0 && s->vstate == V_NEW) {
        if (ing->nvkept == ing->vkept_cap) {
            size_t cap = ing->vkept_cap < 16 ? 16 : 2 * ing->vkept_cap;
            int64_t *v = realloc(ing->vkept, cap * sizeof *v);
            if (v == NULL) {
                /* Not tracked: it stays, but is never evicted. */
                s->vstate = V_KEPT;
                ing->c.sims.validation_runs++;
                ing->c.samples.validation++;
                return 0;
            }
            ing->vkept = v;
            ing->vkept_cap = cap;
        }
        ing->vkept[ing->nvkept++] = s->id;
        s->vstate = V_KEPT;
        ing->c.sims.validation_runs++;
        ing->c.sims.validation_runs_kept = ing->nvkept;
    }
    if (rc == 0) {
        ing->c.samples.validation++;
    } else if (rc == -ENOSPC) {
        /* One run larger than the whole store. */
        ing->c.samples.dropped[SURGE_PDROP_VALIDATION_FULL]++;
        drop_log(ing, LC_STEP,
                 "validation store full: sample of sim %" PRId64
                 " step %" PRId64 " dropped (one run is larger than "
                 "--validation-bytes)",
                 s->id, p->step);
    } else if (rc != -EAGAIN) {
        ing->c.samples.dropped[SURGE_PDROP_SERVER_STOP]++;
    }
    return rc == -EAGAIN ? rc : 0;
}

/* Put one assembled sample. 0 when it went (or was dropped with a
 * counted reason); -EAGAIN when the training store is full. */
static int
sample_put(surge_ingest *ing, struct partial *p)
{
    struct sim *s = p->sim;
    for (uint32_t i = 0; i < s->nparams; i++) {
        ing->inbuf[i] = (float)s->params[i];
    }
    ing->inbuf[s->nparams] = (float)p->time;
    if (s->validation && ing->validation != NULL) {
        return vsample_put(ing, s, p);
    }
    surge_store *st = s->validation ? ing->validation : ing->train;
    int rc = st != NULL
                 ? surge_store_try_put(st, s->id, p->step, ing->inbuf, p->out)
                 : SURGE_ESTATE;
    if (rc == -EAGAIN) {
        return rc;
    }
    if (rc == 0) {
        if (s->validation) {
            ing->c.samples.validation++;
        } else {
            ing->c.samples.train++;
        }
    } else if (rc == -ENOSPC) {
        ing->c.samples.dropped[SURGE_PDROP_VALIDATION_FULL]++;
        drop_log(ing, LC_STEP,
                 "validation store full: sample of sim %" PRId64
                 " step %" PRId64 " dropped",
                 s->id, p->step);
    } else {
        ing->c.samples.dropped[SURGE_PDROP_SERVER_STOP]++;
    }
    return 0;
}

static void
partial_complete(surge_ingest *ing, struct partial *p)
{
    struct sim *s = p->sim;
    (void)surge_u64map_del(&s->partials, (uint64_t)p->step);
    list_unlink(ing, p);
    ing->c.steps.in_progress--;
    ing->c.steps.assembled++;
    if (surge_u64map_put(&s->assembled, (uint64_t)p->step, (void *)1) < 0) {
        /* Out of memory for the set: the step could be accepted again
         * after a retry. Say so rather than hide it. */
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
                  "out of memory recording sim %" PRId64 " step %" PRId64,
                  s->id, p->step);
    }
    if (ing->checksum_log != NULL) {
        uint64_t sum = surge_checksum_f32(p->out, 0, s->nout);
        fprintf(ing->checksum_log, "%" PRId64 " %" PRId64 " %" PRIu64 "\n",
                s->id, p->step, sum);
    }
    if (ing->pending_head == NULL && sample_put(ing, p) == 0) {
        block_release(ing, p);
        return;
    }
    pending_push(ing, p);
}

int
surge_ingest_flush(surge_ingest *ing)
{
    while (ing->pending_head != NULL) {
        struct partial *p = ing->pending_head;
        if (sample_put(ing, p) == -EAGAIN) {
            return -EAGAIN;
        }
        ing->pending_head = p->next_free;
        if (ing->pending_head == NULL) {
            ing->pending_tail = NULL;
        }
        ing->c.samples.pending--;
        block_release(ing, p);
    }
    return 0;
}

int
surge_ingest_has_pending(const surge_ingest *ing)
{
    return ing->pending_head != NULL;
}

/* ------------------------------------------------------------ hello */

static int
token_ok(const surge_ingest *ing, const char *token)
{
    const char *want = ing->o->token;
    if (want[0] == '\0') {
        return 1;
    }
    return surge_ct_equal(token, strnlen(token, SURGE_MAX_TOKEN + 1), want,
                          strlen(want));
}

/* A hello joins a simulation with that simulation's run key (derived from
 * the study token: common/auth.h), never with the token itself, so that a
 * run, which holds only its own key, cannot take another run's ranks.
 * Fills reply when the key is missing or wrong. */
static int
run_key_ok(const surge_ingest *ing, const surge_msg_hello *m, surge_msg *reply)
{
    const char *token = ing->o->token;
    char want[SURGE_RUN_KEY_HEX + 1];
    if (token[0] == '\0') {
        return 1; /* no token: an open server (loopback only) */
    }
    if (m->run_key[0] == '\0') {
        set_reject(reply, SURGE_ETOKEN,
                   "no run key for sim %" PRId64 ": a run joins with the key "
                   "the launcher gave it (SURGE_RUN_KEY), or libsurge derives "
                   "it from the study token (SURGE_TOKEN)",
                   m->sim);
        return 0;
    }
    if (surge_run_key(token, m->sim, want) != 0) {
        set_reject(reply, SURGE_EINTERNAL, "cannot compute run keys");
        return 0;
    }
    int ok =
        surge_ct_equal(m->run_key, strlen(m->run_key), want, SURGE_RUN_KEY_HEX);
    if (!ok) {
        set_reject(reply, SURGE_ETOKEN,
                   "wrong run key for sim %" PRId64
                   ": the key of another run, or derived from a wrong "
                   "study token",
                   m->sim);
    }
    return ok;
}

/* Check h against the declaration of s; fills reply on mismatch. */
static int
hello_matches(const struct sim *s, const surge_msg_hello *h, surge_msg *reply)
{
    if (h->nranks != s->nranks) {
        set_reject(reply, SURGE_ECONFIG,
                   "sim %" PRId64 ": %u ranks declared, rank 0's hello said "
                   "%u",
                   s->id, h->nranks, s->nranks);
        return -1;
    }
    if (h->nparams != s->nparams ||
        memcmp(h->params, s->params, s->nparams * sizeof(double)) != 0) {
        set_reject(reply, SURGE_ECONFIG,
                   "sim %" PRId64 ": parameter values differ from those of "
                   "the ranks already joined",
                   s->id);
        return -1;
    }
    if (h->nfields != s->nfields) {
        set_reject(reply, SURGE_EFIELD,
                   "sim %" PRId64 ": %u fields declared, the ranks already "
                   "joined declared %u",
                   s->id, h->nfields, s->nfields);
        return -1;
    }
    for (uint32_t f = 0; f < s->nfields; f++) {
        if (strcmp(h->fields[f].name, s->names[f]) != 0) {
            set_reject(reply, SURGE_EFIELD,
                       "field %u is '%s', the ranks already joined declared "
                       "'%s'",
                       f, h->fields[f].name, s->names[f]);
            return -1;
        }
        if (h->fields[f].global_size != s->global[f]) {
            set_reject(reply, SURGE_EFIELD,
                       "field '%s' global size %" PRIu64
                       " differs from the ranks already joined's %" PRIu64,
                       s->names[f], h->fields[f].global_size, s->global[f]);
            return -1;
        }
    }
    return 0;
}

/* Slices of rank h->rank must not overlap those of joined ranks, and with
 * the last rank they must tile every field. */
static int
hello_tiles(const struct sim *s, const surge_msg_hello *h, surge_msg *reply)
{
    int last = s->njoined + 1 == s->nranks;
    for (uint32_t f = 0; f < s->nfields; f++) {
        uint64_t a = h->fields[f].offset, n = h->fields[f].count;
        if (a > s->global[f] || n > s->global[f] - a) {
            set_reject(reply, SURGE_EBOUNDS,
                       "field '%s': slice [%" PRIu64 ", %" PRIu64
                       ") is outside its %" PRIu64 " elements",
                       s->names[f], a, a + n, s->global[f]);
            return -1;
        }
        if (n > 0) {
            for (uint32_t r = 0; r < s->nranks; r++) {
                if (!s->joined[r]) {
                    continue;
                }
                uint64_t b = s->slice_off[(size_t)r * s->nfields + f];
                uint64_t m = s->slice_cnt[(size_t)r * s->nfields + f];
                if (m > 0 && a < b + m && b < a + n) {
                    set_reject(reply, SURGE_EBOUNDS,
                               "field '%s': slice [%" PRIu64 ", %" PRIu64
                               ") of rank %u overlaps rank %u's [%" PRIu64
                               ", %" PRIu64 ")",
                               s->names[f], a, a + n, h->rank, r, b, b + m);
                    return -1;
                }
            }
        }
        if (last && s->covered[f] + n != s->global[f]) {
            set_reject(reply, SURGE_EBOUNDS,
                       "field '%s': the slices of all %u ranks cover %" PRIu64
                       " of its %" PRIu64 " elements",
                       s->names[f], s->nranks, s->covered[f] + n, s->global[f]);
            return -1;
        }
    }
    return 0;
}

/* Validate a first hello's declaration on its own and against the stores
 * and the assembly memory. */
static int
hello_declaration_ok(surge_ingest *ing, const surge_msg_hello *h,
                     int validation, surge_msg *reply)
{
    uint64_t nout = 0;
    for (uint32_t f = 0; f < h->nfields; f++) {
        if (h->fields[f].global_size == 0 ||
            h->fields[f].global_size > SURGE_MAX_FIELD_ELEMS) {
            set_reject(reply, SURGE_ELIMIT,
                       "field '%s': global size %" PRIu64
                       " is outside 1..%" PRIu64,
                       h->fields[f].name, h->fields[f].global_size,
                       (uint64_t)SURGE_MAX_FIELD_ELEMS);
            return -1;
        }
        for (uint32_t g = 0; g < f; g++) {
            if (strcmp(h->fields[f].name, h->fields[g].name) == 0) {
                set_reject(reply, SURGE_EFIELD, "field '%s' declared twice",
                           h->fields[f].name);
                return -1;
            }
        }
        nout += h->fields[f].global_size;
    }
    size_t bytes = block_size(nout, (uint64_t)h->nranks * h->nfields);
    if (bytes > ing->o->max_partial_bytes) {
        set_reject(reply, SURGE_ELIMIT,
                   "one sample needs %zu bytes of assembly memory, more than "
                   "the server's --max-partial-bytes %" PRIu64,
                   bytes, ing->o->max_partial_bytes);
        return -1;
    }
    surge_store *st = validation ? ing->validation : ing->train;
    if (st == NULL) {
        set_reject(reply, SURGE_ESTATE, "server has no store for this sim");
        return -1;
    }
    int rc = surge_store_set_shape(st, h->nparams + 1, nout);
    if (rc == SURGE_EFIELD) {
        uint32_t nin = 0;
        uint64_t nouts = 0;
        (void)surge_store_shape(st, &nin, &nouts);
        set_reject(reply, SURGE_ECONFIG,
                   "sample shape (%u parameters, %" PRIu64
                   " output values) differs from the study's (%u, %" PRIu64 ")",
                   h->nparams, nout, nin - 1, nouts);
        return -1;
    }
    if (rc == SURGE_ELIMIT) {
        set_reject(reply, SURGE_ELIMIT,
                   "one sample (%" PRIu64
                   " bytes) does not fit in the server's %s store",
                   ((uint64_t)h->nparams + 1 + nout) * 4,
                   validation ? "validation" : "training");
        return -1;
    }
    if (rc == SURGE_ECONFIG) {
        set_reject(reply, SURGE_ECONFIG, "server's %s store refuses: %s",
                   validation ? "validation" : "training",
                   surge_store_error(st));
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "%s store: %s",
                  validation ? "validation" : "training",
                  surge_store_error(st));
        return -1;
    }
    if (rc < 0) {
        set_reject(reply, rc, "server cannot allocate its store: %s",
                   surge_strerror(rc));
        return -1;
    }
    return 0;
}

/* After the last rank joined, steps whose slices all came (possible when a
 * rank owns nothing) are complete. */
static void
complete_ready(surge_ingest *ing, struct sim *s)
{
    for (size_t i = 0; i < s->partials.cap; i++) {
        struct partial *p = s->partials.vals[i];
        if (p != NULL && p->received == s->expected) {
            partial_complete(ing, p);
            i = (size_t)-1; /* the table changed: rescan */
        }
    }
}

/* The welcome for hello m; with several server ranks, their endpoints and
 * the routing rule (a server of one rank sends exactly the v1 welcome). */
static void
welcome(const surge_ingest *ing, const surge_msg_hello *m, surge_msg *reply)
{
    /* Not a memset of the whole message: the server list alone is 16 KiB
     * and is copied only when there is one. */
    reply->type = SURGE_MSG_WELCOME;
    surge_msg_welcome *w = &reply->u.welcome;
    w->sim = m->sim;
    w->rank = m->rank;
    w->max_payload_bytes = ing->o->max_message_bytes;
    w->nservers = 0;
    w->server_rank = 0;
    w->route = SURGE_ROUTE_STEP;
    w->redirect = 0;
    w->endpoints_len = 0;
    if (ing->wl != NULL) {
        w->nservers = ing->wl->nservers;
        w->server_rank = ing->rank;
        w->route = (uint8_t)ing->route;
        w->endpoints_len = ing->wl->endpoints_len;
        memcpy(w->endpoints, ing->wl->endpoints, ing->wl->endpoints_len);
    }
}

static int
handle_hello(surge_ingest *ing, const void *rid, size_t rid_len, uint64_t h,
             const surge_msg_hello *m, surge_msg *reply)
{
    surge_counters *c = &ing->c;
    struct sim *s = NULL;
    if (!run_key_ok(ing, m, reply)) {
        goto rejected;
    }
    if (m->dtype != SURGE_WIRE_F32) {
        set_reject(reply, SURGE_EDTYPE,
                   "element type %u not allowed (protocol v1 carries "
                   "float32 only)",
                   m->dtype);
        goto rejected;
    }
    if (m->nranks == 0 || m->rank >= m->nranks || m->nfields == 0 ||
        m->nfields > SURGE_MAX_FIELDS || m->nparams > SURGE_MAX_PARAMS) {
        set_reject(reply, SURGE_EPROTO,
                   "rank %u of %u ranks, %u fields, %u parameters: out of "
                   "range",
                   m->rank, m->nranks, m->nfields, m->nparams);
        goto rejected;
    }
    if ((uint64_t)m->nranks * m->nfields > MAX_SLICES) {
        set_reject(reply, SURGE_ELIMIT,
                   "%u ranks x %u fields is more than the %u slices per "
                   "sample this server assembles",
                   m->nranks, m->nfields, MAX_SLICES);
        goto rejected;
    }
    if (ing->nranks > 1 && ing->route == SURGE_ROUTE_SIM &&
        (uint64_t)m->sim % ing->nranks != ing->rank) {
        /* Not this rank's simulation: tell the client where it lives and
         * keep nothing (its session is on that rank alone). */
        welcome(ing, m, reply);
        reply->u.welcome.redirect = 1;
        c->sims.redirected++;
        c->messages.handled++;
        return 1;
    }
    struct peer *p = peer_find(ing, rid, rid_len, h);
    if (p != NULL) {
        set_reject(reply, SURGE_EDUPLICATE,
                   "this connection already said hello as rank %u of sim "
                   "%" PRId64,
                   p->rank, p->sim->id);
        goto rejected;
    }
    s = surge_u64map_get(&ing->sims, (uint64_t)m->sim);
    if ((s == NULL || !s->declared) && m->nranks > 1 &&
        ing->njoining >= ing->o->max_joining_sims) {
        /* Each waiting sim holds its declaration and per-rank tables
         * until its ranks come: bound how many may wait. */
        set_reject(reply, SURGE_ELIMIT,
                   "%u simulations are waiting for their ranks already "
                   "(--max-joining-sims); try again later",
                   ing->njoining);
        goto rejected;
    }
    s = sim_get_or_create(ing, m->sim);
    if (s == NULL) {
        set_reject(reply, -ENOMEM, "server out of memory");
        goto rejected;
    }
    if (s->state != SIM_OPEN) {
        set_reject(reply, SURGE_ESTATE,
                   "sim %" PRId64 " has %s; a rerun needs SIM_RETRY from "
                   "the launcher first",
                   s->id, sim_state_names[s->state]);
        goto rejected;
    }
    int first = !s->declared;
    if (first) {
        if (hello_declaration_ok(ing, m, s->validation, reply) < 0) {
            goto rejected;
        }
        if (sim_declare(s, m) < 0) {
            set_reject(reply, -ENOMEM, "server out of memory");
            goto rejected;
        }

    } else {
        if (hello_matches(s, m, reply) < 0) {
            goto rejected;
        }
        if (s->joined[m->rank]) {
            set_reject(reply, SURGE_EDUPLICATE,
                       "rank %u of sim %" PRId64 " already joined", m->rank,
                       s->id);
            goto rejected;
        }
    }
    if (hello_tiles(s, m, reply) < 0) {
        goto rejected_undeclare;
    }
    if (peer_add(ing, rid, rid_len, h, s, m->rank, &p) < 0) {
        set_reject(reply, -ENOMEM, "server out of memory");
        goto rejected_undeclare;
    }
    s->peers[m->rank] = p;
    s->joined[m->rank] = 1;
    s->njoined++;
    for (uint32_t f = 0; f < s->nfields; f++) {
        size_t k = (size_t)m->rank * s->nfields + f;
        s->slice_off[k] = m->fields[f].offset;
        s->slice_cnt[k] = m->fields[f].count;
        s->covered[f] += m->fields[f].count;
    }
    s->last_activity_ns = ing->now_ns;
    if (s->first_hello_ns == 0) {
        s->first_hello_ns = ing->now_ns;
    }
    if (m->steps > s->steps_expected) {
        s->steps_expected = m->steps;
    }
    if (ing->fields_json == NULL) {
        record_layout(ing, s); /* the first welcomed hello */
    }
    c->sims.hello++;
    c->messages.handled++;
    if (first && s->nranks > 1) {
        s->joining = 1;
        s->declared_ns = ing->now_ns;
        ing->njoining++;
    }
    if (s->njoined == s->nranks) {
        joining_leave(ing, s);
        uint64_t e = 0;
        for (size_t k = 0; k < (size_t)s->nranks * s->nfields; k++) {
            e += s->slice_cnt[k] > 0;
        }
        s->expected = e;
        c->sims.joined++;
        SURGE_LOG(SURGE_LOG_INFO, COMPONENT,
                  "sim %" PRId64 ": all %u ranks joined (%u fields, %" PRIu64
                  " values per sample%s)",
                  s->id, s->nranks, s->nfields, s->nout,
                  s->validation ? ", validation" : "");
        complete_ready(ing, s);
    }
    welcome(ing, m, reply);
    return 1;

rejected_undeclare:
    if (first) {
        sim_undeclare(s);
    }
rejected:
    c->sims.rejected++;
    c->messages.dropped[SURGE_MDROP_HELLO_REJECTED]++;
    drop_log(ing, LC_SESSION, "hello of sim %" PRId64 " rank %u rejected: %s",
             m->sim, m->rank, reply->u.reject.reason);
    return 1;
}

/* ------------------------------------------------------------ data */

static void
drop_data_msg(surge_ingest *ing, const surge_msg_data *d,
              enum surge_msg_drop why)
{
    ing->c.messages.dropped[why]++;
    ing->c.slices.dropped[SURGE_SDROP_MESSAGE_DROPPED] += d->nitems;
}

static struct partial *
partial_new(surge_ingest *ing, struct sim *s, int64_t step, double t)
{
    struct partial *p = block_get(ing, s, s->block_bytes);
    if (p == NULL) {
        return NULL;
    }
    size_t head = (sizeof(struct partial) + 63) / 64 * 64;
    size_t outb = ((size_t)s->nout * sizeof(float) + 7) / 8 * 8;
    size_t bytes = p->block_bytes;
    memset(p, 0, sizeof *p);
    p->block_bytes = bytes;
    p->out = (float *)((unsigned char *)p + head);
    p->bits = (uint64_t *)((unsigned char *)p + head + outb);
    memset(p->bits, 0,
           (size_t)(((uint64_t)s->nranks * s->nfields + 63) / 64) * 8);
    p->sim = s;
    p->step = step;
    p->time = t;
    if (surge_u64map_put(&s->partials, (uint64_t)step, p) < 0) {
        block_release(ing, p);
        return NULL;
    }
    p->older = ing->newest;
    if (ing->newest != NULL) {
        ing->newest->newer = p;
    } else {
        ing->oldest = p;
    }
    ing->newest = p;
    p->sim_older = s->p_newest;
    if (s->p_newest != NULL) {
        s->p_newest->sim_newer = p;
    } else {
        s->p_oldest = p;
    }
    s->p_newest = p;
    if (s->partial_bytes == 0) {
        ing->nassembling++;
    }
    s->partial_bytes += p->block_bytes;
    ing->c.steps.started++;
    ing->c.steps.in_progress++;
    return p;
}

/* A step that one message carries whole (a one-rank simulation, every
 * field, items i.. of d, no partial block yet) goes straight from the
 * message into a slot reserved in the training store: one copy instead of
 * two (message -> block -> store). Returns the number of items it used (the
 * step's fields, their payload bytes in *used_bytes), or 0 when the step
 * takes the block path instead: several ranks, fields spread over several
 * items or messages, a validation simulation, samples already pending
 * (they go first, in order), or no slot now (the block path then keeps the
 * sample pending and reading pauses: backpressure as before). The slot is
 * reserved and committed within this call, never across a turn of the
 * loop: see "Assembly" in docs/architecture.md. */
static uint32_t
step_direct(surge_ingest *ing, struct sim *s, const struct peer *p,
            const surge_msg_data *d, uint32_t i, const unsigned char *data,
            size_t *used_bytes)
{
    if (s->nranks != 1 || s->njoined != 1 || s->validation ||
        ing->train == NULL || ing->pending_head != NULL || s->nfields > 64 ||
        d->nitems - i < s->nfields) {
        return 0;
    }
    const surge_data_item *first = &d->items[i];
    uint64_t fields = 0;
    size_t bytes = 0;
    for (uint32_t j = 0; j < s->nfields; j++) {
        const surge_data_item *it = &d->items[i + j];
        uint64_t bit = UINT64_C(1) << it->field;
        if (it->step != first->step || (fields & bit) != 0) {
            return 0;
        }
        fields |= bit;
        bytes += (size_t)it->count * sizeof(float);
    }
    surge_reservoir_slot slot;
    if (surge_store_put_begin(ing->train, s->id, first->step, &slot) != 0) {
        return 0;
    }
    for (uint32_t k = 0; k < s->nparams; k++) {
        slot.input[k] = (float)s->params[k];
    }
    slot.input[s->nparams] = (float)first->time;
    const unsigned char *src = data;
    for (uint32_t j = 0; j < s->nfields; j++) {
        const surge_data_item *it = &d->items[i + j];
        size_t n = (size_t)it->count * sizeof(float);
        surge_store_slot_write(
            ing->train, slot.output + s->base[it->field] + it->offset, src, n);
        src += n;
    }
    surge_counters *c = &ing->c;
    c->steps.started++;
    c->steps.assembled++;
    c->slices.accepted += s->nfields;
    c->slices.bytes += bytes;
    s->accepted[p->rank] += s->nfields;
    if (surge_u64map_put(&s->assembled, (uint64_t)first->step, (void *)1) < 0) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
                  "out of memory recording sim %" PRId64 " step %" PRId64,
                  s->id, first->step);
    }
    if (ing->checksum_log != NULL) {
        /* Before the commit: once committed, a consumer may take the slot
         * and a later put overwrite it. */
        uint64_t sum = surge_checksum_f32(slot.output, 0, s->nout);
        fprintf(ing->checksum_log, "%" PRId64 " %" PRId64 " %" PRIu64 "\n",
                s->id, first->step, sum);
    }
    if (surge_store_put_commit(ing->train, &slot) == 0) {
        c->samples.train++;
    } else {
        c->samples.dropped[SURGE_PDROP_SERVER_STOP]++;
    }
    *used_bytes = bytes;
    return s->nfields;
}

static int
handle_data(surge_ingest *ing, const void *rid, size_t rid_len, uint64_t h,
            const surge_msg_data *d, const void *payload, size_t payload_len,
            unsigned nframes, surge_msg *reply)
{
    surge_counters *c = &ing->c;
    c->slices.received += d->nitems;
    if (nframes != 1) {
        drop_data_msg(ing, d, SURGE_MDROP_BAD_FRAMES);
        drop_log(ing, LC_MSG,
                 "data message with %u payload frames (1 expected) dropped",
                 nframes);
        return 0;
    }
    struct peer *p = peer_find(ing, rid, rid_len, h);
    if (p == NULL) {
        drop_data_msg(ing, d, SURGE_MDROP_UNKNOWN_SESSION);
        drop_log(ing, LC_MSG,
                 "data for sim %" PRId64 " rank %u from a peer without a "
                 "session dropped",
                 d->sim, d->rank);
        /* Answer once per peer, so a client that lost its session learns
         * why, without a reply per message. */
        if (surge_u64map_get(&ing->told, h) != NULL) {
            return 0;
        }
        if (ing->told.len >= REJECTED_CAP) {
            surge_u64map_fini(&ing->told);
        }
        (void)surge_u64map_put(&ing->told, h, (void *)1);
        set_reject(reply, SURGE_ESTATE, "send hello first");
        return 1;
    }
    struct sim *s = p->sim;
    if (d->sim != s->id || d->rank != p->rank) {
        drop_data_msg(ing, d, SURGE_MDROP_SESSION_MISMATCH);
        drop_log(ing, LC_MSG,
                 "data for sim %" PRId64 " rank %u on the session of sim "
                 "%" PRId64 " rank %u dropped",
                 d->sim, d->rank, s->id, p->rank);
        return 0;
    }
    s->last_activity_ns = ing->now_ns;
    if (d->dtype != SURGE_WIRE_F32) {
        drop_data_msg(ing, d, SURGE_MDROP_BAD_DTYPE);
        drop_log(ing, LC_MSG,
                 "sim %" PRId64 " rank %u: element type %u dropped", s->id,
                 p->rank, d->dtype);
        return 0;
    }
    uint64_t want = 0;
    if (d->nitems == 0 || d->nitems > SURGE_MAX_ITEMS ||
        surge_proto_payload_bytes(d, &want) < 0 || want != payload_len) {
        drop_data_msg(ing, d, SURGE_MDROP_BAD_PAYLOAD_SIZE);
        drop_log(ing, LC_MSG,
                 "sim %" PRId64 " rank %u: payload of %zu bytes, the items "
                 "need %" PRIu64 ": dropped",
                 s->id, p->rank, payload_len, want);
        return 0;
    }
    for (uint32_t i = 0; i < d->nitems; i++) {
        const surge_data_item *it = &d->items[i];
        if (ing->nranks > 1 && ing->route == SURGE_ROUTE_STEP &&
            (uint64_t)it->step % ing->nranks != ing->rank) {
            /* A client that routes wrong would split a step over two
             * server ranks, and neither could assemble it. */
            drop_data_msg(ing, d, SURGE_MDROP_WRONG_SERVER_RANK);
            drop_log(ing, LC_MSG,
                     "sim %" PRId64 " rank %u: step %" PRId64
                     " belongs to server rank %" PRIu64
                     " (route by step), not %u: dropped",
                     s->id, p->rank, it->step, (uint64_t)it->step % ing->nranks,
                     ing->rank);
            return 0;
        }
        if (it->field >= s->nfields) {
            drop_data_msg(ing, d, SURGE_MDROP_BAD_FIELD);
            drop_log(ing, LC_MSG,
                     "sim %" PRId64 " rank %u: field index %u of %u "
                     "declared: dropped",
                     s->id, p->rank, it->field, s->nfields);
            return 0;
        }
        size_t k = (size_t)p->rank * s->nfields + it->field;
        if (it->offset != s->slice_off[k] || it->count != s->slice_cnt[k] ||
            it->count == 0 || it->step < 0) {
            drop_data_msg(ing, d, SURGE_MDROP_BAD_SLICE);
            drop_log(ing, LC_MSG,
                     "sim %" PRId64 " rank %u field '%s' step %" PRId64
                     ": slice [%" PRIu64 ", +%" PRIu64
                     ") differs from the declared [%" PRIu64 ", +%" PRIu64
                     "): dropped",
                     s->id, p->rank, s->names[it->field], it->step, it->offset,
                     it->count, s->slice_off[k], s->slice_cnt[k]);
            return 0;
        }
    }
    c->messages.handled++;
    const unsigned char *src = payload;
    for (uint32_t i = 0; i < d->nitems; i++) {
        const surge_data_item *it = &d->items[i];
        const unsigned char *data = src;
        src += it->count * sizeof(float);
        uint64_t step = (uint64_t)it->step;
        if (surge_u64map_get(&s->assembled, step) != NULL) {
            /* Not lost: the step is in the store already. The rank's bye
             * count includes it, so its close succeeds after a retry. */
            c->slices.dropped[SURGE_SDROP_STEP_ASSEMBLED]++;
            s->accepted[p->rank]++;
            continue;
        }
        if (surge_u64map_get(&s->dropped, step) != NULL) {
            c->slices.dropped[SURGE_SDROP_STEP_DROPPED]++;
            continue;
        }
        struct partial *pt = surge_u64map_get(&s->partials, step);
        if (pt == NULL) {
            size_t used = 0;
            uint32_t n = step_direct(ing, s, p, d, i, data, &used);
            if (n > 0) {
                i += n - 1;
                src = data + used;
                continue;
            }
            pt = partial_new(ing, s, it->step, it->time);
            if (pt == NULL) {
                c->slices.dropped[SURGE_SDROP_ASSEMBLY_MEMORY]++;
                drop_log(ing, LC_SLICE,
                         "sim %" PRId64 " step %" PRId64
                         ": no assembly memory, slice dropped",
                         s->id, it->step);
                continue;
            }
        }
        uint64_t bit = (uint64_t)p->rank * s->nfields + it->field;
        uint64_t mask = UINT64_C(1) << (bit % 64);
        if (pt->bits[bit / 64] & mask) {
            c->slices.dropped[SURGE_SDROP_DUPLICATE]++;
            drop_log(ing, LC_SLICE,
                     "sim %" PRId64 " rank %u field '%s' step %" PRId64
                     ": duplicate slice dropped",
                     s->id, p->rank, s->names[it->field], it->step);
            continue;
        }
        memcpy(pt->out + s->base[it->field] + it->offset, data,
               (size_t)it->count * sizeof(float));
        pt->bits[bit / 64] |= mask;
        pt->received++;
        c->slices.accepted++;
        c->slices.bytes += it->count * sizeof(float);
        s->accepted[p->rank]++;
        if (s->njoined == s->nranks && pt->received == s->expected) {
            partial_complete(ing, pt);
        }
    }
    return 0;
}

/* ------------------------------------------------------------ bye */

static int
handle_bye(surge_ingest *ing, const void *rid, size_t rid_len, uint64_t h,
           const surge_msg_bye *b, surge_msg *reply)
{
    surge_counters *c = &ing->c;
    struct peer *p = peer_find(ing, rid, rid_len, h);
    if (p == NULL) {
        c->messages.dropped[SURGE_MDROP_UNKNOWN_SESSION]++;
        drop_log(ing, LC_MSG,
                 "bye for sim %" PRId64 " rank %u from a peer without a "
                 "session",
                 b->sim, b->rank);
        set_reject(reply, SURGE_ESTATE, "send hello first");
        return 1;
    }
    struct sim *s = p->sim;
    if (b->sim != s->id || b->rank != p->rank) {
        c->messages.dropped[SURGE_MDROP_SESSION_MISMATCH]++;
        set_reject(reply, SURGE_ESTATE,
                   "bye for sim %" PRId64 " rank %u on the session of sim "
                   "%" PRId64 " rank %u",
                   b->sim, b->rank, s->id, p->rank);
        return 1;
    }
    c->messages.handled++;
    c->sims.bye++;
    c->slices.sent_by_clients += b->slices;
    s->last_activity_ns = ing->now_ns;
    uint32_t rank = p->rank;
    memset(reply, 0, sizeof *reply);
    reply->type = SURGE_MSG_BYE_ACK;
    reply->u.bye_ack.sim = s->id;
    reply->u.bye_ack.rank = rank;
    reply->u.bye_ack.slices = s->accepted[rank];
    if (b->slices != s->accepted[rank]) {
        drop_log(ing, LC_SESSION,
                 "sim %" PRId64 " rank %u says it sent %" PRIu64
                 " slices, %" PRIu64 " were accepted",
                 s->id, rank, b->slices, s->accepted[rank]);
    }
    peer_remove(ing, p);
    if (!s->said_bye[rank]) {
        s->said_bye[rank] = 1;
        s->nbye++;
    }
    if (s->nbye == s->nranks) {
        s->state = SIM_FINISHED;
        c->sims.finished++;
        sim_drop_partials(ing, s, SURGE_TDROP_SIM_FINISHED);
        sim_release_ranks(ing, s);
        SURGE_LOG(SURGE_LOG_INFO, COMPONENT, "sim %" PRId64 ": finished",
                  s->id);
    }
    return 1;
}

/* ------------------------------------------------------------ control */

static void
sim_fail(surge_ingest *ing, struct sim *s, enum sim_state state,
         enum surge_step_drop why)
{
    s->state = state;
    joining_leave(ing, s);
    sim_drop_partials(ing, s, why);
    sim_end_sessions(ing, s);
    sim_release_ranks(ing, s);
}

/* Fail the sims still waiting for ranks: all of them (limit_ns 0, at the
 * end of reception: no run will bring the missing ranks any more), or those
 * waiting longer than limit_ns since their first hello. Their partial steps
 * are dropped as "sim_not_joined". */
static void
settle_not_joined(surge_ingest *ing, uint64_t limit_ns)
{
    for (size_t i = 0; i < ing->nsims && ing->njoining > 0; i++) {
        struct sim *s = ing->sim_list[i];
        if (!s->joining ||
            (limit_ns > 0 && ing->now_ns - s->declared_ns < limit_ns)) {
            continue;
        }
        drop_log(ing, LC_SESSION,
                 "sim %" PRId64 ": %u of %u ranks joined %s; failing it", s->id,
                 s->njoined, s->nranks,
                 limit_ns > 0 ? "within --join-timeout"
                              : "by the end of reception");
        sim_fail(ing, s, SIM_NOT_JOINED, SURGE_TDROP_SIM_NOT_JOINED);
        ing->c.sims.not_joined++;
    }
}

/* counted: 1 for a received message (its counts), 0 for one relayed. */
static int apply_control(surge_ingest *ing, const surge_msg_control *m,
                         surge_msg *reply, int counted);

static int
handle_control(surge_ingest *ing, const surge_msg_control *m, surge_msg *reply)
{
    surge_counters *c = &ing->c;
    if (!token_ok(ing, m->token)) {
        c->messages.dropped[SURGE_MDROP_CONTROL_REJECTED]++;
        drop_log(ing, LC_SESSION, "control request with a wrong token");
        set_control_reply(reply, SURGE_ETOKEN, "wrong study token");
        return 1;
    }
    if (ing->rank > 0 && m->op != SURGE_CTL_PING) {
        /* Rank 0 relays control to every rank; one given here would
         * reach this rank alone and split the server's view. */
        c->messages.dropped[SURGE_MDROP_CONTROL_REJECTED]++;
        set_control_reply(reply, SURGE_EPROTO,
                          "this is server rank %u of %u: control goes to "
                          "rank 0 (server.json's endpoint)",
                          ing->rank, ing->nranks);
        return 1;
    }
    int rc = apply_control(ing, m, reply, 1);
    if (reply->u.control_reply.code == 0 && ing->control_cb != NULL &&
        m->op != SURGE_CTL_PING) {
        ing->control_cb(ing->control_arg, m->op, m->sim);
    }
    return rc;
}

int
surge_ingest_relayed_control(surge_ingest *ing, int op, int64_t sim,
                             uint64_t now_ns)
{
    surge_msg_control m;
    memset(&m, 0, sizeof m);
    m.op = (uint8_t)op;
    m.sim = sim;
    ing->now_ns = now_ns;
    if (op == SURGE_CTL_PING || op < 0 || op > 255) {
        return SURGE_EPROTO;
    }
    surge_msg *reply = &ing->msg; /* scratch: nobody to answer */
    apply_control(ing, &m, reply, 0);
    return reply->type == SURGE_MSG_CONTROL_REPLY ? reply->u.control_reply.code
                                                  : SURGE_EPROTO;
}

void
surge_ingest_set_totals(surge_ingest *ing, const surge_counters *totals,
                        const uint64_t *active_sims)
{
    ing->totals = totals;
    ing->totals_active = active_sims;
}

void
surge_ingest_set_ranks(surge_ingest *ing, uint32_t rank, uint32_t nranks,
                       int route, const surge_msg_welcome *servers,
                       void (*control_cb)(void *, int, int64_t), void *arg)
{
    ing->rank = rank;
    ing->nranks = nranks;
    ing->route = route;
    ing->wl = nranks > 1 ? (surge_msg_welcome *)servers : NULL;
    ing->control_cb = control_cb;
    ing->control_arg = arg;
}

/* A control operation (token checked by the caller; a relayed one from
 * rank 0 needs none): the switch both paths share. */
static int
apply_control(surge_ingest *ing, const surge_msg_control *m, surge_msg *reply,
              int counted)
{
    surge_counters *c = &ing->c;
    struct sim *s = NULL;
    switch (m->op) {
    case SURGE_CTL_PING: {
        /* Rank 0 of several answers for the whole server (the sums). */
        const surge_counters *t = ing->totals != NULL ? ing->totals : c;
        set_control_reply(
            reply, 0,
            "pong messages=%" PRIu64 " slices=%" PRIu64 " assembled=%" PRIu64
            " train=%" PRIu64 " validation=%" PRIu64 " partial=%" PRIu64
            " active_sims=%" PRIu64,
            t->messages.received, t->slices.accepted, t->steps.assembled,
            t->samples.train, t->samples.validation, t->steps.in_progress,
            ing->totals_active != NULL ? *ing->totals_active
                                       : surge_ingest_active_sims(ing));
        break;
    }
    case SURGE_CTL_SIM_FAILED:
    case SURGE_CTL_SIM_RETRY:
        if (m->sim < 0) {
            c->messages.dropped[SURGE_MDROP_CONTROL_REJECTED] += counted;
            set_control_reply(reply, SURGE_EPROTO, "simulation id missing");
            return 1;
        }
        s = surge_u64map_get(&ing->sims, (uint64_t)m->sim);
        if (m->op == SURGE_CTL_SIM_FAILED) {
            if (s != NULL && s->state == SIM_OPEN) {
                sim_fail(ing, s, SIM_FAILED, SURGE_TDROP_SIM_FAILED);
                c->sims.failed++;
            }
            SURGE_LOG(SURGE_LOG_INFO, COMPONENT,
                      "sim %" PRId64 ": failed (launcher)", m->sim);
            set_control_reply(reply, 0, "sim %" PRId64 " marked failed",
                              m->sim);
        } else {
            if (s != NULL) {
                if (s->state == SIM_OPEN) {
                    sim_drop_partials(ing, s, SURGE_TDROP_SIM_RETRY);
                    sim_end_sessions(ing, s);
                }
                joining_leave(ing, s);
                sim_undeclare(s);
                dropped_forget(ing, s);
                s->ndropped = 0;
                s->state = SIM_OPEN;
                s->attempt++;
                s->last_activity_ns = ing->now_ns;
                c->sims.retried++;
            }
            SURGE_LOG(SURGE_LOG_INFO, COMPONENT,
                      "sim %" PRId64 ": retry allowed", m->sim);
            set_control_reply(reply, 0, "sim %" PRId64 " may say hello again",
                              m->sim);
        }
        break;
    case SURGE_CTL_END_RECEPTION:
        ing->end_requested = 1;
        SURGE_LOG(SURGE_LOG_INFO, COMPONENT, "end of reception requested");
        settle_not_joined(ing, 0);
        set_control_reply(reply, 0, "end of reception");
        break;
    case SURGE_CTL_SHUTDOWN:
        ing->shutdown_requested = 1;
        SURGE_LOG(SURGE_LOG_INFO, COMPONENT, "shutdown requested");
        set_control_reply(reply, 0, "shutting down");
        break;
    default:
        c->messages.dropped[SURGE_MDROP_CONTROL_REJECTED] += counted;
        set_control_reply(reply, SURGE_EPROTO, "unknown control op %u", m->op);
        return 1;
    }
    c->messages.handled += counted;
    c->io.control_ok += counted;
    return 1;
}

/* ------------------------------------------------------------ entry */

int
surge_ingest_handle_msg(surge_ingest *ing, const void *rid, size_t rid_len,
                        const surge_msg *m, const void *payload,
                        size_t payload_len, unsigned nframes, uint64_t now,
                        surge_msg *reply)
{
    surge_counters *c = &ing->c;
    ing->now_ns = now;
    if (rid_len > MAX_RID) {
        rid_len = MAX_RID; /* ZeroMQ caps routing ids at 255 bytes */
    }
    uint64_t h = rid_hash(rid, rid_len);
    if (m->type != SURGE_MSG_DATA && nframes != 0) {
        c->messages.dropped[SURGE_MDROP_BAD_FRAMES]++;
        drop_log(ing, LC_MSG, "%s message with %u payload frames dropped",
                 surge_proto_type_name(m->type), nframes);
        return 0;
    }
    switch (m->type) {
    case SURGE_MSG_HELLO:
        c->messages.hello++;
        return handle_hello(ing, rid, rid_len, h, &m->u.hello, reply);
    case SURGE_MSG_DATA:
        c->messages.data++;
        return handle_data(ing, rid, rid_len, h, &m->u.data, payload,
                           payload_len, nframes, reply);
    case SURGE_MSG_BYE:
        c->messages.bye++;
        return handle_bye(ing, rid, rid_len, h, &m->u.bye, reply);
    case SURGE_MSG_CONTROL:
        c->messages.control++;
        return handle_control(ing, &m->u.control, reply);
    default:
        c->messages.dropped[SURGE_MDROP_UNEXPECTED_TYPE]++;
        drop_log(ing, LC_MSG, "unexpected '%s' message from a peer dropped",
                 surge_proto_type_name(m->type));
        return 0;
    }
}

int
surge_ingest_has_session(const surge_ingest *ing, const void *rid,
                         size_t rid_len)
{
    if (rid_len > MAX_RID) {
        rid_len = MAX_RID;
    }
    /* peer_find does not modify the table. */
    return peer_find((surge_ingest *)ing, rid, rid_len,
                     rid_hash(rid, rid_len)) != NULL;
}

int
surge_ingest_refuse_presession(surge_ingest *ing, const void *rid,
                               size_t rid_len, uint64_t total_bytes,
                               uint64_t now, surge_msg *reply)
{
    surge_counters *c = &ing->c;
    ing->now_ns = now;
    c->messages.received++;
    c->messages.bytes += total_bytes;
    c->messages.dropped[SURGE_MDROP_PRESESSION_TOO_LARGE]++;
    uint64_t h = rid_hash(rid, rid_len > MAX_RID ? MAX_RID : rid_len);
    if (surge_u64map_get(&ing->told, h) != NULL) {
        drop_log(ing, LC_MSG,
                 "a peer without a session sent %" PRIu64
                 " bytes again (--max-presession-bytes %" PRIu64
                 "): cutting its connection",
                 total_bytes, ing->o->max_presession_bytes);
        return 2;
    }
    drop_log(ing, LC_MSG,
             "a peer without a session sent a message of %" PRIu64
             " bytes (--max-presession-bytes %" PRIu64 "): dropped unread",
             total_bytes, ing->o->max_presession_bytes);
    if (ing->told.len >= REJECTED_CAP) {
        surge_u64map_fini(&ing->told);
    }
    (void)surge_u64map_put(&ing->told, h, (void *)1);
    set_reject(reply, SURGE_ESTATE,
               "send hello first (a peer without a session may send at "
               "most %" PRIu64 " bytes per message)",
               ing->o->max_presession_bytes);
    return 1;
}

int
surge_ingest_handle_raw(surge_ingest *ing, const void *rid, size_t rid_len,
                        const void *hdr, size_t hdr_len, const void *payload,
                        size_t payload_len, unsigned nframes,
                        uint64_t total_bytes, uint64_t now, surge_msg *reply)
{
    surge_counters *c = &ing->c;
    ing->now_ns = now;
    c->messages.received++;
    c->messages.bytes += total_bytes;
    if (hdr == NULL) {
        c->messages.dropped[SURGE_MDROP_BAD_FRAMES]++;
        drop_log(ing, LC_MSG, "message without a header frame dropped");
        return 0;
    }
    if (hdr_len > SURGE_MAX_HEADER_BYTES) {
        c->messages.dropped[SURGE_MDROP_HEADER_TOO_LARGE]++;
        drop_log(ing, LC_MSG, "header of %zu bytes (limit %d) dropped", hdr_len,
                 SURGE_MAX_HEADER_BYTES);
        return 0;
    }
    /* The decoded struct is large (a hello holds 64 fields): one per
     * ingest object, off the stack and out of the hot path's allocator. */
    surge_msg *m = &ing->msg;
    const char *why = NULL;
    int rc = surge_proto_decode(hdr, hdr_len, m, &why);
    if (rc == SURGE_EVERSION) {
        c->messages.dropped[SURGE_MDROP_BAD_VERSION]++;
        drop_log(ing, LC_MSG, "message of another protocol version dropped");
        uint64_t h = rid_hash(rid, rid_len > MAX_RID ? MAX_RID : rid_len);
        if (surge_u64map_get(&ing->told, h) == NULL) {
            if (ing->told.len >= REJECTED_CAP) {
                surge_u64map_fini(&ing->told);
            }
            (void)surge_u64map_put(&ing->told, h, (void *)1);
            set_reject(reply, SURGE_EVERSION,
                       "this server speaks surge protocol version %d",
                       SURGE_PROTOCOL_VERSION);
            return 1;
        }
        return 0;
    }
    if (rc < 0 && m->type == SURGE_MSG_HELLO) {
        /* The client waits for an answer to its hello: tell it which rule
         * it broke rather than let it time out (docs/protocol.md). One
         * reply per hello received, never more. */
        c->messages.hello++;
        c->sims.rejected++;
        c->messages.dropped[SURGE_MDROP_HELLO_REJECTED]++;
        set_reject(reply, rc, "malformed hello: %s",
                   why != NULL ? why : surge_strerror(rc));
        drop_log(ing, LC_SESSION, "hello rejected: %s", reply->u.reject.reason);
        return 1;
    }
    if (rc < 0) {
        c->messages.dropped[SURGE_MDROP_BAD_HEADER]++;
        drop_log(ing, LC_MSG, "malformed header dropped: %s",
                 why != NULL ? why : surge_strerror(rc));
        return 0;
    }
    return surge_ingest_handle_msg(ing, rid, rid_len, m, payload, payload_len,
                                   nframes, now, reply);
}

/* ------------------------------------------------------------ lifetime */

int
surge_ingest_create(surge_ingest **out, const surge_server_options *o,
                    surge_store *train, surge_store *validation,
                    FILE *checksum_log)
{
    surge_ingest *ing = surge_calloc(1, sizeof *ing);
    if (ing == NULL) {
        return -ENOMEM;
    }
    ing->o = o;
    ing->nranks = 1;
    /* Validation sampling draws: seeded from the study's seed, so a rerun
     * keeps the same runs. */
    surge_rng_seed(&ing->vrng, o->reservoir.seed ^ UINT64_C(0x76616c6964));
    ing->train = train;
    ing->validation = validation;
    ing->checksum_log = checksum_log;
    surge_u64map_init(&ing->peers);
    surge_u64map_init(&ing->sims);
    surge_u64map_init(&ing->told);
    for (size_t i = 0; i < sizeof ing->rl / sizeof ing->rl[0]; i++) {
        surge_ratelimit_init(&ing->rl[i], LOG_BURST, LOG_PERIOD_NS);
    }
    *out = ing;
    return 0;
}

void
surge_ingest_stop(surge_ingest *ing)
{
    for (size_t i = 0; i < ing->nsims; i++) {
        sim_drop_partials(ing, ing->sim_list[i], SURGE_TDROP_SERVER_STOP);
    }
    while (ing->pending_head != NULL) {
        struct partial *p = ing->pending_head;
        ing->pending_head = p->next_free;
        ing->c.samples.pending--;
        ing->c.samples.dropped[SURGE_PDROP_SERVER_STOP]++;
        block_release(ing, p);
    }
    ing->pending_tail = NULL;
}

void
surge_ingest_destroy(surge_ingest **ingp)
{
    if (ingp == NULL || *ingp == NULL) {
        return;
    }
    surge_ingest *ing = *ingp;
    /* Free partial blocks: in use, pending and pooled. */
    for (struct partial *p = ing->oldest; p != NULL;) {
        struct partial *n = p->newer;
        free(p);
        p = n;
    }
    for (struct partial *p = ing->pending_head; p != NULL;) {
        struct partial *n = p->next_free;
        free(p);
        p = n;
    }
    for (struct partial *p = ing->pool; p != NULL;) {
        struct partial *n = p->next_free;
        free(p);
        p = n;
    }
    for (size_t i = 0; i < ing->peers.cap; i++) {
        struct peer *p = ing->peers.vals[i];
        while (p != NULL) {
            struct peer *n = p->next;
            free(p);
            p = n;
        }
    }
    for (size_t i = 0; i < ing->nsims; i++) {
        sim_free(ing->sim_list[i]);
    }
    free(ing->sim_list);
    surge_u64map_fini(&ing->peers);
    surge_u64map_fini(&ing->sims);
    surge_u64map_fini(&ing->told);
    free(ing->fields_json);
    free(ing->vkept);
    free(ing);
    *ingp = NULL;
}

void
surge_ingest_tick(surge_ingest *ing, uint64_t now)
{
    ing->now_ns = now;
    if (ing->end_requested) {
        settle_not_joined(ing, 0);
    } else if (ing->o->join_timeout_s > 0) {
        settle_not_joined(ing, (uint64_t)(ing->o->join_timeout_s * 1e9));
    }
    if (ing->o->sim_timeout_s <= 0) {
        return;
    }
    uint64_t limit = (uint64_t)(ing->o->sim_timeout_s * 1e9);
    for (size_t i = 0; i < ing->nsims; i++) {
        struct sim *s = ing->sim_list[i];
        if (s->state != SIM_OPEN || !s->declared ||
            now - s->last_activity_ns < limit) {
            continue;
        }
        SURGE_LOG(SURGE_LOG_WARN, COMPONENT,
                  "sim %" PRId64 ": nothing received for %.1f s, failing it",
                  s->id, ing->o->sim_timeout_s);
        sim_fail(ing, s, SIM_TIMED_OUT, SURGE_TDROP_SIM_TIMEOUT);
        ing->c.sims.timed_out++;
    }
}

uint64_t
surge_ingest_active_sims(const surge_ingest *ing)
{
    uint64_t n = 0;
    for (size_t i = 0; i < ing->nsims; i++) {
        const struct sim *s = ing->sim_list[i];
        n += s->state == SIM_OPEN && s->declared;
    }
    return n;
}

int
surge_ingest_all_done(const surge_ingest *ing)
{
    return surge_ingest_active_sims(ing) == 0 && ing->pending_head == NULL;
}

int
surge_ingest_end_requested(const surge_ingest *ing)
{
    return ing->end_requested;
}

int
surge_ingest_shutdown_requested(const surge_ingest *ing)
{
    return ing->shutdown_requested;
}

surge_counters *
surge_ingest_counters(surge_ingest *ing)
{
    return &ing->c;
}

size_t
surge_ingest_block_bytes(uint64_t nout, uint64_t nslices)
{
    return block_size(nout, nslices);
}

uint64_t
surge_ingest_dropped_records(const surge_ingest *ing)
{
    return ing->dropped_records;
}

uint64_t
surge_ingest_partial_bytes(const surge_ingest *ing)
{
    return ing->partial_bytes;
}

int
surge_ingest_runs(const surge_ingest *ing, struct surge_run_info *out,
                  size_t cap, uint64_t now_ns)
{
    size_t n = 0;
    for (size_t i = 0; i < ing->nsims && n < cap; i++) {
        const struct sim *s = ing->sim_list[i];
        struct surge_run_info *r = &out[n++];
        const char *state = s->state == SIM_FINISHED     ? "done"
                            : s->state == SIM_FAILED     ? "failed"
                            : s->state == SIM_TIMED_OUT  ? "timed_out"
                            : s->state == SIM_NOT_JOINED ? "not_joined"
                            : s->attempt > 0             ? "retrying"
                                                         : "running";
        memset(r, 0, sizeof *r);
        r->sim = s->id;
        snprintf(r->state, sizeof r->state, "%s", state);
        r->ranks = (int)s->nranks;
        r->ranks_joined = (int)s->njoined;
        r->ranks_done = (int)s->nbye;
        r->steps = s->assembled.len;
        r->steps_expected = s->steps_expected;
        r->elapsed_s = s->first_hello_ns > 0 && now_ns >= s->first_hello_ns
                           ? (double)(now_ns - s->first_hello_ns) * 1e-9
                           : -1.0;
        r->dropped = s->ndropped;
        r->last_seen_s = now_ns >= s->last_activity_ns
                             ? (double)(now_ns - s->last_activity_ns) * 1e-9
                             : 0.0;
    }
    return (int)n;
}

/* ------------------------------------------------------------ resume */

int
surge_ingest_preload_assembled(surge_ingest *ing, int64_t sim, int64_t step)
{
    if (sim < 0 || step < 0) {
        return -EINVAL;
    }
    struct sim *s = sim_get_or_create(ing, sim);
    if (s == NULL) {
        return -ENOMEM;
    }
    /* Not silent since boot: the rerun's clock starts now. */
    if (s->last_activity_ns == 0) {
        s->last_activity_ns = surge_now_ns();
    }
    return surge_u64map_put(&s->assembled, (uint64_t)step, (void *)1);
}

static int
step_is_pending(const surge_ingest *ing, const struct sim *s, uint64_t step)
{
    for (const struct partial *p = ing->pending_head; p != NULL;
         p = p->next_free) {
        if (p->sim == s && (uint64_t)p->step == step) {
            return 1;
        }
    }
    return 0;
}

int
surge_ingest_export_assembled(const surge_ingest *ing,
                              int (*cb)(void *arg, int64_t sim, int64_t step),
                              void *arg)
{
    for (size_t i = 0; i < ing->nsims; i++) {
        const struct sim *s = ing->sim_list[i];
        for (size_t k = 0; k < s->assembled.cap; k++) {
            if (s->assembled.vals[k] == NULL) {
                continue;
            }
            uint64_t step = s->assembled.keys[k];
            if (step_is_pending(ing, s, step)) {
                continue;
            }
            int rc = cb(arg, s->id, (int64_t)step);
            if (rc < 0) {
                return rc;
            }
        }
    }
    return 0;
}

int
surge_ingest_export_finished(const surge_ingest *ing,
                             int (*cb)(void *arg, int64_t sim), void *arg)
{
    for (size_t i = 0; i < ing->nsims; i++) {
        const struct sim *s = ing->sim_list[i];
        if (s->state != SIM_FINISHED) {
            continue;
        }
        int pending = 0;
        for (const struct partial *p = ing->pending_head; p != NULL && !pending;
             p = p->next_free) {
            pending = p->sim == s;
        }
        if (pending) {
            continue;
        }
        int rc = cb(arg, s->id);
        if (rc < 0) {
            return rc;
        }
    }
    return 0;
}
