/*
 * bench/trainer/bench-trainer.c - `make bench-trainer`: the surge trainer
 * against the matrix-product bound and against PyTorch, in the same run.
 *
 * Model: the reference surrogate MLP 6 -> 1024 -> 1024 -> 1024 -> 4096
 * (ReLU), batch 256, Adam (lr 1e-3), MSE, data already in memory (4,096
 * samples); each step draws a random minibatch, gathered into batch
 * buffers as the server's reservoir does (PyTorch: x[idx], y[idx]), and
 * the gather is part of the timed step. For 1 and 2 threads:
 *   bound   : the 11 cblas_sgemm calls of one training step, same shapes
 *             and transposes, timed alone (forward 4, dW 4, dX 3): the
 *             matrix-product bound of a step;
 *   surge   : surge_trainer_step on the same model, its steps alternating
 *             with the bound's so that both see the same (shared, noisy)
 *             machine;
 *   adam    : the fused Adam pass alone (part of surge's step);
 *   torch   : the same model in Debian's PyTorch (bench_torch.py), as a
 *             user runs it, and with glibc kept from trimming memory
 *             (MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_), both with
 *             torch.set_num_threads and OPENBLAS_NUM_THREADS /
 *             OMP_NUM_THREADS set to the thread count.
 * Each figure is the median of several steps (after warm-up steps); the
 * environment is left as CI has it (OPENBLAS_CORETYPE untouched). Prints a
 * table, then one JSON line with the figures and the ratios.
 *
 * Usage: bench-trainer [--python PATH] [--script bench_torch.py] [--rounds R]
 *                      [--steps N] [--threads "1 2"] [--no-torch]
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "common/util.h"
#include "trainer/backend.h"
#include "trainer/mlp.h"
#include "trainer/trainer.h"

#define B 256
#define NIN 6
#define NOUT 4096
#define NDATA 4096
#define WARMUP 3
#define MAX_STEPS 101

static const int hidden[3] = {1024, 1024, 1024};

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : (x > y ? 1 : 0);
}

static double
median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double
now_s(void)
{
    return (double)surge_now_ns() * 1e-9;
}

/* FLOPs of one training step: forward and dW for every layer, dX for all
 * but the first (2 FLOPs per multiply-add). */
static double
step_flops(void)
{
    int w[5] = {NIN, hidden[0], hidden[1], hidden[2], NOUT};
    double f = 0.0;
    for (int k = 0; k < 4; k++) {
        double mac = (double)B * w[k] * w[k + 1];
        f += 2.0 * mac * (k > 0 ? 3.0 : 2.0);
    }
    return f;
}

/* The matrix-product bound: the step's sgemm calls alone, with the same
 * shapes, transposes and operands as the trainer's (a weight, a gradient
 * and an activation buffer per layer, two gradient ping-pong buffers), so
 * caches help it exactly as much as they help the trainer. */
struct bound {
    float *mem; /* one allocation for everything below */
    size_t bytes;
    float *xn;          /* (B, NIN) */
    float *w[4], *g[4]; /* (out_k, in_k) */
    float *act[4];      /* (B, out_k) */
    float *d[2];        /* (B, 1024) */
};

static const int widths[5] = {NIN, 1024, 1024, 1024, NOUT};

static void
bound_init(struct bound *b)
{
    size_t n = (size_t)B * NIN + 2 * (size_t)B * 1024;
    for (int k = 0; k < 4; k++) {
        n += 2 * (size_t)widths[k] * widths[k + 1] + (size_t)B * widths[k + 1];
    }
    b->bytes = n * sizeof(float);
    b->mem = surge_huge_alloc(b->bytes);
    if (b->mem == NULL) {
        fprintf(stderr, "bench-trainer: out of memory\n");
        exit(1);
    }
    float *p = b->mem;
    b->xn = p;
    p += (size_t)B * NIN;
    for (int k = 0; k < 4; k++) {
        size_t nw = (size_t)widths[k] * widths[k + 1];
        b->w[k] = p;
        p += nw;
        b->g[k] = p;
        p += nw;
        b->act[k] = p;
        p += (size_t)B * widths[k + 1];
    }
    b->d[0] = p;
    b->d[1] = p + (size_t)B * 1024;
    for (size_t i = 0; i < n; i++) {
        b->mem[i] = 0.001f * (float)(i % 997);
    }
}

static void
bound_fini(struct bound *b)
{
    surge_huge_free(b->mem, b->bytes);
}

