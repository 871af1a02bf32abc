"""Handing memory a parse freed back to the operating system.

A dataset parse allocates tens of MB in chunks and frees them. glibc keeps freed heap memory
in the arena of the thread that freed it (and FastAPI runs each upload on a pool thread, each
with its arena), and pyarrow's allocator keeps its own: the API's resident memory would then
grow by one parse's worth per thread. Trimming after each upload keeps it at one parse's
worth."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def release_freed_memory() -> None:
    """Return freed heap pages of every arena (glibc) and of pyarrow's pool, if loaded."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is not None:
        pyarrow.default_memory_pool().release_unused()
