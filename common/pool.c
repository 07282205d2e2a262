/*
 * common/pool.c - the fork-join thread pool (see pool.h).
 *
 * DESIGN. One job at a time. A job is (fn, arg, ntasks) and a generation
 * number; the 64-bit ticket holds the generation (high half) and the next
 * task to hand out (low half), so a thread claims task i of generation g
 * with one compare-and-swap, and a worker that wakes late, after its job
 * is over, finds another generation in the ticket and claims nothing.
 * run() moves the ticket through two generations per job: a closed one
 * (nothing to claim) while the job's fields change, then the open one.
 * run() counts finished tasks, not workers: it returns when every task is
 * done, without waiting for a slow worker to wake up (on a busy machine a
 * sleeping worker may wait a scheduler tick for a core). Idle workers spin
 * for POOL_SPIN_NS on the ticket's generation, then sleep on a condition
 * variable; run() signals it only when someone sleeps.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "common/pool.h"
#include "common/util.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() atomic_signal_fence(memory_order_seq_cst)
#endif

/* How long an idle worker spins before sleeping: long enough to catch the
 * next pass of the same step (they follow each other within microseconds),
 * short next to a matrix product (milliseconds), so a spinning worker
 * never takes a core from OpenBLAS's threads for long (pool.h). */
#define POOL_SPIN_NS 20000
/* How long the caller spins for the last tasks before it also yields the
 * core (a worker holding a task may be waiting for one). */
#define WAIT_SPIN_NS 50000
/* Tasks per job: the ticket's low half. */
#define MAX_TASKS (((uint64_t)1 << 32) - 1)

struct surge_pool {
    int threads;
    pthread_t *th; /* threads - 1 workers */
    int started;   /* workers running */
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a new generation, or stop */
    int sleepers;      /* workers waiting on cv (under mu) */
    atomic_int stop;
    /* The current job: written (relaxed) before the ticket is released. */
    _Atomic(surge_pool_fn) fn;
    _Atomic(void *) arg;
    atomic_size_t ntasks;
    atomic_uint_least64_t ticket; /* generation << 32 | next task */
    atomic_size_t finished;       /* tasks of this job done */
};

static unsigned
gen_of(uint64_t ticket)
{
    return (unsigned)(ticket >> 32);
}

/* Claim and run tasks of generation g until none is left (or the job is
 * another one already). */
static void
take_tasks(surge_pool *p, unsigned g)
{
    for (;;) {
        uint64_t v = atomic_load_explicit(&p->ticket, memory_order_acquire);
        if (gen_of(v) != g) {
            return;
        }
        /* seq_cst with run()'s stores: having read the next job's ntasks
         * here, the CAS below sees the closed ticket and fails. */
        size_t n = atomic_load(&p->ntasks);
        size_t i = (size_t)(v & MAX_TASKS);
        if (i >= n) {
            return;
        }
        /* Success means the job was still generation g when task i was
         * claimed, and it cannot change before task i is finished. */
        if (!atomic_compare_exchange_weak(&p->ticket, &v, v + 1)) {
            continue;
        }
        surge_pool_fn fn = atomic_load_explicit(&p->fn, memory_order_relaxed);
        fn(atomic_load_explicit(&p->arg, memory_order_relaxed), i);
        atomic_fetch_add_explicit(&p->finished, 1, memory_order_release);
    }
}

static void *
worker(void *arg)
{
    surge_pool *p = arg;
    unsigned seen = gen_of(atomic_load(&p->ticket));
    for (;;) {
        uint64_t t0 = surge_now_ns();
        unsigned g;
        int spins = 0;
        while ((g = gen_of(atomic_load_explicit(
                    &p->ticket, memory_order_acquire))) == seen &&
               !atomic_load_explicit(&p->stop, memory_order_relaxed)) {
            CPU_RELAX();
            if (++spins % 64 == 0 && surge_now_ns() - t0 > POOL_SPIN_NS) {
                pthread_mutex_lock(&p->mu);
                p->sleepers++;
                while (gen_of(atomic_load(&p->ticket)) == seen &&
                       !atomic_load(&p->stop)) {
                    pthread_cond_wait(&p->cv, &p->mu);
                }
                p->sleepers--;
                pthread_mutex_unlock(&p->mu);
                t0 = surge_now_ns();
            }
        }
        if (atomic_load(&p->stop)) {
            return NULL;
        }
        seen = g;
        take_tasks(p, g);
    }
}

