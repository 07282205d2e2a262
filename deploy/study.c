/*
 * deploy/study.c - the study file parser (jansson), strict and table-driven.
 *
 * DESIGN. Every leaf key of the study file is one row of `keys[]` below:
 * its dotted path, its type, where it lands in struct surge_study, its
 * bounds and its default (as JSON text, applied through the same setter as
 * a user's value, so a default can never bypass validation). The parser
 * walks the user's JSON object by object; a key is either a row of the
 * table, a section (a prefix of some row), or unknown, and unknown keys are
 * errors with a "did you mean" hint when a known key is close. Two
 * structured keys have their own code: `parameters` (an array of {name,
 * min, max}) and `solver.command` (a string split into words, or an array).
 * Cross-key rules (csv needs a file, sobol's dimension limit, placeholders
 * naming real parameters) run after the walk.
 *
 * Messages start with the key's path, as the user wrote it, so that
 * "parameters[2].max: must be > min" points at one spot of the file.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "deploy/study.h"
#include "deploy/util.h"

#define STUDY_MAX_FILE_BYTES (1u << 20) /* a study file is small */
#define STUDY_MAX_PATH 256              /* dotted key paths */
#define STUDY_MAX_RUNS INT64_C(10000000)
#define STUDY_MAX_WORDS 4096 /* words in solver.command */
#define STUDY_MAX_WORD 4096  /* bytes in one expanded word */
#define STUDY_MAX_LAYERS 16  /* SURGE_TRAINER_MAX_LAYERS */

enum ktype {
    T_STR,  /* char * */
    T_INT,  /* int64_t, integer in [min, max] */
    T_SIZE, /* uint64_t bytes: integer or "256MiB" */
    T_NUM,  /* double, finite, bounds per flags */
    T_BOOL, /* int 0/1 */
    T_ENUM, /* int index into choices */
    T_STRV, /* surge_strv */
    T_INTV  /* int64_t * at off, size_t count at off2; elements >= min */
};

enum kflag {
    F_MIN_EXCL = 1 << 0, /* value > min (else >= min) */
    F_MAX_EXCL = 1 << 1, /* value < max (else <= max) */
    F_NO_MAX = 1 << 2,   /* no upper bound */
    F_NONEMPTY = 1 << 3, /* T_STR, T_STRV, T_INTV: not empty */
    F_NAME = 1 << 4,     /* T_STR: [A-Za-z0-9_.-], 1..64 bytes */
    F_NO_MIN = 1 << 5    /* T_NUM: no lower bound */
};

struct key {
    const char *path; /* dotted path from the top of the file */
    enum ktype type;
    size_t off;          /* offset of the value in surge_study */
    size_t off2;         /* T_INTV: offset of the element count */
    const char *def;     /* default as JSON text; NULL: no default */
    double min;          /* lower bound (T_INT, T_NUM, T_SIZE, T_INTV) */
    double max;          /* upper bound unless F_NO_MAX */
    unsigned flags;      /* enum kflag */
    const char *choices; /* T_ENUM: "a|b|c", index order = enum order */
};

#define O(f) offsetof(surge_study, f)
#define NOMAX (F_NO_MAX)

