#!/bin/sh
# tests/integration/train_serve.sh - online training end to end, with real
# processes: `surge launch` runs a small heat2d study (real mpirun) whose
# server trains the surrogate; the validation error on the held-out runs
# must end below 0.8 x the untrained model's, model.safetensors loads
# (surge predict, and PyTorch with the lines of docs/model-file.md, which
# must predict what surge predict wrote within 1e-5 x the field's largest
# value), the PNG is a valid PNG of the field's size, and the counts add up:
# received = trained on + discarded after training + never served +
# validation + dropped. Then `surge serve --resume`: a server resumed from
# another's final checkpoint without training holds exactly its weights; a
# rerun of a simulation the first server had assembled is refused step by
# step; a resumed server with a larger --max-steps continues the step
# counter from the checkpoint's.
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"

DOC="$SURGE_SRCDIR/docs/model-file.md"
lib_need "$SURGE" "$HEAT" "$PY"
"$PY" -c 'import numpy' 2>/dev/null || skip_all "no numpy for $PY"
lib_full_stacks
lib_tmpdir
pids=
on_exit() {
    for p in $pids; do kill -9 "$p" 2>/dev/null; done
}

tap_plan 18

# ---------------------------------------------------------------- launch
cat >"$tmp/study.json" <<EOF
{
  "study": {"name": "train", "seed": 7, "output_dir": "$tmp/out",
            "progress_interval_s": 2},
  "parameters": [
$(heat2d_params)
  ],
  "sampler": {"kind": "lhs", "runs": 16},
  "solver": {"command": ["$HEAT", "--nx", "16", "--ny", "12", "--steps",
                         "40", "--dt", "0.005"],
             "ranks": 1, "retries": 0, "timeout_s": 60},
  "scheduler": {"mpirun": "$MPIRUN", "max_concurrent": 2},
  "server": {"validation_every": 4},
  "reservoir": {"policy": "reservoir", "capacity_bytes": "4MiB",
                "rate": {"samples_per_insert": 30, "min_diff": -100}},
  "trainer": {"enabled": true, "layers": [64, 64], "batch_size": 16,
              "threads": 1, "time_min": 0, "time_max": 0.2,
              "out_norm_samples": 100, "eval_every": 100,
              "checkpoint_every": 200, "steps_after_end": 1500}
}
EOF
timeout -k 5 240 "$SURGE" launch --quiet "$tmp/study.json" \
    >"$tmp/launch.out" 2>"$tmp/launch.err"
status=$?
if [ $status -eq 0 ]; then
    ok "surge launch with the trainer exits 0"
else
    not_ok "surge launch with the trainer exits 0 (status $status)"
    sed 's/^/# /' "$tmp/launch.err" | tail -20
    tail -20 "$tmp/out/server.log" 2>/dev/null | sed 's/^/# /'
fi
if grep -q "^  validation .* samples: relative L2" "$tmp/launch.out"; then
    ok "the summary table shows the validation relative L2 error"
else
    not_ok "the summary table shows the validation relative L2 error"
    sed 's/^/# /' "$tmp/launch.out"
fi

# summary.json: the trainer's figures and the counts.
"$PY" - "$tmp/out/summary.json" >"$tmp/summary.check" 2>&1 <<'EOF'
import json, os, sys
s = json.load(open(sys.argv[1]))
t = s["trainer"]
v = t["validation"]
print("steps", t["steps"], "samples_trained", t["samples_trained"],
      "rel_l2", v["rel_l2"], "untrained", v["untrained_rel_l2"])
checks = []
checks.append(("trained", t["steps"] > 0 and t["samples_trained"] > 0))
checks.append(("validation decreased",
               v["rel_l2"] is not None and v["untrained_rel_l2"] is not None
               and v["rel_l2"] < 0.8 * v["untrained_rel_l2"]))
checks.append(("model written", t["model"] is not None
               and os.path.isfile(t["model"])))
