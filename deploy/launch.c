/*
 * deploy/launch.c - `surge launch STUDY.json`: run a study from start to
 * summary.
 *
 * DESIGN. One thread, one loop, no blocking call without a bound:
 *
 *   load the study -> sample the parameter sets -> write parameters.csv
 *   and study.resolved.json -> start `surge serve` (same binary) with a
 *   fresh token -> loop every TICK_S:
 *       reap ended jobs (ok / failed: tell the server SIM_FAILED, then
 *       SIM_RETRY and requeue with attempt + 1 while retries remain);
 *       kill runs silent for longer than solver.timeout_s;
 *       check the server (process alive, PING answered; restart it when it
 *       died, up to server.restarts);
 *       start queued runs up to the concurrency limit;
 *       print progress;
 *   -> END_RECEPTION -> wait for the server to exit -> read its
 *   server-stats.json -> write summary.json (atomically) and print a table.
 *
 * Signals (SIGINT, SIGTERM, SIGHUP) only set a flag; the loop then cancels
 * every job (SIGTERM to its session, SIGKILL after scheduler.kill_grace_s),
 * waits for them, stops the server and still writes the summary. Runs and
 * the server live in sessions of their own, so a Ctrl-C typed at the
 * terminal reaches the launcher alone and the shutdown happens in order.
 *
 * Silence. A run is active when the server says its simulation sent
 * something recently (PING with the sim id, when the server answers with
 * idle_ms) or, as a fallback, when its log file grew or the server's slice
 * counter moved while it ran. A run silent for solver.timeout_s is killed
 * and counts as a failure (retried like one).
 *
 * Exit status: 0 when every run succeeded, the counts add up and the
 * study's product exists (the model, when it trains), 1 when a run failed
 * for good, the server failed, the model was not written (summary.json
 * "errors" says why) or the study was interrupted, 2 for usage and
 * configuration errors.
 *
 * The folder. A fresh study removes what an earlier one left there
 * (results, logs, runs/, checkpoints, temp files) and writes a new study
 * id (STUDY_ID_FILE) that the server keeps in its checkpoints; a restarted
 * server resumes only from this study's. --resume keeps the folder and
 * its id: the runs the checkpoint holds whole are done, the others run
 * again, and the summary adds the counts the checkpoint carried.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "common/auth.h"
#include "common/log.h"
#include "common/protocol.h"
#include "common/util.h"
#include "deploy/control.h"
#include "deploy/launch.h"
#include "deploy/sampler.h"
#include "deploy/scheduler.h"
#include "deploy/scheduler_slurm.h"
#include "deploy/server_proc.h"
#include "deploy/study.h"
#include "deploy/study_config.h"
#include "deploy/util.h"
#include "server/consumer.h"
#include "monitor/http.h"

#define COMPONENT "launch"
#define TICK_S 0.05    /* loop period */
#define TOKEN_BYTES 16 /* study token: 32 hex digits */
#define MAX_PATH 4096
#define OUT_MAX                                                                \
    3072 /* output folder path; derived paths fit                              \
            in MAX_PATH */
#define STATS_MAX_BYTES (16u << 20)
/* The trainer's checkpoint in the output folder; a restarted server is
 * given it with --resume (and falls back to CHECKPOINT_FILE ".prev", the
 * one before, when it is unreadable). */
#define CHECKPOINT_FILE "checkpoint.safetensors"
/* With trainer.kind external the server's checkpoint holds no model (the
 * user's trainer keeps its own): the reservoir, the record and the counts
 * (server/external.c). */
#define EXTERNAL_CHECKPOINT_FILE "external-checkpoint.bin"
/* The study's identity: written at a fresh start, kept by --resume; the
 * server writes it into every checkpoint and refuses another study's. */
#define STUDY_ID_FILE "study-id"
#define STUDY_ID_BYTES 16

enum run_state {
    RUN_QUEUED = 0,
    RUN_RUNNING,
    RUN_OK,
    RUN_FAILED,   /* failed every attempt */
    RUN_CANCELLED /* stopped by Ctrl-C / SIGTERM, or never started */
};

struct run {
    int64_t sim;        /* run id = simulation id */
    const double *x;    /* (nparams) its parameter values */
    int state;          /* enum run_state */
    int64_t attempt;    /* current or last attempt, from 1 */
    int64_t failures;   /* attempts that failed */
    uint64_t job;       /* scheduler handle while RUNNING */
    double started;     /* monotonic s, current attempt */
    double last_active; /* monotonic s of the last sign of life */
    long long log_size; /* log bytes seen at last_active */
    double server_seen; /* monotonic s the server last heard from this
                           sim (its /api/v1/status), -1: never */
    int timed_out;      /* current attempt killed for silence */
    int server_lost;    /* current attempt cancelled: server died */
    char why[600];      /* last failure, for the summary */
};

/* Counters the server reported in its last PING reply ("pong k=v ..."). */
struct pong {
    int valid;
    uint64_t messages, slices, assembled, train, validation, partial, active;
};

struct launch {
    surge_study *s;
    const surge_scheduler_ops *ops;
    void *sched;
    double *x; /* (nruns, nparams) parameter sets */
    size_t nruns;
    struct run *runs;     /* (nruns) */
    char exe[OUT_MAX];    /* this program */
    char bindir[OUT_MAX]; /* {bindir}: where `surge` lives */
    char out[OUT_MAX];    /* absolute output folder */
    char token[2 * TOKEN_BYTES + 1];
    char curve_dir[OUT_MAX + 8]; /* server.encrypt: <out>/keys; "" = off */
    char study_id[2 * STUDY_ID_BYTES + 1];
    int resume;          /* --resume: continue the study in this folder */
    int64_t resumed_ok;  /* runs a checkpoint already held whole */
    char errors[2][400]; /* why the study failed besides its runs */
    surge_server_proc server;
    surge_control *ctl;
    int restarts;      /* server restarts so far */
    int server_failed; /* gave up on the server */
    int ping_misses;   /* consecutive unanswered PINGs */
    double next_ping;
    double next_progress;
    struct pong pong;      /* latest */
    struct pong pong_prev; /* for the ingest rate */
    double pong_prev_t;
    double rate;                 /* samples/s, smoothed */
    uint64_t lost_assembled;     /* assembled by servers that died after their
                                    last checkpoint (at least: from their
                                    last PING); the runs are run again */
    int64_t rerun_after_restart; /* ok runs run again: their samples died
                                    with a server */
    json_t *resumed; /* progress of the checkpoint the current server
                        resumed from (server/train.c), NULL: none */
    int quiet;
    int tty; /* progress line redrawn in place */
    int progress_drawn;
    double t0;          /* study start, monotonic s */
    double t_runs_done; /* when the last run ended */
    int64_t attempts;   /* jobs started */
    /* From the server's monitoring endpoint (/api/v1/status), the same
     * numbers `surge top` and the dashboard show. */
    int status_ok;        /* the last GET succeeded */
    int status_has_runs;  /* it lists runs with last_seen_s */
    double status_rate;   /* rates.samples_in_per_s, -1 unknown */
    int64_t trainer_step; /* trainer.step, -1 unknown */
    double trainer_loss;  /* trainer.loss, NAN unknown */
    double trainer_rate;  /* rates.samples_trained_per_s, -1 unknown */
};

static volatile sig_atomic_t stop_signal;

static void
on_signal(int sig)
{
    stop_signal = sig;
}

/* ------------------------------------------------------------ usage */

static void
usage(FILE *out)
{
    fprintf(out,
            "usage: surge launch [options] STUDY.json\n\n"
            "Run a study: sample the parameters, start the server, run the "
            "solver\nensemble (retrying failed runs), stop the server and "
            "write\n<output_dir>/summary.json. docs/configuration.md "
            "describes the study file.\n\noptions:\n"
            "  --output-dir DIR   write the study here instead of "
            "study.output_dir\n"
            "  --dry-run          check the study, write parameters.csv and "
            "print each\n"
            "                     run's command; start nothing\n"
            "  --quiet            no progress or per-run lines: warnings, "
            "errors and the\n"
            "                     final table only\n"
            "  --resume           continue the study interrupted in its "
            "output folder:\n"
            "                     runs its checkpoint holds are not run "
            "again, the\n"
            "                     server resumes from that checkpoint\n"
            "  --help             this text\n\n"
            "exit status: 0 all runs ok, 1 a run or the server failed, the "
            "model was\nnot written or the study was interrupted, 2 bad "
            "usage or study file\n");
}

/* ------------------------------------------------------------ helpers */

static void
find_bindir(struct launch *L)
{
    ssize_t n = readlink("/proc/self/exe", L->exe, sizeof L->exe - 1);
    if (n <= 0) {
        snprintf(L->exe, sizeof L->exe, "surge");
        snprintf(L->bindir, sizeof L->bindir, ".");
        return;
    }
    L->exe[n] = '\0';
    surge_deploy_dirname(L->exe, L->bindir, sizeof L->bindir);
    /* In a build tree libtool runs the real program from .libs/; the
     * solvers and the wrapper script sit one level up. */
    size_t len = strlen(L->bindir);
    if (len >= 6 && strcmp(L->bindir + len - 6, "/.libs") == 0) {
        L->bindir[len - 6] = '\0';
    }
}

/* A bare program name (no '/') as the solver: look next to the surge
 * program first (an installed tree), then in the build tree's solvers/
 * folders (bindir/../solvers/X/NAME), else leave it to PATH. This is what
 * lets "surge-heat2d" work both from a build folder and once installed. */
static int
resolve_program(const struct launch *L, surge_strv *argv)
{
    char cand[MAX_PATH], solvers[MAX_PATH];
    const char *name = argv->v[0];
    struct stat st;
    if (strchr(name, '/') != NULL || strlen(name) > 255) {
        return 0;
    }
    snprintf(cand, sizeof cand, "%s/%s", L->bindir, name);
    if (stat(cand, &st) == 0 && S_ISREG(st.st_mode) &&
        access(cand, X_OK) == 0) {
        goto found;
    }
    snprintf(solvers, sizeof solvers, "%.3500s/../solvers", L->bindir);
    DIR *d = opendir(solvers);
    if (d == NULL) {
        return 0;
    }
    struct dirent *e;
    bool hit = false;
    while (!hit && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') {
            continue;
        }
        snprintf(cand, sizeof cand, "%.3500s/%.255s/%s", solvers, e->d_name,
                 name);
        hit = stat(cand, &st) == 0 && S_ISREG(st.st_mode) &&
              access(cand, X_OK) == 0;
    }
    closedir(d);
    if (!hit) {
        return 0;
    }
found:;
    char *copy = strdup(cand);
    if (copy == NULL) {
        return -ENOMEM;
    }
    free(argv->v[0]);
    argv->v[0] = copy;
    return 0;
}

static void run_dir(const struct launch *L, int64_t sim, char *buf, size_t cap);

/* Whether path is a file this process may execute: NULL, or why not. */
static const char *
not_runnable(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        return errno == ENOENT || errno == ENOTDIR ? "not found"
                                                   : strerror(errno);
    }
    if (S_ISDIR(st.st_mode)) {
        return "is a folder";
    }
    if (!S_ISREG(st.st_mode)) {
        return "is not a regular file";
    }
    return access(path, X_OK) == 0 ? NULL : "is not executable";
}

/* check_program - whether the solver program prog (argv[0] after
 * resolve_program) can start, as exec would find it: a name with a '/'
 * relative to the run's folder rdir (joined by text: the folder may not
 * exist yet, and ".." is taken lexically), a bare name on PATH. Returns 0,
 * or SURGE_ECONFIG with err naming the program and what is wrong, so that
 * a misspelled command stops the study before any run (and --dry-run
 * catches it) instead of failing every run and retry under mpirun. */
