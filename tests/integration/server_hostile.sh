#!/bin/sh
# tests/integration/server_hostile.sh - peers without a token cannot make
# the server hold unbounded memory (issue 9, item 1). The store is kept full
# (a consumer that sleeps), so reading is under backpressure; then peers that
# never say hello send large frames. The server must keep its memory within
# the configured bounds (frames of pre-session peers are dropped as they
# come, and such peers are cut off), refuse connections over
# --max-connections, say so in its log, and still serve the honest client.
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"

lib_need "$SURGE" "$CLIENT" "$PEER"
lib_tmpdir
spid=
cpid=
on_exit() { lib_kill_pids "$spid" "$cpid"; }

tap_plan 9

export SURGE_TOKEN=hostile-token
export SURGE_PARAMS=0.5,1.5
export SURGE_TIMEOUT_MS=30000
ELEMS=16384
SAMPLE=$(((3 + ELEMS) * 4))
SLOT=$(((SAMPLE + 63) / 64 * 64))

# rss_kib PID: resident memory of PID in KiB.
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# Under AddressSanitizer freed memory sits in its quarantine (256 MiB by
# default) and would count as held: keep it small (ignored otherwise).
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=8"
export ASAN_OPTIONS

# A store of 4 samples and a consumer that sleeps 8 s per batch of 4: the
# honest client's 40 steps fill it and reading comes under backpressure.
timeout 60 "$SURGE" serve --output-dir "$tmp" --store-bytes $((4 * SLOT)) \
    --batch-size 4 --consumer-delay-ms 8000 --max-message-bytes 8M \
    --max-connections 16 --stop-timeout 1 --log-level warn \
    2>"$tmp/serve.log" &
spid=$!
lib_wait_file "$tmp/server.json"
ep=$(lib_json "$tmp/server.json" 'j["endpoint"]')
srv=$(lib_json "$tmp/server.json" 'j["pid"]') # not timeout's pid
SURGE_ENDPOINT=$ep SURGE_SIM_ID=0 timeout 50 "$CLIENT" --rank 0 --nranks 1 \
    --steps 40 --elems $ELEMS >"$tmp/client.out" 2>&1 &
cpid=$!
# A hello the codec refuses is answered with a reject and its reason, not
# left to time out (issue 9, item 6).
res=$(timeout 10 "$PEER" badhello "$ep" 2>&1)
rc=$?
check "a malformed hello gets a reject naming the rule: $res" [ $rc = 0 ]
sleep 1
before=$(rss_kib "$srv")

# Four peers without a token, 24 frames of 8 MiB each: 768 MiB if held.
SURGE_TOKEN= timeout 40 "$PEER" flood "$ep" 4 24 8388608 >"$tmp/flood.out" \
    2>&1
sleep 1
after=$(rss_kib "$srv")
grow=$(((after - before) / 1024))
diag "server RSS ${before} KiB -> ${after} KiB (+${grow} MiB) under the flood"
bounded=no
[ -n "$before" ] && [ -n "$after" ] && [ "$grow" -lt 128 ] && bounded=yes
check "memory stays bounded under a flood without a token (+$grow MiB)" \
    [ $bounded = yes ]
check "the pre-session peers were told to say hello first" \
    grep -q "^answered [1-9]" "$tmp/flood.out"

# More connections than --max-connections: the extra ones are cut.
SURGE_TOKEN= timeout 20 "$PEER" flood "$ep" 40 1 64 >"$tmp/conns.out" 2>&1
sleep 1
check "the server still runs" kill -0 $spid

SURGE_ENDPOINT=$ep timeout 10 "$PEER" control "$ep" shutdown >/dev/null 2>&1
lib_wait_exit $spid 200
spid=
check "the server exits 0 after the shutdown (got $status)" [ "$status" = 0 ]
lib_wait_exit $cpid 100
cpid=

res=$("$PY" - "$tmp/server-stats.json" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
m, io = j["messages"], j["io"]
print(m["dropped"].get("presession_too_large", 0), io.get("cut", 0),
      io.get("refused", 0), j["counts_add_up"])
EOF
)
set -- $res
diag "presession_too_large=$1 cut=$2 refused=$3 counts_add_up=$4"
check "oversized pre-session frames are counted" [ "${1:-0}" -ge 1 ]
check "connections over --max-connections are refused" [ "${3:-0}" -ge 1 ]
check "counts add up" [ "$4" = True ]
check "the log says what was refused" grep -q "max-connections" "$tmp/serve.log"

tap_done
