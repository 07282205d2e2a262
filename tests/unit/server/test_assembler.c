/*
 * tests/unit/server/test_assembler.c - assembly of slices into samples
 * (server/ingest.c): vectors laid out as declared, completion only when
 * every slice came, bounded assembly memory with eviction of the oldest
 * partial step, duplicates, coalesced messages, backpressure through a
 * full store, validation routing, the checksum log, and a message that
 * carries a whole step going straight into a store slot. Counts add up
 * after every test.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <surge/client.h>

#include "common/log.h"
#include "server_test.h"

struct fixture {
    surge_server_options o;
    surge_store *train;
    surge_store *valid;
    surge_ingest *ing;
    FILE *log;
    char *logbuf;
    size_t loglen;
};

static const double P[3] = {0.25, 2.0, -1.0};
/* Two ranks, two fields: "a" has 6 elements (rank 0: 4, rank 1: 2), "b"
 * has 3 (rank 0 owns none, rank 1 all). Output vector: a[0..5] b[0..2]. */
static const struct tfield R0[2] = {{"a", 6, 0, 4}, {"b", 3, 0, 0}};
static const struct tfield R1[2] = {{"a", 6, 4, 2}, {"b", 3, 0, 3}};
#define NOUT 9
#define NIN 4

/* Bytes of the validation store (a keep store) for the next make(). */
static uint64_t valid_bytes = 1 << 16;

static int
make(void **state, uint64_t store_bytes, uint64_t partial_bytes,
     uint32_t validation_every)
{
    struct fixture *f = calloc(1, sizeof *f);
    if (f == NULL) {
        return -1;
    }
    surge_server_options_init(&f->o);
    f->o.token[0] = '\0';
    f->o.store_bytes = store_bytes;
    f->o.max_partial_bytes = partial_bytes;
    f->o.validation_every = validation_every;
    f->o.log_level = 0;
    /* The server's training store: the reservoir, policy fifo. */
    static surge_reservoir_config rc;
    surge_reservoir_config_init(&rc);
    rc.policy = SURGE_RESERVOIR_FIFO;
    rc.capacity_bytes = store_bytes;
    rc.max_batch = 2;
    surge_store_config sc = {"train", SURGE_STORE_STREAM, 0, &rc};
    surge_store_config vc = {"validation", SURGE_STORE_KEEP, valid_bytes, NULL};
    f->log = open_memstream(&f->logbuf, &f->loglen);
    if (f->log == NULL || surge_store_create(&f->train, &sc) != 0 ||
        surge_store_create(&f->valid, &vc) != 0 ||
        surge_ingest_create(&f->ing, &f->o, f->train, f->valid, f->log) != 0) {
        return -1;
    }
    *state = f;
    return 0;
}

static int
setup(void **state)
{
    return make(state, 1 << 20, 1 << 20, 0);
}

static int
teardown(void **state)
{
    struct fixture *f = *state;
    surge_ingest_stop(f->ing);
    int ok = counts_add_up(f->ing);
    surge_ingest_destroy(&f->ing);
    surge_store_destroy(&f->train);
    surge_store_destroy(&f->valid);
    fclose(f->log);
    free(f->logbuf);
    free(f);
    return ok ? 0 : -1;
}

static void
join_both(struct fixture *f, int64_t sim)
{
    char r0[16], r1[16];
    snprintf(r0, sizeof r0, "s%" PRId64 "r0", sim);
    snprintf(r1, sizeof r1, "s%" PRId64 "r1", sim);
    assert_int_equal(say_hello(f->ing, r0, "", sim, 0, 2, P, 3, R0, 2),
                     SURGE_MSG_WELCOME);
    assert_int_equal(say_hello(f->ing, r1, "", sim, 1, 2, P, 3, R1, 2),
                     SURGE_MSG_WELCOME);
}

