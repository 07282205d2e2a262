# tests/tap.sh - helpers for integration scripts that speak TAP.
# Source it: `. "$SURGE_SRCDIR/tests/tap.sh"`. Each script declares its
# plan with tap_plan N, then calls ok/not_ok/skip_all; tap_done exits with
# the right status.
TAP_N=0
TAP_FAILED=0

tap_plan() { echo "1..$1"; }
skip_all() { echo "1..0 # SKIP $*"; exit 0; }
ok() {
    TAP_N=$((TAP_N + 1))
    echo "ok $TAP_N - $*"
}
not_ok() {
    TAP_N=$((TAP_N + 1))
    TAP_FAILED=$((TAP_FAILED + 1))
    echo "not ok $TAP_N - $*"
}
# check DESCRIPTION COMMAND...: ok when COMMAND succeeds.
check() {
    desc=$1
    shift
    if "$@"; then ok "$desc"; else not_ok "$desc"; fi
}
diag() { printf '# %s\n' "$*"; }
tap_done() { [ "$TAP_FAILED" -eq 0 ]; exit $?; }
