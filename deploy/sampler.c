/* deploy/sampler.c - the samplers of deploy/sampler.h. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_errno.h>
#include <gsl/gsl_qrng.h>

#include "common/util.h"
#include "deploy/sampler.h"
#include "deploy/util.h"

#define CSV_MAX_BYTES (UINT64_C(64) << 20) /* a parameter file */
#define CSV_MAX_LINE 65536                 /* bytes in one row */

/* Seeds of the different streams drawn from one study seed differ by these
 * constants, so that e.g. the scramble shift is independent of the points. */
#define STREAM_POINTS UINT64_C(0x5eed0001)
#define STREAM_SHIFT UINT64_C(0x5eed0002)

/* ------------------------------------------------------------ unit cube */

static int
unit_qrng(const gsl_qrng_type *type, size_t d, size_t nruns, uint64_t skip,
          double *u)
{
    /* GSL's default error handler aborts, which a library must not do; with
     * it off, a failed allocation comes back as NULL. */
    gsl_error_handler_t *old = gsl_set_error_handler_off();
    int rc = 0;
    gsl_qrng *q = gsl_qrng_alloc(type, (unsigned)d);
    if (q == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    double x[SURGE_MAX_PARAMS];
    for (uint64_t i = 0; i < skip; i++) {
        if (gsl_qrng_get(q, x) != 0) {
            rc = -EINVAL;
            goto out_free;
        }
    }
    for (size_t i = 0; i < nruns; i++) {
        if (gsl_qrng_get(q, u + i * d) != 0) {
            rc = -EINVAL;
            goto out_free;
        }
    }
out_free:
    gsl_qrng_free(q);
out:
    gsl_set_error_handler(old);
    return rc;
}

int
surge_sampler_unit(int kind, size_t d, size_t nruns, uint64_t seed,
                   int scramble, uint64_t skip, double *u)
{
    surge_rng r;
    surge_rng_seed(&r, seed ^ STREAM_POINTS);
    if (d == 0 || d > SURGE_MAX_PARAMS) {
        return -EINVAL;
    }
    switch (kind) {
    case SURGE_SAMPLER_UNIFORM:
        for (size_t i = 0; i < nruns * d; i++) {
            u[i] = surge_rng_uniform(&r);
        }
        return 0;
    case SURGE_SAMPLER_LHS: {
        /* One column at a time: a random permutation of the strata, then a
         * uniform position inside each stratum. */
        size_t *perm = malloc((nruns > 0 ? nruns : 1) * sizeof *perm);
        if (perm == NULL) {
            return -ENOMEM;
        }
        for (size_t j = 0; j < d; j++) {
            for (size_t i = 0; i < nruns; i++) {
                perm[i] = i;
            }
            for (size_t i = nruns; i > 1; i--) {
                size_t k = (size_t)surge_rng_below(&r, i);
                size_t t = perm[i - 1];
                perm[i - 1] = perm[k];
                perm[k] = t;
            }
            for (size_t i = 0; i < nruns; i++) {
                double v =
                    ((double)perm[i] + surge_rng_uniform(&r)) / (double)nruns;
                /* (k + 0.99999...) / n can round up to the next stratum's
                 * edge; keep every point inside its own stratum. */
                double top =
                    nextafter((double)(perm[i] + 1) / (double)nruns, 0.0);
                u[i * d + j] = v < top ? v : top;
            }
        }
        free(perm);
        return 0;
    }
    case SURGE_SAMPLER_HALTON:
    case SURGE_SAMPLER_SOBOL: {
        if (kind == SURGE_SAMPLER_SOBOL && d > 40) {
            return -EINVAL;
        }
        int rc = unit_qrng(kind == SURGE_SAMPLER_SOBOL ? gsl_qrng_sobol
                                                       : gsl_qrng_halton,
                           d, nruns, skip, u);
        if (rc != 0 || !scramble) {
            return rc;
        }
        surge_rng sr;
        surge_rng_seed(&sr, seed ^ STREAM_SHIFT);
        double shift[SURGE_MAX_PARAMS];
        for (size_t j = 0; j < d; j++) {
            shift[j] = surge_rng_uniform(&sr);
        }
        for (size_t i = 0; i < nruns; i++) {
            for (size_t j = 0; j < d; j++) {
                double v = u[i * d + j] + shift[j];
                u[i * d + j] = v >= 1.0 ? v - 1.0 : v;
            }
        }
        return 0;
    }
    default:
        return -EINVAL;
    }
}

/* ------------------------------------------------------------ csv */

static char *
trim(char *s)
{
    while (*s == ' ' || *s == '\t') {
        s++;
    }
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r')) {
        s[--n] = '\0';
    }
    return s;
}

