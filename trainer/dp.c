/*
 * trainer/dp.c - data-parallel steps: R replicas of one model, gradients
 * summed across them in buckets overlapped with the backward pass.
 *
 * DESIGN. A replicated step is the step of trainer.c with three changes.
 * (1) The loss is the mean over the global batch: the rows' weights are
 * scaled by rows / global_rows, so that the local loss op, which divides
 * by its own rows, yields this replica's share of the global mean and of
 * its gradient; the shares' sum is the global loss (one blocking sum of a
 * double, before the optimizer scalars that skip a non-finite step, so
 * every replica skips alike). (2) Backward calls layer_done after each
 * layer (the hook of mlp_backward, last layer first); whole layers gather
 * into a bucket until it holds bucket_floats, and a full bucket's sum
 * starts at once (ops->grad_start) while backward goes on with the layers
 * below: the network time of a bucket hides behind the compute of the
 * next, as PyTorch DDP's buckets do. (3) The update waits for each bucket
 * in the order they started and then updates that bucket's layers (or,
 * with clipping, waits for all, takes the norm of the summed gradient and
 * updates everything). Every replica applies the same summed gradient
 * with the same scalars, so the weights stay identical.
 *
 * A replica with no rows (zero-row batch: its shard is below its
 * watermark, or drained) takes part with a zero gradient and a zero loss
 * share: the others are never stalled by it.
 *
 * On a non-unified backend (cuda) each bucket is downloaded into a pinned
 * host buffer, summed there and uploaded back (host-staged): MPI needs no
 * CUDA awareness.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <surge/error.h>

#include "common/log.h"
#include "common/util.h"
#include "trainer/trainer_internal.h"

#define COMPONENT "trainer"
#define DEFAULT_BUCKET_BYTES (4u << 20)

void
trainer_dp_release(surge_trainer *t)
{
    if (t->grad_host != NULL) {
        t->ops->host_free(t->ctx, t->grad_host,
                          t->mlp.n_params * sizeof(float));
        t->grad_host = NULL;
    }
    free(t->w_host);
    t->w_host = NULL;
    t->rops = NULL;
    t->rarg = NULL;
}

int
surge_trainer_set_replicas(surge_trainer *t,
                           const struct surge_trainer_replicas_ops *ops,
                           void *arg, size_t bucket_bytes)
{
    trainer_dp_release(t);
    if (ops == NULL) {
        return 0;
    }
    if (ops->sum == NULL || ops->grad_start == NULL || ops->grad_wait == NULL) {
        return -EINVAL;
    }
    t->w_host = calloc((size_t)t->cfg.batch_size, sizeof(float));
    if (t->w_host == NULL) {
        return -ENOMEM;
    }
    if (!t->ops->unified) {
        t->grad_host =
            t->ops->host_alloc(t->ctx, t->mlp.n_params * sizeof(float));
        if (t->grad_host == NULL) {
            trainer_dp_release(t);
            return -ENOMEM;
        }
    }
    if (bucket_bytes == 0) {
        bucket_bytes = DEFAULT_BUCKET_BYTES;
    }
    t->bucket_floats = bucket_bytes / sizeof(float);
    if (t->bucket_floats == 0) {
        t->bucket_floats = 1;
    }
    t->rops = ops;
    t->rarg = arg;
    memset(&t->dp, 0, sizeof t->dp);
    return 0;
}

void
surge_trainer_dp_get_stats(const surge_trainer *t,
                           struct surge_trainer_dp_stats *out)
{
    *out = t->dp;
}

/* The buckets of one step: layers hi..lo (hi >= lo), started in order. */
struct bucket {
    int hi, lo;
};

struct dp_step {
    surge_trainer *t;
    int zero;      /* zero-row batch: gradients are zero, nothing to read */
    int open_hi;   /* first layer of the bucket being filled, -1 none */
    size_t open_n; /* its floats so far */
    int nb;        /* buckets started */
    int waited;    /* buckets waited for */
    int rc;        /* first failure */
    struct bucket b[MLP_MAX_LINEAR];
};

