/*
 * tests/fuzz/fuzz_ingest.c - libFuzzer harness for the server's session and
 * assembly logic (server/ingest.c) without sockets: the input is a script
 * of messages from up to six peers, handed to surge_ingest_handle_raw()
 * exactly as the I/O thread hands over what it received.
 *
 * Script: a sequence of records, each an opcode byte and its arguments.
 *   RAW     a length byte and that many bytes: any header frame
 *   HELLO   sim, rank, nranks, fields, sizes: a hello, encoded
 *   DATA    sim, rank, items (step, field, slice): a data message with
 *           its payload, encoded
 *   BYE     sim, rank, slices
 *   CONTROL op, sim (the launcher: PING, SIM_FAILED, SIM_RETRY, ...)
 *   TICK    advance the clock (timeouts)
 * Structured messages go through surge_proto_encode() so that the ingest
 * side sees only what the decoder lets through, with small ids and sizes
 * so that sims complete, collide and overflow. The stores are tiny, so
 * backpressure (pending samples, flush) is exercised too.
 *
 * After the script, surge_ingest_stop() and the counters' identities must
 * hold (sent = assembled + dropped with a reason): a broken identity
 * aborts, which libFuzzer reports as a crash.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <surge/error.h>

#include "common/auth.h"
#include "common/log.h"
#include "common/protocol.h"
#include "server/counters.h"
#include "server/ingest.h"
#include "server/options.h"
#include "server/store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define TOKEN "study-token" /* as in the fuzz_protocol seeds */

struct script {
    const uint8_t *p; /* next byte */
    size_t left;      /* bytes left */
};

/* The next byte, 0 once the script is exhausted. */
static uint8_t
next(struct script *s)
{
    if (s->left == 0) {
        return 0;
    }
    s->left--;
    return *s->p++;
}

static surge_msg msg;                             /* being built */
static surge_msg reply;                           /* the answer */
static unsigned char hdr[SURGE_MAX_HEADER_BYTES]; /* encoded header */
static float payload[4096];                       /* data payload */

/* The slice a rank of nranks owns of a field of n elements, or (when the
 * script says so) any small slice: overlaps and gaps must be refused. */
static void
slice(struct script *s, uint32_t rank, uint32_t nranks, uint64_t n,
      uint64_t *offset, uint64_t *count)
{
    uint8_t how = next(s);
    if ((how & 7) == 7) {
        *offset = (how >> 3) % n;
        *count = 1 + next(s) % (n - *offset);
        return;
    }
    uint64_t lo = n * rank / nranks;
    uint64_t hi = n * (rank + 1) / nranks;
    *offset = lo;
    *count = hi - lo;
}

static int
handle(surge_ingest *ing, const char *rid, const void *h, size_t hlen,
       const void *pl, size_t plen, unsigned frames, uint64_t now)
{
    memset(&reply, 0, sizeof reply);
    return surge_ingest_handle_raw(ing, rid, strlen(rid), h, hlen, pl, plen,
                                   frames, hlen + plen, now, &reply);
}

static void
send_encoded(surge_ingest *ing, const char *rid, const void *pl, size_t plen,
             unsigned frames, uint64_t now)
{
    int n = surge_proto_encode(&msg, hdr, sizeof hdr);
    if (n > 0) {
        (void)handle(ing, rid, hdr, (size_t)n, pl, plen, frames, now);
    }
}

static void
op_hello(struct script *s, surge_ingest *ing, const char *rid, uint64_t now)
{
    memset(&msg, 0, sizeof msg);
    msg.type = SURGE_MSG_HELLO;
    surge_msg_hello *h = &msg.u.hello;
    uint8_t b = next(s);
    snprintf(h->token, sizeof h->token, "%s", (b & 0x80) ? "wrong" : TOKEN);
    h->sim = b % 5;
    if ((b & 0x80) == 0) {
        /* The run key the launcher hands this sim (docs/protocol.md,
         * "Trust"), so hellos get past the key check; bit 6 gives the key
         * of the next sim, another run's, which must be refused. */
        (void)surge_run_key(TOKEN, (b & 0x40) ? h->sim + 1 : h->sim,
                            h->run_key);
    }
    h->nranks = 1 + next(s) % 3;
    h->rank = next(s) % (h->nranks + 1); /* sometimes out of range */
    if (h->rank >= h->nranks) {
        h->rank = h->nranks - 1;
    }
    h->nparams = next(s) % 3;
    for (uint32_t i = 0; i < h->nparams; i++) {
        h->params[i] = (double)(int8_t)next(s) / 8.0;
    }
    h->nfields = 1 + next(s) % 2;
    for (uint32_t i = 0; i < h->nfields; i++) {
        surge_field_desc *f = &h->fields[i];
        snprintf(f->name, sizeof f->name, "f%u", (unsigned)(next(s) % 3));
        f->global_size = 1 + next(s) % 16;
        slice(s, h->rank, h->nranks, f->global_size, &f->offset, &f->count);
    }
    h->dtype = SURGE_WIRE_F32;
    send_encoded(ing, rid, NULL, 0, 0, now);
}

