/*
 * trainer/config.c - the trainer's configuration: its table of keys (the
 * one place where each key's name, type, bounds, names and default live),
 * defaults, validation with errors that name the key, and parsing of the
 * study file's "trainer" section (JSON, through jansson and
 * common/keytab.h). The launcher's study parser reads the same table
 * (deploy/study.c), so the two cannot disagree.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include <surge/error.h>

#include "common/keytab.h"
#include "trainer/backend.h"
#include "trainer/mlp.h"
#include "trainer/trainer.h"

#define OFF(f) offsetof(struct surge_trainer_config, f)
#define SZ(f) sizeof(((struct surge_trainer_config *)0)->f)
#define CH SURGE_KEY_CHOICES
#define NOMAX SURGE_KEY_NO_MAX
#define MIN_EXCL SURGE_KEY_MIN_EXCL
#define MAX_EXCL SURGE_KEY_MAX_EXCL

/* Every key of the "trainer" section that fills struct
 * surge_trainer_config: name, type, field, count field, default (JSON),
 * min, max, flags, names (index order = the enum's), field size.
 * docs/configuration.md documents each one (a unit test compares). */
const struct surge_key surge_trainer_keys[] = {
    {"layers", SURGE_KEY_INTV, OFF(layers), OFF(n_layers), "[256, 256, 256]", 1,
     SURGE_TRAINER_MAX_WIDTH, 0, NULL, SZ(layers), NULL},
    {"activation", SURGE_KEY_ENUM, OFF(activation), 0, "\"relu\"", 0, 0, 0,
     CH("relu", "gelu", "tanh"), SZ(activation), NULL},
    {"optimizer", SURGE_KEY_ENUM, OFF(optimizer), 0, "\"adam\"", 0, 0, 0,
     CH("adam", "adamw", "sgd"), SZ(optimizer), NULL},
    {"lr", SURGE_KEY_NUM, OFF(lr), 0, "0.001", 0, 0, NOMAX | MIN_EXCL, NULL,
     SZ(lr), NULL},
    {"beta1", SURGE_KEY_NUM, OFF(beta1), 0, "0.9", 0, 1, MAX_EXCL, NULL,
     SZ(beta1), NULL},
    {"beta2", SURGE_KEY_NUM, OFF(beta2), 0, "0.999", 0, 1, MAX_EXCL, NULL,
     SZ(beta2), NULL},
    {"eps", SURGE_KEY_NUM, OFF(eps), 0, "1e-08", 0, 0, NOMAX | MIN_EXCL, NULL,
     SZ(eps), NULL},
    {"weight_decay", SURGE_KEY_NUM, OFF(weight_decay), 0, "0", 0, 0, NOMAX,
     NULL, SZ(weight_decay), NULL},
    {"momentum", SURGE_KEY_NUM, OFF(momentum), 0, "0.9", 0, 1, MAX_EXCL, NULL,
     SZ(momentum), NULL},
    {"schedule", SURGE_KEY_ENUM, OFF(schedule), 0, "\"constant\"", 0, 0, 0,
     CH("constant", "cosine", "step"), SZ(schedule), NULL},
    {"warmup_steps", SURGE_KEY_INT, OFF(warmup_steps), 0, "0", 0, 0, NOMAX,
     NULL, SZ(warmup_steps), NULL},
    {"total_steps", SURGE_KEY_INT, OFF(total_steps), 0, "0", 0, 0, NOMAX, NULL,
     SZ(total_steps), NULL},
    {"min_lr", SURGE_KEY_NUM, OFF(min_lr), 0, "0", 0, 0, NOMAX, NULL,
     SZ(min_lr), NULL},
    {"step_size", SURGE_KEY_INT, OFF(step_size), 0, "1000", 1, 0, NOMAX, NULL,
     SZ(step_size), NULL},
    {"gamma", SURGE_KEY_NUM, OFF(gamma), 0, "0.5", 0, 1, MIN_EXCL, NULL,
     SZ(gamma), NULL},
    {"grad_clip", SURGE_KEY_NUM, OFF(grad_clip), 0, "0", 0, 0, NOMAX, NULL,
     SZ(grad_clip), NULL},
    {"batch_size", SURGE_KEY_INT, OFF(batch_size), 0, "256", 1,
     SURGE_TRAINER_MAX_BATCH, 0, NULL, SZ(batch_size), NULL},
    {"threads", SURGE_KEY_INT, OFF(threads), 0, "0", 0, 1024, 0, NULL,
     SZ(threads), NULL},
    {"seed", SURGE_KEY_INT, OFF(seed), 0, "42", 0, 0, NOMAX, NULL, SZ(seed),
     NULL},
    {"out_norm", SURGE_KEY_ENUM, OFF(out_norm), 0, "\"global\"", 0, 0, 0,
     CH("global", "element"), SZ(out_norm), NULL},
    {"out_norm_samples", SURGE_KEY_INT, OFF(out_norm_samples), 0, "1000", 1, 0,
     NOMAX, NULL, SZ(out_norm_samples), NULL},
    {"backend", SURGE_KEY_STR, OFF(backend), 0, "\"cpu\"", 0, 0, 0,
     CH("cpu", "cuda", "auto"), SZ(backend), NULL},
    {"precision", SURGE_KEY_ENUM, OFF(precision), 0, "\"fp32\"", 0, 0, 0,
     CH("fp32", "tf32", "bf16"), SZ(precision), NULL},
    {NULL, SURGE_KEY_CUSTOM, 0, 0, NULL, 0, 0, 0, NULL, 0, NULL},
};

