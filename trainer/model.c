/*
 * trainer/model.c - the files: the final model (safetensors, for surge
 * predict and PyTorch), checkpoints (safetensors too: model, optimizer,
 * normalisation, progress, an opaque blob of the server's), and the
 * inference-only surge_model. docs/model-file.md is the reference for
 * every key written here.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <surge/error.h>

#include "common/log.h"
#include "common/util.h"
#include "trainer/safetensors.h"
#include "trainer/trainer_internal.h"

#define COMPONENT "trainer"
#define MODEL_FORMAT "surge-model"
#define CKPT_FORMAT "surge-checkpoint"
#define FILE_VERSION "1"
#define CRC_KEY "surge.crc32c"
#define MAX_USER_META 256
/* Every key the writers put in __metadata__ (plus the user's): the meta
 * array below holds two pointers per key. */
#define MAX_META (32 + MAX_USER_META)

/* "[a, b, ...]" of n floats, each printed with 9 significant digits so the
 * float reads back bit-exact. malloc'ed; NULL on failure. */
static char *
floats_json(const float *v, int n)
{
    size_t cap = (size_t)n * 18 + 4;
    char *s = malloc(cap);
    if (s == NULL) {
        return NULL;
    }
    size_t used = 0;
    s[used++] = '[';
    for (int i = 0; i < n; i++) {
        int w = snprintf(s + used, cap - used, "%s%.9g", i > 0 ? ", " : "",
                         (double)v[i]);
        if (w < 0 || (size_t)w >= cap - used) {
            free(s);
            return NULL;
        }
        used += (size_t)w;
    }
    snprintf(s + used, cap - used, "]");
    return s;
}

static char *
ints_json(const int *v, int n)
{
    size_t cap = (size_t)n * 12 + 4;
    char *s = malloc(cap);
    if (s == NULL) {
        return NULL;
    }
    size_t used = 0;
    s[used++] = '[';
    for (int i = 0; i < n; i++) {
        int w = snprintf(s + used, cap - used, "%s%d", i > 0 ? ", " : "", v[i]);
        used += w > 0 ? (size_t)w : 0;
    }
    snprintf(s + used, cap - used, "]");
    return s;
}

/* Strict integer parse of a metadata value within [lo, hi]. */
/* Parse a JSON array of exactly n numbers (n < 0: any length up to -n,
 * count returned) into floats or ints. */
static int
parse_num_array(const char *s, int n, float *fout, int *iout)
{
    if (s == NULL) {
        return -1;
    }
    json_error_t jerr;
    json_t *a = json_loads(s, 0, &jerr);
    int rc = -1;
    if (!json_is_array(a)) {
        goto out;
    }
    size_t len = json_array_size(a);
    if ((n >= 0 && len != (size_t)n) || (n < 0 && len > (size_t)-n)) {
        goto out;
    }
    for (size_t i = 0; i < len; i++) {
        json_t *e = json_array_get(a, i);
        if (iout != NULL) {
            if (!json_is_integer(e) || json_integer_value(e) < INT_MIN ||
                json_integer_value(e) > INT_MAX) {
                goto out;
            }
            iout[i] = (int)json_integer_value(e);
        } else {
            if (!json_is_number(e) || !isfinite(json_number_value(e))) {
                goto out;
            }
            fout[i] = (float)json_number_value(e);
        }
    }
    rc = (int)len;
out:
    json_decref(a);
    return rc;
}

/* Names "<2k>.weight" / "<2k>.bias" of nn.Sequential's state dict. */
struct tensor_names {
    char name[2 * MLP_MAX_LINEAR][24];
};

static int
add_model_tensors(const struct mlp *m, const float *params,
                  struct tensor_names *tn, struct st_tensor *ts)
{
    int n = 0;
    for (int k = 0; k < m->n_linear; k++) {
        const struct mlp_linear *l = &m->lin[k];
        snprintf(tn->name[2 * k], sizeof tn->name[0], "%d.weight", 2 * k);
        snprintf(tn->name[2 * k + 1], sizeof tn->name[0], "%d.bias", 2 * k);
        ts[n++] = (struct st_tensor){tn->name[2 * k],
                                     ST_F32,
                                     2,
                                     {(uint64_t)l->out, (uint64_t)l->in},
                                     params + l->offset};
        ts[n++] = (struct st_tensor){tn->name[2 * k + 1],
                                     ST_F32,
                                     1,
                                     {(uint64_t)l->out},
                                     params + l->offset +
                                         (size_t)l->out * (size_t)l->in};
    }
    return n;
}

