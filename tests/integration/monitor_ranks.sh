#!/bin/sh
# tests/integration/monitor_ranks.sh - per-rank ingest and reservoir
# occupancy in `surge top` and the dashboard, from the status JSON's
# "ranks" array (docs/monitoring.md). A stand-in HTTP server (Debian's
# python3) answers /api/v1/status with a known 3-rank status and serves
# monitor/dashboard.html, so every figure on screen is checked against the
# value it must show: `surge top --once` prints one row per rank (rate,
# samples, dropped, reservoir size/capacity, occupancy, endpoint); the
# dashboard (headless Chromium, skipped without it) fills its "Server
# ranks" table likewise; a status of 1 rank shows no rank table in either.
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"
lib_need "$SURGE" "$PY"
lib_tmpdir
fake=
on_exit() { lib_term_wait "$fake"; }

# status.json for R ranks ($1), written where the stand-in reads it.
status() {
    "$PY" - "$1" >"$tmp/status.json" <<'EOF'
import json, sys
R = int(sys.argv[1])
ranks = [{"rank": r, "endpoint": "tcp://127.0.0.1:%d" % (40000 + r),
          "age_s": 0.25 * r, "received_per_s": 100.5 * (r + 1),
          "samples": 12345 * (r + 1), "slices": 1, "bytes": 1, "dropped": r,
          "steps_in_progress": 0, "reservoir_size": 1000 * (r + 1),
          "reservoir_capacity": 4000, "reservoir_bytes": 1,
          "reservoir_capacity_bytes": 1, "occupancy": 0.25 * (r + 1),
          "trainer_samples": 7 * r, "sims_active": 1} for r in range(R)]
st = {"info": {"consumer": "discard"}, "uptime_s": 12.0,
      "rates": {"samples_in_per_s": 601.5, "mb_in_per_s": 1.0,
                "batches_per_s": 0, "samples_trained_per_s": 0,
                "producer_wait": 0, "trainer_wait": 0},
      "ingest": {"samples": 12345 * R * (R + 1) // 2, "dropped": 3},
      "reservoir": {"occupancy": 0.5, "samples": 6000, "bytes": 1,
                    "capacity_bytes": 2, "reuse_mean": 1},
      "trainer": {"step": 0}, "runs": [], "ranks": ranks}
print(json.dumps(st))
EOF
}

cat >"$tmp/fake.py" <<'EOF'
import http.server, json, os, sys
status, page, portfile = sys.argv[1], sys.argv[2], sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/api/v1/status":
            body = open(status, "rb").read()
        elif path == "/api/v1/series":
            body = json.dumps({"t": [0, 1], "series": {}}).encode()
        elif path == "/":
            body = open(page, "rb").read()
        else:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html" if path == "/" else
                         "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
s = http.server.HTTPServer(("127.0.0.1", 0), H)
s.timeout = 1
with open(portfile + ".tmp", "w") as f:
    f.write(str(s.server_address[1]))
os.rename(portfile + ".tmp", portfile)
for _ in range(300):  # 300 s at most
    s.handle_request()
EOF

tap_plan 5

status 3
"$PY" "$tmp/fake.py" "$tmp/status.json" "$SURGE_SRCDIR/monitor/dashboard.html" \
    "$tmp/port" &
fake=$!
lib_wait_file "$tmp/port" 100
url="http://127.0.0.1:$(cat "$tmp/port" 2>/dev/null)"

timeout 20 "$SURGE" top --endpoint "$url" --once >"$tmp/top.txt" 2>&1
rc=$?
check "surge top --once against a 3-rank status exits 0 (got $rc)" test "$rc" -eq 0
if "$PY" - "$tmp/top.txt" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
want = [
    r"^\s+0\s+100\s+12,345\s+0\s+1000/4000\s+\[##\s*\] 25\.0%\s+0\.0s\s+tcp://127\.0\.0\.1:40000$",
    r"^\s+1\s+201\s+24,690\s+1\s+2000/4000\s+\[####\s*\] 50\.0%\s+0\.2s\s+tcp://127\.0\.0\.1:40001$",
    r"^\s+2\s+302\s+37,035\s+2\s+3000/4000\s+\[######\s*\] 75\.0%\s+0\.5s\s+tcp://127\.0\.0\.1:40002$",
]
missing = [w for w in want if not re.search(w, text, re.M)]
if missing or "RANK" not in text:
    print(text)
    print("missing:", missing)
    sys.exit(1)
EOF
then
    ok "surge top: one row per rank (rate, samples, dropped, reservoir, occupancy, endpoint)"
else
    not_ok "surge top: one row per rank (rate, samples, dropped, reservoir, occupancy, endpoint)"
fi

CHROME=$(command -v chromium || command -v chromium-browser)
if [ -n "$CHROME" ]; then
    prof=$(mktemp -d "$tmp/profile.XXXXXX")
    timeout 90 "$CHROME" --headless --no-sandbox --disable-gpu \
        --no-first-run --disable-background-networking \
        --disable-component-update --disable-sync --user-data-dir="$prof" \
        --virtual-time-budget=3000 --dump-dom "$url/" >"$tmp/dom.html" \
        2>"$tmp/chrome.err"
    if "$PY" - "$tmp/dom.html" <<'EOF'
import re, sys
dom = open(sys.argv[1]).read()
sec = re.search(r'<section id="ranks-section"( hidden(="")?)?>', dom)
rows = re.findall(r'<tr data-rank="(\d)"><td>\d</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td><td>.*?(\d+\.\d%)</td>', dom)
want = [("0", "tcp://127.0.0.1:40000", "101", "12,345", "0", "1,000 / 4,000", "25.0%"),
        ("1", "tcp://127.0.0.1:40001", "201", "24,690", "1", "2,000 / 4,000", "50.0%"),
        ("2", "tcp://127.0.0.1:40002", "302", "37,035", "2", "3,000 / 4,000", "75.0%")]
if sec is None or sec.group(1) or rows != want:
    print("section:", sec and sec.group(0), "rows:", rows)
    sys.exit(1)
EOF
    then
        ok "dashboard: the Server ranks table shows each rank's ingest and occupancy"
    else
        not_ok "dashboard: the Server ranks table shows each rank's ingest and occupancy"
        diag "$(tail -3 "$tmp/chrome.err")"
    fi
else
    ok "# SKIP dashboard: chromium is not installed"
fi

status 1
timeout 20 "$SURGE" top --endpoint "$url" --once >"$tmp/top1.txt" 2>&1
check "surge top: no rank table for a server of 1 rank" \
    test -z "$(grep RANK "$tmp/top1.txt")" -a -s "$tmp/top1.txt"
if [ -n "$CHROME" ]; then
    timeout 90 "$CHROME" --headless --no-sandbox --disable-gpu \
        --no-first-run --disable-background-networking \
        --disable-component-update --disable-sync --user-data-dir="$prof" \
        --virtual-time-budget=3000 --dump-dom "$url/" >"$tmp/dom1.html" \
        2>"$tmp/chrome.err"
    check "dashboard: no Server ranks table for a server of 1 rank" \
        grep -q '<section id="ranks-section" hidden' "$tmp/dom1.html"
else
    ok "# SKIP dashboard: chromium is not installed"
fi

tap_done
