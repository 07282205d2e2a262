#!/bin/sh
# tests/integration/server_faults.sh - `surge serve` against real clients
# and hostile peers, all real processes on 127.0.0.1:
#   - the server picks a free port (tcp://127.0.0.1:*), the test reads the
#     endpoint from server.json;
#   - heat2d runs on 2 MPI ranks; every step arrives exactly once and
#     bit-identical (the clients' per-rank checksums add up to the
#     server's per-sample checksum);
#   - a client with the wrong token is rejected with a clear message;
#   - a client with no server fails within its timeout, clearly;
#   - one rank of a 2-rank simulation killed with SIGKILL mid-run: the
#     server keeps going, and the partial steps are dropped and counted;
#   - random bytes on the port count as handshake failures;
#   - a raw ZeroMQ peer sending malformed headers, payloads of the wrong
#     size and other bad messages: each dropped and counted by reason while
#     a good client runs at the same time and completes;
#   - SIGTERM: exit 0, server-stats.json written, counts add up.
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"

lib_need "$SURGE" "$HEAT" "$CLIENT" "$PEER"
lib_full_stacks
lib_tmpdir
spid=
on_exit() { lib_kill_pids "$spid" $(cat "$tmp/pids" 2>/dev/null); }

tap_plan 16

export SURGE_TOKEN=study-token-42
export SURGE_TIMEOUT_MS=10000
out="$tmp/out"
mkdir -p "$out"
timeout 120 "$SURGE" serve --output-dir "$out" --checksum-log "$tmp/server-cs" \
    --sim-timeout 2 --store-bytes 8M --max-partial-bytes 16M \
    --log-level warn 2>"$tmp/serve.log" &
spid=$!

# 1. server.json appears with the resolved endpoint.
lib_wait_file "$out/server.json"
EP=$(lib_json "$out/server.json" 'j["endpoint"]' 2>/dev/null)
PID=$(lib_json "$out/server.json" 'j["pid"]' 2>/dev/null)
case "$EP" in
tcp://127.0.0.1:[0-9]*) ok "server.json names the endpoint ($EP)" ;;
*) not_ok "server.json names the endpoint (got '$EP')" ;;
esac
check "server.json names the server's pid ($PID)" \
    grep -q serve "/proc/$PID/cmdline"
