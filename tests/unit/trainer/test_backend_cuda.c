/*
 * tests/unit/trainer/test_backend_cuda.c - the CUDA backend against the CPU
 * backend on the same inputs: forward (predict), loss, gradients and one
 * optimizer step, per precision; the step replayed from a CUDA graph
 * against the same step run eagerly (bit for bit, the schedule computed on
 * the device); device batches; checkpoints and model files across backends;
 * a CUDA failure reported as a trainer error naming call, file and line.
 *
 * Without a CUDA build or device it prints a TAP skip and exits 0.
 *
 * Tolerances, as max |cuda - cpu| / max |cpu| over a tensor (both start
 * from the same weights, initialised on the host from the same seed):
 *   fp32: forward 1e-5, loss 1e-5, gradients 1e-4 (summation order only)
 *   tf32: forward 5e-3, loss 5e-3, gradients 2e-2 (10-bit mantissa inputs)
 *   bf16: forward 3e-2, loss 3e-2, gradients 6e-2 (8-bit mantissa inputs)
 * One Adam step moves each weight by about lr * sign(g), so weights are
 * compared by the share of entries whose move differs by more than 5% of
 * lr (a gradient whose sign the rounding flipped): below 1% (fp32), 5%
 * (tf32) or 15% (bf16); SGD moves compare like gradients.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <surge/error.h>

#ifdef HAVE_CUDA
#include <cuda_runtime.h>
#endif

#include "trainer/backend.h"
#include "trainer/mlp.h"
#include "trainer/trainer.h"
#include "trainer/trainer_internal.h"

enum { IN = 6, OUT = 96, B = 64, NTEST = 200 };

struct tol {
    double fwd, loss, grad, adam_share;
};

static const struct tol tols[] = {
    [SURGE_PRECISION_FP32] = {1e-5, 1e-5, 1e-4, 0.01},
    [SURGE_PRECISION_TF32] = {5e-3, 5e-3, 2e-2, 0.05},
    [SURGE_PRECISION_BF16] = {3e-2, 3e-2, 6e-2, 0.15},
};

static char tmpdir[256];

static void
config(struct surge_trainer_config *c, const char *backend, int precision,
       int act, int optimizer)
{
    surge_trainer_config_defaults(c);
    c->n_inputs = IN;
    c->n_outputs = OUT;
    c->n_layers = 3;
    c->layers[0] = 64;
    c->layers[1] = 128;
    c->layers[2] = 64;
    c->activation = act;
    c->optimizer = optimizer;
    c->batch_size = B;
    c->threads = 1;
    c->lr = optimizer == SURGE_OPT_SGD ? 0.05 : 1e-3;
    c->momentum = 0.0;
    c->schedule = SURGE_SCHED_COSINE;
    c->warmup_steps = 4;
    c->total_steps = 40;
    c->min_lr = c->lr / 10;
    c->precision = precision;
    snprintf(c->backend, sizeof c->backend, "%s", backend);
}

static surge_trainer *
make(const struct surge_trainer_config *c)
{
    surge_trainer *t = NULL;
    char err[512];
    int rc = surge_trainer_create(c, &t, err, sizeof err);
    if (rc != 0) {
        fail_msg("create %s: %d %s", c->backend, rc, err);
    }
    float mean = 2.0f, sd = 1.5f;
    assert_int_equal(surge_trainer_set_output_norm(t, &mean, &sd, 1), 0);
    return t;
}

static void
batch(uint64_t seed, int rows, float *x, float *y)
{
    uint64_t s = seed;
    for (int i = 0; i < rows * IN; i++) {
        x[i] = mlp_rand_sym(&s);
    }
    for (int r = 0; r < rows; r++) {
        for (int j = 0; j < OUT; j++) {
            /* A smooth target of the inputs, plus noise. */
            y[r * OUT + j] = 2.0f + sinf(3.0f * x[r * IN] + 0.1f * (float)j) +
                             0.5f * x[r * IN + 1] * x[r * IN + 2] +
                             0.1f * mlp_rand_sym(&s);
        }
    }
}

/* max |a - b| / max |b|. */
static double
rel_err(const float *a, const float *b, size_t n)
{
    double d = 0.0, m = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]);
        d = e > d ? e : d;
        m = fabs((double)b[i]) > m ? fabs((double)b[i]) : m;
    }
    return m > 0.0 ? d / m : d;
}

