/*
 * tests/unit/trainer/test_gradients.c - every gradient the trainer computes,
 * checked against central finite differences of an independent
 * double-precision reference.
 *
 * Method: the float ops of the cpu backend compute a value and its
 * gradient; this file recomputes the value with naive double loops and
 * differentiates it numerically (central differences, h = 1e-6, truncation
 * error ~1e-12, far below float rounding). Tolerances (stated, per entry):
 *   forward values : |float - double| <= 1e-5 + 1e-5 |double|
 *   gradients      : |analytic - numeric| <= 1e-5 + 1e-4 |numeric|
 *                    (layers, activations, loss);
 *                    1e-4 + 2e-3 |numeric| for the whole network, where
 *                    float rounding accumulates through four products.
 * ReLU inputs are kept at |z| >= 0.05 from its kink, where the derivative
 * does not exist. Fixed seeds throughout.
 */
#include "config.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "trainer/backend.h"
#include "trainer/mlp.h"

#define H 1e-6

static const struct surge_backend_ops *ops = &surge_backend_cpu;

static void
fill(float *v, size_t n, uint64_t *state, float scale)
{
    for (size_t i = 0; i < n; i++) {
        v[i] = scale * mlp_rand_sym(state);
    }
}

/* Keep values away from ReLU's kink at 0. */
static void
fill_away_from_zero(float *v, size_t n, uint64_t *state)
{
    for (size_t i = 0; i < n; i++) {
        float x = mlp_rand_sym(state);
        v[i] = x >= 0.0f ? 0.05f + x : -0.05f + x;
    }
}

static void
check_close(const char *what, size_t i, double have, double want, double atol,
            double rtol)
{
    double tol = atol + rtol * fabs(want);
    if (!(fabs(have - want) <= tol)) {
        fail_msg("%s[%zu]: %.9g, reference %.9g (tolerance %.3g)", what, i,
                 have, want, tol);
    }
}

/* ---- reference functions in double ---- */

static double
ref_act(int act, double x)
{
    switch (act) {
    case SURGE_ACT_RELU:
        return x > 0.0 ? x : 0.0;
    case SURGE_ACT_TANH:
        return tanh(x);
    case SURGE_ACT_GELU:
        return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    default:
        return x;
    }
}

/* ---- linear layer ---- */

/* L = sum_ij c_ij (x W^T + b)_ij, all in double. */
static double
ref_linear_loss(int b, int in, int out, const double *x, const double *w,
                const double *bias, const double *c)
{
    double l = 0.0;
    for (int r = 0; r < b; r++) {
        for (int o = 0; o < out; o++) {
            double y = bias[o];
            for (int i = 0; i < in; i++) {
                y += x[r * in + i] * w[o * in + i];
            }
            l += c[r * out + o] * y;
        }
    }
    return l;
}

static void
to_double(double *d, const float *f, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        d[i] = f[i];
    }
}

