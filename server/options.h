/*
 * server/options.h - every setting of `surge serve` in one struct, with
 * defaults, strict command-line parsing and the --help text.
 *
 * DESIGN. One struct so that the flags, the launcher's study file
 * (deploy/study.h fills the same struct) and later the monitoring code all
 * speak about the same settings. surge_server_options_init() gives the
 * defaults; surge_server_options_parse() applies flags on top;
 * surge_server_options_check() validates the combination (call it after
 * filling the struct from anywhere else). The flag table in options.c is the
 * single list of options: parsing and --help are generated from it.
 *
 * Threads: none. Errors: SURGE_ECONFIG with the offending flag or value
 * named in the caller's err buffer.
 */
#ifndef SURGE_SERVER_OPTIONS_H
#define SURGE_SERVER_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/protocol.h"
#include "reservoir/reservoir.h"

#define SURGE_SERVER_MAX_PATH 1024
#define SURGE_SERVER_MAX_VALIDATION_SIMS 256
#define SURGE_SERVER_MAX_NAME 32

typedef struct surge_server_options {
    /* Network. */
    char bind[256];                  /* ZeroMQ endpoint; "tcp://127.0.0.1:*" */
    char token[SURGE_MAX_TOKEN + 1]; /* study token; "" = not checked
                                        (then only loopback/ipc binds) */
    uint64_t max_message_bytes;      /* largest frame accepted (ZMQ_MAXMSGSIZE)
                                        and announced in welcome; bytes */
    uint64_t rcvhwm_bytes;           /* receive queue per connection, bytes; the
                                        HWM in messages is this / 256 KiB (the
                                        client's default packed message size) */

    /* CURVE server key file (common/auth.h); "" = no encryption. */
    char curve_keys[SURGE_SERVER_MAX_PATH];
    uint32_t max_connections;      /* open client connections; more are
                                      cut as they come */
    uint64_t max_presession_bytes; /* largest message of a peer without a
                                      session; bytes */
    uint64_t max_held_bytes;       /* messages of peers with a session held
                                      under backpressure while reading goes
                                      on; bytes */
    /* Assembly. */
    uint64_t max_partial_bytes; /* memory for partial steps, bytes */
    double sim_timeout_s;       /* a sim silent this long is failed; 0 =
                                   never */
    double join_timeout_s;      /* a sim whose ranks have not all said
                                   hello this long after its first is
                                   failed; 0 = never */
    uint32_t max_joining_sims;  /* sims waiting for their ranks at once;
                                   a hello opening one more is rejected */
    /* Stores and consumer. */
    char policy[SURGE_SERVER_MAX_NAME];   /* training store policy: "fifo",
                                             "firo" or "reservoir" */
    uint64_t store_bytes;                 /* training store capacity, bytes */
    surge_reservoir_config reservoir;     /* the other reservoir options
                                             (watermark, seed, epochs,
                                             max_uses, rate, balance_sims,
                                             prioritized); its policy,
                                             capacity_bytes, dims and
                                             max_batch are not read: see
                                             surge_server_reservoir_config */
    char storage[SURGE_SERVER_MAX_NAME];  /* training store storage: "auto"
                                             (device for a CUDA trainer
                                             when a device is present,
                                             else host), "host", "device";
                                             the device ordinal is
                                             reservoir.device */
    char prefetch[SURGE_SERVER_MAX_NAME]; /* trainer feed from a host
                                             storage: "auto" (on for a GPU
                                             trainer), "on", "off" */
    uint64_t validation_bytes;            /* validation store capacity, bytes */
    uint32_t validation_every; /* sims with sim % N == N-1 are held out;
                                  0 = none */
    size_t nvalidation_sims;   /* entries of validation_sims */
    int64_t validation_sims[SURGE_SERVER_MAX_VALIDATION_SIMS]; /* held-out
                                  sim ids, in addition to the rule */
    char field_shapes[SURGE_SERVER_MAX_PATH]; /* "name=AxB,name2=N": the
                                                 output fields' shapes, for
                                                 the model file; "" = each
                                                 field 1-D */
    char consumer[SURGE_SERVER_MAX_NAME];     /* "discard", "trainer", ... */
    uint32_t batch_size;                      /* samples per consumer batch */
    char external_bind[256];     /* external consumer: ZeroMQ endpoint */
    double external_timeout_s;   /* external consumer: silence limit */
    uint64_t external_shm_bytes; /* external consumer: shared memory for
                                    same-host consumers' batch rings, all
                                    consumers together; 0 = ZeroMQ only */
    double consumer_delay_ms;    /* sleep per batch in the discard consumer
                                    (to test backpressure); 0 = none */
    /* The trainer consumer (server/train.c). Numbers: -1 = the study's
     * trainer key of the same name (docs/configuration.md). */
    char study[SURGE_SERVER_MAX_PATH];  /* study file: "parameters" (input
                                           ranges) and "trainer"; "" =
                                           <output_dir>/study.resolved.json
                                           when it exists */
    char resume[SURGE_SERVER_MAX_PATH]; /* checkpoint to resume from; "" =
                                           none (or, with resume_default,
                                           <output_dir>/checkpoint.safetensors)
                                         */
    int resume_default;                 /* --resume without a file */
    /* The study this server works for (up to 64 characters), written into
     * every checkpoint; --resume refuses a checkpoint of another study.
     * "" = none, which matches only a checkpoint without one. */
    char study_id[65];
    double max_steps;             /* stop training after N steps */
    double max_wall_s;            /* stop training after S seconds */
    double steps_after_end;       /* steps once reception ended */
    double eval_every;            /* steps between validations */
    double checkpoint_every;      /* steps between checkpoints */
    double checkpoint_interval_s; /* seconds between checkpoints */
    double progress_interval_s;   /* seconds between progress lines */
    /* Monitoring (server/monitor.h). */
    char http[128]; /* dashboard, /metrics, /api/v1: "HOST:PORT",
                       "PORT" or "off"; "127.0.0.1:0" */
    /* Files and lifetime. */
    char output_dir[SURGE_SERVER_MAX_PATH];   /* server.json, stats */
    char checksum_log[SURGE_SERVER_MAX_PATH]; /* "sim step checksum"
                                                 lines; "" = off */
    double stop_timeout_s; /* bound on finishing after a stop */
    double exit_idle_s;    /* exit after this long with no sim and no
                              message; 0 = never (for tests) */
    int log_level;         /* SURGE_LOG_* */
    /* Server ranks (server/ranks.h): route every step of a simulation to
     * server rank sim % R instead of step s to rank s % R. */
    bool bind_simulation;
} surge_server_options;

