/*
 * tests/unit/deploy/test_sched_local.c - the local scheduler with real
 * processes (/bin/sh): the mpirun wrapper argv, environment, working
 * folder and log of a job, exit statuses and signals, exec failures,
 * cancel with SIGTERM and the escalation to SIGKILL, and the promise that
 * nothing a job started outlives it: processes that left the job's process
 * group (as Open MPI's ranks do) or that its leader orphaned are killed.
 */
#include "config.h"

#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/util.h"
#include "deploy/scheduler.h"
#include "deploy/study.h"
#include "deploy/util.h"

struct fixture {
    surge_study *s;
    const surge_scheduler_ops *ops;
    void *sched;
    char dir[64];
};

static int
setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    char err[256];
    const char *text =
        "{\"parameters\": [{\"name\": \"a\", \"min\": 0, \"max\": 1}], "
        "\"sampler\": {\"runs\": 1}, \"solver\": {\"command\": \"x\"}, "
        "\"scheduler\": {\"mpirun\": \"\", \"kill_grace_s\": 0.5}}";
    if (f == NULL ||
        surge_study_parse(&f->s, text, "<test>", "/tmp", err, sizeof err)) {
        return -1;
    }
    f->ops = surge_scheduler_find(SURGE_SCHEDULER_LOCAL);
    snprintf(f->dir, sizeof f->dir, "/tmp/surge-test-sched-XXXXXX");
    if (f->ops == NULL || mkdtemp(f->dir) == NULL ||
        f->ops->create(&f->sched, f->s, err, sizeof err) != 0) {
        return -1;
    }
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];
    f->ops->destroy(&f->sched);
    surge_study_destroy(&f->s);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    int rc = system(cmd);
    (void)rc;
    free(f);
    return 0;
}

/* Start `sh -c script` with env (NULL-terminated or NULL); log in the
 * fixture's folder as name.log. */
static uint64_t
start(struct fixture *f, const char *name, const char *script, char *const *env)
{
    char log[128];
    char *argv[] = {"/bin/sh", "-c", (char *)script, NULL};
    snprintf(log, sizeof log, "%s/%s.log", f->dir, name);
    surge_job_spec spec = {1, 1, argv, env, f->dir, log};
    uint64_t job = 0;
    char err[256] = "";
    int rc = f->ops->submit(f->sched, &spec, &job, err, sizeof err);
    if (rc != 0) {
        print_error("submit: %s\n", err);
    }
    assert_int_equal(rc, 0);
    return job;
}

/* Poll until the job is done (at most seconds). */
static surge_job_status
wait_done(struct fixture *f, uint64_t job, double seconds)
{
    surge_job_status st;
    uint64_t end = surge_now_ns() + (uint64_t)(seconds * 1e9);
    for (;;) {
        assert_int_equal(f->ops->poll(f->sched, job, &st), 0);
        if (st.state == SURGE_JOB_DONE) {
            return st;
        }
        assert_true(surge_now_ns() < end);
        surge_deploy_sleep(0.01);
    }
}

static pid_t
read_pid(struct fixture *f, const char *name)
{
    char path[128], *text = NULL;
    size_t len;
    snprintf(path, sizeof path, "%s/%s", f->dir, name);
    for (int i = 0; i < 500; i++) {
        if (surge_deploy_read_file(path, 64, &text, &len) == 0 && len > 0 &&
            text[len - 1] == '\n') {
            long pid = strtol(text, NULL, 10);
            free(text);
            return (pid_t)pid;
        }
        free(text);
        text = NULL;
        surge_deploy_sleep(0.01);
    }
    fail_msg("%s never appeared", path);
    return -1;
}

/* 1 when pid exists and is not a zombie (an orphan killed here is reaped
 * by init, which may take its time). */
static int
running(pid_t pid)
{
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *fp = fopen(path, "r");
    if (fp == NULL) {
        return 0;
    }
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')');
    return rp != NULL && rp[1] == ' ' && rp[2] != 'Z';
}

