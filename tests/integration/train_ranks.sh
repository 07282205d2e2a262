#!/bin/sh
# tests/integration/train_ranks.sh - data-parallel training in a server of
# 2 ranks (docs/trainer.md, "Data-parallel training"), with real heat2d
# runs of 2 solver ranks: `mpirun` starts `surge serve` as 2 ranks (MPMD,
# so that each rank has its own endpoint and output folder whatever the
# routing does); runs 0 and 2 go to rank 0, 1 and 3 to rank 1 (runs 2 and
# 3 held out for validation); both train to --max-steps 1500, then
# END_RECEPTION ends them. Checked: the replicas are identical
# (trainer.json and trainer.rank1.json: the bit-for-bit comparison made at
# the end, and the same parameter hash), the counts add up on the sums,
# only rank 0 writes the model, and the validation error of the 2-rank
# server (batch 8 per rank) is within a factor 2 of one server's trained on
# the same runs for as many steps with batch 16. Then --resume: the same 2
# ranks resume from their checkpoints and train on new runs to
# --max-steps; one rank alone refuses rank 0's checkpoint of 2 ranks with
# a clear error. Last, a 2-rank server whose training stopped (--max-steps)
# while its shards held samples resumes both shards, trains on with the
# runs to come and, once every rank is drained, takes steps_after_end.
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"

lib_need "$SURGE" "$HEAT" "$PEER" "$PY"
command -v "$MPIRUN" >/dev/null 2>&1 || skip_all "no $MPIRUN"
lib_full_stacks
lib_tmpdir
pids=
on_exit() { lib_term_wait $pids; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OPENBLAS_NUM_THREADS=1
TOKEN=dp-test-token
export SURGE_TOKEN=$TOKEN

cat >"$tmp/study.json" <<EOF
{
  "study": {"name": "dp", "seed": 3, "output_dir": "$tmp/unused"},
  "parameters": [
$(heat2d_params)
  ],
  "trainer": {"enabled": true, "layers": [32, 32], "threads": 1,
              "time_min": 0, "time_max": 0.2, "out_norm_samples": 64,
              "eval_every": 50, "checkpoint_every": 100,
              "steps_after_end": 300}
}
EOF
ARGS="--consumer trainer --study $tmp/study.json --validation-sims 2,3
      --policy reservoir --store-bytes 4MiB --log-level info"

tap_plan 15

# run SIM ENDPOINT: one heat2d run of 2 solver ranks.
run() {
    SURGE_ENDPOINT=$2 SURGE_SIM_ID=$1 SURGE_TIMEOUT_MS=10000 \
        SURGE_PARAMS="$((10 * $1)),20,$((90 - 10 * $1)),40,50" \
        timeout 60 "$MPIRUN" -np 2 "$HEAT" --nx 16 --ny 12 --steps 40 \
        --dt 0.005 >>"$tmp/solver.log" 2>&1
}

# pair S0 EP0 S1 EP1: two runs at once, S0 to EP0 and S1 to EP1.
pair() {
    run "$1" "$2" &
    p0=$!
    run "$3" "$4"
    wait "$p0"
}

# serve2 DIR0 DIR1 [ARGS...]: the 2-rank server, in the background.
serve2() {
    d0=$1
    d1=$2
    shift 2
    mkdir -p "$d0" "$d1"
    # shellcheck disable=SC2086 # ARGS is a list on purpose
    timeout -k 5 150 "$MPIRUN" \
        -np 1 "$SURGE" serve --output-dir "$d0" --bind "ipc://$d0/s" \
        --batch-size 8 $ARGS "$@" : \
        -np 1 "$SURGE" serve --output-dir "$d1" --bind "ipc://$d1/s" \
        --batch-size 8 $ARGS "$@" >>"$d0/serve.log" 2>&1 &
    server=$!
    pids="$pids $server"
}

# wait_sock PATH: until the ipc socket exists (20 s at most).
wait_sock() {
    i=0
    while [ ! -S "$1" ] && [ $i -lt 200 ]; do
        sleep 0.1
        i=$((i + 1))
    done
}

# wait_stop LOG STEP N: until LOG says N times that training stopped at
# STEP (20 s at most).
wait_stop() {
    i=0
    while [ "$(grep -c "training stops at step $2:" "$1")" -lt "$3" ] &&
        [ $i -lt 200 ]; do
        sleep 0.1
        i=$((i + 1))
    done
}

end_reception() {
    for ep in "$@"; do
        "$PEER" control "$ep" end >>"$tmp/peer.log" 2>&1
    done
}

# ------------------------------------------------------- 2 ranks, train
serve2 "$tmp/a" "$tmp/b" --max-steps 1500
wait_sock "$tmp/a/s"
wait_sock "$tmp/b/s"
pair 0 "ipc://$tmp/a/s" 1 "ipc://$tmp/b/s"
pair 2 "ipc://$tmp/a/s" 3 "ipc://$tmp/b/s"
wait_stop "$tmp/a/serve.log" 1500 2
end_reception "ipc://$tmp/a/s" "ipc://$tmp/b/s"
wait "$server"
status=$?
check "the 2-rank server trains and exits 0 (status $status)" \
    test "$status" -eq 0
[ "$status" -eq 0 ] || tail -30 "$tmp/a/serve.log" | sed 's/^/# /'

"$PY" - "$tmp/a/trainer.json" "$tmp/b/trainer.rank1.json" >"$tmp/check" \
    2>&1 <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
for j in (a, b):
    print("rank", j["rank"], "steps", j["steps"], "replicas",
          j.get("replicas"), "rel_l2", j["validation"]["rel_l2"])
def check(name, ok):
    print(("PASS " if ok else "FAIL ") + name)
ra, rb = a.get("replicas", {}), b.get("replicas", {})
check("both ranks: replicas identical bit for bit after training",
      ra.get("identical") is True and rb.get("identical") is True
      and ra.get("max_abs_diff") == 0)
check("same parameter hash on both ranks",
      ra.get("params_hash") and ra.get("params_hash") == rb.get("params_hash"))
check("both ranks trained to --max-steps 1500",
      a["steps"] == b["steps"] == 1500)
check("ranks 2, rank 0 and 1", a["ranks"] == 2 and b["ranks"] == 2
      and a["rank"] == 0 and b["rank"] == 1)
c = a["counts"]
check("rank 0's counts are the sums over the ranks and add up",
      c["add_up"] and c["store_puts"] ==
      a["rank_counts"]["store_puts"] + b["counts"]["store_puts"])
check("validation over both ranks' held-out runs (2 x 40 samples)",
      a["validation"]["samples"] + b["validation"]["samples"] == 80
      and a["validation"]["rel_l2"] == b["validation"]["rel_l2"])
check("the model is rank 0's (rank 1 writes none)",
      a["model"] is not None and b["model"] is None)
EOF
while IFS= read -r line; do
    case $line in
    PASS*) ok "${line#PASS }" ;;
    FAIL*) not_ok "${line#FAIL }" ;;
    *) diag "$line" ;;
    esac
