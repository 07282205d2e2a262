#!/bin/sh
# tests/integration/server_ranks.sh - `surge serve` as an MPI job of R
# ranks (mpirun -np R, R = 1, 2, 3) fed by multi-rank heat2d runs: every
# step of every run is assembled exactly once over the server's ranks,
# bit-identical (the solver's per-rank checksums add up to the sample's),
# on the rank the route names (step % R, or sim % R with
# --bind-simulation); the counts of server-stats.json are the sums of the
# ranks' and add up; rank 0's /api/v1/status and /metrics show every rank;
# control (end of reception) reaches every rank through rank 0.
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"

lib_need "$HEAT" "$SURGE" "$PEER"
lib_full_stacks
lib_tmpdir
server_pid=
holder_pid=
on_exit() {
    lib_term_wait "$server_pid"
    [ -n "$holder_pid" ] && kill "$holder_pid" 2>/dev/null
}

tap_plan 35

TOKEN=ranks-test-token
export SURGE_TOKEN="$TOKEN"
grid="--nx 17 --ny 13 --dt 0.002"

# serve DIR R ARGS...: start a server of R ranks writing into DIR; sets
# endpoint and http.
serve() {
    dir=$1
    nr=$2
    shift 2
    mkdir -p "$dir"
    timeout -k 5 90 "$MPIRUN" --oversubscribe -np "$nr" "$SURGE" serve \
        --output-dir "$dir" --checksum-log "$dir/server.ck" \
        --log-level warn "$@" >"$dir/serve.log" 2>&1 &
    server_pid=$!
    lib_wait_file "$dir/server.json" 200
    endpoint=$(lib_json "$dir/server.json" 'j["endpoint"]' 2>/dev/null)
    http=$(lib_json "$dir/server.json" 'j["http"]' 2>/dev/null)
}

# solve DIR SIM NP STEPS: one run of NP solver ranks.
solve() {
    SURGE_ENDPOINT=$endpoint SURGE_SIM_ID=$2 SURGE_PARAMS=$2,1,2,3,4 \
        SURGE_TIMEOUT_MS=10000 timeout 60 "$MPIRUN" --oversubscribe -np "$3" \
        "$HEAT" --checksums "$1/solver.ck" $grid --steps "$4" \
        >>"$1/solve.log" 2>&1
}

# finish DIR: end of reception through rank 0, then the whole job ends.
finish() {
    "$PEER" control "$endpoint" end >"$1/control.out" 2>&1
    lib_wait_exit "$server_pid" 300
    server_pid=
    [ "$status" = 0 ]
}

# check_once DIR R ROUTE RUNS: the exactly-once and accounting checks (see
# the top); RUNS is "sim:np:steps ...".
check_once() {
    "$PY" - "$@" >"$1/py" 2>&1 <<'EOF'
import glob, json, sys
from collections import defaultdict
d, R, route, runs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
M = (1 << 64) - 1
want, npr = set(), {}
for r in runs.split():
    sim, np_, steps = (int(v) for v in r.split(":"))
    npr[sim] = np_
    want |= {(sim, s) for s in range(1, steps + 1)}
solver, ranks = defaultdict(int), defaultdict(set)
for line in open(d + "/solver.ck"):
    sim, rank, step, ck = (int(v) for v in line.split())
    solver[(sim, step)] = (solver[(sim, step)] + ck) & M
    ranks[(sim, step)].add(rank)
files = [d + "/server.ck"] if R == 1 else \
    [d + "/server.ck.rank%d" % r for r in range(R)]
seen, where, dups = {}, {}, 0
for r, f in enumerate(files):
    for line in open(f):
        sim, step, ck = (int(v) for v in line.split())
        dups += (sim, step) in seen
        seen[(sim, step)] = ck
        where[(sim, step)] = r
errs = []
if dups:
    errs.append("%d steps assembled twice" % dups)
if set(seen) != want:
    errs.append("missing %s extra %s" % (sorted(want - set(seen))[:5],
                                         sorted(set(seen) - want)[:5]))
bad = [k for k in want if seen.get(k) != solver.get(k)]
if bad:
    errs.append("checksums differ for %s" % bad[:5])
short = [k for k in want if len(ranks[k]) != npr[k[0]]]
if short:
    errs.append("solver ranks missing for %s" % short[:5])
key = (lambda k: k[1]) if route == "step" else (lambda k: k[0])
wrong = [k for k, r in where.items() if key(k) % R != r]
if wrong:
    errs.append("assembled on the wrong rank: %s" % wrong[:5])
used = set(where.values())
if R > 1 and route == "step" and used != set(range(R)):
    errs.append("ranks used %s" % sorted(used))
st = json.load(open(d + "/server-stats.json"))
n = len(want)
if not st["counts_add_up"]:
    errs.append("counts_add_up false")
if st["ranks"] != R:
    errs.append("ranks %s" % st["ranks"])
if st["steps"]["assembled"] != n or st["samples"]["train"] != n:
    errs.append("assembled %d train %d, want %d" % (
        st["steps"]["assembled"], st["samples"]["train"], n))
sl = st["slices"]
if not (sl["sent_by_clients"] == sl["received"] == sl["accepted"]):
    errs.append("slices %s" % sl)
if R > 1:
    per = st["per_rank"]
    if [p["rank"] for p in per] != list(range(R)):
        errs.append("per_rank %s" % [p["rank"] for p in per])
    if sum(p["steps"]["assembled"] for p in per) != n:
        errs.append("per-rank samples do not add up")
    for r, p in enumerate(per):
        if p["steps"]["assembled"] != sum(1 for v in where.values() if v == r):
            errs.append("rank %d counted %d" % (r, p["steps"]["assembled"]))
    if st["endpoints"] != json.load(open(d + "/server.json"))["endpoints"]:
        errs.append("endpoints differ between server.json and stats")
print("samples %d over %d ranks: %s" % (len(seen), R, "; ".join(errs) or "ok"))
sys.exit(1 if errs else 0)
EOF
}