static void
test_wrap(void **state)
{
    struct fixture *f = *state;
    char *solver[] = {"prog", "--x", "1", NULL};
    surge_strv v = {NULL, 0};
    /* mpirun "" runs the solver as it is. */
    assert_int_equal(f->ops->wrap(f->sched, solver, 4, &v), 0);
    assert_int_equal(v.n, 3);
    assert_string_equal(v.v[0], "prog");
    surge_strv_free(&v);

    surge_study *s = NULL;
    void *sched = NULL;
    char err[256];
    const char *text =
        "{\"parameters\": [{\"name\": \"a\", \"min\": 0, \"max\": 1}], "
        "\"sampler\": {\"runs\": 1}, \"solver\": {\"command\": \"x\"}, "
        "\"scheduler\": {\"mpirun\": \"/usr/bin/mpirun\", \"mpirun_args\": "
        "[\"-x\", \"FOO\"]}}";
    assert_int_equal(
        surge_study_parse(&s, text, "<test>", "/tmp", err, sizeof err), 0);
    assert_int_equal(f->ops->create(&sched, s, err, sizeof err), 0);
    assert_int_equal(f->ops->wrap(sched, solver, 4, &v), 0);
    size_t k = 0;
    assert_string_equal(v.v[k++], "/usr/bin/mpirun");
    assert_string_equal(v.v[k++], "-np");
    assert_string_equal(v.v[k++], "4");
    assert_string_equal(v.v[k++], "--oversubscribe");
    if (geteuid() == 0) {
        assert_string_equal(v.v[k++], "--allow-run-as-root");
    }
    assert_string_equal(v.v[k++], "-x");
    assert_string_equal(v.v[k++], "FOO");
    assert_string_equal(v.v[k++], "prog");
    assert_int_equal(v.n, k + 2);
    surge_strv_free(&v);
    f->ops->destroy(&sched);
    assert_null(sched);
    surge_study_destroy(&s);
}

static void
test_exit_env_log_workdir(void **state)
{
    struct fixture *f = *state;
    char *env[] = {"SURGE_TEST_FOO=bar baz", "HOME=/nowhere", NULL};
    uint64_t job = start(f, "a",
                         "echo \"$SURGE_TEST_FOO|$HOME\"; pwd; echo err >&2; "
                         "exit 3",
                         env);
    surge_job_status st = wait_done(f, job, 10);
    assert_int_equal(st.exit_code, 3);
    assert_int_equal(st.signal, 0);
    assert_int_equal(st.cancelled, 0);
    char path[128], *text = NULL, want[160];
    size_t len;
    snprintf(path, sizeof path, "%s/a.log", f->dir);
    assert_int_equal(surge_deploy_read_file(path, 4096, &text, &len), 0);
    snprintf(want, sizeof want, "bar baz|/nowhere\n%s\nerr\n", f->dir);
    assert_string_equal(text, want);
    free(text);
    /* Release forgets it; a second release or poll: no such job. */
    assert_int_equal(f->ops->release(f->sched, job), 0);
    assert_int_equal(f->ops->release(f->sched, job), -ESRCH);
    assert_int_equal(f->ops->poll(f->sched, job, &st), -ESRCH);
}

static void
test_signal_and_exec_failure(void **state)
{
    struct fixture *f = *state;
    uint64_t job = start(f, "b", "kill -9 $$", NULL);
    surge_job_status st = wait_done(f, job, 10);
    assert_int_equal(st.exit_code, -1);
    assert_int_equal(st.signal, SIGKILL);
    f->ops->release(f->sched, job);

    char *argv[] = {"/nonexistent/solver", NULL};
    char log[128], err[256] = "";
    snprintf(log, sizeof log, "%s/c.log", f->dir);
    surge_job_spec spec = {2, 1, argv, NULL, f->dir, log};
    assert_int_equal(f->ops->submit(f->sched, &spec, &job, err, sizeof err),
                     -ENOENT);
    assert_non_null(strstr(err, "/nonexistent/solver: "));

    char *argv2[] = {"/bin/true", NULL};
    surge_job_spec spec2 = {3, 1, argv2, NULL, "/nonexistent/dir", log};
    assert_int_equal(f->ops->submit(f->sched, &spec2, &job, err, sizeof err),
                     -ENOENT);

    surge_job_spec spec3 = {4, 1, argv2, NULL, f->dir, "/nonexistent/x.log"};
    assert_int_equal(f->ops->submit(f->sched, &spec3, &job, err, sizeof err),
                     -ENOENT);
    assert_non_null(strstr(err, "/nonexistent/x.log"));
}

