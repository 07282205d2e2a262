/*
 * deploy/scheduler_slurm.c - the `slurm` scheduler and its command layer.
 *
 * DESIGN. Two modes, chosen at create():
 *
 *   batch (the usual one): each job is a Slurm batch job. submit() writes
 *   the job's script (cd, log, environment, the wrapped solver command,
 *   then its exit status into a file next to the log) and queues it; the
 *   next poll() hands all queued scripts to Slurm at once: one `sbatch
 *   --array=0-N-1[%K]` with a dispatcher script when there are at least
 *   scheduler.slurm.array_threshold of them, else one sbatch each. States
 *   come from `squeue -h -r -t all --name=JOBNAME`, one call for the whole
 *   study, started in the background at most every poll_interval_s and
 *   read without blocking by later polls. When a job has ended, its exit
 *   status comes from the file its script wrote, else from `scontrol show
 *   job` (ExitCode=X:Y), else from the state alone. A job squeue no longer
 *   lists (purged after MinJobAge) is looked up with sacct once, then
 *   reported as ended with status -1. cancel() is scancel (SIGTERM, then
 *   Slurm's own SIGKILL after KillWait); after the grace period a poll
 *   sends `scancel --signal=KILL --full` as well.
 *
 *   steps (SLURM_JOB_ID is set: the launcher runs inside an allocation):
 *   each job is `srun --mpi=... -n R solver` run as a child process, in
 *   its own session, exactly like the local scheduler runs mpirun, so the
 *   local scheduler does the work and only wrap() differs. Killing srun
 *   ends its job step.
 *
 * Why deferred submission: the ops table submits one job at a time, but
 * the launcher submits everything it may start in one loop turn, so
 * waiting for the next poll (one turn, 50 ms) collects them into an array
 * without changing the launcher. Why a job name filter rather than -j
 * with a list: `squeue -j` fails as a whole when one id has been purged.
 * Why the exit file: squeue knows no exit status, and scontrol only until
 * the job is purged.
 *
 * Every command runs under a timeout (SURGE_SLURM_CMD_TIMEOUT_S) in a
 * session of its own, killed with its session at the timeout; what it
 * printed on stderr goes into the error message or the log line.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "deploy/proc.h"
#include "deploy/scheduler.h"
#include "deploy/scheduler_slurm.h"
#include "deploy/study.h"
#include "deploy/util.h"

#define COMPONENT "slurm"
#define MAX_PATH 4096
#define SLURM_MAX_JOBS 1000000     /* jobs alive at once (handles) */
#define SQUEUE_OUT_CAP (64u << 20) /* squeue output kept, bytes */
#define SMALL_OUT_CAP (64u << 10)  /* sbatch, scontrol, sacct output */
#define MISSES_BEFORE_LOST 2       /* squeue rounds without the job */
#define DESTROY_EXTRA_S 30.0       /* destroy: wait beyond the grace */

/* ============================================================ commands */

/* A command running in the background: its pipes and what it printed. */
struct cmd {
    pid_t pid;                  /* child, leader of its session; 0: none */
    int out_fd;                 /* read end of stdout; -1 at EOF */
    int err_fd;                 /* read end of stderr; -1 at EOF */
    double deadline;            /* monotonic s: SIGKILL from then on */
    size_t out_cap;             /* bytes of stdout kept */
    surge_slurm_cmd_result res; /* filled while it runs */
    size_t err_len;             /* bytes in res.err */
    int exec_errno;             /* exec failed with this (0: it ran) */
    int errno_fd;               /* read end of the exec-error pipe */
};

static void
cmd_close_fds(struct cmd *c)
{
    if (c->out_fd >= 0) {
        close(c->out_fd);
        c->out_fd = -1;
    }
    if (c->err_fd >= 0) {
        close(c->err_fd);
        c->err_fd = -1;
    }
    if (c->errno_fd >= 0) {
        close(c->errno_fd);
        c->errno_fd = -1;
    }
}

/* Start argv in the background. Everything is prepared before fork: the
 * launcher may have threads (ZeroMQ's), so the child only makes
 * async-signal-safe calls. */
static int
cmd_start(struct cmd *c, char *const *argv, double timeout_s, size_t out_cap)
{
    int po[2] = {-1, -1}, pe[2] = {-1, -1}, px[2] = {-1, -1};
    int rc = 0;
    memset(c, 0, sizeof *c);
    c->out_fd = c->err_fd = c->errno_fd = -1;
    c->res.exit_code = -1;
    c->out_cap = out_cap;
    if (pipe2(po, O_CLOEXEC) != 0 || pipe2(pe, O_CLOEXEC) != 0 ||
        pipe2(px, O_CLOEXEC) != 0) {
        rc = -errno;
        goto fail;
    }
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull < 0) {
        rc = -errno;
        goto fail;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        rc = -errno;
        close(devnull);
        goto fail;
    }
    if (pid == 0) {
        surge_proc_child_setup(parent, devnull, po[1], pe[1]);
        execvp(argv[0], argv);
        int e = errno;
        ssize_t w = write(px[1], &e, sizeof e);
        (void)w;
        _exit(127);
    }
    close(devnull);
    close(po[1]);
    close(pe[1]);
    close(px[1]);
    c->pid = pid;
    c->out_fd = po[0];
    c->err_fd = pe[0];
    c->errno_fd = px[0];
    fcntl(c->out_fd, F_SETFL, O_NONBLOCK);
    fcntl(c->err_fd, F_SETFL, O_NONBLOCK);
    fcntl(c->errno_fd, F_SETFL, O_NONBLOCK);
    c->deadline = surge_now_s() + timeout_s;
    return 0;
fail:
    for (int i = 0; i < 2; i++) {
        if (po[i] >= 0) {
            close(po[i]);
        }
        if (pe[i] >= 0) {
            close(pe[i]);
        }
        if (px[i] >= 0) {
            close(px[i]);
        }
    }
    return rc;
}

/* Read what is there on fd: stdout into res.out (up to out_cap, the rest
 * dropped), stderr into res.err. Returns 1 at EOF (fd closed). */
static int
cmd_drain(struct cmd *c, int is_out)
{
    char buf[8192];
    int *fdp = is_out ? &c->out_fd : &c->err_fd;
    for (;;) {
        ssize_t n = read(*fdp, buf, sizeof buf);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            /* EAGAIN: nothing more now. Any other error ends the stream. */
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return 0;
            }
            n = 0;
        }
        if (n == 0) {
            close(*fdp);
            *fdp = -1;
            return 1;
        }
        if (is_out) {
            surge_slurm_cmd_result *r = &c->res;
            size_t room = c->out_cap - r->out_len;
            size_t take = (size_t)n < room ? (size_t)n : room;
            if (take < (size_t)n) {
                r->out_truncated = 1;
            }
            if (take > 0) {
                size_t want = r->out_len + take + 1;
                char *p = realloc(r->out, want);
                if (p == NULL) {
                    r->out_truncated = 1; /* keep what we have */
                    continue;
                }
                r->out = p;
                memcpy(r->out + r->out_len, buf, take);
                r->out_len += take;
                r->out[r->out_len] = '\0';
            }
        } else {
            /* Squeeze runs of blanks and newlines into one space. */
            char *e = c->res.err;
            for (ssize_t i = 0; i < n; i++) {
                char ch = buf[i];
                bool blank =
                    ch == '\n' || ch == '\r' || ch == '\t' || ch == ' ';
                if (c->err_len + 1 >= sizeof c->res.err) {
                    break;
                }
                if (blank) {
                    if (c->err_len == 0 || e[c->err_len - 1] == ' ') {
                        continue;
                    }
                    ch = ' ';
                } else if ((unsigned char)ch < 0x20) {
                    ch = '?';
                }
                e[c->err_len++] = ch;
                e[c->err_len] = '\0';
            }
        }
    }
}

