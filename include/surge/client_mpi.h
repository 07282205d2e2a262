/*
 * surge/client_mpi.h - optional MPI convenience for libsurge. Header-only, so
 * that libsurge itself never links MPI: include it from an MPI program.
 */
#ifndef SURGE_CLIENT_MPI_H
#define SURGE_CLIENT_MPI_H

#include <mpi.h>

#include <surge/client.h>

/* surge_client_options_set_comm - take rank and size from an MPI
 * communicator (the simulation's ranks). Returns 0 or SURGE_ECONFIG when MPI
 * calls fail. */
static inline int
surge_client_options_set_comm(surge_client_options *opts, MPI_Comm comm)
{
    int rank = 0;
    int size = 0;
    if (MPI_Comm_rank(comm, &rank) != MPI_SUCCESS ||
        MPI_Comm_size(comm, &size) != MPI_SUCCESS) {
        return SURGE_ECONFIG;
    }
    opts->rank = rank;
    opts->nranks = size;
    return 0;
}

#endif /* SURGE_CLIENT_MPI_H */