/* The architecture keys common to both files; strings owned by `own`. */
struct meta_list {
    const char *kv[2 * MAX_META];
    int n;
    char *own[16];
    int n_own;
    char num[8][32];
    int n_num;
    int oom;
};

static void
meta_add(struct meta_list *l, const char *k, const char *v)
{
    if (v == NULL) {
        l->oom = 1;
        return;
    }
    if (l->n < MAX_META) {
        l->kv[2 * l->n] = k;
        l->kv[2 * l->n + 1] = v;
        l->n++;
    }
}

static void
meta_add_owned(struct meta_list *l, const char *k, char *v)
{
    if (v != NULL && l->n_own < 16) {
        l->own[l->n_own++] = v;
    } else {
        free(v);
        v = NULL;
    }
    meta_add(l, k, v);
}

static void
meta_add_num(struct meta_list *l, const char *k, unsigned long long v)
{
    if (l->n_num >= 8) {
        l->oom = 1;
        return;
    }
    char *s = l->num[l->n_num++];
    snprintf(s, sizeof l->num[0], "%llu", v);
    meta_add(l, k, s);
}

static void
meta_free(struct meta_list *l)
{
    for (int i = 0; i < l->n_own; i++) {
        free(l->own[i]);
    }
}

static void
meta_arch(struct meta_list *l, const surge_trainer *t, const char *format)
{
    const struct surge_trainer_config *c = &t->cfg;
    meta_add(l, "surge.format", format);
    meta_add(l, "surge.version", FILE_VERSION);
    meta_add(l, "surge.arch", "mlp");
    meta_add_num(l, "surge.n_inputs", (unsigned long long)c->n_inputs);
    meta_add_num(l, "surge.n_outputs", (unsigned long long)c->n_outputs);
    meta_add_owned(l, "surge.layers", ints_json(c->layers, c->n_layers));
    meta_add(l, "surge.activation",
             surge_trainer_activation_name(c->activation));
    meta_add(l, "surge.out_norm",
             c->out_norm == SURGE_OUTNORM_GLOBAL ? "global" : "element");
    meta_add_num(l, "surge.steps", (unsigned long long)t->step);
    meta_add_num(l, "surge.batch_size", (unsigned long long)c->batch_size);
}

/* Host pointers to the parameters and optimizer state (copies for a
 * non-unified backend: *tmp owns them). */
static int
host_view(surge_trainer *t, const float **params, const float **m,
          const float **v, float **tmp)
{
    size_t np = t->mlp.n_params;
    *tmp = NULL;
    /* Queued steps first: the step counter and the weights must agree. */
    int rc = surge_trainer_sync(t, NULL);
    if (rc < 0 && rc != SURGE_ESTATE) {
        return rc;
    }
    if (t->ops->unified) {
        *params = t->mlp.params;
        *m = t->opt_m;
        *v = t->opt_v;
        return 0;
    }
    float *h = malloc(3 * np * sizeof(float));
    if (h == NULL) {
        return -ENOMEM;
    }
    rc = t->ops->download(t->ctx, h, t->mlp.params, np);
    if (rc == 0) {
        rc = t->ops->download(t->ctx, h + np, t->opt_m, np);
    }
    if (rc == 0 && t->opt_v != NULL) {
        rc = t->ops->download(t->ctx, h + 2 * np, t->opt_v, np);
    }
    if (rc != 0) {
        free(h);
        return rc;
    }
    *params = h;
    *m = h + np;
    *v = t->opt_v != NULL ? h + 2 * np : NULL;
    *tmp = h;
    return 0;
}