sm = s["samples"]
dropped = sm["dropped"]
total = (sm["trained_on"] + sm["discarded_after_training"]
         + sm["never_served"] + sm["validation"] + dropped)
checks.append(("counts add up", s["counts_add_up"] is True
               and sm["received"] == total == 16 * 40
               and sm["validation"] == 4 * 40
               and t["counts"]["add_up"] is True))
for name, good in checks:
    print(("ok " if good else "FAIL ") + name)
EOF
for what in "trained" "validation decreased" "model written" "counts add up"; do
    case $what in
    trained) desc="the server trained (steps and samples trained on > 0)" ;;
    "validation decreased")
        desc="validation rel L2 < 0.8 x the untrained model's" ;;
    "model written") desc="model.safetensors written" ;;
    "counts add up")
        desc="received = trained on + discarded + never served + validation + dropped" ;;
    esac
    if grep -qx "ok $what" "$tmp/summary.check"; then
        ok "$desc"
    else
        not_ok "$desc"
        sed 's/^/# /' "$tmp/summary.check"
    fi
done
diag "$(head -1 "$tmp/summary.check")"

# ---------------------------------------------------------------- predict
MODEL="$tmp/out/model.safetensors"
if "$SURGE" predict "$MODEL" --params 10,20,30,40,50 --time 0.1 \
    --shape 16x12 --out "$tmp/field.npy" --png "$tmp/field.png" --scale 3 \
    >"$tmp/predict.out" 2>&1; then
    ok "surge predict writes the .npy and the PNG"
else
    not_ok "surge predict writes the .npy and the PNG"
    sed 's/^/# /' "$tmp/predict.out"
fi
if "$PY" - "$tmp/field.png" <<'EOF'; then
import struct, sys, zlib
b = open(sys.argv[1], "rb").read()
assert b[:8] == b"\x89PNG\r\n\x1a\n", "signature"
pos, idat, w = 8, b"", None
while pos < len(b):
    n, typ = struct.unpack(">I4s", b[pos:pos + 8])
    data = b[pos + 8:pos + 8 + n]
    crc = struct.unpack(">I", b[pos + 8 + n:pos + 12 + n])[0]
    assert zlib.crc32(typ + data) & 0xffffffff == crc, "chunk CRC"
    if typ == b"IHDR":
        w, h, depth, ctype = struct.unpack(">IIBB", data[:10])
    if typ == b"IDAT":
        idat += data
    pos += 12 + n
assert (w, h, depth, ctype) == (16 * 3, 12 * 3, 8, 2), (w, h, depth, ctype)
raw = zlib.decompress(idat)
assert len(raw) == h * (1 + 3 * w), "pixel data size"
EOF
    ok "the PNG is valid (signature, CRCs, pixels) and 48 x 36 (NX x NY x 3)"
else
    not_ok "the PNG is valid and 48 x 36"
fi

# The documented PyTorch lines against surge predict's .npy.
if "$PY" -c 'import torch' 2>/dev/null; then
    sed -n '/^<!-- begin load -->$/,/^<!-- end load -->$/p' "$DOC" |
        sed '1,2d;$d' | sed '$d' >"$tmp/load.py"
    cat >>"$tmp/load.py" <<'EOF'

import sys
import numpy as np
predict, meta = load_surge_model(sys.argv[1])
y = predict(torch.tensor([[10.0, 20, 30, 40, 50, 0.1]])).numpy().reshape(12, 16)
c = np.load(sys.argv[2])
err = float(np.abs(y - c).max())
scale = float(np.abs(c).max())
print("max abs difference %.3g, largest value %.3g" % (err, scale))
sys.exit(0 if c.shape == (12, 16) and err <= 1e-5 * scale else 1)
EOF
    if "$PY" "$tmp/load.py" "$MODEL" "$tmp/field.npy" >"$tmp/torch.out" 2>&1; then
        ok "PyTorch (docs/model-file.md lines) predicts surge predict's field"
    else
        not_ok "PyTorch (docs/model-file.md lines) predicts surge predict's field"
    fi
    diag "$(tail -3 "$tmp/torch.out")"
