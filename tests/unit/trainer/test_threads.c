/*
 * tests/unit/trainer/test_threads.c - the CPU backend's threaded passes
 * (trainer/backend_cpu.c, THREADS): every pass that is not a matrix
 * product gives the same bits on 2, 3 and 5 threads as on 1 (bias and
 * activation forward, their backward with the bias gradient, the affine
 * normalisation, the loss with its gradient, row losses and weights, the
 * squared norm, the Adam, AdamW and SGD updates with the norm), on shapes
 * that cut into uneven blocks; the 1-thread results match a plain
 * reference within float rounding; and whole training runs are bit for bit
 * repeatable for a fixed thread count and within float rounding across
 * thread counts (OpenBLAS's products may round differently there).
 */
#include "config.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/pool.h"
#include "trainer/backend.h"
#include "trainer/mlp.h"
#include "trainer/trainer.h"

static const struct surge_backend_ops *ops = &surge_backend_cpu;
static const int thread_counts[] = {2, 3, 5};
#define NT (sizeof thread_counts / sizeof thread_counts[0])

/* Shapes: rows not a multiple of the 8-row block, and enough rows (700)
 * that blocks grow past 8 rows; columns not a multiple of the combine
 * width. */
static const int shapes[][2] = {{1, 7}, {13, 1029}, {203, 515}, {700, 96}};
#define NSHAPES (sizeof shapes / sizeof shapes[0])

static float *
randv(size_t n, uint64_t seed, float scale)
{
    float *v = malloc(n * sizeof *v);
    assert_non_null(v);
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++) {
        v[i] = scale * mlp_rand_sym(&s);
    }
    return v;
}

static void *
ctx_of(int threads)
{
    void *ctx = NULL;
    assert_int_equal(ops->create(threads, SURGE_PRECISION_FP32, &ctx, NULL, 0),
                     0);
    assert_int_equal(surge_pool_threads(ops->pool(ctx)), threads);
    return ctx;
}

/* The outputs of every row pass on one context, in one buffer. */
struct row_out {
    float *y;    /* affine (rows, cols) */
    float *a[4]; /* bias_act_fwd per activation (rows, cols) */
    float *z;    /* gelu keeps z (rows, cols) */
    float *d[4]; /* act_bwd per activation (rows, cols) */
    float *db[4];
    float *dp[2]; /* mse: dpred, per_col 0 and 1 */
    float *mdb[2];
    float *rl[2];
    double loss[2];
};

static const int acts[4] = {SURGE_ACT_RELU, SURGE_ACT_GELU, SURGE_ACT_TANH,
                            SURGE_ACT_NONE};

static void
row_passes(void *ctx, int rows, int cols, struct row_out *o)
{
    size_t n = (size_t)rows * (size_t)cols;
    float *x = randv(n, 1, 2.0f);
    float *bias = randv((size_t)cols, 2, 0.5f);
    float *shift = randv((size_t)cols, 3, 1.0f);
    float *scale = randv((size_t)cols, 4, 1.0f);
    float *dout = randv(n, 5, 1.0f);
    float *w = randv((size_t)rows, 6, 1.0f);
    o->y = malloc(n * sizeof(float));
    o->z = malloc(n * sizeof(float));
    ops->affine(ctx, rows, cols, x, shift, scale, 1, 0, o->y);
    for (int k = 0; k < 4; k++) {
        o->a[k] = malloc(n * sizeof(float));
        o->d[k] = malloc(n * sizeof(float));
        o->db[k] = malloc((size_t)cols * sizeof(float));
        memcpy(o->z, x, n * sizeof(float));
        ops->bias_act_fwd(ctx, acts[k], rows, cols, bias, o->z, o->a[k]);
        memcpy(o->d[k], dout, n * sizeof(float));
        ops->act_bwd(ctx, acts[k], rows, cols, o->z, o->a[k], o->d[k],
                     o->db[k]);
    }
    for (int pc = 0; pc < 2; pc++) {
        o->dp[pc] = malloc(n * sizeof(float));
        o->mdb[pc] = malloc((size_t)cols * sizeof(float));
        o->rl[pc] = malloc((size_t)rows * sizeof(float));
        ops->mse_fwd_bwd(ctx, rows, cols, x, dout, shift, scale, pc,
                         pc ? w : NULL, o->dp[pc], o->mdb[pc], o->rl[pc],
                         &o->loss[pc]);
    }
    assert_int_equal(ops->sync(ctx), 0);
    free(x);
    free(bias);
    free(shift);
    free(scale);
    free(dout);
    free(w);
}

