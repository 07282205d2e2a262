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
        surge_ranks_fini(&ranks);
        return 1;
    }
    rc = surge_server_run(srv);
    surge_server_destroy(&srv);
    surge_ranks_fini(&ranks);
    if (rc < 0) {
        fprintf(stderr, "surge serve: %s\n", surge_strerror(rc));
        return 1;
    }
    return 0;
}