PORT=${EP##*:}
export SURGE_ENDPOINT="$EP"

# 2. heat2d on 2 MPI ranks, sim 0.
SURGE_SIM_ID=0 SURGE_PARAMS=1,0,0,0,2 timeout 60 "$MPIRUN" --oversubscribe \
    -np 2 "$HEAT" --steps 25 --nx 24 --ny 24 --checksums "$tmp/client-cs" \
    >"$tmp/heat.out" 2>&1
check "heat2d (2 ranks) streams 25 steps and closes cleanly" [ $? -eq 0 ]

# 3. Wrong token.
SURGE_TOKEN=not-the-token SURGE_SIM_ID=1 timeout 30 "$CLIENT" --steps 2 \
    >"$tmp/wrong.out" 2>&1
rc=$?
if [ $rc -eq 1 ] && grep -q "wrong study token" "$tmp/wrong.out"; then
    ok "a client with the wrong token is rejected: $(head -1 "$tmp/wrong.out")"
else
    not_ok "a client with the wrong token is rejected (rc $rc)"
    diag "$(cat "$tmp/wrong.out")"
fi

# 4. No server: port 1 on loopback has no listener.
t0=$(date +%s)
SURGE_ENDPOINT=tcp://127.0.0.1:1 SURGE_TIMEOUT_MS=1500 SURGE_SIM_ID=1 \
    timeout 30 "$CLIENT" --steps 2 >"$tmp/noserver.out" 2>&1
rc=$?
t1=$(date +%s)
if [ $rc -eq 1 ] && [ $((t1 - t0)) -le 10 ] &&
    grep -q "no surge server answered" "$tmp/noserver.out"; then
    ok "a client with no server fails in $((t1 - t0)) s: $(head -1 "$tmp/noserver.out")"
else
    not_ok "a client with no server fails within its timeout (rc $rc, $((t1 - t0)) s)"
    diag "$(cat "$tmp/noserver.out")"
fi

# Every simulation of a study has the same sample shape (the server refuses
# others): heat2d on 24 x 24 with 5 parameters; the test clients match it.
export SURGE_PARAMS=1,2,3,4,5
ELEMS=288

# 5. Sim 3 over two processes; rank 1 hangs after 5 steps and is killed
# with SIGKILL while rank 0 sends all 20 and says bye: steps 5..19 stay
# partial until the sim times out.
SURGE_SIM_ID=3 timeout 60 "$CLIENT" --rank 0 --nranks 2 --steps 20 \
    --elems $ELEMS \
    >"$tmp/r0.out" 2>&1 &
r0=$!
SURGE_SIM_ID=3 timeout 60 "$CLIENT" --rank 1 --nranks 2 --steps 20 \
    --elems $ELEMS --hang-after 5 >"$tmp/r1.out" 2>&1 &
r1=$!
echo "$r0 $r1" >"$tmp/pids"
i=0
while ! grep -q hangs "$tmp/r1.out" && [ $i -lt 100 ]; do
    sleep 0.1
    i=$((i + 1))
done
# Kill the client itself (r1 is the pid of its `timeout`).
victim=$(sed -n 's/.*hangs after .* (pid \([0-9]*\)).*/\1/p' "$tmp/r1.out")
echo "$r0 $r1 $victim" >"$tmp/pids"
kill -KILL "$victim"
wait "$r1"
rc1=$?
wait "$r0"
rc0=$?
msg="rank 1 (pid $victim) killed with SIGKILL mid-run (rc $rc1); rank 0 finished (rc $rc0)"
if [ -n "$victim" ] && [ $rc0 -eq 0 ] && [ $rc1 -eq 137 ]; then
    ok "$msg"
else
    not_ok "$msg"
fi

# 6. A malformed ZeroMQ peer (sim 7) while heat2d runs (sim 4).
SURGE_SIM_ID=4 SURGE_PARAMS=2,1,0,0,0 timeout 60 "$MPIRUN" --oversubscribe \
    -np 2 "$HEAT" --steps 40 --nx 24 --ny 24 --step-delay-ms 10 \
    --checksums "$tmp/client-cs" >"$tmp/heat4.out" 2>&1 &
h4=$!
echo "$r0 $h4" >"$tmp/pids"
timeout 30 "$PEER" malformed "$EP" 7 576 5 >"$tmp/peer.out" 2>&1
check "the malformed peer got welcome, reject and bye_ack as expected" \
    [ $? -eq 0 ]
wait "$h4"
check "heat2d (sim 4) completes while the bad peer runs" [ $? -eq 0 ]

# 7. After the sim timeout the killed sim is failed; the server answers.
sleep 2.5
timeout 10 "$PEER" control "$EP" ping >"$tmp/ping.out" 2>&1
check "the server still answers after all that: $(cat "$tmp/ping.out")" \
    grep -q "^0 pong" "$tmp/ping.out"

# 8. SIGTERM: clean exit with stats.
kill -TERM "$PID"
wait "$spid"
rc=$?
spid=
check "SIGTERM: the server exits 0" [ $rc -eq 0 ]
S="$out/server-stats.json"
check "server-stats.json is written and its counts add up" \
    [ "$(lib_json "$S" 'j["counts_add_up"]' 2>/dev/null)" = True ]

# 9. The killed rank's partial steps: 15 dropped as sim_timeout.
got=$(lib_json "$S" '(j["sims"]["timed_out"], j["steps"]["dropped"]["sim_timeout"])')
check "killed client's partial steps dropped and counted: (timed_out, steps) = $got" \
    [ "$got" = "(1, 15)" ]

# 10. Every bad message of the peer counted under its reason.
want=$("$PY" - "$tmp/peer.out" "$S" <<'EOF'
import collections, json, sys
sent = collections.Counter(l.split()[1] for l in open(sys.argv[1])
                           if l.startswith("sent "))
d = json.load(open(sys.argv[2]))["messages"]["dropped"]
bad = {k: (v, d.get(k)) for k, v in sent.items() if d.get(k) != v}
print("ok" if sent and not bad else "mismatch %s" % bad)
EOF
)
check "malformed messages dropped and counted by reason: $want" [ "$want" = ok ]

# 11. Every step of the good simulations arrived exactly once and
# bit-identical: per (sim, step), the ranks' checksums sum to the server's.
res=$("$PY" - "$tmp/client-cs" "$tmp/server-cs" <<'EOF'
import sys
cl = {}
for l in open(sys.argv[1]):
    sim, rank, step, c = map(int, l.split())
    cl[(sim, step)] = (cl.get((sim, step), 0) + c) % 2**64
srv = {}
dups = 0
for l in open(sys.argv[2]):
    sim, step, c = map(int, l.split())
    dups += (sim, step) in srv
    srv[(sim, step)] = c
good = {k: v for k, v in srv.items() if k[0] in (0, 4)}
ok = good == cl and dups == 0 and len(cl) == 65
print("ok" if ok else "mismatch: %d client steps, %d server, %d dups"
      % (len(cl), len(good), dups))
EOF
)
check "heat2d steps arrived exactly once, bit-identical (65 steps): $res" \
    [ "$res" = ok ]

# 12. Random bytes on the port of a second server, which then still serves
# a good client. Three connections send only random bytes: libzmq takes
# most such peers for ZMTP 1.0 ones and fails their handshake, or delivers
# the bytes as messages that the server drops as malformed. Three more send
# a valid ZMTP 3.0 signature followed by random bytes: their handshake
# fails every time, so the count is known.
out2="$tmp/out2"
mkdir -p "$out2"
timeout 60 "$SURGE" serve --output-dir "$out2" --store-bytes 8M \
    --log-level error 2>"$tmp/serve2.log" &
spid=$!
lib_wait_file "$out2/server.json"
EP2=$(lib_json "$out2/server.json" 'j["endpoint"]' 2>/dev/null)
PID2=$(lib_json "$out2/server.json" 'j["pid"]' 2>/dev/null)
PORT2=${EP2##*:}
"$PY" - "$PORT2" <<'EOF'
import os, socket, sys, time
for signature in (b"", b"\xff\0\0\0\0\0\0\0\1\x7f\3\0") * 3:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
    try:
        s.sendall(signature + os.urandom(4096))
        time.sleep(0.2)
    except OSError:
        pass  # the server may close first: that is its right
    s.close()
EOF
SURGE_ENDPOINT="$EP2" SURGE_SIM_ID=0 timeout 30 "$CLIENT" --steps 10 \
    >"$tmp/after-random.out" 2>&1
check "a client completes after random bytes on the port" [ $? -eq 0 ]
kill -TERM "$PID2"
wait "$spid"
rc=$?
spid=
hf=$(lib_json "$out2/server-stats.json" 'j["io"]["handshake_failed"]')
add=$(lib_json "$out2/server-stats.json" 'j["counts_add_up"]')
n10=$(lib_json "$out2/server-stats.json" 'j["samples"]["train"]')
msg="random bytes: exit $rc, $hf handshake failures counted (>= 3), $n10 samples, counts add up: $add"
if [ $rc -eq 0 ] && [ "$hf" -ge 3 ] && [ "$n10" = 10 ] && [ "$add" = True ]; then
    ok "$msg"
else
    not_ok "$msg"
fi

tap_done
