/* deploy/server_proc.c - the server child process (deploy/server_proc.h). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "common/log.h"
#include "common/util.h"
#include "deploy/proc.h"
#include "deploy/scheduler.h"
#include "deploy/server_proc.h"
#include "deploy/util.h"

#define SERVER_JSON_MAX_BYTES 65536

/* "ranks" and "endpoints" of a server.json whose "endpoint" is ep. */
static int
read_ranks(json_t *root, const char *ep, long *ranks)
{
    json_t *jr = json_object_get(root, "ranks");
    json_t *je = json_object_get(root, "endpoints");
    *ranks = 1;
    if (jr != NULL) {
        if (!json_is_integer(jr) || json_integer_value(jr) < 1 ||
            json_integer_value(jr) > 1 << 20) {
            return SURGE_EPROTO;
        }
        *ranks = (long)json_integer_value(jr);
    }
    if (je == NULL) {
        return 0;
    }
    if (!json_is_array(je) || json_array_size(je) != (size_t)*ranks ||
        !json_is_string(json_array_get(je, 0)) ||
        strcmp(json_string_value(json_array_get(je, 0)), ep) != 0) {
        return SURGE_EPROTO;
    }
    size_t i;
    json_t *v;
    json_array_foreach(je, i, v)
    {
        if (!json_is_string(v) || json_string_length(v) == 0) {
            return SURGE_EPROTO;
        }
    }
    return 0;
}

int
surge_server_proc_read_endpoint(const char *json_path, char *endpoint,
                                char *http, size_t cap, long *pid, long *ranks)
{
    char *text = NULL;
    size_t len = 0;
    int rc =
        surge_deploy_read_file(json_path, SERVER_JSON_MAX_BYTES, &text, &len);
    if (rc < 0) {
        return rc == -EFBIG ? SURGE_EPROTO : rc;
    }
    json_error_t jerr;
    json_t *root = json_loads(text, 0, &jerr);
    free(text);
    if (root == NULL) {
        return SURGE_EPROTO;
    }
    json_t *ep = json_object_get(root, "endpoint");
    json_t *jp = json_object_get(root, "pid");
    rc = SURGE_EPROTO;
    if (json_is_string(ep) && json_string_length(ep) > 0 &&
        json_string_length(ep) < cap) {
        snprintf(endpoint, cap, "%s", json_string_value(ep));
        *pid = json_is_integer(jp) ? (long)json_integer_value(jp) : -1;
        json_t *jh = json_object_get(root, "http");
        http[0] = '\0';
        if (json_is_string(jh) && json_string_length(jh) < cap) {
            snprintf(http, cap, "%s", json_string_value(jh));
        }
        rc = read_ranks(root, endpoint, ranks);
    }
    json_decref(root);
    return rc;
}

static void
remove_tmp(surge_server_proc *sp)
{
    if (sp->tmp[0] != '\0') {
        int rc = surge_deploy_rm_rf(sp->tmp);
        if (rc != 0) {
            SURGE_LOG(SURGE_LOG_WARN, "launch", "%s: %s", sp->tmp,
                      strerror(-rc));
        }
        sp->tmp[0] = '\0';
    }
}

static void
record_exit(surge_server_proc *sp, int wstatus)
{
    surge_proc_status(wstatus, &sp->exit_code, &sp->signal);
    /* Anything the server left in its session goes with it (with R > 1:
     * every rank mpirun had not reaped yet). */
    surge_proc_sweep_session(sp->pid);
    sp->pid = 0;
    remove_tmp(sp);
}

int
surge_server_proc_alive(surge_server_proc *sp)
{
    if (sp->pid <= 0) {
        return 0;
    }
    int wstatus;
    pid_t r = waitpid(sp->pid, &wstatus, WNOHANG);
    if (r == sp->pid) {
        record_exit(sp, wstatus);
        return 0;
    }
    return 1;
}

/* Wait up to seconds for the child to exit; 1 if it did. */
static int
wait_exit(surge_server_proc *sp, double seconds)
{
    double end = surge_now_s() + seconds;
    for (;;) {
        if (!surge_server_proc_alive(sp)) {
            return 1;
        }
        if (surge_now_s() >= end) {
            return 0;
        }
        surge_deploy_sleep(0.02);
    }
}

