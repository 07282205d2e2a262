#!/usr/bin/env bash
# quickstart.sh - set up a fresh Debian 12 machine, build surge and run it.
#
#   ./quickstart.sh demo   install what is missing, build in build/, run the
#                          local heat2d study (solvers/heat2d/study.json,
#                          output in runs/heat2d-demo/) and print its summary
#   ./quickstart.sh test   install what is missing, build in build/ and run
#                          the whole test suite, then again in build-asan/
#                          configured with --enable-sanitizers=address,undefined;
#                          then the threaded subset in build-tsan/
#                          (--enable-sanitizers=thread, `make check-tsan`) and
#                          each fuzzer for 25 s in build-fuzz/ (CC=clang
#                          --enable-fuzzing, `make fuzz-check`); ends with one
#                          line "N passed, N failed[, N skipped]" over all four
#
# Both verbs are idempotent: packages already installed are not touched, and
# an existing build folder is reused (make rebuilds what changed).
set -euo pipefail

top=$(cd "$(dirname "$0")" && pwd)
cd "$top"

# Debian 12 packages. Build and demo need the first list; the test suite also
# needs the real peers it tests against (PyTorch, Slurm, Chromium, promtool).
build_packages=(
    build-essential autoconf automake libtool pkg-config
    libzmq3-dev libuv1-dev libmsgpack-dev libcmocka-dev libopenblas-dev
    libopenmpi-dev openmpi-bin libjansson-dev libgsl-dev libpng-dev
    libhttp-parser-dev gfortran libsodium-dev
)
test_packages=(
    python3 python3-numpy python3-zmq python3-torch python3-mpi4py
    slurmctld slurmd slurm-client munge
    prometheus chromium tmux procps psmisc
    clang libclang-rt-14-dev
)

log() { printf 'quickstart: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

missing_packages() {
    local p
    for p in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
            grep -q 'install ok installed'; then
            printf '%s\n' "$p"
        fi
    done
}

install_packages() {
    local missing
    mapfile -t missing < <(missing_packages "$@")
    [ "${#missing[@]}" -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        log "missing Debian packages; as root, run:"
        printf '  apt-get update && apt-get install -y --no-install-recommends %s\n' \
            "${missing[*]}" >&2
        exit 1
    fi
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# configure_dir DIR [CONFIGURE-FLAGS...]: configure DIR once.
configure_dir() {
    local dir=$1
    shift
    if [ ! -x "$top/configure" ]; then
        log "generating the build system"
        ./autogen.sh >/dev/null 2>&1 || die "autogen.sh failed"
    fi
    mkdir -p "$dir"
    # Reconfigure when the flags changed (e.g. --with-cuda added).
    if [ ! -f "$dir/Makefile" ] ||
        [ "$(cat "$dir/.quickstart-flags" 2>/dev/null)" != "$*" ]; then
        log "configuring $dir $*"
        (cd "$dir" && "$top/configure" -q "$@") || die "configure failed in $dir"
        echo "$*" >"$dir/.quickstart-flags"
    fi
}

# configure_build DIR [CONFIGURE-FLAGS...]: configure DIR once, then make.
configure_build() {
    local dir=$1
    configure_dir "$@"
    log "building in $dir"
    make -C "$dir" -j"$(nproc)" >/dev/null || die "build failed in $dir"
}

# Open MPI refuses root without these; oversubscription lets a 2-core
# machine run studies of more ranks than cores.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1

# run_suite DIR [TARGET]: make TARGET (check) in DIR; prints its totals as
# "pass fail skip". check-tsan and fuzz-check build only what they run.
run_suite() {
    local dir=$1 target=${2:-check} status=0
    log "running make $target in $dir"
    make -C "$dir" "$target" >"$dir/check.out" 2>&1 || status=$?
    grep -E '^(PASS|FAIL|ERROR|XPASS|SKIP|XFAIL):' "$dir/check.out" |
        grep -E '^(FAIL|ERROR|XPASS)' >&2 || true
    local log_file="$dir/test-suite.log"
    [ -f "$log_file" ] || { tail -30 "$dir/check.out" >&2; echo "0 1 0"; return; }
    awk '/^# (PASS|XFAIL):/ {p += $3} /^# (FAIL|ERROR|XPASS):/ {f += $3}
         /^# SKIP:/ {s += $3}
         END {print p + 0, f + 0, s + 0}' "$log_file" |
        { read -r p f s; [ "$status" -ne 0 ] && [ "$f" -eq 0 ] && f=1; echo "$p $f $s"; }
}

case "${1:-}" in
demo)
    install_packages "${build_packages[@]}"
    configure_build build
    rm -rf runs/heat2d-demo
    log "running the heat2d study (solvers/heat2d/study.json)"
    exec build/cli/surge launch solvers/heat2d/study.json
    ;;
test)
    install_packages "${build_packages[@]}" "${test_packages[@]}"
    # The CUDA backend compiles and links wherever nvcc is installed (its
    # GPU tests skip without a device); the sanitizer build stays CPU-only.
    cuda_flags=()
    if [ -x /usr/local/cuda/bin/nvcc ]; then
        cuda_flags=(--with-cuda)
    fi
    configure_build build "${cuda_flags[@]}"
    configure_build build-asan --enable-sanitizers=address,undefined
    read -r p1 f1 s1 < <(run_suite build)
    log "build: $p1 passed, $f1 failed, $s1 skipped"
    read -r p2 f2 s2 < <(run_suite build-asan)
    log "build-asan: $p2 passed, $f2 failed, $s2 skipped"
    configure_dir build-tsan --enable-sanitizers=thread
    read -r p3 f3 s3 < <(run_suite build-tsan check-tsan)
    log "build-tsan: $p3 passed, $f3 failed, $s3 skipped"
    configure_dir build-fuzz CC=clang --enable-fuzzing
    read -r p4 f4 s4 < <(run_suite build-fuzz fuzz-check)
    log "build-fuzz: $p4 passed, $f4 failed, $s4 skipped"
    passed=$((p1 + p2 + p3 + p4))
    failed=$((f1 + f2 + f3 + f4))
    skipped=$((s1 + s2 + s3 + s4))
    if [ "$skipped" -gt 0 ]; then
        echo "$passed passed, $failed failed, $skipped skipped"
    else
        echo "$passed passed, $failed failed"
    fi
    [ "$failed" -eq 0 ]
    ;;
*)
    echo "usage: $0 demo|test" >&2
    exit 2
    ;;
esac
