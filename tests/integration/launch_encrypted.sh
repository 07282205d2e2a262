#!/bin/sh
# tests/integration/launch_encrypted.sh - a whole heat2d study with
# `server.encrypt: true` (ZeroMQ CURVE between the runs, the launcher and
# the server): the launcher writes the study's key files (mode 0600 in a
# 0700 <output_dir>/keys), the server turns CURVE on, every run streams
# through it, and the study ends green with counts that add up and every
# step assembled exactly once.
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"
lib_study_env
RUNS=2
STEPS=6
cat >"$tmp/study.json" <<EOF
{
  "study": {"name": "encrypted", "seed": 11, "output_dir": "$tmp/out"},
  "parameters": [
$(heat2d_params)
  ],
  "sampler": {"kind": "uniform", "runs": $RUNS},
  "solver": {
    "command": ["$HEAT", "--nx", "12", "--ny", "8", "--steps", "$STEPS"],
    "ranks": 2,
    "timeout_s": 60,
    "retries": 0
  },
  "scheduler": {"mpirun": "$MPIRUN", "max_concurrent": 2},
  "server": {"checksum_log": true, "encrypt": true},
  "reservoir": {"policy": "fifo", "capacity_bytes": "4MiB"}
}
EOF

tap_plan 6

timeout 120 "$SURGE" launch --quiet "$tmp/study.json" >"$tmp/stdout" \
    2>"$tmp/stderr"
rc=$?
lib_check_launch_ok "$rc" "$tmp/stderr" "$tmp/out"
modes=$(stat -c %a "$tmp/out/keys" "$tmp/out/keys/server.key" \
    "$tmp/out/keys/client.key" 2>/dev/null | tr '\n' ' ')
check "key files: folder 700, files 600 (got $modes)" \
    test "$modes" = "700 600 600 "
check "the server ran with CURVE on" grep -q "CURVE on" "$tmp/out/server.log"
ok_runs=$(lib_json "$tmp/out/summary.json" 'j["runs"]["ok"]' 2>/dev/null)
check "both runs ok (got ${ok_runs:-no summary})" test "$ok_runs" = $RUNS
add=$(lib_json "$tmp/out/summary.json" 'j["counts_add_up"]' 2>/dev/null)
check "counts add up (got ${add:-no summary})" test "$add" = True
lib_check_server_once "$tmp/out" $RUNS $STEPS
tap_done