static float *
grads_of(surge_trainer *t)
{
    size_t np = t->mlp.n_params;
    float *g = malloc(np * sizeof *g);
    assert_non_null(g);
    assert_int_equal(t->ops->download(t->ctx, g, t->mlp.grads, np), 0);
    return g;
}

static float *
params_of(surge_trainer *t)
{
    size_t np = surge_trainer_num_params(t);
    float *p = malloc(np * sizeof *p);
    assert_non_null(p);
    assert_int_equal(surge_trainer_get_params(t, p, np), 0);
    return p;
}

/* Forward, loss, gradients and one step of optimizer on both backends. */
static void
check_vs_cpu(int precision, int act, int optimizer, double clip)
{
    const struct tol *tl = &tols[precision];
    struct surge_trainer_config cc, gc;
    config(&cc, "cpu", SURGE_PRECISION_FP32, act, optimizer);
    config(&gc, "cuda", precision, act, optimizer);
    cc.grad_clip = gc.grad_clip = clip;
    surge_trainer *cpu = make(&cc), *gpu = make(&gc);
    size_t np = surge_trainer_num_params(cpu);
    float *p0 = params_of(cpu), *q0 = params_of(gpu);
    assert_memory_equal(p0, q0, np * sizeof *p0);

    static float x[B * IN], y[B * OUT], yc[B * OUT], yg[B * OUT];
    static float w[B], rc[B], rg[B];
    batch(11, B, x, y);
    for (int r = 0; r < B; r++) {
        w[r] = 0.25f + (float)r / B;
    }
    assert_int_equal(surge_trainer_predict(cpu, x, B, yc), 0);
    assert_int_equal(surge_trainer_predict(gpu, x, B, yg), 0);
    double e = rel_err(yg, yc, B * OUT);
    print_message("# precision %s act %s: forward %.2e (tol %.0e)\n",
                  surge_trainer_precision_name(precision),
                  surge_trainer_activation_name(act), e, tl->fwd);
    assert_true(e <= tl->fwd);

    struct surge_trainer_step_info ic, ig;
    assert_int_equal(surge_trainer_step(cpu, x, y, w, B, rc, &ic), 0);
    assert_int_equal(surge_trainer_step(gpu, x, y, w, B, rg, &ig), 0);
    assert_true(fabs(ig.loss - ic.loss) <= tl->loss * ic.loss);
    assert_true(rel_err(rg, rc, B) <= tl->loss);
    assert_true(fabs(ig.grad_norm - ic.grad_norm) <= tl->grad * ic.grad_norm);
    /* The rate: the same double formula on host and device. */
    assert_true(fabs(ig.lr - ic.lr) <= 1e-12 * ic.lr);
    assert_int_equal(ig.step, 1);
    float *gcpu = grads_of(cpu), *ggpu = grads_of(gpu);
    e = rel_err(ggpu, gcpu, np);
    print_message("# gradients %.2e (tol %.0e)\n", e, tl->grad);
    assert_true(e <= tl->grad);

    float *p1 = params_of(cpu), *q1 = params_of(gpu);
    if (optimizer == SURGE_OPT_SGD) {
        /* The moves are lr * g (scaled by the clip factor): like g. */
        for (size_t i = 0; i < np; i++) {
            p1[i] -= p0[i];
            q1[i] -= q0[i];
        }
        e = rel_err(q1, p1, np);
        print_message("# sgd moves %.2e\n", e);
        assert_true(e <= tl->grad);
    } else {
        size_t off = 0;
        for (size_t i = 0; i < np; i++) {
            double dc = (double)p1[i] - p0[i], dg = (double)q1[i] - q0[i];
            if (fabs(dc - dg) > 0.05 * ic.lr) {
                off++;
            }
            /* Adam's first move is at most lr (plus a rounding of p). */
            assert_true(fabs(dg) <= 1.0001 * ic.lr + 1e-7);
        }
        print_message("# adam moves: %zu of %zu differ\n", off, np);
        assert_true((double)off <= tl->adam_share * (double)np);
    }
    free(p0);
    free(q0);
    free(p1);
    free(q1);
    free(gcpu);
    free(ggpu);
    surge_trainer_destroy(&cpu);
    surge_trainer_destroy(&gpu);
}

static void
test_fp32_relu_adam(void **state)
{
    (void)state;
    check_vs_cpu(SURGE_PRECISION_FP32, SURGE_ACT_RELU, SURGE_OPT_ADAM, 0.0);
}

