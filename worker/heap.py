"""A teacher's process keeps its batches' memory between batches (glibc's allocator).

glibc serves a block above M_MMAP_THRESHOLD with a mapping of its own, unmapped when freed,
and hands freed memory at the top of the heap back to the kernel once more than
M_TRIM_THRESHOLD of it is free. Both thresholds start low (128 KiB) and rise only as far as the
blocks a process happened to free take them, so a process that labels batch after batch may
map, fault in and give back its activations on every batch: a 2-layer BERT labelling 50,000
rows in batches of 1,024 took 500,000 to 1,200,000 page faults and 1.4 to 4.3 s of system time
a pass, against 1,000 to 13,000 faults and under 0.1 s with the thresholds set (bench/teacher.py
on 2 cores). Set once the batch is planned: blocks up to glibc's largest mmap threshold come
from the heap, and the heap keeps what the plan set aside for a batch's activations, which
the memory limit already counts. Standard library only; a no-op where the C library has no
mallopt."""

from __future__ import annotations

import ctypes
import sys

# mallopt's parameters (malloc.h) and glibc's ceiling on M_MMAP_THRESHOLD on 64-bit:
# HEAP_MAX_SIZE / 2. Larger blocks are mapped whatever is asked.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MAX_MMAP_THRESHOLD = 32 * 1024**2
# mallopt takes an int.
INT_MAX = 2**31 - 1


def keep_batch_memory(batch_bytes: int) -> bool:
    """Keep up to `batch_bytes` of freed heap in this process and serve blocks up to 32 MiB
    from the heap. True if the C library took both settings."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    trim = min(INT_MAX, max(MAX_MMAP_THRESHOLD, int(batch_bytes)))
    return bool(mallopt(M_MMAP_THRESHOLD, MAX_MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, trim)
    )
