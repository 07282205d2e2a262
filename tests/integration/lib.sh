# tests/integration/lib.sh - the preamble shared by the integration scripts
# (source it after tests/tap.sh): where the programs are, skip checks, a
# temporary folder removed on exit, a local Slurm, small waits and JSON
# reads. POSIX sh (the scripts run under dash or bash).
#
# Sets on sourcing: SURGE HEAT CLIENT PEER SLURM_LOCAL PY MPIRUN (paths only;
# lib_need checks the ones a script uses).

SURGE="$SURGE_BUILDDIR/cli/surge"
HEAT="$SURGE_BUILDDIR/solvers/heat2d/surge-heat2d"
CLIENT="$SURGE_BUILDDIR/tests/integration/server_client"
PEER="$SURGE_BUILDDIR/tests/integration/server_peer"
SLURM_LOCAL="$SURGE_SRCDIR/deploy/slurm-local.sh"
PY="${DEBIAN_PYTHON:-/usr/bin/python3}"
MPIRUN="${MPIRUN:-mpirun}"

# lib_need PROGRAM...: skip the whole script unless each is executable.
lib_need() {
    for b in "$@"; do
        [ -x "$b" ] || skip_all "$b is not built or not installed"
    done
}

# lib_full_stacks: full stacks for LeakSanitizer under --enable-sanitizers,
# so tests/lsan.supp can name Open MPI's own leaks by library (the fast
# unwinder stops at frames without frame pointers: "<unknown module>").
lib_full_stacks() {
    ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}fast_unwind_on_malloc=0"
    export ASAN_OPTIONS
}

# lib_tmpdir [TEMPLATE]: a fresh folder in $tmp (mktemp -d [TEMPLATE]).
# On exit (and on SIGINT/SIGTERM, which exit 1) runs the script's on_exit
# function when it defines one (kill what it started there), then
# $LIB_ON_EXIT (set by lib_slurm_tmpdir), then removes $tmp unless KEEP_TMP
# is set (kept for a post-mortem).
lib_tmpdir() {
    if [ -n "$1" ]; then
        tmp=$(mktemp -d "$1")
    else
        tmp=$(mktemp -d)
    fi
    [ -n "$tmp" ] && [ -d "$tmp" ] || skip_all "mktemp -d failed"
    trap lib_cleanup EXIT
    trap 'exit 1' INT TERM
}

lib_cleanup() {
    if command -v on_exit >/dev/null 2>&1; then
        on_exit
    fi
    [ -n "$LIB_ON_EXIT" ] && eval "$LIB_ON_EXIT"
    if [ -n "$KEEP_TMP" ]; then
        echo "# kept $tmp"
    else
        rm -rf "$tmp"
    fi
}

# lib_kill_pids PID...: SIGKILL each process named (empty arguments skipped,
# processes already gone ignored); for on_exit.
lib_kill_pids() {
    for p in "$@"; do
        [ -n "$p" ] && kill -KILL "$p" 2>/dev/null
    done
    return 0
}

# lib_term_wait PID...: SIGTERM each process named that still runs (empty
# arguments skipped) and wait for it; for on_exit.
lib_term_wait() {
    for p in "$@"; do
        if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
            kill -TERM "$p" 2>/dev/null
            wait "$p" 2>/dev/null
        fi
    done
    return 0
}

# lib_study_env: what a `surge launch` study of heat2d runs needs (surge,
# surge-heat2d, python3), with full sanitizer stacks, in a fresh $tmp.
lib_study_env() {
    lib_need "$SURGE" "$HEAT" "$PY"
    lib_full_stacks
    lib_tmpdir "$@"
}

# lib_slurm_need COMMAND...: skip unless root (the local Slurm daemons run
# as root) and each Slurm command is installed.
lib_slurm_need() {
    [ "$(id -u)" -eq 0 ] ||
        skip_all "needs root (the local Slurm daemons run as root)"
    for cmd in "$@"; do
        command -v "$cmd" >/dev/null 2>&1 ||
            skip_all "$cmd not installed (deploy/slurm-local.sh install)"
    done
}

# lib_slurm_tmpdir TEMPLATE CPUS: $tmp for a local Slurm of CPUS CPUs
# (deploy/slurm-local.sh in $tmp/slurm, free ports), stopped on exit.
lib_slurm_tmpdir() {
    lib_tmpdir "$1"
    chmod 755 "$tmp" # munged wants every folder above its socket searchable
    SLURM_LOCAL_DIR="$tmp/slurm"
    SLURM_LOCAL_PORTS=auto
    SLURM_LOCAL_CPUS=$2
    export SLURM_LOCAL_DIR SLURM_LOCAL_PORTS SLURM_LOCAL_CPUS
    LIB_ON_EXIT='timeout 120 bash "$SLURM_LOCAL" stop >/dev/null 2>&1'
}

