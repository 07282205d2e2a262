/*
 * tests/unit/server/server_test.h - helpers shared by the server's unit
 * tests: build hello/data/bye/control messages as decoded structs and feed
 * them to an ingest object, as the I/O thread would.
 */
#ifndef SURGE_TESTS_SERVER_TEST_H
#define SURGE_TESTS_SERVER_TEST_H

#include <stdio.h>
#include <string.h>

#include "common/auth.h"
#include "common/protocol.h"
#include "server/ingest.h"
#include "server/options.h"
#include "server/store.h"

/* A peer is named by a short routing id. */
#define RID(s) (s), strlen(s)

/* One field of a hello: name, global size, offset, count. */
struct tfield {
    const char *name;
    uint64_t global, offset, count;
};

static surge_msg tmsg;   /* message being built */
static surge_msg treply; /* reply of the last call */

static inline void
make_hello(surge_msg *m, const char *token, int64_t sim, uint32_t rank,
           uint32_t nranks, const double *params, uint32_t nparams,
           const struct tfield *f, uint32_t nfields)
{
    memset(m, 0, sizeof *m);
    m->type = SURGE_MSG_HELLO;
    surge_msg_hello *h = &m->u.hello;
    /* As libsurge does: the token stays here, its run key goes out. */
    if (token[0] == '\0' || surge_run_key(token, sim, h->run_key) != 0) {
        h->run_key[0] = '\0';
    }
    h->sim = sim;
    h->rank = rank;
    h->nranks = nranks;
    h->nparams = nparams;
    for (uint32_t i = 0; i < nparams; i++) {
        h->params[i] = params[i];
    }
    h->nfields = nfields;
    for (uint32_t i = 0; i < nfields; i++) {
        snprintf(h->fields[i].name, sizeof h->fields[i].name, "%s", f[i].name);
        h->fields[i].global_size = f[i].global;
        h->fields[i].offset = f[i].offset;
        h->fields[i].count = f[i].count;
    }
    h->dtype = SURGE_WIRE_F32;
}

/* hello and return the reply type (SURGE_MSG_WELCOME or _REJECT). */
static inline int
say_hello(surge_ingest *ing, const char *rid, const char *token, int64_t sim,
          uint32_t rank, uint32_t nranks, const double *params,
          uint32_t nparams, const struct tfield *f, uint32_t nfields)
{
    make_hello(&tmsg, token, sim, rank, nranks, params, nparams, f, nfields);
    surge_ingest_counters(ing)->messages.received++;
    memset(&treply, 0, sizeof treply);
    int r = surge_ingest_handle_msg(ing, RID(rid), &tmsg, NULL, 0, 0, 1000,
                                    &treply);
    return r == 1 ? (int)treply.type : 0;
}

/* One data message with one item; payload of count floats. Returns 1 when
 * the server replied. */
static inline int
send_slice_ex(surge_ingest *ing, const char *rid, int64_t sim, uint32_t rank,
              int64_t step, double t, uint32_t field, uint64_t offset,
              uint64_t count, const float *payload, size_t payload_bytes,
              uint64_t now)
{
    memset(&tmsg, 0, sizeof tmsg);
    tmsg.type = SURGE_MSG_DATA;
    surge_msg_data *d = &tmsg.u.data;
    d->sim = sim;
    d->rank = rank;
    d->dtype = SURGE_WIRE_F32;
    d->nitems = 1;
    d->items[0].step = step;
    d->items[0].time = t;
    d->items[0].field = field;
    d->items[0].offset = offset;
    d->items[0].count = count;
    surge_ingest_counters(ing)->messages.received++;
    memset(&treply, 0, sizeof treply);
    return surge_ingest_handle_msg(ing, RID(rid), &tmsg, payload, payload_bytes,
                                   1, now, &treply);
}

static inline int
send_slice(surge_ingest *ing, const char *rid, int64_t sim, uint32_t rank,
           int64_t step, double t, uint32_t field, uint64_t offset,
           uint64_t count, const float *payload)
{
    return send_slice_ex(ing, rid, sim, rank, step, t, field, offset, count,
                         payload, count * sizeof(float), 1000);
}

static inline int
say_bye(surge_ingest *ing, const char *rid, int64_t sim, uint32_t rank,
        uint64_t slices)
{
    memset(&tmsg, 0, sizeof tmsg);
    tmsg.type = SURGE_MSG_BYE;
    tmsg.u.bye.sim = sim;
    tmsg.u.bye.rank = rank;
    tmsg.u.bye.slices = slices;
    surge_ingest_counters(ing)->messages.received++;
    memset(&treply, 0, sizeof treply);
    int r = surge_ingest_handle_msg(ing, RID(rid), &tmsg, NULL, 0, 0, 1000,
                                    &treply);
    return r == 1 ? (int)treply.type : 0;
}

static inline int
control(surge_ingest *ing, const char *token, int op, int64_t sim)
{
    memset(&tmsg, 0, sizeof tmsg);
    tmsg.type = SURGE_MSG_CONTROL;
    snprintf(tmsg.u.control.token, sizeof tmsg.u.control.token, "%s", token);
    tmsg.u.control.op = (uint8_t)op;
    tmsg.u.control.sim = sim;
    surge_ingest_counters(ing)->messages.received++;
    memset(&treply, 0, sizeof treply);
    int r = surge_ingest_handle_msg(ing, RID("launcher"), &tmsg, NULL, 0, 0,
                                    1000, &treply);
    return r == 1 ? treply.u.control_reply.code : 1;
}

/* The counters' identities must hold after every test. */
static inline int
counts_add_up(surge_ingest *ing)
{
    const char *what = NULL;
    int rc = surge_counters_check(surge_ingest_counters(ing), &what);
    if (rc != 0) {
        fprintf(stderr, "counts do not add up: %s\n", what);
    }
    return rc == 0;
}

#endif /* SURGE_TESTS_SERVER_TEST_H */
