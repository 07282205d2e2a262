/*
 * tests/integration/server_client.c - a libsurge client for the server's
 * fault tests: one rank of a simulation as its own process (no MPI), so a
 * test can kill exactly one rank while the other keeps sending.
 *
 *   server_client --rank R --nranks N --steps K [--elems E] [--delay-ms D]
 *                 [--hang-after S] [--checksums FILE]
 *
 * Endpoint, token, sim id and params come from the environment
 * (SURGE_ENDPOINT, SURGE_TOKEN, SURGE_SIM_ID, SURGE_PARAMS,
 * SURGE_TIMEOUT_MS), as the launcher sets them. The field "u" has E * N
 * elements; rank R owns [R * E, (R + 1) * E). Step s of rank R sends
 * values sim * 1000 + s + i / E. --hang-after S sends S steps then sleeps
 * (to be killed). --checksums appends "sim rank step checksum" per step.
 * Exit 0 when the server confirmed every slice, 1 otherwise (the reason on
 * stderr), 2 for bad flags.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <surge/client.h>

static long
flag_long(const char *name, const char *v)
{
    char *end = NULL;
    long x = strtol(v, &end, 10);
    if (end == v || *end != '\0' || x < 0) {
        fprintf(stderr, "server_client: %s: '%s' is not a count\n", name, v);
        exit(2);
    }
    return x;
}

static void
sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int
main(int argc, char **argv)
{
    long rank = 0, nranks = 1, steps = 10, elems = 256, delay = 0;
    long hang = -1;
    const char *cspath = NULL;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) {
            fprintf(stderr, "server_client: %s needs a value\n", argv[i]);
            return 2;
        }
        const char *f = argv[i], *v = argv[++i];
        if (strcmp(f, "--rank") == 0) {
            rank = flag_long(f, v);
        } else if (strcmp(f, "--nranks") == 0) {
            nranks = flag_long(f, v);
        } else if (strcmp(f, "--steps") == 0) {
            steps = flag_long(f, v);
        } else if (strcmp(f, "--elems") == 0) {
            elems = flag_long(f, v);
        } else if (strcmp(f, "--delay-ms") == 0) {
            delay = flag_long(f, v);
        } else if (strcmp(f, "--hang-after") == 0) {
            hang = flag_long(f, v);
        } else if (strcmp(f, "--checksums") == 0) {
            cspath = v;
        } else {
            fprintf(stderr, "server_client: unknown flag %s\n", f);
            return 2;
        }
    }
    if (elems <= 0 || nranks <= 0 || rank >= nranks) {
        fprintf(stderr, "server_client: bad rank/nranks/elems\n");
        return 2;
    }
    surge_client_options o;
    if (surge_client_options_init(&o) != 0) {
        fprintf(stderr, "server_client: %s\n", surge_client_options_error());
        return 2;
    }
    o.rank = (int32_t)rank;
    o.nranks = (int32_t)nranks;
    surge_field fld = {"u", (uint64_t)(elems * nranks),
                       (uint64_t)(rank * elems), (uint64_t)elems};
    o.fields = &fld;
    o.nfields = 1;
    FILE *cs = NULL;
    if (cspath != NULL && (cs = fopen(cspath, "a")) == NULL) {
        perror(cspath);
        return 1;
    }
    surge_client *c = NULL;
    int rc = surge_client_open(&c, &o);
    if (rc < 0) {
        fprintf(stderr, "server_client: %s\n", surge_client_open_error());
        return 1;
    }
    float *v = malloc((size_t)elems * sizeof *v);
    if (v == NULL) {
        return 1;
    }
    for (long s = 0; s < steps; s++) {
        if (s == hang) {
            surge_client_flush(c);
            fprintf(stderr,
                    "server_client: rank %ld hangs after %ld steps (pid %ld)\n",
                    rank, s, (long)getpid());
            sleep(120);
            return 1;
        }
        for (long i = 0; i < elems; i++) {
            v[i] = (float)(o.sim_id * 1000 + s) + (float)i / (float)elems;
        }
        rc = surge_client_send(c, "u", s, 0.01 * (double)s, v, SURGE_FLOAT32);
        if (rc < 0) {
            fprintf(stderr, "server_client: send: %s\n",
                    surge_client_last_error(c));
            surge_client_abort(&c);
            return 1;
        }
        if (cs != NULL) {
            fprintf(cs, "%" PRId64 " %ld %ld %" PRIu64 "\n", o.sim_id, rank, s,
                    surge_checksum_f32(v, fld.offset, fld.count));
            fflush(cs);
        }
        if (delay > 0) {
            sleep_ms(delay);
        }
    }
    free(v);
    rc = surge_client_close(&c);
    if (rc < 0) {
        fprintf(stderr, "server_client: close: %s\n", surge_strerror(rc));
        return 1;
    }
    if (cs != NULL) {
        fclose(cs);
    }
    return 0;
}
