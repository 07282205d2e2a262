/*
 * tests/unit/deploy/test_keys.c - every configuration key lives in one
 * table (common/keytab.h). The trainer's keys (trainer/config.c,
 * surge_trainer_keys) are the rows the study parser uses for the "trainer"
 * section, not a copy: both parsers accept and refuse the same values, with
 * the same message, at bounds read from the table here (so a bound changed
 * in the table moves what both accept). The reservoir's keys
 * (reservoir/config.c, surge_reservoir_keys) are the study's "reservoir"
 * rows with the study's fields: a value the study reads lands in the
 * library's struct as the library's own row would put it, the study and
 * the library's check refuse the same values in the same words, and a
 * study that says nothing gives the library's defaults. Every default
 * reads the same through the core's text reader as through jansson. No
 * key is listed twice, and docs/configuration.md documents each key with
 * the table's type, bounds, names and default.
 */
#include "config.h"

#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "common/keytab.h"
#include "deploy/study.h"
#include "deploy/study_config.h"
#include "reservoir/reservoir.h"
#include "trainer/trainer.h"

#ifndef SURGE_TOP_SRCDIR
#define SURGE_TOP_SRCDIR "."
#endif

/* Values that the rules across keys accept whatever the key probed is:
 * min_lr <= lr, total_steps > warmup_steps for cosine, a precision other
 * than fp32 needs a backend other than cpu. */
#define CONTEXT                                                                \
    "{\"backend\": \"auto\", \"lr\": 100, \"total_steps\": 1000000000}"

/* Parse the trainer section text (a JSON object) with both parsers:
 * the trainer's own into *lib (from its defaults), the study parser into
 * *study (the study's trainer struct). Returns the two return codes; the
 * messages go to err_lib and err_study. */
static void
parse_both(const char *section, struct surge_trainer_config *lib, int *rc_lib,
           char *err_lib, struct surge_trainer_config *study, int *rc_study,
           char *err_study)
{
    surge_trainer_config_defaults(lib);
    *rc_lib = surge_trainer_config_from_json(lib, section, strlen(section),
                                             err_lib, 512);
    char text[4096];
    snprintf(text, sizeof text,
             "{\"parameters\": [{\"name\": \"a\", \"min\": 0, \"max\": 1}], "
             "\"sampler\": {\"runs\": 2}, \"solver\": {\"command\": \"p\"}, "
             "\"trainer\": %s}",
             section);
    surge_study *s = NULL;
    *rc_study = surge_study_parse(&s, text, "<test>", "/", err_study, 512);
    if (s != NULL) {
        *study = s->trainer;
        surge_study_destroy(&s);
    }
}

/* The context with key k set to the JSON value v (text). */
static void
section_with(const struct surge_key *k, const char *v, char *out, size_t cap)
{
    json_error_t jerr;
    json_t *o = json_loads(CONTEXT, 0, &jerr);
    json_t *x = json_loads(v, JSON_DECODE_ANY, &jerr);
    assert_non_null(o);
    assert_non_null(x);
    assert_int_equal(json_object_set_new(o, k->name, x), 0);
    char *t = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(17));
    assert_non_null(t);
    snprintf(out, cap, "%s", t);
    free(t);
    json_decref(o);
}

/* A value of key k inside its bounds and, where it can be, not its
 * default, as JSON text. */
static void
probe_value(const struct surge_key *k, char *buf, size_t cap)
{
    bool no_max = (k->flags & SURGE_KEY_NO_MAX) != 0;
    switch (k->type) {
    case SURGE_KEY_ENUM:
    case SURGE_KEY_STR:
        assert_non_null(k->choices);
        snprintf(buf, cap, "\"%s\"", k->choices[1]);
        return;
    case SURGE_KEY_INT:
        snprintf(buf, cap, "%.0f", no_max ? k->min + 7 : k->max);
        return;
    case SURGE_KEY_INTV:
        snprintf(buf, cap, "[%.0f, %.0f]", k->min, k->max);
        return;
    case SURGE_KEY_SIZE:
        snprintf(buf, cap, "\"3MiB\"");
        return;
    case SURGE_KEY_BOOL:
        snprintf(buf, cap, "true");
        return;
    case SURGE_KEY_NUM:
        if (k->flags & SURGE_KEY_NO_MIN) {
            snprintf(buf, cap, "1.5");
        } else if (no_max) {
            snprintf(buf, cap, "%.17g", k->min + 1.5);
        } else {
            snprintf(buf, cap, "%.17g", k->min + (k->max - k->min) / 4);
        }
        return;
    default:
        fail_msg("%s: a type this test does not probe", k->name);
    }
}

