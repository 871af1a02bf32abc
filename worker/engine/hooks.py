"""What a caller may hook into every training run: a per-step check that can stop it, and a
store of per-epoch checkpoints that lets a run resume where an earlier attempt stopped.

A job may train several models in turn (assistants, checkpoints, the scratch baseline). The
runs of one job happen in a fixed order, so each gets a stable name, `fit0`, `fit1`, ...: a
second attempt of the job finds the first attempt's checkpoints under the same names.

The hooks are ambient (a context variable) so that every method that trains (plain KD,
assistants, early-stopped teachers) gets them without threading them through each signature:

    with run_hooks(RunHooks(on_step=check, checkpoints=store)):
        distill(config, teacher, splits)
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch


class CheckpointStore(Protocol):
    """Where checkpoints live (the service: its database, written under the job's lease)."""

    def load(self, run: str) -> bytes | None: ...

    def save(self, run: str, epoch: int, data: bytes) -> None: ...


@dataclass
class RunHooks:
    # Called before every optimizer step; raise to stop the run (the exception propagates).
    on_step: Callable[[], None] | None = None
    checkpoints: CheckpointStore | None = None
    # Called when a run resumes: (run name, the last finished epoch).
    on_resume: Callable[[str, int], None] | None = None
    _runs: int = field(default=0, repr=False)

    def next_run(self) -> str:
        name = f"fit{self._runs}"
        self._runs += 1
        return name


_current: ContextVar[RunHooks | None] = ContextVar("distillery_run_hooks", default=None)


@contextmanager
def run_hooks(hooks: RunHooks) -> Iterator[RunHooks]:
    token = _current.set(hooks)
    try:
        yield hooks
    finally:
        _current.reset(token)


def current_hooks() -> RunHooks:
    return _current.get() or RunHooks()


def pack_state(state: dict[str, Any]) -> bytes:
    """Tensors, numbers, strings and lists/dicts of them; read back with weights_only=True."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def unpack_state(data: bytes) -> dict[str, Any]:
    # Our own bytes, still read with weights_only=True: nothing in a checkpoint can run code.
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError("a checkpoint holds a dict")
    return state
