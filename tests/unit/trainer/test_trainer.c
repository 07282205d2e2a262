/*
 * tests/unit/trainer/test_trainer.c - the trainer through its public API:
 * optimizer steps against hand-computed values, schedules, normalisation,
 * fitting known functions, bit-identical determinism, checkpoint/resume,
 * the safetensors model file, and configuration errors naming the key.
 *
 * Fixed seeds; one BLAS thread (threads = 1) so every run is bit-identical.
 * Sizes are small: the whole binary runs in well under a second of CPU on
 * the shared 2-core machine.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <surge/error.h>

#include "trainer/mlp.h"
#include "trainer/trainer.h"
#include "trainer/trainer_internal.h"

static char tmpdir[256];

static int
setup_dir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/surge-test-trainer-XXXXXX");
    return mkdtemp(tmpdir) != NULL ? 0 : -1;
}

static int
remove_dir(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void
path_in(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", tmpdir, name);
}

static void
base_config(struct surge_trainer_config *c, int nin, int nout)
{
    surge_trainer_config_defaults(c);
    c->n_inputs = nin;
    c->n_outputs = nout;
    c->threads = 1;
}

static surge_trainer *
make(const struct surge_trainer_config *c)
{
    surge_trainer *t = NULL;
    char err[256];
    int rc = surge_trainer_create(c, &t, err, sizeof err);
    if (rc != 0) {
        fail_msg("create: %d %s", rc, err);
    }
    return t;
}

static void
assert_near(double have, double want, double tol)
{
    if (!(fabs(have - want) <= tol)) {
        fail_msg("%.9g, expected %.9g (tolerance %.3g)", have, want, tol);
    }
}

/* ---- one optimizer step, by hand ----
 * Model: 1 input, 1 output, no hidden layer: yhat = w x + b. Batch of one
 * row x = 1, y = 0, identity normalisation, so L = (w + b)^2 and
 * dL/dw = dL/db = 2 (w + b). Start at w = 0.5, b = 0: g = 1 for both. */
static surge_trainer *
tiny(int optimizer, double lr, double wd, double clip)
{
    struct surge_trainer_config c;
    base_config(&c, 1, 1);
    c.n_layers = 0;
    c.optimizer = optimizer;
    c.lr = lr;
    c.weight_decay = wd;
    c.grad_clip = clip;
    surge_trainer *t = make(&c);
    float mean = 0.0f, sd = 1.0f, p[2] = {0.5f, 0.0f};
    assert_int_equal(surge_trainer_set_output_norm(t, &mean, &sd, 1), 0);
    assert_int_equal(surge_trainer_set_params(t, p, 2), 0);
    return t;
}

/* One step on the row x = 1, y = 0 (reported in *info); then the weight
 * and the bias must be w and b within tol. */
static void
tiny_step(surge_trainer *t, struct surge_trainer_step_info *info, double w,
          double b, double tol)
{
    float x = 1.0f, y = 0.0f, p[2];
    assert_int_equal(surge_trainer_step(t, &x, &y, NULL, 1, NULL, info), 0);
    assert_int_equal(surge_trainer_get_params(t, p, 2), 0);
    assert_near(p[0], w, tol);
    assert_near(p[1], b, tol);
}

static void
test_adam_by_hand(void **state)
{
    (void)state;
    surge_trainer *t = tiny(SURGE_OPT_ADAM, 0.1, 0.0, 0.0);
    struct surge_trainer_step_info info;
    /* Step 1: m = 0.1 g, v = 0.001 g^2; bias-corrected m^ = g, v^ = g^2,
     * so p -= lr * g / (|g| + eps) = p - 0.1. */
    tiny_step(t, &info, 0.4, -0.1, 1e-6);
    assert_near(info.loss, 0.25, 1e-7);
    assert_near(info.grad_norm, sqrt(2.0), 1e-6);
    /* Step 2: g = 2 (0.4 - 0.1) = 0.6. m = 0.09 + 0.06 = 0.15,
     * m^ = 0.15 / 0.19 = 0.789474; v = 0.000999 + 0.00036 = 0.001359,
     * v^ = 0.001359 / 0.001999 = 0.679840, sqrt = 0.824524;
     * step = 0.1 * 0.789474 / 0.824524 = 0.0957491. */
    tiny_step(t, &info, 0.4 - 0.0957491, -0.1 - 0.0957491, 2e-6);
    assert_near(info.loss, 0.09, 1e-6); /* (0.4f - 0.1f)^2 in float */
    assert_int_equal(info.step, 2);
    surge_trainer_destroy(&t);
    assert_null(t);
}

static void
test_adamw_by_hand(void **state)
{
    (void)state;
    surge_trainer *t = tiny(SURGE_OPT_ADAMW, 0.1, 0.1, 0.0);
    struct surge_trainer_step_info info;
    /* Decoupled decay first: p *= 1 - 0.1 * 0.1 = 0.99 (w: 0.495), then
     * the Adam step of -0.1 (g = 1 from the undecayed weights). */
    tiny_step(t, &info, 0.495 - 0.1, -0.1, 1e-6);
    surge_trainer_destroy(&t);
}

static void
test_adam_l2_by_hand(void **state)
{
    (void)state;
    /* Adam's weight decay is L2 in the gradient: g_w = 1 + 0.5 * 0.5 =
     * 1.25, g_b = 1; the first step is still -lr * sign(g). The second
     * step tells it apart: w = 0.4, b = -0.1, g = 0.6 + 0.5 w = 0.8 for w,
     * 0.6 - 0.05 = 0.55 for b.
     *   w: m = 0.1125 + 0.08 = 0.1925, m^ = 1.013158; v = 0.00156094 +
     *      0.00064 = 0.00220094, v^ = 1.101021, sqrt 1.049296:
     *      step 0.0965561
     *   b: m = 0.09 + 0.055 = 0.145, m^ = 0.763158; v = 0.000999 +
     *      0.0003025 = 0.0013015, v^ = 0.651076, sqrt 0.806893:
     *      step 0.0945799 */
    surge_trainer *t = tiny(SURGE_OPT_ADAM, 0.1, 0.5, 0.0);
    struct surge_trainer_step_info info;
    tiny_step(t, &info, 0.4, -0.1, 1e-6);
    tiny_step(t, &info, 0.4 - 0.0965561, -0.1 - 0.0945799, 2e-6);
    surge_trainer_destroy(&t);
}

