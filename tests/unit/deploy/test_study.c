/*
 * tests/unit/deploy/test_study.c - the study file parser: good files and
 * their defaults, and every error path with the message it must give (the
 * key's path first). Also command splitting and placeholder expansion, the
 * JSON round trip of the effective study. The key tables themselves (one
 * row per key, the trainer's shared with its own parser, the docs) are
 * checked by test_keys.c.
 */
#include "config.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "deploy/study.h"

#define P1 "[{\"name\": \"a\", \"min\": 0, \"max\": 1}]"
#define P2                                                                     \
    "[{\"name\": \"a\", \"min\": 0, \"max\": 1}, {\"name\": \"b\", \"min\": "  \
    "-2, \"max\": 2}]"
#define SOLVER "{\"command\": \"prog --a {a}\"}"
#define SAMPLER "{\"runs\": 4}"

/* A study text: each section's JSON, NULL for the default above, "" to
 * leave the section out; extra is more top-level members (or NULL). */
static char *
study_text(const char *params, const char *sampler, const char *solver,
           const char *extra)
{
    static char buf[65536];
    size_t o = 0;
    o += (size_t)snprintf(buf + o, sizeof buf - o, "{");
    const char *sep = "";
    if (params == NULL || params[0] != '\0') {
        o += (size_t)snprintf(buf + o, sizeof buf - o, "%s\"parameters\": %s",
                              sep, params ? params : P1);
        sep = ", ";
    }
    if (sampler == NULL || sampler[0] != '\0') {
        o += (size_t)snprintf(buf + o, sizeof buf - o, "%s\"sampler\": %s", sep,
                              sampler ? sampler : SAMPLER);
        sep = ", ";
    }
    if (solver == NULL || solver[0] != '\0') {
        o += (size_t)snprintf(buf + o, sizeof buf - o, "%s\"solver\": %s", sep,
                              solver ? solver : SOLVER);
        sep = ", ";
    }
    if (extra != NULL) {
        o += (size_t)snprintf(buf + o, sizeof buf - o, "%s%s", sep, extra);
    }
    snprintf(buf + o, sizeof buf - o, "}");
    return buf;
}

static surge_study *
parse_ok(const char *text)
{
    surge_study *s = NULL;
    char err[512] = "";
    int rc = surge_study_parse(&s, text, "<test>", "/base", err, sizeof err);
    if (rc != 0) {
        print_error("unexpected error: %s\n", err);
    }
    assert_int_equal(rc, 0);
    assert_non_null(s);
    return s;
}

/* The text must fail with a message that starts with want_prefix (when
 * not NULL) and contains want. */
static void
expect_error(const char *text, const char *want_prefix, const char *want)
{
    surge_study *s = NULL;
    char err[512] = "";
    int rc = surge_study_parse(&s, text, "<test>", "/base", err, sizeof err);
    if (rc != SURGE_ECONFIG ||
        (want_prefix != NULL &&
         strncmp(err, want_prefix, strlen(want_prefix)) != 0) ||
        strstr(err, want) == NULL) {
        print_error("text: %s\nwant: %s ... %s\ngot (%d): %s\n", text,
                    want_prefix ? want_prefix : "", want, rc, err);
    }
    assert_int_equal(rc, SURGE_ECONFIG);
    assert_null(s);
    if (want_prefix != NULL) {
        assert_memory_equal(err, want_prefix, strlen(want_prefix));
    }
    assert_non_null(strstr(err, want));
    assert_null(strchr(err, '\n')); /* every message is one line */
}

/* ------------------------------------------------------------ good */

static void
test_minimal_defaults(void **state)
{
    (void)state;
    surge_study *s = parse_ok(study_text(NULL, NULL, NULL, NULL));
    assert_string_equal(s->name, "study");
    assert_int_equal(s->seed, 1);
    assert_string_equal(s->output_dir, "runs/study");
    assert_int_equal(s->nparams, 1);
    assert_string_equal(s->params[0].name, "a");
    assert_int_equal(s->sampler, SURGE_SAMPLER_UNIFORM);
    assert_int_equal(s->runs, 4);
    assert_int_equal(s->command.n, 3);
    assert_string_equal(s->command.v[2], "{a}");
    assert_int_equal(s->ranks, 1);
    assert_int_equal(s->retries, 2);
    assert_true(s->timeout_s == 300.0);
    assert_int_equal(s->scheduler, SURGE_SCHEDULER_LOCAL);
    assert_string_equal(s->mpirun, "mpirun");
    assert_int_equal(s->oversubscribe, 1);
    assert_string_equal(s->server_bind, "tcp://127.0.0.1:*");
    assert_int_equal(s->server_max_partial_bytes, 256u << 20);
    assert_int_equal(s->res_policy, 2); /* reservoir */
    assert_int_equal(s->res_capacity_bytes, UINT64_C(1) << 30);
    assert_int_equal(s->trainer.n_layers, 3);
    assert_int_equal(s->trainer.layers[0], 256);
    assert_true(s->trainer.lr == 1e-3);
    assert_int_equal(s->trainer.seed, 42);
    assert_string_equal(s->trainer.backend, "cpu");
    assert_int_equal(s->trainer.precision, 0); /* fp32 */
    assert_string_equal(s->study_dir, "/base");
    surge_study_destroy(&s);
    assert_null(s);
    surge_study_destroy(&s); /* NULL: no-op */
}

