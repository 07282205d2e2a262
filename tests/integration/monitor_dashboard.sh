#!/bin/sh
# tests/integration/monitor_dashboard.sh - the dashboard in headless
# Chromium (Debian's chromium) during a real study: `surge launch` with the
# trainer, 4 heat2d runs x 2 MPI ranks, validation held out. Waits for data
# (samples, trainer steps, a field preview), loads the page, lets its
# scripts poll the API (--virtual-time-budget), then checks in the DOM that
# every chart drew points, the runs table is filled and both preview images
# loaded, and saves a screenshot as a test artifact:
# $SURGE_BUILDDIR/tests/integration/artifacts/dashboard.png.
# Then the same checks on monitor_feed (the monitoring layer alone, with
# deterministic values): dashboard-feed.png.
. "$SURGE_SRCDIR/tests/tap.sh"
CHROME=
for c in chromium chromium-browser google-chrome; do
    if command -v "$c" >/dev/null 2>&1; then
        CHROME=$(command -v "$c")
        break
    fi
done
[ -n "$CHROME" ] || skip_all "chromium is not installed (apt-get install chromium)"
FEED="$SURGE_BUILDDIR/tests/integration/monitor_feed"
[ -x "$FEED" ] || skip_all "monitor_feed is not built"
. "$SURGE_SRCDIR/tests/integration/monitor_common.sh"
ART="$SURGE_BUILDDIR/tests/integration/artifacts"
mkdir -p "$ART"

tap_plan 8

# chrome URL OUT MODE: headless Chromium as root needs these flags; a fresh
# profile each time. MODE dump writes the DOM after the scripts ran, MODE
# shot a 1400x1500 screenshot.
chrome() {
    prof=$(mktemp -d "$tmp/profile.XXXXXX")
    if [ "$3" = dump ]; then
        timeout 90 "$CHROME" --headless --no-sandbox --disable-gpu \
            --no-first-run --disable-background-networking \
            --disable-component-update --disable-sync \
            --user-data-dir="$prof" --window-size=1400,1500 \
            --virtual-time-budget=6000 --dump-dom "$1" >"$2" 2>"$tmp/chrome.err"
    else
        timeout 90 "$CHROME" --headless --no-sandbox --disable-gpu \
            --no-first-run --disable-background-networking \
            --disable-component-update --disable-sync \
            --user-data-dir="$prof" --window-size=1400,1500 \
            --virtual-time-budget=6000 --screenshot="$2" "$1" \
            >/dev/null 2>"$tmp/chrome.err"
    fi
}

# chrome_dump URL OUT: the DOM after the page polled at least once; up to
# three tries (under heavy load Chromium has been seen to exit early).
chrome_dump() {
    for attempt in 1 2 3; do
        chrome "$1" "$2" dump
        grep -q 'data-polls="[1-9]' "$2" 2>/dev/null && return 0
        diag "DOM dump attempt $attempt: no poll recorded; chromium said:"
        diag "$(tail -5 "$tmp/chrome.err")"
    done
    return 1
}

# dom_check DOMFILE CHARTS... : prints each chart's data-points and the
# images' data-loaded; fails unless every named chart drew > 0 points (and,
# with IMAGES=1, both preview images loaded).
dom_check() {
    "$PY" - "$@" <<'EOF'
import re, sys
dom = open(sys.argv[1]).read()
pts = dict(re.findall(r'<canvas id="([^"]+)" data-points="(\d+)"', dom))
imgs = dict(re.findall(r'<img id="([^"]+)"[^>]*data-loaded="(\d)"', dom))
polls = re.search(r'data-polls="(\d+)"', dom)
print("polls %s; points %s; images %s" % (polls.group(1) if polls else "?",
                                           pts, imgs))
rows = len(re.findall(r'<td class="state-[a-z_]+">', dom))
print("runs table rows: %d" % rows)
# ALLJOINED: every run of monitor_feed has both ranks joined (sending or
# done), so each row's ranks cell reads 2/2, running rows included.
ranks = re.findall(r'<td class="state-([a-z_]+)">[^<]*</td><td>([^<]*)</td>', dom)
print("ranks cells: %s" % ranks)
bad = [c for c in sys.argv[2:] if c not in ("IMAGES", "RUNS", "ALLJOINED") and
       int(pts.get(c, 0)) <= 0]
if "RUNS" in sys.argv[2:] and rows == 0:
    bad.append("runs table")
if "ALLJOINED" in sys.argv[2:] and (
        not any(s == "running" for s, _ in ranks) or
        any(r != "2/2" for _, r in ranks)):
    bad.append("ranks cells (want 2/2 in every row, running ones too)")
if "ALLJOINED" in sys.argv[2:] and "ETA " not in dom:
    bad.append("no ETA next to the running runs' progress bars")
if "IMAGES" in sys.argv[2:]:
    bad += [i for i in ("img-truth", "img-pred") if imgs.get(i) != "1"]
if bad:
    print("missing: %s" % bad)
sys.exit(1 if bad else 0)
EOF
}

