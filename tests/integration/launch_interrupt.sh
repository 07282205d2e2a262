#!/bin/sh
# tests/integration/launch_interrupt.sh - Ctrl-C (SIGINT) and SIGTERM in the
# middle of a study: `surge launch` stops every run (mpirun and its ranks,
# which Open MPI puts in process groups of their own) and the server, still
# writes summary.json (interrupted, counts that add up: partial steps
# dropped with a reason), exits 1, and leaves no process behind: none of
# the process groups or sessions seen during the study has a member left.
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"
lib_study_env
launcher=
on_exit() { [ -n "$launcher" ] && kill -9 "$launcher" 2>/dev/null; }

# study NAME: long runs (a slow solver) so the signal lands mid-study.
study() {
    cat >"$tmp/$1.json" <<EOF
{
  "study": {"name": "$1", "output_dir": "$tmp/$1"},
  "parameters": [
$(heat2d_params)
  ],
  "sampler": {"runs": 6},
  "solver": {"command": ["$HEAT", "--nx", "16", "--ny", "8", "--steps",
                         "100000", "--step-delay-ms", "20", "--checksums",
                         "{run_dir}/checksums.txt"],
             "ranks": 2},
  "scheduler": {"mpirun": "$MPIRUN", "max_concurrent": 2,
                "kill_grace_s": 3},
  "reservoir": {"policy": "fifo", "capacity_bytes": "16MiB"}
}
EOF
}

# Every process group and session id of the processes whose command line
# names our folder (the server, mpirun, the ranks; not the launcher, which
# shares this script's group), one id per line.
groups() {
    ps -eo pgid=,sid=,args= | grep -F "$tmp" | grep -v grep |
        grep -v " launch --quiet " |
        awk '{print $1; print $2}' | sort -u
}

# run_and_signal NAME SIGNAL: start a study, wait until two runs send data,
# record the groups, send the signal to the launcher, wait for it.
run_and_signal() {
    study "$1"
    "$SURGE" launch --quiet "$tmp/$1.json" >"$tmp/$1.stdout" \
        2>"$tmp/$1.stderr" &
    launcher=$!
    n=0
    while [ $n -lt 300 ]; do
        # Both first runs are computing and sending.
        [ -s "$tmp/$1/runs/0/checksums.txt" ] &&
            [ -s "$tmp/$1/runs/1/checksums.txt" ] && break
        sleep 0.1
        n=$((n + 1))
    done
    sleep 0.5
    groups >"$tmp/$1.groups"
    kill -s "$2" "$launcher"
    lib_wait_exit "$launcher" 300
    launcher=
}

# left NAME: processes still in a group or session recorded for NAME
# (zombies excluded: they run nothing; reaping orphans is init's job).
left() {
    [ -s "$tmp/$1.groups" ] || { echo 999; return; }
    ps -eo pid=,pgid=,sid=,stat= >"$tmp/ps.now"
    awk 'NR == FNR { g[$1] = 1; next }
         (($2 in g) || ($3 in g)) && $4 !~ /^Z/' \
        "$tmp/$1.groups" "$tmp/ps.now" | wc -l
}

cat >"$tmp/check.py" <<'PYEOF'
import json, sys
s = json.load(open(sys.argv[1]))
sig = int(sys.argv[2])
r = s["runs"]
ok = (s["interrupted"] == sig and s["counts_add_up"] is True
      and r["ok"] == 0 and r["cancelled"] == 6 and r["failed"] == 0
      and s["samples"]["assembled"] > 0
      and s["server"]["stats"]["stop_reason"] == "stop")
if not ok:
    print(json.dumps(s)[:800])
    sys.exit(1)
PYEOF

tap_plan 10
for sig in INT TERM; do
    num=2
    [ "$sig" = TERM ] && num=15
    run_and_signal "s$sig" "$sig"
    check "SIG$sig: the launcher exits 1 (got $status)" test "$status" = 1
    check "SIG$sig: groups of the server and runs were seen" \
        test "$(wc -l <"$tmp/s$sig.groups")" -ge 4
    n=$(left "s$sig")
    check "SIG$sig: no process left in those groups or sessions ($n)" \
        test "$n" -eq 0
    if msg=$("$PY" "$tmp/check.py" "$tmp/s$sig/summary.json" $num 2>&1); then
        ok "SIG$sig: summary.json says interrupted, counts add up"
    else
        not_ok "SIG$sig: summary.json says interrupted, counts add up"
        diag "$msg"
    fi
    check "SIG$sig: the table shows the cancelled runs" \
        grep -q "0 ok, 0 failed, 6 cancelled" "$tmp/s$sig.stdout"
done

tap_done