static void
test_full_file(void **state)
{
    (void)state;
    const char *extra =
        "\"study\": {\"name\": \"heat-1\", \"seed\": 99, \"output_dir\": "
        "\"out/{name}/x\", \"progress_interval_s\": 0.5},"
        "\"scheduler\": {\"kind\": \"slurm\", \"max_concurrent\": 3, "
        "\"mpirun\": \"\", \"mpirun_args\": [\"-x\", \"FOO\"], "
        "\"oversubscribe\": false, \"kill_grace_s\": 1.5, \"slurm\": "
        "{\"partition\": \"debug\", \"array_threshold\": 0}},"
        "\"server\": {\"bind\": \"ipc:///tmp/x\", \"max_partial_bytes\": "
        "\"2MiB\", \"checksum_log\": true, \"args\": [\"--exit-idle\", "
        "\"5\"], \"validation_every\": 4},"
        "\"reservoir\": {\"policy\": \"reservoir\", \"capacity_bytes\": "
        "1000000, \"max_uses\": 3, \"balance_sims\": true, \"rate\": "
        "{\"samples_per_insert\": 2.5, \"min_diff\": -10, \"max_diff\": "
        "1000}},"
        "\"trainer\": {\"enabled\": true, \"layers\": [32, 16], "
        "\"activation\": \"tanh\", \"optimizer\": \"sgd\", \"lr\": 0.5, "
        "\"schedule\": \"cosine\", \"total_steps\": 100, \"warmup_steps\": "
        "10, \"batch_size\": 8, \"backend\": \"cuda\"}";
    surge_study *s = parse_ok(study_text(
        P2,
        "{\"kind\": \"sobol\", \"runs\": 9, \"scramble\": true, "
        "\"skip\": 1}",
        "{\"command\": [\"a b\", \"{b}\"], \"ranks\": 4, \"timeout_s\": 0, "
        "\"retries\": 0, \"client_timeout_s\": 2, \"steps\": 120}",
        extra));
    assert_string_equal(s->name, "heat-1");
    assert_int_equal(s->seed, 99);
    assert_string_equal(s->output_dir, "out/heat-1/x");
    assert_int_equal(s->nparams, 2);
    assert_true(s->params[1].min == -2 && s->params[1].max == 2);
    assert_int_equal(s->sampler, SURGE_SAMPLER_SOBOL);
    assert_int_equal(s->scramble, 1);
    assert_int_equal(s->skip, 1);
    assert_int_equal(s->command.n, 2);
    assert_string_equal(s->command.v[0], "a b");
    assert_int_equal(s->ranks, 4);
    assert_int_equal(s->steps, 120);
    assert_true(s->timeout_s == 0);
    assert_int_equal(s->scheduler, SURGE_SCHEDULER_SLURM);
    assert_int_equal(s->mpirun_args.n, 2);
    assert_string_equal(s->mpirun, "");
    assert_int_equal(s->oversubscribe, 0);
    assert_string_equal(s->slurm_partition, "debug");
    assert_int_equal(s->server_max_partial_bytes, 2u << 20);
    assert_int_equal(s->server_checksum_log, 1);
    assert_int_equal(s->server_args.n, 2);
    assert_int_equal(s->server_validation_every, 4);
    assert_int_equal(s->res_policy, 2);
    assert_int_equal(s->res_capacity_bytes, 1000000);
    assert_int_equal(s->res_max_uses, 3);
    assert_int_equal(s->res_balance_sims, 1);
    assert_true(s->res_rate_spi == 2.5);
    assert_int_equal(s->tr_enabled, 1);
    assert_int_equal(s->trainer.n_layers, 2);
    assert_int_equal(s->trainer.layers[1], 16);
    assert_int_equal(s->trainer.activation, 2);
    assert_int_equal(s->trainer.optimizer, 2);
    assert_int_equal(s->trainer.schedule, 1);
    assert_string_equal(s->trainer.backend, "cuda");
    surge_study_destroy(&s);
}

