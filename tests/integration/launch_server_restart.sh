#!/bin/sh
# tests/integration/launch_server_restart.sh - the server killed with
# SIGKILL in the middle of a study: `surge launch` notices (the process is
# gone), kills what is left of its session, starts a new server (a new
# endpoint, never two at once), runs again the runs that were talking to
# the dead one (without using up their retries), and the study completes:
# every run ok, the new server's counts add up, one restart in
# summary.json, no process left behind.
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"
lib_study_env
launcher=
on_exit() { [ -n "$launcher" ] && kill -9 "$launcher" 2>/dev/null; }

cat >"$tmp/study.json" <<EOF
{
  "study": {"name": "restart", "output_dir": "$tmp/out"},
  "parameters": [
$(heat2d_params)
  ],
  "sampler": {"runs": 5},
  "solver": {"command": ["$HEAT", "--nx", "16", "--ny", "8", "--steps",
                         "60", "--step-delay-ms", "20", "--checksums",
                         "{run_dir}/checksums-{attempt}.txt"],
             "ranks": 2, "retries": 0, "client_timeout_s": 5},
  "scheduler": {"mpirun": "$MPIRUN", "max_concurrent": 2,
                "kill_grace_s": 2},
  "server": {"ping_interval_s": 0.5, "restarts": 1},
  "reservoir": {"policy": "fifo", "capacity_bytes": "16MiB"}
}
EOF

tap_plan 7

"$SURGE" launch --quiet "$tmp/study.json" >"$tmp/stdout" 2>"$tmp/stderr" &
launcher=$!
n=0
while [ $n -lt 300 ]; do
    [ -s "$tmp/out/runs/0/checksums-1.txt" ] && [ -s "$tmp/out/server.json" ] &&
        break
    sleep 0.1
    n=$((n + 1))
done
old=$(lib_json "$tmp/out/server.json" 'j["pid"]' 2>/dev/null)
if [ -n "$old" ] && kill -0 "$old" 2>/dev/null; then
    kill -9 "$old"
    ok "killed the server (pid $old) with SIGKILL mid-study"
else
    not_ok "the server was running mid-study"
fi
lib_wait_exit "$launcher" 1200
launcher=
check "the study completes: exit 0 (got $status)" test "$status" = 0
[ "$status" = 0 ] || sed 's/^/# /' "$tmp/stderr" | tail -20
check "the launcher said it restarted the server" \
    grep -q "server restarted (1 of 1)" "$tmp/stderr"
new=$(lib_json "$tmp/out/server.json" 'j["pid"]' 2>/dev/null)
check "a new server wrote server.json ($old -> $new)" \
    test -n "$new" -a "$new" != "$old"

cat >"$tmp/check.py" <<'PYEOF'
import json, sys
s = json.load(open(sys.argv[1]))
r = s["runs"]
ok = (s["server"]["restarts"] == 1 and not s["server"]["failed"]
      and r["ok"] == 5 and r["failed"] == 0 and r["attempts"] > 5
      and s["counts_add_up"] is True
      and s["samples"]["assembled"] >= 60
      and s["samples"]["assembled"] + s["samples"]["lost_with_dead_servers"]
          >= 5 * 60)
if not ok:
    print(json.dumps({k: s[k] for k in ("runs", "samples", "server")
                      if k in s})[:900])
    sys.exit(1)
PYEOF
if msg=$("$PY" "$tmp/check.py" "$tmp/out/summary.json" 2>&1); then
    ok "summary.json: 1 restart, all runs ok, counts add up"
else
    not_ok "summary.json: 1 restart, all runs ok, counts add up"
    diag "$msg"
fi
check "the old server's process is gone" test -n "$old" -a ! -d "/proc/$old"
left=$(ps -eo pid=,args= | grep -F "$tmp" | grep -v grep | grep -cv "ps -eo")
check "no process left behind ($left)" test "$left" -eq 0

tap_done