/* All keys and all defaults. docs/configuration.md mirrors this table. */
static const struct key keys[] = {
    /* study */
    {"study.name", T_STR, O(name), 0, "\"study\"", 0, 0, F_NAME, NULL},
    {"study.seed", T_INT, O(seed), 0, "1", 0, 0, NOMAX, NULL},
    {"study.output_dir", T_STR, O(output_dir), 0, "\"runs/{name}\"", 0, 0,
     F_NONEMPTY, NULL},
    {"study.progress_interval_s", T_NUM, O(progress_interval_s), 0, "10", 0, 0,
     NOMAX | F_MIN_EXCL, NULL},
    /* sampler */
    {"sampler.kind", T_ENUM, O(sampler), 0, "\"uniform\"", 0, 0, 0,
     "uniform|lhs|halton|sobol|csv"},
    {"sampler.runs", T_INT, O(runs), 0, NULL, 1, (double)STUDY_MAX_RUNS, 0,
     NULL},
    {"sampler.file", T_STR, O(sampler_file), 0, NULL, 0, 0, F_NONEMPTY, NULL},
    {"sampler.scramble", T_BOOL, O(scramble), 0, "false", 0, 0, 0, NULL},
    {"sampler.skip", T_INT, O(skip), 0, "0", 0, 1e9, 0, NULL},
    /* solver (solver.command has its own code) */
    {"solver.ranks", T_INT, O(ranks), 0, "1", 1, SURGE_MAX_RANKS, 0, NULL},
    {"solver.timeout_s", T_NUM, O(timeout_s), 0, "300", 0, 0, NOMAX, NULL},
    {"solver.retries", T_INT, O(retries), 0, "2", 0, 100, 0, NULL},
    {"solver.client_timeout_s", T_NUM, O(client_timeout_s), 0, "30", 0, 86400,
     F_MIN_EXCL, NULL},
    {"solver.steps", T_INT, O(steps), 0, "0", 0, 9007199254740992.0, 0, NULL},
    {"solver.field_shapes", T_STR, O(field_shapes), 0, "\"\"", 0, 0, 0, NULL},
    /* scheduler */
    {"scheduler.kind", T_ENUM, O(scheduler), 0, "\"local\"", 0, 0, 0,
     "local|slurm"},
    {"scheduler.max_concurrent", T_INT, O(max_concurrent), 0, "0", 0, 100000, 0,
     NULL},
    {"scheduler.mpirun", T_STR, O(mpirun), 0, "\"mpirun\"", 0, 0, 0, NULL},
    {"scheduler.mpirun_args", T_STRV, O(mpirun_args), 0, "[]", 0, 0, 0, NULL},
    {"scheduler.oversubscribe", T_BOOL, O(oversubscribe), 0, "true", 0, 0, 0,
     NULL},
    {"scheduler.kill_grace_s", T_NUM, O(kill_grace_s), 0, "5", 0, 3600,
     F_MIN_EXCL, NULL},
    {"scheduler.slurm.partition", T_STR, O(slurm_partition), 0, "\"\"", 0, 0, 0,
     NULL},
    {"scheduler.slurm.account", T_STR, O(slurm_account), 0, "\"\"", 0, 0, 0,
     NULL},
    {"scheduler.slurm.time_limit", T_STR, O(slurm_time_limit), 0, "\"\"", 0, 0,
     0, NULL},
    {"scheduler.slurm.sbatch_args", T_STRV, O(slurm_sbatch_args), 0, "[]", 0, 0,
     0, NULL},
    {"scheduler.slurm.mpi", T_STR, O(slurm_mpi), 0, "\"pmix\"", 0, 0,
     F_NONEMPTY, NULL},
    {"scheduler.slurm.array_threshold", T_INT, O(slurm_array_threshold), 0,
     "32", 0, 0, NOMAX, NULL},
    {"scheduler.slurm.poll_interval_s", T_NUM, O(slurm_poll_interval_s), 0, "2",
     0, 3600, F_MIN_EXCL, NULL},
    {"scheduler.slurm.server_as_job", T_BOOL, O(slurm_server_as_job), 0,
     "false", 0, 0, 0, NULL},
    /* server */
    {"server.bind", T_STR, O(server_bind), 0, "\"tcp://127.0.0.1:*\"", 0, 0,
     F_NONEMPTY, NULL},
    {"server.start_timeout_s", T_NUM, O(server_start_timeout_s), 0, "30", 0,
     3600, F_MIN_EXCL, NULL},
    {"server.ping_interval_s", T_NUM, O(server_ping_interval_s), 0, "2", 0,
     3600, F_MIN_EXCL, NULL},
    {"server.ping_timeout_s", T_NUM, O(server_ping_timeout_s), 0, "5", 0, 3600,
     F_MIN_EXCL, NULL},
    {"server.ping_failures", T_INT, O(server_ping_failures), 0, "3", 1, 1000, 0,
     NULL},
    {"server.stop_timeout_s", T_NUM, O(server_stop_timeout_s), 0, "60", 0,
     86400, F_MIN_EXCL, NULL},
    {"server.restarts", T_INT, O(server_restarts), 0, "3", 0, 1000, 0, NULL},
    {"server.max_partial_bytes", T_SIZE, O(server_max_partial_bytes), 0,
     "\"256MiB\"", 1, 0, NOMAX, NULL},
    {"server.checksum_log", T_BOOL, O(server_checksum_log), 0, "false", 0, 0, 0,
     NULL},
    {"server.encrypt", T_BOOL, O(server_encrypt), 0, "false", 0, 0, 0, NULL},
    {"server.args", T_STRV, O(server_args), 0, "[]", 0, 0, 0, NULL},
    {"server.validation_every", T_INT, O(server_validation_every), 0, "0", 0,
     4294967295.0, 0, NULL},
    {"server.validation_bytes", T_SIZE, O(server_validation_bytes), 0,
     "\"64MiB\"", 1, 0, NOMAX, NULL},
    /* reservoir (reservoir/reservoir.h names and defaults) */
    {"reservoir.policy", T_ENUM, O(res_policy), 0, "\"reservoir\"", 0, 0, 0,
     "fifo|firo|reservoir"},
    {"reservoir.capacity_bytes", T_SIZE, O(res_capacity_bytes), 0, "\"1GiB\"",
     1, 0, NOMAX, NULL},
    {"reservoir.max_batch", T_INT, O(res_max_batch), 0, "0", 0, 1 << 20, 0,
     NULL},
    {"reservoir.watermark", T_INT, O(res_watermark), 0, "0", 0, 0, NOMAX, NULL},
    {"reservoir.seed", T_INT, O(res_seed), 0, "1", 0, 0, NOMAX, NULL},
    {"reservoir.epochs", T_INT, O(res_epochs), 0, "1", 1, 4294967295.0, 0,
     NULL},
    {"reservoir.max_uses", T_INT, O(res_max_uses), 0, "0", 0, 4294967295.0, 0,
     NULL},
    {"reservoir.rate.samples_per_insert", T_NUM, O(res_rate_spi), 0, "0", 0, 0,
     NOMAX, NULL},
    {"reservoir.rate.min_diff", T_NUM, O(res_rate_min_diff), 0, "-1e300", 0, 0,
     F_NO_MIN | NOMAX, NULL},
    {"reservoir.rate.max_diff", T_NUM, O(res_rate_max_diff), 0, "1e300", 0, 0,
     F_NO_MIN | NOMAX, NULL},
    {"reservoir.balance_sims", T_BOOL, O(res_balance_sims), 0, "false", 0, 0, 0,
     NULL},
    {"reservoir.prioritized.enabled", T_BOOL, O(res_prio_enabled), 0, "false",
     0, 0, 0, NULL},
    {"reservoir.prioritized.alpha", T_NUM, O(res_prio_alpha), 0, "0.6", 0, 1, 0,
     NULL},
    {"reservoir.prioritized.beta", T_NUM, O(res_prio_beta), 0, "0.4", 0, 1, 0,
     NULL},
    {"reservoir.prioritized.epsilon", T_NUM, O(res_prio_epsilon), 0, "1e-06", 0,
     0, NOMAX | F_MIN_EXCL, NULL},
    {"reservoir.storage", T_ENUM, O(res_storage), 0, "\"auto\"", 0, 0, 0,
     "auto|host|device"},
    {"reservoir.device", T_INT, O(res_device), 0, "0", 0, 1024, 0, NULL},
    {"reservoir.prefetch", T_ENUM, O(res_prefetch), 0, "\"auto\"", 0, 0, 0,
     "auto|on|off"},
    /* trainer (trainer/trainer.h names and defaults), then the loop */
    {"trainer.enabled", T_BOOL, O(tr_enabled), 0, "false", 0, 0, 0, NULL},
    {"trainer.kind", T_ENUM, O(tr_kind), 0, "\"internal\"", 0, 0, 0,
     "internal|external"},
    {"trainer.layers", T_INTV, O(tr_layers), O(tr_nlayers), "[256, 256, 256]",
     1, 1 << 20, 0, NULL},
    {"trainer.activation", T_ENUM, O(tr_activation), 0, "\"relu\"", 0, 0, 0,
     "relu|gelu|tanh"},
    {"trainer.optimizer", T_ENUM, O(tr_optimizer), 0, "\"adam\"", 0, 0, 0,
     "adam|adamw|sgd"},
    {"trainer.lr", T_NUM, O(tr_lr), 0, "0.001", 0, 0, NOMAX | F_MIN_EXCL, NULL},
    {"trainer.beta1", T_NUM, O(tr_beta1), 0, "0.9", 0, 1, F_MAX_EXCL, NULL},
    {"trainer.beta2", T_NUM, O(tr_beta2), 0, "0.999", 0, 1, F_MAX_EXCL, NULL},
    {"trainer.eps", T_NUM, O(tr_eps), 0, "1e-08", 0, 0, NOMAX | F_MIN_EXCL,
     NULL},
    {"trainer.weight_decay", T_NUM, O(tr_weight_decay), 0, "0", 0, 0, NOMAX,
     NULL},
    {"trainer.momentum", T_NUM, O(tr_momentum), 0, "0.9", 0, 1, F_MAX_EXCL,
     NULL},
    {"trainer.schedule", T_ENUM, O(tr_schedule), 0, "\"constant\"", 0, 0, 0,
     "constant|cosine|step"},
    {"trainer.warmup_steps", T_INT, O(tr_warmup_steps), 0, "0", 0, 0, NOMAX,
     NULL},
    {"trainer.total_steps", T_INT, O(tr_total_steps), 0, "0", 0, 0, NOMAX,
     NULL},
    {"trainer.min_lr", T_NUM, O(tr_min_lr), 0, "0", 0, 0, NOMAX, NULL},
    {"trainer.step_size", T_INT, O(tr_step_size), 0, "1000", 1, 0, NOMAX, NULL},
    {"trainer.gamma", T_NUM, O(tr_gamma), 0, "0.5", 0, 1, F_MIN_EXCL, NULL},
    {"trainer.grad_clip", T_NUM, O(tr_grad_clip), 0, "0", 0, 0, NOMAX, NULL},
    {"trainer.batch_size", T_INT, O(tr_batch_size), 0, "256", 1, 1 << 20, 0,
     NULL},
    {"trainer.threads", T_INT, O(tr_threads), 0, "0", 0, 1024, 0, NULL},
    {"trainer.seed", T_INT, O(tr_seed), 0, "42", 0, 0, NOMAX, NULL},
    {"trainer.out_norm", T_ENUM, O(tr_out_norm), 0, "\"global\"", 0, 0, 0,
     "global|element"},
    {"trainer.out_norm_samples", T_INT, O(tr_out_norm_samples), 0, "1000", 1, 0,
     NOMAX, NULL},
    {"trainer.backend", T_STR, O(tr_backend), 0, "\"cpu\"", 0, 0, F_NONEMPTY,
     NULL},
    {"trainer.precision", T_ENUM, O(tr_precision), 0, "\"fp32\"", 0, 0, 0,
     "fp32|tf32|bf16"},
    {"trainer.max_steps", T_INT, O(tr_max_steps), 0, "0", 0, 0, NOMAX, NULL},
    {"trainer.max_wall_s", T_NUM, O(tr_max_wall_s), 0, "0", 0, 0, NOMAX, NULL},
    {"trainer.steps_after_end", T_INT, O(tr_steps_after_end), 0, "0", 0, 0,
     NOMAX, NULL},
    {"trainer.eval_every", T_INT, O(tr_eval_every), 0, "100", 1, 0, NOMAX,
     NULL},
    {"trainer.checkpoint_every", T_INT, O(tr_checkpoint_every), 0, "1000", 0, 0,
     NOMAX, NULL},
    {"trainer.checkpoint_every_s", T_NUM, O(tr_checkpoint_every_s), 0, "0", 0,
     0, NOMAX, NULL},
    {"trainer.time_min", T_NUM, O(tr_time_min), 0, "0", 0, 0, F_NO_MIN | NOMAX,
     NULL},
    {"trainer.time_max", T_NUM, O(tr_time_max), 0, "0", 0, 0, F_NO_MIN | NOMAX,
     NULL},
};
#define NKEYS (sizeof keys / sizeof keys[0])

