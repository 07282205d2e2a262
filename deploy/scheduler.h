/*
 * deploy/scheduler.h - where solver runs execute: one table of operations
 * per scheduler (local Open MPI now, Slurm next), so the launcher's loop
 * never knows which one it drives.
 *
 * A job is one attempt of one run: a full argv (the launcher has already
 * wrapped the solver in mpirun or srun as the scheduler asked, through
 * wrap), extra environment entries, a working directory and a log file that
 * receives its stdout and stderr. The launcher submits jobs, polls them
 * (never blocking) until they end, and cancels them on timeouts and
 * Ctrl-C. Cancelling is asynchronous: SIGTERM (or scancel) now, and a poll
 * after the grace period escalates to SIGKILL; the job still ends through
 * poll. destroy() stops whatever is left and waits for it, bounded by the
 * grace period, so nothing the study started outlives it.
 *
 * Rules an implementation keeps:
 *   - everything a job starts can be found and killed (local: a new session
 *     per job; every process in it is killed, also those that changed
 *     process group, as Open MPI's ranks do);
 *   - poll never blocks and never loses an exit status;
 *   - no call prints: errors are returned, details in err buffers, events
 *     logged through common/log.h.
 *
 * Threads: a scheduler object is used by one thread (the launcher's).
 */
#ifndef SURGE_DEPLOY_SCHEDULER_H
#define SURGE_DEPLOY_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "deploy/study.h"

/* One job to start. Everything is borrowed for the duration of submit. */
typedef struct surge_job_spec {
    int64_t sim;          /* run id, for names and logs */
    int64_t attempt;      /* 0 for the first attempt */
    char *const *argv;    /* program and arguments, NULL-terminated */
    char *const *env;     /* "NAME=value" entries added to (or
                             replacing in) the launcher's environment;
                             NULL-terminated; may be NULL */
    const char *workdir;  /* working directory, exists */
    const char *log_path; /* stdout+stderr, created or truncated */
} surge_job_spec;

enum surge_job_state {
    SURGE_JOB_PENDING = 0, /* accepted, not started (slurm queue) */
    SURGE_JOB_RUNNING,     /* running */
    SURGE_JOB_DONE         /* ended: see exit_code / signal */
};

typedef struct surge_job_status {
    int state;     /* enum surge_job_state */
    int exit_code; /* DONE: exit status, -1 when signaled */
    int signal;    /* DONE: the signal that ended it, or 0 */
    int cancelled; /* DONE: ended after a cancel request */
} surge_job_status;

typedef struct surge_scheduler_ops {
    const char *name; /* "local", "slurm" */
    /* create - a scheduler for study s (borrowed; outlives the object).
     * 0, SURGE_ECONFIG (reason in err) or -errno. */
    int (*create)(void **state, const surge_study *s, char *err, size_t errcap);
    /* wrap - the argv that runs solver_argv on ranks ranks (e.g. "mpirun
     * -np R ... solver..."), into *out (caller frees with
     * surge_strv_free). 0 or -ENOMEM. */
    int (*wrap)(void *state, char *const *solver_argv, int64_t ranks,
                surge_strv *out);
    /* submit - start a job; *job identifies it until release. 0, or
     * -errno / SURGE_E* with the reason in err (nothing was started). */
    int (*submit)(void *state, const surge_job_spec *spec, uint64_t *job,
                  char *err, size_t errcap);
    /* poll - the job's state now, never blocking. 0 or -ESRCH. */
    int (*poll)(void *state, uint64_t job, surge_job_status *st);
    /* cancel - ask the job to stop (SIGTERM to all it started); after
     * grace_s seconds a later poll kills what is left (SIGKILL). A job
     * already done is left alone. 0 or -ESRCH. */
    int (*cancel)(void *state, uint64_t job, double grace_s);
    /* release - forget a DONE job. 0, -ESRCH, or SURGE_ESTATE if running. */
    int (*release)(void *state, uint64_t job);
    /* destroy - stop every job still running (TERM, grace, KILL), wait
     * for them, free; sets *state to NULL. */
    void (*destroy)(void **state);
} surge_scheduler_ops;

/* surge_scheduler_find - the ops table for a scheduler kind
 * (enum surge_scheduler_kind), or NULL when this build lacks it. */
const surge_scheduler_ops *surge_scheduler_find(int kind);

/* The local scheduler (deploy/sched_local.c). */
extern const surge_scheduler_ops surge_sched_local_ops;

/* surge_kill_session - send sig to every process of session sid (found by
 * scanning /proc) and to process group sid. Returns how many processes
 * were signalled. Used by the local scheduler and the server supervisor. */
int surge_kill_session(pid_t sid, int sig);

/* surge_session_alive - processes left in session sid (/proc scan),
 * zombies excluded. */
int surge_session_alive(pid_t sid);

#endif /* SURGE_DEPLOY_SCHEDULER_H */
