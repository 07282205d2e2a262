"""solvers/heat2d/train_torch.py - train a PyTorch surrogate of heat2d from
a live study: `surge serve --consumer external` streams the reservoir's
batches to this script through surge.torch.ReservoirDataset.

    train_torch.py SERVER_JSON --model fno|mlp [--out model.pt]
                   [--lr 3e-3] [--max-batches N] [--threads N]

--model fno: a 2-D Fourier neural operator in plain PyTorch (the inputs,
normalised, broadcast over the grid with the coordinates; spectral
convolutions; the temperature field out). --model mlp: the C trainer's
default network (layers 256 256, ReLU). Before and after training, the
model is evaluated on the held-out runs (the server's validation store);
the last line printed is one JSON object: rows and batches trained on,
untrained and trained held-out MSE (normalised units), wall time.
"""
import argparse
import copy
import json
import sys
import time

import torch

from surge.torch import ReservoirDataset


class SpectralConv2d(torch.nn.Module):
    """Multiply the lowest modes of the field's 2-D FFT by learned complex
    weights (Li et al., Fourier neural operator)."""

    def __init__(self, cin, cout, m1, m2):
        super().__init__()
        self.m1, self.m2 = m1, m2
        s = 1.0 / (cin * cout)
        self.w1 = torch.nn.Parameter(
            s * torch.rand(cin, cout, m1, m2, dtype=torch.cfloat))
        self.w2 = torch.nn.Parameter(
            s * torch.rand(cin, cout, m1, m2, dtype=torch.cfloat))

    def forward(self, x):
        b, _, h, w = x.shape
        xf = torch.fft.rfft2(x)
        out = torch.zeros(b, self.w1.shape[1], h, w // 2 + 1,
                          dtype=torch.cfloat, device=x.device)
        m1, m2 = min(self.m1, h // 2), min(self.m2, w // 2 + 1)
        mul = "bixy,ioxy->boxy"
        out[:, :, :m1, :m2] = torch.einsum(mul, xf[:, :, :m1, :m2],
                                           self.w1[:, :, :m1, :m2])
        out[:, :, -m1:, :m2] = torch.einsum(mul, xf[:, :, -m1:, :m2],
                                            self.w2[:, :, :m1, :m2])
        return torch.fft.irfft2(out, s=(h, w))


class FNO2d(torch.nn.Module):
    def __init__(self, nin, shape, width=16, modes=6, layers=3):
        super().__init__()
        self.shape = shape
        self.lift = torch.nn.Linear(nin + 2, width)
        self.spec = torch.nn.ModuleList(
            SpectralConv2d(width, width, modes, modes) for _ in range(layers))
        self.pw = torch.nn.ModuleList(
            torch.nn.Conv2d(width, width, 1) for _ in range(layers))
        self.proj = torch.nn.Sequential(torch.nn.Linear(width, 64),
                                        torch.nn.GELU(),
                                        torch.nn.Linear(64, 1))

    def forward(self, x):  # x (rows, nin) normalised -> (rows, h*w)
        h, w = self.shape
        b = x.shape[0]
        gy, gx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w),
                                indexing="ij")
        grid = torch.stack([gy, gx], -1).expand(b, h, w, 2)
        z = torch.cat([x[:, None, None, :].expand(b, h, w, x.shape[1]), grid],
                      -1)
        z = self.lift(z).permute(0, 3, 1, 2)
        for i, (s, p) in enumerate(zip(self.spec, self.pw)):
            z = s(z) + p(z)
            if i + 1 < len(self.spec):
                z = torch.nn.functional.gelu(z)
        return self.proj(z.permute(0, 2, 3, 1)).reshape(b, h * w)


def mlp(nin, nout):
    return torch.nn.Sequential(torch.nn.Linear(nin, 256), torch.nn.ReLU(),
                               torch.nn.Linear(256, 256), torch.nn.ReLU(),
                               torch.nn.Linear(256, nout))


def field_shape(ds):
    """(h, w) of the study's single 2-D output field."""
    _, shapes = ds.fields()
    for item in shapes.split(","):
        if "=" in item:
            dims = [int(d) for d in item.split("=")[1].split("x")]
            if len(dims) == 2 and dims[0] * dims[1] == ds.n_outputs:
                return dims[0], dims[1]
    raise SystemExit("train_torch.py: the FNO needs a 2-D field shape "
                     "(surge serve --field-shapes temperature=HxW)")


def evaluate(ds, model):
    """Held-out MSE in normalised units over the validation store."""
    se, n = 0.0, 0
    with torch.no_grad():
        for x, y, _, _ in ds.validation():
            xn, yn = ds.normalize(x, y)
            se += float(((model(xn) - yn) ** 2).sum())
            n += yn.numel()
    ds.heartbeat()
    return se / n if n else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("server")
    ap.add_argument("--model", choices=("fno", "mlp"), default="fno")
    ap.add_argument("--out", default="")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--max-batches", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    t0 = time.time()
    ds = ReservoirDataset(a.server, max_batches=a.max_batches)
    it = iter(ds)
    first = next(it)  # the statistics come with the first batch
    nin, nout = ds.n_inputs, ds.n_outputs
    model = FNO2d(nin, field_shape(ds)) if a.model == "fno" else mlp(nin, nout)
    initial = copy.deepcopy(model)  # evaluated on the same held-out set
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)

    def step(b):
        x, y = ds.normalize(b.x, b.y)
        rows = ((model(x) - y) ** 2).mean(1)
        loss = (rows * b.w).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ds.report_losses(rows)
        return float(loss)

    loss = step(first)
    for b in it:
        loss = step(b)
    trained = evaluate(ds, model)
    untrained = evaluate(ds, initial)
    if a.out:
        torch.save({"model": a.model, "state_dict": model.state_dict(),
                    "normalization": ds.normalization()}, a.out)
    report = {"model": a.model, "rows": ds.rows, "batches": ds.batches,
              "ended": ds.ended, "last_loss": loss,
              "transport": ds.transport,
              "untrained_mse": untrained, "heldout_mse": trained,
              "wall_s": round(time.time() - t0, 2)}
    ds.close()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