# check_live DIR R N RUNS: rank 0's status and metrics show R ranks whose
# samples add up to N, and its runs table every run of RUNS ("sim:steps
# ...") with all its steps, over the ranks (the figures lag by up to a
# second: poll).
check_live() {
    "$PY" - "$http" "$2" "$3" "$4" >"$1/live" 2>&1 <<'EOF'
import json, sys, time, urllib.request
url, R, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
want = dict(tuple(int(v) for v in r.split(":")) for r in sys.argv[4].split())
for _ in range(50):
    st = json.load(urllib.request.urlopen(url + "/api/v1/status", timeout=5))
    rk = st["ranks"]
    runs = {r["sim"]: (r["steps"], r["state"]) for r in st["runs"]}
    if len(rk) == R and sum(r.get("samples", 0) for r in rk) == n and \
            st["ingest"]["samples"] == n and \
            all(runs.get(s) == (k, "done") for s, k in want.items()):
        break
    time.sleep(0.2)
else:
    sys.exit("status ranks %s ingest %s runs %s, want %d samples, runs %s" % (
        [(r["rank"], r.get("samples")) for r in rk], st["ingest"], runs, n,
        want))
keys = {"rank", "endpoint", "age_s", "received_per_s", "samples",
        "reservoir_size", "reservoir_capacity", "occupancy"}
if any(not keys <= set(r) for r in rk) or \
        [r["rank"] for r in rk] != list(range(R)):
    sys.exit("status ranks lack keys: %s" % rk)
text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
if R > 1:
    for r in range(R):
        if 'surge_rank_samples_received_total{rank="%d"}' % r not in text:
            sys.exit("no surge_rank_samples_received_total for rank %d" % r)
got = sum(float(l.split()[-1]) for l in text.splitlines()
          if l.startswith("surge_rank_samples_received_total{"))
if R > 1 and got != n:
    sys.exit("per-rank series add up to %s, want %d" % (got, n))
print("ranks %s" % [(r["rank"], r["samples"]) for r in rk])
EOF
}

# Route by step: R = 1 (under mpirun: today's server), 2, 3.
for R in 1 2 3; do
    d="$tmp/step$R"
    serve "$d" "$R"
    n=$(lib_json "$d/server.json" 'len(j["endpoints"])' 2>/dev/null)
    check "R=$R: server.json lists $R endpoints (got $n)" test "$n" = "$R"
    solve "$d" 0 2 7 && solve "$d" 1 3 5
    check "R=$R: two heat2d runs (2 and 3 ranks) complete" test $? -eq 0
    if check_live "$d" "$R" 12 "0:7 1:5"; then
        ok "R=$R: status, runs table and metrics cover every rank"
    else
        not_ok "R=$R: status, runs table and metrics cover every rank"
        diag "$(cat "$d/live")"
    fi
    # The launcher's PING reads the whole server's counts on rank 0.
    "$PEER" control "$endpoint" ping >"$d/ping.out" 2>&1
    check "R=$R: ping on rank 0 counts every rank's samples" \
        grep -q "assembled=12 " "$d/ping.out"
    finish "$d"
    check "R=$R: end of reception through rank 0 stops every rank (exit 0)" \
        test $? -eq 0
    # The reply comes once every rank has applied it.
    want="0 end of reception"
    [ "$R" -gt 1 ] && want="0 end of reception (every one of $R server ranks)"
    reply=$(cat "$d/control.out")
    check "R=$R: end_reception answered after every rank ($reply)" \
        test "$reply" = "$want"
    if check_once "$d" "$R" step "0:2:7 1:3:5"; then
        ok "R=$R: every step once, on rank step % R; counts add up"
    else
        not_ok "R=$R: every step once, on rank step % R; counts add up"
        diag "$(cat "$d/py")" "$(tail -5 "$d/serve.log")"
    fi
