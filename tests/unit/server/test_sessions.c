/*
 * tests/unit/server/test_sessions.c - the server's sessions and message
 * validation (server/ingest.c): hello rules and their reject reasons, data
 * checks before any copy, bye, control, retry; raw frames through the real
 * msgpack codec. Every test ends by checking that the counts add up.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <math.h>
#include <msgpack.h>

#include "common/log.h"
#include "server_test.h"

struct fixture {
    surge_server_options o;
    surge_store *train;
    surge_ingest *ing;
};

static const double P[2] = {1.5, -2.0};
/* Field "u" of 8 elements, split in halves over 2 ranks. */
static const struct tfield U0[1] = {{"u", 8, 0, 4}};
static const struct tfield U1[1] = {{"u", 8, 4, 4}};

/* Peer rid joins simulation sim as rank (0 or 1) of 2, with its half of
 * field "u" and the study token: the reply must be WELCOME. */
static void
join(struct fixture *f, const char *rid, int64_t sim, uint32_t rank)
{
    assert_int_equal(say_hello(f->ing, rid, "secret", sim, rank, 2, P, 2,
                               rank == 0 ? U0 : U1, 1),
                     SURGE_MSG_WELCOME);
}

static int
setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    if (f == NULL) {
        return -1;
    }
    surge_server_options_init(&f->o);
    snprintf(f->o.token, sizeof f->o.token, "%s", "secret");
    f->o.store_bytes = 1 << 20;
    f->o.sim_timeout_s = 5;
    f->o.log_level = 0;
    surge_store_config sc = {"train", SURGE_STORE_STREAM, f->o.store_bytes,
                             NULL};
    if (surge_store_create(&f->train, &sc) != 0 ||
        surge_ingest_create(&f->ing, &f->o, f->train, NULL, NULL) != 0) {
        return -1;
    }
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *f = *state;
    surge_ingest_stop(f->ing);
    int ok = counts_add_up(f->ing);
    surge_ingest_destroy(&f->ing);
    surge_store_destroy(&f->train);
    free(f);
    return ok ? 0 : -1;
}

static void
hello_welcome(void **state)
{
    struct fixture *f = *state;
    join(f, "a", 3, 0);
    assert_int_equal(treply.u.welcome.sim, 3);
    assert_int_equal(treply.u.welcome.rank, 0);
    assert_int_equal(treply.u.welcome.max_payload_bytes,
                     f->o.max_message_bytes);
    assert_int_equal(surge_ingest_active_sims(f->ing), 1);
    assert_int_equal(surge_ingest_counters(f->ing)->sims.hello, 1);
}

/* hello.steps: the run's length for progress and ETA (surge top, the
 * dashboard). */
static void
hello_declares_steps(void **state)
{
    struct fixture *f = *state;
    join(f, "a", 3, 0);
    /* No steps declared: the runs table does not know the run's length. */
    struct surge_run_info run;
    assert_int_equal(surge_ingest_runs(f->ing, &run, 1, 2000), 1);
    assert_int_equal(run.steps_expected, 0);
    /* Rank 1 declares 40 steps (hello.steps): the run's length, and the
     * time since its first welcome for the ETA. */
    make_hello(&tmsg, "secret", 3, 1, 2, P, 2, U1, 1);
    tmsg.u.hello.steps = 40;
    surge_ingest_counters(f->ing)->messages.received++;
    assert_int_equal(surge_ingest_handle_msg(f->ing, RID("b"), &tmsg, NULL, 0,
                                             0, 1000, &treply),
                     1);
    assert_int_equal(treply.type, SURGE_MSG_WELCOME);
    assert_int_equal(surge_ingest_runs(f->ing, &run, 1, 1000 + 2000000000u), 1);
    assert_int_equal(run.steps_expected, 40);
    assert_true(run.elapsed_s > 1.99 && run.elapsed_s < 2.01);
}

/* The first welcomed simulation fixes the output layout the model file
 * records: names, positions, sizes, shapes (--field-shapes, else 1-D; a
 * shape of the wrong size is left 1-D). */
static void
hello_records_output_fields(void **state)
{
    struct fixture *f = *state;
    snprintf(f->o.field_shapes, sizeof f->o.field_shapes, "%s", "u=2x4,v=5x5");
    assert_null(surge_ingest_output_fields(f->ing));
    const struct tfield two[2] = {{"u", 8, 0, 8}, {"v", 6, 0, 6}};
    assert_int_equal(say_hello(f->ing, "a", "secret", 1, 0, 1, P, 2, two, 2),
                     SURGE_MSG_WELCOME);
    assert_string_equal(surge_ingest_output_fields(f->ing),
                        "[{\"name\":\"u\",\"offset\":0,\"size\":8,"
                        "\"shape\":[2,4]},{\"name\":\"v\",\"offset\":8,"
                        "\"size\":6,\"shape\":[6]}]");
}

static void
hello_wrong_token(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(say_hello(f->ing, "a", "guess", 3, 0, 2, P, 2, U0, 1),
                     SURGE_MSG_REJECT);
    assert_int_equal(treply.u.reject.code, SURGE_ETOKEN);
    assert_string_equal(treply.u.reject.reason,
                        "wrong run key for sim 3: the key of another run, or "
                        "derived from a wrong study token");
    const surge_counters *c = surge_ingest_counters(f->ing);
    assert_int_equal(c->messages.dropped[SURGE_MDROP_HELLO_REJECTED], 1);
    assert_int_equal(surge_ingest_active_sims(f->ing), 0);
}

/* Issue 9, item 4: a peer holding the study token said hello as rank 1 of
 * sim 3 before that run started, was welcomed, and the real rank 1 was
 * refused. A hello now needs sim 3's run key: the token alone, or the key
 * of another run, takes nothing, and the real rank still joins. */