int
surge_trainer_save_model(surge_trainer *t, const char *path,
                         const char *const *meta)
{
    struct meta_list ml = {0};
    struct tensor_names tn;
    struct st_tensor ts[2 * MLP_MAX_LINEAR];
    const float *params, *m, *v;
    float *tmp = NULL;
    char err[512];
    int rc;

    if (path == NULL) {
        return -EINVAL;
    }
    int n_user = 0;
    if (meta != NULL) {
        while (meta[2 * n_user] != NULL) {
            const char *k = meta[2 * n_user];
            if (meta[2 * n_user + 1] == NULL || strncmp(k, "surge.", 6) == 0 ||
                strcmp(k, "__metadata__") == 0 || n_user >= MAX_USER_META) {
                return -EINVAL;
            }
            n_user++;
        }
    }
    rc = host_view(t, &params, &m, &v, &tmp);
    if (rc != 0) {
        return rc;
    }
    meta_arch(&ml, t, MODEL_FORMAT);
    meta_add_owned(&ml, "surge.in_mean",
                   floats_json(t->in_mean, t->cfg.n_inputs));
    meta_add_owned(&ml, "surge.in_std",
                   floats_json(t->in_std, t->cfg.n_inputs));
    meta_add_owned(&ml, "surge.out_mean", floats_json(t->out_mean, t->out_n));
    meta_add_owned(&ml, "surge.out_std", floats_json(t->out_std, t->out_n));
    for (int i = 0; i < n_user; i++) {
        meta_add(&ml, meta[2 * i], meta[2 * i + 1]);
    }
    if (ml.oom) {
        rc = -ENOMEM;
        goto out;
    }
    int nt = add_model_tensors(&t->mlp, params, &tn, ts);
    rc = st_write_atomic(path, ts, nt, ml.kv, ml.n, CRC_KEY, err, sizeof err);
    if (rc != 0) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "saving the model: %s", err);
    }
out:
    meta_free(&ml);
    free(tmp);
    return rc;
}

int
surge_trainer_checkpoint_save(surge_trainer *t, const char *path,
                              const void *extra, size_t extra_len)
{
    struct meta_list ml = {0};
    struct tensor_names tn;
    struct st_tensor ts[2 * MLP_MAX_LINEAR + 9];
    const float *params, *m, *v;
    float *tmp = NULL;
    char err[512];

    if (path == NULL || (extra == NULL && extra_len > 0)) {
        return -EINVAL;
    }
    int rc = host_view(t, &params, &m, &v, &tmp);
    if (rc != 0) {
        return rc;
    }
    meta_arch(&ml, t, CKPT_FORMAT);
    meta_add(&ml, "surge.optimizer",
             surge_trainer_optimizer_name(t->cfg.optimizer));
    meta_add_num(&ml, "surge.out_frozen", (unsigned long long)t->out_frozen);
    meta_add_num(&ml, "surge.out_seen", (unsigned long long)t->out_seen);
    if (ml.oom) {
        rc = -ENOMEM;
        goto out;
    }
    int nt = add_model_tensors(&t->mlp, params, &tn, ts);
    uint64_t np = t->mlp.n_params;
    uint64_t nin = (uint64_t)t->cfg.n_inputs, on = (uint64_t)t->out_n;
    ts[nt++] = (struct st_tensor){"optim.m", ST_F32, 1, {np}, m};
    if (v != NULL) {
        ts[nt++] = (struct st_tensor){"optim.v", ST_F32, 1, {np}, v};
    }
    ts[nt++] = (struct st_tensor){"norm.in_mean", ST_F32, 1, {nin}, t->in_mean};
    ts[nt++] = (struct st_tensor){"norm.in_std", ST_F32, 1, {nin}, t->in_std};
    ts[nt++] =
        (struct st_tensor){"norm.out_mean", ST_F32, 1, {on}, t->out_mean};
    ts[nt++] = (struct st_tensor){"norm.out_std", ST_F32, 1, {on}, t->out_std};
    ts[nt++] =
        (struct st_tensor){"norm.acc_mean", ST_F64, 1, {on}, t->acc_mean};
    ts[nt++] = (struct st_tensor){"norm.acc_m2", ST_F64, 1, {on}, t->acc_m2};
    if (extra_len > 0) {
        ts[nt++] = (struct st_tensor){"extra", ST_U8, 1, {extra_len}, extra};
    }
    rc = st_write_atomic(path, ts, nt, ml.kv, ml.n, CRC_KEY, err, sizeof err);
    if (rc != 0) {
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "saving a checkpoint: %s", err);
    }
