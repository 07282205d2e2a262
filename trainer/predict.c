/*
 * trainer/predict.c - `surge predict`: evaluate a model file for given
 * parameters and time, write the field as .npy (float32) and optionally
 * as a PNG heat map (libpng, the viridis colormap). docs/trainer.md,
 * "surge predict", is the user's page.
 *
 *   surge predict MODEL --params a,b,c --time T [--shape NXxNY]
 *                 --out field.npy [--png field.png] [--vmin V --vmax V]
 *                 [--scale K]
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <surge/error.h>

#include "common/image.h"
#include "common/util.h"
#include "server/commands.h"
#include "trainer/trainer.h"

#define MAX_SIDE 65536 /* pixels per side of the PNG */

static void
usage(FILE *out)
{
    fprintf(out,
            "usage: surge predict MODEL --params P1,P2,... --time T "
            "--out FIELD.npy\n"
            "                     [--png FIELD.png] [--shape NXxNY] "
            "[--vmin V --vmax V]\n"
            "                     [--scale K]\n\n"
            "Evaluate the surrogate in MODEL (a model.safetensors written by "
            "surge serve's\ntrainer) at the given parameters and time.\n\n"
            "  --params LIST  the parameter values, comma-separated, in the "
            "study's order\n"
            "  --time T       the simulated time (the model's last input)\n"
            "  --out FILE     write the field as a NumPy .npy file: float32, "
            "shape (NY, NX)\n"
            "  --png FILE     also write a PNG heat map (viridis; row 0 at "
            "the top, as\n"
            "                 matplotlib's imshow shows the array)\n"
            "  --shape NXxNY  the field's shape (default: the model's "
            "field_shape metadata,\n"
            "                 else one row); NX * NY must equal the model's "
            "outputs\n"
            "  --vmin V, --vmax V  the PNG's value range (default: the "
            "field's min and max)\n"
            "  --scale K      PNG pixels per field value along each axis "
            "(default 1)\n");
}

/* Parse "a,b,c" into at most cap doubles. */
static int
parse_list(const char *s, double *v, int cap)
{
    int n = 0;
    const char *p = s;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
        char tmp[64];
        if (len == 0 || len >= sizeof tmp || n >= cap) {
            return -1;
        }
        memcpy(tmp, p, len);
        tmp[len] = '\0';
        if (surge_parse_double(tmp, &v[n]) != 0) {
            return -1;
        }
        n++;
        if (comma == NULL) {
            return n;
        }
        p = comma + 1;
    }
}

static int
parse_shape(const char *s, long *nx, long *ny)
{
    char a[32], b[32];
    const char *x = strchr(s, 'x');
    if (x == NULL || x == s || (size_t)(x - s) >= sizeof a ||
        strlen(x + 1) >= sizeof b) {
        return -1;
    }
    memcpy(a, s, (size_t)(x - s));
    a[x - s] = '\0';
    snprintf(b, sizeof b, "%s", x + 1);
    int64_t u, v;
    if (surge_parse_int64(a, &u) != 0 || surge_parse_int64(b, &v) != 0 ||
        u < 1 || v < 1 || u > SURGE_TRAINER_MAX_WIDTH ||
        v > SURGE_TRAINER_MAX_WIDTH) {
        return -1;
    }
    *nx = (long)u;
    *ny = (long)v;
    return 0;
}

/* The .npy format, version 1.0: magic, header length, a Python dict
 * literal padded with spaces to a multiple of 64 bytes, then the data. */
static int
write_npy(const char *path, const float *y, long ny, long nx)
{
    char dict[128];
    int dl = snprintf(dict, sizeof dict,
                      "{'descr': '<f4', 'fortran_order': False, 'shape': "
                      "(%ld, %ld), }",
                      ny, nx);
    size_t head = 10 + (size_t)dl + 1; /* + '\n' */
    size_t pad = (64 - head % 64) % 64;
    size_t hlen = (size_t)dl + pad + 1;
    size_t data = (size_t)ny * (size_t)nx * sizeof(float);
    size_t total = 10 + hlen + data;
    unsigned char *b = malloc(total);
    if (b == NULL) {
        return -ENOMEM;
    }
    memcpy(b, "\x93NUMPY\x01\x00", 8);
    b[8] = (unsigned char)(hlen & 0xff);
    b[9] = (unsigned char)(hlen >> 8);
    memcpy(b + 10, dict, (size_t)dl);
    memset(b + 10 + dl, ' ', pad);
    b[10 + dl + pad] = '\n';
    memcpy(b + 10 + hlen, y, data); /* little-endian hosts */
    int rc = surge_write_file_atomic(path, b, total);
    free(b);
    return rc;
}

/* Writes y (ny, nx) as a PNG heat map (common/image.h) to path, atomically. */
static int
write_png(const char *path, const float *y, long ny, long nx, double vmin,
          double vmax, long scale)
{
    unsigned char *png = NULL;
    size_t len = 0;
    int rc = surge_image_png_encode(y, (size_t)ny, (size_t)nx, (size_t)scale,
                                    vmin, vmax, &png, &len);
    if (rc == 0) {
        rc = surge_write_file_atomic(path, png, len);
        free(png);
    }
    return rc;
}