static int
check_program(const char *prog, const char *rdir, char *err, size_t errlen)
{
    char path[MAX_PATH];
    const char *why;
    if (strchr(prog, '/') != NULL) {
        if (prog[0] == '/') {
            snprintf(path, sizeof path, "%s", prog);
        } else {
            snprintf(path, sizeof path, "%s/%s", rdir, prog);
            surge_deploy_normalize_path(path);
        }
        why = not_runnable(path);
        if (why == NULL) {
            return 0;
        }
        if (prog[0] == '/') {
            snprintf(err, errlen, "solver.command: program %.400s: %s", prog,
                     why);
        } else {
            snprintf(err, errlen, "solver.command: program %.300s (%.400s): %s",
                     prog, path, why);
        }
        return SURGE_ECONFIG;
    }
    const char *dirs = getenv("PATH");
    if (dirs == NULL || dirs[0] == '\0') {
        dirs = "/usr/local/bin:/usr/bin:/bin";
    }
    const char *seen = NULL; /* a candidate that exists but cannot run */
    char seen_path[MAX_PATH] = "";
    while (1) {
        size_t n = strcspn(dirs, ":");
        /* An empty PATH entry means the working folder: the run's. */
        snprintf(path, sizeof path, "%.*s/%s", (int)(n > 0 ? n : strlen(rdir)),
                 n > 0 ? dirs : rdir, prog);
        why = not_runnable(path);
        if (why == NULL) {
            return 0;
        }
        if (seen == NULL && strcmp(why, "not found") != 0) {
            seen = why;
            snprintf(seen_path, sizeof seen_path, "%s", path);
        }
        if (dirs[n] == '\0') {
            break;
        }
        dirs += n + 1;
    }
    if (seen != NULL) {
        snprintf(err, errlen, "solver.command: program %.300s (%.400s): %s",
                 prog, seen_path, seen);
    } else {
        snprintf(err, errlen,
                 "solver.command: program %.300s not found (looked next to "
                 "surge, in the build tree's solvers/ and on PATH)",
                 prog);
    }
    return SURGE_ECONFIG;
}

/* run_program_check - whether the program run r's command starts can run:
 * expanded, resolved and checked with check_program. */
static int
run_program_check(const struct launch *L, const struct run *r, char *err,
                  size_t errlen)
{
    char rdir[MAX_PATH];
    surge_strv solver = {NULL, 0};
    run_dir(L, r->sim, rdir, sizeof rdir);
    surge_expand_ctx ctx = {r->sim, r->attempt, r->x, rdir, L->out, L->bindir};
    int rc = surge_study_expand_command(L->s, &ctx, &solver, err, errlen);
    if (rc == 0) {
        rc = resolve_program(L, &solver);
    }
    if (rc == 0) {
        rc = check_program(solver.v[0], rdir, err, errlen);
    } else if (rc != SURGE_ECONFIG) {
        snprintf(err, errlen, "%s", surge_strerror(rc));
    }
    surge_strv_free(&solver);
    return rc;
}

static int
write_text_atomic(const char *dir, const char *name, const char *text)
{
    char path[MAX_PATH];
    int n = snprintf(path, sizeof path, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= sizeof path) {
        return -ENAMETOOLONG;
    }
    return surge_write_file_atomic(path, text, strlen(text));
}

static long long
file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

static void
run_dir(const struct launch *L, int64_t sim, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/runs/%lld", L->out, (long long)sim);
}

static void
log_path(const struct launch *L, const struct run *r, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/runs/%lld/attempt-%lld.log", L->out,
             (long long)r->sim, (long long)r->attempt);
}

static void
parse_pong(const char *msg, struct pong *p)
{
    static const struct {
        const char *key;
        size_t off;
    } keys[] = {
        {"messages=", offsetof(struct pong, messages)},
        {"slices=", offsetof(struct pong, slices)},
        {"assembled=", offsetof(struct pong, assembled)},
        {"train=", offsetof(struct pong, train)},
        {"validation=", offsetof(struct pong, validation)},
        {"partial=", offsetof(struct pong, partial)},
        {"active_sims=", offsetof(struct pong, active)},
    };
    struct pong q = {0};
    q.valid = 1;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const char *at = strstr(msg, keys[i].key);
        if (at == NULL) {
            continue;
        }
        char num[32];
        size_t n = strspn(at + strlen(keys[i].key), "0123456789");
        if (n == 0 || n >= sizeof num) {
            continue;
        }
        memcpy(num, at + strlen(keys[i].key), n);
        num[n] = '\0';
        uint64_t v;
        if (surge_parse_uint64(num, &v) == 0) {
            *(uint64_t *)((char *)&q + keys[i].off) = v;
        }
    }
    *p = q;
}

/* One control request with the study's ping timeout; logs failures. */
static int
control(struct launch *L, int op, int64_t sim, char *msg, size_t cap)
{
    int32_t code = 0;
    char buf[SURGE_MAX_REASON + 1];
    if (L->ctl == NULL || !surge_server_proc_alive(&L->server)) {
        /* No waiting for a dead server's answer; check_server() restarts
         * it on the next tick. */
        return SURGE_ENOSERVER;
    }
    int rc = surge_control_call(L->ctl, op, sim,
                                (int)(L->s->server_ping_timeout_s * 1000),
                                &code, buf, sizeof buf);
    if (rc == 0 && code != 0) {
        SURGE_LOG(SURGE_LOG_WARN, COMPONENT, "server refused %s: %s",
                  surge_control_op_name(op), buf);
        rc = code;
    } else if (rc != 0 && rc != -EINTR) {
        SURGE_LOG(SURGE_LOG_WARN, COMPONENT, "%s: %s",
                  surge_control_op_name(op), surge_strerror(rc));
    }
    if (msg != NULL && cap > 0) {
        snprintf(msg, cap, "%s", rc == 0 ? buf : "");
    }
    return rc;
}

/* ------------------------------------------------------------ server */

/* The file the study's server checkpoints to. */
static const char *
checkpoint_file(const struct launch *L)
{
    return L->s->tr_kind == 1 ? EXTERNAL_CHECKPOINT_FILE : CHECKPOINT_FILE;
}

/* The study's checkpoint or the one before it is in the folder. */
static int
checkpoint_exists(const struct launch *L)
{
    char p[MAX_PATH];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", L->out, checkpoint_file(L));
    if (stat(p, &st) == 0) {
        return 1;
    }
    snprintf(p, sizeof p, "%s/" CHECKPOINT_FILE ".prev", L->out);
    return stat(p, &st) == 0;
}

/* Rank r's name for one of the server's files (docs/trainer.md): rank 0
 * keeps base, rank r > 0 puts ".rank<r>" before the extension
 * ("checkpoint.safetensors" -> "checkpoint.rank1.safetensors",
 * "trainer.json" -> "trainer.rank1.json"). */
static void
rank_name(const char *base, int64_t r, char *buf, size_t cap)
{
    size_t stem = strcspn(base, ".");
    if (r == 0) {
        snprintf(buf, cap, "%s", base);
    } else {
        snprintf(buf, cap, "%.*s.rank%lld%s", (int)stem, base, (long long)r,
                 base + stem);
    }
}

/* The progress object of rank r's checkpoint a server resumes from: the
 * newest when it is readable and of this study, else the one before (the
 * server's own fallback, server/train.c). NULL when neither is. */
static json_t *
rank_progress(const struct launch *L, int64_t r)
{
    /* With trainer.kind external: the external consumer's checkpoint,
     * written atomically (no ".prev"). */
    int external = L->s->tr_kind == 1;
    for (int prev = 0; prev < (external ? 1 : 2); prev++) {
        char name[128], p[MAX_PATH], err[512];
        json_t *j = NULL;
        rank_name(checkpoint_file(L), r, name, sizeof name);
        snprintf(p, sizeof p, "%s/%s%s", L->out, name, prev ? ".prev" : "");
        if ((external
                 ? surge_external_checkpoint_progress(p, &j, err, sizeof err)
                 : surge_train_checkpoint_progress(p, &j, err, sizeof err)) !=
            0) {
            continue;
        }
        const char *id = json_string_value(json_object_get(j, "study_id"));
        if (id != NULL && strcmp(id, L->study_id) == 0) {
            return j;
        }
        json_decref(j);
    }
    return NULL;
}

/* The progress a server resumes from: rank 0's checkpoint's, and with R >
 * 1 ranks (each resumes from its own file) "server_counts" summed over
 * every rank's and "sims_finished" the runs that every rank holds whole (a
 * run's steps are spread over the ranks). A rank without a checkpoint
 * holds no run whole. NULL without rank 0's. */
static json_t *
resume_progress(const struct launch *L)
{
    json_t *p0 = rank_progress(L, 0);
    json_t *counts = json_object_get(p0, "server_counts");
    json_t *fin = json_object_get(p0, "sims_finished");
    for (int64_t r = 1; p0 != NULL && r < L->s->server_ranks; r++) {
        json_t *pr = rank_progress(L, r);
        json_t *rfin = json_object_get(pr, "sims_finished");
        if (json_is_object(counts) &&
            surge_train_counts_add(counts,
                                   json_object_get(pr, "server_counts")) != 0) {
            SURGE_LOG(SURGE_LOG_WARN, COMPONENT,
                      "checkpoint of server rank %lld: its server_counts do "
                      "not fit rank 0's",
                      (long long)r);
        }
        /* Keep the runs rank r holds too (both lists are short: runs). */
        for (size_t i = json_array_size(fin); i-- > 0;) {
            json_t *sim = json_array_get(fin, i);
            bool held = false;
            for (size_t k = 0; !held && k < json_array_size(rfin); k++) {
                held = json_equal(sim, json_array_get(rfin, k));
            }
            if (!held) {
                json_array_remove(fin, i);
            }
        }
        json_decref(pr);
    }
    return p0;
}

/* steps.assembled of the server counts the current server carried over
 * from its checkpoint (0 without one). */
static uint64_t
resumed_assembled(const struct launch *L)
{
    json_t *v = json_object_get(
        json_object_get(json_object_get(L->resumed, "server_counts"), "steps"),
        "assembled");
    return json_is_integer(v) ? (uint64_t)json_integer_value(v) : 0;
}

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Mark each run the checkpoint progress lists in sims_finished (runs it
 * holds whole) in done[] (nruns). Sorted once, so a study of many runs
 * costs n log n. 0 or -ENOMEM. */
static int
finished_runs(const struct launch *L, json_t *progress, bool *done)
{
    json_t *fin = json_object_get(progress, "sims_finished");
    size_t n = json_array_size(fin), k = 0;
    memset(done, 0, L->nruns * sizeof *done);
    if (n == 0) {
        return 0;
    }
    int64_t *v = malloc(n * sizeof *v);
    if (v == NULL) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(fin, i);
        if (json_is_integer(e)) {
            v[k++] = (int64_t)json_integer_value(e);
        }
    }
    qsort(v, k, sizeof *v, cmp_i64);
    for (size_t i = 0; i < L->nruns; i++) {
        done[i] = bsearch(&L->runs[i].sim, v, k, sizeof *v, cmp_i64) != NULL;
    }
    free(v);
    return 0;
}

/* The server's R ranks on this machine: "<mpirun's path> -np R --bind-to
 * none -x SURGE_TOKEN [server.mpirun_args] surge serve ...". mpirun is
 * scheduler.mpirun (or "mpirun" when that is empty), found in PATH now, so a
 * missing one is a clear error rather than an exec failure in the log. No
 * binding: Open MPI binds each rank to one core by default (for np <= 2), which
 * would put a rank's I/O thread and all its trainer threads on that one
 * core. --oversubscribe and --allow-run-as-root are not added: they come
 * from server.mpirun_args or the environment (OMPI_MCA_rmaps_base_
 * oversubscribe, OMPI_ALLOW_RUN_AS_ROOT), as the user decides. */
static int
wrap_server_mpirun(const surge_study *s, char *const *server_argv,
                   surge_strv *out, char *err, size_t errcap)
{
    const char *prog = s->mpirun[0] != '\0' ? s->mpirun : "mpirun";
    char path[MAX_PATH], np[32];
    int rc = surge_deploy_find_in_path(prog, path, sizeof path);
    if (rc != 0) {
        snprintf(err, errcap,
                 "server.ranks = %lld: the server's ranks are started with "
                 "mpirun, and '%.200s' (scheduler.mpirun) is not an "
                 "executable in PATH",
                 (long long)s->server_ranks, prog);
        return SURGE_ECONFIG;
    }
    bool bind = false;
    for (size_t i = 0; i < s->server_mpirun_args.n; i++) {
        bind = bind || strncmp(s->server_mpirun_args.v[i], "--bind-to", 9) == 0;
    }
    surge_strv v = {NULL, 0};
    snprintf(np, sizeof np, "%lld", (long long)s->server_ranks);
    rc = surge_strv_push(&v, path);
    rc = rc ? rc : surge_strv_push(&v, "-np");
    rc = rc ? rc : surge_strv_push(&v, np);
    if (!bind) {
        rc = rc ? rc : surge_strv_push(&v, "--bind-to");
        rc = rc ? rc : surge_strv_push(&v, "none");
    }
    /* Ranks that mpirun places on other nodes (inside an allocation) get
     * the token too; by name, so that its value stays off the command
     * line. */
    rc = rc ? rc : surge_strv_push(&v, "-x");
    rc = rc ? rc : surge_strv_push(&v, "SURGE_TOKEN");
    for (size_t i = 0; rc == 0 && i < s->server_mpirun_args.n; i++) {
        rc = surge_strv_push(&v, s->server_mpirun_args.v[i]);
    }
    return surge_strv_finish(&v, rc, server_argv, out);
}

