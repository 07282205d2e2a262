/*
 * trainer/backend_cuda.cu - the "cuda" backend: cuBLASLt for the matrix
 * products (bias and ReLU fused into the forward product's epilogue), own
 * kernels for every other pass, all queued on one stream.
 *
 * DESIGN. The loop (trainer/trainer.c) is written against the ops table and
 * never reads a device number back during a step (backend.h SCALARS STAY
 * ON THE DEVICE), so every op here only queues work: kernels and cuBLASLt
 * calls on c->stream. That makes a whole step capturable in a CUDA graph:
 * nothing here allocates, synchronises or reads the device outside create,
 * alloc/free, download and sync. The matrix products are the bound; every
 * other pass is one read and at most one write of its tensor.
 *
 * Reductions are deterministic (no atomics): column sums (bias gradients)
 * go through per-slice partial sums in c->part and a second pass in fixed
 * order; squared norms through per-block partials in c->dpart, summed in
 * double by one block. So a step gives the same bits every time on the
 * same GPU and precision.
 *
 * Precision (trainer.precision) is the cuBLAS compute type of the products:
 * fp32 CUBLAS_COMPUTE_32F, tf32 CUBLAS_COMPUTE_32F_FAST_TF32, bf16
 * CUBLAS_COMPUTE_32F_FAST_16BF (inputs rounded to bf16 inside the product,
 * float32 accumulation). Tensors in memory stay float32: master weights,
 * gradients and optimizer state are float32 by construction.
 *
 * ERRORS. Every CUDA and cuBLASLt status is checked. The first failure is
 * kept in the context as "<call> failed: <reason> (<file>:<line>)"; ops
 * cannot return it, so the loop asks `error` at its sync points and the
 * user gets -EIO and surge_trainer_error. Nothing aborts.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <surge/error.h>

#include "trainer/backend.h"
#include "trainer/opt_scalars.h"
#include "trainer/trainer.h"

#define THREADS 256                   /* elementwise and reduction blocks */
#define RED_BLOCKS 512                /* partial sums of a squared norm */
#define MAX_GRID 4096                 /* grid-stride loops beyond this */
#define COL_TILE 32                   /* columns per column-sum block */
#define COL_ROWS 8                    /* rows of threads per such block */
#define PART_FLOATS ((size_t)4 << 20) /* column partial sums: 16 MiB */
#define LT_WORKSPACE ((size_t)32 << 20)
#define N_PLANS 64 /* cached cuBLASLt descriptors and algorithms */

/* One cuBLASLt product shape, its descriptors and its algorithm. */
struct plan {
    int used;
    int ta, tb, m, n, k, lda, ldb, ldc, epi; /* the key, with the */
    int al_a, al_b, al_c;                    /* pointer alignments */
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
};

struct cuda_ctx {
    int device;                  /* the CUDA device (current at create) */
    cudaStream_t stream;         /* every op is queued here */
    cublasLtHandle_t lt;         /* cuBLASLt */
    cublasComputeType_t compute; /* from the precision */
    void *ws;                    /* (LT_WORKSPACE bytes) cuBLASLt scratch */
    float *part;                 /* (PART_FLOATS) column partial sums */
    double *dpart;               /* (RED_BLOCKS) norm partial sums */
    double *rowl;                /* (SURGE_TRAINER_MAX_BATCH) w_i l_i */
    struct plan plans[N_PLANS];  /* cache, filled in order */
    int next_plan;               /* the slot to reuse when full */
    int no_epilogue;             /* 1: cuBLASLt refused a bias epilogue */
    int failed;                  /* 1 once a call failed */
    char err[384];               /* the first failure */
};

/* Record the first failure; later ones are consequences. */
static void
fail_at(struct cuda_ctx *c, const char *call, const char *why, const char *file,
        int line)
{
    if (c->failed) {
        return;
    }
    c->failed = 1;
    snprintf(c->err, sizeof c->err, "%s failed: %s (%s:%d)", call, why, file,
             line);
}

static int
cu_check(struct cuda_ctx *c, cudaError_t e, const char *call, const char *file,
         int line)
{
    if (e == cudaSuccess) {
        return 0;
    }
    fail_at(c, call, cudaGetErrorString(e), file, line);
    /* Clear the runtime's last error, so that the next launch check does
     * not report this failure again under another name. */
    (void)cudaGetLastError();
    return -EIO;
}

static int
lt_check(struct cuda_ctx *c, cublasStatus_t s, const char *call,
         const char *file, int line)
{
    if (s == CUBLAS_STATUS_SUCCESS) {
        return 0;
    }
    fail_at(c, call, cublasLtGetStatusName(s), file, line);
    return -EIO;
}

