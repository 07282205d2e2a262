/*
 * surge/client.h - libsurge, the client library a solver links to stream its
 * fields to a surge server.
 *
 * A solver run is one *simulation*; each of its MPI ranks opens its own
 * client, declares the fields it holds a slice of, sends every time step and
 * closes. No gather on rank 0 is needed: the server assembles the slices of
 * all ranks and fields into one sample per (simulation, step).
 *
 *     surge_client_options o;
 *     surge_client_options_init(&o);          // defaults + environment
 *     o.rank = rank; o.nranks = size;
 *     surge_field f = {"temperature", nx * ny, my_offset, my_count};
 *     o.fields = &f; o.nfields = 1;
 *     surge_client *c;
 *     int rc = surge_client_open(&c, &o);     // hello -> welcome or reject
 *     if (rc < 0) fprintf(stderr, "%s\n", surge_client_open_error(rc));
 *     for (step...) surge_client_send_checked(c, "temperature", step, t,
 *                                             u, my_count, SURGE_FLOAT64);
 *     rc = surge_client_close(&c);            // flush, bye, wait for ack
 *
 * The launcher passes the endpoint, the run's key, the simulation id and
 * the parameter values through the environment (SURGE_ENDPOINT,
 * SURGE_RUN_KEY, SURGE_SIM_ID, SURGE_PARAMS, and SURGE_CURVE_KEYS when the
 * study is encrypted); surge_client_options_init() reads them, and
 * anything set explicitly afterwards wins.
 *
 * Threads: a surge_client is used by one thread at a time. Different clients
 * are independent.
 *
 * Errors: every call returns 0 or a negative code (see surge/error.h);
 * surge_client_last_error() adds the detail (for example the server's reason
 * for a reject). Nothing blocks longer than options.timeout_ms.
 */
#ifndef SURGE_CLIENT_H
#define SURGE_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <surge/error.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct surge_client surge_client;

/* Element types the client accepts. The wire always carries float32: float64
 * input is rounded to nearest float32 before it is sent. */
typedef enum surge_dtype { SURGE_FLOAT32 = 1, SURGE_FLOAT64 = 2 } surge_dtype;

/* surge_field - one field this rank holds a slice of. The field is a flat
 * array of global_size elements; this rank owns [offset, offset + count).
 * All ranks of a simulation declare the same fields, in the same order, with
 * the same global sizes; together their slices cover each field exactly
 * once. A rank may own nothing of a field (count 0). */
typedef struct surge_field {
    const char *name;     /* 1..64 bytes of [A-Za-z0-9_.-] */
    uint64_t global_size; /* elements in the whole field, > 0 */
    uint64_t offset;      /* first element this rank owns */
    uint64_t count;       /* elements this rank owns */
} surge_field;

/* surge_client_options - everything surge_client_open() needs. Initialize
 * with surge_client_options_init(), then override fields. Pointers are
 * borrowed: they must stay valid only during surge_client_open(). */
typedef struct surge_client_options {
    const char *endpoint; /* ZeroMQ endpoint, e.g. "tcp://127.0.0.1:5555" */
    const char *token;    /* study token: the run key is derived from it
                             when run_key is not set; never sent */
    int64_t sim_id;       /* simulation id, >= 0 */
    int32_t rank;         /* this rank, 0..nranks-1 */
    int32_t nranks;       /* ranks of this simulation, >= 1 */
    const double *params; /* parameter values of this simulation */
    size_t nparams;       /* number of params, 0..64 */
    const surge_field *fields; /* fields this rank sends, 1..64 */
    size_t nfields;
    int timeout_ms;        /* bound on every blocking call; default 30000 */
    size_t coalesce_bytes; /* slices smaller than this are packed into one
                              message of up to this many payload bytes, to
                              cut ZeroMQ's per-message cost; 0 disables;
                              default 262144 */
    int flush_ms;          /* a packed message waits at most this long
                              before the next send or close flushes it;
                              default 100 */
    uint64_t sndhwm_bytes; /* bytes queued towards the server before sends
                              block (backpressure); default 64 MiB */
    uint64_t steps;        /* steps this run will send (each declared field
                              once per step), when known: the server shows
                              progress and an ETA per run (surge top, the
                              dashboard); 0 = unknown (default, or
                              SURGE_STEPS, which `surge launch` sets from
                              solver.steps); at most 2^53 */

    /* Trust (docs/protocol.md, "Trust"). run_key: this run's key (64
     * lowercase hex digits) from the launcher; it proves the client belongs
     * to simulation sim_id and to no other. NULL or "": derived from token
     * when one is given. curve_keys: path of a CURVE client key file (mode
     * 0600) to encrypt and authenticate the connection; NULL: plain. */
    const char *run_key;
    const char *curve_keys;
} surge_client_options;

