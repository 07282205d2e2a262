/*
 * tests/integration/trainer_dp_equiv.c - the deterministic equivalence of
 * data-parallel training (trainer.h DATA PARALLEL), run under mpirun -np 2
 * by trainer_dp.sh.
 *
 * Every rank builds the same data (fixed seed). A reference trainer on
 * every rank takes plain steps on the whole batch of B rows; the replicas
 * take replicated steps, rank r on its part of the same rows. After each
 * case the replicas' weights must equal the reference's within TOL (the
 * products sum the rows in another order, so bit equality is not
 * expected) and equal each other bit for bit. Rank 0 prints one line per
 * check, "PASS text" or "FAIL text"; the script turns them into TAP.
 * Arguments: the gradient progress mode, thread (default) or test, and
 * the backend, cpu (default) or cuda.
 */
#include "config.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "trainer/replicas_mpi.h"
#include "trainer/trainer.h"

#define NIN 4
#define NOUT 8
#define B 16
#define STEPS 30

static int rank, nranks;
static const char *backend = "cpu";
static float X[B * NIN], Y[B * NOUT], W[B];

static void
report(int pass, const char *fmt, ...)
{
    if (rank == 0) {
        va_list ap;
        va_start(ap, fmt);
        printf("%s ", pass ? "PASS" : "FAIL");
        vprintf(fmt, ap);
        printf("\n");
        fflush(stdout);
        va_end(ap);
    }
}

static void
make_data(unsigned seed)
{
    srand(seed);
    for (int i = 0; i < B; i++) {
        for (int j = 0; j < NIN; j++) {
            X[i * NIN + j] = (float)rand() / (float)RAND_MAX * 2.0f - 1.0f;
        }
        for (int j = 0; j < NOUT; j++) {
            Y[i * NOUT + j] = 3.0f + sinf(X[i * NIN] * (float)(j + 1)) +
                              X[i * NIN + 1] * X[i * NIN + 2];
        }
        W[i] = 0.5f + (float)rand() / (float)RAND_MAX;
    }
}

static struct surge_trainer_config
config(int optimizer, double clip)
{
    struct surge_trainer_config c;
    surge_trainer_config_defaults(&c);
    c.n_inputs = NIN;
    c.n_outputs = NOUT;
    c.n_layers = 3;
    c.layers[0] = c.layers[1] = c.layers[2] = 32;
    c.optimizer = optimizer;
    c.lr = optimizer == SURGE_OPT_SGD ? 0.05 : 1e-3;
    c.grad_clip = clip;
    c.batch_size = B;
    c.threads = 1;
    c.out_norm_samples = B;
    snprintf(c.backend, sizeof c.backend, "%s", backend);
    return c;
}

/* rows of rank r at step s: split (rows of rank 0; the rest is rank 1's),
 * or every other step all on rank 0 (zero-row batches on rank 1). */
static int
rows0(int split, int zero_rows, int s)
{
    if (zero_rows && s % 2 == 0) {
        return B;
    }
    return split;
}

