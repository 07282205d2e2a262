#!/bin/sh
# tests/integration/trainer_dp_cuda.sh - trainer_dp.sh on the CUDA backend
# (gradients summed through pinned host buffers); skips without a CUDA
# build or device.
TRAINER_DP_BACKEND=cuda
export TRAINER_DP_BACKEND
. "$SURGE_SRCDIR/tests/integration/trainer_dp.sh"
