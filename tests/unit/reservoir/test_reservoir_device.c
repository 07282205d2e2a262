/*
 * tests/unit/reservoir/test_reservoir_device.c - the device storage's logic
 * (reservoir/storage_device.c: what is uploaded when, what a device batch
 * gathers) on an emulated device in host memory, so it runs without a GPU.
 * The emulation is as lazy as a real device may be: an upload is only
 * queued, and its bytes are read from the host pool when the next gather
 * runs (the latest moment a DMA could read them), so a stale or missing
 * upload shows as a wrong row. tests/unit/reservoir/test_reservoir_cuda.c
 * runs the same checks on a real device where there is one.
 */
#include "config.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "reservoir/reservoir.h"
#include "reservoir/reservoir_internal.h"
#include "tests/unit/reservoir/emu_device.h"

#define IN_DIM 3
#define OUT_DIM 5
#define SLOT 64 /* (3 + 5) * 4 = 32 bytes, rounded up to 64 */

/* -------------------------------------------------------------- helpers */

/* A sample's content is a function of its id, so every row can be checked
 * for the sample it claims to be. */
static void
fill(uint64_t id, float *in, float *out)
{
    for (int k = 0; k < IN_DIM; k++) {
        in[k] = (float)id + 0.25f * (float)k;
    }
    for (int k = 0; k < OUT_DIM; k++) {
        out[k] = (float)id * 16.0f + (float)k;
    }
}

/* Row i of a batch is sample info[i].step (the tests use step = id). */
static void
check_rows(const float *x, const float *y, const surge_batch_info *info, long n)
{
    for (long i = 0; i < n; i++) {
        float in[IN_DIM], out[OUT_DIM];
        fill(info[i].step, in, out);
        assert_memory_equal(x + i * IN_DIM, in, sizeof in);
        assert_memory_equal(y + i * OUT_DIM, out, sizeof out);
    }
}

static surge_reservoir_config
cfg_for(enum surge_reservoir_policy p, size_t nslots, size_t max_batch)
{
    surge_reservoir_config c;
    surge_reservoir_config_init(&c);
    c.policy = p;
    c.input_dim = IN_DIM;
    c.output_dim = OUT_DIM;
    c.capacity_bytes = nslots * SLOT;
    c.max_batch = max_batch;
    c.seed = 99;
    return c;
}

static surge_reservoir *
make(surge_reservoir_config c, int device)
{
    surge_reservoir *r = NULL;
    char err[256];
    int rc;
    if (device) {
        c.storage = SURGE_RESERVOIR_STORAGE_DEVICE;
        rc = surge_reservoir_create_on_(&r, &c, &surge_test_emu_device, err,
                                        sizeof err);
    } else {
        rc = surge_reservoir_create(&r, &c, err, sizeof err);
    }
    if (rc != 0) {
        print_error("create: %s\n", err);
    }
    assert_int_equal(rc, 0);
    return r;
}

static void
put_id(surge_reservoir *r, uint64_t id)
{
    float in[IN_DIM], out[OUT_DIM];
    fill(id, in, out);
    surge_sample_meta m = {id % 7, id, 0};
    assert_int_equal(surge_reservoir_put(r, in, out, &m, 0), 0);
}

/* ---------------------------------------------------------------- tests */

/* Same config and seed, same calls: a device batch has exactly the rows,
 * the info and the counts of a host batch, for every policy and way of
 * drawing (uniform, balanced, prioritized, the use cap), including the
 * drain after end of reception. */