static void
row_free(struct row_out *o)
{
    free(o->y);
    free(o->z);
    for (int k = 0; k < 4; k++) {
        free(o->a[k]);
        free(o->d[k]);
        free(o->db[k]);
    }
    for (int pc = 0; pc < 2; pc++) {
        free(o->dp[pc]);
        free(o->mdb[pc]);
        free(o->rl[pc]);
    }
}

static void
test_row_passes_same_bits(void **state)
{
    (void)state;
    for (size_t s = 0; s < NSHAPES; s++) {
        int rows = shapes[s][0], cols = shapes[s][1];
        size_t n = (size_t)rows * (size_t)cols, nb = (size_t)cols * 4;
        void *c1 = ctx_of(1);
        struct row_out ref;
        row_passes(c1, rows, cols, &ref);
        for (size_t t = 0; t < NT; t++) {
            void *ct = ctx_of(thread_counts[t]);
            struct row_out o;
            row_passes(ct, rows, cols, &o);
            assert_memory_equal(o.y, ref.y, n * 4);
            for (int k = 0; k < 4; k++) {
                assert_memory_equal(o.a[k], ref.a[k], n * 4);
                assert_memory_equal(o.d[k], ref.d[k], n * 4);
                assert_memory_equal(o.db[k], ref.db[k], nb);
            }
            for (int pc = 0; pc < 2; pc++) {
                assert_memory_equal(o.dp[pc], ref.dp[pc], n * 4);
                assert_memory_equal(o.mdb[pc], ref.mdb[pc], nb);
                assert_memory_equal(o.rl[pc], ref.rl[pc], (size_t)rows * 4);
                assert_memory_equal(&o.loss[pc], &ref.loss[pc], sizeof(double));
            }
            row_free(&o);
            ops->destroy(ct);
        }
        row_free(&ref);
        ops->destroy(c1);
    }
}

/* The blocked reductions are the sums they stand for: the bias gradient
 * against a plain double sum of the rows, the loss against its formula. */
static void
test_row_passes_match_reference(void **state)
{
    (void)state;
    int rows = 700, cols = 96;
    size_t n = (size_t)rows * cols;
    void *ctx = ctx_of(3);
    float *d = randv(n, 9, 1.0f);
    float *d0 = malloc(n * sizeof *d0);
    float *db = malloc((size_t)cols * sizeof *db);
    memcpy(d0, d, n * sizeof *d0);
    ops->act_bwd(ctx, SURGE_ACT_NONE, rows, cols, NULL, NULL, d, db);
    for (int j = 0; j < cols; j++) {
        double s = 0.0;
        for (int r = 0; r < rows; r++) {
            s += d0[(size_t)r * cols + j];
        }
        assert_true(fabs((double)db[j] - s) <= 1e-5 * (1.0 + fabs(s)) * 8);
    }
    float *pred = randv(n, 10, 1.0f), *t = randv(n, 11, 1.0f);
    float zero = 0.0f, one = 1.0f;
    double loss = 0.0;
    ops->mse_fwd_bwd(ctx, rows, cols, pred, t, &zero, &one, 0, NULL, d, db,
                     NULL, &loss);
    double ref = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)pred[i] - (double)t[i];
        ref += e * e;
    }
    ref /= (double)n;
    assert_true(fabs(loss - ref) <= 1e-5 * ref);
    assert_int_equal(ops->sync(ctx), 0);
    ops->destroy(ctx);
    free(d);
    free(d0);
    free(db);
    free(pred);
    free(t);
}