static void
test_one_table(void **state)
{
    (void)state;
    size_t n = 0;
    const char *const *paths = surge_study_key_paths(&n);
    /* No path twice in the study (its own rows, the trainer's, those with
     * their own code). */
    for (size_t i = 0; i < n; i++) {
        for (size_t j = i + 1; j < n; j++) {
            if (strcmp(paths[i], paths[j]) == 0) {
                fail_msg("%s is listed twice", paths[i]);
            }
        }
    }
    /* Every trainer key is the study's key of the same name: the same row,
     * not a copy of it. */
    size_t ntrainer = 0;
    for (const struct surge_key *k = surge_trainer_keys; k->name != NULL; k++) {
        char path[128];
        snprintf(path, sizeof path, "trainer.%s", k->name);
        if (surge_study_key(path) != k) {
            fail_msg("%s: the study does not read the trainer's row", path);
        }
        for (const struct surge_key *o = surge_trainer_keys; o != k; o++) {
            assert_string_not_equal(o->name, k->name);
        }
        assert_non_null(k->def); /* the trainer has a default for each */
        if (k->type == SURGE_KEY_INT && k->size == sizeof(int)) {
            /* An int field: its bound must fit the field. */
            assert_false(k->flags & SURGE_KEY_NO_MAX);
            assert_true(k->max <= INT_MAX);
        }
        ntrainer++;
    }
    assert_true(ntrainer >= 20);
    /* An ENUM row's names are in its enum's order. */
    static const struct {
        const char *name;
        int (*parse)(const char *);
        int value;
    } names[] = {
        {"relu", surge_trainer_activation_parse, SURGE_ACT_RELU},
        {"gelu", surge_trainer_activation_parse, SURGE_ACT_GELU},
        {"tanh", surge_trainer_activation_parse, SURGE_ACT_TANH},
        {"adam", surge_trainer_optimizer_parse, SURGE_OPT_ADAM},
        {"adamw", surge_trainer_optimizer_parse, SURGE_OPT_ADAMW},
        {"sgd", surge_trainer_optimizer_parse, SURGE_OPT_SGD},
        {"constant", surge_trainer_schedule_parse, SURGE_SCHED_CONSTANT},
        {"cosine", surge_trainer_schedule_parse, SURGE_SCHED_COSINE},
        {"step", surge_trainer_schedule_parse, SURGE_SCHED_STEP},
        {"fp32", surge_trainer_precision_parse, SURGE_PRECISION_FP32},
        {"tf32", surge_trainer_precision_parse, SURGE_PRECISION_TF32},
        {"bf16", surge_trainer_precision_parse, SURGE_PRECISION_BF16},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        assert_int_equal(names[i].parse(names[i].name), names[i].value);
    }
    const struct surge_key *on = surge_study_key("trainer.out_norm");
    assert_non_null(on);
    assert_int_equal(surge_keytab_choice_index(on, "global"),
                     SURGE_OUTNORM_GLOBAL);
    assert_int_equal(surge_keytab_choice_index(on, "element"),
                     SURGE_OUTNORM_ELEMENT);
    /* The defaults pass the table's own checks and the rules across keys;
     * a study that says nothing gives exactly them. */
    struct surge_trainer_config lib, study;
    char e1[512], e2[512];
    int r1, r2;
    memset(&lib, 0xa5, sizeof lib);
    assert_int_equal(surge_keytab_defaults(surge_trainer_keys, &lib, e1, 512),
                     0);
    assert_int_equal(surge_trainer_config_check(&lib, e1, sizeof e1), 0);
    parse_both("{}", &lib, &r1, e1, &study, &r2, e2);
    assert_int_equal(r1, 0);
    assert_int_equal(r2, 0);
    assert_memory_equal(&lib, &study, sizeof lib);
}

/* Each trainer key, set to a value other than its default, lands in the
 * same field with the same value through both parsers. */
