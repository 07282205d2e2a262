/*
 * tests/unit/reservoir/emu_device.h - an emulated device for the device
 * storage (struct surge_reservoir_device_ops) in host memory, for tests
 * without a GPU. It is as lazy as a real device may be: an upload is only
 * queued, and its bytes are read from the host pool when the next gather
 * runs (the latest moment a DMA could read them), so a stale or missing
 * upload shows as a wrong row. "Device pointers" are host memory. Failures
 * of the emulation itself are cmocka assertions.
 */
#ifndef SURGE_TEST_EMU_DEVICE_H
#define SURGE_TEST_EMU_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#include "reservoir/reservoir_internal.h"

struct surge_test_emu {
    uint8_t *host;   /* the host pool */
    uint8_t *dev;    /* the "device" copy */
    size_t bytes;    /* of each */
    size_t max_rows; /* gather capacity */
    size_t *q_off;   /* queued upload runs, not applied yet */
    size_t *q_len;
    size_t nq, q_cap;
    uint64_t runs;    /* upload runs enqueued, all time */
    uint64_t gathers; /* gathers run */
    uint64_t *ups;    /* per slot: times uploaded */
    uint64_t waits;   /* waits for an async gather */
    int fail_gather;  /* next gather fails */
};

/* The ops; create fails with SURGE_ECONFIG ("reservoir.capacity_bytes: ...")
 * when the pool is larger than surge_test_emu_free_bytes (default: no
 * limit). surge_test_emu_last is the context of the last create. */
extern const struct surge_reservoir_device_ops surge_test_emu_device;
extern size_t surge_test_emu_free_bytes;
extern struct surge_test_emu *surge_test_emu_last;

#endif /* SURGE_TEST_EMU_DEVICE_H */