done <"$tmp/check"
check "no model file in rank 1's folder" test ! -e "$tmp/b/model.safetensors"

# ------------------------------------------------------- 1 rank, same runs
mkdir -p "$tmp/c"
# shellcheck disable=SC2086
timeout -k 5 150 "$SURGE" serve --output-dir "$tmp/c" --bind "ipc://$tmp/c/s" \
    --batch-size 16 --max-steps 1500 $ARGS >"$tmp/c/serve.log" 2>&1 &
server=$!
pids="$pids $server"
wait_sock "$tmp/c/s"
pair 0 "ipc://$tmp/c/s" 1 "ipc://$tmp/c/s"
pair 2 "ipc://$tmp/c/s" 3 "ipc://$tmp/c/s"
wait_stop "$tmp/c/serve.log" 1500 1
end_reception "ipc://$tmp/c/s"
wait "$server"
"$PY" - "$tmp/a/trainer.json" "$tmp/c/trainer.json" >"$tmp/check" 2>&1 <<'EOF'
import json, sys
a, c = (json.load(open(p)) for p in sys.argv[1:3])
r2, r1 = a["validation"]["rel_l2"], c["validation"]["rel_l2"]
u = c["validation"]["untrained_rel_l2"]
print("validation rel L2: R = 2 %.4g, R = 1 %.4g (untrained %.4g)" % (r2, r1, u))
sys.exit(0 if r2 <= 2 * r1 and r2 < 0.8 * u else 1)
EOF
check "validation error with R = 2 within 2x that of R = 1 (and trained)" \
    test $? -eq 0
diag "$(cat "$tmp/check")"