static void
test_both_parsers_read_every_key(void **state)
{
    (void)state;
    for (const struct surge_key *k = surge_trainer_keys; k->name != NULL; k++) {
        char v[128], section[1024], e1[512] = "", e2[512] = "";
        struct surge_trainer_config lib, study, dflt;
        int r1, r2;
        probe_value(k, v, sizeof v);
        section_with(k, v, section, sizeof section);
        parse_both(section, &lib, &r1, e1, &study, &r2, e2);
        if (r1 != 0 || r2 != 0) {
            fail_msg("%s: trainer %d '%s', study %d '%s'", section, r1, e1, r2,
                     e2);
        }
        assert_memory_equal(&lib, &study, sizeof lib);
        /* The probe changed the field (or equals the default). */
        surge_trainer_config_defaults(&dflt);
        json_t *def = json_loads(k->def, JSON_DECODE_ANY, NULL);
        json_t *got = json_loads(v, JSON_DECODE_ANY, NULL);
        if (!json_equal(def, got)) {
            assert_true(memcmp((char *)&lib + k->off, (char *)&dflt + k->off,
                               k->size) != 0);
        }
        json_decref(def);
        json_decref(got);
    }
}

/* Store v in the field of INT or NUM row k of the struct at base, as the
 * field's type (int, unsigned, int64_t, uint64_t, double); false when v
 * does not fit that type. */
static bool
set_field(const struct surge_key *k, void *base, double v)
{
    char *slot = (char *)base + k->off;
    bool uns = (k->flags & SURGE_KEY_UNSIGNED) != 0;
    if (k->type == SURGE_KEY_NUM) {
        memcpy(slot, &v, sizeof v);
    } else if (k->size == sizeof(int)) {
        if (uns ? !(v >= 0 && v <= UINT_MAX)
                : !(v >= INT_MIN && v <= INT_MAX)) {
            return false;
        }
        if (uns) {
            unsigned x = (unsigned)v;
            memcpy(slot, &x, sizeof x);
        } else {
            int x = (int)v;
            memcpy(slot, &x, sizeof x);
        }
    } else if (k->type == SURGE_KEY_INT) {
        if (uns && !(v >= 0)) {
            return false;
        }
        int64_t x = (int64_t)v;
        memcpy(slot, &x, sizeof x);
    } else {
        return false;
    }
    return true;
}

/* Both parsers refuse value v (JSON text) of key k with the same message;
 * with a scalar (the same value as a number), _check refuses it in a
 * struct with the same words. */
static void
expect_refused(const struct surge_key *k, const char *v, const double *scalar)
{
    char section[1024], e1[512] = "", e2[512] = "", e3[512] = "";
    struct surge_trainer_config lib, study;
    int r1, r2;
    section_with(k, v, section, sizeof section);
    parse_both(section, &lib, &r1, e1, &study, &r2, e2);
    if (r1 != SURGE_ECONFIG || r2 != SURGE_ECONFIG || strcmp(e1, e2) != 0) {
        fail_msg("%s: trainer %d '%s', study %d '%s'", section, r1, e1, r2, e2);
    }
    char prefix[128];
    snprintf(prefix, sizeof prefix, "trainer.%s", k->name);
    assert_memory_equal(e1, prefix, strlen(prefix));
    if (scalar != NULL) {
        struct surge_trainer_config c;
        surge_trainer_config_defaults(&c);
        assert_true(set_field(k, &c, *scalar));
        assert_int_equal(surge_trainer_config_check(&c, e3, sizeof e3),
                         SURGE_ECONFIG);
        /* The same expectation, up to the value quoted. */
        size_t n = strcspn(e1, "(");
        assert_memory_equal(e1, e3, n);
    }
}

static void
expect_accepted(const struct surge_key *k, const char *v)
{
    char section[1024], e1[512] = "", e2[512] = "";
    struct surge_trainer_config lib, study;
    int r1, r2;
    section_with(k, v, section, sizeof section);
    parse_both(section, &lib, &r1, e1, &study, &r2, e2);
    if (r1 != 0 || r2 != 0) {
        fail_msg("%s: trainer %d '%s', study %d '%s'", section, r1, e1, r2, e2);
    }
}

/* Key k's bound on side 0 (min) or 1 (max), step apart from the values
 * next to it: false when there is none; else *edge, *out (the nearest
 * value outside: the edge itself where the interval is open) and whether
 * the edge is accepted. */
static bool
bound_probe(const struct surge_key *k, int side, double step, double *edge,
            double *out, bool *edge_ok)
{
    unsigned none = side == 0 ? SURGE_KEY_NO_MIN : SURGE_KEY_NO_MAX;
    unsigned excl = side == 0 ? SURGE_KEY_MIN_EXCL : SURGE_KEY_MAX_EXCL;
    if (k->flags & none) {
        return false;
    }
    *edge = side == 0 ? k->min : k->max;
    *edge_ok = !(k->flags & excl);
    *out = *edge_ok ? *edge + (side == 0 ? -step : step) : *edge;
    return true;
}