static void
test_fp32_gelu_adamw(void **state)
{
    (void)state;
    check_vs_cpu(SURGE_PRECISION_FP32, SURGE_ACT_GELU, SURGE_OPT_ADAMW, 0.0);
}

static void
test_fp32_tanh_sgd_clip(void **state)
{
    (void)state;
    check_vs_cpu(SURGE_PRECISION_FP32, SURGE_ACT_TANH, SURGE_OPT_SGD, 0.05);
}

static void
test_tf32_relu_adam_clip(void **state)
{
    (void)state;
    check_vs_cpu(SURGE_PRECISION_TF32, SURGE_ACT_RELU, SURGE_OPT_ADAM, 0.5);
}

static void
test_bf16_relu_adam(void **state)
{
    (void)state;
    check_vs_cpu(SURGE_PRECISION_BF16, SURGE_ACT_RELU, SURGE_OPT_ADAM, 0.0);
}

static void
test_bf16_gelu_sgd(void **state)
{
    (void)state;
    check_vs_cpu(SURGE_PRECISION_BF16, SURGE_ACT_GELU, SURGE_OPT_SGD, 0.0);
}

/* The step replayed from its CUDA graph against the same step run eagerly:
 * bit for bit, through warmup, the cosine schedule (computed on the device
 * from its step counter), clipping and a change of batch rows (a new
 * capture). And the rate the device used is the host's formula. */
static void
test_graph_vs_eager(void **state)
{
    (void)state;
    struct surge_trainer_config c;
    config(&c, "cuda", SURGE_PRECISION_FP32, SURGE_ACT_RELU, SURGE_OPT_ADAM);
    c.grad_clip = 0.3;
    surge_trainer *eager = make(&c), *graph = make(&c);
    eager->graph_off = 1;
    static float x[B * IN], y[B * OUT];
    struct surge_trainer_step_info ie, ig;
    for (int s = 0; s < 12; s++) {
        int rows = s == 7 ? B / 2 : B;
        batch(100 + (uint64_t)s, rows, x, y);
        assert_int_equal(surge_trainer_step(eager, x, y, NULL, rows, NULL, &ie),
                         0);
        assert_int_equal(
            surge_trainer_step_async(graph, x, y, NULL, rows, NULL, 0), 0);
        assert_int_equal(surge_trainer_sync(graph, &ig), 0);
        assert_true(ie.loss == ig.loss);
        assert_true(ie.grad_norm == ig.grad_norm);
        assert_true(ie.lr == ig.lr);
        double want = trainer_lr_at(&c, (uint64_t)s);
        assert_true(fabs(ig.lr - want) <= 1e-12 * want);
        assert_int_equal(ig.step, (uint64_t)s + 1);
    }
    assert_non_null(graph->graph);
    assert_null(eager->graph);
    size_t np = surge_trainer_num_params(eager);
    float *pe = params_of(eager), *pg = params_of(graph);
    assert_memory_equal(pe, pg, np * sizeof *pe);
    free(pe);
    free(pg);
    surge_trainer_destroy(&eager);
    surge_trainer_destroy(&graph);
}

#ifdef HAVE_CUDA
/* Batches already on the device (a device-resident reservoir), queued
 * back to back without a host wait: the same steps as host batches. */
static void
test_device_batches(void **state)
{
    (void)state;
    struct surge_trainer_config c;
    config(&c, "cuda", SURGE_PRECISION_FP32, SURGE_ACT_RELU, SURGE_OPT_ADAM);
    surge_trainer *h = make(&c), *d = make(&c);
    enum { N = 6 };
    static float x[N][B * IN], y[N][B * OUT], rl[N][B], rld[N][B];
    float *dx = surge_trainer_device_alloc(d, sizeof x);
    float *dy = surge_trainer_device_alloc(d, sizeof y);
    float *drl = surge_trainer_device_alloc(d, sizeof rld);
    assert_non_null(dx);
    assert_non_null(dy);
    assert_non_null(drl);
    for (int s = 0; s < N; s++) {
        batch(300 + (uint64_t)s, B, x[s], y[s]);
    }
    assert_int_equal(cudaMemcpy(dx, x, sizeof x, cudaMemcpyHostToDevice),
                     cudaSuccess);
    assert_int_equal(cudaMemcpy(dy, y, sizeof y, cudaMemcpyHostToDevice),
                     cudaSuccess);
    for (int s = 0; s < N; s++) {
        assert_int_equal(
            surge_trainer_step(h, x[s], y[s], NULL, B, rl[s], NULL), 0);
        assert_int_equal(surge_trainer_step_async(d, dx + (size_t)s * B * IN,
                                                  dy + (size_t)s * B * OUT,
                                                  NULL, B, drl + (size_t)s * B,
                                                  SURGE_TRAINER_BATCH_DEVICE),
                         0);
    }
    struct surge_trainer_step_info info;
    assert_int_equal(surge_trainer_sync(d, &info), 0);
    assert_int_equal(info.step, N);
    assert_int_equal(cudaMemcpy(rld, drl, sizeof rld, cudaMemcpyDeviceToHost),
                     cudaSuccess);
    assert_memory_equal(rl, rld, sizeof rl);
    size_t np = surge_trainer_num_params(h);
    float *ph = params_of(h), *pd = params_of(d);
    assert_memory_equal(ph, pd, np * sizeof *ph);
    free(ph);
    free(pd);
    surge_trainer_device_free(d, dx, sizeof x);
    surge_trainer_device_free(d, dy, sizeof y);
    surge_trainer_device_free(d, drl, sizeof rld);
    surge_trainer_destroy(&h);
    surge_trainer_destroy(&d);
}
#endif