static void
test_sizes(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        uint64_t bytes;
    } cases[] = {
        {"1", 1},
        {"\"1KiB\"", 1024},
        {"\"3MiB\"", 3u << 20},
        {"\"2GiB\"", UINT64_C(2) << 30},
        {"\"1TiB\"", UINT64_C(1) << 40},
        {"\"5kB\"", 5000},
        {"\"7MB\"", 7000000},
        {"\"1GB\"", 1000000000},
        {"\"12 B\"", 12},
    };
    char extra[128];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(extra, sizeof extra,
                 "\"reservoir\": {\"policy\": \"fifo\", \"capacity_bytes\": "
                 "%s}",
                 cases[i].text);
        surge_study *s = parse_ok(study_text(NULL, NULL, NULL, extra));
        assert_int_equal(s->res_capacity_bytes, cases[i].bytes);
        surge_study_destroy(&s);
    }
}

static void
test_csv_sampler_path(void **state)
{
    (void)state;
    surge_study *s = parse_ok(study_text(
        NULL, "{\"kind\": \"csv\", \"file\": \"sets.csv\"}", NULL, NULL));
    assert_int_equal(s->sampler, SURGE_SAMPLER_CSV);
    assert_string_equal(s->sampler_file, "/base/sets.csv");
    assert_int_equal(s->runs, 0);
    surge_study_destroy(&s);
    s = parse_ok(study_text(
        NULL, "{\"kind\": \"csv\", \"file\": \"/abs.csv\", \"runs\": 2}", NULL,
        NULL));
    assert_string_equal(s->sampler_file, "/abs.csv");
    assert_int_equal(s->runs, 2);
    surge_study_destroy(&s);
}

static void
test_round_trip(void **state)
{
    (void)state;
    surge_study *s = parse_ok(study_text(
        P2, NULL, "{\"command\": \"x {{literal}} {a},{b}\", \"ranks\": 3}",
        "\"trainer\": {\"lr\": 0.1234567890123, \"layers\": []}, "
        "\"reservoir\": {\"rate\": {\"min_diff\": -5.5}}"));
    char *a = surge_study_to_json(s);
    assert_non_null(a);
    surge_study *t = parse_ok(a);
    char *b = surge_study_to_json(t);
    assert_non_null(b);
    assert_string_equal(a, b);
    assert_true(t->trainer.lr == 0.1234567890123);
    assert_int_equal(t->trainer.n_layers, 0);
    assert_int_equal(t->ranks, 3);
    assert_true(t->res_rate_min_diff == -5.5);
    free(a);
    free(b);
    surge_study_destroy(&s);
    surge_study_destroy(&t);
}

static void
test_split_command(void **state)
{
    (void)state;
    surge_strv v = {NULL, 0};
    char err[128];
    assert_int_equal(
        surge_study_split_command("  prog 'a b'  \"c \\\"d\\\"\" e\\ f 'g'h \t",
                                  &v, err, sizeof err),
        0);
    assert_int_equal(v.n, 5);
    assert_string_equal(v.v[0], "prog");
    assert_string_equal(v.v[1], "a b");
    assert_string_equal(v.v[2], "c \"d\"");
    assert_string_equal(v.v[3], "e f");
    assert_string_equal(v.v[4], "gh");
    assert_null(v.v[5]);
    surge_strv_free(&v);
    assert_int_equal(v.n, 0);
    assert_int_equal(surge_study_split_command("a 'b", &v, err, sizeof err),
                     SURGE_ECONFIG);
    assert_non_null(strstr(err, "unterminated '"));
    assert_int_equal(surge_study_split_command("a \"b", &v, err, sizeof err),
                     SURGE_ECONFIG);
    assert_non_null(strstr(err, "unterminated \""));
    assert_int_equal(surge_study_split_command("a b\\", &v, err, sizeof err),
                     SURGE_ECONFIG);
    assert_non_null(strstr(err, "trailing backslash"));
    assert_int_equal(v.n, 0);
}