/* Keys with their own code, listed for surge_study_key_paths(). */
static const char *const special_paths[] = {
    "parameters",       "parameters[].name", "parameters[].min",
    "parameters[].max", "solver.command",
};
#define NSPECIAL (sizeof special_paths / sizeof special_paths[0])

/* Placeholders the command template knows besides parameter names; a
 * parameter may not take one of these names. */
static const char *const builtin_placeholders[] = {
    "sim", "attempt", "ranks", "run_dir", "output_dir", "study_dir", "bindir",
};
#define NBUILTIN (sizeof builtin_placeholders / sizeof builtin_placeholders[0])

struct parser {
    surge_study *s;
    char *err;
    size_t errcap;
    bool seen[NKEYS]; /* keys the user set */
    bool seen_params;
    bool seen_command;
};

static int fail(struct parser *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
fail(struct parser *p, const char *fmt, ...)
{
    if (p->err != NULL && p->errcap > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->err, p->errcap, fmt, ap);
        va_end(ap);
        /* Keys and values from the file are quoted in the message, which
         * must stay one line (a log line, a terminal): control characters
         * (a key "r\nks" decoded from JSON) become '?'. Found by fuzzing. */
        for (char *c = p->err; *c != '\0'; c++) {
            if ((unsigned char)*c < 0x20 || *c == 0x7f) {
                *c = '?';
            }
        }
    }
    return SURGE_ECONFIG;
}

/* ------------------------------------------------------------ strv */

void
surge_strv_free(surge_strv *v)
{
    if (v == NULL) {
        return;
    }
    for (size_t i = 0; i < v->n; i++) {
        free(v->v[i]);
    }
    free(v->v);
    v->v = NULL;
    v->n = 0;
}

int
surge_strv_push(surge_strv *v, const char *s)
{
    char *copy = strdup(s);
    if (copy == NULL) {
        return -ENOMEM;
    }
    char **nv = realloc(v->v, (v->n + 2) * sizeof *nv);
    if (nv == NULL) {
        free(copy);
        return -ENOMEM;
    }
    nv[v->n] = copy;
    nv[v->n + 1] = NULL;
    v->v = nv;
    v->n++;
    return 0;
}

void
surge_strv_move(surge_strv *dst, surge_strv *src)
{
    surge_strv_free(dst);
    *dst = *src;
    src->v = NULL;
    src->n = 0;
}

int
surge_strv_finish(surge_strv *v, int rc, char *const *tail, surge_strv *out)
{
    for (size_t i = 0; rc == 0 && tail[i] != NULL; i++) {
        rc = surge_strv_push(v, tail[i]);
    }
    if (rc != 0) {
        surge_strv_free(v);
        return rc;
    }
    surge_strv_move(out, v);
    return 0;
}

/* ------------------------------------------------------------ messages */

static const char *
enum_name(const char *choices, int index, char *buf, size_t cap)
{
    const char *p = choices;
    for (int i = 0; i < index && p != NULL; i++) {
        p = strchr(p, '|');
        if (p != NULL) {
            p++;
        }
    }
    if (p == NULL) {
        return "?";
    }
    size_t n = strcspn(p, "|");
    snprintf(buf, cap, "%.*s", (int)n, p);
    return buf;
}

const char *
surge_sampler_kind_name(int kind)
{
    static const char *const names[] = {"uniform", "lhs", "halton", "sobol",
                                        "csv"};
    return kind >= 0 && kind < 5 ? names[kind] : "?";
}

const char *
surge_scheduler_kind_name(int kind)
{
    return kind == SURGE_SCHEDULER_LOCAL   ? "local"
           : kind == SURGE_SCHEDULER_SLURM ? "slurm"
                                           : "?";
}

static void
fmt_num(char *buf, size_t cap, double v)
{
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(buf, cap, "%.0f", v);
        return;
    }
    snprintf(buf, cap, "%.17g", v);
    /* Shortest form that reads back: try fewer digits first. */
    for (int prec = 1; prec <= 17; prec++) {
        char tmp[64];
        snprintf(tmp, sizeof tmp, "%.*g", prec, v);
        if (strtod(tmp, NULL) == v) {
            snprintf(buf, cap, "%s", tmp);
            return;
        }
    }
}

/* "must be > 0", "must be in [0, 1)", "must be an integer >= 1" ... */
static void
bounds_text(const struct key *k, char *buf, size_t cap)
{
    char lo[64], hi[64];
    fmt_num(lo, sizeof lo, k->min);
    fmt_num(hi, sizeof hi, k->max);
    const char *what = k->type == T_INT || k->type == T_INTV ? "an integer "
                       : k->type == T_SIZE ? "a size in bytes (an integer or "
                                             "a string like \"256MiB\") "
                                           : "";
    if (k->flags & F_NO_MIN) {
        snprintf(buf, cap, "must be %sa finite number", what);
    } else if (k->flags & F_NO_MAX) {
        snprintf(buf, cap, "must be %s%s %s", what,
                 (k->flags & F_MIN_EXCL) ? ">" : ">=", lo);
    } else {
        snprintf(buf, cap, "must be %sin %c%s, %s%c", what,
                 (k->flags & F_MIN_EXCL) ? '(' : '[', lo, hi,
                 (k->flags & F_MAX_EXCL) ? ')' : ']');
    }
}

