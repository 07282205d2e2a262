"""NumPy side of bench-reservoir: the batch gather a Python trainer does.

A worker driven line by line on stdin by bench-reservoir, so that its
repetitions interleave with the C ones (the machine's noise then hits both
alike). Commands, each answered with one line on stdout:

    pool NROWS ROW_FLOATS   build a float32 pool NROWS x ROW_FLOATS and
                            touch it (not timed)                -> ok
    rows BATCH PATH         load the row indices (uint32, BATCH per batch,
                            the rows the C side gathered)       -> ok
    rep BATCH               gather every batch of those rows once with
                            `pool[idx]` (fancy indexing as a user writes it:
                            a new array per batch), then with
                            `np.take(pool, idx, axis=0, out=buf)` (NumPy's
                            best case)             -> "FANCY_GBS TAKE_GBS"
    quit
Only the gathers are timed.
"""
import sys
import time

import numpy as np


def main():
    pool = None
    idx = {}
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "pool":
            pool = None
            idx.clear()
            pool = np.empty((int(cmd[1]), int(cmd[2])), dtype=np.float32)
            pool.fill(1.0)  # fault the pool in before timing
            reply = "ok"
        elif cmd[0] == "rows":
            batch = int(cmd[1])
            rows = np.fromfile(cmd[2], dtype=np.uint32).astype(np.intp)
            idx[batch] = rows.reshape(-1, batch)
            reply = "ok"
        elif cmd[0] == "rep":
            batch = int(cmd[1])
            ix = idx[batch]
            nbytes = ix.size * pool.shape[1] * 4
            t0 = time.perf_counter()
            for b in range(ix.shape[0]):
                x = pool[ix[b]]
            t1 = time.perf_counter()
            del x
            buf = np.empty((batch, pool.shape[1]), dtype=np.float32)
            t2 = time.perf_counter()
            for b in range(ix.shape[0]):
                np.take(pool, ix[b], axis=0, out=buf)
            t3 = time.perf_counter()
            del buf
            reply = "%.4f %.4f" % (nbytes / (t1 - t0) * 1e-9,
                                   nbytes / (t3 - t2) * 1e-9)
        elif cmd[0] == "quit":
            break
        else:
            reply = "error unknown command"
        sys.stdout.write(reply + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
