#!/bin/sh
# tests/integration/launch_cli.sh - `surge launch` as a command: usage and
# study-file errors exit 2 with a message naming the problem before
# anything starts; --dry-run writes parameters.csv and study.resolved.json
# and prints each run's command (mpirun wrapper, placeholders expanded,
# the solver found next to surge's build folder) without starting a
# server or a run; the resolved study loads again as a study file.
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"

lib_need "$SURGE"
lib_full_stacks
lib_tmpdir

tap_plan 14
# Relative output folders (the default runs/study) land in $tmp.
cd "$tmp" || exit 1

# expect2 DESCRIPTION PATTERN ARGS...: exit status 2 and PATTERN on stderr.
expect2() {
    desc=$1
    pat=$2
    shift 2
    timeout 30 "$SURGE" launch "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    if [ "$rc" -eq 2 ] && grep -q -- "$pat" "$tmp/err"; then
        ok "$desc"
    else
        not_ok "$desc (exit $rc)"
        sed 's/^/# /' "$tmp/err" | head -5
    fi
}

expect2 "no study file: usage" "usage: surge launch"
expect2 "unknown option" "unknown option '--fast'" --fast x.json
expect2 "two study files" "one study file only" a.json b.json
expect2 "missing file" "$tmp/none.json: No such file" "$tmp/none.json"

cat >"$tmp/bad.json" <<EOF
{"parameters": [{"name": "a", "min": 0, "max": 1}],
 "sampler": {"runs": 2},
 "solver": {"command": "x", "ranks": 0}}
EOF
expect2 "a bad value names its key" "solver.ranks: must be an integer" \
    "$tmp/bad.json"
printf '{"parameters": [}' >"$tmp/syntax.json"
expect2 "a JSON syntax error names line and column" "syntax.json:1:" \
    "$tmp/syntax.json"
cat >"$tmp/bad2.json" <<EOF
{"parameters": [{"name": "a", "min": 0, "max": 1}],
 "sampler": {"runs": 2}, "solver": {"command": "x"},
 "reservoir": {"policy": "fifo", "capacity_bytes": 1000,
               "max_batch": 64}}
EOF
expect2 "the reservoir library's own check runs before anything starts" \
    "reservoir\\." "$tmp/bad2.json"
check "nothing was written for the bad studies" test ! -e "$tmp/runs"

check "--help exits 0" sh -c "'$SURGE' launch --help | grep -q dry-run"

cat >"$tmp/study.json" <<EOF
{
  "study": {"name": "dry", "seed": 3, "output_dir": "$tmp/out-{name}"},
  "parameters": [{"name": "T", "min": 0, "max": 10},
                 {"name": "k", "min": -1, "max": 1}],
  "sampler": {"kind": "halton", "runs": 3},
  "solver": {"command": "surge-heat2d --t {T} --sim {sim} --a {attempt}",
             "ranks": 3},
  "scheduler": {"mpirun": "/usr/bin/mpirun", "mpirun_args": ["-x", "X"]}
}
EOF
timeout 30 "$SURGE" launch --dry-run "$tmp/study.json" >"$tmp/dry" \
    2>"$tmp/dry.err"
check "--dry-run exits 0" test $? -eq 0
check "--dry-run prints one command per run" test "$(wc -l <"$tmp/dry")" -eq 3
# Halton's first point in base 2 is 1/2: T = 5 for run 0.
check "placeholders expanded, mpirun wrapper, solver found" \
    grep -q "^0: /usr/bin/mpirun -np 3 --oversubscribe .*-x X .*solvers/heat2d/surge-heat2d --t 5 --sim 0 --a 1$" \
    "$tmp/dry"
check "parameters.csv and study.resolved.json written, no server" \
    test -s "$tmp/out-dry/parameters.csv" -a \
    -s "$tmp/out-dry/study.resolved.json" -a ! -e "$tmp/out-dry/server.json"
timeout 30 "$SURGE" launch --dry-run --output-dir "$tmp/again" \
    "$tmp/out-dry/study.resolved.json" >"$tmp/dry2" 2>&1
check "study.resolved.json loads again and gives the same points" \
    cmp "$tmp/out-dry/parameters.csv" "$tmp/again/parameters.csv"

tap_done
