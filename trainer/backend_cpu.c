/*
 * trainer/backend_cpu.c - the "cpu" backend: OpenBLAS sgemm for the matrix
 * products, plain C loops for everything else.
 *
 * DESIGN. The matrix products are the bound (PERF-NOTES: ~102 ms of sgemm a
 * step for the reference MLP on one thread); everything here is a memory
 * pass and must stay a small fraction of that. So: one pass per fused op,
 * loops written so GCC vectorises them (built with -O3 -fno-math-errno
 * -fopenmp-simd: sqrtf becomes sqrtps, and `omp simd reduction` lets a
 * float/double sum vectorise without -ffast-math; the summation order is
 * then fixed by the vector width, so results stay bit-reproducible for a
 * given build and machine). Row reductions are accumulated in float within
 * a row (rows are at most a few thousand wide) and in double across rows.
 * Memory comes pre-faulted, with transparent huge pages when large, since
 * first touches are expensive on this kind of machine (PERF-NOTES).
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>

#include <surge/error.h>

#include "common/util.h"
#include "trainer/backend.h"
#include "trainer/opt_scalars.h"
#include "trainer/trainer.h"

#define HUGE_PAGE ((size_t)2 << 20)

struct cpu_ctx {
    int threads; /* threads given to OpenBLAS, 0 = its own setting */
};

static int
cpu_create(int threads, int precision, void **ctx, char *err, size_t errlen)
{
    if (precision != SURGE_PRECISION_FP32) {
        surge_set_err(err, errlen,
                      "trainer.precision: the cpu backend computes in fp32 "
                      "only (got %s)",
                      surge_trainer_precision_name(precision));
        return SURGE_ECONFIG;
    }
    struct cpu_ctx *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return -ENOMEM;
    }
    c->threads = threads;
    if (threads > 0) {
        /* Process-wide in OpenBLAS: the header says so. */
        openblas_set_num_threads(threads);
    }
    *ctx = c;
    return 0;
}

static void
cpu_destroy(void *ctx)
{
    free(ctx);
}

/* Big buffers (parameters, optimizer state, workspace) come from common's
 * huge-page allocator, pre-faulted; small ones from the heap, zeroed. */
static void *
cpu_alloc(void *ctx, size_t bytes)
{
    (void)ctx;
    if (bytes >= HUGE_PAGE) {
        return surge_huge_alloc(bytes);
    }
    void *p = NULL;
    size_t size = bytes > 0 ? (bytes + 63) / 64 * 64 : 64;
    if (posix_memalign(&p, 64, size) != 0) {
        return NULL;
    }
    memset(p, 0, size);
    return p;
}

static void
cpu_free(void *ctx, void *p, size_t bytes)
{
    (void)ctx;
    if (p == NULL) {
        return;
    }
    if (bytes >= HUGE_PAGE) {
        surge_huge_free(p, bytes);
    } else {
        free(p);
    }
}

static int
cpu_copy(void *ctx, float *dst, const float *src, size_t n)
{
    (void)ctx;
    if (n > 0 && dst != src) {
        memcpy(dst, src, n * sizeof *dst);
    }
    return 0;
}

static void *
cpu_mapped_alloc(void *ctx, size_t bytes, void **dev)
{
    void *p = cpu_alloc(ctx, bytes);
    *dev = p;
    return p;
}

static int
cpu_sync(void *ctx)
{
    (void)ctx;
    return 0;
}

static const char *
cpu_error(void *ctx)
{
    (void)ctx;
    return NULL;
}

static void *
cpu_stream(void *ctx)
{
    (void)ctx;
    return NULL;
}

static void
cpu_gemm(void *ctx, int trans_a, int trans_b, int m, int n, int k, float alpha,
         const float *a, int lda, const float *b, int ldb, float beta, float *c,
         int ldc)
{
    (void)ctx;
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b,
                ldb, beta, c, ldc);
}

static void
cpu_affine(void *ctx, int rows, int cols, const float *x, const float *shift,
           const float *scale, int per_col, int inverse, float *y)
{
    (void)ctx;
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        float *yr = y + (size_t)r * cols;
        if (!per_col) {
            float s = shift[0];
            float k = scale[0];
            if (inverse) {
                for (int j = 0; j < cols; j++) {
                    yr[j] = xr[j] * k + s;
                }
            } else {
                for (int j = 0; j < cols; j++) {
                    yr[j] = (xr[j] - s) * k;
                }
            }
        } else if (inverse) {
            for (int j = 0; j < cols; j++) {
                yr[j] = xr[j] * scale[j] + shift[j];
            }
        } else {
            for (int j = 0; j < cols; j++) {
                yr[j] = (xr[j] - shift[j]) * scale[j];
            }
        }
    }
}

/* GELU, exact (torch.nn.GELU()): x * Phi(x), Phi the normal CDF. */
static inline float
gelu(float x)
{
    return 0.5f * x * (1.0f + erff(x * (float)M_SQRT1_2));
}