else
    ok "# SKIP no torch for $PY"
fi

# ---------------------------------------------------------------- resume
# serve NAME ARGS...: a trainer server in $tmp/NAME, in the background.
serve() {
    name=$1
    shift
    mkdir -p "$tmp/$name"
    timeout -k 5 120 "$SURGE" serve --consumer trainer --study "$tmp/study.json" \
        --output-dir "$tmp/$name" --batch-size 16 --policy reservoir \
        --store-bytes 4M --validation-every 4 --http off --exit-idle 4 \
        --log-level info "$@" >"$tmp/$name.log" 2>&1 &
    srv=$!
    pids="$pids $srv"
    lib_wait_file "$tmp/$name/server.json"
    endpoint=$(lib_json "$tmp/$name/server.json" 'j["endpoint"]' 2>/dev/null)
}
# solve SIM PARAMS: one heat2d run (1 rank) against $endpoint.
solve() {
    SURGE_ENDPOINT=$endpoint SURGE_SIM_ID=$1 SURGE_PARAMS=$2 \
        SURGE_TIMEOUT_MS=10000 timeout 60 "$MPIRUN" --oversubscribe -np 1 \
        "$HEAT" --nx 16 --ny 12 --steps 40 --dt 0.005 >>"$tmp/solve.log" 2>&1
}
jq_py() {
    "$PY" -c 'import json, sys
d = json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."):
    d = d[k]
print(d)' "$@" 2>/dev/null
}

serve A --max-steps 150 --checkpoint-every 50
solve 0 "10,20,30,40,50"
solve 1 "90,10,50,20,70"
solve 2 "50,50,50,50,50"
wait "$srv"
st=$?
steps=$(jq_py "$tmp/A/trainer.json" steps)
if [ $st -eq 0 ] && [ "$steps" = 150 ] &&
    [ -s "$tmp/A/checkpoint.safetensors" ]; then
    ok "server A trains to --max-steps 150 and leaves a checkpoint"
else
    not_ok "server A trains to --max-steps 150 and leaves a checkpoint (status $st, steps $steps)"
    tail -5 "$tmp/A.log" | sed 's/^/# /'
fi

# B resumes at the same limit: no step, and sim 0 again is refused.
serve B --resume "$tmp/A/checkpoint.safetensors" --max-steps 150
solve 0 "10,20,30,40,50"
wait "$srv"
st=$?
if [ $st -eq 0 ] && grep -q "resuming from" "$tmp/B.log" &&
    [ "$(jq_py "$tmp/B/trainer.json" steps)" = 150 ] &&
    [ "$(jq_py "$tmp/B/trainer.json" steps_this_run)" = 0 ]; then
    ok "server B resumes at step 150 and takes no step at --max-steps 150"
else
    not_ok "server B resumes at step 150 and takes no step"
    tail -8 "$tmp/B.log" | sed 's/^/# /'
fi
if "$PY" - "$tmp/A/model.safetensors" "$tmp/B/model.safetensors" <<'EOF'; then
import json, struct, sys
def tensors(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    h.pop("__metadata__")
    return {k: b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]]
            for k, v in h.items()}
a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
sys.exit(0 if a == b and len(a) > 0 else 1)
EOF
    ok "server B's weights are bit-equal to the checkpoint's (server A's)"
else
    not_ok "server B's weights are bit-equal to the checkpoint's"
fi
if [ "$(jq_py "$tmp/B/server-stats.json" slices.dropped.step_assembled)" = 40 ] &&
    [ "$(jq_py "$tmp/B/server-stats.json" samples.train)" = 0 ]; then
    ok "a rerun of sim 0 on the resumed server is refused step by step (40 slices, nothing trained twice)"
