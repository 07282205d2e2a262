/*
 * solvers/melissa/heat1d.c - heat1d-melissa: a 1D heat equation solver
 * instrumented for Melissa exactly as Melissa's documentation tells users
 * to ("Instrumenting the Solver/Client"): #include <melissa_api.h>,
 * melissa_init per field on the simulation's communicator, melissa_send
 * per field per time step, melissa_finalize before MPI_Finalize. It builds
 * against surge's libsurge_melissa by changing only the include and link
 * flags (pkg-config surge-melissa) and runs in a surge study unchanged.
 *
 *     u_t = u_xx on (0, 1), u(0) = TL, u(1) = TR, u(x, 0) = T0,
 *
 * nx interior points, dx = 1 / (nx + 1), explicit Euler with dt = 0.4
 * dx^2 (stable). The ranks own contiguous blocks of points and exchange
 * one halo point with each neighbour per step (MPI_Sendrecv; the walls
 * give the values at the ends). Two fields per step: "temperature" and
 * "gradient" (u_x by centred differences).
 *
 * Usage, as Melissa's launcher calls a client (the study's parameters
 * last): heat1d-melissa NX NSTEPS T0 TL TR [--metadata]. --metadata sends
 * through melissa_send_with_metadata with the physical time as "time".
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include <melissa_api.h>

static int
parse_long(const char *s, long lo, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo) {
        return -1;
    }
    *out = v;
    return 0;
}

static int
parse_double(const char *s, double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0') {
        return -1;
    }
    *out = v;
    return 0;
}

int
main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank = 0;
    int size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);

    long nx = 0;
    long nsteps = 0;
    double t0 = 0;
    double tl = 0;
    double tr = 0;
    int metadata = argc == 7 && strcmp(argv[6], "--metadata") == 0;
    if ((argc != 6 && !metadata) || parse_long(argv[1], 1, &nx) != 0 ||
        parse_long(argv[2], 1, &nsteps) != 0 ||
        parse_double(argv[3], &t0) != 0 || parse_double(argv[4], &tl) != 0 ||
        parse_double(argv[5], &tr) != 0 || nx < size) {
        if (rank == 0) {
            fprintf(stderr, "usage: heat1d-melissa NX NSTEPS T0 TL TR "
                            "[--metadata] (NX >= ranks)\n");
        }
        MPI_Finalize();
        return 2;
    }

    /* This rank's block of interior points, with one halo each side. */
    long n = nx / size + (rank < nx % size ? 1 : 0);
    double *u = calloc((size_t)n + 2, sizeof *u);
    double *un = calloc((size_t)n + 2, sizeof *un);
    double *grad = calloc((size_t)n, sizeof *grad);
    if (u == NULL || un == NULL || grad == NULL) {
        fprintf(stderr, "heat1d-melissa: out of memory\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    for (long i = 1; i <= n; i++) {
        u[i] = t0;
    }
    int left = rank > 0 ? rank - 1 : MPI_PROC_NULL;
    int right = rank < size - 1 ? rank + 1 : MPI_PROC_NULL;
    double dx = 1.0 / (double)(nx + 1);
    double dt = 0.4 * dx * dx;

    melissa_init("temperature", (int)n, MPI_COMM_WORLD);
    melissa_init("gradient", (int)n, MPI_COMM_WORLD);

    for (long step = 1; step <= nsteps; step++) {
        /* Halo exchange; the walls stand in for missing neighbours. */
        u[0] = tl;
        u[n + 1] = tr;
        MPI_Sendrecv(&u[n], 1, MPI_DOUBLE, right, 0, &u[0], 1, MPI_DOUBLE, left,
                     0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        MPI_Sendrecv(&u[1], 1, MPI_DOUBLE, left, 1, &u[n + 1], 1, MPI_DOUBLE,
                     right, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        for (long i = 1; i <= n; i++) {
            un[i] = u[i] + dt / (dx * dx) * (u[i - 1] - 2 * u[i] + u[i + 1]);
        }
        for (long i = 1; i <= n; i++) {
            grad[i - 1] = (u[i + 1] - u[i - 1]) / (2 * dx);
            u[i] = un[i];
        }
        if (metadata) {
            char meta[64];
            snprintf(meta, sizeof meta, "{\"time\": %.17g}", (double)step * dt);
            melissa_send_with_metadata("temperature", u + 1, meta);
            melissa_send_with_metadata("gradient", grad, meta);
        } else {
            melissa_send("temperature", u + 1);
            melissa_send("gradient", grad);
        }
    }

    melissa_finalize();
    free(grad);
    free(un);
    free(u);
    MPI_Finalize();
    return 0;
}
