/*
 * tests/unit/clients/test_client.c - libsurge against a real ZeroMQ ROUTER
 * run by a test thread that plays the server (real sockets on 127.0.0.1):
 * handshake, rejects with their reason, no server, environment parsing,
 * coalescing (what arrives is decoded and checked value by value),
 * duplicate steps, close accounting, backpressure timeouts and a reject in
 * the middle of a stream.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
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
#include <zmq.h>

#include <surge/client.h>

#include "common/auth.h"
#include "common/protocol.h"
#include "common/util.h"

/* ------------------------------------------------------------ fake server */

#define MAX_REC 4096

typedef struct rec {
    int64_t step;
    double time;
    uint32_t field;
    uint64_t offset;
    uint64_t count;
    uint64_t checksum; /* surge_checksum_f32 of the values at `offset` */
    int msg;           /* index of the message that carried it */
} rec;

typedef struct fake {
    void *ctx;
    void *sock; /* ROUTER; owned by the thread once it runs */
    char ep[128];
    pthread_t th;
    atomic_int stop;

    /* behaviour, set before start */
    int reject_code; /* reply to hello with this reject */
    char reject_reason[128];
    int silent;            /* never answer anything */
    int stall;             /* stop reading after the welcome */
    int ack_delta;         /* bye_ack slices = received + ack_delta */
    int no_ack;            /* never answer bye */
    int reject_after_data; /* reject after this many data messages */
    uint64_t max_payload;  /* in the welcome (0: 2^31) */

    /* what arrived; read by the test after fake_stop() */
    int got_hello;
    surge_msg_hello hello;
    int ndata; /* data messages */
    int bad;   /* messages that failed to decode/check */
    uint64_t payload_bytes;
    int nrec;
    rec recs[MAX_REC];
    int got_bye;
    uint64_t bye_slices;
} fake;

static void
fake_reply(fake *f, zmq_msg_t *rid, const surge_msg *m)
{
    unsigned char buf[SURGE_MAX_HEADER_BYTES];
    int n = surge_proto_encode(m, buf, sizeof buf);
    if (n < 0) {
        f->bad++;
        return;
    }
    zmq_msg_t copy;
    zmq_msg_init(&copy);
    zmq_msg_copy(&copy, rid);
    zmq_msg_send(&copy, f->sock, ZMQ_SNDMORE);
    zmq_send(f->sock, buf, (size_t)n, 0);
}

static void
fake_handle(fake *f, zmq_msg_t *frames, int nframes)
{
    static surge_msg m; /* one server thread at a time */
    surge_msg r;
    if (nframes < 2 ||
        surge_proto_decode(zmq_msg_data(&frames[1]), zmq_msg_size(&frames[1]),
                           &m, NULL) != 0) {
        f->bad++;
        return;
    }
    memset(&r, 0, sizeof r);
    switch (m.type) {
    case SURGE_MSG_HELLO:
        f->got_hello = 1;
        f->hello = m.u.hello;
        if (f->silent) {
            return;
        }
        if (f->reject_code != 0) {
            r.type = SURGE_MSG_REJECT;
            r.u.reject.code = f->reject_code;
            snprintf(r.u.reject.reason, sizeof r.u.reject.reason, "%s",
                     f->reject_reason);
        } else {
            r.type = SURGE_MSG_WELCOME;
            r.u.welcome.sim = m.u.hello.sim;
            r.u.welcome.rank = m.u.hello.rank;
            r.u.welcome.max_payload_bytes =
                f->max_payload ? f->max_payload : SURGE_MAX_PAYLOAD_BYTES;
        }
        fake_reply(f, &frames[0], &r);
        if (f->stall) {
            while (!atomic_load(&f->stop)) {
                usleep(5000);
            }
        }
        return;
    case SURGE_MSG_DATA: {
        uint64_t want = 0;
        if (nframes != 3 || surge_proto_payload_bytes(&m.u.data, &want) != 0 ||
            want != zmq_msg_size(&frames[2])) {
            f->bad++;
            return;
        }
        /* ZeroMQ gives no alignment guarantee for received data (small
         * messages share its receive buffer): copy before reading floats. */
        float *copy = malloc(want > 0 ? want : 1);
        if (copy == NULL) {
            f->bad++;
            return;
        }
        memcpy(copy, zmq_msg_data(&frames[2]), want);
        const float *v = copy;
        for (uint32_t i = 0; i < m.u.data.nitems && f->nrec < MAX_REC; i++) {
            const surge_data_item *it = &m.u.data.items[i];
            rec *x = &f->recs[f->nrec++];
            x->step = it->step;
            x->time = it->time;
            x->field = it->field;
            x->offset = it->offset;
            x->count = it->count;
            x->checksum = surge_checksum_f32(v, it->offset, it->count);
            x->msg = f->ndata;
            v += it->count;
        }
        free(copy);
        f->ndata++;
        f->payload_bytes += want;
        if (f->reject_after_data > 0 && f->ndata == f->reject_after_data) {
            r.type = SURGE_MSG_REJECT;
            r.u.reject.code = SURGE_EREJECTED;
            snprintf(r.u.reject.reason, sizeof r.u.reject.reason,
                     "unknown client (the server restarted)");
            fake_reply(f, &frames[0], &r);
        }
        return;
    }
    case SURGE_MSG_BYE:
        f->got_bye = 1;
        f->bye_slices = m.u.bye.slices;
        if (f->no_ack) {
            return;
        }
        r.type = SURGE_MSG_BYE_ACK;
        r.u.bye_ack.sim = m.u.bye.sim;
        r.u.bye_ack.rank = m.u.bye.rank;
        r.u.bye_ack.slices = (uint64_t)((int64_t)f->nrec + f->ack_delta);
        fake_reply(f, &frames[0], &r);
        return;
    default:
        f->bad++;
    }
}