static void
test_sgd_momentum_by_hand(void **state)
{
    (void)state;
    surge_trainer *t = tiny(SURGE_OPT_SGD, 0.1, 0.0, 0.0);
    struct surge_trainer_step_info info;
    /* Step 1: buf = g = 1, p -= 0.1. Step 2: g = 0.6, buf = 0.9 + 0.6 =
     * 1.5, p -= 0.15. */
    tiny_step(t, &info, 0.4, -0.1, 1e-7);
    tiny_step(t, &info, 0.25, -0.25, 1e-7);
    surge_trainer_destroy(&t);
}

static void
test_clip_by_hand(void **state)
{
    (void)state;
    surge_trainer *t = tiny(SURGE_OPT_SGD, 0.1, 0.0, 0.5);
    struct surge_trainer_step_info info;
    /* |g| = sqrt 2 > 0.5: g scaled by 0.5 / sqrt 2 = 0.353553. */
    tiny_step(t, &info, 0.5 - 0.0353553, -0.0353553, 1e-6);
    assert_near(info.grad_norm, sqrt(2.0), 1e-6);
    surge_trainer_destroy(&t);
}

static void
test_schedules(void **state)
{
    (void)state;
    struct surge_trainer_config c;
    base_config(&c, 1, 1);
    c.lr = 1.0;
    assert_near(trainer_lr_at(&c, 0), 1.0, 0);
    assert_near(trainer_lr_at(&c, 12345), 1.0, 0);
    c.warmup_steps = 10;
    assert_near(trainer_lr_at(&c, 0), 0.1, 1e-15);
    assert_near(trainer_lr_at(&c, 9), 1.0, 1e-15);
    c.schedule = SURGE_SCHED_COSINE;
    c.total_steps = 110;
    c.min_lr = 0.0;
    assert_near(trainer_lr_at(&c, 10), 1.0, 1e-15);
    assert_near(trainer_lr_at(&c, 60), 0.5, 1e-15);
    assert_near(trainer_lr_at(&c, 110), 0.0, 1e-15);
    assert_near(trainer_lr_at(&c, 500), 0.0, 1e-15);
    c.min_lr = 0.2;
    assert_near(trainer_lr_at(&c, 60), 0.6, 1e-15);
    c.schedule = SURGE_SCHED_STEP;
    c.warmup_steps = 0;
    c.step_size = 100;
    c.gamma = 0.5;
    assert_near(trainer_lr_at(&c, 99), 1.0, 0);
    assert_near(trainer_lr_at(&c, 100), 0.5, 0);
    assert_near(trainer_lr_at(&c, 250), 0.25, 0);
    /* The step reports the rate it used. */
    surge_trainer *t = tiny(SURGE_OPT_SGD, 0.1, 0.0, 0.0);
    struct surge_trainer_step_info info;
    tiny_step(t, &info, 0.4, -0.1, 1e-7);
    assert_near(info.lr, 0.1, 1e-15);
    surge_trainer_destroy(&t);
}

/* ---- normalisation ---- */

static void
test_output_norm_global(void **state)
{
    (void)state;
    struct surge_trainer_config c;
    base_config(&c, 2, 3);
    c.out_norm_samples = 4;
    surge_trainer *t = make(&c);
    /* Rows 1-4 set the stats; row 5 comes after the freeze. */
    float y[5 * 3] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 100, 100, 100};
    assert_int_equal(surge_trainer_observe_outputs(t, y, 1), 0);
    assert_int_equal(surge_trainer_outputs_frozen(t), 0);
    assert_int_equal(surge_trainer_observe_outputs(t, y + 3, 4), 1);
    assert_int_equal(surge_trainer_outputs_frozen(t), 1);
    /* mean of 1..12 = 6.5, population std = sqrt(143 / 12). */
    assert_near(t->out_mean[0], 6.5, 1e-6);
    assert_near(t->out_std[0], sqrt(143.0 / 12.0), 1e-6);
    assert_int_equal(surge_trainer_observe_outputs(t, y, 1), 1);
    assert_near(t->out_mean[0], 6.5, 1e-6);
    float bad = NAN;
    surge_trainer_destroy(&t);
    t = make(&c);
    float row[3] = {1, bad, 2};
    assert_int_equal(surge_trainer_observe_outputs(t, row, 1), -EINVAL);
    surge_trainer_destroy(&t);
}

static void
test_output_norm_element(void **state)
{
    (void)state;
    struct surge_trainer_config c;
    base_config(&c, 1, 3);
    c.out_norm = SURGE_OUTNORM_ELEMENT;
    c.out_norm_samples = 2;
    surge_trainer *t = make(&c);
    /* Column 2 is constant: its std falls back to 1e-3 x the global std. */
    float y[2 * 3] = {0, 10, 5, 2, 30, 5};
    assert_int_equal(surge_trainer_observe_outputs(t, y, 2), 1);
    assert_near(t->out_mean[0], 1.0, 1e-6);
    assert_near(t->out_std[0], 1.0, 1e-6);
    assert_near(t->out_mean[1], 20.0, 1e-6);
    assert_near(t->out_std[1], 10.0, 1e-6);
    assert_near(t->out_mean[2], 5.0, 1e-6);
    /* Global: means 1, 20, 5 (mean 26/3); variance = mean of (1, 100, 0)
     * plus the spread of the means. */
    double gm = 26.0 / 3.0;
    double gv =
        (1.0 + 100.0 + 0.0) / 3.0 +
        ((1 - gm) * (1 - gm) + (20 - gm) * (20 - gm) + (5 - gm) * (5 - gm)) /
            3.0;
    assert_near(t->out_std[2], 1e-3 * sqrt(gv), 1e-9);
    surge_trainer_destroy(&t);
}