/* A checkpoint written on CUDA resumes on the CPU and the other way round;
 * a model file written on CUDA loads and predicts in surge_model (CPU). */
static void
test_checkpoint_across(void **state)
{
    (void)state;
    struct surge_trainer_config cc, gc;
    config(&cc, "cpu", SURGE_PRECISION_FP32, SURGE_ACT_RELU, SURGE_OPT_ADAM);
    config(&gc, "cuda", SURGE_PRECISION_FP32, SURGE_ACT_RELU, SURGE_OPT_ADAM);
    surge_trainer *gpu = make(&gc);
    static float x[B * IN], y[B * OUT], yg[NTEST * OUT], yc[NTEST * OUT];
    static float xt[NTEST * IN], yt[NTEST * OUT];
    for (int s = 0; s < 5; s++) {
        batch(500 + (uint64_t)s, B, x, y);
        assert_int_equal(surge_trainer_step_async(gpu, x, y, NULL, B, NULL, 0),
                         0);
    }
    batch(999, NTEST, xt, yt);
    char ck[512], ck2[512], model[512];
    snprintf(ck, sizeof ck, "%s/gpu.ckpt", tmpdir);
    snprintf(ck2, sizeof ck2, "%s/cpu.ckpt", tmpdir);
    snprintf(model, sizeof model, "%s/gpu.safetensors", tmpdir);
    assert_int_equal(surge_trainer_checkpoint_save(gpu, ck, "x", 1), 0);
    assert_int_equal(surge_trainer_steps(gpu), 5);
    assert_int_equal(surge_trainer_save_model(gpu, model, NULL), 0);
    assert_int_equal(surge_trainer_predict(gpu, xt, NTEST, yg), 0);

    surge_trainer *cpu = make(&cc);
    char err[512];
    void *extra = NULL;
    size_t extra_len = 0;
    assert_int_equal(surge_trainer_checkpoint_load(cpu, ck, &extra, &extra_len,
                                                   err, sizeof err),
                     0);
    free(extra);
    assert_int_equal(surge_trainer_steps(cpu), 5);
    assert_int_equal(surge_trainer_predict(cpu, xt, NTEST, yc), 0);
    assert_true(rel_err(yg, yc, NTEST * OUT) <= 1e-5);

    surge_model *m = NULL;
    assert_int_equal(surge_model_load(model, &m, err, sizeof err), 0);
    assert_int_equal(surge_model_predict(m, xt, NTEST, yc), 0);
    assert_true(rel_err(yg, yc, NTEST * OUT) <= 1e-5);
    surge_model_destroy(&m);

    /* One more step on each, from the same state: the same step. */
    struct surge_trainer_step_info ic, ig;
    batch(600, B, x, y);
    assert_int_equal(surge_trainer_step(cpu, x, y, NULL, B, NULL, &ic), 0);
    assert_int_equal(surge_trainer_step(gpu, x, y, NULL, B, NULL, &ig), 0);
    assert_int_equal(ic.step, 6);
    assert_int_equal(ig.step, 6);
    assert_true(fabs(ic.lr - ig.lr) <= 1e-12 * ic.lr);
    assert_true(fabs(ic.loss - ig.loss) <= 1e-5 * ic.loss);

    /* Back: the CPU's checkpoint on a fresh CUDA trainer. */
    assert_int_equal(surge_trainer_checkpoint_save(cpu, ck2, NULL, 0), 0);
    surge_trainer *gpu2 = make(&gc);
    assert_int_equal(
        surge_trainer_checkpoint_load(gpu2, ck2, NULL, NULL, err, sizeof err),
        0);
    assert_int_equal(surge_trainer_steps(gpu2), 6);
    assert_int_equal(surge_trainer_predict(cpu, xt, NTEST, yc), 0);
    assert_int_equal(surge_trainer_predict(gpu2, xt, NTEST, yg), 0);
    assert_true(rel_err(yg, yc, NTEST * OUT) <= 1e-5);
    assert_int_equal(surge_trainer_step(gpu2, x, y, NULL, B, NULL, &ig), 0);
    assert_int_equal(ig.step, 7);
    unlink(ck);
    unlink(ck2);
    unlink(model);
    surge_trainer_destroy(&cpu);
    surge_trainer_destroy(&gpu);
    surge_trainer_destroy(&gpu2);
}

