/*
 * tests/integration/melissa_misuse.c - one misuse of Melissa's client API
 * per run, chosen by argv[1], for melissa_study.sh: each must end the run
 * (non-zero exit) with a message naming the mistake, never hang or send
 * something wrong. One rank, one field "u" of 4 values.
 *
 *   late-init   melissa_init after the first melissa_send
 *   undeclared  melissa_send of a field never declared
 *   bad-json    melissa_send_with_metadata with metadata that is not JSON
 *   twice       melissa_init of the same field twice
 */
#include <stdio.h>
#include <string.h>

#include <mpi.h>

#include <melissa_api.h>

int
main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    const double u[4] = {1, 2, 3, 4};
    const char *mode = argc > 1 ? argv[1] : "";
    melissa_init("u", 4, MPI_COMM_WORLD);
    if (strcmp(mode, "late-init") == 0) {
        melissa_send("u", u);
        melissa_init("v", 4, MPI_COMM_WORLD);
    } else if (strcmp(mode, "undeclared") == 0) {
        melissa_send("v", u);
    } else if (strcmp(mode, "bad-json") == 0) {
        melissa_send_with_metadata("u", u, "{\"time\": 0.5");
    } else if (strcmp(mode, "twice") == 0) {
        melissa_init("u", 4, MPI_COMM_WORLD);
    } else {
        fprintf(stderr, "usage: melissa_misuse late-init|undeclared|"
                        "bad-json|twice\n");
    }
    melissa_finalize();
    MPI_Finalize();
    return 0; /* reached only when the misuse was not caught */
}
