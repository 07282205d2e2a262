/*
 * trainer/backend.h - the operations a trainer backend provides.
 *
 * DESIGN. The training loop (trainer/mlp.c, trainer/trainer.c) never touches
 * tensor memory itself: every allocation, matrix product, elementwise pass
 * and optimizer update goes through a struct surge_backend_ops. The "cpu"
 * backend (backend_cpu.c) runs on OpenBLAS; a "cuda" backend (cuBLAS and
 * kernels, behind HAVE_CUDA) only has to fill the same table. "Device"
 * pointers below are the backend's memory: plain host memory for cpu.
 *
 * Memory passes are fused on purpose (PERF-NOTES: the matrix products are
 * the bound, every extra pass over a (B, 4096) tensor or over the parameters
 * is overhead): bias and activation in one pass after the product; the
 * activation derivative and the bias gradient in one pass; the output
 * normalisation, loss, its gradient, the last bias gradient and the per-row
 * losses in one pass; the whole optimizer update (weight decay, moments, bias
 * correction, gradient scaling for clipping, and the gradient norm) in one
 * pass over the flat parameter vector.
 *
 * All matrices are row-major. Unless stated, ops cannot fail (the arguments
 * were validated by the loop) and run synchronously with respect to the
 * next op on the same backend context.
 */
#ifndef SURGE_TRAINER_BACKEND_H
#define SURGE_TRAINER_BACKEND_H

#include <stddef.h>

/* Activation codes: enum surge_trainer_activation plus the identity used by
 * the output layer. */
#define SURGE_ACT_NONE (-1)

/* One optimizer step's scalars, computed by the loop (in double, then
 * rounded once) so that every backend applies the same numbers. */
struct surge_opt_step {
    int kind;           /* enum surge_trainer_optimizer */
    float lr;           /* scheduled learning rate */
    float beta1, beta2; /* adam(w) */
    float eps;          /* adam(w) */
    float weight_decay; /* adam, sgd: L2 into g; adamw: decoupled */
    float momentum;     /* sgd */
    float step_size;    /* adam(w): lr / (1 - beta1^t) */
    float inv_bc2_sqrt; /* adam(w): 1 / sqrt(1 - beta2^t) */
    float decay;        /* adamw: 1 - lr * weight_decay */
    float grad_scale;   /* clip factor applied to g first (1 = none) */
    int first;          /* sgd: 1 on the first step (buf = g) */
};

struct surge_backend_ops {
    const char *name; /* "cpu", "cuda" */
    int unified;      /* 1: device pointers are host pointers, so the loop
                         may hand caller buffers to ops without upload */

    /* create: a context for threads BLAS threads (0 = leave the library's
     * own setting: OPENBLAS_NUM_THREADS). 0 or -errno. */
    int (*create)(int threads, void **ctx);
    void (*destroy)(void *ctx);

    /* alloc: bytes of zeroed device memory, 64-byte aligned, pre-faulted;
     * NULL on failure. free takes the same bytes; free(ctx, NULL, n) is a
     * no-op. */
    void *(*alloc)(void *ctx, size_t bytes);
    void (*free)(void *ctx, void *p, size_t bytes);
    /* host_alloc: host memory fit for fast upload (cpu: same as alloc). */
    void *(*host_alloc)(void *ctx, size_t bytes);
    void (*host_free)(void *ctx, void *p, size_t bytes);
    /* upload/download: copy n floats host <-> device. 0 or negative. */
    int (*upload)(void *ctx, float *dst, const float *src, size_t n);
    int (*download)(void *ctx, float *dst, const float *src, size_t n);

    /* gemm: C (m, n) = alpha op(A) op(B) + beta C; op(A) is (m, k), op(B)
     * (k, n); trans_x = 1 means X is stored transposed. */
    void (*gemm)(void *ctx, int trans_a, int trans_b, int m, int n, int k,
                 float alpha, const float *a, int lda, const float *b, int ldb,
                 float beta, float *c, int ldc);

    /* affine: normalise, y = (x - shift) * scale (inverse = 0), or undo
     * it, y = x * scale + shift (inverse = 1; the caller passes std as
     * scale and mean as shift). y, x (rows, cols); shift and scale have
     * cols entries (per_col = 1) or one (per_col = 0). In place ok. */
    void (*affine)(void *ctx, int rows, int cols, const float *x,
                   const float *shift, const float *scale, int per_col,
                   int inverse, float *y);

    /* bias_act_fwd: z (rows, cols) holds x W^T; adds bias (cols) to every
     * row, then a = act(z). With act relu/tanh/none a may equal z (in
     * place: z is not kept); gelu needs z kept (a != z). */
    void (*bias_act_fwd)(void *ctx, int act, int rows, int cols,
                         const float *bias, float *z, float *a);

    /* act_bwd: d (rows, cols) holds dL/da on entry and dL/dz on return
     * (d *= act'(z)); db (cols) = column sums of dL/dz. relu and tanh use
     * the output a, gelu uses z (the other may be NULL). */
    void (*act_bwd)(void *ctx, int act, int rows, int cols, const float *z,
                    const float *a, float *d, float *db);

    /* mse_fwd_bwd: the loss of trainer.h's LOSS. pred (rows, cols) is the
     * network output (normalised units); target (rows, cols) physical units
     * normalised on the fly as (target - shift) * scale (per_col as in
     * affine); weight (rows) or NULL. Writes dpred (rows, cols) = dL/dpred
     * (may equal pred), db (cols) = its column sums, row_loss (rows) when
     * not NULL (unweighted l_i), and returns L. */
    double (*mse_fwd_bwd)(void *ctx, int rows, int cols, const float *pred,
                          const float *target, const float *shift,
                          const float *scale, int per_col, const float *weight,
                          float *dpred, float *db, float *row_loss);

    /* sumsq: sum of x[i]^2 over n floats, accumulated in double. */
    double (*sumsq)(void *ctx, const float *x, size_t n);

    /* opt_update: one fused pass over n parameters: g = grad * grad_scale,
     * then the update of struct surge_opt_step's kind on p with state m
     * (adam: first moment; sgd: momentum buffer) and v (adam: second
     * moment; sgd: unused, may be NULL). Returns sum of grad[i]^2 (before
     * scaling, in double), so the norm is free when clipping is off. */
    double (*opt_update)(void *ctx, const struct surge_opt_step *s, float *p,
                         const float *grad, float *m, float *v, size_t n);
};

/* The backends compiled in. surge_backend_find returns NULL for an unknown
 * or unavailable name. */
extern const struct surge_backend_ops surge_backend_cpu;
const struct surge_backend_ops *surge_backend_find(const char *name);

#endif /* SURGE_TRAINER_BACKEND_H */
