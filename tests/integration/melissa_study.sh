#!/bin/sh
# tests/integration/melissa_study.sh - Melissa's client API served by
# libsurge_melissa: solvers instrumented for Melissa (solvers/melissa/, C
# with two fields through melissa_send_with_metadata, Fortran with mpif.h
# and melissa_api.f90 through melissa_send) run unchanged in `surge launch`
# studies, with exact counts (steps counted per field from 0). Also: the
# simulation id from MELISSA_SIMU_ID when surge's is absent, and a run
# outside a study ends with a message naming the missing SURGE_ENDPOINT.
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"
MC="$SURGE_BUILDDIR/solvers/melissa/heat1d-melissa"
MM="$SURGE_BUILDDIR/tests/integration/melissa_misuse"
MF="$SURGE_BUILDDIR/solvers/melissa/heat1d-melissa-f"
CHECK="$SURGE_SRCDIR/tests/integration/bindings_check.py"
lib_need "$MC" "$MM"
lib_study_env
server_pid=
on_exit() { lib_term_wait "$server_pid"; }

# study NAME RUNS RANKS COMMAND...: a study of the three temperatures.
study() {
    name=$1
    runs=$2
    ranks=$3
    shift 3
    cmd=
    for w in "$@"; do cmd="$cmd${cmd:+, }\"$w\""; done
    cat >"$tmp/$name.json" <<JSON
{
  "study": {"name": "$name", "seed": 5, "output_dir": "$tmp/$name"},
  "parameters": [
    {"name": "t0", "min": 0, "max": 100},
    {"name": "tl", "min": 0, "max": 100},
    {"name": "tr", "min": 0, "max": 100}
  ],
  "sampler": {"kind": "uniform", "runs": $runs},
  "solver": {"command": [$cmd], "ranks": $ranks, "timeout_s": 60,
             "retries": 0},
  "scheduler": {"mpirun": "$MPIRUN", "max_concurrent": 2},
  "server": {"checksum_log": true},
  "reservoir": {"policy": "fifo", "capacity_bytes": "16MiB"}
}
JSON
    timeout 120 "$SURGE" launch --quiet "$tmp/$name.json" \
        >"$tmp/$name.stdout" 2>"$tmp/$name.stderr"
    lib_check_launch_ok $? "$tmp/$name.stderr" "$tmp/$name"
}

if [ -x "$MF" ]; then
    tap_plan 12
else
    tap_plan 9
fi

# C: 2 runs x 2 ranks x 5 steps, fields temperature and gradient.
study melissa-c 2 2 "$MC" 40 5 "{t0}" "{tl}" "{tr}" --metadata
lib_py_checks "$CHECK" "$tmp/melissa-c 2 5 2 2 0" summary steps

# Fortran: 2 runs x 3 ranks x 4 steps, one field (uneven blocks).
if [ -x "$MF" ]; then
    study melissa-f 2 3 "$MF" 31 4 "{t0}" "{tl}" "{tr}"
    lib_py_checks "$CHECK" "$tmp/melissa-f 2 4 3 1 0" summary steps
fi

# serve NAME: a server of our own in $tmp/NAME (its sample shape is set
# by the first client), the one started before stopped; sets endpoint.
TOKEN=melissa-token
serve() {
    lib_term_wait "$server_pid"
    SURGE_TOKEN=$TOKEN timeout -k 5 120 "$SURGE" serve --output-dir \
        "$tmp/$1" --checksum-log "$tmp/$1.ck" --log-level warn \
        >"$tmp/$1.log" 2>&1 &
    server_pid=$!
    lib_wait_file "$tmp/$1/server.json"
    endpoint=$(lib_json "$tmp/$1/server.json" 'j["endpoint"]' 2>/dev/null)
}

# MELISSA_SIMU_ID names the simulation when SURGE_SIM_ID is not set.
serve srv
env -u SURGE_SIM_ID SURGE_ENDPOINT="$endpoint" SURGE_TOKEN=$TOKEN \
    MELISSA_SIMU_ID=17 SURGE_PARAMS=1,2,3 SURGE_TIMEOUT_MS=20000 \
    timeout 60 "$MPIRUN" -np 2 "$MC" 10 2 1 2 3 >"$tmp/simu.out" 2>&1
rc=$?
if [ $rc -eq 0 ] && lib_wait_file "$tmp/srv.ck" 50 &&
    [ "$(cut -d' ' -f1,2 "$tmp/srv.ck" | sort | tr '\n' ,)" = "17 0,17 1," ]; then
    ok "MELISSA_SIMU_ID=17: steps 0 and 1 of sim 17 assembled"
else
    not_ok "MELISSA_SIMU_ID=17 (exit $rc)"
    diag "$(cat "$tmp/simu.out" "$tmp/srv.ck" 2>/dev/null)"
fi

# Misuse ends the run with a message naming it (a server is up, so the
# first send really opens a client).
serve misuse
for case in "late-init:declare every field before the first melissa_send" \
    "undeclared:the field was not declared with melissa_init" \
    "bad-json:metadata_json is not a JSON object" \
    "twice:the field was already declared"; do
    mode=${case%%:*}
    want=${case#*:}
    SURGE_ENDPOINT="$endpoint" SURGE_TOKEN=$TOKEN SURGE_SIM_ID=30 \
        SURGE_PARAMS=1,2,3 SURGE_TIMEOUT_MS=20000 \
        timeout 60 "$MPIRUN" -np 1 "$MM" "$mode" >"$tmp/misuse.out" 2>&1
    rc=$?
    if [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -qF "$want" "$tmp/misuse.out"; then
        ok "$mode: the run fails with \"$want\""
    else
        not_ok "$mode: the run fails with \"$want\" (exit $rc)"
        tail -5 "$tmp/misuse.out" | sed 's/^/# /'
    fi
done

# Outside a study: no endpoint, a clear message and a failed run.
env -u SURGE_ENDPOINT timeout 60 "$MPIRUN" -np 2 "$MC" 10 2 1 2 3 \
    >"$tmp/noep.out" 2>&1
rc=$?
if [ $rc -ne 0 ] && grep -q "SURGE_ENDPOINT is not set" "$tmp/noep.out"; then
    ok "no SURGE_ENDPOINT: the run fails, naming it (exit $rc)"
else
    not_ok "no SURGE_ENDPOINT: the run fails, naming it (exit $rc)"
    diag "$(tail -5 "$tmp/noep.out")"
fi
tap_done