/* The server's command line into *out: `surge serve` with the study's
 * options, wrapped in mpirun (*mpirun set) or srun when the study asks for
 * that. With a checkpoint to resume from (a restart, --resume) it adds
 * --resume and sets L->resumed. 0, or an error with err filled in. */
static int
server_command(struct launch *L, surge_strv *out, bool *mpirun, char *err,
               size_t errcap)
{
    const surge_study *s = L->s;
    surge_strv argv = {NULL, 0};
    char buf[MAX_PATH];
    int rc = 0;
#define PUSH(str)                                                              \
    do {                                                                       \
        if (rc == 0) {                                                         \
            rc = surge_strv_push(&argv, (str));                                \
        }                                                                      \
    } while (0)
#define PUSH_REAL(flag, v)                                                     \
    do {                                                                       \
        snprintf(buf, sizeof buf, "%.17g", (double)(v));                       \
        PUSH(flag);                                                            \
        PUSH(buf);                                                             \
    } while (0)
#define PUSH_U64(flag, v)                                                      \
    do {                                                                       \
        snprintf(buf, sizeof buf, "%" PRIu64, (uint64_t)(v));                  \
        PUSH(flag);                                                            \
        PUSH(buf);                                                             \
    } while (0)
    PUSH(L->exe);
    PUSH("serve");
    PUSH("--output-dir");
    PUSH(L->out);
    PUSH("--bind");
    PUSH(s->server_bind);
    PUSH_U64("--max-partial-bytes", s->server_max_partial_bytes);
    PUSH("--policy");
    PUSH(s->res_policy == 0   ? "fifo"
         : s->res_policy == 1 ? "firo"
                              : "reservoir");
    PUSH_U64("--store-bytes", s->res_capacity_bytes);
    /* Every reservoir option, defaults included, so that the server runs
     * exactly the effective study (study.resolved.json). */
    PUSH_U64("--watermark", s->res_watermark);
    PUSH_U64("--seed", s->res_seed);
    PUSH_U64("--epochs", s->res_epochs);
    PUSH_U64("--max-uses", s->res_max_uses);
    PUSH_REAL("--samples-per-insert", s->res_rate_spi);
    PUSH_REAL("--rate-min-diff", s->res_rate_min_diff);
    PUSH_REAL("--rate-max-diff", s->res_rate_max_diff);
    PUSH("--balance-sims");
    PUSH(s->res_balance_sims ? "true" : "false");
    PUSH("--prioritized");
    PUSH(s->res_prio_enabled ? "true" : "false");
    PUSH_REAL("--priority-alpha", s->res_prio_alpha);
    PUSH_REAL("--priority-beta", s->res_prio_beta);
    PUSH_REAL("--priority-epsilon", s->res_prio_epsilon);
    PUSH("--reservoir-storage");
    PUSH(s->res_storage == 0   ? "auto"
         : s->res_storage == 1 ? "host"
                               : "device");
    PUSH_U64("--reservoir-device", s->res_device);
    PUSH("--prefetch");
    PUSH(s->res_prefetch == 0 ? "auto" : s->res_prefetch == 1 ? "on" : "off");
    if (s->tr_enabled) {
        /* The server's consumer that trains; the trainer's settings are
         * in study.resolved.json ("trainer"). */
        PUSH("--consumer");
        PUSH(s->tr_kind == 1 ? "external" : "trainer");
    }
    PUSH_U64("--validation-bytes", s->server_validation_bytes);
    PUSH_U64("--validation-every", s->server_validation_every);
    if (s->field_shapes[0] != '\0') {
        PUSH("--field-shapes");
        PUSH(s->field_shapes);
    }
    PUSH_U64("--batch-size", s->trainer.batch_size);
    /* The consumer drains the store (and the trainer finishes) after the
     * end of reception within this; a bit less than our own wait, so the
     * server ends on its own rather than by our SIGTERM. */
    PUSH_REAL("--stop-timeout", s->server_stop_timeout_s * 0.8);
    if (s->server_bind_simulation) {
        PUSH("--bind-simulation");
        PUSH("true");
    }
    if (s->server_checksum_log) {
        snprintf(buf, sizeof buf, "%s/checksums.log", L->out);
        PUSH("--checksum-log");
        PUSH(buf);
    }
    if (L->curve_dir[0] != '\0') {
        snprintf(buf, sizeof buf, "%s/server.key", L->curve_dir);
        PUSH("--curve-keys");
        PUSH(buf);
    }
    PUSH("--study-id");
    PUSH(L->study_id);
    /* A restart (or --resume) continues from the trainer's last checkpoint
     * when there is one: a fresh study removed every earlier checkpoint
     * from the folder, and the server refuses one of another study. */
    json_decref(L->resumed);
    L->resumed = NULL;
    if ((L->restarts > 0 || L->resume) && checkpoint_exists(L)) {
        snprintf(buf, sizeof buf, "%s/%s", L->out, checkpoint_file(L));
        SURGE_LOG(SURGE_LOG_INFO, COMPONENT, "resuming from %s", buf);
        PUSH("--resume");
        PUSH(buf);
        L->resumed = resume_progress(L);
    }
    for (size_t i = 0; i < s->server_args.n; i++) {
        PUSH(s->server_args.v[i]);
    }
#undef PUSH
#undef PUSH_U64
#undef PUSH_REAL
    bool as_job = L->ops == &surge_sched_slurm_ops && s->slurm_server_as_job;
    *mpirun = !as_job && (s->server_launcher == 2 ||
                          (s->server_launcher == 0 && s->server_ranks > 1));
    if (rc == 0 && (as_job || *mpirun)) {
        surge_strv wrapped = {NULL, 0};
        if (as_job) {
            /* The server as a Slurm job (or job step) of its own: srun
             * stays in the foreground as our child, so it is supervised
             * like a local process, and SIGTERM to it cancels the job. */
            rc = surge_slurm_wrap_server(L->sched, argv.v, &wrapped);
            if (rc != 0) {
                snprintf(err, errcap, "scheduler.slurm.server_as_job: %s",
                         rc == -ENOENT ? "srun not found in PATH"
                                       : surge_strerror(rc));
            }
        } else {
            rc = wrap_server_mpirun(s, argv.v, &wrapped, err, errcap);
        }
        surge_strv_free(&argv);
        if (rc != 0) {
            return rc;
        }
        argv = wrapped;
    }
    if (rc != 0) {
        surge_strv_free(&argv);
        return rc;
    }
    surge_strv_move(out, &argv);
    return 0;
}

static int
start_server(struct launch *L, char *err, size_t errcap)
{
    const surge_study *s = L->s;
    surge_strv argv = {NULL, 0};
    char json_path[MAX_PATH], log[MAX_PATH];
    bool mpirun = false;
    snprintf(json_path, sizeof json_path, "%s/server.json", L->out);
    snprintf(log, sizeof log, "%s/server.log", L->out);
    int rc = server_command(L, &argv, &mpirun, err, errcap);
    if (rc != 0) {
        return rc;
    }
    if (s->tr_enabled && s->tr_kind == 1) {
        /* An external trainer (surge.torch) needs the study token, which
         * is random and in no file otherwise: write it, owner-only, before
         * server.json appears. */
        char tpath[OUT_MAX + 32];
        snprintf(tpath, sizeof tpath, "%s/external.token", L->out);
        int fd = open(tpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || write(fd, L->token, strlen(L->token)) !=
                          (ssize_t)strlen(L->token)) {
            snprintf(err, errcap, "%.900s: %s", tpath, strerror(errno));
            if (fd >= 0) {
                close(fd);
            }
            surge_strv_free(&argv);
            return -EIO;
        }
        close(fd);
    }
    rc = surge_server_proc_start(&L->server, argv.v, L->token, mpirun,
                                 json_path, log, s->server_start_timeout_s,
                                 &stop_signal, err, errcap);
    surge_strv_free(&argv);
    if (rc != 0) {
        return rc;
    }
    if (L->server.ranks != s->server_ranks) {
        /* E.g. mpirun started R processes that each run alone (an MPI the
         * server was not built with), or a server without ranks. */
        snprintf(err, errcap,
                 "the server at %s reports %ld rank(s) in server.json, the "
                 "study asks for server.ranks = %lld (see server.log)",
                 L->server.endpoint, L->server.ranks,
                 (long long)s->server_ranks);
        surge_server_proc_wait(&L->server, 0, s->kill_grace_s);
        return SURGE_ENOSERVER;
    }
    char ckeys[OUT_MAX + 32] = "";
    if (L->curve_dir[0] != '\0') {
        snprintf(ckeys, sizeof ckeys, "%s/client.key", L->curve_dir);
    }
    rc = surge_control_create(&L->ctl, L->server.endpoint, L->token, ckeys);
    if (rc != 0) {
        snprintf(err, errcap, "control channel to %s: %s", L->server.endpoint,
                 surge_strerror(rc));
        surge_server_proc_wait(&L->server, 0, s->kill_grace_s);
        return rc;
    }
    /* The first PING proves the server answers with our token. */
    double end = surge_now_s() + s->server_start_timeout_s;
    for (;;) {
        char msg[SURGE_MAX_REASON + 1];
        int32_t code = 0;
        rc = surge_control_call(L->ctl, SURGE_CTL_PING, -1,
                                (int)(s->server_ping_timeout_s * 1000), &code,
                                msg, sizeof msg);
        if (rc == 0 && code == 0) {
            parse_pong(msg, &L->pong);
            break;
        }
        if (rc == 0) {
            snprintf(err, errcap, "the server refused our PING: %s", msg);
            rc = code;
        } else if (stop_signal || surge_now_s() >= end ||
                   !surge_server_proc_alive(&L->server)) {
            snprintf(err, errcap, "the server at %s did not answer PING: %s",
                     L->server.endpoint, surge_strerror(rc));
        } else {
            surge_deploy_sleep(0.05);
            continue;
        }
        surge_control_destroy(&L->ctl);
        surge_server_proc_wait(&L->server, 0, s->kill_grace_s);
        return rc;
    }
    L->ping_misses = 0;
    L->next_ping = surge_now_s() + s->server_ping_interval_s;
    SURGE_LOG(SURGE_LOG_INFO, COMPONENT, "server pid %d at %s (%ld rank%s)",
              (int)L->server.pid, L->server.endpoint, L->server.ranks,
              L->server.ranks == 1 ? "" : "s");
    return 0;
}

/* ------------------------------------------------------------ runs */

static int
count_state(const struct launch *L, int state)
{
    int n = 0;
    for (size_t i = 0; i < L->nruns; i++) {
        n += L->runs[i].state == state;
    }
    return n;
}

