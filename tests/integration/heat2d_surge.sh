#!/bin/sh
# tests/integration/heat2d_surge.sh - surge-heat2d against a real `surge
# serve` on 127.0.0.1: every step of every run arrives exactly once and
# bit-identical. The solver's ranks each log surge_checksum_f64 of their
# slice per step (--checksums); the server logs the checksum of every
# assembled sample (--checksum-log); the per-rank lines of a (sim, step)
# must add up (mod 2^64) to the server's line, and the two sets of
# (sim, step) must be the same. Also: a wrong token and a missing server
# end the solver quickly with a clear message.
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"

BIN=$HEAT
lib_need "$BIN" "$SURGE"
lib_full_stacks
lib_tmpdir
server_pid=
# timeout(1) passes the TERM on to the server, and KILLs it 5 s later if
# it has not stopped.
on_exit() { lib_term_wait "$server_pid"; }

tap_plan 9

TOKEN=heat2d-test-token
SURGE_TOKEN=$TOKEN timeout -k 5 120 "$SURGE" serve --output-dir "$tmp" \
    --checksum-log "$tmp/server.ck" --log-level warn \
    >"$tmp/serve.log" 2>&1 &
server_pid=$!
lib_wait_file "$tmp/server.json"
endpoint=$(lib_json "$tmp/server.json" 'j["endpoint"]' 2>/dev/null)
if [ -n "$endpoint" ]; then
    ok "server started at $endpoint"
else
    not_ok "server started (no endpoint in server.json)"
    diag "$(cat "$tmp/serve.log")"
fi

# solve SIM NP PARAMS ARGS...: one run under the server, as surge launch
# would start it.
solve() {
    sim=$1
    np=$2
    params=$3
    shift 3
    SURGE_ENDPOINT=$endpoint SURGE_TOKEN=$TOKEN SURGE_SIM_ID=$sim \
        SURGE_PARAMS=$params SURGE_TIMEOUT_MS=10000 \
        timeout 60 "$MPIRUN" --oversubscribe -np "$np" "$BIN" \
        --checksums "$tmp/solver.ck" "$@" >"$tmp/out" 2>"$tmp/err"
}

# One study, one sample shape (the server holds every run to the first
# one's): 33 x 25 on 2 and 3 ranks (blocks 13/12 and 9/8/8), float64 values
# that round to float32 in many ways, so an offset or rounding bug shows.
grid="--nx 33 --ny 25 --dt 0.002"
solve 0 2 1,2,3,4,5 $grid --steps 12
check "sim 0 (2 ranks, 12 steps) completes" test $? -eq 0
solve 1 3 20,100,0,50,-7.25 $grid --steps 9
check "sim 1 (3 ranks, 9 steps) completes" test $? -eq 0
# Slow steps: the client's packing must still deliver every step.
solve 2 1 0,1,0,0,0 $grid --steps 3 --step-delay-ms 150
check "sim 2 (1 rank, slow) completes" test $? -eq 0

SURGE_ENDPOINT=$endpoint SURGE_TOKEN=wrong-token SURGE_SIM_ID=9 \
    SURGE_PARAMS=1,1,1,1,1 SURGE_TIMEOUT_MS=5000 timeout 60 "$MPIRUN" \
    --oversubscribe -np 2 "$BIN" --steps 3 >"$tmp/out" 2>"$tmp/err"
rc=$?
if [ "$rc" -eq 1 ] && grep -q "wrong study token" "$tmp/err"; then
    ok "a wrong token: exit 1, 'wrong study token'"
else
    not_ok "a wrong token (exit $rc)"
    diag "$(cat "$tmp/err")"
fi

kill -TERM "$server_pid"
wait "$server_pid"
rc=$?
server_pid=
check "server stops cleanly on SIGTERM" test "$rc" -eq 0

"$PY" - "$tmp/solver.ck" "$tmp/server.ck" >"$tmp/py" 2>&1 <<'EOF'
import sys
from collections import defaultdict
M = (1 << 64) - 1
solver = defaultdict(int)
ranks = defaultdict(set)
for line in open(sys.argv[1]):
    sim, rank, step, ck = (int(v) for v in line.split())
    solver[(sim, step)] = (solver[(sim, step)] + ck) & M
    ranks[(sim, step)].add(rank)
server = {}
dups = 0
for line in open(sys.argv[2]):
    sim, step, ck = (int(v) for v in line.split())
    dups += (sim, step) in server
    server[(sim, step)] = ck
want = {(0, s) for s in range(1, 13)} | {(1, s) for s in range(1, 10)} | \
    {(2, s) for s in range(1, 4)}
npr = {0: 2, 1: 3, 2: 1}
bad = [k for k in want if server.get(k) != solver.get(k)]
short = [k for k in want if len(ranks[k]) != npr[k[0]]]
print("solver steps %d, server samples %d, duplicates %d, mismatches %d, "
      "incomplete %d" % (len(solver), len(server), dups, len(bad), len(short)))
ok = set(solver) == want and set(server) == want and not dups
ok = ok and not bad and not short
sys.exit(0 if ok else 1)
EOF
check "every step arrived once, bit-identical (checksums match)" test $? -eq 0
diag "$(cat "$tmp/py")"

# No server: the client's open times out and the solver says so.
start=$(date +%s)
SURGE_ENDPOINT="ipc://$tmp/nobody" SURGE_TOKEN=$TOKEN SURGE_SIM_ID=3 \
    SURGE_PARAMS=1,1,1,1,1 SURGE_TIMEOUT_MS=1000 timeout 60 "$MPIRUN" \
    --oversubscribe -np 2 "$BIN" --steps 3 >"$tmp/out" 2>"$tmp/err"
rc=$?
took=$(($(date +%s) - start))
if [ "$rc" -eq 1 ] && grep -q "no surge server answered" "$tmp/err"; then
    ok "no server: exit 1, 'no surge server answered'"
else
    not_ok "no server (exit $rc)"
    diag "$(cat "$tmp/err")"
fi
check "no server: gave up within 10 s (SURGE_TIMEOUT_MS=1000; took ${took} s)" \
    test "$took" -le 10

tap_done
