/*
 * trainer/trainer.c - the training loop: normalisation, step, schedules,
 * clipping, evaluation and prediction, all through the backend ops table.
 *
 * DESIGN. A step is: normalise the inputs (one small pass), forward,
 * loss + dL/dout + last bias gradient + per-row losses (one fused pass),
 * backward, and the fused optimizer pass: without clipping, layer by
 * layer inside backward as soon as a layer's gradient is final (gradient
 * and weights are still in cache); with clipping, which needs the global
 * norm first, one read pass for the norm and one update pass over the flat
 * parameter vector after backward.
 * Nothing is allocated after surge_trainer_create. Scalars of the update
 * (bias corrections, clip factor, scheduled rate) are computed here in
 * double and rounded once, so every backend applies the same numbers.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <surge/error.h>

#include "common/log.h"
#include "common/util.h"
#include "trainer/opt_scalars.h"
#include "trainer/trainer_internal.h"

#define COMPONENT "trainer"

static void
opt_config_from(const struct surge_trainer_config *c,
                struct surge_opt_config *o)
{
    memset(o, 0, sizeof *o);
    o->kind = c->optimizer;
    o->schedule = c->schedule;
    o->lr = c->lr;
    o->min_lr = c->min_lr;
    o->gamma = c->gamma;
    o->beta1 = c->beta1;
    o->beta2 = c->beta2;
    o->eps = c->eps;
    o->weight_decay = c->weight_decay;
    o->momentum = c->momentum;
    o->grad_clip = c->grad_clip;
    o->warmup_steps = c->warmup_steps;
    o->total_steps = c->total_steps;
    o->step_size = c->step_size;
}

double
trainer_lr_at(const struct surge_trainer_config *c, uint64_t s)
{
    struct surge_opt_config o;
    opt_config_from(c, &o);
    return surge_opt_lr_at(&o, s);
}

int
trainer_norm_sync(surge_trainer *t)
{
    int nin = t->cfg.n_inputs;
    for (int i = 0; i < nin; i++) {
        t->in_scale[i] = (float)(1.0 / (double)t->in_std[i]);
    }
    for (int i = 0; i < t->out_n; i++) {
        t->out_inv[i] = (float)(1.0 / (double)t->out_std[i]);
    }
    if (t->ops->unified) {
        return 0;
    }
    size_t n = 3 * (size_t)nin + 3 * (size_t)t->out_n;
    return t->ops->upload(t->ctx, t->norm_dev, t->norm_host, n);
}

void
trainer_freeze_from_acc(surge_trainer *t)
{
    int n = t->out_n;
    long seen = t->out_seen;
    double count = (double)seen * (t->cfg.out_norm == SURGE_OUTNORM_GLOBAL
                                       ? (double)t->cfg.n_outputs
                                       : 1.0);
    if (seen <= 0) {
        for (int j = 0; j < n; j++) {
            t->out_mean[j] = 0.0f;
            t->out_std[j] = 1.0f;
        }
    } else if (t->cfg.out_norm == SURGE_OUTNORM_GLOBAL) {
        double sd = sqrt(t->acc_m2[0] / count);
        t->out_mean[0] = (float)t->acc_mean[0];
        t->out_std[0] = sd > 0.0 && isfinite(sd) ? (float)sd : 1.0f;
    } else {
        /* The global statistics of the same samples set the floor. */
        double gmean = 0.0, gvar = 0.0;
        for (int j = 0; j < n; j++) {
            gmean += t->acc_mean[j];
        }
        gmean /= n;
        for (int j = 0; j < n; j++) {
            double d = t->acc_mean[j] - gmean;
            gvar += t->acc_m2[j] / count + d * d;
        }
        double gsd = sqrt(gvar / n);
        double floor_sd = gsd > 0.0 ? 1e-3 * gsd : 1.0;
        if (floor_sd < 1e-12) {
            floor_sd = 1e-12;
        }
        for (int j = 0; j < n; j++) {
            double sd = sqrt(t->acc_m2[j] / count);
            t->out_mean[j] = (float)t->acc_mean[j];
            t->out_std[j] = (float)(sd > floor_sd ? sd : floor_sd);
        }
    }
    t->out_frozen = 1;
    (void)trainer_norm_sync(t);
    SURGE_LOG(SURGE_LOG_INFO, COMPONENT,
              "output normalisation frozen from %ld samples (%s): mean %g std "
              "%g%s",
              seen,
              t->cfg.out_norm == SURGE_OUTNORM_GLOBAL ? "global"
                                                      : "per element",
              (double)t->out_mean[0], (double)t->out_std[0],
              n > 1 ? " (element 0)" : "");
}