static void
test_same_batches_as_host(void **state)
{
    (void)state;
    struct {
        enum surge_reservoir_policy p;
        unsigned epochs, max_uses;
        int balance, prio;
    } cases[] = {
        {SURGE_RESERVOIR_FIFO, 1, 0, 0, 0},
        {SURGE_RESERVOIR_FIRO, 2, 0, 1, 0},
        {SURGE_RESERVOIR_FIRO, 1, 0, 0, 1},
        {SURGE_RESERVOIR_RESERVOIR, 1, 3, 0, 0},
        {SURGE_RESERVOIR_RESERVOIR, 1, 0, 1, 0},
        {SURGE_RESERVOIR_RESERVOIR, 1, 0, 0, 1},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        surge_reservoir_config cfg = cfg_for(cases[c].p, 64, 8);
        cfg.epochs = cases[c].epochs;
        cfg.max_uses = cases[c].max_uses;
        cfg.balance_sims = cases[c].balance;
        cfg.prioritized.enabled = cases[c].prio;
        surge_reservoir *h = make(cfg, 0), *d = make(cfg, 1);
        float hx[8 * IN_DIM], hy[8 * OUT_DIM], dx[8 * IN_DIM], dy[8 * OUT_DIM];
        surge_batch_info hi[8], di[8];
        float loss[8];
        uint64_t id = 0;
        for (int round = 0; round < 60; round++) {
            for (int k = 0; k < 5; k++, id++) {
                int a = 0, b = 0;
                float in[IN_DIM], out[OUT_DIM];
                fill(id, in, out);
                surge_sample_meta m = {id % 7, id, 0};
                a = surge_reservoir_put(h, in, out, &m, 0);
                b = surge_reservoir_put(d, in, out, &m, 0);
                assert_int_equal(a, b);
            }
            long nh = surge_reservoir_get_batch(h, 8, hx, hy, hi, 0);
            long nd = surge_reservoir_get_batch_device(d, 8, dx, dy, di, 0);
            assert_int_equal(nh, nd);
            if (nd > 0) {
                assert_memory_equal(hi, di, (size_t)nd * sizeof hi[0]);
                assert_memory_equal(hx, dx, (size_t)nd * IN_DIM * 4);
                assert_memory_equal(hy, dy, (size_t)nd * OUT_DIM * 4);
                check_rows(dx, dy, di, nd);
                if (cases[c].prio) {
                    for (long i = 0; i < nd; i++) {
                        loss[i] = (float)(di[i].step % 5);
                    }
                    assert_int_equal(
                        surge_reservoir_update_priorities(h, hi, loss, nd),
                        surge_reservoir_update_priorities(d, di, loss, nd));
                }
            }
        }
        surge_reservoir_end_reception(h);
        surge_reservoir_end_reception(d);
        for (;;) {
            long nh = surge_reservoir_get_batch(h, 8, hx, hy, hi, 0);
            long nd = surge_reservoir_get_batch_device(d, 8, dx, dy, di, 0);
            assert_int_equal(nh, nd);
            if (nd <= 0) {
                break;
            }
            assert_memory_equal(hi, di, (size_t)nd * sizeof hi[0]);
            check_rows(dx, dy, di, nd);
        }
        surge_reservoir_stats hs, ds;
        surge_reservoir_get_stats(h, &hs);
        surge_reservoir_get_stats(d, &ds);
        assert_int_equal(hs.puts, ds.puts);
        assert_int_equal(hs.gets, ds.gets);
        assert_int_equal(hs.evictions, ds.evictions);
        assert_int_equal(hs.retired, ds.retired);
        assert_int_equal(ds.storage, SURGE_RESERVOIR_STORAGE_DEVICE);
        assert_int_equal(hs.storage, SURGE_RESERVOIR_STORAGE_HOST);
        assert_int_equal(hs.device_uploads, 0);
        /* Every sample stored was uploaded exactly once (none was put
         * into a slot that a host batch had freed meanwhile). */
        assert_int_equal(ds.device_uploads, ds.puts);
        assert_int_equal(ds.device_upload_bytes, ds.puts * 32);
        assert_true(ds.device_gathers > 0);
        assert_int_equal(ds.device_bytes, 64 * SLOT + 8 * 4);
        surge_reservoir_destroy(&h);
        surge_reservoir_destroy(&d);
    }
}

/* Policy reservoir in a small pool: used samples are evicted and their
 * slots refilled again and again; every device row is still the sample
 * its info names (its slot's latest data was uploaded before the gather),
 * and each sample went up once. */
