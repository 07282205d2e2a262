/*
 * server/train.c - the "trainer" consumer: online training of the surrogate
 * inside `surge serve` (docs/trainer.md, "Training in the server").
 *
 * DESIGN. create() reads the settings on the main thread: the study file
 * (its "parameters" give the input ranges, its "trainer" section the model,
 * the optimizer and the loop keys) and the serve flags that override the
 * loop keys. prepare() (main thread, before any other thread) handles
 * --resume: it reads the checkpoint's server blob, sets the store shape,
 * loads the reservoir state and marks the steps the earlier server had
 * assembled, so a rerun that sends them again is refused. run() (consumer
 * thread) waits for the sample shape, creates the trainer, collects the
 * output statistics from the first batches (kept and trained on once the
 * statistics freeze), then steps on batches drawn from the reservoir,
 * feeds per-row losses back (prioritized sampling), evaluates the held-out
 * validation samples every eval_every steps, writes checkpoints and a
 * progress line, and stops training on the first stopping rule. Once
 * training stopped it keeps taking batches without training (counted as
 * discarded) until the store says SURGE_ECLOSED, so the solvers are never
 * blocked by a trainer that is done. Last: the final checkpoint,
 * <output_dir>/model.safetensors and <output_dir>/trainer.json.
 *
 * Checkpoint (<output_dir>/checkpoint.safetensors, the file the launcher
 * resumes from): the trainer library's checkpoint with this file's blob as
 * its "extra" tensor. The blob is taken in one snapshot on the I/O thread
 * (ctx->io_call: nothing is put while it runs; the consumer thread waits,
 * so the trainer is not stepping either): the reservoir state and the
 * record of assembled steps describe the same instant as the weights.
 * Layout (host byte order, little-endian machines):
 *     "SURGETR1"  magic and version (8 bytes)
 *     u32 nin, u32 0, u64 nout            sample shape
 *     u64 len, len bytes of JSON          progress (counters, time range)
 *     u64 n, n x (i64 sim, i64 step)      steps assembled (record)
 *     u64 n, n x (i64 sim, i64 step, f32 in[nin], f32 out[nout])
 *                                         validation samples
 *     u64 len, len bytes                  surge_reservoir_save stream
 *
 * Threads: create, prepare and destroy on the main thread; run on the
 * consumer thread; stats on the I/O thread (atomics only).
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>
#include <mpi.h>

#include <surge/error.h>

#include "common/log.h"
#include "common/protocol.h"
#include "common/util.h"
#include "server/consumer.h"
#include "server/feed.h"
#include "server/ranks.h"
#include "trainer/replicas_mpi.h"
#include "trainer/trainer.h"

#define COMPONENT "trainer"
#define BLOB_MAGIC "SURGETR1"
#define GET_TIMEOUT_MS 200
#define IO_CALL_TIMEOUT_MS 10000
#define MAX_NONFINITE 50 /* consecutive skipped steps before giving up */
#define CKPT_NAME "checkpoint.safetensors"
#define PREV_SUFFIX ".prev" /* the checkpoint before the newest */
#define MODEL_NAME "model.safetensors"
#define PATH_CAP (SURGE_SERVER_MAX_PATH + 64)

/* What the settings say (main thread; read-only afterwards). */
struct settings {
    struct surge_trainer_config tcfg; /* n_inputs/n_outputs set in run */
    char study[PATH_CAP];             /* "" = none found */
    int nparams;                      /* 0 = unknown (no study) */
    double pmin[SURGE_MAX_PARAMS];    /* (nparams) */
    double pmax[SURGE_MAX_PARAMS];    /* (nparams) */
    char *pnames;                     /* JSON array text of the names */
    int have_time;                    /* time_min < time_max given */
    double time_min, time_max;
    int64_t max_steps;         /* 0 = none */
    double max_wall_s;         /* 0 = none */
    int64_t steps_after_end;   /* 0 = until the reservoir is drained */
    int64_t eval_every;        /* >= 1 */
    int64_t checkpoint_every;  /* 0 = none */
    double checkpoint_every_s; /* 0 = none */
    double progress_s;         /* > 0 */
    char out_dir[SURGE_SERVER_MAX_PATH];
    char ckpt[PATH_CAP];   /* where checkpoints go */
    char model[PATH_CAP];  /* the final model */
    char report[PATH_CAP]; /* trainer.json */
    char resume[PATH_CAP]; /* checkpoint to resume from; "" = none */
};

/* What a resumed checkpoint carried for run() (prepare -> run). */
struct resumed {
    uint32_t nin;
    uint64_t nout;
    json_t *progress;    /* the progress JSON (owned) */
    uint64_t nval;       /* validation samples */
    float *val_in;       /* (nval, nin) */
    float *val_out;      /* (nval, nout) */
    int64_t *val_sim;    /* (nval) */
    int64_t *val_step;   /* (nval) */
    uint64_t nrecord;    /* steps marked assembled */
    uint64_t res_loaded; /* samples in the loaded reservoir */
};

struct train {
    struct settings s;
    int rank, R;         /* this rank of the server's R (create) */
    struct resumed *res; /* NULL unless --resume */
    const surge_server_options *o;
    _Atomic uint64_t batches; /* trained (stats, any thread) */
    _Atomic uint64_t samples; /* rows trained */
};

/* ------------------------------------------------------------ settings */

static const char *const loop_keys[] = {
    "enabled",
    "max_steps",
    "max_wall_s",
    "steps_after_end",
    "eval_every",
    "checkpoint_every",
    "checkpoint_every_s",
    "time_min",
    "time_max",
    "kind", /* internal (this trainer) or external */
};

static double
jnum_or(json_t *o, const char *key, double dflt)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : dflt;
}