/* Free what create allocated after the mlp (safe on partial state). */
static void
release(surge_trainer *t)
{
    size_t nnorm = 3 * (size_t)t->cfg.n_inputs + 3 * (size_t)t->out_n;
    size_t nout = (size_t)t->cfg.batch_size * (size_t)t->cfg.n_outputs;
    size_t nstate =
        (t->cfg.optimizer != SURGE_OPT_SGD ? 2 : 1) * t->mlp.n_params;
    trainer_dp_release(t);
    if (t->graph != NULL) {
        t->ops->graph_free(t->ctx, t->graph);
        t->graph = NULL;
    }
    if (t->rep != NULL) {
        t->ops->host_free(t->ctx, t->rep, sizeof *t->rep);
    }
    t->ops->free(t->ctx, t->st_d, sizeof *t->st_d);
    if (!t->ops->unified) {
        t->ops->free(t->ctx, t->norm_dev, nnorm * sizeof(float));
        t->ops->host_free(t->ctx, t->host_out, nout * sizeof(float));
    }
    free(t->acc_m2);
    free(t->acc_mean);
    free(t->norm_host);
    t->ops->free(t->ctx, t->opt_state, nstate * sizeof(float));
}

static void
set_err(char *err, size_t errlen, const char *msg)
{
    if (err != NULL && errlen > 0) {
        snprintf(err, errlen, "%s", msg);
    }
}

/* Resolve cfg->backend ("auto": cuda when it starts, else cpu with one log
 * line) and create its context. Records the backend chosen in t->cfg. */
static int
open_backend(surge_trainer *t, char *err, size_t errlen)
{
    struct surge_trainer_config *c = &t->cfg;
    char why[256] = "";
    int rc;
    if (strcmp(c->backend, "auto") == 0) {
        const struct surge_backend_ops *cuda = surge_backend_find("cuda");
        if (cuda != NULL) {
            rc = cuda->create(c->threads, c->precision, &t->ctx, why,
                              sizeof why);
            if (rc == 0) {
                t->ops = cuda;
                snprintf(c->backend, sizeof c->backend, "%s", "cuda");
                return 0;
            }
        } else {
            snprintf(why, sizeof why, "%s",
                     "this build has no CUDA backend (configure --with-cuda)");
        }
        SURGE_LOG(
            SURGE_LOG_INFO, COMPONENT, "backend auto: using cpu (%s)%s", why,
            c->precision != SURGE_PRECISION_FP32 ? "; precision fp32" : "");
        snprintf(c->backend, sizeof c->backend, "%s", "cpu");
        c->precision = SURGE_PRECISION_FP32;
    }
    t->ops = surge_backend_find(c->backend);
    if (t->ops == NULL) {
        surge_set_err(err, errlen, "trainer.backend: '%s' is not available",
                      c->backend);
        return SURGE_ECONFIG;
    }
    rc = t->ops->create(c->threads, c->precision, &t->ctx, why, sizeof why);
    if (rc != 0) {
        surge_set_err(err, errlen, "trainer.backend: %s: %s", c->backend,
                      why[0] != '\0' ? why : "the backend failed to start");
        return rc;
    }
    return 0;
}

