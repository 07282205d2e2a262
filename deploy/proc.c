/*
 * deploy/proc.c - child setup, exit-status decoding and session sweeping
 * (deploy/proc.h).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "deploy/proc.h"
#include "deploy/scheduler.h"
#include "deploy/util.h"

extern char **environ;

void
surge_proc_child_setup(pid_t parent, int in_fd, int out_fd, int err_fd)
{
    setsid();
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) {
        _exit(127); /* the parent died before prctl */
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    if (in_fd < 0) {
        in_fd = open("/dev/null", O_RDONLY);
    }
    if (in_fd >= 0) {
        dup2(in_fd, 0);
    }
    dup2(out_fd, 1);
    dup2(err_fd, 2);
}

void
surge_proc_status(int wstatus, int *exit_code, int *sig)
{
    if (WIFEXITED(wstatus)) {
        *exit_code = WEXITSTATUS(wstatus);
        *sig = 0;
    } else {
        *exit_code = -1;
        *sig = WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : 0;
    }
}

int
surge_proc_sweep_session(pid_t sid)
{
    int n = surge_kill_session(sid, SIGKILL);
    if (n > 0) {
        for (int i = 0; i < 200 && surge_session_alive(sid) > 0; i++) {
            surge_deploy_sleep(0.01);
        }
    }
    return n;
}

char **
surge_proc_env(char *const *extra, const char *tmp)
{
    static const char *const tmpvars[] = {"TMPDIR", "OMPI_MCA_orte_tmpdir_base",
                                          "OMPI_MCA_prte_tmpdir_base"};
    enum { NTMP = sizeof tmpvars / sizeof tmpvars[0] };
    size_t n = 0, m = 0;
    while (environ[n] != NULL) {
        n++;
    }
    while (extra != NULL && extra[m] != NULL) {
        m++;
    }
    size_t ntmp = tmp != NULL ? NTMP : 0;
    size_t vlen = 0;
    for (size_t k = 0; k < ntmp; k++) {
        vlen += strlen(tmpvars[k]) + strlen(tmp) + 2;
    }
    size_t nadd = m + ntmp;
    char **env = calloc(1, (n + nadd + 1 + nadd) * sizeof *env + vlen);
    if (env == NULL) {
        return NULL;
    }
    /* add[0..nadd): what replaces or joins environ; the tmp strings live
     * after the pointers. */
    char **add = env + n + nadd + 1;
    char *p = (char *)(add + nadd);
    for (size_t j = 0; j < m; j++) {
        add[j] = extra[j];
    }
    for (size_t k = 0; k < ntmp; k++) {
        size_t len = strlen(tmpvars[k]) + strlen(tmp) + 2;
        snprintf(p, len, "%s=%s", tmpvars[k], tmp);
        add[m + k] = p;
        p += len;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        bool replaced = false;
        for (size_t j = 0; j < nadd; j++) {
            size_t klen = strcspn(add[j], "=");
            if (strncmp(environ[i], add[j], klen) == 0 &&
                environ[i][klen] == '=') {
                replaced = true;
                break;
            }
        }
        if (!replaced) {
            env[o++] = environ[i];
        }
    }
    for (size_t j = 0; j < nadd; j++) {
        env[o++] = add[j];
    }
    env[o] = NULL;
    return env;
}

int
surge_proc_mkdtemp(const char *prefix, char *buf, size_t cap, char *err,
                   size_t errcap)
{
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] != '/' || strlen(base) > 256) {
        base = "/tmp";
    }
    int n = snprintf(buf, cap, "%s/%s-XXXXXX", base, prefix);
    if (n < 0 || (size_t)n >= cap) {
        buf[0] = '\0';
        snprintf(err, errcap, "temporary folder under %s: name too long", base);
        return -ENAMETOOLONG;
    }
    if (mkdtemp(buf) == NULL) {
        int e = errno;
        snprintf(err, errcap, "temporary folder %s: %s", buf, strerror(e));
        buf[0] = '\0';
        return -e;
    }
    return 0;
}