/* CU(c, cudaFoo, (args)): call, check, name the call, file and line. */
#define CU(c, fn, args) cu_check((c), fn args, #fn, __FILE__, __LINE__)
#define LT(c, fn, args) lt_check((c), fn args, #fn, __FILE__, __LINE__)
/* After a kernel launch: launch errors (bad configuration) show here. */
#define LAUNCHED(c, name)                                                      \
    cu_check((c), cudaGetLastError(), "launch " name, __FILE__, __LINE__)

static unsigned
grid_for(size_t n, size_t cap)
{
    size_t b = (n + THREADS - 1) / THREADS;
    if (b < 1) {
        b = 1;
    }
    return (unsigned)(b < cap ? b : cap);
}

static void
set_err(char *err, size_t errlen, const char *msg)
{
    if (err != NULL && errlen > 0) {
        snprintf(err, errlen, "%s", msg);
    }
}

static void cuda_destroy(void *ctx);

static int
cuda_create(int threads, int precision, void **out, char *err, size_t errlen)
{
    (void)threads;
    char msg[384];
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n < 1) {
        snprintf(msg, sizeof msg, "no CUDA device (cudaGetDeviceCount: %s)",
                 e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        set_err(err, errlen, msg);
        (void)cudaGetLastError(); /* not sticky: clear it */
        return -ENODEV;
    }
    struct cuda_ctx *c = (struct cuda_ctx *)calloc(1, sizeof *c);
    if (c == NULL) {
        set_err(err, errlen, "out of memory");
        return -ENOMEM;
    }
    switch (precision) {
    case SURGE_PRECISION_TF32:
        c->compute = CUBLAS_COMPUTE_32F_FAST_TF32;
        break;
    case SURGE_PRECISION_BF16:
        c->compute = CUBLAS_COMPUTE_32F_FAST_16BF;
        break;
    default:
        c->compute = CUBLAS_COMPUTE_32F;
        break;
    }
    int rc = CU(c, cudaGetDevice, (&c->device));
    if (rc == 0) {
        rc = CU(c, cudaStreamCreateWithFlags,
                (&c->stream, cudaStreamNonBlocking));
    }
    if (rc == 0) {
        rc = LT(c, cublasLtCreate, (&c->lt));
    }
    if (rc == 0) {
        rc = CU(c, cudaMalloc, (&c->ws, LT_WORKSPACE));
    }
    if (rc == 0) {
        rc =
            CU(c, cudaMalloc, ((void **)&c->part, PART_FLOATS * sizeof(float)));
    }
    if (rc == 0) {
        rc = CU(c, cudaMalloc,
                ((void **)&c->dpart, RED_BLOCKS * sizeof(double)));
    }
    if (rc == 0) {
        rc = CU(c, cudaMalloc,
                ((void **)&c->rowl,
                 (size_t)SURGE_TRAINER_MAX_BATCH * sizeof(double)));
    }
    if (rc != 0) {
        set_err(err, errlen, c->err);
        cuda_destroy(c);
        return -EIO;
    }
    *out = c;
    return 0;
}

static void
cuda_destroy(void *ctx)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (c == NULL) {
        return;
    }
    if (c->stream != NULL) {
        (void)cudaStreamSynchronize(c->stream);
    }
    for (int i = 0; i < N_PLANS; i++) {
        struct plan *p = &c->plans[i];
        if (p->used) {
            (void)cublasLtMatrixLayoutDestroy(p->la);
            (void)cublasLtMatrixLayoutDestroy(p->lb);
            (void)cublasLtMatrixLayoutDestroy(p->lc);
            (void)cublasLtMatmulDescDestroy(p->desc);
        }
    }
    (void)cudaFree(c->rowl);
    (void)cudaFree(c->dpart);
    (void)cudaFree(c->part);
    (void)cudaFree(c->ws);
    if (c->lt != NULL) {
        (void)cublasLtDestroy(c->lt);
    }
    if (c->stream != NULL) {
        (void)cudaStreamDestroy(c->stream);
    }
    free(c);
}

/* Device memory, zeroed in stream order (the ops that use it come after).
 * Running out of device memory is the caller's to handle (NULL), not a
 * fault of the context: it is not recorded. */
static void *
cuda_alloc(void *ctx, size_t bytes)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    size_t size = bytes > 0 ? bytes : 64;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, size);
    if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        return NULL;
    }
    if (cu_check(c, e, "cudaMalloc", __FILE__, __LINE__) != 0) {
        return NULL;
    }
    if (CU(c, cudaMemsetAsync, (p, 0, size, c->stream)) != 0) {
        (void)cudaFree(p);
        return NULL;
    }
    return p;
}

static void
cuda_free(void *ctx, void *p, size_t bytes)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    (void)bytes;
    if (p != NULL) {
        (void)CU(c, cudaFree, (p));
    }
}

