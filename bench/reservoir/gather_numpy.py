"""NumPy side of bench-reservoir: the batch gather a Python trainer does.

usage: gather_numpy.py NROWS ROW_FLOATS REPS (BATCH ROWS_FILE)...

Builds a float32 pool of NROWS x ROW_FLOATS (the reservoir's pool size),
touches it once (not timed), then for each batch size gathers the rows
listed in ROWS_FILE (uint32, BATCH per batch, the very rows the C side
gathered) REPS times and prints, per batch size, one line
    numpy BATCH FANCY_GBS TAKE_OUT_GBS
with the median GB/s of `pool[idx]` (fancy indexing, as a user writes it:
a new array per batch) and of `np.take(pool, idx, axis=0, out=buf)` (NumPy's
best case, no allocation). Only the gathers are timed.
"""
import statistics
import sys
import time

import numpy as np


def main(argv):
    nrows, row, reps = int(argv[1]), int(argv[2]), int(argv[3])
    pool = np.empty((nrows, row), dtype=np.float32)
    pool.fill(1.0)  # fault the pool in before timing
    specs = argv[4:]
    for k in range(0, len(specs), 2):
        batch, path = int(specs[k]), specs[k + 1]
        idx = np.fromfile(path, dtype=np.uint32).astype(np.intp)
        idx = idx.reshape(-1, batch)
        nbytes = idx.size * row * 4
        fancy, take = [], []
        buf = np.empty((batch, row), dtype=np.float32)
        for rep in range(reps + 1):  # the first is a warm-up
            t0 = time.perf_counter()
            for b in range(idx.shape[0]):
                x = pool[idx[b]]
            t1 = time.perf_counter()
            del x
            for b in range(idx.shape[0]):
                np.take(pool, idx[b], axis=0, out=buf)
            t2 = time.perf_counter()
            if rep > 0:
                fancy.append(nbytes / (t1 - t0) * 1e-9)
                take.append(nbytes / (t2 - t1) * 1e-9)
        print("numpy %d %.4f %.4f" % (batch, statistics.median(fancy),
                                      statistics.median(take)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
