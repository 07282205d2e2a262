#!/bin/sh
# tests/integration/server_backpressure.sh - fast solvers, a slow trainer:
# the server's reservoir fills, its policy makes puts wait, the I/O thread
# stops reading, and the clients wait (in their sends or their close) until
# the consumer catches up. Nothing is lost and the counts add up:
#   sent = received = assembled = put into the reservoir
#        = (in the reservoir + evicted after use + retired after use)
# with every reservoir policy: fifo, firo with 2 pseudo-epochs, reservoir.
# The study then ends through END_RECEPTION: the server drains the store and
# exits 0 on its own.
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"

lib_need "$SURGE" "$CLIENT" "$PEER"
lib_tmpdir
spid=
on_exit() { lib_kill_pids "$spid" $(cat "$tmp/pids" 2>/dev/null); }

tap_plan 9

export SURGE_TOKEN=bp-token
export SURGE_PARAMS=0.5,1.5
export SURGE_TIMEOUT_MS=60000
# Two sims of two ranks, 150 steps, 16384 floats per rank: 128 KiB samples,
# 300 samples (38 MiB) in all. The store holds 8 samples; the consumer
# takes 4 per batch and sleeps 20 ms per batch: at least 1.5 s of work.
STEPS=150
ELEMS=16384
SAMPLE=$(((3 + 2 * ELEMS) * 4))
SLOT=$(((SAMPLE + 63) / 64 * 64))

# run POLICY EXTRA_FLAGS...: one study; results in $tmp/POLICY/.
run() {
    policy=$1
    shift
    out="$tmp/$policy"
    mkdir -p "$out"
    timeout 120 "$SURGE" serve --output-dir "$out" --policy "$policy" \
        --store-bytes $((8 * SLOT)) --batch-size 4 --consumer-delay-ms 20 \
        --rcvhwm-bytes 64K --log-level warn "$@" 2>"$out/serve.log" &
    spid=$!
    lib_wait_file "$out/server.json"
    ep=$(lib_json "$out/server.json" 'j["endpoint"]')
    pids=
    for sim in 0 1; do
        for rank in 0 1; do
            SURGE_ENDPOINT=$ep SURGE_SIM_ID=$sim timeout 90 "$CLIENT" \
                --rank $rank --nranks 2 --steps $STEPS --elems $ELEMS \
                >"$out/client-$sim-$rank.out" 2>&1 &
            pids="$pids $!"
        done
    done
    echo "$pids" >"$tmp/pids"
    bad=0
    for p in $pids; do
        wait "$p" || bad=$((bad + 1))
    done
    echo "$bad" >"$out/clients-failed"
    SURGE_ENDPOINT=$ep timeout 10 "$PEER" control "$ep" end >"$out/end.out" 2>&1
    wait "$spid"
    echo $? >"$out/server-rc"
    spid=
}

# verify POLICY: print "ok" or what is wrong, from server-stats.json.
verify() {
    "$PY" - "$tmp/$1" "$1" $STEPS <<'EOF'
import json, sys
out, policy, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
j = json.load(open(out + "/server-stats.json"))
n = 2 * steps                     # samples sent (2 sims)
st, rs = j["store"], j["store"]["reservoir"]
bad = []
def want(what, got, expected):
    if got != expected:
        bad.append("%s = %s, want %s" % (what, got, expected))
want("clients failed", int(open(out + "/clients-failed").read()), 0)
want("server exit", int(open(out + "/server-rc").read()), 0)
want("stop reason", j["stop_reason"], "end_of_reception")
want("counts add up", j["counts_add_up"], True)
want("slices accepted", j["slices"]["accepted"], 2 * n)
want("slices dropped", sum(j["slices"]["dropped"].values()), 0)
want("messages dropped", sum(j["messages"]["dropped"].values()), 0)
want("samples assembled", j["steps"]["assembled"], n)
want("samples into the reservoir", j["samples"]["train"], n)
want("reservoir puts", st["puts"], n)
want("reservoir puts = present + evicted + retired",
     st["occupancy"] + st["evicted"] + st["retired"], n)
want("left in the reservoir", st["occupancy"], 0)
want("samples removed unseen", rs["uses_removed"][0], 0)
want("policy", rs["policy"], policy)
rows = j["consumer"]["samples"]
if policy == "fifo":
    want("rows trained on", rows, n)
elif policy == "firo":
    want("rows trained on", rows, 2 * n)
elif rows < n:
    bad.append("rows trained on %d < %d samples" % (rows, n))
if j["io"]["read_pauses"] < 1 or j["io"]["read_paused_s"] < 0.3:
    bad.append("no backpressure: %d pauses, %.2f s"
               % (j["io"]["read_pauses"], j["io"]["read_paused_s"]))
print("ok: %d pauses, %.1f s paused, %d rows, %d evicted, %d retired"
      % (j["io"]["read_pauses"], j["io"]["read_paused_s"], rows,
         st["evicted"], st["retired"]) if not bad else "; ".join(bad))
EOF
}

for policy in fifo firo reservoir; do
    case $policy in
    firo) run firo --epochs 2 ;;
    *) run $policy ;;
    esac
    res=$(verify $policy 2>&1)
    case "$res" in
    ok*) ok "$policy: nothing lost under backpressure; $res" ;;
    *) not_ok "$policy: $res" ;;
    esac
    check "$policy: END_RECEPTION acknowledged" grep -q "^0 end of reception" \
        "$tmp/$policy/end.out"
    # The clients were held back: their close waited for the consumer.
    res=$("$PY" -c 'import json,sys; j=json.load(open(sys.argv[1])); print(j["consumer"]["batches"])' "$tmp/$policy/server-stats.json" 2>/dev/null)
    check "$policy: the slow consumer took $res batches" [ "${res:-0}" -ge 75 ]
done

tap_done
