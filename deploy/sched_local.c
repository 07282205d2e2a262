/*
 * deploy/sched_local.c - the local scheduler: each job is a child process
 * (usually mpirun) that leads a session of its own.
 *
 * DESIGN. Open MPI's mpirun puts every rank it forks into a process group
 * of its own, so "kill the job's process group" would miss the ranks. A
 * session survives that: the child calls setsid() before exec, and every
 * process it starts stays in that session unless it calls setsid() itself.
 * Stopping a job signals the session's process group and every process the
 * /proc scan finds with that session id. After the job's leader exits, any
 * process still left in the session (an orphaned rank) is killed too, so a
 * job never leaves anything behind. The child also asks for SIGKILL when
 * the launcher dies (PR_SET_PDEATHSIG), so even a launcher killed with
 * SIGKILL takes its mpirun processes along.
 *
 * Temporary folders. Open MPI keeps its session directory (ompi.<host>.<uid>
 * and the PMIx sockets) under TMPDIR, shared by every mpirun of the user;
 * two mpirun starting at the same instant have been seen to race on its
 * creation ("mkdir ... File exists"). So each job gets a folder of its own,
 * <study tmp>/<sim>.<attempt>.<job id>, as TMPDIR and as Open MPI's tmpdir base
 * (orte_tmpdir_base for 4.x, prte_tmpdir_base for 5.x): nothing is shared
 * between two mpirun, by construction. The study tmp is a fresh mkdtemp
 * folder under the launcher's TMPDIR (or /tmp), kept short because Unix
 * socket paths are limited to 108 bytes; a job's folder is removed when
 * the job is reaped, the study's when the scheduler is destroyed.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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
#include "deploy/util.h"

#define LOCAL_MAX_JOBS 65536

struct local_job {
    uint64_t id; /* handle given to the launcher; 0: free */
    pid_t pid;   /* leader (= session id); 0 once reaped */
    int state;   /* enum surge_job_state */
    int exit_code;
    int signal;
    int cancelled;       /* cancel was asked */
    uint64_t kill_at_ns; /* cancel: SIGKILL from then on; 0: none */
    int64_t sim;         /* its run and attempt: name of its tmp folder */
    int64_t attempt;
    int has_tmp; /* its tmp folder exists (removed when reaped) */
};

struct local {
    const surge_study *s;
    struct local_job *jobs; /* (cap) slots */
    size_t cap;
    uint64_t next_id;
    char tmp[512]; /* the study's tmp folder (mkdtemp); "" until the first
                      job */
};

/* The tmp folder of a job, in buf: named by its run, attempt and job id
 * (unique in this scheduler, whose study tmp is a fresh folder). */
static int
job_tmp(const struct local *l, int64_t sim, int64_t attempt, uint64_t id,
        char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "%s/%lld.%lld.%llu", l->tmp, (long long)sim,
                     (long long)attempt, (unsigned long long)id);
    return n > 0 && (size_t)n < cap ? 0 : -ENAMETOOLONG;
}

/* Create the study's tmp folder on first use and the job's inside it. */
static int
make_job_tmp(struct local *l, int64_t sim, int64_t attempt, char *buf,
             size_t cap, char *err, size_t errcap)
{
    if (l->tmp[0] == '\0') {
        int rc =
            surge_proc_mkdtemp("surge", l->tmp, sizeof l->tmp, err, errcap);
        if (rc != 0) {
            return rc;
        }
    }
    int rc = job_tmp(l, sim, attempt, l->next_id, buf, cap);
    if (rc == 0) {
        /* Never an existing folder: it would be shared. */
        rc = mkdir(buf, 0700) == 0 ? 0 : -errno;
    }
    if (rc != 0) {
        snprintf(err, errcap, "temporary folder %s: %s", buf, strerror(-rc));
    }
    return rc;
}

