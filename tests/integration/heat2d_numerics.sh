#!/bin/sh
# tests/integration/heat2d_numerics.sh - the numerics of surge-heat2d, run
# with real mpirun and --no-surge, checked against references computed
# independently in NumPy (Debian's python3). Small grids: seconds in all.
#
# Tolerances come from one fact (solvers/heat2d/solver.c): the step matrix
# M = I - dt alpha A_h has every eigenvalue >= 1, so a CG solve stopped at
# ||r||_2 <= tol ||b||_2 is within tol ||b||_2 (2-norm) of the exact step,
# and later steps (M^-1, a contraction) never amplify that error. After n
# steps the error is at most n * tol * max_k ||b_k||_2, plus rounding.
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"

BIN=$HEAT
lib_need "$BIN"
"$PY" -c 'import numpy' 2>/dev/null || skip_all "$PY has no numpy"
lib_full_stacks
lib_tmpdir

# run NP ARGS...: the solver on NP ranks without a server; output in
# $tmp/out, errors in $tmp/err; returns the solver's exit status.
run() {
    np=$1
    shift
    timeout 60 "$MPIRUN" --oversubscribe -np "$np" "$BIN" --no-surge "$@" \
        >"$tmp/out" 2>"$tmp/err"
}

cat >"$tmp/check.py" <<'EOF'
import sys
import numpy as np

def laplacian(nx, ny):
    """-A_h: the 5-point Dirichlet Laplacian (SPD), dense, rows (ny, nx)."""
    hx, hy = 1.0 / (nx + 1), 1.0 / (ny + 1)
    n = nx * ny
    k = np.zeros((n, n))
    for j in range(ny):
        for i in range(nx):
            p = j * nx + i
            k[p, p] = 2 / hx**2 + 2 / hy**2
            if i > 0: k[p, p - 1] = -1 / hx**2
            if i < nx - 1: k[p, p + 1] = -1 / hx**2
            if j > 0: k[p, p - nx] = -1 / hy**2
            if j < ny - 1: k[p, p + nx] = -1 / hy**2
    return k

def boundary(nx, ny, left, right, bottom, top):
    """g: the boundary values seen by the points next to each wall."""
    hx, hy = 1.0 / (nx + 1), 1.0 / (ny + 1)
    g = np.zeros((ny, nx))
    g[:, 0] += left / hx**2
    g[:, -1] += right / hx**2
    g[0, :] += bottom / hy**2
    g[-1, :] += top / hy**2
    return g.ravel()

def verdict(ok, msg):
    print(msg)
    sys.exit(0 if ok else 1)

cmd, a = sys.argv[1], sys.argv[2:]
if cmd == "same":
    u, v = np.load(a[0]), np.load(a[1])
    rel = float(a[2])
    d = np.abs(u - v).max()
    verdict(u.shape == v.shape and d <= rel * np.abs(u).max(),
            "max |u1 - u3| = %.3g, allowed %.3g" % (d, rel * np.abs(u).max()))
elif cmd == "sine":
    f, nx, ny = a[0], int(a[1]), int(a[2])
    dt, alpha, n = float(a[3]), float(a[4]), int(a[5])
    amp, tol = float(a[6]), float(a[7])
    u = np.load(f)
    hx, hy = 1.0 / (nx + 1), 1.0 / (ny + 1)
    x = np.arange(1, nx + 1) * hx
    y = np.arange(1, ny + 1) * hy
    u0 = amp * np.outer(np.sin(np.pi * y), np.sin(np.pi * x))
    # Discrete eigenvalue of -A_h for the mode sin(pi x) sin(pi y).
    lam = (4 / hx**2 * np.sin(np.pi * hx / 2)**2
           + 4 / hy**2 * np.sin(np.pi * hy / 2)**2)
    exact = (1 + dt * alpha * lam) ** (-n) * u0
    err = np.abs(u - exact).max()
    bound = n * tol * np.linalg.norm(u0) + n * 1e-14 * amp
    # The continuous eigenvalue 2 pi^2 would predict a visibly different
    # field: proof that the test can tell the two apart.
    cont = (1 + dt * alpha * 2 * np.pi**2) ** (-n) * u0
    cerr = np.abs(u - cont).max()
    verdict(u.shape == (ny, nx) and err <= bound and cerr > 100 * bound,
            "max error vs (1 + dt alpha lambda_h)^-n u0 = %.3g (bound %.3g); "
            "vs the continuous eigenvalue: %.3g; decay %.4f"
            % (err, bound, cerr, np.abs(u).max() / amp))
