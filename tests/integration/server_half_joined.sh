#!/bin/sh
# tests/integration/server_half_joined.sh - a simulation whose second rank
# never says hello must not hold up the end of a study (issue 9, item 2):
# rank 0 of 2 joins, sends a step and goes silent; END_RECEPTION then ends
# the server at once (not after --sim-timeout), the half-joined sim is
# failed as not_joined and its partial step dropped with that reason, while
# a complete simulation beside it is not touched.
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"

lib_need "$SURGE" "$CLIENT" "$PEER"
lib_tmpdir
spid=
cpid=
on_exit() { lib_kill_pids "$spid" "$cpid"; }

tap_plan 4

export SURGE_TOKEN=half-token
export SURGE_PARAMS=0.5,1.5
timeout 60 "$SURGE" serve --output-dir "$tmp" --sim-timeout 600 \
    --log-level warn 2>"$tmp/serve.log" &
spid=$!
lib_wait_file "$tmp/server.json"
ep=$(lib_json "$tmp/server.json" 'j["endpoint"]')
export SURGE_ENDPOINT="$ep"
# Sim 1: rank 0 of 2, one step, then silence (rank 1 never comes).
SURGE_SIM_ID=1 timeout 50 "$CLIENT" --rank 0 --nranks 2 --steps 5 \
    --elems 256 --hang-after 1 >"$tmp/half.out" 2>&1 &
cpid=$!
# Sim 2: complete, one rank with the whole field (the same sample shape:
# server_client's field has elems x nranks values).
SURGE_SIM_ID=2 timeout 30 "$CLIENT" --rank 0 --nranks 1 --steps 3 \
    --elems 512 >"$tmp/full.out" 2>&1
check "the complete simulation closes cleanly" [ $? -eq 0 ]
lib_wait_file "$tmp/half.out" 50 # it says it hangs once its step left
sleep 0.5
timeout 10 "$PEER" control "$ep" end >/dev/null 2>&1
lib_wait_exit $spid 100
spid=
kill -TERM $cpid 2>/dev/null
wait $cpid 2>/dev/null
cpid=
check "END_RECEPTION ends the server within 10 s (got $status)" \
    [ "$status" = 0 ]
res=$(lib_json "$tmp/server-stats.json" \
    '"%d %d %d %s" % (j["sims"]["not_joined"], j["steps"]["dropped"]["sim_not_joined"], j["samples"]["train"], j["counts_add_up"])')
set -- $res
diag "not_joined=$1 sim_not_joined=$2 train=$3 counts_add_up=$4"
check "the half-joined sim is failed as not_joined, its step dropped" \
    [ "$1:$2" = 1:1 ]
check "the complete sim's 3 samples are in, counts add up" \
    [ "$3:$4" = 3:True ]
tap_done
