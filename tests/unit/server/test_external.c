/*
 * tests/unit/server/test_external.c - the "external" consumer
 * (server/external.c) against a raw DEALER: the token, the welcome, credit
 * and batch frames (sizes and sample ids), acks with a bad and a good
 * losses frame, the end after end of reception, bye, and the counts
 * (served = acked, bad messages counted).
 */
#include "config.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <msgpack.h>
#include <zmq.h>

#include <surge/error.h>

#include "server/consumer.h"
#include "server/options.h"
#include "server/store.h"

struct runner {
    const surge_consumer_ops *ops;
    void *state;
    surge_consumer_ctx ctx;
    int rc;
};

static void *
run_main(void *arg)
{
    struct runner *r = arg;
    r->rc = r->ops->run(r->state, &r->ctx);
    return NULL;
}

static void
send_hdr(void *s, const char *type, const char *key, uint64_t v, int more)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, key != NULL ? 2 : 1);
    msgpack_pack_str(&pk, 4);
    msgpack_pack_str_body(&pk, "type", 4);
    msgpack_pack_str(&pk, strlen(type));
    msgpack_pack_str_body(&pk, type, strlen(type));
    if (key != NULL) {
        msgpack_pack_str(&pk, strlen(key));
        msgpack_pack_str_body(&pk, key, strlen(key));
        if (strcmp(key, "token") == 0) {
            /* v selects the token: 1 right, 0 wrong. */
            const char *t = v ? "tk" : "no";
            msgpack_pack_str(&pk, 2);
            msgpack_pack_str_body(&pk, t, 2);
        } else {
            msgpack_pack_uint64(&pk, v);
        }
    }
    assert_true(zmq_send(s, sb.data, sb.size, more ? ZMQ_SNDMORE : 0) >= 0);
    msgpack_sbuffer_destroy(&sb);
}

/* Receive one message: its type into type, a u64 field into *v (key may
 * be NULL), the sizes of up to 4 data frames into sizes; returns the
 * number of data frames. ids (may be NULL) gets frame 3's content. */
static int
recv_msg(void *s, char *type, const char *key, uint64_t *v, size_t *sizes,
         int64_t *ids)
{
    int timeout = 5000;
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    zmq_msg_t m;
    zmq_msg_init(&m);
    assert_true(zmq_msg_recv(&m, s, 0) >= 0);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    assert_int_equal(
        msgpack_unpack_next(&up, zmq_msg_data(&m), zmq_msg_size(&m), NULL),
        MSGPACK_UNPACK_SUCCESS);
    type[0] = '\0';
    const msgpack_object_map *map = &up.data.via.map;
    for (uint32_t i = 0; i < map->size; i++) {
        const msgpack_object *k = &map->ptr[i].key, *val = &map->ptr[i].val;
        if (k->via.str.size == 4 && memcmp(k->via.str.ptr, "type", 4) == 0) {
            memcpy(type, val->via.str.ptr, val->via.str.size);
            type[val->via.str.size] = '\0';
        } else if (key != NULL && k->via.str.size == strlen(key) &&
                   memcmp(k->via.str.ptr, key, strlen(key)) == 0) {
            *v = val->via.u64;
        }
    }
    msgpack_unpacked_destroy(&up);
    int n = 0;
    while (zmq_msg_more(&m)) {
        zmq_msg_close(&m);
        zmq_msg_init(&m);
        assert_true(zmq_msg_recv(&m, s, 0) >= 0);
        if (n == 2 && ids != NULL) {
            memcpy(ids, zmq_msg_data(&m), zmq_msg_size(&m));
        }
        if (n < 4) {
            sizes[n] = zmq_msg_size(&m);
        }
        n++;
    }
    zmq_msg_close(&m);
    return n;
}

