#!/bin/sh
# tests/fuzz/fuzz_run.sh - run the libFuzzer harnesses (docs/fuzzing.md).
#
#   FUZZ_MODE=smoke (default): each harness in turn for FUZZ_SECONDS (25)
#     over a scratch copy of its committed corpus (tests/fuzz/corpus/<h>/,
#     which holds every crash input found so far: each is replayed first);
#     one TAP line per harness with its executions.
#   FUZZ_MODE=long: all harnesses at once, niced, for FUZZ_SECONDS each
#     (3600); new inputs are kept in $SURGE_BUILDDIR/fuzz-corpus/<h>/,
#     crashes in $SURGE_BUILDDIR/fuzz-artifacts/, logs in
#     $SURGE_BUILDDIR/fuzz-<h>.log; FUZZ_ONLY="h ..." narrows the set.
# A harness that crashes, leaks, hangs (-timeout) or trips a sanitizer
# fails; its input is saved as an artifact and named in the output.
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"

mode=${FUZZ_MODE:-smoke}
seconds=${FUZZ_SECONDS:-25}
harnesses=${FUZZ_ONLY:-fuzz_protocol fuzz_ingest fuzz_study fuzz_http}
corpora="$SURGE_SRCDIR/tests/fuzz/corpus"

for h in $harnesses; do
    lib_need "$SURGE_BUILDDIR/tests/fuzz/$h"
done

# max_len per harness: a header frame, a script of messages, a study file
# and an HTTP exchange all fit; larger inputs only slow the search.
max_len() {
    case $1 in
    fuzz_study | fuzz_http) echo 8192 ;;
    *) echo 4096 ;;
    esac
}

# run_one HARNESS OUTDIR ARTIFACTS LOG: one libFuzzer run; its status.
run_one() {
    h=$1
    dict=""
    [ -f "$SURGE_SRCDIR/tests/fuzz/$h.dict" ] &&
        dict="-dict=$SURGE_SRCDIR/tests/fuzz/$h.dict"
    # -timeout: one input may take 10 s at most (a hang is a finding);
    # the outer timeout guards the run itself.
    timeout $((seconds + 120)) $nice "$SURGE_BUILDDIR/tests/fuzz/$h" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -max_len="$(max_len "$h")" -print_final_stats=1 \
        -artifact_prefix="$3/$h-" $dict "$2" "$corpora/$h" >"$4" 2>&1
}

# execs LOG: executions the run reported.
execs() {
    sed -n 's/^stat::number_of_executed_units: *//p' "$1" | tail -1
}

# Sanitizer options of the build's test environment, plus what a fuzzer
# wants: stop at the first report.
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}abort_on_error=1:detect_leaks=1"
export ASAN_OPTIONS

nice=""
if [ "$mode" = long ]; then
    nice="nice -n 10" # long runs share the machine
    out="$SURGE_BUILDDIR"
    mkdir -p "$out/fuzz-artifacts"
    pids=""
    for h in $harnesses; do
        mkdir -p "$out/fuzz-corpus/$h"
        (t0=$(date +%s)
        run_one "$h" "$out/fuzz-corpus/$h" "$out/fuzz-artifacts" \
            "$out/fuzz-$h.log"
        echo $? $(($(date +%s) - t0)) >"$out/fuzz-$h.status") &
        pids="$pids $!"
    done
    wait $pids
    fails=0
    for h in $harnesses; do
        read -r st secs <"$out/fuzz-$h.status"
        n=$(execs "$out/fuzz-$h.log")
        echo "$h: status $st, ${n:-?} executions in $secs s," \
            "corpus $(ls "$out/fuzz-corpus/$h" | wc -l) inputs"
        [ "$st" -eq 0 ] || fails=$((fails + 1))
    done
    [ "$fails" -eq 0 ] || echo "crash inputs: $out/fuzz-artifacts/"
    exit "$fails"
fi

lib_tmpdir
tap_plan "$(echo $harnesses | wc -w)"
for h in $harnesses; do
    mkdir -p "$tmp/$h"
    if run_one "$h" "$tmp/$h" "$tmp" "$tmp/$h.log"; then
        ok "$h: $(execs "$tmp/$h.log") executions in $seconds s, no finding"
    else
        not_ok "$h: a finding (log below)"
        grep -E 'ERROR|SUMMARY|fuzz_[a-z]+:|artifact|Test unit written' \
            "$tmp/$h.log" | head -20 | sed 's/^/# /'
        for a in "$tmp/$h"-*; do
            [ -f "$a" ] || continue
            diag "input (base64): $(base64 -w0 "$a" | head -c 2000)"
        done
    fi
done
tap_done