static void
cmd_reaped(struct cmd *c, int wstatus)
{
    surge_proc_status(wstatus, &c->res.exit_code, &c->res.signal);
    /* Drop a trailing space left by the squeezing. */
    while (c->err_len > 0 && c->res.err[c->err_len - 1] == ' ') {
        c->res.err[--c->err_len] = '\0';
    }
    c->pid = 0;
}

/* The exec-error pipe closes on a good exec, or carries the child's
 * errno; it is non-blocking, so a child not yet at exec leaves it open for
 * the next look. */
static void
read_exec_errno(struct cmd *c)
{
    if (c->errno_fd < 0) {
        return;
    }
    int e = 0;
    ssize_t n = read(c->errno_fd, &e, sizeof e);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        return;
    }
    if (n == (ssize_t)sizeof e) {
        c->exec_errno = e;
    }
    close(c->errno_fd);
    c->errno_fd = -1;
}

/* Make progress for up to wait_ms (0: only what is ready). Returns 1 once
 * the command has ended and been reaped, 0 while it runs. At the deadline
 * its session gets SIGKILL and it is reaped (bounded: SIGKILL cannot be
 * ignored). */
static int
cmd_step(struct cmd *c, int wait_ms)
{
    if (c->pid == 0) {
        return 1;
    }
    read_exec_errno(c);
    struct pollfd pf[2];
    nfds_t nf = 0;
    if (c->out_fd >= 0) {
        pf[nf].fd = c->out_fd;
        pf[nf].events = POLLIN;
        nf++;
    }
    if (c->err_fd >= 0) {
        pf[nf].fd = c->err_fd;
        pf[nf].events = POLLIN;
        nf++;
    }
    double left = c->deadline - surge_now_s();
    if (left < 0) {
        left = 0;
    }
    if (wait_ms > (int)(left * 1000) + 1) {
        wait_ms = (int)(left * 1000) + 1;
    }
    if (nf > 0) {
        int n = poll(pf, nf, wait_ms);
        if (n > 0) {
            for (nfds_t i = 0; i < nf; i++) {
                if (pf[i].revents != 0) {
                    cmd_drain(c, pf[i].fd == c->out_fd);
                }
            }
        }
    } else if (wait_ms > 0) {
        surge_deploy_sleep(wait_ms > 10 ? 0.01 : wait_ms * 1e-3);
    }
    int wstatus;
    pid_t r = waitpid(c->pid, &wstatus, WNOHANG);
    if (r == c->pid) {
        /* Whatever is still buffered in the pipes belongs to the output;
         * a grandchild holding them open is not waited for. */
        if (c->out_fd >= 0) {
            cmd_drain(c, 1);
        }
        if (c->err_fd >= 0) {
            cmd_drain(c, 0);
        }
        read_exec_errno(c); /* the child is gone: data or EOF now */
        cmd_close_fds(c);
        cmd_reaped(c, wstatus);
        return 1;
    }
    if (surge_now_s() >= c->deadline) {
        surge_kill_session(c->pid, SIGKILL);
        while (waitpid(c->pid, &wstatus, 0) < 0 && errno == EINTR) {
        }
        c->res.timed_out = 1;
        cmd_close_fds(c);
        cmd_reaped(c, wstatus);
        return 1;
    }
    return 0;
}

/* Stop a command still running (destroy): SIGKILL to its session. */
static void
cmd_abort(struct cmd *c)
{
    if (c->pid != 0) {
        c->deadline = 0;
        cmd_step(c, 0);
    }
    cmd_close_fds(c);
}

/* The return value surge_slurm_cmd_run documents, from a finished cmd. */
static int
cmd_rc(const struct cmd *c)
{
    if (c->exec_errno != 0) {
        return -c->exec_errno;
    }
    return c->res.timed_out ? SURGE_ETIMEDOUT : 0;
}

int
surge_slurm_cmd_run(char *const *argv, double timeout_s, size_t out_cap,
                    surge_slurm_cmd_result *res)
{
    struct cmd c;
    int rc = cmd_start(&c, argv, timeout_s, out_cap);
    if (rc != 0) {
        memset(res, 0, sizeof *res);
        res->exit_code = -1;
        return rc;
    }
    while (!cmd_step(&c, 100)) {
    }
    *res = c.res;
    return cmd_rc(&c);
}

void
surge_slurm_cmd_result_fini(surge_slurm_cmd_result *res)
{
    if (res == NULL) {
        return;
    }
    free(res->out);
    memset(res, 0, sizeof *res);
    res->exit_code = -1;
}

void
surge_slurm_cmd_describe(const char *name, int rc, double timeout_s,
                         const surge_slurm_cmd_result *res, char *err,
                         size_t cap)
{
    if (rc == -ENOENT) {
        snprintf(err, cap, "%s: not found in PATH (is Slurm installed?)", name);
    } else if (rc == SURGE_ETIMEDOUT) {
        snprintf(err, cap, "%s: no answer after %g s, killed%s%s", name,
                 timeout_s, res->err[0] != '\0' ? ": " : "", res->err);
    } else if (rc < 0) {
        snprintf(err, cap, "%s: cannot run: %s", name, strerror(-rc));
    } else if (res->signal != 0) {
        snprintf(err, cap, "%s: killed by signal %d%s%s", name, res->signal,
                 res->err[0] != '\0' ? ": " : "", res->err);
    } else {
        snprintf(err, cap, "%s: exit status %d%s%s", name, res->exit_code,
                 res->err[0] != '\0' ? ": " : "",
                 res->err[0] != '\0' ? res->err : "(nothing on stderr)");
    }
}

/* ============================================================ parsing */

static const struct {
    const char *name;
    int cls;
} state_names[] = {
    {"PENDING", SURGE_SLURM_WAITING},
    {"CONFIGURING", SURGE_SLURM_WAITING},
    {"REQUEUED", SURGE_SLURM_WAITING},
    {"REQUEUE_FED", SURGE_SLURM_WAITING},
    {"REQUEUE_HOLD", SURGE_SLURM_WAITING},
    {"RESV_DEL_HOLD", SURGE_SLURM_WAITING},
    {"POWER_UP_NODE", SURGE_SLURM_WAITING},
    {"RUNNING", SURGE_SLURM_ACTIVE},
    {"COMPLETING", SURGE_SLURM_ACTIVE},
    {"SUSPENDED", SURGE_SLURM_ACTIVE},
    {"STOPPED", SURGE_SLURM_ACTIVE},
    {"SIGNALING", SURGE_SLURM_ACTIVE},
    {"STAGE_OUT", SURGE_SLURM_ACTIVE},
    {"RESIZING", SURGE_SLURM_ACTIVE},
    {"UPDATE_DB", SURGE_SLURM_ACTIVE},
    {"COMPLETED", SURGE_SLURM_ENDED_OK},
    {"FAILED", SURGE_SLURM_ENDED_FAILED},
    {"CANCELLED", SURGE_SLURM_ENDED_CANCELLED},
    {"REVOKED", SURGE_SLURM_ENDED_CANCELLED},
    {"TIMEOUT", SURGE_SLURM_ENDED_KILLED},
    {"NODE_FAIL", SURGE_SLURM_ENDED_KILLED},
    {"PREEMPTED", SURGE_SLURM_ENDED_KILLED},
    {"BOOT_FAIL", SURGE_SLURM_ENDED_KILLED},
    {"DEADLINE", SURGE_SLURM_ENDED_KILLED},
    {"OUT_OF_MEMORY", SURGE_SLURM_ENDED_KILLED},
    {"SPECIAL_EXIT", SURGE_SLURM_ENDED_FAILED},
};

int
surge_slurm_state_class(const char *state)
{
    if (state == NULL) {
        return SURGE_SLURM_UNKNOWN;
    }
    size_t len = strcspn(state, " +\t\n|");
    for (size_t i = 0; i < sizeof state_names / sizeof state_names[0]; i++) {
        if (strlen(state_names[i].name) == len &&
            strncmp(state_names[i].name, state, len) == 0) {
            return state_names[i].cls;
        }
    }
    return SURGE_SLURM_UNKNOWN;
}

static bool
is_ended(int cls)
{
    return cls >= SURGE_SLURM_ENDED_OK;
}