static void
test_input_range(void **state)
{
    (void)state;
    struct surge_trainer_config c;
    base_config(&c, 3, 1);
    surge_trainer *t = make(&c);
    char err[256];
    float lo[3] = {0, -2, 5}, hi[3] = {10, 2, 5};
    assert_int_equal(surge_trainer_set_input_range(t, lo, hi, err, sizeof err),
                     0);
    assert_near(t->in_mean[0], 5.0, 0);
    assert_near(t->in_std[0], 5.0, 0);
    assert_near(t->in_mean[1], 0.0, 0);
    assert_near(t->in_std[1], 2.0, 0);
    assert_near(t->in_std[2], 1.0, 0); /* constant input */
    float badhi[3] = {10, -3, 5};
    assert_int_equal(
        surge_trainer_set_input_range(t, lo, badhi, err, sizeof err),
        SURGE_ECONFIG);
    assert_non_null(strstr(err, "input 1"));
    surge_trainer_destroy(&t);
}

/* ---- fitting known functions ---- */

static void
make_data(uint64_t seed, int rows, int nin, int nout, float *x, float *y,
          void (*f)(const float *x, float *y, const float *a), const float *a)
{
    uint64_t s = seed;
    for (int r = 0; r < rows; r++) {
        for (int i = 0; i < nin; i++) {
            x[r * nin + i] = mlp_rand_sym(&s);
        }
        f(x + r * nin, y + r * nout, a);
    }
}

enum { LIN_IN = 4, LIN_OUT = 6 };

/* y = A x + c, A (6, 4) and c (6) random. */
static void
linear_map(const float *x, float *y, const float *a)
{
    for (int o = 0; o < LIN_OUT; o++) {
        float s = a[LIN_OUT * LIN_IN + o];
        for (int i = 0; i < LIN_IN; i++) {
            s += a[o * LIN_IN + i] * x[i];
        }
        y[o] = s;
    }
}

static void
test_fit_linear_map(void **state)
{
    (void)state;
    enum { N = 512, NV = 256, B = 64 };
    float a[LIN_OUT * LIN_IN + LIN_OUT];
    uint64_t s = 2024;
    for (size_t i = 0; i < sizeof a / sizeof a[0]; i++) {
        a[i] = 2.0f * mlp_rand_sym(&s) + 3.0f; /* away from zero mean */
    }
    float *x = malloc(sizeof(float) * N * LIN_IN);
    float *y = malloc(sizeof(float) * N * LIN_OUT);
    float *xv = malloc(sizeof(float) * NV * LIN_IN);
    float *yv = malloc(sizeof(float) * NV * LIN_OUT);
    assert_true(x != NULL && y != NULL && xv != NULL && yv != NULL);
    make_data(1, N, LIN_IN, LIN_OUT, x, y, linear_map, a);
    make_data(2, NV, LIN_IN, LIN_OUT, xv, yv, linear_map, a);

    struct surge_trainer_config c;
    base_config(&c, LIN_IN, LIN_OUT);
    c.n_layers = 0; /* a linear model can represent the map exactly */
    c.lr = 1e-2;
    c.batch_size = B;
    c.schedule = SURGE_SCHED_COSINE;
    c.total_steps = 1500;
    c.out_norm_samples = N;
    surge_trainer *t = make(&c);
    float lo[LIN_IN], hi[LIN_IN];
    for (int i = 0; i < LIN_IN; i++) {
        lo[i] = -1.0f;
        hi[i] = 1.0f;
    }
    assert_int_equal(surge_trainer_set_input_range(t, lo, hi, NULL, 0), 0);
    assert_int_equal(surge_trainer_observe_outputs(t, y, N), 1);
    struct surge_trainer_eval_result ev0, ev;
    assert_int_equal(surge_trainer_evaluate(t, xv, yv, NV, &ev0), 0);
    for (int step = 0; step < 1500; step++) {
        int off = (step * B) % N;
        assert_int_equal(surge_trainer_step(t, x + off * LIN_IN,
                                            y + off * LIN_OUT, NULL, B, NULL,
                                            NULL),
                         0);
    }
    assert_int_equal(surge_trainer_evaluate(t, xv, yv, NV, &ev), 0);
    /* Tolerance: relative L2 error below 1e-3 on held-out points. */
    if (!(ev.rel_l2 < 1e-3)) {
        fail_msg("linear map: rel L2 %.3g (start %.3g)", ev.rel_l2, ev0.rel_l2);
    }
    assert_true(ev.rel_l2_mean < 2e-3);
    assert_true(ev.mse_phys < ev0.mse_phys * 1e-4);
    surge_trainer_destroy(&t);
    free(x);
    free(y);
    free(xv);
    free(yv);
}

/* A smooth nonlinear map R^2 -> R^2. */
static void
nonlinear_map(const float *x, float *y, const float *a)
{
    (void)a;
    y[0] = sinf(3.0f * x[0]) * cosf(2.0f * x[1]);
    y[1] = x[0] * x[1] + 0.5f * x[0] * x[0];
}

static void
check_fit_nonlinear(int act, double tol)
{
    enum { N = 1024, NV = 256, B = 32, STEPS = 2000 };
    float *x = malloc(sizeof(float) * N * 2);
    float *y = malloc(sizeof(float) * N * 2);
    float *xv = malloc(sizeof(float) * NV * 2);
    float *yv = malloc(sizeof(float) * NV * 2);
    assert_true(x != NULL && y != NULL && xv != NULL && yv != NULL);
    make_data(3, N, 2, 2, x, y, nonlinear_map, NULL);
    make_data(4, NV, 2, 2, xv, yv, nonlinear_map, NULL);
    struct surge_trainer_config c;
    base_config(&c, 2, 2);
    c.n_layers = 2;
    c.layers[0] = 32;
    c.layers[1] = 32;
    c.activation = act;
    c.lr = 1e-2;
    c.batch_size = B;
    c.schedule = SURGE_SCHED_COSINE;
    c.total_steps = STEPS;
    c.out_norm_samples = N;
    surge_trainer *t = make(&c);
    assert_int_equal(surge_trainer_observe_outputs(t, y, N), 1);
    for (int step = 0; step < STEPS; step++) {
        int off = (step * B) % N;
        assert_int_equal(surge_trainer_step(t, x + off * 2, y + off * 2, NULL,
                                            B, NULL, NULL),
                         0);
    }
    struct surge_trainer_eval_result ev;
    assert_int_equal(surge_trainer_evaluate(t, xv, yv, NV, &ev), 0);
    if (!(ev.rel_l2 < tol)) {
        fail_msg("%s: rel L2 %.3g >= %.3g", surge_trainer_activation_name(act),
                 ev.rel_l2, tol);
    }
    surge_trainer_destroy(&t);
    free(x);
    free(y);
    free(xv);
    free(yv);
}