static int
load_study(struct settings *s, const char *path, double *progress_s, char *err,
           size_t errlen)
{
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (root == NULL) {
        snprintf(err, errlen, "%s:%d:%d: %s", path, je.line, je.column,
                 je.text);
        return SURGE_ECONFIG;
    }
    int rc = SURGE_ECONFIG;
    json_t *params = json_object_get(root, "parameters");
    json_t *names = json_array();
    if (!json_is_object(root) || !json_is_array(params) ||
        json_array_size(params) < 1 ||
        json_array_size(params) > SURGE_MAX_PARAMS || names == NULL) {
        snprintf(err, errlen,
                 "%s: parameters: must be an array of 1 to %d "
                 "objects",
                 path, SURGE_MAX_PARAMS);
        goto out;
    }
    size_t i;
    json_t *p;
    json_array_foreach(params, i, p)
    {
        json_t *nm = json_object_get(p, "name");
        json_t *lo = json_object_get(p, "min");
        json_t *hi = json_object_get(p, "max");
        if (!json_is_string(nm) || !json_is_number(lo) || !json_is_number(hi) ||
            !(json_number_value(hi) > json_number_value(lo))) {
            snprintf(err, errlen,
                     "%s: parameters[%zu]: needs a name and min < max", path,
                     i);
            goto out;
        }
        s->pmin[i] = json_number_value(lo);
        s->pmax[i] = json_number_value(hi);
        json_array_append(names, nm);
    }
    s->nparams = (int)json_array_size(params);
    s->pnames = json_dumps(names, JSON_COMPACT);
    *progress_s = jnum_or(json_object_get(root, "study"), "progress_interval_s",
                          *progress_s);
    json_t *tr = json_object_get(root, "trainer");
    if (tr != NULL && !json_is_object(tr)) {
        snprintf(err, errlen, "%s: trainer: must be an object", path);
        goto out;
    }
    if (tr != NULL) {
        s->max_steps = (int64_t)jnum_or(tr, "max_steps", 0);
        s->max_wall_s = jnum_or(tr, "max_wall_s", 0);
        s->steps_after_end = (int64_t)jnum_or(tr, "steps_after_end", 0);
        s->eval_every = (int64_t)jnum_or(tr, "eval_every", 100);
        s->checkpoint_every = (int64_t)jnum_or(tr, "checkpoint_every", 1000);
        s->checkpoint_every_s = jnum_or(tr, "checkpoint_every_s", 0);
        s->time_min = jnum_or(tr, "time_min", 0);
        s->time_max = jnum_or(tr, "time_max", 0);
        s->have_time = s->time_max > s->time_min;
        json_t *model = json_deep_copy(tr);
        if (model == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        for (size_t k = 0; k < sizeof loop_keys / sizeof loop_keys[0]; k++) {
            json_object_del(model, loop_keys[k]);
        }
        char *text = json_dumps(model, JSON_COMPACT);
        json_decref(model);
        if (text == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        int r = surge_trainer_config_from_json(&s->tcfg, text, strlen(text),
                                               err, errlen);
        free(text);
        if (r != 0) {
            goto out;
        }
    }
    rc = 0;
out:
    json_decref(names);
    json_decref(root);
    return rc;
}

static int
file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* This process's rank and R. create and prepare run on the main thread
 * before run() gets ctx->ranks, but after server/ranks.c started MPI (or
 * did not: then rank 0 of 1); its communicators are duplicates of
 * MPI_COMM_WORLD, so the numbering is the same. */
static void
world_place(int *rank, int *size)
{
    int up = 0, down = 0;
    *rank = 0;
    *size = 1;
    MPI_Initialized(&up);
    MPI_Finalized(&down);
    if (up && !down) {
        MPI_Comm_rank(MPI_COMM_WORLD, rank);
        MPI_Comm_size(MPI_COMM_WORLD, size);
    }
}

/* Rank r > 0's name for one of the trainer's files: ".rank<r>" before the
 * extension of the file name ("checkpoint.safetensors" ->
 * "checkpoint.rank1.safetensors", "trainer.json" -> "trainer.rank1.json").
 * Rank 0 keeps the name (R = 1's files are rank 0's). */
static int
rank_path(char *dst, size_t cap, const char *base, int rank)
{
    if (rank == 0) {
        int n = snprintf(dst, cap, "%s", base);
        return n >= 0 && (size_t)n < cap ? 0 : SURGE_ECONFIG;
    }
    const char *slash = strrchr(base, '/');
    const char *dot = strrchr(slash != NULL ? slash : base, '.');
    size_t stem = dot != NULL ? (size_t)(dot - base) : strlen(base);
    int n = snprintf(dst, cap, "%.*s.rank%d%s", (int)stem, base, rank,
                     dot != NULL ? dot : "");
    return n >= 0 && (size_t)n < cap ? 0 : SURGE_ECONFIG;
}

static int
read_settings(struct settings *s, const surge_server_options *o, int rank,
              char *err, size_t errlen)
{
    surge_trainer_config_defaults(&s->tcfg);
    s->eval_every = 100;
    s->checkpoint_every = 1000;
    double progress_s = 5;
    snprintf(s->out_dir, sizeof s->out_dir, "%s", o->output_dir);
    snprintf(s->ckpt, sizeof s->ckpt, "%s/" CKPT_NAME, o->output_dir);
    snprintf(s->model, sizeof s->model, "%s/" MODEL_NAME, o->output_dir);
    snprintf(s->report, sizeof s->report, "%s/trainer.json", o->output_dir);
    if (o->study[0] != '\0') {
        snprintf(s->study, sizeof s->study, "%s", o->study);
        if (!file_exists(s->study)) {
            snprintf(err, errlen, "--study: no file '%s'", s->study);
            return SURGE_ECONFIG;
        }
    } else {
        snprintf(s->study, sizeof s->study, "%s/study.resolved.json",
                 o->output_dir);
        if (!file_exists(s->study)) {
            s->study[0] = '\0';
        }
    }
    if (s->study[0] != '\0') {
        int rc = load_study(s, s->study, &progress_s, err, errlen);
        if (rc != 0) {
            return rc;
        }
    }
    /* Flags override the study's loop keys (-1: not given). */
    if (o->max_steps >= 0) {
        s->max_steps = (int64_t)o->max_steps;
    }
    if (o->max_wall_s >= 0) {
        s->max_wall_s = o->max_wall_s;
    }
    if (o->steps_after_end >= 0) {
        s->steps_after_end = (int64_t)o->steps_after_end;
    }
    if (o->eval_every >= 1) {
        s->eval_every = (int64_t)o->eval_every;
    }
    if (o->checkpoint_every >= 0) {
        s->checkpoint_every = (int64_t)o->checkpoint_every;
    }
    if (o->checkpoint_interval_s >= 0) {
        s->checkpoint_every_s = o->checkpoint_interval_s;
    }
    if (o->progress_interval_s > 0) {
        progress_s = o->progress_interval_s;
    }
    s->progress_s = progress_s > 0 ? progress_s : 5;
    if (s->eval_every < 1 || s->max_steps < 0 || s->steps_after_end < 0 ||
        s->checkpoint_every < 0 || !(s->max_wall_s >= 0) ||
        !(s->checkpoint_every_s >= 0)) {
        snprintf(err, errlen,
                 "trainer: loop keys out of range (eval_every "
                 ">= 1, the others >= 0)");
        return SURGE_ECONFIG;
    }
    if (o->resume[0] != '\0') {
        snprintf(s->resume, sizeof s->resume, "%s", o->resume);
    } else if (o->resume_default) {
        snprintf(s->resume, sizeof s->resume, "%s", s->ckpt);
    }
    /* Every rank has its own checkpoint and report (docs/trainer.md,
     * "Data-parallel training"); rank 0 alone writes the model. */
    char tmp[PATH_CAP];
    if (rank > 0) {
        memcpy(tmp, s->ckpt, sizeof tmp);
        int r1 = rank_path(s->ckpt, sizeof s->ckpt, tmp, rank);
        memcpy(tmp, s->report, sizeof tmp);
        int r2 = rank_path(s->report, sizeof s->report, tmp, rank);
        int r3 = 0;
        if (s->resume[0] != '\0') {
            memcpy(tmp, s->resume, sizeof tmp);
            r3 = rank_path(s->resume, sizeof s->resume, tmp, rank);
        }
        if (r1 != 0 || r2 != 0 || r3 != 0) {
            snprintf(err, errlen, "trainer: output path too long for rank %d",
                     rank);
            return SURGE_ECONFIG;
        }
    }
    /* The server's batch is the trainer's batch. */
    s->tcfg.batch_size = (int)o->batch_size;
    /* Check the model now, with the real input width when known, so a bad
     * study is refused at start-up rather than at the first sample. */
    struct surge_trainer_config c = s->tcfg;
    c.n_inputs = s->nparams > 0 ? s->nparams + 1 : 1;
    c.n_outputs = 1;
    return surge_trainer_config_validate(&c, err, errlen) != 0 ? SURGE_ECONFIG
                                                               : 0;
}

/* ------------------------------------------------------------ resume */

static void
resumed_free(struct resumed *r)
{
    if (r == NULL) {
        return;
    }
    json_decref(r->progress);
    free(r->val_in);
    free(r->val_out);
    free(r->val_sim);
    free(r->val_step);
    free(r);
}

struct rd_arg {
    surge_reader *r;
};

static int
rd_cb(void *arg, void *dst, size_t n)
{
    return surge_reader_get(((struct rd_arg *)arg)->r, dst, n);
}

/* The study a checkpoint's progress JSON names ("" when none). */
static const char *
blob_study(json_t *progress)
{
    const char *id = json_string_value(json_object_get(progress, "study_id"));
    return id != NULL ? id : "";
}

/* Parse the blob, check it belongs to this study and has the model's shape
 * (nin, nout from the checkpoint's header), then mark the steps, set the
 * store shape and load the reservoir. *late is set once something was
 * changed: a failure before that leaves the server as it was (and another
 * checkpoint may be tried). */
static int
apply_blob(struct train *tr, const surge_consumer_prep *prep,
           const unsigned char *blob, size_t len, int want_nin, int want_nout,
           int *late, char *err, size_t errlen)
{
    surge_reader r = {blob, len, 0};
    char magic[8];
    uint32_t nin, pad;
    uint64_t nout, jlen, n;
    struct resumed *res = calloc(1, sizeof *res);
    if (res == NULL) {
        return -ENOMEM;
    }
    *late = 0;
    int rc = SURGE_EPROTO;
    if (surge_reader_get(&r, magic, 8) != 0 ||
        memcmp(magic, BLOB_MAGIC, 8) != 0) {
        snprintf(err, errlen,
                 "not a checkpoint of the server's trainer "
                 "(no " BLOB_MAGIC " blob)");
        goto fail;
    }
    if (surge_reader_get(&r, &nin, 4) || surge_reader_get(&r, &pad, 4) ||
        surge_reader_get(&r, &nout, 8) || nin < 1 ||
        nin > SURGE_MAX_PARAMS + 1 || nout < 1 ||
        nout > SURGE_TRAINER_MAX_WIDTH || surge_reader_get(&r, &jlen, 8) ||
        jlen > len - r.off) {
        snprintf(err, errlen, "corrupt server blob (shape)");
        goto fail;
    }
    if (nin != (uint32_t)want_nin || nout != (uint64_t)want_nout) {
        snprintf(err, errlen, "model shape differs from its server state");
        goto fail;
    }
    res->nin = nin;
    res->nout = nout;
    json_error_t je;
    res->progress =
        json_loadb((const char *)blob + r.off, (size_t)jlen, 0, &je);
    if (!json_is_object(res->progress)) {
        snprintf(err, errlen, "corrupt server blob (progress JSON)");
        goto fail;
    }
    /* A checkpoint belongs to one study: resuming another study's would
     * refuse every step it had assembled and train on nothing new. */
    if (strcmp(blob_study(res->progress), tr->o->study_id) != 0) {
        snprintf(err, errlen,
                 "written for study '%.64s', this server works for study "
                 "'%.64s' (--study-id): refused",
                 blob_study(res->progress), tr->o->study_id);
        goto fail;
    }
    /* A server of R ranks resumes from the checkpoints of a server of R
     * ranks, each rank from its own (its shard of the samples). */
    json_int_t cr = json_integer_value(json_object_get(res->progress, "ranks"));
    json_int_t ck = json_integer_value(json_object_get(res->progress, "rank"));
    if (cr == 0) {
        cr = 1; /* written before ranks existed: R = 1 */
    }
    if (cr != tr->R || ck != tr->rank) {
        snprintf(err, errlen,
                 "written by rank %lld of a server of %lld rank(s); this is "
                 "rank %d of %d: resume with the same number of ranks "
                 "(mpirun -np %lld)",
                 (long long)ck, (long long)cr, tr->rank, tr->R, (long long)cr);
        rc = SURGE_ECONFIG;
        goto fail;
    }
    r.off += (size_t)jlen;
    /* The record of assembled steps: checked now, marked once the whole
     * blob is known to be sound. */
    if (surge_reader_get(&r, &n, 8) || n > (len - r.off) / 16) {
        snprintf(err, errlen, "corrupt server blob (record)");
        goto fail;
    }
    size_t rec_off = r.off;
    uint64_t nrec = n;
    r.off += (size_t)n * 16;
    /* Validation samples. */
    size_t row = 16 + 4 * ((size_t)nin + (size_t)nout);
    if (surge_reader_get(&r, &n, 8) || n > (len - r.off) / row) {
        snprintf(err, errlen, "corrupt server blob (validation)");
        goto fail;
    }
    res->nval = n;
    if (n > 0) {
        res->val_in = malloc((size_t)n * nin * 4);
        res->val_out = malloc((size_t)n * (size_t)nout * 4);
        res->val_sim = malloc((size_t)n * 8);
        res->val_step = malloc((size_t)n * 8);
        if (res->val_in == NULL || res->val_out == NULL ||
            res->val_sim == NULL || res->val_step == NULL) {
            rc = -ENOMEM;
            goto fail;
        }
        for (uint64_t i = 0; i < n; i++) {
            (void)surge_reader_get(&r, &res->val_sim[i], 8);
            (void)surge_reader_get(&r, &res->val_step[i], 8);
            (void)surge_reader_get(&r, res->val_in + i * nin, (size_t)nin * 4);
            (void)surge_reader_get(&r, res->val_out + i * nout,
                                   (size_t)nout * 4);
        }
    }
    /* The reservoir. */
    uint64_t rlen;
    if (surge_reader_get(&r, &rlen, 8) || rlen != len - r.off) {
        snprintf(err, errlen, "corrupt server blob (reservoir length)");
        goto fail;
    }
    *late = 1;
    surge_reader rec = {blob + rec_off, (size_t)nrec * 16, 0};
    for (uint64_t i = 0; i < nrec; i++) {
        int64_t ss[2];
        (void)surge_reader_get(&rec, ss, sizeof ss);
        rc = prep->mark_assembled(prep->arg, ss[0], ss[1]);
        if (rc < 0) {
            snprintf(err, errlen,
                     "cannot restore the record of assembled "
                     "steps: %s",
                     surge_strerror(rc));
            goto fail;
        }
    }
    res->nrecord = nrec;
    rc = surge_store_set_shape(prep->train, nin, nout);
    if (rc < 0) {
        snprintf(err, errlen, "training store for shape (%u, %" PRIu64 "): %s",
                 nin, nout, surge_store_error(prep->train));
        goto fail;
    }
    if (rlen > 0) {
        surge_reservoir *rv = surge_store_reservoir(prep->train);
        surge_reader rr = {blob + r.off, (size_t)rlen, 0};
        struct rd_arg ra = {&rr};
        char why[256] = "";
        rc = surge_reservoir_load(rv, rd_cb, &ra, why, sizeof why);
        if (rc < 0) {
            snprintf(err, errlen, "reservoir state: %s (%s)", why,
                     surge_strerror(rc));
            goto fail;
        }
        surge_reservoir_stats st;
        surge_reservoir_get_stats(rv, &st);
        res->res_loaded = st.occupancy_samples;
    }
    tr->res = res;
    return 0;
fail:
    resumed_free(res);
    return rc;
}

int
surge_train_counts_add(struct json_t *into, struct json_t *add)
{
    const char *k;
    json_t *v;
    if (add == NULL) {
        return 0;
    }
    if (!json_is_object(into) || !json_is_object(add)) {
        return SURGE_EPROTO;
    }
    json_object_foreach(add, k, v)
    {
        json_t *have = json_object_get(into, k);
        int rc = 0;
        if (json_is_object(v)) {
            if (have == NULL) {
                have = json_object();
                rc = json_object_set_new(into, k, have) == 0 ? 0 : -ENOMEM;
            }
            rc = rc != 0 ? rc : surge_train_counts_add(have, v);
        } else if (json_is_integer(v)) {
            if (have != NULL && !json_is_integer(have)) {
                rc = SURGE_EPROTO;
            } else {
                json_int_t sum = json_integer_value(v) +
                                 (have != NULL ? json_integer_value(have) : 0);
                rc = json_object_set_new(into, k, json_integer(sum)) == 0
                         ? 0
                         : -ENOMEM;
            }
        }
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

int
surge_train_checkpoint_progress(const char *path, struct json_t **out,
                                char *err, size_t errlen)
{
    int nin, nout;
    void *blob = NULL;
    size_t blen = 0;
    int rc = surge_trainer_checkpoint_peek(path, &nin, &nout, NULL, &blob,
                                           &blen, err, errlen);
    if (rc != 0) {
        return rc;
    }
    surge_reader r = {blob, blen, 0};
    char magic[8];
    uint32_t nin32, pad;
    uint64_t nout64, jlen;
    json_t *j = NULL;
    if (blob != NULL && surge_reader_get(&r, magic, 8) == 0 &&
        memcmp(magic, BLOB_MAGIC, 8) == 0 &&
        surge_reader_get(&r, &nin32, 4) == 0 &&
        surge_reader_get(&r, &pad, 4) == 0 &&
        surge_reader_get(&r, &nout64, 8) == 0 &&
        surge_reader_get(&r, &jlen, 8) == 0 && jlen <= blen - r.off) {
        json_error_t je;
        j = json_loadb((const char *)blob + r.off, (size_t)jlen, 0, &je);
    }
    free(blob);
    if (!json_is_object(j)) {
        json_decref(j);
        snprintf(err, errlen, "%s: no server state in it", path);
        return SURGE_EPROTO;
    }
    *out = j;
    return 0;
}

/* Resume from the checkpoint at path; *late as in apply_blob. */
static int
try_resume(struct train *tr, const surge_consumer_prep *prep, const char *path,
           int *late, char *err, size_t errlen)
{
    int nin, nout;
    uint64_t steps;
    void *blob = NULL;
    size_t blen = 0;
    char why[1536] = "";
    *late = 0;
    int rc = surge_trainer_checkpoint_peek(path, &nin, &nout, &steps, &blob,
                                           &blen, err, errlen);
    if (rc != 0) {
        return rc;
    }
    if (blob == NULL) {
        snprintf(err, errlen,
                 "%s: no server state in it (a checkpoint "
                 "written by surge serve's trainer is needed)",
                 path);
        return SURGE_EPROTO;
    }
    rc = apply_blob(tr, prep, blob, blen, nin, nout, late, why, sizeof why);
    free(blob);
    if (rc != 0) {
        snprintf(err, errlen, "%s: %s", path, why);
        return rc;
    }
    SURGE_LOG(SURGE_LOG_INFO, COMPONENT,
              "resuming from %s: step %" PRIu64 ", %" PRIu64
              " samples back in the reservoir, %" PRIu64
              " validation samples, %" PRIu64 " steps already assembled",
              path, steps, tr->res->res_loaded, tr->res->nval,
              tr->res->nrecord);
    return 0;
}

static int
train_prepare(void *state, const surge_consumer_prep *prep)
{
    struct train *tr = state;
    /* reservoir.storage auto: a CUDA trainer (backend cuda, or auto with a
     * device present) gets the device storage (docs/reservoir.md,
     * "Storage"). */
    if (strcmp(tr->o->storage, "auto") == 0 &&
        (strcmp(tr->s.tcfg.backend, "cuda") == 0 ||
         strcmp(tr->s.tcfg.backend, "auto") == 0) &&
        surge_reservoir_device_available()) {
        int src = surge_store_set_storage(prep->train,
                                          SURGE_RESERVOIR_STORAGE_DEVICE);
        if (src < 0) {
            return src;
        }
        SURGE_LOG(SURGE_LOG_INFO, COMPONENT,
                  "reservoir storage: device (CUDA device %d)",
                  tr->o->reservoir.device);
    }
    if (tr->s.resume[0] == '\0') {
        return 0;
    }
    char err[2048] = "";
    int late = 0;
    int rc = try_resume(tr, prep, tr->s.resume, &late, err, sizeof err);
    if (rc == 0) {
        return 0;
    }
    /* The newest checkpoint is missing or unusable (cut short, corrupt):
     * the one before it (write_checkpoint keeps it) loses a little more
     * training but not the study. Only if nothing was changed yet. */
    char prev[PATH_CAP];
    int n = snprintf(prev, sizeof prev, "%s" PREV_SUFFIX, tr->s.resume);
    if (late || n < 0 || (size_t)n >= sizeof prev || !file_exists(prev)) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "--resume: %s", err);
        return rc;
    }
    SURGE_LOG(SURGE_LOG_WARN, COMPONENT,
              "--resume: %s; falling back to the previous checkpoint %s", err,
              prev);
    rc = try_resume(tr, prep, prev, &late, err, sizeof err);
    if (rc != 0) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "--resume: %s", err);
        return rc;
    }
    /* The bad one is kept aside for a post-mortem, so that the next
     * checkpoint does not turn it into the "previous good" one. */
    char bad[PATH_CAP + 16];
    snprintf(bad, sizeof bad, "%s.corrupt", tr->s.resume);
    if (rename(tr->s.resume, bad) != 0 && errno != ENOENT) {
        SURGE_LOG(SURGE_LOG_WARN, COMPONENT, "%s: %s", tr->s.resume,
                  strerror(errno));
    }
    memcpy(tr->s.resume, prev, sizeof prev);
    return 0;
}

