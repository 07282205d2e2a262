/*
 * tests/integration/many_clients.c - many libsurge clients at once, from
 * one process: the load test (tests/integration/server_many_clients.sh) and
 * the benchmark (make bench-clients) of issue 9's "1,000 clients".
 *
 *   many_clients --clients N --steps S --elems E [--threads T]
 *                [--sim-base B] [--label TEXT]
 *
 * Endpoint, token and params come from the environment (SURGE_ENDPOINT,
 * SURGE_TOKEN, SURGE_PARAMS, SURGE_TIMEOUT_MS). Client i is simulation
 * B + i, rank 0 of 1, with one field "u" of E floats. T threads (default 8)
 * share the clients. Every client opens first and all wait at a barrier,
 * so N connections are open at once; then steps 0..S-2 go round-robin over
 * the clients; then each client sends its last step and closes at once.
 *
 * Latency: from the start of the last surge_client_send of a client to the
 * return of its surge_client_close. The server answers bye only after it
 * handled every earlier message of the connection, and a one-rank sample
 * is in the reservoir once its message is handled, so this bounds the time
 * from surge_client_send to the sample being in the reservoir from above
 * (by one bye round trip, tens of microseconds on loopback).
 *
 * Prints one JSON line: clients, opened, errors, samples, p50_ms, p99_ms,
 * max_ms, seconds, samples_per_s. Exit 0 when every client opened, sent and
 * closed cleanly (the server confirmed every slice), 1 otherwise (the
 * first errors on stderr), 2 for bad flags.
 */
#include "config.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <surge/client.h>

#define MAX_CLIENTS 100000
#define MAX_THREADS 256

static long nclients, nsteps, nelems, nthreads = 8, sim_base;
static const char *label = "";
static surge_client_options base;
static double *params_copy;
static pthread_barrier_t opened_all;
static atomic_long nopened, nerrors;
static double *latency_ms; /* (nclients) */

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void
error(long i, const char *what, const char *detail)
{
    if (atomic_fetch_add(&nerrors, 1) < 5) {
        fprintf(stderr, "many_clients: client %ld: %s: %s\n", i, what, detail);
    }
}

