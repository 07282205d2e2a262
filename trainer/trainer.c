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
#include "trainer/trainer_internal.h"

#define COMPONENT "trainer"

double
trainer_lr_at(const struct surge_trainer_config *c, uint64_t s)
{
    if (c->warmup_steps > 0 && s < (uint64_t)c->warmup_steps) {
        return c->lr * (double)(s + 1) / (double)c->warmup_steps;
    }
    double u = (double)(s - (uint64_t)c->warmup_steps);
    switch (c->schedule) {
    case SURGE_SCHED_COSINE: {
        double horizon = (double)(c->total_steps - c->warmup_steps);
        double x = u < horizon ? u / horizon : 1.0;
        return c->min_lr + (c->lr - c->min_lr) * 0.5 * (1.0 + cos(M_PI * x));
    }
    case SURGE_SCHED_STEP:
        return c->lr * pow(c->gamma, floor(u / (double)c->step_size));
    default:
        return c->lr;
    }
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
    t->ops = surge_backend_find(cfg->backend);
    rc = t->ops->create(cfg->threads, &t->ctx);
    if (rc != 0) {
        set_err(err, errlen, "trainer: the backend failed to start");
        goto fail_free;
    }
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
    if (rc != 0) {
        set_err(err, errlen, "trainer: initialisation failed");
        goto fail_norm;
    }
    SURGE_LOG(SURGE_LOG_DEBUG, COMPONENT,
              "created: %d -> %d hidden layers -> %d, %zu parameters, %s, "
              "backend %s",
              cfg->n_inputs, cfg->n_layers, cfg->n_outputs, np,
              surge_trainer_optimizer_name(cfg->optimizer), t->ops->name);
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
struct layer_update {
    surge_trainer *t;
    const struct surge_opt_step *s;
    double sumsq; /* squared gradient norm, summed over layers */
};

static void
update_layer(void *arg, int k)
{
    struct layer_update *u = arg;
    surge_trainer *t = u->t;
    const struct mlp_linear *l = &t->mlp.lin[k];
    size_t off = l->offset;
    size_t n = (size_t)l->out * (size_t)l->in + (size_t)l->out;
    u->sumsq += t->ops->opt_update(t->ctx, u->s, t->mlp.params + off,
                                   t->mlp.grads + off, t->opt_m + off,
                                   t->opt_v != NULL ? t->opt_v + off : NULL, n);
}

/* Normalise rows of x into the mlp's xn (uploading first when needed). */
static int
load_inputs(surge_trainer *t, const float *x, int rows)
{
    const float *src = x;
    size_t n = (size_t)rows * (size_t)t->cfg.n_inputs;
    if (!t->ops->unified) {
        int rc = t->ops->upload(t->ctx, t->mlp.stage_x, x, n);
        if (rc != 0) {
            return rc;
        }
        src = t->mlp.stage_x;
    }
    t->ops->affine(t->ctx, rows, t->cfg.n_inputs, src, t->in_mean_d,
                   t->in_scale_d, 1, 0, t->mlp.xn);
    return 0;
}

int
surge_trainer_step(surge_trainer *t, const float *x, const float *y,
                   const float *weight, int rows, float *row_loss,
                   struct surge_trainer_step_info *info)
{
    const struct surge_trainer_config *c = &t->cfg;
    struct mlp *m = &t->mlp;
    if (x == NULL || y == NULL || rows < 1 || rows > c->batch_size) {
        return -EINVAL;
    }
    if (!t->out_frozen) {
        if (t->out_seen == 0) {
            int rc = surge_trainer_observe_outputs(t, y, rows);
            if (rc < 0) {
                return rc;
            }
        }
        surge_trainer_freeze_outputs(t);
    }
    int rc = load_inputs(t, x, rows);
    if (rc != 0) {
        return rc;
    }
    const float *yd = y;
    const float *wd = weight;
    float *rl = row_loss != NULL ? m->row_loss : NULL;
    if (!t->ops->unified) {
        size_t ny = (size_t)rows * (size_t)c->n_outputs;
        rc = t->ops->upload(t->ctx, m->stage_y, y, ny);
        if (rc == 0 && weight != NULL) {
            rc = t->ops->upload(t->ctx, m->stage_w, weight, (size_t)rows);
        }
        if (rc != 0) {
            return rc;
        }
        yd = m->stage_y;
        wd = weight != NULL ? m->stage_w : NULL;
    } else if (row_loss != NULL) {
        rl = row_loss;
    }

    mlp_forward(m, m->xn, rows);
    int last = m->n_linear - 1;
    double loss = t->ops->mse_fwd_bwd(
        t->ctx, rows, c->n_outputs, m->a[last], yd, t->out_mean_d, t->out_inv_d,
        t->out_n > 1, wd, m->a[last], m->lin[last].db, rl);
    if (row_loss != NULL && rl != row_loss) {
        rc = t->ops->download(t->ctx, row_loss, rl, (size_t)rows);
        if (rc != 0) {
            return rc;
        }
    }
    if (!isfinite(loss)) {
        SURGE_LOG(SURGE_LOG_WARN, COMPONENT,
                  "step %llu: loss is not finite; update skipped",
                  (unsigned long long)t->step + 1);
        return SURGE_ESTATE;
    }
    double lr = trainer_lr_at(c, t->step);
    double tt = (double)(t->step + 1);
    struct surge_opt_step s = {
        .kind = c->optimizer,
        .lr = (float)lr,
        .beta1 = (float)c->beta1,
        .beta2 = (float)c->beta2,
        .eps = (float)c->eps,
        .weight_decay = (float)c->weight_decay,
        .momentum = (float)c->momentum,
        .step_size = (float)(lr / (1.0 - pow(c->beta1, tt))),
        .inv_bc2_sqrt = (float)(1.0 / sqrt(1.0 - pow(c->beta2, tt))),
        .decay = (float)(1.0 - lr * c->weight_decay),
        .grad_scale = 1.0f,
        .first = t->step == 0,
    };
    double norm;
    if (c->grad_clip > 0.0) {
        /* The clip factor needs every gradient first: backward, one read
         * pass for the norm, then one update pass over all parameters. */
        mlp_backward(m, m->xn, rows, NULL, NULL);
        norm = sqrt(t->ops->sumsq(t->ctx, m->grads, m->n_params));
        if (!isfinite(norm)) {
            SURGE_LOG(SURGE_LOG_WARN, COMPONENT,
                      "step %llu: gradient norm is not finite; update "
                      "skipped",
                      (unsigned long long)t->step + 1);
            return SURGE_ESTATE;
        }
        if (norm > c->grad_clip) {
            s.grad_scale = (float)(c->grad_clip / norm);
        }
        (void)t->ops->opt_update(t->ctx, &s, m->params, m->grads, t->opt_m,
                                 t->opt_v, m->n_params);
    } else {
        /* Without clipping each layer is updated as soon as its gradient
         * is final, while gradient and weights are still in cache. */
        struct layer_update lu = {t, &s, 0.0};
        mlp_backward(m, m->xn, rows, update_layer, &lu);
        norm = sqrt(lu.sumsq);
    }
    t->step++;
    if (info != NULL) {
        info->loss = loss;
        info->grad_norm = norm;
        info->lr = lr;
        info->step = t->step;
    }
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
    double count = (double)rows * (double)nout;
    out->mse = se_n / count;
    out->mse_phys = se / count;
    out->rel_l2 = yy > 0.0 ? sqrt(se / yy) : (se > 0.0 ? INFINITY : 0.0);
    out->rel_l2_mean = rel_rows > 0 ? rel_sum / (double)rel_rows : 0.0;
    out->rows = rows;
    return 0;
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
