/*
 * tests/unit/clients/test_client_ranks.c - libsurge against a fake server
 * of several ranks (one ROUTER per rank on 127.0.0.1, served by one test
 * thread): routing by step (step % R) and by simulation (sim % R, with the
 * first rank's redirect), close confirmed by every rank, and the welcome's
 * server list checked: a malformed list, ranks that disagree, a rank that
 * lies about its index, a rank that never answers, a rank that never
 * confirms the close. docs/protocol.md, "Server ranks".
 */
#include "config.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <msgpack.h>
#include <zmq.h>

#include <surge/client.h>

#include "common/protocol.h"
#include "common/util.h"

#define MAXR 4
#define MAX_STEPS 64

enum mode {
    M_GOOD,       /* every rank welcomes with the same list */
    M_DUP_LIST,   /* rank 0's list names one endpoint twice (raw bytes) */
    M_DISAGREE,   /* rank 1 says the route is the other one */
    M_LIE_RANK,   /* rank 0 says it is rank 1 */
    M_SILENT_ONE, /* rank 1 never answers */
    M_NO_ACK_ONE  /* rank 1 never answers bye */
};

typedef struct frank {
    void *sock;
    char ep[64];
    int hellos;
    int byes;
    uint64_t bye_slices;
    uint64_t items; /* data items received */
    int steps[MAX_STEPS];
    int64_t last_sim;
} frank;

typedef struct fserver {
    void *ctx;
    int R;
    int route; /* enum surge_route */
    enum mode mode;
    frank r[MAXR];
    pthread_t th;
    atomic_int stop;
} fserver;

static fserver srv;

static void
send_raw(frank *k, zmq_msg_t *rid, const void *buf, size_t n)
{
    zmq_msg_t copy;
    zmq_msg_init(&copy);
    zmq_msg_copy(&copy, rid);
    zmq_msg_send(&copy, k->sock, ZMQ_SNDMORE);
    zmq_send(k->sock, buf, n, 0);
}

static void
reply(frank *k, zmq_msg_t *rid, const surge_msg *m)
{
    static unsigned char buf[SURGE_MAX_HEADER_BYTES];
    int n = surge_proto_encode(m, buf, sizeof buf);
    assert_true(n > 0);
    send_raw(k, rid, buf, (size_t)n);
}

/* A welcome the encoder would refuse: the list names rank 0 twice. */
static void
reply_dup_list(frank *k, zmq_msg_t *rid, const surge_msg_hello *h)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 8);
#define STR(s)                                                                 \
    msgpack_pack_str(&pk, strlen(s)), msgpack_pack_str_body(&pk, s, strlen(s))
    STR("v"), msgpack_pack_int(&pk, 1);
    STR("type"), STR("welcome");
    STR("sim"), msgpack_pack_int64(&pk, h->sim);
    STR("rank"), msgpack_pack_uint32(&pk, h->rank);
    STR("max_payload"), msgpack_pack_int(&pk, 1 << 20);
    STR("servers"), msgpack_pack_array(&pk, 2);
    STR(srv.r[0].ep), STR(srv.r[0].ep);
    STR("server_rank"), msgpack_pack_int(&pk, 0);
    STR("route"), STR("step");