/* A job whose children leave its process group (set -m gives each
 * background job a group of its own, like mpirun does for its ranks):
 * cancel reaches them all through the session. */
static void
test_cancel_reaches_other_groups(void **state)
{
    struct fixture *f = *state;
    uint64_t job = start(f, "d",
                         "set -m; sleep 300 & sleep 300 & echo $$ > "
                         "d.pid; wait",
                         NULL);
    pid_t sid = read_pid(f, "d.pid");
    surge_deploy_sleep(0.1);
    assert_int_equal(surge_session_alive(sid), 3);
    surge_job_status st;
    assert_int_equal(f->ops->poll(f->sched, job, &st), 0);
    assert_int_equal(st.state, SURGE_JOB_RUNNING);
    assert_int_equal(f->ops->release(f->sched, job), SURGE_ESTATE);
    assert_int_equal(f->ops->cancel(f->sched, job, 2.0), 0);
    st = wait_done(f, job, 10);
    assert_int_equal(st.cancelled, 1);
    assert_int_equal(surge_session_alive(sid), 0);
    /* Cancelling a finished job is harmless. */
    assert_int_equal(f->ops->cancel(f->sched, job, 1.0), 0);
    f->ops->release(f->sched, job);
}

/* SIGTERM ignored: after the grace period poll escalates to SIGKILL. */
static void
test_cancel_escalates(void **state)
{
    struct fixture *f = *state;
    uint64_t job = start(f, "e",
                         "trap '' TERM; echo $$ > e.pid; while :; do sleep "
                         "1; done",
                         NULL);
    pid_t sid = read_pid(f, "e.pid");
    uint64_t t0 = surge_now_ns();
    assert_int_equal(f->ops->cancel(f->sched, job, 0.3), 0);
    surge_job_status st = wait_done(f, job, 10);
    double took = (double)(surge_now_ns() - t0) * 1e-9;
    assert_int_equal(st.signal, SIGKILL);
    assert_true(took >= 0.3 && took < 5.0);
    assert_int_equal(surge_session_alive(sid), 0);
    f->ops->release(f->sched, job);
}

/* The leader exits and leaves a process behind: it is killed when the job
 * is reaped, and the job still counts as a success. */
static void
test_orphans_killed(void **state)
{
    struct fixture *f = *state;
    uint64_t job = start(f, "g",
                         "sleep 300 & echo $$ > g.pid; echo $! > g.child; "
                         "exit 0",
                         NULL);
    pid_t sid = read_pid(f, "g.pid");
    pid_t child = read_pid(f, "g.child");
    surge_job_status st = wait_done(f, job, 10);
    assert_int_equal(st.exit_code, 0);
    assert_int_equal(surge_session_alive(sid), 0);
    assert_false(running(child));
    f->ops->release(f->sched, job);
}

/* destroy stops what is still running, within the grace period. */
static void
test_destroy_stops_everything(void **state)
{
    struct fixture *f = *state;
    start(f, "h", "echo $$ > h.pid; sleep 300", NULL);
    start(f, "i", "trap '' TERM; echo $$ > i.pid; sleep 300", NULL);
    pid_t a = read_pid(f, "h.pid");
    pid_t b = read_pid(f, "i.pid");
    uint64_t t0 = surge_now_ns();
    f->ops->destroy(&f->sched);
    assert_null(f->sched);
    assert_true((double)(surge_now_ns() - t0) * 1e-9 < 5.0);
    assert_int_equal(surge_session_alive(a), 0);
    assert_int_equal(surge_session_alive(b), 0);
    char err[64];
    assert_int_equal(f->ops->create(&f->sched, f->s, err, sizeof err), 0);
}