static void
test_linear_layer(void **state)
{
    (void)state;
    enum { B = 3, IN = 5, OUT = 4 };
    struct mlp m;
    void *ctx = NULL;
    uint64_t rs = 1;
    int hidden[1] = {OUT};
    assert_int_equal(ops->create(1, SURGE_PRECISION_FP32, &ctx, NULL, 0), 0);
    /* IN -> OUT -> 2: only linear layer 0 is checked here. */
    assert_int_equal(
        mlp_init(&m, ops, ctx, IN, 2, 1, hidden, SURGE_ACT_RELU, B), 0);
    struct mlp_linear *l = &m.lin[0];
    float x[B * IN], y[B * OUT], c[B * OUT], din[B * IN];
    fill(x, B * IN, &rs, 1.0f);
    fill(l->w, (size_t)OUT * IN, &rs, 0.5f);
    fill(l->b, OUT, &rs, 0.5f);
    fill(c, B * OUT, &rs, 1.0f);

    mlp_linear_forward(&m, 0, x, B, y);
    ops->bias_act_fwd(ctx, SURGE_ACT_NONE, B, OUT, l->b, y, y);
    double xd[B * IN], wd[OUT * IN], bd[OUT], cd[B * OUT];
    to_double(xd, x, B * IN);
    to_double(wd, l->w, OUT * IN);
    to_double(bd, l->b, OUT);
    to_double(cd, c, B * OUT);
    for (int r = 0; r < B; r++) {
        for (int o = 0; o < OUT; o++) {
            double want = bd[o];
            for (int i = 0; i < IN; i++) {
                want += xd[r * IN + i] * wd[o * IN + i];
            }
            check_close("linear forward", (size_t)(r * OUT + o), y[r * OUT + o],
                        want, 1e-5, 1e-5);
        }
    }

    /* Backward with dL/dy = c: db from the NONE activation pass. */
    float dz[B * OUT];
    memcpy(dz, c, sizeof dz);
    ops->act_bwd(ctx, SURGE_ACT_NONE, B, OUT, NULL, NULL, dz, l->db);
    mlp_linear_backward(&m, 0, x, dz, B, din);

    for (int i = 0; i < OUT * IN; i++) {
        double s = wd[i];
        wd[i] = s + H;
        double lp = ref_linear_loss(B, IN, OUT, xd, wd, bd, cd);
        wd[i] = s - H;
        double lm = ref_linear_loss(B, IN, OUT, xd, wd, bd, cd);
        wd[i] = s;
        check_close("dW", (size_t)i, l->dw[i], (lp - lm) / (2 * H), 1e-5, 1e-4);
    }
    for (int o = 0; o < OUT; o++) {
        double s = bd[o];
        bd[o] = s + H;
        double lp = ref_linear_loss(B, IN, OUT, xd, wd, bd, cd);
        bd[o] = s - H;
        double lm = ref_linear_loss(B, IN, OUT, xd, wd, bd, cd);
        bd[o] = s;
        check_close("db", (size_t)o, l->db[o], (lp - lm) / (2 * H), 1e-5, 1e-4);
    }
    for (int i = 0; i < B * IN; i++) {
        double s = xd[i];
        xd[i] = s + H;
        double lp = ref_linear_loss(B, IN, OUT, xd, wd, bd, cd);
        xd[i] = s - H;
        double lm = ref_linear_loss(B, IN, OUT, xd, wd, bd, cd);
        xd[i] = s;
        check_close("dx", (size_t)i, din[i], (lp - lm) / (2 * H), 1e-5, 1e-4);
    }
    mlp_fini(&m);
    ops->destroy(ctx);
}

/* ---- activations (fused with the bias) ---- */

static double
ref_act_loss(int act, int b, int n, const double *z, const double *bias,
             const double *c)
{
    double l = 0.0;
    for (int r = 0; r < b; r++) {
        for (int j = 0; j < n; j++) {
            l += c[r * n + j] * ref_act(act, z[r * n + j] + bias[j]);
        }
    }
    return l;
}