static void
test_expand(void **state)
{
    (void)state;
    surge_study *s = parse_ok(study_text(
        P2, NULL,
        "{\"command\": [\"{bindir}/prog\", \"--a={a}\", \"{b}\", \"{sim}-"
        "{attempt}\", \"{ranks}\", \"{run_dir}\", \"{output_dir}\", "
        "\"{study_dir}\", \"{{x}}\"], \"ranks\": 2}",
        NULL));
    double values[2] = {0.1, -1.0 / 3.0};
    surge_expand_ctx ctx = {7, 2, values, "/out/runs/7", "/out", "/bin"};
    surge_strv v = {NULL, 0};
    char err[256];
    assert_int_equal(surge_study_expand_command(s, &ctx, &v, err, sizeof err),
                     0);
    assert_int_equal(v.n, 9);
    assert_string_equal(v.v[0], "/bin/prog");
    assert_string_equal(v.v[1], "--a=0.10000000000000001");
    assert_string_equal(v.v[2], "-0.33333333333333331");
    assert_string_equal(v.v[3], "7-2");
    assert_string_equal(v.v[4], "2");
    assert_string_equal(v.v[5], "/out/runs/7");
    assert_string_equal(v.v[6], "/out");
    assert_string_equal(v.v[7], "/base");
    assert_string_equal(v.v[8], "{x}");
    /* %.17g reads back bit-identical. */
    assert_true(strtod(v.v[2], NULL) == values[1]);
    surge_strv_free(&v);
    surge_study_destroy(&s);
}

/* ------------------------------------------------------------ bad */

static void
test_bad_json(void **state)
{
    (void)state;
    expect_error("{", "<test>:1:", "");
    expect_error("{\"a\": }", "<test>:1:", "");
    expect_error("[]", "<test>: ", "must be a JSON object");
    /* NUL inside a string is refused by jansson itself, with a position. */
    expect_error(
        study_text(NULL, NULL, NULL, "\"study\": {\"name\": \"a\\u0000b\"}"),
        "<test>:1:", "not allowed");
    expect_error("{\"study\": {}, \"study\": {}}", "<test>:", "duplicate");
    expect_error(study_text(NULL, NULL, NULL, "\"x\": 1"),
                 "x: ", "unknown key");
    expect_error(study_text(NULL, NULL, NULL, "\"solverr\": 1"),
                 "solverr: ", "unknown key (did you mean 'solver'?)");
    expect_error(
        study_text(NULL, NULL, "{\"command\": \"p\", \"rank\": 1}", NULL),
        "solver.rank: ", "unknown key (did you mean 'ranks'?)");
    /* Found by fuzz_study (tests/fuzz/corpus/fuzz_study/crash-newline-in-key):
     * a key with a newline, quoted back, split the message in two lines. */
    expect_error(
        study_text(NULL, NULL, "{\"command\": \"p\", \"r\\nks\": 2}", NULL),
        "solver.r?ks: ", "unknown key");
    expect_error(study_text(NULL, NULL, NULL, "\"trainer\": {\"lrr\": 1}"),
                 "trainer.lrr: ", "did you mean 'lr'?");
    expect_error(
        study_text(NULL, NULL, NULL, "\"trainer\": {\"backend\": \"gpu\"}"), "",
        "trainer.backend: must be one of: cpu, cuda, auto");
    expect_error(
        study_text(NULL, NULL, NULL, "\"trainer\": {\"precision\": \"bf16\"}"),
        "", "trainer.precision: bf16 needs backend cuda");
    expect_error(
        study_text(NULL, NULL, NULL, "\"reservoir\": {\"rate\": {\"spi\": 1}}"),
        "reservoir.rate.spi: ", "unknown key");
    expect_error(study_text(NULL, NULL, "3", NULL),
                 "solver: ", "must be an object");
    expect_error(study_text(NULL, NULL, NULL, "\"reservoir\": {\"rate\": 1}"),
                 "reservoir.rate: ", "must be an object");
}