static void
hello_needs_its_run_key(void **state)
{
    struct fixture *f = *state;
    const surge_counters *c = surge_ingest_counters(f->ing);
    make_hello(&tmsg, "secret", 3, 1, 2, P, 2, U1, 1);
    snprintf(tmsg.u.hello.token, sizeof tmsg.u.hello.token, "secret");
    tmsg.u.hello.run_key[0] = '\0';
    surge_ingest_counters(f->ing)->messages.received++;
    memset(&treply, 0, sizeof treply);
    assert_int_equal(surge_ingest_handle_msg(f->ing, RID("rogue"), &tmsg, NULL,
                                             0, 0, 1000, &treply),
                     1);
    assert_int_equal(treply.type, SURGE_MSG_REJECT);
    assert_int_equal(treply.u.reject.code, SURGE_ETOKEN);
    assert_non_null(strstr(treply.u.reject.reason, "no run key for sim 3"));
    /* The key of sim 2 (what run 2 was given) does not open sim 3. */
    make_hello(&tmsg, "secret", 2, 1, 2, P, 2, U1, 1);
    tmsg.u.hello.sim = 3;
    surge_ingest_counters(f->ing)->messages.received++;
    memset(&treply, 0, sizeof treply);
    assert_int_equal(surge_ingest_handle_msg(f->ing, RID("rogue2"), &tmsg, NULL,
                                             0, 0, 1000, &treply),
                     1);
    assert_int_equal(treply.type, SURGE_MSG_REJECT);
    assert_non_null(strstr(treply.u.reject.reason, "wrong run key for sim 3"));
    assert_int_equal(c->messages.dropped[SURGE_MDROP_HELLO_REJECTED], 2);
    /* The real ranks, with sim 3's key, join. */
    join(f, "r1", 3, 1);
    join(f, "r0", 3, 0);
    assert_int_equal(c->sims.joined, 1);
}

/* A server without a token (loopback only) checks no run key. */
static void
hello_open_server_needs_no_key(void **state)
{
    struct fixture *f = *state;
    f->o.token[0] = '\0';
    assert_int_equal(say_hello(f->ing, "a", "", 3, 0, 2, P, 2, U0, 1),
                     SURGE_MSG_WELCOME);
}

static void
hello_rank_out_of_range(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(say_hello(f->ing, "a", "secret", 3, 2, 2, P, 2, U0, 1),
                     SURGE_MSG_REJECT);
    assert_non_null(strstr(treply.u.reject.reason, "rank 2 of 2"));
    /* Ranks x fields is bounded before the tables are allocated. */
    const struct tfield many[64] = {{"u", 8, 0, 0}};
    assert_int_equal(
        say_hello(f->ing, "a", "secret", 3, 0, 65536, P, 2, many, 64),
        SURGE_MSG_REJECT);
    assert_int_equal(treply.u.reject.code, SURGE_ELIMIT);
    assert_non_null(strstr(treply.u.reject.reason, "65536 ranks x 64"));
}

static void
hello_global_size_differs(void **state)
{
    struct fixture *f = *state;
    const struct tfield other[1] = {{"u", 10, 4, 4}};
    join(f, "a", 3, 0);
    assert_int_equal(say_hello(f->ing, "b", "secret", 3, 1, 2, P, 2, other, 1),
                     SURGE_MSG_REJECT);
    assert_int_equal(treply.u.reject.code, SURGE_EFIELD);
    assert_non_null(
        strstr(treply.u.reject.reason, "field 'u' global size 10 differs"));
}

static void
hello_other_mismatches(void **state)
{
    struct fixture *f = *state;
    const double q[2] = {1.5, 7.0};
    const struct tfield v1[1] = {{"v", 8, 4, 4}};
    join(f, "a", 3, 0);
    assert_int_equal(say_hello(f->ing, "b", "secret", 3, 1, 3, P, 2, U1, 1),
                     SURGE_MSG_REJECT);
    assert_non_null(strstr(treply.u.reject.reason, "ranks"));
    assert_int_equal(say_hello(f->ing, "b", "secret", 3, 1, 2, q, 2, U1, 1),
                     SURGE_MSG_REJECT);
    assert_non_null(strstr(treply.u.reject.reason, "parameter values"));
    assert_int_equal(say_hello(f->ing, "b", "secret", 3, 1, 2, P, 2, v1, 1),
                     SURGE_MSG_REJECT);
    assert_non_null(strstr(treply.u.reject.reason, "field 0 is 'v'"));
    /* The right one still gets in after the rejects. */
    join(f, "b", 3, 1);
}

static void
hello_duplicate_rank_and_connection(void **state)
{
    struct fixture *f = *state;
    join(f, "a", 3, 0);
    assert_int_equal(say_hello(f->ing, "z", "secret", 3, 0, 2, P, 2, U0, 1),
                     SURGE_MSG_REJECT);
    assert_int_equal(treply.u.reject.code, SURGE_EDUPLICATE);
    assert_non_null(strstr(treply.u.reject.reason, "already joined"));
    assert_int_equal(say_hello(f->ing, "a", "secret", 4, 0, 1, P, 2, U0, 1),
                     SURGE_MSG_REJECT);
    assert_int_equal(treply.u.reject.code, SURGE_EDUPLICATE);
    assert_non_null(strstr(treply.u.reject.reason, "already said hello"));
}

static void
hello_slices_overlap(void **state)
{
    struct fixture *f = *state;
    const struct tfield over[1] = {{"u", 8, 3, 5}};
    join(f, "a", 3, 0);
    assert_int_equal(say_hello(f->ing, "b", "secret", 3, 1, 2, P, 2, over, 1),
                     SURGE_MSG_REJECT);
    assert_int_equal(treply.u.reject.code, SURGE_EBOUNDS);
    assert_non_null(strstr(treply.u.reject.reason,
                           "slice [3, 8) of rank 1 overlaps rank 0's [0, 4)"));
}