# ------------------------------------------------------- resume
steps0=$(lib_json "$tmp/a/trainer.json" 'j["steps"]')
rm -f "$tmp/a/s" "$tmp/b/s"
serve2 "$tmp/a" "$tmp/b" --resume --max-steps $((steps0 + 40))
wait_sock "$tmp/a/s"
wait_sock "$tmp/b/s"
# New runs for the resumed ranks (the checkpoints' reservoirs were
# drained at the end of the first server).
pair 4 "ipc://$tmp/a/s" 5 "ipc://$tmp/b/s"
end_reception "ipc://$tmp/a/s" "ipc://$tmp/b/s"
wait "$server"
status=$?
check "2 ranks resume from their checkpoints (status $status)" \
    test "$status" -eq 0
"$PY" - "$tmp/a/trainer.json" "$tmp/b/trainer.rank1.json" "$steps0" \
    >"$tmp/check" 2>&1 <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
print("steps", a["steps"], b["steps"], "from", sys.argv[3])
sys.exit(0 if a["steps"] == b["steps"] == int(sys.argv[3]) + 40
         and a["replicas"]["identical"] and b["replicas"]["identical"]
         else 1)
EOF
check "resumed: both ranks trained on to the same step, replicas identical" \
    test $? -eq 0
diag "$(cat "$tmp/check")"

# ------------------------------------------------------- shards resumed
# Training stops at --max-steps 200 while both shards still hold samples:
# the checkpoints taken then keep them; the resumed ranks load their
# shards back, train on with the runs still to come and, once every rank
# is drained, steps_after_end (300) more steps from what each rank kept.
serve2 "$tmp/d" "$tmp/e" --max-steps 200
wait_sock "$tmp/d/s"
wait_sock "$tmp/e/s"
pair 0 "ipc://$tmp/d/s" 1 "ipc://$tmp/e/s"
# Both ranks stopped at step 200 (before END_RECEPTION drains the shards).
wait_stop "$tmp/d/serve.log" 200 2
end_reception "ipc://$tmp/d/s" "ipc://$tmp/e/s"
wait "$server"
rm -f "$tmp/d/s" "$tmp/e/s"
serve2 "$tmp/d" "$tmp/e" --resume
wait_sock "$tmp/d/s"
wait_sock "$tmp/e/s"
pair 2 "ipc://$tmp/d/s" 3 "ipc://$tmp/e/s"
pair 4 "ipc://$tmp/d/s" 5 "ipc://$tmp/e/s"
end_reception "ipc://$tmp/d/s" "ipc://$tmp/e/s"
wait "$server"
status=$?
back='step [1-9][0-9]*, [1-9][0-9]* samples back'
n0=$(grep -c "resuming from .*/d/checkpoint.safetensors: $back" "$tmp/d/serve.log")
n1=$(grep -c "resuming from .*/e/checkpoint.rank1.safetensors: $back" "$tmp/d/serve.log")
if [ "$status" -eq 0 ] && [ "$n0" -eq 1 ] && [ "$n1" -eq 1 ]; then
    ok "both ranks resume their shards (samples back in each reservoir)"
else
    not_ok "both ranks resume their shards (status $status, $n0 $n1)"
    grep -E 'resum|checkpoint|stop' "$tmp/d/serve.log" | tail -8 | sed 's/^/# /'
fi
"$PY" - "$tmp/d/trainer.json" "$tmp/e/trainer.rank1.json" >"$tmp/check" \
    2>&1 <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
print("steps", a["steps"], b["steps"], "this run", a["steps_this_run"])
sys.exit(0 if a["steps"] == b["steps"] > 500 and a["steps_this_run"] > 300
         and a["stop_reason"] == b["stop_reason"] == "steps_after_end"
         and a["replicas"]["identical"] and a["counts"]["add_up"]
         and a["validation"]["samples"] + b["validation"]["samples"] == 80
         else 1)
EOF
check "resumed shards: trained on, and steps_after_end after every rank drained; replicas identical, counts add up" \
    test $? -eq 0
diag "$(cat "$tmp/check")"

# shellcheck disable=SC2086
timeout 30 "$SURGE" serve --output-dir "$tmp/a" --bind "ipc://$tmp/a/s1" \
    $ARGS --resume >"$tmp/one.log" 2>&1
rc=$?
if [ "$rc" -ne 0 ] && grep -q "server of 2 rank" "$tmp/one.log"; then
    ok "one rank refuses a 2-rank checkpoint with a clear error"
else
    not_ok "one rank refuses a 2-rank checkpoint with a clear error (rc $rc)"
    tail -5 "$tmp/one.log" | sed 's/^/# /'
fi
tap_done