static size_t
layer_floats(const struct mlp_linear *l)
{
    return (size_t)l->out * (size_t)l->in + (size_t)l->out;
}

/* The floats of bucket b: [offset of its lowest layer, end of its highest)
 * (layers lie in the flat vector in order, so a run of them is one range). */
static void
bucket_range(const struct mlp *m, const struct bucket *b, size_t *off,
             size_t *n)
{
    const struct mlp_linear *hi = &m->lin[b->hi];
    *off = m->lin[b->lo].offset;
    *n = hi->offset + layer_floats(hi) - *off;
}

/* The hook of mlp_backward: layer k's gradients are final. */
static void
layer_done(void *arg, int k)
{
    struct dp_step *s = arg;
    surge_trainer *t = s->t;
    struct mlp *m = &t->mlp;
    if (t->rops->progress != NULL && s->nb > s->waited) {
        t->rops->progress(t->rarg);
    }
    if (s->open_hi < 0) {
        s->open_hi = k;
        s->open_n = 0;
    }
    s->open_n += layer_floats(&m->lin[k]);
    if (s->open_n < t->bucket_floats && k > 0) {
        return;
    }
    struct bucket *b = &s->b[s->nb];
    b->hi = s->open_hi;
    b->lo = k;
    s->open_hi = -1;
    size_t off, n;
    bucket_range(m, b, &off, &n);
    float *buf = m->grads + off;
    int rc = 0;
    if (!t->ops->unified) {
        buf = t->grad_host + off;
        if (s->zero) {
            memset(buf, 0, n * sizeof *buf);
        } else {
            /* Waits for this layer's backward only: the layers below are
             * queued after this call returns. */
            rc = t->ops->download(t->ctx, buf, m->grads + off, n);
        }
    }
    if (rc == 0) {
        rc = t->rops->grad_start(t->rarg, buf, n);
    }
    if (rc != 0) {
        if (s->rc == 0) {
            s->rc = rc;
        }
        return;
    }
    s->nb++;
    t->dp.buckets++;
}

/* Wait for the next bucket and, on a staged backend, upload its sum. */
static int
wait_bucket(struct dp_step *s, const struct bucket **out)
{
    surge_trainer *t = s->t;
    const struct bucket *b = &s->b[s->waited++];
    uint64_t t0 = surge_now_ns();
    int rc = t->rops->grad_wait(t->rarg);
    t->dp.exposed_s += (surge_now_ns() - t0) / 1e9;
    if (rc == 0 && !t->ops->unified) {
        size_t off, n;
        bucket_range(&t->mlp, b, &off, &n);
        rc = t->ops->upload(t->ctx, t->mlp.grads + off, t->grad_host + off, n);
    }
    *out = b;
    return rc;
}

/* The global loss: this replica's share, summed over the replicas, put
 * where the optimizer scalars read it. */
static int
sum_loss(surge_trainer *t, int zero)
{
    double v = 0.0;
    int rc = 0;
    if (!zero) {
        if (t->ops->unified) {
            v = t->st_d->loss;
        } else {
            rc = t->ops->download(t->ctx, (float *)&v,
                                  (const float *)&t->st_d->loss,
                                  sizeof v / sizeof(float));
        }
    }
    uint64_t t0 = surge_now_ns();
    if (rc == 0) {
        rc = t->rops->sum(t->rarg, &v, 1);
    }
    t->dp.loss_sum_s += (surge_now_ns() - t0) / 1e9;
    if (rc != 0) {
        return -EIO;
    }
    if (t->ops->unified) {
        t->st_d->loss = v;
        return 0;
    }
    return t->ops->upload(t->ctx, (float *)&t->st_d->loss, (const float *)&v,
                          sizeof v / sizeof(float));
}