/* The launcher joins a relative solver path to the run's folder, which
 * may not exist yet: ".." and "." are resolved by text. */
static void
test_normalize_path(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"/a/b/../c/./d", "/a/c/d"},
        {"/out/runs/3/../../../x.sh", "/x.sh"},
        {"//a///b/", "/a/b"},
        {"/..", "/"},
        {"/a/..", "/"},
        {"rel/../x", "rel/../x"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[64];
        snprintf(buf, sizeof buf, "%s", cases[i][0]);
        surge_deploy_normalize_path(buf);
        assert_string_equal(buf, cases[i][1]);
    }
}

/* Each job runs with a temporary folder of its own as TMPDIR and as Open
 * MPI's tmpdir base (two mpirun never share a session directory); it exists
 * while the job runs, is gone once the job is reaped, and the study's
 * folder once the scheduler is destroyed. */
static void
test_job_tmpdirs(void **state)
{
    struct fixture *f = *state;
    const char *script = "echo \"$TMPDIR $OMPI_MCA_orte_tmpdir_base "
                         "$OMPI_MCA_prte_tmpdir_base\" >\"$0\"; "
                         "test -d \"$TMPDIR\" && touch \"$TMPDIR/x\" && "
                         "sleep 0.3";
    char outa[128], outb[128];
    snprintf(outa, sizeof outa, "%s/a.tmp", f->dir);
    snprintf(outb, sizeof outb, "%s/b.tmp", f->dir);
    char *argva[] = {"/bin/sh", "-c", (char *)script, outa, NULL};
    char *argvb[] = {"/bin/sh", "-c", (char *)script, outb, NULL};
    char loga[128], logb[128], err[256];
    snprintf(loga, sizeof loga, "%s/a.log", f->dir);
    snprintf(logb, sizeof logb, "%s/b.log", f->dir);
    /* The same run and attempt twice, at once: still two folders. */
    surge_job_spec sa = {3, 1, argva, NULL, f->dir, loga};
    surge_job_spec sb = {3, 1, argvb, NULL, f->dir, logb};
    uint64_t ja = 0, jb = 0;
    assert_int_equal(f->ops->submit(f->sched, &sa, &ja, err, sizeof err), 0);
    assert_int_equal(f->ops->submit(f->sched, &sb, &jb, err, sizeof err), 0);
    surge_job_status st = wait_done(f, ja, 10);
    assert_int_equal(st.exit_code, 0);
    st = wait_done(f, jb, 10);
    assert_int_equal(st.exit_code, 0);
    char dirs[2][3][200];
    const char *outs[2] = {outa, outb};
    for (int k = 0; k < 2; k++) {
        FILE *fp = fopen(outs[k], "r");
        assert_non_null(fp);
        assert_int_equal(
            fscanf(fp, "%199s %199s %199s", dirs[k][0], dirs[k][1], dirs[k][2]),
            3);
        fclose(fp);
        assert_string_equal(dirs[k][0], dirs[k][1]);
        assert_string_equal(dirs[k][0], dirs[k][2]);
        assert_non_null(strstr(dirs[k][0], "/surge-"));
        /* Reaped: removed. */
        assert_int_equal(access(dirs[k][0], F_OK), -1);
    }
    assert_string_not_equal(dirs[0][0], dirs[1][0]);
    /* The study's folder goes with the scheduler. */
    char root[200];
    snprintf(root, sizeof root, "%s", dirs[0][0]);
    *strrchr(root, '/') = '\0';
    assert_int_equal(access(root, F_OK), 0);
    f->ops->destroy(&f->sched);
    assert_int_equal(access(root, F_OK), -1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normalize_path),
        cmocka_unit_test_setup_teardown(test_wrap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_job_tmpdirs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exit_env_log_workdir, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_signal_and_exec_failure, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cancel_reaches_other_groups, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cancel_escalates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_orphans_killed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_stops_everything, setup,
                                        teardown),
    };
    return cmocka_run_group_tests_name("deploy/sched_local", tests, NULL, NULL);
}