static int
submit(struct launch *L, struct run *r)
{
    const surge_study *s = L->s;
    char rdir[MAX_PATH], log[MAX_PATH], err[512];
    surge_strv solver = {NULL, 0}, argv = {NULL, 0}, env = {NULL, 0};
    int rc;
    run_dir(L, r->sim, rdir, sizeof rdir);
    rc = surge_deploy_mkdir_p(rdir);
    if (rc != 0) {
        snprintf(r->why, sizeof r->why, "%.300s: %s", rdir, strerror(-rc));
        goto out;
    }
    log_path(L, r, log, sizeof log);
    surge_expand_ctx ctx = {r->sim, r->attempt, r->x, rdir, L->out, L->bindir};
    rc = surge_study_expand_command(s, &ctx, &solver, err, sizeof err);
    if (rc == 0) {
        rc = resolve_program(L, &solver);
    }
    if (rc == 0) {
        rc = L->ops->wrap(L->sched, solver.v, s->ranks, &argv);
    }
    if (rc != 0) {
        snprintf(r->why, sizeof r->why, "%s",
                 rc == SURGE_ECONFIG ? err : surge_strerror(rc));
        goto out;
    }
    /* The environment libsurge reads (include/surge/client.h). */
    char var[8192];
    size_t o = (size_t)snprintf(var, sizeof var, "SURGE_PARAMS=");
    for (size_t j = 0; j < s->nparams && o < sizeof var; j++) {
        o += (size_t)snprintf(var + o, sizeof var - o, "%s%.17g",
                              j > 0 ? "," : "", r->x[j]);
    }
    rc = surge_strv_push(&env, var);
    snprintf(var, sizeof var, "SURGE_ENDPOINT=%s", L->server.endpoint);
    rc = rc ? rc : surge_strv_push(&env, var);
    /* The run's key, not the study token: a run can join its own
     * simulation and no other (docs/protocol.md, "Trust"). */
    char key[SURGE_RUN_KEY_HEX + 1];
    int krc = surge_run_key(L->token, r->sim, key);
    snprintf(var, sizeof var, "SURGE_RUN_KEY=%s", key);
    explicit_bzero(key, sizeof key);
    rc = rc ? rc : krc ? krc : surge_strv_push(&env, var);
    /* Set even when empty: a SURGE_TOKEN or SURGE_CURVE_KEYS in our own
     * environment (left from a run by hand) must not reach the runs. */
    rc = rc ? rc : surge_strv_push(&env, "SURGE_TOKEN=");
    snprintf(var, sizeof var, "SURGE_CURVE_KEYS=%s%s", L->curve_dir,
             L->curve_dir[0] != '\0' ? "/client.key" : "");
    rc = rc ? rc : surge_strv_push(&env, var);
    snprintf(var, sizeof var, "SURGE_SIM_ID=%lld", (long long)r->sim);
    rc = rc ? rc : surge_strv_push(&env, var);
    snprintf(var, sizeof var, "SURGE_ATTEMPT=%lld", (long long)r->attempt);
    rc = rc ? rc : surge_strv_push(&env, var);
    snprintf(var, sizeof var, "SURGE_TIMEOUT_MS=%lld",
             (long long)(s->client_timeout_s * 1000));
    rc = rc ? rc : surge_strv_push(&env, var);
    if (s->steps > 0) {
        snprintf(var, sizeof var, "SURGE_STEPS=%lld", (long long)s->steps);
        rc = rc ? rc : surge_strv_push(&env, var);
    }
    if (rc != 0) {
        goto out;
    }
    surge_job_spec spec = {r->sim, r->attempt, argv.v, env.v, rdir, log};
    rc = L->ops->submit(L->sched, &spec, &r->job, err, sizeof err);
    if (rc != 0) {
        snprintf(r->why, sizeof r->why, "could not start: %s", err);
        goto out;
    }
    L->attempts++;
    r->state = RUN_RUNNING;
    r->started = surge_now_s();
    r->last_active = r->started;
    r->log_size = 0;
    r->server_seen = -1;
    r->timed_out = 0;
    r->server_lost = 0;
    SURGE_LOG(SURGE_LOG_DEBUG, COMPONENT, "sim %lld attempt %lld started",
              (long long)r->sim, (long long)r->attempt);
out:
    surge_strv_free(&solver);
    surge_strv_free(&argv);
    surge_strv_free(&env);
    return rc;
}

/* A job ended (or could not start): decide between done, retry, failed. */
static void
run_ended(struct launch *L, struct run *r, const surge_job_status *st,
          bool stopping)
{
    if (st != NULL && st->exit_code == 0 && !r->timed_out && !st->cancelled) {
        r->state = RUN_OK;
        SURGE_LOG(SURGE_LOG_INFO, COMPONENT,
                  "sim %lld: ok (attempt %lld, "
                  "%.1f s)",
                  (long long)r->sim, (long long)r->attempt,
                  surge_now_s() - r->started);
        return;
    }
    if (stopping) {
        r->state = RUN_CANCELLED;
        snprintf(r->why, sizeof r->why, "stopped by signal %d",
                 (int)stop_signal);
        return;
    }
    if (r->server_lost) {
        /* Not the run's fault: the server died under it. Run it again
         * without using up a retry. */
        r->attempt++;
        r->state = RUN_QUEUED;
        return;
    }
    if (st != NULL) {
        char log[MAX_PATH];
        log_path(L, r, log, sizeof log);
        if (r->timed_out) {
            snprintf(r->why, sizeof r->why, "silent for %g s, killed",
                     L->s->timeout_s);
        } else if (st->signal != 0) {
            snprintf(r->why, sizeof r->why, "killed by signal %d", st->signal);
        } else {
            snprintf(r->why, sizeof r->why, "exit status %d", st->exit_code);
        }
        SURGE_LOG(SURGE_LOG_WARN, COMPONENT,
                  "sim %lld attempt %lld failed: "
                  "%s (see %s)",
                  (long long)r->sim, (long long)r->attempt, r->why, log);
    } else {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "sim %lld attempt %lld: %s",
                  (long long)r->sim, (long long)r->attempt, r->why);
    }
    r->failures++;
    /* A program that went missing since the check at the start (deleted,
     * its folder unmounted) fails every retry the same way: not retried. */
    char gone[512];
    bool missing = st != NULL &&
                   run_program_check(L, r, gone, sizeof gone) == SURGE_ECONFIG;
    if (missing) {
        snprintf(r->why, sizeof r->why, "%s (not retried)", gone);
    }
    /* The server drops the run's incomplete steps; a retry may then say
     * hello again while the steps already assembled stay refused. */
    control(L, SURGE_CTL_SIM_FAILED, r->sim, NULL, 0);
    if (r->attempt <= L->s->retries && st != NULL && !missing) {
        control(L, SURGE_CTL_SIM_RETRY, r->sim, NULL, 0);
        r->attempt++;
        r->state = RUN_QUEUED;
        SURGE_LOG(SURGE_LOG_INFO, COMPONENT,
                  "sim %lld: retrying, attempt %lld of %lld", (long long)r->sim,
                  (long long)r->attempt, (long long)L->s->retries + 1);
    } else {
        r->state = RUN_FAILED;
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
                  "sim %lld: failed for good "
                  "after %lld attempt(s): %s",
                  (long long)r->sim, (long long)r->attempt, r->why);
    }
}

static void
poll_runs(struct launch *L, bool stopping)
{
    for (size_t i = 0; i < L->nruns; i++) {
        struct run *r = &L->runs[i];
        surge_job_status st;
        if (r->state != RUN_RUNNING) {
            continue;
        }
        if (L->ops->poll(L->sched, r->job, &st) != 0) {
            snprintf(r->why, sizeof r->why, "scheduler lost the job");
            r->state = RUN_FAILED;
            continue;
        }
        if (st.state == SURGE_JOB_PENDING) {
            /* Waiting in a batch queue is not silence: the solver timeout
             * counts from the moment the job starts running. */
            r->started = surge_now_s();
            r->last_active = r->started;
            continue;
        }
        if (st.state != SURGE_JOB_DONE) {
            continue;
        }
        L->ops->release(L->sched, r->job);
        if (st.exit_code != 0 && !stopping &&
            !surge_server_proc_alive(&L->server)) {
            /* The server ended too (a rank of it died and mpirun ended the
             * job, while we waited on a PING): the run failed because of
             * it. check_server() restarts the server below and the run
             * goes again without using up a retry. */
            r->server_lost = 1;
        }
        run_ended(L, r, &st, stopping);
        if (count_state(L, RUN_RUNNING) == 0 &&
            count_state(L, RUN_QUEUED) == 0) {
            L->t_runs_done = surge_now_s();
        }
    }
}

/* Kill runs that showed no sign of life for solver.timeout_s. */
static void
check_silence(struct launch *L, bool slices_moved)
{
    double now = surge_now_s();
    if (!(L->s->timeout_s > 0)) {
        return;
    }
    for (size_t i = 0; i < L->nruns; i++) {
        struct run *r = &L->runs[i];
        char log[MAX_PATH];
        if (r->state != RUN_RUNNING || r->timed_out) {
            continue;
        }
        if (L->status_ok && L->status_has_runs) {
            /* The server says when it last heard from the simulation:
             * exactly "sends nothing for its timeout". */
            r->last_active =
                r->server_seen > r->started ? r->server_seen : r->started;
        } else {
            /* Without the monitoring endpoint: any output in the run's log,
             * or any slice arriving at all, counts as a sign of life. */
            log_path(L, r, log, sizeof log);
            long long size = file_size(log);
            if (size != r->log_size || slices_moved) {
                r->log_size = size;
                r->last_active = now;
                continue;
            }
        }
        if (now - r->last_active > L->s->timeout_s) {
            SURGE_LOG(SURGE_LOG_WARN, COMPONENT,
                      "sim %lld attempt %lld: silent for %.0f s, killing it",
                      (long long)r->sim, (long long)r->attempt,
                      now - r->last_active);
            r->timed_out = 1;
            L->ops->cancel(L->sched, r->job, L->s->kill_grace_s);
        }
    }
}

/* ------------------------------------------------------------ health */

/* The server died or stopped answering: restart it (new endpoint), and run
 * again what was running against the old one. Returns 0 when a server is
 * up again, else gives up on it. */
static int
restart_server(struct launch *L, const char *why)
{
    char err[512];
    SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "server %s", why);
    surge_control_destroy(&L->ctl);
    surge_server_proc_wait(&L->server, 0, L->s->kill_grace_s);
    /* What the dead server assembled beyond the checkpoint it resumed from
     * (its own counts, from its last PING); how much of it the next
     * checkpoint holds is known once the new server is chosen below. */
    uint64_t dead_assembled = L->pong.valid ? L->pong.assembled : 0;
    uint64_t base_assembled = resumed_assembled(L);
    L->status_ok = 0;
    memset(&L->pong, 0, sizeof L->pong);
    memset(&L->pong_prev, 0, sizeof L->pong_prev);
    for (size_t i = 0; i < L->nruns; i++) {
        struct run *r = &L->runs[i];
        if (r->state == RUN_RUNNING) {
            r->server_lost = 1;
            L->ops->cancel(L->sched, r->job, L->s->kill_grace_s);
        }
    }
    if (L->restarts >= L->s->server_restarts) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
                  "no server restarts left (server.restarts = %lld); "
                  "stopping the study",
                  (long long)L->s->server_restarts);
        L->server_failed = 1;
        return -1;
    }
    L->restarts++;
    int rc = start_server(L, err, sizeof err);
    if (rc != 0) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "server restart failed: %s", err);
        L->server_failed = 1;
        return -1;
    }
    SURGE_LOG(SURGE_LOG_WARN, COMPONENT, "server restarted (%d of %lld)",
              L->restarts, (long long)L->s->server_restarts);
    uint64_t kept = resumed_assembled(L);
    kept = kept > base_assembled ? kept - base_assembled : 0;
    if (dead_assembled > kept) {
        L->lost_assembled += dead_assembled - kept;
    }
    bool *held = calloc(L->nruns > 0 ? L->nruns : 1, sizeof *held);
    if (L->s->tr_enabled && held != NULL &&
        finished_runs(L, L->resumed, held) == 0) {
        /* A run that ended fine while its samples were only in the dead
         * server (after its last checkpoint) is run again: its steps are
         * not in the new server's record, so nothing is trained on twice,
         * and nothing the study produced is lost. */
        for (size_t i = 0; i < L->nruns; i++) {
            struct run *r = &L->runs[i];
            if (r->state == RUN_OK && !held[i]) {
                r->attempt++;
                r->state = RUN_QUEUED;
                L->rerun_after_restart++;
                SURGE_LOG(SURGE_LOG_INFO, COMPONENT,
                          "sim %lld: run again (its samples died with the "
                          "server)",
                          (long long)r->sim);
            }
        }
    } else if (L->s->tr_enabled) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
                  "out of memory: runs whose samples died with the server "
                  "are not run again");
    }
    free(held);
    return 0;
}

static double
jnum(json_t *o, const char *key, double dflt)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : dflt;
}

/* GET /api/v1/status from the server's monitoring endpoint: ingest rate,
 * trainer progress, and when each simulation was last heard from (for the
 * silence timeout). Bounded by server.ping_timeout_s; a failure only means
 * the older numbers stay. */
static void
fetch_status(struct launch *L)
{
    char url[SURGE_SERVER_PROC_MAX_ENDPOINT + 32];
    struct surge_http_response resp;
    if (L->server.http[0] == '\0') {
        L->status_ok = 0;
        return;
    }
    snprintf(url, sizeof url, "%s/api/v1/status", L->server.http);
    memset(&resp, 0, sizeof resp);
    int rc =
        surge_http_get(url, L->token, (int)(L->s->server_ping_timeout_s * 1000),
                       STATS_MAX_BYTES, &resp);
    if (rc != 0 || resp.status != 200) {
        if (L->status_ok) {
            SURGE_LOG(SURGE_LOG_DEBUG, COMPONENT, "%s: %s (HTTP %d)", url,
                      rc != 0 ? surge_strerror(rc) : "not ok", resp.status);
        }
        L->status_ok = 0;
        surge_http_response_fini(&resp);
        return;
    }
    json_error_t jerr;
    json_t *st = json_loads(resp.body, 0, &jerr);
    surge_http_response_fini(&resp);
    if (!json_is_object(st)) {
        json_decref(st);
        L->status_ok = 0;
        return;
    }
    double now = surge_now_s();
    L->status_ok = 1;
    L->status_rate = jnum(json_object_get(st, "rates"), "samples_in_per_s", -1);
    json_t *tr = json_object_get(st, "trainer");
    L->trainer_step = (int64_t)jnum(tr, "step", -1);
    L->trainer_loss = jnum(tr, "loss", NAN);
    L->trainer_rate =
        jnum(json_object_get(st, "rates"), "samples_trained_per_s", -1);
    json_t *runs = json_object_get(st, "runs");
    L->status_has_runs = json_is_array(runs);
    size_t i;
    json_t *o;
    json_array_foreach(runs, i, o)
    {
        double sim = jnum(o, "sim", -1);
        double seen = jnum(o, "last_seen_s", -1);
        if (sim < 0 || sim >= (double)L->nruns || seen < 0) {
            continue;
        }
        struct run *r = &L->runs[(size_t)sim];
        if (r->state == RUN_RUNNING && now - seen > r->server_seen) {
            r->server_seen = now - seen;
        }
    }
    json_decref(st);
}