static void
test_evicted_slots_reuploaded(void **state)
{
    (void)state;
    surge_reservoir_config cfg = cfg_for(SURGE_RESERVOIR_RESERVOIR, 16, 4);
    surge_reservoir *d = make(cfg, 1);
    struct surge_test_emu *e = surge_test_emu_last;
    float x[4 * IN_DIM], y[4 * OUT_DIM];
    surge_batch_info info[4];
    uint64_t id = 0;
    for (int round = 0; round < 500; round++) {
        for (int k = 0; k < 3; k++) {
            float in[IN_DIM], out[OUT_DIM];
            fill(id, in, out);
            surge_sample_meta m = {0, id, 0};
            int rc = surge_reservoir_put(d, in, out, &m, 0);
            if (rc == 0) {
                id++;
            } else {
                assert_int_equal(rc, SURGE_ETIMEDOUT);
            }
        }
        long n = surge_reservoir_get_batch_device(d, 4, x, y, info, 0);
        if (n > 0) {
            check_rows(x, y, info, n);
        }
    }
    surge_reservoir_stats st;
    surge_reservoir_get_stats(d, &st);
    assert_true(st.evictions > 100);
    assert_int_equal(st.device_uploads, st.puts);
    uint64_t sum = 0;
    for (size_t s = 0; s < 16; s++) {
        sum += e->ups[s];
    }
    assert_int_equal(sum, st.puts);
    surge_reservoir_destroy(&d);
}

/* Puts alone upload once enough is pending (the producer's batched
 * upload, no consumer needed), in few runs: adjacent slots are merged. */
static void
test_producer_uploads_in_runs(void **state)
{
    (void)state;
    surge_reservoir_config cfg = cfg_for(SURGE_RESERVOIR_FIFO, 10000, 8);
    surge_reservoir *d = make(cfg, 1);
    struct surge_test_emu *e = surge_test_emu_last;
    for (uint64_t id = 0; id < 9000; id++) {
        put_id(d, id);
    }
    surge_reservoir_stats st;
    surge_reservoir_get_stats(d, &st);
    /* Two flushes of FLUSH_SLOTS (4096), one run each. */
    assert_int_equal(st.device_uploads, 8192);
    assert_int_equal(e->runs, 2);
    assert_int_equal(e->gathers, 0);
    float x[8 * IN_DIM], y[8 * OUT_DIM];
    surge_batch_info info[8];
    assert_int_equal(surge_reservoir_get_batch_device(d, 8, x, y, info, 0), 8);
    check_rows(x, y, info, 8);
    surge_reservoir_get_stats(d, &st);
    assert_int_equal(st.device_uploads, 9000);
    assert_int_equal(e->runs, 3);
    surge_reservoir_destroy(&d);
}

static int
buf_write(void *arg, const void *p, size_t n)
{
    FILE *f = arg;
    return fwrite(p, 1, n, f) == n ? 0 : -EIO;
}

static int
buf_read(void *arg, void *p, size_t n)
{
    FILE *f = arg;
    return fread(p, 1, n, f) == n ? 0 : -EIO;
}

/* A checkpoint of a host reservoir resumes on the device storage: the
 * samples restored go up before the first device batch. The checkpoint
 * bytes do not depend on the storage. */
