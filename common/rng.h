/*
 * common/rng.h - the small seeded generators every surge part shares:
 * splitmix64 (Steele, Lea and Flood) and xoshiro256** (Blackman and Vigna),
 * seeded through splitmix64. The same seed gives the same stream on every
 * machine: the reservoir's sampling, the launcher's designs of experiments
 * and the trainer's weight initialisation depend on that.
 *
 * Thread-safety: a state belongs to one thread at a time (no locking).
 */
#ifndef SURGE_COMMON_RNG_H
#define SURGE_COMMON_RNG_H

#include <stdint.h>

/* surge_mix64 - the splitmix64 finalizer: a bijective 64-bit mix, every
 * input bit affecting every output bit (hashes, checksums). Inline: the
 * checksum calls it once per value, the reservoir once per lookup. */
static inline uint64_t
surge_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* surge_splitmix64 - advance *state by the golden-ratio increment and
 * return the mixed value: a full-period 64-bit generator, and a good
 * hash of a counter or an id. */
static inline uint64_t
surge_splitmix64(uint64_t *state)
{
    return surge_mix64(*state += UINT64_C(0x9e3779b97f4a7c15));
}

/* A xoshiro256** state: 256 bits, never all zero once seeded. */
typedef struct surge_rng {
    uint64_t s[4];
} surge_rng;

/* surge_rng_seed - fill r from seed: four successive surge_splitmix64
 * values of a state starting at seed (any seed, 0 included, is fine). */
void surge_rng_seed(surge_rng *r, uint64_t seed);
/* surge_rng_next - the next 64 random bits. Inline: the reservoir draws
 * on its hot path. */
static inline uint64_t
surge_rng_next(surge_rng *r)
{
    uint64_t *s = r->s;
    uint64_t x = s[1] * 5;
    uint64_t result = ((x << 7) | (x >> 57)) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = (s[3] << 45) | (s[3] >> 19);
    return result;
}
/* surge_rng_uniform - a double in [0, 1) with 53 random bits. */
double surge_rng_uniform(surge_rng *r);
/* surge_rng_below - an integer in [0, n) without modulo bias (rejection);
 * n > 0. */
uint64_t surge_rng_below(surge_rng *r, uint64_t n);

#endif
