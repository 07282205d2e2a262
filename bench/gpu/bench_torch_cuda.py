"""bench/gpu/bench_torch_cuda.py - PyTorch's side of bench-trainer-cuda.

The same MLP as surge's bench (6-1024-1024-1024-4096, ReLU, MSE, Adam with
fp32 master weights and state) on the same GPU, per (batch, precision):
  eager : the step as users write it, fused Adam (foreach kernels fused)
  graph : the whole step (forward, backward, Adam) captured once in a CUDA
          graph and replayed (capturable Adam), inputs in static buffers
  gemm  : the step's 11 matrix products alone, at that precision
Batches sit on the device already (a pool of 4, cycled), as surge's do.
Precisions: fp32 (TF32 off), tf32 (allow_tf32), bf16 (autocast bf16: bf16
products, fp32 master weights and optimizer state).

Prints one JSON object {"<cell>": {"eager": s/s, "graph": s/s, "gemm":
s/s}, "torch": version}; each figure the median samples/s of --reps timed
runs of --steps steps, after warm-up. --device cpu --steps 2 --reps 1 is a
smoke test of the script on a machine without a GPU.
"""
import argparse
import json
import statistics
import sys
import time

import torch

DIMS = [6, 1024, 1024, 1024, 4096]


def model(dev):
    layers = []
    for k in range(len(DIMS) - 1):
        layers.append(torch.nn.Linear(DIMS[k], DIMS[k + 1]))
        if k < len(DIMS) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers).to(dev)


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, steps, reps, dev):
    out = []
    for _ in range(reps):
        sync(dev)
        t0 = time.perf_counter()
        for i in range(steps):
            fn(i)
        sync(dev)
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def cell(batch, prec, steps, reps, dev):
    torch.backends.cuda.matmul.allow_tf32 = prec == "tf32"
    torch.backends.cudnn.allow_tf32 = prec == "tf32"
    cuda = dev.type == "cuda"
    amp = prec == "bf16"
    xs = [torch.rand(batch, DIMS[0], device=dev) * 2 - 1 for _ in range(4)]
    ys = [torch.randn(batch, DIMS[-1], device=dev) for _ in range(4)]
    res = {}

    # eager
    net = model(dev)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4, fused=cuda)

    def step(i):
        x, y = xs[i % 4], ys[i % 4]
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            loss = torch.nn.functional.mse_loss(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(10):
        step(i)
    res["eager"] = batch * steps / timed(step, steps, reps, dev)

    # the step in a CUDA graph
    if cuda:
        net = model(dev)
        opt = torch.optim.Adam(net.parameters(), lr=1e-4, capturable=True)
        sx = xs[0].clone()
        sy = ys[0].clone()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                opt.zero_grad(set_to_none=True)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                    loss = torch.nn.functional.mse_loss(net(sx), sy)
                loss.backward()
                opt.step()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(g):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                sloss = torch.nn.functional.mse_loss(net(sx), sy)
            sloss.backward()
            opt.step()

        def gstep(i):
            sx.copy_(xs[i % 4])
            sy.copy_(ys[i % 4])
            g.replay()

        for i in range(10):
            gstep(i)
        res["graph"] = batch * steps / timed(gstep, steps, reps, dev)

    # the 11 products of a step alone
    dt = torch.bfloat16 if amp else torch.float32
    ws = [torch.randn(DIMS[k + 1], DIMS[k], device=dev, dtype=dt) * 0.01
          for k in range(len(DIMS) - 1)]
    acts = [torch.randn(batch, d, device=dev, dtype=dt) for d in DIMS]

    def gemms(i):
        for k, w in enumerate(ws):
            torch.mm(acts[k], w.t())  # forward
        for k in range(len(ws) - 1, -1, -1):
            torch.mm(acts[k + 1].t(), acts[k])  # dW
            if k > 0:
                torch.mm(acts[k + 1], ws[k])  # d input

    for i in range(5):
        gemms(i)
    res["gemm"] = batch * steps / timed(gemms, steps, reps, dev)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batches", default="256,1024,4096")
    ap.add_argument("--precisions", default="fp32,tf32,bf16")
    a = ap.parse_args()
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"skipped": "torch sees no CUDA device"}))
        return 0
    out = {"torch": torch.__version__}
    for b in [int(v) for v in a.batches.split(",")]:
        for p in a.precisions.split(","):
            out[f"b{b}_{p}"] = cell(b, p, a.steps, a.reps, dev)
            print(f"torch b{b} {p}: {out[f'b{b}_{p}']}", file=sys.stderr)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
