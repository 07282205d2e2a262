#!/bin/sh
# tests/integration/monitor_top.sh - `surge top` in a real terminal (tmux)
# watching a real `surge serve` fed by heat2d runs: it shows the same rates
# and counts as /api/v1/status, quits on q and on Ctrl-C with the terminal
# restored, and `--once` works for scripts.
. "$SURGE_SRCDIR/tests/tap.sh"
command -v tmux >/dev/null 2>&1 || skip_all "tmux is not installed"
. "$SURGE_SRCDIR/tests/integration/monitor_common.sh"

SOCK="surge-top-test-$$"
MON_CLEANUP_EXTRA='tmux -L "$SOCK" kill-server 2>/dev/null'
TM() { tmux -L "$SOCK" "$@"; }

tap_plan 9

if mon_start_server; then
    ok "server started; dashboard at $http_url"
else
    not_ok "server started"
    diag "$(cat "$tmp/serve.log")"
    tap_done
fi

# A steady stream: 2 ranks, a step every 20 ms, for several seconds.
solve 0 2 1,2,3,4,5 --nx 32 --ny 32 --steps 400 --step-delay-ms 20 &
solve_pid=$!
mon_pids="$solve_pid"
wait_status rates.samples_in_per_s 1 30

# run_top NAME: surge top on the output folder in a tmux pane; after it
# exits the pane prints its status and the terminal modes.
run_top() {
    cat >"$tmp/$1.sh" <<EOF
trap 'echo shell-saw-INT' INT
"$SURGE" top "$tmp/out" --interval 0.5
echo "EXITED rc=\$?"
stty -a | tr ' ;' '\n\n' | grep -x -e '-*icanon' -e '-*echo'
sleep 30
EOF
    TM new-session -d -s "$1" -x 160 -y 40 "sh $tmp/$1.sh"
}

# The rates on screen against the API, read right after the capture (both
# come from the same series point, which moves once a second: retry).
run_top top1
"$PY" - "$http_url/api/v1/status" "$SOCK" >"$tmp/cmp.txt" 2>&1 <<'EOF'
import json, re, subprocess, sys, time, urllib.request

def fmt(v):
    # surge top's format for rates (cli/top.c fmt()).
    if v is None:
        return "-"
    a = abs(v)
    if 1e4 <= a < 1e15:
        return "{:,.0f}".format(v)
    if v != 0 and a < 1e-3:
        return "%.2e" % v
    if a >= 100:
        return "%.0f" % v
    return "%.3g" % v

for attempt in range(40):
    time.sleep(0.3)
    screen = subprocess.run(["tmux", "-L", sys.argv[2], "capture-pane", "-p",
                             "-t", "top1"], capture_output=True,
                            text=True).stdout
    with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
        st = json.load(r)
    m = re.search(r"ingest\s+(\S+) samples/s\s+(\S+) MB/s", screen)
    if not m:
        continue
    want = (fmt(st["rates"]["samples_in_per_s"]),
            fmt(st["rates"]["mb_in_per_s"]))
    print("attempt %d: top shows %s samples/s %s MB/s, API %s %s" %
          (attempt, m.group(1), m.group(2), want[0], want[1]))
    if (m.group(1), m.group(2)) == want and want[0] not in ("-", "0"):
        sys.exit(0)
print(screen)
sys.exit(1)
EOF
check "surge top shows the API's ingest rates while the run streams" \
    test $? -eq 0
while read -r l; do diag "$l"; done <"$tmp/cmp.txt"

# heat2d declares its 400 steps (hello.steps): mid-run the runs table has
# a progress bar and an ETA, not a bare step count.
TM capture-pane -p -t top1 >"$tmp/mid.txt"
if grep -Eq "^ +0 +running +2/2 +[0-9]+/400 +\[#* *\] +[0-9]+% +[0-9]+s " \
    "$tmp/mid.txt"; then
    ok "mid-run: sim 0 shows steps of 400, a progress bar and an ETA"
else
    not_ok "mid-run: no progress of 400 steps with an ETA"
    diag "$(grep -A3 SIM "$tmp/mid.txt")"
fi

wait "$solve_pid"
mon_pids=
wait_status ingest.samples 400 30
sleep 1.2
TM capture-pane -p -t top1 >"$tmp/screen.txt"
recv=$(sed -n 's/.*received \([0-9,]*\).*/\1/p' "$tmp/screen.txt" | tr -d ,)
api=$(status_value ingest.samples | sed 's/\.0$//')
check "after the run: top's 'received' ($recv) equals the API's ($api) and the 400 steps sent" \
    test "$recv" = "$api" -a "$api" = 400
if grep -q "runs *1 *running 0 *done 1" "$tmp/screen.txt" &&
    grep -Eq "^ +0 +done +2/2 +400/400 +\[#{14}\] +100% " "$tmp/screen.txt"; then
    ok "top's runs table: sim 0 done, 2/2 ranks, 400 steps"
else
    not_ok "top's runs table"
    diag "$(cat "$tmp/screen.txt")"
fi

# quit_check SESSION KEY NAME: press KEY in top's pane; top must exit 0
# and leave the terminal as it found it (icanon, echo).
quit_check() {
    TM send-keys -t "$1" "$2"
    sleep 1
    TM capture-pane -p -t "$1" >"$tmp/after-$1.txt"
    if grep -q "EXITED rc=0" "$tmp/after-$1.txt" &&
        grep -qx "icanon" "$tmp/after-$1.txt" &&
        grep -qx "echo" "$tmp/after-$1.txt"; then
        ok "$3 quits with status 0 and restores the terminal (icanon, echo)"
    else
        not_ok "$3 quits and restores the terminal"
        diag "$(cat "$tmp/after-$1.txt")"
    fi
}

quit_check top1 q q
run_top top2
sleep 1.5
quit_check top2 C-c Ctrl-C

"$SURGE" top --once --endpoint "$http_url" >"$tmp/once.txt" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "received 400" "$tmp/once.txt" &&
    ! grep -q "$(printf '\033')" "$tmp/once.txt"; then
    ok "--once prints one plain snapshot (received 400) and exits 0"
else
    not_ok "--once (exit $rc)"
    diag "$(cat "$tmp/once.txt")"
fi

mon_stop_server
"$SURGE" top --once "$tmp/out" >"$tmp/gone.txt" 2>&1
rc=$?
if [ $rc -eq 1 ] && grep -q "no surge server answered" "$tmp/gone.txt"; then
    ok "--once with the server gone: exit 1, 'no surge server answered'"
else
    not_ok "--once with the server gone (exit $rc)"
    diag "$(cat "$tmp/gone.txt")"
fi

tap_done