/* PING at the interval; returns whether the slice counter moved. */
static bool
check_server(struct launch *L)
{
    bool moved = false;
    if (!surge_server_proc_alive(&L->server)) {
        char why[128];
        snprintf(why, sizeof why, "exited (status %d, signal %d)",
                 L->server.exit_code, L->server.signal);
        restart_server(L, why);
        return false;
    }
    double now = surge_now_s();
    if (now < L->next_ping) {
        return false;
    }
    L->next_ping = now + L->s->server_ping_interval_s;
    char msg[SURGE_MAX_REASON + 1];
    int rc = control(L, SURGE_CTL_PING, -1, msg, sizeof msg);
    if (rc == -EINTR) {
        return false;
    }
    if (rc != 0) {
        if (++L->ping_misses >= L->s->server_ping_failures) {
            char why[128];
            snprintf(why, sizeof why, "did not answer %d PINGs",
                     L->ping_misses);
            restart_server(L, why);
        }
        return false;
    }
    L->ping_misses = 0;
    struct pong p;
    parse_pong(msg, &p);
    moved = p.slices != L->pong.slices;
    L->pong = p;
    if (L->pong_prev_t > 0 && now > L->pong_prev_t) {
        double inst = (double)(p.assembled - L->pong_prev.assembled) /
                      (now - L->pong_prev_t);
        L->rate = L->rate > 0 ? 0.5 * L->rate + 0.5 * inst : inst;
    }
    L->pong_prev = p;
    L->pong_prev_t = now;
    fetch_status(L);
    return moved;
}

/* ------------------------------------------------------------ progress */

static void
progress(struct launch *L, bool force)
{
    double now = surge_now_s();
    if (L->quiet || (!force && now < L->next_progress)) {
        return;
    }
    L->next_progress = now + (L->tty ? 0.5 : L->s->progress_interval_s);
    char line[320], eta[32] = "", train[96] = "";
    int done = count_state(L, RUN_OK), failed = count_state(L, RUN_FAILED);
    int left = (int)L->nruns - done - failed - count_state(L, RUN_CANCELLED);
    if (done + failed > 0 && left > 0) {
        double t = (now - L->t0) / (double)(done + failed) * (double)left;
        snprintf(eta, sizeof eta, " | ETA %.0fs", t);
    }
    if (L->status_ok && L->trainer_step >= 0) {
        if (isfinite(L->trainer_loss) && L->trainer_rate >= 0) {
            snprintf(train, sizeof train,
                     " | step %" PRId64 " loss %.4g %.0f samples/s",
                     L->trainer_step, L->trainer_loss, L->trainer_rate);
        } else if (isfinite(L->trainer_loss)) {
            snprintf(train, sizeof train, " | step %" PRId64 " loss %.4g",
                     L->trainer_step, L->trainer_loss);
        } else {
            snprintf(train, sizeof train, " | step %" PRId64, L->trainer_step);
        }
    }
    double rate =
        L->status_ok && L->status_rate >= 0 ? L->status_rate : L->rate;
    snprintf(line, sizeof line,
             "[%6.1fs] runs: %d done, %d running, %d queued, %d failed | "
             "samples: %" PRIu64 " (%.1f/s)%s%s",
             now - L->t0, done, count_state(L, RUN_RUNNING),
             count_state(L, RUN_QUEUED), failed,
             L->pong.assembled + resumed_assembled(L), rate, train, eta);
    if (L->tty) {
        fprintf(stderr, "\r\033[K%s", line);
        L->progress_drawn = 1;
    } else {
        fprintf(stderr, "surge launch: %s\n", line);
    }
    fflush(stderr);
}

/* After the last run: the server trains on (trainer.steps_after_end, or
 * until the reservoir is drained) and then exits. One line per tick like
 * the runs' progress, so the study does not look stalled: the trainer's
 * step (of the target when steps_after_end is set), its loss and rate, an
 * ETA from its step rate, and the time left before the server's own cap
 * on this phase (0.8 x server.stop_timeout_s, see start_server), which
 * falls at t_cap. */
static void
training_progress(struct launch *L, int64_t step0, double t_cap, double cap_s,
                  bool force)
{
    double now = surge_now_s();
    if (L->quiet || (!force && now < L->next_progress)) {
        return;
    }
    L->next_progress = now + (L->tty ? 0.5 : L->s->progress_interval_s);
    char line[320], what[128] = "", eta[48] = "";
    int64_t target = L->s->tr_steps_after_end > 0 && step0 >= 0
                         ? step0 + L->s->tr_steps_after_end
                         : -1;
    if (!L->status_ok || L->trainer_step < 0) {
        snprintf(what, sizeof what, "waiting for the server");
    } else if (target > 0) {
        snprintf(what, sizeof what, "step %" PRId64 " of %" PRId64,
                 L->trainer_step, target);
        double dt = now - L->t_runs_done;
        int64_t done = L->trainer_step - step0;
        if (done > 0 && dt > 0 && target > L->trainer_step) {
            snprintf(eta, sizeof eta, " | ETA %.0fs",
                     dt / (double)done * (double)(target - L->trainer_step));
        }
    } else {
        snprintf(what, sizeof what,
                 "step %" PRId64 " (until the reservoir "
                 "is drained)",
                 L->trainer_step);
    }
    char loss[64] = "";
    if (L->status_ok && isfinite(L->trainer_loss)) {
        snprintf(loss, sizeof loss, " loss %.4g", L->trainer_loss);
    }
    snprintf(line, sizeof line,
             "[%6.1fs] runs: all ended | training after the runs: %s%s%s | "
             "cut in %.0fs (0.8 x server.stop_timeout_s = %.3gs)",
             now - L->t0, what, loss, eta, fmax(0.0, t_cap - now), cap_s);
    if (L->tty) {
        fprintf(stderr, "\r\033[K%s", line);
        L->progress_drawn = 1;
    } else {
        fprintf(stderr, "surge launch: %s\n", line);
    }
    fflush(stderr);
}

static void
progress_clear(struct launch *L)
{
    if (L->tty && L->progress_drawn) {
        fprintf(stderr, "\r\033[K");
        fflush(stderr);
        L->progress_drawn = 0;
    }
}

/* On a terminal: clear the progress line, write the event, and let the
 * next tick draw the progress line again below it. One line per event, in
 * the format of common/log.c's default handler. */
static struct launch *log_launch;

static void
tty_log(int level, const char *component, const char *message, void *arg)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    struct timespec ts;
    struct tm tm;
    char stamp[32];
    (void)arg;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    if (log_launch != NULL) {
        progress_clear(log_launch);
    }
    fprintf(stderr, "%s.%03ldZ %s %s %s\n", stamp, ts.tv_nsec / 1000000L,
            level >= 0 && level < 4 ? names[level] : "?", component, message);
    fflush(stderr);
    if (log_launch != NULL) {
        log_launch->next_progress = 0;
    }
}

/* ------------------------------------------------------------ summary */

static uint64_t
jget(json_t *root, const char *path)
{
    json_t *cur = root;
    char part[64];
    const char *c = path;
    while (cur != NULL && *c != '\0') {
        size_t n = strcspn(c, ".");
        snprintf(part, sizeof part, "%.*s", (int)n, c);
        cur = json_object_get(cur, part);
        c += n;
        if (*c == '.') {
            c++;
        }
    }
    return json_is_integer(cur) ? (uint64_t)json_integer_value(cur) : 0;
}

static uint64_t
jsum(json_t *obj)
{
    uint64_t sum = 0;
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        if (json_is_integer(v)) {
            sum += (uint64_t)json_integer_value(v);
        }
    }
    return sum;
}

/* Slices the clients said they sent (the sum of their bye counts), when
 * the server reports it as slices.sent_by_clients; null otherwise. A run
 * that died sends no bye, so this covers the runs that closed cleanly. */
static json_t *
sent_slices(json_t *stats)
{
    json_t *v =
        json_object_get(json_object_get(stats, "slices"), "sent_by_clients");
    return json_is_integer(v) ? v : json_null();
}

static json_t *read_out_json(struct launch *L, const char *name);

/* A reason the study failed besides its runs, for the summary. */
static void
add_error(struct launch *L, const char *fmt, const char *arg)
{
    for (size_t i = 0; i < sizeof L->errors / sizeof L->errors[0]; i++) {
        if (L->errors[i][0] == '\0') {
            snprintf(L->errors[i], sizeof L->errors[i], fmt, arg);
            return;
        }
    }
}

