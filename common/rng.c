/* common/rng.c - splitmix64 and xoshiro256** (common/rng.h). */
#include "config.h"

#include "common/rng.h"

void
surge_rng_seed(surge_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) {
        r->s[i] = surge_splitmix64(&x);
    }
}

double
surge_rng_uniform(surge_rng *r)
{
    return (double)(surge_rng_next(r) >> 11) * 0x1.0p-53;
}

uint64_t
surge_rng_below(surge_rng *r, uint64_t n)
{
    /* Rejection keeps every value equally likely. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do {
        x = surge_rng_next(r);
    } while (x >= limit);
    return x % n;
}
