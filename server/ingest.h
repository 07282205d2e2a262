/*
 * server/ingest.h - the server's protocol logic, without sockets: sessions,
 * validation of every message, assembly of slices into samples, and the
 * hand-off of complete samples to the stores.
 *
 * DESIGN. The I/O thread (server/server.c) receives a multipart message,
 * gives its frames to surge_ingest_handle_raw() and sends back the reply
 * the call fills in, if any. Everything that needs session state lives
 * here, so the unit tests drive the whole protocol without a network.
 *
 * Sessions. A peer (ZeroMQ routing id) says hello for one (simulation,
 * rank). The first accepted hello of a simulation fixes its declaration
 * (ranks, parameters, fields and their global sizes); the others must
 * match it. Slices of different ranks must not overlap, and once all
 * ranks have joined they must tile every field exactly. A simulation ends
 * when all its ranks said bye (finished), when the launcher reports it
 * failed, or when it is silent past the timeout; SIM_RETRY reopens it for
 * new hellos while steps already assembled stay refused (never trained on
 * twice).
 *
 * Assembly. Per (simulation, step) a partial sample: the output vector
 * (fields concatenated, float32) and a bitmap of (rank, field) slices
 * received. Blocks come from a pool and are reused, so the hot path does
 * not allocate once the working set is known. All blocks together (in use,
 * pending, pooled) stay under max_partial_bytes: a new step that would
 * exceed it evicts a partial step ("assembly_memory"): the sim's own
 * oldest when the sim holds more than an equal share of the bound, else
 * the oldest of the sim holding the most. Later slices of an evicted step
 * are dropped as "step_dropped" (the record of evicted steps is bounded:
 * SURGE_INGEST_DROPPED_RECORDS entries over all sims).
 *
 * Hand-off. A complete step becomes a sample: input = parameters + time,
 * output = the vector. It goes to the validation store when its simulation
 * is held out, else to the training store. When the training store is full
 * the sample stays pending (in its block) and surge_ingest_has_pending()
 * tells the I/O thread to stop reading until surge_ingest_flush() succeeds.
 *
 * Threads: an ingest object is used by one thread (the I/O thread). The
 * stores it puts into are thread-safe.
 */
#ifndef SURGE_SERVER_INGEST_H
#define SURGE_SERVER_INGEST_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/protocol.h"
#include "server/counters.h"
#include "monitor/metrics.h"
#include "server/options.h"
#include "server/store.h"

typedef struct surge_ingest surge_ingest;

/* Steps remembered as evicted, over all simulations (~16 bytes each). */
#define SURGE_INGEST_DROPPED_RECORDS 65536

/* surge_ingest_create - protocol state for options o (borrowed; must
 * outlive the object) putting samples into train and validation (borrowed;
 * validation may be NULL when nothing is held out). checksum_log, when not
 * NULL, receives one "sim step checksum" line per assembled sample
 * (borrowed). 0 or -ENOMEM; *out untouched on failure. */
int surge_ingest_create(surge_ingest **out, const surge_server_options *o,
                        surge_store *train, surge_store *validation,
                        FILE *checksum_log);
/* surge_ingest_destroy - free everything (partial steps are not counted;
 * call surge_ingest_stop first for the counts). Sets *ing to NULL. */
void surge_ingest_destroy(surge_ingest **ing);

/* surge_ingest_handle_raw - one received message: the routing id of the
 * sender, the header frame, the first payload frame (NULL when none),
 * the number of payload frames and the message's total size in bytes.
 * Counts it, decodes and handles it. When a reply must go back to the
 * sender, fills *reply and returns 1; returns 0 otherwise. Never fails:
 * everything wrong is counted and logged (rate-limited). now_ns is a
 * monotonic clock. */
int surge_ingest_handle_raw(surge_ingest *ing, const void *rid, size_t rid_len,
                            const void *hdr, size_t hdr_len,
                            const void *payload, size_t payload_len,
                            unsigned npayload_frames, uint64_t total_bytes,
                            uint64_t now_ns, surge_msg *reply);

/* surge_ingest_has_session - 1 when the peer with this routing id said an
 * accepted hello and has not said bye (its messages may be held under
 * backpressure; a peer without one must not make the server hold
 * anything). */
int surge_ingest_has_session(const surge_ingest *ing, const void *rid,
                             size_t rid_len);

/* surge_ingest_refuse_presession - count a message of total_bytes from a
 * peer without a session that is over --max-presession-bytes, dropped
 * without being decoded. The first time for a peer, fills *reply ("send
 * hello first") and returns 1; after that returns 2: the caller should cut
 * the connection. */
int surge_ingest_refuse_presession(surge_ingest *ing, const void *rid,
                                   size_t rid_len, uint64_t total_bytes,
                                   uint64_t now_ns, surge_msg *reply);

/* surge_ingest_handle_msg - the same for an already decoded header (the
 * caller has counted the message as received). */
int surge_ingest_handle_msg(surge_ingest *ing, const void *rid, size_t rid_len,
                            const surge_msg *m, const void *payload,
                            size_t payload_len, unsigned npayload_frames,
                            uint64_t now_ns, surge_msg *reply);

/* surge_ingest_flush - try to put pending samples into the store. 0 when
 * none is left, -EAGAIN when the store is still full. */
int surge_ingest_flush(surge_ingest *ing);
/* surge_ingest_has_pending - 1 while assembled samples wait for space. */
int surge_ingest_has_pending(const surge_ingest *ing);

/* surge_ingest_tick - fail simulations silent for longer than the
 * timeout (their partial steps are dropped as "sim_timeout"). */
void surge_ingest_tick(surge_ingest *ing, uint64_t now_ns);

