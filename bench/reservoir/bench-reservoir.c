/*
 * bench/reservoir/bench-reservoir.c - how fast the reservoir assembles
 * batches, against the two things it replaces.
 *
 * For samples of 16 KiB, 256 KiB and 4 MiB and batches of 64 and 256 rows,
 * a reservoir (policy reservoir, pool filled to capacity) serves random
 * batches with get_batch into contiguous input/output arrays. In the same
 * run, the same rows are gathered from the same pool by a bare loop of
 * memcpy (the limit: no policy, no lock, no bookkeeping), and by NumPy
 * fancy indexing (Debian's python3-numpy, `pool[idx]` on a pool of the same
 * size, the same row indices; only the gather is timed), plus NumPy's best
 * case `np.take(..., out=)` for information. Each figure is the median of
 * several repetitions; the repetitions of the three variants interleave
 * (reservoir, memcpy, NumPy, reservoir, ...: NumPy runs as a worker process
 * driven through a pipe) so that the machine's noise hits them alike, and
 * the ratios are medians of per-repetition ratios. Then put+get operations
 * per second with tiny samples, per policy.
 *
 * Memory: a 1 GiB pool here and one in NumPy, plus a batch on each side (up
 * to 1 GiB for 256 rows of 4 MiB): about 4 GiB at the peak.
 *
 * Prints a table and ends with exactly one JSON line. Targets (issue 3):
 * >= 0.8 of the memcpy gather for samples of 256 KiB and more, and >= 2x
 * NumPy fancy indexing.
 *
 * Usage: bench-reservoir [--python PATH] [--script PATH] [--pool-mib N]
 *                        [--reps N] [--quick]
 */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/util.h"
#include "reservoir/reservoir.h"
#include "reservoir/reservoir_internal.h"

#define IN_DIM 8 /* parameters + time, as a surrogate's input */
#define MAX_REPS 31
#define NSIZES 3
#define NBATCH 2

static const size_t SIZES[NSIZES] = {16 << 10, 256 << 10, 4 << 20};
static const size_t BATCHES[NBATCH] = {64, 256};

struct result {
    size_t sample_bytes, batch;
    double res_gbs, memcpy_gbs; /* medians */
    double numpy_gbs, numpy_take_gbs;
    double ratio_memcpy; /* median of per-repetition ratios */
    double ratio_numpy;  /* median of per-repetition ratios */
};

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double
median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double
seconds(void)
{
    return (double)surge_now_ns() * 1e-9;
}

/* The NumPy worker: a child process speaking gather_numpy.py's protocol. */
struct py {
    pid_t pid;  /* 0 when not running */
    FILE *to;   /* its stdin */
    FILE *from; /* its stdout */
};

static int
py_start(struct py *p, const char *python, const char *script)
{
    int a[2], b[2];
    if (pipe(a) != 0) {
        return -errno;
    }
    if (pipe(b) != 0) {
        int e = errno;
        close(a[0]);
        close(a[1]);
        return -e;
    }
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(a[0]);
        close(a[1]);
        close(b[0]);
        close(b[1]);
        return -e;
    }
    if (pid == 0) {
        dup2(a[0], 0);
        dup2(b[1], 1);
        close(a[0]);
        close(a[1]);
        close(b[0]);
        close(b[1]);
        execl(python, python, script, (char *)NULL);
        _exit(127);
    }
    close(a[0]);
    close(b[1]);
    p->pid = pid;
    p->to = fdopen(a[1], "w");
    p->from = fdopen(b[0], "r");
    if (p->to == NULL || p->from == NULL) {
        return -ENOMEM;
    }
    return 0;
}

static void
py_stop(struct py *p)
{
    if (p->pid <= 0) {
        return;
    }
    fprintf(p->to, "quit\n");
    fclose(p->to);
    fclose(p->from);
    waitpid(p->pid, NULL, 0);
    p->pid = 0;
}

/* Send one command line, read one reply line into reply[len]. A worker
 * that does not answer is stopped (the comparison is then missing). */
static int
py_cmd(struct py *p, const char *cmd, char *reply, size_t len)
{
    if (p->pid <= 0) {
        return -ESRCH;
    }
    if (fprintf(p->to, "%s\n", cmd) < 0 || fflush(p->to) != 0 ||
        fgets(reply, (int)len, p->from) == NULL) {
        fprintf(stderr, "bench-reservoir: the NumPy worker died\n");
        py_stop(p);
        return -EPIPE;
    }
    return strncmp(reply, "error", 5) == 0 ? -EINVAL : 0;
}

