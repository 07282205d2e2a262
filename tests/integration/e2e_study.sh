#!/bin/sh
# tests/integration/e2e_study.sh - a whole study through `surge launch`:
# 4 heat2d runs x 2 MPI ranks (real mpirun) streaming to a real `surge
# serve` on 127.0.0.1. Every step of every run must arrive exactly once and
# bit-identical: for each (sim, step) the ranks' --checksums lines add up
# (mod 2^64) to the server's --checksum-log line for the assembled sample,
# and summary.json's counts add up (received = assembled = train +
# validation, nothing dropped, every run ok).
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"
lib_study_env
RUNS=4
RANKS=2
STEPS=12
cat >"$tmp/study.json" <<EOF
{
  "study": {"name": "e2e", "seed": 7, "output_dir": "$tmp/out"},
  "parameters": [
$(heat2d_params)
  ],
  "sampler": {"kind": "uniform", "runs": $RUNS},
  "solver": {
    "command": ["$HEAT", "--nx", "16", "--ny", "12", "--steps", "$STEPS",
                "--checksums", "{output_dir}/solver-checksums.txt"],
    "ranks": $RANKS,
    "timeout_s": 60,
    "retries": 0
  },
  "scheduler": {"mpirun": "$MPIRUN", "max_concurrent": 2},
  "server": {"checksum_log": true},
  "reservoir": {"policy": "fifo", "capacity_bytes": "16MiB"}
}
EOF

tap_plan 11

timeout 180 "$SURGE" launch --quiet "$tmp/study.json" >"$tmp/stdout" \
    2>"$tmp/stderr"
rc=$?
lib_check_launch_ok "$rc" "$tmp/stderr" "$tmp/out"
check "the table names the summary" grep -q "summary.json" "$tmp/stdout"
check "--quiet prints no per-run lines" \
    sh -c "! grep -q 'sim [0-9]*: ok' '$tmp/stderr'"
check "parameters.csv has a header and $RUNS rows" \
    test "$(wc -l <"$tmp/out/parameters.csv")" -eq $((RUNS + 1))

cat >"$tmp/check.py" <<'PYEOF'
import json, sys
out, runs, ranks, steps = sys.argv[1], *map(int, sys.argv[2:5])
M = 1 << 64
want = set((s, t) for s in range(runs) for t in range(1, steps + 1))

def fail(msg):
    print(msg)
    sys.exit(1)

what = sys.argv[5]
if what == "bit-identical":
    solver = {}
    lines = {}
    for line in open(f"{out}/solver-checksums.txt"):
        sim, rank, step, ck = line.split()
        key = (int(sim), int(step))
        solver[key] = (solver.get(key, 0) + int(ck)) % M
        lines[key] = lines.get(key, 0) + 1
    if set(lines) != want or any(n != ranks for n in lines.values()):
        fail("solver checksum lines: not one per rank and step")
    bad = 0
    for line in open(f"{out}/checksums.log"):
        sim, step, ck = line.split()
        value = int(ck) if ck.isdigit() else int(ck, 16)
        if solver[(int(sim), int(step))] != value:
            bad += 1
    if bad:
        fail(f"{bad} samples differ from what the ranks sent")
elif what == "summary":
    s = json.load(open(f"{out}/summary.json"))
    n = runs * steps
    smp = s["samples"]
    checks = {
        "counts_add_up": s["counts_add_up"] is True,
        "runs ok": s["runs"]["ok"] == runs and s["runs"]["failed"] == 0,
        "received": smp["received"] == n,
        "assembled": smp["assembled"] == n,
        "train+validation": smp["train"] + smp["validation"] == n,
        "consumed+in_store": smp["consumed"] + smp["in_store"] == smp["train"],
        "dropped": smp["dropped"] == 0,
        "slices": s["slices"]["accepted"] == n * ranks,
        "slices sent (byes) = received":
            s["slices"]["sent"] == s["slices"]["received"] == n * ranks,
        "attempts": s["runs"]["attempts"] == runs,
    }
    badk = [k for k, v in checks.items() if not v]
    if badk:
        fail(f"summary.json: {badk}: {json.dumps(s)[:600]}")
elif what == "rates":
    # The table's data line pairs the rates with the time they are over:
    # "X MB in T s (runs), ...: R samples/s, M MB/s", R * T = assembled.
    s = json.load(open(f"{out}/summary.json"))
    import re
    line = [l for l in open(f"{out}/../stdout") if l.strip().startswith("data")]
    m = re.search(r"([0-9.]+) MB in ([0-9.]+) s .*: ([0-9.]+) samples/s, "
                  r"([0-9.]+) MB/s", line[0] if line else "")
    if not m:
        fail(f"no data line with its time span: {line}")
    mb, t, rate, mbps = map(float, m.groups())
    n = s["samples"]["assembled"]
    if abs(rate * t - n) > 0.02 * n + rate * 0.05 + 1:
        fail(f"rate {rate}/s x {t} s != {n} samples: {line[0]}")
    if abs(mbps * t - mb) > 0.02 * mb + mbps * 0.05 + 0.1:
        fail(f"{mbps} MB/s x {t} s != {mb} MB: {line[0]}")
    if abs(s["ingest_s"] - t) > 0.06:
        fail(f"summary ingest_s {s['ingest_s']} != {t}")
PYEOF

lib_check_server_once "$tmp/out" $RUNS $STEPS
lib_py_checks "$tmp/check.py" "$tmp/out $RUNS $RANKS $STEPS" \
    bit-identical summary rates

# The token never appears on a command line: the server got it by env.
check "server.log exists" test -s "$tmp/out/server.log"
check "each run has its attempt log" \
    test "$(ls "$tmp"/out/runs/*/attempt-1.log | wc -l)" -eq $RUNS
# Nothing the study started is left: no process has our folder in its
# command line (runs and the server are gone).
left=$(ps -eo pid=,args= | grep -F "$tmp" | grep -v grep | grep -cv "ps -eo")
check "no process left behind ($left)" test "$left" -eq 0

tap_done
