#!/bin/sh
# tests/integration/launch_resume.sh - a study's server state belongs to
# that study, and an interrupted study can be continued (issue 9, items 8,
# 10, 11, 12). One small heat2d study with the trainer, launched four times
# into one folder:
#   1. to the end, then leftovers are planted (a checkpoint temp file, a
#      runs/<sim> folder of another study, a line in server.log, the
#      per-rank files of a server of several ranks);
#   2. again from scratch, its server SIGKILLed right after it starts: the
#      new study must not resume from the old study's checkpoint (it would
#      refuse every step as already assembled and train on nothing), the
#      leftovers are gone; `surge serve` refuses a checkpoint of another
#      study by name;
#   3. again, its server SIGKILLed once a checkpoint exists and a run has
#      finished: the study completes, every step of every run is assembled
#      exactly once over the two servers, and the summary's identity
#      received = trained_on + discarded + never_served + validation +
#      dropped holds with the counts carried in the checkpoint;
#   4. again, interrupted with SIGINT, its newest checkpoint cut to half,
#      then `surge launch --resume`: the runs the checkpoint held are not
#      run again, the server falls back to the previous checkpoint (saying
#      the newest is truncated), and the summary covers the whole study.
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"
lib_study_env
launcher=
on_exit() { lib_kill_pids "$launcher"; }
# The waits below read the launcher's info lines ("server pid N at",
# "sim N: ok"), which --quiet leaves out unless asked for.
SURGE_LOG_LEVEL=info
export SURGE_LOG_LEVEL
RUNS=4
STEPS=20
out="$tmp/out"
cat >"$tmp/study.json" <<EOF
{
  "study": {"name": "resume", "seed": 3, "output_dir": "$out"},
  "parameters": [
$(heat2d_params)
  ],
  "sampler": {"runs": $RUNS},
  "solver": {"command": ["$HEAT", "--nx", "8", "--ny", "8", "--steps",
                         "$STEPS", "--step-delay-ms", "30"],
             "ranks": 1, "retries": 0, "client_timeout_s": 5},
  "scheduler": {"mpirun": "$MPIRUN", "max_concurrent": 2,
                "kill_grace_s": 2},
  "server": {"ping_interval_s": 0.3, "restarts": 1, "checksum_log": true},
  "reservoir": {"policy": "fifo", "capacity_bytes": "4MiB"},
  "trainer": {"enabled": true, "layers": [16], "batch_size": 4,
              "threads": 1, "time_min": 0, "time_max": 1,
              "out_norm_samples": 8, "eval_every": 1000,
              "checkpoint_every": 3, "steps_after_end": 10}
}
EOF

# launch_bg ARGS...: surge launch in the background ($launcher).
launch_bg() {
    "$SURGE" launch --quiet "$@" "$tmp/study.json" >"$tmp/stdout" \
        2>"$tmp/stderr" &
    launcher=$!
}
# wait_server OLDPID: until the launcher has a server other than OLDPID
# (it answered the launcher's first PING); prints its pid.
wait_server() {
    i=0
    while [ $i -lt 300 ]; do
        p=$(lib_json "$out/server.json" 'j["pid"]' 2>/dev/null)
        if [ -n "$p" ] && [ "$p" != "$1" ] && kill -0 "$p" 2>/dev/null &&
            grep -q "server pid $p at" "$tmp/stderr"; then
            echo "$p"
            return 0
        fi
        sleep 0.05
        i=$((i + 1))
    done
    return 1
}
# wait_ok_and_ckpt: until a run ended ok and two checkpoints were written
# after (so that the previous one, which --resume may fall back to, holds
# that run too).
wait_ok_and_ckpt() {
    i=0
    while [ $i -lt 400 ]; do
        if grep -q "sim [0-9]*: ok" "$tmp/stderr" 2>/dev/null; then
            rm -f "$out/checkpoint.safetensors" \
                "$out/checkpoint.safetensors.prev"
            lib_wait_file "$out/checkpoint.safetensors.prev" 100
            return $?
        fi
        sleep 0.05
        i=$((i + 1))
    done
    return 1
}

cat >"$tmp/check.py" <<'PYEOF'
import json, sys
out, runs, steps, what = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
    sys.argv[4]
s = json.load(open(f"{out}/summary.json"))
sm = s["samples"]
def fail(msg):
    print(msg + ": " + json.dumps({k: s.get(k) for k in
                                   ("runs", "samples", "errors")})[:1500])
    sys.exit(1)
if s["runs"]["ok"] != runs or not s["counts_add_up"]:
    fail("not every run ok, or the counts do not add up")
lhs = sm["received"]
rhs = (sm["trained_on"] + sm["discarded_after_training"] +
       sm["never_served"] + sm["validation"] + sm["dropped"])
if lhs != rhs:
    fail(f"identity: received {lhs} != {rhs}")
if sm["assembled"] != runs * steps:
    fail(f"assembled {sm['assembled']} != {runs} x {steps}")
if what == "fresh":
    refused = s["slices"]["dropped"].get("step_assembled", 0)
    if refused != 0 or s["trainer"]["samples_trained"] == 0:
        fail(f"trained on old state: {refused} slices refused as assembled")
elif what == "carried":
    if sm["carried_from_checkpoint"] <= 0:
        fail("nothing carried from the checkpoint")
elif what == "resumed":
    if s["runs"]["resumed_ok"] < 1 or s["trainer"]["resumed_from"] is None:
        fail("nothing resumed")
PYEOF

tap_plan 17