/* surge_client_options_init - fill *opts with defaults, then with what the
 * environment provides: SURGE_ENDPOINT, SURGE_TOKEN, SURGE_RUN_KEY,
 * SURGE_CURVE_KEYS, SURGE_SIM_ID, SURGE_PARAMS (comma-separated numbers),
 * SURGE_TIMEOUT_MS, SURGE_COALESCE_BYTES, SURGE_FLUSH_MS, SURGE_SNDHWM_BYTES,
 * SURGE_STEPS, and the rank and size from OMPI_COMM_WORLD_RANK/SIZE,
 * PMIX_RANK or SLURM_PROCID/NTASKS when set (the first of these launchers
 * found wins; PMIX_RANK gives no size, so set nranks yourself then, e.g.
 * surge_client_options_set_comm). Parsing is strict: no trailing junk, no
 * overflow, values in range. Defaults without environment: no endpoint, token
 * "", sim 0, rank 0 of 1, no params, no run key, no CURVE. The strings and
 * params it points to are copies owned by the library (static per thread),
 * valid until the next call from this thread. Returns 0, or SURGE_ECONFIG when
 * an environment variable is malformed (the variable is then named by
 * surge_client_options_error()).
 */
SURGE_API int surge_client_options_init(surge_client_options *opts);

/* surge_client_options_error - the detail of the last options_init failure
 * on this thread ("SURGE_SIM_ID: not an integer"). Never NULL. */
SURGE_API const char *surge_client_options_error(void);

/* surge_client_open - connect to the server, send hello and wait (at most
 * timeout_ms) for welcome. On success *out owns a client that must be
 * closed with surge_client_close(). On failure *out is untouched and the
 * return says why: SURGE_ENOSERVER (nobody answered), SURGE_EREJECTED or
 * SURGE_ETOKEN (the server said no; surge_client_open_error() has the
 * server's reason), SURGE_ECONFIG or SURGE_EBOUNDS (bad options, named in
 * the detail), SURGE_ELIMIT (a slice larger than the server accepts in one
 * message), SURGE_EPROTO (the peer is not a surge server of this protocol
 * version), -ENOMEM. */
SURGE_API int surge_client_open(surge_client **out,
                                const surge_client_options *opts);

/* surge_client_open_error - the detail of the last surge_client_open
 * failure on this thread, e.g. "server rejected this client: wrong study
 * token". Never NULL. */
SURGE_API const char *surge_client_open_error(void);

/* surge_client_close_error - the detail of the last surge_client_close
 * failure on this thread (the client is gone by then), e.g. "the surge
 * server at tcp://... confirmed 10 of the 12 slices this client sent".
 * Never NULL; "" after a successful close. */
SURGE_API const char *surge_client_close_error(void);

/* surge_client_send - send this rank's slice of one field for one step.
 * data holds `count` elements (the declared count) of the given dtype; it
 * is copied or sent before the call returns, so the caller may reuse it.
 * Steps are non-negative; `time` is the simulated time (it becomes an input
 * of the sample). Blocks at most timeout_ms when the server applies
 * backpressure; returns SURGE_ETIMEDOUT then (nothing of this slice was
 * sent: the call may be repeated). Returns SURGE_EFIELD for an undeclared
 * field, SURGE_EDUPLICATE when this field was already sent for this step
 * (among the last 32 steps of the field; the server catches older
 * repeats), SURGE_EDTYPE for a bad dtype, -EINVAL for a negative step, a
 * non-finite time or NULL data, and SURGE_EREJECTED/SURGE_ETOKEN when the
 * server has rejected this client meanwhile (last_error has its reason;
 * every later call returns the same). A field whose slice on this rank is
 * empty (count 0) sends nothing. */
