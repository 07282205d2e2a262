/*
 * deploy/scheduler_slurm.h - the `slurm` scheduler: runs as Slurm jobs
 * (sbatch, a job array when many are submitted together), or as srun job
 * steps when the launcher itself runs inside an allocation (SLURM_JOB_ID
 * set); and the command layer underneath it (run a Slurm command with a
 * timeout, write a batch script, parse sbatch/squeue/scontrol output).
 *
 * The ops table (surge_sched_slurm_ops, behind deploy/scheduler.h's
 * surge_scheduler_ops) keeps that header's rules: poll never blocks (job
 * states come from an squeue that runs in the background at most every
 * scheduler.slurm.poll_interval_s), every Slurm command runs under a
 * timeout, and destroy() scancels whatever is left and waits for Slurm to
 * report it ended. docs/slurm.md describes the behaviour for users.
 *
 * Threads: everything here is for one thread (the launcher's). Errors: 0
 * or -errno / SURGE_E*, with a sentence in the caller's err buffer that
 * names the command and quotes what it printed.
 */
#ifndef SURGE_DEPLOY_SCHEDULER_SLURM_H
#define SURGE_DEPLOY_SCHEDULER_SLURM_H

#include <stddef.h>
#include <stdint.h>

#include "deploy/scheduler.h"
#include "deploy/study.h"

/* The slurm scheduler's operations (deploy/scheduler_slurm.c). */
extern const surge_scheduler_ops surge_sched_slurm_ops;

#define SURGE_SLURM_MAX_JOBID 64       /* "1234567_89" and then some */
#define SURGE_SLURM_CMD_TIMEOUT_S 30.0 /* default for one Slurm command */

/* surge_slurm_wrap_server - the argv that runs the server (server_argv,
 * e.g. "surge serve ...") with scheduler.slurm.server_as_job: "<srun's
 * path> --nodes=<server.nodes> --ntasks=<server.ranks>
 * [--ntasks-per-node=<server.ranks_per_node>] [--mpi=<scheduler.slurm.mpi,
 * pmix for "mpirun"> --kill-on-bad-exit=1 when R > 1]
 * --job-name=<job name>-server [--cpus-per-task=trainer.threads]
 * [--partition --account --time from scheduler.slurm] --quit-on-interrupt
 * server_argv...": outside an allocation a Slurm job of its own, inside one
 * (steps mode; job name <study name>-server, --exact, no partition,
 * account or time) a job step of the allocation. srun stays in the foreground
 * as the launcher's child, so the launcher supervises it like a local server
 * process: srun exits with the server's status (with R > 1: ends the step
 * when one rank dies), and SIGTERM to srun cancels the job or step. The
 * server writes server.json (with its own endpoint) into the output
 * folder, which must be shared with the compute nodes. Without
 * server_as_job argv is copied unchanged (the server runs on the
 * launcher's node). argv[0] is srun's full path (found in PATH), for
 * callers that execve. state is the slurm scheduler's; *out (caller frees
 * with surge_strv_free) replaces what it held. 0, -ENOENT (no srun in
 * PATH) or -ENOMEM. */
int surge_slurm_wrap_server(void *state, char *const *server_argv,
                            surge_strv *out);

/* ------------------------------------------------------------ commands */

/* The result of one external command. */
typedef struct surge_slurm_cmd_result {
    char *out;         /* stdout, NUL-terminated, owned; at most
                          out_cap bytes are kept */
    size_t out_len;    /* bytes in out */
    int out_truncated; /* stdout was longer than out_cap */
    char err[1024];    /* start of stderr, NUL-terminated, with
                          blanks and newlines squeezed to one
                          space so it fits in a log line */
    int exit_code;     /* exit status, -1 when signalled or not
                          run */
    int signal;        /* the signal that ended it, or 0 */
    int timed_out;     /* killed (SIGKILL) at the timeout */
} surge_slurm_cmd_result;