/* Tolerance: relative L2 error below 5% on held-out points (about 3% is
 * reached: relu 0.035, tanh 0.029 here). */
static void
test_fit_nonlinear_tanh(void **state)
{
    (void)state;
    check_fit_nonlinear(SURGE_ACT_TANH, 0.05);
}

static void
test_fit_nonlinear_relu(void **state)
{
    (void)state;
    check_fit_nonlinear(SURGE_ACT_RELU, 0.05);
}

/* ---- row losses, weights, evaluation consistency ---- */

static void
test_row_loss_and_weights(void **state)
{
    (void)state;
    enum { B = 8, IN = 3, OUT = 5 };
    struct surge_trainer_config c;
    base_config(&c, IN, OUT);
    c.n_layers = 1;
    c.layers[0] = 16;
    c.batch_size = B;
    surge_trainer *t = make(&c);
    float x[B * IN], y[B * OUT], w[B], yh[B * OUT], rl[B];
    uint64_t s = 9;
    for (int i = 0; i < B * IN; i++) {
        x[i] = mlp_rand_sym(&s);
    }
    for (int i = 0; i < B * OUT; i++) {
        y[i] = 10.0f + 3.0f * mlp_rand_sym(&s);
    }
    for (int r = 0; r < B; r++) {
        w[r] = (float)(r + 1) / B;
    }
    float mean = 10.0f, sd = 3.0f;
    assert_int_equal(surge_trainer_set_output_norm(t, &mean, &sd, 1), 0);
    assert_int_equal(surge_trainer_predict(t, x, B, yh), 0);
    struct surge_trainer_eval_result ev;
    assert_int_equal(surge_trainer_evaluate(t, x, y, B, &ev), 0);
    struct surge_trainer_step_info info;
    assert_int_equal(surge_trainer_step(t, x, y, w, B, rl, &info), 0);
    /* Row losses and the weighted loss, from the prediction before the
     * update, in normalised units. */
    double total = 0.0, se = 0.0, yy = 0.0;
    for (int r = 0; r < B; r++) {
        double l = 0.0;
        for (int j = 0; j < OUT; j++) {
            double e = ((double)yh[r * OUT + j] - y[r * OUT + j]) / sd;
            l += e * e;
            se += e * e * sd * sd;
            yy += (double)y[r * OUT + j] * y[r * OUT + j];
        }
        l /= OUT;
        assert_near(rl[r], l, 1e-5 * l + 1e-7);
        total += w[r] * l;
    }
    assert_near(info.loss, total / B, 1e-5 * total / B);
    assert_near(ev.mse, se / (sd * sd) / (B * OUT), 1e-5 * ev.mse);
    assert_near(ev.rel_l2, sqrt(se / yy), 1e-5 * ev.rel_l2);
    assert_int_equal(ev.rows, B);
    /* Bad arguments. */
    assert_int_equal(surge_trainer_step(t, x, y, NULL, 0, NULL, NULL), -EINVAL);
    assert_int_equal(surge_trainer_step(t, x, y, NULL, B + 1, NULL, NULL),
                     -EINVAL);
    assert_int_equal(surge_trainer_step(t, NULL, y, NULL, 1, NULL, NULL),
                     -EINVAL);
    /* A non-finite target: loss not finite, update skipped. */
    float params0[256], params1[256];
    size_t np = surge_trainer_num_params(t);
    assert_true(np <= 256);
    assert_int_equal(surge_trainer_get_params(t, params0, np), 0);
    y[0] = INFINITY;
    assert_int_equal(surge_trainer_step(t, x, y, NULL, B, NULL, NULL),
                     SURGE_ESTATE);
    assert_int_equal(surge_trainer_get_params(t, params1, np), 0);
    assert_memory_equal(params0, params1, np * sizeof(float));
    assert_int_equal(surge_trainer_steps(t), 1);
    surge_trainer_destroy(&t);
}

/* ---- determinism and checkpoint/resume ---- */

enum { DET_IN = 6, DET_OUT = 32, DET_B = 32, DET_N = 256 };

static void
det_data(float *x, float *y)
{
    uint64_t s = 77;
    for (int i = 0; i < DET_N * DET_IN; i++) {
        x[i] = mlp_rand_sym(&s);
    }
    for (int i = 0; i < DET_N * DET_OUT; i++) {
        y[i] = 5.0f + mlp_rand_sym(&s);
    }
}

static void
det_config(struct surge_trainer_config *c, int optimizer)
{
    base_config(c, DET_IN, DET_OUT);
    c->n_layers = 2;
    c->layers[0] = 48;
    c->layers[1] = 40;
    c->activation = SURGE_ACT_GELU;
    c->optimizer = optimizer;
    c->weight_decay = 1e-4;
    c->grad_clip = 1.0;
    c->schedule = SURGE_SCHED_COSINE;
    c->warmup_steps = 3;
    c->total_steps = 40;
    c->batch_size = DET_B;
    c->out_norm = SURGE_OUTNORM_ELEMENT;
    c->out_norm_samples = 48; /* spans two observe calls of 32 rows */
}

/* Observe the first samples as the server does when they arrive, before
 * any step: rows [from * 32, to * 32). */