static void
test_bad_values(void **state)
{
    (void)state;
    static const struct {
        const char *extra;
        const char *prefix;
        const char *want;
    } cases[] = {
        /* strings */
        {"\"study\": {\"name\": 5}", "study.name: ", "must be a string"},
        {"\"study\": {\"name\": \"a b\"}",
         "study.name: ", "must be 1 to 64 characters of [A-Za-z0-9_.-]"},
        {"\"study\": {\"output_dir\": \"\"}",
         "study.output_dir: ", "must not be empty"},
        {"\"study\": {\"output_dir\": \"x/{sim}\"}",
         "study.output_dir: ", "only the {name} placeholder"},
        /* integers */
        {"\"study\": {\"seed\": -1}",
         "study.seed: ", "must be an integer >= 0"},
        {"\"study\": {\"seed\": 1.5}",
         "study.seed: ", "must be an integer >= 0"},
        {"\"scheduler\": {\"max_concurrent\": \"2\"}",
         "scheduler.max_concurrent: ", "must be an integer in [0, 100000]"},
        /* numbers */
        {"\"trainer\": {\"lr\": 0}", "trainer.lr: ", "must be > 0"},
        {"\"trainer\": {\"lr\": -1e-3}", "trainer.lr: ", "must be > 0"},
        {"\"trainer\": {\"lr\": \"fast\"}", "trainer.lr: ", "must be a number"},
        {"\"trainer\": {\"beta1\": 1}", "trainer.beta1: ", "must be in [0, 1)"},
        {"\"reservoir\": {\"prioritized\": {\"alpha\": 1.5}}",
         "reservoir.prioritized.alpha: ", "must be in [0, 1]"},
        {"\"study\": {\"progress_interval_s\": 0}",
         "study.progress_interval_s: ", "must be > 0"},
        {"\"scheduler\": {\"kill_grace_s\": 4000}",
         "scheduler.kill_grace_s: ", "must be in (0, 3600]"},
        /* sizes */
        {"\"reservoir\": {\"capacity_bytes\": \"12 parsecs\"}",
         "reservoir.capacity_bytes: ", "must be a size in bytes"},
        {"\"reservoir\": {\"capacity_bytes\": -1}",
         "reservoir.capacity_bytes: ", "must be a size in bytes"},
        {"\"reservoir\": {\"capacity_bytes\": 0}",
         "reservoir.capacity_bytes: ", ">= 1"},
        {"\"server\": {\"max_partial_bytes\": \"99999999999999TiB\"}",
         "server.max_partial_bytes: ", "must be a size in bytes"},
        {"\"server\": {\"max_partial_bytes\": 1.5}",
         "server.max_partial_bytes: ", "must be a size in bytes"},
        /* booleans and enums */
        {"\"server\": {\"checksum_log\": 1}",
         "server.checksum_log: ", "must be true or false"},
        {"\"scheduler\": {\"kind\": \"pbs\"}",
         "scheduler.kind: ", "must be one of: local, slurm"},
        {"\"trainer\": {\"activation\": 3}",
         "trainer.activation: ", "must be one of: relu, gelu, tanh"},
        /* arrays */
        {"\"server\": {\"args\": \"--x\"}",
         "server.args: ", "must be an array of strings"},
        {"\"server\": {\"args\": [\"a\", 1]}",
         "server.args[1]: ", "must be a string"},
        {"\"trainer\": {\"layers\": 5}",
         "trainer.layers: ", "must be an array of integers"},
        {"\"trainer\": {\"layers\": [64, 0]}",
         "trainer.layers[1]: ", "must be an integer in [1, 1048576]"},
        {"\"trainer\": {\"layers\": [1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]}",
         "trainer.layers: ", "at most 16 entries"},
        /* cross-key rules */
        {"\"server\": {\"bind\": \"http://127.0.0.1:80\"}",
         "server.bind: ", "must be a tcp:// or ipc:// endpoint"},
        {"\"trainer\": {\"backend\": \"tpu\"}",
         "trainer.backend: ", "must be one of: cpu, cuda"},
        {"\"trainer\": {\"schedule\": \"cosine\"}",
         "trainer.total_steps: ", "must be > warmup_steps"},
        {"\"trainer\": {\"lr\": 0.1, \"min_lr\": 0.2}",
         "trainer.min_lr: ", "must be <= lr"},
        /* the reservoir's own rules (reservoir/config.c) */
        {"\"reservoir\": {\"epochs\": 2}",
         "reservoir.epochs: ", "only policy firo has pseudo-epochs"},
        {"\"reservoir\": {\"policy\": \"fifo\", \"max_uses\": 2}",
         "reservoir.max_uses: ", "only for policy reservoir"},
        {"\"reservoir\": {\"rate\": {\"min_diff\": 5, \"max_diff\": 5}}",
         "reservoir.rate.max_diff: ", "must be > min_diff (5) (got 5)"},
        {"\"reservoir\": {\"balance_sims\": true, \"prioritized\": "
         "{\"enabled\": true}}",
         "reservoir.prioritized.enabled: ", "not together with balance_sims"},
        {"\"reservoir\": {\"policy\": \"fifo\", \"balance_sims\": true}",
         "reservoir.balance_sims: ", "not with policy fifo"},
        {"\"reservoir\": {\"policy\": \"firo\", \"rate\": "
         "{\"samples_per_insert\": 1}}",
         "reservoir.rate.samples_per_insert: ", "only for policy reservoir"},
        /* max_batch 0 is trainer.batch_size (256) in the rate window */
        {"\"reservoir\": {\"rate\": {\"samples_per_insert\": 1, "
         "\"min_diff\": 0, \"max_diff\": 200}}",
         "reservoir.rate.max_diff: ",
         "must be >= max_batch + "
         "samples_per_insert (257)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        expect_error(study_text(NULL, NULL, NULL, cases[i].extra),
                     cases[i].prefix, cases[i].want);
    }
}

