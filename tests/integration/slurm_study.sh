#!/bin/bash
# tests/integration/slurm_study.sh - a whole heat2d study through `surge
# launch` with scheduler "slurm", on a real Slurm (munged, slurmctld and
# slurmd from Debian's packages) that this test starts with
# deploy/slurm-local.sh under its own temporary folder, on free ports, and
# stops on exit.
#
# 6 runs x 2 ranks go to Slurm as one job array (array_threshold 4); each
# rank runs under `srun --mpi=pmix`. Once one run has sent some steps, its
# array task is cancelled from outside with scancel: the launcher must see
# it end CANCELLED, retry the run as a new job, and the study must finish
# with every run ok, every step assembled exactly once (the server's
# checksum log), and the counts of summary.json adding up. Also: Slurm
# refusing the options (a partition that does not exist) stops `surge
# launch` at once with sbatch's own message, `sacct -c` lists the cancelled
# job, and nothing is left running afterwards.
#
# Skips (1..0 # SKIP) when not root or when the Slurm packages are missing
# (deploy/slurm-local.sh install). About 30 s on 2 cores.
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"

lib_slurm_need munged slurmctld slurmd sbatch squeue scancel scontrol sacct srun
lib_need "$SURGE" "$HEAT" "$PY"
lib_full_stacks
lib_slurm_tmpdir /tmp/surge-slurm-test.XXXXXX 16
launch_pid=
on_exit() { lib_term_wait "$launch_pid"; }

tap_plan 14

lib_slurm_start

RUNS=6
RANKS=2
STEPS=40
study() { # study FILE OUTDIR PARTITION
    cat >"$1" <<EOF
{
  "study": {"name": "slurm-test", "seed": 11, "output_dir": "$2",
            "progress_interval_s": 2},
  "parameters": [
$(heat2d_params)
  ],
  "sampler": {"kind": "lhs", "runs": $RUNS},
  "solver": {
    "command": ["$HEAT", "--nx", "16", "--ny", "12", "--steps", "$STEPS",
                "--step-delay-ms", "100",
                "--checksums", "{output_dir}/solver-checksums.txt"],
    "ranks": $RANKS,
    "timeout_s": 60,
    "retries": 1
  },
  "scheduler": {
    "kind": "slurm",
    "max_concurrent": $RUNS,
    "slurm": {"partition": "$3", "time_limit": "5:00",
              "array_threshold": 4, "poll_interval_s": 0.5}
  },
  "server": {"checksum_log": true},
  "reservoir": {"policy": "fifo", "capacity_bytes": "16MiB"},
  "trainer": {"enabled": false}
}
EOF
}

# 1. Slurm refuses the options: surge launch stops before running anything.
study "$tmp/bad.json" "$tmp/bad" nope
timeout 60 "$SURGE" launch --quiet "$tmp/bad.json" >"$tmp/bad.out" 2>&1
rc=$?
if [ "$rc" -eq 2 ] && grep -q "invalid partition" "$tmp/bad.out"; then
    ok "an unknown partition stops surge launch (exit 2, sbatch's message)"
else
    not_ok "an unknown partition stops surge launch (exit $rc)"
    sed 's/^/# /' "$tmp/bad.out" | tail -10
fi

# 2. The study, with one run cancelled mid-way.
study "$tmp/study.json" "$tmp/out" local
timeout 240 "$SURGE" launch "$tmp/study.json" >"$tmp/stdout" 2>"$tmp/stderr" &
launch_pid=$!