/* Running out of device memory is the caller's NULL, not a fault. A CUDA
 * failure (here a device batch at an address nothing maps) reaches the user
 * as a trainer error naming the call, the file and the line, and every
 * later call fails with -EIO instead of running on a broken context. Last:
 * the fault may leave the CUDA context unusable for the process. */
static void
test_error_named(void **state)
{
    (void)state;
    struct surge_trainer_config c;
    config(&c, "cuda", SURGE_PRECISION_FP32, SURGE_ACT_RELU, SURGE_OPT_ADAM);
    surge_trainer *t = make(&c);
    static float x[B * IN], y[B * OUT];
    batch(1, B, x, y);
    assert_null(surge_trainer_device_alloc(t, (size_t)1 << 50));
    assert_null(surge_trainer_error(t));
    assert_int_equal(surge_trainer_step(t, x, y, NULL, B, NULL, NULL), 0);

    const float *bogus = (const float *)(uintptr_t)64;
    int rc = surge_trainer_step_async(t, bogus, bogus, NULL, B, NULL,
                                      SURGE_TRAINER_BATCH_DEVICE);
    assert_true(rc == 0 || rc == -EIO);
    assert_int_equal(surge_trainer_sync(t, NULL), -EIO);
    const char *e = surge_trainer_error(t);
    assert_non_null(e);
    print_message("# %s\n", e);
    assert_non_null(strstr(e, " failed: "));
    assert_non_null(strstr(e, "backend_cuda.cu:"));
    assert_int_equal(surge_trainer_step(t, x, y, NULL, B, NULL, NULL), -EIO);
    assert_int_equal(surge_trainer_step_async(t, x, y, NULL, B, NULL, 0), -EIO);
    surge_trainer_destroy(&t);
}

static int
setup_dir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/surge-test-cuda-XXXXXX");
    return mkdtemp(tmpdir) != NULL ? 0 : -1;
}

static int
remove_dir(void **state)
{
    (void)state;
    return rmdir(tmpdir) == 0 ? 0 : -1;
}

/* --probe: print "cuda" and exit 0 when a device answers, else the TAP
 * skip line (integration scripts use it to decide whether to run). */
int
main(int argc, char **argv)
{
    const struct surge_backend_ops *ops = surge_backend_find("cuda");
    void *ctx = NULL;
    char why[256] = "";
    if (ops == NULL) {
        printf("1..0 # SKIP no CUDA backend in this build (configure "
               "--with-cuda)\n");
        return 0;
    }
    if (ops->create(0, 0, &ctx, why, sizeof why) != 0) {
        printf("1..0 # SKIP %s\n", why);
        return 0;
    }
    ops->destroy(ctx);
    if (argc > 1 && strcmp(argv[1], "--probe") == 0) {
        printf("cuda\n");
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp32_relu_adam),
        cmocka_unit_test(test_fp32_gelu_adamw),
        cmocka_unit_test(test_fp32_tanh_sgd_clip),
        cmocka_unit_test(test_tf32_relu_adam_clip),
        cmocka_unit_test(test_bf16_relu_adam),
        cmocka_unit_test(test_bf16_gelu_sgd),
        cmocka_unit_test(test_graph_vs_eager),
#ifdef HAVE_CUDA
        cmocka_unit_test(test_device_batches),
#endif
        cmocka_unit_test(test_checkpoint_across),
        cmocka_unit_test(test_error_named),
    };
    return cmocka_run_group_tests_name("trainer_cuda", tests, setup_dir,
                                       remove_dir);
}
