/*
 * deploy/study.c - the study file parser (jansson), strict and table-driven.
 *
 * DESIGN. Every leaf key of the study file is one row of a key table
 * (common/keytab.h): its dotted path, its type, where it lands in struct
 * surge_study, its bounds and its default (as JSON text, applied through
 * the same setter as a user's value, so a default can never bypass
 * validation). The launcher's own keys are `keys[]` below; a section that
 * fills another folder's struct is one row naming that folder's table
 * (the "trainer" section is trainer/config.c's surge_trainer_keys, which
 * the trainer's own parser reads too; the "reservoir" section's rows are
 * reservoir/config.c's surge_reservoir_keys with the study's fields), so
 * no key is written twice. The parser walks the user's JSON object by
 * object; a key is either a row of the table, a section (a prefix of some
 * row), or unknown, and unknown keys are errors with a "did you mean" hint
 * when a known key is close. Two
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
#include <pthread.h>

#include "common/keytab.h"
#include "deploy/study.h"
#include "deploy/study_config.h"
#include "deploy/util.h"
#include "reservoir/reservoir.h"

#define STUDY_MAX_FILE_BYTES (1u << 20) /* a study file is small */
#define STUDY_MAX_PATH 256              /* dotted key paths */
#define STUDY_MAX_RUNS INT64_C(10000000)
#define STUDY_MAX_WORDS 4096 /* words in solver.command */
#define STUDY_MAX_WORD 4096  /* bytes in one expanded word */

/* The table's types and flags (common/keytab.h), short. */
#define T_STR SURGE_KEY_STR
#define T_INT SURGE_KEY_INT
#define T_SIZE SURGE_KEY_SIZE
#define T_NUM SURGE_KEY_NUM
#define T_BOOL SURGE_KEY_BOOL
#define T_ENUM SURGE_KEY_ENUM
#define T_STRV SURGE_KEY_CUSTOM /* surge_strv: parse_strv() */
#define F_MIN_EXCL SURGE_KEY_MIN_EXCL
#define F_MAX_EXCL SURGE_KEY_MAX_EXCL
#define F_NO_MAX SURGE_KEY_NO_MAX
#define F_NONEMPTY SURGE_KEY_NONEMPTY
#define F_NAME SURGE_KEY_NAME
#define F_NO_MIN SURGE_KEY_NO_MIN
#define CH SURGE_KEY_CHOICES

#define O(f) offsetof(surge_study, f)
#define NOMAX (F_NO_MAX)

/* Where each key of reservoir/config.c's surge_reservoir_keys lands in
 * struct surge_study. The study keeps that section in fields of its own
 * (res_*, which deploy/launch.c passes to `surge serve`), so its rows are
 * the reservoir's rows (type, bounds, names, default) with the study's
 * field put in: res_rows, made once by flat_build(). test_keys checks
 * that they differ from the reservoir's in nothing else. */
#define FIELD(f) O(f), sizeof(((surge_study *)0)->f)
static const struct res_field {
    const char *key;
    size_t off;
    size_t size;
} res_fields[] = {
    {"policy", FIELD(res_policy)},
    {"capacity_bytes", FIELD(res_capacity_bytes)},
    {"watermark", FIELD(res_watermark)},
    {"seed", FIELD(res_seed)},
    {"epochs", FIELD(res_epochs)},
    {"max_uses", FIELD(res_max_uses)},
    {"rate.samples_per_insert", FIELD(res_rate_spi)},
    {"rate.min_diff", FIELD(res_rate_min_diff)},
    {"rate.max_diff", FIELD(res_rate_max_diff)},
    {"balance_sims", FIELD(res_balance_sims)},
    {"prioritized.enabled", FIELD(res_prio_enabled)},
    {"prioritized.alpha", FIELD(res_prio_alpha)},
    {"prioritized.beta", FIELD(res_prio_beta)},
    {"prioritized.epsilon", FIELD(res_prio_epsilon)},
    {"device", FIELD(res_device)},
};
#define NRES (sizeof res_fields / sizeof res_fields[0])
static struct surge_key res_rows[NRES + 1]; /* + the NULL row */