static void
remove_job_tmp(struct local *l, struct local_job *j)
{
    char dir[600];
    if (j->has_tmp &&
        job_tmp(l, j->sim, j->attempt, j->id, dir, sizeof dir) == 0) {
        int rc = surge_deploy_rm_rf(dir);
        if (rc != 0) {
            SURGE_LOG(SURGE_LOG_WARN, "launch", "%s: %s", dir, strerror(-rc));
        }
    }
    j->has_tmp = 0;
}

/* ------------------------------------------------------------ sessions */

/* The session id of pid from /proc/PID/stat, or -1. Field 6; the command
 * name (field 2) is in parentheses and may hold spaces, so parse after the
 * last ')'. */
static pid_t
session_of(pid_t pid, char *state)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) {
        return -1;
    }
    buf[n] = '\0';
    char *rp = strrchr(buf, ')');
    if (rp == NULL) {
        return -1;
    }
    char st;
    int ppid, pgrp, sid;
    if (sscanf(rp + 1, " %c %d %d %d", &st, &ppid, &pgrp, &sid) != 4) {
        return -1;
    }
    if (state != NULL) {
        *state = st;
    }
    return (pid_t)sid;
}

static int
scan_session(pid_t sid, int sig)
{
    int count = 0;
    DIR *d = opendir("/proc");
    if (d == NULL) {
        return 0;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end != '\0' || pid <= 0) {
            continue;
        }
        char st = '?';
        if (session_of((pid_t)pid, &st) != sid || st == 'Z') {
            continue;
        }
        if (sig != 0) {
            kill((pid_t)pid, sig);
        }
        count++;
    }
    closedir(d);
    return count;
}

int
surge_kill_session(pid_t sid, int sig)
{
    if (sid <= 1) {
        return 0;
    }
    kill(-sid, sig);
    return scan_session(sid, sig);
}

int
surge_session_alive(pid_t sid)
{
    return sid > 1 ? scan_session(sid, 0) : 0;
}

/* ------------------------------------------------------------ jobs */

static struct local_job *
find(struct local *l, uint64_t id)
{
    for (size_t i = 0; i < l->cap; i++) {
        if (l->jobs[i].id == id && id != 0) {
            return &l->jobs[i];
        }
    }
    return NULL;
}

static int
local_create(void **state, const surge_study *s, char *err, size_t errcap)
{
    struct local *l = calloc(1, sizeof *l);
    if (l == NULL) {
        return -ENOMEM;
    }
    l->s = s;
    l->next_id = 1;
    *state = l;
    return 0;
}

static int
local_wrap(void *state, char *const *solver_argv, int64_t ranks,
           surge_strv *out)
{
    struct local *l = state;
    surge_strv v = {NULL, 0};
    char np[32];
    int rc = 0;
    if (l->s->mpirun[0] != '\0') {
        snprintf(np, sizeof np, "%lld", (long long)ranks);
        rc = surge_strv_push(&v, l->s->mpirun);
        rc = rc ? rc : surge_strv_push(&v, "-np");
        rc = rc ? rc : surge_strv_push(&v, np);
        if (rc == 0 && l->s->oversubscribe) {
            rc = surge_strv_push(&v, "--oversubscribe");
        }
        if (rc == 0 && geteuid() == 0) {
            rc = surge_strv_push(&v, "--allow-run-as-root");
        }
        for (size_t i = 0; rc == 0 && i < l->s->mpirun_args.n; i++) {
            rc = surge_strv_push(&v, l->s->mpirun_args.v[i]);
        }
    }
    return surge_strv_finish(&v, rc, solver_argv, out);
}