else
    not_ok "a rerun of sim 0 on the resumed server is refused step by step"
    jq_py "$tmp/B/server-stats.json" slices | sed 's/^/# /'
fi

# C resumes with a larger limit: the step counter continues.
serve C --resume "$tmp/A/checkpoint.safetensors" --max-steps 250 \
    --steps-after-end 5000
solve 3 "30,70,10,90,20"
wait "$srv"
st=$?
s=$(jq_py "$tmp/C/trainer.json" steps)
r=$(jq_py "$tmp/C/trainer.json" steps_this_run)
if [ $st -eq 0 ] && [ "$s" = 250 ] && [ "$r" = 100 ]; then
    ok "server C continues from step 150 to 250 (100 steps this run)"
else
    not_ok "server C continues from step 150 to 250 (steps $s, this run $r)"
    tail -8 "$tmp/C.log" | sed 's/^/# /'
fi

# Bad input: a checkpoint that is not one, a study with a bad model.
printf 'not a checkpoint' >"$tmp/bad.safetensors"
if ! timeout 20 "$SURGE" serve --consumer trainer --study "$tmp/study.json" \
    --output-dir "$tmp/D" --http off --resume "$tmp/bad.safetensors" \
    >"$tmp/D.log" 2>&1 && grep -q "bad.safetensors" "$tmp/D.log"; then
    ok "--resume with a corrupt file is refused naming the file"
else
    not_ok "--resume with a corrupt file is refused naming the file"
    sed 's/^/# /' "$tmp/D.log"
fi
sed 's/"layers": \[64, 64\]/"layers": [64, -3]/' "$tmp/study.json" >"$tmp/bad.json"
if ! timeout 20 "$SURGE" serve --consumer trainer --study "$tmp/bad.json" \
    --output-dir "$tmp/E" --http off >"$tmp/E.log" 2>&1 &&
    grep -q "trainer.layers" "$tmp/E.log"; then
    ok "a study with a bad model is refused naming trainer.layers"
else
    not_ok "a study with a bad model is refused naming trainer.layers"
    sed 's/^/# /' "$tmp/E.log"
fi

# ---------------------------------------------------------------- restart
# surge launch restarts a server killed mid-study with --resume on its
# last checkpoint: training continues from it.
sed -e "s|\"output_dir\": \"$tmp/out\"|\"output_dir\": \"$tmp/out2\"|" \
    -e 's|"0.005"\]|"0.005", "--step-delay-ms", "40"]|' \
    -e 's|"validation_every": 4}|"validation_every": 4, "ping_interval_s": 0.5, "restarts": 1}|' \
    -e 's|"runs": 16|"runs": 6|' "$tmp/study.json" >"$tmp/study2.json"
timeout -k 5 240 "$SURGE" launch --quiet "$tmp/study2.json" \
    >"$tmp/launch2.out" 2>"$tmp/launch2.err" &
launcher=$!
pids="$pids $launcher"
lib_wait_file "$tmp/out2/checkpoint.safetensors" 300
old=$(jq_py "$tmp/out2/server.json" pid)
if [ -n "$old" ] && kill -9 "$old" 2>/dev/null; then
    ok "killed the training server (pid $old) after its first checkpoint"
else
    not_ok "killed the training server after its first checkpoint"
fi
wait "$launcher"
st=$?
if [ $st -eq 0 ] && [ "$(jq_py "$tmp/out2/summary.json" server.restarts)" = 1 ] &&
    [ "$(jq_py "$tmp/out2/trainer.json" resumed_from)" = "$tmp/out2/checkpoint.safetensors" ]; then
    ok "the restarted server resumed from the checkpoint and the study ends ok"
else
    not_ok "the restarted server resumed from the checkpoint and the study ends ok (status $st)"
    tail -5 "$tmp/launch2.err" | sed 's/^/# /'
fi
tap_done