static void *
fake_main(void *arg)
{
    fake *f = arg;
    while (!atomic_load(&f->stop)) {
        zmq_pollitem_t it = {f->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 20) <= 0) {
            continue;
        }
        zmq_msg_t frames[4];
        int n = 0;
        int more = 1;
        while (more) {
            zmq_msg_t tmp;
            zmq_msg_init(&tmp);
            if (zmq_msg_recv(&tmp, f->sock, 0) < 0) {
                zmq_msg_close(&tmp);
                break;
            }
            more = zmq_msg_more(&tmp);
            if (n < 4) {
                frames[n++] = tmp;
            } else {
                zmq_msg_close(&tmp);
                f->bad++;
            }
        }
        fake_handle(f, frames, n);
        for (int i = 0; i < n; i++) {
            zmq_msg_close(&frames[i]);
        }
    }
    return NULL;
}

static fake *
fake_new(void)
{
    fake *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->ctx = zmq_ctx_new();
    assert_non_null(f->ctx);
    f->sock = zmq_socket(f->ctx, ZMQ_ROUTER);
    assert_non_null(f->sock);
    int zero = 0;
    zmq_setsockopt(f->sock, ZMQ_LINGER, &zero, sizeof zero);
    return f;
}

/* Bind and start serving. Options that must precede bind go between
 * fake_new() and fake_start(). */
static void
fake_start(fake *f)
{
    size_t len = sizeof f->ep;
    assert_int_equal(zmq_bind(f->sock, "tcp://127.0.0.1:*"), 0);
    assert_int_equal(zmq_getsockopt(f->sock, ZMQ_LAST_ENDPOINT, f->ep, &len),
                     0);
    assert_int_equal(pthread_create(&f->th, NULL, fake_main, f), 0);
}

static void
fake_stop(fake *f)
{
    atomic_store(&f->stop, 1);
    pthread_join(f->th, NULL);
}

static void
fake_free(fake *f)
{
    zmq_close(f->sock);
    zmq_ctx_term(f->ctx);
    free(f);
}

/* ------------------------------------------------------------ helpers */

static surge_field two_fields[2] = {
    {"temperature", 64 * 64 * 3, 64 * 64, 64 * 64}, /* 16 KiB slice */
    {"probe", 30, 10, 10},                          /* 40 B slice */
};

static void
clear_env(void)
{
    const char *vars[] = {
        "SURGE_ENDPOINT",       "SURGE_TOKEN",        "SURGE_SIM_ID",
        "SURGE_PARAMS",         "SURGE_TIMEOUT_MS",   "SURGE_COALESCE_BYTES",
        "SURGE_FLUSH_MS",       "SURGE_SNDHWM_BYTES", "OMPI_COMM_WORLD_RANK",
        "OMPI_COMM_WORLD_SIZE", "PMIX_RANK",          "SLURM_PROCID",
        "SLURM_NTASKS",         "SURGE_STEPS",        "SURGE_RUN_KEY",
        "SURGE_CURVE_KEYS"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        unsetenv(vars[i]);
    }
}

static void
base_options(surge_client_options *o, const char *ep)
{
    clear_env();
    assert_int_equal(surge_client_options_init(o), 0);
    o->endpoint = ep;
    o->token = "tok";
    o->sim_id = 5;
    o->rank = 1;
    o->nranks = 3;
    o->fields = two_fields;
    o->nfields = 2;
    o->timeout_ms = 2000;
}

static int
setup(void **state)
{
    (void)state;
    clear_env();
    return 0;
}

/* ------------------------------------------------------------ tests */

