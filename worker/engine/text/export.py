"""A text student as ONNX that drops in where the teacher ran: inputs `input_ids` and
`attention_mask` (int64, [batch, sequence], both axes dynamic; `token_type_ids` too when the
teacher took it, accepted and ignored), output `logits` [batch, classes]. Checked in
onnxruntime against PyTorch at several batch sizes and lengths before it is stored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from worker.engine.export import ExportCheckFailed, OnnxExport, within_tolerance
from worker.engine.text.tokens import ids_and_mask

CHECK_BATCHES = (1, 7)


class _TextEntry(nn.Module):
    """input_ids and attention_mask (and, when the teacher took them, token_type_ids: accepted
    so that the student runs where the teacher ran, and without effect on its answer)."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if token_type_ids is not None:
            attention_mask = attention_mask + token_type_ids * 0
        rows = torch.stack([input_ids, attention_mask], 1).float()
        logits: torch.Tensor = self.student(rows)
        return logits


def _feeds(rows: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    ids, mask = ids_and_mask(rows)
    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return {name: feed[name] for name in names}


def _max_difference(
    model: nn.Module, path: Path, sample: np.ndarray, names: list[str]
) -> tuple[float, float]:
    """onnxruntime against PyTorch at batch sizes 1 and 7, at the rows' length and half it:
    the largest difference and the largest output."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = scale = 0.0
    length = sample.shape[2]
    for rows in CHECK_BATCHES:
        for cut in sorted({length, max(2, length // 2)}):
            part = sample[:rows, :, :cut]
            if len(part) < rows:
                part = np.resize(part, (rows, *part.shape[1:]))
            feed = _feeds(part, names)
            got = session.run(None, feed)[0]
            with torch.no_grad():
                want = model(*(torch.from_numpy(feed[n]) for n in names)).numpy()
            if got.shape != want.shape or not np.isfinite(got).all():
                raise ExportCheckFailed(f"ONNX output {got.shape} != PyTorch {want.shape}")
            worst = max(worst, float(np.abs(got - want).max()))
            scale = max(scale, float(np.abs(want).max()))
    return worst, scale


def export_text_onnx(
    student: nn.Module,
    path: Path,
    sample: np.ndarray,
    token_type_ids: bool = False,
    tolerance: float = 1e-4,
) -> OnnxExport:
    import onnx

    model = _TextEntry(student.eval().cpu())
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if token_type_ids else [])
    example = _feeds(sample[:4] if len(sample) >= 2 else np.concatenate([sample, sample]), names)
    path.parent.mkdir(parents=True, exist_ok=True)
    args = tuple(torch.from_numpy(example[n]) for n in names)
    if getattr(student, "architecture", "") == "transformer":
        batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
        torch.onnx.export(
            model,
            args,
            str(path),
            input_names=names,
            output_names=["logits"],
            dynamic_shapes={n: {0: batch, 1: sequence} for n in names},
            external_data=False,
            dynamo=True,
            verbose=False,
        )
    else:
        # The TorchScript exporter: it writes an LSTM as ONNX's LSTM op over a dynamic
        # sequence, where torch.export unrolls it over the example's length.
        torch.onnx.export(
            model,
            args,
            str(path),
            input_names=names,
            output_names=["logits"],
            dynamic_axes={
                **{n: {0: "batch", 1: "sequence"} for n in names},
                "logits": {0: "batch"},
            },
            opset_version=17,
            dynamo=False,
        )
    onnx.checker.check_model(onnx.load(str(path)))
    worst, scale = _max_difference(model, path, sample, names)
    if not within_tolerance(worst, scale, tolerance):
        raise ExportCheckFailed(
            f"ONNX output differs from PyTorch by {worst:.3g} on outputs up to {scale:.3g}"
        )
    proto = onnx.load(str(path))
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return OnnxExport(path=path, bytes=path.stat().st_size, max_abs_diff=worst, opset=int(opset))


def text_feeds(rows: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """onnxruntime inputs for a text model from (N, 2, L) rows."""
    return _feeds(rows, names)
