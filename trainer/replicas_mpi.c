/*
 * trainer/replicas_mpi.c - the replicas' sums over MPI (replicas_mpi.h).
 *
 * The queue is a ring of MAX_PENDING buckets with three counters that only
 * grow: posted (grad_start), done (the thread finished it), taken
 * (grad_wait returned it). The thread sums bucket `done` whenever
 * done < posted; lock order: just `mu`, never held across MPI.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <surge/error.h>

#include "common/util.h"
#include "trainer/replicas_mpi.h"

#define MAX_PENDING 64
#define COMPARE_CHUNK (1u << 20) /* floats broadcast at a time */

struct job {
    float *buf;
    size_t n;
    int rc;
};

struct surge_replicas_mpi {
    int mode;      /* enum surge_replicas_progress */
    MPI_Comm comm; /* the caller's: small blocking sums */
    MPI_Comm grad; /* duplicate: the thread's gradient sums */
    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;            /* posted, done or quit changed */
    struct job ring[MAX_PENDING]; /* guarded by mu */
    uint64_t posted, done, taken; /* guarded by mu */
    int quit;                     /* guarded by mu */
    MPI_Request req[MAX_PENDING]; /* TEST: the caller's thread only */
    _Atomic uint64_t comm_ns;     /* written by the thread */
};

/* MPI counts are ints: a long vector goes in pieces. */
static int
allreduce_floats(float *buf, size_t n, MPI_Comm comm)
{
    while (n > 0) {
        int c = n > (size_t)INT_MAX ? INT_MAX : (int)n;
        if (MPI_Allreduce(MPI_IN_PLACE, buf, c, MPI_FLOAT, MPI_SUM, comm) !=
            MPI_SUCCESS) {
            return -EIO;
        }
        buf += c;
        n -= (size_t)c;
    }
    return 0;
}

static void *
comm_main(void *arg)
{
    surge_replicas_mpi *r = arg;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        while (!r->quit && r->done == r->posted) {
            pthread_cond_wait(&r->cv, &r->mu);
        }
        if (r->done == r->posted) {
            break; /* quit with nothing left */
        }
        struct job *j = &r->ring[r->done % MAX_PENDING];
        pthread_mutex_unlock(&r->mu);
        uint64_t t0 = surge_now_ns();
        int rc = allreduce_floats(j->buf, j->n, r->grad);
        r->comm_ns += surge_now_ns() - t0;
        pthread_mutex_lock(&r->mu);
        j->rc = rc;
        r->done++;
        pthread_cond_broadcast(&r->cv);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

int
surge_replicas_progress_parse(const char *name)
{
    if (strcmp(name, "thread") == 0) {
        return SURGE_REPLICAS_THREAD;
    }
    if (strcmp(name, "test") == 0) {
        return SURGE_REPLICAS_TEST;
    }
    return -1;
}

int
surge_replicas_mpi_create(surge_replicas_mpi **out, MPI_Comm comm, int progress,
                          char *err, size_t errlen)
{
    if (progress != SURGE_REPLICAS_THREAD && progress != SURGE_REPLICAS_TEST) {
        snprintf(err, errlen, "unknown gradient progress mode %d", progress);
        return SURGE_ECONFIG;
    }
    int provided = 0;
    MPI_Query_thread(&provided);
    if (provided < MPI_THREAD_MULTIPLE) {
        snprintf(err, errlen,
                 "data-parallel training needs MPI_THREAD_MULTIPLE "
                 "(MPI gives level %d)",
                 provided);
        return SURGE_ECONFIG;
    }
    surge_replicas_mpi *r = calloc(1, sizeof *r);
    if (r == NULL) {
        return -ENOMEM;
    }
    r->comm = comm;
    r->mode = progress;
    if (MPI_Comm_dup(comm, &r->grad) != MPI_SUCCESS) {
        snprintf(err, errlen, "MPI_Comm_dup failed");
        free(r);
        return -EIO;
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    if (progress == SURGE_REPLICAS_TEST) {
        *out = r;
        return 0;
    }
    int rc = pthread_create(&r->thread, NULL, comm_main, r);
    if (rc != 0) {
        snprintf(err, errlen, "gradient thread: %s", strerror(rc));
        MPI_Comm_free(&r->grad);
        pthread_cond_destroy(&r->cv);
        pthread_mutex_destroy(&r->mu);
        free(r);
        return -rc;
    }
    r->started = 1;
    *out = r;
    return 0;
}

void
surge_replicas_mpi_destroy(surge_replicas_mpi **rp)
{
    surge_replicas_mpi *r = *rp;
    if (r == NULL) {
        return;
    }
    pthread_mutex_lock(&r->mu);
    r->quit = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (r->started) {
        pthread_join(r->thread, NULL);
    }
    MPI_Comm_free(&r->grad);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
    *rp = NULL;
}

static int
ops_sum(void *arg, double *v, int n)
{
    surge_replicas_mpi *r = arg;
    return MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, r->comm) ==
                   MPI_SUCCESS
               ? 0
               : -EIO;
}

/* TEST mode: the caller's thread does everything, no lock needed. */
static int
test_start(surge_replicas_mpi *r, float *buf, size_t n)
{
    if (r->posted - r->taken >= MAX_PENDING) {
        return -ENOSPC;
    }
    if (n > (size_t)INT_MAX) {
        return -E2BIG;
    }
    uint64_t t0 = surge_now_ns();
    int rc = MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM,
                            r->grad, &r->req[r->posted % MAX_PENDING]);
    r->comm_ns += surge_now_ns() - t0;
    if (rc != MPI_SUCCESS) {
        return -EIO;
    }
    r->posted++;
    return 0;
}

