#!/bin/sh
# tests/integration/monitor_http.sh - the monitoring HTTP server inside a
# real `surge serve` fed by real heat2d runs (mpirun, 127.0.0.1):
#  - malformed and oversized requests get the right 4xx while a run is
#    streaming, and both the HTTP server and the ingest keep going;
#  - /metrics passes `promtool check metrics` (Debian's prometheus);
#  - after a known study the metric values equal what was sent, and equal
#    the server's own counters in server-stats.json at exit.
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/monitor_common.sh"

tap_plan 10

if mon_start_server; then
    ok "server started; dashboard at $http_url"
else
    not_ok "server started (no http in server.json)"
    diag "$(cat "$tmp/serve.log")"
    tap_done
fi

grid="--nx 32 --ny 16 --dt 0.002"
solve 0 2 1,2,3,4,5 $grid --steps 30
check "sim 0 (2 ranks, 30 steps) completes" test $? -eq 0

# Sim 1 streams slowly while bad requests hit the HTTP port.
solve 1 2 5,4,3,2,1 $grid --steps 20 --step-delay-ms 100 &
solve_pid=$!
mon_pids="$solve_pid"
"$PY" - "$http_url" >"$tmp/bad.txt" 2>&1 <<'EOF'
import socket, sys, urllib.parse, urllib.request
u = urllib.parse.urlparse(sys.argv[1])
host, port = u.hostname, u.port

def exchange(raw):
    s = socket.create_connection((host, port), timeout=10)
    try:
        s.sendall(raw)
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    line = data.split(b"\r\n", 1)[0].decode("latin-1")
    return int(line.split()[1]) if line.startswith("HTTP/1.1 ") else -1

