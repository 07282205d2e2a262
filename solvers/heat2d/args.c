/*
 * solvers/heat2d/args.c - strict command-line parsing for surge-heat2d.
 *
 * Every flag takes "--flag VALUE" or "--flag=VALUE"; a number must be the
 * whole argument (no trailing junk, no blanks, in range, finite), a flag
 * may appear once, and anything unknown is an error naming it. A solver
 * launched by a study runs unattended: a typo must stop it at once rather
 * than run a thousand simulations with a default.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "heat2d.h"

static const char usage_text[] =
    "usage: surge-heat2d [flags]\n"
    "\n"
    "2D heat equation u_t = alpha * Laplacian(u) on the unit square, implicit\n"
    "Euler, row-block MPI decomposition, matrix-free conjugate gradient.\n"
    "Sends the field \"temperature\" (nx * ny values) every step to the surge\n"
    "server given by SURGE_ENDPOINT/SURGE_RUN_KEY/SURGE_SIM_ID (surge launch\n"
    "sets them; by hand, SURGE_TOKEN instead of SURGE_RUN_KEY), unless\n"
    "--no-surge.\n"
    "\n"
    "  --nx N              interior points along x (default 64)\n"
    "  --ny N              interior points along y, >= ranks (default 64)\n"
    "  --steps N           time steps (default 100)\n"
    "  --dt T              time step (default 0.001)\n"
    "  --alpha A           diffusivity (default 1)\n"
    "  --cg-tol E          CG relative residual tolerance (default 1e-8)\n"
    "  --cg-maxit N        CG iterations per step before failing (default "
    "1000)\n"
    "  --params I,L,R,B,T  initial, left, right, bottom, top temperatures\n"
    "                      (default: SURGE_PARAMS; --init sine: 1,0,0,0,0)\n"
    "  --init MODE         constant (default): u0 = I everywhere;\n"
    "                      sine: u0 = I sin(pi x) sin(pi y)\n"
    "  --no-surge          run without a server\n"
    "  --dump FILE         rank 0 writes the final field as .npy (ny, nx)\n"
    "  --checksums FILE    each rank appends \"sim rank step checksum\" per "
    "step\n"
    "  --fail-at-step K    exit with code 3 instead of computing step K\n"
    "  --hang-at-step K    stop sending at step K and sleep (up to 1 hour)\n"
    "  --fail-attempts N   inject the two above only while SURGE_ATTEMPT\n"
    "                      (default 1) <= N (default: every attempt)\n"
    "  --step-delay-ms MS  sleep MS milliseconds after every step\n"
    "  --help              this text\n"
    "\n"
    "Exit codes: 0 done, 1 runtime error (server, CG, I/O), 2 usage error,\n"
    "3 injected failure, 4 injected hang ran out.\n";

const char *
heat2d_usage(void)
{
    return usage_text;
}

static int
fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

int
heat2d_parse_long(const char *s, long lo, long hi, long *out)
{
    if (s == NULL || *s == '\0' || *s == ' ' || *s == '\t' || *s == '+') {
        return -1;
    }
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
        return -1;
    }
    *out = v;
    return 0;
}

/* A finite double that is the whole of s (strtod accepts leading blanks,
 * "inf" and "nan": refuse those). */
static int
parse_double(const char *s, const char **end_out, double *out)
{
    if (s == NULL || *s == '\0' || *s == ' ' || *s == '\t') {
        return -1;
    }
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno == ERANGE || end == s || !isfinite(v)) {
        return -1;
    }
    if (end_out != NULL) {
        *end_out = end;
    } else if (*end != '\0') {
        return -1;
    }
    *out = v;
    return 0;
}

int
heat2d_parse_params(const char *s, double *out, char *err, size_t errlen)
{
    const char *p = s;
    for (int k = 0; k < HEAT2D_NPARAMS; k++) {
        const char *end = NULL;
        if (parse_double(p, &end, &out[k]) != 0) {
            return fail(err, errlen,
                        "value %d of \"%s\" is not a finite number (want "
                        "5 comma-separated numbers: initial,left,right,"
                        "bottom,top)",
                        k + 1, s);
        }
        if (k < HEAT2D_NPARAMS - 1) {
            if (*end != ',') {
                return fail(err, errlen,
                            "\"%s\" has %d value(s); want 5 comma-separated "
                            "numbers: initial,left,right,bottom,top",
                            s, k + 1);
            }
            p = end + 1;
        } else if (*end != '\0') {
            return fail(err, errlen,
                        "\"%s\" has more than 5 values or trailing text; "
                        "want initial,left,right,bottom,top",
                        s);
        }
    }
    return 0;
}