static void
hello_slices_leave_gap(void **state)
{
    struct fixture *f = *state;
    const struct tfield gap[1] = {{"u", 8, 5, 3}};
    join(f, "a", 3, 0);
    assert_int_equal(say_hello(f->ing, "b", "secret", 3, 1, 2, P, 2, gap, 1),
                     SURGE_MSG_REJECT);
    assert_non_null(strstr(treply.u.reject.reason,
                           "the slices of all 2 ranks cover 7 of its 8"));
    /* A one-rank sim must cover everything at once. */
    assert_int_equal(say_hello(f->ing, "c", "secret", 9, 0, 1, P, 2, U0, 1),
                     SURGE_MSG_REJECT);
    assert_non_null(strstr(treply.u.reject.reason, "cover 4 of its 8"));
    /* The rejected first hello left no declaration behind. */
    const struct tfield whole[1] = {{"u", 8, 0, 8}};
    assert_int_equal(say_hello(f->ing, "c", "secret", 9, 0, 1, P, 2, whole, 1),
                     SURGE_MSG_WELCOME);
}

static void
hello_duplicate_field_and_dtype(void **state)
{
    struct fixture *f = *state;
    const struct tfield twice[2] = {{"u", 8, 0, 8}, {"u", 8, 0, 8}};
    assert_int_equal(say_hello(f->ing, "a", "secret", 3, 0, 1, P, 2, twice, 2),
                     SURGE_MSG_REJECT);
    assert_non_null(strstr(treply.u.reject.reason, "declared twice"));
    make_hello(&tmsg, "secret", 3, 0, 1, P, 2, U0, 1);
    tmsg.u.hello.dtype = 7;
    surge_ingest_counters(f->ing)->messages.received++;
    assert_int_equal(surge_ingest_handle_msg(f->ing, RID("a"), &tmsg, NULL, 0,
                                             0, 1, &treply),
                     1);
    assert_int_equal(treply.u.reject.code, SURGE_EDTYPE);
}

static void
hello_sample_too_big(void **state)
{
    struct fixture *f = *state;
    f->o.max_partial_bytes = 4096;
    const struct tfield big[1] = {{"u", 4096, 0, 4096}};
    assert_int_equal(say_hello(f->ing, "a", "secret", 3, 0, 1, P, 2, big, 1),
                     SURGE_MSG_REJECT);
    assert_non_null(strstr(treply.u.reject.reason, "--max-partial-bytes"));
    /* A sample that does not fit the store is refused by name too. */
    f->o.max_partial_bytes = 64 << 20;
    const struct tfield huge[1] = {{"u", 1 << 20, 0, 1 << 20}};
    assert_int_equal(say_hello(f->ing, "a", "secret", 3, 0, 1, P, 2, huge, 1),
                     SURGE_MSG_REJECT);
    assert_non_null(strstr(treply.u.reject.reason, "training store"));
}

static void
hello_shape_must_match_study(void **state)
{
    struct fixture *f = *state;
    const struct tfield a[1] = {{"u", 8, 0, 8}};
    const struct tfield b[1] = {{"u", 9, 0, 9}};
    assert_int_equal(say_hello(f->ing, "a", "secret", 1, 0, 1, P, 2, a, 1),
                     SURGE_MSG_WELCOME);
    assert_int_equal(say_hello(f->ing, "b", "secret", 2, 0, 1, P, 2, b, 1),
                     SURGE_MSG_REJECT);
    assert_non_null(strstr(treply.u.reject.reason, "sample shape"));
}

static void
data_without_hello(void **state)
{
    struct fixture *f = *state;
    float v[4] = {1, 2, 3, 4};
    assert_int_equal(send_slice(f->ing, "x", 3, 0, 0, 0.0, 0, 0, 4, v), 1);
    assert_int_equal(treply.type, SURGE_MSG_REJECT);
    assert_string_equal(treply.u.reject.reason, "send hello first");
    /* Only one reject per peer. */
    assert_int_equal(send_slice(f->ing, "x", 3, 0, 1, 0.0, 0, 0, 4, v), 0);
    const surge_counters *c = surge_ingest_counters(f->ing);
    assert_int_equal(c->messages.dropped[SURGE_MDROP_UNKNOWN_SESSION], 2);
    assert_int_equal(c->slices.dropped[SURGE_SDROP_MESSAGE_DROPPED], 2);
    assert_int_equal(c->slices.accepted, 0);
}