/* Values of step s: a = 10s + i, b = 100 + 10s + i. */
static void
send_step(struct fixture *f, int64_t sim, int64_t step, int which)
{
    char r0[16], r1[16];
    snprintf(r0, sizeof r0, "s%" PRId64 "r0", sim);
    snprintf(r1, sizeof r1, "s%" PRId64 "r1", sim);
    float a0[4], a1[2], b1[3];
    for (int i = 0; i < 4; i++) {
        a0[i] = (float)(10 * step + i);
    }
    for (int i = 0; i < 2; i++) {
        a1[i] = (float)(10 * step + 4 + i);
    }
    for (int i = 0; i < 3; i++) {
        b1[i] = (float)(100 + 10 * step + i);
    }
    double t = 0.5 * (double)step;
    if (which & 1) {
        send_slice(f->ing, r0, sim, 0, step, t, 0, 0, 4, a0);
    }
    if (which & 2) {
        send_slice(f->ing, r1, sim, 1, step, t, 0, 4, 2, a1);
    }
    if (which & 4) {
        send_slice(f->ing, r1, sim, 1, step, t, 1, 0, 3, b1);
    }
}

static void
check_sample(const float *in, const float *out, int64_t step)
{
    for (int i = 0; i < 3; i++) {
        assert_true(in[i] == (float)P[i]);
    }
    assert_true(in[3] == (float)(0.5 * (double)step));
    for (int i = 0; i < 6; i++) {
        assert_true(out[i] == (float)(10 * step + i));
    }
    for (int i = 0; i < 3; i++) {
        assert_true(out[6 + i] == (float)(100 + 10 * step + i));
    }
}

static void
assembles_only_when_complete(void **state)
{
    struct fixture *f = *state;
    const surge_counters *c = surge_ingest_counters(f->ing);
    join_both(f, 2);
    send_step(f, 2, 7, 1 | 4);
    assert_int_equal(c->steps.assembled, 0);
    assert_int_equal(c->steps.in_progress, 1);
    send_step(f, 2, 7, 2);
    assert_int_equal(c->steps.assembled, 1);
    assert_int_equal(c->steps.in_progress, 0);
    assert_int_equal(c->samples.train, 1);
    float in[NIN], out[NOUT];
    int64_t sim, step;
    assert_int_equal(
        surge_store_get_batch(f->train, 1, in, out, &sim, &step, 0), 1);
    assert_int_equal(sim, 2);
    assert_int_equal(step, 7);
    check_sample(in, out, 7);
    assert_int_equal(c->slices.accepted, 3);
    assert_int_equal(c->slices.bytes, (4 + 2 + 3) * 4);
}

static void
data_before_all_joined(void **state)
{
    struct fixture *f = *state;
    const surge_counters *c = surge_ingest_counters(f->ing);
    /* Rank 1 joins and sends everything it owns before rank 0 joins. */
    assert_int_equal(say_hello(f->ing, "s1r1", "", 1, 1, 2, P, 3, R1, 2),
                     SURGE_MSG_WELCOME);
    send_step(f, 1, 0, 2 | 4);
    assert_int_equal(c->steps.in_progress, 1);
    assert_int_equal(say_hello(f->ing, "s1r0", "", 1, 0, 2, P, 3, R0, 2),
                     SURGE_MSG_WELCOME);
    send_step(f, 1, 0, 1);
    assert_int_equal(c->steps.assembled, 1);
}

static void
rank_owning_nothing_completes_on_join(void **state)
{
    struct fixture *f = *state;
    const surge_counters *c = surge_ingest_counters(f->ing);
    /* Rank 1 owns nothing at all: its join completes rank 0's steps. */
    const struct tfield all[1] = {{"u", 4, 0, 4}};
    const struct tfield none[1] = {{"u", 4, 4, 0}};
    assert_int_equal(say_hello(f->ing, "x0", "", 6, 0, 2, P, 3, all, 1),
                     SURGE_MSG_WELCOME);
    float v[4] = {1, 2, 3, 4};
    send_slice(f->ing, "x0", 6, 0, 0, 0.0, 0, 0, 4, v);
    send_slice(f->ing, "x0", 6, 0, 1, 0.0, 0, 0, 4, v);
    assert_int_equal(c->steps.assembled, 0);
    assert_int_equal(say_hello(f->ing, "x1", "", 6, 1, 2, P, 3, none, 1),
                     SURGE_MSG_WELCOME);
    assert_int_equal(c->steps.assembled, 2);
}

static void
duplicate_slice_dropped(void **state)
{
    struct fixture *f = *state;
    const surge_counters *c = surge_ingest_counters(f->ing);
    join_both(f, 2);
    send_step(f, 2, 0, 1);
    send_step(f, 2, 0, 1);
    assert_int_equal(c->slices.dropped[SURGE_SDROP_DUPLICATE], 1);
    send_step(f, 2, 0, 2 | 4);
    assert_int_equal(c->steps.assembled, 1);
    /* A slice of an assembled step is refused too. */
    send_step(f, 2, 0, 1);
    assert_int_equal(c->slices.dropped[SURGE_SDROP_STEP_ASSEMBLED], 1);
}