static void
check_activation(int act)
{
    enum { B = 4, N = 37 }; /* N not a multiple of the vector width */
    void *ctx = NULL;
    uint64_t rs = 7 + (uint64_t)act;
    assert_int_equal(ops->create(1, SURGE_PRECISION_FP32, &ctx, NULL, 0), 0);
    float z[B * N], zkeep[B * N], a[B * N], bias[N], c[B * N], d[B * N], db[N];
    /* Pre-activations spread over [-3, 3], kept off ReLU's kink after the
     * bias is added (the bias is applied to z first, then checked). */
    fill(bias, N, &rs, 0.5f);
    fill_away_from_zero(z, B * N, &rs);
    for (int i = 0; i < B * N; i++) {
        z[i] = 2.5f * z[i] - bias[i % N];
    }
    fill(c, B * N, &rs, 1.0f);
    double zd[B * N], bd[N], cd[B * N];
    to_double(zd, z, B * N);
    to_double(bd, bias, N);
    to_double(cd, c, B * N);
    memcpy(zkeep, z, sizeof z);

    /* relu/tanh run in place (a == z); gelu keeps z. */
    float *out = act == SURGE_ACT_GELU ? a : z;
    ops->bias_act_fwd(ctx, act, B, N, bias, z, out);
    for (int i = 0; i < B * N; i++) {
        check_close(act == SURGE_ACT_GELU   ? "gelu forward"
                    : act == SURGE_ACT_TANH ? "tanh forward"
                                            : "relu forward",
                    (size_t)i, out[i], ref_act(act, zd[i] + bd[i % N]), 1e-5,
                    1e-5);
    }
    memcpy(d, c, sizeof d);
    ops->act_bwd(ctx, act, B, N, act == SURGE_ACT_GELU ? z : NULL,
                 act == SURGE_ACT_GELU ? NULL : out, d, db);
    for (int i = 0; i < B * N; i++) {
        double s = zd[i];
        zd[i] = s + H;
        double lp = ref_act_loss(act, B, N, zd, bd, cd);
        zd[i] = s - H;
        double lm = ref_act_loss(act, B, N, zd, bd, cd);
        zd[i] = s;
        check_close("dz", (size_t)i, d[i], (lp - lm) / (2 * H), 1e-5, 1e-4);
    }
    for (int j = 0; j < N; j++) {
        double s = bd[j];
        bd[j] = s + H;
        double lp = ref_act_loss(act, B, N, zd, bd, cd);
        bd[j] = s - H;
        double lm = ref_act_loss(act, B, N, zd, bd, cd);
        bd[j] = s;
        check_close("db", (size_t)j, db[j], (lp - lm) / (2 * H), 1e-5, 1e-4);
    }
    (void)zkeep;
    ops->destroy(ctx);
}

static void
test_relu(void **state)
{
    (void)state;
    check_activation(SURGE_ACT_RELU);
}

static void
test_gelu(void **state)
{
    (void)state;
    check_activation(SURGE_ACT_GELU);
}

static void
test_tanh(void **state)
{
    (void)state;
    check_activation(SURGE_ACT_TANH);
}

/* ---- the loss ---- */

static double
ref_mse(int b, int n, const double *pred, const double *target,
        const double *shift, const double *scale, int per_col, const double *w,
        double *row_loss)
{
    double total = 0.0;
    for (int r = 0; r < b; r++) {
        double s = 0.0;
        for (int j = 0; j < n; j++) {
            int k = per_col ? j : 0;
            double e =
                pred[r * n + j] - (target[r * n + j] - shift[k]) * scale[k];
            s += e * e;
        }
        if (row_loss != NULL) {
            row_loss[r] = s / n;
        }
        total += (w != NULL ? w[r] : 1.0) * s / n;
    }
    return total / b;
}