/* Forward and the loss of this replica's rows, weights scaled to the
 * global mean. */
static int
forward_local(surge_trainer *t, const float *x, const float *y,
              const float *weight, int rows, long global_rows, float **rl)
{
    const struct surge_backend_ops *ops = t->ops;
    struct mlp *m = &t->mlp;
    int last = m->n_linear - 1;
    float share = (float)((double)rows / (double)global_rows);
    for (int i = 0; i < rows; i++) {
        t->w_host[i] = (weight != NULL ? weight[i] : 1.0f) * share;
    }
    const float *xd = x, *yd = y;
    float *wd = m->stage_w;
    int rc = 0;
    if (ops->unified) {
        memcpy(wd, t->w_host, (size_t)rows * sizeof *wd);
    } else {
        size_t nx = (size_t)rows * (size_t)t->cfg.n_inputs;
        size_t ny = (size_t)rows * (size_t)t->cfg.n_outputs;
        rc = ops->upload(t->ctx, m->stage_x, x, nx);
        rc = rc ? rc : ops->upload(t->ctx, m->stage_y, y, ny);
        rc = rc ? rc : ops->upload(t->ctx, wd, t->w_host, (size_t)rows);
        xd = m->stage_x;
        yd = m->stage_y;
        *rl = *rl != NULL ? m->row_loss : NULL;
    }
    if (rc != 0) {
        return rc;
    }
    ops->affine(t->ctx, rows, t->cfg.n_inputs, xd, t->in_mean_d, t->in_scale_d,
                1, 0, m->xn);
    mlp_forward(m, m->xn, rows);
    ops->mse_fwd_bwd(t->ctx, rows, t->cfg.n_outputs, m->a[last], yd,
                     t->out_mean_d, t->out_inv_d, t->out_n > 1, wd, m->a[last],
                     m->lin[last].db, *rl, &t->st_d->loss);
    return 0;
}

int
surge_trainer_step_replicated(surge_trainer *t, const float *x, const float *y,
                              const float *weight, int rows, long global_rows,
                              float *row_loss,
                              struct surge_trainer_step_info *info)
{
    if (t->rops == NULL || rows < 0 || rows > t->cfg.batch_size ||
        global_rows < 1 || global_rows < rows ||
        (rows > 0 && (x == NULL || y == NULL))) {
        return -EINVAL;
    }
    if (!t->out_frozen) {
        /* Replicas must share the statistics: freezing here from this
         * replica's own batch would not (surge_trainer_replicas_freeze). */
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT,
                  "replicated step before the output statistics were "
                  "frozen on every replica");
        return -EINVAL;
    }
    const struct surge_backend_ops *ops = t->ops;
    struct mlp *m = &t->mlp;
    struct dp_step s;
    memset(&s, 0, sizeof s);
    s.t = t;
    s.zero = rows == 0;
    s.open_hi = -1;
    float *rl = row_loss;
    int rc = 0;
    if (rows > 0) {
        rc = forward_local(t, x, y, weight, rows, global_rows, &rl);
    } else if (ops->unified) {
        memset(m->grads, 0, m->n_params * sizeof(float));
    }
    /* The loss sum is a collective: every replica makes it, even after a
     * local failure, so that none waits forever for another. */
    if (rc != 0) {
        s.zero = 1; /* an upload failed: take part with zeros */
    }
    int lrc = sum_loss(t, s.zero);
    rc = rc ? rc : lrc;
    ops->opt_scalars(t->ctx, &t->opt, t->st_d, SURGE_OPT_BEGIN, t->rep_d);
    if (!s.zero) {
        mlp_backward(m, m->xn, rows, layer_done, &s);
    } else {
        for (int k = m->n_linear - 1; k >= 0; k--) {
            layer_done(&s, k);
        }
    }
    rc = rc ? rc : s.rc;
    const struct bucket *b;
    if (t->cfg.grad_clip > 0.0) {
        while (s.waited < s.nb) {
            int wrc = wait_bucket(&s, &b);
            rc = rc ? rc : wrc;
        }
        if (rc == 0) {
            ops->sumsq(t->ctx, m->grads, m->n_params, &t->st_d->sumsq);
            ops->opt_scalars(t->ctx, &t->opt, t->st_d, SURGE_OPT_CLIP,
                             t->rep_d);
            ops->opt_update(t->ctx, t->st_d, m->params, m->grads, t->opt_m,
                            t->opt_v, m->n_params, NULL);
        }
    } else {
        while (s.waited < s.nb) {
            int wrc = wait_bucket(&s, &b);
            rc = rc ? rc : wrc;
            for (int k = b->hi; rc == 0 && k >= b->lo; k--) {
                trainer_update_layer(t, k);
            }
        }
    }
    if (rc != 0) {
        /* Some replica's sum (or this backend) failed: the replicas can
         * no longer be trusted to agree. */
        return rc == -ENOMEM ? rc : -EIO;
    }
    ops->opt_scalars(t->ctx, &t->opt, t->st_d, SURGE_OPT_END, t->rep_d);
    if (row_loss != NULL && rows > 0 && !ops->unified) {
        rc = ops->download(t->ctx, row_loss, m->row_loss, (size_t)rows);
    }
    if (rc == 0) {
        rc = ops->sync(t->ctx);
    }
    if (rc != 0) {
        return trainer_backend_rc(t, rc);
    }
    t->dp.steps++;
    rc = trainer_read_report(t, info);
    return rc == 1 ? 0 : rc;
}