/* Values just inside and just outside each key's bounds, read from the
 * table: both parsers and _check agree on every one. */
static void
test_bounds_come_from_the_table(void **state)
{
    (void)state;
    int refused = 0;
    for (const struct surge_key *k = surge_trainer_keys; k->name != NULL; k++) {
        char v[128];
        if (k->choices != NULL) {
            expect_refused(k, "\"no-such-name\"", NULL);
            expect_refused(k, "1", NULL);
            for (int i = 0; k->choices[i] != NULL; i++) {
                snprintf(v, sizeof v, "\"%s\"", k->choices[i]);
                expect_accepted(k, v);
            }
            refused++;
            continue;
        }
        bool integer = k->type == SURGE_KEY_INT || k->type == SURGE_KEY_INTV;
        const char *fmt = k->type == SURGE_KEY_INTV ? "[%.17g]" : "%.17g";
        bool scalar = k->type != SURGE_KEY_INTV;
        double step = integer ? 1 : 0.5;
        /* Each bound: just outside it refused, on it accepted (unless
         * the interval is open there). */
        for (int side = 0; side < 2; side++) {
            double edge, out;
            bool edge_ok;
            if (!bound_probe(k, side, step, &edge, &out, &edge_ok)) {
                continue;
            }
            snprintf(v, sizeof v, fmt, out);
            expect_refused(k, v, scalar ? &out : NULL);
            refused++;
            if (edge_ok) {
                snprintf(v, sizeof v, fmt, edge);
                expect_accepted(k, v);
            }
        }
        if (integer) {
            expect_refused(k, scalar ? "1.5" : "[1.5]", NULL);
        }
        if (k->type == SURGE_KEY_INTV) {
            /* One entry more than the field holds. */
            size_t cap = k->size / sizeof(int), o = 0;
            char many[512];
            o += (size_t)snprintf(many + o, sizeof many - o, "[");
            for (size_t i = 0; i <= cap; i++) {
                o += (size_t)snprintf(many + o, sizeof many - o, "%s%.0f",
                                      i > 0 ? ", " : "", k->min);
            }
            snprintf(many + o, sizeof many - o, "]");
            expect_refused(k, many, NULL);
        }
    }
    assert_true(refused >= 25);
}

/* ---- the reservoir's keys ---- */

/* The study file with reservoir section {key: v} (v JSON text; k NULL:
 * an empty section), and whatever context the reservoir's rules across
 * keys need for that key: epochs only for firo. */
static void
reservoir_study(const struct surge_key *k, const char *v, char *out, size_t cap)
{
    json_error_t jerr;
    json_t *sec = json_object();
    assert_non_null(sec);
    if (k != NULL) {
        if (strcmp(k->name, "epochs") == 0) {
            json_object_set_new(sec, "policy", json_string("firo"));
        }
        /* "rate.min_diff" is {"rate": {"min_diff": v}} */
        json_t *o = sec;
        char name[128];
        snprintf(name, sizeof name, "%s", k->name);
        char *dot = strchr(name, '.');
        if (dot != NULL) {
            *dot = '\0';
            o = json_object();
            json_object_set_new(sec, name, o);
        }
        json_t *x = json_loads(v, JSON_DECODE_ANY, &jerr);
        assert_non_null(x);
        json_object_set_new(o, dot != NULL ? dot + 1 : name, x);
    }
    char *t = json_dumps(sec, JSON_COMPACT | JSON_REAL_PRECISION(17));
    assert_non_null(t);
    snprintf(out, cap,
             "{\"parameters\": [{\"name\": \"a\", \"min\": 0, \"max\": 1}], "
             "\"sampler\": {\"runs\": 2}, \"solver\": {\"command\": \"p\"}, "
             "\"reservoir\": %s}",
             t);
    free(t);
    json_decref(sec);
}

/* Parse it; on success *cfg is the library struct the study gives
 * (deploy/study_config.c's mapping, samples of 2 + 1 floats). */
static int
reservoir_parse(const char *text, surge_reservoir_config *cfg, char *err)
{
    surge_study *s = NULL;
    int rc = surge_study_parse(&s, text, "<test>", "/", err, 512);
    if (s != NULL) {
        surge_study_reservoir_config(s, 2, 1, cfg);
        surge_study_destroy(&s);
    }
    return rc;
}