elif cmd == "const":
    u, t, tol = np.load(a[0]), float(a[1]), float(a[2])
    d = np.abs(u - t).max()
    verdict(d <= tol, "max |u - %g| = %.3g, allowed %.3g" % (t, d, tol))
elif cmd == "onestep":
    # One implicit Euler step from a constant field, solved densely.
    f, nx, ny = a[0], int(a[1]), int(a[2])
    dt, alpha, tol = float(a[3]), float(a[4]), float(a[5])
    p = [float(s) for s in a[6].split(",")]
    u = np.load(f).ravel()
    m = np.eye(nx * ny) + dt * alpha * laplacian(nx, ny)
    b = p[0] * np.ones(nx * ny) + dt * alpha * boundary(nx, ny, *p[1:])
    ref = np.linalg.solve(m, b)
    err = np.linalg.norm(u - ref)
    bound = (tol + 1e-13) * np.linalg.norm(b)
    verdict(err <= bound,
            "||u - dense solve||_2 = %.3g, bound %.3g" % (err, bound))
elif cmd == "laplace":
    f, nx, ny, tol = a[0], int(a[1]), int(a[2]), float(a[3])
    p = [float(s) for s in a[4].split(",")]
    u = np.load(f).ravel()
    ref = np.linalg.solve(laplacian(nx, ny), boundary(nx, ny, *p[1:]))
    d = np.abs(u - ref).max()
    verdict(d <= tol, "max |u - discrete Laplace solution| = %.3g, "
            "allowed %.3g" % (d, tol))
elif cmd == "checksums":
    # The per-rank lines of one step must add up to the checksum of the
    # whole field (the sum the server computes per sample), and the file
    # must hold exactly one line per (rank, step).
    f, ck, sim, nranks, steps = a[0], a[1], int(a[2]), int(a[3]), int(a[4])
    M = (1 << 64) - 1
    def mix64(z):
        z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M
        z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M
        return z ^ (z >> 31)
    bits = np.load(f).ravel().astype(np.float32).view(np.uint32)
    want = sum(mix64(((i << 32) + int(b)) & M) for i, b in enumerate(bits)) & M
    lines = [l.split() for l in open(ck)]
    keys = sorted((int(l[1]), int(l[2])) for l in lines)
    full = sorted((r, s) for r in range(nranks) for s in range(1, steps + 1))
    got = sum(int(l[3]) for l in lines if int(l[2]) == steps) & M
    sims = set(int(l[0]) for l in lines)
    verdict(keys == full and got == want and sims == {sim},
            "%d lines, sims %s, step %d: sum over ranks %d, field %d"
            % (len(lines), sorted(sims), steps, got, want))
else:
    verdict(False, "unknown check " + cmd)
EOF

# check_py DESCRIPTION CHECK ARGS...: one TAP line from a NumPy check.
check_py() {
    desc=$1
    shift
    if "$PY" "$tmp/check.py" "$@" >"$tmp/py" 2>&1; then
        ok "$desc"
    else
        not_ok "$desc"
    fi
    diag "$(cat "$tmp/py")"
}

tap_plan 32

