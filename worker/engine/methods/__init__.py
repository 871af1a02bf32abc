"""Distillation methods, by name: `run_method(name, inputs)`. Importing this package
registers every method the engine has."""

from __future__ import annotations

from worker.engine.methods import assistants, early_stopped, kd, search  # noqa: F401  (registers)
from worker.engine.methods.registry import (
    METHODS,
    MethodInputs,
    MethodResult,
    TrainingCallbacks,
    register,
)


def run_method(name: str, inputs: MethodInputs) -> MethodResult:
    if name not in METHODS:
        raise ValueError(f"no method named {name!r}; the engine has {sorted(METHODS)}")
    return METHODS[name](inputs)


__all__ = ["METHODS", "MethodInputs", "MethodResult", "TrainingCallbacks", "register", "run_method"]
