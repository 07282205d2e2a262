/*
 * server/writer.c - the "writer" consumer: what an offline pipeline does
 * with the same stream. Every sample taken from the training store is
 * appended to <output_dir>/samples.f32 (rows of nin + nout float32: the
 * input, then the output) and described in <output_dir>/samples.json
 * ({"nin", "nout", "rows", "bytes"}, written at the end). The file is
 * fsync'ed before the description is written, so what it counts is on
 * disk. Use it with --policy fifo (each sample served once, oldest first):
 * bench/online_offline trains from these files to compare offline
 * training with online training.
 *
 * Threads: create/destroy on the main thread, run on the consumer thread,
 * stats on the I/O thread (atomics).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <surge/error.h>

#include "common/log.h"
#include "common/util.h"
#include "server/consumer.h"

#define COMPONENT "writer"

struct writer {
    char dir[SURGE_SERVER_MAX_PATH]; /* output folder */
    uint32_t batch;                  /* rows per batch */
    _Atomic uint64_t batches;        /* written by the consumer thread */
    _Atomic uint64_t samples;
};

static int
writer_create(void **state, const surge_server_options *o)
{
    struct writer *w = calloc(1, sizeof *w);
    if (w == NULL) {
        return -ENOMEM;
    }
    snprintf(w->dir, sizeof w->dir, "%s", o->output_dir);
    w->batch = o->batch_size;
    *state = w;
    return 0;
}

static int
writer_run(void *state, const surge_consumer_ctx *ctx)
{
    struct writer *w = state;
    uint32_t nin;
    uint64_t nout;
    int rc = surge_store_await_shape(ctx->train, &nin, &nout);
    if (rc == SURGE_ECLOSED) {
        return 0;
    }
    char path[SURGE_SERVER_MAX_PATH + 32];
    snprintf(path, sizeof path, "%s/samples.f32", w->dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = -errno;
        SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "%s: %s", path, strerror(errno));
        return rc;
    }
    size_t row = ((size_t)nin + (size_t)nout) * sizeof(float);
    float *in = malloc((size_t)w->batch * nin * sizeof(float));
    float *out = malloc((size_t)w->batch * nout * sizeof(float));
    float *rows = malloc((size_t)w->batch * row);
    if (in == NULL || out == NULL || rows == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    uint64_t nrows = 0;
    for (;;) {
        rc = surge_store_get_batch(ctx->train, w->batch, in, out, NULL, NULL,
                                   500);
        if (rc == SURGE_ETIMEDOUT) {
            continue;
        }
        if (rc < 0) {
            break;
        }
        /* Interleave (input, output) per row: one record per sample. */
        for (int i = 0; i < rc; i++) {
            float *r = (float *)((char *)rows + (size_t)i * row);
            memcpy(r, in + (size_t)i * nin, (size_t)nin * sizeof(float));
            memcpy(r + nin, out + (size_t)i * nout,
                   (size_t)nout * sizeof(float));
        }
        int wr = surge_write_all(fd, rows, (size_t)rc * row);
        if (wr < 0) {
            SURGE_LOG(SURGE_LOG_ERROR, COMPONENT, "%s: %s", path,
                      surge_strerror(wr));
            rc = wr;
            goto out;
        }
        nrows += (uint64_t)rc;
        atomic_fetch_add(&w->batches, 1);
        atomic_store(&w->samples, nrows);
    }
    rc = rc == SURGE_ECLOSED ? 0 : rc;
    if (rc == 0 && fsync(fd) != 0) {
        rc = -errno;
    }
    if (rc == 0) {
        char meta[256], mpath[SURGE_SERVER_MAX_PATH + 32];
        int n = snprintf(meta, sizeof meta,
                         "{\"nin\": %u, \"nout\": %" PRIu64
                         ", \"rows\": %" PRIu64 ", \"bytes\": %" PRIu64 "}\n",
                         nin, nout, nrows, nrows * (uint64_t)row);
        snprintf(mpath, sizeof mpath, "%s/samples.json", w->dir);
        rc = surge_write_file_atomic(mpath, meta, (size_t)n);
    }
    SURGE_LOG(SURGE_LOG_INFO, COMPONENT,
              "%" PRIu64 " samples (%" PRIu64 " bytes) written to %s", nrows,
              nrows * (uint64_t)row, path);
out:
    close(fd);
    free(in);
    free(out);
    free(rows);
    return rc;
}

static void
writer_stats(void *state, surge_consumer_stats *out)
{
    struct writer *w = state;
    out->batches = atomic_load(&w->batches);
    out->samples = atomic_load(&w->samples);
}

static void
writer_destroy(void *state)
{
    free(state);
}

const surge_consumer_ops surge_consumer_writer = {
    .name = "writer",
    .create = writer_create,
    .run = writer_run,
    .stats = writer_stats,
    .destroy = writer_destroy,
};