static void
observe(surge_trainer *t, const float *y, int from, int to)
{
    for (int s = from; s < to; s++) {
        (void)surge_trainer_observe_outputs(t, y + s * DET_B * DET_OUT, DET_B);
    }
}

static void
run_steps(surge_trainer *t, const float *x, const float *y, int from, int to)
{
    for (int s = from; s < to; s++) {
        int off = (s * DET_B) % DET_N;
        assert_int_equal(surge_trainer_step(t, x + off * DET_IN,
                                            y + off * DET_OUT, NULL, DET_B,
                                            NULL, NULL),
                         0);
    }
}

static float *
params_of(surge_trainer *t)
{
    size_t n = surge_trainer_num_params(t);
    float *p = malloc(n * sizeof *p);
    assert_non_null(p);
    assert_int_equal(surge_trainer_get_params(t, p, n), 0);
    return p;
}

static void
check_bit_identical(double clip)
{
    float *x = malloc(sizeof(float) * DET_N * DET_IN);
    float *y = malloc(sizeof(float) * DET_N * DET_OUT);
    assert_true(x != NULL && y != NULL);
    det_data(x, y);
    struct surge_trainer_config c;
    det_config(&c, SURGE_OPT_ADAM);
    c.grad_clip = clip;
    surge_trainer *a = make(&c), *b = make(&c);
    observe(a, y, 0, 2);
    observe(b, y, 0, 2);
    run_steps(a, x, y, 0, 30);
    run_steps(b, x, y, 0, 30);
    float *pa = params_of(a), *pb = params_of(b);
    size_t n = surge_trainer_num_params(a);
    assert_memory_equal(pa, pb, n * sizeof(float));
    /* And a different seed gives different weights. */
    c.seed = 43;
    surge_trainer *d = make(&c);
    observe(d, y, 0, 2);
    run_steps(d, x, y, 0, 30);
    float *pd = params_of(d);
    assert_memory_not_equal(pa, pd, n * sizeof(float));
    free(pa);
    free(pb);
    free(pd);
    surge_trainer_destroy(&a);
    surge_trainer_destroy(&b);
    surge_trainer_destroy(&d);
    free(x);
    free(y);
}

static void
test_bit_identical_twice(void **state)
{
    (void)state;
    check_bit_identical(1.0); /* clipping: update after backward */
    check_bit_identical(0.0); /* no clipping: per-layer update */
}

/* clip > 0 takes the update-after-backward path, clip 0 the per-layer
 * update inside backward: both must resume bit-identically. */
static void
check_resume(int optimizer, double clip)
{
    float *x = malloc(sizeof(float) * DET_N * DET_IN);
    float *y = malloc(sizeof(float) * DET_N * DET_OUT);
    assert_true(x != NULL && y != NULL);
    det_data(x, y);
    char path[512], err[512];
    path_in(path, sizeof path, "resume.ckpt");
    struct surge_trainer_config c;
    det_config(&c, optimizer);
    c.grad_clip = clip;
    /* Uninterrupted: 30 steps, with a checkpoint before any step (output
     * statistics still collecting: 32 of 48 samples seen) and one after
     * step 12. */
    surge_trainer *a = make(&c);
    observe(a, y, 0, 1);
    char early[512];
    path_in(early, sizeof early, "early.ckpt");
    assert_int_equal(surge_trainer_checkpoint_save(a, early, NULL, 0), 0);
    observe(a, y, 1, 2);
    run_steps(a, x, y, 0, 12);
    const char blob[] = "reservoir state goes here";
    assert_int_equal(surge_trainer_checkpoint_save(a, path, blob, sizeof blob),
                     0);
    run_steps(a, x, y, 12, 30);
    /* Resumed: a trainer with another seed (its own initial weights must
     * be overwritten), loaded, then the same remaining steps. */
    c.seed = 999;
    surge_trainer *b = make(&c);
    void *extra = NULL;
    size_t extra_len = 0;
    int rc = surge_trainer_checkpoint_load(b, path, &extra, &extra_len, err,
                                           sizeof err);
    if (rc != 0) {
        fail_msg("load: %d %s", rc, err);
    }
    assert_int_equal(surge_trainer_steps(b), 12);
    assert_int_equal(extra_len, sizeof blob);
    assert_memory_equal(extra, blob, sizeof blob);
    free(extra);
    run_steps(b, x, y, 12, 30);
    /* From the early one too: the statistics resume mid-collection. */
    surge_trainer *e = make(&c);
    assert_int_equal(
        surge_trainer_checkpoint_load(e, early, NULL, NULL, err, sizeof err),
        0);
    assert_int_equal(e->out_frozen, 0);
    assert_int_equal(e->out_seen, 32);
    observe(e, y, 1, 2);
    assert_int_equal(e->out_frozen, 1);
    run_steps(e, x, y, 0, 30);
    float *pa = params_of(a), *pb = params_of(b), *pe = params_of(e);
    size_t n = surge_trainer_num_params(a);
    assert_memory_equal(pa, pb, n * sizeof(float));
    assert_memory_equal(pa, pe, n * sizeof(float));
    assert_memory_equal(a->opt_m, b->opt_m, n * sizeof(float));
    free(pa);
    free(pb);
    free(pe);
    surge_trainer_destroy(&a);
    surge_trainer_destroy(&b);
    surge_trainer_destroy(&e);
    free(x);
    free(y);
}

static void
test_resume_adam(void **state)
{
    (void)state;
    check_resume(SURGE_OPT_ADAM, 1.0);
    check_resume(SURGE_OPT_ADAM, 0.0);
}

static void
test_resume_sgd(void **state)
{
    (void)state;
    check_resume(SURGE_OPT_SGD, 0.0);
}

static long
file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* Overwrite one byte of a file at off. */
static void
poke(const char *path, long off, char c)
{
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, &c, 1, off), 1);
    close(fd);
}

static void
copy_file(const char *from, const char *to)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", from, to);
    assert_int_equal(system(cmd), 0);
}

