/*
 * bench/scaling/bench-dp.c - what data-parallel training costs: run under
 * `mpirun -np R`, every rank trains a replica of the reference MLP
 * (6 -> 1024 -> 1024 -> 1024 -> 4096, ReLU, Adam, 6.3 M parameters: 25 MB
 * of gradients) on its own batch of B rows (default 256, data in memory).
 *
 * Measured in the same run, each as the median over --steps steps after
 * two warm-up steps, every rank stepping at once:
 *   local        plain steps, no communication (the baseline: what a rank
 *                computes, with every rank's compute competing as in the
 *                data-parallel steps)
 *   dp           replicated steps, gradients summed in buckets of
 *                --bucket-mb overlapped with backward (the server's way)
 *   dp_serial    replicated steps with one bucket for the whole vector,
 *                started after backward: nothing overlaps
 *   allreduce    a blocking MPI_Allreduce of the whole gradient vector
 * and from the dp steps: the time the step waited for its buckets after
 * backward (exposed) and the communication thread's time per step.
 * hidden_share = 1 - exposed / allreduce: the part of the sum's cost that
 * the overlap took off the step. samples_per_s = R * B / dp step time.
 * Rank 0 prints one JSON line.
 *
 * Usage: mpirun -np R bench-dp [--steps N] [--batch B] [--threads T]
 *                              [--bucket-mb M]
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "common/rng.h"
#include "common/util.h"
#include "trainer/replicas_mpi.h"
#include "trainer/trainer.h"

#define NIN 6
#define NOUT 4096

static int rank, nranks;

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The median over ranks of each rank's median (the ranks run in lockstep
 * in the dp modes; in the local mode each rank's own). */
static double
median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    double m = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    MPI_Allreduce(MPI_IN_PLACE, &m, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return m;
}

struct run {
    int steps, batch, threads;
    double bucket_mb;
    float *x, *y;
};