/* ------------------------------------------------------------ run state */

/* Everything run() owns (consumer thread). */
struct loop {
    struct train *tr;
    const surge_consumer_ctx *ctx;
    surge_trainer *t;
    surge_reservoir *r;
    uint32_t nin;
    uint64_t nout;
    int B;
    int prio;
    float *x, *y, *w, *row_loss; /* (B, nin), (B, nout), (B), (B) */
    surge_batch_info *info;      /* (B) */
    surge_feed *feed;            /* batches after the warm-up (feed.h); x, y and
                                    info then point into its buffer sets */
    double warm_wait_s;          /* time the warm-up waited for its batches */
    double step_s;               /* time in surge_trainer_step (this run) */
    /* validation: restored rows first, then the store's 0..nstore-1 */
    uint64_t nval, val_cap, nrestored, nstore;
    uint64_t val_gen;        /* the validation store's generation copied */
    float *val_in, *val_out; /* (val_cap, nin), (val_cap, nout) */
    int64_t *val_sim, *val_step;
    float *pred;        /* (nout) preview */
    const char *fields; /* the output layout (ctx->output_fields), once
                           known: JSON owned by ingest, never changes */
    /* progress */
    uint64_t step0;          /* steps when this run started */
    uint64_t rows;           /* rows trained (all runs) */
    uint64_t batches;        /* batches trained (all runs) */
    uint64_t distinct;       /* samples trained on (first use) */
    uint64_t discarded;      /* samples first served after training
                                stopped (never trained on) */
    uint64_t rows_discarded; /* rows served after training stopped */
    uint64_t nonfinite;      /* steps skipped (non-finite loss) */
    double prev_wall_s;      /* training time of earlier runs */
    uint64_t t0_ns;          /* this run's start */
    int end_seen;            /* reception ended */
    uint64_t step_at_end;    /* steps when it did */
    /* steps_after_end: the samples the reservoir held at the end, kept as
     * it drains them, for the steps left once it is drained */
    float *tail_x, *tail_y; /* (tail_cap, nin), (tail_cap, nout) */
    uint64_t tail_n, tail_cap;
    int tail_phase; /* drawing from the tail now */
    uint64_t rng;   /* xorshift64 state for the tail draws */
    int stopped;    /* training over */
    const char *stop_reason;
    double loss, loss_sum; /* last and sum since the last line */
    uint64_t loss_n;
    struct surge_trainer_eval_result ev; /* last validation */
    uint64_t ev_step;                    /* its step; 0 = none yet */
    int have_ev;
    char model_err[256]; /* why the model file was not written; "" */
    uint64_t ckpts;      /* checkpoints written */
    uint64_t last_ckpt_step;
    uint64_t last_ckpt_ns, last_line_ns, line_rows;
    float *init_params;      /* (num_params) initial weights */
    double time_lo, time_hi; /* time range used */
    const char *time_src;
    surge_gauge *g_step, *g_loss, *g_vloss, *g_rel, *g_wait;
    /* Data parallelism, R > 1 (docs/trainer.md, "Data-parallel
     * training"); with R = 1 none of these is used. */
    int R;                   /* ranks */
    MPI_Comm comm;           /* ctx->ranks->train: this thread's */
    surge_replicas_mpi *rep; /* the gradient sums */
    int progress_mode;       /* enum surge_replicas_progress */
    long global_rows;        /* rows of the current step, all ranks */
    int ckpt_due;            /* rank 0's clock says: checkpoint now */
    int rep_checked;         /* replicas compared at the end */
    int rep_identical;       /* ... bit for bit */
    double rep_diff;         /* ... largest |p - p_rank0| */
    int have_sums;           /* sums[] holds the counts of all ranks */
    json_t *carried_all;     /* rank 0: every rank's carried server counts,
                                summed (NULL: none or R = 1) */
    double sums[6];          /* rows, distinct, discarded, rows_discarded, puts,
                                unserved, summed over the ranks */
};

/* A small sum, min or max over the ranks (R > 1) that waits politely: a
 * rank that waits here for another still in its 200 ms wait for data
 * sleeps instead of spinning in MPI's progress loop (it shares the node
 * with the I/O thread). 0 or -EIO. */
static int
dp_allreduce(const struct loop *L, void *buf, int n, MPI_Datatype type,
             MPI_Op op)
{
    MPI_Request req;
    if (MPI_Iallreduce(MPI_IN_PLACE, buf, n, type, op, L->comm, &req) !=
        MPI_SUCCESS) {
        return -EIO;
    }
    for (;;) {
        int done = 0;
        if (MPI_Test(&req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) {
            return -EIO;
        }
        if (done) {
            return 0;
        }
        struct timespec ts = {0, 100000}; /* 0.1 ms */
        nanosleep(&ts, NULL);
    }
}

/* Share of this run's wall time the trainer waited for data (batches not
 * ready: the reservoir below its watermark, or the gather itself when it
 * is not overlapped with the step). */
static double
data_wait_s(const struct loop *L)
{
    return L->warm_wait_s + (L->feed != NULL ? surge_feed_wait_s(L->feed) : 0);
}

static double
data_wait_share(const struct loop *L)
{
    double wall = L->t0_ns != 0 ? (surge_now_ns() - L->t0_ns) / 1e9 : 0;
    return wall > 0 ? data_wait_s(L) / wall : 0;
}

static double
elapsed_s(const struct loop *L)
{
    return L->prev_wall_s + (surge_now_ns() - L->t0_ns) / 1e9;
}

/* Read validation samples the store got since the last call. */
static int
sync_validation(struct loop *L)
{
    surge_store *v = L->ctx->validation;
    if (v == NULL) {
        return 0;
    }
    surge_store_stats st;
    surge_store_get_stats(v, &st);
    if (st.generation != L->val_gen) {
        /* Whole runs were evicted for later ones (server/ingest.c's
         * sampling of held-out runs): the store's indices moved, so copy
         * its samples again. */
        L->nval = L->nrestored;
        L->nstore = 0;
        L->val_gen = st.generation;
    }
    uint64_t want = L->nrestored + st.occupancy;
    if (want <= L->nval) {
        return 0;
    }
    if (want > L->val_cap) {
        uint64_t cap = L->val_cap < 64 ? 64 : L->val_cap;
        while (cap < want) {
            cap *= 2;
        }
        float *in = realloc(L->val_in, (size_t)cap * L->nin * 4);
        if (in == NULL) {
            return -ENOMEM;
        }
        L->val_in = in;
        float *out = realloc(L->val_out, (size_t)cap * L->nout * 4);
        if (out == NULL) {
            return -ENOMEM;
        }
        L->val_out = out;
        int64_t *a = realloc(L->val_sim, (size_t)cap * 8);
        if (a == NULL) {
            return -ENOMEM;
        }
        L->val_sim = a;
        int64_t *b = realloc(L->val_step, (size_t)cap * 8);
        if (b == NULL) {
            return -ENOMEM;
        }
        L->val_step = b;
        L->val_cap = cap;
    }
    while (L->nval < want) {
        uint64_t i = L->nval - L->nrestored;
        int rc = surge_store_read(v, i, L->val_in + L->nval * L->nin,
                                  L->val_out + L->nval * L->nout,
                                  &L->val_sim[L->nval], &L->val_step[L->nval]);
        if (rc < 0) {
            break;
        }
        L->nval++;
        L->nstore = i + 1;
    }
    return 0;
}

/* The preview's shape: a square field, else one row of at most 4096. */
static void
preview_shape(uint64_t nout, size_t *ny, size_t *nx)
{
    uint64_t s = (uint64_t)sqrt((double)nout);
    while (s * s > nout) {
        s--;
    }
    while ((s + 1) * (s + 1) <= nout) {
        s++;
    }
    if (s * s == nout && s <= 4096) {
        *ny = *nx = (size_t)s;
    } else if (nout <= 4096) {
        *ny = 1;
        *nx = (size_t)nout;
    } else {
        *ny = *nx = 0;
    }
}

/* How the preview shows the output vector, from the fields' layout: one
 * field with a 2-D shape as an image of that shape; 1-D fields as line
 * plots (one series per field when they have one size, else the whole
 * vector as one series). Without a layout, or for one 1-D field whose
 * size is a perfect square (heat2d without solver.field_shapes), as
 * preview_shape guesses. Returns 1 for lines (*ny series of *nx values),
 * 0 for an image (*ny, *nx; 0 x 0 = none). */
static int
preview_layout(struct loop *L, size_t *ny, size_t *nx)
{
    if (L->fields == NULL && L->ctx->output_fields != NULL) {
        L->fields = L->ctx->output_fields(L->ctx->io);
    }
    json_t *a = L->fields != NULL ? json_loads(L->fields, 0, NULL) : NULL;
    size_t nf = json_array_size(a), all1d = nf > 0, same = 1;
    uint64_t size0 = 0;
    for (size_t i = 0; i < nf; i++) {
        json_t *f = json_array_get(a, i);
        json_t *shape = json_object_get(f, "shape");
        uint64_t size =
            (uint64_t)json_integer_value(json_object_get(f, "size"));
        if (i == 0) {
            size0 = size;
        }
        same = same && size == size0;
        if (json_array_size(shape) != 1) {
            all1d = 0;
            if (nf == 1 && json_array_size(shape) == 2) {
                *ny = (size_t)json_integer_value(json_array_get(shape, 0));
                *nx = (size_t)json_integer_value(json_array_get(shape, 1));
                json_decref(a);
                return 0;
            }
        }
    }
    json_decref(a);
    preview_shape(L->nout, ny, nx);
    if (!all1d || (nf == 1 && *ny > 1)) {
        return 0;
    }
    if (same && nf <= SURGE_METRICS_MAX_SERIES) {
        *ny = nf;
        *nx = (size_t)size0;
    } else {
        *ny = 1;
        *nx = (size_t)L->nout;
    }
    return 1;
}

/* The model's errors on the validation samples: this rank's (R = 1), or
 * every rank's together (R > 1: a collective, every rank calls it at the
 * same point, with its own samples or none; the sums of the parts make
 * the figures of the whole). 0 with *out set, 1 when there is no sample
 * anywhere, <0 on failure. */
static int
eval_all(struct loop *L, struct surge_trainer_eval_result *out)
{
    memset(out, 0, sizeof *out);
    int rc = 0;
    if (L->nval > 0) {
        rc = surge_trainer_evaluate(L->t, L->val_in, L->val_out, (long)L->nval,
                                    out);
    }
    if (L->R == 1) {
        return rc != 0 ? rc : L->nval > 0 ? 0 : 1;
    }
    if (rc != 0) {
        memset(out, 0, sizeof *out);
    }
    double v[7] = {(double)out->rows,  out->sum_se_n, out->sum_se,
                   out->sum_yy,        out->sum_rel,  out->rel_rows,
                   rc != 0 ? 1.0 : 0.0};
    if (dp_allreduce(L, v, 7, MPI_DOUBLE, MPI_SUM) != 0 || v[6] > 0) {
        return -EIO;
    }
    out->rows = (long)v[0];
    out->sum_se_n = v[1];
    out->sum_se = v[2];
    out->sum_yy = v[3];
    out->sum_rel = v[4];
    out->rel_rows = v[5];
    surge_trainer_eval_from_sums(out, (int)L->nout);
    return out->rows > 0 ? 0 : 1;
}

static void
evaluate(struct loop *L)
{
    int src = sync_validation(L);
    if (L->R == 1 && (src < 0 || L->nval == 0)) {
        return;
    }
    struct surge_trainer_eval_result ev;
    if (eval_all(L, &ev) != 0) {
        return;
    }
    L->ev = ev;
    L->have_ev = 1;
    L->ev_step = surge_trainer_steps(L->t);
    if (L->g_vloss != NULL) {
        surge_gauge_set(L->g_vloss, L->ev.mse);
    }
    if (L->g_rel != NULL) {
        surge_gauge_set(L->g_rel, L->ev.rel_l2);
    }
    size_t ny, nx;
    int lines = preview_layout(L, &ny, &nx);
    if (L->ctx->metrics != NULL && ny > 0 && L->pred != NULL && L->nval > 0) {
        /* The last validation sample: the latest time step seen. */
        uint64_t i = L->nval - 1;
        const float *truth = L->val_out + i * L->nout;
        if (surge_trainer_predict(L->t, L->val_in + i * L->nin, 1, L->pred) !=
            0) {
            return;
        }
        if (lines) {
            (void)surge_metrics_set_preview_lines(L->ctx->metrics, truth,
                                                  L->pred, ny, nx, L->ev_step);
        } else {
            (void)surge_metrics_set_preview(L->ctx->metrics, truth, L->pred, ny,
                                            nx, L->ev_step);
        }
    }
}

/* ------------------------------------------------------------ checkpoint */

struct snap {
    surge_bytes rec; /* (sim, step) pairs */
    uint64_t nrec;
    json_t *finished;   /* sims finished with all they sent in a store */
    json_t *counts;     /* the server's counters of what the snapshot holds */
    surge_bytes res;    /* reservoir stream */
    surge_store *train; /* to save */
    surge_store *val;
    uint64_t nval_store; /* validation samples in the store at the snapshot */
};

static int
rec_cb(void *arg, int64_t sim, int64_t step)
{
    struct snap *s = arg;
    int64_t ss[2] = {sim, step};
    s->nrec++;
    return surge_bytes_put(&s->rec, ss, sizeof ss);
}

static int
fin_cb(void *arg, int64_t sim)
{
    struct snap *s = arg;
    return json_array_append_new(s->finished, json_integer(sim)) == 0 ? 0
                                                                      : -ENOMEM;
}

static int
res_write_cb(void *arg, const void *p, size_t n)
{
    return surge_bytes_put(arg, p, n);
}

/* On the I/O thread: record, reservoir, validation count at one instant. */
static int
snap_fn(void *arg, const surge_consumer_io_view *view)
{
    struct snap *s = arg;
    int rc = view->export_assembled(view->io, rec_cb, s);
    if (rc < 0) {
        return rc;
    }
    rc = view->export_finished(view->io, fin_cb, s);
    if (rc < 0) {
        return rc;
    }
    rc = view->export_counts(view->io, &s->counts);
    if (rc < 0) {
        return rc;
    }
    surge_reservoir *r = surge_store_reservoir(s->train);
    if (r != NULL) {
        rc = surge_reservoir_save(r, res_write_cb, &s->res);
        if (rc < 0) {
            return rc;
        }
    }
    if (s->val != NULL) {
        surge_store_stats st;
        surge_store_get_stats(s->val, &st);
        s->nval_store = st.occupancy;
    }
    return 0;
}

static json_t *
progress_json(const struct loop *L)
{
    return json_pack(
        "{s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:f,s:f,s:s,s:b,s:s}", "rows",
        (json_int_t)L->rows, "batches", (json_int_t)L->batches, "distinct",
        (json_int_t)L->distinct, "discarded", (json_int_t)L->discarded,
        "rows_discarded", (json_int_t)L->rows_discarded, "nonfinite",
        (json_int_t)L->nonfinite, "wall_s", elapsed_s(L), "time_min",
        L->time_lo, "time_max", L->time_hi, "time_source", L->time_src,
        "stopped", L->stopped, "stop_reason",
        L->stop_reason ? L->stop_reason : "");
}

/* progress_json with this rank's place: a checkpoint is one rank's. */
static json_t *
progress_json_ranked(const struct loop *L)
{
    json_t *p = progress_json(L);
    if (p != NULL) {
        json_object_set_new(p, "ranks", json_integer(L->tr->R));
        json_object_set_new(p, "rank", json_integer(L->tr->rank));
    }
    return p;
}

static int
write_checkpoint(struct loop *L)
{
    struct snap s = {0};
    s.train = L->ctx->train;
    s.val = L->ctx->validation;
    surge_bytes b = {0};
    /* The runs an earlier server saw finish never come back: carried. */
    s.finished = json_array();
    if (L->tr->res != NULL) {
        json_array_extend(
            s.finished, json_object_get(L->tr->res->progress, "sims_finished"));
    }
    int rc = s.finished != NULL ? sync_validation(L) : -ENOMEM;
    if (rc == 0) {
        rc = L->ctx->io_call != NULL
                 ? L->ctx->io_call(L->ctx->io, snap_fn, &s, IO_CALL_TIMEOUT_MS)
                 : SURGE_ESTATE;
    }
    if (rc == 0) {
        rc = sync_validation(L);
    }
    if (rc < 0) {
        SURGE_LOG(SURGE_LOG_WARN, COMPONENT,
                  "checkpoint at step %" PRIu64 " skipped: no snapshot of "
                  "the server state (%s)",
                  surge_trainer_steps(L->t), surge_strerror(rc));
        goto out;
    }
    uint64_t nval = L->nrestored + s.nval_store;
    if (nval > L->nval) {
        nval = L->nval;
    }
    json_t *pj = progress_json_ranked(L);
    /* Whose checkpoint this is, and which runs it holds whole (what
     * `surge launch --resume` need not run again). */
    if (pj != NULL) {
        json_object_set_new(pj, "study_id", json_string(L->tr->o->study_id));
        json_object_set(pj, "sims_finished", s.finished);
        /* The server's counts carry on from the checkpoint it resumed
         * from, as the trainer's do: the study's identities then hold
         * across restarts (surge launch adds carried_counts). */
        json_t *carried =
            L->tr->res != NULL
                ? json_object_get(L->tr->res->progress, "server_counts")
                : NULL;
        if (surge_train_counts_add(s.counts, carried) == 0) {
            json_object_set(pj, "server_counts", s.counts);
        }
    }
    char *ptext = pj != NULL ? json_dumps(pj, JSON_COMPACT) : NULL;
    json_decref(pj);
    if (ptext == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    uint32_t nin = L->nin, zero = 0;
    rc = surge_bytes_put(&b, BLOB_MAGIC, 8);
    rc = rc ? rc : surge_bytes_put(&b, &nin, 4);
    rc = rc ? rc : surge_bytes_put(&b, &zero, 4);
    rc = rc ? rc : surge_bytes_u64(&b, L->nout);
    rc = rc ? rc : surge_bytes_u64(&b, strlen(ptext));
    rc = rc ? rc : surge_bytes_put(&b, ptext, strlen(ptext));
    free(ptext);
    rc = rc ? rc : surge_bytes_u64(&b, s.nrec);
    rc = rc ? rc : surge_bytes_put(&b, s.rec.p, s.rec.len);
    rc = rc ? rc : surge_bytes_u64(&b, nval);
    for (uint64_t i = 0; i < nval && rc == 0; i++) {
        rc = surge_bytes_put(&b, &L->val_sim[i], 8);
        rc = rc ? rc : surge_bytes_put(&b, &L->val_step[i], 8);
        rc = rc ? rc
                : surge_bytes_put(&b, L->val_in + i * L->nin,
                                  (size_t)L->nin * 4);
        rc = rc ? rc
                : surge_bytes_put(&b, L->val_out + i * L->nout,
                                  (size_t)L->nout * 4);
    }
    rc = rc ? rc : surge_bytes_u64(&b, s.res.len);
    rc = rc ? rc : surge_bytes_put(&b, s.res.p, s.res.len);
    if (rc == 0) {
        /* The newest checkpoint becomes the previous one: should the next
         * be unreadable (cut short by a full disk, corrupted), --resume
         * falls back to it. The save itself is atomic (temp, fsync,
         * rename), so at every instant one of the two is whole. */
        char prev[PATH_CAP + 8];
        snprintf(prev, sizeof prev, "%s" PREV_SUFFIX, L->tr->s.ckpt);
        if (rename(L->tr->s.ckpt, prev) != 0 && errno != ENOENT) {
            SURGE_LOG(SURGE_LOG_WARN, COMPONENT, "%s: %s", prev,
                      strerror(errno));
        }
        rc = surge_trainer_checkpoint_save(L->t, L->tr->s.ckpt, b.p, b.len);
    }
    if (rc < 0) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "checkpoint %s: %s",
                  L->tr->s.ckpt, surge_strerror(rc));
        goto out;
    }
    L->ckpts++;
    L->last_ckpt_step = surge_trainer_steps(L->t);
    SURGE_LOG(SURGE_LOG_DEBUG, COMPONENT,
              "checkpoint at step %" PRIu64 " (%zu bytes of server state)",
              L->last_ckpt_step, b.len);
out:
    L->last_ckpt_ns = surge_now_ns();
    json_decref(s.finished);
    json_decref(s.counts);
    surge_bytes_free(&s.rec);
    surge_bytes_free(&s.res);
    surge_bytes_free(&b);
    return rc;
}