int
surge_slurm_parse_jobid(const char *out, char *jobid, size_t cap)
{
    if (out == NULL) {
        return SURGE_EPROTO;
    }
    /* sbatch may print warnings on stdout before the id on some sites:
     * take the last non-empty line. */
    const char *line = NULL, *p = out;
    size_t llen = 0;
    while (*p != '\0') {
        size_t n = strcspn(p, "\n");
        size_t t = n;
        while (t > 0 && (p[t - 1] == '\r' || p[t - 1] == ' ')) {
            t--;
        }
        if (t > 0) {
            line = p;
            llen = t;
        }
        p += n;
        if (*p == '\n') {
            p++;
        }
    }
    if (line == NULL) {
        return SURGE_EPROTO;
    }
    size_t idlen = 0;
    while (idlen < llen && line[idlen] >= '0' && line[idlen] <= '9') {
        idlen++;
    }
    if (idlen == 0 || idlen > 18 || (idlen < llen && line[idlen] != ';') ||
        idlen + 1 > cap) {
        return SURGE_EPROTO;
    }
    memcpy(jobid, line, idlen);
    jobid[idlen] = '\0';
    return 0;
}

int
surge_slurm_parse_exitcode(const char *text, int *exit_code, int *signal)
{
    if (text == NULL) {
        return -EINVAL;
    }
    const char *p = strstr(text, "ExitCode=");
    p = p != NULL ? p + strlen("ExitCode=") : text;
    char *end;
    errno = 0;
    long x = strtol(p, &end, 10);
    if (errno != 0 || end == p || *end != ':' || x < 0 || x > 255) {
        return -EINVAL;
    }
    const char *q = end + 1;
    long y = strtol(q, &end, 10);
    if (errno != 0 || end == q || y < 0 || y > 255 ||
        (*end != '\0' && *end != ' ' && *end != '\n' && *end != '|')) {
        return -EINVAL;
    }
    *exit_code = (int)x;
    *signal = (int)y;
    return 0;
}

int
surge_slurm_shell_quote(const char *s, char *out, size_t cap)
{
    size_t o = 0;
    if (cap < 3) {
        return -ENAMETOOLONG;
    }
    out[o++] = '\'';
    for (const char *p = s; *p != '\0'; p++) {
        if (*p == '\'') {
            /* close the quote, an escaped quote, reopen */
            if (o + 4 >= cap) {
                return -ENAMETOOLONG;
            }
            memcpy(out + o, "'\\''", 4);
            o += 4;
        } else {
            if (o + 1 >= cap) {
                return -ENAMETOOLONG;
            }
            out[o++] = *p;
        }
    }
    if (o + 2 > cap) {
        return -ENAMETOOLONG;
    }
    out[o++] = '\'';
    out[o] = '\0';
    return 0;
}

/* ============================================================ scripts */

/* A growing text buffer for scripts; errors stick (ENOMEM, too long). */
struct text {
    char *s;
    size_t len, cap;
    int rc;
};

#define TEXT_MAX (4u << 20)

static void
text_add(struct text *t, const char *s)
{
    size_t n = strlen(s);
    if (t->rc != 0) {
        return;
    }
    if (t->len + n + 1 > TEXT_MAX) {
        t->rc = -E2BIG;
        return;
    }
    if (t->len + n + 1 > t->cap) {
        size_t ncap = t->cap == 0 ? 4096 : t->cap;
        while (ncap < t->len + n + 1) {
            ncap *= 2;
        }
        char *p = realloc(t->s, ncap);
        if (p == NULL) {
            t->rc = -ENOMEM;
            return;
        }
        t->s = p;
        t->cap = ncap;
    }
    memcpy(t->s + t->len, s, n + 1);
    t->len += n;
}

static void
text_quoted(struct text *t, const char *s)
{
    size_t cap = strlen(s) * 4 + 3;
    char *q = malloc(cap);
    if (q == NULL) {
        t->rc = t->rc ? t->rc : -ENOMEM;
        return;
    }
    if (surge_slurm_shell_quote(s, q, cap) == 0) {
        text_add(t, q);
    } else {
        t->rc = t->rc ? t->rc : -E2BIG;
    }
    free(q);
}

static bool
is_identifier(const char *s, size_t len)
{
    if (len == 0 || (s[0] >= '0' && s[0] <= '9')) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              (c >= '0' && c <= '9') || c == '_')) {
            return false;
        }
    }
    return true;
}

/* Write text to path with mode, replacing it (temp file + rename). */
static int
write_private(const char *path, const char *text, mode_t mode)
{
    char tmp[MAX_PATH];
    int n = snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    if (n < 0 || (size_t)n >= sizeof tmp) {
        return -ENAMETOOLONG;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        return -errno;
    }
    int rc = 0;
    size_t len = strlen(text), done = 0;
    while (done < len) {
        ssize_t w = write(fd, text + done, len - done);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            rc = w < 0 ? -errno : -EIO;
            break;
        }
        done += (size_t)w;
    }
    /* The mode given to open() is reduced by the umask; set it exactly. */
    if (rc == 0 && fchmod(fd, mode) != 0) {
        rc = -errno;
    }
    if (close(fd) != 0 && rc == 0) {
        rc = -errno;
    }
    if (rc == 0 && rename(tmp, path) != 0) {
        rc = -errno;
    }
    if (rc != 0) {
        unlink(tmp);
    }
    return rc;
}

int
surge_slurm_write_job_script(const char *path, char *const *argv,
                             char *const *env, const char *workdir,
                             const char *log_path, const char *exit_path,
                             char *err, size_t errcap)
{
    struct text t = {NULL, 0, 0, 0};
    if (argv == NULL || argv[0] == NULL) {
        snprintf(err, errcap, "empty command");
        return SURGE_ECONFIG;
    }
    text_add(&t, "#!/bin/bash\n"
                 "# Written by surge launch for one attempt of one run. It "
                 "holds the\n# run's key: keep it private (mode 0700).\n"
                 "cd ");
    text_quoted(&t, workdir);
    text_add(&t, " || exit 1\nexec >>");
    text_quoted(&t, log_path);
    text_add(&t, " 2>&1\n");
    for (size_t i = 0; env != NULL && env[i] != NULL; i++) {
        const char *eq = strchr(env[i], '=');
        if (eq == NULL || !is_identifier(env[i], (size_t)(eq - env[i]))) {
            snprintf(err, errcap,
                     "environment entry '%.100s' is not NAME=value", env[i]);
            free(t.s);
            return SURGE_ECONFIG;
        }
        text_add(&t, "export ");
        char name[256];
        size_t nlen = (size_t)(eq - env[i]);
        if (nlen >= sizeof name) {
            snprintf(err, errcap, "environment name too long: %.100s", env[i]);
            free(t.s);
            return SURGE_ECONFIG;
        }
        memcpy(name, env[i], nlen);
        name[nlen] = '\0';
        text_add(&t, name);
        text_add(&t, "=");
        text_quoted(&t, eq + 1);
        text_add(&t, "\n");
    }
    for (size_t i = 0; argv[i] != NULL; i++) {
        if (i > 0) {
            text_add(&t, " ");
        }
        text_quoted(&t, argv[i]);
    }
    text_add(&t, "\nrc=$?\nprintf '%s\\n' \"$rc\" > ");
    text_quoted(&t, exit_path);
    text_add(&t, ".tmp && mv -f ");
    text_quoted(&t, exit_path);
    text_add(&t, ".tmp ");
    text_quoted(&t, exit_path);
    text_add(&t, "\nexit \"$rc\"\n");
    int rc = t.rc;
    if (rc == 0) {
        rc = write_private(path, t.s, 0700);
    }
    if (rc != 0) {
        snprintf(err, errcap, "%s: %s", path, strerror(-rc));
    }
    free(t.s);
    return rc;
}

/* ============================================================ scheduler */

enum jstate {
    J_QUEUED = 0, /* script written, not yet given to sbatch */
    J_SUBMITTED,  /* sbatch accepted it: jobid set */
    J_DONE        /* ended: status below is final */
};

