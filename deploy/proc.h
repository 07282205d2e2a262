/*
 * deploy/proc.h - the process handling that every launcher part shares:
 * the local scheduler (deploy/sched_local.c), the Slurm commands
 * (deploy/scheduler_slurm.c) and the server process (deploy/server_proc.c)
 * each start a child in a session of its own, decode how it ended and
 * sweep up what it left behind in that session.
 *
 * Thread-safety: all are reentrant. None prints.
 */
#ifndef SURGE_DEPLOY_PROC_H
#define SURGE_DEPLOY_PROC_H

#include <sys/types.h>

/* surge_proc_child_setup - in a child just forked by parent: a new session
 * (so the whole tree can be signalled as one), SIGKILL when the parent
 * dies (and _exit(127) now if it already has), an empty signal mask and
 * default SIGINT, SIGTERM and SIGPIPE, then in_fd, out_fd and err_fd as
 * fds 0, 1 and 2. in_fd < 0 means /dev/null. Only async-signal-safe calls,
 * so it may run between fork and exec. Never fails (a failed dup2 leaves
 * that fd as it was). */
void surge_proc_child_setup(pid_t parent, int in_fd, int out_fd, int err_fd);

/* surge_proc_status - decode a waitpid status: *exit_code is the exit
 * status and *sig 0 for a normal exit; otherwise *exit_code is -1 and
 * *sig the terminating signal (0 if none). */
void surge_proc_status(int wstatus, int *exit_code, int *sig);

/* surge_proc_sweep_session - SIGKILL whatever is left in session sid (its
 * leader has been reaped) and wait, at most 2 s, until it is gone: a
 * SIGKILLed process disappears as soon as the kernel tears it down.
 * Returns how many processes it signalled (0: the session was empty). */
int surge_proc_sweep_session(pid_t sid);

/* surge_proc_env - the environment for a child: ours, with the entries of
 * extra (NULL-terminated "NAME=value", may be NULL) and, when tmp is not
 * NULL, TMPDIR, OMPI_MCA_orte_tmpdir_base and OMPI_MCA_prte_tmpdir_base set
 * to tmp (the folder that keeps an mpirun's session directory apart from
 * every other mpirun's), each added or replacing the one of the same name.
 * The strings of environ and extra are borrowed; the array and the tmp
 * entries are one allocation: free(env). NULL on ENOMEM. */
char **surge_proc_env(char *const *extra, const char *tmp);

/* surge_proc_mkdtemp - a fresh folder <TMPDIR or /tmp>/<prefix>-XXXXXX
 * (mkdtemp, mode 0700) into buf (cap bytes; "" on failure), kept short
 * because Unix socket paths under it are limited to 108 bytes: a TMPDIR
 * that is not absolute or longer than 256 bytes is replaced by /tmp. 0, or
 * -errno with the reason in err. */
int surge_proc_mkdtemp(const char *prefix, char *buf, size_t cap, char *err,
                       size_t errcap);

#endif
