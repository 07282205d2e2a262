"""Python side of bench-external (run by bench-external).

    consume.py external ENDPOINT BATCHES REPS TRANSPORT
        REPS times: a surge.torch.ReservoirDataset (transport auto or zmq)
        takes BATCHES batches from the server (timed from the first batch
        received, so connecting is not counted); prints the transport used
        and the median samples/s.
    consume.py loader NIN NOUT POOL BATCH BATCHES REPS
        the Melissa-style baseline (PEER below): prints the median
        samples/s over BATCHES batches of BATCH.
    consume.py send ENDPOINT NIN NOUT POOL
        the baseline's sender: POOL samples over ZeroMQ, then exits.

PEER: Melissa's deep-learning server as its users run it, at its best on
this data. A receiver thread (pyzmq PULL, like Melissa's server) takes
each sample from a sender process and puts it (a zero-copy NumPy view of
the frame) into a Python reservoir buffer (a lock and a condition; once
the watermark is reached, draws are uniform with replacement, as
Melissa's Reservoir). A torch IterableDataset yields one sample at a time
from it as tensors, and a DataLoader(batch_size=BATCH, num_workers=0)
batches them with the default collation (workers cannot see a buffer that
lives in the process). As in the external arm, the timed phase starts
once the buffer holds the whole pool (the external arm's store is filled
before it starts); the receiver thread stays alive. glibc's trimming is
kept off for both Python processes (bench-external sets
MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_, PERF-NOTES: it costs
PyTorch ~2x otherwise).
"""
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import torch
import zmq

PEER = ("Melissa-style: pyzmq receiver thread fills a Python reservoir "
        "buffer from a sender process over ipc; IterableDataset yields one "
        "sample per draw (uniform, with replacement, under a lock); "
        "DataLoader(batch_size=256, num_workers=0), default collation; "
        "glibc trimming off")


def external(endpoint, batches, reps, transport):
    from surge.torch import ReservoirDataset
    rates, used = [], None
    for _ in range(reps):
        ds = ReservoirDataset(endpoint, credit=2, max_batches=batches + 1,
                              pin_memory=False, transport=transport)
        rows, t0 = 0, None
        for b in ds:
            if t0 is None:
                t0 = time.perf_counter()
                continue
            rows += b.x.shape[0]
            float(b.y[0, 0])  # the batch is there, readable
        rates.append(rows / (time.perf_counter() - t0))
        used = ds.transport
        ds.close()
    return statistics.median(rates), used


class Reservoir:
    """Melissa's reservoir buffer, reduced to what the benchmark uses."""

    def __init__(self, capacity, watermark):
        self.capacity, self.watermark = capacity, watermark
        self.items = []
        self.cv = threading.Condition()

    def put(self, item):
        with self.cv:
            if len(self.items) < self.capacity:
                self.items.append(item)
            else:
                self.items[random.randrange(self.capacity)] = item
            self.cv.notify_all()

    def size(self):
        with self.cv:
            return len(self.items)

    def get(self, timeout=60.0):
        with self.cv:
            if not self.cv.wait_for(
                    lambda: len(self.items) >= self.watermark, timeout):
                raise TimeoutError("buffer below its watermark")
            return self.items[random.randrange(len(self.items))]


class BufferDataset(torch.utils.data.IterableDataset):
    def __init__(self, buf, nin):
        super().__init__()
        self.buf, self.nin = buf, nin

    def __iter__(self):
        while True:
            row = self.buf.get()
            yield torch.from_numpy(row[:self.nin]), torch.from_numpy(
                row[self.nin:])


def receive(sock, buf, stop):
    while not stop.is_set():
        if not sock.poll(100):
            continue
        frames = sock.recv_multipart(copy=False)
        buf.put(np.frombuffer(frames[1].buffer, dtype=np.float32))


def loader(nin, nout, pool_n, batch, batches, reps):
    # The frames are read-only: the model only reads its inputs.
    warnings.simplefilter("ignore", UserWarning)
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.LINGER, 0)
    endpoint = "ipc:///tmp/surge-bench-melissa-%d" % os.getpid()
    sock.bind(endpoint)
    buf = Reservoir(pool_n, pool_n)
    stop = threading.Event()
    th = threading.Thread(target=receive, args=(sock, buf, stop), daemon=True)
    th.start()
    sender = subprocess.Popen([sys.executable, __file__, "send", endpoint,
                               str(nin), str(nout), str(pool_n)])
    try:
        deadline = time.monotonic() + 300
        while buf.size() < pool_n:
            if time.monotonic() > deadline or sender.poll() not in (None, 0):
                raise RuntimeError("the sender did not deliver the pool")
            time.sleep(0.01)
        dl = torch.utils.data.DataLoader(BufferDataset(buf, nin),
                                         batch_size=batch, num_workers=0)
        it = iter(dl)
        next(it)  # warm
        rates = []
        for _ in range(reps):
            rows, t0 = 0, time.perf_counter()
            for _ in range(batches):
                x, y = next(it)
                rows += x.shape[0]
                float(y[0, 0])
            rates.append(rows / (time.perf_counter() - t0))
    finally:
        stop.set()
        th.join(5)
        sender.wait(30)
        sock.close()
    return statistics.median(rates)


def send(endpoint, nin, nout, pool_n):
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 60000)
    sock.connect(endpoint)
    row = np.arange(nin + nout, dtype=np.float32)
    for i in range(pool_n):
        row[0] = i
        sock.send_multipart([np.array([0, i], dtype=np.int64).tobytes(),
                             row.tobytes()])
    sock.close()
    ctx.term()


if __name__ == "__main__":
    a = sys.argv
    if a[1] == "external":
        r, transport = external(a[2], int(a[3]), int(a[4]), a[5])
        print("transport %s" % transport)
    elif a[1] == "send":
        send(a[2], *(int(v) for v in a[3:6]))
        sys.exit(0)
    else:
        r = loader(*(int(v) for v in a[2:8]))
        print("peer %s" % PEER)
    print("%.1f" % r)