static int
write_summary(struct launch *L, json_t *raw_stats, double wall, int interrupted,
              int *counts_ok)
{
    const surge_study *s = L->s;
    json_t *j = json_object();
    /* The trainer's final figures (server/train.c writes trainer.json). */
    /* The C trainer writes trainer.json; an external trainer (trainer.kind
     * external) saves its model itself. */
    int internal = s->tr_enabled && s->tr_kind == 0;
    json_t *trainer = internal ? read_out_json(L, "trainer.json") : NULL;
    /* A study that trains exists to produce its model. */
    if (internal && !interrupted) {
        json_t *model = json_object_get(trainer, "model");
        const char *why =
            json_string_value(json_object_get(trainer, "model_error"));
        if (!json_is_string(model)) {
            add_error(L, "the model was not written: %s",
                      why != NULL       ? why
                      : trainer == NULL ? "no trainer.json (see server.log)"
                                        : "see server.log");
        }
    }
    /* The counts of the whole study: the last server's plus those it
     * carried over from its checkpoint (the earlier servers' share; with
     * R ranks both are the sums over the ranks, rank 0's trainer.json
     * carrying every rank's share, docs/trainer.md). */
    json_t *stats = raw_stats != NULL ? json_deep_copy(raw_stats) : NULL;
    int external = s->tr_enabled && s->tr_kind == 1;
    json_t *carried =
        external ? json_object_get(json_object_get(raw_stats, "external"),
                                   "carried_counts")
                 : json_object_get(trainer, "carried_counts");
    if (stats != NULL && json_is_object(carried) &&
        surge_train_counts_add(stats, carried) != 0) {
        add_error(L, "%s",
                  "trainer.json: carried_counts do not fit the "
                  "server's counters");
    }
    json_t *runs = json_object();
    json_t *failed = json_array();
    int64_t retried = 0;
    for (size_t i = 0; i < L->nruns; i++) {
        const struct run *r = &L->runs[i];
        retried += r->failures > 0 && r->state == RUN_OK;
        if (r->state == RUN_FAILED || r->state == RUN_CANCELLED) {
            json_array_append_new(
                failed,
                json_pack("{s:I,s:I,s:s,s:s}", "sim", (json_int_t)r->sim,
                          "attempts", (json_int_t)r->attempt, "state",
                          r->state == RUN_FAILED ? "failed" : "cancelled",
                          "reason", r->why));
        }
    }
    json_object_set_new(runs, "total", json_integer((json_int_t)L->nruns));
    json_object_set_new(runs, "ok", json_integer(count_state(L, RUN_OK)));
    json_object_set_new(runs, "failed",
                        json_integer(count_state(L, RUN_FAILED)));
    json_object_set_new(runs, "cancelled",
                        json_integer(count_state(L, RUN_CANCELLED) +
                                     count_state(L, RUN_QUEUED) +
                                     count_state(L, RUN_RUNNING)));
    json_object_set_new(runs, "attempts", json_integer(L->attempts));
    json_object_set_new(runs, "retried_ok", json_integer(retried));
    json_object_set_new(runs, "resumed_ok", json_integer(L->resumed_ok));
    json_object_set_new(runs, "rerun_after_restart",
                        json_integer(L->rerun_after_restart));
    json_object_set_new(runs, "not_ok", failed);

    /* Samples, from the server's own counters (server-stats.json). */
    json_t *samples = json_object();
    int ok = 0;
    /* The rates are over the time the runs took (from the study's start
     * to the last run's end), not the wall time, which adds the training
     * after the runs: the table states that span next to them. */
    double rate = 0, mbps = 0, t_ingest = 0;
    if (stats != NULL) {
        uint64_t started = jget(stats, "steps.started");
        uint64_t assembled = jget(stats, "steps.assembled");
        uint64_t in_progress = jget(stats, "steps.in_progress");
        uint64_t train = jget(stats, "samples.train");
        uint64_t validation = jget(stats, "samples.validation");
        uint64_t pending = jget(stats, "samples.pending");
        uint64_t consumed = jget(stats, "consumer.samples");
        uint64_t in_store = jget(stats, "store.occupancy");
        uint64_t bytes = jget(stats, "slices.bytes");
        json_t *sd =
            json_object_get(json_object_get(stats, "steps"), "dropped");
        json_t *pd =
            json_object_get(json_object_get(stats, "samples"), "dropped");
        json_t *dropped = json_object();
        uint64_t ndropped = 0;
        const char *k;
        json_t *v;
        json_object_foreach(sd, k, v)
        {
            if (json_is_integer(v) && json_integer_value(v) > 0) {
                json_object_set(dropped, k, v);
            }
        }
        json_object_foreach(pd, k, v)
        {
            if (json_is_integer(v) && json_integer_value(v) > 0) {
                json_object_set(dropped, k, v);
            }
        }
        ndropped = jsum(sd) + jsum(pd);
        /* received = stored/consumed + dropped with a reason: */
        ok = started == assembled + jsum(sd) + in_progress &&
             assembled == train + validation + jsum(pd) + pending &&
             in_progress == 0 && pending == 0;
        if (trainer != NULL) {
            /* Rows served count a sample each time it is drawn (the
             * reservoir policy reuses samples), so the trainer reports
             * distinct samples: each training sample was trained on (used
             * at least once), discarded (first served after training
             * stopped) or never served. */
            json_t *tc = json_object_get(trainer, "counts");
            uint64_t trained = jget(tc, "samples_trained");
            uint64_t discarded = jget(tc, "samples_discarded");
            uint64_t unserved = jget(tc, "samples_unserved");
            json_object_set_new(samples, "trained_on", json_integer(trained));
            json_object_set_new(samples, "discarded_after_training",
                                json_integer(discarded));
            json_object_set_new(samples, "never_served",
                                json_integer(unserved));
            json_object_set_new(
                samples, "identity",
                json_string("received = trained_on + discarded_after_training"
                            " + never_served + validation + dropped"));
            /* The server's counts and the trainer's both carry on from the
             * checkpoint across restarts: the identity holds for the
             * whole study, and is checked as stated. */
            ok = ok && train == trained + discarded + unserved &&
                 started ==
                     trained + discarded + unserved + validation + ndropped;
        } else if (external) {
            /* Rows count a sample each time it is served (policies reuse
             * samples): every training sample is in the store or left it
             * (evicted or retired), every row taken was served to a
             * consumer, and every row served was acked by it or counted
             * unacked (it died, left or timed out holding it). With the
             * counts of the servers before a restart (carried). */
            uint64_t served = jget(stats, "external.rows_served");
            ok = ok &&
                 train == in_store + jget(stats, "store.evicted") +
                              jget(stats, "store.retired") &&
                 jget(stats, "store.taken") == served &&
                 served == jget(stats, "external.rows_acked") +
                               jget(stats, "external.rows_unacked");
            json_object_set_new(
                samples, "identity",
                json_string("train = in_store + evicted + retired; taken = "
                            "rows_served = rows_acked + rows_unacked"));
            json_object_set_new(samples, "rows_served",
                                json_integer((json_int_t)served));
        } else {
            ok = ok && train == consumed + in_store;
        }
        /* Every rank of every run said bye on a first attempt: what the
         * clients say they sent is what the server received. A failed
         * attempt sends no bye, so the check stops there. */
        json_t *sent = sent_slices(stats);
        if (json_is_integer(sent) && L->attempts == (int64_t)L->nruns &&
            count_state(L, RUN_OK) == (int)L->nruns && L->restarts == 0) {
            ok = ok && (uint64_t)json_integer_value(sent) ==
                           jget(stats, "slices.received");
        }
        json_t *stats_ok = json_object_get(stats, "counts_add_up");
        if (json_is_boolean(stats_ok) && !json_is_true(stats_ok)) {
            ok = 0;
        }
        json_object_set_new(samples, "received", json_integer(started));
        json_object_set_new(samples, "assembled", json_integer(assembled));
        json_object_set_new(samples, "train", json_integer(train));
        json_object_set_new(samples, "validation", json_integer(validation));
        json_object_set_new(samples, "consumed", json_integer(consumed));
        json_object_set_new(samples, "in_store", json_integer(in_store));
        json_object_set_new(samples, "dropped", json_integer(ndropped));
        json_object_set_new(samples, "dropped_by_reason", dropped);
        json_object_set_new(samples, "lost_with_dead_servers",
                            json_integer((json_int_t)L->lost_assembled));
        /* The held-out set: whole runs, reservoir-sampled over the study
         * once the validation store is full (server/ingest.c). */
        json_object_set_new(
            j, "validation_set",
            json_pack("{s:I,s:I,s:I,s:I,s:I}", "runs_held_out",
                      (json_int_t)jget(stats, "sims.validation_runs"),
                      "runs_kept",
                      (json_int_t)jget(stats, "sims.validation_runs_kept"),
                      "samples_kept",
                      (json_int_t)(validation -
                                   jget(stats, "samples.validation_evicted")),
                      "samples_evicted",
                      (json_int_t)jget(stats, "samples.validation_evicted"),
                      "samples_not_sampled",
                      (json_int_t)jget(
                          stats, "samples.dropped.validation_not_sampled")));
        json_object_set_new(
            samples, "carried_from_checkpoint",
            json_integer((json_int_t)jget(carried, "steps.assembled")));
        json_object_set_new(
            j, "slices",
            json_pack(
                "{s:O,s:I,s:I,s:I,s:O}", "sent", sent_slices(stats), "received",
                (json_int_t)jget(stats, "slices.received"), "accepted",
                (json_int_t)jget(stats, "slices.accepted"), "bytes",
                (json_int_t)bytes, "dropped",
                json_object_get(json_object_get(stats, "slices"), "dropped")));
        t_ingest = L->t_runs_done > 0 ? L->t_runs_done - L->t0 : wall;
        rate = t_ingest > 0 ? (double)assembled / t_ingest : 0;
        mbps = t_ingest > 0 ? (double)bytes / t_ingest / 1e6 : 0;
        json_object_set_new(j, "bytes", json_integer((json_int_t)bytes));
        json_object_set_new(j, "ingest_s", json_real(t_ingest));
    }
    *counts_ok = ok;
    json_object_set_new(j, "study", json_string(s->name));
    json_object_set_new(j, "output_dir", json_string(L->out));
    json_object_set_new(j, "interrupted",
                        interrupted ? json_integer(interrupted) : json_false());
    json_object_set_new(j, "wall_s", json_real(wall));
    json_object_set_new(j, "runs", runs);
    json_object_set_new(j, "samples", samples);
    json_object_set_new(j, "ingest_samples_per_s", json_real(rate));
    json_object_set_new(j, "ingest_mb_per_s", json_real(mbps));
    json_object_set_new(j, "counts_add_up", json_boolean(ok));
    json_object_set_new(j, "server",
                        json_pack("{s:I,s:i,s:b,s:i,s:i}", "ranks",
                                  (json_int_t)L->s->server_ranks, "restarts",
                                  L->restarts, "failed", L->server_failed,
                                  "exit_code", L->server.exit_code, "signal",
                                  L->server.signal));
    if (raw_stats != NULL) {
        json_object_set(json_object_get(j, "server"), "stats", raw_stats);
    }
    json_t *errors = json_array();
    for (size_t i = 0; i < sizeof L->errors / sizeof L->errors[0]; i++) {
        if (L->errors[i][0] != '\0') {
            json_array_append_new(errors, json_string(L->errors[i]));
        }
    }
    json_object_set_new(j, "errors", errors);
    if (trainer != NULL) {
        json_object_set(j, "trainer", trainer);
    }
    /* Present the keys in reading order: what, how it went, details. */
    static const char *const order[] = {"study",
                                        "output_dir",
                                        "interrupted",
                                        "wall_s",
                                        "errors",
                                        "counts_add_up",
                                        "runs",
                                        "samples",
                                        "validation_set",
                                        "slices",
                                        "bytes",
                                        "ingest_s",
                                        "ingest_samples_per_s",
                                        "ingest_mb_per_s",
                                        "trainer",
                                        "server"};
    json_t *ordered = json_object();
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        json_t *v = json_object_get(j, order[i]);
        if (v != NULL) {
            json_object_set(ordered, order[i], v);
        }
    }
    json_decref(j);
    j = ordered;
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    int rc = text != NULL ? write_text_atomic(L->out, "summary.json", text)
                          : -ENOMEM;
    free(text);

    /* The table. */
    printf("study %s: %s\n", s->name, L->out);
    printf("  runs      %zu total, %d ok, %d failed, %d cancelled "
           "(%" PRId64 " attempts, %" PRId64 " ok after a retry)\n",
           L->nruns, count_state(L, RUN_OK), count_state(L, RUN_FAILED),
           (int)json_integer_value(json_object_get(runs, "cancelled")),
           L->attempts, retried);
    if (stats != NULL) {
        printf(
            "  samples   %" PRIu64 " received, %" PRIu64 " assembled, %" PRIu64
            " train, %" PRIu64 " validation, %" PRIu64 " dropped\n",
            jget(stats, "steps.started"), jget(stats, "steps.assembled"),
            jget(stats, "samples.train"), jget(stats, "samples.validation"),
            (uint64_t)json_integer_value(json_object_get(samples, "dropped")));
        json_t *vs = json_object_get(j, "validation_set");
        if (jget(vs, "runs_kept") < jget(vs, "runs_held_out")) {
            printf("  NOTE      the validation store (server.validation_bytes) "
                   "filled: it keeps %" PRIu64 " of the %" PRIu64
                   " held-out runs,\n"
                   "            whole runs sampled uniformly over the study "
                   "(%" PRIu64 " samples evicted, %" PRIu64 " not sampled)\n",
                   jget(vs, "runs_kept"), jget(vs, "runs_held_out"),
                   jget(vs, "samples_evicted"),
                   jget(vs, "samples_not_sampled"));
        }
        printf("  data      %.1f MB in %.1f s of runs (study %.1f s): "
               "%.1f samples/s, %.2f MB/s\n",
               (double)jget(stats, "slices.bytes") / 1e6, t_ingest, wall, rate,
               mbps);
    } else {
        printf("  samples   unknown (no server-stats.json)\n");
    }
    if (trainer != NULL) {
        json_t *v = json_object_get(trainer, "validation");
        json_t *rel = json_object_get(v, "rel_l2");
        json_t *rel0 = json_object_get(v, "untrained_rel_l2");
        json_t *mse = json_object_get(v, "mse");
        json_t *loss = json_object_get(trainer, "final_loss");
        json_t *model = json_object_get(trainer, "model");
        printf("  trainer   %" PRIu64 " steps, %" PRIu64
               " samples trained on (%" PRIu64 " rows), %.0f samples/s, "
               "final loss %.4g (%s)\n",
               jget(trainer, "steps"), jget(trainer, "samples_trained"),
               jget(trainer, "rows_trained"),
               json_number_value(json_object_get(trainer, "samples_per_s")),
               json_is_number(loss) ? json_number_value(loss) : NAN,
               json_string_value(json_object_get(trainer, "stop_reason"))
                   ? json_string_value(json_object_get(trainer, "stop_reason"))
                   : "?");
        if (json_is_number(rel)) {
            printf("  validation %" PRIu64 " samples: relative L2 %.4f "
                   "(untrained %.4f), MSE %.4g\n",
                   jget(v, "samples"), json_number_value(rel),
                   json_is_number(rel0) ? json_number_value(rel0) : NAN,
                   json_is_number(mse) ? json_number_value(mse) : NAN);
        } else {
            printf("  validation none (no held-out samples)\n");
        }
        const char *why =
            json_string_value(json_object_get(trainer, "stop_reason"));
        if (why != NULL && strcmp(why, "server_stop") == 0 && !interrupted) {
            printf("  WARNING   training was cut by the server's stop timeout "
                   "(0.8 x server.stop_timeout_s = %.3g s) before its own "
                   "end;\n            raise server.stop_timeout_s or lower "
                   "trainer.steps_after_end\n",
                   s->server_stop_timeout_s * 0.8);
        }
        printf("  model     %s\n", json_is_string(model)
                                       ? json_string_value(model)
                                       : "not written");
    } else if (s->tr_enabled && s->tr_kind == 0) {
        printf("  trainer   no trainer.json (see %s/server.log)\n", L->out);
    }
    if (s->server_ranks > 1) {
        printf("  server    %lld ranks, %d restart(s) of all of them%s\n",
               (long long)s->server_ranks, L->restarts,
               L->server_failed ? ", failed" : "");
    } else {
        printf("  server    %d restart(s)%s\n", L->restarts,
               L->server_failed ? ", failed" : "");
    }
    printf("  counts    %s\n", ok ? "add up" : "DO NOT add up");
    for (size_t i = 0; i < sizeof L->errors / sizeof L->errors[0]; i++) {
        if (L->errors[i][0] != '\0') {
            printf("  FAILED    %s\n", L->errors[i]);
        }
    }
    printf("  summary   %s/summary.json\n", L->out);
    fflush(stdout);
    json_decref(j);
    json_decref(trainer);
    json_decref(stats);
    return rc;
}