static void
coalesced_items_in_one_message(void **state)
{
    struct fixture *f = *state;
    const surge_counters *c = surge_ingest_counters(f->ing);
    join_both(f, 2);
    /* Rank 1 packs fields a and b of steps 3 and 4 into one message. */
    memset(&tmsg, 0, sizeof tmsg);
    tmsg.type = SURGE_MSG_DATA;
    surge_msg_data *d = &tmsg.u.data;
    d->sim = 2;
    d->rank = 1;
    d->dtype = SURGE_WIRE_F32;
    d->nitems = 4;
    float payload[10];
    int k = 0;
    for (int s = 3; s <= 4; s++) {
        surge_data_item *a = &d->items[(s - 3) * 2];
        surge_data_item *b = &d->items[(s - 3) * 2 + 1];
        a->step = b->step = s;
        a->time = b->time = 0.5 * s;
        a->field = 0;
        a->offset = 4;
        a->count = 2;
        b->field = 1;
        b->offset = 0;
        b->count = 3;
        payload[k++] = (float)(10 * s + 4);
        payload[k++] = (float)(10 * s + 5);
        for (int i = 0; i < 3; i++) {
            payload[k++] = (float)(100 + 10 * s + i);
        }
    }
    surge_ingest_counters(f->ing)->messages.received++;
    assert_int_equal(surge_ingest_handle_msg(f->ing, RID("s2r1"), &tmsg,
                                             payload, sizeof payload, 1, 5,
                                             &treply),
                     0);
    assert_int_equal(c->slices.accepted, 4);
    send_step(f, 2, 3, 1);
    send_step(f, 2, 4, 1);
    assert_int_equal(c->steps.assembled, 2);
    float in[2 * NIN], out[2 * NOUT];
    int64_t steps[2];
    assert_int_equal(
        surge_store_get_batch(f->train, 2, in, out, NULL, steps, 0), 2);
    assert_int_equal(steps[0], 3);
    assert_int_equal(steps[1], 4);
    check_sample(in, out, 3);
    check_sample(in + NIN, out + NOUT, 4);
}

static int
setup_small_memory(void **state)
{
    /* Room for exactly two partial blocks of this shape. */
    return make(state, 1 << 20, 2 * surge_ingest_block_bytes(NOUT, 4), 0);
}

static void
memory_bound_evicts_oldest(void **state)
{
    struct fixture *f = *state;
    const surge_counters *c = surge_ingest_counters(f->ing);
    join_both(f, 2);
    send_step(f, 2, 0, 1);
    send_step(f, 2, 1, 1);
    assert_int_equal(c->steps.in_progress, 2);
    assert_true(surge_ingest_partial_bytes(f->ing) <= f->o.max_partial_bytes);
    send_step(f, 2, 2, 1); /* needs a third block: step 0 goes */
    assert_int_equal(c->steps.dropped[SURGE_TDROP_ASSEMBLY_MEMORY], 1);
    assert_int_equal(c->steps.in_progress, 2);
    assert_true(surge_ingest_partial_bytes(f->ing) <= f->o.max_partial_bytes);
    /* Later slices of the evicted step cannot complete it. */
    send_step(f, 2, 0, 2 | 4);
    assert_int_equal(c->slices.dropped[SURGE_SDROP_STEP_DROPPED], 2);
    /* The others still complete, and their blocks are reused. */
    send_step(f, 2, 1, 2 | 4);
    send_step(f, 2, 2, 2 | 4);
    assert_int_equal(c->steps.assembled, 2);
    for (int s = 10; s < 20; s++) {
        send_step(f, 2, s, 1 | 2 | 4);
    }
    assert_int_equal(c->steps.assembled, 12);
    assert_true(surge_ingest_partial_bytes(f->ing) <= f->o.max_partial_bytes);
}

static int
setup_small_store(void **state)
{
    /* A store of two slots: 13 floats, 52 bytes -> 64-byte slots. */
    return make(state, 128, 1 << 20, 0);
}

