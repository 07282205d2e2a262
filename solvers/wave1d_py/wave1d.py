#!/usr/bin/python3
"""solvers/wave1d_py/wave1d.py - a 1D wave equation in Python (NumPy +
mpi4py), MPI-parallel, streaming two fields to surge through the `surge`
Python package (python/).

    u_tt = c^2 u_xx on (0, 1), u(0) = u(1) = 0,
    u(x, 0) = A exp(-((x - x0) / 0.05)^2), u_t(x, 0) = 0

Parameters (SURGE_PARAMS from `surge launch`, or --params): c, x0, A.
nx interior points, dx = 1 / (nx + 1), leapfrog in time with
dt = 0.5 dx / c (CFL 0.5); the first step is the Taylor start. The ranks
own contiguous blocks of points and exchange one halo point each side per
step (Sendrecv; the fixed ends stand in at the walls).

Sent per step n = 1..steps (time n dt): "u" (float64: libsurge rounds it
to float32) and "velocity" (float32), (u^{n+1} - u^{n-1}) / (2 dt).
Leapfrog conserves a discrete energy exactly up to rounding: rank 0
prints its relative drift at the end ("energy drift"), a check of the
numerics and of the halo exchange. --checksums PREFIX writes
PREFIX.<rank>: "step ck_u ck_velocity" per step (libsurge's checksums).
Failures are agreed on by all ranks once per step, so they stop together
(exit 1) and nobody waits in a collective.

usage: wave1d.py [--nx N] [--steps N] [--params c,x0,A] [--checksums P]
"""
import argparse
import sys
import time as _time

import numpy as np
from mpi4py import MPI

import surge

comm = MPI.COMM_WORLD
rank, nranks = comm.Get_rank(), comm.Get_size()


def log(level, text):
    t = _time.time()
    stamp = _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(t))
    print(f"{stamp}.{int(t * 1000) % 1000:03d}Z {level} wave1d[{rank}] "
          f"{text}", file=sys.stderr, flush=True)


def all_ok(ok):
    return comm.allreduce(1 if ok else 0, op=MPI.MIN) == 1


def halo(u, left, right):
    """u[0] from the left neighbour, u[-1] from the right one (0 at the
    walls: MPI.PROC_NULL leaves the receive buffer as it is)."""
    u[0] = 0.0
    u[-1] = 0.0
    comm.Sendrecv(u[-2:-1], dest=right, sendtag=0, recvbuf=u[0:1],
                  source=left, recvtag=0)
    comm.Sendrecv(u[1:2], dest=left, sendtag=1, recvbuf=u[-1:],
                  source=right, recvtag=1)


def energy(u0, u1, c, dt, dx):
    """Leapfrog's conserved energy between levels n (u0) and n+1 (u1),
    both with halos filled; summed over the ranks. Each rank counts the
    faces left of its points, and the last rank also the right wall."""
    kin = np.sum(((u1[1:-1] - u0[1:-1]) / dt) ** 2)
    hi = len(u0) if rank == nranks - 1 else len(u0) - 1
    pot = np.sum(np.diff(u0[:hi]) * np.diff(u1[:hi])) / dx ** 2
    return comm.allreduce(0.5 * dx * (kin + c * c * pot), op=MPI.SUM)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nx", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--params", type=str)
    ap.add_argument("--checksums", type=str)
    a = ap.parse_args()
    if a.nx < nranks or a.steps < 1:
        if rank == 0:
            log("ERROR", "need --nx >= ranks and --steps >= 1")
        return 2

    ok = True
    try:
        if a.params:
            params = [float(v) for v in a.params.split(",")]
        else:
            _, params = surge.run_params()
        if len(params) != 3:
            raise ValueError(f"{len(params)} parameter(s); wave1d needs 3: "
                             "c,x0,A")
    except (ValueError, surge.SurgeError) as e:
        log("ERROR", str(e))
        ok = False
    if not all_ok(ok):
        return 1
    c, x0, amp = params

    # This rank's block of interior points [off, off + n), halos at 0, -1.
    n = a.nx // nranks + (1 if rank < a.nx % nranks else 0)
    off = rank * (a.nx // nranks) + min(rank, a.nx % nranks)
    left = rank - 1 if rank > 0 else MPI.PROC_NULL
    right = rank + 1 if rank < nranks - 1 else MPI.PROC_NULL
    dx = 1.0 / (a.nx + 1)
    dt = 0.5 * dx / c
    r2 = (c * dt / dx) ** 2
    x = (off + 1 + np.arange(n)) * dx
    uold = np.zeros(n + 2)
    uold[1:-1] = amp * np.exp(-((x - x0) / 0.05) ** 2)
    halo(uold, left, right)
    u = np.zeros(n + 2)
    u[1:-1] = uold[1:-1] + 0.5 * r2 * (uold[:-2] - 2 * uold[1:-1] + uold[2:])
    halo(u, left, right)
    e0 = energy(uold, u, c, dt, dx)
    unew = np.zeros(n + 2)
    vel = np.zeros(n, dtype=np.float32)

    client = None
    ckfile = None
    try:
        client = surge.Client([surge.Field("u", a.nx, off, n),
                               surge.Field("velocity", a.nx, off, n)],
                              comm=comm, steps=a.steps)
        if a.checksums:
            ckfile = open(f"{a.checksums}.{rank}", "w")
    except (surge.SurgeError, OSError) as e:
        log("ERROR", str(e))
        ok = False
    if not all_ok(ok):
        if client is not None:
            client.abort()
        return 1

    for step in range(1, a.steps + 1):
        # Level n = step is u; compute n+1, then send level n.
        unew[1:-1] = 2 * u[1:-1] - uold[1:-1] + r2 * (u[:-2] - 2 * u[1:-1]
                                                       + u[2:])
        halo(unew, left, right)
        vel[:] = (unew[1:-1] - uold[1:-1]) / (2 * dt)
        try:
            field_u = u[1:-1]  # a view: contiguous, no copy
            client.send("u", step, step * dt, field_u)
            client.send("velocity", step, step * dt, vel)
            if ckfile:
                print(step, surge.checksum(field_u, off),
                      surge.checksum(vel, a.nx + off), file=ckfile)
        except (surge.SurgeError, OSError) as e:
            log("ERROR", f"step {step}: {e}")
            ok = False
        if not all_ok(ok):
            client.abort()
            return 1
        uold, u, unew = u, unew, uold

    if ckfile:
        ckfile.close()
    try:
        client.close()
    except surge.SurgeError as e:
        log("ERROR", f"close: {e}")
        ok = False
    e1 = energy(uold, u, c, dt, dx)
    if rank == 0:
        log("INFO", f"energy drift {abs(e1 - e0) / e0:.3e} after {a.steps} "
            f"steps on {nranks} ranks")
    return 0 if all_ok(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
