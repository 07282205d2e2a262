/*
 * common/checksum.c - the order-independent sample checksum of
 * surge/client.h: a sum of splitmix64-mixed (position, bits) keys, so that
 * the slices of all ranks and fields add up to the assembled sample's.
 */
#include "config.h"

#include <string.h>

#include <surge/client.h>

#include "common/rng.h"

static inline uint64_t
key(uint64_t position, float value)
{
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    return surge_mix64((position << 32) + bits);
}

uint64_t
surge_checksum_f32(const float *v, uint64_t position, uint64_t count)
{
    uint64_t sum = 0;
    for (uint64_t i = 0; i < count; i++) {
        sum += key(position + i, v[i]);
    }
    return sum;
}

uint64_t
surge_checksum_f64(const double *v, uint64_t position, uint64_t count)
{
    uint64_t sum = 0;
    for (uint64_t i = 0; i < count; i++) {
        sum += key(position + i, (float)v[i]);
    }
    return sum;
}