#undef STR
    send_raw(k, rid, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

static void
handle(int ri, zmq_msg_t *frames, int n)
{
    static surge_msg m, r;
    frank *k = &srv.r[ri];
    if (n < 2 || surge_proto_decode(zmq_msg_data(&frames[1]),
                                    zmq_msg_size(&frames[1]), &m, NULL) != 0) {
        return;
    }
    memset(&r, 0, sizeof r);
    switch (m.type) {
    case SURGE_MSG_HELLO:
        k->hellos++;
        k->last_sim = m.u.hello.sim;
        if (srv.mode == M_SILENT_ONE && ri == 1) {
            return;
        }
        if (srv.mode == M_DUP_LIST) {
            reply_dup_list(k, &frames[0], &m.u.hello);
            return;
        }
        r.type = SURGE_MSG_WELCOME;
        r.u.welcome.sim = m.u.hello.sim;
        r.u.welcome.rank = m.u.hello.rank;
        r.u.welcome.max_payload_bytes = 1 << 20;
        for (int i = 0; i < srv.R; i++) {
            surge_proto_welcome_add_endpoint(&r.u.welcome, srv.r[i].ep);
        }
        r.u.welcome.server_rank = (uint32_t)ri;
        if (srv.mode == M_LIE_RANK && ri == 0) {
            r.u.welcome.server_rank = 1;
        }
        r.u.welcome.route = (uint8_t)srv.route;
        if (srv.mode == M_DISAGREE && ri == 1) {
            r.u.welcome.route = (uint8_t)(1 - srv.route);
        }
        if (srv.route == SURGE_ROUTE_SIM &&
            (uint64_t)m.u.hello.sim % (uint64_t)srv.R != (uint64_t)ri) {
            r.u.welcome.redirect = 1;
        }
        reply(k, &frames[0], &r);
        return;
    case SURGE_MSG_DATA:
        for (uint32_t i = 0; i < m.u.data.nitems; i++) {
            int64_t s = m.u.data.items[i].step;
            if (s >= 0 && s < MAX_STEPS) {
                k->steps[s]++;
            }
            k->items++;
        }
        return;
    case SURGE_MSG_BYE:
        k->byes++;
        k->bye_slices = m.u.bye.slices;
        if (srv.mode == M_NO_ACK_ONE && ri == 1) {
            return;
        }
        r.type = SURGE_MSG_BYE_ACK;
        r.u.bye_ack.sim = m.u.bye.sim;
        r.u.bye_ack.rank = m.u.bye.rank;
        r.u.bye_ack.slices = k->items;
        reply(k, &frames[0], &r);
        return;
    default:
        return;
    }
}

static void *
serve_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&srv.stop)) {
        zmq_pollitem_t it[MAXR];
        for (int i = 0; i < srv.R; i++) {
            it[i] = (zmq_pollitem_t){srv.r[i].sock, 0, ZMQ_POLLIN, 0};
        }
        if (zmq_poll(it, srv.R, 20) <= 0) {
            continue;
        }
        for (int i = 0; i < srv.R; i++) {
            if (!(it[i].revents & ZMQ_POLLIN)) {
                continue;
            }
            zmq_msg_t frames[4];
            int n = 0, more = 1;
            while (more) {
                zmq_msg_t tmp;
                zmq_msg_init(&tmp);
                if (zmq_msg_recv(&tmp, srv.r[i].sock, 0) < 0) {
                    zmq_msg_close(&tmp);
                    break;
                }
                more = zmq_msg_more(&tmp);
                if (n < 4) {
                    frames[n++] = tmp;
                } else {
                    zmq_msg_close(&tmp);
                }
            }
            handle(i, frames, n);
            for (int f = 0; f < n; f++) {
                zmq_msg_close(&frames[f]);
            }
        }
    }
    return NULL;
}

static void
start(int R, int route, enum mode mode)
{
    memset(&srv, 0, sizeof srv);
    srv.R = R;
    srv.route = route;
    srv.mode = mode;
    srv.ctx = zmq_ctx_new();
    assert_non_null(srv.ctx);
    int zero = 0;
    for (int i = 0; i < R; i++) {
        frank *k = &srv.r[i];
        k->sock = zmq_socket(srv.ctx, ZMQ_ROUTER);
        assert_non_null(k->sock);
        zmq_setsockopt(k->sock, ZMQ_LINGER, &zero, sizeof zero);
        assert_int_equal(zmq_bind(k->sock, "tcp://127.0.0.1:*"), 0);
        size_t len = sizeof k->ep;
        assert_int_equal(
            zmq_getsockopt(k->sock, ZMQ_LAST_ENDPOINT, k->ep, &len), 0);
    }
    assert_int_equal(pthread_create(&srv.th, NULL, serve_main, NULL), 0);
}

static void
stop(void)
{
    atomic_store(&srv.stop, 1);
    pthread_join(srv.th, NULL);
    for (int i = 0; i < srv.R; i++) {
        zmq_close(srv.r[i].sock);
    }
    zmq_ctx_term(srv.ctx);
}

static surge_field fields[2] = {
    {"u", 3000, 1000, 1000},         /* 4 KB slice: packed */
    {"big", 300000, 100000, 100000}, /* 400 KB: a message of its own */
};

static void
options(surge_client_options *o, int64_t sim)
{
    unsetenv("SURGE_TOKEN");
    unsetenv("SURGE_RUN_KEY");
    assert_int_equal(surge_client_options_init(o), 0);
    o->endpoint = srv.r[0].ep;
    o->sim_id = sim;
    o->rank = 1;
    o->nranks = 3;
    o->fields = fields;
    o->nfields = 2;
    o->timeout_ms = 1500;
}

static void
send_steps(surge_client *c, int nsteps)
{
    static float v[100000];
    for (int s = 0; s < nsteps; s++) {
        assert_int_equal(
            surge_client_send(c, "u", s, 0.1 * s, v, SURGE_FLOAT32), 0);
        assert_int_equal(
            surge_client_send(c, "big", s, 0.1 * s, v, SURGE_FLOAT32), 0);
    }
}

/* Route by step, R = 3: step s reaches rank s % 3 only, every step once
 * (both fields), and close waits for the three bye_acks. */