static void
test_handshake_ok(void **state)
{
    (void)state;
    fake *f = fake_new();
    fake_start(f);
    surge_client_options o;
    double params[3] = {1.5, -2.0, 1e-9};
    base_options(&o, f->ep);
    o.params = params;
    o.nparams = 3;
    surge_client *c = NULL;
    int rc = surge_client_open(&c, &o);
    if (rc != 0) {
        fail_msg("open: %s", surge_client_open_error());
    }
    assert_non_null(c);
    assert_string_equal(surge_client_last_error(c), "");
    assert_int_equal(surge_client_close(&c), 0);
    assert_null(c);
    assert_string_equal(surge_client_close_error(), "");
    fake_stop(f);
    assert_true(f->got_hello);
    /* The token stays in the process; the run key derived from it goes. */
    char key[SURGE_RUN_KEY_HEX + 1];
    assert_int_equal(surge_run_key("tok", 5, key), 0);
    assert_string_equal(f->hello.token, "");
    assert_string_equal(f->hello.run_key, key);
    assert_int_equal(f->hello.sim, 5);
    assert_int_equal(f->hello.rank, 1);
    assert_int_equal(f->hello.nranks, 3);
    assert_int_equal(f->hello.nparams, 3);
    assert_true(f->hello.params[2] == 1e-9);
    assert_int_equal(f->hello.nfields, 2);
    assert_string_equal(f->hello.fields[0].name, "temperature");
    assert_int_equal(f->hello.fields[0].offset, 4096);
    assert_int_equal(f->hello.fields[1].global_size, 30);
    assert_true(f->got_bye);
    assert_int_equal(f->bye_slices, 0);
    assert_int_equal(f->bad, 0);
    fake_free(f);
    assert_string_equal(surge_version(), PACKAGE_VERSION);
    /* close/abort of nothing */
    assert_int_equal(surge_client_close(NULL), 0);
    assert_int_equal(surge_client_close(&c), 0);
    surge_client_abort(&c);
}

static void
test_reject_reason(void **state)
{
    (void)state;
    const int codes[2] = {SURGE_ETOKEN, SURGE_EDUPLICATE};
    const int want[2] = {SURGE_ETOKEN, SURGE_EREJECTED};
    const char *reasons[2] = {"wrong study token",
                              "rank 1 of simulation 5 is already connected"};
    for (int i = 0; i < 2; i++) {
        fake *f = fake_new();
        f->reject_code = codes[i];
        snprintf(f->reject_reason, sizeof f->reject_reason, "%s", reasons[i]);
        fake_start(f);
        surge_client_options o;
        base_options(&o, f->ep);
        surge_client *c = NULL;
        assert_int_equal(surge_client_open(&c, &o), want[i]);
        assert_null(c);
        char expect[256];
        snprintf(expect, sizeof expect, "server rejected this client: %s",
                 reasons[i]);
        assert_string_equal(surge_client_open_error(), expect);
        fake_stop(f);
        fake_free(f);
    }
    assert_string_equal(surge_strerror(SURGE_ETOKEN), "wrong study token");
}

static void
test_no_server(void **state)
{
    (void)state;
    /* A port that was free a moment ago: bind, note it, unbind. */
    fake *f = fake_new();
    size_t len = sizeof f->ep;
    assert_int_equal(zmq_bind(f->sock, "tcp://127.0.0.1:*"), 0);
    zmq_getsockopt(f->sock, ZMQ_LAST_ENDPOINT, f->ep, &len);
    zmq_unbind(f->sock, f->ep);
    surge_client_options o;
    base_options(&o, f->ep);
    o.timeout_ms = 700;
    surge_client *c = NULL;
    uint64_t t0 = surge_now_ns();
    assert_int_equal(surge_client_open(&c, &o), SURGE_ENOSERVER);
    uint64_t ms = (surge_now_ns() - t0) / 1000000;
    assert_null(c);
    assert_true(ms >= 690);
    assert_true(ms < 1400); /* < 2x the timeout */
    char expect[256];
    snprintf(expect, sizeof expect,
             "no surge server answered at %s within 700 ms", f->ep);
    assert_string_equal(surge_client_open_error(), expect);
    fake_free(f);

    /* A ROUTER that never answers: connected, but no welcome. */
    f = fake_new();
    f->silent = 1;
    fake_start(f);
    base_options(&o, f->ep);
    o.timeout_ms = 700;
    t0 = surge_now_ns();
    assert_int_equal(surge_client_open(&c, &o), SURGE_ENOSERVER);
    ms = (surge_now_ns() - t0) / 1000000;
    assert_true(ms < 1400);
    assert_non_null(strstr(surge_client_open_error(), "no surge server"));
    assert_non_null(strstr(surge_client_open_error(), "no welcome"));
    fake_stop(f);
    assert_true(f->got_hello);
    fake_free(f);
}

static void
expect_env_error(const char *var, const char *value, const char *needle)
{
    surge_client_options o;
    clear_env();
    setenv(var, value, 1);
    int rc = surge_client_options_init(&o);
    if (rc != SURGE_ECONFIG) {
        fail_msg("%s=\"%s\" accepted", var, value);
    }
    const char *e = surge_client_options_error();
    if (strstr(e, var) == NULL || strstr(e, needle) == NULL) {
        fail_msg("%s=\"%s\": detail \"%s\" lacks \"%s\"", var, value, e,
                 needle);
    }
    unsetenv(var);
}