struct sjob {
    uint64_t id; /* handle; 0: free slot */
    int64_t sim; /* for log lines */
    int64_t attempt;
    int js;                            /* enum jstate */
    char jobid[SURGE_SLURM_MAX_JOBID]; /* "123" or "123_4" once submitted */
    char *script;                      /* path of the batch script (owned) */
    char *exit_path;                   /* where the script writes its status */
    char *log_path;                    /* the job's log (owned) */
    char *workdir;                     /* its working directory (owned) */
    int slurm_class;                   /* enum surge_slurm_class, last seen */
    char slurm_state[32];              /* last state word seen */
    int seen;                          /* squeue listed it at least once */
    int misses;                        /* squeue rounds in a row without it */
    int cancelled;                     /* cancel was asked */
    double kill_at;      /* monotonic s: escalate to KILL; 0 none */
    surge_job_status st; /* what poll reports */
};

struct slurm {
    const surge_study *s;
    int steps_mode;       /* inside an allocation: srun children */
    void *local;          /* steps mode: the local scheduler */
    char job_name[128];   /* --job-name of all our jobs */
    double cmd_timeout_s; /* per Slurm command */
    struct sjob *jobs;    /* (cap) slots */
    size_t cap;
    uint64_t next_id;
    size_t nqueued;   /* jobs in J_QUEUED */
    struct cmd query; /* background squeue; pid 0: none */
    int query_running;
    double next_query;   /* monotonic s */
    int64_t arrays;      /* job arrays submitted (for names) */
    double last_refresh; /* monotonic s */
    size_t max_array;    /* tasks per array: Slurm's MaxArraySize */
};

static struct sjob *
find_job(struct slurm *sl, uint64_t id)
{
    for (size_t i = 0; id != 0 && i < sl->cap; i++) {
        if (sl->jobs[i].id == id) {
            return &sl->jobs[i];
        }
    }
    return NULL;
}

static void
job_free(struct sjob *j)
{
    free(j->script);
    free(j->exit_path);
    free(j->log_path);
    free(j->workdir);
    memset(j, 0, sizeof *j);
}

static void
job_done(struct sjob *j, int exit_code, int sig)
{
    j->js = J_DONE;
    j->st.state = SURGE_JOB_DONE;
    j->st.exit_code = exit_code;
    j->st.signal = sig;
    j->st.cancelled = j->cancelled;
    j->kill_at = 0;
}

/* Append one line to a job's log, so that the launcher's "see LOG" shows
 * why Slurm could not run it. */
static void
note_in_log(const struct sjob *j, const char *msg)
{
    int fd = open(j->log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        return;
    }
    char line[1536];
    int n = snprintf(line, sizeof line, "surge launch (slurm): %s\n", msg);
    if (n > 0) {
        ssize_t w = write(
            fd, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
        (void)w;
    }
    close(fd);
}

/* The sbatch options shared by every job of the study. */
static int
push_sbatch_common(struct slurm *sl, surge_strv *v)
{
    const surge_study *s = sl->s;
    char buf[MAX_PATH];
    int rc = surge_strv_push(v, "sbatch");
    rc = rc ? rc : surge_strv_push(v, "--parsable");
    snprintf(buf, sizeof buf, "--job-name=%s", sl->job_name);
    rc = rc ? rc : surge_strv_push(v, buf);
    snprintf(buf, sizeof buf, "--ntasks=%lld", (long long)s->ranks);
    rc = rc ? rc : surge_strv_push(v, buf);
    /* The launcher retries failed runs itself and tells the server; a
     * requeue by Slurm would run the same attempt twice behind its back. */
    rc = rc ? rc : surge_strv_push(v, "--no-requeue");
    rc = rc ? rc : surge_strv_push(v, "--open-mode=append");
    if (s->slurm_partition[0] != '\0') {
        snprintf(buf, sizeof buf, "--partition=%s", s->slurm_partition);
        rc = rc ? rc : surge_strv_push(v, buf);
    }
    if (s->slurm_account[0] != '\0') {
        snprintf(buf, sizeof buf, "--account=%s", s->slurm_account);
        rc = rc ? rc : surge_strv_push(v, buf);
    }
    if (s->slurm_time_limit[0] != '\0') {
        snprintf(buf, sizeof buf, "--time=%s", s->slurm_time_limit);
        rc = rc ? rc : surge_strv_push(v, buf);
    }
    for (size_t i = 0; rc == 0 && i < s->slurm_sbatch_args.n; i++) {
        rc = surge_strv_push(v, s->slurm_sbatch_args.v[i]);
    }
    return rc;
}

/* Run sbatch with argv; the job id into jobid. 0, or an error with the
 * reason in err. */
static int
run_sbatch(struct slurm *sl, surge_strv *argv, char *jobid, size_t cap,
           char *err, size_t errcap)
{
    surge_slurm_cmd_result res;
    int rc =
        surge_slurm_cmd_run(argv->v, sl->cmd_timeout_s, SMALL_OUT_CAP, &res);
    if (rc != 0 || res.exit_code != 0) {
        surge_slurm_cmd_describe("sbatch", rc, sl->cmd_timeout_s, &res, err,
                                 errcap);
        rc = rc != 0 ? rc : SURGE_ECONFIG;
    } else if (surge_slurm_parse_jobid(res.out, jobid, cap) != 0) {
        snprintf(err, errcap, "sbatch: no job id in its output '%.200s'",
                 res.out != NULL ? res.out : "");
        rc = SURGE_EPROTO;
    }
    surge_slurm_cmd_result_fini(&res);
    return rc;
}

/* Hand one queued job to sbatch on its own. */
static void
submit_one(struct slurm *sl, struct sjob *j)
{
    surge_strv argv = {NULL, 0};
    char buf[MAX_PATH], err[1024];
    int rc = push_sbatch_common(sl, &argv);
    snprintf(buf, sizeof buf, "--chdir=%s", j->workdir);
    rc = rc ? rc : surge_strv_push(&argv, buf);
    snprintf(buf, sizeof buf, "--output=%s", j->log_path);
    rc = rc ? rc : surge_strv_push(&argv, buf);
    rc = rc ? rc : surge_strv_push(&argv, j->script);
    if (rc == 0) {
        rc = run_sbatch(sl, &argv, j->jobid, sizeof j->jobid, err, sizeof err);
    } else {
        snprintf(err, sizeof err, "%s", surge_strerror(rc));
    }
    surge_strv_free(&argv);
    sl->nqueued--;
    if (rc != 0) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
                  "sim %lld attempt %lld: not submitted: %s", (long long)j->sim,
                  (long long)j->attempt, err);
        note_in_log(j, err);
        job_done(j, -1, 0);
        return;
    }
    j->js = J_SUBMITTED;
    SURGE_LOG(SURGE_LOG_DEBUG, COMPONENT, "sim %lld attempt %lld: Slurm job %s",
              (long long)j->sim, (long long)j->attempt, j->jobid);
}

/* Hand n queued jobs (js[0..n-1]) to one `sbatch --array`: a dispatcher
 * script runs task k's own script. */
