/*
 * deploy/server_proc.h - the server as a child process of the launcher:
 * start it, learn its endpoint from <output_dir>/server.json, notice when it
 * dies, stop it.
 *
 * The server is `surge serve` (the running program, /proc/self/exe) in a
 * session of its own, so a Ctrl-C at the terminal reaches only the launcher,
 * which then stops things in order (runs first, then the server). The
 * study token travels in the environment (SURGE_TOKEN), never on the
 * command line where `ps` would show it. The child gets SIGKILL if the
 * launcher dies (PR_SET_PDEATHSIG). Its stdout and stderr go to a log file.
 *
 * A server of R > 1 ranks is one unit all the same: argv is mpirun (or
 * srun) and `surge serve`, the whole MPI job lives in the child's session,
 * and one rank that dies makes mpirun (srun --kill-on-bad-exit) end the
 * job, so the unit ends and the launcher restarts it whole. With mpi_tmp
 * the child gets a fresh temporary folder as TMPDIR and Open MPI's tmpdir
 * bases (as solver runs do, deploy/sched_local.c), removed when it ends.
 *
 * Threads: one thread. Errors: 0 or SURGE_E* / -errno, details in err.
 */
#ifndef SURGE_DEPLOY_SERVER_PROC_H
#define SURGE_DEPLOY_SERVER_PROC_H

#include <signal.h>
#include <stddef.h>
#include <sys/types.h>

#define SURGE_SERVER_PROC_MAX_ENDPOINT 256

typedef struct surge_server_proc {
    pid_t pid; /* child (session leader); 0: not running */
    char endpoint[SURGE_SERVER_PROC_MAX_ENDPOINT]; /* from server.json */
    char http[SURGE_SERVER_PROC_MAX_ENDPOINT];     /* monitoring URL from
                                                      server.json, "" if none */
    int exit_code;     /* once exited: status, -1 if signaled */
    int signal;        /* once exited: signal that ended it */
    double started_at; /* monotonic seconds */
    long ranks;        /* R, from server.json ("ranks"; 1 when absent) */
    char tmp[512];     /* mpi_tmp: the child's tmp folder, "" when none */
} surge_server_proc;

/* surge_server_proc_start - run argv (argv[0] is the program) with
 * SURGE_TOKEN=token added to the environment (and with mpi_tmp a tmp
 * folder of its own, see above), output to log_path (appended), and wait
 * at most timeout_s for json_path (removed first) to name an endpoint. *stop,
 * when it becomes non-zero (a signal handler's flag), ends the wait early with
 * -EINTR. On success sp describes the running server. On failure the child, if
 * any, is killed and reaped and err says why: "server exited with status 1
 * before writing server.json (see LOG)", "no server.json after 30 s". */
int surge_server_proc_start(surge_server_proc *sp, char *const *argv,
                            const char *token, int mpi_tmp,
                            const char *json_path, const char *log_path,
                            double timeout_s, volatile sig_atomic_t *stop,
                            char *err, size_t errcap);

/* surge_server_proc_alive - 1 while the server runs; 0 once it exited
 * (reaped now; exit_code/signal filled in). Never blocks. */
int surge_server_proc_alive(surge_server_proc *sp);

/* surge_server_proc_wait - wait at most wait_s for the server to exit on
 * its own; then SIGTERM to its session, up to grace_s more, then SIGKILL.
 * Returns 0 when it exited by itself, 1 when it had to be signalled.
 * Leaves nothing of its session running. */
int surge_server_proc_wait(surge_server_proc *sp, double wait_s,
                           double grace_s);

/* surge_server_proc_read_endpoint - parse a server.json ({"endpoint": str,
 * "pid": int, "http": str (optional), "ranks": int and "endpoints": [str,
 * ...] (rank 0's first) when the server has R > 1 ranks}) into endpoint
 * and http (cap bytes each; http "" when absent), *pid and *ranks (1 when
 * "ranks" is absent). "endpoints", when present, must hold R non-empty
 * strings, the first equal to "endpoint" (the launcher speaks to rank 0;
 * runs learn the other ranks from rank 0's welcome). 0, -ENOENT (no file
 * yet), SURGE_EPROTO (not valid: the file is written atomically, so this
 * is a real error). */
int surge_server_proc_read_endpoint(const char *json_path, char *endpoint,
                                    char *http, size_t cap, long *pid,
                                    long *ranks);

#endif /* SURGE_DEPLOY_SERVER_PROC_H */