static void
expect_load_error(surge_trainer *t, const char *path, int code,
                  const char *needle)
{
    char err[512] = "";
    float *before = params_of(t);
    uint64_t steps = surge_trainer_steps(t);
    int rc =
        surge_trainer_checkpoint_load(t, path, NULL, NULL, err, sizeof err);
    if (rc != code || strstr(err, needle) == NULL) {
        fail_msg("load %s: %d '%s', expected %d with '%s'", path, rc, err, code,
                 needle);
    }
    float *after = params_of(t);
    assert_memory_equal(before, after,
                        surge_trainer_num_params(t) * sizeof(float));
    assert_int_equal(surge_trainer_steps(t), steps);
    free(before);
    free(after);
}

static void
test_checkpoint_errors(void **state)
{
    (void)state;
    char good[512], bad[512];
    path_in(good, sizeof good, "good.ckpt");
    path_in(bad, sizeof bad, "bad.ckpt");
    struct surge_trainer_config c;
    det_config(&c, SURGE_OPT_ADAM);
    surge_trainer *t = make(&c);
    assert_int_equal(surge_trainer_checkpoint_save(t, good, NULL, 0), 0);
    long size = file_size(good);
    assert_true(size > 1000);

    /* No temporary file left behind. */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -q tmp", tmpdir);
    assert_int_not_equal(system(cmd), 0);

    expect_load_error(t, "/nonexistent/x.ckpt", -ENOENT, "/nonexistent");
    /* A flipped data byte: the CRC catches it. */
    copy_file(good, bad);
    poke(bad, size - 5, 'X');
    expect_load_error(t, bad, SURGE_EPROTO, "corrupt");
    /* Truncated (a write cut short): said so, with the sizes, rather than
     * a complaint about the first tensor that no longer fits; peek too. */
    copy_file(good, bad);
    assert_int_equal(truncate(bad, size / 2), 0);
    char want[128];
    snprintf(want, sizeof want, "truncated: %ld of %ld bytes", size / 2, size);
    expect_load_error(t, bad, SURGE_EPROTO, want);
    {
        char err[512] = "";
        int nin, nout;
        assert_int_equal(surge_trainer_checkpoint_peek(bad, &nin, &nout, NULL,
                                                       NULL, NULL, err,
                                                       sizeof err),
                         SURGE_EPROTO);
        assert_non_null(strstr(err, want));
    }
    /* Cut inside the header: truncated too. */
    assert_int_equal(truncate(bad, 40), 0);
    expect_load_error(t, bad, SURGE_EPROTO, "truncated: 40 of ");
    assert_int_equal(truncate(bad, 3), 0);
    expect_load_error(t, bad, SURGE_EPROTO, "too short");
    /* A header length pointing past the end. */
    copy_file(good, bad);
    poke(bad, 5, 0x7f);
    expect_load_error(t, bad, SURGE_EPROTO, "header length");
    /* Broken JSON. */
    copy_file(good, bad);
    poke(bad, 8, '[');
    expect_load_error(t, bad, SURGE_EPROTO, "JSON");
    /* Another version: find "surge.version":"1" and change the digit. */
    copy_file(good, bad);
    {
        FILE *f = fopen(bad, "rb");
        assert_non_null(f);
        char head[4096];
        size_t got = fread(head, 1, sizeof head - 1, f);
        fclose(f);
        head[got] = '\0';
        char *v = strstr(head + 8, "\"surge.version\":\"1\"");
        assert_non_null(v);
        poke(bad, (long)(v - head) + 17, '7');
    }
    expect_load_error(t, bad, SURGE_EVERSION, "version '7'");
    /* A model file is not a checkpoint. */
    char model[512];
    path_in(model, sizeof model, "m.safetensors");
    assert_int_equal(surge_trainer_save_model(t, model, NULL), 0);
    expect_load_error(t, model, SURGE_EPROTO, "not a surge-checkpoint");
    /* Architecture mismatches name the key. */
    struct surge_trainer_config c2 = c;
    c2.layers[1] = 41;
    surge_trainer *t2 = make(&c2);
    expect_load_error(t2, good, SURGE_ECONFIG, "trainer.layers[1] is 40");
    surge_trainer_destroy(&t2);
    c2 = c;
    c2.activation = SURGE_ACT_TANH;
    t2 = make(&c2);
    expect_load_error(t2, good, SURGE_ECONFIG, "trainer.activation");
    surge_trainer_destroy(&t2);
    c2 = c;
    c2.optimizer = SURGE_OPT_SGD;
    t2 = make(&c2);
    expect_load_error(t2, good, SURGE_ECONFIG, "trainer.optimizer is 'adam'");
    surge_trainer_destroy(&t2);
    surge_trainer_destroy(&t);
}

static void
test_checkpoint_peek(void **state)
{
    (void)state;
    char path[512], model[512], err[512];
    path_in(path, sizeof path, "peek.ckpt");
    path_in(model, sizeof model, "peek.safetensors");
    struct surge_trainer_config c;
    det_config(&c, SURGE_OPT_SGD);
    surge_trainer *t = make(&c);
    float *x = malloc(sizeof(float) * DET_N * DET_IN);
    float *y = malloc(sizeof(float) * DET_N * DET_OUT);
    assert_true(x != NULL && y != NULL);
    det_data(x, y);
    observe(t, y, 0, 2);
    run_steps(t, x, y, 0, 3);
    const char blob[] = {1, 2, 3, 0, 5};
    assert_int_equal(surge_trainer_checkpoint_save(t, path, blob, sizeof blob),
                     0);
    assert_int_equal(surge_trainer_save_model(t, model, NULL), 0);
    int nin = 0, nout = 0;
    uint64_t steps = 0;
    void *extra = NULL;
    size_t len = 0;
    assert_int_equal(surge_trainer_checkpoint_peek(path, &nin, &nout, &steps,
                                                   &extra, &len, err,
                                                   sizeof err),
                     0);
    assert_int_equal(nin, DET_IN);
    assert_int_equal(nout, DET_OUT);
    assert_int_equal(steps, 3);
    assert_int_equal(len, sizeof blob);
    assert_memory_equal(extra, blob, sizeof blob);
    free(extra);
    /* Errors: a model file is not a checkpoint; err may be NULL. */
    assert_int_equal(surge_trainer_checkpoint_peek(model, &nin, &nout, NULL,
                                                   NULL, NULL, err, sizeof err),
                     SURGE_EPROTO);
    assert_non_null(strstr(err, "not a surge checkpoint"));
    assert_int_equal(surge_trainer_checkpoint_peek(model, &nin, &nout, NULL,
                                                   NULL, NULL, NULL, 0),
                     SURGE_EPROTO);
    assert_int_equal(surge_trainer_checkpoint_peek("/nonexistent", &nin, &nout,
                                                   NULL, NULL, NULL, NULL, 0),
                     -ENOENT);
    surge_trainer_destroy(&t);
    free(x);
    free(y);
}

