"""surge.torch - train any PyTorch model from a live surge study.

ReservoirDataset connects to `surge serve --consumer external` (the
"external" endpoint in the server's server.json) and yields the batches
the server's reservoir policy chooses, as tensors with no copy: on the
server's host the server gathers each batch straight into a slot of a
shared-memory ring that this process maps, elsewhere (or with
transport="zmq") the tensors view the received ZeroMQ frames; pinned
copies when pin_memory is set. Protocol: docs/protocol.md, "External
trainers". Pure Python over pyzmq, mmap and NumPy.

A batch's tensors are valid until the next batch is asked for (the
iterator's next step, which acks the batch and gives its slot back to the
server) or close(): keep them longer with .clone(). pin_memory copies, and
so does a DataLoader with workers (the batch moves to torch's own shared
memory), so those batches are the caller's to keep.

    ds = ReservoirDataset("out/server.json")
    for b in ds:                       # or DataLoader(ds, batch_size=None)
        x, y = ds.normalize(b.x, b.y)
        loss_rows = ((model(x) - y) ** 2).mean(1)
        (loss_rows * b.w).mean().backward()
        ds.report_losses(loss_rows)    # priorities (prioritized policies)
"""
import json
import mmap
import os
import struct
import time
import warnings
from collections import namedtuple

import numpy as np
import torch
import zmq

__all__ = ["ReservoirDataset", "Batch", "SurgeExternalError"]

Batch = namedtuple("Batch", "id x y w sims steps")
Batch.__doc__ = """One batch: x (rows, nin) and y (rows, nout) float32 in
physical units, w (rows,) importance weights (ones unless prioritized),
sims and steps (rows,) int64: the rows' sample identities."""


class SurgeExternalError(RuntimeError):
    """The server refused a request, or did not answer in time."""


class _ServerGone(SurgeExternalError):
    """The server stopped answering (it died, or is being restarted)."""


# ---------------------------------------------------------------- msgpack
# The headers are small maps of strings, integers, floats, booleans and
# nil: this subset of msgpack is all the protocol uses.

def _pack(o, out):
    if o is None:
        out.append(b"\xc0")
    elif o is True or o is False:
        out.append(b"\xc3" if o else b"\xc2")
    elif isinstance(o, int):
        if 0 <= o < 2 ** 64:
            out.append(b"\xcf" + struct.pack(">Q", o))
        else:
            out.append(b"\xd3" + struct.pack(">q", o))
    elif isinstance(o, float):
        out.append(b"\xcb" + struct.pack(">d", o))
    elif isinstance(o, str):
        b = o.encode()
        out.append(b"\xdb" + struct.pack(">I", len(b)) + b)
    elif isinstance(o, dict):
        out.append(b"\xdf" + struct.pack(">I", len(o)))
        for k, v in o.items():
            _pack(k, out)
            _pack(v, out)
    else:
        raise TypeError("cannot pack %r" % type(o))


def packb(o):
    out = []
    _pack(o, out)
    return b"".join(out)


