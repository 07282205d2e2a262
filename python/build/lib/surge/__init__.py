"""surge - the solver side of surge for Python solvers.

Client streams this rank's slices of a simulation's fields to a surge
server, one call per field per step, taking NumPy arrays without copying
them; run_params gives the parameter values `surge launch` chose for this
run. Everything is a thin binding of libsurge (ctypes): see client.py.
"""
from .client import (Client, Field, SurgeError, checksum, library_path,
                     run_params, strerror)

__all__ = ["Client", "Field", "SurgeError", "checksum", "library_path",
           "run_params", "strerror"]
__version__ = "0.1.0"