static void
test_route_by_step(void **state)
{
    (void)state;
    start(3, SURGE_ROUTE_STEP, M_GOOD);
    surge_client_options o;
    options(&o, 5);
    surge_client *c = NULL;
    assert_int_equal(surge_client_open(&c, &o), 0);
    send_steps(c, 10);
    assert_int_equal(surge_client_close(&c), 0);
    stop();
    for (int r = 0; r < 3; r++) {
        assert_int_equal(srv.r[r].hellos, 1);
        assert_int_equal(srv.r[r].byes, 1);
        assert_int_equal(srv.r[r].bye_slices, srv.r[r].items);
        for (int s = 0; s < 10; s++) {
            assert_int_equal(srv.r[r].steps[s], s % 3 == r ? 2 : 0);
        }
    }
    assert_int_equal(srv.r[0].items + srv.r[1].items + srv.r[2].items, 20);
}

/* Route by sim, R = 3, sim 4: rank 0 redirects (no bye owed to it), rank
 * 1 gets every step, rank 2 nothing, not even a connection's hello. */
static void
test_route_by_sim(void **state)
{
    (void)state;
    start(3, SURGE_ROUTE_SIM, M_GOOD);
    surge_client_options o;
    options(&o, 4);
    surge_client *c = NULL;
    assert_int_equal(surge_client_open(&c, &o), 0);
    send_steps(c, 6);
    assert_int_equal(surge_client_close(&c), 0);
    stop();
    assert_int_equal(srv.r[0].hellos, 1);
    assert_int_equal(srv.r[0].byes, 0);
    assert_int_equal(srv.r[0].items, 0);
    assert_int_equal(srv.r[1].hellos, 1);
    assert_int_equal(srv.r[1].byes, 1);
    assert_int_equal(srv.r[1].items, 12);
    assert_int_equal(srv.r[2].hellos, 0);
    /* sim 3 lives on rank 0: no redirect, one rank only. */
    start(3, SURGE_ROUTE_SIM, M_GOOD);
    options(&o, 3);
    assert_int_equal(surge_client_open(&c, &o), 0);
    send_steps(c, 2);
    assert_int_equal(surge_client_close(&c), 0);
    stop();
    assert_int_equal(srv.r[0].items, 4);
    assert_int_equal(srv.r[1].hellos + srv.r[2].hellos, 0);
}

static void
open_fails(int R, int route, enum mode mode, int code, const char *needle)
{
    start(R, route, mode);
    surge_client_options o;
    options(&o, 5);
    surge_client *c = NULL;
    uint64_t t0 = surge_now_ns();
    int rc = surge_client_open(&c, &o);
    double took = (double)(surge_now_ns() - t0) / 1e9;
    stop();
    const char *why = surge_client_open_error();
    if (rc != code || strstr(why, needle) == NULL) {
        fail_msg("mode %d: open gave %d (%s), want %d naming '%s'", mode, rc,
                 why, code, needle);
    }
    assert_null(c);
    assert_true(took < 5.0); /* bounded by the 1.5 s timeout */
}

/* Every way a welcome's list can be wrong ends the open with a reason. */
static void
test_bad_welcomes(void **state)
{
    (void)state;
    open_fails(2, SURGE_ROUTE_STEP, M_DUP_LIST, SURGE_EPROTO,
               "welcome.servers[1]: same endpoint as servers[0]");
    open_fails(3, SURGE_ROUTE_STEP, M_DISAGREE, SURGE_EPROTO,
               "describes another server");
    open_fails(2, SURGE_ROUTE_STEP, M_LIE_RANK, SURGE_EPROTO,
               "describes another server");
    open_fails(3, SURGE_ROUTE_STEP, M_SILENT_ONE, SURGE_ENOSERVER,
               "server rank 1 of 3");
}

/* A rank that never confirms the close: close gives up at its timeout,
 * naming that rank's endpoint. */
static void
test_close_waits_for_every_rank(void **state)
{
    (void)state;
    start(2, SURGE_ROUTE_STEP, M_NO_ACK_ONE);
    surge_client_options o;
    options(&o, 5);
    surge_client *c = NULL;
    assert_int_equal(surge_client_open(&c, &o), 0);
    send_steps(c, 4);
    uint64_t t0 = surge_now_ns();
    int rc = surge_client_close(&c);
    double took = (double)(surge_now_ns() - t0) / 1e9;
    stop();
    assert_int_equal(rc, SURGE_ETIMEDOUT);
    assert_non_null(strstr(surge_client_close_error(), srv.r[1].ep));
    assert_true(took >= 1.0 && took < 5.0);
    assert_int_equal(srv.r[0].byes, 1);
    assert_int_equal(srv.r[1].byes, 1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route_by_step),
        cmocka_unit_test(test_route_by_sim),
        cmocka_unit_test(test_bad_welcomes),
        cmocka_unit_test(test_close_waits_for_every_rank),
    };
    return cmocka_run_group_tests_name("client_ranks", tests, NULL, NULL);
}