# 1. Decomposition: 1 and 3 ranks (25 rows: blocks of 9, 8, 8) give the
# same field. The matrix-vector product is bitwise the same on any rank
# count; only the order of the dot products' sums differs. With
# --cg-tol 1e-14 each run is within 20 * 1e-14 * ||b||_2 (about 3e-11 here)
# of the exact trajectory, so 1e-10 * max|u| (about 4e-10) is a bound the
# runs must meet, and a halo or offset bug misses it by orders of magnitude.
common="--nx 32 --ny 25 --steps 20 --dt 0.001 --cg-tol 1e-14 --params 1,2,3,4,5"
SURGE_SIM_ID=7 run 1 $common --dump "$tmp/r1.npy" --checksums "$tmp/c1.txt"
check "1 rank runs" test $? -eq 0
SURGE_SIM_ID=7 run 3 $common --dump "$tmp/r3.npy" --checksums "$tmp/c3.txt"
check "3 ranks run" test $? -eq 0
check_py "1 and 3 ranks agree to 1e-10 * max|u|" same "$tmp/r1.npy" \
    "$tmp/r3.npy" 1e-10
check_py "3-rank checksums: a line per rank and step, summing to the field's" \
    checksums "$tmp/r3.npy" "$tmp/c3.txt" 7 3 20
check_py "1-rank checksums match the field" \
    checksums "$tmp/r1.npy" "$tmp/c1.txt" 7 1 20

# 2. The sine mode is an eigenvector of the 5-point Laplacian: implicit
# Euler multiplies it by exactly 1 / (1 + dt alpha lambda_h) per step.
# nx != ny, so swapping hx and hy would show. Bound: n * tol * ||u0||_2
# (see the top) plus rounding.
run 2 --init sine --params 2,0,0,0,0 --nx 24 --ny 17 --dt 0.01 --alpha 0.5 \
    --steps 20 --cg-tol 1e-12 --dump "$tmp/sine.npy"
check "sine run on 2 ranks" test $? -eq 0
check_py "sine mode decays as (1 + dt alpha lambda_h)^-n" sine \
    "$tmp/sine.npy" 24 17 0.01 0.5 20 2 1e-12

# One implicit Euler step with five different temperatures, against a dense
# solve of the same system in NumPy: checks every boundary term.
run 3 --params 1,2,3,4,5 --nx 12 --ny 9 --dt 0.01 --steps 1 --cg-tol 1e-12 \
    --dump "$tmp/one.npy"
check "one-step run on 3 ranks" test $? -eq 0
check_py "one step equals the dense solve within cg-tol" onestep \
    "$tmp/one.npy" 12 9 0.01 1 1e-12 1,2,3,4,5

# 3. Constant boundaries equal to the initial temperature: u = T is the
# exact solution of every step, and CG starts there.
run 3 --params 2.5,2.5,2.5,2.5,2.5 --nx 16 --ny 12 --steps 10 --dt 0.01 \
    --dump "$tmp/const.npy"
check "constant run on 3 ranks" test $? -eq 0
check_py "the constant field stays constant (1e-12 * T)" const \
    "$tmp/const.npy" 2.5 2.5e-12

# All four boundaries at 7, initial 3: the slowest mode decays by
# 1 / (1 + 0.05 * 2 pi^2) ~ 0.5 per step, so after 60 steps the transient
# is below 1e-16; with --cg-tol 1e-12 the solver error is below
# 60 * 1e-12 * max||b||_2 ~ 6e-7 here, hence the 1e-6.
run 2 --params 3,7,7,7,7 --nx 20 --ny 16 --steps 60 --dt 0.05 \
    --cg-tol 1e-12 --dump "$tmp/steady.npy"
check "steady-state run on 2 ranks" test $? -eq 0
check_py "converges to the boundary temperature (1e-6)" const \
    "$tmp/steady.npy" 7 1e-6

# Four different boundaries: the long run reaches the discrete Laplace
# solution, solved densely in NumPy.
run 3 --params 0,1,2,3,4 --nx 14 --ny 11 --steps 80 --dt 0.05 \
    --cg-tol 1e-12 --dump "$tmp/laplace.npy"
check "mixed-boundary run on 3 ranks" test $? -eq 0
check_py "converges to the discrete Laplace solution (1e-6)" laplace \
    "$tmp/laplace.npy" 14 11 1e-6 0,1,2,3,4