void
surge_pool_split(size_t n, size_t ntasks, size_t i, size_t *lo, size_t *hi)
{
    size_t q = n / ntasks, r = n % ntasks;
    *lo = i * q + (i < r ? i : r);
    *hi = *lo + q + (i < r ? 1 : 0);
}

static void
stop_workers(surge_pool *p)
{
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->started; i++) {
        pthread_join(p->th[i], NULL);
    }
    p->started = 0;
}

int
surge_pool_create(surge_pool **out, int threads)
{
    if (out == NULL || threads < 1 || threads > SURGE_POOL_MAX_THREADS) {
        return -EINVAL;
    }
    surge_pool *p = calloc(1, sizeof *p);
    if (p == NULL) {
        return -ENOMEM;
    }
    p->threads = threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    int rc = 0;
    if (threads > 1) {
        p->th = calloc((size_t)threads - 1, sizeof *p->th);
        if (p->th == NULL) {
            rc = -ENOMEM;
        }
        for (int i = 0; rc == 0 && i < threads - 1; i++) {
            int e = pthread_create(&p->th[i], NULL, worker, p);
            if (e != 0) {
                rc = -e;
            } else {
                p->started++;
            }
        }
    }
    if (rc != 0) {
        stop_workers(p);
        free(p->th);
        pthread_cond_destroy(&p->cv);
        pthread_mutex_destroy(&p->mu);
        free(p);
        return rc;
    }
    *out = p;
    return 0;
}

void
surge_pool_destroy(surge_pool **pp)
{
    if (pp == NULL || *pp == NULL) {
        return;
    }
    surge_pool *p = *pp;
    stop_workers(p);
    free(p->th);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
    *pp = NULL;
}

int
surge_pool_threads(const surge_pool *p)
{
    return p != NULL ? p->threads : 1;
}

void
surge_pool_run(surge_pool *p, size_t ntasks, surge_pool_fn fn, void *arg)
{
    if (p == NULL || p->started == 0 || ntasks <= 1 || ntasks > MAX_TASKS) {
        for (size_t i = 0; i < ntasks; i++) {
            fn(arg, i);
        }
        return;
    }
    /* Close the previous job's ticket before its fields change: a worker
     * that read the old ticket (g, n_old) and then the new ntasks would
     * otherwise claim task n_old of the old generation and run it, and it
     * would run again in the new one (test_pool saw a task run twice). A
     * closed generation has nothing left to claim (next = MAX_TASKS). Then
     * a new generation with task 0 next publishes the job; the lock orders
     * it with a worker's check-then-wait, so no wake-up is lost. */
    pthread_mutex_lock(&p->mu);
    unsigned g = gen_of(atomic_load(&p->ticket)) + 1;
    atomic_store(&p->ticket, ((uint64_t)g << 32) | MAX_TASKS);
    atomic_store_explicit(&p->fn, fn, memory_order_relaxed);
    atomic_store_explicit(&p->arg, arg, memory_order_relaxed);
    atomic_store(&p->ntasks, ntasks);
    atomic_store_explicit(&p->finished, 0, memory_order_relaxed);
    g++;
    atomic_store(&p->ticket, (uint64_t)g << 32);
    if (p->sleepers > 0) {
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    take_tasks(p, g);
    uint64_t t0 = 0;
    int spins = 0;
    while (atomic_load_explicit(&p->finished, memory_order_acquire) < ntasks) {
        CPU_RELAX();
        if (++spins % 64 == 0) {
            uint64_t now = surge_now_ns();
            if (t0 == 0) {
                t0 = now;
            } else if (now - t0 > WAIT_SPIN_NS) {
                sched_yield();
            }
        }
    }
}