/* Write n row indices to a new temporary file; its name into path. */
static int
write_rows(char *path, size_t len, const uint32_t *rows, size_t n)
{
    snprintf(path, len, "/tmp/surge-bench-rows-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0) {
        path[0] = '\0';
        return -errno;
    }
    size_t want = n * sizeof(uint32_t);
    ssize_t w = write(fd, rows, want);
    close(fd);
    return (w >= 0 && (size_t)w == want) ? 0 : -EIO;
}

/* K batches of B through get_batch; their slots into rows (K, B).
 * Returns seconds, or -1 on an error. */
static double
gather_reservoir(surge_reservoir *r, uint32_t *rows, size_t K, size_t B,
                 float *in, float *out, surge_batch_info *info)
{
    double t0 = seconds();
    for (size_t k = 0; k < K; k++) {
        long n = surge_reservoir_get_batch(r, B, in, out, info, 0);
        if (n != (long)B) {
            fprintf(stderr, "bench-reservoir: get_batch: %ld\n", n);
            return -1.0;
        }
        for (size_t i = 0; i < B; i++) {
            rows[k * B + i] = info[i].slot;
        }
    }
    return seconds() - t0;
}

/* The bare limit: the same rows from the same pool into the same arrays,
 * one memcpy per part of each row, nothing else. Returns seconds. */
static double
gather_memcpy(const uint8_t *pool, size_t slot_bytes, const uint32_t *rows,
              size_t K, size_t B, float *in, size_t in_bytes, float *out,
              size_t out_bytes)
{
    uint8_t *in8 = (uint8_t *)in, *out8 = (uint8_t *)out;
    double t0 = seconds();
    for (size_t k = 0; k < K; k++) {
        const uint32_t *rk = rows + k * B;
        for (size_t i = 0; i < B; i++) {
            const uint8_t *src = pool + (size_t)rk[i] * slot_bytes;
            memcpy(in8 + i * in_bytes, src, in_bytes);
            memcpy(out8 + i * out_bytes, src + in_bytes, out_bytes);
        }
    }
    return seconds() - t0;
}

/* Gather figures for one sample size: fills res[NBATCH]. */
static int
bench_size(size_t sample_bytes, size_t pool_bytes, int reps, struct py *py,
           struct result *res)
{
    const size_t out_dim = sample_bytes / sizeof(float) - IN_DIM;
    const size_t in_bytes = IN_DIM * sizeof(float);
    const size_t out_bytes = out_dim * sizeof(float);
    const size_t bmax = BATCHES[NBATCH - 1];
    const double target_bytes = 256.0 * (1 << 20); /* per repetition */