/* surge_server_options_init - the defaults, plus SURGE_TOKEN from the
 * environment when set. */
void surge_server_options_init(surge_server_options *o);

/* surge_server_options_parse - apply argv[1..argc-1] (argv[0] is the
 * command name). Flags are `--name VALUE` or `--name=VALUE`; sizes accept
 * K, M, G suffixes (powers of 1024). Returns 0, 1 when --help was asked
 * (the caller prints surge_server_options_usage), or SURGE_ECONFIG with a
 * message naming the flag in err. Calls surge_server_options_check(). */
int surge_server_options_parse(surge_server_options *o, int argc, char **argv,
                               char *err, size_t errlen);

/* surge_server_options_check - validate values and combinations (for a
 * struct filled by other means, e.g. a study file). 0 or SURGE_ECONFIG. */
int surge_server_options_check(const surge_server_options *o, char *err,
                               size_t errlen);

/* surge_server_options_usage - the --help text, every flag documented. */
void surge_server_options_usage(FILE *out);

/* surge_server_reservoir_config - the training store's reservoir
 * configuration: o->reservoir with policy from o->policy, capacity_bytes =
 * o->store_bytes, max_batch = o->batch_size and storage device when
 * o->storage is "device" (host for "auto": the trainer consumer may switch
 * the store to device before it starts, surge_store_set_storage);
 * input_dim and output_dim stay 0 (the first hello sets them). 0, or
 * SURGE_ECONFIG for an unknown policy or storage name. */
int surge_server_reservoir_config(const surge_server_options *o,
                                  surge_reservoir_config *out);

/* surge_server_field_shape - the shape --field-shapes declares for field
 * name: fills dims[0..n-1] (at most maxd, each >= 1) and returns n, or 0
 * when the field is not named there (the spec was checked at parse). */
int surge_server_field_shape(const surge_server_options *o, const char *name,
                             uint64_t *dims, int maxd);

/* surge_server_is_validation - 1 when simulation sim is held out. */
int surge_server_is_validation(const surge_server_options *o, int64_t sim);

/* surge_server_endpoint_is_local - 1 when a bind endpoint only accepts
 * peers of this machine (tcp on 127.0.0.0/8, localhost, ::1; ipc; inproc). */
int surge_server_endpoint_is_local(const char *endpoint);

#endif /* SURGE_SERVER_OPTIONS_H */