/* The library's defaults with its own row k set to v (JSON text), and
 * the context of reservoir_study(). */
static void
reservoir_lib(const struct surge_key *k, const char *v,
              surge_reservoir_config *cfg)
{
    char err[512] = "";
    surge_reservoir_config_init(cfg);
    cfg->input_dim = 2;
    cfg->output_dim = 1;
    if (strcmp(k->name, "epochs") == 0) {
        cfg->policy = SURGE_RESERVOIR_FIRO;
    }
    json_t *x = json_loads(v, JSON_DECODE_ANY, NULL);
    assert_non_null(x);
    if (surge_keytab_set(k, cfg, k->name, x, err, sizeof err) != 0) {
        fail_msg("reservoir.%s = %s: %s", k->name, v, err);
    }
    json_decref(x);
}

static void
test_reservoir_one_table(void **state)
{
    (void)state;
    size_t nres = 0;
    for (const struct surge_key *k = surge_reservoir_keys; k->name != NULL;
         k++) {
        char path[128];
        snprintf(path, sizeof path, "reservoir.%s", k->name);
        const struct surge_key *sk = surge_study_key(path);
        if (sk == NULL) {
            fail_msg("%s: not a key of the study", path);
        }
        /* The reservoir's row with the study's field: nothing else
         * differs. */
        struct surge_key a = *k, b = *sk;
        a.off = b.off = 0;
        a.size = b.size = 0;
        assert_memory_equal(&a, &b, sizeof a);
        assert_non_null(k->def);
        for (const struct surge_key *o = surge_reservoir_keys; o != k; o++) {
            assert_string_not_equal(o->name, k->name);
        }
        nres++;
    }
    assert_true(nres >= 15);
    /* (That the policy names are in the enum's order is
     * tests/unit/reservoir/test_reservoir's: surge_reservoir_policy_parse
     * reads the table.) */
    /* The defaults pass the library's checks, and a study that says
     * nothing gives exactly them (max_batch: trainer.batch_size, 256 as
     * the library's). */
    surge_reservoir_config lib, study;
    char err[512] = "", text[2048];
    memset(&lib, 0xa5, sizeof lib);
    surge_reservoir_config_init(&lib);
    lib.input_dim = 2;
    lib.output_dim = 1;
    assert_int_equal(surge_reservoir_config_check(&lib, err, sizeof err), 0);
    reservoir_study(NULL, NULL, text, sizeof text);
    memset(&study, 0x5a, sizeof study);
    assert_int_equal(reservoir_parse(text, &study, err), 0);
    assert_memory_equal(&lib, &study, sizeof lib);
}

/* Each reservoir key, set to a value other than its default in the
 * study, lands in the library's struct as the library's own row puts
 * it. */
static void
test_reservoir_keys_land_in_the_library(void **state)
{
    (void)state;
    for (const struct surge_key *k = surge_reservoir_keys; k->name != NULL;
         k++) {
        char v[128], text[2048], err[512] = "";
        surge_reservoir_config lib, study, dflt;
        probe_value(k, v, sizeof v);
        reservoir_study(k, v, text, sizeof text);
        if (reservoir_parse(text, &study, err) != 0) {
            fail_msg("%s: %s", text, err);
        }
        reservoir_lib(k, v, &lib);
        assert_memory_equal(&lib, &study, sizeof lib);
        surge_reservoir_config_init(&dflt);
        assert_true(memcmp((char *)&lib + k->off, (char *)&dflt + k->off,
                           k->size) != 0);
    }
}

/* Just inside and just outside each reservoir key's bounds, read from
 * its row: the study refuses and accepts the same values as the
 * library's check of its struct, in the same words. */
