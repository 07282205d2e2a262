#!/bin/sh
# bench/online_offline/run.sh - `make bench-online-offline`: SC'23 in
# miniature. The same model (the study below: MLP 6 -> 256 -> 256 -> 4096,
# Adam, batch 64) and the same wall-clock budget BUDGET_S (data generation
# included), two ways:
#   online : heat2d runs (64 x 64, 100 steps, 2 at a time) stream through
#            `surge serve --consumer trainer` for the whole budget;
#   offline: heat2d runs stream through `surge serve --consumer writer`
#            (each sample appended to a file, fsync'ed) for GEN_FRACTION
#            of the budget, then the same C trainer reads that file back
#            (shuffled, every batch read from the file) for epochs until
#            the budget is spent (bench/online_offline/offline_train).
# Both final models are evaluated by the same code on the same 4 held-out
# simulations (generated before, outside the budget). Reports batch
# throughput, distinct samples trained on, bytes written to disk and the
# validation error for each; the last line is one JSON object.
# Then the same two ways for an architecture of the user's choice trained
# by an external PyTorch trainer (bench/online_offline/fno_arm.py: the FNO
# of solvers/heat2d/train_torch.py, batch 16, one thread) for FNO_BUDGET_S
# each: online from `surge serve --consumer external` through surge.torch,
# offline from the writer's file after GEN_FRACTION of the budget; both
# evaluated (physical units, as offline_train eval) on the same 4 held-out
# simulations; its numbers go under "fno" in the JSON (null, with the
# reason on stderr, without Debian's torch).
#
# Usage: run.sh BUILDDIR SRCDIR [BUDGET_S [GEN_FRACTION [FNO_BUDGET_S]]]
set -u
B=$1
S=$2
BUDGET=${3:-60}
GENFRAC=${4:-0.5}
FNO_BUDGET=${5:-$BUDGET}
PY=${PY:-/usr/bin/python3}
SURGE="$B/cli/surge"
HEAT="$B/solvers/heat2d/surge-heat2d"
OFF="$B/bench/online_offline/offline_train"
MPIRUN=${MPIRUN:-mpirun}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
for f in "$SURGE" "$HEAT" "$OFF"; do
    [ -x "$f" ] || { echo "bench-online-offline: $f is not built" >&2; exit 1; }
done
tmp=$(mktemp -d)
pids=
cleanup() {
    for p in $pids; do kill -9 "$p" 2>/dev/null; done
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
SOLVER="--nx 64 --ny 64 --steps 100 --dt 0.005"

cat >"$tmp/study.json" <<EOF
{
  "study": {"name": "online-offline", "progress_interval_s": 10},
  "parameters": [
    {"name": "initial", "min": 0, "max": 100},
    {"name": "left", "min": 0, "max": 100},
    {"name": "right", "min": 0, "max": 100},
    {"name": "bottom", "min": 0, "max": 100},
    {"name": "top", "min": 0, "max": 100}
  ],
  "trainer": {"enabled": true, "layers": [256, 256], "batch_size": 64,
              "lr": 0.001, "threads": 1, "time_min": 0, "time_max": 0.5,
              "out_norm_samples": 500, "eval_every": 1000000,
              "checkpoint_every": 0, "seed": 42}
}
EOF

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.3f", b - a}'; }
# params SIM: 5 values in [0, 100], the same for a sim id in both arms.
params() {
    awk -v s="$1" 'BEGIN {srand(1000 + s); printf "%.6f,%.6f,%.6f,%.6f,%.6f",
        100*rand(), 100*rand(), 100*rand(), 100*rand(), 100*rand()}'
}
# serve DIR ARGS...: a server in DIR, in the background ($srv, $endpoint).
serve() {
    dir=$1
    shift
    mkdir -p "$dir"
    timeout -k 5 $((BUDGET * 3 + 120)) "$SURGE" serve --output-dir "$dir" \
        --http off --batch-size 64 --stop-timeout 60 \
        --study "$tmp/study.json" "$@" >"$dir.log" 2>&1 &
    srv=$!
    pids="$pids $srv"
    i=0
    while [ ! -s "$dir/server.json" ] && [ $i -lt 400 ]; do
        sleep 0.05
        i=$((i + 1))
    done
    # The first "endpoint" is the server's (an external consumer's comes
    # later, under "external").
    endpoint=$(sed -n 's/.*"endpoint": *"\([^"]*\)".*/\1/p' "$dir/server.json" |
        head -1)
}
run_one() {
    SURGE_ENDPOINT=$endpoint SURGE_SIM_ID=$1 SURGE_PARAMS=$(params "$1") \
        SURGE_TIMEOUT_MS=30000 timeout 120 "$MPIRUN" --oversubscribe -np 1 \
        "$HEAT" $SOLVER >>"$tmp/solve.log" 2>&1
}
# runs_until FIRST DEADLINE: runs FIRST, FIRST+1, ... two at a time until
# the deadline (seconds since $t0) has passed; prints how many ran.
runs_until() {
    sim=$1
    n=0
    while awk -v e="$(elapsed "$t0")" -v d="$2" 'BEGIN {exit !(e < d)}'; do
        run_one "$sim" &
        a=$!
        run_one $((sim + 1)) &
        b=$!
        wait $a $b
        sim=$((sim + 2))
        n=$((n + 2))
    done
    echo $n
}
# Every run has ended: SIGTERM makes the server end reception, let its
# consumer drain the store (nothing is partial), and exit. To the server
# itself (server.json's pid): timeout(1) would pass it on to its whole
# process group, and a second signal stops the server without draining.
stop_server() {
    kill -TERM "$(sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' "$dir/server.json")" \
        2>/dev/null
    wait "$srv"
}
jnum() { sed -n "s/.*\"$2\": *\([-0-9.eE+]*\).*/\1/p" "$1" | head -1; }

