/*
 * trainer/config.c - the trainer's configuration: defaults, validation with
 * errors that name the key, and parsing of the study file's "trainer"
 * section (JSON, through jansson).
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include <surge/error.h>

#include "trainer/backend.h"
#include "trainer/mlp.h"
#include "trainer/trainer.h"

static const char *const activation_names[] = {"relu", "gelu", "tanh"};
static const char *const optimizer_names[] = {"adam", "adamw", "sgd"};
static const char *const schedule_names[] = {"constant", "cosine", "step"};
static const char *const out_norm_names[] = {"global", "element"};
static const char *const precision_names[] = {"fp32", "tf32", "bf16"};

#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

static int
parse_name(const char *const *names, int n, const char *name)
{
    if (name == NULL) {
        return -1;
    }
    for (int i = 0; i < n; i++) {
        if (strcmp(names[i], name) == 0) {
            return i;
        }
    }
    return -1;
}

static const char *
name_of(const char *const *names, int n, int v)
{
    return v >= 0 && v < n ? names[v] : "?";
}

int
surge_trainer_activation_parse(const char *name)
{
    return parse_name(activation_names, N_OF(activation_names), name);
}

int
surge_trainer_optimizer_parse(const char *name)
{
    return parse_name(optimizer_names, N_OF(optimizer_names), name);
}

int
surge_trainer_schedule_parse(const char *name)
{
    return parse_name(schedule_names, N_OF(schedule_names), name);
}

int
surge_trainer_precision_parse(const char *name)
{
    return parse_name(precision_names, N_OF(precision_names), name);
}

const char *
surge_trainer_precision_name(int precision)
{
    return name_of(precision_names, N_OF(precision_names), precision);
}

const char *
surge_trainer_activation_name(int activation)
{
    return name_of(activation_names, N_OF(activation_names), activation);
}

const char *
surge_trainer_optimizer_name(int optimizer)
{
    return name_of(optimizer_names, N_OF(optimizer_names), optimizer);
}

const char *
surge_trainer_schedule_name(int schedule)
{
    return name_of(schedule_names, N_OF(schedule_names), schedule);
}

void
surge_trainer_config_defaults(struct surge_trainer_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->n_layers = 3;
    cfg->layers[0] = 256;
    cfg->layers[1] = 256;
    cfg->layers[2] = 256;
    cfg->activation = SURGE_ACT_RELU;
    cfg->optimizer = SURGE_OPT_ADAM;
    cfg->lr = 1e-3;
    cfg->beta1 = 0.9;
    cfg->beta2 = 0.999;
    cfg->eps = 1e-8;
    cfg->weight_decay = 0.0;
    cfg->momentum = 0.9;
    cfg->schedule = SURGE_SCHED_CONSTANT;
    cfg->warmup_steps = 0;
    cfg->total_steps = 0;
    cfg->min_lr = 0.0;
    cfg->step_size = 1000;
    cfg->gamma = 0.5;
    cfg->grad_clip = 0.0;
    cfg->batch_size = 256;
    cfg->threads = 0;
    cfg->seed = 42;
    cfg->out_norm = SURGE_OUTNORM_GLOBAL;
    cfg->out_norm_samples = 1000;
    snprintf(cfg->backend, sizeof cfg->backend, "%s", "cpu");
    cfg->precision = SURGE_PRECISION_FP32;
}

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return SURGE_ECONFIG;
}

/* A double in [lo, hi) or [lo, hi] (hi_open), finite. */
static int
check_range(double v, double lo, double hi, int lo_open, int hi_open)
{
    if (!isfinite(v)) {
        return 0;
    }
    if (lo_open ? !(v > lo) : !(v >= lo)) {
        return 0;
    }
    if (hi_open ? !(v < hi) : !(v <= hi)) {
        return 0;
    }
    return 1;
}