    surge_reservoir_config cfg;
    surge_reservoir_config_init(&cfg);
    cfg.policy = SURGE_RESERVOIR_RESERVOIR;
    cfg.capacity_bytes = pool_bytes;
    cfg.input_dim = IN_DIM;
    cfg.output_dim = out_dim;
    cfg.max_batch = bmax;
    cfg.seed = 2026;
    char err[256];
    surge_reservoir *r = NULL;
    double t0 = seconds();
    int rc = surge_reservoir_create(&r, &cfg, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "bench-reservoir: %s\n", err);
        return rc;
    }
    double t_create = seconds() - t0;
    surge_reservoir_stats st;
    surge_reservoir_get_stats(r, &st);
    size_t nslots = st.capacity_samples;

    float *in = NULL, *out = NULL, *sample = NULL;
    uint32_t *rows = NULL;
    surge_batch_info *info = NULL;
    char path[64] = "";
    char line[256];
    size_t in_alloc = bmax * in_bytes, out_alloc = bmax * out_bytes;
    in = surge_huge_alloc(in_alloc);
    out = surge_huge_alloc(out_alloc);
    sample = malloc(sample_bytes);
    info = malloc(bmax * sizeof(*info));
    if (in == NULL || out == NULL || sample == NULL || info == NULL) {
        rc = -ENOMEM;
        goto out;
    }

    /* Fill the pool to capacity (the watermark defaults to max_batch). */
    t0 = seconds();
    for (size_t i = 0; i < nslots; i++) {
        for (size_t k = 0; k < sample_bytes / sizeof(float); k += 1024) {
            sample[k] = (float)i;
        }
        surge_sample_meta m = {.sim = i % 16, .step = i, .arrival_ns = 0};
        rc = surge_reservoir_put(r, sample, sample + IN_DIM, &m, 0);
        if (rc != 0) {
            fprintf(stderr, "bench-reservoir: put: %s\n", surge_strerror(rc));
            goto out;
        }
    }
    double t_fill = seconds() - t0;
    printf("# %zu KiB samples: pool %zu MiB, %zu slots; create+prefault "
           "%.2f s, fill %.2f GB/s\n",
           sample_bytes >> 10, pool_bytes >> 20, nslots, t_create,
           (double)nslots * (double)sample_bytes / t_fill * 1e-9);

    size_t slot_bytes;
    const uint8_t *pool = surge_reservoir_pool_(r, &slot_bytes);
    if (py->pid > 0) {
        snprintf(line, sizeof(line), "pool %zu %zu", nslots,
                 sample_bytes / sizeof(float));
        (void)py_cmd(py, line, line, sizeof(line));
    }

    for (int b = 0; b < NBATCH; b++) {
        size_t B = BATCHES[b];
        double bytes_batch = (double)B * (double)sample_bytes;
        size_t K = (size_t)(target_bytes / bytes_batch);
        if (K < 1) {
            K = 1;
        }
        free(rows);
        rows = malloc(K * B * sizeof(uint32_t));
        if (rows == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        double g_res[MAX_REPS], g_cpy[MAX_REPS], ratio[MAX_REPS];
        double g_np[MAX_REPS], g_take[MAX_REPS], ratio_np[MAX_REPS];
        bool have_np = false;
        /* One warm-up repetition (not counted), then reps, each one
         * reservoir, memcpy, NumPy in turn. */
        for (int rep = -1; rep < reps; rep++) {
            /* Alternate which C variant goes first (odd repetitions copy
             * the previous repetition's rows first), so neither always
             * pays for following the other. */
            double t_res, t_cpy;
            if (rep % 2 != 0 && rep > 0) {
                t_cpy = gather_memcpy(pool, slot_bytes, rows, K, B, in,
                                      in_bytes, out, out_bytes);
                t_res = gather_reservoir(r, rows, K, B, in, out, info);
            } else {
                t_res = gather_reservoir(r, rows, K, B, in, out, info);
                t_cpy = gather_memcpy(pool, slot_bytes, rows, K, B, in,
                                      in_bytes, out, out_bytes);
            }
            if (t_res < 0) {
                rc = -EIO;
                goto out;
            }
            if (rep < 0) {
                /* The warm-up's rows become NumPy's rows. */
                have_np = py->pid > 0 &&
                          write_rows(path, sizeof(path), rows, K * B) == 0;
                if (have_np) {
                    snprintf(line, sizeof(line), "rows %zu %s", B, path);
                    have_np = py_cmd(py, line, line, sizeof(line)) == 0;
                }
                continue;
            }
            g_res[rep] = (double)K * bytes_batch / t_res * 1e-9;
            g_cpy[rep] = (double)K * bytes_batch / t_cpy * 1e-9;
            ratio[rep] = t_cpy / t_res;
            g_np[rep] = g_take[rep] = ratio_np[rep] = 0.0;
            if (have_np) {
                snprintf(line, sizeof(line), "rep %zu", B);
                if (py_cmd(py, line, line, sizeof(line)) != 0 ||
                    sscanf(line, "%lf %lf", &g_np[rep], &g_take[rep]) != 2 ||
                    !(g_np[rep] > 0.0)) {
                    fprintf(stderr, "bench-reservoir: NumPy worker: %s\n",
                            line);
                    have_np = false;
                    rc = -EIO;
                } else {
                    ratio_np[rep] = g_res[rep] / g_np[rep];
                }
            }
        }
        if (path[0] != '\0') {
            unlink(path);
            path[0] = '\0';
        }
        res[b].sample_bytes = sample_bytes;
        res[b].batch = B;
        res[b].res_gbs = median(g_res, reps);
        res[b].memcpy_gbs = median(g_cpy, reps);
        res[b].ratio_memcpy = median(ratio, reps);
        if (have_np) {
            res[b].numpy_gbs = median(g_np, reps);
            res[b].numpy_take_gbs = median(g_take, reps);
            res[b].ratio_numpy = median(ratio_np, reps);
        }
    }

out:
    if (path[0] != '\0') {
        unlink(path);
    }
    free(rows);
    free(info);
    free(sample);
    surge_huge_free(in, in_alloc);
    surge_huge_free(out, out_alloc);
    surge_reservoir_destroy(&r);
    return rc;
}

/* put + get_batch(B) pairs per second with 64-byte samples. */
struct ops_case {
    const char *name;
    enum surge_reservoir_policy policy;
    bool balance, prio;
    size_t B;
    double ops_s;  /* (puts + gets calls) per second, median */
    double rows_s; /* rows served per second, median */
};

