#!/bin/sh
# bench/trainer/serve_e2e.sh - `make bench-trainer-serve`: the end-to-end
# R = 1 figure of issue 11, and where its time goes. A study of heat2d
# runs (64 x 64 fields: 16 KiB samples), 4 at a time (4 senders), streams
# into `surge serve` whose reservoir holds 6,000 samples and whose CPU
# trainer (the reference MLP 6-1024-1024-1024-4096, batch 256, Adam) runs
# on THREADS threads (default 2). In the same run, before and after the
# study, bench-trainer --no-torch measures the THREADS-thread sgemm bound
# of the same model (the 11 products of a step alone, samples/s). Reports
# new samples trained per second (each counted once, at its first use),
# rows trained per second, the share of the bound reached (trained
# samples/s over the mean of the two bound figures), and the trainer's own
# time split (trainer.json time_split: data, matrix products, other
# passes, optimizer, the rest, and sgemm_share = products / wall, the
# share of the bound at the products' in-situ speed). Ends with one JSON
# line.
#
# Usage: serve_e2e.sh BUILDDIR [RUNS [THREADS]]
set -u
B=$1
RUNS=${2:-160}
THREADS=${3:-2}
SURGE="$B/cli/surge"
HEAT="$B/solvers/heat2d/surge-heat2d"
BT="$B/bench/trainer/bench-trainer"
PY=${DEBIAN_PYTHON:-/usr/bin/python3}
MPIRUN=${MPIRUN:-mpirun}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
for f in "$SURGE" "$HEAT" "$BT"; do
    [ -x "$f" ] || { echo "bench-trainer-serve: $f is not built" >&2; exit 1; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

bound() {
    timeout 600 "$BT" --no-torch --threads "$THREADS" --steps 9 \
        >"$tmp/bound.out" 2>/dev/null || return 1
    sed -n "s/.*\"t${THREADS}_bound_samples_s\": *\([0-9.eE+]*\).*/\1/p" \
        "$tmp/bound.out"
}

# 6,000 slots of (6 inputs + 4,096 outputs) x 4 bytes rounded up to 64.
SLOT=$(( ((6 + 4096) * 4 + 63) / 64 * 64 ))
cat >"$tmp/study.json" <<JSON
{
  "study": {"name": "e2e", "seed": 7, "output_dir": "$tmp/out",
            "progress_interval_s": 10},
  "parameters": [
    {"name": "initial", "min": 0, "max": 100},
    {"name": "left", "min": 0, "max": 100},
    {"name": "right", "min": 0, "max": 100},
    {"name": "bottom", "min": 0, "max": 100},
    {"name": "top", "min": 0, "max": 100}
  ],
  "sampler": {"kind": "lhs", "runs": $RUNS},
  "solver": {"command": ["$HEAT", "--nx", "64", "--ny", "64", "--steps",
                         "200", "--dt", "0.002"],
             "ranks": 1, "retries": 0, "timeout_s": 600},
  "scheduler": {"mpirun": "$MPIRUN", "max_concurrent": 4},
  "server": {"validation_every": 0},
  "reservoir": {"policy": "reservoir", "capacity_bytes": $((SLOT * 6000))},
  "trainer": {"enabled": true, "layers": [1024, 1024, 1024],
              "batch_size": 256, "threads": $THREADS, "time_min": 0,
              "time_max": 0.4, "out_norm_samples": 1000,
              "eval_every": 1000000000, "checkpoint_every": 0}
}
JSON

echo "bench-trainer-serve: $RUNS heat2d runs (64 x 64, 200 steps), 4 at" \
    "a time, reservoir 6000 samples, MLP 6-1024-1024-1024-4096 on" \
    "$THREADS thread(s)" >&2
b0=$(bound) || { echo "bench-trainer-serve: bench-trainer failed" >&2; exit 1; }
timeout -k 5 1200 "$SURGE" launch --quiet "$tmp/study.json" \
    >"$tmp/launch.out" 2>"$tmp/launch.err" || {
    echo "bench-trainer-serve: surge launch failed" >&2
    tail -20 "$tmp/launch.err" >&2
    exit 1
}
b1=$(bound) || { echo "bench-trainer-serve: bench-trainer failed" >&2; exit 1; }
grep -h "trainer time:" "$tmp/out/server.log" >&2
"$PY" - "$tmp/out/trainer.json" "$b0" "$b1" "$THREADS" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
b0, b1, th = float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
ts = t["time_split"]
wall = ts["wall_s"]
new = t["samples_trained"] / wall
rows = t["rows_trained"] / wall
bound = (b0 + b1) / 2
share = {k: round(ts[k] / wall, 4) for k in
         ("data_s", "step_s", "gemm_s", "passes_s", "optimizer_s", "other_s")
         if ts.get(k) is not None}
print("trained: %.0f new samples/s (%.0f rows/s) on %d thread(s); sgemm "
      "bound %.0f (before %.0f, after %.0f): %.2f of the bound; in situ the "
      "products took %.0f%% of the wall time" %
      (new, rows, th, bound, b0, b1, new / bound,
       100 * (ts["sgemm_share"] or 0)))
print(json.dumps({
    "bench": "trainer_serve", "threads": th, "senders": 4,
    "sample_bytes": 16384, "reservoir_samples": 6000,
    "model": "6-1024-1024-1024-4096", "batch": 256,
    "new_samples_per_s": round(new, 1), "rows_per_s": round(rows, 1),
    "bound_samples_s": round(bound, 1), "bound_before": round(b0, 1),
    "bound_after": round(b1, 1), "share_of_bound": round(new / bound, 4),
    "rows_share_of_bound": round(rows / bound, 4),
    "time_share": share, "sgemm_share_in_situ": ts["sgemm_share"],
    "counts_add_up": t["counts"]["add_up"]}))
PY