static void
test_serve(void **st)
{
    (void)st;
    surge_server_options o;
    surge_server_options_init(&o);
    snprintf(o.token, sizeof o.token, "%s", "tk");
    o.batch_size = 4;
    o.external_timeout_s = 5;
    surge_reservoir_config rc;
    assert_int_equal(surge_server_reservoir_config(&o, &rc), 0);
    surge_store_config sc = {"train", SURGE_STORE_STREAM, 0, &rc};
    surge_store *s = NULL;
    assert_int_equal(surge_store_create(&s, &sc), 0);
    assert_int_equal(surge_store_set_shape(s, 2, 3), 0);
    float in[2] = {1, 2}, out[3] = {3, 4, 5};
    for (int i = 0; i < 8; i++) {
        assert_int_equal(surge_store_try_put(s, 7, i, in, out), 0);
    }
    struct runner R = {0};
    R.ops = surge_consumer_find("external");
    assert_non_null(R.ops);
    surge_consumer_prep prep = {s, NULL, NULL, NULL};
    assert_int_equal(R.ops->create(&R.state, &o), 0);
    assert_int_equal(R.ops->prepare(R.state, &prep), 0);
    json_t *info = json_object();
    R.ops->info(R.state, info);
    const char *ep = json_string_value(
        json_object_get(json_object_get(info, "external"), "endpoint"));
    assert_non_null(ep);
    void *zctx = zmq_ctx_new();
    void *d = zmq_socket(zctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(d, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zmq_connect(d, ep), 0);
    json_decref(info);
    R.ctx.train = s;
    R.ctx.opts = &o;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, run_main, &R), 0);

    char type[32];
    uint64_t v = 0;
    size_t sz[4];
    int64_t ids[8];
    send_hdr(d, "hello", "token", 0, 0);
    recv_msg(d, type, NULL, NULL, sz, NULL);
    assert_string_equal(type, "error");
    send_hdr(d, "credit", "n", 1, 0); /* before a good hello */
    recv_msg(d, type, NULL, NULL, sz, NULL);
    assert_string_equal(type, "error");
    send_hdr(d, "hello", "token", 1, 0);
    recv_msg(d, type, "nin", &v, sz, NULL);
    assert_string_equal(type, "welcome");
    assert_int_equal(v, 2);

    send_hdr(d, "credit", "n", 2, 0);
    uint64_t first = 0, second = 0;
    int batches = 0;
    while (batches < 2) {
        int n = recv_msg(d, type, "id", &v, sz, ids);
        if (strcmp(type, "stats") == 0) {
            assert_int_equal(n, 4);
            assert_int_equal(sz[0], 2 * 4);
            assert_int_equal(sz[2], 3 * 4);
            continue;
        }
        assert_string_equal(type, "batch");
        assert_int_equal(n, 3); /* not prioritized: no weights */
        assert_int_equal(sz[0], 4 * 2 * 4);
        assert_int_equal(sz[1], 4 * 3 * 4);
        assert_int_equal(sz[2], 4 * 16);
        assert_int_equal(ids[0], 7); /* sim of row 0 */
        *(batches == 0 ? &first : &second) = v;
        batches++;
    }
    /* A losses frame of the wrong size: the ack counts, the frame is a bad
     * message; then a good one. */
    float loss[4] = {1, 1, 1, 1};
    send_hdr(d, "ack", "id", first, 1);
    zmq_send(d, loss, 3 * sizeof(float), 0);
    send_hdr(d, "ack", "id", second, 1);
    zmq_send(d, loss, sizeof loss, 0);
    send_hdr(d, "ping", NULL, 0, 0);
    recv_msg(d, type, NULL, NULL, sz, NULL);
    assert_string_equal(type, "pong");

    surge_store_end_reception(s);
    send_hdr(d, "credit", "n", 1, 0);
    recv_msg(d, type, NULL, NULL, sz, NULL);
    assert_string_equal(type, "end");
    send_hdr(d, "bye", NULL, 0, 0);
    recv_msg(d, type, NULL, NULL, sz, NULL);
    assert_string_equal(type, "bye");
    pthread_join(th, NULL);
    assert_int_equal(R.rc, 0);

    info = json_object();
    R.ops->info(R.state, info);
    json_t *ext = json_object_get(info, "external");
    assert_int_equal(json_integer_value(json_object_get(ext, "rows_served")),
                     8);
    assert_int_equal(json_integer_value(json_object_get(ext, "rows_acked")), 8);
    assert_int_equal(json_integer_value(json_object_get(ext, "rows_unacked")),
                     0);
    assert_int_equal(json_integer_value(json_object_get(ext, "bad_messages")),
                     2); /* credit before hello, short losses */
    assert_int_equal(json_integer_value(json_object_get(ext, "rejected")), 1);
    json_decref(info);
    surge_consumer_stats cs;
    R.ops->stats(R.state, &cs);
    assert_int_equal(cs.samples, 8);
    zmq_close(d);
    zmq_ctx_term(zctx);
    R.ops->destroy(R.state);
    surge_store_destroy(&s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_serve),
    };
    return cmocka_run_group_tests_name("external", tests, NULL, NULL);
}