/* ---- the model file ---- */

static void
test_model_file_round_trip(void **state)
{
    (void)state;
    float *x = malloc(sizeof(float) * DET_N * DET_IN);
    float *y = malloc(sizeof(float) * DET_N * DET_OUT);
    float *y1 = malloc(sizeof(float) * DET_N * DET_OUT);
    float *y2 = malloc(sizeof(float) * DET_N * DET_OUT);
    assert_true(x != NULL && y != NULL && y1 != NULL && y2 != NULL);
    det_data(x, y);
    struct surge_trainer_config c;
    det_config(&c, SURGE_OPT_ADAMW);
    c.batch_size = 24; /* predict in chunks of 24 vs the model's 256 */
    surge_trainer *t = make(&c);
    float lo[DET_IN], hi[DET_IN];
    for (int i = 0; i < DET_IN; i++) {
        lo[i] = -1.0f - (float)i;
        hi[i] = 1.0f + 2.0f * (float)i;
    }
    assert_int_equal(surge_trainer_set_input_range(t, lo, hi, NULL, 0), 0);
    for (int s = 0; s < 5; s++) {
        (void)surge_trainer_observe_outputs(t, y + s * 24 * DET_OUT, 24);
        assert_int_equal(surge_trainer_step(t, x + s * 24 * DET_IN,
                                            y + s * 24 * DET_OUT, NULL, 24,
                                            NULL, NULL),
                         0);
    }
    char path[512], err[512];
    path_in(path, sizeof path, "model.safetensors");
    const char *meta[] = {"field_shape", "4,8", "note", "quote \" and \\",
                          NULL};
    assert_int_equal(surge_trainer_save_model(t, path, meta), 0);
    const char *bad_meta[] = {"surge.steps", "1", NULL};
    assert_int_equal(surge_trainer_save_model(t, path, bad_meta), -EINVAL);

    /* The header is plain safetensors. */
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    unsigned char len8[8];
    assert_int_equal(fread(len8, 1, 8, f), 8);
    uint64_t hlen = 0;
    for (int b = 7; b >= 0; b--) {
        hlen = (hlen << 8) | len8[b];
    }
    assert_true(hlen > 0 && hlen < 100000 && (8 + hlen) % 8 == 0);
    char *head = calloc(1, hlen + 1);
    assert_non_null(head);
    assert_int_equal(fread(head, 1, hlen, f), hlen);
    fclose(f);
    assert_non_null(strstr(head,
                           "\"0.weight\":{\"dtype\":\"F32\","
                           "\"shape\":[48,6],\"data_offsets\":[0,1152]}"));
    assert_non_null(strstr(head, "\"4.bias\""));
    assert_non_null(strstr(head, "\"surge.activation\":\"gelu\""));
    free(head);

    surge_model *m = NULL;
    int rc = surge_model_load(path, &m, err, sizeof err);
    if (rc != 0) {
        fail_msg("model load: %d %s", rc, err);
    }
    const struct surge_model_info *info = surge_model_get_info(m);
    assert_int_equal(info->n_inputs, DET_IN);
    assert_int_equal(info->n_outputs, DET_OUT);
    assert_int_equal(info->n_layers, 2);
    assert_int_equal(info->layers[0], 48);
    assert_int_equal(info->layers[1], 40);
    assert_int_equal(info->activation, SURGE_ACT_GELU);
    assert_int_equal(info->steps, 5);
    assert_string_equal(surge_model_meta(m, "field_shape"), "4,8");
    assert_string_equal(surge_model_meta(m, "note"), "quote \" and \\");
    assert_null(surge_model_meta(m, "nope"));
    /* Bit-identical predictions: same ops, same order, same machine. */
    assert_int_equal(surge_trainer_predict(t, x, DET_N, y1), 0);
    assert_int_equal(surge_model_predict(m, x, DET_N, y2), 0);
    assert_memory_equal(y1, y2, sizeof(float) * DET_N * DET_OUT);
    surge_model_destroy(&m);
    assert_null(m);
    surge_model_destroy(&m); /* NULL is fine */

    /* Bad files. */
    char bad[512];
    path_in(bad, sizeof bad, "bad.safetensors");
    long size = file_size(path);
    copy_file(path, bad);
    poke(bad, size - 1, 0x55);
    rc = surge_model_load(bad, &m, err, sizeof err);
    assert_int_equal(rc, SURGE_EPROTO);
    assert_non_null(strstr(err, "corrupt"));
    assert_null(m);
    char ckpt[512];
    path_in(ckpt, sizeof ckpt, "c.ckpt");
    assert_int_equal(surge_trainer_checkpoint_save(t, ckpt, NULL, 0), 0);
    rc = surge_model_load(ckpt, &m, err, sizeof err);
    assert_int_equal(rc, SURGE_EPROTO);
    assert_non_null(strstr(err, "not a surge-model file"));
    rc = surge_model_load("/nonexistent.safetensors", &m, err, sizeof err);
    assert_int_equal(rc, -ENOENT);
    surge_trainer_destroy(&t);
    free(x);
    free(y);
    free(y1);
    free(y2);
}

/* ---- configuration errors ---- */

