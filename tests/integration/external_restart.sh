#!/bin/sh
# tests/integration/external_restart.sh - an external PyTorch consumer
# (surge.torch) through a server restart: `surge launch` runs a heat2d
# study with trainer.kind external and checkpoints every second; once a
# checkpoint exists and the consumer has taken batches, the server is
# killed with SIGKILL. The launcher restarts it from its checkpoint
# (reservoir, record, counts); the consumer, still running, notices the
# silence, finds the new server in server.json and carries on; the study
# completes with every run ok and its counts adding up across the restart
# (the rows served before it are in the new server's carried counts and in
# summary.json), and the consumer acked no fewer rows than were counted.
# Skips without Debian's torch, numpy and zmq.
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"
lib_study_env
if ! timeout 60 "$PY" -c 'import torch, numpy, zmq' >/dev/null 2>&1; then
    skip_all "no torch/numpy/zmq in $PY"
fi
PYTHONPATH="$SURGE_SRCDIR/python"
PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH PYTHONDONTWRITEBYTECODE
launcher=
consumer=
on_exit() { lib_kill_pids "$launcher" "$consumer"; }

cat >"$tmp/study.json" <<EOF
{
  "study": {"name": "external-restart", "output_dir": "$tmp/out"},
  "parameters": [
$(heat2d_params)
  ],
  "sampler": {"runs": 6},
  "solver": {"command": ["$HEAT", "--nx", "16", "--ny", "16", "--steps",
                         "80", "--step-delay-ms", "25"],
             "ranks": 1, "retries": 0, "client_timeout_s": 5},
  "scheduler": {"mpirun": "$MPIRUN", "max_concurrent": 2,
                "kill_grace_s": 2},
  "server": {"ping_interval_s": 0.5, "restarts": 1,
             "args": ["--checkpoint-interval", "1",
                      "--external-timeout", "10"]},
  "reservoir": {"policy": "firo", "capacity_bytes": "16MiB"},
  "trainer": {"enabled": true, "kind": "external", "batch_size": 8}
}
EOF

# The consumer: takes every batch until the study ends, a little slower
# than the runs produce, and reports what it received.
cat >"$tmp/consume.py" <<'EOF'
import json, sys, time, warnings
from surge.torch import ReservoirDataset
warnings.simplefilter("ignore")
ds = ReservoirDataset(sys.argv[1], timeout_s=2, reconnect_timeout_s=60)
for b in ds:
    float(b.y.sum())
    open(sys.argv[2], "w").write("%d\n" % ds.batches)
    time.sleep(0.01)
r = {"rows": ds.rows, "batches": ds.batches, "ended": ds.ended,
     "reconnects": ds.reconnects, "transport": ds.transport}
ds.close()
print(json.dumps(r))
EOF

tap_plan 6

"$SURGE" launch --quiet "$tmp/study.json" >"$tmp/stdout" 2>"$tmp/stderr" &
launcher=$!
lib_wait_file "$tmp/out/server.json" 60
timeout 200 "$PY" "$tmp/consume.py" "$tmp/out/server.json" "$tmp/batches" \
    >"$tmp/consumer.out" 2>"$tmp/consumer.err" &
consumer=$!
# Kill it once a checkpoint was taken after the consumer's fifth batch (so
# the checkpoint holds rows served to it).
n=0
while [ $n -lt 600 ]; do
    [ -s "$tmp/batches" ] && [ "$(cat "$tmp/batches")" -ge 5 ] 2>/dev/null &&
        break
    sleep 0.1
    n=$((n + 1))
done
touch "$tmp/mark"
newer() {
    "$PY" -c 'import os, sys
sys.exit(0 if os.stat(sys.argv[1]).st_mtime_ns > os.stat(sys.argv[2]).st_mtime_ns else 1)' \
        "$1" "$2" 2>/dev/null
}
n=0
while [ $n -lt 300 ] && ! newer "$tmp/out/external-checkpoint.bin" "$tmp/mark"
do
    sleep 0.1
    n=$((n + 1))
done
old=$(lib_json "$tmp/out/server.json" 'j["pid"]' 2>/dev/null)
if [ -n "$old" ] && kill -0 "$old" 2>/dev/null &&
    newer "$tmp/out/external-checkpoint.bin" "$tmp/mark"; then
    kill -9 "$old"
    ok "killed the server (pid $old) mid-stream, after a checkpoint"
else
    not_ok "the server was running mid-stream with a checkpoint"
fi
lib_wait_exit "$launcher" 600
launcher=
check "the study completes: exit 0 (got $status)" test "$status" = 0
[ "$status" = 0 ] || sed 's/^/# /' "$tmp/stderr" | tail -20
check "the new server resumed from the checkpoint" \
    grep -q "resuming from .*external-checkpoint.bin" "$tmp/out/server.log"
lib_wait_exit "$consumer" 120
consumer=
check "the consumer survived the restart and ended with the study" \
    test "$status" = 0
[ "$status" = 0 ] || sed 's/^/# /' "$tmp/consumer.err" | tail -10

cat >"$tmp/check.py" <<'PYEOF'
import json, sys
out, cons = sys.argv[1], json.loads(open(sys.argv[2]).read().splitlines()[-1])
s = json.load(open(out + "/summary.json"))
st = json.load(open(out + "/server-stats.json"))
what = sys.argv[3]
ext = st["external"]
carried = ext.get("carried_counts", {})
if what == "consumer":
    assert cons["reconnects"] == 1 and cons["ended"], cons
    print("consumer: %d rows in %d batches, %d reconnect (%s)" %
          (cons["rows"], cons["batches"], cons["reconnects"],
           cons["transport"]))
elif what == "counts":
    assert s["server"]["restarts"] == 1 and not s["server"]["failed"], s
    assert s["runs"]["ok"] == 6 and s["counts_add_up"] is True, s
    before = carried["external"]["rows_served"]
    assert before > 0, carried  # rows served before the restart count
    served = before + ext["rows_served"]
    assert s["samples"]["rows_served"] == served, (s["samples"], ext)
    acked = carried["external"]["rows_acked"] + ext["rows_acked"]
    # What the consumer acked the servers counted; what it received from
    # the dead server after its last checkpoint is not in the counts.
    assert acked <= cons["rows"], (acked, cons)
    # The store's counters come back with the reservoir state.
    assert st["store"]["taken"] == served, (st["store"], served)
    print("rows served %d (%d before the restart), acked %d, unacked %d; "
          "consumer received %d" % (served, before, acked,
          carried["external"]["rows_unacked"] + ext["rows_unacked"],
          cons["rows"]))
PYEOF
for what in consumer counts; do
    if msg=$("$PY" "$tmp/check.py" "$tmp/out" "$tmp/consumer.out" $what 2>&1)
    then
        ok "$what"
        diag "$msg"
    else
        not_ok "$what"
        diag "$msg"
    fi
done
tap_done
