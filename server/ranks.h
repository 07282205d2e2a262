/*
 * server/ranks.h - the server as an MPI job of R ranks.
 *
 * DESIGN. `surge serve` started by an MPI launcher (mpirun, srun) is one
 * rank of a server of R ranks; started alone it is the one rank of a server
 * of R = 1, without MPI at all (today's server, unchanged). Each rank owns
 * its endpoint, sessions, assembly, reservoir shard and trainer replica;
 * rank 0 speaks for the server (control, monitoring, server.json, summary).
 *
 * MPI is the only way ranks talk to each other, on two communicators so
 * that two threads can use MPI at once without their messages meeting:
 * `io` belongs to the I/O thread (control relayed from rank 0, figures for
 * rank 0's monitoring), `train` to the consumer thread (gradients, the
 * training start and end rule, validation). Hence MPI_THREAD_MULTIPLE.
 */
#ifndef SURGE_SERVER_RANKS_H
#define SURGE_SERVER_RANKS_H

#include <stddef.h>

#include <mpi.h>

typedef struct surge_ranks {
    int rank;       /* this process's rank, 0 .. size - 1 */
    int size;       /* R: 1 when no MPI launcher started this process */
    int mpi;        /* 1 when surge_ranks_init initialised MPI */
    MPI_Comm io;    /* the I/O thread's; MPI_COMM_NULL without MPI */
    MPI_Comm train; /* the consumer thread's; MPI_COMM_NULL without MPI */
} surge_ranks;

/* surge_ranks_launched - 1 when an MPI launcher (mpirun, srun) started
 * this process, read from the environment it sets; 0 otherwise. */
int surge_ranks_launched(void);

/* surge_ranks_init - fill *r: without an MPI launcher, rank 0 of 1 and no
 * MPI; under one, MPI_Init_thread(MPI_THREAD_MULTIPLE) and the two
 * communicators. Main thread, before any other thread starts. 0, or
 * SURGE_ECONFIG with err (MPI could not start, or gives less than
 * MPI_THREAD_MULTIPLE while R > 1). */
int surge_ranks_init(surge_ranks *r, char *err, size_t errlen);

/* surge_ranks_fini - free the communicators and finalise MPI when
 * surge_ranks_init started it. Main thread, after every other thread that
 * used MPI has ended. Safe on a zeroed or already finalised *r. */
void surge_ranks_fini(surge_ranks *r);

#endif /* SURGE_SERVER_RANKS_H */
