"""bench/online_offline/fno_arm.py - the external PyTorch arm of
`make bench-online-offline`: the FNO of solvers/heat2d/train_torch.py (the
same class), Adam, batch 16 (the server's --batch-size online), one
thread, trained for a wall-clock budget

    fno_arm.py online SERVER_JSON BUDGET_S VAL_DIR H W
        from the live stream: surge.torch.ReservoirDataset on
        `surge serve --consumer external` (runs stream meanwhile);
    fno_arm.py offline DATA_DIR BUDGET_S VAL_DIR H W
        from files: DATA_DIR/samples.f32 (written by the writer consumer
        during the generation share of the arm's budget), shuffled each
        epoch, every batch read from the file (a map-style Dataset over
        np.memmap in a DataLoader, as offline pipelines do);

then evaluated on the held-out runs in VAL_DIR (online also the untrained
model, the same in both arms: same seed) (samples.f32, the same
files as the C arms' evaluation) in physical units: MSE and relative L2
over all values, as offline_train eval computes them. Normalisation: the
server's recipe (inputs per feature, outputs over the whole vector), from
the server's first batch online and from the whole file offline. Prints
one JSON object.
"""
import copy
import json
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "solvers", "heat2d"))
from train_torch import FNO2d  # noqa: E402

BATCH = 16
LR = 3e-3


def read_rows(d):
    with open(os.path.join(d, "samples.json")) as f:
        meta = json.load(f)
    nin, nout, rows = meta["nin"], meta["nout"], meta["rows"]
    a = np.memmap(os.path.join(d, "samples.f32"), dtype=np.float32, mode="r",
                  shape=(rows, nin + nout))
    return a, nin, nout


def stats_of(x, y):
    """The server's recipe (server/external.c compute_stats)."""
    xm, xs = x.mean(0), x.std(0)
    const = xs <= 1e-6 * (1 + xm.abs())
    xs = torch.where(const, torch.clamp(xm.abs(), min=1.0), xs)
    ym, ys = y.mean(), y.std()
    if ys <= 1e-6 * (1 + ym.abs()):
        ys = torch.clamp(ym.abs(), min=1.0)
    return {"in_mean": xm, "in_std": xs,
            "out_mean": ym.expand(y.shape[1]), "out_std": ys.expand(y.shape[1])}


def evaluate(model, st, val_dir):
    a, nin, _ = read_rows(val_dir)
    se = sy = 0.0
    with torch.no_grad():
        for i in range(0, a.shape[0], 256):
            rows = torch.from_numpy(np.array(a[i:i + 256]))
            x, y = rows[:, :nin], rows[:, nin:]
            p = model((x - st["in_mean"]) / st["in_std"])
            p = p * st["out_std"] + st["out_mean"]
            se += float(((p - y).double() ** 2).sum())
            sy += float((y.double() ** 2).sum())
    n = a.shape[0] * (a.shape[1] - nin)
    return {"samples": int(a.shape[0]), "val_mse": se / n,
            "val_rel_l2": (se / sy) ** 0.5 if sy > 0 else float("nan")}


class Trainer:
    def __init__(self, nin, shape, st):
        torch.manual_seed(0)
        self.model = FNO2d(nin, shape)
        self.initial = copy.deepcopy(self.model)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=LR)
        self.st = st
        self.batches = self.rows = 0

    def step(self, x, y):
        s = self.st
        x = (x - s["in_mean"]) / s["in_std"]
        y = (y - s["out_mean"]) / s["out_std"]
        loss = ((self.model(x) - y) ** 2).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.batches += 1
        self.rows += x.shape[0]
        return float(loss)


def online(server, budget, val_dir, shape):
    from surge.torch import ReservoirDataset
    t0 = time.monotonic()
    ds = ReservoirDataset(server, timeout_s=30)
    tr, seen = None, set()
    train_s = 0.0
    for b in ds:
        if tr is None:
            tr = Trainer(ds.n_inputs, shape, ds.normalization())
        t1 = time.monotonic()
        tr.step(b.x, b.y)
        train_s += time.monotonic() - t1
        seen.update(zip(b.sims.tolist(), b.steps.tolist()))
        if time.monotonic() - t0 >= budget:
            break
    wall = time.monotonic() - t0
    st = tr.st
    transport = ds.transport
    ds.close()  # the server keeps streaming; nothing held
    r = {"wall_s": wall, "train_s": train_s, "batches": tr.batches,
         "rows_trained": tr.rows, "distinct_samples": len(seen),
         "bytes_written": 0, "transport": transport}
    r.update(evaluate(tr.model, st, val_dir))
    r["val_rel_l2_untrained"] = evaluate(tr.initial, st, val_dir)["val_rel_l2"]
    return r


def offline(data_dir, budget, val_dir, shape):
    t0 = time.monotonic()
    a, nin, _ = read_rows(data_dir)
    # Statistics over the whole file (what an offline pipeline has).
    st = stats_of(torch.from_numpy(np.array(a[:, :nin])),
                  torch.from_numpy(np.array(a[:, nin:])))

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return a.shape[0]

        def __getitem__(self, i):
            r = torch.from_numpy(np.array(a[i]))
            return r[:nin], r[nin:]

    dl = torch.utils.data.DataLoader(Rows(), batch_size=BATCH, shuffle=True,
                                     drop_last=a.shape[0] >= BATCH)
    tr = Trainer(nin, shape, st)
    epochs, train_s, done = 0.0, 0.0, False
    per_epoch = len(dl)
    while not done:
        for k, (x, y) in enumerate(dl):
            t1 = time.monotonic()
            tr.step(x, y)
            train_s += time.monotonic() - t1
            if time.monotonic() - t0 >= budget:
                epochs += (k + 1) / per_epoch
                done = True
                break
        else:
            epochs += 1
    r = {"wall_s": time.monotonic() - t0, "train_s": train_s,
         "batches": tr.batches, "rows_trained": tr.rows,
         "distinct_samples": int(min(a.shape[0], tr.rows)),
         "epochs": epochs,
         "bytes_written": os.path.getsize(
             os.path.join(data_dir, "samples.f32"))}
    r.update(evaluate(tr.model, st, val_dir))
    return r


def main():
    a = sys.argv
    if len(a) != 7 or a[1] not in ("online", "offline"):
        sys.exit(__doc__)
    torch.set_num_threads(1)
    shape = (int(a[5]), int(a[6]))
    fn = online if a[1] == "online" else offline
    r = fn(a[2], float(a[3]), a[4], shape)
    print(json.dumps(r))


if __name__ == "__main__":
    main()