out:
    meta_free(&ml);
    free(tmp);
    return rc;
}

/* The architecture a file declares, checked against the limits. */
static int
read_arch(const struct st_file *f, const char *path, const char *format,
          struct surge_model_info *info, int *out_norm, char *err,
          size_t errlen)
{
    const char *fmt = st_meta(f, "surge.format");
    if (fmt == NULL || strcmp(fmt, format) != 0) {
        surge_set_err(err, errlen,
                      "%s: not a %s file (surge.format is '%.32s')", path,
                      format, fmt != NULL ? fmt : "missing");
        return SURGE_EPROTO;
    }
    const char *ver = st_meta(f, "surge.version");
    if (ver == NULL || strcmp(ver, FILE_VERSION) != 0) {
        surge_set_err(
            err, errlen,
            "%s: %s version '%.16s', this surge reads version " FILE_VERSION,
            path, format, ver != NULL ? ver : "missing");
        return SURGE_EVERSION;
    }
    long long x;
    memset(info, 0, sizeof *info);
    if (st_meta_int(f, "surge.n_inputs", 1, SURGE_TRAINER_MAX_WIDTH, &x) != 0) {
        surge_set_err(err, errlen, "%s: surge.n_inputs missing or out of range",
                      path);
        return SURGE_EPROTO;
    }
    info->n_inputs = (int)x;
    if (st_meta_int(f, "surge.n_outputs", 1, SURGE_TRAINER_MAX_WIDTH, &x) !=
        0) {
        surge_set_err(err, errlen,
                      "%s: surge.n_outputs missing or out of range", path);
        return SURGE_EPROTO;
    }
    info->n_outputs = (int)x;
    int nl = parse_num_array(st_meta(f, "surge.layers"),
                             -SURGE_TRAINER_MAX_LAYERS, NULL, info->layers);
    if (nl < 0) {
        surge_set_err(
            err, errlen,
            "%s: surge.layers must be a JSON array of at most %d widths", path,
            SURGE_TRAINER_MAX_LAYERS);
        return SURGE_EPROTO;
    }
    info->n_layers = nl;
    if (mlp_count_params(info->n_inputs, info->n_outputs, nl, info->layers) ==
        0) {
        surge_set_err(err, errlen,
                      "%s: surge.layers: bad widths or model too large", path);
        return SURGE_EPROTO;
    }
    info->activation =
        surge_trainer_activation_parse(st_meta(f, "surge.activation"));
    if (info->activation < 0) {
        surge_set_err(err, errlen, "%s: surge.activation missing or unknown",
                      path);
        return SURGE_EPROTO;
    }
    const char *on = st_meta(f, "surge.out_norm");
    if (on != NULL && strcmp(on, "global") == 0) {
        *out_norm = SURGE_OUTNORM_GLOBAL;
    } else if (on != NULL && strcmp(on, "element") == 0) {
        *out_norm = SURGE_OUTNORM_ELEMENT;
    } else {
        surge_set_err(err, errlen, "%s: surge.out_norm missing or unknown",
                      path);
        return SURGE_EPROTO;
    }
    if (surge_parse_uint64(st_meta(f, "surge.steps"), &info->steps) != 0) {
        surge_set_err(err, errlen, "%s: surge.steps missing or not a number",
                      path);
        return SURGE_EPROTO;
    }
    return 0;
}

/* Check (dst NULL) or copy the model tensors of m's shapes. */
static int
get_model_tensors(const struct st_file *f, const struct mlp *m, float *dst,
                  const char *path, char *err, size_t errlen)
{
    char why[256];
    for (int k = 0; k < m->n_linear; k++) {
        const struct mlp_linear *l = &m->lin[k];
        char name[24];
        uint64_t shape[2] = {(uint64_t)l->out, (uint64_t)l->in};
        snprintf(name, sizeof name, "%d.weight", 2 * k);
        int rc = st_get(f, name, ST_F32, 2, shape,
                        dst != NULL ? dst + l->offset : NULL, why, sizeof why);
        if (rc == 0) {
            snprintf(name, sizeof name, "%d.bias", 2 * k);
            rc = st_get(f, name, ST_F32, 1, shape,
                        dst != NULL
                            ? dst + l->offset + (size_t)l->out * (size_t)l->in
                            : NULL,
                        why, sizeof why);
        }
        if (rc != 0) {
            surge_set_err(err, errlen, "%s: %s", path, why);
            return rc;
        }
    }
    return 0;
}