static bool
in_bounds(const struct key *k, double v)
{
    if (!isfinite(v)) {
        return false;
    }
    if (!(k->flags & F_NO_MIN)) {
        if ((k->flags & F_MIN_EXCL) ? !(v > k->min) : !(v >= k->min)) {
            return false;
        }
    }
    if (!(k->flags & F_NO_MAX)) {
        if ((k->flags & F_MAX_EXCL) ? !(v < k->max) : !(v <= k->max)) {
            return false;
        }
    }
    return true;
}

static bool
valid_name(const char *s)
{
    return surge_proto_valid_name(s) != 0;
}

/* Levenshtein distance of two short strings, capped at 9. */
static int
edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 40 || lb > 40) {
        return 9;
    }
    int prev[41], cur[41];
    for (size_t j = 0; j <= lb; j++) {
        prev[j] = (int)j;
    }
    for (size_t i = 1; i <= la; i++) {
        cur[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int c = prev[j - 1] + (a[i - 1] != b[j - 1]);
            int d = prev[j] + 1 < cur[j - 1] + 1 ? prev[j] + 1 : cur[j - 1] + 1;
            cur[j] = c < d ? c : d;
        }
        memcpy(prev, cur, sizeof(int) * (lb + 1));
    }
    return prev[lb] > 9 ? 9 : prev[lb];
}

/* The name of the child of prefix (the next path component) in path, when
 * path lies under prefix; writes it into out. */
static bool
child_of(const char *path, const char *prefix, char *out, size_t cap)
{
    size_t lp = strlen(prefix);
    if (lp > 0) {
        if (strncmp(path, prefix, lp) != 0 || path[lp] != '.') {
            return false;
        }
        path += lp + 1;
    }
    size_t n = strcspn(path, ".[");
    snprintf(out, cap, "%.*s", (int)n, path);
    return true;
}

static void
suggest(const char *prefix, const char *name, char *buf, size_t cap)
{
    char best[STUDY_MAX_PATH] = "";
    int best_d = 3; /* only close names are worth a hint */
    char child[STUDY_MAX_PATH];
    for (size_t i = 0; i < NKEYS + NSPECIAL; i++) {
        const char *path = i < NKEYS ? keys[i].path : special_paths[i - NKEYS];
        if (!child_of(path, prefix, child, sizeof child)) {
            continue;
        }
        int d = edit_distance(name, child);
        if (d < best_d) {
            best_d = d;
            snprintf(best, sizeof best, "%s", child);
        }
    }
    if (best[0] != '\0') {
        snprintf(buf, cap, " (did you mean '%s'?)", best);
    } else {
        buf[0] = '\0';
    }
}

/* ------------------------------------------------------------ values */

static int
parse_size_text(const char *s, uint64_t *out)
{
    static const struct {
        const char *suffix;
        uint64_t mult;
    } units[] = {
        {"", 1},
        {"B", 1},
        {"KiB", UINT64_C(1) << 10},
        {"MiB", UINT64_C(1) << 20},
        {"GiB", UINT64_C(1) << 30},
        {"TiB", UINT64_C(1) << 40},
        {"kB", 1000},
        {"KB", 1000},
        {"MB", 1000000},
        {"GB", 1000000000},
        {"TB", UINT64_C(1000000000000)},
    };
    char *end = NULL;
    if (s[0] < '0' || s[0] > '9') {
        return -EINVAL;
    }
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno == ERANGE) {
        return -ERANGE;
    }
    while (*end == ' ') {
        end++;
    }
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].suffix) == 0) {
            if (v > UINT64_MAX / units[i].mult) {
                return -ERANGE;
            }
            *out = (uint64_t)v * units[i].mult;
            return 0;
        }
    }
    return -EINVAL;
}

static int
set_key(struct parser *p, const struct key *k, const char *path, json_t *v)
{
    char *base = (char *)p->s;
    char bt[256];
    switch (k->type) {
    case T_STR: {
        if (!json_is_string(v)) {
            return fail(p, "%s: must be a string", path);
        }
        const char *str = json_string_value(v);
        if (strlen(str) != json_string_length(v)) {
            return fail(p, "%s: must not contain NUL characters", path);
        }
        if ((k->flags & F_NAME) && !valid_name(str)) {
            return fail(p, "%s: must be 1 to 64 characters of [A-Za-z0-9_.-]",
                        path);
        }
        if ((k->flags & F_NONEMPTY) && str[0] == '\0') {
            return fail(p, "%s: must not be empty", path);
        }
        char *copy = strdup(str);
        if (copy == NULL) {
            return -ENOMEM;
        }
        char **slot = (char **)(base + k->off);
        free(*slot);
        *slot = copy;
        return 0;
    }
    case T_INT: {
        bounds_text(k, bt, sizeof bt);
        if (!json_is_integer(v)) {
            return fail(p, "%s: %s", path, bt);
        }
        json_int_t x = json_integer_value(v);
        if (!in_bounds(k, (double)x) || x < 0) {
            return fail(p, "%s: %s", path, bt);
        }
        *(int64_t *)(base + k->off) = (int64_t)x;
        return 0;
    }
    case T_SIZE: {
        bounds_text(k, bt, sizeof bt);
        uint64_t x = 0;
        if (json_is_integer(v) && json_integer_value(v) >= 0) {
            x = (uint64_t)json_integer_value(v);
        } else if (!json_is_string(v) ||
                   parse_size_text(json_string_value(v), &x) != 0) {
            return fail(p, "%s: %s", path, bt);
        }
        if (!in_bounds(k, (double)x)) {
            return fail(p, "%s: %s", path, bt);
        }
        *(uint64_t *)(base + k->off) = x;
        return 0;
    }
    case T_NUM: {
        if (!json_is_number(v)) {
            return fail(p, "%s: must be a number", path);
        }
        double x = json_number_value(v);
        if (!in_bounds(k, x)) {
            bounds_text(k, bt, sizeof bt);
            return fail(p, "%s: %s", path, bt);
        }
        *(double *)(base + k->off) = x;
        return 0;
    }
    case T_BOOL:
        if (!json_is_boolean(v)) {
            return fail(p, "%s: must be true or false", path);
        }
        *(int *)(base + k->off) = json_is_true(v) ? 1 : 0;
        return 0;
    case T_ENUM: {
        const char *str = json_is_string(v) ? json_string_value(v) : NULL;
        const char *c = k->choices;
        for (int i = 0; str != NULL && c != NULL; i++) {
            size_t n = strcspn(c, "|");
            if (strlen(str) == n && strncmp(str, c, n) == 0) {
                *(int *)(base + k->off) = i;
                return 0;
            }
            c = c[n] == '|' ? c + n + 1 : NULL;
        }
        char list[256];
        size_t li = 0;
        for (const char *q = k->choices; *q != '\0' && li + 3 < sizeof list;
             q++) {
            if (*q == '|') {
                list[li++] = ',';
                list[li++] = ' ';
            } else {
                list[li++] = *q;
            }
        }
        list[li] = '\0';
        return fail(p, "%s: must be one of: %s", path, list);
    }
    case T_STRV: {
        if (!json_is_array(v)) {
            return fail(p, "%s: must be an array of strings", path);
        }
        surge_strv nv = {NULL, 0};
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e)
        {
            if (!json_is_string(e) ||
                strlen(json_string_value(e)) != json_string_length(e)) {
                surge_strv_free(&nv);
                return fail(p, "%s[%zu]: must be a string", path, i);
            }
            if (surge_strv_push(&nv, json_string_value(e)) != 0) {
                surge_strv_free(&nv);
                return -ENOMEM;
            }
        }
        if ((k->flags & F_NONEMPTY) && nv.n == 0) {
            return fail(p, "%s: must not be empty", path);
        }
        surge_strv *slot = (surge_strv *)(base + k->off);
        surge_strv_free(slot);
        *slot = nv;
        return 0;
    }
    case T_INTV: {
        bounds_text(k, bt, sizeof bt);
        if (!json_is_array(v)) {
            return fail(p, "%s: must be an array of integers", path);
        }
        size_t n = json_array_size(v);
        if ((k->flags & F_NONEMPTY) && n == 0) {
            return fail(p, "%s: must not be empty", path);
        }
        if (n > STUDY_MAX_LAYERS) {
            return fail(p, "%s: at most %d entries", path, STUDY_MAX_LAYERS);
        }
        int64_t *a = calloc(n > 0 ? n : 1, sizeof *a);
        if (a == NULL) {
            return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
            json_t *e = json_array_get(v, i);
            if (!json_is_integer(e) ||
                !in_bounds(k, (double)json_integer_value(e))) {
                free(a);
                return fail(p, "%s[%zu]: %s", path, i, bt);
            }
            a[i] = (int64_t)json_integer_value(e);
        }
        int64_t **slot = (int64_t **)(base + k->off);
        free(*slot);
        *slot = a;
        *(size_t *)(base + k->off2) = n;
        return 0;
    }
    }
    return SURGE_EINTERNAL;
}