static void
test_bad_parameters(void **state)
{
    (void)state;
    char many[8192];
    size_t o = (size_t)snprintf(many, sizeof many, "[");
    for (int i = 0; i < 65; i++) {
        o += (size_t)snprintf(many + o, sizeof many - o,
                              "%s{\"name\": \"p%d\", \"min\": 0, \"max\": 1}",
                              i ? "," : "", i);
    }
    snprintf(many + o, sizeof many - o, "]");
    expect_error(study_text("", NULL, NULL, NULL), "parameters: ", "required");
    expect_error(study_text("{}", NULL, NULL, NULL),
                 "parameters: ", "must be an array");
    expect_error(study_text("[]", NULL, NULL, NULL),
                 "parameters: ", "must not be empty");
    expect_error(study_text(many, NULL, NULL, NULL),
                 "parameters: ", "at most 64 parameters");
    expect_error(study_text("[{\"name\": \"a\", \"min\": 0, \"max\": 1}, 3]",
                            NULL, NULL, NULL),
                 "parameters[1]: ", "must be an object");
    expect_error(study_text("[{\"name\": \"a b\", \"min\": 0, \"max\": 1}]",
                            NULL, NULL, NULL),
                 "parameters[0].name: ", "must be 1 to 64 characters");
    expect_error(
        study_text("[{\"name\": 7, \"min\": 0, \"max\": 1}]", NULL, NULL, NULL),
        "parameters[0].name: ", "must be 1 to 64 characters");
    expect_error(study_text("[{\"name\": \"sim\", \"min\": 0, \"max\": 1}]",
                            NULL, NULL, NULL),
                 "parameters[0].name: ", "'sim' is reserved");
    expect_error(study_text("[{\"name\": \"a\", \"min\": 0, \"max\": 1}, "
                            "{\"name\": \"a\", \"min\": 0, \"max\": 1}]",
                            NULL, NULL, NULL),
                 "parameters[1].name: ", "'a' is already parameters[0]");
    expect_error(study_text("[{\"name\": \"a\", \"min\": \"0\", \"max\": 1}]",
                            NULL, NULL, NULL),
                 "parameters[0].min: ", "must be a number");
    expect_error(study_text("[{\"name\": \"a\", \"min\": 0, \"max\": null}]",
                            NULL, NULL, NULL),
                 "parameters[0].max: ", "must be a number");
    expect_error(study_text("[{\"name\": \"a\", \"mni\": 0, \"max\": 1}]", NULL,
                            NULL, NULL),
                 "parameters[0].mni: ", "unknown key (did you mean 'min'?)");
    expect_error(study_text("[{\"min\": 0, \"max\": 1}]", NULL, NULL, NULL),
                 "parameters[0].name: ", "required");
    expect_error(
        study_text("[{\"name\": \"a\", \"max\": 1}]", NULL, NULL, NULL),
        "parameters[0].min: ", "required");
    expect_error(
        study_text("[{\"name\": \"a\", \"min\": 1}]", NULL, NULL, NULL),
        "parameters[0].max: ", "required");
    expect_error(
        study_text("[{\"name\": \"a\", \"min\": 0, \"max\": 1}, {\"name\": "
                   "\"b\", \"min\": 0, \"max\": 1}, {\"name\": \"c\", "
                   "\"min\": 2, \"max\": 2}]",
                   NULL, NULL, NULL),
        "parameters[2].max: ", "must be > min");
}