static int
mismatch_int(char *err, size_t errlen, const char *path, const char *key,
             int in_file, int in_cfg)
{
    surge_set_err(
        err, errlen,
        "%s: trainer.%s is %d in the checkpoint, %d in the configuration", path,
        key, in_file, in_cfg);
    return SURGE_ECONFIG;
}

static int
mismatch_name(char *err, size_t errlen, const char *path, const char *key,
              const char *in_file, const char *in_cfg)
{
    surge_set_err(err, errlen,
                  "%s: trainer.%s is '%s' in the checkpoint, '%s' in the "
                  "configuration",
                  path, key, in_file, in_cfg);
    return SURGE_ECONFIG;
}

int
surge_trainer_checkpoint_load(surge_trainer *t, const char *path, void **extra,
                              size_t *extra_len, char *err, size_t errlen)
{
    struct st_file f;
    struct surge_model_info info;
    const struct surge_trainer_config *c = &t->cfg;
    char why[256];
    int out_norm = 0;
    float *tmp = NULL;
    void *blob = NULL;
    uint64_t blob_len = 0;

    if (path == NULL) {
        return -EINVAL;
    }
    int rc = st_read(path, &f, CRC_KEY, err, errlen);
    if (rc != 0) {
        return rc;
    }
    rc = read_arch(&f, path, CKPT_FORMAT, &info, &out_norm, err, errlen);
    if (rc != 0) {
        goto out;
    }
    /* The architecture must be the configured one, key by key. */
    if (info.n_inputs != c->n_inputs) {
        rc = mismatch_int(err, errlen, path, "n_inputs", info.n_inputs,
                          c->n_inputs);
        goto out;
    }
    if (info.n_outputs != c->n_outputs) {
        rc = mismatch_int(err, errlen, path, "n_outputs", info.n_outputs,
                          c->n_outputs);
        goto out;
    }
    if (info.n_layers != c->n_layers) {
        surge_set_err(
            err, errlen,
            "%s: trainer.layers has %d hidden layers in the checkpoint, "
            "%d in the configuration",
            path, info.n_layers, c->n_layers);
        rc = SURGE_ECONFIG;
        goto out;
    }
    for (int i = 0; i < c->n_layers; i++) {
        if (info.layers[i] != c->layers[i]) {
            char key[32];
            snprintf(key, sizeof key, "layers[%d]", i);
            rc = mismatch_int(err, errlen, path, key, info.layers[i],
                              c->layers[i]);
            goto out;
        }
    }
    if (info.activation != c->activation) {
        rc = mismatch_name(err, errlen, path, "activation",
                           surge_trainer_activation_name(info.activation),
                           surge_trainer_activation_name(c->activation));
        goto out;
    }
    int opt = surge_trainer_optimizer_parse(st_meta(&f, "surge.optimizer"));
    if (opt < 0) {
        surge_set_err(err, errlen, "%s: surge.optimizer missing or unknown",
                      path);
        rc = SURGE_EPROTO;
        goto out;
    }
    if (opt != c->optimizer) {
        rc = mismatch_name(err, errlen, path, "optimizer",
                           surge_trainer_optimizer_name(opt),
                           surge_trainer_optimizer_name(c->optimizer));
        goto out;
    }
    if (out_norm != c->out_norm) {
        rc = mismatch_name(err, errlen, path, "out_norm",
                           out_norm ? "element" : "global",
                           c->out_norm ? "element" : "global");
        goto out;
    }
    long long frozen, seen;
    if (st_meta_int(&f, "surge.out_frozen", 0, 1, &frozen) != 0 ||
        st_meta_int(&f, "surge.out_seen", 0, LONG_MAX, &seen) != 0) {
        surge_set_err(err, errlen,
                      "%s: surge.out_frozen/out_seen missing or bad", path);
        rc = SURGE_EPROTO;
        goto out;
    }

    /* Validate every tensor before touching t. */
    uint64_t np = t->mlp.n_params;
    uint64_t nin = (uint64_t)c->n_inputs, on = (uint64_t)t->out_n;
    struct {
        const char *name;
        int dtype;
        uint64_t n;
        void *dst;
    } vec[] = {
        {"optim.m", ST_F32, np, NULL},
        {"optim.v", ST_F32, np, NULL},
        {"norm.in_mean", ST_F32, nin, t->in_mean},
        {"norm.in_std", ST_F32, nin, t->in_std},
        {"norm.out_mean", ST_F32, on, t->out_mean},
        {"norm.out_std", ST_F32, on, t->out_std},
        {"norm.acc_mean", ST_F64, on, t->acc_mean},
        {"norm.acc_m2", ST_F64, on, t->acc_m2},
    };
    int nvec = (int)(sizeof vec / sizeof vec[0]);
    rc = get_model_tensors(&f, &t->mlp, NULL, path, err, errlen);
    for (int i = 0; rc == 0 && i < nvec; i++) {
        if (i == 1 && t->opt_v == NULL) {
            continue; /* sgd has no second moment */
        }
        rc = st_get(&f, vec[i].name, vec[i].dtype, 1, &vec[i].n, NULL, why,
                    sizeof why);
        if (rc != 0) {
            surge_set_err(err, errlen, "%s: %s", path, why);
        }
    }
    if (rc != 0) {
        goto out;
    }
    rc = st_get_bytes(&f, "extra", extra != NULL ? &blob : NULL, &blob_len, why,
                      sizeof why);
    if (rc != 0) {
        surge_set_err(err, errlen, "%s: %s", path, why);
        goto out;
    }
    /* The standard deviations must be usable before we commit to them. */
    for (int i = 3; i <= 5; i += 2) {
        size_t n = (size_t)vec[i].n;
        float *s = malloc(n * sizeof(float));
        if (s == NULL) {
            rc = -ENOMEM;
            surge_set_err(err, errlen, "%s: out of memory", path);
            goto out;
        }
        (void)st_get(&f, vec[i].name, ST_F32, 1, &vec[i].n, s, NULL, 0);
        for (size_t j = 0; j < n && rc == 0; j++) {
            if (!isfinite(s[j]) || !(s[j] > 0.0f)) {
                surge_set_err(err, errlen, "%s: %s[%zu] must be finite and > 0",
                              path, vec[i].name, j);
                rc = SURGE_EPROTO;
            }
        }
        free(s);
        if (rc != 0) {
            goto out;
        }
    }

    /* Commit: everything below has been validated. */
    if (!t->ops->unified) {
        tmp = malloc(np * sizeof(float));
        if (tmp == NULL) {
            rc = -ENOMEM;
            surge_set_err(err, errlen, "%s: out of memory", path);
            goto out;
        }
    }
    float *dst = t->ops->unified ? t->mlp.params : tmp;
    (void)get_model_tensors(&f, &t->mlp, dst, path, NULL, 0);
    if (!t->ops->unified) {
        rc = t->ops->upload(t->ctx, t->mlp.params, tmp, np);
    }
    for (int i = 0; rc == 0 && i < nvec; i++) {
        float *state = i == 0 ? t->opt_m : (i == 1 ? t->opt_v : NULL);
        if (i <= 1 && state == NULL) {
            continue;
        }
        if (i <= 1 && !t->ops->unified) {
            (void)st_get(&f, vec[i].name, ST_F32, 1, &np, tmp, NULL, 0);
            rc = t->ops->upload(t->ctx, state, tmp, np);
        } else {
            (void)st_get(&f, vec[i].name, vec[i].dtype, 1, &vec[i].n,
                         i <= 1 ? (void *)state : vec[i].dst, NULL, 0);
        }
    }
    if (rc == 0) {
        rc = trainer_set_step(t, info.steps);
    }
    if (rc == 0) {
        t->out_frozen = (int)frozen;
        t->out_seen = (long)seen;
        rc = trainer_norm_sync(t);
    }
    if (rc != 0) {
        surge_set_err(err, errlen, "%s: copying to the backend failed", path);
        goto out;
    }
    if (extra != NULL) {
        *extra = blob;
        blob = NULL;
    }
    if (extra_len != NULL) {
        *extra_len = (size_t)blob_len;
    }
    SURGE_LOG(SURGE_LOG_INFO, COMPONENT, "resumed from %s at step %llu", path,
              (unsigned long long)t->step);
out:
    free(blob);
    free(tmp);
    st_close(&f);
    return rc;
}

