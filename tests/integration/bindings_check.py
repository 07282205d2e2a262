"""tests/integration/bindings_check.py - the checks the language-binding
studies share (fortran_study.sh, python_study.sh, melissa_study.sh):

  bindings_check.py OUT RUNS STEPS RANKS FIELDS FIRST summary
      summary.json counts are exact: every run ok in one attempt,
      received = assembled = train + validation = RUNS * STEPS, nothing
      dropped, RUNS * STEPS * RANKS * FIELDS slices accepted.
  bindings_check.py OUT RUNS STEPS RANKS FIELDS FIRST steps
      checksums.log (server.checksum_log) lists steps FIRST..FIRST+STEPS-1
      of simulations 0..RUNS-1, each exactly once.
  bindings_check.py OUT RUNS STEPS RANKS FIELDS FIRST bit-identical GLOB
      the solver-side checksum files matching GLOB (in OUT; lines "step
      ck ..." per rank, the sim id in the file name as ck-SIM.RANK) add up,
      mod 2^64, to the server's checksum of each assembled sample.

Exits 0 or prints what is wrong and exits 1.
"""
import glob
import json
import os
import re
import sys

M = 1 << 64


def fail(msg):
    print(msg)
    sys.exit(1)


def server_checksums(out):
    seen = {}
    for line in open(os.path.join(out, "checksums.log")):
        sim, step, ck = line.split()
        key = (int(sim), int(step))
        if key in seen:
            fail(f"sample {key} assembled more than once")
        seen[key] = int(ck) if ck.isdigit() else int(ck, 16)
    return seen


def main():
    out, runs, steps, ranks, fields, first = sys.argv[1], *map(int, sys.argv[2:7])
    what = sys.argv[7]
    want = {(s, t) for s in range(runs) for t in range(first, first + steps)}
    if what == "summary":
        s = json.load(open(os.path.join(out, "summary.json")))
        n = runs * steps
        smp = s["samples"]
        checks = {
            "counts_add_up": s["counts_add_up"] is True,
            "runs ok": s["runs"]["ok"] == runs and s["runs"]["failed"] == 0,
            "attempts": s["runs"]["attempts"] == runs,
            "received": smp["received"] == n,
            "assembled": smp["assembled"] == n,
            "train+validation": smp["train"] + smp["validation"] == n,
            "dropped": smp["dropped"] == 0,
            "slices": s["slices"]["accepted"] == n * ranks * fields,
        }
        bad = [k for k, v in checks.items() if not v]
        if bad:
            fail(f"summary.json: {bad}: {json.dumps(s)[:700]}")
    elif what == "steps":
        seen = server_checksums(out)
        if set(seen) != want:
            fail(f"samples missing/extra: {sorted(set(seen) ^ want)[:6]}")
    elif what == "bit-identical":
        server = server_checksums(out)
        solver, lines = {}, {}
        files = glob.glob(os.path.join(out, sys.argv[8]))
        if len(files) != runs * ranks:
            fail(f"{len(files)} solver checksum files, want {runs * ranks}")
        for path in files:
            sim = int(re.search(r"ck-(\d+)\.\d+$", path).group(1))
            for line in open(path):
                step, *cks = line.split()
                key = (sim, int(step))
                solver[key] = (solver.get(key, 0) + sum(map(int, cks))) % M
                lines[key] = lines.get(key, 0) + 1
        if set(lines) != want or any(v != ranks for v in lines.values()):
            fail("solver checksum lines: not one per rank and step")
        bad = [k for k in want if solver[k] != server.get(k)]
        if bad:
            fail(f"{len(bad)} samples differ from what the ranks sent: {bad[:4]}")
    else:
        fail(f"unknown check {what}")


main()
