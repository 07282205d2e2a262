"""surge.client - libsurge for Python solvers, through ctypes.

DESIGN. libsurge (include/surge/client.h) is the one implementation; this
module only marshals. surge_client_options_init() fills the options from
the environment `surge launch` sets (SURGE_ENDPOINT, SURGE_TOKEN,
SURGE_SIM_ID, SURGE_PARAMS, SURGE_TIMEOUT_MS, ...); the caller's explicit
arguments then win, as in C. The options and field structures are mirrored
below with ctypes: the options buffer carries spare room at its end so a
libsurge whose structure grew at the end cannot write past it, and the
test python_study.sh compares the mirror with the C layout (py_layout) so
a change in the middle is caught.

Arrays are passed by address: send() takes a C-contiguous float32 or
float64 NumPy array holding exactly the count this rank declared for the
field and hands its buffer to libsurge, which reads it before returning
(float64 is rounded to float32 as it is packed). Nothing is copied here; a
non-contiguous view or another dtype is refused rather than converted.

Errors raise SurgeError(code, message): code is libsurge's negative code
(surge/error.h), message its detail ("no surge server answered at ...").
The library is loaded on first use, so `import surge` works where only
other parts of the package are needed.
"""
import ctypes
import ctypes.util
import os
import subprocess

import numpy as np

# Codes of include/surge/error.h (part of the ABI).
OK = 0
EPROTO = -1000
EVERSION = -1001
ETOKEN = -1002
ETIMEDOUT = -1003
EREJECTED = -1004
ELIMIT = -1005
EFIELD = -1006
EBOUNDS = -1007
EDTYPE = -1008
ESTATE = -1009
ECONFIG = -1010
ENOSERVER = -1011
EDUPLICATE = -1012
ECLOSED = -1013
EINTERNAL = -1014

_FLOAT32 = 1
_FLOAT64 = 2
_MAX_FIELDS = 64
_MAX_PARAMS = 64
# Spare bytes after the mirrored options (see DESIGN).
_OPTIONS_SPARE = 1024


class SurgeError(Exception):
    """A libsurge call failed: .code is its negative code, .message the
    detail libsurge gave (or the code's text)."""

    def __init__(self, code, message):
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message


class _Field(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p),
                ("global_size", ctypes.c_uint64),
                ("offset", ctypes.c_uint64),
                ("count", ctypes.c_uint64)]


class _Options(ctypes.Structure):
    _fields_ = [("endpoint", ctypes.c_char_p),
                ("token", ctypes.c_char_p),
                ("sim_id", ctypes.c_int64),
                ("rank", ctypes.c_int32),
                ("nranks", ctypes.c_int32),
                ("params", ctypes.POINTER(ctypes.c_double)),
                ("nparams", ctypes.c_size_t),
                ("fields", ctypes.POINTER(_Field)),
                ("nfields", ctypes.c_size_t),
                ("timeout_ms", ctypes.c_int),
                ("coalesce_bytes", ctypes.c_size_t),
                ("flush_ms", ctypes.c_int),
                ("sndhwm_bytes", ctypes.c_uint64),
                ("steps", ctypes.c_uint64),
                ("run_key", ctypes.c_char_p),
                ("curve_keys", ctypes.c_char_p)]


class _OptionsBuffer(ctypes.Structure):
    _fields_ = [("o", _Options),
                ("spare", ctypes.c_char * _OPTIONS_SPARE)]


class _Stats(ctypes.Structure):
    _fields_ = [("slices_sent", ctypes.c_uint64),
                ("messages_sent", ctypes.c_uint64),
                ("bytes_sent", ctypes.c_uint64),
                ("send_wait_ns", ctypes.c_uint64)]


def layout():
    """The mirrored structures' sizes and member offsets, for the test that
    compares them with the C header's (py_layout)."""
    out = {}
    for name, st in (("surge_field", _Field),
                     ("surge_client_options", _Options)):
        out[name] = {"sizeof": ctypes.sizeof(st)}
        for member, _ in st._fields_:
            out[name][member] = getattr(st, member).offset
    return out


_lib = None
_lib_path = None