/* The inference-only model. */
struct surge_model {
    struct surge_model_info info;
    void *ctx;       /* cpu backend context */
    struct mlp mlp;  /* parameters + workspace (batch rows) */
    int out_n;       /* 1 or n_outputs */
    int batch;       /* rows per forward pass (workspace) */
    float *norm;     /* one allocation for the six arrays below */
    float *in_mean;  /* (n_inputs) */
    float *in_std;   /* (n_inputs) */
    float *in_scale; /* (n_inputs) 1 / in_std, as the trainer computes it */
    float *out_mean; /* (out_n) */
    float *out_std;  /* (out_n) */
    float *out_inv;  /* (out_n) */
    json_t *meta;    /* __metadata__ (a reference) */
    json_t *root;    /* the whole header (owned) */
};

/* Rows per forward pass: the trainer's batch_size from the file (so the
 * products have the same shapes and the results the same bits), capped. */
#define MODEL_BATCH_MAX 4096

int
surge_model_load(const char *path, surge_model **out, char *err, size_t errlen)
{
    struct st_file f;
    int out_norm = 0;
    const struct surge_backend_ops *ops = &surge_backend_cpu;
    if (path == NULL || out == NULL) {
        return -EINVAL;
    }
    int rc = st_read(path, &f, CRC_KEY, err, errlen);
    if (rc != 0) {
        return rc;
    }
    surge_model *m = calloc(1, sizeof *m);
    if (m == NULL) {
        rc = -ENOMEM;
        surge_set_err(err, errlen, "%s: out of memory", path);
        goto fail_file;
    }
    rc = read_arch(&f, path, MODEL_FORMAT, &m->info, &out_norm, err, errlen);
    if (rc != 0) {
        goto fail_model;
    }
    int nin = m->info.n_inputs;
    long long batch = 256;
    if (st_meta(&f, "surge.batch_size") != NULL &&
        st_meta_int(&f, "surge.batch_size", 1, SURGE_TRAINER_MAX_BATCH,
                    &batch) != 0) {
        rc = SURGE_EPROTO;
        surge_set_err(err, errlen, "%s: surge.batch_size is not a valid size",
                      path);
        goto fail_model;
    }
    m->batch = batch < MODEL_BATCH_MAX ? (int)batch : MODEL_BATCH_MAX;
    m->out_n = out_norm == SURGE_OUTNORM_GLOBAL ? 1 : m->info.n_outputs;
    m->norm = calloc(3 * (size_t)nin + 3 * (size_t)m->out_n, sizeof(float));
    if (m->norm == NULL) {
        rc = -ENOMEM;
        surge_set_err(err, errlen, "%s: out of memory", path);
        goto fail_model;
    }
    m->in_mean = m->norm;
    m->in_std = m->in_mean + nin;
    m->in_scale = m->in_std + nin;
    m->out_mean = m->in_scale + nin;
    m->out_std = m->out_mean + m->out_n;
    m->out_inv = m->out_std + m->out_n;
    if (parse_num_array(st_meta(&f, "surge.in_mean"), nin, m->in_mean, NULL) <
            0 ||
        parse_num_array(st_meta(&f, "surge.in_std"), nin, m->in_std, NULL) <
            0 ||
        parse_num_array(st_meta(&f, "surge.out_mean"), m->out_n, m->out_mean,
                        NULL) < 0 ||
        parse_num_array(st_meta(&f, "surge.out_std"), m->out_n, m->out_std,
                        NULL) < 0) {
        rc = SURGE_EPROTO;
        surge_set_err(
            err, errlen,
            "%s: normalisation (surge.in_mean/in_std/out_mean/out_std) "
            "missing or of the wrong length",
            path);
        goto fail_norm;
    }
    for (int i = 0; i < nin; i++) {
        if (!(m->in_std[i] > 0.0f)) {
            rc = SURGE_EPROTO;
            surge_set_err(err, errlen, "%s: surge.in_std[%d] must be > 0", path,
                          i);
            goto fail_norm;
        }
        m->in_scale[i] = (float)(1.0 / (double)m->in_std[i]);
    }
    for (int j = 0; j < m->out_n; j++) {
        if (!(m->out_std[j] > 0.0f)) {
            rc = SURGE_EPROTO;
            surge_set_err(err, errlen, "%s: surge.out_std[%d] must be > 0",
                          path, j);
            goto fail_norm;
        }
        m->out_inv[j] = (float)(1.0 / (double)m->out_std[j]);
    }
    if (st_count_tensors(&f) != 2 * (m->info.n_layers + 1)) {
        rc = SURGE_EPROTO;
        surge_set_err(err, errlen, "%s: %d tensors for %d linear layers", path,
                      st_count_tensors(&f), m->info.n_layers + 1);
        goto fail_norm;
    }
    rc = ops->create(0, SURGE_PRECISION_FP32, &m->ctx, NULL, 0);
    if (rc != 0) {
        surge_set_err(err, errlen, "%s: backend failed", path);
        goto fail_norm;
    }
    rc =
        mlp_init(&m->mlp, ops, m->ctx, nin, m->info.n_outputs, m->info.n_layers,
                 m->info.layers, m->info.activation, m->batch);
    if (rc != 0) {
        surge_set_err(err, errlen, "%s: out of memory for the model", path);
        goto fail_ctx;
    }
    rc = get_model_tensors(&f, &m->mlp, m->mlp.params, path, err, errlen);
    if (rc != 0) {
        goto fail_mlp;
    }
    m->root = f.root;
    f.root = NULL;
    m->meta = json_object_get(m->root, "__metadata__");
    st_close(&f);
    *out = m;
    return 0;

fail_mlp:
    mlp_fini(&m->mlp);
fail_ctx:
    ops->destroy(m->ctx);
fail_norm:
    free(m->norm);
fail_model:
    free(m);
fail_file:
    st_close(&f);
    return rc;
}