static const struct key *
find_key(const char *path)
{
    for (size_t i = 0; i < NKEYS; i++) {
        if (strcmp(keys[i].path, path) == 0) {
            return &keys[i];
        }
    }
    return NULL;
}

static bool
is_section(const char *path)
{
    size_t n = strlen(path);
    for (size_t i = 0; i < NKEYS + NSPECIAL; i++) {
        const char *k = i < NKEYS ? keys[i].path : special_paths[i - NKEYS];
        if (strncmp(k, path, n) == 0 && k[n] == '.') {
            return true;
        }
    }
    return false;
}

/* ------------------------------------------------------------ specials */

static int
parse_params(struct parser *p, json_t *v)
{
    surge_study *s = p->s;
    if (!json_is_array(v)) {
        return fail(p, "parameters: must be an array of {\"name\", \"min\", "
                       "\"max\"} objects");
    }
    size_t n = json_array_size(v);
    if (n == 0) {
        return fail(p, "parameters: must not be empty");
    }
    if (n > SURGE_MAX_PARAMS) {
        return fail(p,
                    "parameters: at most %d parameters (the protocol's "
                    "limit), found %zu",
                    SURGE_MAX_PARAMS, n);
    }
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(v, i);
        surge_study_param *sp = &s->params[i];
        bool have_name = false, have_min = false, have_max = false;
        if (!json_is_object(o)) {
            return fail(p,
                        "parameters[%zu]: must be an object with name, "
                        "min and max",
                        i);
        }
        const char *k;
        json_t *e;
        json_object_foreach(o, k, e)
        {
            if (strcmp(k, "name") == 0) {
                const char *str =
                    json_is_string(e) ? json_string_value(e) : NULL;
                if (str == NULL || strlen(str) != json_string_length(e) ||
                    !valid_name(str)) {
                    return fail(p,
                                "parameters[%zu].name: must be 1 to 64 "
                                "characters of [A-Za-z0-9_.-]",
                                i);
                }
                for (size_t b = 0; b < NBUILTIN; b++) {
                    if (strcmp(str, builtin_placeholders[b]) == 0) {
                        return fail(p,
                                    "parameters[%zu].name: '%s' is "
                                    "reserved for a command placeholder",
                                    i, str);
                    }
                }
                for (size_t j = 0; j < i; j++) {
                    if (strcmp(s->params[j].name, str) == 0) {
                        return fail(p,
                                    "parameters[%zu].name: '%s' is "
                                    "already parameters[%zu]",
                                    i, str, j);
                    }
                }
                snprintf(sp->name, sizeof sp->name, "%s", str);
                have_name = true;
            } else if (strcmp(k, "min") == 0 || strcmp(k, "max") == 0) {
                if (!json_is_number(e) || !isfinite(json_number_value(e))) {
                    return fail(p, "parameters[%zu].%s: must be a number", i,
                                k);
                }
                if (k[1] == 'i') {
                    sp->min = json_number_value(e);
                    have_min = true;
                } else {
                    sp->max = json_number_value(e);
                    have_max = true;
                }
            } else {
                char hint[STUDY_MAX_PATH + 32];
                suggest("parameters[]", k, hint, sizeof hint);
                return fail(p, "parameters[%zu].%s: unknown key%s", i, k, hint);
            }
        }
        if (!have_name) {
            return fail(p, "parameters[%zu].name: required", i);
        }
        if (!have_min) {
            return fail(p, "parameters[%zu].min: required", i);
        }
        if (!have_max) {
            return fail(p, "parameters[%zu].max: required", i);
        }
        if (!(sp->max > sp->min)) {
            return fail(p, "parameters[%zu].max: must be > min", i);
        }
    }
    s->nparams = n;
    p->seen_params = true;
    return 0;
}

int
surge_study_split_command(const char *line, surge_strv *out, char *err,
                          size_t errcap)
{
    surge_strv words = {NULL, 0};
    size_t len = strlen(line);
    char *word = malloc(len + 1);
    int rc = 0;
    if (word == NULL) {
        return -ENOMEM;
    }
    const char *c = line;
    for (;;) {
        while (*c == ' ' || *c == '\t' || *c == '\n') {
            c++;
        }
        if (*c == '\0') {
            break;
        }
        size_t w = 0;
        while (*c != '\0' && *c != ' ' && *c != '\t' && *c != '\n') {
            if (*c == '\'') {
                const char *end = strchr(c + 1, '\'');
                if (end == NULL) {
                    snprintf(err, errcap, "unterminated ' quote");
                    rc = SURGE_ECONFIG;
                    goto out;
                }
                memcpy(word + w, c + 1, (size_t)(end - c - 1));
                w += (size_t)(end - c - 1);
                c = end + 1;
            } else if (*c == '"') {
                c++;
                while (*c != '"') {
                    if (*c == '\0') {
                        snprintf(err, errcap, "unterminated \" quote");
                        rc = SURGE_ECONFIG;
                        goto out;
                    }
                    if (*c == '\\' && c[1] != '\0') {
                        c++;
                    }
                    word[w++] = *c++;
                }
                c++;
            } else if (*c == '\\') {
                if (c[1] == '\0') {
                    snprintf(err, errcap, "trailing backslash");
                    rc = SURGE_ECONFIG;
                    goto out;
                }
                word[w++] = c[1];
                c += 2;
            } else {
                word[w++] = *c++;
            }
        }
        word[w] = '\0';
        if (words.n >= STUDY_MAX_WORDS) {
            snprintf(err, errcap, "more than %d words", STUDY_MAX_WORDS);
            rc = SURGE_ECONFIG;
            goto out;
        }
        rc = surge_strv_push(&words, word);
        if (rc != 0) {
            goto out;
        }
    }
    surge_strv_move(out, &words);
out:
    surge_strv_free(&words);
    free(word);
    return rc;
}

