/*
 * bench/reservoir/bench-reservoir-feed.c - how fast the reservoir feeds a GPU,
 * per storage mode (docs/reservoir.md, "Storage", "Feeding the trainer").
 *
 * The samples of the model 6-1024-1024-1024-4096 (6 input floats,
 * 4096 output floats: 16,408 bytes), a pool of --pool-mib MiB filled to
 * capacity (policy reservoir), batches of --batch rows (4096). In the same
 * run, the repetitions interleaved, medians reported:
 *   device      surge_reservoir_get_batch_device: the rows gathered on the
 *               device from the device storage's copy (what a trainer fed
 *               by the device storage waits per batch);
 *   host        surge_reservoir_get_batch into pinned host buffers, then
 *               cudaMemcpy of the batch to the device (the host storage:
 *               with prefetch the two overlap the step, so the feed costs
 *               max(gather, copy) per batch if the step is shorter);
 *   d2d         one cudaMemcpy of a contiguous batch inside the device:
 *               the floor of any on-device gather of that many bytes;
 *   upload      puts of fresh samples into the device storage, timed to
 *               the end of their upload (GB/s of samples stored and
 *               uploaded once).
 * With --step-ms S (the trainer's step at this batch with the batch
 * already on the device, e.g. from bench-trainer-cuda), it also reports
 * the fed rate relative to the device-resident rate, S / (S + device),
 * for the device storage (its gather is not overlapped with the step) and
 * S / max(S, host gather, copy) for the host storage with prefetch.
 *
 * Without a CUDA device it prints a skip line and exits 0. Ends with one
 * JSON line.
 *
 * Usage: bench-reservoir-feed [--pool-mib N] [--batch B] [--reps N]
 *                             [--step-ms S]
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "common/util.h"
#include "reservoir/reservoir.h"

#define NIN 6
#define NOUT 4096
#define MAX_REPS 51

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double
median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double
now_ms(void)
{
    return (double)surge_now_ns() * 1e-6;
}

/* Fail with the call's text: this is a benchmark, not a library. */
#define CK(call)                                                               \
    do {                                                                       \
        cudaError_t e_ = (call);                                               \
        if (e_ != cudaSuccess) {                                               \
            fprintf(stderr, "bench-reservoir-feed: %s: %s\n", #call,           \
                    cudaGetErrorString(e_));                                   \
            exit(1);                                                           \
        }                                                                      \
    } while (0)

static void
fill(float *in, float *out, uint64_t id)
{
    for (int k = 0; k < NIN; k++) {
        in[k] = (float)(id % 1000) * 0.001f + (float)k;
    }
    for (int k = 0; k < NOUT; k++) {
        out[k] = (float)((id + (uint64_t)k) % 977);
    }
}

static surge_reservoir *
make(enum surge_reservoir_storage st, size_t pool_mib, size_t B)
{
    surge_reservoir_config c;
    surge_reservoir_config_init(&c);
    c.policy = SURGE_RESERVOIR_RESERVOIR;
    c.input_dim = NIN;
    c.output_dim = NOUT;
    c.capacity_bytes = pool_mib << 20;
    c.max_batch = B;
    c.storage = st;
    surge_reservoir *r = NULL;
    char err[512];
    if (surge_reservoir_create(&r, &c, err, sizeof err) != 0) {
        fprintf(stderr, "bench-reservoir-feed: %s\n", err);
        exit(1);
    }
    return r;
}