int
surge_trainer_config_validate(const struct surge_trainer_config *c, char *err,
                              size_t errlen)
{
    if (err != NULL && errlen > 0) {
        err[0] = '\0';
    }
    if (c->n_inputs < 1 || c->n_inputs > SURGE_TRAINER_MAX_WIDTH) {
        return fail(err, errlen, "trainer.n_inputs: must be in 1..%d (got %d)",
                    SURGE_TRAINER_MAX_WIDTH, c->n_inputs);
    }
    if (c->n_outputs < 1 || c->n_outputs > SURGE_TRAINER_MAX_WIDTH) {
        return fail(err, errlen, "trainer.n_outputs: must be in 1..%d (got %d)",
                    SURGE_TRAINER_MAX_WIDTH, c->n_outputs);
    }
    if (c->n_layers < 0 || c->n_layers > SURGE_TRAINER_MAX_LAYERS) {
        return fail(err, errlen,
                    "trainer.layers: at most %d hidden layers (got %d)",
                    SURGE_TRAINER_MAX_LAYERS, c->n_layers);
    }
    for (int i = 0; i < c->n_layers; i++) {
        if (c->layers[i] <= 0) {
            return fail(err, errlen, "trainer.layers[%d]: must be > 0 (got %d)",
                        i, c->layers[i]);
        }
        if (c->layers[i] > SURGE_TRAINER_MAX_WIDTH) {
            return fail(err, errlen,
                        "trainer.layers[%d]: must be <= %d (got %d)", i,
                        SURGE_TRAINER_MAX_WIDTH, c->layers[i]);
        }
    }
    if (mlp_count_params(c->n_inputs, c->n_outputs, c->n_layers, c->layers) ==
        0) {
        return fail(err, errlen,
                    "trainer.layers: the model has more than %ld parameters",
                    (long)SURGE_TRAINER_MAX_PARAMS);
    }
    if (c->activation < 0 || c->activation >= N_OF(activation_names)) {
        return fail(err, errlen, "trainer.activation: unknown value %d",
                    c->activation);
    }
    if (c->optimizer < 0 || c->optimizer >= N_OF(optimizer_names)) {
        return fail(err, errlen, "trainer.optimizer: unknown value %d",
                    c->optimizer);
    }
    if (!check_range(c->lr, 0.0, INFINITY, 1, 1)) {
        return fail(err, errlen, "trainer.lr: must be > 0 and finite (got %g)",
                    c->lr);
    }
    if (!check_range(c->beta1, 0.0, 1.0, 0, 1)) {
        return fail(err, errlen, "trainer.beta1: must be in [0, 1) (got %g)",
                    c->beta1);
    }
    if (!check_range(c->beta2, 0.0, 1.0, 0, 1)) {
        return fail(err, errlen, "trainer.beta2: must be in [0, 1) (got %g)",
                    c->beta2);
    }
    if (!check_range(c->eps, 0.0, INFINITY, 1, 1)) {
        return fail(err, errlen, "trainer.eps: must be > 0 (got %g)", c->eps);
    }
    if (!check_range(c->weight_decay, 0.0, INFINITY, 0, 1)) {
        return fail(err, errlen, "trainer.weight_decay: must be >= 0 (got %g)",
                    c->weight_decay);
    }
    if (!check_range(c->momentum, 0.0, 1.0, 0, 1)) {
        return fail(err, errlen, "trainer.momentum: must be in [0, 1) (got %g)",
                    c->momentum);
    }
    if (c->schedule < 0 || c->schedule >= N_OF(schedule_names)) {
        return fail(err, errlen, "trainer.schedule: unknown value %d",
                    c->schedule);
    }
    if (c->warmup_steps < 0) {
        return fail(err, errlen, "trainer.warmup_steps: must be >= 0 (got %ld)",
                    c->warmup_steps);
    }
    if (c->schedule == SURGE_SCHED_COSINE) {
        if (c->total_steps <= c->warmup_steps) {
            return fail(err, errlen,
                        "trainer.total_steps: must be > warmup_steps (%ld) "
                        "for the cosine schedule (got %ld)",
                        c->warmup_steps, c->total_steps);
        }
        if (!check_range(c->min_lr, 0.0, c->lr, 0, 0)) {
            return fail(err, errlen,
                        "trainer.min_lr: must be in [0, lr] (got %g)",
                        c->min_lr);
        }
    }
    if (c->schedule == SURGE_SCHED_STEP) {
        if (c->step_size <= 0) {
            return fail(err, errlen, "trainer.step_size: must be > 0 (got %ld)",
                        c->step_size);
        }
        if (!check_range(c->gamma, 0.0, 1.0, 1, 0)) {
            return fail(err, errlen,
                        "trainer.gamma: must be in (0, 1] (got %g)", c->gamma);
        }
    }
    if (!check_range(c->grad_clip, 0.0, INFINITY, 0, 1)) {
        return fail(err, errlen,
                    "trainer.grad_clip: must be >= 0, 0 = off (got %g)",
                    c->grad_clip);
    }
    if (c->batch_size < 1 || c->batch_size > SURGE_TRAINER_MAX_BATCH) {
        return fail(err, errlen,
                    "trainer.batch_size: must be in 1..%d (got %d)",
                    SURGE_TRAINER_MAX_BATCH, c->batch_size);
    }
    if (c->threads < 0 || c->threads > 1024) {
        return fail(err, errlen,
                    "trainer.threads: must be in 0..1024, 0 = environment "
                    "(got %d)",
                    c->threads);
    }
    if (c->out_norm < 0 || c->out_norm >= N_OF(out_norm_names)) {
        return fail(err, errlen, "trainer.out_norm: unknown value %d",
                    c->out_norm);
    }
    if (c->out_norm_samples < 1) {
        return fail(err, errlen,
                    "trainer.out_norm_samples: must be >= 1 (got %ld)",
                    c->out_norm_samples);
    }
    if (c->precision < 0 || c->precision >= N_OF(precision_names)) {
        return fail(err, errlen, "trainer.precision: unknown value %d",
                    c->precision);
    }
    if (memchr(c->backend, '\0', sizeof c->backend) == NULL) {
        return fail(err, errlen, "trainer.backend: not a string");
    }
    if (strcmp(c->backend, "auto") == 0) {
        return 0;
    }
    if (strcmp(c->backend, "cuda") == 0 &&
        surge_backend_find(c->backend) == NULL) {
        return fail(err, errlen,
                    "trainer.backend: cuda: this build has no CUDA backend "
                    "(configure --with-cuda), use cpu or auto");
    }
    if (surge_backend_find(c->backend) == NULL) {
        return fail(err, errlen,
                    "trainer.backend: unknown '%s' (expected cpu, cuda or "
                    "auto)",
                    c->backend);
    }
    if (strcmp(c->backend, "cpu") == 0 &&
        c->precision != SURGE_PRECISION_FP32) {
        return fail(err, errlen,
                    "trainer.precision: %s needs backend cuda or auto (the "
                    "cpu backend computes in fp32)",
                    surge_trainer_precision_name(c->precision));
    }
    return 0;
}