/* ------------------------------------------------------------ the loop */

static void
progress_line(struct loop *L, uint64_t now)
{
    double dt = (now - L->last_line_ns) / 1e9;
    double rate = dt > 0 ? (L->rows - L->line_rows) / dt : 0;
    char val[96] = "";
    if (L->have_ev) {
        snprintf(val, sizeof val, ", validation rel L2 %.4g (step %" PRIu64 ")",
                 L->ev.rel_l2, L->ev_step);
    }
    SURGE_LOG(SURGE_LOG_INFO, COMPONENT,
              "step %" PRIu64 ", loss %.4g, %.0f samples/s%s%s",
              surge_trainer_steps(L->t),
              L->loss_n > 0 ? L->loss_sum / L->loss_n : L->loss, rate, val,
              L->stopped ? " (training stopped)" : "");
    L->loss_sum = 0;
    L->loss_n = 0;
    L->last_line_ns = now;
    L->line_rows = L->rows;
}

static void
stop_training(struct loop *L, const char *why)
{
    if (L->stopped) {
        return;
    }
    L->stopped = 1;
    L->stop_reason = why;
    SURGE_LOG(SURGE_LOG_INFO, COMPONENT,
              "training stops at step %" PRIu64 ": %s",
              surge_trainer_steps(L->t), why);
}

static void note_end(struct loop *L);

/* The stopping rules, checked after each step and on idle waits. */
static void
check_stop(struct loop *L)
{
    const struct settings *s = &L->tr->s;
    uint64_t steps = surge_trainer_steps(L->t);
    if (!L->end_seen && L->R == 1) {
        /* R > 1: the end is every rank's end, which dp_train learns. */
        surge_store_stats st;
        surge_store_get_stats(L->ctx->train, &st);
        if (st.ended) {
            note_end(L);
        }
    }
    if (s->max_steps > 0 && steps >= (uint64_t)s->max_steps) {
        stop_training(L, "max_steps");
    } else if (L->R == 1 && s->max_wall_s > 0 &&
               elapsed_s(L) >= s->max_wall_s) {
        /* R > 1: rank 0's clock decides, through dp_train's sync. */
        stop_training(L, "max_wall_s");
    } else if (L->end_seen && s->steps_after_end > 0 &&
               steps - L->step_at_end >= (uint64_t)s->steps_after_end) {
        stop_training(L, "steps_after_end");
    }
}

/* Reception has ended (on every rank, R > 1): train on what the
 * reservoir holds, keeping it for steps_after_end. */
static void
note_end(struct loop *L)
{
    const struct settings *s = &L->tr->s;
    uint64_t steps = surge_trainer_steps(L->t);
    L->end_seen = 1;
    L->step_at_end = steps;
    SURGE_LOG(SURGE_LOG_INFO, COMPONENT,
              "reception ended at step %" PRIu64
              ": training on what the reservoir holds",
              steps);
    if (s->steps_after_end > 0 && !L->stopped && L->r != NULL) {
        surge_reservoir_stats rs;
        surge_reservoir_get_stats(L->r, &rs);
        L->tail_cap = rs.occupancy_samples + (uint64_t)L->B;
        L->tail_x = malloc((size_t)L->tail_cap * L->nin * 4);
        L->tail_y = malloc((size_t)L->tail_cap * L->nout * 4);
        if (L->tail_x == NULL || L->tail_y == NULL) {
            SURGE_LOG(SURGE_LOG_WARN, COMPONENT,
                      "no memory to keep the last %" PRIu64
                      " samples: training ends with the drain",
                      L->tail_cap);
            free(L->tail_x);
            free(L->tail_y);
            L->tail_x = L->tail_y = NULL;
            L->tail_cap = 0;
        }
    }
}

/* Periodic work: validation, checkpoint, progress line. */
static void
periodic(struct loop *L, int stepped)
{
    const struct settings *s = &L->tr->s;
    uint64_t steps = surge_trainer_steps(L->t);
    uint64_t now = surge_now_ns();
    if (stepped && steps % (uint64_t)s->eval_every == 0) {
        evaluate(L);
    }
    if (!L->stopped &&
        ((stepped && s->checkpoint_every > 0 &&
          steps % (uint64_t)s->checkpoint_every == 0) ||
         (L->R > 1
              ? L->ckpt_due
              : s->checkpoint_every_s > 0 && steps > L->last_ckpt_step &&
                    (now - L->last_ckpt_ns) / 1e9 >= s->checkpoint_every_s)) &&
        (L->feed == NULL || !surge_feed_busy(L->feed))) {
        /* Never with a batch drawn ahead (prefetch): its rows would be
         * counted served in the checkpoint but not trained on. */
        (void)write_checkpoint(L);
    }
    if (L->g_wait != NULL) {
        surge_gauge_set(L->g_wait, data_wait_share(L));
    }
    if ((now - L->last_line_ns) / 1e9 >= s->progress_s) {
        progress_line(L, now);
    }
}

