/*
 * reservoir/storage_cuda.cu - the CUDA device of the device storage
 * (struct surge_reservoir_device_ops, see reservoir_internal.h and
 * storage_device.c).
 *
 * DESIGN. One context per reservoir: the pool's copy in device memory
 * (one cudaMalloc of the host pool's size, slot for slot), an upload
 * stream and a gather stream, and the row ids of one batch (pinned on the
 * host, and on the device). The host pool is pinned with cudaHostRegister
 * so uploads are DMA straight from the slots; where that fails (locked
 * memory limits), uploads go through two pinned staging buffers used in
 * turn. An upload enqueues its copies and records up_done; a gather makes
 * its stream (its own, or the caller's: the trainer's) wait for up_done,
 * copies the row ids up (two pinned row buffers in turn, each free once
 * the gather that used it is done), runs gather_rows and records its
 * event; on its own stream it waits for that event before returning.
 *
 * Every CUDA status is checked; a failure returns SURGE_EINTERNAL (or
 * SURGE_ECONFIG for a missing device or too little memory) with the call,
 * file, line and CUDA's message in err. Nothing here aborts or prints.
 */
#include <cuda_runtime.h>

#include <errno.h>

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reservoir/reservoir_internal.h"

#define THREADS 256
#define STAGE_BYTES ((size_t)32 << 20)
/* Device memory left free for the trainer's own allocations besides the
 * pool's copy is the caller's business; this margin only keeps the
 * reservoir from taking the last bytes the runtime needs. */
#define MARGIN_BYTES ((size_t)256 << 20)

struct cuda_ctx {
    int device;
    cudaStream_t up;       /* uploads */
    cudaStream_t gs;       /* gathers */
    cudaEvent_t up_done;   /* after the last upload enqueued */
    cudaEvent_t g_done[2]; /* after the gather that used rows set i */
    int rows_i;            /* the rows set of the next gather */
    uint8_t *d_pool;       /* (pool_bytes) the pool's copy */
    size_t pool_bytes;
    uint8_t *h_pool;         /* the host pool */
    int registered;          /* h_pool pinned with cudaHostRegister */
    uint8_t *stage[2];       /* pinned staging (STAGE_BYTES each) when not
                                registered */
    cudaEvent_t stage_ev[2]; /* the last copy out of stage[i] */
    int stage_i;             /* the buffer to use next */
    uint32_t *h_rows[2];     /* (max_rows) pinned, used in turn */
    uint32_t *d_rows[2];     /* (max_rows) */
    size_t max_rows;
};

static void
set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Check a CUDA call; on failure set err and return SURGE_EINTERNAL from
 * the enclosing function (whose err/errlen are in scope). */
