/*
 * tests/unit/reservoir/emu_device.c - the emulated device (emu_device.h).
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tests/unit/reservoir/emu_device.h"

size_t surge_test_emu_free_bytes = SIZE_MAX;
struct surge_test_emu *surge_test_emu_last;

static int
emu_create(void **ctx, int device, uint8_t *host_pool, size_t pool_bytes,
           size_t max_rows, char *err, size_t errlen)
{
    (void)device;
    if (pool_bytes > surge_test_emu_free_bytes) {
        snprintf(err, errlen,
                 "reservoir.capacity_bytes: the device storage needs %zu "
                 "bytes, the device has %zu free",
                 pool_bytes, surge_test_emu_free_bytes);
        return SURGE_ECONFIG;
    }
    struct surge_test_emu *e = calloc(1, sizeof *e);
    assert_non_null(e);
    e->host = host_pool;
    e->bytes = pool_bytes;
    e->max_rows = max_rows;
    e->dev = malloc(pool_bytes);
    e->ups = calloc(pool_bytes / 64, sizeof *e->ups);
    assert_non_null(e->dev);
    assert_non_null(e->ups);
    /* Garbage until uploaded, as cudaMalloc'd memory is. */
    memset(e->dev, 0xa5, pool_bytes);
    surge_test_emu_last = e;
    *ctx = e;
    return 0;
}

static void
emu_destroy(void *ctx)
{
    struct surge_test_emu *e = ctx;
    free(e->dev);
    free(e->ups);
    free(e->q_off);
    free(e->q_len);
    free(e);
}

static int
emu_upload(void *ctx, const size_t *off, const size_t *len, size_t nruns,
           char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    struct surge_test_emu *e = ctx;
    if (e->nq + nruns > e->q_cap) {
        e->q_cap = (e->nq + nruns) * 2;
        e->q_off = realloc(e->q_off, e->q_cap * sizeof *e->q_off);
        e->q_len = realloc(e->q_len, e->q_cap * sizeof *e->q_len);
        assert_non_null(e->q_off);
        assert_non_null(e->q_len);
    }
    for (size_t k = 0; k < nruns; k++) {
        assert_true(off[k] % 64 == 0 && len[k] % 64 == 0);
        assert_true(off[k] + len[k] <= e->bytes);
        e->q_off[e->nq] = off[k];
        e->q_len[e->nq] = len[k];
        e->nq++;
        for (size_t s = off[k] / 64; s < (off[k] + len[k]) / 64; s++) {
            e->ups[s]++;
        }
    }
    e->runs += nruns;
    return 0;
}

static int
emu_gather(void *ctx, const uint32_t *rows, size_t n, size_t slot_bytes,
           size_t in_bytes, size_t out_bytes, void *d_in, void *d_out,
           void *stream, char *err, size_t errlen)
{
    struct surge_test_emu *e = ctx;
    (void)stream; /* the copy is done when gather returns either way */
    assert_true(n <= e->max_rows);
    /* The queued copies land now. */
    for (size_t k = 0; k < e->nq; k++) {
        memcpy(e->dev + e->q_off[k], e->host + e->q_off[k], e->q_len[k]);
    }
    e->nq = 0;
    if (e->fail_gather) {
        e->fail_gather = 0;
        snprintf(err, errlen, "gather_rows failed (emulated): launch error");
        return SURGE_EINTERNAL;
    }
    for (size_t i = 0; i < n; i++) {
        const uint8_t *src = e->dev + (size_t)rows[i] * slot_bytes;
        memcpy((uint8_t *)d_in + i * in_bytes, src, in_bytes);
        memcpy((uint8_t *)d_out + i * out_bytes, src + in_bytes, out_bytes);
    }
    e->gathers++;
    return 0;
}

static int
emu_wait(void *ctx, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    struct surge_test_emu *e = ctx;
    e->waits++;
    return 0;
}

const struct surge_reservoir_device_ops surge_test_emu_device = {
    "emulated", emu_create, emu_destroy, emu_upload, emu_gather, emu_wait,
};