static void
test_env_parsing(void **state)
{
    (void)state;
    surge_client_options o;
    clear_env();
    assert_int_equal(surge_client_options_init(&o), 0);
    assert_null(o.endpoint);
    assert_int_equal(o.timeout_ms, 30000);
    assert_int_equal(o.coalesce_bytes, 262144);
    assert_int_equal(o.flush_ms, 100);
    assert_true(o.sndhwm_bytes == 64u << 20);
    assert_int_equal(o.nranks, 1);

    setenv("SURGE_ENDPOINT", "tcp://127.0.0.1:5555", 1);
    setenv("SURGE_TOKEN", "abc", 1);
    setenv("SURGE_SIM_ID", "17", 1);
    setenv("SURGE_PARAMS", " 1.5, -2e3 ,0.25", 1);
    setenv("SURGE_TIMEOUT_MS", "1234", 1);
    setenv("SURGE_STEPS", "250", 1);
    setenv("OMPI_COMM_WORLD_RANK", "2", 1);
    setenv("OMPI_COMM_WORLD_SIZE", "4", 1);
    setenv("SLURM_PROCID", "9", 1); /* Open MPI's wins */
    assert_int_equal(surge_client_options_init(&o), 0);
    assert_string_equal(o.endpoint, "tcp://127.0.0.1:5555");
    assert_string_equal(o.token, "abc");
    assert_int_equal(o.sim_id, 17);
    assert_int_equal(o.nparams, 3);
    assert_true(o.params[0] == 1.5 && o.params[1] == -2e3 &&
                o.params[2] == 0.25);
    assert_int_equal(o.timeout_ms, 1234);
    assert_int_equal(o.steps, 250);
    assert_int_equal(o.rank, 2);
    assert_int_equal(o.nranks, 4);
    clear_env();
    setenv("SLURM_PROCID", "3", 1);
    setenv("SLURM_NTASKS", "8", 1);
    assert_int_equal(surge_client_options_init(&o), 0);
    assert_int_equal(o.rank, 3);
    assert_int_equal(o.nranks, 8);
    clear_env();
    setenv("PMIX_RANK", "2", 1); /* a rank without a size */
    assert_int_equal(surge_client_options_init(&o), 0);
    assert_int_equal(o.rank, 2);
    assert_int_equal(o.nranks, 1);
    clear_env();
    setenv("SURGE_PARAMS", "", 1);
    assert_int_equal(surge_client_options_init(&o), 0);
    assert_int_equal(o.nparams, 0);

    expect_env_error("SURGE_SIM_ID", "12abc", "not an integer");
    expect_env_error("SURGE_SIM_ID", "-1", "out of range");
    expect_env_error("SURGE_SIM_ID", "99999999999999999999", "out of range");
    expect_env_error("SURGE_SIM_ID", "", "not an integer");
    expect_env_error("SURGE_TIMEOUT_MS", "0", "out of range");
    expect_env_error("SURGE_TIMEOUT_MS", "1.5", "not an integer");
    expect_env_error("SURGE_PARAMS", "1,,2", "value 2");
    expect_env_error("SURGE_PARAMS", "1,x", "\"x\"");
    expect_env_error("SURGE_PARAMS", "nan", "not a finite number");
    expect_env_error("SURGE_PARAMS", "1e999", "not a finite number");
    expect_env_error("SURGE_COALESCE_BYTES", "-5", "out of range");
    expect_env_error("SURGE_FLUSH_MS", "soon", "not an integer");
    expect_env_error("SURGE_STEPS", "-3", "out of range");
    expect_env_error("SURGE_STEPS", "ten", "not an integer");
    expect_env_error("SURGE_SNDHWM_BYTES", "0", "out of range");
    expect_env_error("OMPI_COMM_WORLD_RANK", "one", "not an integer");
    char many[64 * 4 + 16];
    size_t used = 0;
    for (int i = 0; i < 65; i++) {
        used += (size_t)snprintf(many + used, sizeof many - used, "%s1",
                                 i ? "," : "");
    }
    expect_env_error("SURGE_PARAMS", many, "more than 64");
    char longtok[300];
    memset(longtok, 't', sizeof longtok - 1);
    longtok[sizeof longtok - 1] = '\0';
    expect_env_error("SURGE_TOKEN", longtok, "longer than");
    expect_env_error("SURGE_RUN_KEY", longtok, "longer than");
    clear_env();
    setenv("SURGE_RUN_KEY", "00ff", 1);
    setenv("SURGE_CURVE_KEYS", "/some/client.key", 1);
    assert_int_equal(surge_client_options_init(&o), 0);
    assert_string_equal(o.run_key, "00ff");
    assert_string_equal(o.curve_keys, "/some/client.key");
    clear_env();
    setenv("OMPI_COMM_WORLD_RANK", "4", 1);
    setenv("OMPI_COMM_WORLD_SIZE", "4", 1);
    assert_int_equal(surge_client_options_init(&o), SURGE_ECONFIG);
    assert_non_null(strstr(surge_client_options_error(), "not below"));
    clear_env();
}