#define CK(call)                                                               \
    do {                                                                       \
        cudaError_t e_ = (call);                                               \
        if (e_ != cudaSuccess) {                                               \
            set_err(err, errlen, "reservoir device: %s failed (%s:%d): %s",    \
                    #call, __FILE__, __LINE__, cudaGetErrorString(e_));        \
            return SURGE_EINTERNAL;                                            \
        }                                                                      \
    } while (0)

/* Copy bytes from src to dst with the widest loads both allow. Threads
 * k0, k0 + step, ... of the row. */
__device__ static void
copy_part(uint8_t *dst, const uint8_t *src, size_t bytes, size_t k0,
          size_t step)
{
    if (((uintptr_t)dst & 15) == 0 && ((uintptr_t)src & 15) == 0 &&
        (bytes & 15) == 0) {
        float4 *d = (float4 *)dst;
        const float4 *s = (const float4 *)src;
        for (size_t k = k0; k < bytes / 16; k += step) {
            d[k] = s[k];
        }
    } else {
        float *d = (float *)dst;
        const float *s = (const float *)src;
        for (size_t k = k0; k < bytes / 4; k += step) {
            d[k] = s[k];
        }
    }
}

/* Block (i, c): row i, chunk c of gridDim.y over the row's bytes. */
__global__ static void
gather_rows(const uint8_t *pool, const uint32_t *rows, size_t slot_bytes,
            size_t in_bytes, size_t out_bytes, uint8_t *d_in, uint8_t *d_out)
{
    size_t i = blockIdx.x;
    const uint8_t *src = pool + (size_t)rows[i] * slot_bytes;
    size_t k0 = (size_t)blockIdx.y * blockDim.x + threadIdx.x;
    size_t step = (size_t)gridDim.y * blockDim.x;
    if (in_bytes > 0) {
        copy_part(d_in + i * in_bytes, src, in_bytes, k0, step);
    }
    if (out_bytes > 0) {
        copy_part(d_out + i * out_bytes, src + in_bytes, out_bytes, k0, step);
    }
}

static void
cuda_destroy(void *p)
{
    struct cuda_ctx *c = (struct cuda_ctx *)p;
    if (c == NULL) {
        return;
    }
    /* Best effort: errors here have nowhere to go, and the process may be
     * tearing the device down already. */
    (void)cudaSetDevice(c->device);
    if (c->up != NULL) {
        (void)cudaStreamSynchronize(c->up);
    }
    if (c->gs != NULL) {
        (void)cudaStreamSynchronize(c->gs);
    }
    if (c->registered) {
        (void)cudaHostUnregister(c->h_pool);
    }
    for (int i = 0; i < 2; i++) {
        if (c->stage[i] != NULL) {
            (void)cudaFreeHost(c->stage[i]);
        }
        if (c->stage_ev[i] != NULL) {
            (void)cudaEventDestroy(c->stage_ev[i]);
        }
    }
    for (int i = 0; i < 2; i++) {
        if (c->g_done[i] != NULL) {
            (void)cudaEventSynchronize(c->g_done[i]);
            (void)cudaEventDestroy(c->g_done[i]);
        }
        if (c->h_rows[i] != NULL) {
            (void)cudaFreeHost(c->h_rows[i]);
        }
        if (c->d_rows[i] != NULL) {
            (void)cudaFree(c->d_rows[i]);
        }
    }
    if (c->d_pool != NULL) {
        (void)cudaFree(c->d_pool);
    }
    if (c->up_done != NULL) {
        (void)cudaEventDestroy(c->up_done);
    }
    if (c->up != NULL) {
        (void)cudaStreamDestroy(c->up);
    }
    if (c->gs != NULL) {
        (void)cudaStreamDestroy(c->gs);
    }
    (void)cudaGetLastError();
    free(c);
}

/* The body of create; on error the caller destroys c. */
static int
create_body(struct cuda_ctx *c, char *err, size_t errlen)
{
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count <= c->device) {
        set_err(err, errlen,
                "reservoir.storage: device needs CUDA device %d, and %s; use "
                "reservoir.storage host",
                c->device,
                e != cudaSuccess ? cudaGetErrorString(e)
                                 : "there are not that many devices");
        (void)cudaGetLastError();
        return SURGE_ECONFIG;
    }
    CK(cudaSetDevice(c->device));
    size_t free_b = 0, total_b = 0;
    CK(cudaMemGetInfo(&free_b, &total_b));
    size_t need = c->pool_bytes + c->max_rows * sizeof(uint32_t);
    if (need > free_b || free_b - need < MARGIN_BYTES) {
        set_err(err, errlen,
                "reservoir.capacity_bytes: the device storage needs %zu "
                "bytes on CUDA device %d, which has %zu free of %zu (and "
                "keeps %zu spare): lower reservoir.capacity_bytes or use "
                "reservoir.storage host",
                need, c->device, free_b, total_b, (size_t)MARGIN_BYTES);
        return SURGE_ECONFIG;
    }
    e = cudaMalloc((void **)&c->d_pool, c->pool_bytes);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        c->d_pool = NULL;
        set_err(err, errlen,
                "reservoir.capacity_bytes: cudaMalloc of %zu bytes on CUDA "
                "device %d failed (%s): lower reservoir.capacity_bytes or "
                "use reservoir.storage host",
                c->pool_bytes, c->device, cudaGetErrorString(e));
        return SURGE_ECONFIG;
    }
    CK(cudaStreamCreateWithFlags(&c->up, cudaStreamNonBlocking));
    CK(cudaStreamCreateWithFlags(&c->gs, cudaStreamNonBlocking));
    CK(cudaEventCreateWithFlags(&c->up_done, cudaEventDisableTiming));
    for (int i = 0; i < 2; i++) {
        CK(cudaMalloc((void **)&c->d_rows[i], c->max_rows * sizeof(uint32_t)));
        CK(cudaHostAlloc((void **)&c->h_rows[i], c->max_rows * sizeof(uint32_t),
                         cudaHostAllocDefault));
        CK(cudaEventCreateWithFlags(&c->g_done[i], cudaEventDisableTiming));
        CK(cudaEventRecord(c->g_done[i], c->gs));
    }
    /* Mark the copy's "last upload" done already, so a gather before any
     * upload has an event to wait for. */
    CK(cudaEventRecord(c->up_done, c->up));
    e = cudaHostRegister(c->h_pool, c->pool_bytes, cudaHostRegisterDefault);
    if (e == cudaSuccess) {
        c->registered = 1;
    } else {
        (void)cudaGetLastError(); /* not sticky: fall back to staging */
        for (int i = 0; i < 2; i++) {
            CK(cudaHostAlloc((void **)&c->stage[i], STAGE_BYTES,
                             cudaHostAllocDefault));
            CK(cudaEventCreateWithFlags(&c->stage_ev[i],
                                        cudaEventDisableTiming));
            CK(cudaEventRecord(c->stage_ev[i], c->up));
        }
    }
    return 0;
}

