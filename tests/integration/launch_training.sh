#!/bin/sh
# tests/integration/launch_training.sh - what `surge launch` shows after
# the last run, while the server trains trainer.steps_after_end more
# steps: progress lines (step of the target, loss, the time left before
# the server's cap), not silence. And a study whose steps_after_end does
# not fit in 0.8 x server.stop_timeout_s ends with stop_reason
# server_stop and a WARNING in the table naming the keys to change. The
# first study's validation store holds 1.5 of its 3 held-out runs: it
# keeps whole runs and the table and summary.json say so.
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"
lib_study_env

# study NAME STEPS_AFTER_END STOP_TIMEOUT_S: 6 runs of 20 steps, every
# second one held out into 30 slots of 320 bytes (16 + 70 floats, 64-byte
# aligned).
study() {
    cat >"$tmp/$1.json" <<EOF
{
  "study": {"name": "$1", "seed": 3, "output_dir": "$tmp/$1",
            "progress_interval_s": 0.3},
  "parameters": [
$(heat2d_params)
  ],
  "sampler": {"kind": "lhs", "runs": 6},
  "solver": {"command": ["$HEAT", "--nx", "8", "--ny", "8", "--steps", "20"],
             "ranks": 1, "timeout_s": 60, "retries": 0},
  "scheduler": {"mpirun": "$MPIRUN", "max_concurrent": 2},
  "server": {"stop_timeout_s": $3, "validation_every": 2,
             "validation_bytes": 9600},
  "reservoir": {"policy": "reservoir", "capacity_bytes": "4MiB"},
  "trainer": {"enabled": true, "layers": [16], "batch_size": 8,
              "time_min": 0, "time_max": 0.02, "out_norm_samples": 10,
              "eval_every": 100, "checkpoint_every": 0,
              "steps_after_end": $2}
}
EOF
}

tap_plan 7

study fits 3000 60
timeout 120 "$SURGE" launch "$tmp/fits.json" >"$tmp/fits.out" 2>"$tmp/fits.err"
rc=$?
lib_check_launch_ok "$rc" "$tmp/fits.err" "$tmp/fits"
check "after the runs, progress lines show the training's step of its target and the cap" \
    grep -Eq "training after the runs: step [0-9]+ of [0-9]+.*cut in [0-9]+s \(0.8 x server.stop_timeout_s = 48s\)" \
    "$tmp/fits.err"
why=$(lib_json "$tmp/fits/summary.json" 'j["trainer"]["stop_reason"]' 2>/dev/null)
check "training ended by steps_after_end ($why), no warning" \
    test "$why" = steps_after_end -a -z "$(grep WARNING "$tmp/fits.out")"

check "the validation store keeps whole runs: 1 of the 3 held-out runs, 20 samples" \
    "$PY" -c '
import json, sys
v = json.load(open(sys.argv[1]))["validation_set"]
sys.exit(0 if (v["runs_held_out"], v["runs_kept"], v["samples_kept"]) ==
         (3, 1, 20) else 1)' "$tmp/fits/summary.json"
check "... and the table says so" \
    grep -q "NOTE .*keeps 1 of the 3 held-out runs" "$tmp/fits.out"

study cut 100000000 2
timeout 120 "$SURGE" launch "$tmp/cut.json" >"$tmp/cut.out" 2>"$tmp/cut.err"
why=$(lib_json "$tmp/cut/summary.json" 'j["trainer"]["stop_reason"]' 2>/dev/null)
check "steps_after_end past 0.8 x stop_timeout_s: the server cut it ($why)" \
    test "$why" = server_stop
check "... and the table says so, naming the keys" \
    grep -q "WARNING.*0.8 x server.stop_timeout_s = 1.6 s" "$tmp/cut.out"
[ "$why" = server_stop ] || sed 's/^/# /' "$tmp/cut.err" | tail -8

tap_done