echo "bench-online-offline: budget ${BUDGET} s per arm, offline generation" \
    "${GENFRAC} of it; heat2d $SOLVER, 2 runs at a time" >&2

# Held-out simulations (ids 900000..900003), outside the budget.
serve "$tmp/val" --consumer writer --policy fifo --store-bytes 64M
for s in 900000 900002; do
    run_one $s &
    a=$!
    run_one $((s + 1))
    wait $a
done
stop_server

# (a) online.
t0=$(now)
serve "$tmp/on" --consumer trainer --policy reservoir --store-bytes 64M \
    --max-wall "$BUDGET"
on_runs=$(runs_until 0 "$BUDGET")
stop_server
on_wall=$(elapsed "$t0")
on_batches=$(jnum "$tmp/on/trainer.json" batches)
on_train_s=$(jnum "$tmp/on/trainer.json" wall_s)
on_distinct=$(jnum "$tmp/on/trainer.json" samples_trained)
on_rows=$(jnum "$tmp/on/trainer.json" rows_trained)
"$OFF" eval "$tmp/on/model.safetensors" "$tmp/val" >"$tmp/on.eval" ||
    exit 1

# (b) offline: generate for GENFRAC of the budget, then train from files.
t0=$(now)
gen_deadline=$(awk -v b="$BUDGET" -v f="$GENFRAC" 'BEGIN {print b * f}')
serve "$tmp/off" --consumer writer --policy fifo --store-bytes 64M
off_runs=$(runs_until 0 "$gen_deadline")
stop_server
gen_s=$(elapsed "$t0")
left=$(awk -v b="$BUDGET" -v g="$gen_s" 'BEGIN {l = b - g; print (l > 1 ? l : 1)}')
"$OFF" train "$tmp/off" "$tmp/study.json" "$left" \
    "$tmp/off/model.safetensors" >"$tmp/off.train" || exit 1
off_wall=$(elapsed "$t0")
"$OFF" eval "$tmp/off/model.safetensors" "$tmp/val" >"$tmp/off.eval" ||
    exit 1
off_bytes=$(jnum "$tmp/off/samples.json" bytes)
off_rows_file=$(jnum "$tmp/off/samples.json" rows)

# (c), (d): the FNO, online through surge.torch, offline from files.
fno=null
FNO_ARGS="$S/bench/online_offline/fno_arm.py"
if ! timeout 120 "$PY" -c 'import torch, numpy, zmq' >/dev/null 2>&1; then
    echo "bench-online-offline: no torch/numpy/zmq in $PY: no FNO arm" >&2