int
surge_trainer_replicas_freeze(surge_trainer *t)
{
    if (t->rops == NULL) {
        return -EINVAL;
    }
    int n = t->out_n;
    /* Exact merge of (count, mean, M2) over replicas (Chan et al.): the
     * global mean first, then every part's M2 plus its count times its
     * squared distance to that mean. */
    double per = t->cfg.out_norm == SURGE_OUTNORM_GLOBAL
                     ? (double)t->cfg.n_outputs
                     : 1.0;
    double *v = calloc((size_t)n + 1, sizeof *v);
    if (v == NULL) {
        return -ENOMEM;
    }
    double c = (double)t->out_seen * per;
    v[0] = (double)t->out_seen;
    for (int j = 0; j < n; j++) {
        v[1 + j] = c * t->acc_mean[j];
    }
    int rc = t->rops->sum(t->rarg, v, n + 1);
    if (rc == 0) {
        double total = v[0] * per;
        for (int j = 0; j < n; j++) {
            double g = total > 0 ? v[1 + j] / total : 0.0;
            double d = t->acc_mean[j] - g;
            v[1 + j] = t->acc_m2[j] + c * d * d;
            t->acc_mean[j] = g;
        }
        t->out_seen = (long)v[0];
        rc = t->rops->sum(t->rarg, v + 1, n);
    }
    if (rc == 0) {
        for (int j = 0; j < n; j++) {
            t->acc_m2[j] = v[1 + j] > 0 ? v[1 + j] : 0.0;
        }
        trainer_freeze_from_acc(t);
    }
    free(v);
    return rc != 0 ? -EIO : trainer_backend_rc(t, 0);
}

uint64_t
surge_trainer_params_hash(const surge_trainer *t)
{
    size_t n = t->mlp.n_params;
    const float *p = t->mlp.params;
    float *h = NULL;
    if (!t->ops->unified) {
        h = malloc(n * sizeof *h);
        if (h == NULL || surge_trainer_get_params(t, h, n) != 0) {
            free(h);
            return 0;
        }
        p = h;
    }
    uint64_t x = 0xcbf29ce484222325ull;
    const unsigned char *b = (const unsigned char *)p;
    for (size_t i = 0; i < n * sizeof(float); i++) {
        x ^= b[i];
        x *= 0x100000001b3ull;
    }
    free(h);
    return x;
}
