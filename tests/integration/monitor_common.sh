# tests/integration/monitor_common.sh - shared by the monitor_*.sh tests
# (source it after tests/tap.sh): a real `surge serve` in a temporary folder,
# real heat2d runs under mpirun, and small HTTP helpers in Debian's python3.
#
# Sets: SURGE BIN PY MPIRUN tmp; after mon_start_server: server_pid
# endpoint http_url TOKEN. Cleans up on exit (kills what it started, by pid).

. "$SURGE_SRCDIR/tests/integration/lib.sh"

BIN=$HEAT
TOKEN=monitor-test-token
lib_need "$SURGE" "$BIN" "$PY"
lib_tmpdir
server_pid=
mon_pids=
on_exit() {
    for p in $mon_pids; do
        kill -TERM "$p" 2>/dev/null
    done
    if [ -n "$server_pid" ]; then
        kill -TERM "$server_pid" 2>/dev/null
        wait "$server_pid" 2>/dev/null
    fi
    for p in $mon_pids; do
        wait "$p" 2>/dev/null
    done
    [ -n "$MON_CLEANUP_EXTRA" ] && eval "$MON_CLEANUP_EXTRA"
}

# json_get FILE KEY: one top-level key of a JSON file ("" when absent).
json_get() {
    "$PY" -c 'import json, sys
try:
    v = json.load(open(sys.argv[1])).get(sys.argv[2], "")
except Exception:
    v = ""
print(v)' "$1" "$2"
}

# mon_start_server ARGS...: surge serve in $tmp/out with the study token;
# waits for server.json (10 s). Sets endpoint and http_url.
mon_start_server() {
    mkdir -p "$tmp/out"
    SURGE_TOKEN=$TOKEN timeout -k 5 300 "$SURGE" serve --output-dir "$tmp/out" \
        --log-level warn "$@" >"$tmp/serve.log" 2>&1 &
    server_pid=$!
    lib_wait_file "$tmp/out/server.json"
    endpoint=$(json_get "$tmp/out/server.json" endpoint)
    http_url=$(json_get "$tmp/out/server.json" http)
    [ -n "$endpoint" ] && [ -n "$http_url" ]
}

# mon_stop_server: SIGTERM, wait; returns the server's exit status.
mon_stop_server() {
    kill -TERM "$server_pid" 2>/dev/null
    wait "$server_pid"
    rc=$?
    server_pid=
    return $rc
}

# solve SIM NP PARAMS ARGS...: one heat2d run under the server (foreground).
# In a sanitizer build LeakSanitizer is off for the solver ranks: Open MPI's
# own leaks come from unnamed modules the suppressions cannot match, and the
# solver is not what these tests check (its own tests do).
solve() {
    sim=$1
    np=$2
    params=$3
    shift 3
    ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
        SURGE_ENDPOINT=$endpoint SURGE_TOKEN=$TOKEN SURGE_SIM_ID=$sim \
        SURGE_PARAMS=$params SURGE_TIMEOUT_MS=20000 \
        timeout 120 "$MPIRUN" --oversubscribe -np "$np" "$BIN" "$@" \
        >"$tmp/solve-$sim.out" 2>&1
}

# http_get PATH [OUTFILE]: body of GET $http_url/PATH (status 200 only).
http_get() {
    "$PY" - "$http_url$1" "${2:-/dev/stdout}" <<'EOF'
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
    data = r.read()
with open(sys.argv[2], "wb") as f:
    f.write(data)
EOF
}

# status_value DOTTED.KEY: a value of /api/v1/status (e.g. ingest.samples).
status_value() {
    "$PY" - "$http_url/api/v1/status" "$1" <<'EOF'
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
    v = json.load(r)
for k in sys.argv[2].split("."):
    v = v[k] if isinstance(v, dict) else None
print("null" if v is None else v)
EOF
}

# wait_status KEY MIN [SECONDS]: until status KEY >= MIN (default 30 s).
wait_status() {
    n=0
    lim=$((${3:-30} * 5))
    while [ $n -lt $lim ]; do
        v=$(status_value "$1" 2>/dev/null)
        if [ -n "$v" ] && [ "$v" != null ] &&
            "$PY" -c 'import sys; sys.exit(0 if float(sys.argv[1]) >= float(sys.argv[2]) else 1)' "$v" "$2"; then
            return 0
        fi
        sleep 0.2
        n=$((n + 1))
    done
    return 1
}
