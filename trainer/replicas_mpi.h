/*
 * trainer/replicas_mpi.h - the data-parallel replicas' sums over MPI
 * (trainer.h DATA PARALLEL): the surge_trainer_replicas_ops of a group of
 * replicas that are the ranks of one communicator.
 *
 * DESIGN. Small sums (the loss, the output statistics) are blocking
 * MPI_Allreduce calls on the communicator given, from the caller's
 * thread. Gradient buckets are summed by a communication thread of this
 * module on a duplicate of it (so the two streams of collectives never
 * interleave differently on two ranks): grad_start queues the bucket and
 * returns, the thread runs MPI_Allreduce(MPI_IN_PLACE) on it while the
 * caller's backward pass goes on, grad_wait waits for it. This is the
 * overlap of PyTorch DDP (its buckets are reduced on a side stream);
 * nonblocking MPI_Iallreduce alone would progress only inside MPI calls.
 * Needs MPI_THREAD_MULTIPLE. In its own library (trainer/
 * libsurge_replicas.la) so that the trainer library needs no MPI.
 *
 * Threads: create, destroy and the ops on one thread (the trainer's); the
 * communication thread is internal. Lock: one mutex guards the queue.
 */
#ifndef SURGE_TRAINER_REPLICAS_MPI_H
#define SURGE_TRAINER_REPLICAS_MPI_H

#include <stddef.h>
#include <stdint.h>

#include <mpi.h>

#include "trainer/trainer.h"

typedef struct surge_replicas_mpi surge_replicas_mpi;

/* How the gradient sums move on while backward computes. */
enum surge_replicas_progress {
    /* A communication thread runs a blocking MPI_Allreduce per bucket:
     * full overlap when the node has a core to spare for it (and for the
     * MPI library's polling); on a node whose cores all compute, it
     * competes with the backward pass for them. */
    SURGE_REPLICAS_THREAD = 0,
    /* MPI_Iallreduce per bucket, moved on by MPI_Test after every layer
     * of backward, finished by MPI_Wait: no extra thread, so no
     * competition, but the library progresses only inside those calls. */
    SURGE_REPLICAS_TEST = 1
};

/* surge_replicas_progress_parse - "thread" or "test" to the enum; -1 for
 * another name. */
int surge_replicas_progress_parse(const char *name);

/* surge_replicas_mpi_create - the replicas of comm (every rank calls it:
 * it duplicates comm, a collective) summing gradients as progress says
 * (enum surge_replicas_progress; THREAD starts the thread). comm must
 * stay valid until destroy. 0, or SURGE_ECONFIG with err (MPI gives less
 * than MPI_THREAD_MULTIPLE), -ENOMEM, or an errno of the thread. */
int surge_replicas_mpi_create(surge_replicas_mpi **out, MPI_Comm comm,
                              int progress, char *err, size_t errlen);

/* surge_replicas_mpi_destroy - stop the thread (after the last grad_wait),
 * free the duplicate (a collective: every rank calls it); *r = NULL. NULL
 * is a no-op. */
void surge_replicas_mpi_destroy(surge_replicas_mpi **r);

/* The ops for surge_trainer_set_replicas; arg is the surge_replicas_mpi. */
extern const struct surge_trainer_replicas_ops surge_replicas_mpi_ops;

/* surge_replicas_mpi_comm_s - seconds spent in gradient sums so far: the
 * communication thread's whole time in them (THREAD), or the time inside
 * MPI_Iallreduce, MPI_Test and MPI_Wait (TEST). */
double surge_replicas_mpi_comm_s(const surge_replicas_mpi *r);

/* surge_replicas_mpi_compare - compare the replicas' parameters p (n
 * floats, host memory) with rank 0's, a collective: *identical = 1 when
 * every rank's bytes equal rank 0's (a hash, then the values), and
 * *max_abs_diff the largest |p - p_rank0| over all ranks. 0 or -EIO. */
int surge_replicas_mpi_compare(surge_replicas_mpi *r, const float *p, size_t n,
                               int *identical, double *max_abs_diff);

#endif /* SURGE_TRAINER_REPLICAS_MPI_H */