/* The flags, in one table so parsing, duplicates and --help agree. */
enum flag_id {
    F_NX,
    F_NY,
    F_STEPS,
    F_DT,
    F_ALPHA,
    F_CG_TOL,
    F_CG_MAXIT,
    F_PARAMS,
    F_INIT,
    F_NO_SURGE,
    F_DUMP,
    F_CHECKSUMS,
    F_FAIL_AT,
    F_HANG_AT,
    F_FAIL_ATTEMPTS,
    F_STEP_DELAY,
    F_HELP,
    F_COUNT
};

static const struct {
    const char *name; /* without the leading "--" */
    int takes_value;  /* 1: needs a value */
} flags[F_COUNT] = {
    [F_NX] = {"nx", 1},
    [F_NY] = {"ny", 1},
    [F_STEPS] = {"steps", 1},
    [F_DT] = {"dt", 1},
    [F_ALPHA] = {"alpha", 1},
    [F_CG_TOL] = {"cg-tol", 1},
    [F_CG_MAXIT] = {"cg-maxit", 1},
    [F_PARAMS] = {"params", 1},
    [F_INIT] = {"init", 1},
    [F_NO_SURGE] = {"no-surge", 0},
    [F_DUMP] = {"dump", 1},
    [F_CHECKSUMS] = {"checksums", 1},
    [F_FAIL_AT] = {"fail-at-step", 1},
    [F_HANG_AT] = {"hang-at-step", 1},
    [F_FAIL_ATTEMPTS] = {"fail-attempts", 1},
    [F_STEP_DELAY] = {"step-delay-ms", 1},
    [F_HELP] = {"help", 0},
};

/* Match "--name" or "--name=value" against the table. Returns the flag id
 * or -1; *inline_value points after '=' when there is one. */
static int
lookup(const char *arg, const char **inline_value)
{
    *inline_value = NULL;
    if (strncmp(arg, "--", 2) != 0) {
        return -1;
    }
    const char *name = arg + 2;
    const char *eq = strchr(name, '=');
    size_t len = eq != NULL ? (size_t)(eq - name) : strlen(name);
    for (int f = 0; f < F_COUNT; f++) {
        if (strlen(flags[f].name) == len &&
            strncmp(flags[f].name, name, len) == 0) {
            *inline_value = eq != NULL ? eq + 1 : NULL;
            return f;
        }
    }
    return -1;
}

static int
get_long(const char *flag, const char *v, long lo, long hi, long *out,
         char *err, size_t errlen)
{
    if (heat2d_parse_long(v, lo, hi, out) != 0) {
        return fail(err, errlen, "--%s: \"%s\" is not an integer in [%ld, %ld]",
                    flag, v, lo, hi);
    }
    return 0;
}

static int
get_positive(const char *flag, const char *v, double *out, char *err,
             size_t errlen)
{
    if (parse_double(v, NULL, out) != 0 || !(*out > 0.0)) {
        return fail(err, errlen, "--%s: \"%s\" is not a finite number > 0",
                    flag, v);
    }
    return 0;
}