/* One batch of n rows in L->x/y/info: step, or count it as discarded. */
static int
consume(struct loop *L, int n)
{
    if (L->stopped) {
        L->rows_discarded += (uint64_t)n;
        for (int i = 0; i < n; i++) {
            L->discarded += L->info[i].uses == 1;
        }
        return 0;
    }
    if (L->prio) {
        for (int i = 0; i < n; i++) {
            L->w[i] = L->info[i].weight;
        }
    }
    struct surge_trainer_step_info si;
    int rc;
    if (L->feed != NULL && surge_feed_mode_of(L->feed) == SURGE_FEED_DEVICE) {
        /* Device rows, gathered on the trainer's stream (start_feed): the
         * step is queued after them; waiting for it keeps this loop's
         * per-step bookkeeping as with surge_trainer_step. */
        rc = surge_trainer_step_async(L->t, L->x, L->y, NULL, n, NULL,
                                      SURGE_TRAINER_BATCH_DEVICE);
        if (rc == 0) {
            rc = surge_trainer_sync(L->t, &si);
        }
    } else if (L->R > 1) {
        /* Every rank steps together, with its rows or none (dp_train). */
        uint64_t t0 = surge_now_ns();
        rc = surge_trainer_step_replicated(
            L->t, n > 0 ? L->x : NULL, n > 0 ? L->y : NULL,
            L->prio ? L->w : NULL, n, L->global_rows,
            L->prio ? L->row_loss : NULL, &si);
        L->step_s += (double)(surge_now_ns() - t0) * 1e-9;
    } else {
        uint64_t t0 = surge_now_ns();
        rc = surge_trainer_step(L->t, L->x, L->y, L->prio ? L->w : NULL, n,
                                L->prio ? L->row_loss : NULL, &si);
        L->step_s += (double)(surge_now_ns() - t0) * 1e-9;
    }
    if (rc == SURGE_ESTATE) {
        /* Non-finite loss: the update was skipped. The rows count as
         * served (the reservoir used them) but not trained on. */
        L->nonfinite++;
        L->rows_discarded += (uint64_t)n;
        for (int i = 0; i < n; i++) {
            L->discarded += L->info[i].uses == 1;
        }
        SURGE_LOG(SURGE_LOG_WARN, COMPONENT,
                  "non-finite loss at step %" PRIu64 ": update skipped",
                  surge_trainer_steps(L->t));
        if (L->nonfinite >= MAX_NONFINITE) {
            stop_training(L, "non_finite_loss");
        }
        return 0;
    }
    if (rc < 0) {
        /* A backend failure names its call, file and line. */
        const char *why = surge_trainer_error(L->t);
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "training step failed: %s",
                  why != NULL ? why : surge_strerror(rc));
        return rc;
    }
    if (L->prio && !L->tail_phase) {
        (void)surge_reservoir_update_priorities(L->r, L->info, L->row_loss,
                                                (size_t)n);
    }
    for (int i = 0; i < n; i++) {
        L->distinct += L->info[i].uses == 1;
    }
    if (L->tail_x != NULL && !L->tail_phase) {
        uint64_t k = (uint64_t)n;
        if (k > L->tail_cap - L->tail_n) {
            k = L->tail_cap - L->tail_n;
        }
        memcpy(L->tail_x + L->tail_n * L->nin, L->x, (size_t)k * L->nin * 4);
        memcpy(L->tail_y + L->tail_n * L->nout, L->y, (size_t)k * L->nout * 4);
        L->tail_n += k;
    }
    L->rows += (uint64_t)n;
    L->batches++;
    L->loss = si.loss;
    L->loss_sum += si.loss;
    L->loss_n++;
    atomic_store(&L->tr->batches, L->batches);
    atomic_store(&L->tr->samples, L->rows);
    if (L->g_loss != NULL) {
        surge_gauge_set(L->g_loss, si.loss);
    }
    if (L->g_step != NULL) {
        surge_gauge_set(L->g_step, (double)si.step);
    }
    return 1;
}

/* Input ranges: the study's parameter ranges and time range; inputs
 * without one are taken from the samples at hand (rows of x). */
static int
set_ranges(struct loop *L, const float *x, long rows)
{
    const struct settings *s = &L->tr->s;
    float *lo = malloc(L->nin * sizeof *lo), *hi = malloc(L->nin * sizeof *hi);
    if (lo == NULL || hi == NULL) {
        free(lo);
        free(hi);
        return -ENOMEM;
    }
    for (uint32_t j = 0; j < L->nin; j++) {
        lo[j] = INFINITY;
        hi[j] = -INFINITY;
        for (long i = 0; i < rows; i++) {
            float v = x[(size_t)i * L->nin + j];
            lo[j] = v < lo[j] ? v : lo[j];
            hi[j] = v > hi[j] ? v : hi[j];
        }
    }
    /* Replicas normalise alike: the ranges over every rank's samples. */
    if (L->R > 1 &&
        (dp_allreduce(L, lo, (int)L->nin, MPI_FLOAT, MPI_MIN) != 0 ||
         dp_allreduce(L, hi, (int)L->nin, MPI_FLOAT, MPI_MAX) != 0)) {
        free(lo);
        free(hi);
        return -EIO;
    }
    for (uint32_t j = 0; j < L->nin; j++) {
        if (!(lo[j] <= hi[j])) {
            lo[j] = hi[j] = 0;
        }
    }
    for (int j = 0; j < s->nparams && j < (int)L->nin - 1; j++) {
        lo[j] = (float)s->pmin[j];
        hi[j] = (float)s->pmax[j];
    }
    uint32_t tj = L->nin - 1;
    if (s->have_time) {
        lo[tj] = (float)s->time_min;
        hi[tj] = (float)s->time_max;
        L->time_src = "study";
    } else {
        L->time_src = "samples";
        SURGE_LOG(SURGE_LOG_WARN, COMPONENT,
                  "time range taken from the first %ld samples: [%g, %g] "
                  "(set trainer.time_min and trainer.time_max)",
                  rows, lo[tj], hi[tj]);
    }
    L->time_lo = lo[tj];
    L->time_hi = hi[tj];
    char err[256];
    int rc = surge_trainer_set_input_range(L->t, lo, hi, err, sizeof err);
    if (rc != 0) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "input ranges: %s", err);
    }
    free(lo);
    free(hi);
    return rc;
}

/* Take a batch into L->x/y/info. > 0 rows, 0 finished, SURGE_ETIMEDOUT,
 * SURGE_ECLOSED or another error. */
static long
take(struct loop *L, float *x, float *y, surge_batch_info *info)
{
    uint64_t t0 = surge_now_ns();
    long n = surge_reservoir_get_batch_pool(L->r, (size_t)L->B, x, y, info,
                                            GET_TIMEOUT_MS,
                                            surge_trainer_pool(L->t));
    L->warm_wait_s += (surge_now_ns() - t0) / 1e9;
    return n;
}

/* Will the step after the next batch checkpoint or stop training? Then
 * the feed must not draw a batch ahead of it (feed.h). */
static int
quiet_after_next(struct loop *L)
{
    const struct settings *s = &L->tr->s;
    uint64_t next = surge_trainer_steps(L->t) + 1;
    uint64_t now = surge_now_ns();
    if (L->stopped) {
        return 1;
    }
    if (s->checkpoint_every > 0 && next % (uint64_t)s->checkpoint_every == 0) {
        return 1;
    }
    if (s->checkpoint_every_s > 0 &&
        (now - L->last_ckpt_ns) / 1e9 >= s->checkpoint_every_s) {
        return 1;
    }
    if (s->max_steps > 0 && next >= (uint64_t)s->max_steps) {
        return 1;
    }
    return L->end_seen && s->steps_after_end > 0 &&
           next - L->step_at_end >= (uint64_t)s->steps_after_end;
}

static void *
feed_alloc(void *arg, size_t bytes)
{
    return surge_trainer_host_alloc(arg, bytes);
}

static void
feed_free(void *arg, void *p, size_t bytes)
{
    surge_trainer_host_free(arg, p, bytes);
}

static void *
feed_device_alloc(void *arg, size_t bytes)
{
    return surge_trainer_device_alloc(arg, bytes);
}

static void
feed_device_free(void *arg, void *p, size_t bytes)
{
    surge_trainer_device_free(arg, p, bytes);
}

/* The feed of the batches after the warm-up (docs/reservoir.md, "Feeding
 * the trainer"): on the device storage with the CUDA trainer, batches
 * gathered on the device on the trainer's stream; else prefetch (batch
 * k+1 gathered while batch k trains) for a GPU trainer or when asked, else
 * on this thread. */
static int
start_feed(struct loop *L)
{
    surge_reservoir_stats rs;
    surge_reservoir_get_stats(L->r, &rs);
    int gpu = strcmp(surge_trainer_backend(L->t), "cpu") != 0;
    const char *pf = L->tr->o->prefetch;
    enum surge_feed_mode mode = SURGE_FEED_SYNC;
    if (strcmp(pf, "on") == 0 || (strcmp(pf, "auto") == 0 && gpu)) {
        if (L->prio) {
            SURGE_LOG(SURGE_LOG_INFO, COMPONENT,
                      "prefetch off: with prioritized sampling each batch "
                      "is drawn after the last batch's losses are in");
        } else {
            mode = SURGE_FEED_PREFETCH;
        }
    }
    surge_feed_alloc a = {feed_alloc, feed_free, L->t};
    if (L->R > 1) {
        /* Replicated steps take host rows (staged to the device by the
         * trainer) and every batch is drawn when the step is agreed on:
         * no prefetch, no device gather. */
        mode = SURGE_FEED_SYNC;
    } else if (rs.storage == SURGE_RESERVOIR_STORAGE_DEVICE) {
        /* Device rows go straight to the CUDA step. Prioritized sampling
         * (host row losses) and steps_after_end (keeps host copies of the
         * last samples) take host batches, gathered from the device
         * storage's host pool. */
        if (strcmp(surge_trainer_backend(L->t), "cuda") == 0 && !L->prio &&
            L->tr->s.steps_after_end <= 0) {
            mode = SURGE_FEED_DEVICE;
            a = (surge_feed_alloc){feed_device_alloc, feed_device_free, L->t};
        } else {
            SURGE_LOG(SURGE_LOG_WARN, COMPONENT,
                      "reservoir storage device: batches are gathered on "
                      "the host (device batches need backend cuda, no "
                      "prioritized sampling and no steps_after_end)");
        }
    }
    int rc = surge_feed_create(&L->feed, L->r, mode, (size_t)L->B, L->nin,
                               (size_t)L->nout, L->x, L->y, L->info, &a);
    if (rc == 0 && mode == SURGE_FEED_DEVICE) {
        surge_feed_set_stream(L->feed, surge_trainer_stream(L->t));
    }
    if (rc == 0) {
        /* SYNC: the CPU trainer's threads, idle between steps, gather. */
        surge_feed_set_pool(L->feed, surge_trainer_pool(L->t));
    }
    if (rc == 0) {
        SURGE_LOG(SURGE_LOG_INFO, COMPONENT, "feed: %s, reservoir storage %s",
                  surge_feed_mode_name(mode),
                  surge_reservoir_storage_name(rs.storage));
    }
    return rc;
}

/* Output statistics from the first out_norm_samples samples: the batches
 * are kept and trained on once the statistics froze. Returns the batches
 * kept (in wx/wy/winfo/wn), or a negative code. */
static int
warm_up(struct loop *L, float **wx, float **wy, surge_batch_info **winfo,
        int **wn, int *nb_out, int *finished)
{
    long want = surge_trainer_config_get(L->t)->out_norm_samples;
    /* R > 1: each rank its share; surge_trainer_replicas_freeze merges. */
    want = (want + L->R - 1) / L->R;
    /* Rows are packed (a short batch comes only while draining); one
     * spare batch of room, as seen may stop short of a multiple of B. */
    int cap = (int)((want + L->B - 1) / L->B);
    size_t rowsx = (size_t)(cap + 1) * L->B;
    *wx = malloc(rowsx * L->nin * 4);
    *wy = malloc(rowsx * L->nout * 4);
    *winfo = malloc(rowsx * sizeof **winfo);
    *wn = malloc((size_t)cap * sizeof **wn);
    if (*wx == NULL || *wy == NULL || *winfo == NULL || *wn == NULL) {
        return -ENOMEM;
    }
    int nb = 0;
    long seen = 0;
    *finished = 0;
    while (nb < cap) {
        size_t off = (size_t)seen;
        long n = take(L, *wx + off * L->nin, *wy + off * L->nout, *winfo + off);
        if (n == SURGE_ETIMEDOUT) {
            continue;
        }
        if (n == 0 || n == SURGE_ECLOSED) {
            *finished = n == 0 ? 1 : 2;
            break;
        }
        if (n < 0) {
            return (int)n;
        }
        (*wn)[nb++] = (int)n;
        if (surge_trainer_observe_outputs(L->t, *wy + off * L->nout, n) < 0) {
            SURGE_LOG(SURGE_LOG_WARN, COMPONENT,
                      "a batch with non-finite outputs is left out of the "
                      "output statistics");
        }
        seen += n;
        if (seen >= want) {
            break;
        }
    }
    *nb_out = nb;
    return 0;
}

static int
register_metrics(struct loop *L)
{
    surge_metrics *m = L->ctx->metrics;
    if (m == NULL) {
        return 0;
    }
    int rc = surge_metrics_gauge(m, "surge_trainer_step", NULL,
                                 "Optimizer step", &L->g_step);
    if (rc == 0) {
        rc = surge_metrics_gauge(m, "surge_trainer_loss", NULL,
                                 "Training loss of the last step "
                                 "(normalized units)",
                                 &L->g_loss);
    }
    if (rc == 0) {
        rc = surge_metrics_gauge(m, "surge_trainer_validation_loss", NULL,
                                 "Validation MSE (normalized units) at the "
                                 "last evaluation",
                                 &L->g_vloss);
    }
    if (rc == 0) {
        rc = surge_metrics_gauge(m, "surge_trainer_validation_rel_l2", NULL,
                                 "Validation relative L2 error (physical "
                                 "units) at the last evaluation",
                                 &L->g_rel);
    }
    if (rc == 0) {
        rc = surge_metrics_gauge(m, "surge_trainer_data_wait_ratio", NULL,
                                 "Share of the trainer's wall time spent "
                                 "waiting for batches (this run)",
                                 &L->g_wait);
    }
    if (rc == 0 && L->tr->s.pnames != NULL) {
        rc = surge_metrics_set_info(m, "inputs", L->tr->s.pnames);
    }
    return rc;
}

static json_t *
jreal_or_null(double v, int have)
{
    return have && isfinite(v) ? json_real(v) : json_null();
}

/* R > 1, trainer.json: the replicas' agreement and what the gradient
 * sums cost; on rank 0, the counts summed over the ranks in place of its
 * own (kept as "rank_counts"), so that the launcher's identities hold on
 * the sums as server-stats.json's do. */
