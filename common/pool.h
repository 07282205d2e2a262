/*
 * common/pool.h - a persistent fork-join thread pool for short parallel
 * passes (the CPU trainer's elementwise passes and optimizer update, the
 * reservoir's batch gather).
 *
 * A pool of T threads is the caller plus T - 1 workers started once.
 * surge_pool_run(p, n, fn, arg) calls fn(arg, i) once for every task
 * i < n, spread over the T threads (the caller takes tasks too), and
 * returns when all n have returned. Tasks are handed out dynamically, so
 * which thread runs a task varies; callers that need results independent
 * of the thread count (every surge user) give each task its own output
 * and combine per-task partial results in task order afterwards.
 *
 * THREADS AND OVERSUBSCRIPTION. The pool is meant to alternate with other
 * thread teams of the same caller (OpenBLAS's): a pass of the pool and a
 * matrix product never run at the same time, so T pool threads plus T
 * BLAS threads keep T cores busy, not 2T. To keep that true, idle workers
 * spin only briefly (POOL_SPIN_NS below, a few microseconds: long enough
 * for back-to-back passes, short next to a matrix product), then sleep on
 * a condition variable; they never spin through another team's work.
 *
 * One thread at a time may call surge_pool_run on a pool (the trainer
 * thread that owns it); fn must not call surge_pool_run on the same pool.
 */
#ifndef SURGE_COMMON_POOL_H
#define SURGE_COMMON_POOL_H

#include <stddef.h>

typedef struct surge_pool surge_pool;

/* A task: fn(arg, task) for task in [0, ntasks). */
typedef void (*surge_pool_fn)(void *arg, size_t task);

/* The most threads a pool may have. */
#define SURGE_POOL_MAX_THREADS 1024

/* surge_pool_create - a pool of threads threads (1..SURGE_POOL_MAX_THREADS;
 * 1 = no worker, every run is a plain loop on the caller). 0, -EINVAL, or
 * -errno of pthread_create / -ENOMEM (nothing left running). */
int surge_pool_create(surge_pool **out, int threads);

/* surge_pool_destroy - stop and join the workers, free, set *p = NULL.
 * NULL or *p == NULL: no-op. */
void surge_pool_destroy(surge_pool **p);

/* surge_pool_threads - T (1 for a NULL pool). */
int surge_pool_threads(const surge_pool *p);

/* surge_pool_run - run ntasks tasks and wait for all. A NULL pool, one
 * thread or one task: a plain loop on the caller. */
void surge_pool_run(surge_pool *p, size_t ntasks, surge_pool_fn fn, void *arg);

/* surge_pool_split - the range [*lo, *hi) of task i when n items are cut
 * into ntasks near-equal consecutive ranges (the first n % ntasks get one
 * more). */
void surge_pool_split(size_t n, size_t ntasks, size_t i, size_t *lo,
                      size_t *hi);

#endif /* SURGE_COMMON_POOL_H */
