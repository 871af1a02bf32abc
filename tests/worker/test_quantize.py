"""int8 students: dynamic for linear ones, static (calibrated) for convolutional ones; a
quantization that fails is an error of its own, which the job reports and survives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support import engine as support
from tests.support.data import digits
from tests.support.teachers import train
from worker.engine import build_student, export_onnx
from worker.engine.quantize import QuantizationFailed, mode_for, onnx_logits, quantize_student


@pytest.mark.parametrize("architecture", ["mlp", "cnn"])
def test_int8_students_run_in_onnxruntime_and_agree(tmp_path: Path, architecture: str) -> None:
    # A trained student, seeded (an untrained one's logits are near ties, and int8 rounding
    # flipped 6 to 12 % of its argmaxes depending on the initialization).
    shape, data = (1, 8, 8), digits()
    torch.manual_seed(0)
    student = build_student(support.student(architecture), shape, 10)
    train(student, data.x_train, data.y_train, epochs=5)
    fp32 = export_onnx(student, shape, tmp_path / "student.onnx", data.x_train[:64])
    mode = mode_for(architecture)
    assert mode == ("static" if architecture == "cnn" else "dynamic")
    built = quantize_student(fp32.path, tmp_path / "student.int8.onnx", mode, data.x_train[:300])
    assert built.bytes == built.path.stat().st_size < fp32.bytes
    assert not list(tmp_path.glob("*.prepared.onnx"))
    rows = data.x_test[:300]
    int8, full = onnx_logits(built.path, rows), onnx_logits(fp32.path, rows)
    assert int8.shape == full.shape == (300, 10)
    assert (full.argmax(1) == data.y_test[:300]).mean() > 0.85
    assert (int8.argmax(1) == full.argmax(1)).mean() > 0.9


def test_a_model_that_cannot_be_quantized_is_reported(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(QuantizationFailed):
        quantize_student(broken, tmp_path / "out.onnx", "dynamic", np.zeros((4, 3), np.float32))
    assert not (tmp_path / "out.onnx").exists()