def library_path():
    """Where libsurge is taken from: $SURGE_LIBRARY, else pkg-config's
    libdir of surge, else the system's search path. Raises SurgeError
    (ECONFIG) when none has it."""
    env = os.environ.get("SURGE_LIBRARY")
    if env:
        if not os.path.isfile(env):
            raise SurgeError(ECONFIG, f"SURGE_LIBRARY={env}: no such file")
        return env
    try:
        libdir = subprocess.run(
            ["pkg-config", "--variable=libdir", "surge"], check=True,
            capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        libdir = ""
    for name in ("libsurge.so.0", "libsurge.so", "libsurge.dylib"):
        if libdir and os.path.isfile(os.path.join(libdir, name)):
            return os.path.join(libdir, name)
    found = ctypes.util.find_library("surge")
    if found:
        return found
    raise SurgeError(ECONFIG, "libsurge not found: set SURGE_LIBRARY to the "
                     "path of libsurge.so, or PKG_CONFIG_PATH so that "
                     "`pkg-config surge` finds an installed surge")


def _load():
    global _lib, _lib_path
    if _lib is not None:
        return _lib
    path = library_path()
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        raise SurgeError(ECONFIG, f"cannot load {path}: {e}") from None
    P = ctypes.POINTER
    vp = ctypes.c_void_p
    sigs = {
        "surge_client_options_init": (ctypes.c_int, [P(_OptionsBuffer)]),
        "surge_client_options_error": (ctypes.c_char_p, []),
        "surge_client_open": (ctypes.c_int, [P(vp), P(_OptionsBuffer)]),
        "surge_client_open_error": (ctypes.c_char_p, []),
        "surge_client_close_error": (ctypes.c_char_p, []),
        "surge_client_send": (ctypes.c_int, [vp, ctypes.c_char_p,
                                             ctypes.c_int64, ctypes.c_double,
                                             vp, ctypes.c_int]),
        "surge_client_flush": (ctypes.c_int, [vp]),
        "surge_client_close": (ctypes.c_int, [P(vp)]),
        "surge_client_abort": (None, [P(vp)]),
        "surge_client_last_error": (ctypes.c_char_p, [vp]),
        "surge_client_get_stats": (None, [vp, P(_Stats)]),
        "surge_checksum_f32": (ctypes.c_uint64, [vp, ctypes.c_uint64,
                                                 ctypes.c_uint64]),
        "surge_checksum_f64": (ctypes.c_uint64, [vp, ctypes.c_uint64,
                                                 ctypes.c_uint64]),
        "surge_strerror": (ctypes.c_char_p, [ctypes.c_int]),
    }
    for name, (res, args) in sigs.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            raise SurgeError(ECONFIG, f"{path} has no {name}: not a "
                             "libsurge of this version") from None
        fn.restype = res
        fn.argtypes = args
    _lib, _lib_path = lib, path
    return lib


def strerror(code):
    """The text of any code a libsurge call returned."""
    return _load().surge_strerror(int(code)).decode()


def _error(code, detail):
    text = detail.decode(errors="replace") if detail else ""
    return SurgeError(code, text or strerror(code))


def _options():
    lib = _load()
    buf = _OptionsBuffer()
    rc = lib.surge_client_options_init(ctypes.byref(buf))
    if rc != 0:
        raise _error(rc, lib.surge_client_options_error())
    return buf


def run_params():
    """(sim_id, params): the simulation id and parameter values this run
    got from `surge launch` (SURGE_SIM_ID, SURGE_PARAMS); (0, ()) outside a
    study."""
    o = _options().o
    return o.sim_id, tuple(o.params[i] for i in range(o.nparams))


class Field:
    """One field this rank holds a slice of: a flat array of global_size
    elements of which this rank owns [offset, offset + count)."""

    __slots__ = ("name", "global_size", "offset", "count")

    def __init__(self, name, global_size, offset, count):
        self.name = str(name)
        self.global_size = int(global_size)
        self.offset = int(offset)
        self.count = int(count)

    def __repr__(self):
        return (f"Field({self.name!r}, {self.global_size}, {self.offset}, "
                f"{self.count})")


def _array(data, what):
    if not isinstance(data, np.ndarray):
        raise TypeError(f"{what}: a NumPy array is needed, not "
                        f"{type(data).__name__}")
    if data.dtype == np.float32:
        dtype = _FLOAT32
    elif data.dtype == np.float64:
        dtype = _FLOAT64
    else:
        raise SurgeError(EDTYPE, f"{what}: dtype {data.dtype} is neither "
                         "float32 nor float64")
    if not data.flags.c_contiguous:
        raise SurgeError(-22, f"{what}: the array is not C-contiguous "
                         "(surge never copies: pass np.ascontiguousarray)")
    if not data.dtype.isnative:
        raise SurgeError(EDTYPE, f"{what}: the array is not in native "
                         "byte order")
    return dtype


def checksum(data, position):
    """libsurge's order-independent checksum of a slice (see
    surge_checksum_f32 in surge/client.h): what the server logs for a
    sample is the sum (mod 2^64) of its slices' checksums, position being
    the index of data[0] in the sample's output vector."""
    dtype = _array(data, "checksum")
    lib = _load()
    fn = lib.surge_checksum_f32 if dtype == _FLOAT32 else \
        lib.surge_checksum_f64
    return fn(data.ctypes.data, int(position), data.size)


class Client:
    """An open client of one rank (surge_client_open: hello, then welcome
    or an error). fields: Field objects, declared the same on every rank.
    comm: an mpi4py communicator (rank and size of the simulation); without
    one, rank and size come from the launcher's environment
    (OMPI_COMM_WORLD_RANK/SIZE, ...). endpoint, token, run_key, curve_keys
    (a CURVE client key file), sim_id, params, timeout_ms override what
    `surge launch` passed in the environment;
    steps declares how many steps this run will send (progress and ETA in
    `surge top` and the dashboard; 0 or None: unknown, or SURGE_STEPS).
    Use as a context manager, or call close(); one thread at a time."""

    def __init__(self, fields, comm=None, *, endpoint=None, token=None,
                 sim_id=None, params=None, timeout_ms=None, steps=None,
                 run_key=None, curve_keys=None):
        self._c = ctypes.c_void_p()
        fields = list(fields)
        if not 1 <= len(fields) <= _MAX_FIELDS:
            raise SurgeError(ECONFIG, f"{len(fields)} fields declared; "
                             f"1..{_MAX_FIELDS} allowed")
        buf = _options()
        o = buf.o
        if comm is not None:
            o.rank = comm.Get_rank()
            o.nranks = comm.Get_size()
        # Keep every buffer libsurge borrows alive until open returns.
        keep = []
        if endpoint is not None:
            keep.append(endpoint.encode())
            o.endpoint = keep[-1]
        if token is not None:
            keep.append(token.encode())
            o.token = keep[-1]
        if run_key is not None:
            keep.append(run_key.encode())
            o.run_key = keep[-1]
        if curve_keys is not None:
            keep.append(curve_keys.encode())
            o.curve_keys = keep[-1]
        if sim_id is not None:
            o.sim_id = int(sim_id)
        if params is not None:
            params = [float(p) for p in params]
            if len(params) > _MAX_PARAMS:
                raise SurgeError(ECONFIG, f"{len(params)} params; at most "
                                 f"{_MAX_PARAMS}")
            arr = (ctypes.c_double * max(len(params), 1))(*params)
            keep.append(arr)
            o.params = ctypes.cast(arr, ctypes.POINTER(ctypes.c_double))
            o.nparams = len(params)
        if timeout_ms is not None:
            o.timeout_ms = int(timeout_ms)
        if steps is not None:
            if int(steps) < 0:
                raise SurgeError(ECONFIG, f"steps {steps}: must be >= 0")
            o.steps = int(steps)
        cf = (_Field * len(fields))()
        for i, f in enumerate(fields):
            if min(f.global_size, f.offset, f.count) < 0:
                raise SurgeError(EBOUNDS, f"field {f.name!r}: sizes must "
                                 "not be negative")
            keep.append(f.name.encode())
            cf[i].name = keep[-1]
            cf[i].global_size = f.global_size
            cf[i].offset = f.offset
            cf[i].count = f.count
        o.fields = cf
        o.nfields = len(fields)
        lib = _load()
        rc = lib.surge_client_open(ctypes.byref(self._c), ctypes.byref(buf))
        if rc != 0:
            raise _error(rc, lib.surge_client_open_error())
        self._counts = {f.name: f.count for f in fields}

    def _handle(self, what):
        if not self._c:
            raise SurgeError(ESTATE, f"{what}: the client is closed")
        return self._c

    def send(self, field, step, time, data):
        """This rank's slice of one field for one step: data is a
        C-contiguous float32/float64 NumPy array (any shape) of exactly the
        count declared for the field; it is read before send returns.
        step >= 0; time is the simulated time (an input of the sample)."""
        c = self._handle("send")
        dtype = _array(data, f"field {field!r}")
        want = self._counts.get(field)
        if want is not None and data.size != want:
            raise SurgeError(EBOUNDS, f"field {field!r}: the array has "
                             f"{data.size} elements; this rank declared "
                             f"{want}")
        lib = _load()
        rc = lib.surge_client_send(c, field.encode(), int(step), float(time),
                                   data.ctypes.data if data.size else None,
                                   dtype)
        if rc != 0:
            raise _error(rc, lib.surge_client_last_error(c))

    def flush(self):
        """Send any packed slices now."""
        c = self._handle("flush")
        lib = _load()
        rc = lib.surge_client_flush(c)
        if rc != 0:
            raise _error(rc, lib.surge_client_last_error(c))

    def stats(self):
        """What this client has sent so far, as a dict."""
        s = _Stats()
        _load().surge_client_get_stats(self._handle("stats"), ctypes.byref(s))
        return {k: getattr(s, k) for k, _ in _Stats._fields_}

    def close(self):
        """Flush, say bye, and wait for the server to confirm every slice;
        the client is closed afterwards, also when this raises. Closing a
        closed client does nothing."""
        if not self._c:
            return
        lib = _load()
        rc = lib.surge_client_close(ctypes.byref(self._c))
        self._c = ctypes.c_void_p()
        if rc != 0:
            raise _error(rc, lib.surge_client_close_error())

    def abort(self):
        """Close without bye: the server counts this rank's unfinished
        steps as dropped."""
        if self._c:
            _load().surge_client_abort(ctypes.byref(self._c))
            self._c = ctypes.c_void_p()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    def __del__(self):
        # A client dropped without close() is aborted, never leaked.
        try:
            self.abort()
        except Exception:
            pass
