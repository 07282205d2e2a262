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
 *
 * THREADS. Every pass that is not a matrix product runs on the context's
 * thread pool (common/pool.h) of `threads` threads, the same count OpenBLAS
 * gets: the two teams alternate (a pass, a product, a pass), never run at
 * once, so `threads` cores stay busy and none is oversubscribed. The work
 * is cut into tasks that do NOT depend on the thread count: row blocks of
 * row_block(rows) rows for the (rows, cols) passes, runs of OPT_TASK_BLOCKS
 * blocks of SUM_BLOCK floats for the parameter passes. Each reduction
 * writes one partial per block and the partials are combined in block
 * order, so every result is bit for bit the same whatever the thread count
 * (and the parameter passes are bit for bit the serial loops of before).
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>

#include <surge/error.h>

#include "common/pool.h"
#include "common/util.h"
#include "trainer/backend.h"
#include "trainer/opt_scalars.h"
#include "trainer/trainer.h"

#define HUGE_PAGE ((size_t)2 << 20)

/* Row blocks: at least ROW_BLOCK_MIN rows, at most MAX_ROW_BLOCKS blocks
 * (so the column partials of a reduction stay small whatever the batch). */
#define ROW_BLOCK_MIN 8
#define MAX_ROW_BLOCKS 64
/* Columns per task when combining column partials. */
#define COMBINE_COLS 256
/* Blocks of SUM_BLOCK floats per task of the parameter passes (64 Ki
 * floats: 1.8 MiB of Adam traffic, tens of microseconds), small enough
 * that a 1024 x 1024 layer, updated on its own as soon as its gradient is
 * final, still makes 16 tasks. The results do not depend on it. */
#define OPT_TASK_BLOCKS 16

struct cpu_ctx {
    int threads;      /* threads given to OpenBLAS, 0 = its own setting */
    surge_pool *pool; /* the passes' threads (as many as OpenBLAS's) */
    float *part;      /* partial sums: (MAX_ROW_BLOCKS, cols) column
                         partials, or one float per SUM_BLOCK block */
    size_t part_n;    /* floats in part */
    const char *err;  /* first failure (out of memory for part) */
    uint64_t ns[SURGE_BACKEND_TIME_N]; /* time in each kind of op (times) */
};

/* Two clock reads per op (vDSO, tens of nanoseconds) against ops of tens
 * of microseconds at least: cheap enough to stay on. */
#define TIMED(c, kind, body)                                                   \
    do {                                                                       \
        uint64_t t0_ = surge_now_ns();                                         \
        body;                                                                  \
        (c)->ns[kind] += surge_now_ns() - t0_;                                 \
    } while (0)

/* The rows of one row block, from rows alone (never the thread count). */
static int
row_block(int rows)
{
    int rb = (rows + MAX_ROW_BLOCKS - 1) / MAX_ROW_BLOCKS;
    return rb > ROW_BLOCK_MIN ? rb : ROW_BLOCK_MIN;
}

static int
row_blocks(int rows)
{
    int rb = row_block(rows);
    return (rows + rb - 1) / rb;
}

/* The partials buffer, grown to n floats; NULL (and the failure recorded
 * for the next sync) when memory runs out. */
static float *
part_get(struct cpu_ctx *c, size_t n)
{
    if (c->part_n < n) {
        void *p = NULL;
        if (posix_memalign(&p, 64, n * sizeof(float)) != 0) {
            if (c->err == NULL) {
                c->err = "out of memory for the partial sums of a pass "
                         "(trainer/backend_cpu.c)";
            }
            return NULL;
        }
        free(c->part);
        c->part = p;
        c->part_n = n;
    }
    return c->part;
}

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
    int pool_threads = threads > 0 ? threads : openblas_get_num_threads();
    if (pool_threads < 1) {
        pool_threads = 1;
    }
    if (pool_threads > SURGE_POOL_MAX_THREADS) {
        pool_threads = SURGE_POOL_MAX_THREADS;
    }
    int rc = surge_pool_create(&c->pool, pool_threads);
    if (rc != 0) {
        surge_set_err(err, errlen, "cannot start %d trainer threads: %s",
                      pool_threads, surge_strerror(rc));
        free(c);
        return rc;
    }
    *ctx = c;
    return 0;
}

static void
cpu_destroy(void *ctx)
{
    struct cpu_ctx *c = ctx;
    if (c == NULL) {
        return;
    }
    surge_pool_destroy(&c->pool);
    free(c->part);
    free(c);
}

static struct surge_pool *
cpu_pool(void *ctx)
{
    return ((struct cpu_ctx *)ctx)->pool;
}

