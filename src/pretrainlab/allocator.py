"""Keeps freed CPU memory in the process, so training steps stop paying page faults for every tensor.

glibc's malloc serves blocks above a threshold (128 KiB to 32 MiB) with fresh mmap calls and trims
freed memory at the top of the heap back to the kernel. A training step on the CPU frees and
reallocates the same few-megabyte activations every step, so each one is page-faulted in again;
on a 2-core machine that doubled the time of a tiny CNN's SimCLR step. Turning mmap off for
ordinary allocations and raising the trim threshold keeps the freed pages for the next step (the
process's resident memory then stays near its peak, which it reaches anyway every step). PyTorch's
CPU performance guide gets the same effect by preloading jemalloc or tcmalloc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from glibc's malloc.h
M_MMAP_MAX = -4


@functools.cache
def keep_freed_memory() -> bool:
    """Tunes glibc's allocator once per process; returns False (and changes nothing) elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
