#!/bin/sh
# tests/integration/launch_hijack.sh - a run cannot take another run's rank
# (issue 9, item 4). Sim 0's rank 0 starts a rogue client with exactly what
# the launcher gave sim 0, which says hello as rank 1 of sim 1 before sim 1
# starts (max_concurrent 1), and keeps the connection open. Before per-run
# keys every run held the study token, the rogue was welcomed and the real
# sim 1 was refused ("rank 1 of sim 1 already joined"): the study failed.
# Now each run holds only its own run key: the rogue is rejected, both runs
# succeed, and no run's environment holds the study token.
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"
lib_need "$CLIENT"
lib_study_env

on_exit() {
    [ -s "$tmp/rogue.pid" ] && lib_kill_pids "$(cat "$tmp/rogue.pid")"
}

cat >"$tmp/solver.sh" <<EOF
#!/bin/sh
rank=\$OMPI_COMM_WORLD_RANK
echo "\${SURGE_TOKEN:+token}" >"$tmp/env-\$SURGE_SIM_ID-\$rank"
if [ "\$SURGE_SIM_ID" = 0 ] && [ "\$rank" = 0 ]; then
    # The rogue: its own session, so that the end of sim 0 spares it.
    SURGE_SIM_ID=1 setsid "$CLIENT" --rank 1 --nranks 2 --steps 3 \\
        --hang-after 0 >"$tmp/rogue.log" 2>&1 &
    echo \$! >"$tmp/rogue.pid"
    # Until its hello was answered: it hangs (welcomed) or exits (refused).
    i=0
    while ! grep -q 'server_client' "$tmp/rogue.log" && [ \$i -lt 100 ]; do
        sleep 0.1
        i=\$((i + 1))
    done
fi
exec "$CLIENT" --rank "\$rank" --nranks 2 --steps 4
EOF
chmod +x "$tmp/solver.sh"

cat >"$tmp/study.json" <<EOF
{
  "study": {"name": "hijack", "seed": 3, "output_dir": "$tmp/out"},
  "parameters": [{"name": "a", "min": 0, "max": 1}],
  "sampler": {"kind": "uniform", "runs": 2},
  "solver": {"command": ["$tmp/solver.sh"], "ranks": 2, "timeout_s": 30,
             "retries": 0},
  "scheduler": {"mpirun": "$MPIRUN", "max_concurrent": 1},
  "reservoir": {"policy": "fifo", "capacity_bytes": "4MiB"}
}
EOF

tap_plan 4

# A token left in the launcher's environment must not reach the runs either.
SURGE_TOKEN=left-over timeout 120 "$SURGE" launch --quiet "$tmp/study.json" \
    >"$tmp/stdout" 2>"$tmp/stderr"
rc=$?
lib_check_launch_ok "$rc" "$tmp/stderr" "$tmp/out"
ok_runs=$(lib_json "$tmp/out/summary.json" 'j["runs"]["ok"]' 2>/dev/null)
check "both runs ok (got ${ok_runs:-no summary})" test "$ok_runs" = 2
if grep -q 'rejected' "$tmp/rogue.log" 2>/dev/null; then
    ok "the rogue hello as rank 1 of sim 1 was rejected"
else
    not_ok "the rogue hello as rank 1 of sim 1 was rejected"
    sed 's/^/# rogue: /' "$tmp/rogue.log" 2>/dev/null
fi
check "no run's environment holds the study token" \
    test -z "$(cat "$tmp"/env-* 2>/dev/null)"
tap_done