/* surge_slurm_cmd_run - run argv (argv[0] looked up in PATH) with stdin
 * from /dev/null, in a session of its own, and wait at most timeout_s for
 * it; at the timeout its whole session gets SIGKILL. res->out receives up
 * to out_cap bytes of stdout (the rest is read and dropped). Returns 0 when
 * the command ran to the end (whatever its exit status: look at
 * res->exit_code), SURGE_ETIMEDOUT when it was killed at the timeout,
 * -errno when it could not be started (-ENOENT: not installed). On every
 * return res is filled (out may be NULL when nothing was read) and the
 * caller frees it with surge_slurm_cmd_result_fini(). */
int surge_slurm_cmd_run(char *const *argv, double timeout_s, size_t out_cap,
                        surge_slurm_cmd_result *res);

/* surge_slurm_cmd_result_fini - free res->out and clear res. */
void surge_slurm_cmd_result_fini(surge_slurm_cmd_result *res);

/* surge_slurm_cmd_describe - one line about a failed command for err (cap
 * bytes): "sbatch: exit status 1: sbatch: error: invalid partition
 * specified: foo", "squeue: killed after 30 s", "sbatch: not found in
 * PATH (is Slurm installed?)". rc is surge_slurm_cmd_run's return. */
void surge_slurm_cmd_describe(const char *name, int rc, double timeout_s,
                              const surge_slurm_cmd_result *res, char *err,
                              size_t cap);

/* ------------------------------------------------------------ parsing */

/* Slurm job states as squeue -t all / scontrol / sacct print them,
 * grouped by what the launcher needs to know. */
enum surge_slurm_class {
    SURGE_SLURM_UNKNOWN = 0,     /* a word we do not know */
    SURGE_SLURM_WAITING,         /* PENDING, CONFIGURING, REQUEUED, ... */
    SURGE_SLURM_ACTIVE,          /* RUNNING, COMPLETING, SUSPENDED, ... */
    SURGE_SLURM_ENDED_OK,        /* COMPLETED */
    SURGE_SLURM_ENDED_FAILED,    /* FAILED (non-zero exit) */
    SURGE_SLURM_ENDED_CANCELLED, /* CANCELLED (scancel, by anyone) */
    SURGE_SLURM_ENDED_KILLED     /* TIMEOUT, NODE_FAIL, PREEMPTED,
                                    BOOT_FAIL, DEADLINE, OUT_OF_MEMORY */
};

/* surge_slurm_state_class - the class of a state word ("RUNNING",
 * "CANCELLED by 0" as sacct prints it: only the first word counts). */
int surge_slurm_state_class(const char *state);

/* surge_slurm_parse_jobid - the job id from `sbatch --parsable` output
 * ("123\n" or "123;cluster\n") into jobid (cap bytes). 0, or SURGE_EPROTO
 * when the text is not one job id of digits. */
int surge_slurm_parse_jobid(const char *out, char *jobid, size_t cap);

/* surge_slurm_parse_exitcode - "ExitCode=X:Y" (scontrol -o show job) or
 * "X:Y" (sacct) into the exit status X and the signal Y. 0 or -EINVAL. */
int surge_slurm_parse_exitcode(const char *text, int *exit_code, int *signal);

/* surge_slurm_shell_quote - s as one single-quoted shell word ('it'\''s')
 * into out (cap bytes). 0, or -ENAMETOOLONG when it does not fit. */
int surge_slurm_shell_quote(const char *s, char *out, size_t cap);

/* ------------------------------------------------------------ scripts */

/* surge_slurm_write_job_script - write the batch script of one job to
 * path (mode 0700: it holds the run's key), replacing any old one:
 * cd to workdir, append stdout and stderr to log_path, export each env
 * entry ("NAME=value"; NAME must be a shell identifier), run argv, write
 * its exit status to exit_path (atomically: temp + rename) and exit with
 * it. SIGTERM from scancel reaches the command; the status file is then
 * written as 128 + 15 if the shell gets to it. 0, SURGE_ECONFIG (a bad
 * env name, message in err) or -errno. */
int surge_slurm_write_job_script(const char *path, char *const *argv,
                                 char *const *env, const char *workdir,
                                 const char *log_path, const char *exit_path,
                                 char *err, size_t errcap);

#endif /* SURGE_DEPLOY_SCHEDULER_SLURM_H */