static void
check_loss(int per_col, int weighted)
{
    enum { B = 5, N = 19 };
    void *ctx = NULL;
    uint64_t rs = 11 + (uint64_t)(2 * per_col + weighted);
    assert_int_equal(ops->create(1, SURGE_PRECISION_FP32, &ctx, NULL, 0), 0);
    float pred[B * N], target[B * N], shift[N], scale[N], w[B], d[B * N], db[N],
        rl[B];
    fill(pred, B * N, &rs, 1.0f);
    fill(target, B * N, &rs, 3.0f);
    fill(shift, N, &rs, 1.0f);
    for (int j = 0; j < N; j++) {
        scale[j] = 0.5f + 0.25f * (mlp_rand_sym(&rs) + 1.0f);
    }
    for (int r = 0; r < B; r++) {
        w[r] = 0.5f + (mlp_rand_sym(&rs) + 1.0f);
    }
    double pd[B * N], td[B * N], sd[N], kd[N], wd[B], rld[B];
    to_double(pd, pred, B * N);
    to_double(td, target, B * N);
    to_double(sd, shift, N);
    to_double(kd, scale, N);
    to_double(wd, w, B);
    const double *wp = weighted ? wd : NULL;

    double loss = 0.0;
    ops->mse_fwd_bwd(ctx, B, N, pred, target, shift, scale, per_col,
                     weighted ? w : NULL, d, db, rl, &loss);
    double want = ref_mse(B, N, pd, td, sd, kd, per_col, wp, rld);
    check_close("loss", 0, loss, want, 1e-6, 1e-5);
    for (int r = 0; r < B; r++) {
        check_close("row_loss", (size_t)r, rl[r], rld[r], 1e-6, 1e-5);
    }
    for (int i = 0; i < B * N; i++) {
        double s = pd[i];
        pd[i] = s + H;
        double lp = ref_mse(B, N, pd, td, sd, kd, per_col, wp, NULL);
        pd[i] = s - H;
        double lm = ref_mse(B, N, pd, td, sd, kd, per_col, wp, NULL);
        pd[i] = s;
        check_close("dpred", (size_t)i, d[i], (lp - lm) / (2 * H), 1e-6, 1e-4);
    }
    /* The output layer's bias adds to pred: its gradient is the column
     * sum of dpred. */
    for (int j = 0; j < N; j++) {
        for (int r = 0; r < B; r++) {
            pd[r * N + j] += H;
        }
        double lp = ref_mse(B, N, pd, td, sd, kd, per_col, wp, NULL);
        for (int r = 0; r < B; r++) {
            pd[r * N + j] -= 2 * H;
        }
        double lm = ref_mse(B, N, pd, td, sd, kd, per_col, wp, NULL);
        for (int r = 0; r < B; r++) {
            pd[r * N + j] += H;
        }
        check_close("db(out)", (size_t)j, db[j], (lp - lm) / (2 * H), 1e-6,
                    1e-4);
    }
    ops->destroy(ctx);
}

static void
test_loss_global(void **state)
{
    (void)state;
    check_loss(0, 0);
}

static void
test_loss_per_element_weighted(void **state)
{
    (void)state;
    check_loss(1, 1);
}

/* ---- the whole network, every parameter ---- */

struct refnet {
    const struct mlp *m;
    int act;
    int rows;
    const double *x; /* (rows, width[0]) */
    const double *t; /* (rows, n_out) normalised targets */
    double *p;       /* (n_params) */
    double *buf[2];  /* (rows, max width) */
};

static double
ref_net_loss(const struct refnet *r)
{
    const struct mlp *m = r->m;
    const double *in = r->x;
    double *out = NULL;
    for (int k = 0; k < m->n_linear; k++) {
        const struct mlp_linear *l = &m->lin[k];
        const double *w = r->p + l->offset;
        const double *b = w + (size_t)l->out * l->in;
        out = r->buf[k & 1];
        for (int i = 0; i < r->rows; i++) {
            for (int o = 0; o < l->out; o++) {
                double y = b[o];
                for (int j = 0; j < l->in; j++) {
                    y += in[i * l->in + j] * w[o * l->in + j];
                }
                out[i * l->out + o] =
                    k < m->n_linear - 1 ? ref_act(r->act, y) : y;
            }
        }
        in = out;
    }
    int n = m->width[m->n_linear];
    double total = 0.0;
    for (int i = 0; i < r->rows * n; i++) {
        double e = out[i] - r->t[i];
        total += e * e;
    }
    return total / ((double)r->rows * n);
}