int
surge_trainer_create(const struct surge_trainer_config *cfg,
                     surge_trainer **out, char *err, size_t errlen)
{
    int rc = surge_trainer_config_validate(cfg, err, errlen);
    if (rc != 0) {
        return rc;
    }
    surge_trainer *t = calloc(1, sizeof *t);
    if (t == NULL) {
        set_err(err, errlen, "trainer: out of memory");
        return -ENOMEM;
    }
    t->cfg = *cfg;
    rc = open_backend(t, err, errlen);
    if (rc != 0) {
        goto fail_free;
    }
    opt_config_from(&t->cfg, &t->opt);
    rc = mlp_init(&t->mlp, t->ops, t->ctx, cfg->n_inputs, cfg->n_outputs,
                  cfg->n_layers, cfg->layers, cfg->activation, cfg->batch_size);
    if (rc != 0) {
        set_err(err, errlen, "trainer: out of memory for the model");
        goto fail_backend;
    }
    size_t np = t->mlp.n_params;
    int adam = cfg->optimizer != SURGE_OPT_SGD;
    t->opt_state = t->ops->alloc(t->ctx, (adam ? 2 : 1) * np * sizeof(float));
    if (t->opt_state == NULL) {
        rc = -ENOMEM;
        set_err(err, errlen, "trainer: out of memory for the optimizer");
        goto fail_mlp;
    }
    t->opt_m = t->opt_state;
    t->opt_v = adam ? t->opt_state + np : NULL;
    t->st_d = t->ops->alloc(t->ctx, sizeof *t->st_d);
    void *rep_d = NULL;
    t->rep = t->ops->mapped_alloc(t->ctx, sizeof *t->rep, &rep_d);
    t->rep_d = rep_d;
    if (t->st_d == NULL || t->rep == NULL) {
        rc = -ENOMEM;
        set_err(err, errlen, "trainer: out of memory for the step state");
        goto fail_norm;
    }

    int nin = cfg->n_inputs;
    t->out_n = cfg->out_norm == SURGE_OUTNORM_GLOBAL ? 1 : cfg->n_outputs;
    size_t nnorm = 3 * (size_t)nin + 3 * (size_t)t->out_n;
    t->norm_host = calloc(nnorm, sizeof(float));
    t->acc_mean = calloc((size_t)t->out_n, sizeof(double));
    t->acc_m2 = calloc((size_t)t->out_n, sizeof(double));
    if (t->norm_host == NULL || t->acc_mean == NULL || t->acc_m2 == NULL) {
        rc = -ENOMEM;
        set_err(err, errlen, "trainer: out of memory");
        goto fail_norm;
    }
    t->in_mean = t->norm_host;
    t->in_std = t->in_mean + nin;
    t->in_scale = t->in_std + nin;
    t->out_mean = t->in_scale + nin;
    t->out_std = t->out_mean + t->out_n;
    t->out_inv = t->out_std + t->out_n;
    if (t->ops->unified) {
        t->norm_dev = t->norm_host;
    } else {
        t->norm_dev = t->ops->alloc(t->ctx, nnorm * sizeof(float));
        t->host_out = t->ops->host_alloc(t->ctx, (size_t)cfg->batch_size *
                                                     (size_t)cfg->n_outputs *
                                                     sizeof(float));
        if (t->norm_dev == NULL || t->host_out == NULL) {
            rc = -ENOMEM;
            set_err(err, errlen, "trainer: out of memory");
            goto fail_norm;
        }
    }
    t->in_mean_d = t->norm_dev;
    t->in_scale_d = t->norm_dev + 2 * (size_t)nin;
    t->out_mean_d = t->norm_dev + 3 * (size_t)nin;
    t->out_std_d = t->out_mean_d + t->out_n;
    t->out_inv_d = t->out_std_d + t->out_n;
    for (int i = 0; i < nin; i++) {
        t->in_std[i] = 1.0f;
    }
    for (int j = 0; j < t->out_n; j++) {
        t->out_std[j] = 1.0f;
    }
    rc = trainer_norm_sync(t);
    if (rc == 0) {
        float *tmp = NULL;
        if (!t->ops->unified) {
            tmp = malloc(np * sizeof(float));
        }
        rc = mlp_init_weights(&t->mlp, cfg->seed, tmp);
        free(tmp);
    }
    if (rc == 0) {
        rc = t->ops->sync(t->ctx);
    }
    if (rc != 0) {
        if (t->ops->error(t->ctx) != NULL) {
            surge_set_err(err, errlen, "trainer: backend %s: %s", t->ops->name,
                          t->ops->error(t->ctx));
        } else {
            set_err(err, errlen, "trainer: initialisation failed");
        }
        goto fail_norm;
    }
    SURGE_LOG(SURGE_LOG_DEBUG, COMPONENT,
              "created: %d -> %d hidden layers -> %d, %zu parameters, %s, "
              "backend %s, precision %s",
              cfg->n_inputs, cfg->n_layers, cfg->n_outputs, np,
              surge_trainer_optimizer_name(cfg->optimizer), t->ops->name,
              surge_trainer_precision_name(t->cfg.precision));
    *out = t;
    return 0;

fail_norm:
    release(t);
fail_mlp:
    mlp_fini(&t->mlp);
fail_backend:
    t->ops->destroy(t->ctx);
fail_free:
    free(t);
    return rc;
}

void
surge_trainer_destroy(surge_trainer **tp)
{
    if (tp == NULL || *tp == NULL) {
        return;
    }
    surge_trainer *t = *tp;
    release(t);
    mlp_fini(&t->mlp);
    t->ops->destroy(t->ctx);
    free(t);
    *tp = NULL;
}

const struct surge_trainer_config *
surge_trainer_config_get(const surge_trainer *t)
{
    return &t->cfg;
}