static const struct surge_key *
key(const char *name)
{
    return surge_keytab_find(surge_trainer_keys, name);
}

int
surge_trainer_activation_parse(const char *name)
{
    return surge_keytab_choice_index(key("activation"), name);
}

int
surge_trainer_optimizer_parse(const char *name)
{
    return surge_keytab_choice_index(key("optimizer"), name);
}

int
surge_trainer_schedule_parse(const char *name)
{
    return surge_keytab_choice_index(key("schedule"), name);
}

int
surge_trainer_precision_parse(const char *name)
{
    return surge_keytab_choice_index(key("precision"), name);
}

const char *
surge_trainer_precision_name(int precision)
{
    return surge_keytab_choice(key("precision"), precision);
}

const char *
surge_trainer_activation_name(int activation)
{
    return surge_keytab_choice(key("activation"), activation);
}

const char *
surge_trainer_optimizer_name(int optimizer)
{
    return surge_keytab_choice(key("optimizer"), optimizer);
}

const char *
surge_trainer_schedule_name(int schedule)
{
    return surge_keytab_choice(key("schedule"), schedule);
}

void
surge_trainer_config_defaults(struct surge_trainer_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    /* Only a default its own key refuses fails here, which the unit tests
     * rule out (tests/unit/deploy/test_keys.c). */
    (void)surge_keytab_defaults(surge_trainer_keys, cfg, NULL, 0);
}

int
surge_trainer_config_check(const struct surge_trainer_config *c, char *err,
                           size_t errlen)
{
    if (err != NULL && errlen > 0) {
        err[0] = '\0';
    }
    for (const struct surge_key *k = surge_trainer_keys; k->name != NULL; k++) {
        char path[64];
        snprintf(path, sizeof path, "trainer.%s", k->name);
        int rc = surge_keytab_check(k, c, path, err, errlen);
        if (rc != 0) {
            return rc;
        }
    }
    /* Rules across keys. */
    if (c->schedule == SURGE_SCHED_COSINE &&
        c->total_steps <= c->warmup_steps) {
        return surge_keytab_error(
            err, errlen,
            "trainer.total_steps: must be > warmup_steps (%ld) for "
            "the cosine schedule (got %ld)",
            c->warmup_steps, c->total_steps);
    }
    if (c->min_lr > c->lr) {
        return surge_keytab_error(err, errlen,
                                  "trainer.min_lr: must be <= lr (%g) (got %g)",
                                  c->lr, c->min_lr);
    }
    if (strcmp(c->backend, "cpu") == 0 &&
        c->precision != SURGE_PRECISION_FP32) {
        return surge_keytab_error(
            err, errlen,
            "trainer.precision: %s needs backend cuda or auto (the "
            "cpu backend computes in fp32)",
            surge_trainer_precision_name(c->precision));
    }
    return 0;
}

int
surge_trainer_config_validate(const struct surge_trainer_config *c, char *err,
                              size_t errlen)
{
    int rc = surge_trainer_config_check(c, err, errlen);
    if (rc != 0) {
        return rc;
    }
    if (c->n_inputs < 1 || c->n_inputs > SURGE_TRAINER_MAX_WIDTH) {
        return surge_keytab_error(err, errlen,
                                  "trainer.n_inputs: must be in 1..%d (got %d)",
                                  SURGE_TRAINER_MAX_WIDTH, c->n_inputs);
    }
    if (c->n_outputs < 1 || c->n_outputs > SURGE_TRAINER_MAX_WIDTH) {
        return surge_keytab_error(
            err, errlen, "trainer.n_outputs: must be in 1..%d (got %d)",
            SURGE_TRAINER_MAX_WIDTH, c->n_outputs);
    }
    if (mlp_count_params(c->n_inputs, c->n_outputs, c->n_layers, c->layers) ==
        0) {
        return surge_keytab_error(
            err, errlen,
            "trainer.layers: the model has more than %ld parameters",
            (long)SURGE_TRAINER_MAX_PARAMS);
    }
    if (strcmp(c->backend, "cuda") == 0 &&
        surge_backend_find(c->backend) == NULL) {
        return surge_keytab_error(
            err, errlen,
            "trainer.backend: cuda: this build has no CUDA backend "
            "(configure --with-cuda), use cpu or auto");
    }
    return 0;
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
        return surge_keytab_error(err, errlen, "trainer: no JSON text");
    }
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        return surge_keytab_error(
            err, errlen, "trainer: invalid JSON at line %d column %d: %s",
            jerr.line, jerr.column, jerr.text);
    }
    int rc = 0;
    if (!json_is_object(root)) {
        rc = surge_keytab_error(err, errlen, "trainer: must be a JSON object");
        goto out;
    }
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value)
    {
        const struct surge_key *k = surge_keytab_find(surge_trainer_keys, key);
        if (k == NULL) {
            rc = surge_keytab_error(err, errlen, "trainer.%.64s: unknown key",
                                    key);
            goto out;
        }
        char path[64];
        snprintf(path, sizeof path, "trainer.%s", k->name);
        rc = surge_keytab_set(k, cfg, path, value, err, errlen);
        if (rc != 0) {
            goto out;
        }
    }
out:
    json_decref(root);
    return rc;
}