static void
expect_json_error(const char *json, const char *needle)
{
    struct surge_trainer_config c;
    char err[256] = "";
    base_config(&c, 6, 10);
    int rc =
        surge_trainer_config_from_json(&c, json, strlen(json), err, sizeof err);
    if (rc == 0) {
        rc = surge_trainer_config_validate(&c, err, sizeof err);
    }
    if (rc != SURGE_ECONFIG || strstr(err, needle) == NULL) {
        fail_msg("%s: %d '%s', expected '%s'", json, rc, err, needle);
    }
}

static void
test_config_errors(void **state)
{
    (void)state;
    struct surge_trainer_config c;
    char err[256];
    base_config(&c, 6, 4096);
    assert_int_equal(surge_trainer_config_validate(&c, err, sizeof err), 0);
    c.layers[1] = -3;
    assert_int_equal(surge_trainer_config_validate(&c, err, sizeof err),
                     SURGE_ECONFIG);
    assert_string_equal(
        err, "trainer.layers[1]: must be an integer in [1, 1048576] (got -3)");
    surge_trainer *t = NULL;
    assert_int_equal(surge_trainer_create(&c, &t, err, sizeof err),
                     SURGE_ECONFIG);
    assert_null(t);

    expect_json_error("{\"activation\": \"foo\"}",
                      "trainer.activation: must be one of: relu, gelu, tanh "
                      "(got \"foo\")");
    expect_json_error("{\"layers\": [64, -1]}",
                      "trainer.layers[1]: must be an integer in [1, 1048576] "
                      "(got -1)");
    expect_json_error("{\"layers\": [64, 0, 3]}",
                      "trainer.layers[1]: must be an integer in [1, 1048576] "
                      "(got 0)");
    expect_json_error("{\"layers\": [64, 2.5]}",
                      "trainer.layers[1]: must be an integer in [1, 1048576] "
                      "(got 2.5)");
    expect_json_error("{\"layers\": 64}", "trainer.layers: must be an array");
    expect_json_error("{\"lerning_rate\": 0.1}",
                      "trainer.lerning_rate: unknown key");
    expect_json_error("{\"lr\": \"fast\"}", "trainer.lr: must be a number");
    expect_json_error("{\"lr\": -1}", "trainer.lr: must be > 0");
    expect_json_error("{\"optimizer\": \"adagrad\"}",
                      "trainer.optimizer: must be one of: adam, adamw, sgd "
                      "(got \"adagrad\")");
    expect_json_error("{\"schedule\": \"cosine\"}",
                      "trainer.total_steps: must be > warmup_steps");
    expect_json_error("{\"schedule\": \"step\", \"gamma\": 0}",
                      "trainer.gamma: must be in (0, 1] (got 0)");
    expect_json_error("{\"beta2\": 1.0}", "trainer.beta2: must be in [0, 1)");
    expect_json_error("{\"batch_size\": 0}", "trainer.batch_size");
    expect_json_error("{\"threads\": -2}", "trainer.threads");
    expect_json_error("{\"grad_clip\": -1}", "trainer.grad_clip");
    expect_json_error("{\"backend\": \"tpu\"}",
                      "trainer.backend: must be one of: cpu, cuda, auto "
                      "(got \"tpu\")");
    expect_json_error("{\"seed\": -5}",
                      "trainer.seed: must be an integer >= 0 (got -5)");
    expect_json_error("{\"lr\": 1e-3,}", "trainer: invalid JSON");
    expect_json_error("[1, 2]", "trainer: must be a JSON object");
    expect_json_error("{\"layers\": [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,"
                      "17]}",
                      "trainer.layers: at most 16 entries (got 17)");

    /* A good section sets every kind of key. */
    const char *good = "{\"layers\": [1024, 1024, 1024], \"activation\": "
                       "\"gelu\", \"optimizer\": \"adamw\", \"lr\": 3e-4, "
                       "\"weight_decay\": 0.01, \"schedule\": \"cosine\", "
                       "\"total_steps\": 10000, \"warmup_steps\": 100, "
                       "\"grad_clip\": 1, \"batch_size\": 128, \"threads\": "
                       "2, \"seed\": 7, \"out_norm\": \"element\", "
                       "\"backend\": \"cpu\"}";
    base_config(&c, 6, 4096);
    assert_int_equal(
        surge_trainer_config_from_json(&c, good, strlen(good), err, sizeof err),
        0);
    assert_int_equal(surge_trainer_config_validate(&c, err, sizeof err), 0);
    assert_int_equal(c.n_layers, 3);
    assert_int_equal(c.layers[2], 1024);
    assert_int_equal(c.activation, SURGE_ACT_GELU);
    assert_int_equal(c.optimizer, SURGE_OPT_ADAMW);
    assert_int_equal(c.schedule, SURGE_SCHED_COSINE);
    assert_int_equal(c.out_norm, SURGE_OUTNORM_ELEMENT);
    assert_int_equal(c.batch_size, 128);
    assert_int_equal(c.seed, 7);
    assert_near(c.grad_clip, 1.0, 0);
    assert_near(c.lr, 3e-4, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adam_by_hand),
        cmocka_unit_test(test_adamw_by_hand),
        cmocka_unit_test(test_adam_l2_by_hand),
        cmocka_unit_test(test_sgd_momentum_by_hand),
        cmocka_unit_test(test_clip_by_hand),
        cmocka_unit_test(test_schedules),
        cmocka_unit_test(test_output_norm_global),
        cmocka_unit_test(test_output_norm_element),
        cmocka_unit_test(test_input_range),
        cmocka_unit_test(test_fit_linear_map),
        cmocka_unit_test(test_fit_nonlinear_tanh),
        cmocka_unit_test(test_fit_nonlinear_relu),
        cmocka_unit_test(test_row_loss_and_weights),
        cmocka_unit_test(test_bit_identical_twice),
        cmocka_unit_test(test_resume_adam),
        cmocka_unit_test(test_resume_sgd),
        cmocka_unit_test(test_checkpoint_errors),
        cmocka_unit_test(test_checkpoint_peek),
        cmocka_unit_test(test_model_file_round_trip),
        cmocka_unit_test(test_config_errors),
    };
    return cmocka_run_group_tests_name("trainer", tests, setup_dir, remove_dir);
}