static int
test_wait(surge_replicas_mpi *r)
{
    if (r->taken == r->posted) {
        return -EINVAL;
    }
    uint64_t t0 = surge_now_ns();
    int rc = MPI_Wait(&r->req[r->taken % MAX_PENDING], MPI_STATUS_IGNORE);
    r->comm_ns += surge_now_ns() - t0;
    r->taken++;
    return rc == MPI_SUCCESS ? 0 : -EIO;
}

static void
ops_progress(void *arg)
{
    surge_replicas_mpi *r = arg;
    if (r->mode != SURGE_REPLICAS_TEST) {
        return;
    }
    uint64_t t0 = surge_now_ns();
    for (uint64_t i = r->taken; i < r->posted; i++) {
        int flag = 0;
        /* A completed request becomes MPI_REQUEST_NULL: the later Wait
         * returns at once. */
        MPI_Test(&r->req[i % MAX_PENDING], &flag, MPI_STATUS_IGNORE);
    }
    r->comm_ns += surge_now_ns() - t0;
}

static int
ops_grad_start(void *arg, float *buf, size_t n)
{
    surge_replicas_mpi *r = arg;
    if (r->mode == SURGE_REPLICAS_TEST) {
        return test_start(r, buf, n);
    }
    pthread_mutex_lock(&r->mu);
    if (r->posted - r->taken >= MAX_PENDING) {
        pthread_mutex_unlock(&r->mu);
        return -ENOSPC; /* more buckets than layers: a caller bug */
    }
    struct job *j = &r->ring[r->posted % MAX_PENDING];
    j->buf = buf;
    j->n = n;
    j->rc = 0;
    r->posted++;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return 0;
}

static int
ops_grad_wait(void *arg)
{
    surge_replicas_mpi *r = arg;
    if (r->mode == SURGE_REPLICAS_TEST) {
        return test_wait(r);
    }
    pthread_mutex_lock(&r->mu);
    if (r->taken == r->posted) {
        pthread_mutex_unlock(&r->mu);
        return -EINVAL;
    }
    /* No timeout: a rank that died takes the MPI job down (mpirun, srun
     * end every rank), so this wait ends with the process. */
    while (r->done <= r->taken) {
        pthread_cond_wait(&r->cv, &r->mu);
    }
    int rc = r->ring[r->taken % MAX_PENDING].rc;
    r->taken++;
    pthread_mutex_unlock(&r->mu);
    return rc;
}

const struct surge_trainer_replicas_ops surge_replicas_mpi_ops = {
    .sum = ops_sum,
    .grad_start = ops_grad_start,
    .grad_wait = ops_grad_wait,
    .progress = ops_progress,
};

double
surge_replicas_mpi_comm_s(const surge_replicas_mpi *r)
{
    return (double)r->comm_ns / 1e9;
}

int
surge_replicas_mpi_compare(surge_replicas_mpi *r, const float *p, size_t n,
                           int *identical, double *max_abs_diff)
{
    int rank = 0;
    MPI_Comm_rank(r->comm, &rank);
    size_t chunk = n < COMPARE_CHUNK ? n : COMPARE_CHUNK;
    float *ref = malloc((chunk > 0 ? chunk : 1) * sizeof *ref);
    /* Every rank must make the same broadcasts: agree on memory first. */
    int bad = ref == NULL;
    if (MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_MAX, r->comm) !=
            MPI_SUCCESS ||
        bad) {
        free(ref);
        return bad ? -ENOMEM : -EIO;
    }
    double diff = 0.0;
    int same = 1, rc = 0;
    for (size_t off = 0; off < n && rc == 0; off += chunk) {
        size_t c = n - off < chunk ? n - off : chunk;
        if (rank == 0) {
            memcpy(ref, p + off, c * sizeof *ref);
        }
        if (MPI_Bcast(ref, (int)c, MPI_FLOAT, 0, r->comm) != MPI_SUCCESS) {
            rc = -EIO;
            break;
        }
        for (size_t i = 0; i < c; i++) {
            double d = fabs((double)p[off + i] - (double)ref[i]);
            same = same && memcmp(&p[off + i], &ref[i], sizeof *ref) == 0;
            diff = d > diff || isnan(d) ? d : diff;
        }
    }
    free(ref);
    double v[2] = {diff, same ? 0.0 : 1.0};
    if (rc != 0 || MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_DOUBLE, MPI_MAX,
                                 r->comm) != MPI_SUCCESS) {
        return -EIO;
    }
    *max_abs_diff = v[0];
    *identical = v[1] == 0.0;
    return 0;
}
