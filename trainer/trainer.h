/*
 * trainer/trainer.h - the surge trainer: an MLP surrogate trained online.
 *
 * This header is the documentation of the trainer library
 * (trainer/libsurge_trainer.la). The numerics follow llm.c: every tensor has
 * a shape comment, forward and backward come in pairs, all parameters live in
 * one allocation, and tests check every gradient against finite differences.
 *
 * MODEL. A multilayer perceptron from x (B, n_inputs) to y (B, n_outputs):
 *     [Linear -> act] x n_layers -> Linear
 * with hidden widths layers[0..n_layers-1], act one of relu, gelu (exact,
 * erf-based, as torch.nn.GELU()), tanh. Layer k has weight W_k (out_k, in_k)
 * and bias b_k (out_k), the layout of torch.nn.Linear. Initialisation by
 * fan-in, biases zero: a layer followed by ReLU draws W ~ U(-a, a) with
 * a = sqrt(6 / fan_in) (He/Kaiming uniform: variance 2 / fan_in); a layer
 * followed by gelu or tanh, and the last (linear) layer, use a = sqrt(3 /
 * fan_in) (LeCun uniform: variance 1 / fan_in, "Xavier-ish" for one side).
 *
 * NORMALISATION. The network sees normalised values; callers always pass and
 * get physical units.
 *   inputs : x_n = (x - in_mean) / in_std with in_mean = (min + max) / 2 and
 *            in_std = (max - min) / 2 per input, from the parameter ranges
 *            (surge_trainer_set_input_range): each input maps onto [-1, 1].
 *            An input with max == min gets in_std = 1. Default: identity.
 *   outputs: y = y_n * out_std + out_mean. The statistics come from the first
 *            samples received (surge_trainer_observe_outputs), then freeze.
 *            Mode "global" (default): one mean and one std over every element
 *            of those samples; it is robust when the first samples are early
 *            time steps whose per-element spread is near zero. Mode "element":
 *            a mean and std per output element, each std floored at 1e-3 of
 *            the global std (and at 1e-12) so a constant cell cannot blow up.
 *
 * LOSS. On a batch of B rows with importance weights w (1 when NULL):
 *     L = (1 / B) * sum_i w_i * l_i,   l_i = (1 / n_outputs) * sum_j
 *         (yhat_n[i, j] - y_n[i, j])^2
 * i.e. torch.mean(w[:, None] * (yhat_n - y_n) ** 2) in normalised units.
 *
 * OPTIMISERS (g is the gradient after clipping, t the 1-based step, lr the
 * scheduled rate; as torch.optim.Adam/AdamW/SGD, which take the same steps
 * within float rounding: tests/integration/trainer_torch.sh):
 *   adam : g += wd * p; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
 *          p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
 *   adamw: p *= 1 - lr * wd; then adam's update without the g += wd * p
 *   sgd  : g += wd * p; buf = momentum * buf + g (buf = g at t = 1);
 *          p -= lr * buf
 * GRADIENT CLIPPING: when grad_clip > 0 and the global L2 norm of all
 * gradients exceeds it, every gradient is scaled by grad_clip / norm
 * (torch.nn.utils.clip_grad_norm_ without its 1e-6).
 *
 * SCHEDULES (s = steps already taken, 0-based; warmup first, for all):
 *   s < warmup_steps: lr * (s + 1) / warmup_steps
 *   constant: lr
 *   cosine  : min_lr + (lr - min_lr) * (1 + cos(pi * min(u, T) / T)) / 2
 *             with u = s - warmup_steps, T = total_steps - warmup_steps
 *   step    : lr * gamma ^ floor(u / step_size)
 *
 * THREADS. A surge_trainer is owned by one thread at a time (the server's
 * trainer thread); no call on the same handle may run concurrently. Separate
 * handles are independent, except that the CPU backend's thread count is
 * OpenBLAS's process-wide setting (openblas_set_num_threads). With
 * threads = T the CPU backend runs its matrix products on T OpenBLAS
 * threads and every other pass (bias and activation, their backward, the
 * loss, the optimizer update) on its own pool of T threads (the calling
 * thread and T - 1 workers, common/pool.h); the two never run at once, so
 * a step keeps T cores busy. Results are bit for bit the same for any T
 * (docs/trainer.md, "Threads").
 *
 * ERRORS. Calls return 0 or a negative code: SURGE_E* (include/surge/error.h)
 * or -errno. Calls taking (err, errlen) also write a one-line reason there
 * (always NUL-terminated when errlen > 0) naming the key or file at fault.
 * The library never prints, exits or aborts; it logs via common/log.h.
 */