static void
op_data(struct script *s, surge_ingest *ing, const char *rid, uint64_t now)
{
    memset(&msg, 0, sizeof msg);
    msg.type = SURGE_MSG_DATA;
    surge_msg_data *d = &msg.u.data;
    d->sim = next(s) % 5;
    d->rank = next(s) % 3;
    d->dtype = SURGE_WIRE_F32;
    d->nitems = 1 + next(s) % 3;
    uint64_t elems = 0;
    for (uint32_t i = 0; i < d->nitems; i++) {
        surge_data_item *it = &d->items[i];
        uint8_t b = next(s);
        it->step = b % 6;
        it->time = (double)it->step * 0.5;
        it->field = next(s) % 2;
        uint64_t n = 1 + next(s) % 16;
        slice(s, d->rank, 1 + next(s) % 3, n, &it->offset, &it->count);
        elems += it->count;
    }
    size_t plen = (size_t)elems * sizeof(float);
    uint8_t mode = next(s);
    if ((mode & 15) == 15 && plen >= sizeof(float)) {
        plen -= sizeof(float); /* a payload that does not match */
    }
    for (size_t i = 0; i < elems && i < sizeof payload / sizeof payload[0];
         i++) {
        payload[i] = (float)(int8_t)next(s);
    }
    send_encoded(ing, rid, payload, plen, (mode & 16) ? 2 : 1, now);
}

static void
op_bye(struct script *s, surge_ingest *ing, const char *rid, uint64_t now)
{
    memset(&msg, 0, sizeof msg);
    msg.type = SURGE_MSG_BYE;
    msg.u.bye.sim = next(s) % 5;
    msg.u.bye.rank = next(s) % 3;
    msg.u.bye.slices = next(s);
    send_encoded(ing, rid, NULL, 0, 0, now);
}

static void
op_control(struct script *s, surge_ingest *ing, uint64_t now)
{
    memset(&msg, 0, sizeof msg);
    msg.type = SURGE_MSG_CONTROL;
    uint8_t b = next(s);
    snprintf(msg.u.control.token, sizeof msg.u.control.token, "%s",
             (b & 0x80) ? "wrong" : TOKEN);
    msg.u.control.op = (uint8_t)(SURGE_CTL_PING + b % 5);
    msg.u.control.sim = msg.u.control.op == SURGE_CTL_SIM_FAILED ||
                                msg.u.control.op == SURGE_CTL_SIM_RETRY
                            ? next(s) % 5
                            : -1;
    send_encoded(ing, "launcher", NULL, 0, 0, now);
}

static void
quiet(int level, const char *component, const char *message, void *arg)
{
    (void)level;
    (void)component;
    (void)message;
    (void)arg;
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* Refusals are logged; the fuzzer's output is for findings. */
    surge_log_set_level(SURGE_LOG_ERROR);
    surge_log_set_handler(quiet, NULL);
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static surge_server_options o;
    surge_server_options_init(&o);
    snprintf(o.token, sizeof o.token, "%s", TOKEN);
    o.store_bytes = 4096; /* a few samples: backpressure is reached */
    o.validation_bytes = 4096;
    o.validation_every = 3;
    o.max_partial_bytes = 16384; /* a few partial steps: eviction */
    o.sim_timeout_s = 5;
    o.log_level = SURGE_LOG_ERROR;
    surge_reservoir_config rcfg;
    if (surge_server_reservoir_config(&o, &rcfg) != 0) {
        abort();
    }
    surge_store_config tc = {"train", SURGE_STORE_STREAM, o.store_bytes, &rcfg};
    surge_store_config vc = {"validation", SURGE_STORE_KEEP, o.validation_bytes,
                             NULL};
    surge_store *train = NULL, *validation = NULL;
    surge_ingest *ing = NULL;
    if (surge_store_create(&train, &tc) != 0 ||
        surge_store_create(&validation, &vc) != 0 ||
        surge_ingest_create(&ing, &o, train, validation, NULL) != 0) {
        abort(); /* out of memory at this size is a bug too */
    }
    struct script s = {data, size};
    uint64_t now = 1000000000ull;
    static const char *const rids[6] = {"a", "b", "c", "d", "e", "f"};
    while (s.left > 0) {
        uint8_t op = next(&s);
        const char *rid = rids[(op >> 3) % 6];
        switch (op & 7) {
        case 0: {
            size_t n = next(&s);
            n = n < s.left ? n : s.left;
            (void)handle(ing, rid, s.p, n, NULL, 0, 0, now);
            s.p += n;
            s.left -= n;
            break;
        }
        case 1:
        case 2:
            op_data(&s, ing, rid, now);
            break;
        case 3:
            op_hello(&s, ing, rid, now);
            break;
        case 4:
            op_bye(&s, ing, rid, now);
            break;
        case 5:
            op_control(&s, ing, now);
            break;
        case 6:
            now += (uint64_t)next(&s) * 100000000ull; /* up to 25.5 s */
            surge_ingest_tick(ing, now);
            break;
        default: {
            /* A consumer takes a batch, as the trainer would: used
             * samples make room for new ones. */
            uint32_t slots[4];
            (void)surge_store_take_batch(train, 1 + next(&s) % 4, slots, 0);
            break;
        }
        }
        if (surge_ingest_has_pending(ing)) {
            (void)surge_ingest_flush(ing);
        }
    }
    surge_ingest_stop(ing);
    const char *what = NULL;
    if (surge_counters_check(surge_ingest_counters(ing), &what) != 0) {
        fprintf(stderr, "fuzz_ingest: counts do not add up: %s\n", what);
        abort();
    }
    surge_ingest_destroy(&ing);
    surge_store_destroy(&validation);
    surge_store_destroy(&train);
    return 0;
}
