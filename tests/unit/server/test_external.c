/*
 * tests/unit/server/test_external.c - the "external" consumer
 * (server/external.c) against a raw DEALER: the token, the welcome, credit
 * and batch frames (sizes and sample ids), acks with a bad and a good
 * losses frame, the end after end of reception, bye, and the counts
 * (served = acked, bad messages counted). The shared-memory transfer: a
 * consumer on this host is offered a ring, attaches to it (the name goes),
 * gets batches as slot numbers whose rows are in the ring; acks naming
 * the wrong slot, no slot, or a slot for a ZeroMQ batch are refused and
 * counted; the ring bounds what is outstanding; a consumer on another
 * host, one past the budget and one that declines get ZeroMQ; leaving
 * frees the ring; the counts add up. --resume refuses a file that is
 * not a checkpoint of the external consumer, one cut short and one of
 * another study, and takes a good one (shape, carried counts).
 */
#include "config.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* Send one header map: triples (key, kind, value) up to a NULL key; kind
 * 's' a string, 'u' a uint64, 'b' a boolean (int). */
static void
send_fields(void *s, int more, ...)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    va_list ap;
    uint32_t n = 0;
    va_start(ap, more);
    for (const char *k = va_arg(ap, const char *); k != NULL;
         k = va_arg(ap, const char *)) {
        int kind = va_arg(ap, int);
        if (kind == 's') {
            (void)va_arg(ap, const char *);
        } else if (kind == 'u') {
            (void)va_arg(ap, uint64_t);
        } else {
            (void)va_arg(ap, int);
        }
        n++;
    }
    va_end(ap);
    msgpack_pack_map(&pk, n);
    va_start(ap, more);
    for (const char *k = va_arg(ap, const char *); k != NULL;
         k = va_arg(ap, const char *)) {
        msgpack_pack_str(&pk, strlen(k));
        msgpack_pack_str_body(&pk, k, strlen(k));
        int kind = va_arg(ap, int);
        if (kind == 's') {
            const char *v = va_arg(ap, const char *);
            msgpack_pack_str(&pk, strlen(v));
            msgpack_pack_str_body(&pk, v, strlen(v));
        } else if (kind == 'u') {
            msgpack_pack_uint64(&pk, va_arg(ap, uint64_t));
        } else if (va_arg(ap, int)) {
            msgpack_pack_true(&pk);
        } else {
            msgpack_pack_false(&pk);
        }
    }
    va_end(ap);
    assert_true(zmq_send(s, sb.data, sb.size, more ? ZMQ_SNDMORE : 0) >= 0);
    msgpack_sbuffer_destroy(&sb);
}

/* One received message: its header unpacked, its data frames counted.
 * The unpacked strings point into hdr (msgpack-c does not copy them), so
 * the header is kept here rather than in the ZeroMQ message, which is
 * closed before the test reads it. */
struct got {
    unsigned char hdr[16384];
    msgpack_unpacked up;
    char type[32];
    int frames;
};

static const msgpack_object *
got_key(const msgpack_object *map, const char *key)
{
    if (map->type != MSGPACK_OBJECT_MAP) {
        return NULL;
    }
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->via.str.size == strlen(key) &&
            memcmp(k->via.str.ptr, key, strlen(key)) == 0) {
            return &map->via.map.ptr[i].val;
        }
    }
    return NULL;
}

static uint64_t
got_u64(const msgpack_object *map, const char *key)
{
    const msgpack_object *v = got_key(map, key);
    assert_non_null(v);
    assert_int_equal(v->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    return v->via.u64;
}

static void
got_str(const msgpack_object *map, const char *key, char *out, size_t cap)
{
    const msgpack_object *v = got_key(map, key);
    assert_non_null(v);
    assert_int_equal(v->type, MSGPACK_OBJECT_STR);
    assert_true(v->via.str.size < cap);
    memcpy(out, v->via.str.ptr, v->via.str.size);
    out[v->via.str.size] = '\0';
}

/* Receive the next message that is not "stats" (timeout_ms; returns 0 when
 * nothing came). The caller destroys g->up. */
static int
recv_got(void *s, struct got *g, int timeout_ms)
{
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, s, 0) < 0) {
            zmq_msg_close(&m);
            return 0;
        }
        size_t n = zmq_msg_size(&m);
        assert_true(n <= sizeof g->hdr);
        memcpy(g->hdr, zmq_msg_data(&m), n);
        msgpack_unpacked_init(&g->up);
        assert_int_equal(
            msgpack_unpack_next(&g->up, (const char *)g->hdr, n, NULL),
            MSGPACK_UNPACK_SUCCESS);
        got_str(&g->up.data, "type", g->type, sizeof g->type);
        g->frames = 0;
        while (zmq_msg_more(&m)) {
            zmq_msg_close(&m);
            zmq_msg_init(&m);
            assert_true(zmq_msg_recv(&m, s, 0) >= 0);
            g->frames++;
        }
        zmq_msg_close(&m);
        if (strcmp(g->type, "stats") != 0) {
            return 1;
        }
        msgpack_unpacked_destroy(&g->up);
    }
}