static double
bound_step(struct bound *b)
{
    const int *w = widths;
    double t0 = now_s();
    const float *in = b->xn;
    for (int k = 0; k < 4; k++) { /* forward: (B,in) x (out,in)^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, w[k + 1], w[k],
                    1.0f, in, w[k], b->w[k], w[k], 0.0f, b->act[k], w[k + 1]);
        in = b->act[k];
    }
    const float *dz = b->act[3];
    for (int k = 3; k >= 0; k--) {
        const float *x = k > 0 ? b->act[k - 1] : b->xn;
        /* dW (out,in) = dz^T x in */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, w[k + 1], w[k], B,
                    1.0f, dz, w[k + 1], x, w[k], 0.0f, b->g[k], w[k]);
        if (k > 0) { /* dX (B,in) = dz x W */
            float *din = b->d[k & 1];
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, w[k],
                        w[k + 1], 1.0f, dz, w[k + 1], b->w[k], w[k], 0.0f, din,
                        w[k]);
            dz = din;
        }
    }
    return now_s() - t0;
}

/* Step times pooled over rounds; medians are taken at the end. */
struct pool {
    double v[MAX_STEPS];
    int n;
};

static void
pool_add(struct pool *p, double v)
{
    if (p->n < MAX_STEPS) {
        p->v[p->n++] = v;
    }
}

static double
pool_median(struct pool *p)
{
    return p->n > 0 ? median(p->v, p->n) : NAN;
}

struct surge_result {
    struct pool bound; /* the sgemm calls alone */
    struct pool step;  /* surge steps */
    struct pool adam;  /* the Adam pass alone */
    double loss0;      /* first loss of the last round */
    double loss_end;   /* last loss of the last round */
};

/* Bound and surge steps alternate, so both see the same machine (it is
 * shared and noisy: PERF-NOTES). */
static void
bench_surge(int threads, int steps, const float *x, const float *y,
            struct surge_result *r)
{
    struct surge_trainer_config c;
    surge_trainer_config_defaults(&c);
    c.n_inputs = NIN;
    c.n_outputs = NOUT;
    c.n_layers = 3;
    memcpy(c.layers, hidden, sizeof hidden);
    c.batch_size = B;
    c.threads = threads; /* sets OpenBLAS's threads for the bound too */
    c.out_norm_samples = NDATA;
    surge_trainer *t = NULL;
    char err[256];
    if (surge_trainer_create(&c, &t, err, sizeof err) != 0) {
        fprintf(stderr, "bench-trainer: %s\n", err);
        exit(1);
    }
    struct bound bd;
    bound_init(&bd);
    (void)surge_trainer_observe_outputs(t, y, NDATA);
    size_t bx_bytes = sizeof(float) * B * NIN;
    size_t by_bytes = sizeof(float) * B * NOUT;
    float *bx = surge_trainer_host_alloc(t, bx_bytes);
    float *by = surge_trainer_host_alloc(t, by_bytes);
    if (bx == NULL || by == NULL) {
        fprintf(stderr, "bench-trainer: out of memory\n");
        exit(1);
    }
    uint64_t rs = 7;
    struct surge_trainer_step_info info;
    for (int s = 0; s < WARMUP + steps; s++) {
        double dtb = bound_step(&bd);
        double t0 = now_s();
        for (int row = 0; row < B; row++) { /* a random minibatch */
            size_t i = (size_t)(mlp_rand_next(&rs) % NDATA);
            memcpy(bx + (size_t)row * NIN, x + i * NIN, NIN * sizeof(float));
            memcpy(by + (size_t)row * NOUT, y + i * NOUT, NOUT * sizeof(float));
        }
        int rc = surge_trainer_step(t, bx, by, NULL, B, NULL, &info);
        double dt = now_s() - t0;
        if (rc != 0) {
            fprintf(stderr, "bench-trainer: step failed: %d\n", rc);
            exit(1);
        }
        if (s == 0) {
            r->loss0 = info.loss;
        }
        if (s >= WARMUP) {
            pool_add(&r->step, dt);
            pool_add(&r->bound, dtb);
        }
    }
    r->loss_end = info.loss;
    bound_fini(&bd);
    surge_trainer_host_free(t, bx, bx_bytes);
    surge_trainer_host_free(t, by, by_bytes);
    surge_trainer_destroy(&t);