int
heat2d_parse_args(heat2d_config *cfg, int argc, char **argv, char *err,
                  size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->nx = 64;
    cfg->ny = 64;
    cfg->steps = 100;
    cfg->dt = 1e-3;
    cfg->alpha = 1.0;
    cfg->cg_tol = 1e-8;
    cfg->cg_maxit = 1000;
    cfg->init = HEAT2D_INIT_CONSTANT;
    cfg->fail_attempts = -1;
    err[0] = '\0';

    int seen[F_COUNT] = {0};
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        const char *v = NULL;
        int f = lookup(arg, &v);
        if (f < 0) {
            if (strncmp(arg, "--", 2) == 0) {
                const char *eq = strchr(arg, '=');
                int len = eq != NULL ? (int)(eq - arg) : (int)strlen(arg);
                return fail(err, errlen, "unknown flag '%.*s'", len, arg);
            }
            return fail(err, errlen, "unexpected argument '%s'", arg);
        }
        const char *name = flags[f].name;
        if (seen[f]) {
            return fail(err, errlen, "--%s given twice", name);
        }
        seen[f] = 1;
        if (!flags[f].takes_value) {
            if (v != NULL) {
                return fail(err, errlen, "--%s takes no value", name);
            }
        } else if (v == NULL) {
            if (a + 1 >= argc) {
                return fail(err, errlen, "--%s needs a value", name);
            }
            v = argv[++a];
        }

        long n = 0;
        switch (f) {
        case F_NX:
        case F_NY:
            if (get_long(name, v, 1, HEAT2D_MAX_SIDE, &n, err, errlen) != 0) {
                return -1;
            }
            *(f == F_NX ? &cfg->nx : &cfg->ny) = (int)n;
            break;
        case F_STEPS:
            if (get_long(name, v, 1, 1000000000L, &cfg->steps, err, errlen) !=
                0) {
                return -1;
            }
            break;
        case F_DT:
            if (get_positive(name, v, &cfg->dt, err, errlen) != 0) {
                return -1;
            }
            break;
        case F_ALPHA:
            if (get_positive(name, v, &cfg->alpha, err, errlen) != 0) {
                return -1;
            }
            break;
        case F_CG_TOL:
            if (get_positive(name, v, &cfg->cg_tol, err, errlen) != 0) {
                return -1;
            }
            if (cfg->cg_tol >= 1.0) {
                return fail(err, errlen, "--cg-tol: \"%s\" must be < 1", v);
            }
            break;
        case F_CG_MAXIT:
            if (get_long(name, v, 1, 100000000L, &n, err, errlen) != 0) {
                return -1;
            }
            cfg->cg_maxit = (int)n;
            break;
        case F_PARAMS: {
            char why[256];
            if (heat2d_parse_params(v, cfg->params, why, sizeof why) != 0) {
                return fail(err, errlen, "--params: %s", why);
            }
            cfg->have_params = 1;
            break;
        }
        case F_INIT:
            if (strcmp(v, "constant") == 0) {
                cfg->init = HEAT2D_INIT_CONSTANT;
            } else if (strcmp(v, "sine") == 0) {
                cfg->init = HEAT2D_INIT_SINE;
            } else {
                return fail(err, errlen,
                            "--init: \"%s\" is not one of constant, sine", v);
            }
            break;
        case F_NO_SURGE:
            cfg->no_surge = 1;
            break;
        case F_DUMP:
        case F_CHECKSUMS:
            if (*v == '\0') {
                return fail(err, errlen, "--%s: empty file name", name);
            }
            *(f == F_DUMP ? &cfg->dump_path : &cfg->checksums_path) = v;
            break;
        case F_FAIL_AT:
            if (get_long(name, v, 1, 1000000000L, &cfg->fail_at_step, err,
                         errlen) != 0) {
                return -1;
            }
            break;
        case F_HANG_AT:
            if (get_long(name, v, 1, 1000000000L, &cfg->hang_at_step, err,
                         errlen) != 0) {
                return -1;
            }
            break;
        case F_FAIL_ATTEMPTS:
            if (get_long(name, v, 0, 1000000L, &cfg->fail_attempts, err,
                         errlen) != 0) {
                return -1;
            }
            break;
        case F_STEP_DELAY:
            if (get_long(name, v, 0, 3600000L, &cfg->step_delay_ms, err,
                         errlen) != 0) {
                return -1;
            }
            break;
        case F_HELP:
            return 1;
        default:
            return fail(err, errlen, "internal error: flag %d", f);
        }
    }

    /* Checks that involve more than one flag. */
    if ((long)cfg->nx * cfg->ny > HEAT2D_MAX_POINTS) {
        return fail(err, errlen, "--nx %d --ny %d: grid larger than %ld points",
                    cfg->nx, cfg->ny, HEAT2D_MAX_POINTS);
    }
    if (cfg->fail_at_step > cfg->steps) {
        return fail(err, errlen,
                    "--fail-at-step: %ld is beyond --steps %ld (it would "
                    "never fire)",
                    cfg->fail_at_step, cfg->steps);
    }
    if (cfg->hang_at_step > cfg->steps) {
        return fail(err, errlen,
                    "--hang-at-step: %ld is beyond --steps %ld (it would "
                    "never fire)",
                    cfg->hang_at_step, cfg->steps);
    }
    if (seen[F_FAIL_ATTEMPTS] && !seen[F_FAIL_AT] && !seen[F_HANG_AT]) {
        return fail(err, errlen,
                    "--fail-attempts needs --fail-at-step or --hang-at-step");
    }
    return 0;
}
