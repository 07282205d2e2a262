/*
 * trainer/mlp.c - the MLP's memory layout, initialisation, and forward and
 * backward passes, written once against the backend ops table.
 *
 * A step is: linear k forward = one sgemm (B, in) x (in, out)^T into z, then
 * one fused pass adding the bias and applying the activation (in place for
 * relu and tanh, whose derivatives come from the output; gelu keeps z).
 * Backward per layer: the activation derivative fused with the bias
 * gradient (one pass), dW = dz^T x in (one sgemm), din = dz x W (one sgemm,
 * skipped for the first layer: nobody needs dL/dx).
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "trainer/mlp.h"

/* Workspace pieces start on 64-byte boundaries. */
#define ALIGN_FLOATS 16

static size_t
round_up(size_t n)
{
    return (n + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
}

size_t
mlp_count_params(int n_inputs, int n_outputs, int n_hidden, const int *hidden)
{
    size_t total = 0;
    int in = n_inputs;
    for (int k = 0; k <= n_hidden; k++) {
        int out = k < n_hidden ? hidden[k] : n_outputs;
        if (in <= 0 || out <= 0 || in > SURGE_TRAINER_MAX_WIDTH ||
            out > SURGE_TRAINER_MAX_WIDTH) {
            return 0;
        }
        total += (size_t)out * (size_t)in + (size_t)out;
        if (total > (size_t)SURGE_TRAINER_MAX_PARAMS) {
            return 0;
        }
        in = out;
    }
    return total;
}

void
mlp_fini(struct mlp *m)
{
    if (m->ops != NULL) {
        m->ops->free(m->ctx, m->ws, m->ws_floats * sizeof(float));
        m->ops->free(m->ctx, m->grads, m->n_params * sizeof(float));
        m->ops->free(m->ctx, m->params, m->n_params * sizeof(float));
    }
    memset(m, 0, sizeof *m);
}

int
mlp_init(struct mlp *m, const struct surge_backend_ops *ops, void *ctx,
         int n_inputs, int n_outputs, int n_hidden, const int *hidden, int act,
         int batch)
{
    memset(m, 0, sizeof *m);
    if (n_hidden < 0 || n_hidden > SURGE_TRAINER_MAX_LAYERS || batch < 1 ||
        batch > SURGE_TRAINER_MAX_BATCH) {
        return -EINVAL;
    }
    size_t n_params = mlp_count_params(n_inputs, n_outputs, n_hidden, hidden);
    if (n_params == 0) {
        return -EINVAL;
    }
    m->ops = ops;
    m->ctx = ctx;
    m->n_linear = n_hidden + 1;
    m->act = act;
    m->batch = batch;
    m->n_params = n_params;
    m->width[0] = n_inputs;
    for (int k = 0; k < n_hidden; k++) {
        m->width[k + 1] = hidden[k];
    }
    m->width[m->n_linear] = n_outputs;

    m->params = ops->alloc(ctx, n_params * sizeof(float));
    m->grads = ops->alloc(ctx, n_params * sizeof(float));
    if (m->params == NULL || m->grads == NULL) {
        goto fail;
    }
    size_t off = 0;
    for (int k = 0; k < m->n_linear; k++) {
        struct mlp_linear *l = &m->lin[k];
        l->in = m->width[k];
        l->out = m->width[k + 1];
        l->offset = off;
        l->w = m->params + off;
        l->dw = m->grads + off;
        off += (size_t)l->out * (size_t)l->in;
        l->b = m->params + off;
        l->db = m->grads + off;
        off += (size_t)l->out;
    }

    /* Carve the workspace: first count, then allocate once, then assign. */
    size_t b = (size_t)batch;
    int max_hidden = 1;
    for (int k = 1; k < m->n_linear; k++) {
        if (m->width[k] > max_hidden) {
            max_hidden = m->width[k];
        }
    }
    size_t total = round_up(b * (size_t)n_inputs);
    for (int k = 0; k < m->n_linear; k++) {
        total += round_up(b * (size_t)m->width[k + 1]);
        if (act == SURGE_ACT_GELU && k < m->n_linear - 1) {
            total += round_up(b * (size_t)m->width[k + 1]);
        }
    }
    total += 2 * round_up(b * (size_t)max_hidden);
    total += round_up(b * (size_t)n_outputs);
    if (!ops->unified) {
        total += round_up(b * (size_t)n_inputs);
        total += round_up(b * (size_t)n_outputs);
    }
    total += 2 * round_up(b);
    m->ws = ops->alloc(ctx, total * sizeof(float));
    m->ws_floats = total;
    if (m->ws == NULL) {
        goto fail;
    }
    float *p = m->ws;
    m->xn = p;
    p += round_up(b * (size_t)n_inputs);
    for (int k = 0; k < m->n_linear; k++) {
        m->a[k] = p;
        p += round_up(b * (size_t)m->width[k + 1]);
        if (act == SURGE_ACT_GELU && k < m->n_linear - 1) {
            m->z[k] = p;
            p += round_up(b * (size_t)m->width[k + 1]);
        }
    }
    for (int i = 0; i < 2; i++) {
        m->d[i] = p;
        p += round_up(b * (size_t)max_hidden);
    }
    m->out_phys = p;
    p += round_up(b * (size_t)n_outputs);
    if (!ops->unified) {
        m->stage_x = p;
        p += round_up(b * (size_t)n_inputs);
        m->stage_y = p;
        p += round_up(b * (size_t)n_outputs);
    }
    m->stage_w = p;
    p += round_up(b);
    m->row_loss = p;
    return 0;

fail:
    mlp_fini(m);
    return -ENOMEM;
}

uint64_t
mlp_rand_next(uint64_t *state)
{
    return surge_splitmix64(state);
}

float
mlp_rand_sym(uint64_t *state)
{
    /* 24 bits: every value exactly representable; [-1, 1). */
    uint64_t r = mlp_rand_next(state) >> 40;
    return (float)r * (2.0f / 16777216.0f) - 1.0f;
}

int
mlp_init_weights(struct mlp *m, uint64_t seed, float *host_tmp)
{
    float *h = m->ops->unified ? m->params : host_tmp;
    if (h == NULL) {
        return -EINVAL;
    }
    uint64_t state = seed;
    for (int k = 0; k < m->n_linear; k++) {
        struct mlp_linear *l = &m->lin[k];
        int relu_next = k < m->n_linear - 1 && m->act == SURGE_ACT_RELU;
        /* He uniform (variance 2 / fan_in) before ReLU, LeCun uniform
         * (variance 1 / fan_in) otherwise: U(-a, a) has variance a^2 / 3. */
        float bound = (float)sqrt((relu_next ? 6.0 : 3.0) / (double)l->in);
        float *w = h + l->offset;
        size_t n = (size_t)l->out * (size_t)l->in;
        for (size_t i = 0; i < n; i++) {
            w[i] = bound * mlp_rand_sym(&state);
        }
        memset(w + n, 0, (size_t)l->out * sizeof(float));
    }
    if (!m->ops->unified) {
        return m->ops->upload(m->ctx, m->params, host_tmp, m->n_params);
    }
    return 0;
}

void
mlp_linear_forward(struct mlp *m, int k, const float *in, int rows, float *z)
{
    const struct mlp_linear *l = &m->lin[k];
    /* z (B, out) = in (B, in) x W^T, W (out, in). */
    m->ops->gemm(m->ctx, 0, 1, rows, l->out, l->in, 1.0f, in, l->in, l->w,
                 l->in, 0.0f, z, l->out);
}

void
mlp_linear_backward(struct mlp *m, int k, const float *in, const float *dz,
                    int rows, float *din)
{
    const struct mlp_linear *l = &m->lin[k];
    /* dW (out, in) = dz^T (out, B) x in (B, in). */
    m->ops->gemm(m->ctx, 1, 0, l->out, l->in, rows, 1.0f, dz, l->out, in, l->in,
                 0.0f, l->dw, l->in);
    if (din != NULL) {
        /* din (B, in) = dz (B, out) x W (out, in). */
        m->ops->gemm(m->ctx, 0, 0, rows, l->in, l->out, 1.0f, dz, l->out, l->w,
                     l->in, 0.0f, din, l->in);
    }
}

void
mlp_forward(struct mlp *m, const float *xn, int rows)
{
    const float *in = xn;
    int last = m->n_linear - 1;
    for (int k = 0; k <= last; k++) {
        int act = k == last ? SURGE_ACT_NONE : m->act;
        float *z = m->z[k] != NULL ? m->z[k] : m->a[k];
        const struct mlp_linear *l = &m->lin[k];
        if (m->ops->linear_fwd != NULL) {
            /* The backend fuses product, bias and activation. */
            m->ops->linear_fwd(m->ctx, act, rows, l->out, l->in, in, l->w, l->b,
                               z, m->a[k]);
        } else {
            mlp_linear_forward(m, k, in, rows, z);
            m->ops->bias_act_fwd(m->ctx, act, rows, l->out, l->b, z, m->a[k]);
        }
        in = m->a[k];
    }
}

void
mlp_backward(struct mlp *m, const float *xn, int rows, mlp_layer_cb done,
             void *arg)
{
    int last = m->n_linear - 1;
    const float *dz = m->a[last];
    for (int k = last; k >= 0; k--) {
        const float *in = k > 0 ? m->a[k - 1] : xn;
        float *din = k > 0 ? m->d[k & 1] : NULL;
        mlp_linear_backward(m, k, in, dz, rows, din);
        /* dW_k is final; db_k was final before this iteration (the loss op
         * or the previous act_bwd); W_k was last read by the din product. */
        if (done != NULL) {
            done(arg, k);
        }
        if (k > 0) {
            /* din holds dL/da[k-1]; turn it into dL/dz[k-1] and db[k-1]. */
            m->ops->act_bwd(m->ctx, m->act, rows, m->lin[k - 1].out,
                            m->z[k - 1], m->a[k - 1], din, m->lin[k - 1].db);
            dz = din;
        }
    }
}