static json_t *
read_stats(struct launch *L)
{
    return read_out_json(L, "server-stats.json");
}

/* A JSON object file of the output folder, or NULL. */
static json_t *
read_out_json(struct launch *L, const char *name)
{
    char path[MAX_PATH], *text = NULL;
    size_t len;
    snprintf(path, sizeof path, "%s/%s", L->out, name);
    if (surge_deploy_read_file(path, STATS_MAX_BYTES, &text, &len) != 0) {
        return NULL;
    }
    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    free(text);
    if (j != NULL && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

/* ------------------------------------------------------------ main */

static int
parse_args(int argc, char **argv, const char **study, const char **outdir,
           int *dry_run, int *quiet, int *resume)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 1;
        } else if (strcmp(a, "--dry-run") == 0) {
            *dry_run = 1;
        } else if (strcmp(a, "--quiet") == 0) {
            *quiet = 1;
        } else if (strcmp(a, "--resume") == 0) {
            *resume = 1;
        } else if (strcmp(a, "--output-dir") == 0) {
            if (i + 1 >= argc || argv[i + 1][0] == '\0') {
                fprintf(stderr, "surge launch: --output-dir needs a folder\n");
                return 2;
            }
            *outdir = argv[++i];
        } else if (strncmp(a, "--output-dir=", 13) == 0 && a[13] != '\0') {
            *outdir = a + 13;
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "surge launch: unknown option '%s'\n\n", a);
            usage(stderr);
            return 2;
        } else if (*study != NULL) {
            fprintf(stderr,
                    "surge launch: one study file only ('%s' and "
                    "'%s')\n",
                    *study, a);
            return 2;
        } else {
            *study = a;
        }
    }
    if (*study == NULL) {
        usage(stderr);
        return 2;
    }
    return 0;
}

/* Whether name is a rank r > 0's file of base: the trainer's form
 * (rank_name: "checkpoint.rank1.safetensors", "trainer.rank1.json") or,
 * with at_end, the server's ("checksums.log.rank1", server/server.c
 * rank_path); either followed by the trainer's ".prev" or ".corrupt". */
static bool
is_rank_file(const char *name, const char *base, bool at_end)
{
    size_t stem = at_end ? strlen(base) : strcspn(base, ".");
    if (strncmp(name, base, stem) != 0 || strncmp(name + stem, ".rank", 5)) {
        return false;
    }
    const char *c = name + stem + 5;
    if (*c < '1' || *c > '9') {
        return false;
    }
    while (*c >= '0' && *c <= '9') {
        c++;
    }
    size_t tail = strlen(base + stem);
    if (strncmp(c, base + stem, tail) != 0) {
        return false;
    }
    c += tail;
    return *c == '\0' || strcmp(c, ".prev") == 0 || strcmp(c, ".corrupt") == 0;
}

/* Remove the files in the output folder whose name holds ".tmp." (what
 * an atomic write (checkpoint, summary, ...) killed half way left) and,
 * with ranks, the per-rank files of the server's ranks r > 0 (their
 * checkpoints and trainer reports, which a later study must not resume
 * from or read, and their checksum logs, appended to). */
static int
remove_leftovers(const struct launch *L, bool ranks)
{
    static const struct {
        const char *base;
        bool at_end;
    } per_rank[] = {{CHECKPOINT_FILE, false},
                    {EXTERNAL_CHECKPOINT_FILE, false},
                    {"trainer.json", false},
                    {"checksums.log", true}};
    DIR *d = opendir(L->out);
    if (d == NULL) {
        return -errno;
    }
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL) {
        bool stale = strstr(e->d_name, ".tmp.") != NULL;
        for (size_t i = 0;
             ranks && !stale && i < sizeof per_rank / sizeof per_rank[0]; i++) {
            stale =
                is_rank_file(e->d_name, per_rank[i].base, per_rank[i].at_end);
        }
        if (!stale) {
            continue;
        }
        char p[MAX_PATH];
        snprintf(p, sizeof p, "%s/%s", L->out, e->d_name);
        if (unlink(p) != 0 && errno != ENOENT && rc == 0) {
            rc = -errno;
            fprintf(stderr, "surge launch: %s: %s\n", p, strerror(errno));
        }
    }
    closedir(d);
    return rc;
}

/* A fresh study: nothing an earlier study left in the folder may be
 * mistaken for this one's (results, logs appended to, runs/<sim> folders)
 * or resumed from (checkpoints); then a new study id. 0 or an exit
 * status. */
static int
fresh_folder(struct launch *L)
{
    static const char *const stale[] = {"server.json",
                                        "server-stats.json",
                                        "summary.json",
                                        "checksums.log",
                                        "trainer.json",
                                        "model.safetensors",
                                        "server.log",
                                        CHECKPOINT_FILE,
                                        CHECKPOINT_FILE ".prev",
                                        CHECKPOINT_FILE ".corrupt",
                                        EXTERNAL_CHECKPOINT_FILE,
                                        "external.token",
                                        "runs",
                                        STUDY_ID_FILE};
    for (size_t i = 0; i < sizeof stale / sizeof stale[0]; i++) {
        char p[MAX_PATH];
        snprintf(p, sizeof p, "%s/%s", L->out, stale[i]);
        int rc = surge_deploy_rm_rf(p);
        if (rc != 0) {
            fprintf(stderr, "surge launch: %s: %s\n", p, strerror(-rc));
            return 1;
        }
    }
    if (remove_leftovers(L, true) != 0) {
        return 1;
    }
    int rc = surge_deploy_random_hex(L->study_id, STUDY_ID_BYTES);
    if (rc == 0) {
        char line[sizeof L->study_id + 1];
        snprintf(line, sizeof line, "%s\n", L->study_id);
        rc = write_text_atomic(L->out, STUDY_ID_FILE, line);
    }
    if (rc != 0) {
        fprintf(stderr, "surge launch: %s/" STUDY_ID_FILE ": %s\n", L->out,
                strerror(-rc));
        return 1;
    }
    return 0;
}

/* --resume: the study id of the folder, which must hold this very study
 * (its study.resolved.json unchanged). 0 or an exit status. */
static int
resume_identity(struct launch *L)
{
    char p[MAX_PATH], *text = NULL;
    size_t len = 0;
    snprintf(p, sizeof p, "%s/" STUDY_ID_FILE, L->out);
    int rc = surge_deploy_read_file(p, 256, &text, &len);
    if (rc != 0) {
        fprintf(stderr,
                "surge launch: --resume: %s: %s (no study was started in "
                "this folder)\n",
                p, strerror(-rc));
        return 2;
    }
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r')) {
        text[--len] = '\0';
    }
    bool hex = len == 2 * STUDY_ID_BYTES;
    for (size_t i = 0; hex && i < len; i++) {
        hex = strchr("0123456789abcdef", text[i]) != NULL;
    }
    if (hex) {
        memcpy(L->study_id, text, len + 1);
    }
    free(text);
    if (!hex) {
        fprintf(stderr,
                "surge launch: --resume: %s: not a study id (%d hex "
                "digits)\n",
                p, 2 * STUDY_ID_BYTES);
        return 2;
    }
    /* Resuming with another study file (other parameters, runs or
     * trainer) would mix two studies in one model. */
    char *now = surge_study_to_json(L->s);
    snprintf(p, sizeof p, "%s/study.resolved.json", L->out);
    rc = now != NULL ? surge_deploy_read_file(p, STATS_MAX_BYTES, &text, &len)
                     : -ENOMEM;
    bool same = rc == 0 && strcmp(text, now) == 0;
    if (rc == 0) {
        free(text);
    }
    free(now);
    if (!same) {
        fprintf(stderr,
                "surge launch: --resume: %s: %s; start the study afresh "
                "(without --resume) or in another folder\n",
                p,
                rc == 0 ? "the study differs from the one started there"
                        : strerror(-rc));
        return 2;
    }
    static const char *const stale[] = {"server.json", "server-stats.json",
                                        "summary.json", "trainer.json",
                                        "model.safetensors"};
    for (size_t i = 0; i < sizeof stale / sizeof stale[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", L->out, stale[i]);
        if (unlink(p) != 0 && errno != ENOENT) {
            fprintf(stderr, "surge launch: %s: %s\n", p, strerror(errno));
            return 1;
        }
    }
    return remove_leftovers(L, false) != 0 ? 1 : 0;
}

static int
prepare(struct launch *L, const char *outdir_override, int dry)
{
    char err[1024];
    int rc;
    const surge_study *s = L->s;
    const char *outdir = outdir_override ? outdir_override : s->output_dir;
    /* Everything that can be refused is checked before anything is
     * written. */
    rc = surge_study_check_components(s, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "surge launch: %s\n", err);
        return 2;
    }
    char abs[PATH_MAX];
    err[0] = '\0';
    rc = surge_sampler_generate(s, &L->x, &L->nruns, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "surge launch: %s\n",
                err[0] != '\0' ? err : surge_strerror(rc));
        return 2;
    }
    rc = surge_deploy_mkdir_p(outdir);
    if (rc == 0 && realpath(outdir, abs) == NULL) {
        rc = -errno;
    }
    if (rc == 0 && strlen(abs) >= sizeof L->out) {
        rc = -ENAMETOOLONG;
    }
    if (rc == 0) {
        snprintf(L->out, sizeof L->out, "%s", abs);
    }
    if (rc != 0) {
        fprintf(stderr, "surge launch: study.output_dir: %s: %s\n", outdir,
                strerror(-rc));
        return 2;
    }
    /* A dry run starts nothing and so removes nothing. */
    rc = dry ? 0 : L->resume ? resume_identity(L) : fresh_folder(L);
    if (rc != 0) {
        return rc;
    }
    char runs[MAX_PATH];
    snprintf(runs, sizeof runs, "%s/runs", L->out);
    rc = surge_deploy_mkdir_p(runs);
    if (rc != 0) {
        fprintf(stderr, "surge launch: %s: %s\n", runs, strerror(-rc));
        return 2;
    }
    char path[MAX_PATH];
    snprintf(path, sizeof path, "%s/parameters.csv", L->out);
    rc = surge_sampler_write_csv(s, L->x, L->nruns, path);
    if (rc != 0) {
        fprintf(stderr, "surge launch: %s: %s\n", path, strerror(-rc));
        return 1;
    }
    char *resolved = surge_study_to_json(s);
    rc = resolved != NULL
             ? write_text_atomic(L->out, "study.resolved.json", resolved)
             : -ENOMEM;
    free(resolved);
    if (rc != 0) {
        fprintf(stderr, "surge launch: study.resolved.json: %s\n",
                strerror(-rc));
        return 1;
    }
    L->runs = calloc(L->nruns, sizeof *L->runs);
    if (L->runs == NULL) {
        fprintf(stderr, "surge launch: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < L->nruns; i++) {
        L->runs[i].sim = (int64_t)i;
        L->runs[i].attempt = 1;
        L->runs[i].x = L->x + i * s->nparams;
    }
    return 0;
}