/* The launcher's run key is sent as given, wins over a token, and must be
 * 64 lowercase hex digits; a CURVE key file that cannot be used fails the
 * open before anything is sent. */
static void
test_run_key_and_curve_options(void **state)
{
    (void)state;
    fake *f = fake_new();
    fake_start(f);
    surge_client_options o;
    char key[SURGE_RUN_KEY_HEX + 1];
    assert_int_equal(surge_run_key("other", 77, key), 0);
    base_options(&o, f->ep);
    o.run_key = key;
    surge_client *c = NULL;
    if (surge_client_open(&c, &o) != 0) {
        fail_msg("open: %s", surge_client_open_error());
    }
    assert_int_equal(surge_client_close(&c), 0);
    fake_stop(f);
    assert_string_equal(f->hello.run_key, key);
    assert_string_equal(f->hello.token, "");
    fake_free(f);

    base_options(&o, "tcp://127.0.0.1:1");
    o.run_key = "ABCDEF";
    assert_int_equal(surge_client_open(&c, &o), SURGE_ECONFIG);
    assert_non_null(strstr(surge_client_open_error(), "options.run_key"));
    key[10] = 'G';
    o.run_key = key;
    assert_int_equal(surge_client_open(&c, &o), SURGE_ECONFIG);
    o.run_key = NULL;
    o.curve_keys = "/nonexistent/client.key";
    assert_int_equal(surge_client_open(&c, &o), SURGE_ECONFIG);
    assert_non_null(strstr(surge_client_open_error(), "options.curve_keys"));
    assert_non_null(strstr(surge_client_open_error(), "/nonexistent"));
    assert_null(c);
}

static void
test_options_rejected(void **state)
{
    (void)state;
    surge_client_options o;
    surge_client *c = NULL;
    surge_field bad[2] = {{"ok", 10, 0, 10}, {"ok", 10, 0, 10}};

    base_options(&o, NULL);
    assert_int_equal(surge_client_open(&c, &o), SURGE_ECONFIG);
    assert_non_null(strstr(surge_client_open_error(), "SURGE_ENDPOINT"));

    base_options(&o, "tcp://127.0.0.1:1");
    o.fields = bad;
    assert_int_equal(surge_client_open(&c, &o), SURGE_ECONFIG);
    assert_non_null(strstr(surge_client_open_error(), "declared twice"));

    bad[1].name = "has space";
    assert_int_equal(surge_client_open(&c, &o), SURGE_ECONFIG);
    assert_non_null(strstr(surge_client_open_error(), "fields[1].name"));

    bad[1].name = "x";
    bad[1].offset = 5;
    bad[1].count = 6;
    assert_int_equal(surge_client_open(&c, &o), SURGE_EBOUNDS);
    assert_non_null(strstr(surge_client_open_error(), "exceeds global_size"));

    base_options(&o, "tcp://127.0.0.1:1");
    o.rank = 3;
    assert_int_equal(surge_client_open(&c, &o), SURGE_ECONFIG);
    assert_non_null(strstr(surge_client_open_error(), "options.rank"));

    base_options(&o, "nonsense://where");
    assert_int_equal(surge_client_open(&c, &o), SURGE_ECONFIG);
    assert_non_null(strstr(surge_client_open_error(), "nonsense://where"));
    assert_null(c);
}

/* A 64x64 field per step (16 KiB: packed) plus a tiny one, f32 and f64,
 * with a 64 KiB packing size: check message count, items, bytes and every
 * value's float32 rounding through the checksum. */