int
main(int argc, char **argv)
{
    size_t pool_mib = 4096, B = 4096;
    int reps = 21;
    double step_ms = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--pool-mib") == 0 && i + 1 < argc) {
            pool_mib = strtoul(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc) {
            B = strtoul(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
            reps = (int)strtol(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--step-ms") == 0 && i + 1 < argc) {
            step_ms = strtod(argv[++i], NULL);
        } else {
            fprintf(stderr,
                    "usage: bench-reservoir-feed [--pool-mib N] [--batch B] "
                    "[--reps N] [--step-ms S]\n");
            return 2;
        }
    }
    if (reps < 1 || reps > MAX_REPS || B == 0 || pool_mib == 0) {
        fprintf(stderr, "bench-reservoir-feed: bad --reps, --batch or "
                        "--pool-mib\n");
        return 2;
    }
    if (!surge_reservoir_device_available()) {
        printf("{\"bench\": \"reservoir_feed\", \"skipped\": \"no CUDA "
               "device\"}\n");
        return 0;
    }
    size_t sample = (NIN + NOUT) * 4;
    surge_reservoir *dev = make(SURGE_RESERVOIR_STORAGE_DEVICE, pool_mib, B);
    surge_reservoir *host = make(SURGE_RESERVOIR_STORAGE_HOST, pool_mib, B);
    surge_reservoir_stats st;
    surge_reservoir_get_stats(dev, &st);
    size_t nslots = st.capacity_samples;
    float in[NIN], *out = malloc(NOUT * 4);
    float *hx, *hy, *dx, *dy, *cx, *cy;
    surge_batch_info *info = calloc(B, sizeof *info);
    CK(cudaHostAlloc((void **)&hx, B * NIN * 4, cudaHostAllocDefault));
    CK(cudaHostAlloc((void **)&hy, B * NOUT * 4, cudaHostAllocDefault));
    CK(cudaMalloc((void **)&dx, B * NIN * 4));
    CK(cudaMalloc((void **)&dy, B * NOUT * 4));
    CK(cudaMalloc((void **)&cx, B * NIN * 4));
    CK(cudaMalloc((void **)&cy, B * NOUT * 4));
    if (out == NULL || info == NULL) {
        return 1;
    }

    /* Fill both pools; the device one timed to the end of its uploads. */
    uint64_t id = 0;
    double t0 = now_ms();
    for (; id < nslots; id++) {
        fill(in, out, id);
        if (surge_reservoir_put(dev, in, out, NULL, 0) != 0) {
            fprintf(stderr, "bench-reservoir-feed: put failed\n");
            return 1;
        }
    }
    if (surge_reservoir_get_batch_device(dev, B, dx, dy, info, 0) != (long)B) {
        fprintf(stderr, "bench-reservoir-feed: %s\n",
                surge_reservoir_device_error(dev));
        return 1;
    }
    double upload_ms = now_ms() - t0;
    for (uint64_t k = 0; k < nslots; k++) {
        fill(in, out, k);
        (void)surge_reservoir_put(host, in, out, NULL, 0);
    }

    double tdev[MAX_REPS], tgather[MAX_REPS], tcopy[MAX_REPS], td2d[MAX_REPS];
    for (int rep = 0; rep < reps; rep++) {
        double a = now_ms();
        long n = surge_reservoir_get_batch_device(dev, B, dx, dy, info, 0);
        double b = now_ms();
        long m = surge_reservoir_get_batch(host, B, hx, hy, info, 0);
        double c = now_ms();
        CK(cudaMemcpy(dx, hx, B * NIN * 4, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dy, hy, B * NOUT * 4, cudaMemcpyHostToDevice));
        double d = now_ms();
        CK(cudaMemcpy(cx, dx, B * NIN * 4, cudaMemcpyDeviceToDevice));
        CK(cudaMemcpy(cy, dy, B * NOUT * 4, cudaMemcpyDeviceToDevice));
        CK(cudaDeviceSynchronize());
        double e = now_ms();
        if (n != (long)B || m != (long)B) {
            fprintf(stderr, "bench-reservoir-feed: short batch (%ld, %ld)\n", n,
                    m);
            return 1;
        }
        tdev[rep] = b - a;
        tgather[rep] = c - b;
        tcopy[rep] = d - c;
        td2d[rep] = e - d;
    }
    double dev_ms = median(tdev, reps), gather_ms = median(tgather, reps);
    double copy_ms = median(tcopy, reps), d2d_ms = median(td2d, reps);
    double batch_gb = (double)B * (double)sample * 1e-9;
    double host_feed_ms = gather_ms > copy_ms ? gather_ms : copy_ms;
    printf("reservoir feed, batch %zu of %zu-byte samples (%.1f MB), pool "
           "%zu MiB (%zu samples), %d reps, medians:\n",
           B, sample, batch_gb * 1e3, pool_mib, nslots, reps);
    printf("  device storage gather   %8.3f ms  %7.1f GB/s\n", dev_ms,
           batch_gb / (dev_ms * 1e-3));
    printf("  host gather (pinned)    %8.3f ms  %7.1f GB/s\n", gather_ms,
           batch_gb / (gather_ms * 1e-3));
    printf("  host-to-device copy     %8.3f ms  %7.1f GB/s\n", copy_ms,
           batch_gb / (copy_ms * 1e-3));
    printf("  device memcpy (floor)   %8.3f ms  %7.1f GB/s\n", d2d_ms,
           batch_gb / (d2d_ms * 1e-3));
    printf("  put + upload            %8.1f GB/s (%zu samples)\n",
           (double)nslots * (double)sample * 1e-9 / (upload_ms * 1e-3), nslots);
    char extra[256] = "";
    if (step_ms > 0) {
        double rdev = step_ms / (step_ms + dev_ms);
        double rhost =
            step_ms / (step_ms > host_feed_ms ? step_ms : host_feed_ms);
        printf("  with a %.3f ms step: device storage %.3f, host storage "
               "with prefetch %.3f of the device-resident rate\n",
               step_ms, rdev, rhost);
        snprintf(extra, sizeof extra,
                 ", \"step_ms\": %.4f, \"device_fed_ratio\": %.4f, "
                 "\"host_prefetch_fed_ratio\": %.4f",
                 step_ms, rdev, rhost);
    }
    printf("{\"bench\": \"reservoir_feed\", \"batch\": %zu, "
           "\"sample_bytes\": %zu, \"device_gather_ms\": %.4f, "
           "\"host_gather_ms\": %.4f, \"h2d_copy_ms\": %.4f, "
           "\"d2d_floor_ms\": %.4f, \"put_upload_gbs\": %.2f%s}\n",
           B, sample, dev_ms, gather_ms, copy_ms, d2d_ms,
           (double)nslots * (double)sample * 1e-9 / (upload_ms * 1e-3), extra);
    cudaFree(dx);
    cudaFree(dy);
    cudaFree(cx);
    cudaFree(cy);
    cudaFreeHost(hx);
    cudaFreeHost(hy);
    free(out);
    free(info);
    surge_reservoir_destroy(&dev);
    surge_reservoir_destroy(&host);
    return 0;
}
