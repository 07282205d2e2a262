#!/bin/bash
# tests/integration/slurm_queue_wait.sh - a run that waits in the Slurm
# queue is not "silent": solver.timeout_s counts from when its job starts
# running, not from when it was submitted. On a real cluster a job may
# pend for hours; killing it as silent would fail every run behind a busy
# queue.
#
# A real single-machine Slurm (deploy/slurm-local.sh, its own folder, free
# ports) announces 2 CPUs; the study has 2 runs of 2 ranks, each about 8 s
# long, so the second waits about 8 s in the queue (reason Resources),
# longer than solver.timeout_s = 5. Both runs must succeed at their first
# attempt. Skips without root or the Slurm packages.
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"

lib_slurm_need munged slurmctld slurmd sbatch squeue scancel scontrol srun
lib_need "$SURGE" "$HEAT" "$PY"
lib_full_stacks
lib_slurm_tmpdir /tmp/surge-slurm-wait.XXXXXX 2
launch_pid=
on_exit() { lib_term_wait "$launch_pid"; }

tap_plan 5

lib_slurm_start

cat >"$tmp/study.json" <<EOF
{
  "study": {"name": "slurm-wait", "seed": 3, "output_dir": "$tmp/out"},
  "parameters": [
$(heat2d_params)
  ],
  "sampler": {"kind": "uniform", "runs": 2},
  "solver": {
    "command": ["$HEAT", "--nx", "16", "--ny", "12", "--steps", "40",
                "--step-delay-ms", "200"],
    "ranks": 2,
    "timeout_s": 5,
    "retries": 0
  },
  "scheduler": {
    "kind": "slurm",
    "max_concurrent": 2,
    "slurm": {"array_threshold": 0, "poll_interval_s": 0.5}
  },
  "reservoir": {"policy": "fifo", "capacity_bytes": "16MiB"},
  "trainer": {"enabled": false}
}
EOF

timeout 120 "$SURGE" launch "$tmp/study.json" >"$tmp/stdout" 2>"$tmp/stderr" &
launch_pid=$!
# Evidence that one run really waited: squeue shows a job pending for lack
# of resources while the other runs.
pending=''
for _ in $(seq 1 100); do
    pending=$(squeue -h -t PD -o '%i|%r' 2>/dev/null | grep -m1 'Resources')
    [ -n "$pending" ] && break
    kill -0 "$launch_pid" 2>/dev/null || break
    sleep 0.1
done
wait "$launch_pid"
rc=$?
launch_pid=
check "one run waited in the queue (${pending:-none seen})" test -n "$pending"
if [ "$rc" -eq 0 ]; then
    ok "surge launch exits 0"
else
    not_ok "surge launch exits 0 (got $rc)"
    grep -E 'warn|error' "$tmp/stderr" | sed 's/^/# /' | tail -10
fi
check "no run was killed as silent" sh -c "! grep -q 'silent for' '$tmp/stderr'"
if msg=$("$PY" - "$tmp/out/summary.json" <<'PYEOF' 2>&1
import json, sys
s = json.load(open(sys.argv[1]))
r = s["runs"]
bad = []
if not (r["ok"] == 2 and r["failed"] == 0 and r["attempts"] == 2):
    bad.append(f"runs {r}")
if s["samples"]["assembled"] != 80 or not s["counts_add_up"]:
    bad.append(f"samples {s['samples']}")
if bad:
    print("; ".join(bad)[:600])
    sys.exit(1)
PYEOF
); then
    ok "summary.json: 2 runs ok at their first attempt, 80 samples"
else
    not_ok "summary.json: 2 runs ok at their first attempt, 80 samples"
    diag "$msg"
fi

tap_done