static int
local_submit(void *state, const surge_job_spec *spec, uint64_t *job, char *err,
             size_t errcap)
{
    struct local *l = state;
    struct local_job *slot = NULL;
    for (size_t i = 0; slot == NULL && i < l->cap; i++) {
        if (l->jobs[i].id == 0) {
            slot = &l->jobs[i];
        }
    }
    if (slot == NULL) {
        size_t ncap = l->cap == 0 ? 16 : l->cap * 2;
        if (ncap > LOCAL_MAX_JOBS) {
            snprintf(err, errcap, "more than %d jobs at once", LOCAL_MAX_JOBS);
            return -EAGAIN;
        }
        struct local_job *nj = realloc(l->jobs, ncap * sizeof *nj);
        if (nj == NULL) {
            return -ENOMEM;
        }
        memset(nj + l->cap, 0, (ncap - l->cap) * sizeof *nj);
        slot = &nj[l->cap];
        l->jobs = nj;
        l->cap = ncap;
    }
    /* Everything the child needs is prepared before fork: after it, the
     * child only calls async-signal-safe functions. */
    char tmp[600];
    int rc =
        make_job_tmp(l, spec->sim, spec->attempt, tmp, sizeof tmp, err, errcap);
    if (rc != 0) {
        return rc;
    }
    int logfd =
        open(spec->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (logfd < 0) {
        int e = errno;
        snprintf(err, errcap, "%s: %s", spec->log_path, strerror(e));
        (void)surge_deploy_rm_rf(tmp);
        return -e;
    }
    char **env = surge_proc_env(spec->env, tmp);
    if (env == NULL) {
        close(logfd);
        (void)surge_deploy_rm_rf(tmp);
        return -ENOMEM;
    }
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) {
        int e = errno;
        free(env);
        close(logfd);
        (void)surge_deploy_rm_rf(tmp);
        snprintf(err, errcap, "pipe: %s", strerror(e));
        return -e;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        free(env);
        close(logfd);
        close(pipefd[0]);
        close(pipefd[1]);
        (void)surge_deploy_rm_rf(tmp);
        snprintf(err, errcap, "fork: %s", strerror(e));
        return -e;
    }
    if (pid == 0) {
        /* Child: new session, die with the launcher, log, exec. An exec
         * failure sends errno through the pipe (closed on a good exec). */
        int e = 0;
        surge_proc_child_setup(parent, -1, logfd, logfd);
        if (chdir(spec->workdir) != 0) {
            e = errno;
        } else {
            execvpe(spec->argv[0], spec->argv, env);
            e = errno;
        }
        ssize_t w = write(pipefd[1], &e, sizeof e);
        (void)w;
        _exit(127);
    }
    free(env);
    close(logfd);
    close(pipefd[1]);
    int child_errno = 0;
    ssize_t r;
    do {
        r = read(pipefd[0], &child_errno, sizeof child_errno);
    } while (r < 0 && errno == EINTR);
    close(pipefd[0]);
    if (r == (ssize_t)sizeof child_errno) {
        /* exec failed: reap the child now, report why. */
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
        }
        (void)surge_deploy_rm_rf(tmp);
        snprintf(err, errcap, "%s: %s", spec->argv[0], strerror(child_errno));
        return -child_errno;
    }
    memset(slot, 0, sizeof *slot);
    slot->id = l->next_id++;
    slot->pid = pid;
    slot->sim = spec->sim;
    slot->attempt = spec->attempt;
    slot->has_tmp = 1;
    slot->state = SURGE_JOB_RUNNING;
    *job = slot->id;
    SURGE_LOG(SURGE_LOG_DEBUG, "launch",
              "sim %lld attempt %lld: started pid %d (%s)",
              (long long)spec->sim, (long long)spec->attempt, (int)pid,
              spec->argv[0]);
    return 0;
}

static void
reap(struct local *l, struct local_job *j, int wstatus)
{
    j->state = SURGE_JOB_DONE;
    surge_proc_status(wstatus, &j->exit_code, &j->signal);
    /* The leader is gone; whatever it left in its session goes too, and
     * the job counts as ended only once they are gone (bounded wait: a
     * SIGKILLed process disappears as soon as the kernel tears it down). */
    if (surge_proc_sweep_session(j->pid) > 0) {
        SURGE_LOG(SURGE_LOG_DEBUG, "launch",
                  "killed processes left behind in session %d", (int)j->pid);
    }
    remove_job_tmp(l, j);
}