done

# Route by simulation: every step of sim s on rank s % 3; a client
# welcomed by rank 0 for another rank's sim is sent there (no session on
# rank 0).
d="$tmp/sim3"
serve "$d" 3 --bind-simulation true
r=$(lib_json "$d/server.json" 'j["route"]' 2>/dev/null)
check "bind-simulation: server.json route is sim (got $r)" test "$r" = sim
solve "$d" 0 2 4 && solve "$d" 1 2 4 && solve "$d" 2 1 3 && solve "$d" 4 3 4
check "bind-simulation: four runs complete" test $? -eq 0
if check_live "$d" 3 15 "0:4 1:4 2:3 4:4"; then
    ok "bind-simulation: status and runs table cover every rank"
else
    not_ok "bind-simulation: status and runs table cover every rank"
    diag "$(cat "$d/live")"
fi
finish "$d"
check "bind-simulation: the server stops (exit 0)" test $? -eq 0
if check_once "$d" 3 sim "0:2:4 1:2:4 2:1:3 4:3:4"; then
    ok "bind-simulation: every step once, on rank sim % 3; counts add up"
else
    not_ok "bind-simulation: every step once, on rank sim % 3; counts add up"
    diag "$(cat "$d/py")"
fi
red=$(lib_json "$d/server-stats.json" 'j["sims"]["redirected"]' 2>/dev/null)
# Sims 1, 2 and 4 live on ranks 1, 2, 1: their 2 + 1 + 3 ranks were sent on.
check "bind-simulation: 6 hellos redirected by rank 0 (got $red)" \
    test "$red" = 6
joined=$(lib_json "$d/server-stats.json" 'j["sims"]["joined"]' 2>/dev/null)
check "bind-simulation: each sim joined once over the ranks (got $joined)" \
    test "$joined" = 4

# Control is rank 0's: another rank refuses it and names rank 0.
d="$tmp/ctl"
serve "$d" 2
ep1=$(lib_json "$d/server.json" 'j["endpoints"][1]' 2>/dev/null)
"$PEER" control "$ep1" end >"$d/ctl1.out" 2>&1
rc=$?
if [ "$rc" -ne 0 ] && grep -q "control goes to rank 0" "$d/ctl1.out"; then
    ok "rank 1 refuses end_reception, naming rank 0"
else
    not_ok "rank 1 refuses end_reception, naming rank 0 (exit $rc)"
    diag "$(cat "$d/ctl1.out")"
fi
"$PEER" control "$ep1" ping >"$d/ping.out" 2>&1
check "rank 1 answers ping" test $? -eq 0
"$PEER" control "$endpoint" shutdown >"$d/ctl0.out" 2>&1
check "shutdown through rank 0 answered" test $? -eq 0
lib_wait_exit "$server_pid" 300
server_pid=
check "shutdown relayed: every rank stops (exit $status)" test "$status" = 0
add=$(lib_json "$d/server-stats.json" 'j["counts_add_up"]' 2>/dev/null)
check "after shutdown: counts_add_up ($add)" test "$add" = True

# A rank that cannot start (its port, P + 1, is taken) ends the whole job
# at once with the reason, instead of leaving the others waiting for it.
d="$tmp/bindfail"
mkdir -p "$d"
"$PY" - "$d/port" <<'EOF' &
import socket, sys, time
for p in range(47000, 48000, 2):
    a, b = socket.socket(), socket.socket()
    try:
        a.bind(("127.0.0.1", p))
        b.bind(("127.0.0.1", p + 1))
    except OSError:
        a.close(), b.close()
        continue
    a.close()
    b.listen()
    open(sys.argv[1], "w").write(str(p))
    time.sleep(60)
    break
EOF
holder_pid=$!
lib_wait_file "$d/port"
port=$(cat "$d/port")
start=$(date +%s)
timeout -k 5 90 "$MPIRUN" --oversubscribe -np 2 "$SURGE" serve \
    --output-dir "$d" --bind "tcp://127.0.0.1:$port" >"$d/serve.log" 2>&1
rc=$?
took=$(($(date +%s) - start))
kill "$holder_pid" 2>/dev/null
holder_pid=
if [ "$rc" -ne 0 ] &&
    grep -q "server\[1\] cannot bind tcp://127.0.0.1:$((port + 1))" \
        "$d/serve.log"; then
    ok "a rank that cannot bind: the job fails naming it (exit $rc)"
else
    not_ok "a rank that cannot bind: the job fails naming it (exit $rc)"
    diag "$(tail -5 "$d/serve.log")"
fi
check "a rank that cannot bind: the job ends within 15 s (took ${took} s)" \
    test "$took" -le 15

tap_done