static void *
cuda_host_alloc(void *ctx, size_t bytes)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    size_t size = bytes > 0 ? bytes : 64;
    void *p = NULL;
    if (CU(c, cudaHostAlloc, (&p, size, cudaHostAllocDefault)) != 0) {
        return NULL;
    }
    memset(p, 0, size);
    return p;
}

static void
cuda_host_free(void *ctx, void *p, size_t bytes)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    (void)bytes;
    if (p != NULL) {
        (void)CU(c, cudaFreeHost, (p));
    }
}

static void *
cuda_mapped_alloc(void *ctx, size_t bytes, void **dev)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    size_t size = bytes > 0 ? bytes : 64;
    void *p = NULL;
    if (CU(c, cudaHostAlloc, (&p, size, cudaHostAllocMapped)) != 0) {
        return NULL;
    }
    memset(p, 0, size);
    if (CU(c, cudaHostGetDevicePointer, (dev, p, 0)) != 0) {
        (void)cudaFreeHost(p);
        return NULL;
    }
    return p;
}

/* copy_wait - n floats from src to dst in the given direction on the
 * context's stream, returning once they are there: upload and download
 * hand host memory back to the caller, which may reuse it at once (the hot
 * path feeds device batches, SURGE_TRAINER_BATCH_DEVICE, instead). */
static int
copy_wait(struct cuda_ctx *c, float *dst, const float *src, size_t n,
          cudaMemcpyKind kind)
{
    if (c->failed) {
        return -EIO;
    }
    if (n == 0) {
        return 0;
    }
    int rc =
        CU(c, cudaMemcpyAsync, (dst, src, n * sizeof(float), kind, c->stream));
    if (rc == 0) {
        rc = CU(c, cudaStreamSynchronize, (c->stream));
    }
    return rc;
}

static int
cuda_upload(void *ctx, float *dst, const float *src, size_t n)
{
    return copy_wait((struct cuda_ctx *)ctx, dst, src, n,
                     cudaMemcpyHostToDevice);
}

static int
cuda_download(void *ctx, float *dst, const float *src, size_t n)
{
    return copy_wait((struct cuda_ctx *)ctx, dst, src, n,
                     cudaMemcpyDeviceToHost);
}

static int
cuda_copy(void *ctx, float *dst, const float *src, size_t n)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (c->failed) {
        return -EIO;
    }
    if (n == 0 || dst == src) {
        return 0;
    }
    return CU(
        c, cudaMemcpyAsync,
        (dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice, c->stream));
}

static int
cuda_sync(void *ctx)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    (void)CU(c, cudaStreamSynchronize, (c->stream));
    return c->failed ? -EIO : 0;
}

static const char *
cuda_error(void *ctx)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    return c->failed ? c->err : NULL;
}

static int
cuda_graph_begin(void *ctx)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (c->failed) {
        return -EIO;
    }
    /* Thread-local: other threads' CUDA calls (a reservoir uploading on
     * its own stream) do not invalidate the capture. */
    return CU(c, cudaStreamBeginCapture,
              (c->stream, cudaStreamCaptureModeThreadLocal));
}

static int
cuda_graph_end(void *ctx, void **graph)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    cudaGraph_t g = NULL;
    cudaGraphExec_t exec = NULL;
    int rc = CU(c, cudaStreamEndCapture, (c->stream, &g));
    if (rc == 0 && !c->failed) {
        rc = CU(c, cudaGraphInstantiate, (&exec, g, 0));
    }
    if (g != NULL) {
        (void)cudaGraphDestroy(g);
    }
    if (rc != 0 || c->failed) {
        /* A failed capture is not a device fault: forget it so the loop
         * can run the same ops eagerly (a real fault shows up there). */
        if (exec != NULL) {
            (void)cudaGraphExecDestroy(exec);
        }
        (void)cudaGetLastError();
        c->failed = 0;
        c->err[0] = '\0';
        return -EIO;
    }
    *graph = exec;
    return 0;
}

static int
cuda_graph_launch(void *ctx, void *graph)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (c->failed) {
        return -EIO;
    }
    return CU(c, cudaGraphLaunch, ((cudaGraphExec_t)graph, c->stream));
}

static void
cuda_graph_free(void *ctx, void *graph)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (graph != NULL) {
        (void)CU(c, cudaGraphExecDestroy, ((cudaGraphExec_t)graph));
    }
}

static void *
cuda_stream(void *ctx)
{
    return (void *)((struct cuda_ctx *)ctx)->stream;
}

/* cuBLASLt is column-major. A row-major X (r, c) is the column-major X^T
 * (c, r) with the same leading dimension, so the row-major C = op(A) op(B)
 * is computed as the column-major C^T (n, m) = op(B)^T (n, k) op(A)^T (k,
 * m): cuBLASLt's first operand is our B, its second our A. A bias epilogue
 * then adds a vector of n entries to every row-major row. */
