"""Process-wide CPU performance settings, applied by maml-cli's own commands (not on import).

glibc's malloc returns large freed blocks to the kernel (``mmap``/``munmap`` above a dynamic threshold,
heap trimming above another), so a training step that frees and re-allocates hundreds of MB of
activations page-faults all of it again every step (≈0.4 M faults, ~0.8 s of system time per
meta-step of 5-way Conv4 MAML on a 2-core CPU). Raising both thresholds keeps the freed memory in
the process for the next step: same numerics, 20–25% less wall time. Peak RSS is unchanged
(memory that was in use at the peak is the same); RSS simply stays at that peak between steps.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's maximum on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: 2 GiB, more than a meta-step's peak

_applied: dict[str, bool] = {}


def tune_allocator() -> bool:
    """Keep freed activation memory in-process (glibc only); True when the setting was applied.

    Idempotent. Opt out with ``MAML_CLI_MALLOC=default``. Environment variables the user set
    (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``) are respected: then nothing is changed.
    """
    if "malloc" in _applied:
        return _applied["malloc"]
    ok = False
    user_set = any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"))
    if sys.platform.startswith("linux") and os.environ.get("MAML_CLI_MALLOC", "tuned") != "default" and not user_set:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
        except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
            ok = False
    _applied["malloc"] = ok
    return ok


def allocator_tuned() -> bool:
    return _applied.get("malloc", False)