static void
data_checked_before_copy(void **state)
{
    struct fixture *f = *state;
    float v[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    const surge_counters *c = surge_ingest_counters(f->ing);
    join(f, "a", 3, 0);
    /* Payload one float short, one float long. */
    send_slice_ex(f->ing, "a", 3, 0, 0, 0.0, 0, 0, 4, v, 12, 1);
    send_slice_ex(f->ing, "a", 3, 0, 0, 0.0, 0, 0, 4, v, 20, 1);
    assert_int_equal(c->messages.dropped[SURGE_MDROP_BAD_PAYLOAD_SIZE], 2);
    /* Unknown field index. */
    send_slice(f->ing, "a", 3, 0, 0, 0.0, 1, 0, 4, v);
    assert_int_equal(c->messages.dropped[SURGE_MDROP_BAD_FIELD], 1);
    /* Offset/count other than the declared slice (rank 1's half). */
    send_slice(f->ing, "a", 3, 0, 0, 0.0, 0, 4, 4, v);
    send_slice(f->ing, "a", 3, 0, 0, 0.0, 0, 0, 3, v);
    assert_int_equal(c->messages.dropped[SURGE_MDROP_BAD_SLICE], 2);
    /* Another sim or rank than the session's. */
    send_slice(f->ing, "a", 4, 0, 0, 0.0, 0, 0, 4, v);
    send_slice(f->ing, "a", 3, 1, 0, 0.0, 0, 0, 4, v);
    assert_int_equal(c->messages.dropped[SURGE_MDROP_SESSION_MISMATCH], 2);
    /* Wrong element type. */
    memset(&tmsg, 0, sizeof tmsg);
    tmsg.type = SURGE_MSG_DATA;
    tmsg.u.data.sim = 3;
    tmsg.u.data.dtype = 9;
    tmsg.u.data.nitems = 1;
    tmsg.u.data.items[0].count = 4;
    surge_ingest_counters(f->ing)->messages.received++;
    surge_ingest_handle_msg(f->ing, RID("a"), &tmsg, v, 16, 1, 1, &treply);
    assert_int_equal(c->messages.dropped[SURGE_MDROP_BAD_DTYPE], 1);
    /* Two payload frames. */
    send_slice(f->ing, "a", 3, 0, 0, 0.0, 0, 0, 4, v);
    tmsg.u.data.items[0].step = 1;
    surge_ingest_counters(f->ing)->messages.received++;
    surge_ingest_handle_msg(f->ing, RID("a"), &tmsg, v, 16, 2, 1, &treply);
    assert_int_equal(c->messages.dropped[SURGE_MDROP_BAD_FRAMES], 1);
    /* Nothing bad reached a partial step; the one good slice did. */
    assert_int_equal(c->slices.accepted, 1);
    assert_int_equal(c->steps.started, 1);
}

static void
bye_acks_accepted_slices(void **state)
{
    struct fixture *f = *state;
    float v[4] = {1, 2, 3, 4};
    const surge_counters *c = surge_ingest_counters(f->ing);
    join(f, "a", 3, 0);
    join(f, "b", 3, 1);
    for (int s = 0; s < 3; s++) {
        send_slice(f->ing, "a", 3, 0, s, s * 0.1, 0, 0, 4, v);
        send_slice(f->ing, "b", 3, 1, s, s * 0.1, 0, 4, 4, v);
    }
    send_slice(f->ing, "a", 3, 0, 3, 0.3, 0, 0, 4, v); /* rank 1 never */
    /* Both ranks are sending: the runs table counts them as joined. */
    struct surge_run_info run;
    assert_int_equal(surge_ingest_runs(f->ing, &run, 1, 0), 1);
    assert_int_equal(run.ranks, 2);
    assert_int_equal(run.ranks_joined, 2);
    assert_int_equal(run.ranks_done, 0);
    assert_int_equal(say_bye(f->ing, "a", 3, 0, 4), SURGE_MSG_BYE_ACK);
    assert_int_equal(treply.u.bye_ack.slices, 4);
    assert_int_equal(surge_ingest_active_sims(f->ing), 1);
    assert_int_equal(say_bye(f->ing, "b", 3, 1, 3), SURGE_MSG_BYE_ACK);
    assert_int_equal(treply.u.bye_ack.slices, 3);
    assert_int_equal(surge_ingest_active_sims(f->ing), 0);
    /* What the byes said the ranks sent: summary.json's slices.sent. */
    assert_int_equal(c->slices.sent_by_clients, 4 + 3);
    assert_true(surge_ingest_all_done(f->ing));
    assert_int_equal(c->sims.finished, 1);
    assert_int_equal(c->steps.assembled, 3);
    assert_int_equal(c->steps.dropped[SURGE_TDROP_SIM_FINISHED], 1);
    /* After bye the session is gone. */
    assert_int_equal(say_bye(f->ing, "a", 3, 0, 4), SURGE_MSG_REJECT);
    /* A finished sim refuses new hellos until the launcher allows a retry. */
    assert_int_equal(say_hello(f->ing, "c", "secret", 3, 0, 2, P, 2, U0, 1),
                     SURGE_MSG_REJECT);
    assert_non_null(strstr(treply.u.reject.reason, "SIM_RETRY"));
}

static void
control_token_and_ping(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(control(f->ing, "nope", SURGE_CTL_PING, -1), SURGE_ETOKEN);
    assert_string_equal(treply.u.control_reply.message, "wrong study token");
    assert_int_equal(control(f->ing, "secret", SURGE_CTL_PING, -1), 0);
    assert_non_null(strstr(treply.u.control_reply.message, "assembled=0"));
    assert_int_equal(control(f->ing, "secret", 99, -1), SURGE_EPROTO);
    assert_int_equal(control(f->ing, "secret", SURGE_CTL_SIM_FAILED, -1),
                     SURGE_EPROTO);
    assert_false(surge_ingest_end_requested(f->ing));
    assert_int_equal(control(f->ing, "secret", SURGE_CTL_END_RECEPTION, -1), 0);
    assert_true(surge_ingest_end_requested(f->ing));
    assert_int_equal(control(f->ing, "secret", SURGE_CTL_SHUTDOWN, -1), 0);
    assert_true(surge_ingest_shutdown_requested(f->ing));
    const surge_counters *c = surge_ingest_counters(f->ing);
    assert_int_equal(c->messages.dropped[SURGE_MDROP_CONTROL_REJECTED], 3);
}

static void
retry_refuses_assembled_steps(void **state)
{
    struct fixture *f = *state;
    float v[4] = {1, 2, 3, 4};
    const surge_counters *c = surge_ingest_counters(f->ing);
    join(f, "a", 5, 0);
    join(f, "b", 5, 1);
    send_slice(f->ing, "a", 5, 0, 0, 0.0, 0, 0, 4, v);
    send_slice(f->ing, "b", 5, 1, 0, 0.0, 0, 4, 4, v);
    send_slice(f->ing, "a", 5, 0, 1, 0.1, 0, 0, 4, v); /* then it dies */
    assert_int_equal(control(f->ing, "secret", SURGE_CTL_SIM_FAILED, 5), 0);
    assert_int_equal(c->steps.dropped[SURGE_TDROP_SIM_FAILED], 1);
    /* The dead ranks' sessions are gone. */
    send_slice(f->ing, "b", 5, 1, 1, 0.1, 0, 4, 4, v);
    assert_int_equal(c->messages.dropped[SURGE_MDROP_UNKNOWN_SESSION], 1);
    assert_int_equal(say_hello(f->ing, "a2", "secret", 5, 0, 2, P, 2, U0, 1),
                     SURGE_MSG_REJECT);
    assert_int_equal(control(f->ing, "secret", SURGE_CTL_SIM_RETRY, 5), 0);
    join(f, "a2", 5, 0);
    join(f, "b2", 5, 1);
    for (int s = 0; s < 2; s++) {
        send_slice(f->ing, "a2", 5, 0, s, s * 0.1, 0, 0, 4, v);
        send_slice(f->ing, "b2", 5, 1, s, s * 0.1, 0, 4, 4, v);
    }
    assert_int_equal(c->slices.dropped[SURGE_SDROP_STEP_ASSEMBLED], 2);
    assert_int_equal(c->steps.assembled, 2); /* step 0 once, step 1 once */
    /* The refused repeats are not lost: bye_ack counts them, so the
     * retried client's close succeeds. */
    assert_int_equal(say_bye(f->ing, "a2", 5, 0, 2), SURGE_MSG_BYE_ACK);
    assert_int_equal(treply.u.bye_ack.slices, 2);
    assert_int_equal(c->sims.retried, 1);
    assert_int_equal(c->sims.failed, 1);
}

static void
timeout_fails_silent_sim(void **state)
{
    struct fixture *f = *state;
    float v[4] = {1, 2, 3, 4};
    const surge_counters *c = surge_ingest_counters(f->ing);
    join(f, "a", 3, 0);
    send_slice_ex(f->ing, "a", 3, 0, 0, 0.0, 0, 0, 4, v, 16, 2000000000);
    surge_ingest_tick(f->ing, 6000000000); /* 4 s later: alive */
    assert_int_equal(surge_ingest_active_sims(f->ing), 1);
    surge_ingest_tick(f->ing, 7000000001); /* 5 s later: failed */
    assert_int_equal(surge_ingest_active_sims(f->ing), 0);
    assert_int_equal(c->sims.timed_out, 1);
    assert_int_equal(c->steps.dropped[SURGE_TDROP_SIM_TIMEOUT], 1);
}

static void
raw_frames_through_codec(void **state)
{
    struct fixture *f = *state;
    const surge_counters *c = surge_ingest_counters(f->ing);
    unsigned char buf[SURGE_MAX_HEADER_BYTES + 16];
    /* Not msgpack at all. */
    memset(buf, 0xc1, 64);
    assert_int_equal(surge_ingest_handle_raw(f->ing, RID("r"), buf, 64, NULL, 0,
                                             0, 70, 1, &treply),
                     0);
    assert_int_equal(c->messages.dropped[SURGE_MDROP_BAD_HEADER], 1);
    /* Too large before decoding. */
    assert_int_equal(surge_ingest_handle_raw(f->ing, RID("r"), buf,
                                             SURGE_MAX_HEADER_BYTES + 1, NULL,
                                             0, 0, 70, 1, &treply),
                     0);
    assert_int_equal(c->messages.dropped[SURGE_MDROP_HEADER_TOO_LARGE], 1);
    /* No header frame. */
    surge_ingest_handle_raw(f->ing, RID("r"), NULL, 0, NULL, 0, 0, 5, 1,
                            &treply);
    assert_int_equal(c->messages.dropped[SURGE_MDROP_BAD_FRAMES], 1);
    /* A real hello, encoded then truncated, then whole. */
    make_hello(&tmsg, "secret", 8, 0, 1, P, 2, U0, 1);
    tmsg.u.hello.fields[0].global_size = 4;
    int n = surge_proto_encode(&tmsg, buf, sizeof buf);
    assert_true(n > 0);
    assert_int_equal(surge_ingest_handle_raw(f->ing, RID("r"), buf,
                                             (size_t)n - 3, NULL, 0, 0, 70, 1,
                                             &treply),
                     0);
    assert_int_equal(c->messages.dropped[SURGE_MDROP_BAD_HEADER], 2);
    assert_int_equal(surge_ingest_handle_raw(f->ing, RID("r"), buf, (size_t)n,
                                             NULL, 0, 0, 70, 1, &treply),
                     1);
    assert_int_equal(treply.type, SURGE_MSG_WELCOME);
    /* A hello with a payload frame is malformed. */
    assert_int_equal(surge_ingest_handle_raw(f->ing, RID("q"), buf, (size_t)n,
                                             buf, 4, 1, 70, 1, &treply),
                     0);
    assert_int_equal(c->messages.dropped[SURGE_MDROP_BAD_FRAMES], 2);
    /* A server-to-client type sent to the server. */
    memset(&tmsg, 0, sizeof tmsg);
    tmsg.type = SURGE_MSG_WELCOME;
    tmsg.u.welcome.max_payload_bytes = 1024;
    n = surge_proto_encode(&tmsg, buf, sizeof buf);
    assert_true(n > 0);
    surge_ingest_handle_raw(f->ing, RID("r"), buf, (size_t)n, NULL, 0, 0, 9, 1,
                            &treply);
    assert_int_equal(c->messages.dropped[SURGE_MDROP_UNEXPECTED_TYPE], 1);
    assert_int_equal(c->messages.received, 7);
}

/* A hello as raw msgpack, with values the encoder would refuse: what a
 * broken or hostile client puts on the wire. */
struct raw_hello {
    int64_t sim, rank, nranks;
    double param;     /* the one parameter */
    uint32_t nfields; /* fields "f0".."fN-1" of 8 elements, whole */
    uint64_t offset;  /* of field 0 */
    uint64_t count;   /* of field 0 */
    const char *dtype;
};

static size_t
pack_hello(const struct raw_hello *h, unsigned char *out, size_t cap)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    const char *keys[] = {"v",      "type",   "token",  "sim",   "rank",
                          "nranks", "params", "fields", "dtype", "run_key"};
    msgpack_pack_map(&pk, 10);
    for (size_t k = 0; k < 10; k++) {
        msgpack_pack_str(&pk, strlen(keys[k]));
        msgpack_pack_str_body(&pk, keys[k], strlen(keys[k]));
        switch (k) {
        case 0:
            msgpack_pack_uint64(&pk, 1);
            break;
        case 1:
            msgpack_pack_str(&pk, 5);
            msgpack_pack_str_body(&pk, "hello", 5);
            break;
        case 2:
            msgpack_pack_str(&pk, 6);
            msgpack_pack_str_body(&pk, "secret", 6);
            break;
        case 3:
            msgpack_pack_int64(&pk, h->sim);
            break;
        case 4:
            msgpack_pack_int64(&pk, h->rank);
            break;
        case 5:
            msgpack_pack_int64(&pk, h->nranks);
            break;
        case 6:
            msgpack_pack_array(&pk, 1);
            msgpack_pack_double(&pk, h->param);
            break;
        case 7:
            msgpack_pack_array(&pk, h->nfields);
            for (uint32_t f = 0; f < h->nfields; f++) {
                char name[8];
                snprintf(name, sizeof name, "f%u", f);
                msgpack_pack_map(&pk, 4);
                msgpack_pack_str(&pk, 4);
                msgpack_pack_str_body(&pk, "name", 4);
                msgpack_pack_str(&pk, strlen(name));
                msgpack_pack_str_body(&pk, name, strlen(name));
                msgpack_pack_str(&pk, 4);
                msgpack_pack_str_body(&pk, "size", 4);
                msgpack_pack_uint64(&pk, 8);
                msgpack_pack_str(&pk, 6);
                msgpack_pack_str_body(&pk, "offset", 6);
                msgpack_pack_uint64(&pk, f == 0 ? h->offset : 0);
                msgpack_pack_str(&pk, 5);
                msgpack_pack_str_body(&pk, "count", 5);
                msgpack_pack_uint64(&pk, f == 0 ? h->count : 8);
            }
            break;
        case 8:
            msgpack_pack_str(&pk, strlen(h->dtype));
            msgpack_pack_str_body(&pk, h->dtype, strlen(h->dtype));
            break;
        default: {
            /* The sim's run key, as the launcher hands it to the run
             * (empty for a negative sim, which the codec refuses first). */
            char key[SURGE_RUN_KEY_HEX + 1] = "";
            if (h->sim >= 0) {
                assert_int_equal(surge_run_key("secret", h->sim, key), 0);
            }
            msgpack_pack_str(&pk, strlen(key));
            msgpack_pack_str_body(&pk, key, strlen(key));
            break;
        }
        }
    }
    size_t n = sb.size <= cap ? sb.size : 0;
    memcpy(out, sb.data, n);
    msgpack_sbuffer_destroy(&sb);
    return n;
}