static void
submit_array(struct slurm *sl, struct sjob **js, size_t n)
{
    struct text t = {NULL, 0, 0, 0};
    surge_strv argv = {NULL, 0};
    char path[MAX_PATH], buf[MAX_PATH], err[1024], jobid[32];
    int rc;
    text_add(&t, "#!/bin/bash\n# Written by surge launch: task k of this "
                 "array runs the k-th run's script.\ncase "
                 "\"$SLURM_ARRAY_TASK_ID\" in\n");
    for (size_t k = 0; k < n; k++) {
        snprintf(buf, sizeof buf, "%zu) exec /bin/bash ", k);
        text_add(&t, buf);
        text_quoted(&t, js[k]->script);
        text_add(&t, " ;;\n");
    }
    text_add(&t, "esac\necho \"surge: no task $SLURM_ARRAY_TASK_ID in this "
                 "array\" >&2\nexit 1\n");
    sl->arrays++;
    /* Next to the first run's folder: the output folder is shared by the
     * nodes, which the runs need anyway. */
    snprintf(path, sizeof path, "%s/../slurm-array-%lld.sh", js[0]->workdir,
             (long long)sl->arrays);
    rc = t.rc;
    if (rc == 0) {
        rc = write_private(path, t.s, 0700);
    }
    free(t.s);
    if (rc != 0) {
        snprintf(err, sizeof err, "%.900s: %s", path, strerror(-rc));
        goto fail;
    }
    rc = push_sbatch_common(sl, &argv);
    if (sl->s->max_concurrent > 0) {
        snprintf(buf, sizeof buf, "--array=0-%zu%%%lld", n - 1,
                 (long long)sl->s->max_concurrent);
    } else {
        snprintf(buf, sizeof buf, "--array=0-%zu", n - 1);
    }
    rc = rc ? rc : surge_strv_push(&argv, buf);
    snprintf(buf, sizeof buf, "--chdir=%s/..", js[0]->workdir);
    rc = rc ? rc : surge_strv_push(&argv, buf);
    /* Each task's script appends to its run's own log; what Slurm itself
     * says about a task goes here. */
    snprintf(buf, sizeof buf, "--output=%s/../slurm-array-%lld-%%a.out",
             js[0]->workdir, (long long)sl->arrays);
    rc = rc ? rc : surge_strv_push(&argv, buf);
    rc = rc ? rc : surge_strv_push(&argv, path);
    if (rc != 0) {
        snprintf(err, sizeof err, "%s", surge_strerror(rc));
        goto fail;
    }
    rc = run_sbatch(sl, &argv, jobid, sizeof jobid, err, sizeof err);
    if (rc != 0) {
        goto fail;
    }
    surge_strv_free(&argv);
    for (size_t k = 0; k < n; k++) {
        snprintf(js[k]->jobid, sizeof js[k]->jobid, "%s_%zu", jobid, k);
        js[k]->js = J_SUBMITTED;
        sl->nqueued--;
    }
    SURGE_LOG(SURGE_LOG_INFO, COMPONENT, "job array %s: %zu runs", jobid, n);
    return;
fail:
    surge_strv_free(&argv);
    SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
              "job array of %zu runs not "
              "submitted: %s",
              n, err);
    for (size_t k = 0; k < n; k++) {
        note_in_log(js[k], err);
        job_done(js[k], -1, 0);
        sl->nqueued--;
    }
}

/* Submit everything queued since the last call. */
static void
flush_queued(struct slurm *sl)
{
    if (sl->nqueued == 0) {
        return;
    }
    int64_t threshold = sl->s->slurm_array_threshold;
    if (threshold > 0 && (int64_t)sl->nqueued >= threshold &&
        sl->nqueued >= 2) {
        struct sjob **js = calloc(sl->nqueued, sizeof *js);
        if (js != NULL) {
            size_t n = 0;
            for (size_t i = 0; i < sl->cap; i++) {
                if (sl->jobs[i].id != 0 && sl->jobs[i].js == J_QUEUED) {
                    js[n++] = &sl->jobs[i];
                }
            }
            /* Slurm refuses arrays beyond MaxArraySize tasks: several. */
            for (size_t k = 0; k < n; k += sl->max_array) {
                size_t m = n - k < sl->max_array ? n - k : sl->max_array;
                if (m >= 2) {
                    submit_array(sl, js + k, m);
                } else {
                    submit_one(sl, js[k]);
                }
            }
            free(js);
            sl->next_query = 0;
            return;
        }
        /* No memory for the list: one sbatch each still works. */
    }
    for (size_t i = 0; i < sl->cap && sl->nqueued > 0; i++) {
        if (sl->jobs[i].id != 0 && sl->jobs[i].js == J_QUEUED) {
            submit_one(sl, &sl->jobs[i]);
        }
    }
    sl->next_query = 0;
}

/* ------------------------------------------------------------ states */

/* The exit status the job's script wrote, or -1 when there is none. */
static int
read_exit_file(const struct sjob *j)
{
    char *text = NULL;
    size_t len = 0;
    int64_t v;
    if (surge_deploy_read_file(j->exit_path, 64, &text, &len) != 0) {
        return -1;
    }
    text[strcspn(text, "\n")] = '\0';
    int rc = surge_parse_int64(text, &v);
    free(text);
    return rc == 0 && v >= 0 && v <= 255 ? (int)v : -1;
}

/* ExitCode=X:Y of a job that has ended, from scontrol. 0 or -1. */
static int
scontrol_exit(struct slurm *sl, const struct sjob *j, int *code, int *sig)
{
    char *argv[] = {"scontrol", "-o", "show", "job", (char *)j->jobid, NULL};
    surge_slurm_cmd_result res;
    int rc = surge_slurm_cmd_run(argv, sl->cmd_timeout_s, SMALL_OUT_CAP, &res);
    int ok = -1;
    if (rc == 0 && res.exit_code == 0 && res.out != NULL &&
        surge_slurm_parse_exitcode(res.out, code, sig) == 0) {
        ok = 0;
    }
    surge_slurm_cmd_result_fini(&res);
    return ok;
}

/* A job reached an end state (cls): decide its exit status and log what
 * Slurm did to it when it was not a plain exit. */
static void
job_ended(struct slurm *sl, struct sjob *j, int cls, const char *reason)
{
    int code = read_exit_file(j), sig = 0;
    if (code >= 0 && cls != SURGE_SLURM_ENDED_KILLED &&
        cls != SURGE_SLURM_ENDED_CANCELLED) {
        job_done(j, code, 0);
        return;
    }
    switch (cls) {
    case SURGE_SLURM_ENDED_OK:
        job_done(j, 0, 0);
        return;
    case SURGE_SLURM_ENDED_FAILED:
        if (scontrol_exit(sl, j, &code, &sig) == 0) {
            job_done(j, sig != 0 ? -1 : (code != 0 ? code : 1), sig);
        } else {
            job_done(j, 1, 0);
        }
        break;
    case SURGE_SLURM_ENDED_CANCELLED:
        job_done(j, -1, SIGTERM);
        break;
    default: /* killed by Slurm: time limit, node failure, memory... */
        job_done(j, -1, SIGKILL);
        break;
    }
    if (!j->cancelled || cls != SURGE_SLURM_ENDED_CANCELLED) {
        SURGE_LOG(SURGE_LOG_WARN, COMPONENT,
                  "sim %lld attempt %lld: Slurm job %s ended %s%s%s%s",
                  (long long)j->sim, (long long)j->attempt, j->jobid,
                  j->slurm_state, reason[0] != '\0' ? " (" : "", reason,
                  reason[0] != '\0' ? ")" : "");
        char msg[512];
        snprintf(msg, sizeof msg, "Slurm job %s ended %s %s", j->jobid,
                 j->slurm_state, reason);
        note_in_log(j, msg);
    }
}

/* A job squeue stopped listing: sacct may know (with slurmdbd); else its
 * exit file; else it is lost. */