SURGE_API int surge_client_send(surge_client *c, const char *field,
                                int64_t step, double time, const void *data,
                                surge_dtype dtype);

/* surge_client_send_checked - surge_client_send() that also checks the
 * buffer's length: `count` is the number of elements `data` holds, and it
 * must equal the count this rank declared for the field at open. A wrong
 * count returns SURGE_EBOUNDS and sends nothing; last_error names the
 * field, the count given and the count declared (e.g. 'field "u" step 3:
 * 100 elements given, this rank declared 128 (offset 256 of 384)'). An
 * undeclared field returns SURGE_EFIELD as in surge_client_send(); every
 * other check and return is surge_client_send()'s. Prefer this form: the
 * unchecked one reads `count` elements from data whatever its size. */
SURGE_API int surge_client_send_checked(surge_client *c, const char *field,
                                        int64_t step, double time,
                                        const void *data, uint64_t count,
                                        surge_dtype dtype);

/* surge_client_flush - send any packed slices now. Returns 0,
 * SURGE_ETIMEDOUT (they stay packed; a later flush or close retries) or
 * the client's failure. */
SURGE_API int surge_client_flush(surge_client *c);

/* surge_client_close - flush, send bye, wait at most timeout_ms for the
 * server to confirm it received every slice, then free the client and set
 * *c to NULL (also on error). Returns 0 when the server confirmed every
 * slice, SURGE_ETIMEDOUT when it did not answer, SURGE_EPROTO when its count
 * differs, the rejection code when the server had rejected this client;
 * surge_client_close_error() has the detail. The whole close takes at most
 * timeout_ms. surge_client_close(NULL) and a NULL *c are no-ops. */
SURGE_API int surge_client_close(surge_client **c);

/* surge_client_abort - free the client without bye (the server will count
 * this rank's unfinished steps as dropped). Sets *c to NULL. */
SURGE_API void surge_client_abort(surge_client **c);

/* surge_client_last_error - detail of the last failed call on this client
 * (never NULL; "" when there is none). */
SURGE_API const char *surge_client_last_error(const surge_client *c);

/* surge_client_stats - what this client has done so far. */
typedef struct surge_client_stats {
    uint64_t slices_sent;   /* field slices handed to ZeroMQ */
    uint64_t messages_sent; /* ZeroMQ messages (packed slices count once) */
    uint64_t bytes_sent;    /* payload bytes */
    uint64_t send_wait_ns;  /* time spent blocked by backpressure */
} surge_client_stats;
SURGE_API void surge_client_get_stats(const surge_client *c,
                                      surge_client_stats *out);

/* surge_checksum_f32 / surge_checksum_f64 - an order-independent checksum of
 * a slice of a sample, used to prove that data arrived bit-identical:
 *
 *     sum over i of mix64((position + i) * 2^32 + bits(float32(v[i])))
 *
 * modulo 2^64, where position is the index of v[0] in the sample's output
 * vector (the declared fields concatenated in declaration order) and mix64
 * is the splitmix64 finalizer. Because it is a sum, the checksums of the
 * slices of all ranks and fields add up to the checksum of the assembled
 * sample, which the server computes. The f64 variant hashes the float32
 * rounding of each value, i.e. exactly what goes on the wire. */
SURGE_API uint64_t surge_checksum_f32(const float *v, uint64_t position,
                                      uint64_t count);
SURGE_API uint64_t surge_checksum_f64(const double *v, uint64_t position,
                                      uint64_t count);

/* surge_version - the library version, e.g. "0.1.0". */
SURGE_API const char *surge_version(void);

#ifdef __cplusplus
}
#endif
#endif /* SURGE_CLIENT_H */