/* JSON parsing. Each key has a kind and a place in the struct. */
enum key_kind { K_INT, K_LONG, K_U64, K_DOUBLE, K_NAME, K_STRING, K_LAYERS };

struct key_spec {
    const char *key;
    enum key_kind kind;
    size_t offset;
    const char *const *names; /* K_NAME */
    int n_names;
};

#define OFF(f) offsetof(struct surge_trainer_config, f)

static const struct key_spec keys[] = {
    {"layers", K_LAYERS, OFF(layers), NULL, 0},
    {"activation", K_NAME, OFF(activation), activation_names,
     N_OF(activation_names)},
    {"optimizer", K_NAME, OFF(optimizer), optimizer_names,
     N_OF(optimizer_names)},
    {"lr", K_DOUBLE, OFF(lr), NULL, 0},
    {"beta1", K_DOUBLE, OFF(beta1), NULL, 0},
    {"beta2", K_DOUBLE, OFF(beta2), NULL, 0},
    {"eps", K_DOUBLE, OFF(eps), NULL, 0},
    {"weight_decay", K_DOUBLE, OFF(weight_decay), NULL, 0},
    {"momentum", K_DOUBLE, OFF(momentum), NULL, 0},
    {"schedule", K_NAME, OFF(schedule), schedule_names, N_OF(schedule_names)},
    {"warmup_steps", K_LONG, OFF(warmup_steps), NULL, 0},
    {"total_steps", K_LONG, OFF(total_steps), NULL, 0},
    {"min_lr", K_DOUBLE, OFF(min_lr), NULL, 0},
    {"step_size", K_LONG, OFF(step_size), NULL, 0},
    {"gamma", K_DOUBLE, OFF(gamma), NULL, 0},
    {"grad_clip", K_DOUBLE, OFF(grad_clip), NULL, 0},
    {"batch_size", K_INT, OFF(batch_size), NULL, 0},
    {"threads", K_INT, OFF(threads), NULL, 0},
    {"seed", K_U64, OFF(seed), NULL, 0},
    {"out_norm", K_NAME, OFF(out_norm), out_norm_names, N_OF(out_norm_names)},
    {"out_norm_samples", K_LONG, OFF(out_norm_samples), NULL, 0},
    {"backend", K_STRING, OFF(backend), NULL, 0},
    {"precision", K_NAME, OFF(precision), precision_names,
     N_OF(precision_names)},
};

static void
names_list(char *buf, size_t cap, const char *const *names, int n)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && used < cap; i++) {
        const char *sep = i == 0 ? "" : (i == n - 1 ? " or " : ", ");
        int w = snprintf(buf + used, cap - used, "%s%s", sep, names[i]);
        if (w < 0) {
            break;
        }
        used += (size_t)w;
    }
}

