/*
 * tests/unit/reservoir/test_reservoir_cuda.c - the device storage on a real
 * CUDA device: device batches equal the host batches of a twin host
 * reservoir (same config and seed), row for row, for small samples and for
 * 1000x1000 fields, with the input part 16-byte aligned or not (the gather
 * kernel's two copy widths), through evictions. Without a device it prints
 * a TAP skip and passes (tests/unit/reservoir/test_reservoir_device.c
 * checks the same logic on an emulated device everywhere).
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
#include <cuda_runtime_api.h>

#include "reservoir/reservoir.h"

/* One run: nin inputs, nout outputs, nslots slots, batches of B; rounds of
 * `puts` puts then one batch on each reservoir. */
static void
twin_run(size_t nin, size_t nout, size_t nslots, size_t B, int rounds, int puts)
{
    surge_reservoir_config c;
    surge_reservoir_config_init(&c);
    c.policy = SURGE_RESERVOIR_RESERVOIR;
    c.input_dim = nin;
    c.output_dim = nout;
    size_t slot = ((nin + nout) * 4 + 63) / 64 * 64;
    c.capacity_bytes = nslots * slot;
    c.max_batch = B;
    c.seed = 5;
    char err[512];
    surge_reservoir *h = NULL, *d = NULL;
    assert_int_equal(surge_reservoir_create(&h, &c, err, sizeof err), 0);
    c.storage = SURGE_RESERVOIR_STORAGE_DEVICE;
    int rc = surge_reservoir_create(&d, &c, err, sizeof err);
    if (rc != 0) {
        print_error("create: %s\n", err);
    }
    assert_int_equal(rc, 0);

    float *in = malloc(nin * 4), *out = malloc(nout * 4);
    float *hx = malloc(B * nin * 4), *hy = malloc(B * nout * 4);
    float *gx = malloc(B * nin * 4), *gy = malloc(B * nout * 4);
    surge_batch_info *hi = calloc(B, sizeof *hi), *di = calloc(B, sizeof *di);
    float *dx = NULL, *dy = NULL;
    assert_int_equal(cudaMalloc((void **)&dx, B * nin * 4), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&dy, B * nout * 4), cudaSuccess);
    assert_non_null(in);
    assert_non_null(out);
    assert_non_null(hx);
    assert_non_null(hy);
    assert_non_null(gx);
    assert_non_null(gy);
    uint64_t id = 0;
    for (int round = 0; round < rounds; round++) {
        for (int k = 0; k < puts; k++) {
            for (size_t j = 0; j < nin; j++) {
                in[j] = (float)id + (float)j * 0.5f;
            }
            for (size_t j = 0; j < nout; j++) {
                out[j] = (float)id * 3.0f - (float)j;
            }
            surge_sample_meta m = {id % 3, id, 0};
            int a = surge_reservoir_put(h, in, out, &m, 0);
            int b = surge_reservoir_put(d, in, out, &m, 0);
            assert_int_equal(a, b);
            id += a == 0;
        }
        long nh = surge_reservoir_get_batch(h, B, hx, hy, hi, 0);
        long nd = surge_reservoir_get_batch_device(d, B, dx, dy, di, 0);
        if (nd == SURGE_EINTERNAL) {
            print_error("device: %s\n", surge_reservoir_device_error(d));
        }
        assert_int_equal(nh, nd);
        if (nd <= 0) {
            continue;
        }
        assert_int_equal(
            cudaMemcpy(gx, dx, (size_t)nd * nin * 4, cudaMemcpyDeviceToHost),
            cudaSuccess);
        assert_int_equal(
            cudaMemcpy(gy, dy, (size_t)nd * nout * 4, cudaMemcpyDeviceToHost),
            cudaSuccess);
        assert_memory_equal(hi, di, (size_t)nd * sizeof *hi);
        assert_memory_equal(hx, gx, (size_t)nd * nin * 4);
        assert_memory_equal(hy, gy, (size_t)nd * nout * 4);
    }
    surge_reservoir_stats st;
    surge_reservoir_get_stats(d, &st);
    assert_int_equal(st.device_uploads, st.puts);
    print_message("# %zu+%zu floats, %zu slots, B %zu: puts %llu, evictions "
                  "%llu, device batches %llu\n",
                  nin, nout, nslots, B, (unsigned long long)st.puts,
                  (unsigned long long)st.evictions,
                  (unsigned long long)st.device_gathers);
    cudaFree(dx);
    cudaFree(dy);
    free(in);
    free(out);
    free(hx);
    free(hy);
    free(gx);
    free(gy);
    free(hi);
    free(di);
    surge_reservoir_destroy(&h);
    surge_reservoir_destroy(&d);
}

static void
test_small_samples(void **state)
{
    (void)state;
    twin_run(6, 4096, 2048, 256, 60, 40); /* output part misaligned */
    twin_run(4, 4096, 2048, 256, 60, 40); /* both parts 16-byte aligned */
    twin_run(3, 5, 64, 16, 400, 3);       /* tiny, many evictions */
}

static void
test_big_fields(void **state)
{
    (void)state;
    twin_run(4, 1000 * 1000, 48, 8, 20, 4); /* 4 MB samples */
}

int
main(void)
{
    if (!surge_reservoir_device_available()) {
        printf("1..0 # SKIP no CUDA device\n");
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_samples),
        cmocka_unit_test(test_big_fields),
    };
    return cmocka_run_group_tests_name("reservoir_cuda", tests, NULL, NULL);
}
