/*
 * server/counters.c - reason names and the consistency check of the
 * server's counters (see counters.h).
 */
#include "config.h"

#include <stddef.h>

#include "server/counters.h"

static const char *const msg_drop_names[SURGE_MDROP__COUNT] = {
    "header_too_large", "bad_header",           "bad_version",
    "bad_frames",       "unexpected_type",      "hello_rejected",
    "control_rejected", "unknown_session",      "session_mismatch",
    "bad_dtype",        "bad_payload_size",     "bad_field",
    "bad_slice",        "presession_too_large", "wrong_server_rank"};

static const char *const slice_drop_names[SURGE_SDROP__COUNT] = {
    "message_dropped", "duplicate", "step_assembled", "step_dropped",
    "assembly_memory"};

static const char *const step_drop_names[SURGE_TDROP__COUNT] = {
    "assembly_memory", "sim_failed",  "sim_retry",     "sim_finished",
    "sim_timeout",     "server_stop", "sim_not_joined"};

static const char *const sample_drop_names[SURGE_PDROP__COUNT] = {
    "validation_full", "server_stop", "validation_not_sampled"};

#define NAME_OF(table, n, r) ((r) >= 0 && (r) < (n) ? (table)[(r)] : "unknown")

const char *
surge_msg_drop_name(int reason)
{
    return NAME_OF(msg_drop_names, SURGE_MDROP__COUNT, reason);
}

const char *
surge_slice_drop_name(int reason)
{
    return NAME_OF(slice_drop_names, SURGE_SDROP__COUNT, reason);
}

const char *
surge_step_drop_name(int reason)
{
    return NAME_OF(step_drop_names, SURGE_TDROP__COUNT, reason);
}

const char *
surge_sample_drop_name(int reason)
{
    return NAME_OF(sample_drop_names, SURGE_PDROP__COUNT, reason);
}

static uint64_t
sum(const uint64_t *v, int n)
{
    uint64_t s = 0;
    for (int i = 0; i < n; i++) {
        s += v[i];
    }
    return s;
}

int
surge_counters_check(const surge_counters *c, const char **what)
{
    const char *bad = NULL;
    if (c->messages.received !=
        c->messages.handled + sum(c->messages.dropped, SURGE_MDROP__COUNT)) {
        bad = "messages.received != handled + dropped";
    } else if (c->slices.received !=
               c->slices.accepted +
                   sum(c->slices.dropped, SURGE_SDROP__COUNT)) {
        bad = "slices.received != accepted + dropped";
    } else if (c->steps.started !=
               c->steps.assembled + c->steps.in_progress +
                   sum(c->steps.dropped, SURGE_TDROP__COUNT)) {
        bad = "steps.started != assembled + in_progress + dropped";
    } else if (c->steps.assembled !=
               c->samples.train + c->samples.validation + c->samples.pending +
                   sum(c->samples.dropped, SURGE_PDROP__COUNT)) {
        bad = "steps.assembled != train + validation + pending + dropped";
    }
    if (what != NULL) {
        *what = bad;
    }
    return bad == NULL ? 0 : -1;
}
