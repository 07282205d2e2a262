/*
 * common/image.c - the viridis colormap and the in-memory PNG encoder
 * (common/image.h). libpng reports errors by longjmp: everything that must
 * be released after a jump is allocated before setjmp or lives in `buf`,
 * whose address libpng holds.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <png.h>

#include "common/image.h"

void
surge_image_viridis(double t, unsigned char rgb[3])
{
    static const unsigned char stops[9][3] = {
        {68, 1, 84},    {71, 44, 122},  {59, 81, 139},
        {44, 113, 142}, {33, 144, 141}, {39, 173, 129},
        {92, 200, 99},  {170, 220, 50}, {253, 231, 37}};
    if (!(t > 0)) {
        t = 0; /* also NaN */
    }
    if (t > 1) {
        t = 1;
    }
    double f = t * 8;
    int i = (int)f;
    if (i >= 8) {
        i = 7;
    }
    double u = f - i;
    for (int c = 0; c < 3; c++) {
        rgb[c] =
            (unsigned char)lrint(stops[i][c] * (1 - u) + stops[i + 1][c] * u);
    }
}

/* The growing buffer libpng writes into. */
struct png_buf {
    unsigned char *p; /* encoded bytes (malloc'ed) */
    size_t len;       /* bytes used */
    size_t cap;       /* bytes allocated */
    int oom;          /* an allocation failed; later writes are dropped */
};

static void
png_buf_write(png_structp png, png_bytep data, png_size_t n)
{
    struct png_buf *b = png_get_io_ptr(png);
    if (b->oom) {
        return;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap < 8192 ? 8192 : b->cap;
        while (cap < b->len + n) {
            cap *= 2;
        }
        unsigned char *q = realloc(b->p, cap);
        if (q == NULL) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void
png_buf_flush(png_structp png)
{
    (void)png;
}

int
surge_image_png_encode(const float *field, size_t ny, size_t nx, size_t scale,
                       double lo, double hi, unsigned char **out, size_t *len)
{
    const size_t max_side = 0x7fffffff; /* PNG's limit */
    if (field == NULL || ny == 0 || nx == 0 || scale == 0 ||
        nx > max_side / scale || ny > max_side / scale) {
        return -EINVAL;
    }
    size_t W = nx * scale, H = ny * scale;
    struct png_buf b = {0};
    png_structp png = NULL;
    png_infop info = NULL;
    int rc = -ENOMEM;
    unsigned char *row = malloc(W * 3);
    if (row == NULL) {
        return -ENOMEM;
    }
    png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    if (png == NULL) {
        goto out;
    }
    info = png_create_info_struct(png);
    if (info == NULL) {
        goto out;
    }
    if (setjmp(png_jmpbuf(png))) {
        rc = -EIO;
        goto out;
    }
    png_set_write_fn(png, &b, png_buf_write, png_buf_flush);
    png_set_IHDR(png, info, (png_uint_32)W, (png_uint_32)H, 8,
                 PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    double span = hi > lo ? hi - lo : 1;
    for (size_t r = 0; r < H; r++) {
        const float *src = field + (r / scale) * nx;
        for (size_t c = 0; c < W; c++) {
            surge_image_viridis((src[c / scale] - lo) / span, row + 3 * c);
        }
        png_write_row(png, row);
    }
    png_write_end(png, NULL);
    if (b.oom) {
        rc = -ENOMEM;
        goto out;
    }
    *out = b.p;
    *len = b.len;
    b.p = NULL;
    rc = 0;
out:
    png_destroy_write_struct(&png, &info);
    free(row);
    free(b.p);
    return rc;
}