static void
full_store_keeps_samples_pending(void **state)
{
    struct fixture *f = *state;
    const surge_counters *c = surge_ingest_counters(f->ing);
    float in2[2 * NIN], out2[2 * NOUT];
    int64_t steps2[2];
    join_both(f, 2);
    send_step(f, 2, 0, 7);
    send_step(f, 2, 1, 7);
    assert_false(surge_ingest_has_pending(f->ing));
    send_step(f, 2, 2, 7);
    assert_true(surge_ingest_has_pending(f->ing));
    assert_int_equal(c->samples.pending, 1);
    assert_int_equal(surge_ingest_flush(f->ing), -EAGAIN);
    float in[NIN], out[NOUT];
    int64_t step;
    assert_int_equal(
        surge_store_get_batch(f->train, 1, in, out, NULL, &step, 0), 1);
    assert_int_equal(step, 0);
    assert_int_equal(surge_ingest_flush(f->ing), 0);
    assert_false(surge_ingest_has_pending(f->ing));
    assert_int_equal(c->samples.train, 3);
    /* Order is kept through the pending queue. */
    assert_int_equal(
        surge_store_get_batch(f->train, 1, in, out, NULL, &step, 0), 1);
    assert_int_equal(step, 1);
    assert_int_equal(
        surge_store_get_batch(f->train, 1, in, out, NULL, &step, 0), 1);
    assert_int_equal(step, 2);
    check_sample(in, out, 2);
    /* The sim ends while its last sample waits for room: the sample still
     * goes in whole once there is room. */
    send_step(f, 2, 6, 7);
    send_step(f, 2, 7, 7);
    send_step(f, 2, 8, 7);
    assert_true(surge_ingest_has_pending(f->ing));
    assert_int_equal(say_bye(f->ing, "s2r0", 2, 0, 6), SURGE_MSG_BYE_ACK);
    assert_int_equal(say_bye(f->ing, "s2r1", 2, 1, 12), SURGE_MSG_BYE_ACK);
    assert_int_equal(surge_ingest_active_sims(f->ing), 0);
    assert_false(surge_ingest_all_done(f->ing)); /* a sample is pending */
    assert_int_equal(
        surge_store_get_batch(f->train, 2, in2, out2, NULL, steps2, 0), 2);
    assert_int_equal(surge_ingest_flush(f->ing), 0);
    assert_true(surge_ingest_all_done(f->ing));
    assert_int_equal(
        surge_store_get_batch(f->train, 1, in, out, NULL, &step, 0), 1);
    assert_int_equal(step, 8);
    check_sample(in, out, 8);
    /* A new sim; stop with a sample pending: counted as dropped at stop. */
    join_both(f, 3);
    send_step(f, 3, 3, 7);
    send_step(f, 3, 4, 7);
    send_step(f, 3, 5, 7);
    assert_true(surge_ingest_has_pending(f->ing));
    surge_ingest_stop(f->ing);
    assert_int_equal(c->samples.dropped[SURGE_PDROP_SERVER_STOP], 1);
}

static int
setup_validation(void **state)
{
    return make(state, 1 << 20, 1 << 20, 2);
}

static void
validation_sims_held_out(void **state)
{
    struct fixture *f = *state;
    const surge_counters *c = surge_ingest_counters(f->ing);
    join_both(f, 0);
    join_both(f, 1); /* 1 % 2 == 1: held out */
    send_step(f, 0, 0, 7);
    send_step(f, 1, 0, 7);
    send_step(f, 1, 1, 7);
    assert_int_equal(c->samples.train, 1);
    assert_int_equal(c->samples.validation, 2);
    surge_store_stats st;
    surge_store_get_stats(f->valid, &st);
    assert_int_equal(st.occupancy, 2);
    float in[NIN], out[NOUT];
    int64_t sim, step;
    assert_int_equal(surge_store_read(f->valid, 1, in, out, &sim, &step), 0);
    assert_int_equal(sim, 1);
    assert_int_equal(step, 1);
    check_sample(in, out, 1);
}

/* Every run held out (validation_every 1) into a store that fits the
 * samples of 10 runs of 2 steps: once full, the set must stay a sample of
 * whole runs spread over the study, not its first 10 runs. */
static int
setup_small_validation(void **state)
{
    valid_bytes = 1; /* the slot size, found below */
    int rc = make(state, 1 << 20, 1 << 20, 1);
    valid_bytes = 1 << 16;
    return rc;
}

