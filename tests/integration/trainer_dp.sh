#!/bin/sh
# tests/integration/trainer_dp.sh - data-parallel training at the trainer
# level: trainer_dp_equiv under mpirun -np 2 (2 ranks with B/2 rows each
# take the step of 1 trainer with B rows, within a stated tolerance; zero-
# row batches; replicas bit-identical; merged output statistics).
# With TRAINER_DP_BACKEND=cuda (trainer_dp_cuda.sh) the same on the GPU,
# through host-staged buffers; skipped without a CUDA build or device.
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"
PROG="$SURGE_BUILDDIR/tests/integration/trainer_dp_equiv"
BACKEND=${TRAINER_DP_BACKEND:-cpu}
lib_need "$PROG"
if [ "$BACKEND" = cuda ]; then
    PROBE="$SURGE_BUILDDIR/tests/unit/trainer/test_backend_cuda"
    lib_need "$PROBE"
    probe=$("$PROBE" --probe 2>/dev/null | head -1)
    [ "$probe" = cuda ] || skip_all "${probe#1..0 # SKIP }"
fi
command -v "$MPIRUN" >/dev/null 2>&1 || skip_all "no $MPIRUN"
lib_tmpdir
lib_full_stacks
EXPECT=17
tap_plan $((2 * EXPECT + 2))
for mode in thread test; do
    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
    OMPI_MCA_rmaps_base_oversubscribe=1 OPENBLAS_NUM_THREADS=1 \
        timeout 60 "$MPIRUN" -np 2 "$PROG" $mode "$BACKEND" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    grep '^#' "$tmp/out"
    check "mpirun -np 2 trainer_dp_equiv $mode $BACKEND exits 0 (rc $rc)" [ "$rc" -eq 0 ]
    n=0
    while IFS= read -r line; do
        case $line in
        PASS*) ok "$mode: ${line#PASS }"; n=$((n + 1)) ;;
        FAIL*) not_ok "$mode: ${line#FAIL }"; n=$((n + 1)) ;;
        esac
    done <"$tmp/out"
    while [ "$n" -lt "$EXPECT" ]; do
        not_ok "$mode: a check is missing (see stderr below)"
        n=$((n + 1))
    done
    [ "$rc" -eq 0 ] || sed 's/^/# /' "$tmp/err" | tail -20
done
tap_done