/* A hello the codec refuses is answered with a reject naming the rule it
 * broke (docs/protocol.md), not left for the client to time out on. */
static void
hello_malformed_gets_reject(void **state)
{
    struct fixture *f = *state;
    const surge_counters *c = surge_ingest_counters(f->ing);
    const struct raw_hello good = {1, 0, 1, 0.5, 1, 0, 8, "f32"};
    struct {
        struct raw_hello h;
        int code;
        const char *says;
    } cases[] = {
        {good, 0, NULL},
        {good, SURGE_EDTYPE, "dtype"},
        {good, SURGE_EPROTO, "params[0]"},
        {good, SURGE_EPROTO, "sim"},
        {good, SURGE_EPROTO, "rank"},
        {good, SURGE_EBOUNDS, "offset + count"},
        {good, SURGE_ELIMIT, "fields"},
        {good, SURGE_EPROTO, "rank"},
    };
    cases[1].h.dtype = "f64";
    cases[2].h.param = NAN;
    cases[3].h.sim = -4;
    cases[4].h.rank = 2;
    cases[4].h.nranks = 2;
    cases[5].h.offset = UINT64_MAX - 2;
    cases[5].h.count = 4;
    cases[6].h.nfields = SURGE_MAX_FIELDS + 1;
    cases[7].h.rank = -1;
    unsigned char buf[SURGE_MAX_HEADER_BYTES];
    for (size_t i = 1; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = pack_hello(&cases[i].h, buf, sizeof buf);
        assert_true(n > 0);
        memset(&treply, 0, sizeof treply);
        assert_int_equal(surge_ingest_handle_raw(f->ing, RID("m"), buf, n, NULL,
                                                 0, 0, n, 1, &treply),
                         1);
        assert_int_equal(treply.type, SURGE_MSG_REJECT);
        assert_int_equal(treply.u.reject.code, cases[i].code);
        assert_non_null(strstr(treply.u.reject.reason, cases[i].says));
        /* The reject itself must go on the wire. */
        assert_true(surge_proto_encode(&treply, buf, sizeof buf) > 0);
    }
    size_t ncases = sizeof cases / sizeof cases[0] - 1;
    assert_int_equal(c->messages.hello, ncases);
    assert_int_equal(c->sims.rejected, ncases);
    assert_int_equal(c->messages.dropped[SURGE_MDROP_HELLO_REJECTED], ncases);
    /* The same peer may then say a good hello. */
    size_t n = pack_hello(&good, buf, sizeof buf);
    assert_int_equal(surge_ingest_handle_raw(f->ing, RID("m"), buf, n, NULL, 0,
                                             0, n, 1, &treply),
                     1);
    assert_int_equal(treply.type, SURGE_MSG_WELCOME);
    /* Other malformed types still get no answer (no reply amplification). */
    static const unsigned char data_hdr[] = {0x82, 0xa1, 'v', 0x01, 0xa4,
                                             't',  'y',  'p', 'e',  0xa4,
                                             'd',  'a',  't', 'a'};
    memcpy(buf, data_hdr, sizeof data_hdr);
    assert_int_equal(surge_ingest_handle_raw(f->ing, RID("m"), buf, 14, NULL, 0,
                                             0, 14, 1, &treply),
                     0);
}