static void
validation_keeps_whole_runs_over_the_study(void **state)
{
    struct fixture *f = *state;
    const surge_counters *c = surge_ingest_counters(f->ing);
    /* The slot size: a 1-byte store holds no slot, so make one that holds
     * exactly 20 (its shape is set by the first sample). */
    surge_store_destroy(&f->valid);
    surge_ingest_destroy(&f->ing);
    surge_store_config probe = {"probe", SURGE_STORE_KEEP, 1 << 16, NULL};
    surge_store_stats st;
    assert_int_equal(surge_store_create(&f->valid, &probe), 0);
    assert_int_equal(surge_store_set_shape(f->valid, NIN, NOUT), 0);
    surge_store_get_stats(f->valid, &st);
    uint64_t slot = (1 << 16) / st.capacity;
    surge_store_destroy(&f->valid);
    surge_store_config vc = {"validation", SURGE_STORE_KEEP, 20 * slot, NULL};
    assert_int_equal(surge_store_create(&f->valid, &vc), 0);
    assert_int_equal(
        surge_ingest_create(&f->ing, &f->o, f->train, f->valid, f->log), 0);
    c = surge_ingest_counters(f->ing);
    const int runs = 200;
    for (int64_t sim = 0; sim < runs; sim++) {
        join_both(f, sim);
        send_step(f, sim, 0, 7);
        send_step(f, sim, 1, 7);
    }
    surge_store_get_stats(f->valid, &st);
    assert_int_equal(st.capacity, 20);
    assert_int_equal(st.occupancy, 20);
    assert_int_equal(c->sims.validation_runs, runs);
    assert_int_equal(c->sims.validation_runs_kept, 10);
    /* Every held-out sample is counted: stored (kept now, or evicted
     * later with its run) or not sampled. */
    assert_int_equal(c->samples.validation +
                         c->samples.dropped[SURGE_PDROP_VALIDATION_NOT_SAMPLED],
                     2 * runs);
    assert_int_equal(c->samples.validation - c->samples.validation_evicted,
                     st.occupancy);
    assert_int_equal(c->samples.dropped[SURGE_PDROP_VALIDATION_FULL], 0);
    /* Whole runs: both steps of each run held; spread over the study. */
    int64_t steps_of[200] = {0}, sum = 0, late = 0;
    for (uint64_t i = 0; i < st.occupancy; i++) {
        int64_t sim, step;
        assert_int_equal(surge_store_read(f->valid, i, NULL, NULL, &sim, &step),
                         0);
        steps_of[sim]++;
    }
    for (int64_t sim = 0; sim < runs; sim++) {
        assert_true(steps_of[sim] == 0 || steps_of[sim] == 2);
        if (steps_of[sim] == 2) {
            sum += sim;
            late += sim >= runs / 2;
        }
    }
    /* Uniform over 0..199: the mean of 10 ids is 99.5 +- 18. */
    assert_true(sum / 10 > 40 && sum / 10 < 160);
    assert_true(late > 0);
}

static void
checksum_log_matches_client_sums(void **state)
{
    struct fixture *f = *state;
    join_both(f, 2);
    send_step(f, 2, 5, 7);
    fflush(f->log);
    /* What the two ranks would compute for their own slices, summed. */
    float a0[4], a1[2], b1[3];
    for (int i = 0; i < 4; i++) {
        a0[i] = (float)(50 + i);
    }
    for (int i = 0; i < 2; i++) {
        a1[i] = (float)(54 + i);
    }
    for (int i = 0; i < 3; i++) {
        b1[i] = (float)(150 + i);
    }
    uint64_t want = surge_checksum_f32(a0, 0, 4) +
                    surge_checksum_f32(a1, 4, 2) + surge_checksum_f32(b1, 6, 3);
    char line[128];
    snprintf(line, sizeof line, "2 5 %" PRIu64 "\n", want);
    assert_string_equal(f->logbuf, line);
}

static void
sim_failed_drops_partials(void **state)
{
    struct fixture *f = *state;
    const surge_counters *c = surge_ingest_counters(f->ing);
    join_both(f, 2);
    send_step(f, 2, 0, 7);
    send_step(f, 2, 1, 1);
    send_step(f, 2, 2, 2);
    assert_int_equal(control(f->ing, "", SURGE_CTL_SIM_FAILED, 2), 0);
    assert_int_equal(c->steps.dropped[SURGE_TDROP_SIM_FAILED], 2);
    assert_int_equal(c->steps.in_progress, 0);
    assert_int_equal(c->steps.assembled, 1);
    assert_true(surge_ingest_all_done(f->ing));
}