# 1. A study to the end; then leftovers of it and of others.
timeout 60 "$SURGE" launch --quiet "$tmp/study.json" >"$tmp/stdout" \
    2>"$tmp/stderr"
lib_check_launch_ok $? "$tmp/stderr" "$out"
old_id=$(cat "$out/study-id" 2>/dev/null)
cp "$out/checkpoint.safetensors" "$tmp/old.ckpt" 2>/dev/null
head -c 1000 /dev/zero >"$out/checkpoint.safetensors.tmp.999999"
mkdir -p "$out/runs/77" && echo old >"$out/runs/77/attempt-1.log"
echo "OLD STUDY LINE" >>"$out/server.log"
# What a study with server.ranks > 1 leaves: ranks r > 0's checkpoints
# (with the trainer's .prev and .corrupt), reports and checksum logs.
rank_files="checkpoint.rank1.safetensors checkpoint.rank1.safetensors.prev
checkpoint.rank12.safetensors.corrupt external-checkpoint.rank3.bin
trainer.rank1.json checksums.log.rank1 checksums.log.rank2"
for f in $rank_files notes.rank1.txt; do echo old >"$out/$f"; done

# 2. The same study again, its new server killed as soon as it is up.
launch_bg
old=$(wait_server "")
[ -n "$old" ] && kill -KILL "$old"
lib_wait_exit "$launcher" 600
launcher=
check "a rerun whose server was killed at once completes (exit $status)" \
    test "$status" = 0
if msg=$("$PY" "$tmp/check.py" "$out" $RUNS $STEPS fresh 2>&1); then
    ok "it trained on its own samples, not the old study's checkpoint"
else
    not_ok "it trained on its own samples, not the old study's checkpoint"
    diag "$msg"
    grep -h "resum" "$tmp/stderr" "$out/server.log" | head -3 |
        sed 's/^/# /'
fi
check "a new study id ($old_id -> $(cat "$out/study-id"))" \
    test -n "$old_id" -a "$old_id" != "$(cat "$out/study-id")"
check "the stale checkpoint temp file is gone" \
    test ! -e "$out/checkpoint.safetensors.tmp.999999"
check "the old study's runs/77 is gone" test ! -e "$out/runs/77"
left=
for f in $rank_files; do [ -e "$out/$f" ] && left="$left $f"; done
check "the old study's per-rank files are gone (left:${left:- none})" \
    test -z "$left"
check "a file of the user's (notes.rank1.txt) is kept" \
    test -e "$out/notes.rank1.txt"
check "server.log starts afresh" \
    test "$(grep -c "OLD STUDY LINE" "$out/server.log")" -eq 0
timeout 30 "$SURGE" serve --output-dir "$tmp/other" --consumer trainer \
    --study "$out/study.resolved.json" --study-id someone-else \
    --resume "$tmp/old.ckpt" --log-level warn >"$tmp/serve.log" 2>&1
rc=$?
if [ $rc -ne 0 ] && grep -q "written for study '$old_id'" "$tmp/serve.log"
then
    ok "surge serve refuses a checkpoint of another study"
else
    not_ok "surge serve refuses a checkpoint of another study (rc $rc)"
    sed 's/^/# /' "$tmp/serve.log" | tail -5
fi

# 3. Again, the server killed once it wrote a checkpoint after a run ended.
launch_bg
old=$(wait_server "")
wait_ok_and_ckpt && kill -KILL "$old"
lib_wait_exit "$launcher" 600
launcher=
check "the study survives a server killed after a checkpoint (exit $status)" \
    test "$status" = 0
if msg=$("$PY" "$tmp/check.py" "$out" $RUNS $STEPS carried 2>&1); then
    ok "across the restart: each step once, the identity holds"
else
    not_ok "across the restart: each step once, the identity holds"
    diag "$msg"
fi

# 4. Interrupted, newest checkpoint cut to half, then --resume.
launch_bg
wait_server "" >/dev/null
wait_ok_and_ckpt
kill -INT "$launcher"
lib_wait_exit "$launcher" 300
launcher=
check "SIGINT stops the study (exit $status)" test "$status" = 1
done_before=$(grep -o "sim [0-9]*: ok" "$tmp/stderr" | cut -d' ' -f2 |
    tr -d : | sort -u | tr '\n' ' ')
ck="$out/checkpoint.safetensors"
size=$(wc -c <"$ck")
truncate -s $((size / 2)) "$ck"
cp "$tmp/stderr" "$tmp/stderr.first"
timeout 60 "$SURGE" launch --quiet --resume "$tmp/study.json" \
    >"$tmp/stdout" 2>"$tmp/stderr"
lib_check_launch_ok $? "$tmp/stderr" "$out"
if grep -q "truncated: $((size / 2)) of $size bytes.*falling back" \
    "$out/server.log"; then
    ok "the cut checkpoint is named truncated; the previous one is used"
else
    not_ok "the cut checkpoint is named truncated; the previous one is used"
    grep -h "resume" "$out/server.log" | tail -3 | sed 's/^/# /'
fi
rerun=
for sim in $done_before; do
    grep -q "sim $sim attempt" "$tmp/stderr" && rerun="$rerun $sim"
done
check "runs done before the interruption are not run again (${done_before}rerun:$rerun)" \
    test -n "$done_before" -a -z "$rerun"
if msg=$("$PY" "$tmp/check.py" "$out" $RUNS $STEPS resumed 2>&1); then
    ok "the summary covers the whole study: each step once, identity holds"
else
    not_ok "the summary covers the whole study: each step once, identity holds"
    diag "$msg"
fi
tap_done
