#!/bin/bash
# tests/integration/launch_slurm_server.sh - scheduler "slurm" with
# scheduler.slurm.server_as_job: the server itself runs as a Slurm job
# (srun in the foreground, supervised by the launcher) next to the runs'
# jobs, on a real single-machine Slurm that this test starts with
# deploy/slurm-local.sh (free ports, its own folder) and stops on exit.
# Checks: the study completes with every run ok and the counts adding up,
# Slurm ran a job "<name>-server" that COMPLETED, and neither jobs nor
# processes are left. Then the same study inside an allocation (surge
# launch in an sbatch job): the server is a job step "<name>-server" of
# it, next to the runs' steps (all with --exact, so they run side by side),
# and the study completes with the counts adding up. Skips without root or
# the Slurm packages.
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"

lib_slurm_need munged slurmctld slurmd sbatch squeue scancel scontrol srun
lib_need "$SURGE" "$HEAT" "$PY"
lib_full_stacks
lib_slurm_tmpdir /tmp/surge-slurm-server.XXXXXX 8

tap_plan 9

lib_slurm_start

cat >"$tmp/study.json" <<EOF
{
  "study": {"name": "slurm-server", "output_dir": "$tmp/out"},
  "parameters": [
$(heat2d_params)
  ],
  "sampler": {"runs": 3},
  "solver": {"command": ["$HEAT", "--nx", "16", "--ny", "8", "--steps", "20"],
             "ranks": 2, "retries": 0},
  "scheduler": {"kind": "slurm", "max_concurrent": 3,
                "slurm": {"time_limit": "5:00", "poll_interval_s": 0.5,
                          "array_threshold": 0, "server_as_job": true}},
  "server": {"start_timeout_s": 60},
  "reservoir": {"policy": "fifo", "capacity_bytes": "16MiB"}
}
EOF

timeout 300 "$SURGE" launch --quiet "$tmp/study.json" >"$tmp/stdout" \
    2>"$tmp/stderr"
rc=$?
check "surge launch exits 0 (got $rc)" test "$rc" -eq 0
[ "$rc" -eq 0 ] || sed 's/^/# /' "$tmp/stderr" | tail -20

if "$PY" - "$tmp/out/summary.json" <<'PYEOF'
import json, sys
s = json.load(open(sys.argv[1]))
ok = (s["counts_add_up"] and s["runs"]["ok"] == 3
      and s["samples"]["assembled"] == 3 * 20)
sys.exit(0 if ok else 1)
PYEOF
then
    ok "summary.json: 3 runs ok, 60 samples, counts add up"
else
    not_ok "summary.json: 3 runs ok, 60 samples, counts add up"
fi
state=$(squeue -h -t all -o '%j %T' | awk '$1 ~ /-server$/ {print $2}')
check "the server ran as a Slurm job that COMPLETED ($state)" \
    test "$state" = COMPLETED
# Inside an allocation: the server is a job step of the launcher's job.
sed "s|$tmp/out|$tmp/alloc|; s|\"slurm-server\"|\"alloc\"|" "$tmp/study.json" \
    >"$tmp/alloc.json"
printf '#!/bin/sh\n"%s" launch --quiet "%s"\necho "launch rc=$?"\n' \
    "$SURGE" "$tmp/alloc.json" >"$tmp/alloc.sh"
chmod +x "$tmp/alloc.sh"
job=$(sbatch --parsable -n 5 --time=5:00 -o "$tmp/alloc.out" "$tmp/alloc.sh")
steps=
i=0
while [ $i -lt 1200 ] && squeue -h -j "$job" 2>/dev/null | grep -q .; do
    steps="$steps $(squeue -h -s -j "$job" -o %j 2>/dev/null | tr '\n' ' ')"
    sleep 0.1
    i=$((i + 1))
done
check "inside an allocation: surge launch exits 0" \
    grep -qx "launch rc=0" "$tmp/alloc.out"
grep -qx "launch rc=0" "$tmp/alloc.out" || sed 's/^/# /' "$tmp/alloc.out" | tail
case "$steps" in
*alloc-server*) ok "the server ran as job step alloc-server of job $job" ;;
*) not_ok "the server ran as job step alloc-server of job $job (saw: $(echo "$steps" | tr -s ' ' | cut -c1-200))" ;;
esac
check "inside an allocation: 3 runs ok, 60 samples, counts add up" \
    "$PY" -c 'import json, sys
s = json.load(open(sys.argv[1]))
sys.exit(0 if s["counts_add_up"] and s["runs"]["ok"] == 3 and
         s["samples"]["assembled"] == 60 else 1)' "$tmp/alloc/summary.json"

left=$(squeue -h -t PENDING,RUNNING,COMPLETING | wc -l)
check "no job left in the queue ($left)" test "$left" -eq 0
n=$(ps -eo args= | grep -F -e "$tmp/out" -e "$tmp/alloc" | grep -cv grep)
check "no process left behind ($n)" test "$n" -eq 0

tap_done
