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

#include <jansson.h>

#include "common/image.h"
#include "common/util.h"
#include "trainer/predict.h"
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
            "shape (NY, NX);\n"
            "                 a model whose file lists its fields "
            "(output_fields) gets one\n"
            "                 file per field in its own shape, FILE with the "
            "field's name\n"
            "                 before the extension (pred.npy -> pred.u.npy), "
            "or FILE itself\n"
            "                 for a single field\n"
            "  --png FILE     also write a PNG heat map (viridis; row 0 at "
            "the top, as\n"
            "                 matplotlib's imshow shows the array); a 1-D "
            "field as a line plot\n"
            "                 (640 x 240 pixels times --scale); per field as "
            "for --out\n"
            "  --shape NXxNY  the whole output as one field of this shape "
            "(default: the\n"
            "                 model's fields, else its field_shape metadata, "
            "else one row);\n"
            "                 NX * NY must equal the model's outputs\n"
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

#define MAX_DIMS 8 /* of a field's shape (server/options.c's limit) */

/* The .npy format, version 1.0: magic, header length, a Python dict
 * literal padded with spaces to a multiple of 64 bytes, then the data. */
static int
write_npy_nd(const char *path, const float *y, const long *dims, int nd)
{
    char shape[MAX_DIMS * 24 + 8];
    size_t o = 0;
    long count = 1;
    for (int d = 0; d < nd; d++) {
        o += (size_t)snprintf(shape + o, sizeof shape - o, "%ld,%s", dims[d],
                              d + 1 < nd ? " " : "");
        count *= dims[d];
    }
    if (nd > 1) {
        shape[o - 1] = '\0'; /* (a, b) but (n,) */
    }
    char dict[sizeof shape + 96];
    int dl = snprintf(dict, sizeof dict,
                      "{'descr': '<f4', 'fortran_order': False, 'shape': "
                      "(%s), }",
                      shape);
    size_t head = 10 + (size_t)dl + 1; /* + '\n' */
    size_t pad = (64 - head % 64) % 64;
    size_t hlen = (size_t)dl + pad + 1;
    size_t data = (size_t)count * sizeof(float);
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

static int
write_npy(const char *path, const float *y, long ny, long nx)
{
    long dims[2] = {ny, nx};
    return write_npy_nd(path, y, dims, 2);
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

/* One field of the model's output_fields metadata. */
struct field {
    char name[65];
    long offset, size;
    long dims[MAX_DIMS];
    int nd;
};

/* Parse output_fields (docs/model-file.md) into f[0..n-1]: each field
 * inside the n_outputs values, its shape's product its size, the fields
 * in order without overlap. Returns n, or -1 with err set. */
static int
parse_fields(const char *text, long n_outputs, struct field *f, int cap,
             char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *a = json_loads(text, 0, &jerr);
    int n = -1;
    long next = 0;
    if (!json_is_array(a) || json_array_size(a) == 0 ||
        json_array_size(a) > (size_t)cap) {
        snprintf(err, errlen, "not an array of 1..%d fields", cap);
        goto out;
    }
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *o = json_array_get(a, i);
        json_t *shape = json_object_get(o, "shape");
        const char *name = json_string_value(json_object_get(o, "name"));
        struct field *x = &f[i];
        x->offset = (long)json_integer_value(json_object_get(o, "offset"));
        x->size = (long)json_integer_value(json_object_get(o, "size"));
        x->nd = (int)json_array_size(shape);
        if (name == NULL || strlen(name) >= sizeof x->name ||
            strchr(name, '/') != NULL || x->offset != next || x->size < 1 ||
            x->offset + x->size > n_outputs || x->nd < 1 || x->nd > MAX_DIMS) {
            snprintf(err, errlen, "field %zu: bad name, offset, size or shape",
                     i);
            goto out;
        }
        snprintf(x->name, sizeof x->name, "%s", name);
        long prod = 1;
        for (int d = 0; d < x->nd; d++) {
            x->dims[d] = (long)json_integer_value(json_array_get(shape, d));
            if (x->dims[d] < 1 || x->dims[d] > x->size) {
                prod = -1;
                break;
            }
            prod *= x->dims[d];
        }
        if (prod != x->size) {
            snprintf(err, errlen,
                     "field %s: its shape does not hold %ld values", name,
                     x->size);
            goto out;
        }
        next = x->offset + x->size;
    }
    if (next != n_outputs) {
        snprintf(err, errlen, "the fields cover %ld of the %ld outputs", next,
                 n_outputs);
        goto out;
    }
    n = (int)json_array_size(a);
out:
    json_decref(a);
    return n;
}

/* "dir/pred.npy" + "u" -> "dir/pred.u.npy" (before the extension, when
 * the last path component has one). */
static void
field_path(const char *path, const char *name, char *buf, size_t cap)
{
    const char *slash = strrchr(path, '/');
    const char *dot = strrchr(path, '.');
    if (dot == NULL || (slash != NULL && dot < slash) || dot == path) {
        snprintf(buf, cap, "%s.%s", path, name);
    } else {
        snprintf(buf, cap, "%.*s.%s%s", (int)(dot - path), path, name, dot);
    }
}

/* Each field of the output in its own .npy (its shape), and PNG: a 2-D
 * field as a heat map, a 1-D one as a line plot. With one field, the
 * paths given are used as they are. */
static int
write_fields(const struct field *f, int nf, const float *y, const char *out,
             const char *pngp, double vmin, double vmax, long scale,
             unsigned long long steps)
{
    char path[4096], ppath[4096];
    for (int i = 0; i < nf; i++) {
        const float *v = y + f[i].offset;
        double lo = INFINITY, hi = -INFINITY;
        for (long k = 0; k < f[i].size; k++) {
            lo = v[k] < lo ? v[k] : lo;
            hi = v[k] > hi ? v[k] : hi;
        }
        if (nf == 1) {
            snprintf(path, sizeof path, "%s", out);
        } else {
            field_path(out, f[i].name, path, sizeof path);
        }
        int rc = write_npy_nd(path, v, f[i].dims, f[i].nd);
        if (rc != 0) {
            fprintf(stderr, "surge predict: %s: %s\n", path,
                    surge_strerror(rc));
            return 1;
        }
        if (pngp != NULL) {
            if (nf == 1) {
                snprintf(ppath, sizeof ppath, "%s", pngp);
            } else {
                field_path(pngp, f[i].name, ppath, sizeof ppath);
            }
            double a = isnan(vmin) ? lo : vmin, b = isnan(vmax) ? hi : vmax;
            unsigned char *png = NULL;
            size_t len = 0;
            if (f[i].nd == 1) {
                long w = 640 * scale < 8192 ? 640 * scale : 8192;
                long h = 240 * scale < 8192 ? 240 * scale : 8192;
                rc = surge_image_png_lines(&v, 1, (size_t)f[i].size, (size_t)w,
                                           (size_t)h, a, b, &png, &len);
            } else if (f[i].nd == 2) {
                rc = surge_image_png_encode(v, (size_t)f[i].dims[0],
                                            (size_t)f[i].dims[1], (size_t)scale,
                                            a, b, &png, &len);
            } else {
                fprintf(stderr,
                        "surge predict: %s: field %s has %d dimensions; "
                        "a PNG shows 1 or 2\n",
                        ppath, f[i].name, f[i].nd);
                return 2;
            }
            if (rc == 0) {
                rc = surge_write_file_atomic(ppath, png, len);
                free(png);
            }
            if (rc != 0) {
                fprintf(stderr, "surge predict: %s: %s\n", ppath,
                        surge_strerror(rc));
                return 1;
            }
        }
        char dims[MAX_DIMS * 24] = "";
        size_t o = 0;
        for (int d = 0; d < f[i].nd; d++) {
            o += (size_t)snprintf(dims + o, sizeof dims - o, "%s%ld",
                                  d ? " x " : "", f[i].dims[d]);
        }
        printf("%s: field %s (%s), min %.6g, max %.6g, model step %llu\n", path,
               f[i].name, dims, lo, hi, steps);
    }
    return 0;
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
    /* The model's fields (output_fields), unless --shape overrides: each is
     * written in its own shape. */
    struct field fields[64];
    int nfields = 0;
    const char *of = surge_model_meta(m, "output_fields");
    if (shape == NULL && of != NULL) {
        nfields = parse_fields(of, mi->n_outputs, fields,
                               (int)(sizeof fields / sizeof fields[0]), err,
                               sizeof err);
        if (nfields < 0) {
            fprintf(stderr, "surge predict: %s: output_fields: %s\n", model,
                    err);
            goto out;
        }
        if (nfields == 1 && fields[0].nd == 1 &&
            surge_model_meta(m, "field_shape") != NULL) {
            nfields = 0; /* one field the server showed 2-D: as before */
        }
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
    if (nfields == 0 && pngp != NULL &&
        (nx * scale > MAX_SIDE || ny * scale > MAX_SIDE)) {
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
    if (nfields > 0) {
        status = write_fields(fields, nfields, y, out, pngp, vmin, vmax, scale,
                              (unsigned long long)mi->steps);
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
