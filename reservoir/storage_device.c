/*
 * reservoir/storage_device.c - the device storage: the host pool (written
 * by puts, read by host batches and checkpoints, as for the host storage)
 * plus a copy of it on a device, through struct
 * surge_reservoir_device_ops (CUDA: storage_cuda.cu).
 *
 * DESIGN. A commit lists its slot in pend[] (under mu, O(1)). The pending
 * slots go up in batches: by the producer once enough is pending
 * (FLUSH_BYTES or FLUSH_SLOTS), without waiting if a consumer holds the
 * device, and by every device batch before its gather, which so always
 * sees each row's latest data. An upload takes the pending list under mu,
 * sorts it and merges adjacent slots into runs (puts fill the pool from
 * slot 0 upwards, so runs are long), and enqueues one copy per run on the
 * device's upload stream; the gather waits for those copies on the device.
 * Each sample is uploaded once, unless it was evicted and its slot filled
 * again (then the new sample is). Why a pending slot's host bytes cannot
 * change before its copy lands: a slot is rewritten only after it left,
 * that is after it was served, and a device batch serving it uploads it
 * and waits for the copy first; a host batch (get_batch) may serve it
 * without that, but then the new sample's own upload is enqueued after
 * the old one on the same stream, before any gather that can see it.
 *
 * Locks: dev_mu (the device: its context, flush[], run_*[], dev_err) is
 * taken first and mu only inside it, briefly; no device call is made with
 * mu held.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "reservoir/reservoir_impl.h"

/* The producer uploads once this much is pending: big enough that the
 * per-copy overhead (a few microseconds) is noise, small enough that a
 * device batch rarely finds much left to upload. */
#define FLUSH_BYTES ((size_t)16 << 20)
#define FLUSH_SLOTS 4096u
#define STACK_ROWS 512

int
res_dev_create(surge_reservoir *r, const struct surge_reservoir_device_ops *dev,
               char *err, size_t errlen)
{
    size_t n = r->nslots;
    r->pend = surge_malloc(n * sizeof(uint32_t));
    r->flush = surge_malloc(n * sizeof(uint32_t));
    r->run_off = surge_malloc(n * sizeof(size_t));
    r->run_len = surge_malloc(n * sizeof(size_t));
    r->held = surge_malloc(r->cfg.max_batch * sizeof(uint32_t));
    r->nheld = 0;
    if (r->pend == NULL || r->flush == NULL || r->run_off == NULL ||
        r->run_len == NULL || r->held == NULL) {
        surge_set_err(err, errlen,
                      "reservoir: out of memory for the device storage's "
                      "lists (%zu slots)",
                      n);
        return -ENOMEM;
    }
    if (pthread_mutex_init(&r->dev_mu, NULL) != 0) {
        surge_set_err(err, errlen, "reservoir: cannot create a mutex");
        return -ENOMEM;
    }
    int rc = dev->create(&r->dev_ctx, r->cfg.device, r->pool, r->pool_mapped,
                         r->cfg.max_batch, err, errlen);
    if (rc != 0) {
        pthread_mutex_destroy(&r->dev_mu);
        return rc;
    }
    r->dev = dev;
    r->npend = 0;
    r->pend_all = false;
    r->dev_err[0] = '\0';
    return 0;
}

void
res_dev_destroy(surge_reservoir *r)
{
    if (r->dev != NULL) {
        r->dev->destroy(r->dev_ctx);
        pthread_mutex_destroy(&r->dev_mu);
        r->dev = NULL;
        r->dev_ctx = NULL;
    }
    free(r->held);
    r->held = NULL;
    free(r->run_len);
    free(r->run_off);
    free(r->flush);
    free(r->pend);
    r->run_len = r->run_off = NULL;
    r->flush = r->pend = NULL;
}

bool
res_dev_committed(surge_reservoir *r, uint32_t s)
{
    if (!r->pend_all) {
        if (r->npend < r->nslots) {
            r->pend[r->npend++] = s;
        } else {
            /* Only when host batches keep slots turning over without a
             * device batch: upload everything present next time. */
            r->pend_all = true;
        }
    }
    return r->pend_all || r->npend >= FLUSH_SLOTS ||
           (size_t)r->npend * r->slot_bytes >= FLUSH_BYTES;
}

