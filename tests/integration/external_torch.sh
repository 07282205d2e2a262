#!/bin/sh
# tests/integration/external_torch.sh - PyTorch trains from a live heat2d
# study through `surge serve --consumer external` and surge.torch: the FNO
# example (solvers/heat2d/train_torch.py) consumes the stream to its end
# and reaches a held-out error below its untrained error; a second
# consumer dies after two batches, and the rows it was served but never
# acked are counted against it (served = acked + unacked per consumer,
# and the consumers' served rows add up to every sample the store took);
# a wrong token is refused. The trainer takes its batches in shared memory
# (the same host); the consumer that dies is forced onto ZeroMQ (the
# transfer a remote consumer gets), and nothing is left in /dev/shm. Skips
# without Debian's torch, numpy and zmq.
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"

lib_need "$SURGE" "$HEAT" "$PY"
if ! timeout 60 "$PY" -c 'import torch, numpy, zmq' >/dev/null 2>&1; then
    skip_all "no torch/numpy/zmq in $PY"
fi
lib_full_stacks
lib_tmpdir
PYTHONPATH="$SURGE_SRCDIR/python"
PYTHONDONTWRITEBYTECODE=1
SURGE_TOKEN=external-test-token
export PYTHONPATH PYTHONDONTWRITEBYTECODE SURGE_TOKEN
server_pid=
train_pid=
die_pid=
on_exit() { lib_kill_pids "$train_pid" "$die_pid"; lib_term_wait "$server_pid"; }

tap_plan 9

RUNS=8
EPOCHS=6
STEPS=30
timeout -k 5 100 "$SURGE" serve --output-dir "$tmp" --consumer external \
    --batch-size 16 --policy firo --epochs 6 --watermark 64 --validation-every 4 --external-timeout 10 \
    --field-shapes temperature=16x16 --exit-idle 15 --stop-timeout 60 \
    --log-level warn \
    >"$tmp/serve.log" 2>&1 &
server_pid=$!
lib_wait_file "$tmp/server.json"
endpoint=$(lib_json "$tmp/server.json" 'j["endpoint"]' 2>/dev/null)
ext=$(lib_json "$tmp/server.json" 'j["external"]["endpoint"]' 2>/dev/null)
case $ext in
tcp://127.0.0.1:*) ok "server.json gives the external endpoint ($ext)" ;;
*)
    not_ok "server.json gives the external endpoint"
    diag "$(cat "$tmp/serve.log")"
    ;;
esac

# A consumer that dies (no bye, no ack) right after its second batch.
cat >"$tmp/die.py" <<'EOF'
import os, sys, time
from surge.torch import ReservoirDataset
ds = ReservoirDataset(sys.argv[1], credit=2, timeout_s=40, transport="zmq")
open(sys.argv[2], "w").write("up\n")
for i, b in enumerate(ds):
    if i == 1:
        # The ack of batch 0 went out when batch 1 was asked for: give
        # ZeroMQ's I/O thread time to send it, then die holding batch 1.
        time.sleep(1)
        os._exit(0)
EOF
timeout 60 "$PY" "$tmp/die.py" "$tmp/server.json" "$tmp/die.up" \
    >"$tmp/die.out" 2>&1 &
die_pid=$!
timeout -s ABRT 80 "$PY" -X faulthandler "$SURGE_SRCDIR/solvers/heat2d/train_torch.py" \
    "$tmp/server.json" --model fno --out "$tmp/fno.pt" \
    >"$tmp/train.out" 2>"$tmp/train.err" &
train_pid=$!
lib_wait_file "$tmp/die.up" 300
sleep 1 # torch imported; both consumers are about to say hello

rc=0
s=0
while [ $s -lt $RUNS ]; do
    # Distinct boundary values per run (the LHS a study would draw).
    p="$((s * 13 % 100 + 1)),$((s * 37 % 100)),$((s * 53 % 100)),$((s * 71 % 100)),$((s * 29 % 100))"
    SURGE_ENDPOINT=$endpoint SURGE_SIM_ID=$s SURGE_PARAMS=$p \
        SURGE_TIMEOUT_MS=10000 timeout 60 "$MPIRUN" --oversubscribe -np 1 \
        "$HEAT" --nx 16 --ny 16 --steps $STEPS --dt 0.002 \
        >"$tmp/sim.out" 2>"$tmp/sim.err" || rc=1
    s=$((s + 1))
done
check "$RUNS heat2d runs complete" test $rc -eq 0

if SURGE_TOKEN=wrong timeout 30 "$PY" -c '
import sys
from surge.torch import ReservoirDataset, SurgeExternalError
try:
    ReservoirDataset(sys.argv[1], timeout_s=10).connect()
except SurgeExternalError as e:
    print(e); sys.exit(0 if "wrong study token" in str(e) else 1)
sys.exit(1)' "$tmp/server.json" >"$tmp/tok.out" 2>&1; then
    ok "a wrong token is refused"
else
    not_ok "a wrong token is refused"
    diag "$(cat "$tmp/tok.out")"
fi