static void
test_reservoir_bounds(void **state)
{
    (void)state;
    int refused = 0;
    for (const struct surge_key *k = surge_reservoir_keys; k->name != NULL;
         k++) {
        char v[128], text[2048], e1[512] = "", e2[512] = "", prefix[128];
        surge_reservoir_config c;
        snprintf(prefix, sizeof prefix, "reservoir.%s: ", k->name);
        if (k->type == SURGE_KEY_BOOL) {
            reservoir_study(k, "1", text, sizeof text);
            assert_int_equal(reservoir_parse(text, &c, e1), SURGE_ECONFIG);
            assert_memory_equal(e1, prefix, strlen(prefix));
            continue;
        }
        if (k->choices != NULL) {
            reservoir_study(k, "\"no-such-name\"", text, sizeof text);
            assert_int_equal(reservoir_parse(text, &c, e1), SURGE_ECONFIG);
            assert_memory_equal(e1, prefix, strlen(prefix));
            for (int i = 0; k->choices[i] != NULL; i++) {
                snprintf(v, sizeof v, "\"%s\"", k->choices[i]);
                reservoir_study(k, v, text, sizeof text);
                if (reservoir_parse(text, &c, e1) != 0) {
                    fail_msg("%s: %s", text, e1);
                }
            }
            /* The library's check: a value past the names. */
            surge_reservoir_config_init(&c);
            int past = 0;
            while (k->choices[past] != NULL) {
                past++;
            }
            memcpy((char *)&c + k->off, &past, sizeof past);
            assert_int_equal(surge_reservoir_config_check_keys(&c, e2, 512),
                             SURGE_ECONFIG);
            assert_memory_equal(e2, prefix, strlen(prefix));
            refused++;
            continue;
        }
        bool integer = k->type != SURGE_KEY_NUM;
        double step = integer ? 1 : 0.5;
        for (int side = 0; side < 2; side++) {
            double edge, out;
            bool edge_ok;
            if (!bound_probe(k, side, step, &edge, &out, &edge_ok)) {
                continue;
            }
            snprintf(v, sizeof v, "%.17g", out);
            reservoir_study(k, v, text, sizeof text);
            int rc = reservoir_parse(text, &c, e1);
            if (rc != SURGE_ECONFIG ||
                strncmp(e1, prefix, strlen(prefix)) != 0) {
                fail_msg("%s: %d '%s'", text, rc, e1);
            }
            reservoir_lib(k, k->def, &c); /* the context */
            if (set_field(k, &c, out)) {
                assert_int_equal(surge_reservoir_config_check_keys(&c, e2, 512),
                                 SURGE_ECONFIG);
                size_t n = strcspn(e1, "(");
                if (strncmp(e1, e2, n) != 0) {
                    fail_msg("study '%s', library '%s'", e1, e2);
                }
            }
            refused++;
            if (edge_ok) {
                snprintf(v, sizeof v, "%.17g", edge);
                reservoir_study(k, v, text, sizeof text);
                if (reservoir_parse(text, &c, e1) != 0) {
                    fail_msg("%s: %s", text, e1);
                }
                reservoir_lib(k, v, &c);
                if (surge_reservoir_config_check_keys(&c, e2, 512) != 0) {
                    fail_msg("reservoir.%s = %s: %s", k->name, v, e2);
                }
            }
        }
        if (integer) {
            reservoir_study(k, "1.5", text, sizeof text);
            assert_int_equal(reservoir_parse(text, &c, e1), SURGE_ECONFIG);
            assert_memory_equal(e1, prefix, strlen(prefix));
        }
    }
    assert_true(refused >= 12);
}

/* ---- defaults: the core's text reader against jansson ---- */

/* Every default of row k reads, through surge_keytab_defaults (no
 * jansson), into the same field as the JSON setter puts it. */
static void
default_reads_as_json(const struct surge_key *k, const char *path)
{
    if (k->def == NULL || k->type == SURGE_KEY_CUSTOM) {
        return;
    }
    struct surge_key one[2];
    memset(one, 0, sizeof one);
    one[0] = *k;
    union {
        char bytes[1024];
        double align;
    } a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    char err[512] = "";
    assert_true((k->size > 0 ? k->size : 8) + sizeof(int) <= sizeof a.bytes);
    /* The row at offset 0 (and its count after the field). */
    one[0].off = 0;
    one[0].off2 = k->type == SURGE_KEY_INTV ? k->size : 0;
    if (surge_keytab_defaults(one, &a, err, sizeof err) != 0) {
        fail_msg("%s: default %s: %s", path, k->def, err);
    }
    json_t *v = json_loads(k->def, JSON_DECODE_ANY, NULL);
    assert_non_null(v);
    if (surge_keytab_set(&one[0], &b, path, v, err, sizeof err) != 0) {
        fail_msg("%s: default %s: %s", path, k->def, err);
    }
    json_decref(v);
    if (k->type == SURGE_KEY_STR && k->size == 0) {
        /* An owned string: two copies of the same text. */
        char *sa, *sb;
        memcpy(&sa, a.bytes, sizeof sa);
        memcpy(&sb, b.bytes, sizeof sb);
        assert_string_equal(sa, sb);
    } else {
        assert_memory_equal(&a, &b, sizeof a);
    }
    surge_keytab_free(&one[0], &a);
    surge_keytab_free(&one[0], &b);
}