int
surge_trainer_set_input_range(surge_trainer *t, const float *lo,
                              const float *hi, char *err, size_t errlen)
{
    if (lo == NULL || hi == NULL) {
        set_err(err, errlen, "trainer: input range: NULL array");
        return -EINVAL;
    }
    int nin = t->cfg.n_inputs;
    for (int i = 0; i < nin; i++) {
        if (!isfinite(lo[i]) || !isfinite(hi[i]) || lo[i] > hi[i]) {
            if (err != NULL && errlen > 0) {
                snprintf(err, errlen,
                         "trainer: input %d: range [%g, %g] must be finite "
                         "with min <= max",
                         i, (double)lo[i], (double)hi[i]);
            }
            return SURGE_ECONFIG;
        }
    }
    for (int i = 0; i < nin; i++) {
        double l = lo[i], h = hi[i];
        t->in_mean[i] = (float)(0.5 * (l + h));
        t->in_std[i] = h > l ? (float)(0.5 * (h - l)) : 1.0f;
        if (!(t->in_std[i] > 0.0f)) { /* a range below float resolution */
            t->in_std[i] = 1.0f;
        }
    }
    return trainer_norm_sync(t);
}

int
surge_trainer_observe_outputs(surge_trainer *t, const float *y, long rows)
{
    if (y == NULL || rows < 0) {
        return -EINVAL;
    }
    if (t->out_frozen) {
        return 1;
    }
    long room = t->cfg.out_norm_samples - t->out_seen;
    long n = rows < room ? rows : room;
    size_t nout = (size_t)t->cfg.n_outputs;
    size_t total = (size_t)n * nout;
    for (size_t i = 0; i < total; i++) {
        if (!isfinite(y[i])) {
            return -EINVAL;
        }
    }
    if (n > 0 && t->cfg.out_norm == SURGE_OUTNORM_GLOBAL) {
        /* Chan et al.: combine the batch's (count, mean, M2) with ours. */
        double sum = 0.0;
        for (size_t i = 0; i < total; i++) {
            sum += y[i];
        }
        double bmean = sum / (double)total;
        double bm2 = 0.0;
        for (size_t i = 0; i < total; i++) {
            double d = y[i] - bmean;
            bm2 += d * d;
        }
        double na = (double)t->out_seen * (double)nout;
        double nb = (double)total;
        double delta = bmean - t->acc_mean[0];
        t->acc_mean[0] += delta * nb / (na + nb);
        t->acc_m2[0] += bm2 + delta * delta * na * nb / (na + nb);
    } else if (n > 0) {
        for (long r = 0; r < n; r++) {
            double k = (double)(t->out_seen + r + 1);
            const float *yr = y + (size_t)r * nout;
            for (size_t j = 0; j < nout; j++) {
                double d = yr[j] - t->acc_mean[j];
                t->acc_mean[j] += d / k;
                t->acc_m2[j] += d * (yr[j] - t->acc_mean[j]);
            }
        }
    }
    t->out_seen += n;
    if (t->out_seen >= t->cfg.out_norm_samples) {
        trainer_freeze_from_acc(t);
        return 1;
    }
    return 0;
}

void
surge_trainer_freeze_outputs(surge_trainer *t)
{
    if (!t->out_frozen) {
        trainer_freeze_from_acc(t);
    }
}

int
surge_trainer_outputs_frozen(const surge_trainer *t)
{
    return t->out_frozen;
}

int
surge_trainer_set_output_norm(surge_trainer *t, const float *mean,
                              const float *std, int n)
{
    if (mean == NULL || std == NULL || n != t->out_n) {
        return -EINVAL;
    }
    for (int j = 0; j < n; j++) {
        if (!isfinite(mean[j]) || !isfinite(std[j]) || !(std[j] > 0.0f)) {
            return -EINVAL;
        }
    }
    memcpy(t->out_mean, mean, (size_t)n * sizeof(float));
    memcpy(t->out_std, std, (size_t)n * sizeof(float));
    t->out_frozen = 1;
    return trainer_norm_sync(t);
}

/* The optimizer update of one layer, called by mlp_backward as soon as
 * that layer's gradients are final. */
void
trainer_update_layer(void *arg, int k)
{
    surge_trainer *t = arg;
    const struct mlp_linear *l = &t->mlp.lin[k];
    size_t off = l->offset;
    size_t n = (size_t)l->out * (size_t)l->in + (size_t)l->out;
    t->ops->opt_update(t->ctx, t->st_d, t->mlp.params + off, t->mlp.grads + off,
                       t->opt_m + off, t->opt_v != NULL ? t->opt_v + off : NULL,
                       n, &t->st_d->sumsq);
}

/* The error of a failed backend as the trainer's return code. */
int
trainer_backend_rc(surge_trainer *t, int rc)
{
    if (t->ops->error(t->ctx) != NULL) {
        return -EIO;
    }
    return rc;
}

/* The body of a step, queued on the backend: every pointer is fixed for a
 * given (rows, weight, row_loss) on a non-unified backend (the stage
 * buffers), so the same body can be captured once and replayed. x, y, w
 * are backend memory; rl the per-row losses or NULL. */
