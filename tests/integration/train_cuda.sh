#!/bin/sh
# tests/integration/train_cuda.sh - a short study trained on the GPU and
# resumed on the CPU, with real processes: server A trains with
# `trainer.backend: cuda` on heat2d runs (real mpirun) and leaves a
# checkpoint and a model; server B, configured with `backend: cpu`, resumes
# from A's checkpoint, continues the step counter and trains on; both
# models predict with `surge predict` (the CPU). Skips without a CUDA build
# or device (test_backend_cuda --probe says which).
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"

PROBE="$SURGE_BUILDDIR/tests/unit/trainer/test_backend_cuda"
lib_need "$SURGE" "$HEAT" "$PY" "$PROBE"
probe=$("$PROBE" --probe 2>/dev/null | head -1)
[ "$probe" = cuda ] || skip_all "${probe#1..0 # SKIP }"
lib_full_stacks
lib_tmpdir
pids=
on_exit() {
    for p in $pids; do kill -9 "$p" 2>/dev/null; done
}

tap_plan 5

# study BACKEND: the study file of this test with that trainer backend.
study() {
    cat >"$tmp/study-$1.json" <<EOS
{
  "study": {"name": "cuda", "seed": 3, "output_dir": "$tmp/out"},
  "parameters": [
$(heat2d_params)
  ],
  "sampler": {"kind": "lhs", "runs": 8},
  "solver": {"command": ["$HEAT", "--nx", "16", "--ny", "12", "--steps",
                         "40", "--dt", "0.005"], "ranks": 1},
  "trainer": {"enabled": true, "layers": [64, 64], "batch_size": 16,
              "threads": 1, "time_min": 0, "time_max": 0.2,
              "out_norm_samples": 40, "backend": "$1"}
}
EOS
}
study cuda
study cpu

# serve NAME BACKEND ARGS...: a trainer server in $tmp/NAME.
serve() {
    name=$1 backend=$2
    shift 2
    mkdir -p "$tmp/$name"
    timeout -k 5 120 "$SURGE" serve --consumer trainer \
        --study "$tmp/study-$backend.json" --output-dir "$tmp/$name" \
        --batch-size 16 --policy reservoir --store-bytes 4M --http off \
        --exit-idle 4 --log-level debug "$@" >"$tmp/$name.log" 2>&1 &
    srv=$!
    pids="$pids $srv"
    lib_wait_file "$tmp/$name/server.json"
    endpoint=$(lib_json "$tmp/$name/server.json" 'j["endpoint"]' 2>/dev/null)
}
solve() {
    SURGE_ENDPOINT=$endpoint SURGE_SIM_ID=$1 SURGE_PARAMS=$2 \
        SURGE_TIMEOUT_MS=10000 timeout 60 "$MPIRUN" --oversubscribe -np 1 \
        "$HEAT" --nx 16 --ny 12 --steps 40 --dt 0.005 >>"$tmp/solve.log" 2>&1
}
steps_of() {
    "$PY" -c 'import json, sys; d = json.load(open(sys.argv[1]))
print(d["steps"], d["steps_this_run"])' "$1" 2>/dev/null
}

serve A cuda --max-steps 120 --checkpoint-every 40
solve 0 "10,20,30,40,50"
solve 1 "90,10,50,20,70"
wait "$srv"
st=$?
if [ $st -eq 0 ] && [ "$(steps_of "$tmp/A/trainer.json")" = "120 120" ] &&
    grep -q "backend cuda" "$tmp/A.log" &&
    [ -s "$tmp/A/checkpoint.safetensors" ]; then
    ok "server A trains 120 steps on cuda and leaves a checkpoint"
else
    not_ok "server A trains 120 steps on cuda and leaves a checkpoint (status $st)"
    tail -8 "$tmp/A.log" | sed 's/^/# /'
fi

serve B cpu --resume "$tmp/A/checkpoint.safetensors" --max-steps 200
solve 2 "50,50,50,50,50"
wait "$srv"
st=$?
if [ $st -eq 0 ] && grep -q "resuming from" "$tmp/B.log" &&
    grep -q "backend cpu" "$tmp/B.log" &&
    [ "$(steps_of "$tmp/B/trainer.json")" = "200 80" ]; then
    ok "server B resumes A's cuda checkpoint on cpu and trains to step 200"
else
    not_ok "server B resumes A's cuda checkpoint on cpu and trains to step 200 (status $st)"
    tail -8 "$tmp/B.log" | sed 's/^/# /'
fi

for name in A B; do
    if "$SURGE" predict "$tmp/$name/model.safetensors" \
        --params 10,20,30,40,50 --time 0.1 --shape 16x12 \
        --out "$tmp/$name.npy" >"$tmp/predict-$name.out" 2>&1; then
        ok "surge predict (cpu) runs the model server $name wrote"
    else
        not_ok "surge predict (cpu) runs the model server $name wrote"
        sed 's/^/# /' "$tmp/predict-$name.out"
    fi
done
if "$PY" - "$tmp/A.npy" "$tmp/B.npy" <<'EOS'; then
import sys
import numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
ok = a.shape == b.shape == (12, 16) and np.isfinite(a).all() \
    and np.isfinite(b).all()
sys.exit(0 if ok else 1)
EOS
    ok "both predictions are finite 12 x 16 fields"
else
    not_ok "both predictions are finite 12 x 16 fields"
fi
tap_done