# A raw peer that sends what surge.torch never would: each is answered
# with an error (or ignored) and counted; the server keeps serving.
if timeout 30 "$PY" - "$ext" >"$tmp/bad.out" 2>&1 <<'EOF'
import sys, zmq
from surge.torch import packb, unpackb
s = zmq.Context.instance().socket(zmq.DEALER)
s.setsockopt(zmq.LINGER, 0)
s.connect(sys.argv[1])
def ask(*frames):
    s.send_multipart(list(frames))
    while True:
        assert s.poll(10000), "no answer to %r" % (frames[:1],)
        h = unpackb(s.recv_multipart()[0])
        if h["type"] != "stats":
            return h
for f in [(b"\xc1",),                               # not msgpack
          (packb({"type": "credit", "n": 1}),),     # before hello
          (packb({"type": "hello"}),)]:             # no token
    h = ask(*f)
    assert h["type"] == "error", (f, h)
h = ask(packb({"type": "hello", "token": "external-test-token"}))
assert h["type"] == "welcome", h
for f in [(packb({"type": "nonsense"}),),
          (packb({"type": "validation", "start": 0, "count": 0}),),
          (packb({"type": "credit"}),),
          (packb({"type": "attach", "ok": True}),),  # nothing offered
          (b"\x92\x01\x02",),                      # an array, not a map
          (b"x" * 5000,)]:                          # header over 4 KiB
    h = ask(*f)
    assert h["type"] == "error", (f, h)
s.send_multipart([packb({"type": "ack", "id": 123456})])  # unknown batch
h = ask(packb({"type": "bye"}))
assert h["type"] == "bye", h
print("all refused")
EOF
then
    ok "malformed requests are refused, the server keeps serving"
else
    not_ok "malformed requests are refused, the server keeps serving"
    diag "$(cat "$tmp/bad.out")"
fi

# The server ends by itself 15 s after the last run (--exit-idle): end of
# reception, the store drains to the trainer, which gets "end".
lib_wait_exit "$train_pid" 900
train_pid=
check "the FNO example ends with the study" test "$status" -eq 0 ||
    diag "$(tail -25 "$tmp/train.err")"
lib_wait_exit "$server_pid" 300
check "server stops cleanly" test "$status" -eq 0 ||
    diag "$(tail -5 "$tmp/serve.log")"
left=$(ls /dev/shm 2>/dev/null | grep -c "^surge-$server_pid-")
check "no shared memory left behind" test "$left" -eq 0
server_pid=
wait "$die_pid" 2>/dev/null
die_pid=

cat >"$tmp/check.py" <<'EOF'
import json, sys
tmp, runs, steps, what = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
st = json.load(open(tmp + "/server-stats.json"))
tr = json.loads(open(tmp + "/train.out").read().splitlines()[-1])
ext = st["external"]
cons = ext["consumers"]
held = sum(1 for s in range(runs) if s % 4 == 3) * steps  # validation-every 4
if what == "counts":
    assert len(cons) == 3, cons  # trainer, the dead one, the raw peer
    dead = [c for c in cons if c["state"] == "timed_out"]
    live = [c for c in cons if c["state"] == "left" and c["batches"] > 0]
    assert len(dead) == 1 and len(live) == 1, cons
    assert ext["bad_messages"] >= 8 and ext["rejected"] >= 2, ext
    d, t = dead[0], live[0]
    # It acked its first batch, then died holding the second.
    assert d["batches"] >= 2 and d["rows_acked"] == 16, d
    assert d["rows_unacked"] >= 16, d
    assert d["rows_served"] == d["rows_acked"] + d["rows_unacked"], d
    assert t["rows_unacked"] == 0 and t["rows_acked"] == t["rows_served"], t
    assert t["transport"] == "shm" == tr["transport"], (t, tr)
    assert d["transport"] == "zmq", d
    assert t["rows_served"] == tr["rows"] and t["batches"] == tr["batches"], (t, tr)
    puts = runs * steps - held
    total = 6 * puts  # --policy firo --epochs 6 --watermark 64: each sample served 6 times
    assert st["store"]["puts"] == puts, st["store"]
    assert st["store"]["taken"] == total == ext["rows_served"], (st["store"], ext)
    assert ext["rows_served"] == ext["rows_acked"] + ext["rows_unacked"], ext
    assert st["consumer"]["samples"] == total, st["consumer"]
    assert t["validation_rows"] == 2 * held, t  # evaluated twice
    print("trained on %d rows, the dead consumer lost %d (unacked)" %
          (tr["rows"], d["rows_unacked"]))
elif what == "learns":
    assert tr["ended"], tr
    assert tr["heldout_mse"] < 0.5 * tr["untrained_mse"], tr
    print("held-out MSE %.4g, untrained %.4g" % (tr["heldout_mse"], tr["untrained_mse"]))
EOF
for what in counts learns; do
    if msg=$("$PY" "$tmp/check.py" "$tmp" $RUNS $STEPS $what 2>&1); then
        ok "$what"
        diag "$msg"
    else
        not_ok "$what"
        diag "$msg"
        diag "$(tail -3 "$tmp/train.err")"
    fi
done
tap_done