static void *
dealer(void *zctx, const char *ep)
{
    void *d = zmq_socket(zctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(d, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zmq_connect(d, ep), 0);
    return d;
}

/* Expect an error reply (a refused request). */
static void
expect_error(void *d)
{
    struct got g;
    assert_true(recv_got(d, &g, 5000));
    assert_string_equal(g.type, "error");
    msgpack_unpacked_destroy(&g.up);
}

static void
test_shm(void **st)
{
    (void)st;
    char boot[64] = "";
    FILE *bf = fopen("/proc/sys/kernel/random/boot_id", "r");
    assert_non_null(bf);
    assert_non_null(fgets(boot, sizeof boot, bf));
    fclose(bf);
    boot[strcspn(boot, "\n")] = '\0';

    surge_server_options o;
    surge_server_options_init(&o);
    snprintf(o.token, sizeof o.token, "%s", "tk");
    o.batch_size = 4;
    o.external_timeout_s = 5;
    /* A full batch of (2, 3) floats and its ids fit one page: the budget
     * holds one ring of 4 slots, and 1 page more (a ring needs 2). */
    o.external_shm_bytes = 5 * (uint64_t)sysconf(_SC_PAGESIZE);
    surge_reservoir_config rc;
    assert_int_equal(surge_server_reservoir_config(&o, &rc), 0);
    surge_store_config sc = {"train", SURGE_STORE_STREAM, 0, &rc};
    surge_store *s = NULL;
    assert_int_equal(surge_store_create(&s, &sc), 0);
    assert_int_equal(surge_store_set_shape(s, 2, 3), 0);
    for (int i = 0; i < 64; i++) {
        float in[2] = {(float)i, 2}, out[3] = {3, 4, (float)i};
        assert_int_equal(surge_store_try_put(s, 9, i, in, out), 0);
    }
    struct runner R = {0};
    R.ops = surge_consumer_find("external");
    surge_consumer_prep prep = {s, NULL, NULL, NULL};
    assert_int_equal(R.ops->create(&R.state, &o), 0);
    assert_int_equal(R.ops->prepare(R.state, &prep), 0);
    json_t *info = json_object();
    R.ops->info(R.state, info);
    char ep[256];
    snprintf(ep, sizeof ep, "%s",
             json_string_value(json_object_get(
                 json_object_get(info, "external"), "endpoint")));
    json_decref(info);
    R.ctx.train = s;
    R.ctx.opts = &o;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, run_main, &R), 0);
    void *zctx = zmq_ctx_new();

    /* Consumer a: on this host, asks for shared memory. */
    void *a = dealer(zctx, ep);
    send_fields(a, 0, "type", 's', "attach", "ok", 'b', 1, NULL);
    expect_error(a); /* before hello */
    send_fields(a, 0, "type", 's', "hello", "token", 's', "tk", "transport",
                's', "shm", "host", 's', boot, NULL);
    struct got g;
    assert_true(recv_got(a, &g, 5000));
    assert_string_equal(g.type, "welcome");
    char tr[16], name[64];
    got_str(&g.up.data, "transport", tr, sizeof tr);
    assert_string_equal(tr, "shm");
    const msgpack_object *shm = got_key(&g.up.data, "shm");
    assert_non_null(shm);
    got_str(shm, "name", name, sizeof name);
    uint64_t slots = got_u64(shm, "slots"), sb = got_u64(shm, "slot_bytes");
    uint64_t off_out = got_u64(shm, "out"), off_ids = got_u64(shm, "ids");
    assert_int_equal(slots, 4);
    assert_int_equal(got_u64(shm, "in"), 0);
    assert_true(off_out >= 4 * 2 * 4 && off_ids >= off_out + 4 * 3 * 4);
    assert_true(got_u64(shm, "w") + 4 * 4 <= sb);
    msgpack_unpacked_destroy(&g.up);
    int fd = shm_open(name, O_RDWR, 0);
    assert_true(fd >= 0);
    unsigned char *ring =
        mmap(NULL, slots * sb, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    assert_true(ring != MAP_FAILED);
    close(fd);
    send_fields(a, 0, "type", 's', "attach", "ok", 's', "yes", NULL);
    expect_error(a); /* ok must be a boolean; the offer stands */
    send_fields(a, 0, "type", 's', "attach", "ok", 'b', 1, NULL);
    send_fields(a, 0, "type", 's', "credit", "n", 'u', (uint64_t)16, NULL);
    /* The ring bounds what is outstanding: 4 batches, not 16. */
    uint64_t id[5], slot[5];
    for (int i = 0; i < 4; i++) {
        assert_true(recv_got(a, &g, 5000));
        assert_string_equal(g.type, "batch");
        assert_int_equal(g.frames, 0);
        id[i] = got_u64(&g.up.data, "id");
        slot[i] = got_u64(&g.up.data, "slot");
        assert_int_equal(got_u64(&g.up.data, "rows"), 4);
        msgpack_unpacked_destroy(&g.up);
        const unsigned char *base = ring + slot[i] * sb;
        const float *x = (const float *)base;
        const float *y = (const float *)(base + off_out);
        const int64_t *ids = (const int64_t *)(base + off_ids);
        for (int r = 0; r < 4; r++) {
            assert_true(x[r * 2 + 1] == 2 && y[r * 3] == 3);
            assert_true(y[r * 3 + 2] == x[r * 2]); /* row intact */
            assert_int_equal(ids[2 * r], 9);
            assert_int_equal(ids[2 * r + 1], (int64_t)x[r * 2]);
        }
    }
    /* The name went once attached (nothing left in /dev/shm). */
    assert_true(shm_open(name, O_RDWR, 0) < 0);
    assert_false(recv_got(a, &g, 300));
    /* Bad acks: another batch's slot, no slot, a slot out of range. Each
     * is refused and the batch stays outstanding. */
    send_fields(a, 0, "type", 's', "ack", "id", 'u', id[0], "slot", 'u',
                slot[1], NULL);
    expect_error(a);
    send_fields(a, 0, "type", 's', "ack", "id", 'u', id[0], NULL);
    expect_error(a);
    send_fields(a, 0, "type", 's', "ack", "id", 'u', id[0], "slot", 'u',
                (uint64_t)1000, NULL);
    expect_error(a);
    assert_false(recv_got(a, &g, 300)); /* still no slot free */
    send_fields(a, 0, "type", 's', "ack", "id", 'u', id[0], "slot", 'u',
                slot[0], NULL);
    assert_true(recv_got(a, &g, 5000)); /* its slot serves the next */
    assert_string_equal(g.type, "batch");
    assert_int_equal(got_u64(&g.up.data, "slot"), slot[0]);
    id[4] = got_u64(&g.up.data, "id");
    slot[4] = slot[0];
    msgpack_unpacked_destroy(&g.up);
    send_fields(a, 0, "type", 's', "attach", "ok", 'b', 1, NULL);
    expect_error(a); /* attached already */

    /* b: another host; c: this host, past the budget; d: declines. */
    void *b = dealer(zctx, ep), *c = dealer(zctx, ep), *d = dealer(zctx, ep);
    send_fields(b, 0, "type", 's', "hello", "token", 's', "tk", "transport",
                's', "shm", "host", 's', "elsewhere", NULL);
    send_fields(c, 0, "type", 's', "hello", "token", 's', "tk", "transport",
                's', "shm", "host", 's', boot, NULL);
    const char *why[2] = {"another host", "budget"};
    void *bc[2] = {b, c};
    for (int i = 0; i < 2; i++) {
        assert_true(recv_got(bc[i], &g, 5000));
        got_str(&g.up.data, "transport", tr, sizeof tr);
        assert_string_equal(tr, "zmq");
        char reason[96];
        got_str(&g.up.data, "transport_reason", reason, sizeof reason);
        assert_non_null(strstr(reason, why[i]));
        msgpack_unpacked_destroy(&g.up);
    }
    send_fields(b, 0, "type", 's', "attach", "ok", 'b', 1, NULL);
    expect_error(b); /* nothing offered */
    /* A ZeroMQ batch acked with a slot: refused; then without: taken. */
    send_fields(b, 0, "type", 's', "credit", "n", 'u', (uint64_t)1, NULL);
    assert_true(recv_got(b, &g, 5000));
    assert_string_equal(g.type, "batch");
    assert_int_equal(g.frames, 3);
    assert_null(got_key(&g.up.data, "slot"));
    uint64_t bid = got_u64(&g.up.data, "id");
    msgpack_unpacked_destroy(&g.up);
    send_fields(b, 0, "type", 's', "ack", "id", 'u', bid, "slot", 'u',
                (uint64_t)0, NULL);
    expect_error(b);
    send_fields(b, 0, "type", 's', "ack", "id", 'u', bid, NULL);
    /* a leaves holding batches: its ring goes back to the budget, so d is
     * offered one (2 slots), declines it and gets ZeroMQ. */
    send_fields(a, 0, "type", 's', "bye", NULL);
    assert_true(recv_got(a, &g, 5000));
    assert_string_equal(g.type, "bye");
    msgpack_unpacked_destroy(&g.up);
    send_fields(d, 0, "type", 's', "hello", "token", 's', "tk", "transport",
                's', "shm", "host", 's', boot, NULL);
    assert_true(recv_got(d, &g, 5000));
    shm = got_key(&g.up.data, "shm");
    assert_non_null(shm);
    got_str(shm, "name", name, sizeof name);
    assert_int_equal(got_u64(shm, "slots"), 4);
    msgpack_unpacked_destroy(&g.up);
    send_fields(d, 0, "type", 's', "attach", "ok", 'b', 0, "reason", 's',
                "test declines", NULL);
    send_fields(d, 0, "type", 's', "credit", "n", 'u', (uint64_t)1, NULL);
    assert_true(recv_got(d, &g, 5000));
    assert_string_equal(g.type, "batch");
    assert_int_equal(g.frames, 3);
    msgpack_unpacked_destroy(&g.up);
    assert_true(shm_open(name, O_RDWR, 0) < 0); /* declined: removed */
    /* A ping round trip each: the server finished with what came before
     * (the counts are updated after a batch is sent). */
    void *bd[2] = {b, d};
    for (int i = 0; i < 2; i++) {
        send_fields(bd[i], 0, "type", 's', "ping", NULL);
        assert_true(recv_got(bd[i], &g, 5000));
        assert_string_equal(g.type, "pong");
        msgpack_unpacked_destroy(&g.up);
    }

    info = json_object();
    R.ops->info(R.state, info);
    json_t *ext = json_object_get(info, "external");
    json_t *cons = json_object_get(ext, "consumers");
    assert_int_equal(json_array_size(cons), 4);
    assert_int_equal(json_integer_value(json_object_get(ext, "shm_bytes")), 0);
    const char *want[4] = {"shm", "zmq", "zmq", "zmq"};
    uint64_t served = 0, acked = 0, unacked = 0, pending = 0;
    for (size_t i = 0; i < 4; i++) {
        json_t *ci = json_array_get(cons, i);
        assert_string_equal(json_string_value(json_object_get(ci, "transport")),
                            want[i]);
        served += json_integer_value(json_object_get(ci, "rows_served"));
        acked += json_integer_value(json_object_get(ci, "rows_acked"));
        unacked += json_integer_value(json_object_get(ci, "rows_unacked"));
        pending += json_integer_value(json_object_get(ci, "rows_pending"));
    }
    /* a: 5 batches (1 acked, 4 held at bye); b: 1 acked; d: 1 pending. */
    assert_int_equal(served, 7 * 4);
    assert_int_equal(acked, 2 * 4);
    assert_int_equal(unacked, 4 * 4);
    assert_int_equal(pending, 4);
    assert_int_equal(served, acked + unacked + pending);
    /* 2 before-hello/not-offered attaches, the non-boolean ok, 3 bad acks
     * of a, a second attach, b's slot on a ZeroMQ batch. */
    assert_int_equal(json_integer_value(json_object_get(ext, "bad_messages")),
                     8);
    json_decref(info);

    surge_store_stop(s);
    pthread_join(th, NULL);
    assert_int_equal(R.rc, 0);
    munmap(ring, slots * sb);
    zmq_close(a);
    zmq_close(b);
    zmq_close(c);
    zmq_close(d);
    zmq_ctx_term(zctx);
    R.ops->destroy(R.state);
    surge_store_destroy(&s);
}

