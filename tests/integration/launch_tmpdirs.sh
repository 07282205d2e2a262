#!/bin/sh
# tests/integration/launch_tmpdirs.sh - every run attempt of a local study
# gets a temporary folder of its own (issue 9, item 7: two mpirun started
# together raced on Open MPI's shared session directory, "mkdir ... File
# exists"). Four runs start at once, one fails once and is retried; each
# rank records its TMPDIR, Open MPI's tmpdir base and the session folder
# mpirun gave it. Checks: a distinct folder per attempt, none of them the
# launcher's TMPDIR, mpirun's session folder inside it, all removed once
# the study ended, and the study itself fine.
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"
lib_study_env
mkdir "$tmp/launcher-tmp"
cat >"$tmp/solver.sh" <<EOF
#!/bin/sh
d="$tmp/out/runs/\$SURGE_SIM_ID"
{
    echo "tmpdir=\$TMPDIR"
    echo "orte=\$OMPI_MCA_orte_tmpdir_base"
    echo "prte=\$OMPI_MCA_prte_tmpdir_base"
    echo "session=\${OMPI_MCA_orte_top_session_dir:-\$PMIX_SERVER_TMPDIR}"
} >"\$d/tmp-\$SURGE_ATTEMPT-\$OMPI_COMM_WORLD_RANK.txt"
fail=""
[ "\$SURGE_SIM_ID" = 1 ] && fail="--fail-at-step 2 --fail-attempts 1"
exec "$HEAT" --nx 8 --ny 8 --steps 4 \$fail
EOF
chmod +x "$tmp/solver.sh"
cat >"$tmp/study.json" <<EOF
{
  "study": {"name": "tmpdirs", "output_dir": "$tmp/out"},
  "parameters": [
$(heat2d_params)
  ],
  "sampler": {"runs": 4},
  "solver": {"command": ["$tmp/solver.sh"], "ranks": 2, "retries": 1},
  "scheduler": {"mpirun": "$MPIRUN", "max_concurrent": 4,
                "kill_grace_s": 2},
  "reservoir": {"policy": "fifo", "capacity_bytes": "16MiB"}
}
EOF

tap_plan 5
TMPDIR="$tmp/launcher-tmp" timeout 120 "$SURGE" launch --quiet \
    "$tmp/study.json" >"$tmp/stdout" 2>"$tmp/stderr"
lib_check_launch_ok $? "$tmp/stderr" "$tmp/out"

cat >"$tmp/check.py" <<'PYEOF'
import glob, os, sys
out, base, what = sys.argv[1], sys.argv[2], sys.argv[3]
rec = {}
for f in glob.glob(f"{out}/runs/*/tmp-*.txt"):
    kv = dict(l.rstrip("\n").split("=", 1) for l in open(f))
    sim = f.split("/")[-2]
    attempt, rank = f.rsplit("/", 1)[1][4:-4].split("-")
    rec.setdefault((sim, attempt), []).append(kv)
if len(rec) != 5:
    sys.exit(f"expected 5 attempts (4 runs, 1 retry), got {sorted(rec)}")
dirs = {}
for key, ranks in rec.items():
    t = {r["tmpdir"] for r in ranks}
    if len(t) != 1 or "" in t:
        sys.exit(f"{key}: ranks disagree or no TMPDIR: {t}")
    dirs[key] = t.pop()
    r = ranks[0]
if what == "distinct":
    if len(set(dirs.values())) != len(dirs):
        sys.exit(f"attempts share a folder: {dirs}")
    if any(d.rstrip("/") == base.rstrip("/") for d in dirs.values()):
        sys.exit(f"an attempt uses the launcher's TMPDIR: {dirs}")
elif what == "mpi":
    for key, ranks in rec.items():
        for r in ranks:
            if r["orte"] != dirs[key] or r["prte"] != dirs[key]:
                sys.exit(f"{key}: Open MPI tmpdir base {r} != {dirs[key]}")
            if not r["session"].startswith(dirs[key] + "/"):
                sys.exit(f"{key}: mpirun's session {r['session']} "
                         f"not in {dirs[key]}")
elif what == "removed":
    left = [d for d in dirs.values() if os.path.exists(d)]
    left += glob.glob(f"{base}/surge-*")
    if left:
        sys.exit(f"left behind: {left}")
PYEOF
if msg=$("$PY" "$tmp/check.py" "$tmp/out" "$tmp/launcher-tmp" distinct 2>&1)
then
    ok "each attempt had its own TMPDIR, not the launcher's"
else
    not_ok "each attempt had its own TMPDIR, not the launcher's"
    diag "$msg"
fi
if msg=$("$PY" "$tmp/check.py" "$tmp/out" "$tmp/launcher-tmp" mpi 2>&1); then
    ok "Open MPI's tmpdir base and session folder are inside it"
else
    not_ok "Open MPI's tmpdir base and session folder are inside it"
    diag "$msg"
fi
if msg=$("$PY" "$tmp/check.py" "$tmp/out" "$tmp/launcher-tmp" removed 2>&1)
then
    ok "the temporary folders are gone after the study"
else
    not_ok "the temporary folders are gone after the study"
    diag "$msg"
fi
check "the retried run ended fine" \
    test "$(lib_json "$tmp/out/summary.json" 'j["runs"]["ok"]')" = 4
tap_done
