"""Teacher outputs are computed once per (teacher, inputs) and kept on disk across jobs."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from worker.engine.finite import finite_teacher_outputs


class LogitCache(Protocol):
    def get(self, key: str) -> np.ndarray | None: ...

    def put(self, key: str, logits: np.ndarray) -> None: ...


class DiskLogitCache:
    """One .npy file per key in a folder; written atomically, read without pickles."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        path = self._path(key)
        if not path.exists():
            self.misses += 1
            return None
        try:
            value = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            self.misses += 1
            return None
        self.hits += 1
        return np.asarray(value)

    def put(self, key: str, logits: np.ndarray) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".partial")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, logits, allow_pickle=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def fingerprint(x: np.ndarray) -> str:
    data = np.ascontiguousarray(x)
    hasher = hashlib.sha256(f"{data.dtype.str}{data.shape}".encode())
    hasher.update(data.data)  # the array's buffer, hashed without a copy
    return hasher.hexdigest()


def file_fingerprint(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


def teacher_logits(
    teacher: Any, x: np.ndarray, cache: LogitCache | None, what: str = "these rows"
) -> np.ndarray:
    """The teacher's logits for x, from the cache when this teacher has seen these inputs.

    Non-finite outputs raise TeacherOutputNotFinite (naming `what`) and are never cached."""
    teacher_id = getattr(teacher, "fingerprint", None)
    if cache is None or teacher_id is None or len(x) == 0:
        return finite_teacher_outputs(np.asarray(teacher.logits(x), dtype=np.float32), what)
    key = hashlib.sha256(f"{teacher_id}:{teacher.output_name}:{fingerprint(x)}".encode())
    found = cache.get(key.hexdigest())
    if found is not None and found.shape == (len(x), teacher.num_classes):
        return finite_teacher_outputs(found, what)
    logits = finite_teacher_outputs(np.asarray(teacher.logits(x), dtype=np.float32), what)
    cache.put(key.hexdigest(), logits)
    return logits
