/*
 * tests/unit/common/test_protocol.c - the wire codec: round trips of every
 * message type, each validation rule (with its error code), truncated,
 * oversized, mistyped, random and mutated input. Headers that break a rule
 * are written by hand with msgpack-c's packer, because our encoder refuses
 * to produce them.
 */
#include "config.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "common/protocol.h"

/* ------------------------------------------------------------ helpers */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t
rng(void)
{
    /* xorshift64*: fixed seed, deterministic. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dULL;
}

static void
make_hello(surge_msg *m)
{
    memset(m, 0, sizeof *m);
    m->type = SURGE_MSG_HELLO;
    surge_msg_hello *h = &m->u.hello;
    snprintf(h->token, sizeof h->token, "secret-token");
    memset(h->run_key, 'a', SURGE_MAX_RUN_KEY);
    h->sim = 42;
    h->rank = 1;
    h->nranks = 3;
    h->nparams = 5;
    for (uint32_t i = 0; i < h->nparams; i++) {
        h->params[i] = 0.5 * i - 1.25;
    }
    h->nfields = 2;
    snprintf(h->fields[0].name, sizeof h->fields[0].name, "temperature");
    h->fields[0].global_size = 4096;
    h->fields[0].offset = 1365;
    h->fields[0].count = 1365;
    snprintf(h->fields[1].name, sizeof h->fields[1].name, "p.x-1");
    h->fields[1].global_size = 10;
    h->fields[1].offset = 10;
    h->fields[1].count = 0;
    h->dtype = SURGE_WIRE_F32;
}

static void
make_data(surge_msg *m, uint32_t nitems)
{
    memset(m, 0, sizeof *m);
    m->type = SURGE_MSG_DATA;
    surge_msg_data *d = &m->u.data;
    d->sim = 7;
    d->rank = 2;
    d->dtype = SURGE_WIRE_F32;
    d->nitems = nitems;
    for (uint32_t i = 0; i < nitems; i++) {
        d->items[i].step = (int64_t)i * 1000003;
        d->items[i].time = 0.001 * i;
        d->items[i].field = i % 64;
        d->items[i].offset = i;
        d->items[i].count = 4096 + i;
    }
}

/* One valid message of every type, for the generic tests. */
static int
make_kind(surge_msg *m, int kind)
{
    memset(m, 0, sizeof *m);
    switch (kind) {
    case 0:
        make_hello(m);
        return 1;
    case 1:
        m->type = SURGE_MSG_WELCOME;
        m->u.welcome.sim = 3;
        m->u.welcome.rank = 65535;
        m->u.welcome.max_payload_bytes = (uint64_t)1 << 31;
        return 1;
    case 2:
        m->type = SURGE_MSG_REJECT;
        m->u.reject.code = SURGE_ETOKEN;
        snprintf(m->u.reject.reason, sizeof m->u.reject.reason,
                 "wrong study token");
        return 1;
    case 3:
        make_data(m, 3);
        return 1;
    case 4:
        m->type = SURGE_MSG_BYE;
        m->u.bye.sim = 9;
        m->u.bye.rank = 0;
        m->u.bye.slices = UINT64_MAX;
        return 1;
    case 5:
        m->type = SURGE_MSG_BYE_ACK;
        m->u.bye_ack.sim = INT64_MAX;
        m->u.bye_ack.rank = 4;
        m->u.bye_ack.slices = 12;
        return 1;
    case 6:
        m->type = SURGE_MSG_CONTROL;
        snprintf(m->u.control.token, sizeof m->u.control.token, "t");
        m->u.control.op = SURGE_CTL_SIM_RETRY;
        m->u.control.sim = 5;
        return 1;
    case 7:
        m->type = SURGE_MSG_CONTROL_REPLY;
        m->u.control_reply.code = 0;
        snprintf(m->u.control_reply.message, sizeof m->u.control_reply.message,
                 "received=12 dropped=0");
        return 1;
    case 8:
        make_data(m, SURGE_MAX_ITEMS);
        return 1;
    case 9:
        /* A welcome from a server of three ranks, routing by sim. */
        m->type = SURGE_MSG_WELCOME;
        m->u.welcome.sim = 4;
        m->u.welcome.rank = 1;
        m->u.welcome.max_payload_bytes = 1 << 20;
        assert_int_equal(surge_proto_welcome_add_endpoint(
                             &m->u.welcome, "tcp://127.0.0.1:5000"),
                         0);
        assert_int_equal(surge_proto_welcome_add_endpoint(
                             &m->u.welcome, "tcp://10.0.0.2:5001"),
                         0);
        assert_int_equal(
            surge_proto_welcome_add_endpoint(&m->u.welcome, "ipc:///tmp/s2"),
            0);
        m->u.welcome.server_rank = 2;
        m->u.welcome.route = SURGE_ROUTE_SIM;
        m->u.welcome.redirect = 1;
        return 1;
    }
    return 0;
}

static void
assert_same(const surge_msg *a, const surge_msg *b)
{
    assert_int_equal(a->type, b->type);
    switch (a->type) {
    case SURGE_MSG_HELLO: {
        const surge_msg_hello *x = &a->u.hello, *y = &b->u.hello;
        assert_string_equal(x->token, y->token);
        assert_string_equal(x->run_key, y->run_key);
        assert_int_equal(x->sim, y->sim);
        assert_int_equal(x->rank, y->rank);
        assert_int_equal(x->nranks, y->nranks);
        assert_int_equal(x->nparams, y->nparams);
        for (uint32_t i = 0; i < x->nparams; i++) {
            assert_memory_equal(&x->params[i], &y->params[i], sizeof(double));
        }
        assert_int_equal(x->steps, y->steps);
        assert_int_equal(x->nfields, y->nfields);
        for (uint32_t i = 0; i < x->nfields; i++) {
            assert_string_equal(x->fields[i].name, y->fields[i].name);
            assert_int_equal(x->fields[i].global_size,
                             y->fields[i].global_size);
            assert_int_equal(x->fields[i].offset, y->fields[i].offset);
            assert_int_equal(x->fields[i].count, y->fields[i].count);
        }
        assert_int_equal(x->dtype, y->dtype);
        break;
    }
    case SURGE_MSG_WELCOME:
        assert_int_equal(a->u.welcome.sim, b->u.welcome.sim);
        assert_int_equal(a->u.welcome.rank, b->u.welcome.rank);
        assert_int_equal(a->u.welcome.max_payload_bytes,
                         b->u.welcome.max_payload_bytes);
        assert_int_equal(a->u.welcome.nservers, b->u.welcome.nservers);
        assert_int_equal(a->u.welcome.server_rank, b->u.welcome.server_rank);
        assert_int_equal(a->u.welcome.route, b->u.welcome.route);
        assert_int_equal(a->u.welcome.redirect, b->u.welcome.redirect);
        assert_int_equal(a->u.welcome.endpoints_len,
                         b->u.welcome.endpoints_len);
        assert_memory_equal(a->u.welcome.endpoints, b->u.welcome.endpoints,
                            a->u.welcome.endpoints_len);
        break;
    case SURGE_MSG_REJECT:
        assert_int_equal(a->u.reject.code, b->u.reject.code);
        assert_string_equal(a->u.reject.reason, b->u.reject.reason);
        break;
    case SURGE_MSG_DATA: {
        const surge_msg_data *x = &a->u.data, *y = &b->u.data;
        assert_int_equal(x->sim, y->sim);
        assert_int_equal(x->rank, y->rank);
        assert_int_equal(x->dtype, y->dtype);
        assert_int_equal(x->nitems, y->nitems);
        for (uint32_t i = 0; i < x->nitems; i++) {
            assert_int_equal(x->items[i].step, y->items[i].step);
            assert_memory_equal(&x->items[i].time, &y->items[i].time,
                                sizeof(double));
            assert_int_equal(x->items[i].field, y->items[i].field);
            assert_int_equal(x->items[i].offset, y->items[i].offset);
            assert_int_equal(x->items[i].count, y->items[i].count);
        }
        break;
    }
    case SURGE_MSG_BYE:
    case SURGE_MSG_BYE_ACK:
        assert_int_equal(a->u.bye.sim, b->u.bye.sim);
        assert_int_equal(a->u.bye.rank, b->u.bye.rank);
        assert_int_equal(a->u.bye.slices, b->u.bye.slices);
        break;
    case SURGE_MSG_CONTROL:
        assert_string_equal(a->u.control.token, b->u.control.token);
        assert_int_equal(a->u.control.op, b->u.control.op);
        assert_int_equal(a->u.control.sim, b->u.control.sim);
        break;
    case SURGE_MSG_CONTROL_REPLY:
        assert_int_equal(a->u.control_reply.code, b->u.control_reply.code);
        assert_string_equal(a->u.control_reply.message,
                            b->u.control_reply.message);
        break;
    }
}

static uint8_t buf[SURGE_MAX_HEADER_BYTES + 64];
static surge_msg in_msg, out_msg;

/* ------------------------------------------------------------ round trips */

static void
test_round_trip_every_type(void **state)
{
    (void)state;
    for (int kind = 0; make_kind(&in_msg, kind); kind++) {
        int n = surge_proto_encode(&in_msg, buf, sizeof buf);
        assert_true(n > 0);
        assert_true(n <= SURGE_MAX_HEADER_BYTES);
        const char *why = NULL;
        int rc = surge_proto_decode(buf, (size_t)n, &out_msg, &why);
        if (rc != 0) {
            fail_msg("kind %d: %s", kind, why);
        }
        assert_same(&in_msg, &out_msg);
    }
}

static void
test_round_trip_control_ops(void **state)
{
    (void)state;
    for (int op = SURGE_CTL_PING; op <= SURGE_CTL_SHUTDOWN; op++) {
        memset(&in_msg, 0, sizeof in_msg);
        in_msg.type = SURGE_MSG_CONTROL;
        in_msg.u.control.op = (uint8_t)op;
        in_msg.u.control.sim =
            (op == SURGE_CTL_SIM_FAILED || op == SURGE_CTL_SIM_RETRY) ? 3 : -1;
        int n = surge_proto_encode(&in_msg, buf, sizeof buf);
        assert_true(n > 0);
        assert_int_equal(surge_proto_decode(buf, (size_t)n, &out_msg, NULL), 0);
        assert_same(&in_msg, &out_msg);
    }
}

static void
test_round_trip_extremes(void **state)
{
    (void)state;
    /* Longest strings, most params and fields, biggest sizes. */
    make_hello(&in_msg);
    surge_msg_hello *h = &in_msg.u.hello;
    memset(h->token, 'k', SURGE_MAX_TOKEN);
    h->token[SURGE_MAX_TOKEN] = '\0';
    h->sim = INT64_MAX;
    h->nranks = SURGE_MAX_RANKS;
    h->rank = SURGE_MAX_RANKS - 1;
    h->nparams = SURGE_MAX_PARAMS;
    for (int i = 0; i < SURGE_MAX_PARAMS; i++) {
        h->params[i] = -1e300 * i;
    }
    h->nfields = SURGE_MAX_FIELDS;
    for (int i = 0; i < SURGE_MAX_FIELDS; i++) {
        memset(h->fields[i].name, 'a', SURGE_MAX_NAME);
        h->fields[i].name[SURGE_MAX_NAME] = '\0';
        h->fields[i].name[0] = (char)('A' + i % 26);
        h->fields[i].name[1] = (char)('A' + i / 26);
        h->fields[i].global_size = SURGE_MAX_FIELD_ELEMS;
        h->fields[i].offset = SURGE_MAX_FIELD_ELEMS / 2;
        h->fields[i].count = SURGE_MAX_FIELD_ELEMS / 2;
    }
    h->steps = SURGE_MAX_STEPS;
    int n = surge_proto_encode(&in_msg, buf, sizeof buf);
    assert_true(n > 0);
    assert_int_equal(surge_proto_decode(buf, (size_t)n, &out_msg, NULL), 0);
    assert_same(&in_msg, &out_msg);

    /* The largest data header: 256 items with the widest values still
     * fits in SURGE_MAX_HEADER_BYTES (the client relies on it). */
    make_data(&in_msg, SURGE_MAX_ITEMS);
    for (int i = 0; i < SURGE_MAX_ITEMS; i++) {
        surge_data_item *it = &in_msg.u.data.items[i];
        it->step = INT64_MAX;
        it->time = 1.0 / 3.0;
        it->field = SURGE_MAX_FIELDS - 1;
        it->offset = SURGE_MAX_FIELD_ELEMS / 2 - 1;
        it->count = SURGE_MAX_FIELD_ELEMS / 256 / 4;
    }
    in_msg.u.data.sim = INT64_MAX;
    n = surge_proto_encode(&in_msg, buf, sizeof buf);
    assert_true(n > 0);
    assert_int_equal(surge_proto_decode(buf, (size_t)n, &out_msg, NULL), 0);
    assert_same(&in_msg, &out_msg);
}

static void
test_encode_small_buffer(void **state)
{
    (void)state;
    for (int kind = 0; make_kind(&in_msg, kind); kind++) {
        int n = surge_proto_encode(&in_msg, buf, sizeof buf);
        assert_true(n > 0);
        for (int cap = 0; cap < n; cap++) {
            assert_int_equal(surge_proto_encode(&in_msg, buf, (size_t)cap),
                             SURGE_ELIMIT);
        }
        assert_int_equal(surge_proto_encode(&in_msg, buf, (size_t)n), n);
    }
}

/* The encoder refuses what the decoder would refuse. */
static void
test_encode_refuses_invalid(void **state)
{
    (void)state;
    make_hello(&in_msg);
    in_msg.u.hello.rank = 3;
    assert_int_equal(surge_proto_encode(&in_msg, buf, sizeof buf),
                     SURGE_EPROTO);
    make_hello(&in_msg);
    in_msg.u.hello.fields[0].count = 4096;
    assert_int_equal(surge_proto_encode(&in_msg, buf, sizeof buf),
                     SURGE_EBOUNDS);
    make_hello(&in_msg);
    in_msg.u.hello.nfields = SURGE_MAX_FIELDS + 1;
    assert_int_equal(surge_proto_encode(&in_msg, buf, sizeof buf),
                     SURGE_ELIMIT);
    make_hello(&in_msg);
    memset(in_msg.u.hello.token, 'x', sizeof in_msg.u.hello.token);
    assert_int_equal(surge_proto_encode(&in_msg, buf, sizeof buf),
                     SURGE_ELIMIT);
    make_hello(&in_msg);
    in_msg.u.hello.dtype = 2;
    assert_int_equal(surge_proto_encode(&in_msg, buf, sizeof buf),
                     SURGE_EDTYPE);
    make_data(&in_msg, 0);
    assert_int_equal(surge_proto_encode(&in_msg, buf, sizeof buf),
                     SURGE_EPROTO);
    make_data(&in_msg, 2);
    in_msg.u.data.items[1].count = 0;
    assert_int_equal(surge_proto_encode(&in_msg, buf, sizeof buf),
                     SURGE_EPROTO);
    memset(&in_msg, 0, sizeof in_msg);
    in_msg.type = (enum surge_msg_type)99;
    assert_int_equal(surge_proto_encode(&in_msg, buf, sizeof buf),
                     SURGE_EPROTO);
    make_kind(&in_msg, 2);
    in_msg.u.reject.code = 0;
    assert_int_equal(surge_proto_encode(&in_msg, buf, sizeof buf),
                     SURGE_EPROTO);
}

/* ------------------------------------------------------------ hand-made */

typedef struct hb {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} hb;

static void
hb_init(hb *b)
{
    msgpack_sbuffer_init(&b->sb);
    msgpack_packer_init(&b->pk, &b->sb, msgpack_sbuffer_write);
}

static void
hb_str(hb *b, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(&b->pk, n);
    msgpack_pack_str_body(&b->pk, s, n);
}

static int
hb_decode(hb *b, const char **why)
{
    int rc = surge_proto_decode(b->sb.data, b->sb.size, &out_msg, why);
    msgpack_sbuffer_destroy(&b->sb);
    return rc;
}

/* Mutations of a hand-written hello; each names the rule it breaks. */
enum hmut {
    H_OK,
    H_EXTRA_KEYS, /* unknown keys, nested values: ignored */
    H_NO_V,
    H_V2,
    H_V_STR,
    H_V_NEG,
    H_NO_TYPE,
    H_TYPE_INT,
    H_TYPE_UNKNOWN,
    H_TYPE_LONG,
    H_DUP_KEY,
    H_KEY_INT,
    H_NO_TOKEN,
    H_TOKEN_INT,
    H_TOKEN_LONG,
    H_TOKEN_NUL,
    H_SIM_NEG,
    H_SIM_STR,
    H_SIM_FLOAT,
    H_SIM_HUGE, /* uint64 above INT64_MAX */
    H_NRANKS_0,
    H_NRANKS_BIG,
    H_RANK_GE_NRANKS,
    H_RANK_NEG,
    H_PARAMS_NOT_ARRAY,
    H_PARAMS_MANY,
    H_PARAM_STR,
    H_PARAM_NAN,
    H_PARAM_INT, /* an integer is a number: accepted */
    H_FIELDS_EMPTY,
    H_FIELDS_MANY,
    H_FIELD_NOT_MAP,
    H_FIELD_NAME_BAD,
    H_FIELD_NAME_LONG,
    H_FIELD_NAME_EMPTY,
    H_FIELD_DUP,
    H_FIELD_SIZE_0,
    H_FIELD_SIZE_BIG,
    H_FIELD_OUTSIDE,
    H_FIELD_NO_COUNT,
    H_FIELD_COUNT_NEG,
    H_DTYPE_F64,
    H_DTYPE_INT,
    H_NO_DTYPE,
    H_TRAILING,
    H_STEPS,     /* optional steps: accepted */
    H_STEPS_STR, /* steps must be an unsigned integer */
    H_STEPS_NEG,
    H_STEPS_BIG, /* over 2^53 */
    H_NCASES
};

static void
hb_hello(hb *b, enum hmut mut)
{
    int nkeys = 9;
    if (mut == H_NO_V || mut == H_NO_TYPE || mut == H_NO_TOKEN ||
        mut == H_NO_DTYPE) {
        nkeys--;
    }
    if (mut == H_EXTRA_KEYS) {
        nkeys += 2;
    }
    if (mut == H_DUP_KEY || mut == H_KEY_INT || mut == H_STEPS ||
        mut == H_STEPS_STR || mut == H_STEPS_NEG || mut == H_STEPS_BIG) {
        nkeys++;
    }
    hb_init(b);
    msgpack_pack_map(&b->pk, (size_t)nkeys);
    if (mut == H_EXTRA_KEYS) {
        hb_str(b, "zz_future");
        msgpack_pack_array(&b->pk, 3);
        msgpack_pack_map(&b->pk, 1);
        hb_str(b, "deep");
        msgpack_pack_array(&b->pk, 1);
        msgpack_pack_nil(&b->pk);
        msgpack_pack_bin(&b->pk, 3);
        msgpack_pack_bin_body(&b->pk, "abc", 3);
        msgpack_pack_double(&b->pk, 1.5);
        hb_str(b, "items"); /* a key of another type: ignored */
        msgpack_pack_true(&b->pk);
    }
    if (mut == H_KEY_INT) {
        msgpack_pack_int(&b->pk, 7);
        msgpack_pack_int(&b->pk, 7);
    }
    if (mut != H_NO_V) {
        hb_str(b, "v");
        if (mut == H_V2) {
            msgpack_pack_uint8(&b->pk, 2);
        } else if (mut == H_V_STR) {
            hb_str(b, "1");
        } else if (mut == H_V_NEG) {
            msgpack_pack_int8(&b->pk, -1);
        } else {
            msgpack_pack_uint8(&b->pk, 1);
        }
    }
    if (mut != H_NO_TYPE) {
        hb_str(b, "type");
        if (mut == H_TYPE_INT) {
            msgpack_pack_int(&b->pk, 1);
        } else if (mut == H_TYPE_UNKNOWN) {
            hb_str(b, "helo");
        } else if (mut == H_TYPE_LONG) {
            hb_str(b, "hello-hello-hello-hello-hello");
        } else {
            hb_str(b, "hello");
        }
    }
    if (mut != H_NO_TOKEN) {
        hb_str(b, "token");
        if (mut == H_TOKEN_INT) {
            msgpack_pack_int(&b->pk, 5);
        } else if (mut == H_TOKEN_LONG) {
            char t[SURGE_MAX_TOKEN + 2];
            memset(t, 't', sizeof t - 1);
            t[sizeof t - 1] = '\0';
            hb_str(b, t);
        } else if (mut == H_TOKEN_NUL) {
            msgpack_pack_str(&b->pk, 3);
            msgpack_pack_str_body(&b->pk, "a\0b", 3);
        } else {
            hb_str(b, "tok");
        }
    }
    if (mut == H_DUP_KEY) {
        hb_str(b, "sim");
        msgpack_pack_int(&b->pk, 1);
    }
    hb_str(b, "sim");
    switch (mut) {
    case H_SIM_NEG:
        msgpack_pack_int(&b->pk, -3);
        break;
    case H_SIM_STR:
        hb_str(b, "3");
        break;
    case H_SIM_FLOAT:
        msgpack_pack_double(&b->pk, 3.0);
        break;
    case H_SIM_HUGE:
        msgpack_pack_uint64(&b->pk, UINT64_MAX);
        break;
    default:
        msgpack_pack_int(&b->pk, 3);
    }
    hb_str(b, "rank");
    if (mut == H_RANK_GE_NRANKS) {
        msgpack_pack_int(&b->pk, 2);
    } else if (mut == H_RANK_NEG) {
        msgpack_pack_int(&b->pk, -1);
    } else {
        msgpack_pack_int(&b->pk, 1);
    }
    hb_str(b, "nranks");
    if (mut == H_NRANKS_0) {
        msgpack_pack_int(&b->pk, 0);
    } else if (mut == H_NRANKS_BIG) {
        msgpack_pack_uint32(&b->pk, SURGE_MAX_RANKS + 1);
    } else {
        msgpack_pack_int(&b->pk, 2);
    }
    hb_str(b, "params");
    if (mut == H_PARAMS_NOT_ARRAY) {
        msgpack_pack_double(&b->pk, 1.0);
    } else if (mut == H_PARAMS_MANY) {
        msgpack_pack_array(&b->pk, SURGE_MAX_PARAMS + 1);
        for (int i = 0; i <= SURGE_MAX_PARAMS; i++) {
            msgpack_pack_double(&b->pk, i);
        }
    } else {
        msgpack_pack_array(&b->pk, 2);
        msgpack_pack_double(&b->pk, 0.25);
        if (mut == H_PARAM_STR) {
            hb_str(b, "x");
        } else if (mut == H_PARAM_NAN) {
            msgpack_pack_double(&b->pk, NAN);
        } else if (mut == H_PARAM_INT) {
            msgpack_pack_int(&b->pk, -4);
        } else {
            msgpack_pack_float(&b->pk, 2.5f);
        }
    }
    hb_str(b, "fields");
    int nf = 2;
    if (mut == H_FIELDS_EMPTY) {
        nf = 0;
    } else if (mut == H_FIELDS_MANY) {
        nf = SURGE_MAX_FIELDS + 1;
    }
    msgpack_pack_array(&b->pk, (size_t)nf);
    for (int i = 0; i < nf; i++) {
        char name[SURGE_MAX_NAME + 8];
        if (i == 1 && mut == H_FIELD_NOT_MAP) {
            msgpack_pack_int(&b->pk, 1);
            continue;
        }
        snprintf(name, sizeof name, "f%d", i);
        if (i == 1 && mut == H_FIELD_NAME_BAD) {
            snprintf(name, sizeof name, "bad name");
        } else if (i == 1 && mut == H_FIELD_NAME_LONG) {
            memset(name, 'n', SURGE_MAX_NAME + 1);
            name[SURGE_MAX_NAME + 1] = '\0';
        } else if (i == 1 && mut == H_FIELD_NAME_EMPTY) {
            name[0] = '\0';
        } else if (i == 1 && mut == H_FIELD_DUP) {
            snprintf(name, sizeof name, "f0");
        }
        msgpack_pack_map(&b->pk, mut == H_FIELD_NO_COUNT && i == 1 ? 3 : 4);
        hb_str(b, "name");
        hb_str(b, name);
        hb_str(b, "size");
        if (i == 1 && mut == H_FIELD_SIZE_0) {
            msgpack_pack_int(&b->pk, 0);
        } else if (i == 1 && mut == H_FIELD_SIZE_BIG) {
            msgpack_pack_uint64(&b->pk, SURGE_MAX_FIELD_ELEMS + 1);
        } else {
            msgpack_pack_int(&b->pk, 100);
        }
        hb_str(b, "offset");
        msgpack_pack_int(&b->pk, 50);
        if (!(mut == H_FIELD_NO_COUNT && i == 1)) {
            hb_str(b, "count");
            if (i == 1 && mut == H_FIELD_OUTSIDE) {
                msgpack_pack_int(&b->pk, 51);
            } else if (i == 1 && mut == H_FIELD_COUNT_NEG) {
                msgpack_pack_int(&b->pk, -50);
            } else {
                msgpack_pack_int(&b->pk, 50);
            }
        }
    }
    if (mut != H_NO_DTYPE) {
        hb_str(b, "dtype");
        if (mut == H_DTYPE_F64) {
            hb_str(b, "f64");
        } else if (mut == H_DTYPE_INT) {
            msgpack_pack_int(&b->pk, 1);
        } else {
            hb_str(b, "f32");
        }
    }
    if (mut == H_STEPS || mut == H_STEPS_STR || mut == H_STEPS_NEG ||
        mut == H_STEPS_BIG) {
        hb_str(b, "steps");
        if (mut == H_STEPS_STR) {
            hb_str(b, "250");
        } else if (mut == H_STEPS_NEG) {
            msgpack_pack_int(&b->pk, -1);
        } else if (mut == H_STEPS_BIG) {
            msgpack_pack_uint64(&b->pk, SURGE_MAX_STEPS + 1);
        } else {
            msgpack_pack_int(&b->pk, 250);
        }
    }
    if (mut == H_TRAILING) {
        msgpack_pack_nil(&b->pk);
    }
}

static const struct {
    enum hmut mut;
    int code;
} hello_rules[] = {
    {H_OK, 0},
    {H_EXTRA_KEYS, 0},
    {H_NO_V, SURGE_EPROTO},
    {H_V2, SURGE_EVERSION},
    {H_V_STR, SURGE_EPROTO},
    {H_V_NEG, SURGE_EPROTO},
    {H_NO_TYPE, SURGE_EPROTO},
    {H_TYPE_INT, SURGE_EPROTO},
    {H_TYPE_UNKNOWN, SURGE_EPROTO},
    {H_TYPE_LONG, SURGE_EPROTO},
    {H_DUP_KEY, SURGE_EPROTO},
    {H_KEY_INT, SURGE_EPROTO},
    {H_NO_TOKEN, SURGE_EPROTO},
    {H_TOKEN_INT, SURGE_EPROTO},
    {H_TOKEN_LONG, SURGE_ELIMIT},
    {H_TOKEN_NUL, SURGE_EPROTO},
    {H_SIM_NEG, SURGE_EPROTO},
    {H_SIM_STR, SURGE_EPROTO},
    {H_SIM_FLOAT, SURGE_EPROTO},
    {H_SIM_HUGE, SURGE_EPROTO},
    {H_NRANKS_0, SURGE_EPROTO},
    {H_NRANKS_BIG, SURGE_ELIMIT},
    {H_RANK_GE_NRANKS, SURGE_EPROTO},
    {H_RANK_NEG, SURGE_EPROTO},
    {H_PARAMS_NOT_ARRAY, SURGE_EPROTO},
    {H_PARAMS_MANY, SURGE_ELIMIT},
    {H_PARAM_STR, SURGE_EPROTO},
    {H_PARAM_NAN, SURGE_EPROTO},
    {H_PARAM_INT, 0},
    {H_FIELDS_EMPTY, SURGE_EPROTO},
    {H_FIELDS_MANY, SURGE_ELIMIT},
    {H_FIELD_NOT_MAP, SURGE_EPROTO},
    {H_FIELD_NAME_BAD, SURGE_EPROTO},
    {H_FIELD_NAME_LONG, SURGE_ELIMIT},
    {H_FIELD_NAME_EMPTY, SURGE_EPROTO},
    {H_FIELD_DUP, SURGE_EPROTO},
    {H_FIELD_SIZE_0, SURGE_EPROTO},
    {H_FIELD_SIZE_BIG, SURGE_ELIMIT},
    {H_FIELD_OUTSIDE, SURGE_EBOUNDS},
    {H_FIELD_NO_COUNT, SURGE_EPROTO},
    {H_FIELD_COUNT_NEG, SURGE_EPROTO},
    {H_DTYPE_F64, SURGE_EDTYPE},
    {H_DTYPE_INT, SURGE_EPROTO},
    {H_NO_DTYPE, SURGE_EPROTO},
    {H_TRAILING, SURGE_EPROTO},
    {H_STEPS, 0},
    {H_STEPS_STR, SURGE_EPROTO},
    {H_STEPS_NEG, SURGE_EPROTO},
    {H_STEPS_BIG, SURGE_ELIMIT},
};

static void
test_hello_rules(void **state)
{
    (void)state;
    assert_int_equal(sizeof hello_rules / sizeof hello_rules[0], H_NCASES);
    for (size_t i = 0; i < sizeof hello_rules / sizeof hello_rules[0]; i++) {
        hb b;
        const char *why = NULL;
        hb_hello(&b, hello_rules[i].mut);
        int rc = hb_decode(&b, &why);
        if (rc != hello_rules[i].code) {
            fail_msg("hello rule %d: got %d (%s), want %d",
                     (int)hello_rules[i].mut, rc, why ? why : "-",
                     hello_rules[i].code);
        }
        if (rc != 0) {
            assert_non_null(why);
            assert_true(strlen(why) > 0);
        }
    }
    /* Spot-check that the detail names the offending key. */
    hb b;
    const char *why = NULL;
    hb_hello(&b, H_FIELD_NAME_BAD);
    assert_int_equal(hb_decode(&b, &why), SURGE_EPROTO);
    assert_non_null(strstr(why, "fields[1].name"));
    hb_hello(&b, H_V2);
    assert_int_equal(hb_decode(&b, &why), SURGE_EVERSION);
    assert_non_null(strstr(why, "version 2"));
    /* The accepted variants decode to what was written. */
    hb_hello(&b, H_PARAM_INT);
    assert_int_equal(hb_decode(&b, NULL), 0);
    assert_true(out_msg.u.hello.params[1] == -4.0);
    assert_string_equal(out_msg.u.hello.fields[1].name, "f1");
    assert_int_equal(out_msg.u.hello.fields[1].offset, 50);
    assert_int_equal(out_msg.u.hello.steps, 0); /* absent: unknown */
    hb_hello(&b, H_STEPS);
    assert_int_equal(hb_decode(&b, NULL), 0);
    assert_int_equal(out_msg.u.hello.steps, 250);
    hb_hello(&b, H_STEPS_BIG);
    assert_int_equal(hb_decode(&b, &why), SURGE_ELIMIT);
    assert_non_null(strstr(why, "hello.steps"));
}

enum dmut {
    D_OK,
    D_NO_SIM,
    D_RANK_BIG,
    D_DTYPE_BAD,
    D_ITEMS_NOT_ARRAY,
    D_ITEMS_EMPTY,
    D_ITEMS_MANY,
    D_ITEM_NOT_MAP,
    D_STEP_NEG,
    D_STEP_MISSING,
    D_TIME_STR,
    D_TIME_INF,
    D_TIME_INT, /* accepted */
    D_FIELD_BIG,
    D_COUNT_0,
    D_COUNT_BIG,
    D_OFFSET_COUNT_OUTSIDE,
    D_ITEM_DUP_KEY,
    D_ITEM_EXTRA_KEY, /* accepted */
    D_PAYLOAD_BIG,
    D_NCASES
};

static void
hb_data(hb *b, enum dmut mut)
{
    hb_init(b);
    msgpack_pack_map(&b->pk, mut == D_NO_SIM ? 5 : 6);
    hb_str(b, "v");
    msgpack_pack_uint8(&b->pk, 1);
    hb_str(b, "type");
    hb_str(b, "data");
    if (mut != D_NO_SIM) {
        hb_str(b, "sim");
        msgpack_pack_int(&b->pk, 0);
    }
    hb_str(b, "rank");
    msgpack_pack_uint32(&b->pk, mut == D_RANK_BIG ? SURGE_MAX_RANKS : 0);
    hb_str(b, "dtype");
    hb_str(b, mut == D_DTYPE_BAD ? "i8" : "f32");
    hb_str(b, "items");
    if (mut == D_ITEMS_NOT_ARRAY) {
        msgpack_pack_map(&b->pk, 0);
        return;
    }
    int n = 2;
    if (mut == D_ITEMS_EMPTY) {
        n = 0;
    } else if (mut == D_ITEMS_MANY) {
        n = SURGE_MAX_ITEMS + 1;
    } else if (mut == D_PAYLOAD_BIG) {
        n = 3;
    }
    msgpack_pack_array(&b->pk, (size_t)n);
    for (int i = 0; i < n; i++) {
        bool last = i == n - 1;
        if (last && mut == D_ITEM_NOT_MAP) {
            hb_str(b, "item");
            continue;
        }
        int nk = 5;
        if (last && mut == D_STEP_MISSING) {
            nk--;
        }
        if (last && (mut == D_ITEM_DUP_KEY || mut == D_ITEM_EXTRA_KEY)) {
            nk++;
        }
        msgpack_pack_map(&b->pk, (size_t)nk);
        if (last && mut == D_ITEM_EXTRA_KEY) {
            hb_str(b, "checksum");
            msgpack_pack_uint64(&b->pk, 12345);
        }
        if (!(last && mut == D_STEP_MISSING)) {
            hb_str(b, "step");
            msgpack_pack_int(&b->pk, last && mut == D_STEP_NEG ? -1 : i);
        }
        hb_str(b, "time");
        if (last && mut == D_TIME_STR) {
            hb_str(b, "0.5");
        } else if (last && mut == D_TIME_INF) {
            msgpack_pack_double(&b->pk, INFINITY);
        } else if (last && mut == D_TIME_INT) {
            msgpack_pack_int(&b->pk, 2);
        } else {
            msgpack_pack_double(&b->pk, 0.5);
        }
        hb_str(b, "field");
        msgpack_pack_int(&b->pk, last && mut == D_FIELD_BIG ? 64 : 0);
        hb_str(b, "offset");
        msgpack_pack_uint64(&b->pk, last && mut == D_OFFSET_COUNT_OUTSIDE
                                        ? SURGE_MAX_FIELD_ELEMS - 1
                                        : 0);
        hb_str(b, "count");
        if (last && mut == D_COUNT_0) {
            msgpack_pack_int(&b->pk, 0);
        } else if (last && mut == D_COUNT_BIG) {
            msgpack_pack_uint64(&b->pk, SURGE_MAX_FIELD_ELEMS + 1);
        } else if (mut == D_OFFSET_COUNT_OUTSIDE) {
            msgpack_pack_int(&b->pk, 2);
        } else if (mut == D_PAYLOAD_BIG) {
            /* 3 x 2^30 floats = 12 GiB > 2^31 bytes */
            msgpack_pack_uint64(&b->pk, SURGE_MAX_FIELD_ELEMS);
        } else {
            msgpack_pack_int(&b->pk, 16);
        }
        if (last && mut == D_ITEM_DUP_KEY) {
            hb_str(b, "count");
            msgpack_pack_int(&b->pk, 16);
        }
    }
}

static const struct {
    enum dmut mut;
    int code;
} data_rules[] = {
    {D_OK, 0},
    {D_NO_SIM, SURGE_EPROTO},
    {D_RANK_BIG, SURGE_ELIMIT},
    {D_DTYPE_BAD, SURGE_EDTYPE},
    {D_ITEMS_NOT_ARRAY, SURGE_EPROTO},
    {D_ITEMS_EMPTY, SURGE_EPROTO},
    {D_ITEMS_MANY, SURGE_ELIMIT},
    {D_ITEM_NOT_MAP, SURGE_EPROTO},
    {D_STEP_NEG, SURGE_EPROTO},
    {D_STEP_MISSING, SURGE_EPROTO},
    {D_TIME_STR, SURGE_EPROTO},
    {D_TIME_INF, SURGE_EPROTO},
    {D_TIME_INT, 0},
    {D_FIELD_BIG, SURGE_ELIMIT},
    {D_COUNT_0, SURGE_EPROTO},
    {D_COUNT_BIG, SURGE_ELIMIT},
    {D_OFFSET_COUNT_OUTSIDE, SURGE_EBOUNDS},
    {D_ITEM_DUP_KEY, SURGE_EPROTO},
    {D_ITEM_EXTRA_KEY, 0},
    {D_PAYLOAD_BIG, SURGE_ELIMIT},
};

static void
test_data_rules(void **state)
{
    (void)state;
    assert_int_equal(sizeof data_rules / sizeof data_rules[0], D_NCASES);
    for (size_t i = 0; i < sizeof data_rules / sizeof data_rules[0]; i++) {
        hb b;
        const char *why = NULL;
        hb_data(&b, data_rules[i].mut);
        int rc = hb_decode(&b, &why);
        if (rc != data_rules[i].code) {
            fail_msg("data rule %d: got %d (%s), want %d",
                     (int)data_rules[i].mut, rc, why ? why : "-",
                     data_rules[i].code);
        }
    }
    hb b;
    hb_data(&b, D_OK);
    assert_int_equal(hb_decode(&b, NULL), 0);
    uint64_t bytes = 0;
    assert_int_equal(surge_proto_payload_bytes(&out_msg.u.data, &bytes), 0);
    assert_int_equal(bytes, 2 * 16 * sizeof(float));
    hb_data(&b, D_TIME_INT);
    assert_int_equal(hb_decode(&b, NULL), 0);
    assert_true(out_msg.u.data.items[1].time == 2.0);
}

/* The small messages, one rule each. */
static void
test_other_rules(void **state)
{
    (void)state;
    hb b;
    const char *why;

    /* reject.code must be negative; reason a string within its limit. */
    hb_init(&b);
    msgpack_pack_map(&b.pk, 4);
    hb_str(&b, "v"), msgpack_pack_int(&b.pk, 1);
    hb_str(&b, "type"), hb_str(&b, "reject");
    hb_str(&b, "code"), msgpack_pack_int(&b.pk, 0);
    hb_str(&b, "reason"), hb_str(&b, "x");
    assert_int_equal(hb_decode(&b, &why), SURGE_EPROTO);
    assert_non_null(strstr(why, "reject.code"));

    char longr[SURGE_MAX_REASON + 2];
    memset(longr, 'r', sizeof longr - 1);
    longr[sizeof longr - 1] = '\0';
    hb_init(&b);
    msgpack_pack_map(&b.pk, 4);
    hb_str(&b, "v"), msgpack_pack_int(&b.pk, 1);
    hb_str(&b, "type"), hb_str(&b, "reject");
    hb_str(&b, "code"), msgpack_pack_int(&b.pk, SURGE_ETOKEN);
    hb_str(&b, "reason"), hb_str(&b, longr);
    assert_int_equal(hb_decode(&b, &why), SURGE_ELIMIT);

    /* welcome.max_payload over 2^31 */
    hb_init(&b);
    msgpack_pack_map(&b.pk, 5);
    hb_str(&b, "v"), msgpack_pack_int(&b.pk, 1);
    hb_str(&b, "type"), hb_str(&b, "welcome");
    hb_str(&b, "sim"), msgpack_pack_int(&b.pk, 0);
    hb_str(&b, "rank"), msgpack_pack_int(&b.pk, 0);
    hb_str(&b, "max_payload"), msgpack_pack_uint64(&b.pk, 1ULL << 40);
    assert_int_equal(hb_decode(&b, &why), SURGE_ELIMIT);

    /* bye.slices must be unsigned */
    hb_init(&b);
    msgpack_pack_map(&b.pk, 5);
    hb_str(&b, "v"), msgpack_pack_int(&b.pk, 1);
    hb_str(&b, "type"), hb_str(&b, "bye");
    hb_str(&b, "sim"), msgpack_pack_int(&b.pk, 0);
    hb_str(&b, "rank"), msgpack_pack_int(&b.pk, 0);
    hb_str(&b, "slices"), msgpack_pack_int(&b.pk, -1);
    assert_int_equal(hb_decode(&b, &why), SURGE_EPROTO);

    /* control: unknown op; sim required for sim_failed; sim optional else */
    const char *ops[] = {"reboot", "sim_failed", "ping"};
    const int want[] = {SURGE_EPROTO, SURGE_EPROTO, 0};
    for (int i = 0; i < 3; i++) {
        hb_init(&b);
        msgpack_pack_map(&b.pk, 4);
        hb_str(&b, "v"), msgpack_pack_int(&b.pk, 1);
        hb_str(&b, "type"), hb_str(&b, "control");
        hb_str(&b, "token"), hb_str(&b, "t");
        hb_str(&b, "op"), hb_str(&b, ops[i]);
        assert_int_equal(hb_decode(&b, &why), want[i]);
    }
    assert_int_equal(out_msg.u.control.sim, -1);
    assert_int_equal(out_msg.u.control.op, SURGE_CTL_PING);

    /* control_reply.code must not be positive */
    hb_init(&b);
    msgpack_pack_map(&b.pk, 4);
    hb_str(&b, "v"), msgpack_pack_int(&b.pk, 1);
    hb_str(&b, "type"), hb_str(&b, "control_reply");
    hb_str(&b, "code"), msgpack_pack_int(&b.pk, 3);
    hb_str(&b, "message"), hb_str(&b, "ok");
    assert_int_equal(hb_decode(&b, &why), SURGE_EPROTO);

    /* Not a map at all; an empty frame; keys that are not strings. */
    hb_init(&b);
    msgpack_pack_array(&b.pk, 0);
    assert_int_equal(hb_decode(&b, &why), SURGE_EPROTO);
    assert_int_equal(surge_proto_decode(buf, 0, &out_msg, &why), SURGE_EPROTO);
    assert_int_equal(surge_proto_decode(NULL, 3, &out_msg, &why), SURGE_EPROTO);
}

/* ------------------------------------------------------------ hostile */

/* A welcome with the server list eps (nservers of them; NULL: generated
 * ones; none with nservers 0 and eps NULL), server_rank rank (none when
 * negative) and route (none when NULL). */
static void
hb_welcome(hb *b, uint32_t nservers, const char *const *eps, int rank,
           const char *route)
{
    hb_init(b);
    msgpack_pack_map(&b->pk, 5 + (nservers > 0 || eps != NULL) + (rank >= 0) +
                                 (route != NULL));
    hb_str(b, "v"), msgpack_pack_int(&b->pk, 1);
    hb_str(b, "type"), hb_str(b, "welcome");
    hb_str(b, "sim"), msgpack_pack_int(&b->pk, 7);
    hb_str(b, "rank"), msgpack_pack_int(&b->pk, 0);
    hb_str(b, "max_payload"), msgpack_pack_int(&b->pk, 4096);
    if (nservers > 0 || eps != NULL) {
        hb_str(b, "servers"), msgpack_pack_array(&b->pk, nservers);
        for (uint32_t i = 0; i < nservers; i++) {
            char ep[32];
            snprintf(ep, sizeof ep, "tcp://h:%u", i);
            hb_str(b, eps != NULL ? eps[i] : ep);
        }
    }
    if (rank >= 0) {
        hb_str(b, "server_rank"), msgpack_pack_int(&b->pk, rank);
    }
    if (route != NULL) {
        hb_str(b, "route"), hb_str(b, route);
    }
}

static void
welcome_fails(uint32_t n, const char *const *eps, int rank, const char *route,
              int code, const char *needle)
{
    hb b;
    const char *why = NULL;
    hb_welcome(&b, n, eps, rank, route);
    int rc = hb_decode(&b, &why);
    if (rc != code || why == NULL || strstr(why, needle) == NULL) {
        fail_msg("welcome: got %d (%s), want %d naming '%s'", rc,
                 why != NULL ? why : "-", code, needle);
    }
}

/* The server list of a welcome (docs/protocol.md, "Server ranks"): what a
 * client would connect to must be a list of distinct tcp:// or ipc://
 * endpoints with the answering rank among them; anything else is refused
 * by the codec, so libsurge never sees it. */
static void
test_welcome_servers(void **state)
{
    (void)state;
    hb b;
    const char *why = NULL;
    const char *two[] = {"tcp://127.0.0.1:1", "tcp://127.0.0.1:2"};
    hb_welcome(&b, 2, two, 1, "step");
    assert_int_equal(hb_decode(&b, &why), 0);
    assert_int_equal(out_msg.u.welcome.nservers, 2);
    assert_int_equal(out_msg.u.welcome.server_rank, 1);
    assert_string_equal(surge_proto_welcome_endpoint(&out_msg.u.welcome, 1),
                        "tcp://127.0.0.1:2");
    assert_null(surge_proto_welcome_endpoint(&out_msg.u.welcome, 2));
    /* A v1 welcome (no list) leaves nservers 0: one rank. */
    hb_welcome(&b, 0, NULL, -1, NULL);
    assert_int_equal(hb_decode(&b, &why), 0);
    assert_int_equal(out_msg.u.welcome.nservers, 0);

    const char *one[] = {"tcp://127.0.0.1:1"};
    welcome_fails(1, one, 0, "step", SURGE_ELIMIT, "welcome.servers");
    const char *dup[] = {"tcp://127.0.0.1:1", "tcp://127.0.0.1:1"};
    welcome_fails(2, dup, 0, "step", SURGE_EPROTO, "same endpoint");
    const char *scheme[] = {"tcp://127.0.0.1:1", "inproc://x"};
    welcome_fails(2, scheme, 0, "step", SURGE_EPROTO, "not a tcp://");
    const char *empty[] = {"tcp://127.0.0.1:1", ""};
    welcome_fails(2, empty, 0, "step", SURGE_EPROTO, "empty");
    const char *bare[] = {"tcp://127.0.0.1:1", "ipc://"};
    welcome_fails(2, bare, 0, "step", SURGE_EPROTO, "no address");
    welcome_fails(2, two, 2, "step", SURGE_EPROTO, "server_rank");
    welcome_fails(2, two, 0, "nearest", SURGE_EPROTO, "welcome.route");
    welcome_fails(2, two, -1, "step", SURGE_EPROTO, "server_rank");
    welcome_fails(2, two, 0, NULL, SURGE_EPROTO, "route");
    welcome_fails(0, NULL, 0, NULL, SURGE_EPROTO, "without servers");
    static char longep[SURGE_MAX_ENDPOINT + 8];
    memset(longep, 'a', sizeof longep - 1);
    memcpy(longep, "tcp://", 6);
    const char *toolong[] = {"tcp://127.0.0.1:1", longep};
    welcome_fails(2, toolong, 0, "step", SURGE_ELIMIT, "longer than");
    welcome_fails(SURGE_MAX_SERVER_RANKS + 1, NULL, 0, "step", SURGE_ELIMIT,
                  "welcome.servers");
    /* A string that is not one. */
    hb_init(&b);
    msgpack_pack_map(&b.pk, 8);
    hb_str(&b, "v"), msgpack_pack_int(&b.pk, 1);
    hb_str(&b, "type"), hb_str(&b, "welcome");
    hb_str(&b, "sim"), msgpack_pack_int(&b.pk, 7);
    hb_str(&b, "rank"), msgpack_pack_int(&b.pk, 0);
    hb_str(&b, "max_payload"), msgpack_pack_int(&b.pk, 4096);
    hb_str(&b, "servers"), msgpack_pack_array(&b.pk, 2);
    hb_str(&b, "tcp://127.0.0.1:1"), msgpack_pack_int(&b.pk, 5);
    hb_str(&b, "server_rank"), msgpack_pack_int(&b.pk, 0);
    hb_str(&b, "route"), hb_str(&b, "step");
    assert_int_equal(hb_decode(&b, &why), SURGE_EPROTO);
    assert_non_null(strstr(why, "must be a string"));
    /* The server side: the list is bounded. */
    static surge_msg m;
    memset(&m, 0, sizeof m);
    assert_int_equal(surge_proto_welcome_add_endpoint(&m.u.welcome, longep),
                     SURGE_ELIMIT);
}

static void
test_truncated_prefixes(void **state)
{
    (void)state;
    static uint8_t copy[SURGE_MAX_HEADER_BYTES];
    for (int kind = 0; make_kind(&in_msg, kind); kind++) {
        int n = surge_proto_encode(&in_msg, buf, sizeof buf);
        assert_true(n > 0);
        for (int len = 0; len < n; len++) {
            /* A copy of exactly len bytes, so ASan sees any overread. */
            uint8_t *p = malloc(len > 0 ? (size_t)len : 1);
            assert_non_null(p);
            memcpy(p, buf, (size_t)len);
            int rc = surge_proto_decode(p, (size_t)len, &out_msg, NULL);
            free(p);
            if (rc >= 0) {
                fail_msg("kind %d prefix %d of %d decoded", kind, len, n);
            }
        }
        memcpy(copy, buf, (size_t)n);
        assert_int_equal(surge_proto_decode(copy, (size_t)n, &out_msg, NULL),
                         0);
    }
}

static void
test_oversized(void **state)
{
    (void)state;
    const char *why = NULL;
    /* A frame longer than the limit is refused before it is parsed. */
    static uint8_t big[SURGE_MAX_HEADER_BYTES + 1];
    make_hello(&in_msg);
    int n = surge_proto_encode(&in_msg, big, sizeof big);
    assert_true(n > 0);
    assert_int_equal(surge_proto_decode(big, sizeof big, &out_msg, &why),
                     SURGE_ELIMIT);

    /* Containers claiming 2^32-1 entries in a few bytes: refused without
     * allocating (msgpack_unpack would ask for ~100 GB here). */
    const uint8_t huge_map[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 'v', 1};
    assert_int_equal(
        surge_proto_decode(huge_map, sizeof huge_map, &out_msg, &why),
        SURGE_EPROTO);
    hb b;
    hb_init(&b);
    msgpack_pack_map(&b.pk, 6);
    hb_str(&b, "v"), msgpack_pack_int(&b.pk, 1);
    hb_str(&b, "type"), hb_str(&b, "data");
    hb_str(&b, "sim"), msgpack_pack_int(&b.pk, 0);
    hb_str(&b, "rank"), msgpack_pack_int(&b.pk, 0);
    hb_str(&b, "dtype"), hb_str(&b, "f32");
    hb_str(&b, "items"), msgpack_pack_array(&b.pk, 0xffffffffu);
    assert_int_equal(hb_decode(&b, &why), SURGE_EPROTO);
    /* A string claiming 4 GiB. */
    const uint8_t huge_str[] = {0x81, 0xdb, 0xff, 0xff, 0xff, 0xff, 'v'};
    assert_int_equal(
        surge_proto_decode(huge_str, sizeof huge_str, &out_msg, &why),
        SURGE_EPROTO);
    /* Deep nesting in an unknown key is skipped without recursion. */
    static uint8_t deep[SURGE_MAX_HEADER_BYTES];
    size_t len = 0;
    deep[len++] = 0x83;
    deep[len++] = 0xa1;
    deep[len++] = 'z';
    for (int i = 0; i < 10000; i++) {
        deep[len++] = 0x91; /* [ [ [ ... */
    }
    deep[len++] = 0xc0;
    deep[len++] = 0xa1, deep[len++] = 'v', deep[len++] = 1;
    deep[len++] = 0xa4;
    memcpy(deep + len, "type", 4), len += 4;
    deep[len++] = 0xa3;
    memcpy(deep + len, "bye", 3), len += 3;
    assert_int_equal(surge_proto_decode(deep, len, &out_msg, &why),
                     SURGE_EPROTO); /* bye lacks sim: but no crash */
    assert_non_null(strstr(why, "bye.sim"));
}

static void
check_consistent(const uint8_t *p, size_t len)
{
    static uint8_t again[SURGE_MAX_HEADER_BYTES];
    static surge_msg m2;
    int rc = surge_proto_decode(p, len, &out_msg, NULL);
    assert_true(rc <= 0);
    if (rc == 0) {
        /* Whatever decodes re-encodes and decodes to the same thing. */
        int n = surge_proto_encode(&out_msg, again, sizeof again);
        assert_true(n > 0);
        assert_int_equal(surge_proto_decode(again, (size_t)n, &m2, NULL), 0);
        assert_same(&out_msg, &m2);
    }
}

static void
test_random_bytes(void **state)
{
    (void)state;
    rng_state = 12345;
    for (int i = 0; i < 50000; i++) {
        size_t len = rng() % 200;
        uint8_t *p = malloc(len + 1);
        assert_non_null(p);
        for (size_t j = 0; j < len; j++) {
            p[j] = (uint8_t)rng();
        }
        /* Bias half of them to start like a map, to get deeper. */
        if (len > 0 && (i & 1)) {
            p[0] = (uint8_t)(0x80 | (p[0] & 0x0f));
        }
        check_consistent(p, len);
        free(p);
    }
}

static void
test_mutated_messages(void **state)
{
    (void)state;
    static uint8_t orig[SURGE_MAX_HEADER_BYTES];
    rng_state = 777;
    int decoded = 0;
    for (int kind = 0; make_kind(&in_msg, kind); kind++) {
        int n = surge_proto_encode(&in_msg, orig, sizeof orig);
        assert_true(n > 0);
        int rounds = kind == 8 ? 300 : 6000;
        for (int i = 0; i < rounds; i++) {
            size_t len = (size_t)n;
            uint8_t *p = malloc(len + 8);
            assert_non_null(p);
            memcpy(p, orig, len);
            int muts = 1 + (int)(rng() % 4);
            for (int k = 0; k < muts; k++) {
                size_t at = rng() % len;
                switch (rng() % 4) {
                case 0:
                    p[at] = (uint8_t)rng();
                    break;
                case 1:
                    p[at] ^= (uint8_t)(1u << (rng() % 8));
                    break;
                case 2: /* delete a byte */
                    memmove(p + at, p + at + 1, len - at - 1);
                    len--;
                    break;
                default: /* insert a byte */
                    memmove(p + at + 1, p + at, len - at);
                    p[at] = (uint8_t)rng();
                    len++;
                    break;
                }
                if (len == 0) {
                    break;
                }
            }
            if (surge_proto_decode(p, len, &out_msg, NULL) == 0) {
                decoded++;
            }
            check_consistent(p, len);
            free(p);
        }
    }
    /* Some mutations (a value byte) still decode; most do not. Both
     * paths were exercised. */
    assert_true(decoded > 0);
}

static void
test_names(void **state)
{
    (void)state;
    assert_string_equal(surge_proto_type_name(SURGE_MSG_HELLO), "hello");
    assert_string_equal(surge_proto_type_name(SURGE_MSG_CONTROL_REPLY),
                        "control_reply");
    assert_string_equal(surge_proto_type_name(0), "unknown");
    assert_string_equal(surge_proto_type_name(99), "unknown");
    assert_true(surge_proto_valid_name("temperature"));
    assert_true(surge_proto_valid_name("A.b-c_9"));
    assert_false(surge_proto_valid_name(""));
    assert_false(surge_proto_valid_name(NULL));
    assert_false(surge_proto_valid_name("a b"));
    assert_false(surge_proto_valid_name("a/b"));
    assert_false(surge_proto_valid_name("\xc3\xa9t\xc3\xa9"));
    char n64[65], n65[66];
    memset(n64, 'x', 64), n64[64] = '\0';
    memset(n65, 'x', 65), n65[65] = '\0';
    assert_true(surge_proto_valid_name(n64));
    assert_false(surge_proto_valid_name(n65));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_every_type),
        cmocka_unit_test(test_round_trip_control_ops),
        cmocka_unit_test(test_round_trip_extremes),
        cmocka_unit_test(test_encode_small_buffer),
        cmocka_unit_test(test_encode_refuses_invalid),
        cmocka_unit_test(test_hello_rules),
        cmocka_unit_test(test_data_rules),
        cmocka_unit_test(test_other_rules),
        cmocka_unit_test(test_welcome_servers),
        cmocka_unit_test(test_truncated_prefixes),
        cmocka_unit_test(test_oversized),
        cmocka_unit_test(test_random_bytes),
        cmocka_unit_test(test_mutated_messages),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests_name("protocol", tests, NULL, NULL);
}