static void
job_vanished(struct slurm *sl, struct sjob *j)
{
    if (j->cancelled) {
        /* Slurm forgets a pending array task at once when it is cancelled
         * (squeue and scontrol no longer know it): nothing ran. */
        job_done(j, -1, SIGTERM);
        return;
    }
    char *argv[] = {"sacct", "-n",     "-P", "-X",
                    "-j",    j->jobid, "-o", "JobID,State,ExitCode",
                    NULL};
    surge_slurm_cmd_result res;
    int rc = surge_slurm_cmd_run(argv, sl->cmd_timeout_s, SMALL_OUT_CAP, &res);
    if (rc == 0 && res.exit_code == 0 && res.out != NULL) {
        /* "123_4|COMPLETED|0:0" */
        char *line = res.out;
        while (line != NULL && *line != '\0') {
            char *nl = strchr(line, '\n');
            if (nl != NULL) {
                *nl = '\0';
            }
            char *bar1 = strchr(line, '|');
            char *bar2 = bar1 != NULL ? strchr(bar1 + 1, '|') : NULL;
            if (bar2 != NULL) {
                *bar1 = '\0';
                *bar2 = '\0';
                int cls = surge_slurm_state_class(bar1 + 1);
                if (strcmp(line, j->jobid) == 0 && is_ended(cls)) {
                    snprintf(j->slurm_state, sizeof j->slurm_state, "%.31s",
                             bar1 + 1);
                    job_ended(sl, j, cls, "found by sacct");
                    surge_slurm_cmd_result_fini(&res);
                    return;
                }
            }
            line = nl != NULL ? nl + 1 : NULL;
        }
    }
    char why[1200];
    surge_slurm_cmd_describe("sacct", rc, sl->cmd_timeout_s, &res, why,
                             sizeof why);
    surge_slurm_cmd_result_fini(&res);
    int code = read_exit_file(j);
    if (code >= 0) {
        job_done(j, code, 0);
        return;
    }
    SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
              "sim %lld attempt %lld: Slurm job %s disappeared from squeue "
              "without an exit status (cancelled while pending, or purged "
              "after MinJobAge; %s)",
              (long long)j->sim, (long long)j->attempt, j->jobid,
              rc == 0 && res.exit_code == 0 ? "sacct does not list it" : why);
    note_in_log(j, "the Slurm job disappeared without an exit status");
    job_done(j, -1, 0);
}

/* Apply a finished `squeue -h -r -t all --name=... -o %i|%T|%r`. */
static void
apply_query(struct slurm *sl)
{
    struct cmd *c = &sl->query;
    int rc = cmd_rc(c);
    if (rc != 0 || c->res.exit_code != 0 || c->res.out_truncated) {
        char why[1200];
        surge_slurm_cmd_describe("squeue", rc, sl->cmd_timeout_s, &c->res, why,
                                 sizeof why);
        if (c->res.out_truncated) {
            snprintf(why, sizeof why, "squeue: output over %u bytes",
                     SQUEUE_OUT_CAP);
        }
        /* A controller that does not answer for a while is not a reason
         * to fail runs: keep the last states and try again. */
        SURGE_LOG(SURGE_LOG_WARN, COMPONENT, "job states not updated: %s", why);
        return;
    }
    for (size_t i = 0; i < sl->cap; i++) {
        sl->jobs[i].seen = sl->jobs[i].js == J_SUBMITTED ? 0 : 1;
    }
    char *line = c->res.out;
    while (line != NULL && *line != '\0') {
        char *nl = strchr(line, '\n');
        if (nl != NULL) {
            *nl = '\0';
        }
        char *bar1 = strchr(line, '|');
        char *bar2 = bar1 != NULL ? strchr(bar1 + 1, '|') : NULL;
        if (bar2 != NULL) {
            *bar1 = '\0';
            *bar2 = '\0';
            for (size_t i = 0; i < sl->cap; i++) {
                struct sjob *j = &sl->jobs[i];
                if (j->id == 0 || j->js != J_SUBMITTED ||
                    strcmp(j->jobid, line) != 0) {
                    continue;
                }
                j->seen = 1;
                j->misses = 0;
                snprintf(j->slurm_state, sizeof j->slurm_state, "%.31s",
                         bar1 + 1);
                int cls = surge_slurm_state_class(bar1 + 1);
                if (cls == SURGE_SLURM_UNKNOWN) {
                    SURGE_LOG(SURGE_LOG_WARN, COMPONENT,
                              "Slurm job %s: unknown state '%s'", j->jobid,
                              j->slurm_state);
                    break;
                }
                j->slurm_class = cls;
                if (cls == SURGE_SLURM_WAITING) {
                    j->st.state = SURGE_JOB_PENDING;
                } else if (cls == SURGE_SLURM_ACTIVE) {
                    j->st.state = SURGE_JOB_RUNNING;
                } else {
                    job_ended(sl, j, cls, bar2 + 1);
                }
                break;
            }
        }
        line = nl != NULL ? nl + 1 : NULL;
    }
    for (size_t i = 0; i < sl->cap; i++) {
        struct sjob *j = &sl->jobs[i];
        if (j->id != 0 && j->js == J_SUBMITTED && !j->seen &&
            ++j->misses >= MISSES_BEFORE_LOST) {
            job_vanished(sl, j);
        }
    }
}

static bool
any_submitted(const struct slurm *sl)
{
    for (size_t i = 0; i < sl->cap; i++) {
        if (sl->jobs[i].id != 0 && sl->jobs[i].js == J_SUBMITTED) {
            return true;
        }
    }
    return false;
}

/* scancel jobid [extra flags]; logs a failure, returns 0 or -1. */
static int
run_scancel(struct slurm *sl, const char *jobid, bool kill)
{
    char *argv_term[] = {"scancel", (char *)jobid, NULL};
    char *argv_kill[] = {"scancel", "--signal=KILL", "--full", (char *)jobid,
                         NULL};
    surge_slurm_cmd_result res;
    int rc = surge_slurm_cmd_run(kill ? argv_kill : argv_term,
                                 sl->cmd_timeout_s, SMALL_OUT_CAP, &res);
    int ok = 0;
    if (rc != 0 || res.exit_code != 0) {
        char why[1200];
        surge_slurm_cmd_describe("scancel", rc, sl->cmd_timeout_s, &res, why,
                                 sizeof why);
        SURGE_LOG(SURGE_LOG_WARN, COMPONENT, "job %s: %s", jobid, why);
        ok = -1;
    }
    surge_slurm_cmd_result_fini(&res);
    return ok;
}

/* Submit what is queued, escalate cancels past their grace, and move the
 * background squeue on: start one when due, apply it when done. Never
 * waits for anything but the short Slurm commands it starts itself
 * (sbatch, scancel, scontrol, sacct), each under the command timeout. */
static void
refresh(struct slurm *sl)
{
    double now = surge_now_s();
    /* The launcher polls each job every loop turn: one refresh per turn
     * is enough. */
    if (sl->nqueued == 0 && now - sl->last_refresh < 0.02) {
        return;
    }
    sl->last_refresh = now;
    flush_queued(sl);
    for (size_t i = 0; i < sl->cap; i++) {
        struct sjob *j = &sl->jobs[i];
        if (j->id != 0 && j->js == J_SUBMITTED && j->kill_at > 0 &&
            now >= j->kill_at) {
            j->kill_at = 0;
            run_scancel(sl, j->jobid, true);
        }
    }
    if (sl->query_running) {
        if (!cmd_step(&sl->query, 0)) {
            return;
        }
        sl->query_running = 0;
        apply_query(sl);
        surge_slurm_cmd_result_fini(&sl->query.res);
        sl->next_query = surge_now_s() + sl->s->slurm_poll_interval_s;
        return;
    }
    if (now < sl->next_query || !any_submitted(sl)) {
        return;
    }
    char name[160];
    snprintf(name, sizeof name, "--name=%s", sl->job_name);
    char *argv[] = {"squeue", "-h", "-r",       "-t", "all",
                    name,     "-o", "%i|%T|%r", NULL};
    int rc = cmd_start(&sl->query, argv, sl->cmd_timeout_s, SQUEUE_OUT_CAP);
    if (rc != 0) {
        SURGE_LOG(SURGE_LOG_WARN, COMPONENT, "squeue: cannot run: %s",
                  strerror(-rc));
        sl->next_query = now + sl->s->slurm_poll_interval_s;
        return;
    }
    sl->query_running = 1;
}

/* ------------------------------------------------------------ ops */

/* Tasks one job array may have: MaxArraySize from `scontrol show config`
 * (array indices run from 0 to MaxArraySize - 1), or Slurm's default 1001
 * when it cannot be read. */
