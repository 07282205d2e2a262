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
 * All matrices are row-major. Ops are ordered: each sees the effects of
 * the ops before it on the same context (cpu: they run synchronously; cuda:
 * they are queued on one stream and return before the device is done).
 * Compute ops return nothing and take their arguments as validated by the
 * loop; a device failure inside one (a CUDA or cuBLAS status) is recorded
 * in the context, first one wins, and reported by `error` at the next sync
 * point, naming the call, file and line. Nothing aborts.
 *
 * SCALARS STAY ON THE DEVICE. No op returns a number computed from device
 * data: the loss, the gradient norm, the step counter and the scheduled
 * rate live in a struct surge_step_state in backend memory (opt_scalars
 * computes them there), and phase END publishes them to host-visible
 * memory (struct surge_step_report). So a step needs no host round trip,
 * and a backend with `graph_begin` can capture a whole step once and
 * replay it: every pointer and constant an op receives stays valid and
 * fixed between replays, and what changes from step to step (counter,
 * rate, clip factor, skip) is read from the step state by the ops.
 */
#ifndef SURGE_TRAINER_BACKEND_H
#define SURGE_TRAINER_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct surge_pool;

/* Activation codes: enum surge_trainer_activation plus the identity used by
 * the output layer. */
#define SURGE_ACT_NONE (-1)

/* One optimizer step's scalars, computed on the backend by opt_scalars
 * (phase BEGIN, and CLIP for the clip factor) from struct surge_opt_config
 * and the device step counter, in double and rounded once, so that every
 * backend applies the same numbers. */
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

/* The constants of the optimizer and its schedule: fixed for a trainer's
 * life, so a step captured in a CUDA graph carries them by value. Fields
 * as in struct surge_trainer_config. */
struct surge_opt_config {
    int kind;     /* enum surge_trainer_optimizer */
    int schedule; /* enum surge_trainer_schedule */
    double lr, min_lr, gamma;
    double beta1, beta2, eps, weight_decay, momentum;
    double grad_clip; /* 0 = off */
    long long warmup_steps, total_steps, step_size;
};

/* The scalars of the current step, in backend ("device") memory, one per
 * trainer. No op returns a scalar to the host: the loss, the gradient norm
 * and the step counter live here, so a whole step runs without a host
 * round trip and can be captured once and replayed (the learning rate is
 * computed from `step` on the backend, see opt_scalars). */
struct surge_step_state {
    double loss;      /* mse_fwd_bwd: L of the current step */
    double sumsq;     /* sumsq/opt_update: squared gradient norm (zeroed
                         by phase BEGIN) */
    double lr;        /* phase BEGIN: the scheduled rate, in double */
    uint64_t step;    /* steps taken; phase END adds 1 unless skipped */
    uint64_t skipped; /* steps skipped so far (non-finite loss or norm) */
    int skip;         /* this step: 1 = non-finite, the update is a no-op */
    int pad;
    struct surge_opt_step s; /* phase BEGIN (grad_scale: phase CLIP) */
};

/* What phase END publishes after every step to host-visible memory
 * (pinned, mapped on CUDA), so the host reads the latest finished step at
 * any time without waiting: seq is written last (after a system fence);
 * a reader takes seq, the fields, and seq again, and retries on a change. */
struct surge_step_report {
    uint64_t seq;     /* steps finished (taken + skipped) */
    uint64_t step;    /* steps taken */
    uint64_t skipped; /* steps skipped */
    double loss;      /* of the last finished step */
    double grad_norm; /* of the last finished step (before clipping) */
    double lr;        /* of the last finished step */
    int last_skipped; /* 1 when the last finished step was skipped */
    int pad;
};

enum surge_opt_phase {
    SURGE_OPT_BEGIN = 0, /* after the loss: sumsq = 0, lr and the step's
                            scalars from `step`, skip = loss not finite */
    SURGE_OPT_CLIP = 1,  /* after sumsq of all gradients: skip when the
                            norm is not finite, else grad_scale */
    SURGE_OPT_END = 2    /* after the updates: step += !skip, skipped +=
                            skip, publish struct surge_step_report */
};

struct surge_backend_ops {
    const char *name; /* "cpu", "cuda" */
    int unified;      /* 1: device pointers are host pointers, so the loop
                         may hand caller buffers to ops without upload */

    /* create: a context for threads BLAS threads (0 = leave the library's
     * own setting: OPENBLAS_NUM_THREADS) computing matrix products at
     * precision (enum surge_trainer_precision; cpu: fp32 only). 0 or a
     * negative code with a one-line reason in err (e.g. "no CUDA device"). */
    int (*create)(int threads, int precision, void **ctx, char *err,
                  size_t errlen);
    void (*destroy)(void *ctx);