static void
test_defaults_read_as_json(void **state)
{
    (void)state;
    size_t n = 0;
    int read = 0;
    const char *const *paths = surge_study_key_paths(&n);
    for (size_t i = 0; i < n; i++) {
        const struct surge_key *k = surge_study_key(paths[i]);
        if (k != NULL) {
            default_reads_as_json(k, paths[i]);
            read += k->def != NULL;
        }
    }
    assert_true(read > 80);
    /* A default the reader cannot read is a bug the table's user hears
     * of. */
    const struct surge_key bad[] = {
        {"x", SURGE_KEY_NUM, 0, 0, "0.5x", 0, 1, 0, NULL, 0, NULL},
        {NULL, SURGE_KEY_CUSTOM, 0, 0, NULL, 0, 0, 0, NULL, 0, NULL},
    };
    double x = 0;
    char err[128] = "";
    assert_int_equal(surge_keytab_defaults(bad, &x, err, sizeof err),
                     SURGE_EINTERNAL);
    assert_non_null(strstr(err, "x: bad built-in default"));
}

/* ---- docs/configuration.md against the tables ---- */

/* A bound as the page writes it: 1, 0.5, 1e300, 2^20, 2^32-1, 10^7; false
 * for a word (lr, min_diff: a rule across keys, not a bound). */
static bool
doc_number(const char *s, size_t len, double *out)
{
    char buf[64];
    if (len == 0 || len >= sizeof buf) {
        return false;
    }
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *end;
    double v = strtod(buf, &end);
    if (end == buf) {
        return false;
    }
    if (*end == '^') {
        char *e2;
        double ex = strtod(end + 1, &e2);
        v = pow(v, ex);
        end = e2;
    }
    if (*end == '-' || *end == '+') {
        char *e3;
        double d = strtod(end, &e3);
        v += d;
        end = e3;
    }
    *out = v;
    return *end == '\0';
}

/* Check the page's type column t against key k; NULL or a reason. */
static const char *
doc_type_mismatch(const struct surge_key *k, const char *t, char *why,
                  size_t cap)
{
    if (k->choices != NULL) {
        char want[256] = "";
        size_t o = 0;
        for (int i = 0; k->choices[i] != NULL; i++) {
            o += (size_t)snprintf(want + o, sizeof want - o, "%s`%s`",
                                  i > 0 ? ", " : "", k->choices[i]);
        }
        if (strcmp(t, want) != 0) {
            snprintf(why, cap, "names '%s', the table %s", t, want);
            return why;
        }
        return NULL;
    }
    static const struct {
        enum surge_key_type type;
        const char *word;
    } words[] = {{SURGE_KEY_INT, "integer"},  {SURGE_KEY_NUM, "number"},
                 {SURGE_KEY_SIZE, "size"},    {SURGE_KEY_BOOL, "boolean"},
                 {SURGE_KEY_INTV, "list of"}, {SURGE_KEY_CUSTOM, "list of"}};
    const char *word = NULL;
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        if (words[i].type == k->type) {
            word = words[i].word;
        }
    }
    if (k->type == SURGE_KEY_STR) {
        word = (k->flags & SURGE_KEY_NAME) ? "name" : "string";
    }
    if (word == NULL || strncmp(t, word, strlen(word)) != 0) {
        snprintf(why, cap, "type '%s', the table's is not '%s'", t,
                 word != NULL ? word : "?");
        return why;
    }
    /* Bounds: "> X", ">= X", "in [A, B)" ... where the page has them. */
    const char *b = strstr(t, " in ");
    const char *ge = strstr(t, " >= ");
    const char *gt = strstr(t, " > ");
    double lo, hi;
    bool lo_excl = false, hi_excl = false, have_lo = false, have_hi = false;
    if (b != NULL) {
        const char *open = b + 4;
        const char *comma = strchr(open, ',');
        const char *close = comma != NULL ? strpbrk(comma, ")]") : NULL;
        if (comma == NULL || close == NULL) {
            snprintf(why, cap, "bounds '%s' unreadable", t);
            return why;
        }
        lo_excl = *open == '(';
        hi_excl = *close == ')';
        have_lo = doc_number(open + 1, (size_t)(comma - open - 1), &lo);
        have_hi = doc_number(comma + 2, (size_t)(close - comma - 2), &hi);
    } else if (ge != NULL || gt != NULL) {
        const char *x = ge != NULL ? ge + 4 : gt + 3;
        lo_excl = ge == NULL;
        have_lo = doc_number(x, strlen(x), &lo);
        hi = 0;
        have_hi = false;
        if (have_lo && !(k->flags & SURGE_KEY_NO_MAX)) {
            snprintf(why, cap, "'%s' has no upper bound, the table %g", t,
                     k->max);
            return why;
        }
    } else if (k->type == SURGE_KEY_NUM && !(k->flags & SURGE_KEY_NO_MIN)) {
        snprintf(why, cap, "'%s' has no bounds, the table has", t);
        return why;
    }
    if (have_lo &&
        (lo != k->min || lo_excl != !!(k->flags & SURGE_KEY_MIN_EXCL) ||
         (k->flags & SURGE_KEY_NO_MIN))) {
        snprintf(why, cap, "lower bound '%s', the table %s%g", t,
                 (k->flags & SURGE_KEY_MIN_EXCL) ? ">" : ">=", k->min);
        return why;
    }
    if (have_hi && ((k->flags & SURGE_KEY_NO_MAX) || hi != k->max ||
                    hi_excl != !!(k->flags & SURGE_KEY_MAX_EXCL))) {
        snprintf(why, cap, "upper bound '%s', the table %s%g", t,
                 (k->flags & SURGE_KEY_MAX_EXCL) ? "<" : "<=", k->max);
        return why;
    }
    return NULL;
}

