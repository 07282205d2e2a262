/*
 * bench/scaling/bench-dp.c - what data-parallel training costs: run under
 * `mpirun -np R`, every rank trains a replica of the reference MLP
 * (6 -> 1024 -> 1024 -> 1024 -> 4096, ReLU, Adam, 6.3 M parameters: 25 MB
 * of gradients) on its own batch of B rows (default 256, data in memory).
 *
 * Measured in the same run, as the median over --steps steps after two
 * warm-up steps, the variants taking turns (one step each per round, every
 * rank at once) so that all see the same load:
 *   local      plain steps, no communication: the baseline, what a rank
 *              computes while every rank computes
 *   dp_serial  replicated steps, one bucket for the whole vector, started
 *              after backward: nothing overlaps
 *   dp_thread  replicated steps, buckets of --bucket-mb summed by the
 *              communication thread while backward goes on
 *   dp_test    the same with MPI_Iallreduce moved on by MPI_Test between
 *              layers (the server's default)
 *   allreduce  a blocking MPI_Allreduce of the whole gradient vector
 * For each replicated variant: added_ms = its step - local's, and
 * hidden_share = 1 - added_ms / allreduce_ms (clamped to [0, 1]): the
 * share of the sum's cost that did not show in the step; for the
 * overlapped ones also exposed_ms (the wait for the buckets after
 * backward) and comm_ms (time in the sums: the thread's, or inside the MPI
 * calls). samples_per_s: R x B per step of local (R = 1) or dp_test.
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

/* The variants, timed in turns (one step of each per round, every rank
 * at once), so that all see the same load on a shared machine. */
enum { V_LOCAL, V_SERIAL, V_THREAD, V_TEST, V_N };
static const char *const vname[V_N] = {"local", "dp_serial", "dp_thread",
                                       "dp_test"};

struct variant {
    surge_trainer *t;
    surge_replicas_mpi *rep; /* NULL: plain steps */
    double *ms;              /* (steps) */
    double exposed_ms;       /* per step, after the warm-up */
    double comm_ms;
    double median_ms;
};

static void
time_variants(const struct run *r, struct variant *v)
{
    long global = (long)r->batch * nranks;
    double e0[V_N] = {0}, c0[V_N] = {0};
    for (int s = 0; s < r->steps + 2; s++) {
        for (int k = 0; k < V_N; k++) {
            if (s == 2 && v[k].rep != NULL) {
                struct surge_trainer_dp_stats st;
                surge_trainer_dp_get_stats(v[k].t, &st);
                e0[k] = st.exposed_s;
                c0[k] = surge_replicas_mpi_comm_s(v[k].rep);
            }
            MPI_Barrier(MPI_COMM_WORLD);
            uint64_t t0 = surge_now_ns();
            int rc = v[k].rep != NULL
                         ? surge_trainer_step_replicated(v[k].t, r->x, r->y,
                                                         NULL, r->batch, global,
                                                         NULL, NULL)
                         : surge_trainer_step(v[k].t, r->x, r->y, NULL,
                                              r->batch, NULL, NULL);
            if (rc != 0) {
                fprintf(stderr, "bench-dp: %s step: %d\n", vname[k], rc);
                MPI_Abort(MPI_COMM_WORLD, 1);
            }
            if (s >= 2) {
                v[k].ms[s - 2] = (surge_now_ns() - t0) / 1e6;
            }
        }
    }
    for (int k = 0; k < V_N; k++) {
        if (v[k].rep != NULL) {
            struct surge_trainer_dp_stats st;
            surge_trainer_dp_get_stats(v[k].t, &st);
            double x[2] = {(st.exposed_s - e0[k]) * 1e3 / r->steps,
                           (surge_replicas_mpi_comm_s(v[k].rep) - c0[k]) * 1e3 /
                               r->steps};
            MPI_Allreduce(MPI_IN_PLACE, x, 2, MPI_DOUBLE, MPI_MAX,
                          MPI_COMM_WORLD);
            v[k].exposed_ms = x[0];
            v[k].comm_ms = x[1];
        }
        v[k].median_ms = median(v[k].ms, r->steps);
    }
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
    size_t bucket = (size_t)(r.bucket_mb * 1048576.0);
    struct variant v[V_N];
    memset(v, 0, sizeof v);
    for (int k = 0; k < V_N; k++) {
        v[k].t = make_trainer(&r);
        v[k].ms = calloc((size_t)r.steps, sizeof *v[k].ms);
        v[k].rep = k == V_TEST ? rep_test : k == V_LOCAL ? NULL : rep;
        size_t b = k == V_SERIAL ? np * sizeof(float) : bucket;
        if (v[k].ms == NULL ||
            (v[k].rep != NULL &&
             surge_trainer_set_replicas(v[k].t, &surge_replicas_mpi_ops,
                                        v[k].rep, b) != 0)) {
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
    }
    time_variants(&r, v);
    double ar = time_allreduce(np, r.steps);
    double local = v[V_LOCAL].median_ms;
    /* What the sums added to a step, and the share of a blocking
     * allreduce's time that did not show: 1 - added / allreduce. */
    double hidden[V_N];
    for (int k = 0; k < V_N; k++) {
        double h = ar > 0 ? 1.0 - (v[k].median_ms - local) / ar : 0.0;
        hidden[k] = h < 0 ? 0 : h > 1 ? 1 : h;
    }
    double rate = nranks * r.batch / (local / 1e3);
    if (nranks > 1) {
        rate = nranks * r.batch / (v[V_TEST].median_ms / 1e3);
    }
    if (rank == 0) {
        printf("{\"bench\": \"dp\", \"ranks\": %d, \"model\": "
               "\"6-1024-1024-1024-4096\", \"params\": %zu, "
               "\"gradient_mb\": %.1f, \"batch_per_rank\": %d, "
               "\"threads_per_rank\": %d, \"bucket_mb\": %g, \"steps\": %d, "
               "\"allreduce_ms\": %.2f, \"step_ms_local\": %.2f",
               nranks, np, np * 4 / 1e6, r.batch, r.threads, r.bucket_mb,
               r.steps, ar, local);
        for (int k = V_SERIAL; k < V_N; k++) {
            printf(", \"step_ms_%s\": %.2f, \"added_ms_%s\": %.2f, "
                   "\"hidden_share_%s\": %.3f",
                   vname[k], v[k].median_ms, vname[k], v[k].median_ms - local,
                   vname[k], hidden[k]);
            if (k != V_SERIAL) {
                printf(", \"exposed_ms_%s\": %.2f, \"comm_ms_%s\": %.2f",
                       vname[k], v[k].exposed_ms, vname[k], v[k].comm_ms);
            }
        }
        printf(", \"samples_per_s\": %.1f}\n", rate);
    }
    for (int k = 0; k < V_N; k++) {
        surge_trainer_destroy(&v[k].t);
        free(v[k].ms);
    }
    free(r.x);
    free(r.y);
    surge_replicas_mpi_destroy(&rep);
    surge_replicas_mpi_destroy(&rep_test);
    MPI_Finalize();
    return 0;
}