/* One rank owning both fields: a whole step fits in one message. */
static const struct tfield SOLO[2] = {{"a", 6, 0, 6}, {"b", 3, 0, 3}};

/* Step `step` of a one-rank sim, fields a then b; as one message with two
 * items (whole) or as two messages. Values as send_step. */
static void
send_solo(struct fixture *f, int64_t sim, int64_t step, int whole)
{
    char rid[16];
    snprintf(rid, sizeof rid, "s%" PRId64 "r0", sim);
    float payload[NOUT];
    for (int i = 0; i < 6; i++) {
        payload[i] = (float)(10 * step + i);
    }
    for (int i = 0; i < 3; i++) {
        payload[6 + i] = (float)(100 + 10 * step + i);
    }
    double t = 0.5 * (double)step;
    if (!whole) {
        send_slice(f->ing, rid, sim, 0, step, t, 0, 0, 6, payload);
        send_slice(f->ing, rid, sim, 0, step, t, 1, 0, 3, payload + 6);
        return;
    }
    memset(&tmsg, 0, sizeof tmsg);
    tmsg.type = SURGE_MSG_DATA;
    surge_msg_data *d = &tmsg.u.data;
    d->sim = sim;
    d->rank = 0;
    d->dtype = SURGE_WIRE_F32;
    d->nitems = 2;
    /* b first: the items of a whole step may come in any field order. */
    d->items[0] = (surge_data_item){
        .step = step, .time = t, .field = 1, .offset = 0, .count = 3};
    d->items[1] = (surge_data_item){
        .step = step, .time = t, .field = 0, .offset = 0, .count = 6};
    float wire[NOUT];
    memcpy(wire, payload + 6, 3 * sizeof(float));
    memcpy(wire + 3, payload, 6 * sizeof(float));
    surge_ingest_counters(f->ing)->messages.received++;
    assert_int_equal(surge_ingest_handle_msg(f->ing, RID(rid), &tmsg, wire,
                                             sizeof wire, 1, 5, &treply),
                     0);
}

/* A message that carries a whole step (one rank, every field) is put
 * straight into a reserved store slot: no partial block is used, the
 * sample, the checksum log and the counts are those of the block path, and
 * a full store still turns it into a pending sample (backpressure). */
static void
whole_step_goes_straight_to_the_store(void **state)
{
    struct fixture *f = *state;
    const surge_counters *c = surge_ingest_counters(f->ing);
    assert_int_equal(say_hello(f->ing, "s4r0", "", 4, 0, 1, P, 3, SOLO, 2),
                     SURGE_MSG_WELCOME);
    send_solo(f, 4, 0, 1);
    assert_int_equal(c->steps.assembled, 1);
    assert_int_equal(c->steps.started, 1);
    assert_int_equal(c->slices.accepted, 2);
    assert_int_equal(c->samples.train, 1);
    assert_int_equal(surge_ingest_partial_bytes(f->ing), 0); /* no block */
    send_solo(f, 4, 1, 0); /* two messages: the block path */
    assert_int_equal(c->steps.assembled, 2);
    assert_true(surge_ingest_partial_bytes(f->ing) > 0);
    /* The store (two slots) is full: the next whole step waits pending. */
    send_solo(f, 4, 2, 1);
    assert_int_equal(c->steps.assembled, 3);
    assert_true(surge_ingest_has_pending(f->ing));
    /* While a sample is pending, later ones queue behind it in order. */
    send_solo(f, 4, 3, 1);
    assert_int_equal(c->samples.pending, 2);
    /* A repeat of an assembled step is refused and counted for bye. */
    send_solo(f, 4, 0, 1);
    assert_int_equal(c->slices.dropped[SURGE_SDROP_STEP_ASSEMBLED], 2);
    float in[2 * NIN], out[2 * NOUT];
    int64_t steps[2];
    for (int64_t want = 0; want < 4; want += 2) {
        assert_int_equal(
            surge_store_get_batch(f->train, 2, in, out, NULL, steps, 0), 2);
        for (int i = 0; i < 2; i++) {
            assert_int_equal(steps[i], want + i);
            check_sample(in + i * NIN, out + i * NOUT, want + i);
        }
        surge_ingest_flush(f->ing);
    }
    assert_false(surge_ingest_has_pending(f->ing));
    assert_int_equal(c->samples.train, 4);
    /* bye_ack counts the 8 slices stored plus the 2 refused repeats. */
    assert_int_equal(say_bye(f->ing, "s4r0", 4, 0, 10), SURGE_MSG_BYE_ACK);
    assert_int_equal(treply.u.bye_ack.slices, 10);
    /* One checksum line per step, the same as the block path's. */
    fflush(f->log);
    float a[6], b[3];
    char want[512] = "";
    size_t len = 0;
    for (int64_t st = 0; st < 4; st++) {
        for (int i = 0; i < 6; i++) {
            a[i] = (float)(10 * st + i);
        }
        for (int i = 0; i < 3; i++) {
            b[i] = (float)(100 + 10 * st + i);
        }
        uint64_t sum =
            surge_checksum_f32(a, 0, 6) + surge_checksum_f32(b, 6, 3);
        len += (size_t)snprintf(want + len, sizeof want - len,
                                "4 %" PRId64 " %" PRIu64 "\n", st, sum);
    }
    assert_string_equal(f->logbuf, want);
}