/* The alignment of p in bytes, a power of two in 4..256: cuBLASLt's
 * heuristic assumes 256 unless told, and our tensors sit at arbitrary
 * float offsets of one allocation. */
static uint32_t
align_of(const void *p)
{
    uintptr_t a = (uintptr_t)p;
    uint32_t al = 256;
    while (al > 4 && a % al != 0) {
        al /= 2;
    }
    return al;
}

static struct plan *
get_plan(struct cuda_ctx *c, int ta, int tb, int m, int n, int k, int lda,
         int ldb, int ldc, cublasLtEpilogue_t epi, const void *a, const void *b,
         const void *cm, int quiet)
{
    uint32_t al_a = align_of(b), al_b = align_of(a), al_c = align_of(cm);
    for (int i = 0; i < N_PLANS; i++) {
        struct plan *p = &c->plans[i];
        if (p->used && p->ta == ta && p->tb == tb && p->m == m && p->n == n &&
            p->k == k && p->lda == lda && p->ldb == ldb && p->ldc == ldc &&
            p->epi == (int)epi && p->al_a == (int)al_a &&
            p->al_b == (int)al_b && p->al_c == (int)al_c) {
            return p;
        }
    }
    struct plan *p = &c->plans[c->next_plan];
    c->next_plan = (c->next_plan + 1) % N_PLANS;
    if (p->used) {
        (void)cublasLtMatrixLayoutDestroy(p->la);
        (void)cublasLtMatrixLayoutDestroy(p->lb);
        (void)cublasLtMatrixLayoutDestroy(p->lc);
        (void)cublasLtMatmulDescDestroy(p->desc);
        memset(p, 0, sizeof *p);
    }
    cublasOperation_t op_first = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t op_second = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t res;
    int nres = 0;
    size_t ws = LT_WORKSPACE;
    int rc =
        LT(c, cublasLtMatmulDescCreate, (&p->desc, c->compute, CUDA_R_32F));
    if (rc == 0) {
        rc = LT(
            c, cublasLtMatmulDescSetAttribute,
            (p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_first, sizeof op_first));
    }
    if (rc == 0) {
        rc = LT(c, cublasLtMatmulDescSetAttribute,
                (p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_second,
                 sizeof op_second));
    }
    if (rc == 0) {
        rc = LT(c, cublasLtMatmulDescSetAttribute,
                (p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    }
    if (rc == 0) {
        rc = LT(c, cublasLtMatrixLayoutCreate,
                (&p->la, CUDA_R_32F, tb ? k : n, tb ? n : k, ldb));
    }
    if (rc == 0) {
        rc = LT(c, cublasLtMatrixLayoutCreate,
                (&p->lb, CUDA_R_32F, ta ? m : k, ta ? k : m, lda));
    }
    if (rc == 0) {
        rc = LT(c, cublasLtMatrixLayoutCreate, (&p->lc, CUDA_R_32F, n, m, ldc));
    }
    if (rc == 0) {
        rc = LT(c, cublasLtMatmulPreferenceCreate, (&pref));
    }
    if (rc == 0) {
        rc = LT(
            c, cublasLtMatmulPreferenceSetAttribute,
            (pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    }
    /* cuBLASLt's first operand is our b, its second our a. */
    if (rc == 0) {
        rc = LT(c, cublasLtMatmulPreferenceSetAttribute,
                (pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a,
                 sizeof al_a));
    }
    if (rc == 0) {
        rc = LT(c, cublasLtMatmulPreferenceSetAttribute,
                (pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b,
                 sizeof al_b));
    }
    if (rc == 0) {
        rc = LT(c, cublasLtMatmulPreferenceSetAttribute,
                (pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c,
                 sizeof al_c));
    }
    if (rc == 0) {
        rc = LT(c, cublasLtMatmulPreferenceSetAttribute,
                (pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c,
                 sizeof al_c));
    }
    if (rc == 0) {
        cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(
            c->lt, p->desc, p->la, p->lb, p->lc, p->lc, pref, 1, &res, &nres);
        if (s != CUBLAS_STATUS_SUCCESS || nres < 1) {
            if (!quiet) {
                char why[160];
                snprintf(why, sizeof why,
                         "%s, no algorithm for %dx%dx%d (epilogue %d)",
                         cublasLtGetStatusName(s), m, n, k, (int)epi);
                fail_at(c, "cublasLtMatmulAlgoGetHeuristic", why, __FILE__,
                        __LINE__);
            }
            rc = -EIO;
        }
    }
    if (pref != NULL) {
        (void)cublasLtMatmulPreferenceDestroy(pref);
    }
    if (rc != 0) {
        if (p->la != NULL) {
            (void)cublasLtMatrixLayoutDestroy(p->la);
        }
        if (p->lb != NULL) {
            (void)cublasLtMatrixLayoutDestroy(p->lb);
        }
        if (p->lc != NULL) {
            (void)cublasLtMatrixLayoutDestroy(p->lc);
        }
        if (p->desc != NULL) {
            (void)cublasLtMatmulDescDestroy(p->desc);
        }
        memset(p, 0, sizeof *p);
        return NULL;
    }
    p->used = 1;
    p->ta = ta;
    p->tb = tb;
    p->m = m;
    p->n = n;
    p->k = k;
    p->lda = lda;
    p->ldb = ldb;
    p->ldc = ldc;
    p->epi = (int)epi;
    p->al_a = (int)al_a;
    p->al_b = (int)al_b;
    p->al_c = (int)al_c;
    p->algo = res.algo;
    return p;
}

static int
run_plan(struct cuda_ctx *c, struct plan *p, float alpha, const float *a,
         const float *b, float beta, float *cm)
{
    return LT(c, cublasLtMatmul,
              (c->lt, p->desc, &alpha, b, p->la, a, p->lb, &beta, cm, p->lc, cm,
               p->lc, &p->algo, c->ws, LT_WORKSPACE, c->stream));
}

static void
cuda_gemm(void *ctx, int trans_a, int trans_b, int m, int n, int k, float alpha,
          const float *a, int lda, const float *b, int ldb, float beta,
          float *cm, int ldc)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (c->failed) {
        return;
    }
    struct plan *p = get_plan(c, trans_a, trans_b, m, n, k, lda, ldb, ldc,
                              CUBLASLT_EPILOGUE_DEFAULT, a, b, cm, 0);
    if (p != NULL) {
        (void)run_plan(c, p, alpha, a, b, beta, cm);
    }
}

__device__ static inline float
gelu_d(float x)
{
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}

__device__ static inline float
gelu_grad_d(float x)
{
    float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
    float pdf = expf(-0.5f * x * x) * 0.39894228040143268f;
    return cdf + x * pdf;
}

__global__ static void
k_affine(int rows, int cols, const float *x, const float *shift,
         const float *scale, int per_col, int inverse, float *y)
{
    size_t n = (size_t)rows * (size_t)cols;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += stride) {
        int j = per_col ? (int)(i % (size_t)cols) : 0;
        y[i] =
            inverse ? x[i] * scale[j] + shift[j] : (x[i] - shift[j]) * scale[j];
    }
}

static void
cuda_affine(void *ctx, int rows, int cols, const float *x, const float *shift,
            const float *scale, int per_col, int inverse, float *y)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (c->failed) {
        return;
    }
    size_t n = (size_t)rows * (size_t)cols;
    k_affine<<<grid_for(n, MAX_GRID), THREADS, 0, c->stream>>>(
        rows, cols, x, shift, scale, per_col, inverse, y);
    (void)LAUNCHED(c, "k_affine");
}

__global__ static void
k_bias_act(int act, int rows, int cols, const float *bias, float *z, float *a)
{
    size_t n = (size_t)rows * (size_t)cols;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += stride) {
        float v = z[i] + bias[i % (size_t)cols];
        switch (act) {
        case SURGE_ACT_RELU:
            a[i] = v > 0.0f ? v : 0.0f;
            break;
        case SURGE_ACT_TANH:
            a[i] = tanhf(v);
            break;
        case SURGE_ACT_GELU:
            z[i] = v;
            a[i] = gelu_d(v);
            break;
        default:
            a[i] = v;
            break;
        }
    }
}

