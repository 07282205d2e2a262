#!/bin/sh
# tests/soak/launch_soak.sh - a fault soak of `surge launch` (by hand, not
# part of `make check`): TRIALS small studies with the trainer, each hit at
# a random moment by one fault: SIGKILL of the server, SIGKILL of one
# solver rank, SIGKILL of the launcher (then `surge launch --resume`) or
# SIGINT of the launcher (then --resume). A trial survives when the study
# ends with exit 0, every run ok, every step of every run assembled exactly
# once over all servers, the summary's identity and counts_add_up true, and
# nothing left running. Prints one line per trial and a JSON line.
#
#   SURGE_BUILDDIR=build SURGE_SRCDIR=. sh tests/soak/launch_soak.sh [TRIALS]
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"
lib_study_env
TRIALS=${1:-24}
RUNS=4
STEPS=30
launcher=
on_exit() { lib_kill_pids "$launcher"; }
cat >"$tmp/check.py" <<'PYEOF'
import json, sys
out, runs, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = json.load(open(f"{out}/summary.json"))
sm = s["samples"]
rhs = (sm["trained_on"] + sm["discarded_after_training"] +
       sm["never_served"] + sm["validation"] + sm["dropped"])
bad = []
if s["runs"]["ok"] != runs: bad.append(f"runs ok {s['runs']['ok']}")
if not s["counts_add_up"]: bad.append("counts_add_up false")
if sm["received"] != rhs: bad.append(f"identity {sm['received']} != {rhs}")
if sm["assembled"] != runs * steps: bad.append(f"assembled {sm['assembled']}")
if s["errors"]: bad.append(f"errors {s['errors']}")
print("; ".join(bad) if bad else
      f"ok (restarts {s['server']['restarts']}, "
      f"carried {sm['carried_from_checkpoint']}, "
      f"lost {sm['lost_with_dead_servers']}, "
      f"rerun {s['runs']['rerun_after_restart']}, "
      f"resumed {s['runs']['resumed_ok']})")
sys.exit(1 if bad else 0)
PYEOF
survived=0
t_start=$(date +%s)
trial=1
while [ $trial -le "$TRIALS" ]; do
    out="$tmp/out$trial"
    cat >"$tmp/study.json" <<EOF
{
  "study": {"name": "soak", "seed": $trial, "output_dir": "$out"},
  "parameters": [
$(heat2d_params)
  ],
  "sampler": {"runs": $RUNS},
  "solver": {"command": ["$HEAT", "--nx", "8", "--ny", "8", "--steps",
                         "$STEPS", "--step-delay-ms", "30"],
             "ranks": 2, "retries": 2, "client_timeout_s": 5},
  "scheduler": {"mpirun": "$MPIRUN", "max_concurrent": 2,
                "kill_grace_s": 2},
  "server": {"ping_interval_s": 0.3, "restarts": 3},
  "reservoir": {"policy": "fifo", "capacity_bytes": "4MiB"},
  "trainer": {"enabled": true, "layers": [16], "batch_size": 4,
              "threads": 1, "time_min": 0, "time_max": 1,
              "out_norm_samples": 8, "eval_every": 1000,
              "checkpoint_every": 3, "steps_after_end": 10}
}
EOF
    fault=$(( $(od -An -N2 -tu2 /dev/urandom) % 4 ))
    delay_ms=$(( 300 + $(od -An -N2 -tu2 /dev/urandom) % 5000 ))
    "$SURGE" launch --quiet "$tmp/study.json" >"$tmp/stdout" \
        2>"$tmp/stderr" &
    launcher=$!
    sleep "$(echo "$delay_ms" | awk '{printf "%.3f", $1 / 1000}')"
    what=
    case $fault in
    0) p=$(lib_json "$out/server.json" 'j["pid"]' 2>/dev/null)
       [ -n "$p" ] && kill -KILL "$p" 2>/dev/null && what="server SIGKILL" ;;
    1) # A rank of this study (libtool may run it from .libs/).
       p=$(ps -eo pid=,args= | grep -F "$SURGE_BUILDDIR/solvers/heat2d/" |
           grep -v -e grep -e mpirun | awk 'NR == 1 {print $1}')
       [ -n "$p" ] && kill -KILL "$p" 2>/dev/null && what="rank SIGKILL" ;;
    2) kill -KILL "$launcher" 2>/dev/null && what="launcher SIGKILL" ;;
    3) kill -INT "$launcher" 2>/dev/null && what="launcher SIGINT" ;;
    esac
    lib_wait_exit "$launcher" 1200
    launcher=
    rc=$status
    if [ "$fault" -ge 2 ] && [ -n "$what" ]; then
        # The launcher is gone (its runs and server with it): continue.
        sleep 0.5
        timeout 120 "$SURGE" launch --quiet --resume "$tmp/study.json" \
            >"$tmp/stdout" 2>"$tmp/stderr"
        rc=$?
    fi
    [ -n "$what" ] || what="fault $fault found no process"
    left=$(ps -eo pid=,args= | grep -F "$tmp" | grep -v -e grep -e "ps -eo" |
        grep -c .)
    if [ "$rc" = 0 ] && msg=$("$PY" "$tmp/check.py" "$out" $RUNS $STEPS) &&
        [ "$left" -eq 0 ]; then
        survived=$((survived + 1))
        echo "trial $trial: $what at ${delay_ms} ms: $msg"
    else
        msg=$("$PY" "$tmp/check.py" "$out" $RUNS $STEPS 2>&1)
        echo "trial $trial: $what at ${delay_ms} ms: FAILED (exit $rc, $left left): $msg"
        tail -5 "$tmp/stderr" | sed 's/^/#   /'
    fi
    rm -rf "$out"
    trial=$((trial + 1))
done
t_end=$(date +%s)
echo "{\"bench\": \"launch_soak\", \"trials\": $TRIALS, \"survived\": $survived, \"wall_s\": $((t_end - t_start))}"
[ "$survived" -eq "$TRIALS" ]
