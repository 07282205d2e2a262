/*
 * solvers/heat2d/main.c - surge-heat2d: MPI set-up, the time loop and the
 * libsurge calls. The numerics are in solver.c, the flags in args.c.
 *
 * DESIGN. Each rank opens its own surge client and declares its row block
 * as its slice of the one field "temperature" (global size nx * ny, offset
 * row0 * nx): no gather, the server assembles the slices. Step n (1-based)
 * sends u^n, the field at simulated time n * dt; the initial field is not
 * sent. Every failure a single rank can meet (open, send, close, file I/O,
 * allocation) is turned into a collective decision by one MPI_Allreduce per
 * step, so all ranks stop together with a non-zero exit and nobody waits
 * forever in a collective. That is why no MPI_Abort is needed: every call
 * that can block (libsurge's are bounded by their timeout, MPI's are
 * collectives all ranks reach) returns, and the next agreement point tells
 * the other ranks. A rank killed outright is mpirun's business: it kills
 * the others. Every runtime
 * message is one line "time level heat2d[rank] text" on stderr.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <surge/client.h>
#include <surge/client_mpi.h>

#include "heat2d.h"

/* Exit codes, documented in --help and README.md. */
enum {
    EXIT_RUNTIME = 1,
    EXIT_USAGE = 2,
    EXIT_INJECTED_FAIL = 3,
    EXIT_INJECTED_HANG = 4
};

/* How long an injected hang sleeps before giving up by itself, seconds:
 * long enough for any timeout test, short enough that a forgotten process
 * does not live forever. */
#define HANG_LIMIT_S 3600

static int g_rank; /* this process's rank, for log lines */

static void
log_line(const char *level, const char *fmt, ...)
{
    char when[32] = "?";
    struct timespec ts;
    struct tm tm;
    if (clock_gettime(CLOCK_REALTIME, &ts) == 0 &&
        gmtime_r(&ts.tv_sec, &tm) != NULL) {
        size_t k = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(when + k, sizeof when - k, ".%03ldZ", ts.tv_nsec / 1000000);
    }
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s %s heat2d[%d] %s\n", when, level, g_rank, text);
    fflush(stderr);
}

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void
sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* libsurge's detail for a failed call already says what happened in full
 * ("no surge server answered at tcp://... within 1000 ms"); fall back to
 * the code's text when there is none. */
static const char *
detail(int rc, const char *text)
{
    return text != NULL && text[0] != '\0' ? text : surge_strerror(rc);
}

/* 1 when every rank passes ok != 0. */
static int
all_ok(int ok)
{
    int all = 0;
    MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
    return all;
}

/* write() all of buf, retrying short writes and EINTR. */
static int
write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Write field (ny, nx) as a NumPy .npy file (format 1.0), atomically:
 * to "path.tmp.PID" first, fsync, then rename over path. */
static int
write_npy(const char *path, const double *field, int ny, int nx)
{
    const uint16_t probe = 1;
    unsigned char first = 0;
    memcpy(&first, &probe, 1);
    char header[128];
    int hlen = snprintf(header, sizeof header,
                        "{'descr': '%sf8', 'fortran_order': False, "
                        "'shape': (%d, %d), }",
                        first == 1 ? "<" : ">", ny, nx);
    /* Pad with spaces so magic (6) + version (2) + length (2) + header,
     * ending in '\n', is a multiple of 64, as the format asks. */
    int total = 10 + hlen + 1;
    int pad = (64 - total % 64) % 64;
    if (hlen < 0 || hlen + pad + 1 >= (int)sizeof header) {
        return -EOVERFLOW;
    }
    memset(header + hlen, ' ', (size_t)pad);
    header[hlen + pad] = '\n';
    int header_len = hlen + pad + 1;
    unsigned char pre[10] = {0x93,
                             'N',
                             'U',
                             'M',
                             'P',
                             'Y',
                             1,
                             0,
                             (unsigned char)(header_len & 0xff),
                             (unsigned char)(header_len >> 8)};

    char tmp[4096];
    int n = snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    if (n < 0 || n >= (int)sizeof tmp) {
        return -ENAMETOOLONG;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        return -errno;
    }
    int rc = write_all(fd, pre, sizeof pre);
    if (rc == 0) {
        rc = write_all(fd, header, (size_t)header_len);
    }
    if (rc == 0) {
        rc = write_all(fd, field, (size_t)ny * (size_t)nx * sizeof *field);
    }
    if (rc == 0 && fsync(fd) != 0) {
        rc = -errno;
    }
    if (close(fd) != 0 && rc == 0) {
        rc = -errno;
    }
    if (rc == 0 && rename(tmp, path) != 0) {
        rc = -errno;
    }
    if (rc != 0) {
        unlink(tmp);
    }
    return rc;
}