static void
test_bad_solver_and_sampler(void **state)
{
    (void)state;
    static const struct {
        const char *sampler;
        const char *solver;
        const char *prefix;
        const char *want;
    } cases[] = {
        {NULL, "", "solver.command: ", "required"},
        {NULL, "{\"ranks\": 2}", "solver.command: ", "required"},
        {NULL, "{\"command\": 5}",
         "solver.command: ", "must be a string or an array of strings"},
        {NULL, "{\"command\": \"  \"}",
         "solver.command: ", "must name a program"},
        {NULL, "{\"command\": []}", "solver.command: ", "must name a program"},
        {NULL, "{\"command\": [\"p\", 2]}",
         "solver.command[1]: ", "must be a string"},
        {NULL, "{\"command\": \"p 'x\"}",
         "solver.command: ", "unterminated ' quote"},
        {NULL, "{\"command\": \"p {foo}\"}",
         "solver.command: ", "unknown placeholder {foo}"},
        {NULL, "{\"command\": \"p x}\"}", "solver.command: ", "unmatched '}'"},
        {NULL, "{\"command\": \"p {sim\"}",
         "solver.command: ", "unterminated placeholder"},
        {NULL, "{\"command\": \"p {}\"}",
         "solver.command: ", "bad placeholder"},
        {NULL, "{\"command\": \"p\", \"ranks\": 0}",
         "solver.ranks: ", "must be an integer in [1, 65536]"},
        {NULL, "{\"command\": \"p\", \"retries\": -1}",
         "solver.retries: ", "must be an integer in [0, 100]"},
        {NULL, "{\"command\": \"p\", \"timeout_s\": -1}",
         "solver.timeout_s: ", "must be >= 0"},
        {"{\"kind\": \"uniform\"}", NULL, "sampler.runs: ", "required"},
        {"{\"runs\": 0}", NULL,
         "sampler.runs: ", "must be an integer in [1, 10000000]"},
        {"{\"kind\": \"grid\", \"runs\": 2}", NULL,
         "sampler.kind: ", "must be one of: uniform, lhs, halton, sobol, csv"},
        {"{\"kind\": \"csv\"}", NULL,
         "sampler.file: ", "required when sampler.kind is csv"},
        {"{\"runs\": 2, \"file\": \"x.csv\"}", NULL,
         "sampler.file: ", "only used when sampler.kind is csv"},
        {"{\"kind\": \"csv\", \"file\": \"\"}", NULL,
         "sampler.file: ", "must not be empty"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        expect_error(study_text(NULL, cases[i].sampler, cases[i].solver, NULL),
                     cases[i].prefix, cases[i].want);
    }
    /* Sobol's direction numbers stop at 40 dimensions. */
    char many[8192];
    size_t o = (size_t)snprintf(many, sizeof many, "[");
    for (int i = 0; i < 41; i++) {
        o += (size_t)snprintf(many + o, sizeof many - o,
                              "%s{\"name\": \"p%d\", \"min\": 0, \"max\": 1}",
                              i ? "," : "", i);
    }
    snprintf(many + o, sizeof many - o, "]");
    expect_error(study_text(many, "{\"kind\": \"sobol\", \"runs\": 2}",
                            "{\"command\": \"p\"}", NULL),
                 "sampler.kind: ", "sobol supports at most 40 parameters");
}

static void
test_load_errors(void **state)
{
    (void)state;
    surge_study *s = NULL;
    char err[512];
    char path[] = "/tmp/surge-test-study-XXXXXX";
    assert_int_equal(
        surge_study_load(&s, "/nonexistent/study.json", err, sizeof err),
        -ENOENT);
    assert_non_null(strstr(err, "/nonexistent/study.json: "));
    assert_null(s);

    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "{\"a\"\0}", 6), 6);
    close(fd);
    assert_int_equal(surge_study_load(&s, path, err, sizeof err),
                     SURGE_ECONFIG);
    assert_non_null(strstr(err, "NUL bytes"));

    /* Larger than 1 MiB: refused before parsing. */
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < (1 << 20) / 8 + 1; i++) {
        fputs("        ", f);
    }
    fclose(f);
    assert_int_equal(surge_study_load(&s, path, err, sizeof err),
                     SURGE_ECONFIG);
    assert_non_null(strstr(err, "larger than"));

    /* A good file: relative paths start at its folder. */
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(study_text(NULL, "{\"kind\": \"csv\", \"file\": \"p.csv\"}", NULL,
                     NULL),
          f);
    fclose(f);
    assert_int_equal(surge_study_load(&s, path, err, sizeof err), 0);
    assert_string_equal(s->sampler_file, "/tmp/p.csv");
    assert_string_equal(s->source, path);
    surge_study_destroy(&s);
    unlink(path);
}

/* server.ranks, nodes, ranks_per_node, launcher and mpirun_args: defaults,
 * the product rule and every combination refused, with its message. */