static void
cuda_bias_act_fwd(void *ctx, int act, int rows, int cols, const float *bias,
                  float *z, float *a)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (c->failed) {
        return;
    }
    size_t n = (size_t)rows * (size_t)cols;
    k_bias_act<<<grid_for(n, MAX_GRID), THREADS, 0, c->stream>>>(
        act, rows, cols, bias, z, a);
    (void)LAUNCHED(c, "k_bias_act");
}

/* The forward of a linear layer: one cuBLASLt product with the bias (and
 * ReLU) in its epilogue when the activation allows (relu, none: their
 * output is all backward needs); gelu keeps z and tanh has no epilogue,
 * so those take the product and one fused pass. */
static void
cuda_linear_fwd(void *ctx, int act, int rows, int out, int in, const float *x,
                const float *w, const float *bias, float *z, float *a)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (c->failed) {
        return;
    }
    if ((act == SURGE_ACT_RELU || act == SURGE_ACT_NONE) && !c->no_epilogue &&
        align_of(bias) >= 16) {
        cublasLtEpilogue_t epi = act == SURGE_ACT_RELU
                                     ? CUBLASLT_EPILOGUE_RELU_BIAS
                                     : CUBLASLT_EPILOGUE_BIAS;
        /* a (rows, out) = act(x (rows, in) W^T (in, out) + bias). */
        struct plan *p =
            get_plan(c, 0, 1, rows, out, in, in, in, out, epi, x, w, a, 1);
        if (p != NULL) {
            float one = 1.0f, zero = 0.0f;
            cublasStatus_t st = cublasLtMatmulDescSetAttribute(
                p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias);
            if (st == CUBLAS_STATUS_SUCCESS) {
                st = cublasLtMatmul(c->lt, p->desc, &one, w, p->la, x, p->lb,
                                    &zero, a, p->lc, a, p->lc, &p->algo, c->ws,
                                    LT_WORKSPACE, c->stream);
            }
            if (st == CUBLAS_STATUS_SUCCESS) {
                return;
            }
            if (st != CUBLAS_STATUS_NOT_SUPPORTED &&
                st != CUBLAS_STATUS_INVALID_VALUE) {
                (void)lt_check(c, st, "cublasLtMatmul", __FILE__, __LINE__);
                return;
            }
            /* Refused before anything was queued: never ask again. */
            c->no_epilogue = 1;
        }
    }
    cuda_gemm(ctx, 0, 1, rows, out, in, 1.0f, x, in, w, in, 0.0f, z, out);
    cuda_bias_act_fwd(ctx, act, rows, out, bias, z, a);
}