static void
dp_report(struct loop *L, json_t *j)
{
    struct surge_trainer_dp_stats st;
    memset(&st, 0, sizeof st);
    if (L->t != NULL) {
        surge_trainer_dp_get_stats(L->t, &st);
    }
    double comm = L->rep != NULL ? surge_replicas_mpi_comm_s(L->rep) : 0;
    json_object_set_new(
        j, "data_parallel",
        json_pack("{s:s,s:I,s:I,s:f,s:f,s:f}", "progress",
                  L->progress_mode == SURGE_REPLICAS_TEST ? "test" : "thread",
                  "steps", (json_int_t)st.steps, "buckets",
                  (json_int_t)st.buckets, "exposed_s", st.exposed_s, "comm_s",
                  comm, "loss_sum_s", st.loss_sum_s));
    if (L->rep_checked) {
        char hash[32];
        snprintf(hash, sizeof hash, "%016" PRIx64,
                 surge_trainer_params_hash(L->t));
        json_object_set_new(j, "replicas",
                            json_pack("{s:b,s:f,s:s}", "identical",
                                      L->rep_identical, "max_abs_diff",
                                      L->rep_diff, "params_hash", hash));
    }
    if (!L->have_sums || L->tr->rank != 0) {
        return;
    }
    json_t *own = json_object_get(j, "counts");
    json_object_set(j, "rank_counts", own);
    uint64_t rows = (uint64_t)L->sums[0], distinct = (uint64_t)L->sums[1];
    uint64_t disc = (uint64_t)L->sums[2], rdisc = (uint64_t)L->sums[3];
    uint64_t puts = (uint64_t)L->sums[4], unserved = (uint64_t)L->sums[5];
    json_object_set_new(j, "rows_trained", json_integer((json_int_t)rows));
    json_object_set_new(j, "samples_trained",
                        json_integer((json_int_t)distinct));
    json_object_set_new(j, "samples_discarded", json_integer((json_int_t)disc));
    json_object_set_new(j, "rows_discarded", json_integer((json_int_t)rdisc));
    double wall = L->t0_ns != 0 ? elapsed_s(L) : 0;
    json_object_set_new(j, "samples_per_s",
                        wall > 0 ? json_real((double)rows / wall)
                                 : json_null());
    json_object_set_new(
        j, "counts",
        json_pack("{s:s,s:I,s:I,s:I,s:I,s:b}", "identity",
                  "store_puts = samples_trained + samples_discarded + "
                  "samples_unserved",
                  "store_puts", (json_int_t)puts, "samples_trained",
                  (json_int_t)distinct, "samples_discarded", (json_int_t)disc,
                  "samples_unserved", (json_int_t)unserved, "add_up",
                  puts == distinct + disc + unserved));
}

/* R > 1, at the end, a collective: the server counts each rank's
 * checkpoint carried (its own share of the earlier servers' counts),
 * summed on rank 0 for its report's carried_counts. */
static void
gather_carried(struct loop *L)
{
    json_t *own = L->tr->res != NULL
                      ? json_object_get(L->tr->res->progress, "server_counts")
                      : NULL;
    char *text = own != NULL ? json_dumps(own, JSON_COMPACT) : NULL;
    int len = text != NULL ? (int)strlen(text) + 1 : 0;
    int *lens = calloc((size_t)L->R, sizeof *lens);
    int *offs = calloc((size_t)L->R, sizeof *offs);
    char *all = NULL;
    /* Every step below is taken by every rank or by none. */
    int bad = lens == NULL || offs == NULL;
    if (dp_allreduce(L, &bad, 1, MPI_INT, MPI_MAX) != 0 || bad ||
        MPI_Gather(&len, 1, MPI_INT, lens, 1, MPI_INT, 0, L->comm) !=
            MPI_SUCCESS) {
        goto out;
    }
    size_t total = 0;
    for (int r = 0; r < L->R && L->tr->rank == 0; r++) {
        offs[r] = (int)total;
        total += (size_t)lens[r];
    }
    if (L->tr->rank == 0) {
        all = malloc(total > 0 ? total : 1);
        bad = all == NULL;
    }
    if (MPI_Bcast(&bad, 1, MPI_INT, 0, L->comm) != MPI_SUCCESS || bad ||
        MPI_Gatherv(text, len, MPI_CHAR, all, lens, offs, MPI_CHAR, 0,
                    L->comm) != MPI_SUCCESS) {
        goto out;
    }
    for (int r = 0; r < L->R && L->tr->rank == 0; r++) {
        if (lens[r] == 0) {
            continue;
        }
        json_t *c = json_loads(all + offs[r], 0, NULL);
        if (L->carried_all == NULL) {
            L->carried_all = c;
        } else {
            (void)surge_train_counts_add(L->carried_all, c);
            json_decref(c);
        }
    }
out:
    free(all);
    free(lens);
    free(offs);
    free(text);
}

/* R > 1, at the end, a collective: compare the replicas (bit for bit with
 * rank 0's) and sum the counts over the ranks for rank 0's report. */
static void
dp_finish(struct loop *L)
{
    size_t np = surge_trainer_num_params(L->t);
    float *p = malloc(np * sizeof *p);
    int got = p != NULL && surge_trainer_get_params(L->t, p, np) == 0;
    int bad = !got;
    if (dp_allreduce(L, &bad, 1, MPI_INT, MPI_MAX) == 0 && !bad) {
        L->rep_checked =
            surge_replicas_mpi_compare(L->rep, p, np, &L->rep_identical,
                                       &L->rep_diff) == 0;
    }
    free(p);
    if (L->rep_checked) {
        SURGE_LOG(L->rep_identical ? SURGE_LOG_INFO : SURGE_LOG_ERROR,
                  COMPONENT,
                  "replicas of %d ranks %s after %" PRIu64
                  " steps (largest difference to rank 0's weights %g)",
                  L->R, L->rep_identical ? "identical" : "DIFFER",
                  surge_trainer_steps(L->t), L->rep_diff);
    }
    surge_reservoir_stats rs;
    memset(&rs, 0, sizeof rs);
    if (L->r != NULL) {
        surge_reservoir_get_stats(L->r, &rs);
    }
    double v[6] = {(double)L->rows,
                   (double)L->distinct,
                   (double)L->discarded,
                   (double)L->rows_discarded,
                   (double)rs.puts,
                   (double)(rs.uses_present[0] + rs.uses_removed[0])};
    if (dp_allreduce(L, v, 6, MPI_DOUBLE, MPI_SUM) == 0) {
        memcpy(L->sums, v, sizeof v);
        L->have_sums = 1;
    }
    gather_carried(L);
}

/* Where this run's wall time went (docs/trainer.md, "Threads"): waiting
 * for data and gathering it, the steps and, within them (cpu backend),
 * the matrix products, the other passes and the optimizer; the rest is
 * validation, checkpoints and bookkeeping. sgemm_share = gemm_s / wall_s
 * is the share of the matrix-product bound reached: 1 when the trainer
 * did nothing but its products. Also logged. */
static json_t *
time_split(const struct loop *L, const surge_reservoir_stats *rs)
{
    double wall = L->t0_ns != 0 ? (surge_now_ns() - L->t0_ns) / 1e9 : 0;
    struct surge_trainer_times tt;
    int have = L->t != NULL && surge_trainer_times(L->t, &tt) == 0;
    double data = data_wait_s(L);
    double other = wall - data - L->step_s;
    json_t *j = json_pack("{s:f,s:f,s:f,s:f,s:f}", "wall_s", wall, "data_s",
                          data, "data_blocked_s", rs->consumer_wait_s, "step_s",
                          L->step_s, "other_s", other > 0 ? other : 0.0);
    if (j == NULL) {
        return json_null();
    }
    json_object_set_new(j, "gemm_s", have ? json_real(tt.gemm_s) : json_null());
    json_object_set_new(j, "passes_s",
                        have ? json_real(tt.passes_s) : json_null());
    json_object_set_new(j, "optimizer_s",
                        have ? json_real(tt.optimizer_s) : json_null());
    json_object_set_new(j, "sgemm_share",
                        have && wall > 0 ? json_real(tt.gemm_s / wall)
                                         : json_null());
    if (have && wall > 0) {
        SURGE_LOG(SURGE_LOG_INFO, COMPONENT,
                  "time: %.1f s: data %.1f%% (blocked %.1f%%), steps %.1f%% "
                  "(matrix products %.1f%%, other passes %.1f%%, optimizer "
                  "%.1f%%), rest %.1f%%; sgemm share %.2f",
                  wall, 100 * data / wall, 100 * rs->consumer_wait_s / wall,
                  100 * L->step_s / wall, 100 * tt.gemm_s / wall,
                  100 * tt.passes_s / wall, 100 * tt.optimizer_s / wall,
                  100 * (other > 0 ? other : 0) / wall, tt.gemm_s / wall);
    }
    return j;
}

/* trainer.json: the trainer's final figures, for the launcher's summary. */
static void
write_report(struct loop *L, const struct surge_trainer_eval_result *untrained,
             int have_untrained, int model_ok)
{
    surge_reservoir_stats rs;
    memset(&rs, 0, sizeof rs);
    if (L->r != NULL) {
        surge_reservoir_get_stats(L->r, &rs);
    }
    uint64_t unserved = rs.uses_present[0] + rs.uses_removed[0];
    uint64_t puts = rs.puts;
    int add_up = puts == L->distinct + L->discarded + unserved;
    double wall = L->t0_ns != 0 ? elapsed_s(L) : 0;
    char model[PATH_CAP * 2];
    char *abs = realpath(L->tr->s.model, NULL);
    snprintf(model, sizeof model, "%s", abs != NULL ? abs : L->tr->s.model);
    free(abs);
    json_t *val = json_pack(
        "{s:I,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "samples", (json_int_t)L->nval,
        "mse", jreal_or_null(L->ev.mse_phys, L->have_ev), "mse_normalized",
        jreal_or_null(L->ev.mse, L->have_ev), "rel_l2",
        jreal_or_null(L->ev.rel_l2, L->have_ev), "rel_l2_mean",
        jreal_or_null(L->ev.rel_l2_mean, L->have_ev), "untrained_mse",
        jreal_or_null(untrained->mse_phys, have_untrained), "untrained_rel_l2",
        jreal_or_null(untrained->rel_l2, have_untrained), "step",
        L->have_ev ? json_integer((json_int_t)L->ev_step) : json_null());
    json_t *counts = json_pack(
        "{s:s,s:I,s:I,s:I,s:I,s:b}", "identity",
        "store_puts = samples_trained + samples_discarded + samples_unserved",
        "store_puts", (json_int_t)puts, "samples_trained",
        (json_int_t)L->distinct, "samples_discarded", (json_int_t)L->discarded,
        "samples_unserved", (json_int_t)unserved, "add_up", add_up);
    json_t *j = json_pack(
        "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o,s:s,s:f,s:o,s:o,s:I,s:o,s:o,"
        "s:o,s:s}",
        "steps", (json_int_t)(L->t ? surge_trainer_steps(L->t) : 0),
        "steps_this_run",
        (json_int_t)(L->t ? surge_trainer_steps(L->t) - L->step0 : 0),
        "batches", (json_int_t)L->batches, "rows_trained", (json_int_t)L->rows,
        "samples_trained", (json_int_t)L->distinct, "samples_discarded",
        (json_int_t)L->discarded, "rows_discarded",
        (json_int_t)L->rows_discarded, "nonfinite_steps",
        (json_int_t)L->nonfinite, "final_loss",
        jreal_or_null(L->loss, L->batches > 0), "stop_reason",
        L->stop_reason != NULL ? L->stop_reason : "none", "wall_s", wall,
        "samples_per_s",
        wall > 0 ? json_real((double)L->rows / wall) : json_null(),
        "validation", val, "checkpoints", (json_int_t)L->ckpts, "model",
        model_ok && L->tr->rank == 0 ? json_string(model) : json_null(),
        "resumed_from",
        L->tr->res != NULL ? json_string(L->tr->s.resume) : json_null(),
        "counts", counts, "time_source",
        L->time_src != NULL ? L->time_src : "none");
    if (j == NULL) {
        return;
    }
    json_object_set_new(j, "time_range",
                        json_pack("[f,f]", L->time_lo, L->time_hi));
    json_object_set_new(j, "data_wait_s", json_real(data_wait_s(L)));
    json_object_set_new(j, "time_split", time_split(L, &rs));
    json_object_set_new(j, "data_wait_share", json_real(data_wait_share(L)));
    json_object_set_new(
        j, "feed",
        json_string(L->feed != NULL
                        ? surge_feed_mode_name(surge_feed_mode_of(L->feed))
                        : "none"));
    json_object_set_new(j, "reservoir_storage",
                        json_string(surge_reservoir_storage_name(rs.storage)));
    /* The server counts of the checkpoint this server resumed from (the
     * earlier servers' share of the study), null without one. */
    json_t *carried = L->tr->res != NULL ? json_object_get(L->tr->res->progress,
                                                           "server_counts")
                                         : NULL;
    if (L->carried_all != NULL) {
        carried = L->carried_all; /* R > 1: every rank's, summed */
    }
    json_object_set_new(j, "carried_counts",
                        carried != NULL ? json_deep_copy(carried)
                                        : json_null());
    json_object_set_new(j, "ranks", json_integer(L->tr->R));
    json_object_set_new(j, "rank", json_integer(L->tr->rank));
    if (L->R > 1) {
        dp_report(L, j);
    }
    if (!model_ok && L->tr->rank == 0) {
        json_object_set_new(j, "model_error",
                            json_string(L->model_err[0] != '\0' ? L->model_err
                                        : L->t == NULL
                                            ? "no model: training never started"
                                            : "no model: training failed"));
    }
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(j);
    if (text != NULL) {
        size_t n = strlen(text);
        char *t2 = realloc(text, n + 2);
        if (t2 != NULL) {
            text = t2;
            text[n] = '\n';
            text[n + 1] = '\0';
            int rc = surge_write_file_atomic(L->tr->s.report, text, n + 1);
            if (rc < 0) {
                SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "%s: %s", L->tr->s.report,
                          surge_strerror(rc));
            }
        }
        free(text);
    }
}