static void
cpu_times(void *ctx, uint64_t *t)
{
    const struct cpu_ctx *c = ctx;
    for (int k = 0; k < SURGE_BACKEND_TIME_N; k++) {
        t[k] += c->ns[k];
    }
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
    return ((struct cpu_ctx *)ctx)->err != NULL ? -EIO : 0;
}

static const char *
cpu_error(void *ctx)
{
    return ((struct cpu_ctx *)ctx)->err;
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
    struct cpu_ctx *cx = ctx;
    TIMED(cx, SURGE_BACKEND_TIME_GEMM,
          cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                      trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a,
                      lda, b, ldb, beta, c, ldc));
}

/* A (rows, cols) pass, cut into row blocks of rb rows: task i takes rows
 * [i * rb, min(rows, (i + 1) * rb)). Fields are used as each op says. */
struct rows_job {
    int rows, cols, rb;
    int act, per_col, inverse;
    const float *x;      /* affine: input (rows, cols) */
    const float *shift;  /* affine, mse: (cols) or (1) */
    const float *scale;  /* affine, mse: (cols) or (1) */
    const float *bias;   /* bias_act_fwd: (cols) */
    const float *z;      /* bias_act_fwd (in place), act_bwd: (rows, cols) */
    const float *a;      /* act_bwd: (rows, cols) */
    const float *pred;   /* mse: (rows, cols) */
    const float *target; /* mse: (rows, cols) */
    const float *weight; /* mse: (rows) or NULL */
    float *y;            /* affine, bias_act_fwd: output (rows, cols) */
    float *zw;           /* bias_act_fwd: z, written by gelu */
    float *d;            /* act_bwd, mse: gradient (rows, cols) */
    float *part;         /* act_bwd, mse: (blocks, cols) column partials */
    float *row_loss;     /* mse: (rows) or NULL */
    double coef;         /* mse: 2 / (rows * cols) */
    double block_loss[MAX_ROW_BLOCKS]; /* mse: sum of w_i l_i per block */
};

static void
rows_of(const struct rows_job *j, size_t task, int *r0, int *r1)
{
    *r0 = (int)task * j->rb;
    *r1 = *r0 + j->rb < j->rows ? *r0 + j->rb : j->rows;
}