/* d/dx x Phi(x) = Phi(x) + x phi(x). */
static inline float
gelu_grad(float x)
{
    float cdf = 0.5f * (1.0f + erff(x * (float)M_SQRT1_2));
    float pdf = expf(-0.5f * x * x) * (float)(0.5 * M_2_SQRTPI * M_SQRT1_2);
    return cdf + x * pdf;
}

static void
cpu_bias_act_fwd(void *ctx, int act, int rows, int cols, const float *bias,
                 float *z, float *a)
{
    (void)ctx;
    for (int r = 0; r < rows; r++) {
        float *zr = z + (size_t)r * cols;
        float *ar = a + (size_t)r * cols;
        switch (act) {
        case SURGE_ACT_RELU:
            for (int j = 0; j < cols; j++) {
                float v = zr[j] + bias[j];
                ar[j] = v > 0.0f ? v : 0.0f;
            }
            break;
        case SURGE_ACT_TANH:
            for (int j = 0; j < cols; j++) {
                ar[j] = tanhf(zr[j] + bias[j]);
            }
            break;
        case SURGE_ACT_GELU:
            for (int j = 0; j < cols; j++) {
                float v = zr[j] + bias[j];
                zr[j] = v;
                ar[j] = gelu(v);
            }
            break;
        default: /* SURGE_ACT_NONE */
            for (int j = 0; j < cols; j++) {
                ar[j] = zr[j] + bias[j];
            }
            break;
        }
    }
}

static void
cpu_act_bwd(void *ctx, int act, int rows, int cols, const float *z,
            const float *a, float *d, float *db)
{
    (void)ctx;
    memset(db, 0, (size_t)cols * sizeof *db);
    for (int r = 0; r < rows; r++) {
        float *dr = d + (size_t)r * cols;
        const float *ar = a != NULL ? a + (size_t)r * cols : NULL;
        const float *zr = z != NULL ? z + (size_t)r * cols : NULL;
        switch (act) {
        case SURGE_ACT_RELU:
            for (int j = 0; j < cols; j++) {
                float g = ar[j] > 0.0f ? dr[j] : 0.0f;
                dr[j] = g;
                db[j] += g;
            }
            break;
        case SURGE_ACT_TANH:
            for (int j = 0; j < cols; j++) {
                float g = dr[j] * (1.0f - ar[j] * ar[j]);
                dr[j] = g;
                db[j] += g;
            }
            break;
        case SURGE_ACT_GELU:
            for (int j = 0; j < cols; j++) {
                float g = dr[j] * gelu_grad(zr[j]);
                dr[j] = g;
                db[j] += g;
            }
            break;
        default: /* SURGE_ACT_NONE */
            for (int j = 0; j < cols; j++) {
                db[j] += dr[j];
            }
            break;
        }
    }
}

static void
cpu_mse_fwd_bwd(void *ctx, int rows, int cols, const float *pred,
                const float *target, const float *shift, const float *scale,
                int per_col, const float *weight, float *dpred, float *db,
                float *row_loss, double *loss)
{
    (void)ctx;
    double total = 0.0;
    /* dL/dpred = 2 w_i (pred - t) / (rows * cols). */
    double coef = 2.0 / ((double)rows * (double)cols);
    memset(db, 0, (size_t)cols * sizeof *db);
    for (int r = 0; r < rows; r++) {
        const float *pr = pred + (size_t)r * cols;
        const float *tr = target + (size_t)r * cols;
        float *dr = dpred + (size_t)r * cols;
        float w = weight != NULL ? weight[r] : 1.0f;
        float k = (float)(coef * w);
        float s = 0.0f;
        if (per_col) {
#pragma omp simd reduction(+ : s)
            for (int j = 0; j < cols; j++) {
                float e = pr[j] - (tr[j] - shift[j]) * scale[j];
                float g = k * e;
                s += e * e;
                dr[j] = g;
                db[j] += g;
            }
        } else {
            float sh = shift[0];
            float sc = scale[0];
#pragma omp simd reduction(+ : s)
            for (int j = 0; j < cols; j++) {
                float e = pr[j] - (tr[j] - sh) * sc;
                float g = k * e;
                s += e * e;
                dr[j] = g;
                db[j] += g;
            }
        }
        double l = (double)s / (double)cols;
        if (row_loss != NULL) {
            row_loss[r] = (float)l;
        }
        total += (double)w * l;
    }
    *loss = total / (double)rows;
}

/* Blocks keep float partial sums short (accuracy) and the inner loop free
 * of double conversions (speed). */
#define SUM_BLOCK 4096