#ifndef SURGE_TRAINER_H
#define SURGE_TRAINER_H

#include <stddef.h>
#include <stdint.h>

#include "common/keytab.h"

struct surge_pool; /* common/pool.h */

#ifdef __cplusplus
extern "C" {
#endif

/* Limits checked by validation and by the file loaders before allocating. */
#define SURGE_TRAINER_MAX_LAYERS 16         /* hidden layers */
#define SURGE_TRAINER_MAX_WIDTH (1 << 20)   /* any layer, inputs, outputs */
#define SURGE_TRAINER_MAX_PARAMS (1L << 31) /* total parameter count */
#define SURGE_TRAINER_MAX_BATCH (1 << 20)

enum surge_trainer_activation {
    SURGE_ACT_RELU = 0,
    SURGE_ACT_GELU = 1, /* exact: 0.5 x (1 + erf(x / sqrt 2)) */
    SURGE_ACT_TANH = 2
};

enum surge_trainer_optimizer {
    SURGE_OPT_ADAM = 0,
    SURGE_OPT_ADAMW = 1,
    SURGE_OPT_SGD = 2 /* with momentum (0 = plain SGD) */
};

enum surge_trainer_schedule {
    SURGE_SCHED_CONSTANT = 0,
    SURGE_SCHED_COSINE = 1,
    SURGE_SCHED_STEP = 2
};

/* Arithmetic of the matrix products (trainer.precision). Parameters,
 * gradients, optimizer state and every elementwise pass stay float32. */
enum surge_trainer_precision {
    SURGE_PRECISION_FP32 = 0, /* float32 throughout */
    SURGE_PRECISION_TF32 = 1, /* cuda: products on TF32 tensor cores */
    SURGE_PRECISION_BF16 = 2  /* cuda: products with bf16 inputs on tensor
                                 cores, float32 accumulation; fp32 master
                                 weights and optimizer state */
};

enum surge_trainer_out_norm {
    SURGE_OUTNORM_GLOBAL = 0, /* one mean/std for every output element */
    SURGE_OUTNORM_ELEMENT = 1 /* a mean/std per output element */
};

/* Configuration. JSON keys (surge_trainer_config_from_json) are the field
 * names, under "trainer." in error messages. n_inputs and n_outputs are not
 * JSON keys: the server sets them from the study (parameters + time, sum of
 * the field sizes). Fill with surge_trainer_config_defaults() first. */
struct surge_trainer_config {
    int n_inputs;                         /* input width (>= 1) */
    int n_outputs;                        /* output width (>= 1) */
    int n_layers;                         /* hidden layers, 0..MAX_LAYERS */
    int layers[SURGE_TRAINER_MAX_LAYERS]; /* hidden widths, each >= 1 */
    int activation;                       /* enum surge_trainer_activation */
    int optimizer;                        /* enum surge_trainer_optimizer */
    double lr;                            /* peak learning rate, > 0 */
    double beta1;                         /* adam(w): [0, 1) */
    double beta2;                         /* adam(w): [0, 1) */
    double eps;                           /* adam(w): > 0 */
    double weight_decay;                  /* >= 0 (L2 for adam/sgd) */
    double momentum;                      /* sgd: [0, 1) */
    int schedule;                         /* enum surge_trainer_schedule */
    long warmup_steps;                    /* linear warmup, >= 0 */
    long total_steps;                     /* cosine: horizon, > warmup */
    double min_lr;                        /* cosine: floor, [0, lr] */
    long step_size;                       /* step: steps per decay, > 0 */
    double gamma;                         /* step: factor, (0, 1] */
    double grad_clip;                     /* global-norm clip, 0 = off */
    int batch_size;                       /* max rows per step, >= 1 */
    int threads;                          /* cpu: BLAS threads and as many
                                             for every other pass (THREADS);
                                             0 = environment
                                             (OPENBLAS_NUM_THREADS) */
    uint64_t seed;                        /* weight initialisation */
    int out_norm;                         /* enum surge_trainer_out_norm */
    long out_norm_samples;                /* samples that set out stats */
    char backend[16];                     /* "cpu", "cuda" or "auto" (cuda
                                             when a device is present,
                                             else cpu, one log line) */
    int precision;                        /* enum surge_trainer_precision */
};

/* surge_trainer_config_defaults - fill cfg with the defaults of
 * surge_trainer_keys (docs/configuration.md lists them), zero elsewhere:
 * n_inputs and n_outputs are 0, the caller must set them. */
void surge_trainer_config_defaults(struct surge_trainer_config *cfg);

/* surge_trainer_keys - the "trainer" section's keys, one row each (name,
 * type, field, bounds, names, default; common/keytab.h), ended by a row
 * whose name is NULL. The single place where these keys are defined:
 * surge_trainer_config_defaults, _check, _from_json and the launcher's
 * study parser (deploy/study.c) all read it. */
extern const struct surge_key surge_trainer_keys[];

/* surge_trainer_config_check - check every key's value against its row of
 * surge_trainer_keys, then the rules across keys (cosine: total_steps >
 * warmup_steps; min_lr <= lr; the cpu backend computes in fp32). Not
 * n_inputs, n_outputs or what the build offers: see _validate. Returns 0,
 * or SURGE_ECONFIG with the first problem in err, naming the key and the
 * value: "trainer.lr: must be > 0 (got -1)". */
int surge_trainer_config_check(const struct surge_trainer_config *cfg,
                               char *err, size_t errlen);

/* surge_trainer_config_validate - surge_trainer_config_check, then
 * n_inputs, n_outputs, the parameter count and the backend's presence in
 * this build. Returns 0, or SURGE_ECONFIG with the first problem in err,
 * naming the key: "trainer.layers[1]: must be an integer in [1, 1048576]
 * (got -3)". */
int surge_trainer_config_validate(const struct surge_trainer_config *cfg,
                                  char *err, size_t errlen);

/* surge_trainer_config_from_json - override fields of cfg from the JSON
 * object text json (len bytes; the study file's "trainer" section without
 * the server's loop keys), key by key through surge_trainer_keys: unknown
 * keys, wrong types, unknown names and values out of a key's bounds are
 * rejected with SURGE_ECONFIG and err naming the key and the value
 * ("trainer.activation: must be one of: relu, gelu, tanh (got \"foo\")").
 * Rules across keys are left to _check/_validate (call it after setting
 * n_inputs/n_outputs). On error cfg may be partly updated. */
int surge_trainer_config_from_json(struct surge_trainer_config *cfg,
                                   const char *json, size_t len, char *err,
                                   size_t errlen);

/* Names <-> enums: the parse functions return -1 for an unknown name; the
 * name functions return a static string ("?" when out of range). */
int surge_trainer_activation_parse(const char *name);
int surge_trainer_optimizer_parse(const char *name);
int surge_trainer_schedule_parse(const char *name);
int surge_trainer_precision_parse(const char *name);
const char *surge_trainer_precision_name(int precision);
const char *surge_trainer_activation_name(int activation);
const char *surge_trainer_optimizer_name(int optimizer);
const char *surge_trainer_schedule_name(int schedule);

typedef struct surge_trainer surge_trainer;

/* surge_trainer_create - validate cfg (errors as in _validate), select the
 * backend, allocate parameters, gradients, optimizer state and a workspace
 * for batch_size rows (all allocation happens here: steps allocate nothing),
 * and initialise the weights from cfg->seed. On success *out owns the
 * trainer; on failure *out is untouched. -ENOMEM, SURGE_ECONFIG. */
int surge_trainer_create(const struct surge_trainer_config *cfg,
                         surge_trainer **out, char *err, size_t errlen);

/* surge_trainer_destroy - free everything; sets *t to NULL. NULL is ok. */
void surge_trainer_destroy(surge_trainer **t);

/* surge_trainer_config_get - the configuration the trainer runs with. The
 * pointer lives as long as the trainer. */
const struct surge_trainer_config *
surge_trainer_config_get(const surge_trainer *t);

/* surge_trainer_set_input_range - input normalisation from the parameter
 * ranges: lo, hi are (n_inputs) in physical units, lo[i] <= hi[i], finite.
 * SURGE_ECONFIG (err names the input index) otherwise. May be called any
 * time; it does not touch the weights. */
int surge_trainer_set_input_range(surge_trainer *t, const float *lo,
                                  const float *hi, char *err, size_t errlen);

/* surge_trainer_observe_outputs - feed rows (rows, n_outputs) of target
 * outputs, physical units, to the output statistics (double precision,
 * Welford). Once out_norm_samples rows were seen the statistics freeze and
 * later calls do nothing. Returns 1 when frozen, 0 while still collecting,
 * -EINVAL on NULL, rows < 0 or a non-finite value (nothing recorded). */
int surge_trainer_observe_outputs(surge_trainer *t, const float *y, long rows);

/* surge_trainer_freeze_outputs - freeze the output statistics now with what
 * has been observed (e.g. reception ended early). With nothing observed,
 * mean 0 and std 1. Idempotent. surge_trainer_step freezes implicitly: a
 * step with the statistics not frozen yet freezes them with what was
 * observed so far, or, when nothing was, with its own batch's targets. So
 * the intended use is: observe the first out_norm_samples samples as they
 * arrive, start stepping once they are there. */
void surge_trainer_freeze_outputs(surge_trainer *t);

/* surge_trainer_outputs_frozen - 1 once the output statistics are frozen
 * (observed out_norm_samples rows, freeze, a step, set_output_norm, or a
 * checkpoint that had them frozen), else 0. */
int surge_trainer_outputs_frozen(const surge_trainer *t);

/* surge_trainer_set_output_norm - set frozen output statistics directly:
 * mean, std are (n) with n = 1 (global) or n_outputs (element), std > 0. */
int surge_trainer_set_output_norm(surge_trainer *t, const float *mean,
                                  const float *std, int n);

/* surge_trainer_step_info - what one step reports. */
struct surge_trainer_step_info {
    double loss;      /* weighted mean loss of the batch (see LOSS) */
    double grad_norm; /* global gradient L2 norm before clipping */
    double lr;        /* learning rate used for this step */
    uint64_t step;    /* steps taken, this one included */
};

/* surge_trainer_step - one optimisation step on a batch.
 *   x       (rows, n_inputs)  inputs, physical units, row-major
 *   y       (rows, n_outputs) targets, physical units, row-major
 *   weight  (rows) importance weights >= 0, or NULL for all 1
 *   rows    1..batch_size
 *   row_loss (rows) out, or NULL: l_i of each row before the update
 *            (unweighted, normalised units) for loss-prioritised sampling
 *   info    out, or NULL
 * The caller keeps ownership of every buffer; none is retained. Allocates
 * nothing. Non-finite inputs are not checked here (they make the loss
 * non-finite). Without clipping, each layer is updated during backward as
 * soon as its gradient is final; with grad_clip > 0 after it (the norm is
 * needed first). Returns 0; -EINVAL for bad rows or NULL x/y, or a
 * non-finite target while the output statistics are being set;
 * SURGE_ESTATE when the loss (or, with clipping, the gradient norm) is not
 * finite: the update is skipped, weights unchanged, the step counter does
 * not advance; the caller decides whether to stop; -EIO when the backend
 * failed (surge_trainer_error names the call, file and line). On cuda this
 * waits for the step (one host round trip, to fill info and row_loss): the
 * fast path is surge_trainer_step_async. */
int surge_trainer_step(surge_trainer *t, const float *x, const float *y,
                       const float *weight, int rows, float *row_loss,
                       struct surge_trainer_step_info *info);

/* Flags of surge_trainer_step_async. */
#define SURGE_TRAINER_BATCH_DEVICE                                             \
    1u /* x, y, weight and row_loss are                                        \
          device memory of the trainer's                                       \
          backend (surge_trainer_device_alloc,                                 \
          or the caller's own cudaMalloc on                                    \
          the same device) */

/* surge_trainer_step_async - queue one optimisation step and return
 * without waiting for it (the GPU fast path: no host round trip per step).
 * Arguments as surge_trainer_step; with flags & SURGE_TRAINER_BATCH_DEVICE
 * the four buffers are device memory (a device-resident reservoir gathers
 * batches there; the step copies them device to device before its own
 * work, so they may be overwritten by work ordered after the step on
 * surge_trainer_stream), else host memory (pinned from
 * surge_trainer_host_alloc copies fastest), which may be reused as soon as
 * the call returns; row_loss, if not NULL, is written when the step
 * finishes (host memory: read it after surge_trainer_sync). On a backend
 * with CUDA graphs the step body is captured once per (rows, weight given,
 * row_loss given) and replayed; the learning rate, schedule, clipping and
 * the skip of a non-finite step are computed on the device from its step
 * counter, so a replayed step is the same step an eager one would take.
 * The loss, gradient norm and rate are not returned: read them with
 * surge_trainer_poll (no wait) or surge_trainer_sync (waits). A step with
 * a non-finite loss or norm is skipped on the device (weights unchanged,
 * the counter does not advance) and reported by the next poll or sync.
 * Before the output statistics are frozen the call waits to observe y (as
 * surge_trainer_step). On cpu the step runs to completion before the call
 * returns. Returns 0, -EINVAL (bad rows, NULL x/y, unknown flags), or -EIO
 * when the backend failed (surge_trainer_error says where). */
int surge_trainer_step_async(surge_trainer *t, const float *x, const float *y,
                             const float *weight, int rows, float *row_loss,
                             unsigned flags);

/* surge_trainer_poll - the last finished step's numbers, without waiting:
 * info->step counts steps taken up to it (skipped ones excluded). Returns 1
 * when a step finished since the previous poll or sync, 0 when none did,
 * SURGE_ESTATE when one of those was skipped (non-finite loss or norm), or
 * -EIO after a backend failure. Also updates surge_trainer_steps. */
int surge_trainer_poll(surge_trainer *t, struct surge_trainer_step_info *info);

/* surge_trainer_sync - wait for every queued step, then as poll (0 instead
 * of 1). info may be NULL. */
int surge_trainer_sync(surge_trainer *t, struct surge_trainer_step_info *info);

/* surge_trainer_error - the first backend failure, naming the call, file
 * and line ("cudaMemcpyAsync failed: an illegal memory access ...
 * (trainer/backend_cuda.cu:201)"), or NULL. Lives as long as t. */
const char *surge_trainer_error(const surge_trainer *t);

/* surge_trainer_backend - the backend the trainer runs on ("cpu" or
 * "cuda"; "auto" resolved). */
const char *surge_trainer_backend(const surge_trainer *t);

/* surge_trainer_stream - the cudaStream_t (as void *) the trainer queues
 * its work on, so a caller filling device batches can order its copies or
 * kernels before surge_trainer_step_async without a host wait; NULL on
 * cpu. */
void *surge_trainer_stream(surge_trainer *t);

/* Where the trainer's steps spent their time so far (seconds, on the
 * thread that owns it), for reports: the matrix products, the other
 * per-row passes (bias, activations and their backward, normalisation,
 * loss), and the optimizer (update and gradient norm). */
struct surge_trainer_times {
    double gemm_s;
    double passes_s;
    double optimizer_s;
};

/* surge_trainer_times - fill *out; -ENOTSUP (out zeroed) on a backend
 * that queues its work and cannot tell (cuda). */
int surge_trainer_times(const surge_trainer *t,
                        struct surge_trainer_times *out);

/* surge_trainer_pool - the CPU backend's thread pool (common/pool.h), for
 * host passes of the trainer's owner between steps (the server gathers
 * batches with it), on the owner's thread only; NULL on cuda. Owned by
 * the trainer. */
struct surge_pool *surge_trainer_pool(surge_trainer *t);

/* surge_trainer_device_alloc / _free - zeroed device memory of the
 * trainer's backend (host memory on cpu) for batches passed with
 * SURGE_TRAINER_BATCH_DEVICE. NULL on failure. */
void *surge_trainer_device_alloc(surge_trainer *t, size_t bytes);
void surge_trainer_device_free(surge_trainer *t, void *p, size_t bytes);

/* surge_trainer_eval_result - errors of the model on a set. */
struct surge_trainer_eval_result {
    double mse;         /* mean squared error, normalised units (= LOSS) */
    double mse_phys;    /* mean squared error, physical units */
    double rel_l2;      /* sqrt(sum ||yhat - y||^2 / sum ||y||^2), physical */
    double rel_l2_mean; /* mean over rows of ||yhat_i - y_i|| / ||y_i||
                           (rows with ||y_i|| == 0 skipped) */
    long rows;          /* rows evaluated */
    /* The sums the figures above come from, so that evaluations of parts
     * of a set (one per data-parallel replica) add up to the evaluation of
     * the whole (surge_trainer_eval_from_sums). */
    double sum_se_n; /* sum of squared errors, normalised units */
    double sum_se;   /* sum of squared errors, physical units */
    double sum_yy;   /* sum of squared targets, physical units */
    double sum_rel;  /* sum over rows of ||yhat_i - y_i|| / ||y_i|| */
    double rel_rows; /* rows in sum_rel (||y_i|| > 0) */
};

/* surge_trainer_eval_from_sums - recompute mse, mse_phys, rel_l2 and
 * rel_l2_mean of r from its sums and rows (n_outputs values per row), e.g.
 * after adding the sums and rows of several replicas' evaluations. rows 0
 * gives zero errors. */
void surge_trainer_eval_from_sums(struct surge_trainer_eval_result *r,
                                  int n_outputs);

/* surge_trainer_evaluate - evaluate on rows samples x (rows, n_inputs),
 * y (rows, n_outputs), physical units, in chunks of batch_size (no
 * allocation, weights untouched). -EINVAL on rows < 1 or NULL. */
int surge_trainer_evaluate(surge_trainer *t, const float *x, const float *y,
                           long rows, struct surge_trainer_eval_result *out);

/* surge_trainer_predict - y (rows, n_outputs) = model(x (rows, n_inputs)),
 * physical units, in chunks of batch_size. -EINVAL on rows < 1 or NULL. */
int surge_trainer_predict(surge_trainer *t, const float *x, long rows,
                          float *y);

/* surge_trainer_steps - steps taken so far (restored by checkpoint load).
 * After surge_trainer_step_async: as of the last poll or sync. */
uint64_t surge_trainer_steps(const surge_trainer *t);

/* surge_trainer_num_params - number of float parameters (weights+biases). */
size_t surge_trainer_num_params(const surge_trainer *t);

/* surge_trainer_get_params / _set_params - copy the flat parameter vector
 * (n == num_params floats, in the order W_0, b_0, W_1, b_1, ...; each W_k
 * row-major (out_k, in_k)) out of / into the trainer. -EINVAL when n is
 * wrong. Setting parameters leaves the optimizer state as it is. */
int surge_trainer_get_params(const surge_trainer *t, float *dst, size_t n);
int surge_trainer_set_params(surge_trainer *t, const float *src, size_t n);

/* surge_trainer_host_alloc / _free - zeroed memory for batch buffers the
 * server fills and passes to _step: 64-byte aligned, from common's
 * pre-faulted huge-page allocator when >= 2 MiB; pinned host memory for a
 * GPU backend. NULL on failure. _free takes the same bytes; _free(t, NULL,
 * n) is a no-op. */
void *surge_trainer_host_alloc(surge_trainer *t, size_t bytes);
void surge_trainer_host_free(surge_trainer *t, void *p, size_t bytes);

/*
 * DATA PARALLEL. R replicas of one model (one trainer per MPI rank, each
 * fed from its own data) take the same steps: each computes the gradient
 * of its rows, the gradients are summed across replicas, every replica
 * applies the same update, so the weights stay identical (docs/trainer.md,
 * "Data-parallel training"). The loss of a step is the mean over the
 * global batch, the rows of every replica together:
 *     L = (1 / B_global) * sum over all replicas' rows of w_i l_i
 * so R replicas with B / R rows each take the step one trainer takes with
 * the B rows (within float rounding: the products sum in another order).
 * A replica with no rows contributes a zero gradient (a zero-row batch).
 * The trainer does no communication itself: it calls the operations
 * below, which a caller implements over MPI (trainer/replicas_mpi.h).
 */
struct surge_trainer_replicas_ops {
    /* sum - replace v (n doubles) by its sum over the replicas; blocking.
     * Every replica makes the same calls in the same order. 0 or <0. */
    int (*sum)(void *arg, double *v, int n);
    /* grad_start - start summing n floats at buf (host memory) in place
     * over the replicas, in the background; buf is not touched by the
     * trainer until the matching grad_wait. Buckets are started and
     * waited for in the same order on every replica. 0 or <0. */
    int (*grad_start)(void *arg, float *buf, size_t n);
    /* grad_wait - wait for the oldest bucket started and not yet waited
     * for. 0 or <0 (the sum failed: the step fails with -EIO). */
    int (*grad_wait)(void *arg);
    /* progress - optional (NULL): called after every layer of backward,
     * so that an implementation without a thread of its own can move its
     * started sums on (MPI_Test). */
    void (*progress)(void *arg);
};

/* surge_trainer_set_replicas - make t one of the replicas of a
 * data-parallel group: steps go through surge_trainer_step_replicated,
 * gradients are summed with ops in buckets of about bucket_bytes (whole
 * layers, last layer first, started as soon as backward has finished
 * them, so the sum of one bucket overlaps the backward pass of the next:
 * as PyTorch DDP's buckets). ops and arg must outlive t. On a backend
 * that is not unified (cuda) the gradients go through a pinned host
 * buffer (host-staged). Allocates that buffer: -ENOMEM. ops NULL turns
 * data parallelism off again. */
int surge_trainer_set_replicas(surge_trainer *t,
                               const struct surge_trainer_replicas_ops *ops,
                               void *arg, size_t bucket_bytes);

/* surge_trainer_step_replicated - one data-parallel step: every replica
 * calls it with its own rows (0..batch_size; x, y may be NULL when rows is
 * 0) and the same global_rows, the sum of every replica's rows (>= 1),
 * which the caller agreed on beforehand. Arguments and returns otherwise
 * as surge_trainer_step; info->loss is the global loss (the same on every
 * replica), row_loss the rows' own losses. The step runs eagerly (no CUDA
 * graph) and waits for its end. Non-finite loss or norm: skipped on every
 * replica alike (SURGE_ESTATE). -EINVAL without replicas (set_replicas)
 * or with bad rows; -EIO when the backend or a sum failed. */
int surge_trainer_step_replicated(surge_trainer *t, const float *x,
                                  const float *y, const float *weight, int rows,
                                  long global_rows, float *row_loss,
                                  struct surge_trainer_step_info *info);

/* surge_trainer_replicas_freeze - freeze the output statistics from what
 * every replica observed (surge_trainer_observe_outputs on its own rows),
 * merged exactly (counts, means and squared deviations), so that every
 * replica normalises alike; replaces statistics a replica froze alone.
 * A collective: every replica calls it once, before its first replicated
 * step (not after a checkpoint load, which restores equal statistics).
 * 0, -EINVAL without replicas, -ENOMEM, -EIO when a sum failed. */
int surge_trainer_replicas_freeze(surge_trainer *t);

/* surge_trainer_dp_stats - what the gradient sums cost so far: buckets
 * summed, seconds the step waited for them after its backward pass
 * (exposed, not hidden behind compute), and steps taken replicated. */
struct surge_trainer_dp_stats {
    uint64_t steps;    /* replicated steps */
    uint64_t buckets;  /* buckets summed */
    double exposed_s;  /* time in grad_wait */
    double loss_sum_s; /* time in the loss's blocking sum */
};
void surge_trainer_dp_get_stats(const surge_trainer *t,
                                struct surge_trainer_dp_stats *out);

/* surge_trainer_params_hash - a 64-bit hash (FNV-1a) of the bytes of the
 * parameter vector: equal on replicas with bit-identical weights. */
uint64_t surge_trainer_params_hash(const surge_trainer *t);

/*
 * FILES. Both the model file and the checkpoint are safetensors files
 * (https://huggingface.co/docs/safetensors): an 8-byte little-endian header
 * length N, N bytes of JSON {"name": {"dtype", "shape", "data_offsets"},
 * "__metadata__": {string: string}}, then the raw little-endian tensor data.
 * docs/model-file.md describes the keys and shows how PyTorch loads them.
 * Tensors of the model: "<2k>.weight" (out_k, in_k) and "<2k>.bias"
 * (out_k), F32: the state dict of a torch.nn.Sequential with Linear layers
 * at even indices and activations at odd ones, so load_state_dict takes it.
 * Both are written atomically: a temporary file in the same directory, fsync,
 * rename, fsync of the directory. A crash leaves the old file or the new one,
 * never a torn one.
 */

/* surge_trainer_save_model - write the final model (weights, architecture,
 * normalisation in __metadata__) to path. meta: NULL or a NULL-terminated
 * list of key, value, key, value, ... strings added to __metadata__ (the
 * server stores e.g. "field_shape", "input_names"); keys must not start with
 * "surge." (reserved). -errno on I/O errors, -EINVAL on bad meta. */
int surge_trainer_save_model(surge_trainer *t, const char *path,
                             const char *const *meta);

/* surge_trainer_checkpoint_save - write model, optimizer state (m, v or the
 * momentum buffer), normalisation (frozen or not, with its running sums),
 * step counter and the configuration to path, plus an opaque blob extra
 * (extra_len bytes; NULL/0 for none; the server puts its reservoir and
 * progress state there). The data carries a CRC-32C checked on load. */
int surge_trainer_checkpoint_save(surge_trainer *t, const char *path,
                                  const void *extra, size_t extra_len);

/* surge_trainer_checkpoint_load - restore a checkpoint into t, which must
 * have been created with the same n_inputs, n_outputs, layers, activation
 * and optimizer (a mismatch fails with SURGE_ECONFIG and err naming the key
 * and both values); other hyperparameters come from t's configuration. The
 * file is validated before t is touched (format name and version, header
 * size, JSON, dtypes, shapes, offsets inside the file and not overlapping,
 * CRC): on any error t is unchanged. On success, if extra is not NULL,
 * *extra receives a malloc'ed copy of the blob (caller frees; NULL when the
 * blob is empty) and *extra_len its size. Errors: -errno (open/read),
 * SURGE_EVERSION (another checkpoint version), SURGE_EPROTO (malformed or
 * corrupt file), SURGE_ECONFIG (architecture mismatch). A resumed run takes
 * bit-identical steps to an uninterrupted one. */
int surge_trainer_checkpoint_load(surge_trainer *t, const char *path,
                                  void **extra, size_t *extra_len, char *err,
                                  size_t errlen);

/* surge_trainer_checkpoint_peek - read and validate (format, CRC) the
 * checkpoint at path without a trainer: its n_inputs, n_outputs, steps
 * and, when extra is not NULL, a malloc'ed copy of its blob in *extra
 * (caller frees; NULL when empty) and its size in *extra_len. The server
 * uses it to learn the sample shape and its own state before it creates
 * the trainer (trainer/peek.c). Errors as surge_trainer_checkpoint_load. */
int surge_trainer_checkpoint_peek(const char *path, int *n_inputs,
                                  int *n_outputs, uint64_t *steps, void **extra,
                                  size_t *extra_len, char *err, size_t errlen);

/* surge_model: a saved model loaded for inference (surge predict). */
typedef struct surge_model surge_model;

/* surge_model_info - what a model file declares. */
struct surge_model_info {
    int n_inputs;                         /* input width */
    int n_outputs;                        /* output width */
    int n_layers;                         /* hidden layers */
    int layers[SURGE_TRAINER_MAX_LAYERS]; /* hidden widths */
    int activation;                       /* enum surge_trainer_activation */
    uint64_t steps;                       /* training steps taken */
};

/* surge_model_load - read and validate a model file written by
 * surge_trainer_save_model (sizes checked against the limits above and the
 * file size before allocating). On success *out owns the model; on failure
 * *out is untouched and err says what is wrong with which file. Errors:
 * -errno, SURGE_EPROTO (not a valid model file), SURGE_EVERSION. */
int surge_model_load(const char *path, surge_model **out, char *err,
                     size_t errlen);

/* surge_model_destroy - free; sets *m to NULL. NULL is ok. */
void surge_model_destroy(surge_model **m);

/* surge_model_get_info - the architecture; lives as long as m. */
const struct surge_model_info *surge_model_get_info(const surge_model *m);

/* surge_model_meta - the value of __metadata__ key, or NULL. Lives as long
 * as m. */
const char *surge_model_meta(const surge_model *m, const char *key);

/* surge_model_predict - y (rows, n_outputs) = model(x (rows, n_inputs)) in
 * physical units; the same arithmetic as surge_trainer_predict, in chunks of
 * the trainer's batch_size (capped at 4096), so bit-equal to it on the same
 * machine and thread count. Uses an internal workspace: one call at a time
 * per model. -EINVAL on rows < 1 or NULL. */
int surge_model_predict(surge_model *m, const float *x, long rows, float *y);

#ifdef __cplusplus
}
#endif
#endif /* SURGE_TRAINER_H */