/* The end of training: last validation, checkpoint, model file. */
static int
finish_training(struct loop *L, struct surge_trainer_eval_result *untrained,
                int *have_untrained)
{
    evaluate(L);
    if ((L->nval > 0 || L->R > 1) && L->init_params != NULL) {
        /* R > 1 a collective on every rank, samples or not. */
        size_t np = surge_trainer_num_params(L->t);
        float *cur = malloc(np * sizeof *cur);
        int swapped = cur != NULL &&
                      surge_trainer_get_params(L->t, cur, np) == 0 &&
                      surge_trainer_set_params(L->t, L->init_params, np) == 0;
        struct surge_trainer_eval_result u;
        int erc = eval_all(L, &u);
        if (swapped) {
            *have_untrained = erc == 0;
            if (erc == 0) {
                *untrained = u;
            }
            (void)surge_trainer_set_params(L->t, cur, np);
        }
        free(cur);
    }
    if (surge_trainer_steps(L->t) > L->last_ckpt_step) {
        (void)write_checkpoint(L);
    }
    if (L->tr->rank > 0) {
        return 0; /* the model is rank 0's to write */
    }
    char shape[64] = "";
    size_t ny, nx;
    if (preview_layout(L, &ny, &nx) == 0 && ny > 1) {
        snprintf(shape, sizeof shape, "%zu,%zu", ny, nx);
    }
    char vrel[64];
    snprintf(vrel, sizeof vrel, "%.9g", L->have_ev ? L->ev.rel_l2 : NAN);
    const char *meta[12];
    int k = 0;
    if (shape[0] != '\0') {
        meta[k++] = "field_shape";
        meta[k++] = shape;
    }
    if (L->tr->s.pnames != NULL) {
        meta[k++] = "input_names";
        meta[k++] = L->tr->s.pnames;
    }
    if (L->fields != NULL) {
        /* Names, offsets, sizes and shapes of the output vector's fields
         * (docs/model-file.md): surge predict splits the output by them. */
        meta[k++] = "output_fields";
        meta[k++] = L->fields;
    }
    meta[k++] = "validation_rel_l2";
    meta[k++] = vrel;
    meta[k] = NULL;
    int rc = surge_trainer_save_model(L->t, L->tr->s.model, meta);
    if (rc < 0) {
        /* trainer.json says why: a study without its model has failed
         * (surge launch exits 1 with this reason). */
        snprintf(L->model_err, sizeof L->model_err, "%.200s: %s",
                 L->tr->s.model, surge_strerror(rc));
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "%s", L->model_err);
        return rc;
    }
    L->model_err[0] = '\0';
    SURGE_LOG(SURGE_LOG_INFO, COMPONENT,
              "model written to %s (step %" PRIu64 ", validation rel L2 %s)",
              L->tr->s.model, surge_trainer_steps(L->t),
              L->have_ev ? vrel : "n/a");
    return 0;
}

static void
restore_progress(struct loop *L, json_t *p)
{
    L->rows = (uint64_t)json_integer_value(json_object_get(p, "rows"));
    L->batches = (uint64_t)json_integer_value(json_object_get(p, "batches"));
    L->distinct = (uint64_t)json_integer_value(json_object_get(p, "distinct"));
    L->discarded =
        (uint64_t)json_integer_value(json_object_get(p, "discarded"));
    L->rows_discarded =
        (uint64_t)json_integer_value(json_object_get(p, "rows_discarded"));
    L->nonfinite =
        (uint64_t)json_integer_value(json_object_get(p, "nonfinite"));
    L->prev_wall_s = jnum_or(p, "wall_s", 0);
    /* Whether training had stopped is not restored: the rules are checked
     * again with this server's settings (a larger max_steps continues). */
}

/* A batch of B rows drawn uniformly with replacement from the tail. */
static void
tail_draw(struct loop *L)
{
    for (int i = 0; i < L->B; i++) {
        L->rng ^= L->rng << 13;
        L->rng ^= L->rng >> 7;
        L->rng ^= L->rng << 17;
        uint64_t j = L->rng % L->tail_n;
        memcpy(L->x + (size_t)i * L->nin, L->tail_x + j * L->nin,
               (size_t)L->nin * 4);
        memcpy(L->y + (size_t)i * L->nout, L->tail_y + j * L->nout,
               (size_t)L->nout * 4);
        L->info[i].uses = 2; /* not a first use */
        L->info[i].weight = 1;
    }
}

/* steps_after_end once the reservoir is drained: batches drawn uniformly
 * with replacement from the samples it held at the end (kept as it
 * drained them), until a stopping rule says so or the server stops. */
static int
train_tail(struct loop *L)
{
    if (L->stopped || L->tail_n == 0 || L->tr->s.steps_after_end <= 0) {
        return 0;
    }
    L->tail_phase = 1;
    L->rng = L->tr->s.tcfg.seed * 0x9E3779B97F4A7C15ull + 1;
    SURGE_LOG(SURGE_LOG_INFO, COMPONENT,
              "reservoir drained at step %" PRIu64
              ": training on until %" PRId64
              " steps after the end, on the %" PRIu64 " samples it held",
              surge_trainer_steps(L->t), L->tr->s.steps_after_end, L->tail_n);
    while (!L->stopped) {
        surge_reservoir_stats rs;
        surge_reservoir_get_stats(L->r, &rs);
        if (rs.closed) {
            stop_training(L, "server_stop");
            break;
        }
        tail_draw(L);
        int rc = consume(L, L->B);
        if (rc < 0) {
            return rc;
        }
        check_stop(L);
        periodic(L, rc > 0);
    }
    return 0;
}

/* R > 1: the gradient sums over ctx->ranks->train. The progress mode is
 * SURGE_DP_PROGRESS (thread or test, default test: docs/trainer.md says
 * which suits which node), the bucket size SURGE_DP_BUCKET_MB (default
 * 4). */
static int
start_replicas(struct loop *L, char *err, size_t errlen)
{
    L->comm = L->ctx->ranks->train;
    const char *pm = getenv("SURGE_DP_PROGRESS");
    L->progress_mode = pm != NULL && pm[0] != '\0'
                           ? surge_replicas_progress_parse(pm)
                           : SURGE_REPLICAS_TEST;
    if (L->progress_mode < 0) {
        snprintf(err, errlen,
                 "SURGE_DP_PROGRESS: '%.32s' (expected thread or test)", pm);
        return SURGE_ECONFIG;
    }
    double mb = 4;
    const char *bm = getenv("SURGE_DP_BUCKET_MB");
    if (bm != NULL && bm[0] != '\0') {
        char *end;
        mb = strtod(bm, &end);
        if (*end != '\0' || !(mb > 0) || mb > 4096) {
            snprintf(err, errlen,
                     "SURGE_DP_BUCKET_MB: '%.32s' (expected 0 < MB <= 4096)",
                     bm);
            return SURGE_ECONFIG;
        }
    }
    int rc = surge_replicas_mpi_create(&L->rep, L->comm, L->progress_mode, err,
                                       errlen);
    if (rc == 0) {
        rc = surge_trainer_set_replicas(L->t, &surge_replicas_mpi_ops, L->rep,
                                        (size_t)(mb * 1048576.0));
        if (rc != 0) {
            snprintf(err, errlen, "data-parallel buffers: %s",
                     surge_strerror(rc));
        }
    }
    if (rc == 0) {
        SURGE_LOG(SURGE_LOG_INFO, COMPONENT,
                  "data-parallel: rank %d of %d, gradients summed in buckets "
                  "of %g MB (progress: %s), global batch %d x %d",
                  L->tr->rank, L->R, mb,
                  L->progress_mode == SURGE_REPLICAS_TEST ? "test" : "thread",
                  L->R, L->B);
    }
    return rc;
}

/* What every rank says at each round of dp_train's lockstep (summed). */
enum {
    DS_ROWS,    /* rows of its batch for this step (0: none ready) */
    DS_DRAINED, /* its reception ended and its reservoir is drained */
    DS_CLOSED,  /* its store closed: the server stops */
    DS_ENDED,   /* its reception ended */
    DS_STOP,    /* rank 0: max_wall_s reached */
    DS_CKPT,    /* rank 0: checkpoint_every_s due */
    DS_FAILED,  /* it failed (feed, step): every rank stops */
    DS_N
};

/* Training with R > 1 ranks (docs/trainer.md, "Data-parallel training"):
 * rounds in lockstep. In each round every rank takes its next batch (its
 * warm-up batches first, then the feed; waiting for it only when no rank
 * had rows in the last round, so a rank below its watermark gives a
 * zero-row batch instead of holding the others), then one small sum tells
 * every rank what all of them have; a step is taken when the rows add up
 * to at least one. The end, the stops and the time-based checkpoint are
 * decided from those sums, so every rank decides alike at the same step:
 * reception ends when it has ended on every rank; training ends when
 * every rank is drained (then, with steps_after_end, every rank draws from
 * the samples it kept, a rank with none giving zero rows), on a stopping
 * rule, or when any rank fails or its server stops. Returns 0 or <0;
 * *finished 2 when the server stopped. */
static int
dp_train(struct loop *L, float *wx, float *wy, surge_batch_info *winfo,
         const int *wn, int nwarm, int *finished,
         struct surge_trainer_eval_result *untrained, int *have_untrained,
         int *model_ok)
{
    const struct settings *s = &L->tr->s;
    int rank = L->tr->rank;
    int drained = *finished != 0, closed = *finished == 2, failed = 0;
    int final_done = 0, wb = 0;
    size_t woff = 0;
    long last_global = 1;
    int rc = 0, frc = 0;
    if (!drained) {
        frc = start_feed(L);
        if (frc < 0) {
            SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "batch feed: %s",
                      surge_strerror(frc));
            failed = 1;
        }
    }
    for (;;) {
        long n = 0;
        if (failed) {
            n = 0;
        } else if (wb < nwarm) {
            memcpy(L->x, wx + woff * L->nin, (size_t)wn[wb] * L->nin * 4);
            memcpy(L->y, wy + woff * L->nout, (size_t)wn[wb] * L->nout * 4);
            memcpy(L->info, winfo + woff, (size_t)wn[wb] * sizeof *L->info);
            woff += (size_t)wn[wb];
            n = wn[wb++];
        } else if (!drained) {
            int wait = last_global > 0 && !L->stopped ? 0 : GET_TIMEOUT_MS;
            n = surge_feed_next(L->feed, &L->x, &L->y, &L->info, 0, wait);
            if (n == SURGE_ETIMEDOUT) {
                n = 0;
            } else if (n == 0) {
                drained = 1;
            } else if (n == SURGE_ECLOSED) {
                drained = closed = 1;
                n = 0;
            } else if (n < 0) {
                SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "batch feed: %s",
                          surge_strerror((int)n));
                frc = (int)n;
                failed = 1;
                n = 0;
            }
        } else if (L->tail_phase && !L->stopped && L->tail_n > 0) {
            tail_draw(L);
            n = L->B;
        }
        surge_store_stats st;
        surge_store_get_stats(L->ctx->train, &st);
        uint64_t now = surge_now_ns();
        double v[DS_N];
        memset(v, 0, sizeof v);
        v[DS_ROWS] = (double)n;
        v[DS_DRAINED] = drained;
        v[DS_CLOSED] = closed;
        v[DS_ENDED] = st.ended || drained;
        v[DS_STOP] =
            rank == 0 && s->max_wall_s > 0 && elapsed_s(L) >= s->max_wall_s;
        v[DS_CKPT] = rank == 0 && s->checkpoint_every_s > 0 &&
                     surge_trainer_steps(L->t) > L->last_ckpt_step &&
                     (now - L->last_ckpt_ns) / 1e9 >= s->checkpoint_every_s;
        v[DS_FAILED] = failed;
        if (dp_allreduce(L, v, DS_N, MPI_DOUBLE, MPI_SUM) != 0) {
            SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
                      "the ranks' lockstep sum failed: training ends");
            return -EIO;
        }
        if (v[DS_FAILED] > 0) {
            stop_training(L, "rank_failed");
            return failed ? frc : -EIO;
        }
        L->global_rows = (long)v[DS_ROWS];
        L->ckpt_due = v[DS_CKPT] > 0;
        if (!L->end_seen && v[DS_ENDED] >= L->R) {
            note_end(L);
        }
        if (v[DS_STOP] > 0) {
            stop_training(L, "max_wall_s");
        }
        int stepped = 0;
        if (L->global_rows > 0 || (n > 0 && L->stopped)) {
            rc = consume(L, (int)n);
            if (rc < 0) {
                /* The step's own collectives were made: the others
                 * learn of it at the next round. */
                frc = rc;
                failed = 1;
                continue;
            }
            stepped = rc > 0;
        }
        last_global = L->global_rows;
        check_stop(L);
        periodic(L, stepped);
        if (L->stopped && !final_done) {
            rc = finish_training(L, untrained, have_untrained);
            *model_ok = rc == 0;
            final_done = 1;
        }
        if (v[DS_CLOSED] > 0) {
            *finished = 2;
            break;
        }
        if (v[DS_DRAINED] < L->R) {
            continue;
        }
        /* Every rank is drained. */
        if (L->stopped || s->steps_after_end <= 0) {
            break;
        }
        if (!L->tail_phase) {
            L->tail_phase = 1;
            L->rng =
                (L->tr->s.tcfg.seed + (uint64_t)rank) * 0x9E3779B97F4A7C15ull +
                1;
            SURGE_LOG(SURGE_LOG_INFO, COMPONENT,
                      "every rank drained at step %" PRIu64
                      ": training on until %" PRId64
                      " steps after the end, on the %" PRIu64
                      " samples this rank held",
                      surge_trainer_steps(L->t), s->steps_after_end, L->tail_n);
        } else if (L->global_rows == 0) {
            break; /* no rank kept a sample */
        }
    }
    if (!L->stopped) {
        stop_training(L, *finished == 2 ? "server_stop" : "reservoir_drained");
    }
    if (!final_done) {
        rc = finish_training(L, untrained, have_untrained);
        *model_ok = rc == 0;
    } else {
        /* Held-out samples that came after the stop, on any rank: the
         * final figures are over all of them (as with R = 1). */
        uint64_t before = L->nval;
        (void)sync_validation(L);
        int more = L->nval > before || !L->have_ev;
        if (dp_allreduce(L, &more, 1, MPI_INT, MPI_MAX) == 0 && more) {
            rc = finish_training(L, untrained, have_untrained);
            *model_ok = rc == 0;
        }
    }
    dp_finish(L);
    return 0;
}