static void
step_body(surge_trainer *t, const float *x, const float *y, const float *w,
          int rows, float *rl)
{
    const struct surge_backend_ops *ops = t->ops;
    struct mlp *m = &t->mlp;
    int last = m->n_linear - 1;
    ops->affine(t->ctx, rows, t->cfg.n_inputs, x, t->in_mean_d, t->in_scale_d,
                1, 0, m->xn);
    mlp_forward(m, m->xn, rows);
    ops->mse_fwd_bwd(t->ctx, rows, t->cfg.n_outputs, m->a[last], y,
                     t->out_mean_d, t->out_inv_d, t->out_n > 1, w, m->a[last],
                     m->lin[last].db, rl, &t->st_d->loss);
    ops->opt_scalars(t->ctx, &t->opt, t->st_d, SURGE_OPT_BEGIN, t->rep_d);
    if (t->cfg.grad_clip > 0.0) {
        /* The clip factor needs every gradient first: backward, one read
         * pass for the norm, then one update pass over all parameters. */
        mlp_backward(m, m->xn, rows, NULL, NULL);
        ops->sumsq(t->ctx, m->grads, m->n_params, &t->st_d->sumsq);
        ops->opt_scalars(t->ctx, &t->opt, t->st_d, SURGE_OPT_CLIP, t->rep_d);
        ops->opt_update(t->ctx, t->st_d, m->params, m->grads, t->opt_m,
                        t->opt_v, m->n_params, NULL);
    } else {
        /* Without clipping each layer is updated as soon as its gradient
         * is final, while gradient and weights are still in cache. */
        mlp_backward(m, m->xn, rows, trainer_update_layer, t);
    }
    ops->opt_scalars(t->ctx, &t->opt, t->st_d, SURGE_OPT_END, t->rep_d);
}

/* Run the step body on the stage buffers of a non-unified backend: from
 * the captured graph when the backend has graphs (captured on first use
 * and whenever rows or the optional buffers change), else eagerly. */
static int
run_staged(surge_trainer *t, int rows, int has_w, int has_rl)
{
    const struct surge_backend_ops *ops = t->ops;
    struct mlp *m = &t->mlp;
    const float *w = has_w ? m->stage_w : NULL;
    float *rl = has_rl ? m->row_loss : NULL;
    unsigned key =
        (unsigned)rows | (unsigned)has_w << 21 | (unsigned)has_rl << 22;
    if (ops->graph_begin == NULL || t->graph_off) {
        step_body(t, m->stage_x, m->stage_y, w, rows, rl);
        return trainer_backend_rc(t, 0);
    }
    if (t->graph == NULL || t->graph_key != key) {
        if (t->graph != NULL) {
            ops->graph_free(t->ctx, t->graph);
            t->graph = NULL;
        }
        int rc = ops->graph_begin(t->ctx);
        if (rc == 0) {
            step_body(t, m->stage_x, m->stage_y, w, rows, rl);
            rc = ops->graph_end(t->ctx, &t->graph);
        }
        if (rc != 0) {
            /* A capture failure leaves the context usable: run eagerly
             * from now on (a real device fault shows up there). */
            SURGE_LOG(SURGE_LOG_WARN, COMPONENT,
                      "capturing the step in a CUDA graph failed; steps "
                      "run eagerly");
            t->graph = NULL;
            t->graph_off = 1;
            step_body(t, m->stage_x, m->stage_y, w, rows, rl);
            return trainer_backend_rc(t, 0);
        }
        t->graph_key = key;
    }
    return trainer_backend_rc(t, ops->graph_launch(t->ctx, t->graph));
}

/* Freeze the output statistics before the first step (trainer.h). y is
 * host memory. */
int
trainer_freeze_before_step(surge_trainer *t, const float *y, int rows)
{
    if (t->out_frozen) {
        return 0;
    }
    if (t->out_seen == 0) {
        int rc = surge_trainer_observe_outputs(t, y, rows);
        if (rc < 0) {
            return rc;
        }
    }
    surge_trainer_freeze_outputs(t);
    return trainer_backend_rc(t, 0);
}

/* Read the published report (consistent snapshot: seq before and after)
 * and fold it into t->step. Returns 1 when steps finished since the last
 * read, 0 when none, SURGE_ESTATE when one of them was skipped. */