def _unpack(b, i):
    t = b[i]
    if t <= 0x7F:
        return t, i + 1
    if t >= 0xE0:
        return t - 0x100, i + 1
    if 0x80 <= t <= 0x8F or t in (0xDE, 0xDF):
        if t <= 0x8F:
            n, i = t & 0x0F, i + 1
        elif t == 0xDE:
            n, i = struct.unpack_from(">H", b, i + 1)[0], i + 3
        else:
            n, i = struct.unpack_from(">I", b, i + 1)[0], i + 5
        d = {}
        for _ in range(n):
            k, i = _unpack(b, i)
            v, i = _unpack(b, i)
            d[k] = v
        return d, i
    if 0xA0 <= t <= 0xBF or t in (0xD9, 0xDA, 0xDB):
        if t <= 0xBF:
            n, i = t & 0x1F, i + 1
        else:
            w = {0xD9: (">B", 1), 0xDA: (">H", 2), 0xDB: (">I", 4)}[t]
            n, i = struct.unpack_from(w[0], b, i + 1)[0], i + 1 + w[1]
        return bytes(b[i:i + n]).decode(), i + n
    fixed = {0xC0: (None, 0), 0xC2: (False, 0), 0xC3: (True, 0)}
    if t in fixed:
        return fixed[t][0], i + 1
    fmt = {0xCA: ">f", 0xCB: ">d", 0xCC: ">B", 0xCD: ">H", 0xCE: ">I",
           0xCF: ">Q", 0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q"}
    if t in fmt:
        n = struct.calcsize(fmt[t])
        return struct.unpack_from(fmt[t], b, i + 1)[0], i + 1 + n
    raise SurgeExternalError("unsupported msgpack byte 0x%02x" % t)


def unpackb(b):
    o, _ = _unpack(b, 0)
    return o


# ---------------------------------------------------------------- shm

def _boot_id():
    """This host's boot id (the server compares it with its own), or None."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip() or None
    except OSError:
        return None


def _map_ring(w):
    """Map the ring the welcome w offers: per slot, tensors (x, y, ids, w)
    over full batches, after checking that the layout fits the slot."""
    r = w["shm"]
    name, slots, sb = r["name"], r["slots"], r["slot_bytes"]
    B, nin, nout = w["batch"], w["nin"], w["nout"]
    regions = [(r["in"], B * nin * 4), (r["out"], B * nout * 4),
               (r["ids"], B * 16), (r["w"], B * 4)]
    if (not isinstance(name, str) or not name.startswith("/") or
            "/" in name[1:] or not 1 <= slots <= 32 or sb <= 0 or
            any(o < 0 or o % 8 or o + n > sb for o, n in regions)):
        raise ValueError("inconsistent shared-memory offer")
    fd = os.open("/dev/shm" + name, os.O_RDWR | os.O_CLOEXEC)
    try:
        if os.fstat(fd).st_size != slots * sb:
            raise ValueError("shared memory of the wrong size")
        # MAP_POPULATE maps every page now, not on each first touch.
        mm = mmap.mmap(fd, slots * sb, flags=mmap.MAP_SHARED |
                       getattr(mmap, "MAP_POPULATE", 0))
    finally:
        os.close(fd)
    views = []
    for k in range(slots):
        b = k * sb

        def arr(o, dt, count):
            return np.frombuffer(mm, dtype=dt, count=count, offset=b + o)
        views.append((
            _tensor(arr(r["in"], np.float32, B * nin).reshape(B, nin)),
            _tensor(arr(r["out"], np.float32, B * nout).reshape(B, nout)),
            _tensor(arr(r["ids"], np.int64, B * 2).reshape(B, 2)),
            _tensor(arr(r["w"], np.float32, B))))
    return views


# ---------------------------------------------------------------- dataset

def _f32(frame, rows, cols):
    a = np.frombuffer(frame.buffer, dtype=np.float32)
    return a.reshape(rows, cols) if cols else a


def _tensor(a):
    # The frames are read-only buffers that the tensor keeps alive; the
    # model only reads inputs and targets, so no copy is made.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(a)


class ReservoirDataset(torch.utils.data.IterableDataset):
    """Batches from a live surge study's training reservoir.

    server: the server's server.json (its "external"."endpoint" is used)
    or an endpoint string. token: the study token (default: the
    external.token file `surge launch` writes next to server.json, else
    $SURGE_TOKEN).
    credit: batches requested ahead (1..16). timeout_s: longest wait for
    an answer (while waiting for a batch, the server is pinged after each
    timeout_s of silence, and only its silence is an error); the server
    drops a consumer that holds batches and is silent for its own timeout
    (welcome's timeout_s), so iterate or call heartbeat() within it.
    pin_memory: return pinned tensors (default: when CUDA is available).
    max_batches: stop after this many batches (0 = until the study ends).
    connect_timeout_s: longest wait for the welcome, which comes once the
    study's first sample arrived.
    transport: "auto" (shared memory when the server runs on this host and
    offers it, else ZeroMQ) or "zmq" (always over ZeroMQ). After
    connect(), self.transport says which one is used and
    self.welcome["transport_reason"] why not shared memory.
    reconnect_timeout_s: when the server dies and `surge launch` restarts
    it from its checkpoint (a new server.json), wait this long for the new
    one and carry on with it (0 = raise instead). Only with a server.json
    path. The batch held when the server died is lost with it (the new
    server counts what its checkpoint says); the normalisation statistics
    stay those first received (the checkpoint restores the same ones).
    """

    def __init__(self, server, token=None, credit=2, timeout_s=60.0,
                 pin_memory=None, max_batches=0, connect_timeout_s=600.0,
                 transport="auto", reconnect_timeout_s=300.0):
        super().__init__()
        self._info_path = None
        self._server_pid = None
        self.reconnect_timeout_s = reconnect_timeout_s
        self.reconnects = 0
        if isinstance(server, str) and server.endswith(".json"):
            self._info_path = server
            with open(server) as f:
                info = json.load(f)
            self._server_pid = info.get("pid")
            if "external" not in info:
                raise SurgeExternalError(
                    "%s has no external endpoint: start the server with "
                    "--consumer external" % server)
            # surge launch (trainer.kind external) writes the study token
            # next to server.json, owner-only.
            tok = os.path.join(os.path.dirname(server), "external.token")
            if token is None and os.path.exists(tok):
                with open(tok) as f:
                    token = f.read().strip()
            server = info["external"]["endpoint"]
        self.endpoint = server
        self.token = token if token is not None else os.environ.get(
            "SURGE_TOKEN", "")
        if not 1 <= credit <= 16:
            raise ValueError("credit must be 1..16")
        self.credit = credit
        self.timeout_ms = int(timeout_s * 1000)
        self.connect_timeout_s = connect_timeout_s
        self.pin = (torch.cuda.is_available() if pin_memory is None
                    else pin_memory)
        self.max_batches = max_batches
        if transport not in ("auto", "zmq"):
            raise ValueError("transport must be 'auto' or 'zmq'")
        self.want_shm = transport == "auto"
        self.transport = None
        self._shm = None  # per slot: (x, y, ids, w) views, full batch rows
        self._last_slot = None
        self._ctx = zmq.Context.instance()
        self._sock = None
        self._last = None
        self._losses = None
        self.welcome = None
        self.stats = None
        self.batches = 0
        self.rows = 0
        self.ended = False

    # -- connection

    def _send(self, header, *frames):
        parts = [packb(header)] + list(frames)
        self._sock.send_multipart(parts, copy=False)

    def _recv(self, wait=False):
        # wait: a batch may take long (slow solvers): on each silent
        # timeout ask the server whether it is alive; give up only when
        # it does not answer that.
        while not self._sock.poll(self.timeout_ms):
            if not wait:
                raise SurgeExternalError("no answer from %s within %.0f s" %
                                         (self.endpoint,
                                          self.timeout_ms / 1e3))
            self._send({"type": "ping"})
            if not self._sock.poll(self.timeout_ms):
                raise _ServerGone("server at %s does not answer" %
                                  self.endpoint)
        frames = self._sock.recv_multipart(copy=False)
        h = unpackb(frames[0].buffer)
        if h.get("type") == "pong":
            return self._recv(wait)
        if h.get("type") == "error":
            raise SurgeExternalError("server: %s (%d)" %
                                     (h.get("message"), h.get("code", 0)))
        if h.get("type") == "stats":
            self._set_stats(h, frames[1:])
            return self._recv(wait)
        return h, frames[1:]

    def _set_stats(self, h, f):
        if self.stats is not None:
            return  # fixed once received (a restarted server resends)
        nin, nout = h["nin"], h["nout"]
        self.stats = {
            "in_mean": _tensor(_f32(f[0], 0, 0).copy()),
            "in_std": _tensor(_f32(f[1], 0, 0).copy()),
            "out_mean": _tensor(_f32(f[2], 0, 0).copy()),
            "out_std": _tensor(_f32(f[3], 0, 0).copy()),
        }
        assert self.stats["in_mean"].numel() == nin
        assert self.stats["out_mean"].numel() == nout

    def connect(self):
        """Say hello (idempotent); returns the welcome."""
        if self._sock is not None:
            return self.welcome
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.connect(self.endpoint)
        hello = {"type": "hello", "token": self.token}
        host = _boot_id() if self.want_shm else None
        if host:
            hello.update(transport="shm", host=host)
        self._send(hello)
        # The server answers once the study's first sample set the shape.
        if not self._sock.poll(int(self.connect_timeout_s * 1000)):
            raise SurgeExternalError(
                "no welcome from %s within %.0f s (no sample yet?)" %
                (self.endpoint, self.connect_timeout_s))
        h, _ = self._recv()
        if h.get("type") != "welcome":
            raise SurgeExternalError("expected welcome, got %r" % h)
        self.welcome = h
        self.transport = "zmq"
        if h.get("transport") == "shm":
            try:
                self._shm = _map_ring(h)
            except (OSError, ValueError, KeyError, TypeError) as e:
                # Another container, no /dev/shm, a bad offer: ZeroMQ.
                self._send({"type": "attach", "ok": False,
                            "reason": str(e)[:80]})
                h["transport_reason"] = "cannot map: %s" % e
            else:
                self._send({"type": "attach", "ok": True})
                self.transport = "shm"
        return h

    @property
    def n_inputs(self):
        return self.connect()["nin"]

    @property
    def n_outputs(self):
        return self.connect()["nout"]

    def fields(self):
        """The output vector's fields (name, offset, size, ...) and the
        study's field shapes ("name=AxB,..."), once a run was welcomed."""
        w = self.connect()
        f = json.loads(w["fields"]) if w.get("fields") else None
        return f, w.get("field_shapes") or ""

    def normalization(self):
        """in_mean, in_std, out_mean, out_std (tensors): per-feature
        statistics of the first batch the server served (the same for
        every consumer). Waits for that batch if needed."""
        self.connect()
        while self.stats is None:
            h, f = self._recv(wait=True)
            self._stash(h, f)
        return self.stats

    def normalize(self, x, y):
        s = self.normalization()
        return ((x - s["in_mean"]) / s["in_std"],
                (y - s["out_mean"]) / s["out_std"])

    def heartbeat(self):
        """Tell the server this consumer is alive (long evaluations)."""
        self.connect()
        self._send({"type": "credit", "n": 0})

    def close(self):
        """Ack what is held, say bye, and close (counts stay exact)."""
        if self._sock is None:
            return
        try:
            self._ack()
            self._send({"type": "bye"})
            while True:
                h, f = self._recv()
                if h.get("type") == "bye":
                    break
        except SurgeExternalError:
            pass
        self._sock.close()
        self._sock = None
        # The views go; the mapping goes with the last tensor over it.
        self._shm = None

    # -- batches

    _pending = None

    def _stash(self, h, f):
        if self._pending is None:
            self._pending = []
        self._pending.append((h, f))

    def _next_msg(self):
        if self._pending:
            return self._pending.pop(0)
        return self._recv(wait=True)

    def _ack(self):
        if self._last is None:
            return
        ack = {"type": "ack", "id": self._last}
        if self._last_slot is not None:
            ack["slot"] = self._last_slot
        if self._losses is not None:
            self._send(ack, self._losses)
        else:
            self._send(ack)
        self._last = None
        self._last_slot = None
        self._losses = None

    def report_losses(self, losses):
        """Per-row losses of the last batch (rows floats, >= 0): sent with
        its ack; prioritized policies set the rows' priorities from them."""
        if self._last is None:
            raise SurgeExternalError("no batch to report losses for")
        a = losses.detach().float().cpu().numpy() if torch.is_tensor(
            losses) else np.asarray(losses, dtype=np.float32)
        self._losses = np.ascontiguousarray(a, dtype=np.float32).tobytes()

    def _reconnect(self, why):
        """The server is gone: wait for the one `surge launch` restarts
        (server.json names another pid) and say hello to it."""
        if self._info_path is None or self.reconnect_timeout_s <= 0:
            raise why
        warnings.warn("surge.torch: %s; waiting up to %.0f s for a restarted "
                      "server" % (why, self.reconnect_timeout_s))
        self._sock.close()
        self._sock = None
        self._shm = None
        self._pending = None
        self._last = self._last_slot = self._losses = None
        deadline = time.monotonic() + self.reconnect_timeout_s
        while True:
            try:
                with open(self._info_path) as fh:
                    info = json.load(fh)
                if (info.get("pid") != self._server_pid and
                        "external" in info):
                    break
            except (OSError, ValueError):
                pass  # not there yet (it is replaced atomically)
            if time.monotonic() > deadline:
                raise SurgeExternalError(
                    "server gone and no new one in %s within %.0f s" %
                    (self._info_path, self.reconnect_timeout_s)) from why
            time.sleep(0.2)
        self._server_pid = info.get("pid")
        self.endpoint = info["external"]["endpoint"]
        self.connect()
        self.reconnects += 1

    def __iter__(self):
        self.connect()
        self._send({"type": "credit", "n": self.credit})
        while not self.max_batches or self.batches < self.max_batches:
            try:
                h, f = self._next_msg()
            except _ServerGone as e:
                self._reconnect(e)
                self._send({"type": "credit", "n": self.credit})
                continue
            t = h.get("type")
            if t == "end":
                self.ended = True
                break
            if t != "batch":
                raise SurgeExternalError("unexpected message %r" % h)
            n, nin, nout = h["rows"], h["nin"], h["nout"]
            if "slot" in h:
                x, y, w, sims, steps = self._slot_batch(h)
            else:
                x = _tensor(_f32(f[0], n, nin))
                y = _tensor(_f32(f[1], n, nout))
                ids = np.frombuffer(f[2].buffer, dtype=np.int64).reshape(n, 2)
                w = (_tensor(_f32(f[3], 0, 0)) if len(f) > 3
                     else torch.ones(n, dtype=torch.float32))
                sims = _tensor(ids[:, 0].copy())
                steps = _tensor(ids[:, 1].copy())
            if self.pin:
                x, y, w = x.pin_memory(), y.pin_memory(), w.pin_memory()
                sims, steps = sims.clone(), steps.clone()
            self._last = h["id"]
            self._last_slot = h.get("slot")
            self.batches += 1
            self.rows += n
            # One credit back for this batch: the server stays credit
            # batches ahead of the model.
            self._send({"type": "credit", "n": 1})
            yield Batch(h["id"], x, y, w, sims, steps)
            # The model is done with this batch: ack it (with its losses)
            # before waiting for the next, so a consumer waiting for data
            # holds nothing the server could count as lost.
            self._ack()
        self._ack()

    def _slot_batch(self, h):
        # Everything in the header is checked against the welcome before
        # any view is made: a wrong slot or size is the server's bug, and
        # must not turn into reading the wrong memory.
        slot, n = h["slot"], h["rows"]
        if (self._shm is None or not isinstance(slot, int) or
                not 0 <= slot < len(self._shm) or
                not 0 < n <= self.welcome["batch"] or
                h["nin"] != self.welcome["nin"] or
                h["nout"] != self.welcome["nout"]):
            raise SurgeExternalError("bad shared-memory batch %r" % h)
        x, y, ids, w = self._shm[slot]
        if not self.welcome.get("prioritized"):
            w = None
        return (x[:n], y[:n],
                w[:n] if w is not None else torch.ones(n, dtype=torch.float32),
                ids[:n, 0], ids[:n, 1])

    def validation(self, chunk=1024):
        """Iterate the held-out samples: (x, y, sims, steps) chunks."""
        self.connect()
        start = 0
        while True:
            self._send({"type": "validation", "start": start,
                        "count": chunk})
            while True:
                h, f = self._recv()
                if h.get("type") == "validation":
                    break
                self._stash(h, f)
            n = h["rows"]
            if n == 0:
                return
            nin, nout = self.welcome["nin"], self.welcome["nout"]
            ids = np.frombuffer(f[2].buffer, dtype=np.int64).reshape(n, 2)
            yield (_tensor(_f32(f[0], n, nin)), _tensor(_f32(f[1], n, nout)),
                   _tensor(ids[:, 0].copy()), _tensor(ids[:, 1].copy()))
            start += n
            if start >= h["total"]:
                return