# lib_slurm_start: start the local Slurm (one TAP check) and take its
# environment; on failure shows its log and ends the script.
lib_slurm_start() {
    if env=$(timeout 120 bash "$SLURM_LOCAL" start 2>"$tmp/slurm-start.log"); then
        eval "$env"
        ok "local Slurm started ($(sinfo -h -o '%D node(s), %c CPUs'))"
    else
        not_ok "local Slurm started"
        sed 's/^/# /' "$tmp/slurm-start.log" | tail -30
        tap_done
    fi
}

# lib_wait_file FILE [TENTHS]: until FILE is not empty, at most TENTHS
# tenths of a second (default 100: 10 s). Fails when it never appears.
lib_wait_file() {
    lib_i=0
    while [ ! -s "$1" ] && [ $lib_i -lt "${2:-100}" ]; do
        sleep 0.1
        lib_i=$((lib_i + 1))
    done
    [ -s "$1" ]
}

# lib_wait_exit PID TENTHS: wait for the background process PID to end, at
# most TENTHS tenths of a second; sets status to its exit status, or to
# "timeout" when it still runs (the caller kills it, e.g. in on_exit).
lib_wait_exit() {
    lib_i=0
    while kill -0 "$1" 2>/dev/null && [ $lib_i -lt "$2" ]; do
        sleep 0.1
        lib_i=$((lib_i + 1))
    done
    if kill -0 "$1" 2>/dev/null; then
        status=timeout
    else
        wait "$1"
        status=$?
    fi
}

# lib_json FILE EXPR: a Python expression on the JSON in FILE (as j).
lib_json() {
    "$PY" -c 'import json, sys; j = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

# lib_check_launch_ok RC STDERR OUT: the TAP check "surge launch exits 0"
# on the exit status RC; when it fails, the end of the launcher's STDERR and
# of the server's and the runs' logs under the study folder OUT.
lib_check_launch_ok() {
    if [ "$1" -eq 0 ]; then
        ok "surge launch exits 0"
    else
        not_ok "surge launch exits 0 (got $1)"
        sed 's/^/# /' "$2" | tail -30
        for f in "$3"/server.log "$3"/runs/*/attempt-*.log; do
            [ -f "$f" ] && { diag "$f:"; tail -5 "$f" | sed 's/^/#   /'; }
        done
    fi
    return 0
}

# lib_py_checks SCRIPT ARGS WHAT...: one TAP check per WHAT, named WHAT:
# "$PY" SCRIPT ARGS WHAT (ARGS split on blanks) must exit 0; what it
# printed is the diagnostic when it does not.
lib_py_checks() {
    lib_script=$1
    lib_args=$2
    shift 2
    for what in "$@"; do
        # shellcheck disable=SC2086 # ARGS is a list on purpose
        if msg=$("$PY" "$lib_script" $lib_args "$what" 2>&1); then
            ok "$what"
        else
            not_ok "$what"
            diag "$msg"
        fi
    done
}

# lib_check_server_once OUT RUNS STEPS: the TAP check "server-once": the
# server's checksum log OUT/checksums.log (server.checksum_log; with server
# ranks, OUT/checksums.log.rank* together) lists steps 1..STEPS of
# simulations 0..RUNS-1, each exactly once.
lib_check_server_once() {
    if msg=$(lib_server_once_py "$@" 2>&1); then
        ok server-once
    else
        not_ok server-once
        diag "$msg"
    fi
}

lib_server_once_py() {
    "$PY" - "$@" <<'PYEOF'
import glob, sys
out, runs, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
want = set((s, t) for s in range(runs) for t in range(1, steps + 1))
seen = {}
# A server of several ranks writes one log per rank (checksums.log.rankN).
logs = glob.glob(f"{out}/checksums.log") or \
    sorted(glob.glob(f"{out}/checksums.log.rank*"))
for path in logs:
    for line in open(path):
        sim, step, ck = line.split()
        key = (int(sim), int(step))
        seen[key] = seen.get(key, 0) + 1
if set(seen) != want:
    sys.exit(f"server samples missing/extra: {sorted(set(seen) ^ want)[:5]}")
dup = [k for k, n in seen.items() if n != 1]
if dup:
    sys.exit(f"samples assembled more than once: {dup[:5]}")
PYEOF
}

# heat2d_params: the "parameters" entries of a heat2d study (its five
# temperatures, 0 to 100), for a study.json written with a here-document.
heat2d_params() {
    for p in initial left right bottom top; do
        [ "$p" = top ] && sep= || sep=,
        printf '    {"name": "%s", "min": 0, "max": 100}%s\n' "$p" "$sep"
    done
}