/* A rank 0 of 2 whose rank 1 never comes must not keep the end of
 * reception waiting (issue 9, item 2). */
static void
half_joined_sim_settled_at_end(void **state)
{
    struct fixture *f = *state;
    float v[4] = {1, 2, 3, 4};
    join(f, "a", 3, 0);
    send_slice(f->ing, "a", 3, 0, 0, 0.0, 0, 0, 4, v);
    /* A complete sim alongside is not touched. */
    join(f, "c", 4, 0);
    join(f, "d", 4, 1);
    assert_int_equal(control(f->ing, "secret", SURGE_CTL_END_RECEPTION, -1), 0);
    assert_int_equal(surge_ingest_active_sims(f->ing), 1);
    assert_int_equal(say_bye(f->ing, "c", 4, 0, 0), SURGE_MSG_BYE_ACK);
    assert_int_equal(say_bye(f->ing, "d", 4, 1, 0), SURGE_MSG_BYE_ACK);
    assert_true(surge_ingest_all_done(f->ing));
    const surge_counters *c = surge_ingest_counters(f->ing);
    assert_int_equal(c->sims.not_joined, 1);
    assert_int_equal(c->steps.dropped[SURGE_TDROP_SIM_NOT_JOINED], 1);
    /* Its session is gone and the missing rank is told why. */
    assert_int_equal(say_hello(f->ing, "b", "secret", 3, 1, 2, P, 2, U1, 1),
                     SURGE_MSG_REJECT);
    assert_non_null(strstr(treply.u.reject.reason, "not joined"));
    /* A multi-rank sim opened after the end is settled at the next tick. */
    join(f, "e", 9, 0);
    surge_ingest_tick(f->ing, 2000);
    assert_true(surge_ingest_all_done(f->ing));
    assert_int_equal(c->sims.not_joined, 2);
}