/* The launcher's keys and their defaults, and the sections that other
 * folders' tables fill (SURGE_KEY_TABLE rows: the trainer's keys are
 * trainer/config.c's surge_trainer_keys). docs/configuration.md documents
 * every key (tests/unit/deploy/test_study.c compares). The launcher's
 * rows leave out the last fields, size (0: int64_t, char *) and sub. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
static const struct surge_key keys[] = {
    /* study */
    {"study.name", T_STR, O(name), 0, "\"study\"", 0, 0, F_NAME, NULL},
    {"study.seed", T_INT, O(seed), 0, "1", 0, 0, NOMAX, NULL},
    {"study.output_dir", T_STR, O(output_dir), 0, "\"runs/{name}\"", 0, 0,
     F_NONEMPTY, NULL},
    {"study.progress_interval_s", T_NUM, O(progress_interval_s), 0, "10", 0, 0,
     NOMAX | F_MIN_EXCL, NULL},
    /* sampler */
    {"sampler.kind", T_ENUM, O(sampler), 0, "\"uniform\"", 0, 0, 0,
     CH("uniform", "lhs", "halton", "sobol", "csv")},
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
     CH("local", "slurm")},
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
    /* server as an MPI job of server.ranks ranks */
    {"server.ranks", T_INT, O(server_ranks), 0, "1", 1, SURGE_MAX_RANKS, 0,
     NULL},
    {"server.nodes", T_INT, O(server_nodes), 0, "1", 1, SURGE_MAX_RANKS, 0,
     NULL},
    {"server.ranks_per_node", T_INT, O(server_ranks_per_node), 0, "0", 0,
     SURGE_MAX_RANKS, 0, NULL},
    {"server.launcher", T_ENUM, O(server_launcher), 0, "\"auto\"", 0, 0, 0,
     CH("auto", "direct", "mpirun")},
    {"server.mpirun_args", T_STRV, O(server_mpirun_args), 0, "[]", 0, 0, 0,
     NULL},
    {"server.bind_simulation", T_BOOL, O(server_bind_simulation), 0, "false", 0,
     0, 0, NULL},
    {"server.validation_every", T_INT, O(server_validation_every), 0, "0", 0,
     4294967295.0, 0, NULL},
    {"server.validation_bytes", T_SIZE, O(server_validation_bytes), 0,
     "\"64MiB\"", 1, 0, NOMAX, NULL},
    /* reservoir: the keys of reservoir/config.c's surge_reservoir_keys
     * (res_rows, below), then three whose meaning in a study is not the
     * library struct's, so they are the launcher's own: max_batch 0 means
     * trainer.batch_size (the library's must be >= 1); storage has auto,
     * which the server resolves from the trainer's backend (the library
     * has host and device only); prefetch is how the server feeds its
     * trainer, not a reservoir setting at all. */
    {"reservoir", SURGE_KEY_TABLE, 0, .sub = res_rows},
    {"reservoir.max_batch", T_INT, O(res_max_batch), 0, "0", 0, 1 << 20, 0,
     NULL},
    {"reservoir.storage", T_ENUM, O(res_storage), 0, "\"auto\"", 0, 0, 0,
     CH("auto", "host", "device")},
    {"reservoir.prefetch", T_ENUM, O(res_prefetch), 0, "\"auto\"", 0, 0, 0,
     CH("auto", "on", "off")},
    /* trainer (trainer/trainer.h names and defaults), then the loop */
    {"trainer.enabled", T_BOOL, O(tr_enabled), 0, "false", 0, 0, 0, NULL},
    {"trainer.kind", T_ENUM, O(tr_kind), 0, "\"internal\"", 0, 0, 0,
     CH("internal", "external")},
    {"trainer", SURGE_KEY_TABLE, O(trainer), .sub = surge_trainer_keys},
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
    {NULL, SURGE_KEY_CUSTOM, 0, 0, NULL, 0, 0, 0, NULL, 0, NULL},
};
#pragma GCC diagnostic pop
#define NKEYS (sizeof keys / sizeof keys[0] - 1)