/* Gather the field on rank 0 and write it. Collective; returns the same
 * 0 / -errno on every rank. */
static int
dump_field(const heat2d_grid *g, const char *path)
{
    int count = g->nrows * g->nx;
    int *counts = NULL;
    int *displs = NULL;
    double *field = NULL;
    int rc = 0;
    if (g->rank == 0) {
        counts = malloc((size_t)g->nranks * sizeof *counts);
        displs = malloc((size_t)g->nranks * sizeof *displs);
        field = malloc((size_t)g->nx * (size_t)g->ny * sizeof *field);
        if (counts == NULL || displs == NULL || field == NULL) {
            rc = -ENOMEM;
        } else {
            for (int r = 0; r < g->nranks; r++) {
                int row0 = 0;
                int nrows = 0;
                heat2d_rows(g->ny, r, g->nranks, &row0, &nrows);
                counts[r] = nrows * g->nx;
                displs[r] = row0 * g->nx;
            }
        }
    }
    MPI_Bcast(&rc, 1, MPI_INT, 0, g->comm);
    if (rc != 0) {
        goto out;
    }
    MPI_Gatherv(heat2d_owned(g), count, MPI_DOUBLE, field, counts, displs,
                MPI_DOUBLE, 0, g->comm);
    if (g->rank == 0) {
        rc = write_npy(path, field, g->ny, g->nx);
    }
    MPI_Bcast(&rc, 1, MPI_INT, 0, g->comm);
out:
    free(field);
    free(displs);
    free(counts);
    return rc;
}

/* The parameters: --params, else SURGE_PARAMS (through the options), else
 * the sine test's default. Returns 0 or -1 with the reason in err. */
static int
resolve_params(const heat2d_config *cfg, const surge_client_options *o,
               double *params, char *err, size_t errlen)
{
    if (cfg->have_params) {
        memcpy(params, cfg->params, sizeof cfg->params);
        return 0;
    }
    if (o->nparams > 0) {
        if (o->nparams != HEAT2D_NPARAMS || o->params == NULL) {
            snprintf(err, errlen,
                     "SURGE_PARAMS has %zu value(s); heat2d needs 5: "
                     "initial,left,right,bottom,top",
                     o->nparams);
            return -1;
        }
        memcpy(params, o->params, HEAT2D_NPARAMS * sizeof *params);
        return 0;
    }
    if (cfg->init == HEAT2D_INIT_SINE) {
        const double sine[HEAT2D_NPARAMS] = {1.0, 0.0, 0.0, 0.0, 0.0};
        memcpy(params, sine, sizeof sine);
        return 0;
    }
    snprintf(err, errlen,
             "no parameters: give --params initial,left,right,bottom,top "
             "or run under surge launch (SURGE_PARAMS)");
    return -1;
}

/* SURGE_ATTEMPT: which attempt of this run this is (1 when unset). */
static int
read_attempt(long *attempt, char *err, size_t errlen)
{
    const char *s = getenv("SURGE_ATTEMPT");
    *attempt = 1;
    if (s == NULL) {
        return 0;
    }
    if (heat2d_parse_long(s, 1, 1000000L, attempt) != 0) {
        snprintf(err, errlen,
                 "SURGE_ATTEMPT: \"%s\" is not an integer in [1, 1000000]", s);
        return -1;
    }
    return 0;
}

/* Append "sim rank step checksum\n" with one write(), so lines of
 * different ranks appending to the same file (O_APPEND) never interleave. */
