"""Checks that what a teacher answers, and what training computes, are finite numbers.

A teacher whose outputs hold NaN or infinity gives every soft target the same poison: the loss
turns NaN, the student learns nothing and every metric after it is NaN too. So the job stops
at the first such value, with an `error.code` that says which one (see README, "Errors")."""

from __future__ import annotations

import math

import numpy as np

from worker.engine.errors import JobFailure


class NotFinite(JobFailure):
    """A value that must be finite is not; `code` is the job's error.code."""

    code = "not_finite"


class TeacherOutputNotFinite(NotFinite):
    code = "teacher_output_not_finite"


class MappingOutputNotFinite(NotFinite):
    code = "mapping_output_not_finite"


class LossNotFinite(NotFinite):
    code = "loss_not_finite"


def _describe(values: np.ndarray) -> str:
    nan = int(np.count_nonzero(np.isnan(values)))
    infinite = int(np.count_nonzero(np.isinf(values)))
    parts = [f"{nan} NaN"] if nan else []
    if infinite:
        parts.append(f"{infinite} infinite")
    return " and ".join(parts) or "non-finite"


def _bad_rows(outputs: np.ndarray) -> int:
    finite_rows = np.isfinite(outputs).all(axis=tuple(range(1, outputs.ndim)))
    return int(np.count_nonzero(~finite_rows))


def finite_teacher_outputs(outputs: np.ndarray, what: str) -> np.ndarray:
    """`outputs` unchanged if every value is finite; TeacherOutputNotFinite naming how many
    are not, and for which rows (`what`: "the training rows", "the transfer rows from ds_..."),
    otherwise."""
    if outputs.dtype.kind != "f" or bool(np.isfinite(outputs).all()):
        return outputs
    raise TeacherOutputNotFinite(
        f"the teacher's outputs for {what} hold {_describe(outputs)} values ({_bad_rows(outputs)} "
        f"of {len(outputs)} rows); a teacher must answer finite scores for every input: check "
        "the model, and that the data is what it was trained on"
    )


def finite_mapping_outputs(outputs: np.ndarray, what: str) -> np.ndarray:
    """The same for a cross-domain mapping phi: the teacher would read its NaN or infinity."""
    if outputs.dtype.kind != "f" or bool(np.isfinite(outputs).all()):
        return outputs
    raise MappingOutputNotFinite(
        f"the cross-domain mapping's outputs for {what} hold {_describe(outputs)} values "
        f"({_bad_rows(outputs)} of {len(outputs)} rows); phi must map every input to finite "
        "values"
    )


def finite_loss(value: float, where: str, epoch: int) -> float:
    """`value` if finite; LossNotFinite saying where and in which epoch otherwise."""
    if math.isfinite(value):
        return value
    raise LossNotFinite(
        f"the {where} loss became {value} in epoch {epoch}: training diverged. Lower "
        "training.learning_rate, keep student.normalize on, or rescale inputs whose values "
        "are very large"
    )