cases = [
    ("garbage", b"\x00\x01\x02 not http at all\r\n\r\n", 400),
    ("bad version", b"GET / HTTP/7.x\r\n\r\n", 400),
    ("header without colon", b"GET / HTTP/1.1\r\nHost x\r\n\r\n", 400),
    ("POST", b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi", 405),
    ("PUT", b"PUT / HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    ("unknown path", b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    ("64 KiB header", b"GET / HTTP/1.1\r\nX-A: " + b"a" * 65536 +
     b"\r\n\r\n", 431),
    ("10 KiB URL", b"GET /" + b"u" * 10240 + b" HTTP/1.1\r\n\r\n", 414),
    ("1 GB body announced", b"GET / HTTP/1.1\r\nContent-Length: "
     b"1000000000\r\n\r\n", 413),
]
bad = 0
for name, raw, want in cases:
    got = exchange(raw)
    with urllib.request.urlopen(sys.argv[1] + "/metrics", timeout=10) as r:
        after = r.status
    print("%-22s -> %d (want %d), then /metrics -> %d" % (name, got, want,
                                                          after))
    bad += got != want or after != 200
sys.exit(1 if bad else 0)
EOF
check "bad requests get 400/404/405/413/414/431 and the server keeps serving" \
    test $? -eq 0
while read -r l; do diag "$l"; done <"$tmp/bad.txt"
wait "$solve_pid"
check "sim 1 (streaming during the bad requests) completes" test $? -eq 0
mon_pids=

http_get /metrics "$tmp/metrics.txt"
if command -v promtool >/dev/null 2>&1; then
    promtool check metrics <"$tmp/metrics.txt" >"$tmp/promtool.txt" 2>&1
    check "promtool check metrics accepts /metrics" test $? -eq 0
    while read -r l; do diag "promtool: $l"; done <"$tmp/promtool.txt"
else
    ok "promtool check metrics # SKIP promtool not installed (apt-get install prometheus)"
fi

# The study sent 50 steps of 2 ranks x 1 field; nothing may be dropped.
"$PY" - "$tmp/metrics.txt" "$http_url/api/v1/status" >"$tmp/values.txt" \
    2>&1 <<'EOF'
import json, re, sys, urllib.request
vals = {}
for line in open(sys.argv[1]):
    if line.startswith("#") or not line.strip():
        continue
    name, v = line.rsplit(" ", 1)
    vals[name] = float(v)
def fam(prefix):
    return sum(v for k, v in vals.items() if k == prefix or
               k.startswith(prefix + "{"))
want = {
    "surge_samples_received_total": 50,
    "surge_steps_started_total": 50,
    "surge_slices_accepted_total": 100,
    "surge_payload_bytes_accepted_total": 50 * 32 * 16 * 4,
    'surge_samples_stored_total{store="train"}': 50,
    'surge_hellos_total{result="welcome"}': 4,
    'surge_sims_total{event="finished"}': 2,
}
bad = 0
for k, w in want.items():
    got = vals.get(k)
    print("%s = %s (want %s)" % (k, got, w))
    bad += got != w
for f in ("surge_messages_dropped_total", "surge_slices_dropped_total",
          "surge_steps_dropped_total", "surge_samples_dropped_total"):
    print("%s = %s (want 0)" % (f, fam(f)))
    bad += fam(f) != 0
with urllib.request.urlopen(sys.argv[2], timeout=10) as r:
    st = json.load(r)
print("status ingest.samples = %s, dropped = %s" % (st["ingest"]["samples"],
                                                    st["ingest"]["dropped"]))
bad += st["ingest"]["samples"] != 50 or st["ingest"]["dropped"] != 0
bad += st["metrics"]["surge_samples_received_total"] != 50
runs = sorted((r["sim"], r["state"], r["steps"], r["ranks"], r["ranks_done"],
               r["dropped"]) for r in st["runs"])
print("runs %s" % runs)
bad += runs != [(0, "done", 30, 2, 2, 0), (1, "done", 20, 2, 2, 0)]
sys.exit(1 if bad else 0)
EOF
check "metric values and the runs table match the known study (2 runs done, 50 samples, 100 slices, no drops)" \
    test $? -eq 0
while read -r l; do diag "$l"; done <"$tmp/values.txt"
http_get /metrics "$tmp/metrics-last.txt"

mon_stop_server
rc=$?
check "server stops cleanly on SIGTERM (exit $rc)" test $rc -eq 0
[ $rc -eq 0 ] || diag "$(tail -20 "$tmp/serve.log")"

"$PY" - "$tmp/metrics-last.txt" "$tmp/out/server-stats.json" \
    >"$tmp/stats.txt" 2>&1 <<'EOF'
import json, sys
vals = {}
for line in open(sys.argv[1]):
    if not line.startswith("#") and line.strip():
        name, v = line.rsplit(" ", 1)
        vals[name] = float(v)
st = json.load(open(sys.argv[2]))
pairs = [
    ("surge_messages_received_total", st["messages"]["received"]),
    ("surge_bytes_received_total", st["messages"]["bytes"]),
    ("surge_messages_handled_total", st["messages"]["handled"]),
    ("surge_slices_received_total", st["slices"]["received"]),
    ("surge_slices_accepted_total", st["slices"]["accepted"]),
    ("surge_steps_started_total", st["steps"]["started"]),
    ("surge_samples_received_total", st["steps"]["assembled"]),
    ('surge_samples_stored_total{store="train"}', st["samples"]["train"]),
    ("surge_reservoir_puts_total", st["store"]["puts"]),
]
bad = 0
for k, s in pairs:
    print("%s: /metrics %s, server-stats.json %s" % (k, vals.get(k), s))
    bad += vals.get(k) != s
print("counts_add_up: %s" % st["counts_add_up"])
bad += st["counts_add_up"] is not True
sys.exit(1 if bad else 0)
EOF
check "the last scrape equals server-stats.json at exit" test $? -eq 0
while read -r l; do diag "$l"; done <"$tmp/stats.txt"

# --http off: no HTTP server, no "http" in server.json.
mkdir -p "$tmp/off"
SURGE_TOKEN=$TOKEN timeout -k 5 60 "$SURGE" serve --output-dir "$tmp/off" \
    --log-level warn --http off >"$tmp/off.log" 2>&1 &
off_pid=$!
lib_wait_file "$tmp/off/server.json"
kill -TERM "$off_pid"
wait "$off_pid"
off_rc=$?
if [ $off_rc -eq 0 ] && [ -n "$(json_get "$tmp/off/server.json" endpoint)" ] &&
    [ -z "$(json_get "$tmp/off/server.json" http)" ]; then
    ok "--http off: server.json has an endpoint and no http"
else
    not_ok "--http off (exit $off_rc)"
    diag "$(cat "$tmp/off/server.json" "$tmp/off.log")"
fi

# A public monitoring address without a study token is refused up front.
env -u SURGE_TOKEN timeout 30 "$SURGE" serve --output-dir "$tmp/pub" \
    --log-level warn --http 0.0.0.0:0 >"$tmp/pub.log" 2>&1
pub_rc=$?
if [ $pub_rc -ne 0 ] && grep -q "needs the study token" "$tmp/pub.log"; then
    ok "--http 0.0.0.0:0 without a token: refused (exit $pub_rc), 'needs the study token'"
else
    not_ok "--http 0.0.0.0:0 without a token (exit $pub_rc)"
    diag "$(cat "$tmp/pub.log")"
fi

tap_done