/* surge_ingest_stop - the server is stopping: drop every partial step and
 * every pending sample ("server_stop"). */
void surge_ingest_stop(surge_ingest *ing);

/* surge_ingest_all_done - 1 when every simulation that said hello has
 * finished, failed or timed out, and no sample is pending. */
int surge_ingest_all_done(const surge_ingest *ing);
/* surge_ingest_active_sims - simulations still open. */
uint64_t surge_ingest_active_sims(const surge_ingest *ing);

/* surge_ingest_set_ranks - this is server rank `rank` of `nranks`
 * (server/ranks.h), routing by `route` (enum surge_route). With nranks > 1
 * every welcome carries servers (borrowed, its endpoints in rank order; it
 * must outlive ing); in route SURGE_ROUTE_SIM a hello for a simulation of
 * another rank gets a redirecting welcome and no session; in
 * SURGE_ROUTE_STEP data for a step of another rank is dropped
 * ("wrong_server_rank"). On rank 0, control_cb(arg, op, sim) runs after
 * each control operation other than ping succeeded (to relay it); ranks
 * > 0 refuse control other than ping. Call before any message. */
void surge_ingest_set_ranks(surge_ingest *ing, uint32_t rank, uint32_t nranks,
                            int route, const surge_msg_welcome *servers,
                            void (*control_cb)(void *arg, int op, int64_t sim),
                            void *arg);

/* surge_ingest_set_totals - rank 0 of several: a PING reports totals and
 * *active_sims (borrowed, kept current by the caller on the I/O thread)
 * instead of this rank's own counts. */
void surge_ingest_set_totals(surge_ingest *ing, const surge_counters *totals,
                             const uint64_t *active_sims);

/* surge_ingest_relayed_control - apply control op (SURGE_CTL_*, not ping)
 * for sim that rank 0 relayed (no token: it came over MPI from rank 0).
 * 0 or the code the operation would have answered. */
int surge_ingest_relayed_control(surge_ingest *ing, int op, int64_t sim,
                                 uint64_t now_ns);

/* Requests a control message made; the I/O thread reads and acts on them. */
int surge_ingest_end_requested(const surge_ingest *ing);
int surge_ingest_shutdown_requested(const surge_ingest *ing);

/* surge_ingest_counters - the counters (owned by ing; the I/O thread adds
 * its socket-level counts to the io group). */
surge_counters *surge_ingest_counters(surge_ingest *ing);

/* surge_ingest_block_bytes - assembly memory one partial step takes for
 * a sample of nout output floats from nslices (ranks x fields) slices. */
size_t surge_ingest_block_bytes(uint64_t nout, uint64_t nslices);

/* surge_ingest_dropped_records - steps remembered as evicted now, over
 * all simulations (at most SURGE_INGEST_DROPPED_RECORDS). */
uint64_t surge_ingest_dropped_records(const surge_ingest *ing);

/* surge_ingest_partial_bytes - bytes of assembly memory held now (blocks
 * in use, pending and pooled). */
uint64_t surge_ingest_partial_bytes(const surge_ingest *ing);

/* surge_ingest_output_fields - the layout of the output vector, as a JSON
 * array of {"name", "offset", "size", "shape"} in declaration order (the
 * first welcomed simulation's fields; shapes from --field-shapes, else
 * [size]), or NULL before any. The string never changes once set and is
 * set before the first sample reaches a store, so a thread that has taken
 * a sample from a store may read it. Owned by ing. */
const char *surge_ingest_output_fields(const surge_ingest *ing);

/* surge_ingest_runs - per-simulation progress for monitoring (the runs
 * table of the dashboard and `surge top`): fills up to cap records in
 * hello order and returns how many. state is "running", "retrying" (open
 * again after SIM_RETRY), "done", "failed", "timed_out" or "not_joined";
 * steps counts the steps assembled, dropped the partial steps dropped in
 * this attempt; steps_expected is the largest hello.steps its ranks
 * declared (0 when none did); elapsed_s runs from its first welcome. now_ns
 * is the monotonic clock. I/O thread. */
int surge_ingest_runs(const surge_ingest *ing, struct surge_run_info *out,
                      size_t cap, uint64_t now_ns);

/* surge_ingest_preload_assembled - resume: mark step of simulation sim as
 * assembled by an earlier server (the record saved in its checkpoint), so
 * that a rerun resending it is refused like a repeat after a retry and
 * nothing is trained on twice. Call before the loop runs (the main thread,
 * no other thread using ing). 0, -EINVAL (negative ids), -ENOMEM. */
int surge_ingest_preload_assembled(surge_ingest *ing, int64_t sim,
                                   int64_t step);

/* surge_ingest_export_assembled - call cb(arg, sim, step) for every step
 * assembled so far that has reached a store (steps still pending for store
 * space are left out: they are not in the store yet, so a checkpoint taken
 * now does not hold them). Stops at and returns cb's first negative
 * return; 0 otherwise. I/O thread (or with the I/O thread parked). */
int surge_ingest_export_assembled(const surge_ingest *ing,
                                  int (*cb)(void *arg, int64_t sim,
                                            int64_t step),
                                  void *arg);

/* surge_ingest_export_finished - call cb(arg, sim) for every simulation
 * whose ranks all said bye and none of whose steps still waits for store
 * space: everything it sent is in a store (or was dropped with a reason),
 * so a checkpoint taken now holds the whole run. Stops at and returns cb's
 * first negative return; 0 otherwise. I/O thread (or with the I/O thread
 * parked). */
int surge_ingest_export_finished(const surge_ingest *ing,
                                 int (*cb)(void *arg, int64_t sim), void *arg);

#endif /* SURGE_SERVER_INGEST_H */
