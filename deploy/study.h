/*
 * deploy/study.h - the study file: what `surge launch` runs.
 *
 * A study file is one JSON object (parsed with jansson) with the sections
 * study, parameters, sampler, solver, scheduler, server, reservoir and
 * trainer. docs/configuration.md documents every key. Each key's type,
 * bounds and default live in one table (common/keytab.h): the launcher's
 * own keys in study.c, the trainer's in trainer/config.c (study.c takes
 * that table whole for the "trainer" section), and unit tests check that
 * the page documents every key of the tables with its default.
 *
 * Parsing is strict: an unknown key, a value of the wrong type or an
 * impossible value is an error whose text starts with the key's path, e.g.
 * "trainer.optimizer.lr: must be > 0" or "parameters[2].max: must be > min".
 * Duplicate keys in one object are errors too.
 *
 * Ownership: surge_study_load()/surge_study_parse() return a study the caller
 * owns and frees with surge_study_destroy(). All strings inside belong to the
 * study. Threads: a study is read-only after parsing and may be read from
 * any thread.
 */
#ifndef SURGE_DEPLOY_STUDY_H
#define SURGE_DEPLOY_STUDY_H

#include <stddef.h>
#include <stdint.h>

#include "common/protocol.h"
#include "trainer/trainer.h"

/* A NULL-terminated array of owned strings (v[n] == NULL). */
typedef struct surge_strv {
    char **v; /* n strings, then NULL; NULL when n == 0 */
    size_t n;
} surge_strv;

enum surge_sampler_kind {
    SURGE_SAMPLER_UNIFORM = 0, /* seeded pseudo-random, independent */
    SURGE_SAMPLER_LHS,         /* Latin hypercube: one point per stratum */
    SURGE_SAMPLER_HALTON,      /* GSL gsl_qrng_halton */
    SURGE_SAMPLER_SOBOL,       /* GSL gsl_qrng_sobol (<= 40 parameters) */
    SURGE_SAMPLER_CSV          /* parameter sets read from a file */
};

enum surge_scheduler_kind {
    SURGE_SCHEDULER_LOCAL = 0, /* mpirun on this machine */
    SURGE_SCHEDULER_SLURM      /* sbatch / srun */
};

typedef struct surge_study_param {
    char name[SURGE_MAX_NAME + 1]; /* [A-Za-z0-9_.-], unique */
    double min;                    /* lower bound, finite */
    double max;                    /* upper bound, finite, > min */
} surge_study_param;