    /* The Adam pass alone, over the same number of parameters. */
    size_t np = mlp_count_params(NIN, NOUT, 3, hidden);
    size_t bytes = 4 * np * sizeof(float);
    float *mem = surge_huge_alloc(bytes);
    if (mem == NULL) {
        exit(1);
    }
    struct surge_opt_step st = {.kind = SURGE_OPT_ADAM,
                                .lr = 1e-3f,
                                .beta1 = 0.9f,
                                .beta2 = 0.999f,
                                .eps = 1e-8f,
                                .step_size = 1e-2f,
                                .inv_bc2_sqrt = 31.6f,
                                .decay = 1.0f,
                                .grad_scale = 1.0f};
    for (int s = 0; s < WARMUP + steps; s++) {
        double t0 = now_s();
        (void)surge_backend_cpu.opt_update(NULL, &st, mem, mem + np,
                                           mem + 2 * np, mem + 3 * np, np);
        if (s >= WARMUP) {
            pool_add(&r->adam, now_s() - t0);
        }
    }
    surge_huge_free(mem, bytes);
}

/* Run bench_torch.py; it prints "step_s T1 T2 ..." (the measured steps),
 * "median_step_s X" and "loss_end Y"; the step times join the pool. */
static void
bench_torch(const char *python, const char *script, int threads, int tuned,
            int steps, struct pool *out)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "env OPENBLAS_NUM_THREADS=%d OMP_NUM_THREADS=%d %s "
             "'%s' '%s' --threads %d --steps %d --warmup %d 2>&1",
             threads, threads,
             tuned ? "MALLOC_MMAP_THRESHOLD_=33554432 "
                     "MALLOC_TRIM_THRESHOLD_=1073741824"
                   : "",
             python, script, threads, steps, WARMUP);
    FILE *p = popen(cmd, "r");
    if (p == NULL) {
        return;
    }
    char line[4096];
    struct pool got = {.n = 0};
    while (fgets(line, sizeof line, p) != NULL) {
        if (strncmp(line, "step_s ", 7) == 0) {
            char *c = line + 7;
            for (;;) {
                char *end = NULL;
                double v = strtod(c, &end);
                if (end == c || !isfinite(v) || v <= 0.0) {
                    break;
                }
                pool_add(&got, v);
                c = end;
            }
        } else if (strncmp(line, "skip ", 5) == 0 ||
                   strstr(line, "Error") != NULL) {
            fprintf(stderr, "torch: %s", line);
        }
    }
    if (pclose(p) == 0) {
        for (int i = 0; i < got.n; i++) {
            pool_add(out, got.v[i]);
        }
    }
}

static void
json_num(FILE *f, const char *key, double v, int last)
{
    if (isfinite(v)) {
        fprintf(f, "\"%s\": %.6g%s", key, v, last ? "" : ", ");
    } else {
        fprintf(f, "\"%s\": null%s", key, last ? "" : ", ");
    }
}