# The first array task: which run it is comes from the dispatcher script
# ("0) exec /bin/bash '<run dir>/slurm-job-1.sh' ;;").
victim='' sim='' job=''
for _ in $(seq 1 600); do
    # Each is looked up until found: the dispatcher script can exist
    # before squeue lists the array's first task (a loaded machine).
    if [ -z "$sim" ] && [ -f "$tmp/out/runs/slurm-array-1.sh" ]; then
        sim=$(sed -n "s|^0) exec /bin/bash '$tmp/out/runs/\([0-9]*\)/.*|\1|p" \
            "$tmp/out/runs/slurm-array-1.sh")
    fi
    if [ -n "$sim" ] && [ -z "$job" ]; then
        job=$(squeue -h -r -o '%i|%j' | sed -n 's/^\([0-9]*\)_0|surge-slurm-test-.*/\1/p')
    fi
    # Mid-way: both ranks of that run have done at least 8 steps.
    if [ -n "$sim" ] && [ -n "$job" ] && [ -f "$tmp/out/solver-checksums.txt" ] &&
       [ "$(awk -v s="$sim" '$1 == s && $3 >= 8' "$tmp/out/solver-checksums.txt" | wc -l)" -ge 2 ]; then
        victim=${job}_0
        break
    fi
    kill -0 "$launch_pid" 2>/dev/null || break
    sleep 0.1
done
if [ -n "$victim" ] && timeout 30 scancel "$victim"; then
    ok "scancel $victim (run $sim) mid-way"
else
    not_ok "scancel a run mid-way (sim '$sim', job '$job')"
fi

wait "$launch_pid"
rc=$?
launch_pid=
lib_check_launch_ok "$rc" "$tmp/stderr" "$tmp/out"

check "the runs went to Slurm as one job array" \
    grep -q "job array $job: $RUNS runs" "$tmp/stderr"
state=$(squeue -h -r -t all -j "$victim" -o %T 2>/dev/null)
check "Slurm says $victim was CANCELLED ($state)" test "$state" = CANCELLED
check "the launcher saw it cancelled and retried run $sim" \
    grep -q "sim $sim: retry" "$tmp/stderr"
check "run $sim has a second attempt log" \
    test -f "$tmp/out/runs/$sim/attempt-2.log"
check "the retry ran as a job of its own (slurm-job-2.exit = 0)" \
    grep -qx 0 "$tmp/out/runs/$sim/slurm-job-2.exit"

cat >"$tmp/check.py" <<'PYEOF'
import json, sys
out, runs, ranks, steps, what = sys.argv[1], *map(int, sys.argv[2:5]), sys.argv[5]

def fail(msg):
    print(msg)
    sys.exit(1)

if what == "summary":
    s = json.load(open(f"{out}/summary.json"))
    n = runs * steps
    smp, r = s["samples"], s["runs"]
    checks = {
        "counts_add_up": s["counts_add_up"] is True,
        "runs ok": r["ok"] == runs and r["failed"] == 0 and r["cancelled"] == 0,
        "attempts": r["attempts"] == runs + 1,
        "retried_ok": r["retried_ok"] == 1,
        "assembled": smp["assembled"] == n,
        "train+validation": smp["train"] + smp["validation"] == n,
        "consumed+in_store": smp["consumed"] + smp["in_store"] == smp["train"],
        "dropped": smp["dropped"] == 0,
        "received": smp["received"] == n,
    }
    bad = [k for k, v in checks.items() if not v]
    if bad:
        fail(f"summary.json: {bad}: runs {json.dumps(r)[:400]} "
             f"samples {json.dumps(smp)[:400]}")
PYEOF
lib_check_server_once "$tmp/out" $RUNS $STEPS
lib_py_checks "$tmp/check.py" "$tmp/out $RUNS $RANKS $STEPS" summary

# The job completion log (no slurmdbd here: plain sacct would fail). It
# knows array tasks by their own job ids only (2_0 is job 3, say).
internal=$(scontrol -o show job "$victim" 2>/dev/null | sed -n 's/^JobId=\([0-9]*\) .*/\1/p')
sacct_state=$(sacct -c -n -P -o JobID,State 2>/dev/null |
    awk -F'|' -v j="$internal" '$1 == j {print $2}')
check "sacct -c lists task $victim (job $internal) as CANCELLED ($sacct_state)" \
    test "$sacct_state" = CANCELLED

active=$(squeue -h -o %i 2>/dev/null | wc -l)
check "no job left in the queue ($active)" test "$active" -eq 0
timeout 120 bash "$SLURM_LOCAL" stop >/dev/null 2>&1
left=$(ps -eo pid=,args= | grep -F "$tmp" | grep -v -e grep -e "ps -eo" | wc -l)
check "no process left behind after stopping Slurm ($left)" test "$left" -eq 0

tap_done