typedef struct surge_study {
    /* where the study came from */
    char *source;    /* path of the file, or the origin name */
    char *study_dir; /* absolute directory of the file; relative
                        paths in it (sampler.file) start here */

    /* study */
    char *name;                 /* [A-Za-z0-9_.-]+ */
    int64_t seed;               /* >= 0; sampler, reservoir, trainer seeds
                                   derive from it */
    char *output_dir;           /* {name} expanded; relative to the cwd */
    double progress_interval_s; /* plain progress line period, > 0 */

    /* parameters */
    size_t nparams; /* 1..SURGE_MAX_PARAMS */
    surge_study_param params[SURGE_MAX_PARAMS];

    /* sampler */
    int sampler;        /* enum surge_sampler_kind */
    int64_t runs;       /* number of runs; 0 until resolved for
                           csv without sampler.runs */
    char *sampler_file; /* csv: path as written (may be NULL) */
    int scramble;       /* halton/sobol: seeded random shift */
    int64_t skip;       /* halton/sobol: points skipped first */

    /* solver */
    surge_strv command;      /* argv template with {placeholders} */
    int64_t ranks;           /* MPI ranks per run, >= 1 */
    double timeout_s;        /* silence before a run is killed; 0 off */
    int64_t retries;         /* extra attempts after a failure */
    double client_timeout_s; /* SURGE_TIMEOUT_MS given to runs */
    int64_t steps;           /* SURGE_STEPS given to runs: steps each run
                                sends, for progress; 0 unknown */
    char *field_shapes;      /* "name=AxB,...": surge serve --field-shapes;
                                "" = each field 1-D */

    /* scheduler */
    int scheduler;          /* enum surge_scheduler_kind */
    int64_t max_concurrent; /* runs at once; 0: cores / ranks */
    char *mpirun;           /* launcher program; "" runs directly */
    surge_strv mpirun_args; /* extra mpirun flags, before the solver */
    int oversubscribe;      /* add --oversubscribe */
    double kill_grace_s;    /* SIGTERM to SIGKILL delay */
    char *slurm_partition;  /* "" when not set */
    char *slurm_account;
    char *slurm_time_limit; /* sbatch --time, "" when not set */
    surge_strv slurm_sbatch_args;
    char *slurm_mpi;               /* srun --mpi= value */
    int64_t slurm_array_threshold; /* job array from this many runs */
    double slurm_poll_interval_s;
    int slurm_server_as_job; /* the server as a Slurm job (srun) */

    /* server */
    char *server_bind;             /* ZeroMQ endpoint to bind */
    double server_start_timeout_s; /* wait for server.json */
    double server_ping_interval_s;
    double server_ping_timeout_s;      /* one control round trip */
    int64_t server_ping_failures;      /* missed pings before a restart */
    double server_stop_timeout_s;      /* END_RECEPTION to exit */
    int64_t server_restarts;           /* restarts allowed per study */
    uint64_t server_max_partial_bytes; /* bytes of incomplete steps kept */
    int server_checksum_log; /* --checksum-log <output>/checksums.log */
    int server_encrypt;      /* ZeroMQ CURVE; keys in <output>/keys */
    surge_strv server_args;  /* extra `surge serve` flags, verbatim */
    /* the server as an MPI job (docs/configuration.md, docs/slurm.md) */
    int64_t server_ranks;          /* R, >= 1; 1: one process as before */
    int64_t server_nodes;          /* Slurm server_as_job: srun --nodes */
    int64_t server_ranks_per_node; /* srun --ntasks-per-node; 0: not given */
    int server_launcher;           /* auto 0, direct 1, mpirun 2 */
    surge_strv server_mpirun_args; /* extra flags for the server's mpirun */
    int server_bind_simulation;    /* --bind-simulation: sim n on n % R */

    int64_t server_validation_every;  /* sims with id % N == N-1 held out */
    uint64_t server_validation_bytes; /* validation store capacity */

    /* reservoir: keys and meanings of reservoir/reservoir.h's config; enum
     * values are the index in the key's list of names (fifo 0, firo 1,
     * reservoir 2: the same numbers as enum surge_reservoir_policy) */
    int res_policy;
    uint64_t res_capacity_bytes;
    int64_t res_max_batch; /* 0: trainer.batch_size */
    int64_t res_watermark; /* samples; 0: the policy's default */
    int64_t res_seed;
    int64_t res_epochs;   /* firo pseudo-epochs */
    int64_t res_max_uses; /* reservoir policy; 0: no cap */
    double res_rate_spi;  /* rate.samples_per_insert; 0: off */
    double res_rate_min_diff;
    double res_rate_max_diff;
    int res_balance_sims;
    int res_prio_enabled; /* prioritized.enabled */
    double res_prio_alpha;
    double res_prio_beta;
    double res_prio_epsilon;
    int res_storage;    /* storage: 0 auto, 1 host, 2 device */
    int64_t res_device; /* device: CUDA ordinal */
    int res_prefetch;   /* prefetch: 0 auto, 1 on, 2 off */

    /* trainer: whether and how the server trains, the keys of
     * trainer/trainer.h's surge_trainer_config (its table of keys,
     * surge_trainer_keys), then the server's training-loop keys. */
    int tr_enabled; /* train in the server (else discard) */
    int tr_kind;    /* internal 0 (the C trainer), external 1 (batches
                       served to surge.torch: --consumer external) */
    struct surge_trainer_config trainer; /* the model and its optimizer:
                                            surge_trainer_keys' keys
                                            (n_inputs, n_outputs 0) */
    int64_t tr_max_steps;                /* 0: no limit */
    double tr_max_wall_s;                /* 0: no limit */
    int64_t tr_steps_after_end;          /* steps once reception has ended */
    int64_t tr_eval_every;               /* steps between validations */
    int64_t tr_checkpoint_every;         /* steps between checkpoints; 0 off */
    double tr_checkpoint_every_s;    /* seconds between checkpoints; 0 off */
    double tr_time_min, tr_time_max; /* simulated time range of the samples
                                        (input normalization); equal: taken
                                        from the first samples */
} surge_study;

