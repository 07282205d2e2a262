#!/bin/sh
# tests/integration/launch_server_ranks.sh - `surge launch` with the server
# as one MPI job of R ranks (R = $SERVER_RANKS, default 1 with
# server.launcher mpirun; launch_server_ranks2.sh runs it with
# server.ranks 2), on heat2d runs of 2 solver ranks. The server is one
# mpirun; with SERVER_SLURM=1 (launch_slurm_server_ranks.sh) it is a Slurm
# job of R tasks (scheduler.slurm.server_as_job, srun --mpi=pmix) on a
# local 2-node Slurm that this script starts (deploy/slurm-local.sh).
#   1. a study to the end: exit 0, server.json names R ranks and R
#      endpoints, every step of every run assembled exactly once across the
#      ranks, summary.json's counts add up; mpirun: the server's mpirun had
#      a tmp folder of its own (TMPDIR and Open MPI's tmpdir base, in every
#      rank), removed at the end, and the ranks were its children; Slurm:
#      the server was the job <name>-server of R tasks, COMPLETED;
#   2. the same with the trainer and checkpoints, and the highest server
#      rank killed with SIGKILL mid-study: mpirun (srun --kill-on-bad-exit)
#      ends the whole job, the launcher restarts the server whole (one
#      restart) with --resume from the checkpoint, every run ok, the counts
#      still add up, every step assembled; nothing left running;
#   3. mpirun with R > 1: server.bind_simulation true, every step of
#      simulation n assembled once, by rank n % R (checksums.log.rankN).
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"
R=${SERVER_RANKS:-1}
if [ -n "$SERVER_SLURM" ]; then
    lib_slurm_need munged slurmctld slurmd sbatch squeue scancel scontrol srun
    lib_need "$SURGE" "$HEAT" "$PY"
    lib_full_stacks
    lib_slurm_tmpdir /tmp/surge-slurm-ranks.XXXXXX 8
    SLURM_LOCAL_NODES=$R # one server rank per node
    export SLURM_LOCAL_NODES
    ranks="\"ranks\": $R, \"nodes\": $R"
    sched='"kind": "slurm", "max_concurrent": 2, "kill_grace_s": 2,
                "slurm": {"time_limit": "5:00", "poll_interval_s": 0.3,
                          "array_threshold": 0, "server_as_job": true}'
else
    lib_study_env
    lib_need "$(command -v "$MPIRUN")"
    [ "$R" -eq 1 ] && ranks='"launcher": "mpirun"' || ranks="\"ranks\": $R"
    sched="\"mpirun\": \"$MPIRUN\", \"max_concurrent\": 2, \"kill_grace_s\": 2"
fi
launcher=
on_exit() { lib_kill_pids "$launcher"; }
SURGE_LOG_LEVEL=info # the waits read "server pid N at" and "resuming"
TMPDIR="$tmp/t"      # where the server's mpirun folder must appear
export SURGE_LOG_LEVEL TMPDIR
mkdir -p "$TMPDIR"
RUNS=4
STEPS=30
# study NAME TRAINER [SERVER_KEYS]: 4 runs of 2 ranks, 30 steps each, 30 ms
# apart.
study() {
    cat >"$tmp/$1.json" <<EOF
{
  "study": {"name": "$1", "seed": 5, "output_dir": "$tmp/$1"},
  "parameters": [
$(heat2d_params)
  ],
  "sampler": {"runs": $RUNS},
  "solver": {"command": ["$HEAT", "--nx", "16", "--ny", "8", "--steps",
                         "$STEPS", "--step-delay-ms", "30"],
             "ranks": 2, "retries": 0, "client_timeout_s": 5},
  "scheduler": {$sched},
  "server": {$ranks, "ping_interval_s": 0.3, "restarts": 1,
             "checksum_log": true, "start_timeout_s": 60${3:+, $3}},
  "reservoir": {"policy": "fifo", "capacity_bytes": "4MiB"},
  "trainer": {"enabled": $2, "layers": [16], "batch_size": 4,
              "threads": 1, "time_min": 0, "time_max": 1,
              "out_norm_samples": 8, "eval_every": 1000,
              "checkpoint_every": 3, "steps_after_end": 10}
}
EOF
}

