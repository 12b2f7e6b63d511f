"""Give freed memory back to the operating system between the stages of a long job.

glibc keeps freed heap memory for reuse, and after numpy frees a large array it raises its own threshold for
serving large arrays from the heap; a job that allocates per-frame arrays for a long video (landmarks, meshes,
then their whole-clip copies) thus keeps the peak of every stage resident until it exits. `release_memory()`
after a stage returns the free pages (`malloc_trim`, ~0.01 ms; no garbage collection: numpy arrays are freed by
reference counting, and a full `gc.collect()` costs ~60 ms, which added ~20 % to preprocessing many short
clips). Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_LIBC = None
if sys.platform.startswith("linux"):
    try:
        _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        _LIBC = None


def release_memory() -> None:
    """Return the free heap pages to the OS (a no-op where malloc_trim does not exist)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
