/*
 * tests/unit/deploy/test_scheduler_slurm.c - the slurm scheduler's command
 * layer: running commands under a timeout (real processes: sh, sleep,
 * head), parsing what sbatch/scontrol/squeue print, shell quoting checked
 * by a real shell, and the batch script run by a real bash. The Slurm
 * daemons themselves are exercised by tests/integration/slurm_study.sh.
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
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/util.h"
#include "deploy/scheduler_slurm.h"
#include "deploy/study.h"
#include "surge/error.h"

static double
now_s(void)
{
    return (double)surge_now_ns() * 1e-9;
}

static void
test_cmd_output_and_status(void **unused)
{
    char *argv[] = {"sh", "-c", "echo out; echo '  two\n  lines ' >&2; exit 3",
                    NULL};
    surge_slurm_cmd_result res;
    int rc = surge_slurm_cmd_run(argv, 10, 1024, &res);
    assert_int_equal(rc, 0);
    assert_int_equal(res.exit_code, 3);
    assert_int_equal(res.signal, 0);
    assert_int_equal(res.timed_out, 0);
    assert_non_null(res.out);
    assert_string_equal(res.out, "out\n");
    /* stderr squeezed onto one line */
    assert_string_equal(res.err, "two lines");
    char msg[256];
    surge_slurm_cmd_describe("sh", rc, 10, &res, msg, sizeof msg);
    assert_string_equal(msg, "sh: exit status 3: two lines");
    surge_slurm_cmd_result_fini(&res);
    assert_null(res.out);
}