/* Write a checkpoint blob of the external consumer (server/external.c)
 * with no record, statistics, held-out samples or reservoir; cut drops
 * that many bytes from its end. */
static void
write_ckpt(const char *path, const char *study, size_t cut)
{
    char json[256];
    snprintf(json, sizeof json,
             "{\"study_id\":\"%s\",\"sims_finished\":[3],"
             "\"server_counts\":{\"external\":{\"rows_served\":40}}}",
             study);
    unsigned char blob[512];
    size_t n = 0;
    uint32_t nin = 2, zero = 0;
    uint64_t nout = 3, jlen = strlen(json), none = 0;
    memcpy(blob, "SURGEEX1", 8);
    n = 8;
    memcpy(blob + n, &nin, 4);
    memcpy(blob + n + 4, &zero, 4);
    memcpy(blob + n + 8, &nout, 8);
    memcpy(blob + n + 16, &jlen, 8);
    n += 24;
    memcpy(blob + n, json, jlen);
    n += jlen;
    for (int i = 0; i < 4; i++) { /* record, stats, validation, reservoir */
        memcpy(blob + n, &none, 8);
        n += 8;
    }
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(blob, 1, n - cut, f), n - cut);
    fclose(f);
}

static int
mark_none(void *arg, int64_t sim, int64_t step)
{
    (void)arg;
    (void)sim;
    (void)step;
    return 0;
}

