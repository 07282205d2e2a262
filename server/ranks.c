/*
 * server/ranks.c - the server's MPI ranks (server/ranks.h).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <surge/error.h>

#include "server/ranks.h"

int
surge_ranks_launched(void)
{
    /* Open MPI's mpirun, PMIx (mpirun, srun --mpi=pmix) and PMI-1/2 (srun
     * --mpi=pmi2) each set one of these in every process they start. */
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK",
                                       "PMI_RANK", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v != NULL && v[0] != '\0') {
            return 1;
        }
    }
    return 0;
}

static void
mpi_error(char *err, size_t errlen, const char *what, int code)
{
    char msg[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    if (MPI_Error_string(code, msg, &len) != MPI_SUCCESS) {
        snprintf(msg, sizeof msg, "MPI error %d", code);
    }
    snprintf(err, errlen, "%s: %s", what, msg);
}

int
surge_ranks_init(surge_ranks *r, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    r->size = 1;
    r->io = MPI_COMM_NULL;
    r->train = MPI_COMM_NULL;
    if (!surge_ranks_launched()) {
        return 0;
    }
    int provided = MPI_THREAD_SINGLE;
    int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided);
    if (rc != MPI_SUCCESS) {
        snprintf(err, errlen, "MPI_Init_thread failed (code %d)", rc);
        return SURGE_ECONFIG;
    }
    r->mpi = 1;
    /* Errors come back as codes: a failed call must reach our error path,
     * not abort the job from inside the library. */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &r->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &r->size);
    if (r->size > 1 && provided < MPI_THREAD_MULTIPLE) {
        snprintf(err, errlen,
                 "this MPI library gives thread level %d, and a server of %d "
                 "ranks needs MPI_THREAD_MULTIPLE",
                 provided, r->size);
        surge_ranks_fini(r);
        return SURGE_ECONFIG;
    }
    rc = MPI_Comm_dup(MPI_COMM_WORLD, &r->io);
    if (rc == MPI_SUCCESS) {
        rc = MPI_Comm_dup(MPI_COMM_WORLD, &r->train);
    }
    if (rc != MPI_SUCCESS) {
        mpi_error(err, errlen, "MPI_Comm_dup", rc);
        surge_ranks_fini(r);
        return SURGE_ECONFIG;
    }
    return 0;
}

void
surge_ranks_fini(surge_ranks *r)
{
    if (!r->mpi) {
        return;
    }
    if (r->io != MPI_COMM_NULL) {
        MPI_Comm_free(&r->io);
    }
    if (r->train != MPI_COMM_NULL) {
        MPI_Comm_free(&r->train);
    }
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) {
        MPI_Finalize();
    }
    r->mpi = 0;
}