static void
affine_task(void *arg, size_t task)
{
    const struct rows_job *jb = arg;
    const int cols = jb->cols;
    const float *shift = jb->shift, *scale = jb->scale;
    int r0, r1;
    rows_of(jb, task, &r0, &r1);
    for (int r = r0; r < r1; r++) {
        const float *xr = jb->x + (size_t)r * cols;
        float *yr = jb->y + (size_t)r * cols;
        if (!jb->per_col) {
            float s = shift[0];
            float k = scale[0];
            if (jb->inverse) {
                for (int j = 0; j < cols; j++) {
                    yr[j] = xr[j] * k + s;
                }
            } else {
                for (int j = 0; j < cols; j++) {
                    yr[j] = (xr[j] - s) * k;
                }
            }
        } else if (jb->inverse) {
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

static void
cpu_affine(void *ctx, int rows, int cols, const float *x, const float *shift,
           const float *scale, int per_col, int inverse, float *y)
{
    struct cpu_ctx *c = ctx;
    struct rows_job jb = {.rows = rows,
                          .cols = cols,
                          .rb = row_block(rows),
                          .per_col = per_col,
                          .inverse = inverse,
                          .x = x,
                          .shift = shift,
                          .scale = scale,
                          .y = y};
    TIMED(c, SURGE_BACKEND_TIME_PASSES,
          surge_pool_run(c->pool, (size_t)row_blocks(rows), affine_task, &jb));
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
bias_act_task(void *arg, size_t task)
{
    const struct rows_job *jb = arg;
    const int cols = jb->cols;
    const float *bias = jb->bias;
    int r0, r1;
    rows_of(jb, task, &r0, &r1);
    for (int r = r0; r < r1; r++) {
        float *zr = jb->zw + (size_t)r * cols;
        float *ar = jb->y + (size_t)r * cols;
        switch (jb->act) {
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
cpu_bias_act_fwd(void *ctx, int act, int rows, int cols, const float *bias,
                 float *z, float *a)
{
    struct cpu_ctx *c = ctx;
    struct rows_job jb = {.rows = rows,
                          .cols = cols,
                          .rb = row_block(rows),
                          .act = act,
                          .bias = bias,
                          .zw = z,
                          .y = a};
    TIMED(
        c, SURGE_BACKEND_TIME_PASSES,
        surge_pool_run(c->pool, (size_t)row_blocks(rows), bias_act_task, &jb));
}

static void
act_bwd_task(void *arg, size_t task)
{
    const struct rows_job *jb = arg;
    const int cols = jb->cols;
    float *db = jb->part + task * (size_t)cols;
    int r0, r1;
    rows_of(jb, task, &r0, &r1);
    memset(db, 0, (size_t)cols * sizeof *db);
    for (int r = r0; r < r1; r++) {
        float *dr = jb->d + (size_t)r * cols;
        const float *ar = jb->a != NULL ? jb->a + (size_t)r * cols : NULL;
        const float *zr = jb->z != NULL ? jb->z + (size_t)r * cols : NULL;
        switch (jb->act) {
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

/* Column sums of the block partials, in block order: out[j] = part[0][j] +
 * part[1][j] + ...; a task per COMBINE_COLS columns. */
struct combine_job {
    const float *part; /* (blocks, cols) */
    int blocks, cols;
    float *out; /* (cols) */
};

static void
combine_task(void *arg, size_t task)
{
    const struct combine_job *jb = arg;
    size_t j0 = task * COMBINE_COLS;
    size_t j1 = j0 + COMBINE_COLS < (size_t)jb->cols ? j0 + COMBINE_COLS
                                                     : (size_t)jb->cols;
    float *out = jb->out;
    for (size_t j = j0; j < j1; j++) {
        out[j] = jb->part[j];
    }
    for (int b = 1; b < jb->blocks; b++) {
        const float *pb = jb->part + (size_t)b * (size_t)jb->cols;
        for (size_t j = j0; j < j1; j++) {
            out[j] += pb[j];
        }
    }
}

static void
combine_cols(struct cpu_ctx *c, const float *part, int blocks, int cols,
             float *out)
{
    struct combine_job jb = {part, blocks, cols, out};
    surge_pool_run(c->pool, ((size_t)cols + COMBINE_COLS - 1) / COMBINE_COLS,
                   combine_task, &jb);
}

static void
cpu_act_bwd(void *ctx, int act, int rows, int cols, const float *z,
            const float *a, float *d, float *db)
{
    struct cpu_ctx *c = ctx;
    int blocks = row_blocks(rows);
    float *part = part_get(c, (size_t)blocks * (size_t)cols);
    if (part == NULL) {
        return;
    }
    struct rows_job jb = {.rows = rows,
                          .cols = cols,
                          .rb = row_block(rows),
                          .act = act,
                          .z = z,
                          .a = a,
                          .d = d,
                          .part = part};
    TIMED(c, SURGE_BACKEND_TIME_PASSES, {
        surge_pool_run(c->pool, (size_t)blocks, act_bwd_task, &jb);
        combine_cols(c, part, blocks, cols, db);
    });
}

static void
mse_task(void *arg, size_t task)
{
    struct rows_job *jb = arg;
    const int cols = jb->cols;
    const float *shift = jb->shift, *scale = jb->scale;
    float *db = jb->part + task * (size_t)cols;
    double total = 0.0;
    int r0, r1;
    rows_of(jb, task, &r0, &r1);
    memset(db, 0, (size_t)cols * sizeof *db);
    for (int r = r0; r < r1; r++) {
        const float *pr = jb->pred + (size_t)r * cols;
        const float *tr = jb->target + (size_t)r * cols;
        float *dr = jb->d + (size_t)r * cols;
        float w = jb->weight != NULL ? jb->weight[r] : 1.0f;
        float k = (float)(jb->coef * w);
        float s = 0.0f;
        if (jb->per_col) {
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
        if (jb->row_loss != NULL) {
            jb->row_loss[r] = (float)l;
        }
        total += (double)w * l;
    }
    jb->block_loss[task] = total;
}

static void
cpu_mse_fwd_bwd(void *ctx, int rows, int cols, const float *pred,
                const float *target, const float *shift, const float *scale,
                int per_col, const float *weight, float *dpred, float *db,
                float *row_loss, double *loss)
{
    struct cpu_ctx *c = ctx;
    int blocks = row_blocks(rows);
    float *part = part_get(c, (size_t)blocks * (size_t)cols);
    if (part == NULL) {
        return;
    }
    /* dL/dpred = 2 w_i (pred - t) / (rows * cols). */
    struct rows_job jb = {.rows = rows,
                          .cols = cols,
                          .rb = row_block(rows),
                          .per_col = per_col,
                          .shift = shift,
                          .scale = scale,
                          .pred = pred,
                          .target = target,
                          .weight = weight,
                          .d = dpred,
                          .part = part,
                          .row_loss = row_loss,
                          .coef = 2.0 / ((double)rows * (double)cols)};
    TIMED(c, SURGE_BACKEND_TIME_PASSES, {
        surge_pool_run(c->pool, (size_t)blocks, mse_task, &jb);
        combine_cols(c, part, blocks, cols, db);
    });
    double total = 0.0;
    for (int b = 0; b < blocks; b++) {
        total += jb.block_loss[b];
    }
    *loss = total / (double)rows;
}

/* Blocks keep float partial sums short (accuracy) and the inner loop free
 * of double conversions (speed). */
#define SUM_BLOCK 4096

/* A pass over n parameters in blocks of SUM_BLOCK: task t takes blocks
 * [t * OPT_TASK_BLOCKS, ...) and writes each block's float sum of squared
 * gradients to part[block]; the caller adds them up in block order, in
 * double, exactly as one thread walking the blocks would. */
struct param_job {
    size_t n;
    float *part;    /* (blocks) */
    const float *x; /* sumsq: (n) */
    /* opt_update: */
    struct surge_opt_step st;
    float *p, *m, *v;
    const float *grad;
};

static void
param_range(const struct param_job *jb, size_t task, size_t *b0, size_t *b1)
{
    size_t blocks = (jb->n + SUM_BLOCK - 1) / SUM_BLOCK;
    *b0 = task * OPT_TASK_BLOCKS;
    *b1 = *b0 + OPT_TASK_BLOCKS < blocks ? *b0 + OPT_TASK_BLOCKS : blocks;
}

static double
sum_parts(const float *part, size_t blocks)
{
    double total = 0.0;
    for (size_t b = 0; b < blocks; b++) {
        total += part[b];
    }
    return total;
}

static void
sumsq_task(void *arg, size_t task)
{
    const struct param_job *jb = arg;
    const float *x = jb->x;
    size_t b0, b1;
    param_range(jb, task, &b0, &b1);
    for (size_t b = b0; b < b1; b++) {
        size_t i0 = b * SUM_BLOCK;
        size_t i1 = jb->n - i0 < SUM_BLOCK ? jb->n : i0 + SUM_BLOCK;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (size_t i = i0; i < i1; i++) {
            s += x[i] * x[i];
        }
        jb->part[b] = s;
    }
}

static size_t
param_tasks(size_t n)
{
    size_t blocks = (n + SUM_BLOCK - 1) / SUM_BLOCK;
    return (blocks + OPT_TASK_BLOCKS - 1) / OPT_TASK_BLOCKS;
}

static void
cpu_sumsq(void *ctx, const float *x, size_t n, double *acc)
{
    struct cpu_ctx *c = ctx;
    size_t blocks = (n + SUM_BLOCK - 1) / SUM_BLOCK;
    float *part = part_get(c, blocks > 0 ? blocks : 1);
    if (part == NULL) {
        return;
    }
    struct param_job jb = {.n = n, .part = part, .x = x};
    TIMED(c, SURGE_BACKEND_TIME_OPTIMIZER,
          surge_pool_run(c->pool, param_tasks(n), sumsq_task, &jb));
    *acc += sum_parts(part, blocks);
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

/* The fused optimizer pass over one task's blocks. Each kind is its own
 * branch-free loop over a block; the gradient's squared norm rides along
 * for free. */
static void
opt_task(void *arg, size_t task)
{
    const struct param_job *jb = arg;
    const struct surge_opt_step *st = &jb->st;
    float *restrict p = jb->p;
    const float *restrict grad = jb->grad;
    float *restrict m = jb->m;
    float *restrict v = jb->v;
    const float gs = st->grad_scale;
    const float wd = st->weight_decay;
    const float b1 = st->beta1, c1 = 1.0f - st->beta1;
    const float b2 = st->beta2, c2 = 1.0f - st->beta2;
    const float step = st->step_size, ibc2 = st->inv_bc2_sqrt;
    const float eps = st->eps, decay = st->decay;
    const float lr = st->lr, mom = st->momentum;
    size_t blk0, blk1;
    param_range(jb, task, &blk0, &blk1);
    for (size_t blk = blk0; blk < blk1; blk++) {
        size_t i0 = blk * SUM_BLOCK;
        size_t i1 = jb->n - i0 < SUM_BLOCK ? jb->n : i0 + SUM_BLOCK;
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
        jb->part[blk] = s;
    }
}

static void
cpu_opt_update(void *ctx, const struct surge_step_state *state, float *p,
               const float *grad, float *m, float *v, size_t n, double *acc)
{
    struct cpu_ctx *c = ctx;
    if (state->skip) {
        return;
    }
    size_t blocks = (n + SUM_BLOCK - 1) / SUM_BLOCK;
    float *part = part_get(c, blocks > 0 ? blocks : 1);
    if (part == NULL) {
        return;
    }
    struct param_job jb = {.n = n,
                           .part = part,
                           .st = state->s,
                           .p = p,
                           .m = m,
                           .v = v,
                           .grad = grad};
    TIMED(c, SURGE_BACKEND_TIME_OPTIMIZER,
          surge_pool_run(c->pool, param_tasks(n), opt_task, &jb));
    if (acc != NULL) {
        *acc += sum_parts(part, blocks);
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
    .pool = cpu_pool,
    .times = cpu_times,
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