static void
check_network(int act)
{
    enum { B = 4, IN = 3, OUT = 2 };
    int hidden[2] = {6, 5};
    struct mlp m;
    void *ctx = NULL;
    uint64_t rs = 101 + (uint64_t)act;
    assert_int_equal(ops->create(1, SURGE_PRECISION_FP32, &ctx, NULL, 0), 0);
    assert_int_equal(mlp_init(&m, ops, ctx, IN, OUT, 2, hidden, act, B), 0);
    assert_int_equal(mlp_init_weights(&m, 5, NULL), 0);
    /* Random biases too, so no pre-activation sits exactly at 0. */
    for (int k = 0; k < m.n_linear; k++) {
        fill(m.lin[k].b, (size_t)m.lin[k].out, &rs, 0.3f);
    }
    float x[B * IN], t[B * OUT], zero = 0.0f, one = 1.0f;
    fill(x, B * IN, &rs, 1.0f);
    fill(t, B * OUT, &rs, 1.0f);
    memcpy(m.xn, x, sizeof x);
    mlp_forward(&m, m.xn, B);
    float *outp = m.a[m.n_linear - 1];
    double loss = 0.0;
    ops->mse_fwd_bwd(ctx, B, OUT, outp, t, &zero, &one, 0, NULL, outp,
                     m.lin[m.n_linear - 1].db, NULL, &loss);
    mlp_backward(&m, m.xn, B, NULL, NULL);

    double xd[B * IN], td[B * OUT], b0[B * 8], b1[B * 8];
    double *p = malloc(m.n_params * sizeof *p);
    assert_non_null(p);
    to_double(xd, x, B * IN);
    to_double(td, t, B * OUT);
    to_double(p, m.params, m.n_params);
    struct refnet r = {&m, act, B, xd, td, p, {b0, b1}};
    check_close("network loss", 0, loss, ref_net_loss(&r), 1e-6, 1e-5);
    for (size_t i = 0; i < m.n_params; i++) {
        double s = p[i];
        p[i] = s + H;
        double lp = ref_net_loss(&r);
        p[i] = s - H;
        double lm = ref_net_loss(&r);
        p[i] = s;
        check_close("network grad", i, m.grads[i], (lp - lm) / (2 * H), 1e-4,
                    2e-3);
    }
    free(p);
    mlp_fini(&m);
    ops->destroy(ctx);
}

static void
test_network_relu(void **state)
{
    (void)state;
    check_network(SURGE_ACT_RELU);
}

static void
test_network_gelu(void **state)
{
    (void)state;
    check_network(SURGE_ACT_GELU);
}

static void
test_network_tanh(void **state)
{
    (void)state;
    check_network(SURGE_ACT_TANH);
}

/* The fan-in initialisation: bounds and spread per layer (trainer.h). */
static void
test_init_fan_in(void **state)
{
    (void)state;
    int hidden[2] = {256, 128};
    for (int act = 0; act < 3; act++) {
        struct mlp m;
        void *ctx = NULL;
        assert_int_equal(ops->create(1, SURGE_PRECISION_FP32, &ctx, NULL, 0),
                         0);
        assert_int_equal(mlp_init(&m, ops, ctx, 64, 32, 2, hidden, act, 1), 0);
        assert_int_equal(mlp_init_weights(&m, 3, NULL), 0);
        for (int k = 0; k < m.n_linear; k++) {
            const struct mlp_linear *l = &m.lin[k];
            int relu = act == SURGE_ACT_RELU && k < m.n_linear - 1;
            double bound = sqrt((relu ? 6.0 : 3.0) / l->in);
            double var = 0.0, maxabs = 0.0;
            size_t n = (size_t)l->out * l->in;
            for (size_t i = 0; i < n; i++) {
                var += (double)l->w[i] * l->w[i];
                maxabs = fmax(maxabs, fabs(l->w[i]));
            }
            var /= (double)n;
            assert_true(maxabs <= bound);
            /* Variance bound^2 / 3 within 5% (n >= 4096 draws). */
            check_close("init variance", (size_t)k, var, bound * bound / 3.0,
                        0.0, 0.05);
            for (int o = 0; o < l->out; o++) {
                assert_true(l->b[o] == 0.0f);
            }
        }
        mlp_fini(&m);
        ops->destroy(ctx);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear_layer),
        cmocka_unit_test(test_relu),
        cmocka_unit_test(test_gelu),
        cmocka_unit_test(test_tanh),
        cmocka_unit_test(test_loss_global),
        cmocka_unit_test(test_loss_per_element_weighted),
        cmocka_unit_test(test_network_relu),
        cmocka_unit_test(test_network_gelu),
        cmocka_unit_test(test_network_tanh),
        cmocka_unit_test(test_init_fan_in),
    };
    return cmocka_run_group_tests_name("trainer gradients", tests, NULL, NULL);
}
