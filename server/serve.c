/*
 * server/serve.c - `surge serve`: parse the options, tune the allocator,
 * run the server, map the outcome to an exit status.
 */
#include "config.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <surge/error.h>

#include "common/log.h"
#include "common/util.h"
#include "server/options.h"
#include "server/ranks.h"
#include "server/server.h"

/* A rank of several that cannot go on ends the whole job at once: the
 * others would otherwise wait for it in their next collective (up to its
 * timeout). One rank alone just returns. */
static void
abort_ranks(const surge_ranks *ranks)
{
    if (ranks->size > 1) {
        fprintf(stderr,
                "surge serve: rank %d of %d failed: ending the "
                "server's MPI job\n",
                ranks->rank, ranks->size);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
}

int
surge_serve_main(int argc, char **argv)
{
    /* One struct for every setting; a study file fills the same one. */
    static surge_server_options opts;
    char err[512] = "";
    surge_server_options_init(&opts);
    int rc = surge_server_options_parse(&opts, argc, argv, err, sizeof err);
    if (rc == 1) {
        surge_server_options_usage(stdout);
        return 0;
    }
    if (rc < 0) {
        fprintf(stderr, "surge serve: %s\n", err);
        return 2;
    }
    surge_log_set_level(opts.log_level);
    /* Keep glibc from returning freed memory to the kernel: page faults
     * are the bottleneck on these machines (PERF-NOTES: 2-4x in ZeroMQ). */
    (void)surge_malloc_tune();
    /* A client that vanishes must not kill the server through SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);

    /* Under mpirun or srun this process is one rank of R (server/ranks.h);
     * MPI starts before any thread does. */
    static surge_ranks ranks;
    rc = surge_ranks_init(&ranks, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "surge serve: %s\n", err);
        return 1;
    }
    if (ranks.size > 1) {
        surge_log_set_rank(ranks.rank);
    }
    surge_server *srv = NULL;
    rc = surge_server_create(&srv, &opts, &ranks);
    if (rc < 0) {
        fprintf(stderr, "surge serve: cannot start: %s\n", surge_strerror(rc));
        abort_ranks(&ranks);
        surge_ranks_fini(&ranks);
        return 1;
    }
    rc = surge_server_run(srv);
    if (rc < 0) {
        /* Before destroy: a rank that failed must not keep the others
         * waiting in a collective for it (the final counts, or the
         * endpoint exchange at start). */
        fprintf(stderr, "surge serve: %s\n", surge_strerror(rc));
        abort_ranks(&ranks);
    }
    surge_server_destroy(&srv);
    surge_ranks_fini(&ranks);
    return rc < 0 ? 1 : 0;
}
