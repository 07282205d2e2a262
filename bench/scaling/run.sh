#!/bin/sh
# bench/scaling/run.sh - `make bench-scaling`: what one more server rank
# buys on this machine, and the per-rank costs docs/scaling.md projects
# from. In one run:
#   - ingest: 4 libsurge sender processes of 16 KiB fields into `surge
#     serve` of R = 1 and R = 2 ranks (bench/ingest/ingest_bench
#     --server-ranks R, count consumer: ingest alone), samples/s, with the
#     bare ZeroMQ PUSH/PULL ceiling of the same traffic;
#   - training: the reference MLP 6-1024-1024-1024-4096, batch 256 a rank,
#     for R = 1 and R = 2 (bench-dp: samples/s, the gradient allreduce's
#     time per step, the share of it hidden behind backward);
#   - end to end at R = 1: 4 heat2d senders into a reservoir of 6,000 with
#     the MLP on 2 threads (bench/trainer/serve_e2e.sh), new samples
#     trained per second and the share of the 2-thread sgemm bound reached.
# Ends with one JSON line. Medians inside each part; the machine is
# shared and noisy: compare ratios from the same run.
#
# Usage: run.sh BUILDDIR SRCDIR [REPS]
set -u
B=$1
S=$2
REPS=${3:-3}
MPIRUN=${MPIRUN:-mpirun}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
fail() {
    echo "bench-scaling: $*" >&2
    exit 1
}

for r in 1 2; do
    echo "bench-scaling: ingest, server of $r rank(s)" >&2
    timeout 900 "$B/bench/ingest/ingest_bench" --surge "$B/cli/surge" \
        --server-ranks "$r" --sizes 16K --senders 4 --reps "$REPS" \
        --consumer count >"$tmp/ingest$r.out" ||
        fail "ingest_bench --server-ranks $r failed"
    tail -n 1 "$tmp/ingest$r.out" >"$tmp/ingest$r.json"
done

echo "bench-scaling: data-parallel training, R = 1 and 2" >&2
for r in 1 2; do
    OPENBLAS_NUM_THREADS=1 timeout 900 "$MPIRUN" -np "$r" \
        "$B/bench/scaling/bench-dp" >"$tmp/dp$r.out" ||
        fail "bench-dp with $r rank(s) failed"
    tail -n 1 "$tmp/dp$r.out" >"$tmp/dp$r.json"
done

echo "bench-scaling: end to end at R = 1" >&2
MPIRUN="$MPIRUN" sh "$S/bench/trainer/serve_e2e.sh" "$B" 160 2 \
    >"$tmp/e2e.out" || fail "serve_e2e.sh failed"
tail -n 1 "$tmp/e2e.out" >"$tmp/e2e.json"

python3 - "$tmp" <<'PY'
import json, sys
d = sys.argv[1]
def load(name):
    with open(f"{d}/{name}.json") as f:
        return json.loads(f.read())
ing = {r: load(f"ingest{r}") for r in (1, 2)}
dp = {r: load(f"dp{r}") for r in (1, 2)}
e2e = load("e2e")
def ingest_fig(j):
    row = j["results"][0]
    return {"samples_per_s": row["surge_samples_per_s"],
            "bare_zmq_msgs_per_s": row["bare_msgs_per_s"],
            "counts_ok": j["server_counts_ok"]}
i1, i2 = ingest_fig(ing[1]), ingest_fig(ing[2])
t1, t2 = dp[1]["samples_per_s"], dp[2]["samples_per_s"]
out = {
    "bench": "scaling",
    "field_bytes": 16384, "senders": 4,
    "ingest": {"1": i1, "2": i2,
               "ratio_2_vs_1": round(i2["samples_per_s"] /
                                     max(i1["samples_per_s"], 1), 3)},
    "training": {"1": t1, "2": t2, "ratio_2_vs_1": round(t2 / max(t1, 1), 3),
                 "gradient_mb": dp[2].get("gradient_mb"),
                 "allreduce_ms": dp[2].get("allreduce_ms"),
                 "hidden_share": dp[2].get("hidden_share_dp_test"),
                 "step_ms_local": dp[2].get("step_ms_local")},
    "end_to_end_r1": e2e,
}
print(json.dumps(out))
PY