static int
parse_command(struct parser *p, json_t *v)
{
    surge_strv words = {NULL, 0};
    char why[256];
    if (json_is_string(v)) {
        if (strlen(json_string_value(v)) != json_string_length(v)) {
            return fail(p, "solver.command: must not contain NUL characters");
        }
        int rc = surge_study_split_command(json_string_value(v), &words, why,
                                           sizeof why);
        if (rc == SURGE_ECONFIG) {
            return fail(p, "solver.command: %s", why);
        }
        if (rc != 0) {
            return rc;
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *e;
        if (json_array_size(v) > STUDY_MAX_WORDS) {
            return fail(p, "solver.command: more than %d words",
                        STUDY_MAX_WORDS);
        }
        json_array_foreach(v, i, e)
        {
            if (!json_is_string(e) ||
                strlen(json_string_value(e)) != json_string_length(e)) {
                surge_strv_free(&words);
                return fail(p, "solver.command[%zu]: must be a string", i);
            }
            if (surge_strv_push(&words, json_string_value(e)) != 0) {
                surge_strv_free(&words);
                return -ENOMEM;
            }
        }
    } else {
        return fail(p, "solver.command: must be a string or an array of "
                       "strings");
    }
    if (words.n == 0 || words.v[0][0] == '\0') {
        surge_strv_free(&words);
        return fail(p, "solver.command: must name a program");
    }
    surge_strv_free(&p->s->command);
    p->s->command = words;
    p->seen_command = true;
    return 0;
}

/* ------------------------------------------------------------ walk */

static int
walk(struct parser *p, json_t *obj, const char *prefix)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        char path[STUDY_MAX_PATH];
        int n = snprintf(path, sizeof path, "%s%s%s", prefix,
                         prefix[0] != '\0' ? "." : "", k);
        if (n < 0 || (size_t)n >= sizeof path) {
            return fail(p, "%.64s...: key path too long", path);
        }
        int rc;
        if (strcmp(path, "parameters") == 0) {
            rc = parse_params(p, v);
        } else if (strcmp(path, "solver.command") == 0) {
            rc = parse_command(p, v);
        } else {
            const struct key *key = find_key(path);
            if (key != NULL) {
                rc = set_key(p, key, path, v);
                if (rc == 0) {
                    p->seen[key - keys] = true;
                }
            } else if (is_section(path)) {
                if (!json_is_object(v)) {
                    return fail(p, "%s: must be an object", path);
                }
                rc = walk(p, v, path);
            } else {
                char hint[STUDY_MAX_PATH + 32];
                suggest(prefix, k, hint, sizeof hint);
                return fail(p, "%s: unknown key%s", path, hint);
            }
        }
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

static int
apply_defaults(struct parser *p)
{
    for (size_t i = 0; i < NKEYS; i++) {
        if (keys[i].def == NULL) {
            continue;
        }
        json_error_t jerr;
        json_t *v = json_loads(keys[i].def, JSON_DECODE_ANY, &jerr);
        if (v == NULL) {
            return fail(p, "%s: bad built-in default (a bug)", keys[i].path);
        }
        int rc = set_key(p, &keys[i], keys[i].path, v);
        json_decref(v);
        if (rc != 0) {
            return rc == SURGE_ECONFIG ? SURGE_EINTERNAL : rc;
        }
    }
    return 0;
}

/* Replace {name} in output_dir by the study name. */
static int
expand_output_dir(struct parser *p)
{
    surge_study *s = p->s;
    const char *in = s->output_dir;
    size_t cap = strlen(in) + 1;
    for (const char *q = strstr(in, "{name}"); q != NULL;
         q = strstr(q + 1, "{name}")) {
        cap += strlen(s->name);
    }
    char *out = malloc(cap);
    if (out == NULL) {
        return -ENOMEM;
    }
    size_t o = 0;
    for (const char *c = in; *c != '\0';) {
        if (strncmp(c, "{name}", 6) == 0) {
            memcpy(out + o, s->name, strlen(s->name));
            o += strlen(s->name);
            c += 6;
        } else if (*c == '{' || *c == '}') {
            free(out);
            return fail(p, "study.output_dir: only the {name} placeholder is "
                           "allowed");
        } else {
            out[o++] = *c++;
        }
    }
    out[o] = '\0';
    free(s->output_dir);
    s->output_dir = out;
    return 0;
}

static int
cross_checks(struct parser *p)
{
    surge_study *s = p->s;
    int rc;
    if (!p->seen_params) {
        return fail(p, "parameters: required (an array of {\"name\", \"min\", "
                       "\"max\"})");
    }
    if (!p->seen_command) {
        return fail(p, "solver.command: required");
    }
    const struct key *runs = find_key("sampler.runs");
    const struct key *file = find_key("sampler.file");
    if (s->sampler == SURGE_SAMPLER_CSV) {
        if (!p->seen[file - keys]) {
            return fail(p, "sampler.file: required when sampler.kind is csv");
        }
        if (s->sampler_file[0] != '/' && s->study_dir != NULL) {
            size_t n = strlen(s->study_dir) + strlen(s->sampler_file) + 2;
            char *abs = malloc(n);
            if (abs == NULL) {
                return -ENOMEM;
            }
            snprintf(abs, n, "%s/%s", s->study_dir, s->sampler_file);
            free(s->sampler_file);
            s->sampler_file = abs;
        }
    } else {
        if (!p->seen[runs - keys]) {
            return fail(p, "sampler.runs: required (the number of runs)");
        }
        if (p->seen[file - keys]) {
            return fail(p, "sampler.file: only used when sampler.kind is csv");
        }
    }
    if (s->sampler == SURGE_SAMPLER_SOBOL && s->nparams > 40) {
        return fail(p,
                    "sampler.kind: sobol supports at most 40 parameters, "
                    "the study has %zu",
                    s->nparams);
    }
    if (strncmp(s->server_bind, "tcp://", 6) != 0 &&
        strncmp(s->server_bind, "ipc://", 6) != 0) {
        return fail(p, "server.bind: must be a tcp:// or ipc:// endpoint");
    }
    if (strcmp(s->tr_backend, "cpu") != 0 &&
        strcmp(s->tr_backend, "cuda") != 0 &&
        strcmp(s->tr_backend, "auto") != 0) {
        return fail(p, "trainer.backend: must be one of: cpu, cuda, auto");
    }
    if (strcmp(s->tr_backend, "cpu") == 0 && s->tr_precision != 0) {
        return fail(p, "trainer.precision: tf32 and bf16 need backend cuda "
                       "or auto (the cpu backend computes in fp32)");
    }
    if (s->tr_schedule == 1 && s->tr_total_steps <= s->tr_warmup_steps) {
        return fail(p, "trainer.total_steps: must be > warmup_steps with the "
                       "cosine schedule");
    }
    if (s->tr_min_lr > s->tr_lr) {
        return fail(p, "trainer.min_lr: must be <= lr");
    }
    if (s->res_epochs != 1 && s->res_policy != 1) {
        return fail(p, "reservoir.epochs: only the firo policy uses epochs "
                       "(must be 1 otherwise)");
    }
    if (s->res_max_uses != 0 && s->res_policy != 2) {
        return fail(p, "reservoir.max_uses: only the reservoir policy caps "
                       "uses (must be 0 otherwise)");
    }
    if (s->res_rate_min_diff >= s->res_rate_max_diff) {
        return fail(p, "reservoir.rate.max_diff: must be > min_diff");
    }
    if (s->res_balance_sims && s->res_prio_enabled) {
        return fail(p, "reservoir.balance_sims: cannot be combined with "
                       "prioritized.enabled");
    }
    if ((s->res_balance_sims || s->res_prio_enabled) && s->res_policy == 0) {
        return fail(p, "reservoir.policy: fifo takes the oldest samples; "
                       "balance_sims and prioritized need firo or reservoir");
    }
    rc = expand_output_dir(p);
    if (rc != 0) {
        return rc;
    }
    /* Expand the command once with made-up values: this finds unknown
     * placeholders and unbalanced braces now rather than at the first run. */
    double zeros[SURGE_MAX_PARAMS] = {0};
    surge_expand_ctx ctx = {0, 0, zeros, "/run", "/out", "/bin"};
    surge_strv tmp = {NULL, 0};
    char why[512];
    rc = surge_study_expand_command(s, &ctx, &tmp, why, sizeof why);
    surge_strv_free(&tmp);
    if (rc == SURGE_ECONFIG) {
        return fail(p, "%s", why);
    }
    return rc;
}

static void
study_free_fields(surge_study *s)
{
    for (size_t i = 0; i < NKEYS; i++) {
        char *slot = (char *)s + keys[i].off;
        switch (keys[i].type) {
        case T_STR:
            free(*(char **)slot);
            *(char **)slot = NULL;
            break;
        case T_STRV:
            surge_strv_free((surge_strv *)slot);
            break;
        case T_INTV:
            free(*(int64_t **)slot);
            *(int64_t **)slot = NULL;
            break;
        default:
            break;
        }
    }
    surge_strv_free(&s->command);
    free(s->source);
    free(s->study_dir);
}

void
surge_study_destroy(surge_study **sp)
{
    if (sp == NULL || *sp == NULL) {
        return;
    }
    study_free_fields(*sp);
    free(*sp);
    *sp = NULL;
}

int
surge_study_parse(surge_study **out, const char *text, const char *origin,
                  const char *base_dir, char *err, size_t errcap)
{
    int rc;
    char cwd[4096];
    surge_study *s = calloc(1, sizeof *s);
    if (s == NULL) {
        return -ENOMEM;
    }
    struct parser p = {.s = s, .err = err, .errcap = errcap};
    if (err != NULL && errcap > 0) {
        err[0] = '\0';
    }
    if (base_dir == NULL) {
        base_dir = getcwd(cwd, sizeof cwd) != NULL ? cwd : ".";
    }
    s->source = strdup(origin != NULL ? origin : "<study>");
    s->study_dir = strdup(base_dir);
    if (s->source == NULL || s->study_dir == NULL) {
        rc = -ENOMEM;
        goto fail_study;
    }
    rc = apply_defaults(&p);
    if (rc != 0) {
        goto fail_study;
    }
    json_error_t jerr;
    json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        rc = fail(&p, "%s:%d:%d: %s", s->source, jerr.line, jerr.column,
                  jerr.text);
        goto fail_study;
    }
    if (!json_is_object(root)) {
        rc = fail(&p, "%s: the study must be a JSON object", s->source);
        goto fail_json;
    }
    rc = walk(&p, root, "");
    if (rc != 0) {
        goto fail_json;
    }
    rc = cross_checks(&p);
    if (rc != 0) {
        goto fail_json;
    }
    json_decref(root);
    *out = s;
    return 0;

fail_json:
    json_decref(root);
fail_study:
    surge_study_destroy(&s);
    return rc;
}