static void
cpu_sumsq(void *ctx, const float *x, size_t n, double *acc)
{
    (void)ctx;
    double total = 0.0;
    for (size_t i0 = 0; i0 < n; i0 += SUM_BLOCK) {
        size_t i1 = n - i0 < SUM_BLOCK ? n : i0 + SUM_BLOCK;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (size_t i = i0; i < i1; i++) {
            s += x[i] * x[i];
        }
        total += s;
    }
    *acc += total;
}

static void
cpu_opt_scalars(void *ctx, const struct surge_opt_config *c,
                struct surge_step_state *st, int phase,
                struct surge_step_report *rep)
{
    (void)ctx;
    surge_opt_scalars_run(c, st, phase, rep);
    if (phase == SURGE_OPT_END) {
        rep->seq = st->step + st->skipped;
    }
}

/* The fused optimizer pass. Each kind is its own branch-free loop over a
 * block; the gradient's squared norm rides along for free. */
static void
cpu_opt_update(void *ctx, const struct surge_step_state *state,
               float *restrict p, const float *restrict grad, float *restrict m,
               float *restrict v, size_t n, double *acc)
{
    (void)ctx;
    if (state->skip) {
        return;
    }
    const struct surge_opt_step *st = &state->s;
    const float gs = st->grad_scale;
    const float wd = st->weight_decay;
    const float b1 = st->beta1, c1 = 1.0f - st->beta1;
    const float b2 = st->beta2, c2 = 1.0f - st->beta2;
    const float step = st->step_size, ibc2 = st->inv_bc2_sqrt;
    const float eps = st->eps, decay = st->decay;
    const float lr = st->lr, mom = st->momentum;
    double total = 0.0;

    for (size_t i0 = 0; i0 < n; i0 += SUM_BLOCK) {
        size_t i1 = n - i0 < SUM_BLOCK ? n : i0 + SUM_BLOCK;
        float s = 0.0f;
        switch (st->kind) {
        case SURGE_OPT_ADAM:
#pragma omp simd reduction(+ : s)
            for (size_t i = i0; i < i1; i++) {
                float g0 = grad[i];
                float g = g0 * gs + wd * p[i];
                float mi = b1 * m[i] + c1 * g;
                float vi = b2 * v[i] + c2 * (g * g);
                s += g0 * g0;
                m[i] = mi;
                v[i] = vi;
                p[i] -= step * mi / (sqrtf(vi) * ibc2 + eps);
            }
            break;
        case SURGE_OPT_ADAMW:
#pragma omp simd reduction(+ : s)
            for (size_t i = i0; i < i1; i++) {
                float g0 = grad[i];
                float g = g0 * gs;
                float mi = b1 * m[i] + c1 * g;
                float vi = b2 * v[i] + c2 * (g * g);
                s += g0 * g0;
                m[i] = mi;
                v[i] = vi;
                p[i] = p[i] * decay - step * mi / (sqrtf(vi) * ibc2 + eps);
            }
            break;
        default: /* SURGE_OPT_SGD */
            if (st->first) {
#pragma omp simd reduction(+ : s)
                for (size_t i = i0; i < i1; i++) {
                    float g0 = grad[i];
                    float g = g0 * gs + wd * p[i];
                    s += g0 * g0;
                    m[i] = g;
                    p[i] -= lr * g;
                }
            } else {
#pragma omp simd reduction(+ : s)
                for (size_t i = i0; i < i1; i++) {
                    float g0 = grad[i];
                    float g = g0 * gs + wd * p[i];
                    float bi = mom * m[i] + g;
                    s += g0 * g0;
                    m[i] = bi;
                    p[i] -= lr * bi;
                }
            }
            break;
        }
        total += s;
    }
    if (acc != NULL) {
        *acc += total;
    }
}

const struct surge_backend_ops surge_backend_cpu = {
    .name = "cpu",
    .unified = 1,
    .create = cpu_create,
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .host_alloc = cpu_alloc,
    .host_free = cpu_free,
    .mapped_alloc = cpu_mapped_alloc,
    .upload = cpu_copy,
    .download = cpu_copy,
    .copy = cpu_copy,
    .sync = cpu_sync,
    .error = cpu_error,
    .stream = cpu_stream,
    .gemm = cpu_gemm,
    .linear_fwd = NULL,
    .affine = cpu_affine,
    .bias_act_fwd = cpu_bias_act_fwd,
    .act_bwd = cpu_act_bwd,
    .mse_fwd_bwd = cpu_mse_fwd_bwd,
    .sumsq = cpu_sumsq,
    .opt_scalars = cpu_opt_scalars,
    .opt_update = cpu_opt_update,
};

const struct surge_backend_ops *
surge_backend_find(const char *name)
{
    if (name == NULL) {
        return NULL;
    }
    if (strcmp(name, "cpu") == 0) {
        return &surge_backend_cpu;
    }
#ifdef HAVE_CUDA
    if (strcmp(name, "cuda") == 0) {
        return &surge_backend_cuda;
    }
#endif
    return NULL;
}
