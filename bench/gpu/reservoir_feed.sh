#!/bin/sh
# bench/gpu/reservoir_feed.sh - the reservoir's part of the GPU check (issue
# 10, "Feeding the GPU from the reservoir"), for bench/gpu/run.sh to call on
# the GPU machine with a CUDA build (the missing shared libraries on
# LD_LIBRARY_PATH, as run.sh sets them up):
#   1. tests/unit/reservoir/test_reservoir_cuda: device batches equal a twin
#      host reservoir's, row for row (small samples, 1000x1000 fields,
#      aligned and unaligned rows, evictions);
#   2. bench-reservoir-feed: per batch of 4096 of the 6-...-4096 model's
#      samples, the device storage's gather, the host gather into pinned
#      memory and its copy to the device, the on-device copy floor, and the
#      put+upload rate; with STEP_MS (the CUDA trainer's step at batch 4096
#      bf16 on a device-resident batch, from bench-trainer-cuda) the fed
#      rate as a share of the device-resident rate (target >= 0.9).
# Prints the bench's table, then exactly one JSON line.
#
# Usage: bench/gpu/reservoir_feed.sh BUILD_DIR   (env: STEP_MS, POOL_MIB,
#        REPS; each step under a timeout)
set -u
build=$(cd "${1:?usage: reservoir_feed.sh BUILD_DIR}" && pwd) || exit 1
test_bin=$build/tests/unit/reservoir/test_reservoir_cuda
bench_bin=$build/bench/reservoir/bench-reservoir-feed
for f in "$test_bin" "$bench_bin"; do
    if [ ! -x "$f" ]; then
        echo "reservoir_feed.sh: $f missing (a --with-cuda build with make check built?)" >&2
        echo '{"reservoir_feed": null, "error": "build incomplete"}'
        exit 1
    fi
done

tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
CMOCKA_MESSAGE_OUTPUT=TAP timeout -k 5 120 "$test_bin" >reservoir_cuda.tap 2>&1
rc=$?
if grep -q '^1\.\.0 # SKIP' reservoir_cuda.tap; then
    test_result=skip
elif [ $rc -eq 0 ] && ! grep -q '^not ok' reservoir_cuda.tap; then
    test_result=pass
else
    test_result=fail
    sed 's/^/# /' reservoir_cuda.tap >&2
fi

set -- --pool-mib "${POOL_MIB:-4096}" --reps "${REPS:-21}"
if [ -n "${STEP_MS:-}" ]; then
    set -- "$@" --step-ms "$STEP_MS"
fi
timeout -k 5 240 "$bench_bin" "$@" >reservoir_feed.out 2>&1
brc=$?
grep -v '^{' reservoir_feed.out
line=$(grep '^{' reservoir_feed.out | tail -1)
if [ $brc -ne 0 ] || [ -z "$line" ]; then
    line=null
fi
echo "{\"test_reservoir_cuda\": \"$test_result\", \"reservoir_feed\": $line}"
[ "$test_result" != fail ] && [ "$line" != null ]