static int
cuda_create(void **ctx, int device, uint8_t *host_pool, size_t pool_bytes,
            size_t max_rows, char *err, size_t errlen)
{
    struct cuda_ctx *c = (struct cuda_ctx *)calloc(1, sizeof *c);
    if (c == NULL) {
        set_err(err, errlen, "reservoir device: out of memory");
        return -ENOMEM;
    }
    c->device = device;
    c->h_pool = host_pool;
    c->pool_bytes = pool_bytes;
    c->max_rows = max_rows;
    int rc = create_body(c, err, errlen);
    if (rc != 0) {
        cuda_destroy(c);
        return rc;
    }
    *ctx = c;
    return 0;
}

static int
cuda_upload(void *ctx, const size_t *off, const size_t *len, size_t nruns,
            char *err, size_t errlen)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    CK(cudaSetDevice(c->device));
    for (size_t k = 0; k < nruns; k++) {
        if (c->registered) {
            CK(cudaMemcpyAsync(c->d_pool + off[k], c->h_pool + off[k], len[k],
                               cudaMemcpyHostToDevice, c->up));
            continue;
        }
        for (size_t done = 0; done < len[k];) {
            size_t piece = len[k] - done;
            if (piece > STAGE_BYTES) {
                piece = STAGE_BYTES;
            }
            int i = c->stage_i;
            c->stage_i ^= 1;
            /* The buffer's previous copy must have left it. */
            CK(cudaEventSynchronize(c->stage_ev[i]));
            memcpy(c->stage[i], c->h_pool + off[k] + done, piece);
            CK(cudaMemcpyAsync(c->d_pool + off[k] + done, c->stage[i], piece,
                               cudaMemcpyHostToDevice, c->up));
            CK(cudaEventRecord(c->stage_ev[i], c->up));
            done += piece;
        }
    }
    CK(cudaEventRecord(c->up_done, c->up));
    return 0;
}

static int
cuda_gather(void *ctx, const uint32_t *rows, size_t n, size_t slot_bytes,
            size_t in_bytes, size_t out_bytes, void *d_in, void *d_out,
            void *stream, char *err, size_t errlen)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (n == 0) {
        return 0;
    }
    if (n > c->max_rows || n > 0x7fffffffu) {
        set_err(err, errlen, "reservoir device: %zu rows, at most %zu", n,
                c->max_rows);
        return -EINVAL;
    }
    cudaStream_t st = stream != NULL ? (cudaStream_t)stream : c->gs;
    int i = c->rows_i;
    c->rows_i ^= 1;
    CK(cudaSetDevice(c->device));
    /* Rows set i is free once the gather that last used it is done (two
     * gathers back: long done, unless the caller's stream is far behind). */
    CK(cudaEventSynchronize(c->g_done[i]));
    CK(cudaStreamWaitEvent(st, c->up_done, 0));
    memcpy(c->h_rows[i], rows, n * sizeof(uint32_t));
    CK(cudaMemcpyAsync(c->d_rows[i], c->h_rows[i], n * sizeof(uint32_t),
                       cudaMemcpyHostToDevice, st));
    size_t widest = in_bytes > out_bytes ? in_bytes : out_bytes;
    size_t per_block = (size_t)THREADS * 16 * 4; /* 4 float4 per thread */
    size_t chunks = (widest + per_block - 1) / per_block;
    if (chunks < 1) {
        chunks = 1;
    }
    if (chunks > 65535) {
        chunks = 65535;
    }
    dim3 grid((unsigned)n, (unsigned)chunks);
    gather_rows<<<grid, THREADS, 0, st>>>(c->d_pool, c->d_rows[i], slot_bytes,
                                          in_bytes, out_bytes, (uint8_t *)d_in,
                                          (uint8_t *)d_out);
    CK(cudaGetLastError());
    CK(cudaEventRecord(c->g_done[i], st));
    if (stream == NULL) {
        CK(cudaEventSynchronize(c->g_done[i]));
    }
    return 0;
}

/* The last gather queued (on any stream) is complete. */
static int
cuda_wait(void *ctx, char *err, size_t errlen)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    CK(cudaSetDevice(c->device));
    CK(cudaEventSynchronize(c->g_done[c->rows_i ^ 1]));
    return 0;
}

extern "C" {

const struct surge_reservoir_device_ops surge_reservoir_device_cuda = {
    "cuda", cuda_create, cuda_destroy, cuda_upload, cuda_gather, cuda_wait,
};

int
surge_reservoir_device_available(void)
{
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return count > 0;
}

} /* extern "C" */