/* Joining has its own, shorter timeout, counted from the first hello: data
 * from the ranks that did join does not extend it. */
static void
join_timeout_fails_half_joined_sim(void **state)
{
    struct fixture *f = *state;
    float v[4] = {1, 2, 3, 4};
    const surge_counters *c = surge_ingest_counters(f->ing);
    f->o.join_timeout_s = 2;
    join(f, "a", 3, 0); /* at t = 1000 ns */
    for (int s = 0; s < 3; s++) {
        send_slice_ex(f->ing, "a", 3, 0, s, 0.0, 0, 0, 4, v, 16,
                      (uint64_t)(s + 1) * 600000000u);
    }
    join(f, "c", 4, 0);
    join(f, "d", 4, 1); /* complete: no join timeout */
    surge_ingest_tick(f->ing, 1900000000);
    assert_int_equal(surge_ingest_active_sims(f->ing), 2);
    surge_ingest_tick(f->ing, 2000001000);
    assert_int_equal(surge_ingest_active_sims(f->ing), 1);
    assert_int_equal(c->sims.not_joined, 1);
    assert_int_equal(c->steps.dropped[SURGE_TDROP_SIM_NOT_JOINED], 3);
    struct surge_run_info runs[4];
    assert_int_equal(surge_ingest_runs(f->ing, runs, 4, 2000001000), 2);
    assert_string_equal(runs[0].state, "not_joined");
    /* A retry reopens it with a fresh join clock. */
    assert_int_equal(control(f->ing, "secret", SURGE_CTL_SIM_RETRY, 3), 0);
    join(f, "a2", 3, 0);
    join(f, "b2", 3, 1);
    surge_ingest_tick(f->ing, 4000000000);
    assert_int_equal(surge_ingest_active_sims(f->ing), 2);
}

/* The number of sims waiting for their ranks is bounded. */
static void
max_joining_sims_bounds_waiting(void **state)
{
    struct fixture *f = *state;
    f->o.max_joining_sims = 2;
    join(f, "a", 1, 0);
    join(f, "b", 2, 0);
    assert_int_equal(say_hello(f->ing, "c", "secret", 3, 0, 2, P, 2, U0, 1),
                     SURGE_MSG_REJECT);
    assert_int_equal(treply.u.reject.code, SURGE_ELIMIT);
    assert_non_null(strstr(treply.u.reject.reason, "max-joining-sims"));
    /* Single-rank sims and the missing ranks of waiting sims still come. */
    static const struct tfield W[1] = {{"u", 8, 0, 8}};
    assert_int_equal(say_hello(f->ing, "s", "secret", 7, 0, 1, P, 2, W, 1),
                     SURGE_MSG_WELCOME);
    join(f, "a1", 1, 1);
    /* One slot is free again. */
    join(f, "c", 3, 0);
    /* A failed sim frees its slot too. */
    assert_int_equal(control(f->ing, "secret", SURGE_CTL_SIM_FAILED, 2), 0);
    join(f, "d", 4, 0);
    assert_int_equal(surge_ingest_counters(f->ing)->sims.rejected, 1);
}

/* The list the welcomes of a server of two ranks carry. */
static surge_msg_welcome two_servers;

static void
set_two_servers(struct fixture *f, uint32_t rank, int route,
                void (*cb)(void *, int, int64_t), void *arg)
{
    memset(&two_servers, 0, sizeof two_servers);
    surge_proto_welcome_add_endpoint(&two_servers, "tcp://127.0.0.1:7000");
    surge_proto_welcome_add_endpoint(&two_servers, "tcp://127.0.0.1:7001");
    surge_ingest_set_ranks(f->ing, rank, 2, route, &two_servers, cb, arg);
}

/* Server rank 1 of 2, routing by step: the welcome lists both ranks and
 * names rank 1; data for a step of rank 0 is dropped whole as
 * wrong_server_rank (a client routing wrong would split the step); control
 * other than ping is refused and names rank 0; a control relayed from
 * rank 0 applies without a token and without counting a message. */
