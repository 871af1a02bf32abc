"""The one base of every error that fails a job: it carries the job's `error.code`.

The engine raises its own subclasses (a teacher that cannot run, an export that does not
reproduce the student, a mapping that cannot be used); the worker adds its own (bad inputs,
a teacher process that died, a time limit). A job's task catches this one class."""

from __future__ import annotations

import re


class JobFailure(Exception):
    """Fails the job with `code`; the message says what happened and what to do."""

    code = "internal_error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class OutOfMemory(JobFailure):
    code = "out_of_memory"


_MEMORY_WORDS = re.compile(
    r"failed to allocate|bad[ _]alloc|bad allocation|can't allocate memory|"
    r"cannot allocate memory|out of memory|std::length_error",
    re.IGNORECASE,
)


def is_memory_error(exc: BaseException) -> bool:
    """A MemoryError, or a runtime's allocation failure (onnxruntime, torch), anywhere in the
    chain of causes (an inspector wraps the runtime's error in TeacherRejected)."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, MemoryError) or _MEMORY_WORDS.search(str(seen)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def memory_summary(exc: BaseException) -> str:
    """How much the failed allocation asked for, when the runtime says; else its message."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            break
        asked = re.search(r"(?:buffer of size|allocate)\D{0,20}(\d{6,})", str(seen))
        if asked:
            return f"one allocation asked for {int(asked.group(1)) / 1024**3:.1f} GiB"
        seen = seen.__cause__ or seen.__context__
    text = str(exc).strip()
    return text.splitlines()[-1][:300] if text else type(exc).__name__
