"""bench/trainer/bench_torch.py - the peer of bench-trainer: the same MLP
(6 -> 1024 -> 1024 -> 1024 -> 4096, ReLU), batch 256, Adam (lr 1e-3), MSE,
data already in memory, in PyTorch as a user writes it: each step draws a
random minibatch (x[idx], y[idx]) and takes one optimizer step; the timed
step includes the draw, as bench-trainer's does.

THREADS. --threads T is split between PyTorch's own (OpenMP) thread pool
and its BLAS the way a user gets the most out of T cores:
  - when the matrix products go to a separate OpenBLAS (Debian's torch:
    BLAS_INFO=generic, libopenblas's pthreads), torch.set_num_threads(1)
    and OpenBLAS on T threads (OPENBLAS_NUM_THREADS=T, set by the caller):
    with torch on T threads as well, its OpenMP workers spin-wait while
    OpenBLAS's T threads compute and the two teams fight over the same T
    cores (measured here on 2 cores: 1,212 samples/s against 2,300-3,000);
  - otherwise (a wheel with MKL or its own OpenBLAS on torch's OpenMP
    pool, as PyTorch 2.x on the GPU machine) torch.set_num_threads(T).
The split is printed on the "ready" line and bench-trainer reports it.

Run by bench-trainer with OPENBLAS_NUM_THREADS / OMP_NUM_THREADS set (and,
for the tuned run, MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_) and
--serve: it prints "ready torch_threads=N blas=NAME blas_threads=M", then
takes one step per "step" line on stdin and answers "t SECONDS", until
EOF. Alone (without --serve) it prints
"step_s T1 T2 ..." (the --steps steps measured after --warmup),
"median_step_s X" and "loss_end Y". "skip REASON" and exit 0 when torch is
missing.
"""
import argparse
import math
import statistics
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--threads", type=int, default=1)
parser.add_argument("--steps", type=int, default=15)
parser.add_argument("--warmup", type=int, default=3)
parser.add_argument("--serve", action="store_true",
                    help="take one step per 'step' line on stdin")
args = parser.parse_args()

try:
    import torch
    from torch import nn
except ImportError as e:  # pragma: no cover
    print("skip torch not available: %s" % e)
    sys.exit(0)



def separate_openblas():
    """True when torch was built against the system's BLAS (BLAS_INFO=
    generic, as Debian's) and that BLAS is an OpenBLAS mapped into this
    process after a matrix product: its pthreads are not torch's OpenMP
    pool. A wheel with MKL or a bundled BLAS names it in BLAS_INFO."""
    if "BLAS_INFO=generic" not in torch.__config__.show():
        return False
    torch.ones(64, 64) @ torch.ones(64, 64)
    try:
        with open("/proc/self/maps") as f:
            return "openblas" in f.read()
    except OSError:
        return False


if separate_openblas():
    torch.set_num_threads(1)
    SPLIT = "torch_threads=1 blas=openblas blas_threads=%d" % args.threads
else:
    torch.set_num_threads(args.threads)
    SPLIT = "torch_threads=%d blas=torch blas_threads=%d" % (args.threads,
                                                             args.threads)
torch.manual_seed(0)
B, NIN, NOUT, NDATA = 256, 6, 4096, 4096

x = torch.rand(NDATA, NIN) * 2 - 1
u = (torch.arange(NOUT) % 64).float() / 64
v = (torch.arange(NOUT) // 64).float() / 64
y = (300 + 10 * x[:, :1] * torch.sin(3 * u + x[:, 1:2])
     + 5 * x[:, 2:3] * v)
# The model sees normalised outputs, as surge's does.
y = (y - y.mean()) / y.std()

model = nn.Sequential(
    nn.Linear(NIN, 1024), nn.ReLU(),
    nn.Linear(1024, 1024), nn.ReLU(),
    nn.Linear(1024, 1024), nn.ReLU(),
    nn.Linear(1024, NOUT),
)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = nn.MSELoss()



def step():
    """One training step on a random minibatch; returns (seconds, loss)."""
    t0 = time.perf_counter()
    idx = torch.randint(0, NDATA, (B,))
    xb, yb = x[idx], y[idx]
    opt.zero_grad()
    loss = loss_fn(model(xb), yb)
    loss.backward()
    opt.step()
    return time.perf_counter() - t0, loss


if args.serve:
    # bench-trainer drives us: one step per "step" line, answer "t SECONDS".
    print("ready " + SPLIT, flush=True)
    for line in sys.stdin:
        if line.strip() != "step":
            break
        dt, loss = step()
        if not math.isfinite(float(loss)):
            break
        print("t %.6f" % dt, flush=True)
    sys.exit(0)

times = []
loss = None
for s in range(args.warmup + args.steps):
    dt, loss = step()
    if s >= args.warmup:
        times.append(dt)

print("split " + SPLIT)
print("step_s " + " ".join("%.6f" % t for t in times))
print("median_step_s %.6f" % statistics.median(times))
print("loss_end %.6g" % float(loss))
sys.exit(0 if math.isfinite(float(loss)) else 1)