int
surge_study_load(surge_study **out, const char *path, char *err, size_t errcap)
{
    char *text = NULL;
    size_t len = 0;
    char dir[4096];
    char absdir[4096];
    int rc = surge_deploy_read_file(path, STUDY_MAX_FILE_BYTES, &text, &len);
    if (rc == -EFBIG) {
        snprintf(err, errcap, "%s: larger than %u bytes, not a study file",
                 path, STUDY_MAX_FILE_BYTES);
        return SURGE_ECONFIG;
    }
    if (rc < 0) {
        snprintf(err, errcap, "%s: %s", path, strerror(-rc));
        return rc;
    }
    if (strlen(text) != len) {
        free(text);
        snprintf(err, errcap, "%s: contains NUL bytes, not a study file", path);
        return SURGE_ECONFIG;
    }
    rc = surge_deploy_dirname(path, dir, sizeof dir);
    if (rc == 0 && realpath(dir, absdir) == NULL) {
        rc = -errno;
    }
    if (rc < 0) {
        free(text);
        snprintf(err, errcap, "%s: %s", path, strerror(-rc));
        return rc;
    }
    rc = surge_study_parse(out, text, path, absdir, err, errcap);
    free(text);
    return rc;
}

int
surge_study_param_index(const surge_study *s, const char *name)
{
    for (size_t i = 0; i < s->nparams; i++) {
        if (strcmp(s->params[i].name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

const char *const *
surge_study_key_paths(size_t *n)
{
    static const char *paths[NKEYS + NSPECIAL];
    for (size_t i = 0; i < NKEYS; i++) {
        paths[i] = keys[i].path;
    }
    for (size_t i = 0; i < NSPECIAL; i++) {
        paths[NKEYS + i] = special_paths[i];
    }
    *n = NKEYS + NSPECIAL;
    return paths;
}

/* ------------------------------------------------------------ expansion */

/* Append n bytes to the word being built; false when it would overflow. */
static bool
put(char *w, size_t *len, const char *src, size_t n)
{
    if (*len + n >= STUDY_MAX_WORD) {
        return false;
    }
    memcpy(w + *len, src, n);
    *len += n;
    w[*len] = '\0';
    return true;
}

int
surge_study_expand_command(const surge_study *s, const surge_expand_ctx *ctx,
                           surge_strv *argv_out, char *err, size_t errcap)
{
    surge_strv out = {NULL, 0};
    char *w = malloc(STUDY_MAX_WORD);
    int rc = 0;
    if (w == NULL) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < s->command.n; i++) {
        const char *c = s->command.v[i];
        size_t len = 0;
        w[0] = '\0';
        while (*c != '\0') {
            bool ok;
            if (c[0] == '{' && c[1] == '{') {
                ok = put(w, &len, "{", 1);
                c += 2;
            } else if (c[0] == '}' && c[1] == '}') {
                ok = put(w, &len, "}", 1);
                c += 2;
            } else if (c[0] == '}') {
                snprintf(err, errcap,
                         "solver.command: unmatched '}' in "
                         "'%s' (write }} for a literal brace)",
                         s->command.v[i]);
                rc = SURGE_ECONFIG;
                goto out;
            } else if (c[0] == '{') {
                const char *end = strchr(c, '}');
                if (end == NULL) {
                    snprintf(err, errcap,
                             "solver.command: unterminated "
                             "placeholder in '%s'",
                             s->command.v[i]);
                    rc = SURGE_ECONFIG;
                    goto out;
                }
                char name[SURGE_MAX_NAME + 2];
                size_t n = (size_t)(end - c - 1);
                if (n == 0 || n > SURGE_MAX_NAME) {
                    snprintf(err, errcap,
                             "solver.command: bad placeholder "
                             "in '%s'",
                             s->command.v[i]);
                    rc = SURGE_ECONFIG;
                    goto out;
                }
                memcpy(name, c + 1, n);
                name[n] = '\0';
                char val[4200];
                int pi = surge_study_param_index(s, name);
                if (pi >= 0) {
                    snprintf(val, sizeof val, "%.17g", ctx->values[pi]);
                } else if (strcmp(name, "sim") == 0) {
                    snprintf(val, sizeof val, "%lld", (long long)ctx->sim);
                } else if (strcmp(name, "attempt") == 0) {
                    snprintf(val, sizeof val, "%lld", (long long)ctx->attempt);
                } else if (strcmp(name, "ranks") == 0) {
                    snprintf(val, sizeof val, "%lld", (long long)s->ranks);
                } else if (strcmp(name, "run_dir") == 0) {
                    snprintf(val, sizeof val, "%s", ctx->run_dir);
                } else if (strcmp(name, "output_dir") == 0) {
                    snprintf(val, sizeof val, "%s", ctx->output_dir);
                } else if (strcmp(name, "study_dir") == 0) {
                    snprintf(val, sizeof val, "%s", s->study_dir);
                } else if (strcmp(name, "bindir") == 0) {
                    snprintf(val, sizeof val, "%s", ctx->bindir);
                } else {
                    snprintf(err, errcap,
                             "solver.command: unknown "
                             "placeholder {%s} (known: the "
                             "parameter names, sim, attempt, "
                             "ranks, run_dir, output_dir, "
                             "study_dir, bindir)",
                             name);
                    rc = SURGE_ECONFIG;
                    goto out;
                }
                ok = put(w, &len, val, strlen(val));
                c = end + 1;
            } else {
                ok = put(w, &len, c, 1);
                c++;
            }
            if (!ok) {
                snprintf(err, errcap,
                         "solver.command: word %zu longer than "
                         "%d bytes once expanded",
                         i, STUDY_MAX_WORD);
                rc = SURGE_ECONFIG;
                goto out;
            }
        }
        rc = surge_strv_push(&out, w);
        if (rc != 0) {
            goto out;
        }
    }
    surge_strv_move(argv_out, &out);
out:
    surge_strv_free(&out);
    free(w);
    return rc;
}

/* ------------------------------------------------------------ output */

/* The object at a dotted path under root, created as needed. */
static json_t *
section(json_t *root, const char *path)
{
    json_t *cur = root;
    char part[STUDY_MAX_PATH];
    const char *c = path;
    for (;;) {
        const char *dot = strchr(c, '.');
        if (dot == NULL) {
            return cur;
        }
        snprintf(part, sizeof part, "%.*s", (int)(dot - c), c);
        json_t *next = json_object_get(cur, part);
        if (next == NULL) {
            next = json_object();
            if (next == NULL || json_object_set_new(cur, part, next) != 0) {
                return NULL;
            }
        }
        cur = next;
        c = dot + 1;
    }
}

static json_t *
strv_json(const surge_strv *v)
{
    json_t *a = json_array();
    for (size_t i = 0; a != NULL && i < v->n; i++) {
        if (json_array_append_new(a, json_string(v->v[i])) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

char *
surge_study_to_json(const surge_study *s)
{
    const char *base = (const char *)s;
    char *text = NULL;
    json_t *root = json_object();
    if (root == NULL) {
        return NULL;
    }
    /* Sections in the order of the documentation. */
    static const char *const order[] = {"study",     "parameters", "sampler",
                                        "solver",    "scheduler",  "server",
                                        "reservoir", "trainer"};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        if (strcmp(order[i], "parameters") == 0) {
            json_t *a = json_array();
            for (size_t j = 0; a != NULL && j < s->nparams; j++) {
                json_array_append_new(a, json_pack("{s:s, s:f, s:f}", "name",
                                                   s->params[j].name, "min",
                                                   s->params[j].min, "max",
                                                   s->params[j].max));
            }
            json_object_set_new(root, "parameters", a);
        } else {
            json_object_set_new(root, order[i], json_object());
        }
    }
    json_object_set_new(json_object_get(root, "solver"), "command",
                        strv_json(&s->command));
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &keys[i];
        const char *slot = base + k->off;
        const char *leaf = strrchr(k->path, '.') + 1;
        json_t *sec = section(root, k->path);
        json_t *v = NULL;
        char buf[64];
        if (sec == NULL) {
            goto out;
        }
        switch (k->type) {
        case T_STR: {
            const char *str = *(char *const *)slot;
            if (str == NULL) {
                continue; /* optional and unset */
            }
            v = json_string(str);
            break;
        }
        case T_INT:
            if (k->def == NULL && *(const int64_t *)slot == 0) {
                continue; /* sampler.runs of a csv study: not set */
            }
            v = json_integer((json_int_t) * (const int64_t *)slot);
            break;
        case T_SIZE:
            v = json_integer((json_int_t) * (const uint64_t *)slot);
            break;
        case T_NUM:
            v = json_real(*(const double *)slot);
            break;
        case T_BOOL:
            v = json_boolean(*(const int *)slot);
            break;
        case T_ENUM:
            v = json_string(
                enum_name(k->choices, *(const int *)slot, buf, sizeof buf));
            break;
        case T_STRV:
            v = strv_json((const surge_strv *)slot);
            break;
        case T_INTV: {
            const int64_t *a = *(int64_t *const *)slot;
            size_t n = *(const size_t *)(base + k->off2);
            v = json_array();
            for (size_t j = 0; v != NULL && j < n; j++) {
                json_array_append_new(v, json_integer((json_int_t)a[j]));
            }
            break;
        }
        }
        if (v == NULL || json_object_set_new(sec, leaf, v) != 0) {
            goto out;
        }
    }
    text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER |
                                JSON_REAL_PRECISION(17));
out:
    json_decref(root);
    return text;
}
