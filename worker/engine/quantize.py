"""An int8 student beside the fp32 one, with onnxruntime's quantization: dynamic (weights int8,
activations quantized on the fly) for linear students, static with calibration on training
rows (QDQ, per-channel weights) for convolutional ones."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from worker.engine.evaluation import TEXT_INPUTS, latency_feed
from worker.engine.text.export import text_feeds

Mode = Literal["dynamic", "static"]
CALIBRATION_ROWS = 512
CALIBRATION_BATCH = 64


class QuantizationFailed(Exception):
    """The int8 student could not be built or does not run: reported, and the job goes on
    without it (so not a JobFailure)."""


@dataclass(frozen=True)
class Int8Student:
    path: Path
    mode: Mode
    bytes: int


def mode_for(architecture: str) -> Mode:
    """Static (calibrated) for convolutions over images and signals; dynamic for the rest,
    text students included (their inputs are token ids, not activations to calibrate)."""
    return "static" if architecture == "cnn" else "dynamic"


class CalibrationRows:
    """onnxruntime's CalibrationDataReader protocol (it recognises any class with get_next):
    the training rows, a batch at a time."""

    def __init__(self, rows: np.ndarray, name: str) -> None:
        self.batches = self._batches(rows, name)

    @staticmethod
    def _batches(rows: np.ndarray, name: str) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(rows), CALIBRATION_BATCH):
            yield {name: np.ascontiguousarray(rows[start : start + CALIBRATION_BATCH])}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def quantize_student(fp32: Path, out: Path, mode: Mode, calibration: np.ndarray) -> Int8Student:
    """Write the int8 model and check that onnxruntime loads and runs it."""
    import onnxruntime as ort
    from onnxruntime.quantization import (
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = out.with_name(out.stem + ".prepared.onnx")
    try:
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        if mode == "dynamic":
            quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8)
        else:
            rows = np.asarray(calibration[:CALIBRATION_ROWS], dtype=np.float32)
            quantize_static(
                str(prepared),
                str(out),
                CalibrationRows(rows, "input"),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
            )
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        shape = tuple(d if isinstance(d, int) else 8 for d in session.get_inputs()[0].shape[1:])
        session.run(None, latency_feed(session, shape, 2))
    except Exception as exc:
        out.unlink(missing_ok=True)
        raise QuantizationFailed(f"{type(exc).__name__}: {str(exc)[:300]}") from exc
    finally:
        prepared.unlink(missing_ok=True)
    return Int8Student(path=out, mode=mode, bytes=out.stat().st_size)


def onnx_logits(path: Path, x: np.ndarray, batch: int = 1024) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    text = all(n in TEXT_INPUTS for n in names)

    def feed(rows: np.ndarray) -> dict[str, np.ndarray]:
        if text:
            return text_feeds(rows, names)
        return {names[0]: np.ascontiguousarray(rows, dtype=np.float32)}

    parts = [session.run(None, feed(x[i : i + batch]))[0] for i in range(0, len(x), batch)]
    values: np.ndarray = np.concatenate(parts)
    return values