static void
test_server_ranks(void **state)
{
    (void)state;
    surge_study *s = parse_ok(study_text(NULL, NULL, NULL, NULL));
    assert_int_equal(s->server_ranks, 1);
    assert_int_equal(s->server_nodes, 1);
    assert_int_equal(s->server_ranks_per_node, 0);
    assert_int_equal(s->server_launcher, 0);
    assert_int_equal(s->server_mpirun_args.n, 0);
    assert_int_equal(s->server_bind_simulation, 0);
    surge_study_destroy(&s);
    s = parse_ok(study_text(NULL, NULL, NULL,
                            "\"server\": {\"ranks\": 3, \"mpirun_args\": "
                            "[\"--oversubscribe\"], \"bind_simulation\": "
                            "true}"));
    assert_int_equal(s->server_ranks, 3);
    assert_string_equal(s->server_mpirun_args.v[0], "--oversubscribe");
    assert_int_equal(s->server_bind_simulation, 1);
    surge_study_destroy(&s);
    /* Slurm: nodes x ranks_per_node gives R when R is not given. */
#define AS_JOB                                                                 \
    "\"scheduler\": {\"kind\": \"slurm\", \"slurm\": {\"server_as_job\": "     \
    "true}}, "
    s = parse_ok(
        study_text(NULL, NULL, NULL,
                   AS_JOB "\"server\": {\"nodes\": 2, \"ranks_per_node\": 3}"));
    assert_int_equal(s->server_ranks, 6);
    surge_study_destroy(&s);
    s = parse_ok(study_text(NULL, NULL, NULL,
                            AS_JOB "\"server\": {\"ranks\": 5, \"nodes\": 2}"));
    assert_int_equal(s->server_ranks, 5);
    assert_int_equal(s->server_nodes, 2);
    surge_study_destroy(&s);
    expect_error(study_text(NULL, NULL, NULL, "\"server\": {\"ranks\": 0}"),
                 "server.ranks: ", "must be an integer in [1, 65536]");
    expect_error(study_text(NULL, NULL, NULL, "\"server\": {\"ranks\": 1.5}"),
                 "server.ranks: ", "integer");
    expect_error(study_text(NULL, NULL, NULL,
                            AS_JOB "\"server\": {\"ranks\": 4, \"nodes\": 2, "
                                   "\"ranks_per_node\": 3}"),
                 "server.ranks_per_node: ", "= 6, but server.ranks = 4");
    expect_error(study_text(NULL, NULL, NULL,
                            AS_JOB "\"server\": {\"ranks\": 2, \"nodes\": 3}"),
                 "server.nodes: ", "must be <= server.ranks (2)");
    expect_error(study_text(NULL, NULL, NULL,
                            "\"server\": {\"ranks\": 4, \"nodes\": 2}"),
                 "server.nodes: ", "only with scheduler.kind slurm");
    expect_error(study_text(NULL, NULL, NULL,
                            "\"scheduler\": {\"kind\": \"slurm\"}, "
                            "\"server\": {\"ranks_per_node\": 1}"),
                 "server.ranks_per_node: ", "server_as_job");
    expect_error(study_text(NULL, NULL, NULL,
                            "\"server\": {\"ranks\": 2, \"launcher\": "
                            "\"direct\"}"),
                 "server.launcher: ", "server.ranks = 2 needs mpirun");
    expect_error(
        study_text(NULL, NULL, NULL, "\"server\": {\"launcher\": \"srun\"}"),
        "server.launcher: ", "auto");
    expect_error(study_text(NULL, NULL, NULL,
                            AS_JOB "\"server\": {\"launcher\": \"mpirun\"}"),
                 "server.launcher: ", "srun starts it");
    expect_error(
        study_text(NULL, NULL, NULL, "\"server\": {\"mpirun_args\": [\"-x\"]}"),
        "server.mpirun_args: ", "mpirun does not start this server");
    expect_error(study_text(NULL, NULL, NULL,
                            AS_JOB "\"server\": {\"ranks\": 2, "
                                   "\"mpirun_args\": [\"-x\"]}"),
                 "server.mpirun_args: ", "server_as_job");
    expect_error(
        study_text(NULL, NULL, NULL, "\"server\": {\"bind_simulation\": true}"),
        "server.bind_simulation: ", "only with server.ranks > 1");
    expect_error(study_text(NULL, NULL, NULL,
                            "\"server\": {\"ranks\": 2, "
                            "\"bind_simulation\": 1}"),
                 "server.bind_simulation: ", "must be true or false");
#undef AS_JOB
}

/* docs/configuration.md documents every key of the table. */
int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_minimal_defaults),
        cmocka_unit_test(test_full_file),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_csv_sampler_path),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_split_command),
        cmocka_unit_test(test_expand),
        cmocka_unit_test(test_bad_json),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_bad_parameters),
        cmocka_unit_test(test_bad_solver_and_sampler),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_server_ranks),
    };
    return cmocka_run_group_tests_name("deploy/study", tests, NULL, NULL);
}