static size_t
max_array_size(struct slurm *sl)
{
    char *argv[] = {"scontrol", "show", "config", NULL};
    surge_slurm_cmd_result res;
    size_t n = 1001;
    int rc = surge_slurm_cmd_run(argv, sl->cmd_timeout_s, SMALL_OUT_CAP, &res);
    const char *p = rc == 0 && res.exit_code == 0 && res.out != NULL
                        ? strstr(res.out, "MaxArraySize")
                        : NULL;
    if (p != NULL) {
        p += strcspn(p, "=");
        if (*p == '=') {
            char *end;
            long v = strtol(p + 1, &end, 10);
            if (end != p + 1 && v >= 1 && v <= 4000001) {
                n = (size_t)v;
            }
        }
    }
    surge_slurm_cmd_result_fini(&res);
    return n;
}

static int
slurm_create(void **state, const surge_study *s, char *err, size_t errcap)
{
    struct slurm *sl = calloc(1, sizeof *sl);
    char tag[9];
    int rc;
    if (sl == NULL) {
        return -ENOMEM;
    }
    sl->s = s;
    sl->next_id = 1;
    sl->cmd_timeout_s = SURGE_SLURM_CMD_TIMEOUT_S;
    sl->query.pid = 0;
    const char *alloc = getenv("SLURM_JOB_ID");
    if (alloc != NULL && alloc[0] != '\0') {
        /* Inside an allocation: srun job steps, run like local jobs. */
        sl->steps_mode = 1;
        rc = surge_sched_local_ops.create(&sl->local, s, err, errcap);
        if (rc != 0) {
            free(sl);
            return rc;
        }
        SURGE_LOG(SURGE_LOG_INFO, COMPONENT,
                  "inside Slurm job %s: runs are srun job steps", alloc);
        *state = sl;
        return 0;
    }
    rc = surge_deploy_random_hex(tag, 4);
    if (rc != 0) {
        free(sl);
        snprintf(err, errcap, "random job name tag: %s", strerror(-rc));
        return rc;
    }
    snprintf(sl->job_name, sizeof sl->job_name, "surge-%.64s-%s", s->name, tag);
    /* Fail now, not run after run, when Slurm is missing or refuses the
     * options: sbatch --test-only checks partition, account and time limit
     * without queueing anything. */
    surge_strv argv = {NULL, 0};
    rc = push_sbatch_common(sl, &argv);
    rc = rc ? rc : surge_strv_push(&argv, "--test-only");
    rc = rc ? rc : surge_strv_push(&argv, "--output=/dev/null");
    rc = rc ? rc : surge_strv_push(&argv, "--wrap=true");
    if (rc == 0) {
        surge_slurm_cmd_result res;
        rc =
            surge_slurm_cmd_run(argv.v, sl->cmd_timeout_s, SMALL_OUT_CAP, &res);
        if (rc != 0 || res.exit_code != 0) {
            char why[1200];
            surge_slurm_cmd_describe("sbatch --test-only", rc,
                                     sl->cmd_timeout_s, &res, why, sizeof why);
            snprintf(err, errcap,
                     "scheduler.slurm: Slurm refuses the job "
                     "options: %s",
                     why);
            rc = rc == -ENOENT ? rc : SURGE_ECONFIG;
        }
        surge_slurm_cmd_result_fini(&res);
    }
    surge_strv_free(&argv);
    if (rc != 0) {
        free(sl);
        return rc;
    }
    sl->max_array = max_array_size(sl);
    SURGE_LOG(SURGE_LOG_INFO, COMPONENT, "runs are Slurm jobs named %s",
              sl->job_name);
    *state = sl;
    return 0;
}

static int
slurm_wrap(void *state, char *const *solver_argv, int64_t ranks,
           surge_strv *out)
{
    struct slurm *sl = state;
    const surge_study *s = sl->s;
    surge_strv v = {NULL, 0};
    char buf[256];
    int rc = 0;
    if (strcmp(s->slurm_mpi, "mpirun") == 0) {
        /* Open MPI's mpirun inside the job's allocation: it reads the
         * allocation from the environment Slurm gives the batch script. */
        rc = surge_strv_push(&v, s->mpirun[0] != '\0' ? s->mpirun : "mpirun");
        snprintf(buf, sizeof buf, "%lld", (long long)ranks);
        rc = rc ? rc : surge_strv_push(&v, "-np");
        rc = rc ? rc : surge_strv_push(&v, buf);
        if (rc == 0 && geteuid() == 0) {
            rc = surge_strv_push(&v, "--allow-run-as-root");
        }
        for (size_t i = 0; rc == 0 && i < s->mpirun_args.n; i++) {
            rc = surge_strv_push(&v, s->mpirun_args.v[i]);
        }
    } else {
        rc = surge_strv_push(&v, "srun");
        snprintf(buf, sizeof buf, "--mpi=%s", s->slurm_mpi);
        rc = rc ? rc : surge_strv_push(&v, buf);
        snprintf(buf, sizeof buf, "--ntasks=%lld", (long long)ranks);
        rc = rc ? rc : surge_strv_push(&v, buf);
        /* One rank that dies ends the step at once, instead of leaving
         * the others blocked in MPI until the silence timeout. */
        rc = rc ? rc : surge_strv_push(&v, "--kill-on-bad-exit=1");
        if (rc == 0 && sl->steps_mode) {
            snprintf(buf, sizeof buf, "--job-name=%s-steps", s->name);
            rc = surge_strv_push(&v, buf);
            /* Only the run's CPUs: a step without --exact waits for every
             * CPU of the allocation, so runs (and a server step) would
             * take turns instead of running side by side (Slurm 22.05). */
            rc = rc ? rc : surge_strv_push(&v, "--exact");
        }
    }
    return surge_strv_finish(&v, rc, solver_argv, out);
}

int
surge_slurm_wrap_server(void *state, char *const *server_argv, surge_strv *out)
{
    struct slurm *sl = state;
    const surge_study *s = sl->s;
    surge_strv v = {NULL, 0};
    char buf[256];
    int rc = 0;
    if (!s->slurm_server_as_job) {
        return surge_strv_finish(&v, 0, server_argv, out);
    }
    /* The server is started with execve (no PATH search): give srun's
     * full path. */
    char srun[MAX_PATH];
    rc = surge_deploy_find_in_path("srun", srun, sizeof srun);
    rc = rc ? rc : surge_strv_push(&v, srun);
    snprintf(buf, sizeof buf, "--nodes=%lld", (long long)s->server_nodes);
    rc = rc ? rc : surge_strv_push(&v, buf);
    snprintf(buf, sizeof buf, "--ntasks=%lld", (long long)s->server_ranks);
    rc = rc ? rc : surge_strv_push(&v, buf);
    if (rc == 0 && s->server_ranks_per_node > 0) {
        snprintf(buf, sizeof buf, "--ntasks-per-node=%lld",
                 (long long)s->server_ranks_per_node);
        rc = surge_strv_push(&v, buf);
    }
    if (rc == 0 && s->server_ranks > 1) {
        /* The ranks are one MPI job: PMIx wires them up (mpirun cannot
         * start a job step, so scheduler.slurm.mpi "mpirun" means pmix
         * here), and one rank that dies ends the step, so that the
         * launcher sees the unit end and restarts it whole. */
        snprintf(buf, sizeof buf, "--mpi=%s",
                 strcmp(s->slurm_mpi, "mpirun") == 0 ? "pmix" : s->slurm_mpi);
        rc = surge_strv_push(&v, buf);
        rc = rc ? rc : surge_strv_push(&v, "--kill-on-bad-exit=1");
    }
    snprintf(buf, sizeof buf, "--job-name=%s-server",
             sl->steps_mode ? s->name : sl->job_name);
    rc = rc ? rc : surge_strv_push(&v, buf);
    if (rc == 0 && s->trainer.threads > 0) {
        snprintf(buf, sizeof buf, "--cpus-per-task=%lld",
                 (long long)s->trainer.threads);
        rc = surge_strv_push(&v, buf);
    }
    if (sl->steps_mode) {
        /* Only the CPUs asked for: a step with --nodes otherwise takes
         * every CPU of its nodes, and the runs' steps wait for ever. */
        rc = rc ? rc : surge_strv_push(&v, "--exact");
    } else {
        /* A job of its own; a job step takes the allocation's. */
        if (rc == 0 && s->slurm_partition[0] != '\0') {
            snprintf(buf, sizeof buf, "--partition=%s", s->slurm_partition);
            rc = surge_strv_push(&v, buf);
        }
        if (rc == 0 && s->slurm_account[0] != '\0') {
            snprintf(buf, sizeof buf, "--account=%s", s->slurm_account);
            rc = surge_strv_push(&v, buf);
        }
        if (rc == 0 && s->slurm_time_limit[0] != '\0') {
            snprintf(buf, sizeof buf, "--time=%s", s->slurm_time_limit);
            rc = surge_strv_push(&v, buf);
        }
    }
    /* Ctrl-C reaches srun only through the launcher, which sends SIGTERM;
     * make SIGINT end the job too rather than print status. */
    rc = rc ? rc : surge_strv_push(&v, "--quit-on-interrupt");
    return surge_strv_finish(&v, rc, server_argv, out);
}

