"""ONNX and safetensors export. Every ONNX file is run in onnxruntime against PyTorch."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from worker.engine.errors import JobFailure

log = logging.getLogger(__name__)
# What the TorchScript exporter writes (torch.export picks its own, 18 in torch 2.13).
OPSET = 18


class ExportCheckFailed(JobFailure):
    """The exported ONNX does not reproduce the PyTorch student."""

    code = "export_check_failed"


@dataclass(frozen=True)
class OnnxExport:
    path: Path
    bytes: int
    max_abs_diff: float
    opset: int


class _Entry(nn.Module):
    """Names the input `x` so the dynamic batch dimension can be declared by name."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)  # type: ignore[no-any-return]


def export_onnx(
    student: nn.Module,
    input_shape: tuple[int, ...],
    path: Path,
    sample: np.ndarray | None = None,
    tolerance: float = 1e-4,
) -> OnnxExport:
    import onnx

    model = _Entry(student.eval().cpu()).eval()
    rng = np.random.default_rng(0)
    if sample is None or len(sample) == 0:
        sample = rng.standard_normal((33, *input_shape)).astype(np.float32)
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    example = torch.from_numpy(sample[: max(2, min(4, len(sample)))].copy())
    if len(example) < 2:
        example = torch.cat([example, example])
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_onnx(model, example, path)
    sidecars = [p for p in path.parent.iterdir() if p.name.startswith(path.name + ".")]
    if sidecars:
        raise ExportCheckFailed(f"export wrote external data files: {sidecars}")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    if batch_dim.HasField("dim_value"):
        raise ExportCheckFailed("the exported batch dimension is fixed, not dynamic")

    worst, scale = _max_difference(model, path, sample, input_shape, rng)
    if not within_tolerance(worst, scale, tolerance):
        raise ExportCheckFailed(
            f"ONNX output differs from PyTorch by {worst:.3g} on outputs up to {scale:.3g} "
            f"(tolerance {tolerance:g} of max(1, that))"
        )
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return OnnxExport(path=path, bytes=path.stat().st_size, max_abs_diff=worst, opset=int(opset))


def _write_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """The TorchScript exporter first: it writes an mlp or cnn student in tens of
    milliseconds, where torch.export takes about two seconds even in a warm process (the
    parity check below holds either way). torch.export for what TorchScript cannot trace."""
    names: dict[str, Any] = {"input_names": ["input"], "output_names": ["logits"]}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated in 2.13
            torch.onnx.export(
                model,
                (example,),
                str(path),
                **names,
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )
        return
    except Exception as exc:  # an op TorchScript cannot export: torch.export instead
        log.info("TorchScript export failed (%s); exporting with torch.export", exc)
        path.unlink(missing_ok=True)
    torch.onnx.export(
        model,
        (example,),
        str(path),
        **names,
        dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
        external_data=False,
        dynamo=True,
        verbose=False,
    )


def _max_difference(
    model: nn.Module,
    path: Path,
    sample: np.ndarray,
    input_shape: tuple[int, ...],
    rng: np.random.Generator,
) -> tuple[float, float]:
    """The largest difference of ONNX Runtime's outputs from PyTorch's, on one row and on a
    wide batch: two distinct batch sizes, so that a batch dimension baked in shows up; and
    the largest output, the scale the difference is judged against."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = scale = 0.0
    wide = sample[:64]
    if len(wide) < 33:
        extra = rng.standard_normal((33 - len(wide), *input_shape)).astype(np.float32)
        wide = np.concatenate([wide, extra])
    for rows in (sample[:1], wide):
        got = session.run(None, {"input": rows})[0]
        with torch.no_grad():
            want = model(torch.from_numpy(rows.copy())).numpy()
        if got.shape != want.shape:
            raise ExportCheckFailed(f"ONNX output shape {got.shape} != PyTorch {want.shape}")
        if not (np.isfinite(got).all() and np.isfinite(want).all()):
            # NaN compares as "no difference": a student that outputs it must not pass.
            raise ExportCheckFailed("the student's outputs on the check rows are not finite")
        worst = max(worst, float(np.abs(got - want).max()))
        scale = max(scale, float(np.abs(want).max()))
    return worst, scale


def within_tolerance(worst: float, scale: float, tolerance: float) -> bool:
    """float32 keeps about 7 digits: outputs of any size agree to `tolerance` of their scale
    (absolute up to 1). A student distilled at a high temperature can answer logits in the
    hundreds, where two correct runtimes differ by more than 1e-4 absolute."""
    return worst <= tolerance * max(1.0, scale)


def save_safetensors(student: nn.Module, path: Path) -> int:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in student.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"format": "pt", "producer": "distillery"})
    return path.stat().st_size