# rank_pid OUT RANK: the pid of server rank RANK of the study in OUT (its
# command line names OUT; mpirun or srun tells each process its rank).
rank_pid() {
    for d in /proc/[0-9]*; do
        tr '\0' ' ' 2>/dev/null <"$d/cmdline" | grep -q " serve .*$1" ||
            continue
        tr '\0' '\n' 2>/dev/null <"$d/environ" |
            grep -qx -e "OMPI_COMM_WORLD_RANK=$2" -e "SLURM_PROCID=$2" &&
            echo "${d#/proc/}" &&
            return 0
    done
    return 1
}

cat >"$tmp/check.py" <<'PYEOF'
import glob, json, sys
out, runs, steps, R, what = sys.argv[1], int(sys.argv[2]), \
    int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
s = json.load(open(f"{out}/summary.json"))
sm = s["samples"]
def fail(msg):
    print(msg + ": " + json.dumps({k: s.get(k) for k in
                                   ("runs", "samples", "server", "errors")})[:1500])
    sys.exit(1)
if s["runs"]["ok"] != runs or not s["counts_add_up"]:
    fail("not every run ok, or the counts do not add up")
if s["server"]["ranks"] != R:
    fail("summary.json's server.ranks")
if what.startswith("server.json"):
    j = json.load(open(f"{out}/server.json"))
    eps = j.get("endpoints", [j["endpoint"]])
    if j.get("ranks", 1) != R or len(eps) != R or len(set(eps)) != R:
        fail(f"server.json: {j}")
elif what.startswith("once"):
    # every (sim, step) assembled exactly once, whichever rank did it
    seen = {}
    for f in glob.glob(f"{out}/checksums.log*"):
        for line in open(f):
            sim, step, ck = line.split()
            seen[(int(sim), int(step))] = seen.get((int(sim), int(step)), 0) + 1
    want = {(r, t) for r in range(runs) for t in range(1, steps + 1)}
    if set(seen) != want or any(n != 1 for n in seen.values()):
        fail(f"assembled: {len(seen)} distinct of {len(want)}, "
             f"{sum(n > 1 for n in seen.values())} more than once")
    if sm["assembled"] != runs * steps:
        fail(f"assembled {sm['assembled']} != {runs} x {steps}")
elif what.startswith("bound"):
    # server.bind_simulation: rank n % R assembled every step of sim n
    for r in range(R):
        for line in open(f"{out}/checksums.log.rank{r}"):
            sim = int(line.split()[0])
            if sim % R != r:
                fail(f"sim {sim} step {line.split()[1]} on rank {r}")
elif what.startswith("restart"):
    if s["server"]["restarts"] != 1 or s["server"]["failed"]:
        fail("not exactly one restart")
    if sm["carried_from_checkpoint"] <= 0:
        fail("the new server carried nothing from the checkpoint")
    lhs = sm["received"]
    rhs = (sm["trained_on"] + sm["discarded_after_training"] +
           sm["never_served"] + sm["validation"] + sm["dropped"])
    if lhs != rhs:
        fail(f"identity: received {lhs} != {rhs}")
    if sm["assembled"] + sm["lost_with_dead_servers"] < runs * steps:
        fail("steps missing")
PYEOF

if [ -n "$SERVER_SLURM" ]; then
    tap_plan 10
    lib_slurm_start
elif [ "$R" -gt 1 ]; then
    tap_plan 15
else
    tap_plan 11
fi

# 1. To the end, no trainer.
study plain false
"$SURGE" launch --quiet "$tmp/plain.json" >"$tmp/plain.out" \
    2>"$tmp/plain.err" &