static int
local_poll(void *state, uint64_t id, surge_job_status *st)
{
    struct local *l = state;
    struct local_job *j = find(l, id);
    if (j == NULL) {
        return -ESRCH;
    }
    if (j->state == SURGE_JOB_RUNNING) {
        int wstatus;
        pid_t r = waitpid(j->pid, &wstatus, WNOHANG);
        if (r == j->pid) {
            reap(l, j, wstatus);
        } else if (j->kill_at_ns != 0 && surge_now_ns() >= j->kill_at_ns) {
            surge_kill_session(j->pid, SIGKILL);
            j->kill_at_ns = 0;
        }
    }
    st->state = j->state;
    st->exit_code = j->exit_code;
    st->signal = j->signal;
    st->cancelled = j->cancelled;
    return 0;
}

static int
local_cancel(void *state, uint64_t id, double grace_s)
{
    struct local *l = state;
    struct local_job *j = find(l, id);
    if (j == NULL) {
        return -ESRCH;
    }
    if (j->state != SURGE_JOB_RUNNING) {
        return 0;
    }
    j->cancelled = 1;
    surge_kill_session(j->pid, SIGTERM);
    uint64_t at = surge_now_ns() + (uint64_t)(grace_s * 1e9);
    if (j->kill_at_ns == 0 || at < j->kill_at_ns) {
        j->kill_at_ns = at;
    }
    return 0;
}

static int
local_release(void *state, uint64_t id)
{
    struct local *l = state;
    struct local_job *j = find(l, id);
    if (j == NULL) {
        return -ESRCH;
    }
    if (j->state != SURGE_JOB_DONE) {
        return SURGE_ESTATE;
    }
    memset(j, 0, sizeof *j);
    return 0;
}

static void
local_destroy(void **state)
{
    if (state == NULL || *state == NULL) {
        return;
    }
    struct local *l = *state;
    double grace = l->s->kill_grace_s;
    bool any = false;
    for (size_t i = 0; i < l->cap; i++) {
        if (l->jobs[i].id != 0 && l->jobs[i].state == SURGE_JOB_RUNNING) {
            local_cancel(l, l->jobs[i].id, grace);
            any = true;
        }
    }
    /* Poll until all are reaped; the kill deadline bounds the wait, and a
     * process in uninterruptible sleep still ends once SIGKILL lands. */
    uint64_t give_up = surge_now_ns() + (uint64_t)((grace + 10.0) * 1e9);
    while (any) {
        any = false;
        for (size_t i = 0; i < l->cap; i++) {
            surge_job_status st;
            if (l->jobs[i].id != 0 && local_poll(l, l->jobs[i].id, &st) == 0 &&
                st.state == SURGE_JOB_RUNNING) {
                any = true;
            }
        }
        if (any && surge_now_ns() > give_up) {
            SURGE_LOG(SURGE_LOG_ERROR, "launch",
                      "jobs did not end after SIGKILL; giving up on them");
            break;
        }
        if (any) {
            surge_deploy_sleep(0.02);
        }
    }
    for (size_t i = 0; i < l->cap; i++) {
        remove_job_tmp(l, &l->jobs[i]);
    }
    if (l->tmp[0] != '\0') {
        int rc = surge_deploy_rm_rf(l->tmp);
        if (rc != 0) {
            SURGE_LOG(SURGE_LOG_WARN, "launch", "%s: %s", l->tmp,
                      strerror(-rc));
        }
    }
    free(l->jobs);
    free(l);
    *state = NULL;
}

const surge_scheduler_ops surge_sched_local_ops = {
    .name = "local",
    .create = local_create,
    .wrap = local_wrap,
    .submit = local_submit,
    .poll = local_poll,
    .cancel = local_cancel,
    .release = local_release,
    .destroy = local_destroy,
};

const surge_scheduler_ops *
surge_scheduler_find(int kind)
{
    switch (kind) {
    case SURGE_SCHEDULER_LOCAL:
        return &surge_sched_local_ops;
    case SURGE_SCHEDULER_SLURM:
        return &surge_sched_slurm_ops;
    default:
        return NULL;
    }
}
