#!/bin/sh
# tests/integration/install_prefix.sh - a solver built outside the tree
# against an installed surge, as a new user does: `make install` of the
# library, headers and surge.pc into a fresh prefix, then `cc solver.c
# $(pkg-config --cflags --libs surge)` with nothing else, no
# LD_LIBRARY_PATH. The pc file's rpath must let the solver find
# libsurge.so.0 at run time; it then runs in a real study through
# `surge launch` (2 runs, 2 fields, send_checked) and every slice arrives.
# The model it trains records both fields (output_fields), so `surge
# predict` writes each as its own 1-D array and line plot.
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"
lib_study_env
command -v pkg-config >/dev/null 2>&1 || skip_all "pkg-config is not installed"
CC=${SURGE_TEST_CC:-cc}
# Staged with DESTDIR, as packagers do: libtool relinks the bindings
# (libsurge_fortran, libsurge_melissa) against libsurge only for the
# prefix the build was configured with, so `make install prefix=...`
# cannot move it. --define-prefix below takes the prefix from where
# surge.pc lies, as for an install moved after `make install`.
configured=$(PKG_CONFIG_PATH="$SURGE_BUILDDIR/clients" \
    pkg-config --variable=prefix surge)
P="$tmp/dest$configured"

tap_plan 8

timeout 120 make -C "$SURGE_BUILDDIR" install-libLTLIBRARIES \
    install-surgeincludeHEADERS install-pkgconfigDATA DESTDIR="$tmp/dest" \
    >"$tmp/install.log" 2>&1
check "make install of libsurge, its headers and surge.pc into $P" \
    test $? -eq 0 -a -f "$P/lib/pkgconfig/surge.pc"
[ -f "$P/lib/pkgconfig/surge.pc" ] || tail -5 "$tmp/install.log" | sed 's/^/# /'

# The pc file names the prefix it was configured for; --define-prefix
# takes it from where the file lies, as for a relocated install.
PKG_CONFIG_PATH="$P/lib/pkgconfig"
export PKG_CONFIG_PATH
flags=$(pkg-config --define-prefix --cflags --libs surge)
rpath=$(pkg-config --define-prefix --variable=rpath surge)
[ -n "$rpath" ] || diag "surge.pc has no rpath (configured for a system libdir)"
check "pkg-config's Libs carry the rpath of the install ($rpath)" \
    sh -c "echo '$flags' | grep -q -- '-Wl,-rpath,$P/lib'"

mkdir "$tmp/solver"
cat >"$tmp/solver/burgers1d.c" <<'EOF'
/* A 1D viscous Burgers solver, one rank: u and its flux u^2/2 sent each
 * step as two fields of N points with the checked send. */
#include <math.h>
#include <stdio.h>
#include <surge/client.h>
#define N 64
int main(void) {
    double u[N], f[N], un[N], dx = 1.0 / N, dt = 2e-4, nu = 0.01;
    surge_client_options o;
    if (surge_client_options_init(&o) != 0) {
        fprintf(stderr, "%s\n", surge_client_options_error());
        return 1;
    }
    surge_field fields[2] = {{"u", N, 0, N}, {"flux", N, 0, N}};
    o.fields = fields;
    o.nfields = 2;
    surge_client *c;
    int rc = surge_client_open(&c, &o);
    if (rc < 0) {
        fprintf(stderr, "%s\n", surge_client_open_error());
        return 1;
    }
    double a = o.nparams > 0 ? o.params[0] : 1.0;
    for (int i = 0; i < N; i++) u[i] = a * sin(2 * M_PI * i * dx);
    for (int s = 1; s <= 5 && rc == 0; s++) {
        for (int i = 0; i < N; i++) {
            int l = (i + N - 1) % N, r = (i + 1) % N;
            un[i] = u[i] - dt * u[i] * (u[r] - u[l]) / (2 * dx) +
                    nu * dt * (u[r] - 2 * u[i] + u[l]) / (dx * dx);
        }
        for (int i = 0; i < N; i++) { u[i] = un[i]; f[i] = 0.5 * u[i] * u[i]; }
        rc = surge_client_send_checked(c, "u", s, s * dt, u, N, SURGE_FLOAT64);
        if (rc == 0)
            rc = surge_client_send_checked(c, "flux", s, s * dt, f, N,
                                           SURGE_FLOAT64);
    }
    if (rc != 0) {
        fprintf(stderr, "send: %s\n", surge_client_last_error(c));
        surge_client_abort(&c);
        return 1;
    }
    rc = surge_client_close(&c);
    if (rc != 0) fprintf(stderr, "close: %s\n", surge_client_close_error());
    return rc != 0;
}
EOF
# shellcheck disable=SC2086 # pkg-config's flags are a list
(cd "$tmp/solver" &&
    $CC $SURGE_TEST_SAN_CFLAGS -o burgers1d burgers1d.c $flags -lm) \
    >"$tmp/cc.log" 2>&1
