/*
 * reservoir/reservoir_internal.h - for the reservoir's own benchmark only
 * (bench/reservoir): a look at the pool, so that the bare memcpy baseline
 * gathers the very same rows from the very same memory as get_batch.
 * Nothing else may include it: reading the pool without pinning races with
 * puts that overwrite slots.
 */
#ifndef SURGE_RESERVOIR_INTERNAL_H
#define SURGE_RESERVOIR_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "reservoir/reservoir.h"

/* surge_reservoir_pool_ - the pool's first byte; slot s starts at
 * pool + s * *slot_bytes with its input (input_dim floats) followed by its
 * output (output_dim floats). Only safe while no put runs. */
const uint8_t *surge_reservoir_pool_(const surge_reservoir *r,
                                     size_t *slot_bytes);

#endif /* SURGE_RESERVOIR_INTERNAL_H */