# A real study: surge launch runs the server with its trainer and 4 heat2d
# runs x 2 ranks (two at a time); odd simulations are held out for
# validation, so the trainer posts validation losses and field previews.
cat >"$tmp/study.json" <<EOF
{
  "study": {"name": "dashboard", "seed": 11, "output_dir": "$tmp/out"},
  "parameters": [
$(heat2d_params)
  ],
  "sampler": {"kind": "lhs", "runs": 4},
  "solver": {
    "command": ["$BIN", "--nx", "16", "--ny", "16", "--steps", "400",
                "--dt", "0.001", "--step-delay-ms", "25"],
    "ranks": 2, "timeout_s": 150, "retries": 0
  },
  "scheduler": {"mpirun": "$MPIRUN", "max_concurrent": 2},
  "server": {"validation_every": 2},
  "reservoir": {"policy": "fifo", "capacity_bytes": "4MiB"},
  "trainer": {"enabled": true, "layers": [32, 32], "batch_size": 16,
              "eval_every": 4, "checkpoint_every": 0, "threads": 1,
              "time_min": 0, "time_max": 0.4, "out_norm_samples": 32}
}
EOF
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
    timeout -k 10 300 "$SURGE" launch --quiet "$tmp/study.json" \
    >"$tmp/launch.out" 2>"$tmp/launch.err" &
launch_pid=$!
mon_pids="$launch_pid"
lib_wait_file "$tmp/out/server.json" 300
http_url=$(json_get "$tmp/out/server.json" http)
if [ -n "$http_url" ]; then
    ok "surge launch started the server; dashboard at $http_url"
else
    not_ok "surge launch started the server (no http in server.json)"
    diag "$(tail -20 "$tmp/launch.err")"
    tap_done
fi

# Wait for data: samples in, trainer steps, and a first field preview.
wait_status ingest.samples 20 120 && wait_status trainer.step 8 120
n=0
while [ $n -lt 600 ] && ! http_get /api/v1/preview /dev/null 2>/dev/null; do
    sleep 0.2
    n=$((n + 1))
done
check "the study is streaming and training (samples, trainer steps, a preview)" \
    http_get /api/v1/preview "$tmp/preview.json"
diag "status: $(status_value ingest.samples) samples, trainer step $(status_value trainer.step), loss $(status_value trainer.loss)"
sleep 3 # a few series points with rates

chrome_dump "$http_url/" "$tmp/dom.html"
INGEST_CHARTS="chart-samples chart-mb chart-batches chart-occupancy chart-reuse chart-wait"
dom_check "$tmp/dom.html" $INGEST_CHARTS RUNS >"$tmp/dom.txt" 2>&1
check "ingest, trainer throughput, occupancy, reuse and wait charts drew points; runs table filled" \
    test $? -eq 0
while read -r l; do diag "$l"; done <"$tmp/dom.txt"
dom_check "$tmp/dom.html" chart-loss >"$tmp/dom2.txt" 2>&1
check "loss and validation curves drew points" test $? -eq 0
dom_check "$tmp/dom.html" IMAGES >"$tmp/dom3.txt" 2>&1
check "preview images (true field, prediction) loaded" test $? -eq 0

rm -f "$ART/dashboard.png"
size=0
for attempt in 1 2 3; do
    chrome "$http_url/" "$ART/dashboard.png" shot
    size=$(wc -c <"$ART/dashboard.png" 2>/dev/null || echo 0)
    [ "$size" -gt 20000 ] && break
    diag "screenshot attempt $attempt: $size bytes; chromium said:"
    diag "$(tail -5 "$tmp/chrome.err")"
done
check "screenshot saved: $ART/dashboard.png ($size bytes)" test "$size" -gt 20000

wait "$launch_pid"
launch_rc=$?
mon_pids=
runs_ok=$(lib_json "$tmp/out/summary.json" 'j["runs"]["ok"]' 2>/dev/null)
check "the study completed while the dashboard polled (4 runs ok; launch exit $launch_rc)" \
    test "$runs_ok" = 4
[ "$runs_ok" = 4 ] || diag "$(tail -20 "$tmp/launch.err")"

# The same page on monitor_feed, which has a trainer's metrics and preview.
"$FEED" "$tmp/feed.port" 60 >"$tmp/feed.log" 2>&1 &
feed_pid=$!
mon_pids="$feed_pid"
lib_wait_file "$tmp/feed.port" 50
sleep 2
feed_url="http://127.0.0.1:$(cat "$tmp/feed.port")"
chrome_dump "$feed_url/" "$tmp/feed-dom.html"
dom_check "$tmp/feed-dom.html" $INGEST_CHARTS chart-loss IMAGES RUNS ALLJOINED \
    >"$tmp/feed.txt" 2>&1
check "monitor_feed: every chart, the loss curves, both preview images, runs 2/2 ranks" \
    test $? -eq 0
while read -r l; do diag "$l"; done <"$tmp/feed.txt"
chrome "$feed_url/" "$ART/dashboard-feed.png" shot
kill -TERM "$feed_pid"
wait "$feed_pid"
mon_pids=
diag "screenshots: $ART/dashboard.png $ART/dashboard-feed.png"

tap_done