/* Column sums, pass 1: block (COL_TILE, COL_ROWS) sums COL_TILE columns
 * over rows [r0, r0 + rows_per) into part[slice][col], applying the
 * activation derivative to d on the way (act_bwd) or not (act < 0 with
 * keep = 1: plain sums of d). */
__global__ static void
k_act_bwd_cols(int act, int rows, int cols, int rows_per, const float *z,
               const float *a, float *d, float *part)
{
    __shared__ float sh[COL_ROWS][COL_TILE + 1];
    int j = blockIdx.x * COL_TILE + threadIdx.x;
    int r0 = blockIdx.y * rows_per;
    int r1 = r0 + rows_per < rows ? r0 + rows_per : rows;
    float s = 0.0f;
    if (j < cols) {
        for (int r = r0 + threadIdx.y; r < r1; r += COL_ROWS) {
            size_t i = (size_t)r * (size_t)cols + (size_t)j;
            float g = d[i];
            switch (act) {
            case SURGE_ACT_RELU:
                g = a[i] > 0.0f ? g : 0.0f;
                d[i] = g;
                break;
            case SURGE_ACT_TANH:
                g = g * (1.0f - a[i] * a[i]);
                d[i] = g;
                break;
            case SURGE_ACT_GELU:
                g = g * gelu_grad_d(z[i]);
                d[i] = g;
                break;
            default:
                break;
            }
            s += g;
        }
    }
    sh[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && j < cols) {
        float t = 0.0f;
        for (int k = 0; k < COL_ROWS; k++) {
            t += sh[k][threadIdx.x];
        }
        part[(size_t)blockIdx.y * (size_t)cols + (size_t)j] = t;
    }
}

/* Column sums, pass 2: db[j] = sum over slices, in slice order. */
__global__ static void
k_cols_finish(int cols, int slices, const float *part, float *db)
{
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j < cols) {
        float t = 0.0f;
        for (int s = 0; s < slices; s++) {
            t += part[(size_t)s * (size_t)cols + (size_t)j];
        }
        db[j] = t;
    }
}

/* d *= act'(.) and db = column sums of d, in two deterministic passes. */
static void
act_bwd_cols(struct cuda_ctx *c, int act, int rows, int cols, const float *z,
             const float *a, float *d, float *db)
{
    if (c->failed) {
        return;
    }
    /* Row slices: enough blocks to fill the GPU, partials within c->part. */
    size_t cap = PART_FLOATS / (size_t)cols;
    size_t slices = ((size_t)rows + 31) / 32;
    if (slices > 64) {
        slices = 64;
    }
    if (slices > cap) {
        slices = cap;
    }
    if (slices < 1) {
        slices = 1;
    }
    int rows_per = (int)(((size_t)rows + slices - 1) / slices);
    int used = (rows + rows_per - 1) / rows_per;
    dim3 grid((unsigned)((cols + COL_TILE - 1) / COL_TILE), (unsigned)used);
    dim3 block(COL_TILE, COL_ROWS);
    k_act_bwd_cols<<<grid, block, 0, c->stream>>>(act, rows, cols, rows_per, z,
                                                  a, d, c->part);
    if (LAUNCHED(c, "k_act_bwd_cols") != 0) {
        return;
    }
    k_cols_finish<<<(unsigned)((cols + THREADS - 1) / THREADS), THREADS, 0,
                    c->stream>>>(cols, used, c->part, db);
    (void)LAUNCHED(c, "k_cols_finish");
}