else
    export PYTHONPATH="$S/python"
    t0=$(now)
    serve "$tmp/fon" --consumer external --policy reservoir --store-bytes 64M \
        --batch-size 16 --external-timeout 5 --field-shapes temperature=64x64
    timeout $((FNO_BUDGET * 3 + 120)) "$PY" "$FNO_ARGS" online \
        "$tmp/fon/server.json" "$FNO_BUDGET" "$tmp/val" 64 64 \
        >"$tmp/fon.json" 2>"$tmp/fon.err" &
    fpy=$!
    pids="$pids $fpy"
    fon_runs=$(runs_until 0 "$FNO_BUDGET")
    wait "$fpy"
    frc=$?
    stop_server
    t0=$(now)
    gen_deadline=$(awk -v b="$FNO_BUDGET" -v f="$GENFRAC" 'BEGIN {print b * f}')
    serve "$tmp/foff" --consumer writer --policy fifo --store-bytes 64M
    foff_runs=$(runs_until 0 "$gen_deadline")
    stop_server
    fgen_s=$(elapsed "$t0")
    left=$(awk -v b="$FNO_BUDGET" -v g="$fgen_s" 'BEGIN {l = b - g; print (l > 1 ? l : 1)}')
    timeout $((FNO_BUDGET * 3 + 120)) "$PY" "$FNO_ARGS" offline "$tmp/foff" \
        "$left" "$tmp/val" 64 64 >"$tmp/foff.json" 2>"$tmp/foff.err"
    frc2=$?
    if [ $frc -ne 0 ] || [ $frc2 -ne 0 ] || [ ! -s "$tmp/fon.json" ] ||
        [ ! -s "$tmp/foff.json" ]; then
        echo "bench-online-offline: the FNO arm failed:" >&2
        tail -n 5 "$tmp/fon.err" "$tmp/foff.err" >&2
        exit 1
    fi
    # One JSON object of both (the Python prints one line each).
    fno=$("$PY" -c '
import json, sys
on, off = (json.load(open(p)) for p in sys.argv[1:3])
on["runs"], off["runs"], off["gen_s"] = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
print("FNO online : %d runs, %d batches in %.1f s of training, %d distinct "
      "samples (%s); held-out rel L2 %.4f (untrained %.4f), MSE %.4g" %
      (on["runs"], on["batches"], on["train_s"], on["distinct_samples"],
       on["transport"], on["val_rel_l2"], on["val_rel_l2_untrained"],
       on["val_mse"]), file=sys.stderr)
print("FNO offline: %d runs in %.1f s of generation, %d batches in %.1f s (%.2f "
      "epochs); held-out rel L2 %.4f, MSE %.4g" % (off["runs"], off["gen_s"],
      off["batches"], off["train_s"], off["epochs"], off["val_rel_l2"],
      off["val_mse"]), file=sys.stderr)
print(json.dumps({"model": "FNO (solvers/heat2d/train_torch.py FNO2d, width 16, "
                  "6 modes, 3 layers), Adam 3e-3, batch 16, PyTorch 1 thread",
                  "budget_s": float(sys.argv[6]), "online": on, "offline": off,
                  "val_rel_l2_online_over_offline":
                  on["val_rel_l2"] / off["val_rel_l2"]}))' \
        "$tmp/fon.json" "$tmp/foff.json" "$fon_runs" "$foff_runs" "$fgen_s" \
        "$FNO_BUDGET") || exit 1
fi

awk -v ob="$on_batches" -v ot="$on_train_s" -v od="$on_distinct" \
    -v orows="$on_rows" -v ow="$on_wall" -v oruns="$on_runs" \
    -v omse="$(jnum "$tmp/on.eval" mse)" -v orel="$(jnum "$tmp/on.eval" rel_l2)" \
    -v fb="$(jnum "$tmp/off.train" batches)" \
    -v ft="$(jnum "$tmp/off.train" train_s)" \
    -v fd="$(jnum "$tmp/off.train" distinct_samples)" \
    -v fe="$(jnum "$tmp/off.train" epochs)" -v fw="$off_wall" -v fg="$gen_s" \
    -v fruns="$off_runs" -v fbytes="$off_bytes" -v frows="$off_rows_file" \
    -v fmse="$(jnum "$tmp/off.eval" mse)" -v frel="$(jnum "$tmp/off.eval" rel_l2)" \
    -v vs="$(jnum "$tmp/on.eval" samples)" -v budget="$BUDGET" -v fno="$fno" '
BEGIN {
    printf "online : %d runs, %d batches in %.1f s of training (%.1f batches/s), %d distinct samples trained on (%d rows), 0 bytes of data written; held-out rel L2 %.4f, MSE %.4g\n",
        oruns, ob, ot, ob / ot, od, orows, orel, omse
    printf "offline: %d runs in %.1f s of generation (%d samples, %d bytes written), then %d batches in %.1f s (%.1f batches/s, %.2f epochs, %d distinct samples); held-out rel L2 %.4f, MSE %.4g\n",
        fruns, fg, frows, fbytes, fb, ft, fb / ft, fe, fd, frel, fmse
    printf "online/offline: %.2fx the distinct samples, %.2fx the batches, held-out rel L2 %.2fx\n",
        od / fd, ob / fb, orel / frel
    printf "{\"bench\": \"online_offline\", \"budget_s\": %s, \"validation_samples\": %d, " \
        "\"online\": {\"wall_s\": %.2f, \"runs\": %d, \"batches\": %d, \"batches_per_s\": %.2f, \"distinct_samples\": %d, \"rows_trained\": %d, \"bytes_written\": 0, \"val_rel_l2\": %.6g, \"val_mse\": %.6g}, " \
        "\"offline\": {\"wall_s\": %.2f, \"gen_s\": %.2f, \"runs\": %d, \"batches\": %d, \"batches_per_s\": %.2f, \"epochs\": %.3f, \"distinct_samples\": %d, \"bytes_written\": %d, \"val_rel_l2\": %.6g, \"val_mse\": %.6g}, " \
        "\"ratios\": {\"distinct_samples\": %.3f, \"batches\": %.3f, \"val_rel_l2_online_over_offline\": %.3f}, \"fno\": %s}\n",
        budget, vs, ow, oruns, ob, ob / ot, od, orows, orel, omse,
        fw, fg, fruns, fb, fb / ft, fe, fd, fbytes, frel, fmse,
        od / fd, ob / fb, orel / frel, fno
}'