static int
setup_eight_blocks(void **state)
{
    return make(state, 1 << 20, 8 * surge_ingest_block_bytes(NOUT, 4), 0);
}

/* A sim whose second rank never joins streams new steps: it must evict its
 * own partial steps, not those of a slower honest sim (issue 9, item 3),
 * and the record of its dropped steps must stay bounded. */
static void
greedy_sim_evicts_its_own_steps(void **state)
{
    struct fixture *f = *state;
    const surge_counters *c = surge_ingest_counters(f->ing);
    join_both(f, 1);
    for (int s = 0; s < 4; s++) {
        send_step(f, 1, s, 1); /* the honest rank 1 is slow */
    }
    assert_int_equal(say_hello(f->ing, "s2r0", "", 2, 0, 2, P, 3, R0, 2),
                     SURGE_MSG_WELCOME);
    int nsteps = 70000;
    for (int s = 0; s < nsteps; s++) {
        send_step(f, 2, s, 1);
        assert_true(surge_ingest_partial_bytes(f->ing) <=
                    f->o.max_partial_bytes);
    }
    for (int s = 0; s < 4; s++) {
        send_step(f, 1, s, 2 | 4);
    }
    assert_int_equal(c->steps.assembled, 4);
    assert_int_equal(c->steps.dropped[SURGE_TDROP_ASSEMBLY_MEMORY], nsteps - 4);
    /* Every dropped step is counted, but the set that refuses their late
     * slices is bounded. */
    struct surge_run_info runs[2];
    assert_int_equal(surge_ingest_runs(f->ing, runs, 2, 0), 2);
    assert_int_equal(runs[1].dropped, nsteps - 4);
    assert_true(surge_ingest_dropped_records(f->ing) <=
                SURGE_INGEST_DROPPED_RECORDS);
}

int
main(void)
{
    /* Rejections are logged as warnings; keep the test output readable. */
    surge_log_set_level(SURGE_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(assembles_only_when_complete, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(data_before_all_joined, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(rank_owning_nothing_completes_on_join,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(duplicate_slice_dropped, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(coalesced_items_in_one_message, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(memory_bound_evicts_oldest,
                                        setup_small_memory, teardown),
        cmocka_unit_test_setup_teardown(greedy_sim_evicts_its_own_steps,
                                        setup_eight_blocks, teardown),
        cmocka_unit_test_setup_teardown(full_store_keeps_samples_pending,
                                        setup_small_store, teardown),
        cmocka_unit_test_setup_teardown(validation_sims_held_out,
                                        setup_validation, teardown),
        cmocka_unit_test_setup_teardown(
            validation_keeps_whole_runs_over_the_study, setup_small_validation,
            teardown),
        cmocka_unit_test_setup_teardown(checksum_log_matches_client_sums, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(whole_step_goes_straight_to_the_store,
                                        setup_small_store, teardown),
        cmocka_unit_test_setup_teardown(sim_failed_drops_partials, setup,
                                        teardown),
    };
    return cmocka_run_group_tests_name("server_assembler", tests, NULL, NULL);
}
