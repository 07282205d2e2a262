/*
 * deploy/proc.c - child setup, exit-status decoding and session sweeping
 * (deploy/proc.h).
 */
#include "config.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "deploy/proc.h"
#include "deploy/scheduler.h"
#include "deploy/util.h"

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