static surge_trainer *
make_trainer(const struct run *r)
{
    struct surge_trainer_config c;
    surge_trainer_config_defaults(&c);
    c.n_inputs = NIN;
    c.n_outputs = NOUT;
    c.n_layers = 3;
    c.layers[0] = c.layers[1] = c.layers[2] = 1024;
    c.batch_size = r->batch;
    c.threads = r->threads;
    c.out_norm_samples = r->batch;
    char err[256];
    surge_trainer *t = NULL;
    if (surge_trainer_create(&c, &t, err, sizeof err) != 0) {
        fprintf(stderr, "bench-dp: %s\n", err);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    surge_trainer_observe_outputs(t, r->y, r->batch);
    surge_trainer_freeze_outputs(t);
    return t;
}

/* Median step time (ms) of plain (dp == 0) or replicated steps. */
static double
time_steps(const struct run *r, surge_replicas_mpi *rep, int dp,
           size_t bucket_bytes, double *exposed_ms, double *comm_ms)
{
    surge_trainer *t = make_trainer(r);
    if (dp && surge_trainer_set_replicas(t, &surge_replicas_mpi_ops, rep,
                                         bucket_bytes) != 0) {
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    double *ms = calloc((size_t)r->steps, sizeof *ms);
    double comm0 = 0, exp0 = 0;
    long global = (long)r->batch * nranks;
    for (int s = 0; s < r->steps + 2; s++) {
        if (s == 2 && dp) {
            struct surge_trainer_dp_stats st;
            surge_trainer_dp_get_stats(t, &st);
            exp0 = st.exposed_s;
            comm0 = surge_replicas_mpi_comm_s(rep);
        }
        MPI_Barrier(MPI_COMM_WORLD);
        uint64_t t0 = surge_now_ns();
        int rc =
            dp ? surge_trainer_step_replicated(t, r->x, r->y, NULL, r->batch,
                                               global, NULL, NULL)
               : surge_trainer_step(t, r->x, r->y, NULL, r->batch, NULL, NULL);
        if (rc != 0) {
            fprintf(stderr, "bench-dp: step: %d\n", rc);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        if (s >= 2) {
            ms[s - 2] = (surge_now_ns() - t0) / 1e6;
        }
    }
    if (dp) {
        struct surge_trainer_dp_stats st;
        surge_trainer_dp_get_stats(t, &st);
        double v[2] = {(st.exposed_s - exp0) * 1e3 / r->steps,
                       (surge_replicas_mpi_comm_s(rep) - comm0) * 1e3 /
                           r->steps};
        MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        *exposed_ms = v[0];
        *comm_ms = v[1];
    }
    double m = median(ms, r->steps);
    free(ms);
    surge_trainer_destroy(&t);
    return m;
}

static double
time_allreduce(size_t n, int reps)
{
    float *g = calloc(n, sizeof *g);
    double *ms = calloc((size_t)reps, sizeof *ms);
    for (int i = 0; i < reps + 1; i++) {
        MPI_Barrier(MPI_COMM_WORLD);
        uint64_t t0 = surge_now_ns();
        MPI_Allreduce(MPI_IN_PLACE, g, (int)n, MPI_FLOAT, MPI_SUM,
                      MPI_COMM_WORLD);
        if (i > 0) {
            ms[i - 1] = (surge_now_ns() - t0) / 1e6;
        }
    }
    double m = median(ms, reps);
    free(ms);
    free(g);
    return m;
}

static long
arg_long(const char *flag, const char *v, long lo, long hi)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno != 0 || *end != '\0' || x < lo || x > hi) {
        if (rank == 0) {
            fprintf(stderr, "bench-dp: %s: %ld..%ld\n", flag, lo, hi);
        }
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    return x;
}

int
main(int argc, char **argv)
{
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    struct run r = {.steps = 10, .batch = 256, .threads = 1, .bucket_mb = 4};
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) {
            if (rank == 0) {
                fprintf(stderr, "usage: mpirun -np R bench-dp [--steps N] "
                                "[--batch B] [--threads T] [--bucket-mb M]\n");
            }
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
        if (strcmp(argv[i], "--steps") == 0) {
            r.steps = (int)arg_long(argv[i], argv[i + 1], 1, 100000);
        } else if (strcmp(argv[i], "--batch") == 0) {
            r.batch = (int)arg_long(argv[i], argv[i + 1], 1, 65536);
        } else if (strcmp(argv[i], "--threads") == 0) {
            r.threads = (int)arg_long(argv[i], argv[i + 1], 1, 256);
        } else if (strcmp(argv[i], "--bucket-mb") == 0) {
            r.bucket_mb = (double)arg_long(argv[i], argv[i + 1], 1, 4096);
        } else {
            if (rank == 0) {
                fprintf(stderr, "bench-dp: unknown option %s\n", argv[i]);
            }
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
        i++;
    }
    char err[256] = "";
    surge_replicas_mpi *rep = NULL, *rep_test = NULL;
    if (surge_replicas_mpi_create(&rep, MPI_COMM_WORLD, SURGE_REPLICAS_THREAD,
                                  err, sizeof err) != 0 ||
        surge_replicas_mpi_create(&rep_test, MPI_COMM_WORLD,
                                  SURGE_REPLICAS_TEST, err, sizeof err) != 0) {
        fprintf(stderr, "bench-dp: %s\n", err);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    r.x = malloc((size_t)r.batch * NIN * sizeof *r.x);
    r.y = malloc((size_t)r.batch * NOUT * sizeof *r.y);
    uint64_t seed = 7 + (uint64_t)rank;
    for (size_t i = 0; i < (size_t)r.batch * NIN; i++) {
        r.x[i] = (float)(surge_splitmix64(&seed) >> 40) / 16777216.0f;
    }
    for (size_t i = 0; i < (size_t)r.batch * NOUT; i++) {
        r.y[i] = (float)(surge_splitmix64(&seed) >> 40) / 16777216.0f;
    }
    size_t np;
    {
        surge_trainer *t = make_trainer(&r);
        np = surge_trainer_num_params(t);
        surge_trainer_destroy(&t);
    }
    double e0, c0, e1, c1, e2, c2;
    size_t bucket = (size_t)(r.bucket_mb * 1048576.0);
    double local = time_steps(&r, rep, 0, 0, NULL, NULL);
    double dp = time_steps(&r, rep, 1, bucket, &e0, &c0);
    double dpt = time_steps(&r, rep_test, 1, bucket, &e2, &c2);
    double serial = time_steps(&r, rep, 1, np * sizeof(float), &e1, &c1);
    double ar = time_allreduce(np, r.steps);
    double hidden = ar > 0 ? 1.0 - e0 / ar : 0.0;
    hidden = hidden < 0 ? 0 : hidden > 1 ? 1 : hidden;
    double hidden_t = ar > 0 ? 1.0 - e2 / ar : 0.0;
    hidden_t = hidden_t < 0 ? 0 : hidden_t > 1 ? 1 : hidden_t;
    double best = dp < dpt ? dp : dpt;
    best = best < serial ? best : serial;
    if (rank == 0) {
        printf("{\"bench\": \"dp\", \"ranks\": %d, \"model\": "
               "\"6-1024-1024-1024-4096\", \"params\": %zu, "
               "\"gradient_mb\": %.1f, \"batch_per_rank\": %d, "
               "\"threads_per_rank\": %d, \"bucket_mb\": %g, \"steps\": %d, "
               "\"allreduce_ms\": %.2f, \"step_ms_local\": %.2f, "
               "\"step_ms_dp_serial\": %.2f, \"step_ms_dp_thread\": %.2f, "
               "\"exposed_ms_thread\": %.2f, \"comm_ms_thread\": %.2f, "
               "\"hidden_share_thread\": %.3f, \"step_ms_dp_test\": %.2f, "
               "\"exposed_ms_test\": %.2f, \"comm_ms_test\": %.2f, "
               "\"hidden_share_test\": %.3f, \"samples_per_s_local\": %.1f, "
               "\"samples_per_s\": %.1f}\n",
               nranks, np, np * 4 / 1e6, r.batch, r.threads, r.bucket_mb,
               r.steps, ar, local, serial, dp, e0, c0, hidden, dpt, e2, c2,
               hidden_t, nranks * r.batch / (local / 1e3),
               nranks * r.batch / (best / 1e3));
    }
    free(r.x);
    free(r.y);
    surge_replicas_mpi_destroy(&rep);
    surge_replicas_mpi_destroy(&rep_test);
    MPI_Finalize();
    return 0;
}
