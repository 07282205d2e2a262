#!/bin/sh
# tests/integration/trainer_torch.sh - a model file written by the C trainer
# loads in PyTorch with the lines docs/model-file.md shows, and predicts what
# the C forward pass predicts (tolerance: max abs error <= 2e-6 x the
# largest output); and PyTorch's own optimizers (Adam, AdamW, SGD with
# momentum, clip_grad_norm_), started from the C trainer's initial weights
# on the same batches, end where the C trainer ends (max abs parameter
# difference <= 1e-4). See trainer_torch.py. Skips when Debian's python3
# has no torch or numpy.
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"

GEN="$SURGE_BUILDDIR/tests/integration/trainer_torch_gen"
SCRIPT="$SURGE_SRCDIR/tests/integration/trainer_torch.py"
DOC="$SURGE_SRCDIR/docs/model-file.md"

if ! timeout 60 "$PY" -c 'import torch, numpy' >/dev/null 2>&1; then
    skip_all "no torch/numpy in $PY"
fi
[ -x "$GEN" ] || skip_all "trainer_torch_gen not built"

lib_tmpdir

tap_plan 7

# The loading code in the doc is the code this test runs.
sed -n '/^# --- begin docs\/model-file.md ---$/,/^# --- end docs\/model-file.md ---$/p' \
    "$SCRIPT" | sed '1d;$d' >"$tmp/script_block.py"
sed -n '/^<!-- begin load -->$/,/^<!-- end load -->$/p' "$DOC" |
    sed '1,2d;$d' | sed '$d' >"$tmp/doc_block.py"
if [ -s "$tmp/doc_block.py" ] && cmp -s "$tmp/script_block.py" "$tmp/doc_block.py"; then
    ok "docs/model-file.md shows the loading code this test runs"
else
    diff "$tmp/script_block.py" "$tmp/doc_block.py" | sed 's/^/# /'
    not_ok "docs/model-file.md shows the loading code this test runs"
fi

# Each case: activation, output normalisation, optimizer, gradient clip.
for case in "relu global adam 0" "gelu element adamw 0" "tanh element sgd 0.5"; do
    set -- $case
    name="$1/$2/$3/clip=$4"
    d="$tmp/$1-$2-$3"
    mkdir -p "$d"
    if ! dims=$(timeout 60 "$GEN" "$d" "$1" "$2" "$3" "$4" 2>"$d/gen.err"); then
        sed 's/^/# /' "$d/gen.err"
        not_ok "$name: PyTorch predicts as the C model (C trainer failed)"
        not_ok "$name: PyTorch's optimizer takes the C trainer's steps (C trainer failed)"
        continue
    fi
    for mode in predict train; do
        if out=$(timeout 120 "$PY" "$SCRIPT" "$mode" "$d" $dims "$3" "$4" 2>&1); then
            diag "$out"
            ok "$name: $mode matches PyTorch"
        else
            printf '%s\n' "$out" | sed 's/^/# /'
            not_ok "$name: $mode matches PyTorch"
        fi
    done
done
tap_done