static int
dry_run(struct launch *L)
{
    char err[512] = "";
    surge_strv server = {NULL, 0};
    bool mpirun = false;
    int src = server_command(L, &server, &mpirun, err, sizeof err);
    if (src != 0) {
        fprintf(stderr, "surge launch: %s\n",
                err[0] != '\0' ? err : surge_strerror(src));
        return 2;
    }
    printf("server:");
    for (size_t k = 0; k < server.n; k++) {
        printf(" %s", server.v[k][0] != '\0' ? server.v[k] : "''");
    }
    printf("\n");
    surge_strv_free(&server);
    for (size_t i = 0; i < L->nruns; i++) {
        struct run *r = &L->runs[i];
        char rdir[MAX_PATH];
        surge_strv solver = {NULL, 0}, argv = {NULL, 0};
        run_dir(L, r->sim, rdir, sizeof rdir);
        surge_expand_ctx ctx = {r->sim, 1, r->x, rdir, L->out, L->bindir};
        int rc =
            surge_study_expand_command(L->s, &ctx, &solver, err, sizeof err);
        if (rc == 0) {
            rc = resolve_program(L, &solver);
        }
        if (rc == 0) {
            rc = L->ops->wrap(L->sched, solver.v, L->s->ranks, &argv);
        }
        if (rc != 0) {
            fprintf(stderr, "surge launch: %s\n",
                    rc == SURGE_ECONFIG ? err : surge_strerror(rc));
            surge_strv_free(&solver);
            return 2;
        }
        printf("%lld:", (long long)r->sim);
        for (size_t k = 0; k < argv.n; k++) {
            printf(" %s", argv.v[k]);
        }
        printf("\n");
        surge_strv_free(&solver);
        surge_strv_free(&argv);
    }
    return 0;
}

/* --resume: the runs the checkpoint holds whole are done; the others
 * start again, their attempts numbered after those already logged. */
static int
mark_resumed(struct launch *L)
{
    bool *held = calloc(L->nruns > 0 ? L->nruns : 1, sizeof *held);
    if (held == NULL || finished_runs(L, L->resumed, held) != 0) {
        free(held);
        return -ENOMEM;
    }
    for (size_t i = 0; i < L->nruns; i++) {
        struct run *r = &L->runs[i];
        if (held[i]) {
            r->state = RUN_OK;
            L->resumed_ok++;
            continue;
        }
        char log[MAX_PATH];
        for (;;) {
            log_path(L, r, log, sizeof log);
            if (file_size(log) < 0) {
                break;
            }
            r->attempt++;
        }
    }
    SURGE_LOG(SURGE_LOG_INFO, COMPONENT,
              "resuming study %s: %lld of %zu runs done, %s", L->s->name,
              (long long)L->resumed_ok, L->nruns,
              L->resumed != NULL ? "the server resumed from their checkpoint"
                                 : "no checkpoint of this study: every run "
                                   "starts again");
    free(held);
    return 0;
}

static int64_t
concurrency(const surge_study *s, size_t nruns)
{
    if (s->max_concurrent > 0) {
        return s->max_concurrent;
    }
    if (s->scheduler == SURGE_SCHEDULER_SLURM) {
        /* The cluster's queue decides what runs when; the cores of the
         * machine running `surge launch` (a login node) say nothing. */
        return nruns > 0 ? (int64_t)nruns : 1;
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int64_t k = cores > 0 ? (int64_t)cores / s->ranks : 1;
    return k > 0 ? k : 1;
}

int
surge_launch_main(int argc, char **argv)
{
    struct launch L;
    const char *study_path = NULL, *outdir = NULL;
    int dry = 0, quiet = 0, status = 0;
    char err[1024];
    memset(&L, 0, sizeof L);
    L.trainer_step = -1;
    L.trainer_loss = NAN;
    L.trainer_rate = -1;
    L.status_rate = -1;

    int rc =
        parse_args(argc, argv, &study_path, &outdir, &dry, &quiet, &L.resume);
    if (rc != 0) {
        return rc == 1 ? 0 : rc;
    }
    rc = surge_study_load(&L.s, study_path, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "surge launch: %s\n", err);
        return 2;
    }
    L.ops = surge_scheduler_find(L.s->scheduler);
    if (L.ops == NULL) {
        fprintf(stderr,
                "surge launch: scheduler.kind: %s is not available "
                "in this build\n",
                surge_scheduler_kind_name(L.s->scheduler));
        status = 2;
        goto out_study;
    }
    rc = L.ops->create(&L.sched, L.s, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "surge launch: scheduler: %s\n",
                rc == SURGE_ECONFIG ? err : surge_strerror(rc));
        status = 2;
        goto out_study;
    }
    find_bindir(&L);
    status = prepare(&L, outdir, dry);
    if (status != 0) {
        goto out_sched;
    }
    /* Every run's program, before anything starts (and in --dry-run). */
    for (size_t i = 0; i < L.nruns; i++) {
        if (run_program_check(&L, &L.runs[i], err, sizeof err) != 0) {
            fprintf(stderr, "surge launch: %s\n", err);
            status = 2;
            goto out_sched;
        }
    }
    if (dry) {
        status = dry_run(&L);
        goto out_sched;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: sleeps and polls end at once */
    struct sigaction old_int, old_term, old_hup;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    sigaction(SIGHUP, &sa, &old_hup);
    signal(SIGPIPE, SIG_IGN);

    L.quiet = quiet;
    if (quiet && getenv("SURGE_LOG_LEVEL") == NULL) {
        /* --quiet keeps what needs attention (warnings: a failed attempt,
         * a retry) and drops the per-run "sim N: ok" lines. */
        surge_log_set_level(SURGE_LOG_WARN);
    }
    L.tty = isatty(STDERR_FILENO);
    if (L.tty && !quiet) {
        /* Log lines must not land on top of the live progress line. */
        log_launch = &L;
        surge_log_set_handler(tty_log, NULL);
    }
    L.t0 = surge_now_s();
    int64_t k = concurrency(L.s, L.nruns);
    SURGE_LOG(SURGE_LOG_INFO, COMPONENT,
              "study %s: %zu runs x %lld ranks, %lld at once, output %s",
              L.s->name, L.nruns, (long long)L.s->ranks, (long long)k, L.out);

    rc = surge_deploy_random_hex(L.token, TOKEN_BYTES);
    if (rc != 0) {
        snprintf(err, sizeof err, "random token: %s", strerror(-rc));
    }
    if (rc == 0 && L.s->server_encrypt) {
        /* Fresh keys per study, readable by the user only; the runs and a
         * restarted server read them from the output folder (shared on a
         * cluster). */
        snprintf(L.curve_dir, sizeof L.curve_dir, "%s/keys", L.out);
        rc = surge_curve_keys_generate(L.curve_dir, err, sizeof err);
    }
    if (rc == 0) {
        rc = start_server(&L, err, sizeof err);
    }
    int interrupted = 0;
    if (rc == 0 && L.resume) {
        rc = mark_resumed(&L);
        if (rc != 0) {
            snprintf(err, sizeof err, "--resume: %s", strerror(-rc));
            surge_server_proc_wait(&L.server, 0, L.s->kill_grace_s);
        }
    }
    if (rc != 0) {
        fprintf(stderr, "surge launch: cannot start the server: %s\n", err);
        L.server_failed = 1;
        for (size_t i = 0; i < L.nruns; i++) {
            L.runs[i].state = RUN_CANCELLED;
            snprintf(L.runs[i].why, sizeof L.runs[i].why, "no server");
        }
    }

    bool stopping = false;
    while (rc == 0) {
        if (stop_signal && !stopping) {
            stopping = true;
            interrupted = stop_signal;
            progress_clear(&L);
            SURGE_LOG(SURGE_LOG_WARN, COMPONENT,
                      "signal %d: stopping every run and the server",
                      (int)stop_signal);
            for (size_t i = 0; i < L.nruns; i++) {
                if (L.runs[i].state == RUN_RUNNING) {
                    L.ops->cancel(L.sched, L.runs[i].job, L.s->kill_grace_s);
                } else if (L.runs[i].state == RUN_QUEUED) {
                    L.runs[i].state = RUN_CANCELLED;
                    snprintf(L.runs[i].why, sizeof L.runs[i].why,
                             "not started: stopped by signal %d",
                             (int)stop_signal);
                }
            }
        }
        poll_runs(&L, stopping);
        int running = count_state(&L, RUN_RUNNING);
        if (stopping || L.server_failed) {
            if (L.server_failed && !stopping) {
                stopping = true;
                for (size_t i = 0; i < L.nruns; i++) {
                    if (L.runs[i].state == RUN_RUNNING) {
                        L.ops->cancel(L.sched, L.runs[i].job,
                                      L.s->kill_grace_s);
                    } else if (L.runs[i].state == RUN_QUEUED) {
                        L.runs[i].state = RUN_CANCELLED;
                        snprintf(L.runs[i].why, sizeof L.runs[i].why,
                                 "not started: the server failed");
                    }
                }
            }
            if (running == 0) {
                break;
            }
            surge_deploy_sleep(TICK_S);
            continue;
        }
        bool moved = check_server(&L);
        if (L.server_failed) {
            continue;
        }
        check_silence(&L, moved);
        for (size_t i = 0; i < L.nruns && running < k; i++) {
            struct run *r = &L.runs[i];
            if (r->state != RUN_QUEUED) {
                continue;
            }
            if (submit(&L, r) != 0) {
                run_ended(&L, r, NULL, false);
                continue;
            }
            running++;
        }
        if (count_state(&L, RUN_RUNNING) == 0 &&
            count_state(&L, RUN_QUEUED) == 0) {
            break;
        }
        progress(&L, false);
        surge_deploy_sleep(TICK_S);
    }
    if (L.t_runs_done == 0) {
        L.t_runs_done = surge_now_s();
    }
    progress_clear(&L);

    /* Stop the server: END_RECEPTION lets it finish and drain; a signal
     * asks for SHUTDOWN. Either way the wait is bounded. */
    if (L.server.pid > 0) {
        int op = stopping ? SURGE_CTL_SHUTDOWN : SURGE_CTL_END_RECEPTION;
        if (control(&L, op, -1, NULL, 0) != 0) {
            kill(L.server.pid, SIGTERM);
        }
        double wait = stopping ? L.s->kill_grace_s : L.s->server_stop_timeout_s;
        if (!stopping && L.s->tr_enabled && L.s->tr_kind == 0) {
            /* Show the training that follows the runs until the server
             * exits, stops on its own cap, or a signal comes. */
            double t_end = surge_now_s() + wait;
            int64_t step0 = -1; /* the step when reception ended */
            L.next_progress = 0;
            while (surge_server_proc_alive(&L.server) && !stop_signal &&
                   surge_now_s() < t_end) {
                fetch_status(&L);
                if (step0 < 0 && L.status_ok) {
                    step0 = L.trainer_step;
                }
                /* The server stops training at 0.8 x the wait. */
                training_progress(&L, step0,
                                  t_end - 0.2 * L.s->server_stop_timeout_s,
                                  L.s->server_stop_timeout_s * 0.8, false);
                surge_deploy_sleep(0.25);
            }
            progress_clear(&L);
            if (stop_signal && surge_server_proc_alive(&L.server)) {
                interrupted = stop_signal;
                (void)control(&L, SURGE_CTL_SHUTDOWN, -1, NULL, 0);
                t_end = surge_now_s() + L.s->kill_grace_s;
            }
            wait = fmax(0.0, t_end - surge_now_s());
        }
        if (surge_server_proc_wait(&L.server, wait, L.s->kill_grace_s) != 0) {
            SURGE_LOG(SURGE_LOG_WARN, COMPONENT,
                      "the server did not stop within %g s; it was killed",
                      wait);
        } else if (L.server.exit_code != 0) {
            SURGE_LOG(SURGE_LOG_WARN, COMPONENT,
                      "the server exited with status %d (see %s/server.log)",
                      L.server.exit_code, L.out);
        }
    }
    surge_control_destroy(&L.ctl);
    L.ops->destroy(&L.sched);

    json_t *stats = read_stats(&L);
    int counts_ok = 0;
    double wall = surge_now_s() - L.t0;
    rc = write_summary(&L, stats, wall, interrupted, &counts_ok);
    json_decref(stats);
    if (rc != 0) {
        fprintf(stderr, "surge launch: summary.json: %s\n", strerror(-rc));
    }
    status =
        (count_state(&L, RUN_OK) == (int)L.nruns && counts_ok &&
         !L.server_failed && !interrupted && rc == 0 && L.errors[0][0] == '\0')
            ? 0
            : 1;
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    sigaction(SIGHUP, &old_hup, NULL);
out_sched:
    if (L.sched != NULL) {
        L.ops->destroy(&L.sched);
    }
    free(L.runs);
    free(L.x);
out_study:
    if (log_launch != NULL) {
        surge_log_set_handler(NULL, NULL);
        log_launch = NULL;
    }
    json_decref(L.resumed);
    surge_study_destroy(&L.s);
    return status;
}