check "the solver builds out of tree with pkg-config's flags only" \
    test -x "$tmp/solver/burgers1d"
sed 's/^/# /' "$tmp/cc.log" | head -5

cat >"$tmp/study.json" <<EOF
{
  "study": {"name": "installed", "seed": 1, "output_dir": "$tmp/out"},
  "parameters": [{"name": "a", "min": 0.5, "max": 1.5}],
  "sampler": {"kind": "uniform", "runs": 2},
  "solver": {"command": ["$tmp/solver/burgers1d"], "timeout_s": 30,
             "retries": 0},
  "scheduler": {"mpirun": ""},
  "server": {"validation_every": 2},
  "reservoir": {"policy": "fifo", "capacity_bytes": "1MiB"},
  "trainer": {"enabled": true, "layers": [8], "batch_size": 2,
              "time_min": 0, "time_max": 0.001, "out_norm_samples": 2,
              "eval_every": 10, "checkpoint_every": 0,
              "steps_after_end": 20}
}
EOF
(unset LD_LIBRARY_PATH
    timeout 60 "$SURGE" launch --quiet "$tmp/study.json" >"$tmp/stdout" \
        2>"$tmp/stderr")
rc=$?
check "the installed solver runs in a study without LD_LIBRARY_PATH (exit $rc)" \
    test "$rc" -eq 0
[ "$rc" -eq 0 ] && ! grep -q 'cannot open shared object' \
    "$tmp/out/runs/0/attempt-1.log" ||
    sed 's/^/# /' "$tmp/out/runs/0/attempt-1.log" "$tmp/stderr" | tail -8
sent=$(lib_json "$tmp/out/summary.json" 'j["slices"]["sent"]' 2>/dev/null)
recv=$(lib_json "$tmp/out/summary.json" 'j["slices"]["accepted"]' 2>/dev/null)
check "its 20 slices (2 runs x 5 steps x 2 fields) were sent and accepted ($sent, $recv)" \
    test "$sent" = 20 -a "$recv" = 20

check "the model file names both fields, their offsets and shapes" \
    "$PY" -c '
import json, struct, sys
f = open(sys.argv[1], "rb")
n = struct.unpack("<Q", f.read(8))[0]
meta = json.loads(f.read(n))["__metadata__"]
of = json.loads(meta["output_fields"])
want = [{"name": "u", "offset": 0, "size": 64, "shape": [64]},
        {"name": "flux", "offset": 64, "size": 64, "shape": [64]}]
sys.exit(0 if of == want and "field_shape" not in meta else 1)' \
    "$tmp/out/model.safetensors"
timeout 30 "$SURGE" predict "$tmp/out/model.safetensors" --params 1 \
    --time 0.0005 --out "$tmp/pred.npy" --png "$tmp/pred.png" \
    >"$tmp/predict.out" 2>&1
sed 's/^/# /' "$tmp/predict.out"
check "surge predict writes each field as its own 1-D array (pred.u.npy, pred.flux.npy)" \
    "$PY" -c '
import sys
for f in sys.argv[1:]:
    head = open(f, "rb").read(128).decode("latin-1")
    if "(64,)" not in head:
        sys.exit(1)' "$tmp/pred.u.npy" "$tmp/pred.flux.npy"
check "... and each as a 640 x 240 line plot, not a strip one pixel high" \
    "$PY" -c '
import struct, sys
for f in sys.argv[1:]:
    b = open(f, "rb").read(24)
    if b[:8] != b"\x89PNG\r\n\x1a\n" or struct.unpack(">II", b[16:24]) != (640, 240):
        sys.exit(1)' "$tmp/pred.u.png" "$tmp/pred.flux.png"

tap_done
