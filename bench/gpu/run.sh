#!/bin/sh
# bench/gpu/run.sh [BUNDLE] - the GPU check, on a machine with an NVIDIA GPU
# and the repository, in one command (well under 8 minutes on an H200):
#   1. the GPU unit tests: test_backend_cuda (CUDA against CPU per
#      precision, graph against eager, device batches, checkpoints across
#      backends, named errors) and test_backend (the ops contract, auto);
#   2. tests/integration/train_cuda.sh (a study trained on cuda, resumed on
#      cpu, both models predicting);
#   3. bench-trainer-cuda (surge against PyTorch eager, PyTorch with the
#      step in a CUDA graph, and the GEMM bound);
#   4. bench/gpu/reservoir_feed.sh (test_reservoir_cuda and the device
#      reservoir's gather against host-fed batches);
# then prints one JSON line: the GPU, each test's pass/fail/skip counts and
# the benchmark's JSON. Exit status 0 when every test passed (skips count
# as passes only when the tests say why) and the benchmark ran.
#
# BUNDLE (default build/gpu-bundle) comes from bench/gpu/bundle.sh on the
# build machine: programs laid out like a build tree plus the shared
# libraries the GPU machine lacks. cuBLASLt comes from the GPU machine's
# CUDA (/usr/local/cuda) or, failing that, from PyTorch's nvidia wheels.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
b=${1:-$top/build/gpu-bundle}
b=$(cd "$b" 2>/dev/null && pwd) || {
    echo '{"bench":"gpu-check","error":"no bundle: run bench/gpu/bundle.sh on the build machine"}'
    exit 1
}
PY=${PYTHON:-python3}
LD_LIBRARY_PATH="$b/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ -d /usr/local/cuda/lib64 ]; then
    LD_LIBRARY_PATH="$LD_LIBRARY_PATH:/usr/local/cuda/lib64"
fi
if LD_LIBRARY_PATH=$LD_LIBRARY_PATH ldd "$b/bench/gpu/bench-trainer-cuda" |
    grep -q 'libcublasLt.*not found'; then
    wheel=$("$PY" -c 'import nvidia.cublas, os
print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null)
    [ -n "$wheel" ] && LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$wheel"
fi
export LD_LIBRARY_PATH
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 CMOCKA_MESSAGE_OUTPUT=TAP
export SURGE_BUILDDIR="$b" SURGE_SRCDIR="$top" DEBIAN_PYTHON="$PY"
logs=$(mktemp -d)
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null |
    head -1)

# run NAME TIMEOUT COMMAND...: TAP output into $logs/NAME.
run() {
    name=$1 limit=$2
    shift 2
    (cd "$logs" && timeout -k 5 "$limit" "$@") >"$logs/$name.tap" 2>&1
    echo $? >"$logs/$name.rc"
    grep -E '^(not )?ok|^1\.\.' "$logs/$name.tap" >&2
}
run test_backend_cuda 300 "$b/tests/unit/trainer/test_backend_cuda"
run test_backend 120 "$b/tests/unit/trainer/test_backend"
run train_cuda 180 sh "$top/tests/integration/train_cuda.sh"
timeout -k 5 300 "$b/bench/gpu/bench-trainer-cuda" --python "$PY" \
    --script "$top/bench/gpu/bench_torch_cuda.py" >"$logs/bench.out" \
    2>"$logs/bench.err"
echo $? >"$logs/bench.rc"
sed 's/^/# /' "$logs/bench.err" >&2
timeout -k 5 240 sh "$top/bench/gpu/reservoir_feed.sh" "$b" \
    >"$logs/feed.out" 2>"$logs/feed.err"
echo $? >"$logs/feed.rc"
sed 's/^/# /' "$logs/feed.err" >&2

"$PY" - "$logs" "$gpu" <<'EOF'
import json, os, re, sys
logs, gpu = sys.argv[1], sys.argv[2]
out = {"bench": "gpu-check", "gpu": gpu or None, "tests": {}}
ok_all = True
for name in ("test_backend_cuda", "test_backend", "train_cuda"):
    tap = open(os.path.join(logs, name + ".tap"), errors="replace").read()
    rc = int(open(os.path.join(logs, name + ".rc")).read())
    lines = tap.splitlines()
    skip = [l for l in lines if re.match(r"^1\.\.0 # SKIP", l)]
    passed = sum(1 for l in lines if re.match(r"^ok ", l))
    failed = sum(1 for l in lines if re.match(r"^not ok ", l))
    t = {"pass": passed, "fail": failed, "rc": rc}
    if skip:
        t["skipped"] = skip[0][len("1..0 # SKIP "):]
    if failed or rc != 0 or (passed == 0 and not skip):
        ok_all = False
        t["tail"] = lines[-6:]
    out["tests"][name] = t
bench_rc = int(open(os.path.join(logs, "bench.rc")).read())
text = open(os.path.join(logs, "bench.out")).read().strip().splitlines()
try:
    out["bench_trainer_cuda"] = json.loads(text[-1])
except (IndexError, ValueError):
    out["bench_trainer_cuda"] = {"error": "no JSON line", "rc": bench_rc}
    ok_all = False
feed_rc = int(open(os.path.join(logs, "feed.rc")).read())
text = open(os.path.join(logs, "feed.out")).read().strip().splitlines()
try:
    out["reservoir_feed"] = json.loads(text[-1])
except (IndexError, ValueError):
    out["reservoir_feed"] = {"error": "no JSON line", "rc": feed_rc}
    ok_all = False
out["ok"] = ok_all and bench_rc == 0 and feed_rc == 0
print(json.dumps(out, separators=(",", ":")))
sys.exit(0 if out["ok"] else 1)
EOF
status=$?
rm -rf "$logs"
exit $status
