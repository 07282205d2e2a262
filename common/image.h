/*
 * common/image.h - false-colour images of 2-D fields (the viridis colormap)
 * and line plots of 1-D ones, as in-memory PNGs (libpng). Used by `surge
 * predict` (trainer/predict.c) and the monitoring previews (monitor/metrics.c).
 *
 * A convenience library of its own, common/libsurge_image.la, so that the
 * client library (which absorbs common/libsurge_common.la) needs no libpng.
 * All functions are thread-safe (no shared state); none prints or exits.
 */
#ifndef SURGE_COMMON_IMAGE_H
#define SURGE_COMMON_IMAGE_H

#include <stddef.h>

/* surge_image_viridis - the viridis colormap (matplotlib), 9 stops
 * linearly interpolated: t = 0 is dark purple, t = 1 yellow. t is clamped
 * to [0, 1]; NaN maps like 0. Stores the colour into rgb (R, G, B). */
void surge_image_viridis(double t, unsigned char rgb[3]);

/* surge_image_png_encode - encode field (ny, nx), row-major, row 0 at the
 * top, as an 8-bit RGB PNG through surge_image_viridis with the value
 * range [lo, hi] (a range of zero width or less counts as width 1). Each
 * value becomes a scale x scale block of pixels, so the image is
 * (nx * scale) x (ny * scale) pixels. On success *out is a malloc'ed
 * buffer of *len bytes that the caller owns (free it); on failure *out and
 * *len are untouched. Returns 0, -EINVAL (an empty field, scale 0, or a
 * side over 2^31 - 1 pixels), -ENOMEM or -EIO (libpng failed). */
int surge_image_png_encode(const float *field, size_t ny, size_t nx,
                           size_t scale, double lo, double hi,
                           unsigned char **out, size_t *len);

/* surge_image_png_lines - plot nseries series of n values each as lines
 * (series k in the k-th of five colours: blue, orange, green, red,
 * purple) on a white width x height image with a grey frame: value lo at
 * the bottom, hi at the top (a range of zero width or less counts as
 * width 1; values outside are clamped, NaN plotted as lo), the n points
 * spread evenly from left to right. For 1-D fields, which as an image
 * would be one pixel high. *out and *len as for surge_image_png_encode.
 * Returns 0, -EINVAL (no series, n 0, a side outside [16, 8192]), -ENOMEM
 * or -EIO. */
int surge_image_png_lines(const float *const *series, size_t nseries, size_t n,
                          size_t width, size_t height, double lo, double hi,
                          unsigned char **out, size_t *len);

#endif
