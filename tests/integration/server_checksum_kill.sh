#!/bin/sh
# tests/integration/server_checksum_kill.sh - the server's checksum log
# (--checksum-log, what the launcher tests compare with the clients' own
# checksums) loses no line when the server is killed with SIGKILL (issue 9,
# item 11: it was block-buffered, so a killed server took its last few KiB
# of lines along; it was flushed every 200 ms). A client sends 7 steps and
# closes; the moment the server logs the simulation finished (every step
# assembled before), SIGKILL: 7 lines.
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"

lib_need "$SURGE" "$CLIENT"
lib_full_stacks
lib_tmpdir
spid=
srv=
on_exit() { lib_kill_pids "$srv" "$spid"; }

tap_plan 3
export SURGE_TOKEN=checksum-kill
export SURGE_TIMEOUT_MS=10000
mkdir -p "$tmp/out"
timeout 60 "$SURGE" serve --output-dir "$tmp/out" \
    --checksum-log "$tmp/checksums.log" --log-level info \
    2>"$tmp/serve.log" &
spid=$!
lib_wait_file "$tmp/out/server.json"
# The server itself (spid is the timeout wrapping it).
srv=$(lib_json "$tmp/out/server.json" 'j["pid"]' 2>/dev/null)
SURGE_ENDPOINT=$(lib_json "$tmp/out/server.json" 'j["endpoint"]' 2>/dev/null)
export SURGE_ENDPOINT
SURGE_SIM_ID=0 SURGE_PARAMS=1 timeout 30 "$CLIENT" --rank 0 --nranks 1 \
    --steps 7 >"$tmp/client.out" 2>&1 &
cpid=$!
i=0
while ! grep -q "sim 0: finished" "$tmp/serve.log" && [ $i -lt 3000 ]; do
    sleep 0.01
    i=$((i + 1))
done
kill -KILL "$srv"
wait "$spid" 2>/dev/null
spid=
wait "$cpid"
check "the client sent 7 steps and closed cleanly" test $? -eq 0
n=$(wc -l <"$tmp/checksums.log" 2>/dev/null || echo 0)
check "all 7 lines are in the checksum log after SIGKILL (got $n)" \
    test "$n" -eq 7
check "one line per step 1..7 of sim 0" \
    test "$(cut -d' ' -f1,2 "$tmp/checksums.log" | sort -u | wc -l)" -eq 7
tap_done