/* One case: returns the replicas' max |p - p_ref| via *diff. */
static int
run_case(const char *name, struct surge_trainer_config c, int split,
         int zero_rows, int weighted, size_t bucket, double tol,
         surge_replicas_mpi *rep, float *out_params)
{
    char err[256];
    surge_trainer *ref = NULL, *dp = NULL;
    if (surge_trainer_create(&c, &ref, err, sizeof err) != 0 ||
        surge_trainer_create(&c, &dp, err, sizeof err) != 0) {
        fprintf(stderr, "create: %s\n", err);
        return -1;
    }
    if (surge_trainer_set_replicas(dp, &surge_replicas_mpi_ops, rep, bucket) !=
        0) {
        return -1;
    }
    float lo[NIN], hi[NIN];
    for (int j = 0; j < NIN; j++) {
        lo[j] = -1.0f;
        hi[j] = 1.0f;
    }
    surge_trainer_set_input_range(ref, lo, hi, err, sizeof err);
    surge_trainer_set_input_range(dp, lo, hi, err, sizeof err);
    /* Output statistics: the reference sees all rows, each replica its
     * part (rank 0 the first split rows), merged by replicas_freeze. */
    surge_trainer_observe_outputs(ref, Y, B);
    int first = rank == 0 ? 0 : split, n = rank == 0 ? split : B - split;
    surge_trainer_observe_outputs(dp, Y + first * NOUT, n);
    int rc = surge_trainer_replicas_freeze(dp);
    struct surge_trainer_eval_result er, ed;
    surge_trainer_evaluate(ref, X, Y, B, &er);
    surge_trainer_evaluate(dp, X, Y, B, &ed);
    double drel = fabs(er.mse - ed.mse) / er.mse;
    report(rc == 0 && drel < 1e-9,
           "output statistics merged across replicas (rel. diff %.3g)", drel);
    double max_loss = 0;
    for (int s = 0; s < STEPS && rc == 0; s++) {
        struct surge_trainer_step_info ir, id;
        rc = surge_trainer_step(ref, X, Y, weighted ? W : NULL, B, NULL, &ir);
        int r0 = rows0(split, zero_rows, s);
        int off = rank == 0 ? 0 : r0, rows = rank == 0 ? r0 : B - r0;
        if (rc == 0) {
            rc = surge_trainer_step_replicated(
                dp, rows > 0 ? X + off * NIN : NULL,
                rows > 0 ? Y + off * NOUT : NULL, weighted ? W + off : NULL,
                rows, B, NULL, &id);
        }
        double dl = fabs(ir.loss - id.loss) / ir.loss;
        max_loss = dl > max_loss ? dl : max_loss;
    }
    size_t np = surge_trainer_num_params(ref);
    float *pr = malloc(np * sizeof *pr);
    surge_trainer_get_params(ref, pr, np);
    surge_trainer_get_params(dp, out_params, np);
    double diff = 0;
    for (size_t i = 0; i < np; i++) {
        double d = fabs((double)pr[i] - (double)out_params[i]);
        diff = d > diff || isnan(d) ? d : diff;
    }
    double all[2] = {diff, max_loss};
    MPI_Allreduce(MPI_IN_PLACE, all, 2, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (rank == 0) {
        printf("# %s: max |p - p_ref| %.3g, max loss rel. diff %.3g\n", name,
               all[0], all[1]);
    }
    report(rc == 0 && all[0] <= tol,
           "%s: replicas equal one trainer on the whole batch: max |dp| %.3g "
           "(tol %.0e)",
           name, all[0], tol);
    report(rc == 0 && all[1] <= 1e-5,
           "%s: replicated loss equals the whole batch's: rel. diff %.3g "
           "(tol 1e-5)",
           name, all[1]);
    int identical = 0;
    double rdiff = 0;
    int crc =
        surge_replicas_mpi_compare(rep, out_params, np, &identical, &rdiff);
    report(crc == 0 && identical,
           "%s: replicas bit-identical (max |diff| %.3g)", name, rdiff);
    struct surge_trainer_dp_stats st;
    surge_trainer_dp_get_stats(dp, &st);
    if (rank == 0) {
        printf("# %s: %llu steps, %llu buckets, exposed %.3g s\n", name,
               (unsigned long long)st.steps, (unsigned long long)st.buckets,
               st.exposed_s);
    }
    free(pr);
    surge_trainer_destroy(&ref);
    surge_trainer_destroy(&dp);
    return rc;
}

int
main(int argc, char **argv)
{
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    if (nranks != 2) {
        if (rank == 0) {
            printf("FAIL run with mpirun -np 2 (got %d ranks)\n", nranks);
        }
        MPI_Finalize();
        return 1;
    }
    int mode = argc > 1 ? surge_replicas_progress_parse(argv[1]) : 0;
    if (argc > 2) {
        backend = argv[2]; /* cuda: host-staged gradient sums */
    }
    if (mode < 0) {
        if (rank == 0) {
            printf("FAIL usage: trainer_dp_equiv [thread|test] [cpu|cuda]\n");
        }
        MPI_Finalize();
        return 1;
    }
    char err[256] = "";
    surge_replicas_mpi *rep = NULL;
    if (surge_replicas_mpi_create(&rep, MPI_COMM_WORLD, mode, err,
                                  sizeof err) != 0) {
        printf("FAIL replicas: %s\n", err);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    make_data(11);
    struct surge_trainer_config c = config(SURGE_OPT_SGD, 0);
    float *p1 = NULL, *p2 = NULL;
    {
        surge_trainer *t = NULL;
        surge_trainer_create(&c, &t, err, sizeof err);
        size_t np = surge_trainer_num_params(t);
        surge_trainer_destroy(&t);
        p1 = malloc(np * sizeof *p1);
        p2 = malloc(np * sizeof *p2);
    }
    /* SGD, B/2 rows each; one bucket per layer, then a single bucket: the
     * sum of each element does not depend on the bucketing. */
    run_case("sgd B/2 each, bucket per layer", c, B / 2, 0, 0, 1, 1e-5, rep,
             p1);
    run_case("sgd B/2 each, one bucket", c, B / 2, 0, 0, 1u << 30, 1e-5, rep,
             p2);
    size_t np = 0;
    {
        surge_trainer *t = NULL;
        surge_trainer_create(&c, &t, err, sizeof err);
        np = surge_trainer_num_params(t);
        surge_trainer_destroy(&t);
    }
    report(memcmp(p1, p2, np * sizeof *p1) == 0,
           "bucket size does not change the result bit for bit");
    /* Adam with clipping and importance weights, 12 + 4 rows. */
    run_case("adam clip weighted 12+4", config(SURGE_OPT_ADAM, 0.5), 12, 0, 1,
             256, 1e-4, rep, p1);
    /* Zero-row batches on rank 1 every other step. */
    run_case("adam zero-row batches", config(SURGE_OPT_ADAM, 0), B / 2, 1, 0,
             256, 1e-4, rep, p1);
    free(p1);
    free(p2);
    surge_replicas_mpi_destroy(&rep);
    MPI_Finalize();
    return 0;
}