int
surge_predict_main(int argc, char **argv)
{
    const char *model = NULL, *out = NULL, *pngp = NULL, *params = NULL;
    const char *shape = NULL;
    double t = NAN, vmin = NAN, vmax = NAN;
    long scale = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strncmp(a, "--", 2) != 0) {
            if (model != NULL) {
                fprintf(stderr,
                        "surge predict: one model only ('%s' and "
                        "'%s')\n",
                        model, a);
                return 2;
            }
            model = a;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "surge predict: %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        if (strcmp(a, "--params") == 0) {
            params = v;
        } else if (strcmp(a, "--out") == 0) {
            out = v;
        } else if (strcmp(a, "--png") == 0) {
            pngp = v;
        } else if (strcmp(a, "--shape") == 0) {
            shape = v;
        } else if (strcmp(a, "--time") == 0 || strcmp(a, "--vmin") == 0 ||
                   strcmp(a, "--vmax") == 0) {
            double d;
            if (surge_parse_double(v, &d) != 0) {
                fprintf(stderr, "surge predict: %s: '%s' is not a number\n", a,
                        v);
                return 2;
            }
            if (strcmp(a, "--time") == 0) {
                t = d;
            } else if (strcmp(a, "--vmin") == 0) {
                vmin = d;
            } else {
                vmax = d;
            }
        } else if (strcmp(a, "--scale") == 0) {
            int64_t k;
            if (surge_parse_int64(v, &k) != 0 || k < 1 || k > 64) {
                fprintf(stderr,
                        "surge predict: --scale: '%s' is not an "
                        "integer in [1, 64]\n",
                        v);
                return 2;
            }
            scale = (long)k;
        } else {
            fprintf(stderr, "surge predict: unknown option '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (model == NULL || params == NULL || isnan(t) || out == NULL) {
        fprintf(stderr, "surge predict: MODEL, --params, --time and --out are "
                        "required\n\n");
        usage(stderr);
        return 2;
    }
    if (isnan(vmin) != isnan(vmax) || (!isnan(vmin) && !(vmax > vmin))) {
        fprintf(stderr, "surge predict: --vmin and --vmax go together, with "
                        "vmin < vmax\n");
        return 2;
    }
    double pv[1024];
    int np = parse_list(params, pv, (int)(sizeof pv / sizeof pv[0]));
    if (np < 0) {
        fprintf(stderr,
                "surge predict: --params: '%s' is not a "
                "comma-separated list of numbers\n",
                params);
        return 2;
    }
    char err[1024] = "";
    surge_model *m = NULL;
    int rc = surge_model_load(model, &m, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "surge predict: %s\n", err);
        return 1;
    }
    const struct surge_model_info *mi = surge_model_get_info(m);
    int status = 1;
    float *x = NULL, *y = NULL;
    if (np + 1 != mi->n_inputs) {
        fprintf(stderr,
                "surge predict: --params: the model takes %d parameters "
                "and the time, got %d parameters\n",
                mi->n_inputs - 1, np);
        status = 2;
        goto out;
    }
    long nx = mi->n_outputs, ny = 1;
    if (shape != NULL) {
        if (parse_shape(shape, &nx, &ny) != 0) {
            fprintf(stderr, "surge predict: --shape: '%s' is not NXxNY\n",
                    shape);
            status = 2;
            goto out;
        }
    } else {
        const char *fs = surge_model_meta(m, "field_shape");
        char tmp[64];
        if (fs != NULL && strlen(fs) < sizeof tmp) {
            /* "ny,nx" (the array's shape) */
            snprintf(tmp, sizeof tmp, "%s", fs);
            char *c = strchr(tmp, ',');
            if (c != NULL) {
                *c = 'x';
                long a, b;
                if (parse_shape(tmp, &a, &b) == 0) {
                    ny = a;
                    nx = b;
                }
            }
        }
    }
    if ((long long)nx * ny != mi->n_outputs) {
        fprintf(stderr,
                "surge predict: --shape: %ld x %ld = %lld values, the model "
                "outputs %d\n",
                nx, ny, (long long)nx * ny, mi->n_outputs);
        status = 2;
        goto out;
    }
    if (pngp != NULL && (nx * scale > MAX_SIDE || ny * scale > MAX_SIDE)) {
        fprintf(stderr,
                "surge predict: --png: %ld x %ld pixels is too "
                "large\n",
                nx * scale, ny * scale);
        status = 2;
        goto out;
    }
    x = malloc((size_t)mi->n_inputs * sizeof *x);
    y = malloc((size_t)mi->n_outputs * sizeof *y);
    if (x == NULL || y == NULL) {
        fprintf(stderr, "surge predict: out of memory\n");
        goto out;
    }
    for (int i = 0; i < np; i++) {
        x[i] = (float)pv[i];
    }
    x[np] = (float)t;
    rc = surge_model_predict(m, x, 1, y);
    if (rc != 0) {
        fprintf(stderr, "surge predict: %s\n", surge_strerror(rc));
        goto out;
    }
    rc = write_npy(out, y, ny, nx);
    if (rc != 0) {
        fprintf(stderr, "surge predict: %s: %s\n", out, surge_strerror(rc));
        goto out;
    }
    double lo = INFINITY, hi = -INFINITY;
    for (long i = 0; i < nx * ny; i++) {
        lo = y[i] < lo ? y[i] : lo;
        hi = y[i] > hi ? y[i] : hi;
    }
    if (pngp != NULL) {
        double a = isnan(vmin) ? lo : vmin, b = isnan(vmax) ? hi : vmax;
        rc = write_png(pngp, y, ny, nx, a, b, scale);
        if (rc != 0) {
            fprintf(stderr, "surge predict: %s: %s\n", pngp,
                    surge_strerror(rc));
            goto out;
        }
    }
    printf("%s: field %ld x %ld (NX x NY), min %.6g, max %.6g, model step "
           "%llu\n",
           out, nx, ny, lo, hi, (unsigned long long)mi->steps);
    status = 0;
out:
    free(x);
    free(y);
    surge_model_destroy(&m);
    return status;
}