int
surge_server_proc_wait(surge_server_proc *sp, double wait_s, double grace_s)
{
    if (sp->pid <= 0) {
        return 0;
    }
    if (wait_exit(sp, wait_s)) {
        return 0;
    }
    pid_t sid = sp->pid;
    surge_kill_session(sid, SIGTERM);
    if (!wait_exit(sp, grace_s)) {
        surge_kill_session(sid, SIGKILL);
        wait_exit(sp, 10.0);
    }
    return 1;
}

int
surge_server_proc_start(surge_server_proc *sp, char *const *argv,
                        const char *token, int mpi_tmp, const char *json_path,
                        const char *log_path, double timeout_s,
                        volatile sig_atomic_t *stop, char *err, size_t errcap)
{
    memset(sp, 0, sizeof *sp);
    if (unlink(json_path) != 0 && errno != ENOENT) {
        int e = errno;
        snprintf(err, errcap, "%s: %s", json_path, strerror(e));
        return -e;
    }
    /* The environment: ours, SURGE_TOKEN replaced, and with mpi_tmp the
     * tmp folder of the server's mpirun. */
    if (mpi_tmp) {
        int rc = surge_proc_mkdtemp("surge-server", sp->tmp, sizeof sp->tmp,
                                    err, errcap);
        if (rc != 0) {
            return rc;
        }
    }
    size_t toklen = strlen(token) + sizeof "SURGE_TOKEN=";
    char *tokvar = malloc(toklen);
    char **env = NULL;
    if (tokvar != NULL) {
        snprintf(tokvar, toklen, "SURGE_TOKEN=%s", token);
        char *extra[2] = {tokvar, NULL};
        env = surge_proc_env(extra, mpi_tmp ? sp->tmp : NULL);
    }
    if (env == NULL) {
        free(tokvar);
        remove_tmp(sp);
        return -ENOMEM;
    }
    int logfd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (logfd < 0) {
        int e = errno;
        free(env);
        free(tokvar);
        snprintf(err, errcap, "%s: %s", log_path, strerror(e));
        remove_tmp(sp);
        return -e;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        free(env);
        free(tokvar);
        close(logfd);
        snprintf(err, errcap, "fork: %s", strerror(e));
        remove_tmp(sp);
        return -e;
    }
    if (pid == 0) {
        surge_proc_child_setup(parent, -1, logfd, logfd);
        execve(argv[0], argv, env);
        _exit(127);
    }
    free(env);
    free(tokvar);
    close(logfd);
    sp->pid = pid;
    sp->started_at = surge_now_s();

    double end = sp->started_at + timeout_s;
    for (;;) {
        long jpid = -1;
        int rc = surge_server_proc_read_endpoint(json_path, sp->endpoint,
                                                 sp->http, sizeof sp->endpoint,
                                                 &jpid, &sp->ranks);
        /* The file was removed before the start, so any server.json is
         * this server's. Its pid is ours unless the command wraps the
         * server (srun runs it as a Slurm job, maybe on another node). */
        if (rc == 0) {
            if (jpid != (long)pid) {
                SURGE_LOG(SURGE_LOG_DEBUG, "launch",
                          "server.json names pid %ld (the child is %d): a "
                          "wrapped server",
                          jpid, (int)pid);
            }
            return 0;
        }
        if (rc == SURGE_EPROTO) {
            snprintf(err, errcap, "%s: not a valid server.json", json_path);
            surge_server_proc_wait(sp, 0, 2.0);
            return SURGE_EPROTO;
        }
        if (!surge_server_proc_alive(sp)) {
            if (sp->signal != 0) {
                snprintf(err, errcap,
                         "the server was killed by signal %d "
                         "before writing server.json (see %s)",
                         sp->signal, log_path);
            } else {
                snprintf(err, errcap,
                         "the server exited with status %d "
                         "before writing server.json (see %s)",
                         sp->exit_code, log_path);
            }
            return SURGE_ENOSERVER;
        }
        if (stop != NULL && *stop) {
            surge_server_proc_wait(sp, 0, 2.0);
            snprintf(err, errcap, "interrupted while the server started");
            return -EINTR;
        }
        if (surge_now_s() >= end) {
            surge_server_proc_wait(sp, 0, 2.0);
            snprintf(err, errcap,
                     "the server wrote no %s within %g s (see "
                     "%s)",
                     json_path, timeout_s, log_path);
            return SURGE_ETIMEDOUT;
        }
        surge_deploy_sleep(0.02);
    }
}
