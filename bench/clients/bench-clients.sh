#!/bin/sh
# bench/clients/bench-clients.sh - see bench/clients/local.mk.
#   bench-clients.sh --surge SURGE --many MANY_CLIENTS [--reps R]
#                    [--clients N] [--steps-small S] [--steps-large S]
# Each configuration runs R times (default 3) against a fresh server; the
# figures are medians. The last line is one JSON object.
set -u
SURGE= MANY= REPS=3 N=1000 SSMALL=20 SLARGE=4
while [ $# -gt 0 ]; do
    case $1 in
    --surge) SURGE=$2 ;;
    --many) MANY=$2 ;;
    --reps) REPS=$2 ;;
    --clients) N=$2 ;;
    --steps-small) SSMALL=$2 ;;
    --steps-large) SLARGE=$2 ;;
    *) echo "bench-clients: unknown flag $1" >&2; exit 2 ;;
    esac
    shift 2
done
[ -x "$SURGE" ] && [ -x "$MANY" ] || { echo "bench-clients: --surge and --many" >&2; exit 2; }
PY=${DEBIAN_PYTHON:-/usr/bin/python3}
# The driver holds ~8 descriptors per client (a ZeroMQ context each).
need=$((10 * N + 256))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $need ]; then
    ulimit -n $need 2>/dev/null || { echo "bench-clients: ulimit -n is below $need" >&2; exit 1; }
fi
tmp=$(mktemp -d)
spid=
trap '[ -n "$spid" ] && kill -KILL $spid 2>/dev/null; rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM
export SURGE_TOKEN=bench-token SURGE_PARAMS=0.5,1.5 SURGE_TIMEOUT_MS=120000

# one LABEL BIND CLIENTS ELEMS STEPS: append the driver's JSON line.
one() {
    out="$tmp/run"
    rm -rf "$out"
    mkdir -p "$out"
    timeout 300 "$SURGE" serve --bind "$2" --output-dir "$out" \
        --store-bytes 256M --max-connections $((N + 16)) --batch-size 64 \
        --log-level error 2>"$out/serve.log" &
    spid=$!
    i=0
    while [ ! -s "$out/server.json" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    ep=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["endpoint"])' "$out/server.json")
    SURGE_ENDPOINT=$ep timeout 280 "$MANY" --clients "$3" --elems "$4" \
        --steps "$5" --label "$1" >>"$tmp/lines" 2>"$out/many.err" ||
        echo "bench-clients: $1: $(head -3 "$out/many.err")" >&2
    kill -TERM $spid 2>/dev/null
    wait $spid 2>/dev/null
    spid=
}

for r in $(seq "$REPS"); do
    for t in tcp ipc; do
        bind="tcp://127.0.0.1:*"
        [ $t = ipc ] && bind="ipc://$tmp/surge.sock"
        one "$t-small-1" "$bind" 1 256 "$SSMALL"
        one "$t-small-$N" "$bind" "$N" 256 "$SSMALL"
        one "$t-large-1" "$bind" 1 65536 "$SLARGE"
        one "$t-large-$N" "$bind" "$N" 65536 "$SLARGE"
    done
done

"$PY" - "$tmp/lines" "$N" "$REPS" <<'PYEOF'
import json, statistics, sys
path, n, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
runs = {}
for line in open(path):
    j = json.loads(line)
    runs.setdefault(j["label"], []).append(j)
med = lambda xs: statistics.median(xs) if xs else None
print("%-16s %7s %7s %9s %9s %12s" % ("config", "clients", "errors", "p50 ms",
                                         "p99 ms", "samples/s"))
out = {"bench": "clients", "reps": reps, "clients": n}
for label in sorted(runs):
    rs = runs[label]
    p50 = med([r["p50_ms"] for r in rs])
    p99 = med([r["p99_ms"] for r in rs])
    sps = med([r["samples_per_s"] for r in rs])
    errs = sum(r["errors"] for r in rs) + sum(r["opened"] != r["clients"] for r in rs)
    print("%-16s %7d %7d %9.2f %9.2f %12.0f" % (label, rs[0]["clients"], errs,
                                                p50, p99, sps))
    key = label.replace("-", "_")
    out[key] = {"p50_ms": round(p50, 3), "p99_ms": round(p99, 3),
                "samples_per_s": round(sps, 1), "errors": errs}
for t in ("tcp", "ipc"):
    for size in ("small", "large"):
        a = out.get("%s_%s_%d" % (t, size, n)); b = out.get("%s_%s_1" % (t, size))
        if a and b and b["p50_ms"] > 0:
            out["%s_%s_p50_ratio_vs_1_client" % (t, size)] = round(a["p50_ms"] / b["p50_ms"], 2)
print(json.dumps(out))
PYEOF
