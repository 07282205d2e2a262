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

tap_plan 24
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
check "--dry-run prints one command per run" \
    test "$(grep -c '^[0-9]*: ' "$tmp/dry")" -eq 3
check "--dry-run prints the server's command (one process for R = 1)" \
    grep -q "^server: [^ ]*/surge serve --output-dir $tmp/out-dry " "$tmp/dry"
# server.ranks 2: one mpirun of 2 ranks, its flags from server.mpirun_args;
# a missing mpirun is named.
sed 's|"scheduler"|"server": {"ranks": 2, "mpirun_args": ["--oversubscribe"],\n  "bind_simulation": true},\n  "scheduler"|' \
    "$tmp/study.json" >"$tmp/ranks.json"
timeout 30 "$SURGE" launch --dry-run --output-dir "$tmp/ranks" \
    "$tmp/ranks.json" >"$tmp/dry-ranks" 2>&1
check "server.ranks 2: the server is mpirun -np 2 --bind-to none [server.mpirun_args] surge serve" \
    grep -q "^server: /usr/bin/mpirun -np 2 --bind-to none -x SURGE_TOKEN --oversubscribe [^ ]*/surge serve " \
    "$tmp/dry-ranks"
check "server.bind_simulation true: the server gets --bind-simulation true" \
    grep -q "^server: .* --bind-simulation true " "$tmp/dry-ranks"
check "server.bind_simulation false (default): no --bind-simulation" \
    sh -c "! grep -q -- --bind-simulation '$tmp/dry'"
sed 's|/usr/bin/mpirun|/nonexistent/mpirun|' "$tmp/ranks.json" >"$tmp/nompi.json"
timeout 30 "$SURGE" launch --dry-run --output-dir "$tmp/nompi" \
    "$tmp/nompi.json" >"$tmp/dry-nompi" 2>&1
rc=$?
check "server.ranks 2 without mpirun: exit 2 naming scheduler.mpirun ($rc)" \
    test "$rc" -eq 2 -a -n "$(grep "'/nonexistent/mpirun' (scheduler.mpirun) is not an executable" "$tmp/dry-nompi")"
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

# A misspelled or unrunnable solver program stops the study before any
# run, also under --dry-run: a bare name not found anywhere, a path that
# is not executable (relative to the run's folder).
misspelled() {
    cat >"$tmp/$1.json" <<EOF
{"parameters": [{"name": "a", "min": 0, "max": 1}],
 "study": {"output_dir": "$tmp/out-$1"},
 "sampler": {"runs": 2}, "solver": {"command": $2},
 "scheduler": {"mpirun": ""}}
EOF
}
misspelled typo '"surge-heat2dd --steps 3"'
expect2 "--dry-run: a misspelled program is named before anything runs" \
    "program surge-heat2dd not found" --dry-run "$tmp/typo.json"
expect2 "launch: a misspelled program stops the study before any run" \
    "program surge-heat2dd not found" "$tmp/typo.json"
check "... no server was started, no run started" \
    test ! -e "$tmp/out-typo/server.json" -a -z "$(ls "$tmp/out-typo/runs")"
printf '#!/bin/sh\nexit 0\n' >"$tmp/noexec.sh"
misspelled noexec '["../../../noexec.sh"]'
expect2 "a relative path that is not executable is named, with its path" \
    "noexec.sh ($tmp/noexec.sh): is not executable" --dry-run \
    "$tmp/noexec.json"

# A program that goes missing during the study (here it removes itself
# and fails) is not retried: "not found" would fail every attempt.
printf '#!/bin/sh\nrm -f "$0"\nexit 1\n' >"$tmp/vanish.sh"
chmod +x "$tmp/vanish.sh"
cat >"$tmp/vanish.json" <<EOF
{"parameters": [{"name": "a", "min": 0, "max": 1}],
 "study": {"output_dir": "$tmp/out-vanish"},
 "sampler": {"runs": 1},
 "solver": {"command": ["$tmp/vanish.sh"], "retries": 3},
 "scheduler": {"mpirun": ""}, "trainer": {"enabled": false}}
EOF
timeout 60 "$SURGE" launch --quiet "$tmp/vanish.json" >"$tmp/vanish.out" \
    2>"$tmp/vanish.err"
if [ $? -eq 1 ] && "$PY" -c '
import json, sys
r = json.load(open(sys.argv[1]))["runs"]
bad = r["not_ok"]
sys.exit(0 if r["attempts"] == 1 and len(bad) == 1 and
         "not found (not retried)" in bad[0]["reason"] else 1)' \
    "$tmp/out-vanish/summary.json"; then
    ok "a program gone after its first attempt is not retried"
else
    not_ok "a program gone after its first attempt is not retried"
    sed 's/^/# /' "$tmp/vanish.err" | tail -5
fi

tap_done