# 4. Bad flags: exit code 2 and a message naming what is wrong.
# bad DESCRIPTION EXPECTED-TEXT ARGS...
bad() {
    desc=$1
    want=$2
    shift 2
    timeout 30 "$BIN" "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    if [ "$rc" -eq 2 ] && grep -qF -- "$want" "$tmp/err"; then
        ok "$desc"
    else
        not_ok "$desc (exit $rc)"
        diag "$(cat "$tmp/err")"
    fi
}
P="--no-surge --params 1,2,3,4,5"
bad "unknown flag named" "unknown flag '--bogus'" $P --bogus
bad "non-integer --nx named" "--nx: \"abc\"" $P --nx abc
bad "zero --ny named" "--ny: \"0\"" $P --ny 0
bad "negative --dt named" "--dt: \"-1\"" $P --dt -1
bad "NaN --alpha named" "--alpha: \"nan\"" $P --alpha nan
bad "--params with 3 values named" "--params:" --no-surge --params 1,2,3
bad "unknown --init named" "--init: \"cosine\"" $P --init cosine
bad "missing value named" "--steps needs a value" $P --steps
bad "duplicate flag named" "--nx given twice" $P --nx 8 --nx 9
bad "stray argument named" "unexpected argument 'extra'" $P extra
bad "missing parameters explained" "no parameters" --no-surge
run 3 --params 1,2,3,4,5 --ny 2
rc=$?
if [ "$rc" -eq 2 ] && grep -qF -- "--ny 2 is smaller than the 3 ranks" \
    "$tmp/err"; then
    ok "fewer rows than ranks named"
else
    not_ok "fewer rows than ranks named (exit $rc)"
fi

# A solve that cannot converge is an error that says so.
run 2 --params 1,2,3,4,5 --nx 16 --ny 16 --steps 3 --cg-tol 1e-12 \
    --cg-maxit 2
rc=$?
if [ "$rc" -eq 1 ] && grep -qF "CG did not converge at step 1" "$tmp/err"; then
    ok "CG non-convergence reported, exit 1"
else
    not_ok "CG non-convergence reported, exit 1 (exit $rc)"
    diag "$(cat "$tmp/err")"
fi

# Fault injection for the launcher's tests: fail on the first attempt only.
run 2 --params 1,2,3,4,5 --nx 8 --ny 8 --steps 5 --fail-at-step 3 \
    --fail-attempts 1 --checksums "$tmp/fail.txt"
rc=$?
steps=$(awk '{print $3}' "$tmp/fail.txt" | sort -u | tr '\n' ' ')
if [ "$rc" -eq 3 ] && [ "$steps" = "1 2 " ]; then
    ok "--fail-at-step 3 on attempt 1: exit 3 after steps 1-2"
else
    not_ok "--fail-at-step 3 on attempt 1 (exit $rc, steps '$steps')"
fi
SURGE_ATTEMPT=2 run 2 --params 1,2,3,4,5 --nx 8 --ny 8 --steps 5 \
    --fail-at-step 3 --fail-attempts 1
check "--fail-attempts 1: attempt 2 completes" test $? -eq 0

# An injected hang sends nothing more; timeout(1) ends it.
timeout 3 "$BIN" $P --nx 8 --ny 8 --steps 5 --hang-at-step 2 \
    --checksums "$tmp/hang.txt" >"$tmp/out" 2>"$tmp/err"
rc=$?
steps=$(awk '{print $3}' "$tmp/hang.txt" | sort -u | tr '\n' ' ')
if [ "$rc" -eq 124 ] && [ "$steps" = "1 " ]; then
    ok "--hang-at-step 2 hangs after step 1"
else
    not_ok "--hang-at-step 2 (exit $rc, steps '$steps')"
fi

# A slow solver: 4 steps with --step-delay-ms 250 take at least 1 s.
start=$(date +%s%N)
run 1 --params 1,2,3,4,5 --nx 8 --ny 8 --steps 4 --step-delay-ms 250
rc=$?
ms=$((($(date +%s%N) - start) / 1000000))
if [ "$rc" -eq 0 ] && [ "$ms" -ge 1000 ]; then
    ok "--step-delay-ms 250 x 4 steps took $ms ms (>= 1000)"
else
    not_ok "--step-delay-ms 250 x 4 steps (exit $rc, $ms ms)"
fi

tap_done