static void
test_cmd_timeout_kills_session(void **unused)
{
    char dir[] = "/tmp/test_slurm_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char script[512];
    /* A background child that would outlive its parent: the timeout must
     * take the whole session. */
    snprintf(script, sizeof script, "sleep 30 & echo $! > %s/pid; wait", dir);
    char *argv[] = {"sh", "-c", script, NULL};
    surge_slurm_cmd_result res;
    double t0 = now_s();
    int rc = surge_slurm_cmd_run(argv, 0.3, 1024, &res);
    double dt = now_s() - t0;
    assert_int_equal(rc, SURGE_ETIMEDOUT);
    assert_int_equal(res.timed_out, 1);
    assert_int_equal(res.signal, SIGKILL);
    assert_true(dt >= 0.29 && dt < 3.0);
    char msg[256];
    surge_slurm_cmd_describe("squeue", rc, 0.3, &res, msg, sizeof msg);
    assert_string_equal(msg, "squeue: no answer after 0.3 s, killed");
    surge_slurm_cmd_result_fini(&res);

    char path[600];
    snprintf(path, sizeof path, "%s/pid", dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    long pid = 0;
    assert_int_equal(fscanf(f, "%ld", &pid), 1);
    fclose(f);
    assert_true(pid > 1);
    /* SIGKILL was sent before the reap; give the kernel a moment. */
    int alive = 1;
    for (int i = 0; i < 100 && alive; i++) {
        char proc[64], st[512];
        snprintf(proc, sizeof proc, "/proc/%ld/stat", pid);
        FILE *p = fopen(proc, "r");
        alive = 0;
        if (p != NULL) {
            if (fgets(st, sizeof st, p) != NULL) {
                char *rp = strrchr(st, ')');
                alive = rp != NULL && rp[2] != 'Z';
            }
            fclose(p);
        }
        if (alive) {
            usleep(10000);
        }
    }
    assert_int_equal(alive, 0);
    unlink(path);
    rmdir(dir);
}

static void
test_cmd_not_found(void **unused)
{
    char *argv[] = {"surge-no-such-command-xyz", NULL};
    surge_slurm_cmd_result res;
    int rc = surge_slurm_cmd_run(argv, 5, 1024, &res);
    assert_int_equal(rc, -ENOENT);
    char msg[256];
    surge_slurm_cmd_describe("sbatch", rc, 5, &res, msg, sizeof msg);
    assert_string_equal(msg, "sbatch: not found in PATH (is Slurm installed?)");
    surge_slurm_cmd_result_fini(&res);
}

static void
test_cmd_output_cap(void **unused)
{
    char *argv[] = {"head", "-c", "200000", "/dev/zero", NULL};
    surge_slurm_cmd_result res;
    int rc = surge_slurm_cmd_run(argv, 10, 1000, &res);
    assert_int_equal(rc, 0);
    assert_int_equal(res.exit_code, 0); /* it was drained, not blocked */
    assert_int_equal(res.out_len, 1000);
    assert_int_equal(res.out_truncated, 1);
    surge_slurm_cmd_result_fini(&res);
}

static void
test_parse_jobid(void **unused)
{
    char id[SURGE_SLURM_MAX_JOBID];
    assert_int_equal(surge_slurm_parse_jobid("123\n", id, sizeof id), 0);
    assert_string_equal(id, "123");
    assert_int_equal(surge_slurm_parse_jobid("4567;cluster\n", id, sizeof id),
                     0);
    assert_string_equal(id, "4567");
    assert_int_equal(
        surge_slurm_parse_jobid("site notice\n\n89 \n\n", id, sizeof id), 0);
    assert_string_equal(id, "89");
    assert_int_equal(surge_slurm_parse_jobid("", id, sizeof id), SURGE_EPROTO);
    assert_int_equal(surge_slurm_parse_jobid(NULL, id, sizeof id),
                     SURGE_EPROTO);
    assert_int_equal(surge_slurm_parse_jobid("abc\n", id, sizeof id),
                     SURGE_EPROTO);
    assert_int_equal(surge_slurm_parse_jobid("12x\n", id, sizeof id),
                     SURGE_EPROTO);
    assert_int_equal(
        surge_slurm_parse_jobid("1234567890123456789012\n", id, sizeof id),
        SURGE_EPROTO);
    char small[3];
    assert_int_equal(surge_slurm_parse_jobid("123\n", small, sizeof small),
                     SURGE_EPROTO);
}

static void
test_parse_exitcode(void **unused)
{
    int code = -5, sig = -5;
    assert_int_equal(
        surge_slurm_parse_exitcode("JobId=3 JobState=FAILED ExitCode=3:0 Foo=1",
                                   &code, &sig),
        0);
    assert_int_equal(code, 3);
    assert_int_equal(sig, 0);
    assert_int_equal(surge_slurm_parse_exitcode("0:15", &code, &sig), 0);
    assert_int_equal(code, 0);
    assert_int_equal(sig, 15);
    assert_int_equal(surge_slurm_parse_exitcode("1:0|x", &code, &sig), 0);
    assert_int_equal(code, 1);
    assert_int_equal(surge_slurm_parse_exitcode("ExitCode=3", &code, &sig),
                     -EINVAL);
    assert_int_equal(surge_slurm_parse_exitcode("x:y", &code, &sig), -EINVAL);
    assert_int_equal(surge_slurm_parse_exitcode("300:0", &code, &sig), -EINVAL);
    assert_int_equal(surge_slurm_parse_exitcode("1:0junk", &code, &sig),
                     -EINVAL);
    assert_int_equal(surge_slurm_parse_exitcode(NULL, &code, &sig), -EINVAL);
}

static void
test_state_class(void **unused)
{
    assert_int_equal(surge_slurm_state_class("PENDING"), SURGE_SLURM_WAITING);
    assert_int_equal(surge_slurm_state_class("REQUEUED"), SURGE_SLURM_WAITING);
    assert_int_equal(surge_slurm_state_class("RUNNING"), SURGE_SLURM_ACTIVE);
    assert_int_equal(surge_slurm_state_class("COMPLETING"), SURGE_SLURM_ACTIVE);
    assert_int_equal(surge_slurm_state_class("COMPLETED"),
                     SURGE_SLURM_ENDED_OK);
    assert_int_equal(surge_slurm_state_class("FAILED"),
                     SURGE_SLURM_ENDED_FAILED);
    assert_int_equal(surge_slurm_state_class("CANCELLED by 0"),
                     SURGE_SLURM_ENDED_CANCELLED);
    assert_int_equal(surge_slurm_state_class("CANCELLED+"),
                     SURGE_SLURM_ENDED_CANCELLED);
    assert_int_equal(surge_slurm_state_class("TIMEOUT"),
                     SURGE_SLURM_ENDED_KILLED);
    assert_int_equal(surge_slurm_state_class("OUT_OF_MEMORY"),
                     SURGE_SLURM_ENDED_KILLED);
    assert_int_equal(surge_slurm_state_class("NODE_FAIL"),
                     SURGE_SLURM_ENDED_KILLED);
    assert_int_equal(surge_slurm_state_class("RUN"), SURGE_SLURM_UNKNOWN);
    assert_int_equal(surge_slurm_state_class("RUNNINGX"), SURGE_SLURM_UNKNOWN);
    assert_int_equal(surge_slurm_state_class(""), SURGE_SLURM_UNKNOWN);
    assert_int_equal(surge_slurm_state_class(NULL), SURGE_SLURM_UNKNOWN);
}

/* Quoting is checked by the shell itself: printf %s of the quoted word
 * gives back the original bytes. */
static void
test_shell_quote(void **unused)
{
    const char *cases[] = {"plain",     "",
                           "it's",      "''",
                           "a b\tc\nd", "$HOME `id` $(id) \\ \" ; & | * ?"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char q[256], script[400];
        assert_int_equal(surge_slurm_shell_quote(cases[i], q, sizeof q), 0);
        snprintf(script, sizeof script, "printf %%s %s", q);
        char *argv[] = {"sh", "-c", script, NULL};
        surge_slurm_cmd_result res;
        assert_int_equal(surge_slurm_cmd_run(argv, 10, 1024, &res), 0);
        assert_int_equal(res.exit_code, 0);
        assert_string_equal(res.out != NULL ? res.out : "", cases[i]);
        surge_slurm_cmd_result_fini(&res);
    }
    char tiny[6];
    assert_int_equal(surge_slurm_shell_quote("abc", tiny, sizeof tiny), 0);
    assert_string_equal(tiny, "'abc'");
    assert_int_equal(surge_slurm_shell_quote("abcd", tiny, sizeof tiny),
                     -ENAMETOOLONG);
    assert_int_equal(surge_slurm_shell_quote("'", tiny, sizeof tiny),
                     -ENAMETOOLONG);
}

static char *
slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return NULL;
    }
    char *buf = calloc(1, 65536);
    size_t n = fread(buf, 1, 65535, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* The batch script, run by bash as Slurm would: environment, log, exit
 * file, exit status. */
static void
test_job_script(void **unused)
{
    char dir[] = "/tmp/test_slurm_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char script[600], log[600], exitp[600], err[256];
    snprintf(script, sizeof script, "%s/job.sh", dir);
    snprintf(log, sizeof log, "%s/run it.log", dir);
    snprintf(exitp, sizeof exitp, "%s/job.exit", dir);
    char *argv[] = {"sh", "-c",
                    "echo \"v=$SURGE_X w=$SURGE_Y pwd=$(pwd)\"; "
                    "echo oops >&2; exit 4",
                    NULL};
    char *env[] = {"SURGE_X=it's $x", "SURGE_Y=", NULL};
    assert_int_equal(surge_slurm_write_job_script(script, argv, env, dir, log,
                                                  exitp, err, sizeof err),
                     0);
    struct stat st;
    assert_int_equal(stat(script, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);

    char *run[] = {"bash", script, NULL};
    surge_slurm_cmd_result res;
    assert_int_equal(surge_slurm_cmd_run(run, 10, 1024, &res), 0);
    assert_int_equal(res.exit_code, 4);
    assert_true(res.out == NULL || res.out[0] == '\0'); /* all in the log */
    surge_slurm_cmd_result_fini(&res);

    char *text = slurp(log);
    assert_non_null(text);
    char want[800];
    snprintf(want, sizeof want, "v=it's $x w= pwd=%s\noops\n", dir);
    assert_string_equal(text, want);
    free(text);
    text = slurp(exitp);
    assert_non_null(text);
    assert_string_equal(text, "4\n");
    free(text);

    /* Bad environment names are refused before anything is written. */
    char *bad_env[] = {"1X=y", NULL};
    char other[700];
    snprintf(other, sizeof other, "%s/other.sh", dir);
    assert_int_equal(surge_slurm_write_job_script(other, argv, bad_env, dir,
                                                  log, exitp, err, sizeof err),
                     SURGE_ECONFIG);
    assert_non_null(strstr(err, "1X=y"));
    assert_int_not_equal(access(other, F_OK), 0);
    char *no_eq[] = {"NOEQUALS", NULL};
    assert_int_equal(surge_slurm_write_job_script(other, argv, no_eq, dir, log,
                                                  exitp, err, sizeof err),
                     SURGE_ECONFIG);
    char *empty[] = {NULL};
    assert_int_equal(surge_slurm_write_job_script(other, empty, NULL, dir, log,
                                                  exitp, err, sizeof err),
                     SURGE_ECONFIG);

    unlink(script);
    unlink(log);
    unlink(exitp);
    rmdir(dir);
}

static void
strv_equal(const surge_strv *v, const char *const *want)
{
    size_t n = 0;
    while (want[n] != NULL) {
        n++;
    }
    assert_int_equal(v->n, n);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(v->v[i], want[i]);
    }
    assert_null(v->v[n]);
}

/* Inside an allocation (SLURM_JOB_ID set) create() needs no Slurm: runs
 * become srun steps and the server stays a plain child process. */
static void
test_wrap_inside_allocation(void **unused)
{
    const char *text =
        "{\"study\": {\"name\": \"w\"},"
        " \"parameters\": [{\"name\": \"a\", \"min\": 0, \"max\": 1}],"
        " \"sampler\": {\"runs\": 2},"
        " \"solver\": {\"command\": \"heat --x {a}\", \"ranks\": 3},"
        " \"scheduler\": {\"kind\": \"slurm\","
        "   \"slurm\": {\"mpi\": \"pmix_v4\"}}}";
    surge_study *s = NULL;
    char err[256];
    assert_int_equal(
        surge_study_parse(&s, text, "<test>", "/tmp", err, sizeof err), 0);
    assert_int_equal(setenv("SLURM_JOB_ID", "4242", 1), 0);
    const surge_scheduler_ops *ops = &surge_sched_slurm_ops;
    void *st = NULL;
    assert_int_equal(ops->create(&st, s, err, sizeof err), 0);
    unsetenv("SLURM_JOB_ID");
    assert_non_null(st);

    char *solver[] = {"heat", "--x", "0.5", NULL};
    surge_strv out = {NULL, 0};
    assert_int_equal(ops->wrap(st, solver, 3, &out), 0);
    const char *want[] = {"srun",
                          "--mpi=pmix_v4",
                          "--ntasks=3",
                          "--kill-on-bad-exit=1",
                          "--job-name=w-steps",
                          "--exact",
                          "heat",
                          "--x",
                          "0.5",
                          NULL};
    strv_equal(&out, want);

    char *server[] = {"/bin/surge", "serve", "--output-dir", "/o", NULL};
    assert_int_equal(surge_slurm_wrap_server(st, server, &out), 0);
    const char *want_server[] = {"/bin/surge", "serve", "--output-dir", "/o",
                                 NULL};
    strv_equal(&out, want_server);
    surge_strv_free(&out);

    ops->destroy(&st);
    assert_null(st);
    surge_study_destroy(&s);
}

/* server_as_job with server.ranks: the server is an srun of R tasks (an MPI
 * job, ended whole by one rank's death), a job step inside an allocation.
 * srun is found in PATH: a stand-in here, so no Slurm is needed. */
static void
test_wrap_server_ranks(void **unused)
{
    (void)unused;
    const char *text =
        "{\"study\": {\"name\": \"w\"},"
        " \"parameters\": [{\"name\": \"a\", \"min\": 0, \"max\": 1}],"
        " \"sampler\": {\"runs\": 2},"
        " \"solver\": {\"command\": \"heat --x {a}\"},"
        " \"scheduler\": {\"kind\": \"slurm\","
        "   \"slurm\": {\"mpi\": \"mpirun\", \"server_as_job\": true}},"
        " \"server\": {\"nodes\": 2, \"ranks_per_node\": 2},"
        " \"trainer\": {\"threads\": 3}}";
    surge_study *s = NULL;
    char err[256];
    assert_int_equal(
        surge_study_parse(&s, text, "<test>", "/tmp", err, sizeof err), 0);
    char dir[] = "/tmp/test-srun-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char srun[64];
    snprintf(srun, sizeof srun, "%s/srun", dir);
    FILE *f = fopen(srun, "w");
    assert_non_null(f);
    fputs("#!/bin/sh\nexit 0\n", f);
    fclose(f);
    assert_int_equal(chmod(srun, 0755), 0);
    char *path = getenv("PATH") ? strdup(getenv("PATH")) : NULL;
    assert_int_equal(setenv("PATH", dir, 1), 0);
    assert_int_equal(setenv("SLURM_JOB_ID", "4242", 1), 0);
    const surge_scheduler_ops *ops = &surge_sched_slurm_ops;
    void *st = NULL;
    assert_int_equal(ops->create(&st, s, err, sizeof err), 0);
    unsetenv("SLURM_JOB_ID");

    char *server[] = {"/bin/surge", "serve", NULL};
    surge_strv out = {NULL, 0};
    int rc = surge_slurm_wrap_server(st, server, &out);
    const char *want[] = {srun,
                          "--nodes=2",
                          "--ntasks=4",
                          "--ntasks-per-node=2",
                          "--mpi=pmix", /* "mpirun" cannot make a step */
                          "--kill-on-bad-exit=1",
                          "--job-name=w-server",
                          "--cpus-per-task=3",
                          "--exact", /* not every CPU of the node */
                          "--quit-on-interrupt",
                          "/bin/surge",
                          "serve",
                          NULL};
    if (rc == 0) {
        strv_equal(&out, want);
    }
    surge_strv_free(&out);
    /* No srun in PATH: -ENOENT, the caller says so. */
    unlink(srun);
    int rc2 = surge_slurm_wrap_server(st, server, &out);
    rmdir(dir);
    if (path != NULL) {
        setenv("PATH", path, 1);
        free(path);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(rc2, -ENOENT);
    ops->destroy(&st);
    surge_study_destroy(&s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cmd_output_and_status),
        cmocka_unit_test(test_cmd_timeout_kills_session),
        cmocka_unit_test(test_cmd_not_found),
        cmocka_unit_test(test_cmd_output_cap),
        cmocka_unit_test(test_parse_jobid),
        cmocka_unit_test(test_parse_exitcode),
        cmocka_unit_test(test_state_class),
        cmocka_unit_test(test_shell_quote),
        cmocka_unit_test(test_job_script),
        cmocka_unit_test(test_wrap_inside_allocation),
        cmocka_unit_test(test_wrap_server_ranks),
    };
    return cmocka_run_group_tests_name("scheduler_slurm", tests, NULL, NULL);
}