static int
append_checksum(int fd, int64_t sim, int rank, long step, uint64_t sum)
{
    char line[128];
    int n = snprintf(line, sizeof line, "%lld %d %ld %llu\n", (long long)sim,
                     rank, step, (unsigned long long)sum);
    if (n < 0 || n >= (int)sizeof line) {
        return -EOVERFLOW;
    }
    return write_all(fd, line, (size_t)n);
}

int
main(int argc, char **argv)
{
    int exit_code = EXIT_RUNTIME;
    heat2d_config cfg;
    heat2d_grid grid;
    surge_client *client = NULL;
    int checksum_fd = -1;
    char err[512];
    int nranks = 1;

    memset(&grid, 0, sizeof grid);
    if (MPI_Init(&argc, &argv) != MPI_SUCCESS) {
        fprintf(stderr, "surge-heat2d: MPI_Init failed\n");
        return EXIT_RUNTIME;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);

    /* Every rank parses the same argv and gets the same answer; rank 0
     * alone speaks so a usage error is printed once. */
    int prc = heat2d_parse_args(&cfg, argc, argv, err, sizeof err);
    if (prc != 0) {
        if (g_rank == 0) {
            if (prc > 0) {
                fputs(heat2d_usage(), stdout);
            } else {
                fprintf(stderr, "surge-heat2d: %s (see --help)\n", err);
            }
        }
        exit_code = prc > 0 ? 0 : EXIT_USAGE;
        goto finalize;
    }

    surge_client_options opts;
    double params[HEAT2D_NPARAMS];
    long attempt = 1;
    int orc = surge_client_options_init(&opts);
    if (orc < 0) {
        snprintf(err, sizeof err, "%s", surge_client_options_error());
    } else if (resolve_params(&cfg, &opts, params, err, sizeof err) == 0 &&
               read_attempt(&attempt, err, sizeof err) == 0) {
        if (cfg.ny < nranks) {
            snprintf(err, sizeof err,
                     "--ny %d is smaller than the %d ranks: every rank needs "
                     "at least one row",
                     cfg.ny, nranks);
        } else {
            err[0] = '\0';
        }
    }
    if (orc < 0 || err[0] != '\0') {
        if (g_rank == 0) {
            fprintf(stderr, "surge-heat2d: %s\n", err);
        }
        exit_code = EXIT_USAGE;
        goto finalize;
    }
    int inject = cfg.fail_attempts < 0 || attempt <= cfg.fail_attempts;

    int rc = heat2d_grid_init(&grid, MPI_COMM_WORLD, &cfg, params);
    if (rc != 0) {
        log_line("error", "cannot set up the grid: %s", strerror(-rc));
    }
    if (!all_ok(rc == 0)) {
        goto finalize;
    }

    surge_field field = {"temperature", (uint64_t)cfg.nx * (uint64_t)cfg.ny,
                         (uint64_t)grid.row0 * (uint64_t)cfg.nx,
                         (uint64_t)grid.nrows * (uint64_t)cfg.nx};
    rc = 0;
    if (!cfg.no_surge) {
        opts.params = params;
        opts.nparams = HEAT2D_NPARAMS;
        opts.fields = &field;
        opts.nfields = 1;
        opts.steps = (uint64_t)cfg.steps; /* progress and ETA in surge top */
        rc = surge_client_options_set_comm(&opts, MPI_COMM_WORLD);
        if (rc == 0) {
            rc = surge_client_open(&client, &opts);
        }
        if (rc < 0) {
            log_line("error", "cannot open the surge client (endpoint %s): %s",
                     opts.endpoint != NULL ? opts.endpoint : "(none)",
                     detail(rc, surge_client_open_error()));
        }
    }
    if (rc == 0 && cfg.checksums_path != NULL) {
        checksum_fd =
            open(cfg.checksums_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (checksum_fd < 0) {
            rc = -errno;
            log_line("error", "--checksums %s: %s", cfg.checksums_path,
                     strerror(errno));
        }
    }
    if (!all_ok(rc == 0)) {
        goto cleanup;
    }

    double t0 = now_s();
    long cg_total = 0;
    int cg_max = 0;
    for (long n = 1; n <= cfg.steps; n++) {
        if (inject && cfg.fail_at_step == n) {
            if (g_rank == 0) {
                log_line("warn",
                         "injected failure at step %ld (attempt %ld, "
                         "--fail-at-step)",
                         n, attempt);
            }
            exit_code = EXIT_INJECTED_FAIL;
            goto cleanup;
        }
        if (inject && cfg.hang_at_step == n) {
            /* Push out what was sent so far, so the server sees steps
             * 1..n-1 and then silence. */
            if (client != NULL) {
                surge_client_flush(client);
            }
            if (g_rank == 0) {
                log_line("warn",
                         "injected hang at step %ld (attempt %ld, "
                         "--hang-at-step): sleeping up to %d s",
                         n, attempt, HANG_LIMIT_S);
            }
            for (int s = 0; s < HANG_LIMIT_S; s++) {
                sleep_ms(1000);
            }
            exit_code = EXIT_INJECTED_HANG;
            goto cleanup;
        }

        heat2d_cg_result cg;
        if (heat2d_step(&grid, cfg.cg_tol, cfg.cg_maxit, &cg) != 0) {
            /* Collective: every rank sees the same residual. */
            if (g_rank == 0) {
                log_line("error",
                         "CG did not converge at step %ld: relative "
                         "residual %.3g after %d iterations (--cg-tol %g, "
                         "--cg-maxit %d)",
                         n, cg.rel_resid, cg.iterations, cfg.cg_tol,
                         cfg.cg_maxit);
            }
            goto cleanup;
        }
        cg_total += cg.iterations;
        if (cg.iterations > cg_max) {
            cg_max = cg.iterations;
        }

        double t = (double)n * cfg.dt;
        int ok = 1;
        if (client != NULL) {
            rc = surge_client_send(client, "temperature", n, t,
                                   heat2d_owned(&grid), SURGE_FLOAT64);
            if (rc < 0) {
                log_line("error", "send of step %ld failed: %s", n,
                         detail(rc, surge_client_last_error(client)));
                ok = 0;
            }
        }
        if (ok && checksum_fd >= 0) {
            uint64_t sum = surge_checksum_f64(heat2d_owned(&grid), field.offset,
                                              field.count);
            rc = append_checksum(checksum_fd, opts.sim_id, g_rank, n, sum);
            if (rc < 0) {
                log_line("error", "--checksums %s: %s", cfg.checksums_path,
                         strerror(-rc));
                ok = 0;
            }
        }
        if (!all_ok(ok)) {
            goto cleanup;
        }
        if (cfg.step_delay_ms > 0) {
            sleep_ms(cfg.step_delay_ms);
        }
    }

    int ok = 1;
    if (client != NULL) {
        rc = surge_client_close(&client);
        if (rc < 0) {
            log_line("error", "closing the surge client failed: %s",
                     surge_strerror(rc));
            ok = 0;
        }
    }
    if (!all_ok(ok)) {
        goto cleanup;
    }
    if (cfg.dump_path != NULL) {
        rc = dump_field(&grid, cfg.dump_path);
        if (rc != 0) {
            if (g_rank == 0) {
                log_line("error", "--dump %s: %s", cfg.dump_path,
                         strerror(-rc));
            }
            goto cleanup;
        }
    }
    if (g_rank == 0) {
        double wall = now_s() - t0;
        printf("surge-heat2d: sim %lld: %ld steps of %dx%d on %d rank(s), "
               "t = %g, CG iterations per step mean %.1f max %d, %.3f s\n",
               (long long)opts.sim_id, cfg.steps, cfg.nx, cfg.ny, nranks,
               (double)cfg.steps * cfg.dt, (double)cg_total / (double)cfg.steps,
               cg_max, wall);
        fflush(stdout);
    }
    exit_code = 0;

cleanup:
    /* A client still open here means the run stops early: no bye, so the
     * server counts this rank's unfinished steps as dropped. */
    surge_client_abort(&client);
    if (checksum_fd >= 0) {
        close(checksum_fd);
    }
    heat2d_grid_fini(&grid);
finalize:
    MPI_Finalize();
    return exit_code;
}