int
main(int argc, char **argv)
{
    const char *python = "/usr/bin/python3";
    const char *script = "bench/trainer/bench_torch.py";
    int steps = 7, rounds = 3, torch = 1;
    int threads[2] = {1, 2}, nthreads = 2;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--python") == 0 && i + 1 < argc) {
            python = argv[++i];
        } else if (strcmp(argv[i], "--script") == 0 && i + 1 < argc) {
            script = argv[++i];
        } else if (strcmp(argv[i], "--steps") == 0 && i + 1 < argc) {
            int64_t v;
            if (surge_parse_int64(argv[++i], &v) != 0 || v < 1 ||
                v > MAX_STEPS - WARMUP) {
                fprintf(stderr, "bench-trainer: --steps: 1..%d\n",
                        MAX_STEPS - WARMUP);
                return 2;
            }
            steps = (int)v;
        } else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) {
            int64_t v;
            if (surge_parse_int64(argv[++i], &v) != 0 || v < 1 || v > 10) {
                fprintf(stderr, "bench-trainer: --rounds: 1..10\n");
                return 2;
            }
            rounds = (int)v;
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            int64_t v;
            if (surge_parse_int64(argv[++i], &v) != 0 || v < 1 || v > 64) {
                fprintf(stderr, "bench-trainer: --threads: 1..64\n");
                return 2;
            }
            threads[0] = (int)v;
            nthreads = 1;
        } else if (strcmp(argv[i], "--no-torch") == 0) {
            torch = 0;
        } else {
            fprintf(stderr,
                    "usage: bench-trainer [--python PATH] [--script PY] "
                    "[--steps N] [--rounds R] [--threads N] [--no-torch]\n");
            return 2;
        }
    }
    if (steps * rounds > MAX_STEPS) {
        fprintf(stderr, "bench-trainer: steps x rounds must be <= %d\n",
                MAX_STEPS);
        return 2;
    }
    const char *ct = getenv("OPENBLAS_CORETYPE");
    printf("# trainer benchmark: MLP 6-1024-1024-1024-4096 relu, batch %d, "
           "Adam, data in memory; OPENBLAS_CORETYPE=%s; medians of %d "
           "steps (%d rounds of %d, each round: surge, PyTorch, PyTorch "
           "tuned)\n",
           B, ct != NULL ? ct : "(unset)", steps * rounds, rounds, steps);

    float *x = malloc(sizeof(float) * NDATA * NIN);
    float *y = surge_huge_alloc(sizeof(float) * NDATA * NOUT);
    if (x == NULL || y == NULL) {
        return 1;
    }
    uint64_t s = 1;
    for (size_t i = 0; i < (size_t)NDATA * NIN; i++) {
        x[i] = mlp_rand_sym(&s);
    }
    /* Smooth fields of the inputs, so the loss can go down. */
    for (int r = 0; r < NDATA; r++) {
        for (int j = 0; j < NOUT; j++) {
            float u = (float)(j % 64) / 64.0f, v = (float)(j / 64) / 64.0f;
            y[(size_t)r * NOUT + j] =
                300.0f + 10.0f * x[r * NIN] * sinf(3.0f * u + x[r * NIN + 1]) +
                5.0f * x[r * NIN + 2] * v;
        }
    }
    double flops = step_flops();
    double res[2][6]; /* bound, surge, adam, torch, torch tuned, (unused) */
    static struct surge_result sr;
    static struct pool pt, ptt;
    for (int k = 0; k < nthreads; k++) {
        int th = threads[k];
        memset(&sr, 0, sizeof sr);
        memset(&pt, 0, sizeof pt);
        memset(&ptt, 0, sizeof ptt);
        /* Rounds interleave the contenders: the machine's load moves. */
        for (int round = 0; round < rounds; round++) {
            bench_surge(th, steps, x, y, &sr);
            if (torch) {
                bench_torch(python, script, th, 0, steps, &pt);
                bench_torch(python, script, th, 1, steps, &ptt);
            }
        }
        res[k][0] = pool_median(&sr.bound);
        res[k][1] = pool_median(&sr.step);
        res[k][2] = pool_median(&sr.adam);
        res[k][3] = pool_median(&pt);
        res[k][4] = pool_median(&ptt);
        fprintf(stderr, "# %d thread(s): surge loss %.4g -> %.4g\n", th,
                sr.loss0, sr.loss_end);
    }

    printf("%-8s %-26s %12s %12s %10s\n", "threads", "what", "ms/step",
           "samples/s", "GFLOP/s");
    const char *names[5] = {"sgemm bound (11 products)", "surge step",
                            "  of which Adam pass", "pytorch (as users run)",
                            "pytorch (malloc tuned)"};
    for (int k = 0; k < nthreads; k++) {
        for (int i = 0; i < 5; i++) {
            double t = res[k][i];
            if (i == 2) {
                printf("%-8d %-26s %12.2f %12s %10s\n", threads[k], names[i],
                       1e3 * t, "", "");
                continue;
            }
            printf("%-8d %-26s %12.2f %12.0f %10.1f\n", threads[k], names[i],
                   1e3 * t, B / t, flops / t * 1e-9);
        }
    }
    printf("{\"bench\": \"trainer\", \"model\": \"6-1024-1024-1024-4096\", "
           "\"batch\": %d, \"gflop_per_step\": %.4g, ",
           B, flops * 1e-9);
    for (int k = 0; k < nthreads; k++) {
        char key[64];
        int th = threads[k];
        double bound = res[k][0], sur = res[k][1];
#define KEY(fmt) (snprintf(key, sizeof key, fmt, th), key)
        json_num(stdout, KEY("t%d_bound_samples_s"), B / bound, 0);
        json_num(stdout, KEY("t%d_surge_samples_s"), B / sur, 0);
        json_num(stdout, KEY("t%d_surge_gflops"), flops / sur * 1e-9, 0);
        json_num(stdout, KEY("t%d_adam_ms"), 1e3 * res[k][2], 0);
        json_num(stdout, KEY("t%d_torch_samples_s"), B / res[k][3], 0);
        json_num(stdout, KEY("t%d_torch_tuned_samples_s"), B / res[k][4], 0);
        json_num(stdout, KEY("t%d_ratio_vs_bound"), bound / sur, 0);
        json_num(stdout, KEY("t%d_ratio_vs_torch"), res[k][3] / sur, 0);
        json_num(stdout, KEY("t%d_ratio_vs_torch_tuned"), res[k][4] / sur,
                 k == nthreads - 1);
#undef KEY
    }
    printf("}\n");
    free(x);
    surge_huge_free(y, sizeof(float) * NDATA * NOUT);
    return 0;
}