int
trainer_read_report(surge_trainer *t, struct surge_trainer_step_info *info)
{
    struct surge_step_report r;
    const volatile struct surge_step_report *v = t->rep;
    for (;;) {
        uint64_t s0 = v->seq;
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        r.step = v->step;
        r.skipped = v->skipped;
        r.loss = v->loss;
        r.grad_norm = v->grad_norm;
        r.lr = v->lr;
        r.last_skipped = v->last_skipped;
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (v->seq == s0) {
            r.seq = s0;
            break;
        }
    }
    int rc = r.seq != t->seen_seq ? 1 : 0;
    if (r.skipped != t->seen_skipped) {
        SURGE_LOG(SURGE_LOG_WARN, COMPONENT,
                  "step %llu: %llu step(s) skipped: loss or gradient norm "
                  "not finite",
                  (unsigned long long)r.step + 1,
                  (unsigned long long)(r.skipped - t->seen_skipped));
        rc = SURGE_ESTATE;
    }
    t->seen_seq = r.seq;
    t->seen_skipped = r.skipped;
    t->step = r.step;
    if (info != NULL) {
        info->loss = r.loss;
        info->grad_norm = r.grad_norm;
        info->lr = r.lr;
        info->step = r.step;
    }
    return rc;
}

/* Queue a step: stage the batch (non-unified) and run the body. */
static int
queue_step(surge_trainer *t, const float *x, const float *y, const float *w,
           int rows, float *row_loss, int device)
{
    const struct surge_trainer_config *c = &t->cfg;
    struct mlp *m = &t->mlp;
    int rc;
    if (t->ops->unified) {
        step_body(t, x, y, w, rows, row_loss);
        return trainer_backend_rc(t, 0);
    }
    size_t nx = (size_t)rows * (size_t)c->n_inputs;
    size_t ny = (size_t)rows * (size_t)c->n_outputs;
    if (device) {
        rc = t->ops->copy(t->ctx, m->stage_x, x, nx);
        if (rc == 0) {
            rc = t->ops->copy(t->ctx, m->stage_y, y, ny);
        }
        if (rc == 0 && w != NULL) {
            rc = t->ops->copy(t->ctx, m->stage_w, w, (size_t)rows);
        }
    } else {
        rc = t->ops->upload(t->ctx, m->stage_x, x, nx);
        if (rc == 0) {
            rc = t->ops->upload(t->ctx, m->stage_y, y, ny);
        }
        if (rc == 0 && w != NULL) {
            rc = t->ops->upload(t->ctx, m->stage_w, w, (size_t)rows);
        }
    }
    if (rc == 0) {
        rc = run_staged(t, rows, w != NULL, row_loss != NULL);
    }
    if (rc == 0 && row_loss != NULL && device) {
        rc = t->ops->copy(t->ctx, row_loss, m->row_loss, (size_t)rows);
    }
    return trainer_backend_rc(t, rc);
}

int
surge_trainer_step(surge_trainer *t, const float *x, const float *y,
                   const float *weight, int rows, float *row_loss,
                   struct surge_trainer_step_info *info)
{
    if (x == NULL || y == NULL || rows < 1 || rows > t->cfg.batch_size) {
        return -EINVAL;
    }
    int rc = trainer_freeze_before_step(t, y, rows);
    if (rc == 0) {
        rc = queue_step(t, x, y, weight, rows, row_loss, 0);
    }
    if (rc == 0 && row_loss != NULL && !t->ops->unified) {
        rc = t->ops->download(t->ctx, row_loss, t->mlp.row_loss, (size_t)rows);
    }
    if (rc == 0) {
        rc = t->ops->sync(t->ctx);
    }
    if (rc != 0) {
        return trainer_backend_rc(t, rc);
    }
    rc = trainer_read_report(t, info);
    return rc == 1 ? 0 : rc;
}

int
surge_trainer_step_async(surge_trainer *t, const float *x, const float *y,
                         const float *weight, int rows, float *row_loss,
                         unsigned flags)
{
    if (x == NULL || y == NULL || rows < 1 || rows > t->cfg.batch_size ||
        (flags & ~SURGE_TRAINER_BATCH_DEVICE) != 0) {
        return -EINVAL;
    }
    int device = (flags & SURGE_TRAINER_BATCH_DEVICE) != 0;
    int rc = 0;
    if (!t->out_frozen) {
        const float *yh = y;
        if (device && !t->ops->unified) {
            rc = t->ops->download(t->ctx, t->host_out, y,
                                  (size_t)rows * (size_t)t->cfg.n_outputs);
            yh = t->host_out;
        }
        if (rc == 0) {
            rc = trainer_freeze_before_step(t, yh, rows);
        }
        if (rc != 0) {
            return trainer_backend_rc(t, rc);
        }
    }
    if (!device && row_loss != NULL && !t->ops->unified) {
        /* Host row losses need the step finished: the synchronous path. */
        rc = queue_step(t, x, y, weight, rows, row_loss, 0);
        if (rc == 0) {
            rc = t->ops->download(t->ctx, row_loss, t->mlp.row_loss,
                                  (size_t)rows);
        }
        return trainer_backend_rc(t, rc);
    }
    return queue_step(t, x, y, weight, rows, row_loss, device);
}