    /* alloc: bytes of zeroed device memory, 64-byte aligned, pre-faulted;
     * NULL on failure. free takes the same bytes; free(ctx, NULL, n) is a
     * no-op. */
    void *(*alloc)(void *ctx, size_t bytes);
    void (*free)(void *ctx, void *p, size_t bytes);
    /* host_alloc: host memory fit for fast upload (cpu: same as alloc;
     * cuda: pinned). */
    void *(*host_alloc)(void *ctx, size_t bytes);
    void (*host_free)(void *ctx, void *p, size_t bytes);
    /* mapped_alloc: zeroed host memory the device can write (cuda: pinned
     * and mapped); *dev receives the pointer ops use for it. Freed with
     * host_free. NULL on failure. */
    void *(*mapped_alloc)(void *ctx, size_t bytes, void **dev);
    /* upload/download: copy n floats host <-> device; upload may return
     * before the device has the data (the source may be reused at once),
     * download returns with the data on the host (it waits for every op
     * queued before it). copy: device to device, ordered like the ops.
     * 0 or negative (the reason in `error`). */
    int (*upload)(void *ctx, float *dst, const float *src, size_t n);
    int (*download)(void *ctx, float *dst, const float *src, size_t n);
    int (*copy)(void *ctx, float *dst, const float *src, size_t n);
    /* sync: wait for every queued op. 0, or -EIO once an op failed. */
    int (*sync)(void *ctx);
    /* error: the first failure recorded ("cublasLtMatmul failed:
     * CUBLAS_STATUS_... (trainer/backend_cuda.cu:123)"), NULL if none. */
    const char *(*error)(void *ctx);
    /* graph_begin / graph_end: capture the ops called in between (no sync,
     * no alloc in between) into *graph; graph_launch replays it;
     * graph_free releases it. NULL on backends without graphs (cpu). On a
     * capture failure graph_end returns negative and the context is usable
     * again (ops run eagerly). */
    int (*graph_begin)(void *ctx);
    int (*graph_end)(void *ctx, void **graph);
    int (*graph_launch)(void *ctx, void *graph);
    void (*graph_free)(void *ctx, void *graph);
    /* stream: the native stream the ops are queued on (cudaStream_t), so
     * callers can order their own device work with the trainer's; NULL on
     * cpu. */
    void *(*stream)(void *ctx);

    /* gemm: C (m, n) = alpha op(A) op(B) + beta C; op(A) is (m, k), op(B)
     * (k, n); trans_x = 1 means X is stored transposed. */
    void (*gemm)(void *ctx, int trans_a, int trans_b, int m, int n, int k,
                 float alpha, const float *a, int lda, const float *b, int ldb,
                 float beta, float *c, int ldc);

    /* linear_fwd: optional (NULL: the loop calls gemm then bias_act_fwd).
     * The whole forward of a linear layer, z = x W^T then a = act(z + b),
     * x (rows, in), w (out, in), fused where the backend can (cuBLASLt
     * bias and ReLU epilogues). Same contract as the pair it replaces. */
    void (*linear_fwd)(void *ctx, int act, int rows, int out, int in,
                       const float *x, const float *w, const float *bias,
                       float *z, float *a);

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
     * not NULL (unweighted l_i), and L to *loss (device memory). */
    void (*mse_fwd_bwd)(void *ctx, int rows, int cols, const float *pred,
                        const float *target, const float *shift,
                        const float *scale, int per_col, const float *weight,
                        float *dpred, float *db, float *row_loss, double *loss);

    /* sumsq: *acc += sum of x[i]^2 over n floats, accumulated in double
     * (acc in device memory). */
    void (*sumsq)(void *ctx, const float *x, size_t n, double *acc);

    /* opt_scalars: run phase (enum surge_opt_phase) of trainer/
     * opt_scalars.h on st (device memory); phase END publishes to rep (the
     * device pointer of a mapped_alloc'ed struct surge_step_report). */
    void (*opt_scalars)(void *ctx, const struct surge_opt_config *c,
                        struct surge_step_state *st, int phase,
                        struct surge_step_report *rep);

    /* opt_update: one fused pass over n parameters with the scalars of st
     * (device memory): nothing when st->skip, else g = grad * grad_scale,
     * then the update of st->s.kind on p with state m (adam: first moment;
     * sgd: momentum buffer) and v (adam: second moment; sgd: unused, may be
     * NULL). When acc is not NULL, *acc += sum of grad[i]^2 (before
     * scaling, in double), so the norm is free when clipping is off. */
    void (*opt_update)(void *ctx, const struct surge_step_state *st, float *p,
                       const float *grad, float *m, float *v, size_t n,
                       double *acc);

    /* pool: the host threads the ops run their passes on (cpu: as many as
     * the context's BLAS threads; common/pool.h), for the caller's own
     * host passes between steps (the batch gather); NULL when the backend
     * has none (cuda). Owned by the context. */
    struct surge_pool *(*pool)(void *ctx);

    /* times: add to t[SURGE_BACKEND_TIME_*] the nanoseconds the ops of
     * ctx spent so far in each kind of pass, measured around each op on
     * the calling thread (cpu; NULL where ops return before the work is
     * done: cuda). */
    void (*times)(void *ctx, uint64_t *t);
};

/* The kinds of pass `times` tells apart. */
enum surge_backend_time {
    SURGE_BACKEND_TIME_GEMM = 0,  /* gemm */
    SURGE_BACKEND_TIME_PASSES,    /* affine, bias_act, act_bwd, mse */
    SURGE_BACKEND_TIME_OPTIMIZER, /* sumsq, opt_update */
    SURGE_BACKEND_TIME_N
};

/* The backends compiled in. surge_backend_find returns NULL for an unknown
 * name or one not compiled in ("cuda" without --with-cuda); "auto" is not a
 * backend (trainer.c resolves it). */
extern const struct surge_backend_ops surge_backend_cpu;
#ifdef HAVE_CUDA
extern const struct surge_backend_ops surge_backend_cuda;
#endif
const struct surge_backend_ops *surge_backend_find(const char *name);

#ifdef __cplusplus
}
#endif
#endif /* SURGE_TRAINER_BACKEND_H */
