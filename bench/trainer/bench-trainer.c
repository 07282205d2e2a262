/*
 * bench/trainer/bench-trainer.c - `make bench-trainer`: the surge trainer
 * against the matrix-product bound and against PyTorch, in the same run.
 *
 * Model: the reference surrogate MLP 6 -> 1024 -> 1024 -> 1024 -> 4096
 * (ReLU), batch 256, Adam (lr 1e-3), MSE, data already in memory (4,096
 * samples); each step draws a random minibatch, gathered into batch
 * buffers as the server's reservoir does (PyTorch: x[idx], y[idx]), and
 * the gather is part of the timed step. For 1 and 2 threads, four
 * contenders take their steps in turn, in blocks of 3 steps of which the
 * first only warms caches, so that all see the same (shared, noisy)
 * machine:
 *   bound   : the 11 cblas_sgemm calls of one training step, same shapes,
 *             transposes and per-layer operands (forward 4, dW 4, dX 3):
 *             the matrix-product bound of a step;
 *   surge   : surge_trainer_step on the same model;
 *   torch   : the same model in Debian's PyTorch (bench_torch.py --serve,
 *             a process that takes one step per request), as a user runs
 *             it, and
 *   tuned   : the same with glibc kept from trimming memory
 *             (MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_);
 * both PyTorch processes get OPENBLAS_NUM_THREADS / OMP_NUM_THREADS set to
 * the thread count T and split T the way a user gets the most from it
 * (bench_torch.py, THREADS): Debian's torch computes its products in a
 * separate OpenBLAS, so it runs torch.set_num_threads(1) with OpenBLAS on
 * T threads (torch on T threads too would have its OpenMP workers spin
 * against OpenBLAS's: 1,212 samples/s at T = 2 here, not the 2,300-3,000
 * the same torch reaches split this way); a torch with its own BLAS gets
 * torch.set_num_threads(T). The JSON line names the split
 * (tT_torch_split). surge itself uses T OpenBLAS threads and its own pool
 * of T threads, alternating (docs/trainer.md, "Threads"). With more
 * than one thread a pause separates the contenders, so that the worker
 * threads one leaves spinning (OpenBLAS, OpenMP) do not slow the next.
 * surge's step is also cut into its parts (medians per step): the gather
 * (on the trainer's thread pool, as the server's), the matrix products,
 * the other passes and the optimizer (surge_trainer_times). Then the
 * fused Adam pass alone (part of surge's step). Figures are
 * medians of --steps steps (a round of blocks first as warm-up); the
 * environment is
 * left as CI has it (OPENBLAS_CORETYPE untouched). Prints a table, then one
 * JSON line with the figures and the ratios.
 *
 * Usage: bench-trainer [--python PATH] [--script bench_torch.py]
 *                      [--steps N] [--threads N] [--no-torch]
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>

#include "common/pool.h"
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
/* The whole run is bounded: a stuck peer cannot hang `make bench`. */
#define WATCHDOG_S 900

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
    if (n <= 0) {
        return NAN;
    }
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double
now_s(void)
{
    return (double)surge_now_ns() * 1e-9;
}

static void
pause_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
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

/* A PyTorch process that takes one training step per "step" line on its
 * stdin and answers "t SECONDS" (bench_torch.py --serve). */
struct peer {
    pid_t pid;
    FILE *to, *from;
    char split[96]; /* "torch_threads=1 blas=openblas blas_threads=2" */
};

