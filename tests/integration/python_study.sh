#!/bin/sh
# tests/integration/python_study.sh - the `surge` Python package (python/,
# ctypes over libsurge) in a study: solvers/wave1d_py/wave1d.py (NumPy +
# mpi4py, float64 and float32 fields) through `surge launch`, 3 runs x 2
# ranks x 8 steps. Exact counts in summary.json, every step assembled
# once, samples bit-identical to what the ranks sent, leapfrog's energy
# conserved to rounding. Also: the ctypes mirror matches the C layout
# (py_layout), `pip install` of python/ works, and the binding's errors
# (wrong count, non-contiguous view, wrong dtype, no server) raise
# SurgeError with their code and message.
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"
LAYOUT="$SURGE_BUILDDIR/tests/integration/py_layout"
LIBSURGE="$SURGE_BUILDDIR/clients/.libs/libsurge.so.0"
WAVE="$SURGE_SRCDIR/solvers/wave1d_py/wave1d.py"
lib_need "$LAYOUT" "$LIBSURGE"
lib_study_env
"$PY" -c 'import numpy, mpi4py' 2>/dev/null ||
    skip_all "$PY lacks numpy or mpi4py (apt-get install python3-numpy python3-mpi4py)"
server_pid=
on_exit() { lib_term_wait "$server_pid"; }
SURGE_LIBRARY=$LIBSURGE
PYTHONPATH="$SURGE_SRCDIR/python"
# Nothing written into the source tree (it may be read-only).
PYTHONDONTWRITEBYTECODE=1
export SURGE_LIBRARY PYTHONPATH PYTHONDONTWRITEBYTECODE
# Under --enable-sanitizers libsurge needs the sanitizer runtimes loaded
# first; Python itself is not instrumented, so its own allocations are
# not leak-checked.
PYRUN="$PY"
if ldd "$LIBSURGE" | grep -q libasan; then
    PYRUN="env LD_PRELOAD=$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so) ASAN_OPTIONS=detect_leaks=0 $PY"
fi
RUNS=3
RANKS=2
STEPS=8
cmd=
for w in $PYRUN "$WAVE" --nx 40 --steps $STEPS --checksums "{output_dir}/ck-{sim}"; do
    cmd="$cmd${cmd:+, }\"$w\""
done
cat >"$tmp/study.json" <<JSON
{
  "study": {"name": "wave1d", "seed": 11, "output_dir": "$tmp/out"},
  "parameters": [
    {"name": "c", "min": 0.5, "max": 2},
    {"name": "x0", "min": 0.3, "max": 0.7},
    {"name": "amplitude", "min": 0.5, "max": 1.5}
  ],
  "sampler": {"kind": "uniform", "runs": $RUNS},
  "solver": {"command": [$cmd], "ranks": $RANKS, "timeout_s": 60,
             "retries": 0},
  "scheduler": {"mpirun": "$MPIRUN", "max_concurrent": 2},
  "server": {"checksum_log": true},
  "reservoir": {"policy": "fifo", "capacity_bytes": "16MiB"}
}
JSON

tap_plan 9

timeout 120 "$SURGE" launch --quiet "$tmp/study.json" >"$tmp/stdout" \
    2>"$tmp/stderr"
lib_check_launch_ok $? "$tmp/stderr" "$tmp/out"
CHECK="$SURGE_SRCDIR/tests/integration/bindings_check.py"
lib_py_checks "$CHECK" "$tmp/out $RUNS $STEPS $RANKS 2 1" summary steps
if msg=$("$PY" "$CHECK" "$tmp/out" $RUNS $STEPS $RANKS 2 1 bit-identical \
    'ck-*.*' 2>&1); then
    ok "bit-identical (u float64, velocity float32)"
else
    not_ok "bit-identical (u float64, velocity float32)"
    printf "%s\n" "$msg" | sed "s/^/# /"