static int
bench_ops(struct ops_case *oc, int reps)
{
    surge_reservoir_config cfg;
    surge_reservoir_config_init(&cfg);
    cfg.policy = oc->policy;
    cfg.input_dim = 4;
    cfg.output_dim = 12;
    cfg.capacity_bytes = (size_t)65536 * 64;
    cfg.max_batch = 64;
    cfg.watermark = cfg.policy == SURGE_RESERVOIR_RESERVOIR ? 1024 : 0;
    cfg.balance_sims = oc->balance;
    cfg.prioritized.enabled = oc->prio;
    char err[256];
    surge_reservoir *r = NULL;
    int rc = surge_reservoir_create(&r, &cfg, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "bench-reservoir: %s\n", err);
        return rc;
    }
    float in[64 * 4], out[64 * 12];
    surge_batch_info info[64];
    uint64_t id = 0;
    /* Warm: half full, so both sides are steady (puts evict or fill). */
    for (int i = 0; i < 32768; i++, id++) {
        surge_sample_meta m = {.sim = id % 64, .step = id, .arrival_ns = 0};
        if (surge_reservoir_put(r, in, out, &m, 0) != 0) {
            break;
        }
    }
    const int N = 100000;
    double v_ops[MAX_REPS], v_rows[MAX_REPS];
    for (int rep = 0; rep < reps; rep++) {
        uint64_t rows = 0, calls = 0;
        double t0 = seconds();
        for (int i = 0; i < N; i++) {
            /* B puts then one batch of B: the reservoir stays level. */
            for (size_t k = 0; k < oc->B; k++, id++) {
                surge_sample_meta m = {
                    .sim = id % 64, .step = id, .arrival_ns = 0};
                if (surge_reservoir_put(r, in, out, &m, 0) == 0) {
                    calls++;
                }
            }
            long n = surge_reservoir_get_batch(r, oc->B, in, out, info, 0);
            if (n > 0) {
                rows += (uint64_t)n;
                calls++;
            }
            if (oc->B > 1) {
                i += (int)oc->B - 1; /* count samples, not rounds */
            }
        }
        double dt = seconds() - t0;
        v_ops[rep] = (double)calls / dt;
        v_rows[rep] = (double)rows / dt;
    }
    oc->ops_s = median(v_ops, reps);
    oc->rows_s = median(v_rows, reps);
    surge_reservoir_destroy(&r);
    return 0;
}