static void
test_resume(void **st)
{
    (void)st;
    char path[] = "/tmp/surge-test-external-ckpt-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    surge_server_options o;
    surge_server_options_init(&o);
    snprintf(o.study_id, sizeof o.study_id, "%s", "mine");
    snprintf(o.resume, sizeof o.resume, "%s", path);
    surge_reservoir_config rc;
    assert_int_equal(surge_server_reservoir_config(&o, &rc), 0);
    const surge_consumer_ops *ops = surge_consumer_find("external");
    const char *const what[] = {"garbage", "cut", "other study", "good"};
    for (int k = 0; k < 4; k++) {
        if (k == 0) {
            FILE *f = fopen(path, "wb");
            assert_non_null(f);
            fputs("not a checkpoint at all, just text", f);
            fclose(f);
        } else {
            write_ckpt(path, k == 2 ? "other" : "mine", k == 1 ? 5 : 0);
        }
        surge_store_config sc = {"train", SURGE_STORE_STREAM, 0, &rc};
        surge_store *s = NULL;
        assert_int_equal(surge_store_create(&s, &sc), 0);
        void *state = NULL;
        assert_int_equal(ops->create(&state, &o), 0);
        surge_consumer_prep prep = {s, NULL, mark_none, NULL};
        int r = ops->prepare(state, &prep);
        print_message("# resume from %s: %d\n", what[k], r);
        if (k < 3) {
            assert_true(r < 0);
        } else {
            assert_int_equal(r, 0);
            uint32_t nin = 0;
            uint64_t nout = 0;
            assert_int_equal(surge_store_wait_shape(s, 0, &nin, &nout), 0);
            assert_int_equal(nin, 2);
            assert_int_equal(nout, 3);
            json_t *info = json_object();
            ops->info(state, info);
            json_t *c = json_object_get(json_object_get(info, "external"),
                                        "carried_counts");
            assert_int_equal(
                json_integer_value(json_object_get(
                    json_object_get(c, "external"), "rows_served")),
                40);
            json_decref(info);
            json_t *pj = NULL;
            char err[256];
            assert_int_equal(
                surge_external_checkpoint_progress(path, &pj, err, sizeof err),
                0);
            assert_int_equal(
                json_array_size(json_object_get(pj, "sims_finished")), 1);
            json_decref(pj);
        }
        ops->destroy(state);
        surge_store_destroy(&s);
    }
    unlink(path);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_serve),
        cmocka_unit_test(test_shm),
        cmocka_unit_test(test_resume),
    };
    return cmocka_run_group_tests_name("external", tests, NULL, NULL);
}