/* Split line at commas in place; returns the number of cells (at most cap),
 * or cap + 1 when there are more. */
static size_t
split_cells(char *line, char **cells, size_t cap)
{
    size_t n = 0;
    char *c = line;
    for (;;) {
        char *comma = strchr(c, ',');
        if (n == cap) {
            return cap + 1;
        }
        if (comma != NULL) {
            *comma = '\0';
        }
        cells[n++] = trim(c);
        if (comma == NULL) {
            return n;
        }
        c = comma + 1;
    }
}

static int
read_csv(const surge_study *s, double **out, size_t *nruns, char *err,
         size_t errcap)
{
    const char *path = s->sampler_file;
    char *text = NULL;
    size_t len = 0;
    double *x = NULL;
    size_t rows = 0, cap = 0;
    int col_of[SURGE_MAX_PARAMS + 1]; /* column -> parameter; -1: "sim" */
    size_t ncols = 0;
    char *cells[SURGE_MAX_PARAMS + 2];
    int rc = surge_deploy_read_file(path, CSV_MAX_BYTES, &text, &len);
    if (rc < 0) {
        snprintf(err, errcap, "sampler.file: %s: %s", path,
                 rc == -EFBIG ? "larger than 64 MiB" : strerror(-rc));
        return rc == -EFBIG ? SURGE_ECONFIG : rc;
    }
    if (strlen(text) != len) {
        snprintf(err, errcap, "sampler.file: %s: contains NUL bytes", path);
        rc = SURGE_ECONFIG;
        goto out;
    }
    size_t lineno = 0;
    char *save = text;
    for (char *line = text; line != NULL; line = save) {
        char *nl = strchr(line, '\n');
        save = nl != NULL ? nl + 1 : NULL;
        if (nl != NULL) {
            *nl = '\0';
        }
        lineno++;
        if (strlen(line) > CSV_MAX_LINE) {
            snprintf(err, errcap,
                     "sampler.file: %s:%zu: line longer than %d "
                     "bytes",
                     path, lineno, CSV_MAX_LINE);
            rc = SURGE_ECONFIG;
            goto out;
        }
        char *t = trim(line);
        if (t[0] == '\0' || t[0] == '#') {
            continue;
        }
        size_t n = split_cells(t, cells, SURGE_MAX_PARAMS + 1);
        if (ncols == 0) {
            /* The header: every parameter once, plus optionally "sim" (so
             * that a study's own parameters.csv can be fed back). */
            bool have[SURGE_MAX_PARAMS] = {false};
            if (n > SURGE_MAX_PARAMS + 1) {
                snprintf(err, errcap, "sampler.file: %s:%zu: too many columns",
                         path, lineno);
                rc = SURGE_ECONFIG;
                goto out;
            }
            for (size_t c = 0; c < n; c++) {
                int pi = surge_study_param_index(s, cells[c]);
                if (strcmp(cells[c], "sim") == 0) {
                    col_of[c] = -1;
                    continue;
                }
                if (pi < 0 || have[pi]) {
                    snprintf(err, errcap,
                             "sampler.file: %s:%zu: column '%s' "
                             "is %s",
                             path, lineno, cells[c],
                             pi < 0 ? "not a parameter of the study"
                                    : "repeated");
                    rc = SURGE_ECONFIG;
                    goto out;
                }
                have[pi] = true;
                col_of[c] = pi;
            }
            for (size_t j = 0; j < s->nparams; j++) {
                if (!have[j]) {
                    snprintf(err, errcap,
                             "sampler.file: %s:%zu: no column "
                             "for parameter '%s'",
                             path, lineno, s->params[j].name);
                    rc = SURGE_ECONFIG;
                    goto out;
                }
            }
            ncols = n;
            continue;
        }
        if (n != ncols) {
            snprintf(err, errcap,
                     "sampler.file: %s:%zu: %zu values, the "
                     "header has %zu columns",
                     path, lineno, n, ncols);
            rc = SURGE_ECONFIG;
            goto out;
        }
        if (s->runs > 0 && rows == (size_t)s->runs) {
            break; /* sampler.runs caps the rows used */
        }
        if (rows == cap) {
            size_t ncap = cap == 0 ? 64 : cap * 2;
            double *nx = realloc(x, ncap * s->nparams * sizeof *nx);
            if (nx == NULL) {
                rc = -ENOMEM;
                goto out;
            }
            x = nx;
            cap = ncap;
        }
        for (size_t c = 0; c < n; c++) {
            double v;
            if (col_of[c] < 0) {
                continue;
            }
            const surge_study_param *p = &s->params[col_of[c]];
            if (surge_parse_double(cells[c], &v) != 0) {
                snprintf(err, errcap,
                         "sampler.file: %s:%zu: %s = '%s' is "
                         "not a number",
                         path, lineno, p->name, cells[c]);
                rc = SURGE_ECONFIG;
                goto out;
            }
            if (v < p->min || v > p->max) {
                snprintf(err, errcap,
                         "sampler.file: %s:%zu: %s = %.17g is "
                         "outside [%.17g, %.17g]",
                         path, lineno, p->name, v, p->min, p->max);
                rc = SURGE_ECONFIG;
                goto out;
            }
            x[rows * s->nparams + (size_t)col_of[c]] = v;
        }
        rows++;
    }
    if (ncols == 0 || rows == 0) {
        snprintf(err, errcap, "sampler.file: %s: no %s", path,
                 ncols == 0 ? "header line" : "parameter rows");
        rc = SURGE_ECONFIG;
        goto out;
    }
    if (s->runs > 0 && rows < (size_t)s->runs) {
        snprintf(err, errcap,
                 "sampler.file: %s: %zu rows, sampler.runs asks "
                 "for %lld",
                 path, rows, (long long)s->runs);
        rc = SURGE_ECONFIG;
        goto out;
    }
    *out = x;
    *nruns = rows;
    x = NULL;
out:
    free(x);
    free(text);
    return rc;
}