static int
peer_start(struct peer *p, const char *python, const char *script, int threads,
           int tuned)
{
    int in[2], out[2];
    memset(p, 0, sizeof *p);
    p->pid = -1;
    if (pipe(in) != 0 || pipe(out) != 0) {
        return -errno;
    }
    /* Close-on-exec, so a later peer does not inherit (and keep open) this
     * one's stdin: it would never see EOF. */
    for (int i = 0; i < 2; i++) {
        (void)fcntl(in[i], F_SETFD, FD_CLOEXEC);
        (void)fcntl(out[i], F_SETFD, FD_CLOEXEC);
    }
    pid_t pid = fork();
    if (pid < 0) {
        return -errno;
    }
    if (pid == 0) {
        char th[16];
        snprintf(th, sizeof th, "%d", threads);
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[0]);
        close(in[1]);
        close(out[0]);
        close(out[1]);
        setenv("OPENBLAS_NUM_THREADS", th, 1);
        setenv("OMP_NUM_THREADS", th, 1);
        if (tuned) {
            setenv("MALLOC_MMAP_THRESHOLD_", "33554432", 1);
            setenv("MALLOC_TRIM_THRESHOLD_", "1073741824", 1);
        }
        execl(python, python, script, "--threads", th, "--serve", (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    p->pid = pid;
    p->to = fdopen(in[1], "w");
    p->from = fdopen(out[0], "r");
    if (p->to == NULL || p->from == NULL) {
        return -ENOMEM;
    }
    char line[256];
    while (fgets(line, sizeof line, p->from) != NULL) {
        if (strncmp(line, "ready", 5) == 0) {
            /* The thread split it chose, printed as is in the JSON line:
             * keep [A-Za-z0-9_= ] only. */
            size_t k = 0;
            for (const char *c = line + 5; *c != '\0' && *c != '\n'; c++) {
                int ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                         (*c >= '0' && *c <= '9') || *c == '_' || *c == '=' ||
                         (*c == ' ' && k > 0);
                if (ok && k + 1 < sizeof p->split) {
                    p->split[k++] = *c;
                }
            }
            p->split[k] = '\0';
            return 0;
        }
        if (strncmp(line, "skip", 4) == 0) {
            fprintf(stderr, "bench-trainer: torch: %s", line);
            return -ENOENT;
        }
    }
    return -EPIPE;
}

static double
peer_step(struct peer *p)
{
    char line[256];
    if (p->to == NULL || fputs("step\n", p->to) == EOF || fflush(p->to) != 0 ||
        fgets(line, sizeof line, p->from) == NULL ||
        strncmp(line, "t ", 2) != 0) {
        return NAN;
    }
    char *end = NULL;
    double t = strtod(line + 2, &end);
    return end != line + 2 && isfinite(t) && t > 0.0 ? t : NAN;
}

static void
peer_stop(struct peer *p)
{
    if (p->to != NULL) {
        fclose(p->to); /* EOF: the peer exits */
    }
    if (p->from != NULL) {
        fclose(p->from);
    }
    if (p->pid > 0) {
        /* It exits on EOF; give it 10 s, then kill it. */
        int st;
        for (int i = 0; i < 100; i++) {
            if (waitpid(p->pid, &st, WNOHANG) != 0) {
                p->pid = -1;
                break;
            }
            pause_s(0.1);
        }
        if (p->pid > 0) {
            kill(p->pid, SIGKILL);
            while (waitpid(p->pid, &st, 0) < 0 && errno == EINTR) {
            }
        }
    }
    memset(p, 0, sizeof *p);
}

/* Figures: the four contenders' step times, Adam alone, and the parts of
 * surge's step (surge_trainer_times, and the gather timed here). */
enum {
    C_BOUND,
    C_SURGE,
    C_TORCH,
    C_TUNED,
    C_ADAM,
    C_S_GATHER,
    C_S_GEMM,
    C_S_PASSES,
    C_S_OPT,
    N_FIG
};

/* The minibatch gather, as the server's reservoir does it: rows copied on
 * the trainer's thread pool (surge_reservoir_get_batch_pool). */
struct gather {
    const float *x, *y;
    float *bx, *by;
    const size_t *rows; /* (B) */
    size_t ntasks;
};

static void
gather_task(void *arg, size_t task)
{
    const struct gather *g = arg;
    size_t lo, hi;
    surge_pool_split(B, g->ntasks, task, &lo, &hi);
    for (size_t row = lo; row < hi; row++) {
        size_t k = g->rows[row];
        memcpy(g->bx + row * NIN, g->x + k * NIN, NIN * sizeof(float));
        memcpy(g->by + row * NOUT, g->y + k * NOUT, NOUT * sizeof(float));
    }
}

/* One thread count: the four contenders in turn, then Adam alone. */
static void
bench_threads(int threads, int steps, int torch, const char *python,
              const char *script, const float *x, const float *y, double *fig,
              char *split, size_t splitlen)
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
    (void)surge_trainer_observe_outputs(t, y, NDATA);
    size_t bx_bytes = sizeof(float) * B * NIN;
    size_t by_bytes = sizeof(float) * B * NOUT;
    float *bx = surge_trainer_host_alloc(t, bx_bytes);
    float *by = surge_trainer_host_alloc(t, by_bytes);
    struct bound bd;
    bound_init(&bd);
    static size_t rows[B];
    struct surge_pool *pool = surge_trainer_pool(t);
    struct gather g = {x, y, bx, by, rows, 2 * (size_t)threads};
    struct peer pt = {0}, ptt = {0};
    int have_torch = torch &&
                     peer_start(&pt, python, script, threads, 0) == 0 &&
                     peer_start(&ptt, python, script, threads, 1) == 0;
    if (bx == NULL || by == NULL) {
        fprintf(stderr, "bench-trainer: out of memory\n");
        exit(1);
    }
    /* Rounds of blocks: each contender takes BLOCK steps in a row, the
     * first of which only warms its caches and is not counted (a trainer
     * in the server follows its own previous step, not another program's);
     * blocks rotate, so all contenders see the same load. */
    enum { BLOCK = 3 };
    double gap = threads > 1 ? 0.25 : 0.0;
    static double tv[N_FIG][MAX_STEPS];
    int n = 0;
    uint64_t rs = 7;
    struct surge_trainer_step_info info;
    double loss0 = NAN;
    for (int round = 0; n < steps; round++) {
        int count = round > 0; /* round 0 is the warm-up */
        for (int i = 0; i < BLOCK; i++) {
            double tb = bound_step(&bd);
            if (count && i > 0 && n + i - 1 < MAX_STEPS) {
                tv[C_BOUND][n + i - 1] = tb;
            }
        }
        pause_s(gap);
        for (int i = 0; i < BLOCK; i++) {
            struct surge_trainer_times a, b;
            (void)surge_trainer_times(t, &a);
            double t0 = now_s();
            for (int row = 0; row < B; row++) { /* a random minibatch */
                rows[row] = (size_t)(mlp_rand_next(&rs) % NDATA);
            }
            surge_pool_run(pool, g.ntasks, gather_task, &g);
            double t1 = now_s();
            if (surge_trainer_step(t, bx, by, NULL, B, NULL, &info) != 0) {
                fprintf(stderr, "bench-trainer: step failed\n");
                exit(1);
            }
            double ts = now_s() - t0;
            (void)surge_trainer_times(t, &b);
            loss0 = round == 0 && i == 0 ? info.loss : loss0;
            if (count && i > 0 && n + i - 1 < MAX_STEPS) {
                int j = n + i - 1;
                tv[C_SURGE][j] = ts;
                tv[C_S_GATHER][j] = t1 - t0;
                tv[C_S_GEMM][j] = b.gemm_s - a.gemm_s;
                tv[C_S_PASSES][j] = b.passes_s - a.passes_s;
                tv[C_S_OPT][j] = b.optimizer_s - a.optimizer_s;
            }
        }
        for (int who = C_TORCH; who <= C_TUNED; who++) {
            struct peer *p = who == C_TORCH ? &pt : &ptt;
            pause_s(gap);
            for (int i = 0; i < BLOCK; i++) {
                double tt = have_torch ? peer_step(p) : NAN;
                if (count && i > 0 && n + i - 1 < MAX_STEPS) {
                    tv[who][n + i - 1] = tt;
                }
            }
        }
        pause_s(gap);
        if (count) {
            n += BLOCK - 1;
        }
        if (n + BLOCK - 1 > MAX_STEPS) {
            break;
        }
    }
    fprintf(stderr, "# %d thread(s): surge loss %.4g -> %.4g\n", threads, loss0,
            info.loss);
    snprintf(split, splitlen, "%s", have_torch ? pt.split : "");
    peer_stop(&pt);
    peer_stop(&ptt);
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
    struct surge_step_state st = {.s = {.kind = SURGE_OPT_ADAM,
                                        .lr = 1e-3f,
                                        .beta1 = 0.9f,
                                        .beta2 = 0.999f,
                                        .eps = 1e-8f,
                                        .step_size = 1e-2f,
                                        .inv_bc2_sqrt = 31.6f,
                                        .decay = 1.0f,
                                        .grad_scale = 1.0f}};
    void *ctx = NULL;
    if (surge_backend_cpu.create(threads, SURGE_PRECISION_FP32, &ctx, err,
                                 sizeof err) != 0) {
        fprintf(stderr, "bench-trainer: %s\n", err);
        exit(1);
    }
    for (int s = 0; s < WARMUP + n; s++) {
        double t0 = now_s();
        surge_backend_cpu.opt_update(ctx, &st, mem, mem + np, mem + 2 * np,
                                     mem + 3 * np, np, NULL);
        if (s >= WARMUP) {
            tv[C_ADAM][s - WARMUP] = now_s() - t0;
        }
    }
    surge_backend_cpu.destroy(ctx);
    surge_huge_free(mem, bytes);
    for (int k = 0; k < N_FIG; k++) {
        /* A failed peer leaves NaN: the median of what is finite. */
        int m = 0;
        for (int i = 0; i < n; i++) {
            if (isfinite(tv[k][i])) {
                tv[k][m++] = tv[k][i];
            }
        }
        fig[k] =
            (k == C_TORCH || k == C_TUNED) && m < n ? NAN : median(tv[k], m);
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
    int steps = 15, torch = 1;
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
                    "[--steps N] [--threads N] [--no-torch]\n");
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN); /* a dead peer reads as NaN, not a crash */
    alarm(WATCHDOG_S);
    const char *ct = getenv("OPENBLAS_CORETYPE");
    printf("# trainer benchmark: MLP 6-1024-1024-1024-4096 relu, batch %d, "
           "Adam, random minibatches from memory; OPENBLAS_CORETYPE=%s; "
           "medians of %d steps, contenders alternating in blocks of 3\n",
           B, ct != NULL ? ct : "(unset)", steps);

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
    double res[2][N_FIG];
    char split[2][96];
    for (int k = 0; k < nthreads; k++) {
        bench_threads(threads[k], steps, torch, python, script, x, y, res[k],
                      split[k], sizeof split[k]);
    }

    printf("%-8s %-26s %12s %12s %10s\n", "threads", "what", "ms/step",
           "samples/s", "GFLOP/s");
    const char *names[N_FIG] = {
        "sgemm bound (11 products)", "surge step",
        "pytorch (as users run)",    "pytorch (malloc tuned)",
        "  surge's Adam pass alone", "  surge: gather",
        "  surge: products",         "  surge: other passes",
        "  surge: optimizer"};
    for (int k = 0; k < nthreads; k++) {
        for (int i = 0; i < N_FIG; i++) {
            double t = res[k][i];
            if (i >= C_ADAM) {
                printf("%-8d %-26s %12.2f %12s %10s\n", threads[k], names[i],
                       1e3 * t, "", "");
                continue;
            }
            printf("%-8d %-26s %12.2f %12.0f %10.1f\n", threads[k], names[i],
                   1e3 * t, B / t, flops / t * 1e-9);
        }
    }
    printf("{\"bench\": \"trainer\", \"model\": \"6-1024-1024-1024-4096\", "
           "\"batch\": %d, \"steps\": %d, \"gflop_per_step\": %.4g, ",
           B, steps, flops * 1e-9);
    for (int k = 0; k < nthreads; k++) {
        char key[64];
        int th = threads[k];
        double *r = res[k];
#define KEY(fmt) (snprintf(key, sizeof key, fmt, th), key)
        json_num(stdout, KEY("t%d_bound_samples_s"), B / r[C_BOUND], 0);
        json_num(stdout, KEY("t%d_surge_samples_s"), B / r[C_SURGE], 0);
        json_num(stdout, KEY("t%d_surge_gflops"), flops / r[C_SURGE] * 1e-9, 0);
        json_num(stdout, KEY("t%d_adam_ms"), 1e3 * r[C_ADAM], 0);
        json_num(stdout, KEY("t%d_surge_gather_ms"), 1e3 * r[C_S_GATHER], 0);
        json_num(stdout, KEY("t%d_surge_gemm_ms"), 1e3 * r[C_S_GEMM], 0);
        json_num(stdout, KEY("t%d_surge_passes_ms"), 1e3 * r[C_S_PASSES], 0);
        json_num(stdout, KEY("t%d_surge_optimizer_ms"), 1e3 * r[C_S_OPT], 0);
        printf("\"%s\": \"%s\", ", KEY("t%d_torch_split"), split[k]);
        json_num(stdout, KEY("t%d_torch_samples_s"), B / r[C_TORCH], 0);
        json_num(stdout, KEY("t%d_torch_tuned_samples_s"), B / r[C_TUNED], 0);
        json_num(stdout, KEY("t%d_ratio_vs_bound"), r[C_BOUND] / r[C_SURGE], 0);
        json_num(stdout, KEY("t%d_ratio_vs_torch"), r[C_TORCH] / r[C_SURGE], 0);
        json_num(stdout, KEY("t%d_ratio_vs_torch_tuned"),
                 r[C_TUNED] / r[C_SURGE], k == nthreads - 1);
#undef KEY
    }
    printf("}\n");
    free(x);
    surge_huge_free(y, sizeof(float) * NDATA * NOUT);
    return 0;
}