static void
test_load_into_device(void **state)
{
    (void)state;
    surge_reservoir_config cfg = cfg_for(SURGE_RESERVOIR_FIRO, 64, 8);
    cfg.epochs = 3;
    surge_reservoir *h = make(cfg, 0), *d0 = make(cfg, 1);
    for (uint64_t id = 0; id < 40; id++) {
        put_id(h, id);
        put_id(d0, id);
    }
    float x[8 * IN_DIM], y[8 * OUT_DIM];
    surge_batch_info info[8];
    assert_int_equal(surge_reservoir_get_batch(h, 8, x, y, info, 0), 8);
    assert_int_equal(surge_reservoir_get_batch_device(d0, 8, x, y, info, 0), 8);
    FILE *fh = tmpfile(), *fd = tmpfile();
    assert_non_null(fh);
    assert_non_null(fd);
    assert_int_equal(surge_reservoir_save(h, buf_write, fh), 0);
    assert_int_equal(surge_reservoir_save(d0, buf_write, fd), 0);
    long lh = ftell(fh), ld = ftell(fd);
    assert_int_equal(lh, ld);
    char *bh = malloc((size_t)lh), *bd = malloc((size_t)ld);
    assert_non_null(bh);
    assert_non_null(bd);
    rewind(fh);
    rewind(fd);
    assert_int_equal(fread(bh, 1, (size_t)lh, fh), (size_t)lh);
    assert_int_equal(fread(bd, 1, (size_t)ld, fd), (size_t)ld);
    /* Records carry ages (now - arrival), which differ between the two
     * reservoirs; the header (344 bytes: shape, options, counters, random
     * state) must not. */
    assert_true(lh > 344);
    assert_memory_equal(bh, bd, 344);
    free(bh);
    free(bd);

    surge_reservoir *d = make(cfg, 1);
    char err[256];
    rewind(fh);
    assert_int_equal(surge_reservoir_load(d, buf_read, fh, err, sizeof err), 0);
    long total = 0;
    for (;;) {
        long n = surge_reservoir_get_batch_device(d, 8, x, y, info, 0);
        if (n <= 0) {
            break;
        }
        check_rows(x, y, info, n);
        total += n;
    }
    assert_true(total > 0);
    surge_reservoir_stats st;
    surge_reservoir_get_stats(d, &st);
    assert_int_equal(st.device_uploads, 40);
    fclose(fh);
    fclose(fd);
    surge_reservoir_destroy(&h);
    surge_reservoir_destroy(&d0);
    surge_reservoir_destroy(&d);
}

/* The errors: too little device memory (create fails, err says so),
 * device batches on a host reservoir, a failing gather (rows counted,
 * error text kept), bad arguments, the names. */
static void
test_errors(void **state)
{
    (void)state;
    surge_reservoir_config cfg = cfg_for(SURGE_RESERVOIR_RESERVOIR, 64, 8);
    cfg.storage = SURGE_RESERVOIR_STORAGE_DEVICE;
    surge_reservoir *r = NULL;
    char err[256] = "";
    surge_test_emu_free_bytes = 1000;
    assert_int_equal(surge_reservoir_create_on_(
                         &r, &cfg, &surge_test_emu_device, err, sizeof err),
                     SURGE_ECONFIG);
    assert_null(r);
    assert_non_null(strstr(err, "reservoir.capacity_bytes"));
    surge_test_emu_free_bytes = SIZE_MAX;

#ifndef HAVE_CUDA
    assert_int_equal(surge_reservoir_config_check(&cfg, err, sizeof err),
                     SURGE_ECONFIG);
    assert_non_null(strstr(err, "reservoir.storage"));
    assert_int_equal(surge_reservoir_create(&r, &cfg, err, sizeof err),
                     SURGE_ECONFIG);
    assert_int_equal(surge_reservoir_device_available(), 0);
#endif
    cfg.device = -1;
    assert_int_equal(surge_reservoir_create_on_(
                         &r, &cfg, &surge_test_emu_device, err, sizeof err),
                     SURGE_ECONFIG);
    assert_non_null(strstr(err, "reservoir.device"));
    cfg.device = 0;
    cfg.storage = (enum surge_reservoir_storage)7;
    assert_int_equal(surge_reservoir_create_on_(
                         &r, &cfg, &surge_test_emu_device, err, sizeof err),
                     SURGE_ECONFIG);
    cfg.storage = SURGE_RESERVOIR_STORAGE_HOST;

    float x[8 * IN_DIM], y[8 * OUT_DIM];
    surge_batch_info info[8];
    surge_reservoir *h = make(cfg, 0);
    put_id(h, 1);
    assert_int_equal(surge_reservoir_get_batch_device(h, 8, x, y, info, 0),
                     SURGE_ESTATE);
    assert_string_equal(surge_reservoir_device_error(h), "");
    surge_reservoir_destroy(&h);

    surge_reservoir *d = make(cfg, 1);
    for (uint64_t id = 0; id < 20; id++) {
        put_id(d, id);
    }
    assert_int_equal(surge_reservoir_get_batch_device(d, 9, x, y, info, 0),
                     -EINVAL);
    assert_int_equal(surge_reservoir_get_batch_device(d, 8, NULL, y, info, 0),
                     -EINVAL);
    surge_test_emu_last->fail_gather = 1;
    assert_int_equal(surge_reservoir_get_batch_device(d, 8, x, y, info, 0),
                     SURGE_EINTERNAL);
    assert_non_null(strstr(surge_reservoir_device_error(d), "gather_rows"));
    surge_reservoir_stats st;
    surge_reservoir_get_stats(d, &st);
    assert_int_equal(st.gets, 8); /* served, counted */
    assert_int_equal(st.device_gathers, 0);
    assert_int_equal(surge_reservoir_get_batch_device(d, 8, x, y, info, 0), 8);
    check_rows(x, y, info, 8);
    /* Host batches keep working on the device storage. */
    assert_int_equal(surge_reservoir_get_batch(d, 8, x, y, info, 0), 8);
    check_rows(x, y, info, 8);
    surge_reservoir_destroy(&d);

    enum surge_reservoir_storage s;
    assert_int_equal(surge_reservoir_storage_parse("device", &s), 0);
    assert_int_equal(s, SURGE_RESERVOIR_STORAGE_DEVICE);
    assert_int_equal(surge_reservoir_storage_parse("host", &s), 0);
    assert_int_equal(s, SURGE_RESERVOIR_STORAGE_HOST);
    assert_int_equal(surge_reservoir_storage_parse("gpu", &s), -EINVAL);
    assert_string_equal(surge_reservoir_storage_name(s), "host");
    assert_string_equal(
        surge_reservoir_storage_name(SURGE_RESERVOIR_STORAGE_DEVICE), "device");
}

