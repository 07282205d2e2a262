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
#
# Usage: run.sh BUILDDIR SRCDIR [BUDGET_S [GEN_FRACTION]]
set -u
B=$1
S=$2
BUDGET=${3:-60}
GENFRAC=${4:-0.5}
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
    endpoint=$(sed -n 's/.*"endpoint": *"\([^"]*\)".*/\1/p' "$dir/server.json")
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

awk -v ob="$on_batches" -v ot="$on_train_s" -v od="$on_distinct" \
    -v orows="$on_rows" -v ow="$on_wall" -v oruns="$on_runs" \
    -v omse="$(jnum "$tmp/on.eval" mse)" -v orel="$(jnum "$tmp/on.eval" rel_l2)" \
    -v fb="$(jnum "$tmp/off.train" batches)" \
    -v ft="$(jnum "$tmp/off.train" train_s)" \
    -v fd="$(jnum "$tmp/off.train" distinct_samples)" \
    -v fe="$(jnum "$tmp/off.train" epochs)" -v fw="$off_wall" -v fg="$gen_s" \
    -v fruns="$off_runs" -v fbytes="$off_bytes" -v frows="$off_rows_file" \
    -v fmse="$(jnum "$tmp/off.eval" mse)" -v frel="$(jnum "$tmp/off.eval" rel_l2)" \
    -v vs="$(jnum "$tmp/on.eval" samples)" -v budget="$BUDGET" '
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
        "\"ratios\": {\"distinct_samples\": %.3f, \"batches\": %.3f, \"val_rel_l2_online_over_offline\": %.3f}}\n",
        budget, vs, ow, oruns, ob, ob / ot, od, orows, orel, omse,
        fw, fg, fruns, fb, fb / ft, fe, fd, fbytes, frel, fmse,
        od / fd, ob / fb, orel / frel
}'
