"""Python side of bench-external (run by bench-external).

    consume.py external ENDPOINT BATCHES REPS
        REPS times: a surge.torch.ReservoirDataset takes BATCHES batches
        from the server (timed from the first batch received, so connecting
        is not counted); prints the median samples/s.
    consume.py loader NIN NOUT POOL BATCH BATCHES REPS
        the Melissa-style baseline: a torch Dataset over a NumPy buffer of
        POOL samples that returns one sample per __getitem__ (random
        order), batched by DataLoader(batch_size=BATCH); prints the median
        samples/s over BATCHES batches.
"""
import statistics
import sys
import time

import numpy as np
import torch


def external(endpoint, batches, reps):
    from surge.torch import ReservoirDataset
    rates = []
    for _ in range(reps):
        ds = ReservoirDataset(endpoint, credit=2, max_batches=batches + 1,
                              pin_memory=False)
        rows, t0 = 0, None
        for b in ds:
            if t0 is None:
                t0 = time.perf_counter()
                continue
            rows += b.x.shape[0]
            float(b.y[0, 0])  # the batch is there, readable
        rates.append(rows / (time.perf_counter() - t0))
        ds.close()
    return statistics.median(rates)


class PerSample(torch.utils.data.Dataset):
    def __init__(self, pool, nin):
        self.pool, self.nin = pool, nin

    def __len__(self):
        return len(self.pool)

    def __getitem__(self, i):
        row = self.pool[i]
        return torch.from_numpy(row[:self.nin]), torch.from_numpy(row[self.nin:])


def loader(nin, nout, pool_n, batch, batches, reps):
    pool = np.ones((pool_n, nin + nout), dtype=np.float32)
    dl = torch.utils.data.DataLoader(PerSample(pool, nin), batch_size=batch,
                                     shuffle=True, drop_last=True)
    rates = []
    for _ in range(reps):
        rows, t0 = 0, time.perf_counter()
        while rows < batches * batch:
            for x, y in dl:
                rows += x.shape[0]
                if rows >= batches * batch:
                    break
        rates.append(rows / (time.perf_counter() - t0))
    return statistics.median(rates)


if __name__ == "__main__":
    a = sys.argv
    if a[1] == "external":
        r = external(a[2], int(a[3]), int(a[4]))
    else:
        r = loader(*(int(v) for v in a[2:8]))
    print("%.1f" % r)
