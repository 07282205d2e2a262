#!/bin/sh
# tests/integration/fortran_study.sh - the Fortran module `surge` in a
# study: surge-advdiff1d (Fortran, use mpi_f08, real(8) and real(4) fields)
# through `surge launch`, 3 runs x 2 ranks x 8 steps. Exact counts in
# summary.json, every step assembled once, the assembled samples
# bit-identical to what the ranks sent (their libsurge checksums), the
# conservative scheme's mass drift at rounding level, and a wrong element
# count refused by surge_send with its message (fortran_errors).
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"
AD="$SURGE_BUILDDIR/solvers/advdiff1d/surge-advdiff1d"
FE="$SURGE_BUILDDIR/tests/integration/fortran_errors"
FH="$SURGE_BUILDDIR/tests/integration/fortran_errors_mpifh"
lib_need "$AD" "$FE" "$FH"
lib_study_env
server_pid=
on_exit() { lib_term_wait "$server_pid"; }
RUNS=3
RANKS=2
STEPS=8
cat >"$tmp/study.json" <<JSON
{
  "study": {"name": "advdiff1d", "seed": 3, "output_dir": "$tmp/out"},
  "parameters": [
    {"name": "velocity", "min": 0.5, "max": 1.5},
    {"name": "diffusivity", "min": 0.002, "max": 0.01},
    {"name": "amplitude", "min": 0.5, "max": 2}
  ],
  "sampler": {"kind": "uniform", "runs": $RUNS},
  "solver": {
    "command": ["$AD", "--nx", "48", "--steps", "$STEPS",
                "--checksums", "{output_dir}/ck-{sim}"],
    "ranks": $RANKS,
    "timeout_s": 60,
    "retries": 0
  },
  "scheduler": {"mpirun": "$MPIRUN", "max_concurrent": 2},
  "server": {"checksum_log": true},
  "reservoir": {"policy": "fifo", "capacity_bytes": "16MiB"}
}
JSON

tap_plan 7

timeout 120 "$SURGE" launch --quiet "$tmp/study.json" >"$tmp/stdout" \
    2>"$tmp/stderr"
lib_check_launch_ok $? "$tmp/stderr" "$tmp/out"
lib_py_checks "$SURGE_SRCDIR/tests/integration/bindings_check.py" \
    "$tmp/out $RUNS $STEPS $RANKS 2 1" summary steps
if msg=$("$PY" "$SURGE_SRCDIR/tests/integration/bindings_check.py" \
    "$tmp/out" $RUNS $STEPS $RANKS 2 1 bit-identical 'ck-*.*' 2>&1); then
    ok "bit-identical (u real(8), flux real(4))"
else
    not_ok "bit-identical (u real(8), flux real(4))"
    diag "$msg"
fi

# The scheme conserves mass: rank 0 of every run reports a drift at
# rounding level (a wrong halo exchange shows up as 1e-3 and more).
drifts=$(cat "$tmp"/out/runs/*/attempt-1.log 2>/dev/null |
    sed -n 's/.*mass drift  *\([^ ]*\) after.*/\1/p')
if [ "$(echo "$drifts" | grep -c .)" -eq $RUNS ] &&
    "$PY" -c 'import sys; sys.exit(any(float(v) > 1e-12 for v in sys.argv[1:]))' $drifts; then
    ok "mass conserved in every run ($(echo $drifts))"
else
    not_ok "mass conserved in every run (drifts: $(echo $drifts))"
fi

# The module's error paths and checked send, from `use mpi` and from
# mpif.h, against a server of their own.
TOKEN=fortran-errors-token
SURGE_TOKEN=$TOKEN timeout -k 5 120 "$SURGE" serve --output-dir "$tmp/fe" \
    --log-level warn >"$tmp/serve.log" 2>&1 &
server_pid=$!
lib_wait_file "$tmp/fe/server.json"
endpoint=$(lib_json "$tmp/fe/server.json" 'j["endpoint"]' 2>/dev/null)
sim=0
for prog in "$FE" "$FH"; do
    name=$(basename "$prog")
    if out=$(SURGE_ENDPOINT=$endpoint SURGE_TOKEN=$TOKEN SURGE_SIM_ID=$sim \
        SURGE_TIMEOUT_MS=20000 timeout 60 "$MPIRUN" -np 1 "$prog" 2>&1) &&
        [ "$(echo "$out" | grep -c "^pass ")" -eq 13 ]; then
        ok "$name: 13 checks of codes, messages and the checked send"
    else
        not_ok "$name: 13 checks of codes, messages and the checked send"
        printf "%s\n" "$out" | sed "s/^/# /"
    fi
    sim=$((sim + 1))
done
tap_done