int
surge_trainer_poll(surge_trainer *t, struct surge_trainer_step_info *info)
{
    if (t->ops->error(t->ctx) != NULL) {
        return -EIO;
    }
    return trainer_read_report(t, info);
}

int
surge_trainer_sync(surge_trainer *t, struct surge_trainer_step_info *info)
{
    int rc = t->ops->sync(t->ctx);
    if (rc != 0) {
        return trainer_backend_rc(t, rc);
    }
    rc = trainer_read_report(t, info);
    return rc == 1 ? 0 : rc;
}

int
trainer_set_step(surge_trainer *t, uint64_t step)
{
    int rc = t->ops->sync(t->ctx);
    if (rc != 0) {
        return trainer_backend_rc(t, rc);
    }
    (void)trainer_read_report(t, NULL);
    /* Only the counter changes: upload the state with it replaced. The
     * struct is a whole number of floats (static assertion below). */
    struct surge_step_state st;
    rc = t->ops->download(t->ctx, (float *)(void *)&st,
                          (const float *)(const void *)t->st_d,
                          sizeof st / sizeof(float));
    if (rc == 0) {
        st.step = step;
        rc = t->ops->upload(t->ctx, (float *)(void *)t->st_d,
                            (const float *)(const void *)&st,
                            sizeof st / sizeof(float));
    }
    if (rc == 0) {
        rc = t->ops->sync(t->ctx);
    }
    if (rc != 0) {
        return trainer_backend_rc(t, rc);
    }
    t->step = step;
    t->rep->step = step;
    return 0;
}

_Static_assert(sizeof(struct surge_step_state) % sizeof(float) == 0,
               "the step state is copied as floats");

const char *
surge_trainer_error(const surge_trainer *t)
{
    return t->ops->error(t->ctx);
}

const char *
surge_trainer_backend(const surge_trainer *t)
{
    return t->ops->name;
}

void *
surge_trainer_stream(surge_trainer *t)
{
    return t->ops->stream(t->ctx);
}

int
surge_trainer_times(const surge_trainer *t, struct surge_trainer_times *out)
{
    memset(out, 0, sizeof *out);
    if (t->ops->times == NULL) {
        return -ENOTSUP;
    }
    uint64_t ns[SURGE_BACKEND_TIME_N] = {0};
    t->ops->times(t->ctx, ns);
    out->gemm_s = (double)ns[SURGE_BACKEND_TIME_GEMM] * 1e-9;
    out->passes_s = (double)ns[SURGE_BACKEND_TIME_PASSES] * 1e-9;
    out->optimizer_s = (double)ns[SURGE_BACKEND_TIME_OPTIMIZER] * 1e-9;
    return 0;
}

struct surge_pool *
surge_trainer_pool(surge_trainer *t)
{
    return t->ops->pool != NULL ? t->ops->pool(t->ctx) : NULL;
}

void *
surge_trainer_device_alloc(surge_trainer *t, size_t bytes)
{
    return t->ops->alloc(t->ctx, bytes);
}

void
surge_trainer_device_free(surge_trainer *t, void *p, size_t bytes)
{
    t->ops->free(t->ctx, p, bytes);
}

/* Normalise rows of x (host memory) into the mlp's xn, uploading first
 * when needed. */
static int
load_inputs(surge_trainer *t, const float *x, int rows)
{
    const float *src = x;
    size_t n = (size_t)rows * (size_t)t->cfg.n_inputs;
    if (!t->ops->unified) {
        int rc = t->ops->upload(t->ctx, t->mlp.stage_x, x, n);
        if (rc != 0) {
            return trainer_backend_rc(t, rc);
        }
        src = t->mlp.stage_x;
    }
    t->ops->affine(t->ctx, rows, t->cfg.n_inputs, src, t->in_mean_d,
                   t->in_scale_d, 1, 0, t->mlp.xn);
    return 0;
}

/* Forward rows of x and leave the denormalised outputs in dst (device
 * memory; may be the caller's buffer on unified backends). */
static int
forward_phys(surge_trainer *t, const float *x, int rows, float *dst)
{
    struct mlp *m = &t->mlp;
    int rc = load_inputs(t, x, rows);
    if (rc != 0) {
        return rc;
    }
    mlp_forward(m, m->xn, rows);
    t->ops->affine(t->ctx, rows, t->cfg.n_outputs, m->a[m->n_linear - 1],
                   t->out_mean_d, t->out_std_d, t->out_n > 1, 1, dst);
    return 0;
}