static void
ranks_route_by_step(void **state)
{
    struct fixture *f = *state;
    set_two_servers(f, 1, SURGE_ROUTE_STEP, NULL, NULL);
    join(f, "a", 3, 0);
    assert_int_equal(treply.u.welcome.nservers, 2);
    assert_int_equal(treply.u.welcome.server_rank, 1);
    assert_int_equal(treply.u.welcome.route, SURGE_ROUTE_STEP);
    assert_int_equal(treply.u.welcome.redirect, 0);
    assert_string_equal(surge_proto_welcome_endpoint(&treply.u.welcome, 1),
                        "tcp://127.0.0.1:7001");
    join(f, "b", 3, 1);
    float v[4] = {1, 2, 3, 4};
    surge_counters *c = surge_ingest_counters(f->ing);
    send_slice(f->ing, "a", 3, 0, 2, 0.0, 0, 0, 4, v);
    assert_int_equal(c->messages.dropped[SURGE_MDROP_WRONG_SERVER_RANK], 1);
    assert_int_equal(c->slices.accepted, 0);
    send_slice(f->ing, "a", 3, 0, 5, 0.0, 0, 0, 4, v);
    send_slice(f->ing, "b", 3, 1, 5, 0.0, 0, 4, 4, v);
    assert_int_equal(c->steps.assembled, 1);
    assert_int_equal(control(f->ing, "secret", SURGE_CTL_END_RECEPTION, -1),
                     SURGE_EPROTO);
    assert_non_null(strstr(treply.u.control_reply.message, "rank 0"));
    assert_false(surge_ingest_end_requested(f->ing));
    assert_int_equal(control(f->ing, "secret", SURGE_CTL_PING, -1), 0);
    uint64_t handled = c->messages.handled;
    assert_int_equal(
        surge_ingest_relayed_control(f->ing, SURGE_CTL_END_RECEPTION, -1, 2000),
        0);
    assert_true(surge_ingest_end_requested(f->ing));
    assert_int_equal(c->messages.handled, handled);
    assert_int_equal(
        surge_ingest_relayed_control(f->ing, SURGE_CTL_PING, -1, 2000),
        SURGE_EPROTO);
    assert_true(counts_add_up(f->ing));
}

/* Server rank 0 of 2, routing by sim: a hello for an odd sim gets a
 * redirecting welcome and leaves no session (nothing to say bye to); an
 * even sim joins here. */
static void
ranks_route_by_sim(void **state)
{
    struct fixture *f = *state;
    set_two_servers(f, 0, SURGE_ROUTE_SIM, NULL, NULL);
    join(f, "a", 5, 0);
    assert_int_equal(treply.u.welcome.redirect, 1);
    assert_int_equal(treply.u.welcome.server_rank, 0);
    assert_int_equal(treply.u.welcome.route, SURGE_ROUTE_SIM);
    assert_false(surge_ingest_has_session(f->ing, RID("a")));
    surge_counters *c = surge_ingest_counters(f->ing);
    assert_int_equal(c->sims.redirected, 1);
    assert_int_equal(c->sims.hello, 0);
    join(f, "b", 4, 0);
    assert_int_equal(treply.u.welcome.redirect, 0);
    assert_true(surge_ingest_has_session(f->ing, RID("b")));
    assert_int_equal(surge_ingest_active_sims(f->ing), 1);
    assert_true(counts_add_up(f->ing));
}

static int relayed_op;
static int64_t relayed_sim;
static int relayed_calls;

static void
relay_cb(void *arg, int op, int64_t sim)
{
    (void)arg;
    relayed_op = op;
    relayed_sim = sim;
    relayed_calls++;
}

/* Rank 0 hands every successful control other than ping to its relay;
 * a refused one (wrong token) is not relayed. */
static void
ranks_rank0_relays_control(void **state)
{
    struct fixture *f = *state;
    relayed_calls = 0;
    set_two_servers(f, 0, SURGE_ROUTE_STEP, relay_cb, NULL);
    assert_int_equal(control(f->ing, "secret", SURGE_CTL_PING, -1), 0);
    assert_int_equal(relayed_calls, 0);
    assert_int_equal(control(f->ing, "wrong", SURGE_CTL_SIM_FAILED, 7),
                     SURGE_ETOKEN);
    assert_int_equal(relayed_calls, 0);
    assert_int_equal(control(f->ing, "secret", SURGE_CTL_SIM_FAILED, 7), 0);
    assert_int_equal(relayed_calls, 1);
    assert_int_equal(relayed_op, SURGE_CTL_SIM_FAILED);
    assert_int_equal(relayed_sim, 7);
    assert_int_equal(control(f->ing, "secret", SURGE_CTL_END_RECEPTION, -1), 0);
    assert_int_equal(relayed_calls, 2);
    assert_int_equal(relayed_op, SURGE_CTL_END_RECEPTION);
}

int
main(void)
{
    /* Rejections are logged as warnings; keep the test output readable. */
    surge_log_set_level(SURGE_LOG_ERROR);
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(hello_welcome),
        T(hello_declares_steps),
        T(hello_records_output_fields),
        T(half_joined_sim_settled_at_end),
        T(join_timeout_fails_half_joined_sim),
        T(max_joining_sims_bounds_waiting),
        T(hello_malformed_gets_reject),
        T(hello_wrong_token),
        T(hello_needs_its_run_key),
        T(hello_open_server_needs_no_key),
        T(hello_rank_out_of_range),
        T(hello_global_size_differs),
        T(hello_other_mismatches),
        T(hello_duplicate_rank_and_connection),
        T(hello_slices_overlap),
        T(hello_slices_leave_gap),
        T(hello_duplicate_field_and_dtype),
        T(hello_sample_too_big),
        T(hello_shape_must_match_study),
        T(data_without_hello),
        T(data_checked_before_copy),
        T(bye_acks_accepted_slices),
        T(control_token_and_ping),
        T(retry_refuses_assembled_steps),
        T(timeout_fails_silent_sim),
        T(raw_frames_through_codec),
        T(ranks_route_by_step),
        T(ranks_route_by_sim),
        T(ranks_rank0_relays_control),
#undef T
    };
    return cmocka_run_group_tests_name("server_sessions", tests, NULL, NULL);
}
