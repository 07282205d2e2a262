/*
 * reservoir/reservoir_internal.h - for the reservoir's own tests and
 * benchmark only (tests/unit/reservoir, bench/reservoir):
 *   - a look at the pool, so that the bare memcpy baseline gathers the very
 *     same rows from the very same memory as get_batch. Reading the pool
 *     without pinning races with puts that overwrite slots.
 *   - the device storage's table of operations, so that a test can run the
 *     device storage's logic (what is uploaded when, what is gathered) on
 *     an emulated device in host memory, without a GPU. The CUDA table
 *     (storage_cuda.cu) is the only other implementation.
 * Nothing else may include it.
 */
#ifndef SURGE_RESERVOIR_INTERNAL_H
#define SURGE_RESERVOIR_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "reservoir/reservoir.h"

#ifdef __cplusplus
extern "C" {
#endif

/* surge_reservoir_pool_ - the pool's first byte; slot s starts at
 * pool + s * *slot_bytes with its input (input_dim floats) followed by its
 * output (output_dim floats). Only safe while no put runs. */
const uint8_t *surge_reservoir_pool_(const surge_reservoir *r,
                                     size_t *slot_bytes);

/* The device a device storage keeps its copy of the pool on. The storage
 * (reservoir/storage_device.c) calls these with its device lock held and
 * never with the reservoir's main lock. Errors: 0, or a negative code
 * with a sentence in err (at most errlen bytes, NUL-terminated) that names
 * the failing call, file and line. */
struct surge_reservoir_device_ops {
    const char *name; /* "cuda", "emulated" */
    /* create: a context on device ordinal `device` holding a copy of the
     * host pool (pool_bytes at host_pool) and room to gather max_rows
     * rows. The host pool may be pinned for DMA (when that fails, uploads
     * go through pinned staging buffers). SURGE_ECONFIG when there is no
     * such device or its free memory is too small (err gives the bytes
     * needed and free, and says what to change); SURGE_EINTERNAL for
     * another failure. */
    int (*create)(void **ctx, int device, uint8_t *host_pool, size_t pool_bytes,
                  size_t max_rows, char *err, size_t errlen);
    void (*destroy)(void *ctx);
    /* upload: enqueue copies of nruns byte ranges [off[k], off[k] +
     * len[k]) of the host pool to the same offsets of the device copy, on
     * the device's upload stream, and return (asynchronous). */
    int (*upload)(void *ctx, const size_t *off, const size_t *len, size_t nruns,
                  char *err, size_t errlen);
    /* gather: after every upload enqueued so far, copy n rows on the
     * device: row i from device offset rows[i] * slot_bytes, its first
     * in_bytes to d_in + i * in_bytes and the out_bytes after them to
     * d_out + i * out_bytes (d_in/d_out NULL when their bytes are 0).
     * stream NULL: on the device's own stream, and return when the copy
     * is complete. Else queued on stream (a cudaStream_t) after the work
     * already queued there and before any work queued there later, and
     * return at once; rows is read during the call only. */
    int (*gather)(void *ctx, const uint32_t *rows, size_t n, size_t slot_bytes,
                  size_t in_bytes, size_t out_bytes, void *d_in, void *d_out,
                  void *stream, char *err, size_t errlen);
    /* wait: until the last gather queued on a caller's stream is
     * complete. */
    int (*wait)(void *ctx, char *err, size_t errlen);
};

/* The CUDA device (storage_cuda.cu), in a build with CUDA only. */
extern const struct surge_reservoir_device_ops surge_reservoir_device_cuda;

/* surge_reservoir_create_on_ - surge_reservoir_create with
 * cfg->storage == SURGE_RESERVOIR_STORAGE_DEVICE on the given device ops
 * (the tests' emulation), in any build. */
int surge_reservoir_create_on_(surge_reservoir **rp,
                               const surge_reservoir_config *cfg,
                               const struct surge_reservoir_device_ops *dev,
                               char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif /* SURGE_RESERVOIR_INTERNAL_H */