static int
cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Upload what is pending. dev_mu held, mu not. */
static int
flush_locked(surge_reservoir *r)
{
    uint32_t n = 0;
    pthread_mutex_lock(&r->mu);
    if (r->pend_all) {
        /* RETIRED too: a consumer may be about to gather it. */
        for (uint32_t s = 0; s < r->nslots; s++) {
            uint8_t st = r->slots[s].state;
            if (st == SLOT_PRESENT || st == SLOT_RETIRED) {
                r->flush[n++] = s;
            }
        }
    } else {
        n = r->npend;
        memcpy(r->flush, r->pend, (size_t)n * sizeof(uint32_t));
    }
    r->npend = 0;
    r->pend_all = false;
    pthread_mutex_unlock(&r->mu);
    if (n == 0) {
        return 0;
    }

    qsort(r->flush, n, sizeof(uint32_t), cmp_u32);
    size_t nruns = 0, slots = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t s = r->flush[i];
        if (i > 0 && s == r->flush[i - 1]) {
            continue; /* listed twice: refilled before this upload */
        }
        size_t off = (size_t)s * r->slot_bytes;
        if (nruns > 0 && r->run_off[nruns - 1] + r->run_len[nruns - 1] == off) {
            r->run_len[nruns - 1] += r->slot_bytes;
        } else {
            r->run_off[nruns] = off;
            r->run_len[nruns] = r->slot_bytes;
            nruns++;
        }
        slots++;
    }
    int rc = r->dev->upload(r->dev_ctx, r->run_off, r->run_len, nruns,
                            r->dev_err, sizeof r->dev_err);
    pthread_mutex_lock(&r->mu);
    if (rc == 0) {
        r->dev_uploads += slots;
        r->dev_upload_bytes += slots * r->sample_bytes;
    } else {
        /* Not uploaded: try them all again next time. */
        r->pend_all = true;
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

void
res_dev_flush_try(surge_reservoir *r)
{
    /* A consumer holding the device uploads what is pending itself before
     * its gather: the producer need not wait for it. */
    if (pthread_mutex_trylock(&r->dev_mu) != 0) {
        return;
    }
    (void)flush_locked(r);
    pthread_mutex_unlock(&r->dev_mu);
}

/* Release the rows of the last async device batch once its gather is
 * complete. dev_mu held (mu is taken inside, as dev_mu -> mu allows). */
static int
release_held_locked(surge_reservoir *r)
{
    if (r->nheld == 0) {
        return 0;
    }
    int rc = r->dev->wait(r->dev_ctx, r->dev_err, sizeof r->dev_err);
    res_release_rows(r, r->nheld, r->held);
    r->nheld = 0;
    return rc;
}

int
surge_reservoir_device_release(surge_reservoir *r)
{
    if (r->dev == NULL) {
        return 0;
    }
    pthread_mutex_lock(&r->dev_mu);
    int rc = release_held_locked(r);
    pthread_mutex_unlock(&r->dev_mu);
    return rc == 0 ? 0 : SURGE_EINTERNAL;
}

/* A device batch: synchronous (stream NULL) or queued on stream. */
static long
batch_device(surge_reservoir *r, size_t B, float *d_inputs, float *d_outputs,
             surge_batch_info *info, int timeout_ms, void *stream)
{
    if (r->dev == NULL) {
        return SURGE_ESTATE;
    }
    if (B == 0 || B > r->cfg.max_batch ||
        (d_inputs == NULL && r->in_bytes > 0) ||
        (d_outputs == NULL && r->out_bytes > 0)) {
        return -EINVAL;
    }
    uint32_t stack_rows[STACK_ROWS];
    uint32_t *rows = stack_rows;
    if (B > STACK_ROWS) {
        rows = surge_malloc(B * sizeof(uint32_t));
        if (rows == NULL) {
            return -ENOMEM;
        }
    }
    long got = res_take_rows(r, B, rows, info, timeout_ms);
    if (got > 0) {
        size_t n = (size_t)got;
        pthread_mutex_lock(&r->dev_mu);
        /* The last async batch's rows: its gather was queued before this
         * one, so it is complete or nearly. */
        int rc = release_held_locked(r);
        if (rc == 0) {
            rc = flush_locked(r);
        }
        if (rc == 0) {
            rc = r->dev->gather(r->dev_ctx, rows, n, r->slot_bytes, r->in_bytes,
                                r->out_bytes, d_inputs, d_outputs, stream,
                                r->dev_err, sizeof r->dev_err);
        }
        int hold = rc == 0 && stream != NULL;
        if (hold) {
            /* Pinned until the gather is complete (the next call). */
            memcpy(r->held, rows, n * sizeof(uint32_t));
            r->nheld = n;
        }
        pthread_mutex_unlock(&r->dev_mu);
        pthread_mutex_lock(&r->mu);
        r->dev_gathers += rc == 0;
        pthread_mutex_unlock(&r->mu);
        if (!hold) {
            res_release_rows(r, n, rows);
        }
        if (rc != 0) {
            got = SURGE_EINTERNAL;
        }
    }
    if (rows != stack_rows) {
        free(rows);
    }
    return got;
}

long
surge_reservoir_get_batch_device(surge_reservoir *r, size_t B, float *d_inputs,
                                 float *d_outputs, surge_batch_info *info,
                                 int timeout_ms)
{
    return batch_device(r, B, d_inputs, d_outputs, info, timeout_ms, NULL);
}

long
surge_reservoir_get_batch_device_async(surge_reservoir *r, size_t B,
                                       float *d_inputs, float *d_outputs,
                                       surge_batch_info *info, int timeout_ms,
                                       void *stream)
{
    if (stream == NULL) {
        return -EINVAL;
    }
    return batch_device(r, B, d_inputs, d_outputs, info, timeout_ms, stream);
}

const char *
surge_reservoir_device_error(surge_reservoir *r)
{
    if (r->dev == NULL) {
        return "";
    }
    return r->dev_err;
}

#ifndef HAVE_CUDA
int
surge_reservoir_device_available(void)
{
    return 0;
}
#endif