static void
test_coalescing(void **state)
{
    (void)state;
    enum { STEPS = 20 };
    static float tf[64 * 64];
    static double td[64 * 64];
    double probe[10];
    uint64_t want_sum[STEPS][2];

    fake *f = fake_new();
    fake_start(f);
    surge_client_options o;
    base_options(&o, f->ep);
    o.coalesce_bytes = 65536;
    o.flush_ms = 60000; /* only size and close flush here */
    surge_client *c = NULL;
    assert_int_equal(surge_client_open(&c, &o), 0);
    for (int s = 0; s < STEPS; s++) {
        for (int i = 0; i < 64 * 64; i++) {
            td[i] = sin(0.001 * i + s) * 1e3 + 1.0 / 3.0;
            tf[i] = (float)(td[i] * 0.5);
        }
        for (int i = 0; i < 10; i++) {
            probe[i] = 0.1 * i + s;
        }
        if (s % 2 == 0) {
            assert_int_equal(surge_client_send(c, "temperature", s, 0.5 * s, td,
                                               SURGE_FLOAT64),
                             0);
            want_sum[s][0] = surge_checksum_f64(td, 4096, 4096);
        } else {
            assert_int_equal(surge_client_send(c, "temperature", s, 0.5 * s, tf,
                                               SURGE_FLOAT32),
                             0);
            want_sum[s][0] = surge_checksum_f32(tf, 4096, 4096);
        }
        assert_int_equal(
            surge_client_send(c, "probe", s, 0.5 * s, probe, SURGE_FLOAT64), 0);
        want_sum[s][1] = surge_checksum_f64(probe, 10, 10);
    }
    surge_client_stats st;
    assert_int_equal(surge_client_flush(c), 0);
    surge_client_get_stats(c, &st);
    assert_int_equal(surge_client_close(&c), 0);
    fake_stop(f);

    assert_int_equal(f->bad, 0);
    assert_int_equal(f->nrec, 2 * STEPS);
    assert_int_equal(f->bye_slices, 2 * STEPS);
    assert_int_equal(st.slices_sent, 2 * STEPS);
    uint64_t bytes = (uint64_t)STEPS * (4096 + 10) * 4;
    assert_true(f->payload_bytes == bytes);
    assert_true(st.bytes_sent == bytes);
    /* 16424 bytes per step; 3 steps fit in 65536: 7 messages for 20. */
    assert_int_equal(f->ndata, 7);
    assert_int_equal(st.messages_sent, 7);
    for (int i = 0; i < f->nrec; i++) {
        const rec *x = &f->recs[i];
        assert_true(x->step >= 0 && x->step < STEPS);
        assert_true(x->time == 0.5 * (double)x->step);
        if (x->field == 0) {
            assert_int_equal(x->offset, 4096);
            assert_int_equal(x->count, 4096);
        } else {
            assert_int_equal(x->field, 1);
            assert_int_equal(x->offset, 10);
            assert_int_equal(x->count, 10);
        }
        assert_true(x->checksum == want_sum[x->step][x->field]);
    }
    fake_free(f);

    /* Slices at or above the packing size go alone, one item each. */
    f = fake_new();
    fake_start(f);
    base_options(&o, f->ep);
    o.coalesce_bytes = 16384; /* == the temperature slice */
    assert_int_equal(surge_client_open(&c, &o), 0);
    for (int s = 0; s < 4; s++) {
        assert_int_equal(
            surge_client_send(c, "temperature", s, 0, tf, SURGE_FLOAT32), 0);
    }
    assert_int_equal(surge_client_close(&c), 0);
    fake_stop(f);
    assert_int_equal(f->ndata, 4);
    assert_int_equal(f->nrec, 4);
    fake_free(f);
}

/* A packed message older than flush_ms leaves at the next call. */
static void
test_flush_ms(void **state)
{
    (void)state;
    double probe[10] = {0};
    fake *f = fake_new();
    fake_start(f);
    surge_client_options o;
    base_options(&o, f->ep);
    o.flush_ms = 250; /* generous: the machine may stall between calls */
    surge_client *c = NULL;
    assert_int_equal(surge_client_open(&c, &o), 0);
    assert_int_equal(surge_client_send(c, "probe", 0, 0, probe, SURGE_FLOAT64),
                     0);
    assert_int_equal(surge_client_send(c, "probe", 1, 0, probe, SURGE_FLOAT64),
                     0);
    usleep(400000);
    assert_int_equal(surge_client_send(c, "probe", 2, 0, probe, SURGE_FLOAT64),
                     0);
    surge_client_stats st;
    surge_client_get_stats(c, &st);
    assert_int_equal(st.messages_sent, 1); /* steps 0-1 left at step 2 */
    assert_int_equal(st.slices_sent, 2);
    assert_int_equal(surge_client_flush(c), 0);
    surge_client_get_stats(c, &st);
    assert_int_equal(st.messages_sent, 2);
    assert_int_equal(surge_client_close(&c), 0);
    fake_stop(f);
    assert_int_equal(f->ndata, 2);
    assert_int_equal(f->nrec, 3);
    fake_free(f);
}