/* Keys with their own code, listed for surge_study_key_paths(). */
static const char *const special_paths[] = {
    "parameters",       "parameters[].name", "parameters[].min",
    "parameters[].max", "solver.command",
};
#define NSPECIAL (sizeof special_paths / sizeof special_paths[0])

/* Every leaf key with its full path: the rows of keys[], a TABLE row
 * replaced by its table's rows under its name ("trainer" + "lr" =
 * "trainer.lr"). Built once; read-only afterwards. */
struct flat_key {
    char path[STUDY_MAX_PATH];
    const struct surge_key *k;
    size_t base; /* offset in surge_study of the struct k->off is in */
};
#define FLAT_MAX 256
static struct flat_key flat[FLAT_MAX];
static size_t nflat; /* 0 when the tables do not fit (a bug) */
static pthread_once_t flat_once = PTHREAD_ONCE_INIT;

static bool
flat_add(const char *prefix, const struct surge_key *k, size_t base)
{
    if (nflat == FLAT_MAX) {
        return false;
    }
    struct flat_key *f = &flat[nflat++];
    snprintf(f->path, sizeof f->path, "%s%s%s", prefix,
             prefix[0] != '\0' ? "." : "", k->name);
    f->k = k;
    f->base = base;
    return true;
}

/* res_rows from the reservoir's table; false when the two lists differ
 * (a bug: a reservoir key without a field here, or the reverse). */
static bool
res_rows_build(void)
{
    size_t n = 0;
    for (const struct surge_key *k = surge_reservoir_keys; k->name != NULL;
         k++) {
        n++;
    }
    for (size_t i = 0; i < NRES; i++) {
        const struct surge_key *k =
            surge_keytab_find(surge_reservoir_keys, res_fields[i].key);
        if (k == NULL || n != NRES) {
            return false;
        }
        res_rows[i] = *k;
        res_rows[i].off = res_fields[i].off;
        res_rows[i].size = res_fields[i].size;
    }
    return true;
}

static void
flat_build(void)
{
    if (!res_rows_build()) {
        nflat = 0;
        return;
    }
    for (size_t i = 0; i < NKEYS; i++) {
        const struct surge_key *k = &keys[i];
        bool ok = true;
        if (k->type == SURGE_KEY_TABLE) {
            for (const struct surge_key *c = k->sub; ok && c->name != NULL;
                 c++) {
                ok = flat_add(k->name, c, k->off);
            }
        } else {
            ok = flat_add("", k, 0);
        }
        if (!ok) {
            nflat = 0;
            return;
        }
    }
}

static void
flat_init(void)
{
    pthread_once(&flat_once, flat_build);
}

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
    bool seen[FLAT_MAX]; /* keys the user set, by index in flat[] */
    bool seen_params;
    bool seen_command;
};