/* Async device batches: the rows stay pinned until the next device batch
 * or device_release (a full FIFO cannot take a put before), which waits
 * for the gather. */
static void
test_async_holds_rows(void **state)
{
    (void)state;
    surge_reservoir_config cfg = cfg_for(SURGE_RESERVOIR_FIFO, 16, 4);
    surge_reservoir *d = make(cfg, 1);
    struct surge_test_emu *e = surge_test_emu_last;
    for (uint64_t id = 0; id < 16; id++) {
        put_id(d, id);
    }
    float x[4 * IN_DIM], y[4 * OUT_DIM];
    surge_batch_info info[4];
    int fake_stream;
    assert_int_equal(
        surge_reservoir_get_batch_device_async(d, 4, x, y, info, 0, NULL),
        -EINVAL);
    assert_int_equal(surge_reservoir_get_batch_device_async(d, 4, x, y, info, 0,
                                                            &fake_stream),
                     4);
    check_rows(x, y, info, 4);
    float in[IN_DIM], out[OUT_DIM];
    fill(99, in, out);
    /* Used up but still pinned: no room yet. */
    assert_int_equal(surge_reservoir_put(d, in, out, NULL, 0), SURGE_ETIMEDOUT);
    /* The next async batch releases the last one's rows first. */
    assert_int_equal(surge_reservoir_get_batch_device_async(d, 4, x, y, info, 0,
                                                            &fake_stream),
                     4);
    assert_int_equal(info[0].step, 4);
    assert_int_equal(e->waits, 1);
    assert_int_equal(surge_reservoir_put(d, in, out, NULL, 0), 0);
    assert_int_equal(surge_reservoir_device_release(d), 0);
    assert_int_equal(e->waits, 2);
    assert_int_equal(surge_reservoir_device_release(d), 0); /* none held */
    assert_int_equal(e->waits, 2);
    surge_reservoir_stats st;
    surge_reservoir_get_stats(d, &st);
    assert_int_equal(st.occupancy_samples, 16 - 8 + 1);
    surge_reservoir_destroy(&d);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_batches_as_host),
        cmocka_unit_test(test_evicted_slots_reuploaded),
        cmocka_unit_test(test_producer_uploads_in_runs),
        cmocka_unit_test(test_load_into_device),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_async_holds_rows),
    };
    return cmocka_run_group_tests_name("reservoir_device", tests, NULL, NULL);
}
