#!/bin/sh
# tests/integration/server_many_clients.sh - 1,000 client connections open
# at once against one `surge serve` (issue 9, "1,000 clients"): small
# fields over tcp and ipc, larger fields over tcp. Every client opens,
# sends and closes without error, the server receives every sample, its
# counts add up, and its peak memory stays within the configured bounds.
# The benchmark with latencies is `make bench-clients` (bench/clients/).
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"

MANY="$SURGE_BUILDDIR/tests/integration/many_clients"
lib_need "$SURGE" "$MANY"
N=${SURGE_MANY_CLIENTS:-1000}
# The driver holds ~8 descriptors per client (a ZeroMQ context each), the
# server one per connection.
need=$((10 * N + 256))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $need ]; then
    ulimit -n $need 2>/dev/null ||
        skip_all "ulimit -n is $(ulimit -n); $N clients need $need"
fi
lib_tmpdir
spid=
on_exit() { lib_kill_pids "$spid"; }

tap_plan 9

export SURGE_TOKEN=many-token
export SURGE_PARAMS=0.5,1.5
export SURGE_TIMEOUT_MS=50000
STORE=32M
PARTIAL=16M
HELD=16M

# run NAME BIND ELEMS STEPS: one server, N clients; results in $tmp/NAME/.
run() {
    out="$tmp/$1"
    mkdir -p "$out"
    timeout 100 "$SURGE" serve --bind "$2" --output-dir "$out" \
        --store-bytes $STORE --max-partial-bytes $PARTIAL \
        --max-held-bytes $HELD --max-connections $((N + 16)) \
        --batch-size 64 --log-level warn 2>"$out/serve.log" &
    spid=$!
    lib_wait_file "$out/server.json"
    ep=$(lib_json "$out/server.json" 'j["endpoint"]')
    srv=$(lib_json "$out/server.json" 'j["pid"]')
    # Resident memory of the idle server (KiB): the program and its
    # libraries (a CUDA build maps ~60 MiB of cuBLASLt) before any peer.
    awk '/^VmRSS:/ {print $2}' "/proc/$srv/status" >"$out/base"
    SURGE_ENDPOINT=$ep timeout 90 "$MANY" --clients "$N" --steps "$4" \
        --elems "$3" --label "$1" >"$out/many.json" 2>"$out/many.err"
    echo $? >"$out/many-rc"
    # Peak resident memory while the clients ran (KiB).
    awk '/^VmHWM:/ {print $2}' "/proc/$srv/status" >"$out/hwm"
    SURGE_ENDPOINT=$ep timeout 10 "$PEER" control "$ep" end >/dev/null 2>&1
    lib_wait_exit "$spid" 300
    echo "$status" >"$out/server-rc"
    spid=
}

# verify NAME STEPS ELEMS: "ok ..." or what is wrong.
verify() {
    "$PY" - "$tmp/$1" "$N" "$2" "$3" <<'EOF'
import json, sys
out, n, steps, elems = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
bad = []
rc = open(out + "/many-rc").read().strip()
if rc != "0":
    bad.append("clients exit %s: %s" % (rc, open(out + "/many.err").read()[-300:]))
m = json.loads(open(out + "/many.json").read())
if m["opened"] != n or m["errors"] != 0:
    bad.append("opened %d of %d, %d errors" % (m["opened"], n, m["errors"]))
if open(out + "/server-rc").read().strip() != "0":
    bad.append("server exit " + open(out + "/server-rc").read().strip())
j = json.load(open(out + "/server-stats.json"))
if not j["counts_add_up"]:
    bad.append("counts do not add up")
if j["samples"]["train"] != n * steps:
    bad.append("samples %d, want %d" % (j["samples"]["train"], n * steps))
if j["io"]["refused"] or j["io"]["cut"]:
    bad.append("connections refused %d, cut %d" % (j["io"]["refused"], j["io"]["cut"]))
# The bound: the idle server's resident memory + store + assembly + held
# messages + every connection's data in flight (at most its samples) +
# 128 MiB for the clients' threads and pipes and the sanitizers' own use.
hwm = int(open(out + "/hwm").read()) * 1024
base = int(open(out + "/base").read()) * 1024
bound = base + (32 + 16 + 16 + 128) * 2**20 + n * steps * (elems * 4 + 512)
if hwm > bound:
    bad.append("peak RSS %d MiB over the bound %d MiB" % (hwm >> 20, bound >> 20))
print("; ".join(bad) if bad else
      "ok: p50 %.1f ms, p99 %.1f ms, %.0f samples/s, peak RSS %d MiB (bound %d)"
      % (m["p50_ms"], m["p99_ms"], m["samples_per_s"], hwm >> 20, bound >> 20))
EOF
}

for cfg in "tcp-small tcp://127.0.0.1:* 64 3" \
    "ipc-small ipc://$tmp/surge.sock 64 3" \
    "tcp-large tcp://127.0.0.1:* 16384 2"; do
    set -- $cfg
    run "$1" "$2" "$3" "$4"
    res=$(verify "$1" "$4" "$3" 2>&1)
    case "$res" in
    ok*) ok "$1: $N clients at once, nothing lost; $res" ;;
    *) not_ok "$1: $res" ;;
    esac
    check "$1: the server exits 0 after END_RECEPTION" \
        [ "$(cat "$tmp/$1/server-rc")" = 0 ]
    check "$1: no client reported an error" [ ! -s "$tmp/$1/many.err" ]
done

tap_done