static void
test_send_rules(void **state)
{
    (void)state;
    static float tf[64 * 64];
    fake *f = fake_new();
    fake_start(f);
    surge_client_options o;
    surge_field fields[3] = {
        two_fields[0], two_fields[1], {"empty_here", 100, 100, 0}};
    base_options(&o, f->ep);
    o.fields = fields;
    o.nfields = 3;
    surge_client *c = NULL;
    assert_int_equal(surge_client_open(&c, &o), 0);
    assert_int_equal(
        surge_client_send(c, "temperature", 3, 0, tf, SURGE_FLOAT32), 0);
    assert_int_equal(
        surge_client_send(c, "temperature", 3, 0, tf, SURGE_FLOAT32),
        SURGE_EDUPLICATE);
    assert_non_null(strstr(surge_client_last_error(c), "step 3"));
    assert_int_equal(surge_client_send(c, "pressure", 3, 0, tf, SURGE_FLOAT32),
                     SURGE_EFIELD);
    assert_non_null(strstr(surge_client_last_error(c), "pressure"));
    assert_int_equal(surge_client_send(c, "temperature", 4, 0, tf, 7),
                     SURGE_EDTYPE);
    assert_int_equal(
        surge_client_send(c, "temperature", -1, 0, tf, SURGE_FLOAT32), -EINVAL);
    assert_int_equal(
        surge_client_send(c, "temperature", 4, NAN, tf, SURGE_FLOAT32),
        -EINVAL);
    assert_int_equal(
        surge_client_send(c, "temperature", 4, 0, NULL, SURGE_FLOAT32),
        -EINVAL);
    /* Other steps and fields still go; an empty slice sends nothing. */
    assert_int_equal(
        surge_client_send(c, "temperature", 4, 0, tf, SURGE_FLOAT32), 0);
    assert_int_equal(
        surge_client_send(c, "empty_here", 4, 0, NULL, SURGE_FLOAT32), 0);
    assert_int_equal(
        surge_client_send(c, "empty_here", 4, 0, NULL, SURGE_FLOAT32),
        SURGE_EDUPLICATE);
    /* The checked form: a buffer of another length than the declared slice
     * (64 x 64) is refused with both counts named, and nothing is sent. */
    assert_int_equal(surge_client_send_checked(c, "temperature", 5, 0, tf,
                                               64 * 63, SURGE_FLOAT32),
                     SURGE_EBOUNDS);
    assert_non_null(strstr(surge_client_last_error(c),
                           "4032 elements given, this rank declared 4096"));
    assert_int_equal(
        surge_client_send_checked(c, "pressure", 5, 0, tf, 4096, SURGE_FLOAT32),
        SURGE_EFIELD);
    assert_int_equal(surge_client_send_checked(c, "temperature", 5, 0, tf,
                                               64 * 64, SURGE_FLOAT32),
                     0);
    assert_int_equal(surge_client_send_checked(c, "empty_here", 5, 0, NULL, 0,
                                               SURGE_FLOAT32),
                     0);
    assert_int_equal(surge_client_close(&c), 0);
    fake_stop(f);
    assert_int_equal(f->nrec, 3);
    assert_int_equal(f->bye_slices, 3);
    fake_free(f);
}

static void
test_close_accounting(void **state)
{
    (void)state;
    static float tf[64 * 64];
    /* The server confirms one slice less than sent. */
    fake *f = fake_new();
    f->ack_delta = -1;
    fake_start(f);
    surge_client_options o;
    base_options(&o, f->ep);
    surge_client *c = NULL;
    assert_int_equal(surge_client_open(&c, &o), 0);
    for (int s = 0; s < 3; s++) {
        assert_int_equal(
            surge_client_send(c, "temperature", s, 0, tf, SURGE_FLOAT32), 0);
    }
    assert_int_equal(surge_client_close(&c), SURGE_EPROTO);
    assert_null(c);
    assert_non_null(strstr(surge_client_close_error(), "confirmed 2 of the 3"));
    fake_stop(f);
    fake_free(f);

    /* The server never confirms: close returns within its timeout. */
    f = fake_new();
    f->no_ack = 1;
    fake_start(f);
    base_options(&o, f->ep);
    o.timeout_ms = 600;
    assert_int_equal(surge_client_open(&c, &o), 0);
    assert_int_equal(
        surge_client_send(c, "temperature", 0, 0, tf, SURGE_FLOAT32), 0);
    uint64_t t0 = surge_now_ns();
    assert_int_equal(surge_client_close(&c), SURGE_ETIMEDOUT);
    uint64_t ms = (surge_now_ns() - t0) / 1000000;
    assert_true(ms >= 590 && ms < 1200);
    assert_non_null(strstr(surge_client_close_error(), f->ep));
    fake_stop(f);
    assert_true(f->got_bye);
    assert_int_equal(f->bye_slices, 1);
    fake_free(f);
}

/* The server stops reading: sends block, then time out naming the
 * endpoint; the slice that timed out may be sent again later. */