/* surge_study_load - read and parse the study file at path (at most 1 MiB).
 * On success *out owns a new study and 0 is returned. On failure returns
 * SURGE_ECONFIG (or -errno when the file cannot be read), leaves *out
 * untouched, and writes one line into err (errcap bytes) naming the problem:
 * "path:line:col: JSON syntax..." or "key.path: must be ...". */
int surge_study_load(surge_study **out, const char *path, char *err,
                     size_t errcap);

/* surge_study_parse - the same from text; origin names it in messages and
 * base_dir is the directory relative paths start from (NULL: cwd). */
int surge_study_parse(surge_study **out, const char *text, const char *origin,
                      const char *base_dir, char *err, size_t errcap);

/* surge_study_destroy - free *s and set it to NULL; NULL is a no-op. */
void surge_study_destroy(surge_study **s);

/* surge_study_to_json - the effective study (every key, defaults filled
 * in) as a JSON text the caller frees with free(). NULL on ENOMEM. Loading
 * it again gives the same study. */
char *surge_study_to_json(const surge_study *s);

/* surge_study_param_index - index of the parameter called name, or -1. */
int surge_study_param_index(const surge_study *s, const char *name);

/* surge_study_keys - the table of keys: its n entries' dotted paths (e.g.
 * "trainer.optimizer.lr"; arrays of objects as "parameters[].min"), for
 * documentation checks. Static storage. */
const char *const *surge_study_key_paths(size_t *n);

/* surge_study_key - the table row of the key at a dotted path (a row of
 * study.c's own table, or of the table a section takes from another
 * folder, e.g. "trainer.lr" in surge_trainer_keys), NULL for an unknown
 * path and for the keys with their own code. For documentation checks
 * and tests. */
const struct surge_key *surge_study_key(const char *path);

/* Values the command placeholders expand to for one attempt of one run. */
typedef struct surge_expand_ctx {
    int64_t sim;            /* {sim} */
    int64_t attempt;        /* {attempt}, from 1 */
    const double *values;   /* {<parameter name>}: nparams values */
    const char *run_dir;    /* {run_dir} */
    const char *output_dir; /* {output_dir} */
    const char *bindir;     /* {bindir}: directory of `surge` */
} surge_expand_ctx;

/* surge_study_expand_command - the solver argv for one attempt: each word of
 * solver.command with its placeholders replaced ({sim}, {attempt},
 * {ranks}, {run_dir}, {output_dir}, {study_dir}, {bindir}, and each
 * parameter's name, numbers as %.17g; "{{" and "}}" are literal braces).
 * On success *argv_out is a new NULL-terminated array the caller frees
 * with surge_strv_free(). Returns 0, SURGE_ECONFIG (message in err) or
 * -ENOMEM. */
int surge_study_expand_command(const surge_study *s,
                               const surge_expand_ctx *ctx,
                               surge_strv *argv_out, char *err, size_t errcap);

/* surge_study_split_command - split a command line into words the way a
 * shell would without expanding anything: blanks separate words, '...'
 * keeps everything literal, "..." and \ escape the next character. Returns
 * 0, SURGE_ECONFIG with the reason in err (unterminated quote), -ENOMEM. */
int surge_study_split_command(const char *line, surge_strv *out, char *err,
                              size_t errcap);

/* surge_strv_free - free the strings and the array; v becomes empty. */
void surge_strv_free(surge_strv *v);

/* surge_strv_push - append a copy of s. Returns 0 or -ENOMEM. */
int surge_strv_push(surge_strv *v, const char *s);

/* surge_strv_move - free *dst, give it src's strings, leave src empty. */
void surge_strv_move(surge_strv *dst, surge_strv *src);

/* surge_strv_finish - the end of building an argv in v while rc (0 so
 * far, or a negative error) says how it went: when rc is 0, append copies
 * of tail's strings (NULL-terminated); then on success *out is freed and
 * takes v's strings, on any failure v is freed and *out is untouched. v is
 * empty afterwards either way. Returns rc, or -ENOMEM from the appending. */
int surge_strv_finish(surge_strv *v, int rc, char *const *tail,
                      surge_strv *out);

/* Names of the enum values, for messages and JSON ("uniform", "lhs"...). */
const char *surge_sampler_kind_name(int kind);
const char *surge_scheduler_kind_name(int kind);

#endif /* SURGE_DEPLOY_STUDY_H */