fi
drifts=$(cat "$tmp"/out/runs/*/attempt-1.log 2>/dev/null |
    sed -n 's/.*energy drift  *\([^ ]*\) after.*/\1/p')
if [ "$(echo "$drifts" | grep -c .)" -eq $RUNS ] &&
    "$PY" -c 'import sys; sys.exit(any(float(v) > 1e-12 for v in sys.argv[1:]))' $drifts; then
    ok "energy conserved in every run ($(echo $drifts))"
else
    not_ok "energy conserved in every run (drifts: $(echo $drifts))"
fi

# The ctypes mirror of surge_field and surge_client_options.
if msg=$("$LAYOUT" | $PYRUN -c '
import json, sys
from surge import client
c = json.load(sys.stdin)
py = client.layout()
bad = []
for st, members in py.items():
    for m, off in members.items():
        if m != "sizeof" and c[st].get(m) != off:
            bad.append(f"{st}.{m}: C {c[st].get(m)}, ctypes {off}")
# An array of fields must have the C stride; the options may only have
# grown at the end, into the spare room.
if c["surge_field"]["sizeof"] != py["surge_field"]["sizeof"]:
    bad.append("sizeof(surge_field) differs")
grow = c["surge_client_options"]["sizeof"] - py["surge_client_options"]["sizeof"]
if not 0 <= grow <= client._OPTIONS_SPARE:
    bad.append(f"surge_client_options grew by {grow} bytes")
sys.exit("; ".join(bad) if bad else 0)
' 2>&1); then
    ok "ctypes mirror matches the C layout"
else
    not_ok "ctypes mirror matches the C layout"
    printf "%s\n" "$msg" | sed "s/^/# /"
fi

# pip installs the package from the repository (from a copy: setuptools
# writes build/ and *.egg-info next to pyproject.toml, and the source tree
# may be read-only, as under make distcheck).
cp -R "$SURGE_SRCDIR/python" "$tmp/python-src" && chmod -R u+w "$tmp/python-src"
if timeout 120 "$PY" -m pip install --quiet --no-deps --no-build-isolation \
    --no-index --target "$tmp/site" "$tmp/python-src" \
    >"$tmp/pip.log" 2>&1 &&
    [ "$(cd "$tmp" && PYTHONPATH="$tmp/site" "$PY" -c \
        'import surge, os; print(os.path.dirname(surge.__file__))')" = \
        "$tmp/site/surge" ]; then
    ok "pip install python/ gives an importable surge"
else
    not_ok "pip install python/ gives an importable surge"
    diag "$(tail -5 "$tmp/pip.log")"
fi

# A wrong SURGE_LIBRARY is named, not a ctypes traceback.
msg=$(SURGE_LIBRARY=/nonexistent/libsurge.so.0 "$PY" -c '
import surge
try:
    surge.run_params()
except surge.SurgeError as e:
    print(e.code, e.message)' 2>&1)
check "SURGE_LIBRARY that does not exist: $msg" \
    test "$msg" = "-1010 SURGE_LIBRARY=/nonexistent/libsurge.so.0: no such file"

# Errors, against a server of their own.
TOKEN=python-errors-token
SURGE_TOKEN=$TOKEN timeout -k 5 120 "$SURGE" serve --output-dir "$tmp/srv" \
    --log-level warn >"$tmp/serve.log" 2>&1 &
server_pid=$!
lib_wait_file "$tmp/srv/server.json"
endpoint=$(lib_json "$tmp/srv/server.json" 'j["endpoint"]' 2>/dev/null)
if msg=$(SURGE_ENDPOINT=$endpoint SURGE_TOKEN=$TOKEN SURGE_SIM_ID=0 \
    SURGE_PARAMS=1,2 timeout 60 $PYRUN -c '
import numpy as np, surge
from surge import client as sc
def raises(code, text, fn, *a, **kw):
    try:
        fn(*a, **kw)
    except surge.SurgeError as e:
        assert e.code == code and text in e.message, (code, text, e.code, e.message)
        return
    raise AssertionError(f"no error: want {code} {text}")
assert surge.run_params() == (0, (1.0, 2.0)), surge.run_params()
raises(sc.ENOSERVER, "tcp://127.0.0.1:1", surge.Client,
       [surge.Field("u", 4, 0, 4)], None, endpoint="tcp://127.0.0.1:1",
       timeout_ms=300)
c = surge.Client([surge.Field("u", 4, 0, 4)])
u = np.arange(8, dtype=np.float64)
raises(sc.EBOUNDS, "has 5 elements; this rank declared 4", c.send, "u", 1, 0.1, u[:5])
raises(-22, "not C-contiguous", c.send, "u", 1, 0.1, u[::2])
raises(sc.EDTYPE, "float16", c.send, "u", 1, 0.1, u[:4].astype(np.float16))
raises(sc.EFIELD, "\"v\"", c.send, "v", 1, 0.1, u[:4])
c.send("u", 1, 0.1, u[:4])
c.send("u", 2, 0.2, u[:4].astype(np.float32).reshape(2, 2))
raises(sc.EDUPLICATE, "already sent", c.send, "u", 2, 0.2, u[:4])
c.flush()
assert c.stats()["slices_sent"] == 2, c.stats()
c.close()
raises(sc.ESTATE, "closed", c.send, "u", 3, 0.3, u[:4])
print("all error checks passed")
' 2>&1); then
    ok "SurgeError codes and messages ($msg)"
else
    not_ok "SurgeError codes and messages"
    printf "%s\n" "$msg" | sed "s/^/# /"
fi
tap_done
