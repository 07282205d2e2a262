#!/bin/sh
# tests/integration/trainer_torch.sh - a model file written by the C trainer
# loads in PyTorch with the lines docs/model-file.md shows, and predicts what
# the C forward pass predicts (tolerance: max abs error <= 2e-6 x the
# largest output; see trainer_torch.py). Skips when Debian's python3 has
# no torch or numpy.
. "$SURGE_SRCDIR/tests/tap.sh"

PY=${DEBIAN_PYTHON:-/usr/bin/python3}
GEN="$SURGE_BUILDDIR/tests/integration/trainer_torch_gen"
SCRIPT="$SURGE_SRCDIR/tests/integration/trainer_torch.py"
DOC="$SURGE_SRCDIR/docs/model-file.md"

if ! timeout 60 "$PY" -c 'import torch, numpy' >/dev/null 2>&1; then
    skip_all "no torch/numpy in $PY"
fi
[ -x "$GEN" ] || skip_all "trainer_torch_gen not built"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

tap_plan 4

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

for case in "relu global" "gelu element" "tanh element"; do
    set -- $case
    d="$tmp/$1-$2"
    mkdir -p "$d"
    if ! dims=$(timeout 60 "$GEN" "$d" "$1" "$2" 2>"$d/gen.err"); then
        sed 's/^/# /' "$d/gen.err"
        not_ok "$1/$2: C trainer writes model, inputs, predictions"
        continue
    fi
    set -- $1 $2 $dims
    if out=$(timeout 120 "$PY" "$SCRIPT" "$d" "$3" "$4" "$5" 2>&1); then
        diag "$out"
        ok "$1/$2 output normalisation: PyTorch predicts as the C model"
    else
        printf '%s\n' "$out" | sed 's/^/# /'
        not_ok "$1/$2 output normalisation: PyTorch predicts as the C model"
    fi
done
tap_done