/* ------------------------------------------------------------ public */

int
surge_sampler_generate(const surge_study *s, double **out, size_t *nruns,
                       char *err, size_t errcap)
{
    if (s->sampler == SURGE_SAMPLER_CSV) {
        return read_csv(s, out, nruns, err, errcap);
    }
    size_t n = (size_t)s->runs;
    size_t d = s->nparams;
    double *x = malloc(n * d * sizeof *x);
    if (x == NULL) {
        return -ENOMEM;
    }
    int rc = surge_sampler_unit(s->sampler, d, n, (uint64_t)s->seed,
                                s->scramble, (uint64_t)s->skip, x);
    if (rc != 0) {
        snprintf(err, errcap,
                 "sampler: %s cannot draw %zu points in %zu "
                 "dimensions: %s",
                 surge_sampler_kind_name(s->sampler), n, d, strerror(-rc));
        free(x);
        return rc == -EINVAL ? SURGE_ECONFIG : rc;
    }
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < d; j++) {
            const surge_study_param *p = &s->params[j];
            double v = p->min + (p->max - p->min) * x[i * d + j];
            /* Rounding may push min + (max - min) * u past max. */
            x[i * d + j] = v > p->max ? p->max : v;
        }
    }
    *out = x;
    *nruns = n;
    return 0;
}

int
surge_sampler_write_csv(const surge_study *s, const double *x, size_t nruns,
                        const char *path)
{
    size_t cap = 64 + (s->nparams + 1) * (SURGE_MAX_NAME + 2) +
                 nruns * (24 + s->nparams * 26);
    char *buf = malloc(cap);
    size_t o = 0;
    int n;
    if (buf == NULL) {
        return -ENOMEM;
    }
    n = snprintf(buf, cap, "sim");
    o += (size_t)n;
    for (size_t j = 0; j < s->nparams; j++) {
        n = snprintf(buf + o, cap - o, ",%s", s->params[j].name);
        o += (size_t)n;
    }
    buf[o++] = '\n';
    for (size_t i = 0; i < nruns; i++) {
        n = snprintf(buf + o, cap - o, "%zu", i);
        o += (size_t)n;
        for (size_t j = 0; j < s->nparams; j++) {
            n = snprintf(buf + o, cap - o, ",%.17g", x[i * s->nparams + j]);
            o += (size_t)n;
        }
        buf[o++] = '\n';
    }
    int rc = surge_write_file_atomic(path, buf, o);
    free(buf);
    return rc;
}