static void
cuda_act_bwd(void *ctx, int act, int rows, int cols, const float *z,
             const float *a, float *d, float *db)
{
    act_bwd_cols((struct cuda_ctx *)ctx, act, rows, cols, z, a, d, db);
}

/* The loss, pass 1: one block per row (grid-stride over rows): e = pred -
 * normalised target, dpred = 2 w e / (rows cols), l_i = mean e^2 into
 * row_loss (when asked) and w_i l_i into rowl for the total. */
__global__ static void
k_mse_rows(int rows, int cols, const float *pred, const float *target,
           const float *shift, const float *scale, int per_col,
           const float *weight, double coef, float *dpred, float *row_loss,
           double *rowl)
{
    __shared__ float sh[THREADS];
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *pr = pred + (size_t)r * (size_t)cols;
        const float *tr = target + (size_t)r * (size_t)cols;
        float *dr = dpred + (size_t)r * (size_t)cols;
        float w = weight != NULL ? weight[r] : 1.0f;
        float k = (float)(coef * (double)w);
        float s = 0.0f;
        for (int j = threadIdx.x; j < cols; j += blockDim.x) {
            int q = per_col ? j : 0;
            float e = pr[j] - (tr[j] - shift[q]) * scale[q];
            s += e * e;
            dr[j] = k * e;
        }
        sh[threadIdx.x] = s;
        __syncthreads();
        for (int h = blockDim.x / 2; h > 0; h /= 2) {
            if (threadIdx.x < h) {
                sh[threadIdx.x] += sh[threadIdx.x + h];
            }
            __syncthreads();
        }
        if (threadIdx.x == 0) {
            double l = (double)sh[0] / (double)cols;
            if (row_loss != NULL) {
                row_loss[r] = (float)l;
            }
            rowl[r] = (double)w * l;
        }
        __syncthreads();
    }
}

/* Sum n doubles in one block, in a fixed order; *out = sum * scale, or
 * *out += sum when add. */
__global__ static void
k_sum_doubles(int n, const double *x, double scale, int add, double *out)
{
    __shared__ double sh[THREADS];
    double s = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        s += x[i];
    }
    sh[threadIdx.x] = s;
    __syncthreads();
    for (int h = blockDim.x / 2; h > 0; h /= 2) {
        if (threadIdx.x < h) {
            sh[threadIdx.x] += sh[threadIdx.x + h];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        if (add) {
            *out += sh[0];
        } else {
            *out = sh[0] * scale;
        }
    }
}

static void
cuda_mse_fwd_bwd(void *ctx, int rows, int cols, const float *pred,
                 const float *target, const float *shift, const float *scale,
                 int per_col, const float *weight, float *dpred, float *db,
                 float *row_loss, double *loss)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (c->failed) {
        return;
    }
    double coef = 2.0 / ((double)rows * (double)cols);
    unsigned grid = rows < MAX_GRID ? (unsigned)rows : MAX_GRID;
    k_mse_rows<<<grid, THREADS, 0, c->stream>>>(rows, cols, pred, target, shift,
                                                scale, per_col, weight, coef,
                                                dpred, row_loss, c->rowl);
    if (LAUNCHED(c, "k_mse_rows") != 0) {
        return;
    }
    act_bwd_cols(c, SURGE_ACT_NONE, rows, cols, NULL, NULL, dpred, db);
    k_sum_doubles<<<1, THREADS, 0, c->stream>>>(rows, c->rowl,
                                                1.0 / (double)rows, 0, loss);
    (void)LAUNCHED(c, "k_sum_doubles");
}

/* Block reduction of a double into part[blockIdx.x]. */
__device__ static void
block_partial(double s, double *part)
{
    __shared__ double sh[THREADS];
    sh[threadIdx.x] = s;
    __syncthreads();
    for (int h = blockDim.x / 2; h > 0; h /= 2) {
        if (threadIdx.x < h) {
            sh[threadIdx.x] += sh[threadIdx.x + h];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        part[blockIdx.x] = sh[0];
    }
}

__global__ static void
k_sumsq(const float *x, size_t n, double *part)
{
    double s = 0.0;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += stride) {
        double v = (double)x[i];
        s += v * v;
    }
    block_partial(s, part);
}

static void
cuda_sumsq(void *ctx, const float *x, size_t n, double *acc)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (c->failed) {
        return;
    }
    unsigned grid = grid_for(n, RED_BLOCKS);
    k_sumsq<<<grid, THREADS, 0, c->stream>>>(x, n, c->dpart);
    if (LAUNCHED(c, "k_sumsq") != 0) {
        return;
    }
    k_sum_doubles<<<1, THREADS, 0, c->stream>>>((int)grid, c->dpart, 1.0, 1,
                                                acc);
    (void)LAUNCHED(c, "k_sum_doubles");
}

/* The schedule, clipping and step counter on the device: the same code as
 * the cpu backend (opt_scalars.h). Phase END publishes the report to
 * mapped host memory, seq last after a system-wide fence. */