/* Parameter passes over sizes around the task and block edges. */
static void
test_param_passes_same_bits(void **state)
{
    (void)state;
    static const size_t sizes[] = {1, 4095, 4097, 65536 + 3, 1000003};
    static const int kinds[] = {SURGE_OPT_ADAM, SURGE_OPT_ADAMW, SURGE_OPT_SGD};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        size_t n = sizes[si];
        for (int ki = 0; ki < 3; ki++) {
            float *res[NT + 1][3];
            double acc[NT + 1], sq[NT + 1];
            for (size_t t = 0; t <= NT; t++) {
                int threads = t == 0 ? 1 : thread_counts[t - 1];
                void *ctx = ctx_of(threads);
                float *p = randv(n, 20, 1.0f);
                float *g = randv(n, 21, 0.1f);
                float *m = randv(n, 22, 0.01f);
                float *v = randv(n, 23, 0.001f);
                for (size_t i = 0; i < n; i++) {
                    v[i] = fabsf(v[i]);
                }
                struct surge_step_state st = {.s = {.kind = kinds[ki],
                                                    .lr = 1e-2f,
                                                    .beta1 = 0.9f,
                                                    .beta2 = 0.999f,
                                                    .eps = 1e-8f,
                                                    .weight_decay = 0.01f,
                                                    .momentum = 0.9f,
                                                    .step_size = 1e-2f,
                                                    .inv_bc2_sqrt = 31.6f,
                                                    .decay = 0.9999f,
                                                    .grad_scale = 0.5f}};
                acc[t] = 0.25;
                sq[t] = 0.0;
                ops->sumsq(ctx, g, n, &sq[t]);
                ops->opt_update(ctx, &st, p, g, m, v, n, &acc[t]);
                assert_int_equal(ops->sync(ctx), 0);
                res[t][0] = p;
                res[t][1] = m;
                res[t][2] = v;
                free(g);
                ops->destroy(ctx);
            }
            for (size_t t = 1; t <= NT; t++) {
                for (int k = 0; k < 3; k++) {
                    assert_memory_equal(res[t][k], res[0][k], n * 4);
                }
                assert_memory_equal(&acc[t], &acc[0], sizeof(double));
                assert_memory_equal(&sq[t], &sq[0], sizeof(double));
            }
            /* The norm rides along: acc gained exactly sumsq. */
            assert_true(fabs((acc[0] - 0.25) - sq[0]) <= 1e-12 * sq[0]);
            for (size_t t = 0; t <= NT; t++) {
                for (int k = 0; k < 3; k++) {
                    free(res[t][k]);
                }
            }
        }
    }
}

/* A few Adam steps of a small MLP through the public API; the parameters
 * after them in out (n floats). */
static void
train(int threads, float *out, size_t n)
{
    enum { IN = 5, OUT = 300, B = 37, STEPS = 4 };
    struct surge_trainer_config c;
    surge_trainer_config_defaults(&c);
    c.n_inputs = IN;
    c.n_outputs = OUT;
    c.n_layers = 2;
    c.layers[0] = 150;
    c.layers[1] = 70;
    c.activation = SURGE_ACT_GELU;
    c.batch_size = B;
    c.threads = threads;
    c.grad_clip = threads % 2 ? 0.0 : 1.0; /* both update paths */
    c.out_norm_samples = B;
    surge_trainer *t = NULL;
    char err[256];
    assert_int_equal(surge_trainer_create(&c, &t, err, sizeof err), 0);
    assert_int_equal(surge_trainer_num_params(t), n);
    float *x = randv((size_t)B * IN, 30, 1.0f);
    float *y = randv((size_t)B * OUT, 31, 3.0f);
    for (int s = 0; s < STEPS; s++) {
        assert_int_equal(surge_trainer_step(t, x, y, NULL, B, NULL, NULL), 0);
    }
    assert_int_equal(surge_trainer_get_params(t, out, n), 0);
    surge_trainer_destroy(&t);
    free(x);
    free(y);
}

static void
test_training_repeatable(void **state)
{
    (void)state;
    int hidden[2] = {150, 70};
    size_t n = mlp_count_params(5, 300, 2, hidden);
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    float *c = malloc(n * sizeof *c);
    /* Same thread count: bit for bit (what data-parallel replicas need). */
    train(3, a, n);
    train(3, b, n);
    assert_memory_equal(a, b, n * sizeof *a);
    train(4, a, n);
    train(4, b, n);
    assert_memory_equal(a, b, n * sizeof *a);
    /* Across thread counts only OpenBLAS may round differently: a few
     * steps stay within float rounding of each other. */
    train(1, c, n);
    train(3, a, n);
    for (size_t i = 0; i < n; i++) {
        assert_true(fabsf(a[i] - c[i]) <= 1e-4f * (1.0f + fabsf(c[i])));
    }
    free(a);
    free(b);
    free(c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_row_passes_same_bits),
        cmocka_unit_test(test_row_passes_match_reference),
        cmocka_unit_test(test_param_passes_same_bits),
        cmocka_unit_test(test_training_repeatable),
    };
    return cmocka_run_group_tests_name("trainer_threads", tests, NULL, NULL);
}
