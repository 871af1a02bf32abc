"""Non-finite teacher outputs and losses stop a run with a typed error; nothing caches them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from app.finite_json import dumps, finite_or_null
from tests.support.engine import config, kd, method, student, training
from tests.worker.hostile import constant_onnx, poisoned_onnx
from worker.engine import (
    ArraySplit,
    DiskLogitCache,
    Splits,
    TransferRows,
    inspect_teacher,
    load_teacher,
)
from worker.engine.finite import LossNotFinite, TeacherOutputNotFinite
from worker.engine.logit_cache import teacher_logits

RNG = np.random.default_rng(0)
CONFIG = config(student(hidden_sizes=(8,)), method(4.0, 0.5), training(2), baseline=False)


def _splits(scale: float = 1.0, transfer: np.ndarray | None = None) -> Splits:
    def part(n: int) -> ArraySplit:
        return ArraySplit((RNG.random((n, 1, 8, 8)) * scale).astype(np.float32), np.arange(n) % 10)

    rows = (TransferRows("ds_far", transfer),) if transfer is not None else ()
    return Splits(part(60), part(20), part(20), rows)


@pytest.mark.parametrize("poison", [math.nan, math.inf, -math.inf])
def test_inspection_refuses_a_teacher_that_is_not_finite_on_the_probe(
    tmp_path: Path, poison: float
) -> None:
    with pytest.raises(TeacherOutputNotFinite, match="8 probe rows"):
        inspect_teacher(poisoned_onnx(tmp_path / "t.onnx", poison))
    # Finite on the probe, poisoned later: inspection cannot see it, the run does.
    assert inspect_teacher(poisoned_onnx(tmp_path / "late.onnx", poison, "past_probe"))


def test_pt2_teacher_with_nan_outputs_is_refused(tmp_path: Path) -> None:
    import torch

    class Poisoned(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, :10] * float("nan")

    example = (torch.zeros(4, 1, 8, 8),)
    program = torch.export.export(
        Poisoned(), example, dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, tmp_path / "nan.pt2")
    with pytest.raises(TeacherOutputNotFinite, match="NaN"):
        inspect_teacher(tmp_path / "nan.pt2")


def test_a_run_stops_on_teacher_outputs_for_training_or_transfer_rows(tmp_path: Path) -> None:
    late = load_teacher(poisoned_onnx(tmp_path / "late.onnx", math.nan, "past_probe"))
    with pytest.raises(TeacherOutputNotFinite, match="training rows"):
        kd(CONFIG, late, _splits())

    # Finite on inputs like the training rows; infinite on the far-away transfer rows.
    far = load_teacher(poisoned_onnx(tmp_path / "far.onnx", math.inf, "large_inputs"))
    cache = DiskLogitCache(tmp_path / "cache")
    transfer = np.full((30, 1, 8, 8), 1000.0, np.float32)
    with pytest.raises(TeacherOutputNotFinite, match="transfer rows from ds_far") as caught:
        kd(CONFIG, far, _splits(transfer=transfer), cache=cache)
    assert caught.value.code == "teacher_output_not_finite"
    assert "30 of 30 rows" in str(caught.value)
    # The clean outputs were cached; the poisoned ones never were.
    stored = [np.load(p) for p in (tmp_path / "cache").rglob("*.npy")]
    assert len(stored) == 3 and all(np.isfinite(a).all() for a in stored)
    with pytest.raises(TeacherOutputNotFinite):
        teacher_logits(far, transfer, cache)


def test_a_loss_that_overflows_stops_the_run(tmp_path: Path) -> None:
    """Finite inputs near float32's limit, unscaled: the student's logits overflow."""
    teacher = load_teacher(constant_onnx(tmp_path / "constant.onnx"))
    raw = config(student(hidden_sizes=(8,), normalize=False), method(4.0, 0.5), training(2))
    with pytest.raises(LossNotFinite, match="epoch 1") as caught:
        kd(raw, teacher, _splits(scale=3e38))
    assert caught.value.code == "loss_not_finite"
    # Standardized inside the student, the same rows train.
    assert kd(CONFIG, teacher, _splits(scale=3e38)).history[-1].loss >= 0


def test_json_never_holds_nan() -> None:
    value = {"a": math.nan, "b": [1.0, math.inf, {"c": -math.inf}], "d": (2, np.float64("nan"))}
    assert finite_or_null(value) == {"a": None, "b": [1.0, None, {"c": None}], "d": [2, None]}
    text = dumps(value)

    def refuse(token: str) -> float:
        raise AssertionError(f"{token} in {text}")

    assert json.loads(text, parse_constant=refuse)["b"] == [1.0, None, {"c": None}]
    with pytest.raises(ValueError):
        dumps({"x": object()}, default=lambda _: math.nan)