__global__ static void
k_opt_scalars(struct surge_opt_config cfg, struct surge_step_state *st,
              int phase, struct surge_step_report *rep)
{
    surge_opt_scalars_run(&cfg, st, phase, rep);
    if (phase == SURGE_OPT_END) {
        __threadfence_system();
        *(volatile uint64_t *)&rep->seq = st->step + st->skipped;
    }
}

static void
cuda_opt_scalars(void *ctx, const struct surge_opt_config *cfg,
                 struct surge_step_state *st, int phase,
                 struct surge_step_report *rep)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (c->failed) {
        return;
    }
    k_opt_scalars<<<1, 1, 0, c->stream>>>(*cfg, st, phase, rep);
    (void)LAUNCHED(c, "k_opt_scalars");
}

/* The fused optimizer pass: the arithmetic of backend_cpu.c's
 * cpu_opt_update, element by element; the squared gradient norm rides
 * along into per-block partials. */
__global__ static void
k_opt_update(const struct surge_step_state *state, float *p, const float *grad,
             float *m, float *v, size_t n, double *part)
{
    double s = 0.0;
    if (!state->skip) {
        const struct surge_opt_step st = state->s;
        const float gs = st.grad_scale, wd = st.weight_decay;
        const float b1 = st.beta1, c1 = 1.0f - st.beta1;
        const float b2 = st.beta2, c2 = 1.0f - st.beta2;
        size_t stride = (size_t)gridDim.x * blockDim.x;
        for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
             i += stride) {
            float g0 = grad[i];
            s += (double)(g0 * g0);
            if (st.kind == SURGE_OPT_ADAM || st.kind == SURGE_OPT_ADAMW) {
                float g =
                    st.kind == SURGE_OPT_ADAM ? g0 * gs + wd * p[i] : g0 * gs;
                float mi = b1 * m[i] + c1 * g;
                float vi = b2 * v[i] + c2 * (g * g);
                m[i] = mi;
                v[i] = vi;
                float upd =
                    st.step_size * mi / (sqrtf(vi) * st.inv_bc2_sqrt + st.eps);
                p[i] = st.kind == SURGE_OPT_ADAM ? p[i] - upd
                                                 : p[i] * st.decay - upd;
            } else {
                float g = g0 * gs + wd * p[i];
                float bi = st.first ? g : st.momentum * m[i] + g;
                m[i] = bi;
                p[i] -= st.lr * bi;
            }
        }
    }
    if (part != NULL) {
        block_partial(s, part);
    }
}

static void
cuda_opt_update(void *ctx, const struct surge_step_state *st, float *p,
                const float *grad, float *m, float *v, size_t n, double *acc)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (c->failed) {
        return;
    }
    unsigned grid = grid_for(n, RED_BLOCKS);
    k_opt_update<<<grid, THREADS, 0, c->stream>>>(
        st, p, grad, m, v, n, acc != NULL ? c->dpart : NULL);
    if (LAUNCHED(c, "k_opt_update") != 0 || acc == NULL) {
        return;
    }
    k_sum_doubles<<<1, THREADS, 0, c->stream>>>((int)grid, c->dpart, 1.0, 1,
                                                acc);
    (void)LAUNCHED(c, "k_sum_doubles");
}

extern "C" const struct surge_backend_ops surge_backend_cuda = {
    /* .name = */ "cuda",
    /* .unified = */ 0,
    /* .create = */ cuda_create,
    /* .destroy = */ cuda_destroy,
    /* .alloc = */ cuda_alloc,
    /* .free = */ cuda_free,
    /* .host_alloc = */ cuda_host_alloc,
    /* .host_free = */ cuda_host_free,
    /* .mapped_alloc = */ cuda_mapped_alloc,
    /* .upload = */ cuda_upload,
    /* .download = */ cuda_download,
    /* .copy = */ cuda_copy,
    /* .sync = */ cuda_sync,
    /* .error = */ cuda_error,
    /* .graph_begin = */ cuda_graph_begin,
    /* .graph_end = */ cuda_graph_end,
    /* .graph_launch = */ cuda_graph_launch,
    /* .graph_free = */ cuda_graph_free,
    /* .stream = */ cuda_stream,
    /* .gemm = */ cuda_gemm,
    /* .linear_fwd = */ cuda_linear_fwd,
    /* .affine = */ cuda_affine,
    /* .bias_act_fwd = */ cuda_bias_act_fwd,
    /* .act_bwd = */ cuda_act_bwd,
    /* .mse_fwd_bwd = */ cuda_mse_fwd_bwd,
    /* .sumsq = */ cuda_sumsq,
    /* .opt_scalars = */ cuda_opt_scalars,
    /* .opt_update = */ cuda_opt_update,
};