int
main(int argc, char **argv)
{
    const char *python = "/usr/bin/python3";
    const char *script = "bench/reservoir/gather_numpy.py";
    size_t pool_mib = 1024;
    int reps = 7;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--python") == 0 && i + 1 < argc) {
            python = argv[++i];
        } else if (strcmp(argv[i], "--script") == 0 && i + 1 < argc) {
            script = argv[++i];
        } else if (strcmp(argv[i], "--pool-mib") == 0 && i + 1 < argc) {
            uint64_t v;
            if (surge_parse_uint64(argv[++i], &v) != 0 || v < 64 || v > 8192) {
                fprintf(stderr, "bench-reservoir: --pool-mib: a number of "
                                "MiB in [64, 8192]\n");
                return 2;
            }
            pool_mib = (size_t)v;
        } else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
            int64_t v;
            if (surge_parse_int64(argv[++i], &v) != 0 || v < 1 ||
                v > MAX_REPS) {
                fprintf(stderr, "bench-reservoir: --reps: 1..%d\n", MAX_REPS);
                return 2;
            }
            reps = (int)v;
        } else if (strcmp(argv[i], "--quick") == 0) {
            pool_mib = 256;
            reps = 3;
        } else {
            fprintf(stderr,
                    "usage: bench-reservoir [--python PATH] [--script PATH] "
                    "[--pool-mib N] [--reps N] [--quick]\n");
            return 2;
        }
    }
    if (access(python, X_OK) != 0 || access(script, R_OK) != 0) {
        fprintf(stderr,
                "bench-reservoir: %s or %s missing: NumPy side skipped\n",
                python, script);
        python = NULL;
    }

    struct result res[NSIZES][NBATCH];
    memset(res, 0, sizeof(res));
    int failed = 0;
    struct py py = {0, NULL, NULL};
    if (python != NULL && py_start(&py, python, script) != 0) {
        fprintf(stderr, "bench-reservoir: cannot start %s\n", python);
        failed = 1;
    }
    for (int s = 0; s < NSIZES; s++) {
        /* The reservoir policy draws with replacement: a pool of 4 MiB
         * samples holding fewer than 256 still serves batches of 256. */
        int rc = bench_size(SIZES[s], pool_mib << 20, reps, &py, res[s]);
        if (rc != 0) {
            failed = 1;
        }
    }
    if (python != NULL && py.pid <= 0) {
        failed = 1; /* the NumPy side died: no comparison */
    }
    py_stop(&py);

    struct ops_case ops[] = {
        {"fifo", SURGE_RESERVOIR_FIFO, false, false, 1, 0, 0},
        {"firo", SURGE_RESERVOIR_FIRO, false, false, 1, 0, 0},
        {"reservoir", SURGE_RESERVOIR_RESERVOIR, false, false, 1, 0, 0},
        {"reservoir+balance", SURGE_RESERVOIR_RESERVOIR, true, false, 1, 0, 0},
        {"reservoir+prioritized", SURGE_RESERVOIR_RESERVOIR, false, true, 1, 0,
         0},
        {"reservoir B=64", SURGE_RESERVOIR_RESERVOIR, false, false, 64, 0, 0},
    };
    const int nops = (int)(sizeof(ops) / sizeof(ops[0]));
    for (int i = 0; i < nops; i++) {
        if (bench_ops(&ops[i], reps < 5 ? reps : 5) != 0) {
            failed = 1;
        }
    }

    printf("\n%-8s %5s | %10s %10s %6s | %10s %10s %6s\n", "sample", "B",
           "reservoir", "memcpy", "ratio", "numpy[idx]", "np.take", "x np");
    printf("%-8s %5s | %10s %10s %6s | %10s %10s %6s\n", "", "", "GB/s", "GB/s",
           "", "GB/s", "out= GB/s", "");
    double min_ratio_big = 1e9, min_ratio_all = 1e9, min_np = 1e9;
    for (int s = 0; s < NSIZES; s++) {
        for (int b = 0; b < NBATCH; b++) {
            struct result *x = &res[s][b];
            double xnp = x->ratio_numpy;
            printf("%5zuKiB %5zu | %10.2f %10.2f %6.3f | %10.2f %10.2f "
                   "%6.2f\n",
                   x->sample_bytes >> 10, x->batch, x->res_gbs, x->memcpy_gbs,
                   x->ratio_memcpy, x->numpy_gbs, x->numpy_take_gbs, xnp);
            if (x->sample_bytes >= (256 << 10) &&
                x->ratio_memcpy < min_ratio_big) {
                min_ratio_big = x->ratio_memcpy;
            }
            if (x->ratio_memcpy < min_ratio_all) {
                min_ratio_all = x->ratio_memcpy;
            }
            if (xnp < min_np) {
                min_np = xnp;
            }
        }
    }
    printf("\n%-24s %14s %14s\n", "put+get (64 B samples)", "calls/s",
           "rows/s");
    for (int i = 0; i < nops; i++) {
        printf("%-24s %14.0f %14.0f\n", ops[i].name, ops[i].ops_s,
               ops[i].rows_s);
    }
    bool pass = !failed && min_ratio_big >= 0.8 && min_np >= 2.0;
    printf("\ntargets: memcpy ratio >= 0.8 for >= 256 KiB: %.3f; >= 2x "
           "NumPy: %.2fx -> %s\n",
           min_ratio_big, min_np, pass ? "PASS" : "MISS");

    /* The one JSON line. */
    printf("{\"bench\":\"reservoir\",\"pool_mib\":%zu,\"reps\":%d,"
           "\"gather\":[",
           pool_mib, reps);
    for (int s = 0; s < NSIZES; s++) {
        for (int b = 0; b < NBATCH; b++) {
            struct result *x = &res[s][b];
            printf("%s{\"sample_kib\":%zu,\"batch\":%zu,\"reservoir_gbs\":"
                   "%.3f,\"memcpy_gbs\":%.3f,\"ratio_memcpy\":%.3f,"
                   "\"numpy_gbs\":%.3f,\"numpy_take_out_gbs\":%.3f,"
                   "\"ratio_numpy\":%.3f}",
                   (s || b) ? "," : "", x->sample_bytes >> 10, x->batch,
                   x->res_gbs, x->memcpy_gbs, x->ratio_memcpy, x->numpy_gbs,
                   x->numpy_take_gbs, x->ratio_numpy);
        }
    }
    printf("],\"ops\":{");
    for (int i = 0; i < nops; i++) {
        printf("%s\"%s\":{\"calls_s\":%.0f,\"rows_s\":%.0f}", i ? "," : "",
               ops[i].name, ops[i].ops_s, ops[i].rows_s);
    }
    printf("},\"min_ratio_memcpy_ge_256k\":%.3f,\"min_ratio_memcpy_all\":"
           "%.3f,\"min_ratio_numpy\":%.3f,\"pass\":%s}\n",
           min_ratio_big, min_ratio_all, min_np, pass ? "true" : "false");
    return failed ? 1 : 0;
}