void
surge_model_destroy(surge_model **mp)
{
    if (mp == NULL || *mp == NULL) {
        return;
    }
    surge_model *m = *mp;
    mlp_fini(&m->mlp);
    surge_backend_cpu.destroy(m->ctx);
    free(m->norm);
    json_decref(m->root);
    free(m);
    *mp = NULL;
}

const struct surge_model_info *
surge_model_get_info(const surge_model *m)
{
    return &m->info;
}

const char *
surge_model_meta(const surge_model *m, const char *key)
{
    json_t *v = m->meta != NULL ? json_object_get(m->meta, key) : NULL;
    return json_is_string(v) ? json_string_value(v) : NULL;
}

int
surge_model_predict(surge_model *m, const float *x, long rows, float *y)
{
    if (x == NULL || y == NULL || rows < 1) {
        return -EINVAL;
    }
    const struct surge_backend_ops *ops = &surge_backend_cpu;
    size_t nin = (size_t)m->info.n_inputs, nout = (size_t)m->info.n_outputs;
    for (long off = 0; off < rows; off += m->batch) {
        long left = rows - off;
        int n = left < m->batch ? (int)left : m->batch;
        /* The same ops, in the same order, as the trainer's predict. */
        ops->affine(m->ctx, n, (int)nin, x + (size_t)off * nin, m->in_mean,
                    m->in_scale, 1, 0, m->mlp.xn);
        mlp_forward(&m->mlp, m->mlp.xn, n);
        ops->affine(m->ctx, n, (int)nout, m->mlp.a[m->mlp.n_linear - 1],
                    m->out_mean, m->out_std, m->out_n > 1, 1,
                    y + (size_t)off * nout);
    }
    return 0;
}