static void *
worker(void *arg)
{
    long t = (long)(intptr_t)arg;
    long first = nclients * t / nthreads, last = nclients * (t + 1) / nthreads;
    long n = last - first;
    surge_client **c = calloc((size_t)(n > 0 ? n : 1), sizeof *c);
    float *v = malloc((size_t)nelems * sizeof *v);
    if (c == NULL || v == NULL) {
        error(first, "setup", "out of memory");
        pthread_barrier_wait(&opened_all);
        free(c);
        free(v);
        return NULL;
    }
    surge_field f = {"u", (uint64_t)nelems, 0, (uint64_t)nelems};
    for (long i = 0; i < n; i++) {
        surge_client_options o = base;
        o.sim_id = sim_base + first + i;
        o.rank = 0;
        o.nranks = 1;
        o.params = params_copy;
        o.fields = &f;
        o.nfields = 1;
        if (surge_client_open(&c[i], &o) != 0) {
            c[i] = NULL;
            error(first + i, "open", surge_client_open_error());
        } else {
            atomic_fetch_add(&nopened, 1);
        }
    }
    pthread_barrier_wait(&opened_all);
    for (long s = 0; s + 1 < nsteps; s++) {
        for (long i = 0; i < n; i++) {
            if (c[i] == NULL) {
                continue;
            }
            for (long k = 0; k < nelems; k++) {
                v[k] = (float)(s + k);
            }
            if (surge_client_send(c[i], "u", s, 0.1 * (double)s, v,
                                  SURGE_FLOAT32) != 0) {
                error(first + i, "send", surge_client_last_error(c[i]));
                surge_client_abort(&c[i]);
            }
        }
    }
    for (long i = 0; i < n; i++) {
        if (c[i] == NULL) {
            continue;
        }
        double t0 = now_s();
        long s = nsteps - 1;
        if (surge_client_send(c[i], "u", s, 0.1 * (double)s, v,
                              SURGE_FLOAT32) != 0) {
            error(first + i, "send", surge_client_last_error(c[i]));
            surge_client_abort(&c[i]);
            continue;
        }
        if (surge_client_close(&c[i]) != 0) {
            error(first + i, "close", surge_client_close_error());
            continue;
        }
        latency_ms[first + i] = (now_s() - t0) * 1e3;
    }
    free(c);
    free(v);
    return NULL;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static long
flag_long(const char *name, const char *v, long max)
{
    char *end = NULL;
    long x = strtol(v, &end, 10);
    if (end == v || *end != '\0' || x < 0 || x > max) {
        fprintf(stderr, "many_clients: %s: '%s' is not a count in 0..%ld\n",
                name, v, max);
        exit(2);
    }
    return x;
}

int
main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) {
            fprintf(stderr, "many_clients: %s needs a value\n", argv[i]);
            return 2;
        }
        const char *f = argv[i], *v = argv[++i];
        if (strcmp(f, "--clients") == 0) {
            nclients = flag_long(f, v, MAX_CLIENTS);
        } else if (strcmp(f, "--steps") == 0) {
            nsteps = flag_long(f, v, 1000000);
        } else if (strcmp(f, "--elems") == 0) {
            nelems = flag_long(f, v, 1 << 26);
        } else if (strcmp(f, "--threads") == 0) {
            nthreads = flag_long(f, v, MAX_THREADS);
        } else if (strcmp(f, "--sim-base") == 0) {
            sim_base = flag_long(f, v, 1L << 40);
        } else if (strcmp(f, "--label") == 0) {
            label = v;
        } else {
            fprintf(stderr, "many_clients: unknown flag %s\n", f);
            return 2;
        }
    }
    if (nclients < 1 || nsteps < 1 || nelems < 1 || nthreads < 1) {
        fprintf(stderr, "many_clients: --clients, --steps, --elems and "
                        "--threads must be >= 1\n");
        return 2;
    }
    if (nthreads > nclients) {
        nthreads = nclients;
    }
    if (surge_client_options_init(&base) != 0) {
        fprintf(stderr, "many_clients: %s\n", surge_client_options_error());
        return 2;
    }
    /* options_init's strings live in thread-local storage of this thread:
     * copy what the workers read. */
    params_copy =
        calloc(base.nparams > 0 ? base.nparams : 1, sizeof *params_copy);
    latency_ms = calloc((size_t)nclients, sizeof *latency_ms);
    pthread_t *th = calloc((size_t)nthreads, sizeof *th);
    if (params_copy == NULL || latency_ms == NULL || th == NULL) {
        fprintf(stderr, "many_clients: out of memory\n");
        return 1;
    }
    memcpy(params_copy, base.params, base.nparams * sizeof *params_copy);
    for (long i = 0; i < nclients; i++) {
        latency_ms[i] = -1;
    }
    pthread_barrier_init(&opened_all, NULL, (unsigned)nthreads);
    double t0 = now_s();
    long started = 0;
    for (long t = 0; t < nthreads; t++) {
        if (pthread_create(&th[t], NULL, worker, (void *)(intptr_t)t) != 0) {
            fprintf(stderr, "many_clients: cannot start thread %ld\n", t);
            return 1; /* the others wait at the barrier: exit ends them */
        }
        started++;
    }
    for (long t = 0; t < started; t++) {
        pthread_join(th[t], NULL);
    }
    double secs = now_s() - t0;
    pthread_barrier_destroy(&opened_all);
    long ok = 0;
    for (long i = 0; i < nclients; i++) {
        if (latency_ms[i] >= 0) {
            latency_ms[ok++] = latency_ms[i];
        }
    }
    qsort(latency_ms, (size_t)ok, sizeof *latency_ms, cmp_double);
    double p50 = ok > 0 ? latency_ms[(ok - 1) / 2] : -1;
    double p99 = ok > 0 ? latency_ms[(ok - 1) * 99 / 100] : -1;
    double mx = ok > 0 ? latency_ms[ok - 1] : -1;
    long errors = atomic_load(&nerrors);
    printf("{\"label\": \"%s\", \"clients\": %ld, \"opened\": %ld, "
           "\"errors\": %ld, \"elems\": %ld, \"samples\": %ld, "
           "\"p50_ms\": %.3f, \"p99_ms\": %.3f, \"max_ms\": %.3f, "
           "\"seconds\": %.3f, \"samples_per_s\": %.1f}\n",
           label, nclients, atomic_load(&nopened), errors, nelems, ok * nsteps,
           p50, p99, mx, secs, secs > 0 ? (double)(ok * nsteps) / secs : 0.0);
    free(th);
    free(params_copy);
    free(latency_ms);
    return errors == 0 && ok == nclients ? 0 : 1;
}