static int
dup_path(char **dst, const char *fmt, const char *a, long long b)
{
    char buf[MAX_PATH];
    int n = snprintf(buf, sizeof buf, fmt, a, b);
    if (n < 0 || (size_t)n >= sizeof buf) {
        return -ENAMETOOLONG;
    }
    *dst = strdup(buf);
    return *dst != NULL ? 0 : -ENOMEM;
}

static int
slurm_submit(void *state, const surge_job_spec *spec, uint64_t *job, char *err,
             size_t errcap)
{
    struct slurm *sl = state;
    if (sl->steps_mode) {
        return surge_sched_local_ops.submit(sl->local, spec, job, err, errcap);
    }
    struct sjob *slot = NULL;
    for (size_t i = 0; slot == NULL && i < sl->cap; i++) {
        if (sl->jobs[i].id == 0) {
            slot = &sl->jobs[i];
        }
    }
    if (slot == NULL) {
        size_t ncap = sl->cap == 0 ? 64 : sl->cap * 2;
        if (ncap > SLURM_MAX_JOBS) {
            snprintf(err, errcap, "more than %d jobs at once", SLURM_MAX_JOBS);
            return -EAGAIN;
        }
        struct sjob *nj = realloc(sl->jobs, ncap * sizeof *nj);
        if (nj == NULL) {
            return -ENOMEM;
        }
        memset(nj + sl->cap, 0, (ncap - sl->cap) * sizeof *nj);
        slot = &nj[sl->cap];
        sl->jobs = nj;
        sl->cap = ncap;
    }
    struct sjob j;
    memset(&j, 0, sizeof j);
    j.sim = spec->sim;
    j.attempt = spec->attempt;
    int rc = dup_path(&j.script, "%s/slurm-job-%lld.sh", spec->workdir,
                      (long long)spec->attempt);
    rc = rc ? rc
            : dup_path(&j.exit_path, "%s/slurm-job-%lld.exit", spec->workdir,
                       (long long)spec->attempt);
    if (rc == 0) {
        j.log_path = strdup(spec->log_path);
        j.workdir = strdup(spec->workdir);
        rc = j.log_path == NULL || j.workdir == NULL ? -ENOMEM : 0;
    }
    if (rc != 0) {
        snprintf(err, errcap, "%s", strerror(-rc));
        job_free(&j);
        return rc;
    }
    /* A fresh, empty log (like the local scheduler's), no old status. */
    int fd =
        open(spec->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = -errno;
        snprintf(err, errcap, "%s: %s", spec->log_path, strerror(-rc));
        job_free(&j);
        return rc;
    }
    close(fd);
    if (unlink(j.exit_path) != 0 && errno != ENOENT) {
        rc = -errno;
        snprintf(err, errcap, "%s: %s", j.exit_path, strerror(-rc));
        job_free(&j);
        return rc;
    }
    rc = surge_slurm_write_job_script(j.script, spec->argv, spec->env,
                                      spec->workdir, spec->log_path,
                                      j.exit_path, err, errcap);
    if (rc != 0) {
        job_free(&j);
        return rc;
    }
    j.id = sl->next_id++;
    j.js = J_QUEUED;
    j.st.state = SURGE_JOB_PENDING;
    *slot = j;
    sl->nqueued++;
    *job = j.id;
    return 0;
}

static int
slurm_poll(void *state, uint64_t id, surge_job_status *st)
{
    struct slurm *sl = state;
    if (sl->steps_mode) {
        return surge_sched_local_ops.poll(sl->local, id, st);
    }
    struct sjob *j = find_job(sl, id);
    if (j == NULL) {
        return -ESRCH;
    }
    refresh(sl);
    *st = j->st;
    return 0;
}

static int
slurm_cancel(void *state, uint64_t id, double grace_s)
{
    struct slurm *sl = state;
    if (sl->steps_mode) {
        return surge_sched_local_ops.cancel(sl->local, id, grace_s);
    }
    struct sjob *j = find_job(sl, id);
    if (j == NULL) {
        return -ESRCH;
    }
    if (j->js == J_DONE) {
        return 0;
    }
    j->cancelled = 1;
    if (j->js == J_QUEUED) {
        /* Never given to Slurm: nothing to stop. */
        sl->nqueued--;
        job_done(j, -1, SIGTERM);
        return 0;
    }
    run_scancel(sl, j->jobid, false);
    double at = surge_now_s() + grace_s;
    if (j->kill_at == 0 || at < j->kill_at) {
        j->kill_at = at;
    }
    /* Look again soon, rather than a full poll interval later. */
    if (sl->next_query > surge_now_s() + 0.5) {
        sl->next_query = surge_now_s() + 0.5;
    }
    return 0;
}

static int
slurm_release(void *state, uint64_t id)
{
    struct slurm *sl = state;
    if (sl->steps_mode) {
        return surge_sched_local_ops.release(sl->local, id);
    }
    struct sjob *j = find_job(sl, id);
    if (j == NULL) {
        return -ESRCH;
    }
    if (j->js != J_DONE) {
        return SURGE_ESTATE;
    }
    job_free(j);
    return 0;
}

static void
slurm_destroy(void **state)
{
    if (state == NULL || *state == NULL) {
        return;
    }
    struct slurm *sl = *state;
    if (sl->steps_mode) {
        surge_sched_local_ops.destroy(&sl->local);
        free(sl);
        *state = NULL;
        return;
    }
    double grace = sl->s->kill_grace_s;
    for (size_t i = 0; i < sl->cap; i++) {
        struct sjob *j = &sl->jobs[i];
        if (j->id != 0 && j->js != J_DONE) {
            slurm_cancel(sl, j->id, grace);
        }
    }
    /* Wait until squeue reports every job ended (Slurm escalates to
     * SIGKILL by itself after KillWait; refresh() adds ours after the
     * grace), bounded. */
    double give_up = surge_now_s() + grace + DESTROY_EXTRA_S;
    sl->next_query = 0;
    while (any_submitted(sl)) {
        refresh(sl);
        if (!any_submitted(sl)) {
            break;
        }
        if (sl->next_query > surge_now_s() + 1.0) {
            sl->next_query = surge_now_s() + 1.0;
        }
        if (surge_now_s() > give_up) {
            SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
                      "Slurm still lists jobs named %s %.0f s after scancel; "
                      "check squeue",
                      sl->job_name, grace + DESTROY_EXTRA_S);
            break;
        }
        surge_deploy_sleep(0.1);
    }
    if (sl->query_running) {
        cmd_abort(&sl->query);
        surge_slurm_cmd_result_fini(&sl->query.res);
    }
    for (size_t i = 0; i < sl->cap; i++) {
        if (sl->jobs[i].id != 0) {
            job_free(&sl->jobs[i]);
        }
    }
    free(sl->jobs);
    free(sl);
    *state = NULL;
}

const surge_scheduler_ops surge_sched_slurm_ops = {
    .name = "slurm",
    .create = slurm_create,
    .wrap = slurm_wrap,
    .submit = slurm_submit,
    .poll = slurm_poll,
    .cancel = slurm_cancel,
    .release = slurm_release,
    .destroy = slurm_destroy,
};