static int fail(struct parser *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
fail(struct parser *p, const char *fmt, ...)
{
    /* One line, control characters of the file's keys and values shown as
     * '?' (found by fuzzing). */
    va_list ap;
    va_start(ap, fmt);
    int rc = surge_keytab_verror(p->err, p->errcap, fmt, ap);
    va_end(ap);
    return rc;
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

static const struct flat_key *find_key(const char *path);

const char *
surge_sampler_kind_name(int kind)
{
    flat_init();
    const struct flat_key *f = find_key("sampler.kind");
    return f != NULL ? surge_keytab_choice(f->k, kind) : "?";
}

const char *
surge_scheduler_kind_name(int kind)
{
    return kind == SURGE_SCHEDULER_LOCAL   ? "local"
           : kind == SURGE_SCHEDULER_SLURM ? "slurm"
                                           : "?";
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
    for (size_t i = 0; i < nflat + NSPECIAL; i++) {
        const char *path = i < nflat ? flat[i].path : special_paths[i - nflat];
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

/* A T_STRV key: an array of strings. */
static int
set_strv(struct parser *p, const struct surge_key *k, surge_strv *slot,
         const char *path, json_t *v)
{
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
    surge_strv_free(slot);
    *slot = nv;
    return 0;
}

static int
set_key(struct parser *p, const struct flat_key *f, const char *path, json_t *v)
{
    char *base = (char *)p->s + f->base;
    if (f->k->type == T_STRV) {
        return set_strv(p, f->k, (surge_strv *)(base + f->k->off), path, v);
    }
    return surge_keytab_set(f->k, base, path, v, p->err, p->errcap);
}

static const struct flat_key *
find_key(const char *path)
{
    for (size_t i = 0; i < nflat; i++) {
        if (strcmp(flat[i].path, path) == 0) {
            return &flat[i];
        }
    }
    return NULL;
}

static bool
is_section(const char *path)
{
    size_t n = strlen(path);
    for (size_t i = 0; i < nflat + NSPECIAL; i++) {
        const char *k = i < nflat ? flat[i].path : special_paths[i - nflat];
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
            const struct flat_key *key = find_key(path);
            if (key != NULL) {
                rc = set_key(p, key, path, v);
                if (rc == 0) {
                    p->seen[key - flat] = true;
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

/* The tables' defaults (common/keytab.h), then those of the T_STRV keys,
 * which only this file parses. */
static int
apply_defaults(struct parser *p)
{
    int rc = surge_keytab_defaults(keys, p->s, p->err, p->errcap);
    for (size_t i = 0; rc == 0 && i < nflat; i++) {
        if (flat[i].k->type != T_STRV || flat[i].k->def == NULL) {
            continue;
        }
        json_error_t jerr;
        json_t *v = json_loads(flat[i].k->def, JSON_DECODE_ANY, &jerr);
        if (v == NULL) {
            return fail(p, "%s: bad built-in default (a bug)", flat[i].path);
        }
        rc = set_key(p, &flat[i], flat[i].path, v);
        json_decref(v);
        if (rc == SURGE_ECONFIG) {
            rc = SURGE_EINTERNAL;
        }
    }
    return rc;
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

/* server.ranks, nodes, ranks_per_node and launcher: how the server's R
 * ranks are started (launch.c start_server). */
static int
server_ranks_checks(struct parser *p)
{
    surge_study *s = p->s;
    bool as_job =
        s->scheduler == SURGE_SCHEDULER_SLURM && s->slurm_server_as_job;
    const struct flat_key *kranks = find_key("server.ranks");
    if (s->server_ranks_per_node > 0) {
        int64_t r = s->server_nodes * s->server_ranks_per_node;
        if (!p->seen[kranks - flat]) {
            if (r > SURGE_MAX_RANKS) {
                return fail(p,
                            "server.ranks_per_node: server.nodes x "
                            "ranks_per_node must be <= %d",
                            SURGE_MAX_RANKS);
            }
            s->server_ranks = r;
        } else if (r != s->server_ranks) {
            return fail(p,
                        "server.ranks_per_node: server.nodes x "
                        "ranks_per_node = %lld, but server.ranks = %lld",
                        (long long)r, (long long)s->server_ranks);
        }
    }
    if (s->server_nodes > s->server_ranks) {
        return fail(p, "server.nodes: must be <= server.ranks (%lld)",
                    (long long)s->server_ranks);
    }
    if (!as_job && (s->server_nodes > 1 || s->server_ranks_per_node > 0)) {
        return fail(p,
                    "server.%s: only with scheduler.kind slurm and "
                    "scheduler.slurm.server_as_job (otherwise every rank "
                    "runs on the launcher's machine)",
                    s->server_nodes > 1 ? "nodes" : "ranks_per_node");
    }
    if (as_job && s->server_launcher == 2) {
        return fail(p, "server.launcher: mpirun cannot start the server as a "
                       "Slurm job (scheduler.slurm.server_as_job: srun "
                       "starts it)");
    }
    if (s->server_launcher == 1 && s->server_ranks > 1) {
        return fail(p,
                    "server.launcher: direct starts one process; "
                    "server.ranks = %lld needs mpirun (auto or mpirun)",
                    (long long)s->server_ranks);
    }
    bool mpirun = !as_job && (s->server_launcher == 2 ||
                              (s->server_launcher == 0 && s->server_ranks > 1));
    if (s->server_mpirun_args.n > 0 && !mpirun) {
        return fail(p, "server.mpirun_args: mpirun does not start this "
                       "server (only with server.ranks > 1 or "
                       "server.launcher mpirun, without "
                       "scheduler.slurm.server_as_job)");
    }
    /* Refused rather than ignored, like server.mpirun_args: with one rank
     * every step goes to rank 0 whatever the route, so the key set there
     * is a mistake (a study meant for R ranks run with 1). */
    if (s->server_bind_simulation && s->server_ranks == 1) {
        return fail(p, "server.bind_simulation: only with server.ranks > 1 "
                       "(one rank receives every step anyway)");
    }
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
    const struct flat_key *runs = find_key("sampler.runs");
    const struct flat_key *file = find_key("sampler.file");
    if (s->sampler == SURGE_SAMPLER_CSV) {
        if (!p->seen[file - flat]) {
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
        if (!p->seen[runs - flat]) {
            return fail(p, "sampler.runs: required (the number of runs)");
        }
        if (p->seen[file - flat]) {
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
    rc = server_ranks_checks(p);
    if (rc != 0) {
        return rc;
    }
    char why[512];
    if (surge_trainer_config_check(&s->trainer, why, sizeof why) != 0) {
        return fail(p, "%s", why);
    }
    /* The reservoir's rules across keys, its own (reservoir/config.c);
     * those that need the sample's shape or the build wait for
     * surge_study_check_components. */
    surge_reservoir_config rcfg;
    surge_study_reservoir_config(s, s->nparams + 1, 1, &rcfg);
    if (surge_reservoir_config_check_keys(&rcfg, why, sizeof why) != 0) {
        return fail(p, "%s", why);
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
    for (size_t i = 0; i < nflat; i++) {
        char *base = (char *)s + flat[i].base;
        if (flat[i].k->type == T_STRV) {
            surge_strv_free((surge_strv *)(base + flat[i].k->off));
        } else {
            surge_keytab_free(flat[i].k, base);
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
    flat_init();
    if (nflat == 0) {
        snprintf(err, errcap,
                 "the study's key tables hold more than %d "
                 "keys (a bug)",
                 FLAT_MAX);
        return SURGE_EINTERNAL;
    }
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
    static const char *paths[FLAT_MAX + NSPECIAL];
    flat_init();
    for (size_t i = 0; i < nflat; i++) {
        paths[i] = flat[i].path;
    }
    for (size_t i = 0; i < NSPECIAL; i++) {
        paths[nflat + i] = special_paths[i];
    }
    *n = nflat + NSPECIAL;
    return paths;
}

const struct surge_key *
surge_study_key(const char *path)
{
    flat_init();
    const struct flat_key *f = find_key(path);
    return f != NULL ? f->k : NULL;
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
    flat_init();
    for (size_t i = 0; i < nflat; i++) {
        const struct surge_key *k = flat[i].k;
        const char *slot = base + flat[i].base + k->off;
        const char *leaf = strrchr(flat[i].path, '.') + 1;
        json_t *sec = section(root, flat[i].path);
        json_t *v = NULL;
        if (sec == NULL) {
            goto out;
        }
        if (k->type == T_STRV) {
            v = strv_json((const surge_strv *)slot);
        } else if (k->type == T_STR && k->size == 0 &&
                   *(char *const *)slot == NULL) {
            continue; /* optional and unset */
        } else if (k->type == T_INT && k->def == NULL &&
                   *(const int64_t *)slot == 0) {
            continue; /* sampler.runs of a csv study: not set */
        } else {
            v = surge_keytab_to_json(k, base + flat[i].base);
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