static void
test_docs_match_the_tables(void **state)
{
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s/docs/configuration.md", SURGE_TOP_SRCDIR);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        print_error("cannot open %s\n", path);
    }
    assert_non_null(f);
    char line[8192];
    int rows = 0, bad = 0;
    size_t n = 0;
    const char *const *paths = surge_study_key_paths(&n);
    bool *documented = calloc(n, sizeof *documented);
    assert_non_null(documented);
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "## What a study writes", 22) == 0) {
            break; /* the rest of the page has files, not keys */
        }
        /* A key's row: | `path` | type | default | meaning | */
        if (strncmp(line, "| `", 3) != 0) {
            continue;
        }
        char *name = line + 3;
        char *tick = strchr(name, '`');
        if (tick == NULL || tick[1] != ' ' || tick[2] != '|') {
            continue;
        }
        *tick = '\0';
        if (name[0] == '{' || name[0] == '-' || strchr(name, '.') == NULL) {
            continue; /* placeholders, flags, environment variables */
        }
        char *type = tick + 4;
        char *sep = strstr(type, " | ");
        assert_non_null(sep);
        *sep = '\0';
        char *dflt = sep + 3;
        sep = strstr(dflt, " | ");
        assert_non_null(sep);
        *sep = '\0';
        size_t i;
        for (i = 0; i < n && strcmp(paths[i], name) != 0; i++) {
        }
        if (i == n) {
            print_error("docs: `%s` is not a key of the tables\n", name);
            bad++;
            continue;
        }
        documented[i] = true;
        rows++;
        const struct surge_key *k = surge_study_key(name);
        if (k == NULL) {
            continue; /* a key with its own code (parameters, command) */
        }
        char why[512];
        if (doc_type_mismatch(k, type, why, sizeof why) != NULL) {
            print_error("docs: `%s`: %s\n", name, why);
            bad++;
        }
        char want[256];
        snprintf(want, sizeof want, "`%s`", k->def);
        if (k->def != NULL && strcmp(dflt, want) != 0) {
            print_error("docs: `%s`: default %s, the table's %s\n", name, dflt,
                        want);
            bad++;
        }
    }
    fclose(f);
    /* Every key has its row ("parameters", a section of its own, has a
     * heading). */
    for (size_t i = 0; i < n; i++) {
        if (!documented[i] && strchr(paths[i], '.') != NULL) {
            print_error("docs: no row for `%s`\n", paths[i]);
            bad++;
        }
    }
    free(documented);
    assert_true(rows > 80);
    assert_int_equal(bad, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_table),
        cmocka_unit_test(test_both_parsers_read_every_key),
        cmocka_unit_test(test_bounds_come_from_the_table),
        cmocka_unit_test(test_reservoir_one_table),
        cmocka_unit_test(test_reservoir_keys_land_in_the_library),
        cmocka_unit_test(test_reservoir_bounds),
        cmocka_unit_test(test_defaults_read_as_json),
        cmocka_unit_test(test_docs_match_the_tables),
    };
    return cmocka_run_group_tests_name("keys", tests, NULL, NULL);
}