int
surge_trainer_predict(surge_trainer *t, const float *x, long rows, float *y)
{
    if (x == NULL || y == NULL || rows < 1) {
        return -EINVAL;
    }
    size_t nin = (size_t)t->cfg.n_inputs, nout = (size_t)t->cfg.n_outputs;
    for (long off = 0; off < rows; off += t->cfg.batch_size) {
        long left = rows - off;
        int n = left < t->cfg.batch_size ? (int)left : t->cfg.batch_size;
        float *yo = y + (size_t)off * nout;
        float *dst = t->ops->unified ? yo : t->mlp.out_phys;
        int rc = forward_phys(t, x + (size_t)off * nin, n, dst);
        if (rc == 0 && !t->ops->unified) {
            rc = t->ops->download(t->ctx, yo, dst, (size_t)n * nout);
        }
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

int
surge_trainer_evaluate(surge_trainer *t, const float *x, const float *y,
                       long rows, struct surge_trainer_eval_result *out)
{
    if (x == NULL || y == NULL || out == NULL || rows < 1) {
        return -EINVAL;
    }
    size_t nin = (size_t)t->cfg.n_inputs, nout = (size_t)t->cfg.n_outputs;
    double se_n = 0.0, se = 0.0, yy = 0.0, rel_sum = 0.0;
    long rel_rows = 0;
    for (long off = 0; off < rows; off += t->cfg.batch_size) {
        long left = rows - off;
        int n = left < t->cfg.batch_size ? (int)left : t->cfg.batch_size;
        int rc = forward_phys(t, x + (size_t)off * nin, n, t->mlp.out_phys);
        const float *yh = t->mlp.out_phys;
        if (rc == 0 && !t->ops->unified) {
            rc = t->ops->download(t->ctx, t->host_out, t->mlp.out_phys,
                                  (size_t)n * nout);
            yh = t->host_out;
        }
        if (rc != 0) {
            return rc;
        }
        for (int r = 0; r < n; r++) {
            const float *yr = y + ((size_t)off + (size_t)r) * nout;
            const float *hr = yh + (size_t)r * nout;
            double row_se = 0.0, row_yy = 0.0, row_se_n = 0.0;
            for (size_t j = 0; j < nout; j++) {
                double e = (double)hr[j] - (double)yr[j];
                double inv = t->out_inv[t->out_n > 1 ? j : 0];
                row_se += e * e;
                row_se_n += e * e * inv * inv;
                row_yy += (double)yr[j] * (double)yr[j];
            }
            se += row_se;
            se_n += row_se_n;
            yy += row_yy;
            if (row_yy > 0.0) {
                rel_sum += sqrt(row_se / row_yy);
                rel_rows++;
            }
        }
    }
    out->sum_se_n = se_n;
    out->sum_se = se;
    out->sum_yy = yy;
    out->sum_rel = rel_sum;
    out->rel_rows = (double)rel_rows;
    out->rows = rows;
    surge_trainer_eval_from_sums(out, t->cfg.n_outputs);
    return 0;
}

void
surge_trainer_eval_from_sums(struct surge_trainer_eval_result *r, int n_outputs)
{
    double count = (double)r->rows * (double)n_outputs;
    double se = r->sum_se, yy = r->sum_yy;
    r->mse = count > 0 ? r->sum_se_n / count : 0.0;
    r->mse_phys = count > 0 ? se / count : 0.0;
    r->rel_l2 = yy > 0.0 ? sqrt(se / yy) : (se > 0.0 ? INFINITY : 0.0);
    r->rel_l2_mean = r->rel_rows > 0 ? r->sum_rel / r->rel_rows : 0.0;
}

uint64_t
surge_trainer_steps(const surge_trainer *t)
{
    return t->step;
}

size_t
surge_trainer_num_params(const surge_trainer *t)
{
    return t->mlp.n_params;
}

int
surge_trainer_get_params(const surge_trainer *t, float *dst, size_t n)
{
    if (dst == NULL || n != t->mlp.n_params) {
        return -EINVAL;
    }
    return t->ops->download(t->ctx, dst, t->mlp.params, n);
}

int
surge_trainer_set_params(surge_trainer *t, const float *src, size_t n)
{
    if (src == NULL || n != t->mlp.n_params) {
        return -EINVAL;
    }
    return t->ops->upload(t->ctx, t->mlp.params, src, n);
}

void *
surge_trainer_host_alloc(surge_trainer *t, size_t bytes)
{
    return t->ops->host_alloc(t->ctx, bytes);
}

void
surge_trainer_host_free(surge_trainer *t, void *p, size_t bytes)
{
    if (p != NULL) {
        t->ops->host_free(t->ctx, p, bytes);
    }
}