static void
test_backpressure_timeout(void **state)
{
    (void)state;
    surge_field big = {"big", 1 << 18, 0, 1 << 18}; /* 1 MiB slices */
    float *v = calloc(1 << 18, sizeof(float));
    assert_non_null(v);
    fake *f = fake_new();
    f->stall = 1;
    int one = 1;
    int small = 4096;
    zmq_setsockopt(f->sock, ZMQ_RCVHWM, &one, sizeof one);
    zmq_setsockopt(f->sock, ZMQ_RCVBUF, &small, sizeof small);
    fake_start(f);
    surge_client_options o;
    base_options(&o, f->ep);
    o.fields = &big;
    o.nfields = 1;
    o.rank = 0;
    o.nranks = 1;
    o.timeout_ms = 400;
    o.sndhwm_bytes = 2u << 20; /* 2 messages */
    surge_client *c = NULL;
    assert_int_equal(surge_client_open(&c, &o), 0);
    int rc = 0;
    int sent = 0;
    uint64_t t0 = 0;
    for (int s = 0; s < 200 && rc == 0; s++) {
        t0 = surge_now_ns();
        rc = surge_client_send(c, "big", s, 0, v, SURGE_FLOAT32);
        if (rc == 0) {
            sent++;
        }
    }
    uint64_t ms = (surge_now_ns() - t0) / 1000000;
    assert_int_equal(rc, SURGE_ETIMEDOUT);
    assert_true(sent >= 2);
    assert_true(ms >= 390 && ms < 800);
    assert_non_null(strstr(surge_client_last_error(c), f->ep));
    assert_non_null(strstr(surge_client_last_error(c), "400 ms"));
    surge_client_stats st;
    surge_client_get_stats(c, &st);
    assert_true(st.send_wait_ns >= 390000000ull);
    assert_int_equal(st.slices_sent, (uint64_t)sent);
    /* Not a duplicate: the timed-out step was not sent. */
    assert_int_equal(surge_client_send(c, "big", sent, 0, v, SURGE_FLOAT32),
                     SURGE_ETIMEDOUT);
    surge_client_abort(&c);
    assert_null(c);
    fake_stop(f);
    fake_free(f);
    free(v);
}

/* A reject in the middle of a stream (the server restarted and does not
 * know this client) surfaces at the next send, with its reason. */
static void
test_reject_midstream(void **state)
{
    (void)state;
    static float tf[64 * 64];
    fake *f = fake_new();
    f->reject_after_data = 1;
    fake_start(f);
    surge_client_options o;
    base_options(&o, f->ep);
    o.coalesce_bytes = 0; /* every slice its own message */
    surge_client *c = NULL;
    assert_int_equal(surge_client_open(&c, &o), 0);
    assert_int_equal(
        surge_client_send(c, "temperature", 0, 0, tf, SURGE_FLOAT32), 0);
    int rc = 0;
    for (int s = 1; s < 2500 && rc == 0; s++) {
        rc = surge_client_send(c, "temperature", s, 0, tf, SURGE_FLOAT32);
        usleep(2000);
    }
    assert_int_equal(rc, SURGE_EREJECTED);
    assert_string_equal(surge_client_last_error(c),
                        "server rejected this client: unknown client (the "
                        "server restarted)");
    /* Sticky: every later call says the same. */
    assert_int_equal(
        surge_client_send(c, "temperature", 999, 0, tf, SURGE_FLOAT32),
        SURGE_EREJECTED);
    assert_int_equal(surge_client_close(&c), SURGE_EREJECTED);
    assert_non_null(strstr(surge_client_close_error(), "unknown client"));
    fake_stop(f);
    assert_false(f->got_bye);
    fake_free(f);
}

/* The welcome's max_payload bounds one message: a larger slice fails open
 * with the numbers; packing shrinks to fit. */
static void
test_server_payload_limit(void **state)
{
    (void)state;
    double probe[10] = {0};
    fake *f = fake_new();
    f->max_payload = 1000;
    fake_start(f);
    surge_client_options o;
    base_options(&o, f->ep);
    surge_client *c = NULL;
    assert_int_equal(surge_client_open(&c, &o), SURGE_ELIMIT);
    assert_non_null(strstr(surge_client_open_error(), "temperature"));
    o.fields = &two_fields[1];
    o.nfields = 1;
    assert_int_equal(surge_client_open(&c, &o), 0);
    for (int s = 0; s < 60; s++) {
        assert_int_equal(
            surge_client_send(c, "probe", s, 0, probe, SURGE_FLOAT64), 0);
    }
    assert_int_equal(surge_client_close(&c), 0);
    fake_stop(f);
    assert_int_equal(f->nrec, 60);
    /* Packing shrank to 1000 bytes, 25 slices of 40 bytes: 25+25+10. */
    assert_int_equal(f->ndata, 3);
    fake_free(f);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_handshake_ok, setup),
        cmocka_unit_test_setup(test_reject_reason, setup),
        cmocka_unit_test_setup(test_no_server, setup),
        cmocka_unit_test_setup(test_env_parsing, setup),
        cmocka_unit_test_setup(test_options_rejected, setup),
        cmocka_unit_test_setup(test_run_key_and_curve_options, setup),
        cmocka_unit_test_setup(test_coalescing, setup),
        cmocka_unit_test_setup(test_flush_ms, setup),
        cmocka_unit_test_setup(test_send_rules, setup),
        cmocka_unit_test_setup(test_close_accounting, setup),
        cmocka_unit_test_setup(test_backpressure_timeout, setup),
        cmocka_unit_test_setup(test_reject_midstream, setup),
        cmocka_unit_test_setup(test_server_payload_limit, setup),
    };
    return cmocka_run_group_tests_name("client", tests, NULL, NULL);
}
