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

/* Encode a W x H RGB image whose rows row_fn fills (row r into row, 3 * W
 * bytes), into *out / *len as surge_image_png_encode documents. */
static int
png_encode_rows(size_t W, size_t H,
                void (*row_fn)(void *arg, size_t r, unsigned char *row),
                void *arg, unsigned char **out, size_t *len)
{
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
    for (size_t r = 0; r < H; r++) {
        row_fn(arg, r, row);
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

struct field_rows {
    const float *field;
    size_t nx, scale;
    double lo, span;
};

static void
field_row(void *arg, size_t r, unsigned char *row)
{
    const struct field_rows *f = arg;
    const float *src = f->field + (r / f->scale) * f->nx;
    for (size_t c = 0; c < f->nx * f->scale; c++) {
        surge_image_viridis((src[c / f->scale] - f->lo) / f->span, row + 3 * c);
    }
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
    struct field_rows f = {field, nx, scale, lo, hi > lo ? hi - lo : 1};
    return png_encode_rows(nx * scale, ny * scale, field_row, &f, out, len);
}

/* Line colours: dark blue, orange, green, red, purple (matplotlib's
 * first five), then around again. */
static const unsigned char line_rgb[5][3] = {{31, 119, 180},
                                             {255, 127, 14},
                                             {44, 160, 44},
                                             {214, 39, 40},
                                             {148, 103, 189}};

struct canvas {
    unsigned char *px; /* (H, W, 3) */
    size_t W, H;
};

static void
canvas_row(void *arg, size_t r, unsigned char *row)
{
    const struct canvas *cv = arg;
    memcpy(row, cv->px + r * cv->W * 3, cv->W * 3);
}

static void
plot_dot(struct canvas *cv, long x, long y, const unsigned char rgb[3])
{
    /* 2 x 2 pixels, so a line stays visible once scaled down. */
    for (long dy = 0; dy < 2; dy++) {
        for (long dx = 0; dx < 2; dx++) {
            long px = x + dx, py = y + dy;
            if (px >= 0 && py >= 0 && (size_t)px < cv->W &&
                (size_t)py < cv->H) {
                memcpy(cv->px + ((size_t)py * cv->W + (size_t)px) * 3, rgb, 3);
            }
        }
    }
}

int
surge_image_png_lines(const float *const *series, size_t nseries, size_t n,
                      size_t width, size_t height, double lo, double hi,
                      unsigned char **out, size_t *len)
{
    if (series == NULL || nseries == 0 || n == 0 || width < 16 || height < 16 ||
        width > 8192 || height > 8192) {
        return -EINVAL;
    }
    for (size_t k = 0; k < nseries; k++) {
        if (series[k] == NULL) {
            return -EINVAL;
        }
    }
    struct canvas cv = {malloc(width * height * 3), width, height};
    if (cv.px == NULL) {
        return -ENOMEM;
    }
    memset(cv.px, 255, width * height * 3); /* white */
    /* A grey frame; the plot area is inside a 4-pixel margin. */
    const unsigned char grey[3] = {200, 200, 200};
    for (size_t x = 0; x < width; x++) {
        memcpy(cv.px + x * 3, grey, 3);
        memcpy(cv.px + ((height - 1) * width + x) * 3, grey, 3);
    }
    for (size_t y = 0; y < height; y++) {
        memcpy(cv.px + y * width * 3, grey, 3);
        memcpy(cv.px + (y * width + width - 1) * 3, grey, 3);
    }
    double span = hi > lo ? hi - lo : 1;
    double pw = (double)(width - 9), ph = (double)(height - 9);
    for (size_t k = 0; k < nseries; k++) {
        const unsigned char *rgb = line_rgb[k % 5];
        long px = -1, py = -1;
        for (size_t i = 0; i < n; i++) {
            double v = series[k][i];
            double t = isfinite(v) ? (v - lo) / span : 0.0;
            t = t < 0 ? 0 : (t > 1 ? 1 : t);
            long x =
                4 + lrint(n > 1 ? pw * (double)i / (double)(n - 1) : pw / 2);
            long y = 4 + lrint(ph * (1.0 - t));
            if (px < 0) {
                plot_dot(&cv, x, y, rgb);
            } else {
                /* Segment from the previous point, one dot per pixel of
                 * its longer side. */
                long steps =
                    labs(x - px) > labs(y - py) ? labs(x - px) : labs(y - py);
                for (long s = 1; s <= steps; s++) {
                    plot_dot(&cv, px + (x - px) * s / steps,
                             py + (y - py) * s / steps, rgb);
                }
            }
            px = x;
            py = y;
        }
    }
    int rc = png_encode_rows(width, height, canvas_row, &cv, out, len);
    free(cv.px);
    return rc;
}
