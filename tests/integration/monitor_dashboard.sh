#!/bin/sh
# tests/integration/monitor_dashboard.sh - the dashboard in headless
# Chromium (Debian's chromium) during a real study: `surge serve` fed by
# heat2d runs. Waits for data, loads the page, lets its scripts poll the
# API (--virtual-time-budget), then checks in the DOM that every chart drew
# points and the preview images loaded, and saves a screenshot as a test
# artifact: $SURGE_BUILDDIR/tests/integration/artifacts/dashboard.png.
#
# The loss curves and the field preview come from the trainer. When the
# server runs without one (status trainer.step is null) those two checks
# are skipped here, and checked instead on the same page served by
# monitor_feed (the monitoring layer with a synthetic trainer), whose
# screenshot is dashboard-feed.png.
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
bad = [c for c in sys.argv[2:] if c not in ("IMAGES", "RUNS") and
       int(pts.get(c, 0)) <= 0]
if "RUNS" in sys.argv[2:] and rows == 0:
    bad.append("runs table")
if "IMAGES" in sys.argv[2:]:
    bad += [i for i in ("img-truth", "img-pred") if imgs.get(i) != "1"]
if bad:
    print("missing: %s" % bad)
sys.exit(1 if bad else 0)
EOF
}

if mon_start_server; then
    ok "server started; dashboard at $http_url"
else
    not_ok "server started"
    diag "$(cat "$tmp/serve.log")"
    tap_done
fi

# The study streams while the browser watches it.
(
    solve 0 2 1,2,3,4,5 --nx 48 --ny 48 --steps 300 --step-delay-ms 15
    solve 1 2 9,1,5,0,3 --nx 48 --ny 48 --steps 300 --step-delay-ms 15
) &
study_pid=$!
mon_pids="$study_pid"
wait_status ingest.samples 20 40
check "the study is streaming (status ingest.samples >= 20)" test $? -eq 0
sleep 3 # a few series points with rates

chrome "$http_url/" "$tmp/dom.html" dump
INGEST_CHARTS="chart-samples chart-mb chart-batches chart-occupancy chart-reuse chart-wait"
dom_check "$tmp/dom.html" $INGEST_CHARTS RUNS >"$tmp/dom.txt" 2>&1
check "ingest, trainer throughput, occupancy, reuse and wait charts drew points; runs table filled" \
    test $? -eq 0
while read -r l; do diag "$l"; done <"$tmp/dom.txt"

step=$(status_value trainer.step)
if [ "$step" = null ]; then
    ok "loss and validation curves drew points # SKIP surge serve runs without a trainer (consumer $(status_value info.consumer)); checked on monitor_feed below"
    ok "preview images loaded # SKIP no trainer posts a preview yet; checked on monitor_feed below"
else
    dom_check "$tmp/dom.html" chart-loss >"$tmp/dom2.txt" 2>&1
    check "loss and validation curves drew points" test $? -eq 0
    dom_check "$tmp/dom.html" IMAGES >"$tmp/dom3.txt" 2>&1
    check "preview images loaded" test $? -eq 0
    cat "$tmp/dom2.txt" "$tmp/dom3.txt" | while read -r l; do diag "$l"; done
fi

rm -f "$ART/dashboard.png"
chrome "$http_url/" "$ART/dashboard.png" shot
size=$(wc -c <"$ART/dashboard.png" 2>/dev/null || echo 0)
check "screenshot saved: $ART/dashboard.png ($size bytes)" test "$size" -gt 20000

wait "$study_pid"
check "the study completed while the dashboard polled" test $? -eq 0
mon_pids=
mon_stop_server

# The same page on monitor_feed, which has a trainer's metrics and preview.
"$FEED" "$tmp/feed.port" 60 >"$tmp/feed.log" 2>&1 &
feed_pid=$!
mon_pids="$feed_pid"
i=0
while [ ! -s "$tmp/feed.port" ] && [ $i -lt 50 ]; do
    sleep 0.1
    i=$((i + 1))
done
sleep 2
feed_url="http://127.0.0.1:$(cat "$tmp/feed.port")"
chrome "$feed_url/" "$tmp/feed-dom.html" dump
dom_check "$tmp/feed-dom.html" $INGEST_CHARTS chart-loss IMAGES RUNS \
    >"$tmp/feed.txt" 2>&1
check "monitor_feed: every chart, the loss curves and both preview images" \
    test $? -eq 0
while read -r l; do diag "$l"; done <"$tmp/feed.txt"
chrome "$feed_url/" "$ART/dashboard-feed.png" shot
kill -TERM "$feed_pid"
wait "$feed_pid"
mon_pids=
diag "screenshots: $ART/dashboard.png $ART/dashboard-feed.png"

tap_done