static int
train_run(void *state, const surge_consumer_ctx *ctx)
{
    struct train *tr = state;
    struct loop L;
    memset(&L, 0, sizeof L);
    L.tr = tr;
    L.ctx = ctx;
    float *wx = NULL, *wy = NULL;
    surge_batch_info *winfo = NULL;
    int *wn = NULL, nwarm = 0;
    float *x0 = NULL, *y0 = NULL;   /* the buffers run allocated (the feed */
    surge_batch_info *info0 = NULL; /* moves L.x, L.y, L.info) */
    struct surge_trainer_eval_result untrained;
    int have_untrained = 0, model_ok = 0;
    memset(&untrained, 0, sizeof untrained);
    char err[2048] = "";
    int rc = surge_store_await_shape(ctx->train, &L.nin, &L.nout);
    if (rc == SURGE_ECLOSED) {
        SURGE_LOG(SURGE_LOG_INFO, COMPONENT,
                  "no sample arrived: nothing to "
                  "train");
        write_report(&L, &untrained, 0, 0);
        return 0;
    }
    if (rc < 0) {
        return rc;
    }
    if (tr->s.nparams > 0 && L.nin != (uint32_t)tr->s.nparams + 1) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
                  "samples have %u inputs but the study %s has %d parameters "
                  "(+ time = %d)",
                  L.nin, tr->s.study, tr->s.nparams, tr->s.nparams + 1);
        rc = SURGE_ECONFIG;
        goto out;
    }
    if (L.nout > SURGE_TRAINER_MAX_WIDTH) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
                  "samples have %" PRIu64 " outputs; the trainer takes at "
                  "most %d",
                  L.nout, SURGE_TRAINER_MAX_WIDTH);
        rc = SURGE_ELIMIT;
        goto out;
    }
    struct surge_trainer_config cfg = tr->s.tcfg;
    cfg.n_inputs = (int)L.nin;
    cfg.n_outputs = (int)L.nout;
    L.B = cfg.batch_size;
    rc = surge_trainer_create(&cfg, &L.t, err, sizeof err);
    if (rc != 0) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "%s", err);
        goto out;
    }
    L.r = surge_store_reservoir(ctx->train);
    L.prio = tr->o->reservoir.prioritized.enabled;
    L.R = ctx->ranks != NULL && ctx->ranks->size > 1 ? ctx->ranks->size : 1;
    if (L.R != tr->R) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
                  "the server has %d ranks but MPI_COMM_WORLD %d", L.R, tr->R);
        rc = SURGE_EINTERNAL;
        goto out;
    }
    if (L.R > 1) {
        rc = start_replicas(&L, err, sizeof err);
        if (rc != 0) {
            SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "%s", err);
            goto out;
        }
    }
    size_t np = surge_trainer_num_params(L.t);
    L.init_params = malloc(np * sizeof *L.init_params);
    if (L.init_params != NULL) {
        (void)surge_trainer_get_params(L.t, L.init_params, np);
    }
    L.x = surge_trainer_host_alloc(L.t, (size_t)L.B * L.nin * 4);
    L.y = surge_trainer_host_alloc(L.t, (size_t)L.B * L.nout * 4);
    L.w = calloc((size_t)L.B, sizeof *L.w);
    L.row_loss = calloc((size_t)L.B, sizeof *L.row_loss);
    L.info = calloc((size_t)L.B, sizeof *L.info);
    L.pred = malloc((size_t)L.nout * 4);
    x0 = L.x;
    y0 = L.y;
    info0 = L.info;
    if (L.x == NULL || L.y == NULL || L.w == NULL || L.row_loss == NULL ||
        L.info == NULL || L.pred == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    if (register_metrics(&L) < 0) {
        SURGE_LOG(SURGE_LOG_WARN, COMPONENT, "trainer metrics not registered");
    }
    L.t0_ns = L.last_ckpt_ns = L.last_line_ns = surge_now_ns();
    if (tr->res != NULL) {
        /* Weights, optimizer, normalization (input ranges included) and
         * step from the checkpoint; validation samples and progress from
         * its server blob (prepare restored the reservoir). */
        rc = surge_trainer_checkpoint_load(L.t, tr->s.resume, NULL, NULL, err,
                                           sizeof err);
        if (rc != 0) {
            SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "--resume: %s", err);
            goto out;
        }
        restore_progress(&L, tr->res->progress);
        L.time_lo = jnum_or(tr->res->progress, "time_min", 0);
        L.time_hi = jnum_or(tr->res->progress, "time_max", 0);
        L.time_src = "checkpoint";
        uint64_t n = tr->res->nval;
        if (n > 0) {
            L.val_in = tr->res->val_in;
            L.val_out = tr->res->val_out;
            L.val_sim = tr->res->val_sim;
            L.val_step = tr->res->val_step;
            tr->res->val_in = tr->res->val_out = NULL;
            tr->res->val_sim = tr->res->val_step = NULL;
            L.nval = L.nrestored = L.val_cap = n;
        }
        L.last_ckpt_step = surge_trainer_steps(L.t);
    }
    if (L.R > 1) {
        /* Every rank resumed from its own checkpoint: they must be of one
         * step (a rank that fell back to its .prev would not be). */
        unsigned long long lo = surge_trainer_steps(L.t), hi = lo;
        if (dp_allreduce(&L, &lo, 1, MPI_UNSIGNED_LONG_LONG, MPI_MIN) != 0 ||
            dp_allreduce(&L, &hi, 1, MPI_UNSIGNED_LONG_LONG, MPI_MAX) != 0 ||
            lo != hi) {
            SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
                      "the ranks start from different steps (%llu to %llu): "
                      "their checkpoints are not of one instant",
                      lo, hi);
            rc = SURGE_ECONFIG;
            goto out;
        }
    }
    L.step0 = surge_trainer_steps(L.t);
    int finished = 0;
    if (!surge_trainer_outputs_frozen(L.t)) {
        rc = warm_up(&L, &wx, &wy, &winfo, &wn, &nwarm, &finished);
        if (rc < 0) {
            goto out;
        }
        if (L.R > 1) {
            /* Training starts on every rank at once, when every rank has
             * its share of the samples for the statistics (or its
             * reception ended): merged, they are the same everywhere. */
            rc = surge_trainer_replicas_freeze(L.t);
            if (rc != 0) {
                SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
                          "output statistics across ranks: %s",
                          surge_strerror(rc));
                goto out;
            }
        } else {
            surge_trainer_freeze_outputs(L.t);
        }
    }
    if (tr->res == NULL) {
        /* Ranges from the study; what it lacks, from the first samples
         * (the warm-up batches are contiguous: only the last may be
         * short, while draining). */
        long rows = 0;
        for (int i = 0; i < nwarm; i++) {
            rows += wn[i];
        }
        rc = set_ranges(&L, wx, rows);
        if (rc != 0) {
            rc = SURGE_ECONFIG;
            goto out;
        }
    }
    SURGE_LOG(SURGE_LOG_INFO, COMPONENT,
              "training %u -> %s -> %" PRIu64 " (%zu parameters), batch %d, "
              "from step %" PRIu64,
              L.nin, cfg.n_layers > 0 ? "MLP" : "linear", L.nout, np, L.B,
              L.step0);
    check_stop(&L);
    evaluate(&L);
    if (L.R > 1) {
        rc = dp_train(&L, wx, wy, winfo, wn, nwarm, &finished, &untrained,
                      &have_untrained, &model_ok);
        if (rc < 0) {
            goto out;
        }
        goto done;
    }
    /* The warm-up batches, in order. */
    size_t off = 0;
    for (int b = 0; b < nwarm; b++) {
        memcpy(L.x, wx + off * L.nin, (size_t)wn[b] * L.nin * 4);
        memcpy(L.y, wy + off * L.nout, (size_t)wn[b] * L.nout * 4);
        memcpy(L.info, winfo + off, (size_t)wn[b] * sizeof *L.info);
        off += (size_t)wn[b];
        rc = consume(&L, wn[b]);
        if (rc < 0) {
            goto out;
        }
        check_stop(&L);
        periodic(&L, rc > 0);
    }
    if (finished == 1) {
        /* Drained during the warm-up already. */
        rc = train_tail(&L);
        if (rc < 0) {
            goto out;
        }
    }
    free(wx);
    free(wy);
    free(winfo);
    free(wn);
    wx = wy = NULL;
    winfo = NULL;
    wn = NULL;
    int final_done = 0;
    if (finished == 0) {
        rc = start_feed(&L);
        if (rc < 0) {
            SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "batch feed: %s",
                      surge_strerror(rc));
            goto out;
        }
    }
    while (finished == 0) {
        /* The final checkpoint waits for a batch drawn ahead: it is
         * consumed (as discarded) first, so the counts add up. */
        if (L.stopped && !final_done && !surge_feed_busy(L.feed)) {
            rc = finish_training(&L, &untrained, &have_untrained);
            model_ok = rc == 0;
            final_done = 1;
        }
        long n = surge_feed_next(L.feed, &L.x, &L.y, &L.info,
                                 !quiet_after_next(&L), GET_TIMEOUT_MS);
        if (n == SURGE_ETIMEDOUT) {
            check_stop(&L);
            periodic(&L, 0);
            continue;
        }
        if (n == 0) {
            /* Reception ended and the reservoir is drained. */
            rc = train_tail(&L);
            if (rc < 0) {
                goto out;
            }
            break;
        }
        if (n < 0) {
            if (n == SURGE_ECLOSED) {
                finished = 2;
                break;
            }
            rc = (int)n;
            goto out;
        }
        rc = consume(&L, (int)n);
        if (rc < 0) {
            goto out;
        }
        check_stop(&L);
        periodic(&L, rc > 0);
    }
    if (!L.stopped) {
        stop_training(&L, finished == 2 ? "server_stop" : "reservoir_drained");
    }
    if (!final_done) {
        rc = finish_training(&L, &untrained, &have_untrained);
        model_ok = rc == 0;
    } else {
        /* Training stopped early but held-out samples kept coming: the
         * final figures (and the model file's) are over all of them. */
        uint64_t before = L.nval;
        (void)sync_validation(&L);
        if (L.nval > before || !L.have_ev) {
            rc = finish_training(&L, &untrained, &have_untrained);
            model_ok = rc == 0;
        }
    }
done:
    progress_line(&L, surge_now_ns());
    if (L.have_ev) {
        SURGE_LOG(SURGE_LOG_INFO, COMPONENT,
                  "validation: %" PRIu64 " samples, MSE %.6g, relative L2 "
                  "%.6g (untrained model: %.6g)",
                  L.nval, L.ev.mse_phys, L.ev.rel_l2,
                  have_untrained ? untrained.rel_l2 : NAN);
    }
    rc = 0;
out:
    write_report(&L, &untrained, have_untrained, model_ok);
    surge_feed_destroy(&L.feed);
    L.x = x0;
    L.y = y0;
    L.info = info0;
    free(wx);
    free(wy);
    free(winfo);
    free(wn);
    if (L.t != NULL) {
        surge_trainer_host_free(L.t, L.x, (size_t)L.B * L.nin * 4);
        surge_trainer_host_free(L.t, L.y, (size_t)L.B * L.nout * 4);
    }
    free(L.w);
    free(L.row_loss);
    free(L.info);
    free(L.pred);
    free(L.init_params);
    free(L.val_in);
    free(L.val_out);
    free(L.val_sim);
    free(L.val_step);
    free(L.tail_x);
    free(L.tail_y);
    surge_trainer_destroy(&L.t);
    surge_replicas_mpi_destroy(&L.rep);
    json_decref(L.carried_all);
    return rc;
}

/* ------------------------------------------------------------ ops */

static int
train_create(void **state, const surge_server_options *o)
{
    struct train *tr = calloc(1, sizeof *tr);
    if (tr == NULL) {
        return -ENOMEM;
    }
    tr->o = o;
    char err[2048] = "";
    world_place(&tr->rank, &tr->R);
    int rc = read_settings(&tr->s, o, tr->rank, err, sizeof err);
    if (rc != 0) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "%s", err);
        free(tr->s.pnames);
        free(tr);
        return rc;
    }
    SURGE_LOG(SURGE_LOG_INFO, COMPONENT,
              "settings from %s: max_steps %" PRId64 ", max_wall_s %g, "
              "steps_after_end %" PRId64 ", eval_every %" PRId64
              ", checkpoint_every %" PRId64 " (%g s)",
              tr->s.study[0] != '\0' ? tr->s.study : "defaults (no study)",
              tr->s.max_steps, tr->s.max_wall_s, tr->s.steps_after_end,
              tr->s.eval_every, tr->s.checkpoint_every,
              tr->s.checkpoint_every_s);
    *state = tr;
    return 0;
}

static void
train_stats(void *state, surge_consumer_stats *out)
{
    struct train *tr = state;
    out->batches = atomic_load(&tr->batches);
    out->samples = atomic_load(&tr->samples);
}

static void
train_destroy(void *state)
{
    struct train *tr = state;
    if (tr == NULL) {
        return;
    }
    resumed_free(tr->res);
    free(tr->s.pnames);
    free(tr);
}

const surge_consumer_ops surge_consumer_trainer = {
    .name = "trainer",
    .create = train_create,
    .run = train_run,
    .stats = train_stats,
    .destroy = train_destroy,
    .prepare = train_prepare,
};
