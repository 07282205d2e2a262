#!/bin/sh
# tests/integration/train_feed.sh - the trainer's prefetching feed end to
# end (docs/reservoir.md, "Feeding the trainer"): `surge launch` runs a
# small heat2d study whose server trains with reservoir.prefetch on (batch
# k+1 gathered while batch k trains), a checkpoint every 7 steps and a stop
# after 30 (the batches after it are discarded), so the
# feed must hold back its draw-ahead before each checkpoint and before
# training stops. The counts must add up exactly (a batch drawn ahead and
# never accounted would break them), and trainer.json must name the feed
# and the storage and report the share of time spent waiting for data.
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"

lib_need "$SURGE" "$HEAT" "$PY"
lib_full_stacks
lib_tmpdir

tap_plan 4

cat >"$tmp/study.json" <<EOF
{
  "study": {"name": "feed", "seed": 3, "output_dir": "$tmp/out"},
  "parameters": [
$(heat2d_params)
  ],
  "sampler": {"kind": "lhs", "runs": 6},
  "solver": {"command": ["$HEAT", "--nx", "16", "--ny", "12", "--steps",
                         "30", "--dt", "0.005"],
             "ranks": 1, "retries": 1, "timeout_s": 60},
  "scheduler": {"mpirun": "$MPIRUN", "max_concurrent": 2},
  "server": {"validation_every": 3},
  "reservoir": {"policy": "firo", "epochs": 3, "capacity_bytes": "4MiB",
                "prefetch": "on"},
  "trainer": {"enabled": true, "layers": [32], "batch_size": 8,
              "threads": 1, "time_min": 0, "time_max": 0.15,
              "out_norm_samples": 40, "eval_every": 50,
              "checkpoint_every": 7, "max_steps": 30}
}
EOF
timeout -k 5 120 "$SURGE" launch --quiet "$tmp/study.json" \
    >"$tmp/launch.out" 2>"$tmp/launch.err"
status=$?
if [ $status -eq 0 ]; then
    ok "surge launch with a prefetching trainer exits 0"
else
    not_ok "surge launch with a prefetching trainer exits 0 (status $status)"
    sed 's/^/# /' "$tmp/launch.err" | tail -20
    tail -20 "$tmp/out/server.log" 2>/dev/null | sed 's/^/# /'
fi

"$PY" - "$tmp/out/summary.json" >"$tmp/check" 2>&1 <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
t = s["trainer"]
sm = s["samples"]
total = (sm["trained_on"] + sm["discarded_after_training"]
         + sm["never_served"] + sm["validation"] + sm["dropped"])
print("steps", t["steps"], "feed", t["feed"], "wait share",
      t["data_wait_share"], "trained", sm["trained_on"], "discarded",
      sm["discarded_after_training"], "never served", sm["never_served"])
good = (s["counts_add_up"] is True and t["counts"]["add_up"] is True
        and sm["received"] == total == 6 * 30 and t["steps"] == 30
        and sm["discarded_after_training"] > 0)
print(("ok" if good else "FAIL"), "counts")
good = (t["feed"] == "prefetch" and t["reservoir_storage"] == "host"
        and 0.0 <= t["data_wait_share"] <= 1.0 and t["data_wait_s"] >= 0.0)
print(("ok" if good else "FAIL"), "report")
EOF
for what in counts report; do
    case $what in
    counts) desc="received = trained on + discarded + never served + validation + dropped, with prefetch" ;;
    report) desc="trainer.json names the feed (prefetch) and storage (host) and the data wait share in [0, 1]" ;;
    esac
    if grep -q "^ok $what" "$tmp/check"; then
        ok "$desc"
    else
        not_ok "$desc"
        sed 's/^/# /' "$tmp/check"
    fi
done
diag "$(head -1 "$tmp/check")"

if grep -q 'feed: prefetch, reservoir storage host' "$tmp/out/server.log"; then
    ok "the server log says which feed and storage the trainer uses"
else
    not_ok "the server log says which feed and storage the trainer uses"
    grep trainer "$tmp/out/server.log" | head -10 | sed 's/^/# /'
fi