launcher=$!
tmpvar=
parent=
i=0
while [ -z "$SERVER_SLURM" ] && [ $i -lt 300 ] && [ -z "$parent" ]; do
    # the rank's parent, then its environment, while it still runs
    p=$(rank_pid "$tmp/plain" $((R - 1)))
    pp=$([ -n "$p" ] && ps -o ppid= -p "$p" | tr -d ' ')
    [ -n "$pp" ] && v=$(tr '\0' '\n' 2>/dev/null <"/proc/$p/environ" |
        grep '^OMPI_MCA_orte_tmpdir_base=') &&
        parent=$(ps -o comm= -p "$pp") && tmpvar=$v
    sleep 0.05
    i=$((i + 1))
done
lib_wait_exit "$launcher" 900
launcher=
lib_check_launch_ok "$status" "$tmp/plain.err" "$tmp/plain"
if [ -n "$SERVER_SLURM" ]; then
    st=$(squeue -h -t all -o '%j %T %D' |
        awk '$1 ~ /^surge-plain-.*-server$/ {print $2, $3}')
    check "the server ran as a Slurm job <name>-server on $R node(s), COMPLETED ($st)" \
        test "$st" = "COMPLETED $R"
else
    case "$tmpvar" in
    "OMPI_MCA_orte_tmpdir_base=$TMPDIR/surge-server-"*)
        ok "server rank $((R - 1)) ran with its mpirun's own tmp folder" ;;
    *) not_ok "server rank $((R - 1)) ran with its mpirun's own tmp folder ($tmpvar)" ;;
    esac
    check "the server's tmp folder is gone" \
        test -z "$(ls "$TMPDIR" | grep surge-server)"
    check "the server's ranks were children of one mpirun ($parent)" \
        test "$parent" = mpirun
fi
lib_py_checks "$tmp/check.py" "$tmp/plain $RUNS $STEPS $R" \
    "server.json: $R ranks, $R endpoints" \
    "once: every step assembled exactly once across $R rank(s), counts add up"

# 2. With the trainer; the last rank killed once a checkpoint exists.
study kill true
"$SURGE" launch --quiet "$tmp/kill.json" >"$tmp/kill.out" 2>"$tmp/kill.err" &
launcher=$!
victim=
if lib_wait_file "$tmp/kill/checkpoint.safetensors" 300; then
    victim=$(rank_pid "$tmp/kill" $((R - 1)))
fi
if [ -n "$victim" ] && kill -KILL "$victim"; then
    ok "killed server rank $((R - 1)) (pid $victim) with SIGKILL mid-study"
else
    not_ok "server rank $((R - 1)) running with a checkpoint written"
fi
lib_wait_exit "$launcher" 1200
launcher=
lib_check_launch_ok "$status" "$tmp/kill.err" "$tmp/kill"
check "the launcher restarted the whole server from the checkpoint" \
    grep -q "resuming from $tmp/kill/checkpoint.safetensors" "$tmp/kill.err"
lib_py_checks "$tmp/check.py" "$tmp/kill $RUNS $STEPS $R" \
    "restart: one restart, the counts still add up, no step missing"
left=$(ps -eo args= | grep -F -e "$tmp/kill" -e "$tmp/plain" | grep -v grep |
    grep -cv "ps -eo")
check "no process left behind ($left)" test "$left" -eq 0

# 3. server.bind_simulation: whole simulations per rank.
if [ -z "$SERVER_SLURM" ] && [ "$R" -gt 1 ]; then
    study bound false '"bind_simulation": true'
    timeout 120 "$SURGE" launch --quiet "$tmp/bound.json" \
        >"$tmp/bound.out" 2>"$tmp/bound.err"
    lib_check_launch_ok $? "$tmp/bound.err" "$tmp/bound"
    r=$(lib_json "$tmp/bound/server-stats.json" 'j["route"]' 2>/dev/null)
    check "bind_simulation: server-stats.json's route is sim (got $r)" \
        test "$r" = sim
    lib_py_checks "$tmp/check.py" "$tmp/bound $RUNS $STEPS $R" \
        "once: every step assembled exactly once across $R ranks" \
        "bound: every step of sim n on rank n % $R"
fi

tap_done