static int
set_key(struct surge_trainer_config *cfg, const struct key_spec *k, json_t *v,
        char *err, size_t errlen)
{
    char *base = (char *)cfg + k->offset;
    switch (k->kind) {
    case K_INT:
    case K_LONG:
    case K_U64: {
        if (!json_is_integer(v)) {
            return fail(err, errlen, "trainer.%s: must be an integer", k->key);
        }
        json_int_t x = json_integer_value(v);
        if (k->kind == K_INT) {
            if (x < -2147483647LL || x > 2147483647LL) {
                return fail(err, errlen, "trainer.%s: out of range (%lld)",
                            k->key, (long long)x);
            }
            *(int *)(void *)base = (int)x;
        } else if (k->kind == K_LONG) {
            *(long *)(void *)base = (long)x;
        } else {
            if (x < 0) {
                return fail(err, errlen, "trainer.%s: must be >= 0 (got %lld)",
                            k->key, (long long)x);
            }
            *(uint64_t *)(void *)base = (uint64_t)x;
        }
        return 0;
    }
    case K_DOUBLE:
        if (!json_is_number(v)) {
            return fail(err, errlen, "trainer.%s: must be a number", k->key);
        }
        *(double *)(void *)base = json_number_value(v);
        return 0;
    case K_NAME: {
        char list[128];
        names_list(list, sizeof list, k->names, k->n_names);
        if (!json_is_string(v)) {
            return fail(err, errlen, "trainer.%s: must be a string (%s)",
                        k->key, list);
        }
        int idx = parse_name(k->names, k->n_names, json_string_value(v));
        if (idx < 0) {
            return fail(err, errlen,
                        "trainer.%s: unknown '%.64s' (expected %s)", k->key,
                        json_string_value(v), list);
        }
        *(int *)(void *)base = idx;
        return 0;
    }
    case K_STRING:
        if (!json_is_string(v)) {
            return fail(err, errlen, "trainer.%s: must be a string", k->key);
        }
        if (strlen(json_string_value(v)) >= sizeof cfg->backend) {
            return fail(err, errlen, "trainer.%s: too long (at most %zu bytes)",
                        k->key, sizeof cfg->backend - 1);
        }
        snprintf(cfg->backend, sizeof cfg->backend, "%s", json_string_value(v));
        return 0;
    case K_LAYERS: {
        if (!json_is_array(v)) {
            return fail(err, errlen,
                        "trainer.layers: must be an array of hidden widths");
        }
        size_t n = json_array_size(v);
        if (n > SURGE_TRAINER_MAX_LAYERS) {
            return fail(err, errlen,
                        "trainer.layers: at most %d hidden layers (got %zu)",
                        SURGE_TRAINER_MAX_LAYERS, n);
        }
        for (size_t i = 0; i < n; i++) {
            json_t *e = json_array_get(v, i);
            if (!json_is_integer(e)) {
                return fail(err, errlen,
                            "trainer.layers[%zu]: must be an integer", i);
            }
            json_int_t x = json_integer_value(e);
            if (x <= 0) {
                return fail(err, errlen,
                            "trainer.layers[%zu]: must be > 0 (got %lld)", i,
                            (long long)x);
            }
            if (x > SURGE_TRAINER_MAX_WIDTH) {
                return fail(err, errlen,
                            "trainer.layers[%zu]: must be <= %d (got %lld)", i,
                            SURGE_TRAINER_MAX_WIDTH, (long long)x);
            }
            cfg->layers[i] = (int)x;
        }
        cfg->n_layers = (int)n;
        return 0;
    }
    }
    return fail(err, errlen, "trainer.%s: internal error", k->key);
}

int
surge_trainer_config_from_json(struct surge_trainer_config *cfg,
                               const char *json, size_t len, char *err,
                               size_t errlen)
{
    json_error_t jerr;
    if (err != NULL && errlen > 0) {
        err[0] = '\0';
    }
    if (json == NULL) {
        return fail(err, errlen, "trainer: no JSON text");
    }
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        return fail(err, errlen,
                    "trainer: invalid JSON at line %d column %d: %s", jerr.line,
                    jerr.column, jerr.text);
    }
    int rc = 0;
    if (!json_is_object(root)) {
        rc = fail(err, errlen, "trainer: must be a JSON object");
        goto out;
    }
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value)
    {
        const struct key_spec *k = NULL;
        for (int i = 0; i < N_OF(keys); i++) {
            if (strcmp(keys[i].key, key) == 0) {
                k = &keys[i];
                break;
            }
        }
        if (k == NULL) {
            rc = fail(err, errlen, "trainer.%.64s: unknown key", key);
            goto out;
        }
        rc = set_key(cfg, k, value, err, errlen);
        if (rc != 0) {
            goto out;
        }
    }
out:
    json_decref(root);
    return rc;
}
