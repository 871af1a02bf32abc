"""Teachers from uploaded files: ONNX (onnxruntime) and torch.export programs (.pt2).

An upload is hostile: nothing here unpickles it or runs code it carries."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from worker.engine.finite import finite_teacher_outputs
from worker.engine.pt2 import load_pt2_program

EXPORT_ADVICE = (
    "export the model with torch.onnx.export(model, (example,), 'teacher.onnx', dynamo=True, "
    "external_data=False) or save a program with torch.export.save(torch.export.export(model, "
    "(example,)), 'teacher.pt2')"
)
OutputKind = Literal["logits", "probabilities"]


class TeacherRejected(Exception):
    """The file cannot serve as a teacher; the message says why and what to do."""


class Teacher(Protocol):
    format: str
    input_shape: tuple[int, ...]
    num_classes: int
    parameters: int
    output_name: str
    output_kind: OutputKind
    fingerprint: str | None  # sha256 of the file: keys the cache of its outputs

    def logits(self, x: np.ndarray, batch_size: int = 512) -> np.ndarray: ...


def looks_like_probabilities(rows: np.ndarray) -> bool:
    if rows.ndim != 2 or rows.size == 0 or not np.isfinite(rows).all():
        return False
    in_range = bool((rows >= -1e-6).all() and (rows <= 1 + 1e-6).all())
    return in_range and bool(np.allclose(rows.sum(axis=1), 1.0, atol=1e-3))


def probabilities_to_logits(p: np.ndarray) -> np.ndarray:
    return np.log(np.clip(p, 1e-7, 1.0)).astype(np.float32)


def run_in_chunks(fn: Any, x: np.ndarray, chunk: int, fixed_batch: int | None) -> np.ndarray:
    """Apply fn to x in chunks; a model with a fixed batch size gets padded chunks of it."""
    size = fixed_batch or chunk
    outputs = []
    for start in range(0, len(x), size):
        part = x[start : start + size]
        rows = len(part)
        if fixed_batch and rows < fixed_batch:
            pad = np.zeros((fixed_batch - rows, *part.shape[1:]), dtype=part.dtype)
            part = np.concatenate([part, pad])
        outputs.append(np.asarray(fn(part))[:rows])
    return np.concatenate(outputs).astype(np.float32)


def _zip_names(path: Path) -> list[str] | None:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return None


def sniff_format(path: Path) -> str:
    """'onnx' or 'pt2', or TeacherRejected with advice on what to upload instead."""
    with path.open("rb") as fh:
        head = fh.read(16)
    if not head:
        raise TeacherRejected("the file is empty; " + EXPORT_ADVICE)
    if head[:1] == b"\x80":
        raise TeacherRejected(
            "this file is a Python pickle (torch.save or pickle.dump); Distillery never unpickles "
            "uploads because a pickle can run code: " + EXPORT_ADVICE
        )
    if head[:4] == b"PK\x03\x04":
        names = _zip_names(path)
        if names is None:
            raise TeacherRejected("the file is a damaged zip archive; " + EXPORT_ADVICE)
        if any(n.endswith("archive_format") for n in names):
            return "pt2"
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            raise TeacherRejected(
                "this file is a TorchScript archive; TorchScript is deprecated and carries "
                "pickles, so Distillery does not load it: " + EXPORT_ADVICE
            )
        if any(n.endswith("data.pkl") for n in names):
            raise TeacherRejected(
                "this file is a pickle written by torch.save (a whole module or a state dict); "
                "Distillery never unpickles uploads, and a bare state dict has no architecture "
                "to run: " + EXPORT_ADVICE
            )
        raise TeacherRejected(
            "this zip archive is not a torch.export (.pt2) program; " + EXPORT_ADVICE
        )
    header_len = int.from_bytes(head[:8], "little")
    if head[8:9] == b"{" and 0 < header_len < 100_000_000:
        raise TeacherRejected(
            "this file is a safetensors state dict: weights without an architecture cannot run "
            "as a teacher; " + EXPORT_ADVICE
        )
    return "onnx"


def load_teacher(path: Path) -> Teacher:
    from worker.engine.logit_cache import file_fingerprint

    fmt = sniff_format(path)
    teacher: Teacher
    if fmt == "pt2":
        teacher = Pt2Teacher(path)
    else:
        from worker.engine.onnx_teacher import OnnxTeacher

        teacher = OnnxTeacher(path)
    # Identifies the teacher in the cache of its outputs.
    teacher.fingerprint = file_fingerprint(path)
    return teacher


PROBE_ROWS = 8


def inspect_teacher(path: Path) -> dict[str, Any]:
    """What the upload route records about a teacher. TeacherOutputNotFinite if its outputs
    on the probe rows (seeded standard normal inputs, as the loaders probe) are not finite."""
    teacher = load_teacher(path)
    probe = np.random.default_rng(0).standard_normal((PROBE_ROWS, *teacher.input_shape))
    finite_teacher_outputs(teacher.logits(probe.astype(np.float32)), f"{PROBE_ROWS} probe rows")
    found: dict[str, Any] = {
        "format": teacher.format,
        "input_shape": list(teacher.input_shape),
        "num_classes": teacher.num_classes,
        "parameters": teacher.parameters,
        "output_name": teacher.output_name,
        "output_kind": teacher.output_kind,
    }
    found.update(getattr(teacher, "details", {}))
    return found


def _batch_bounds(program: Any, batch: Any) -> tuple[int, int | None]:
    """The smallest and largest batch the program accepts, from its range constraints."""
    if isinstance(batch, int):
        return batch, batch
    try:
        bounds = program.range_constraints[batch.node.expr]
        lower = max(2, int(bounds.lower))
        upper = None if bounds.upper.is_infinite else int(bounds.upper)
        return lower, (upper if upper is None or upper >= lower else None)
    except Exception:
        return 2, None


class Pt2Teacher:
    """A program saved with torch.export.save, loaded without unpickling anything."""

    format = "pt2"
    fingerprint: str | None = None

    def __init__(self, path: Path) -> None:
        import torch

        program, self.module = load_pt2_program(path, TeacherRejected, EXPORT_ADVICE)
        inputs = [
            node
            for node in program.graph.nodes
            if node.op == "placeholder" and node.name in program.graph_signature.user_inputs
        ]
        if len(inputs) != 1:
            raise TeacherRejected(
                f"the program takes {len(inputs)} inputs; a teacher takes exactly one tensor"
            )
        value = inputs[0].meta.get("val")
        shape = list(getattr(value, "shape", ()))
        if len(shape) < 2:
            raise TeacherRejected(
                f"the program's input has shape {shape}; expected a batch dimension followed "
                "by the features"
            )
        rest = shape[1:]
        if not all(isinstance(d, int) for d in rest):
            raise TeacherRejected(
                f"input dimensions after the batch must be static, found {shape}; export with "
                "dynamic_shapes only on dimension 0"
            )
        if getattr(value, "dtype", None) != torch.float32:
            raise TeacherRejected(
                f"the program's input is {getattr(value, 'dtype', None)}, not float32; export "
                "it with a float32 example input"
            )
        self.input_shape = tuple(int(d) for d in rest)
        self.fixed_batch = int(shape[0]) if isinstance(shape[0], int) else None
        self.min_batch, self.max_batch = _batch_bounds(program, shape[0])
        self.parameters = sum(
            int(t.numel())
            for name, t in program.state_dict.items()
            if name in program.graph_signature.parameters
        )
        self.output_name = "output"
        self._torch = torch
        probe = np.random.default_rng(0).standard_normal((8, *self.input_shape)).astype(np.float32)
        try:
            out = self._raw(probe)
        except Exception as exc:
            raise TeacherRejected(
                f"the program fails on an input of shape {[8, *self.input_shape]}: "
                f"{type(exc).__name__}: {str(exc)[:300]}"
            ) from exc
        if out.ndim != 2 or out.shape[0] != 8 or out.shape[1] < 2:
            raise TeacherRejected(
                f"the program's output has shape {list(out.shape)}; a classifier teacher must "
                "return one row of class scores per input, shaped [batch, classes]"
            )
        self.num_classes = int(out.shape[1])
        self.output_kind: OutputKind = (
            "probabilities" if looks_like_probabilities(out) else "logits"
        )
        self.details = {
            "input_name": inputs[0].name,
            "outputs_found": {self.output_name: f"tensor(float) {list(out.shape[1:])}"},
        }

    def _forward(self, part: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.no_grad():
            # A dynamic batch dimension has a lower bound (at least 2: export specialises 0
            # and 1 away); a short chunk is padded with copies of its first row.
            rows = len(part)
            if self.fixed_batch is None and rows < self.min_batch:
                part = np.concatenate([part, np.repeat(part[:1], self.min_batch - rows, axis=0)])
            out = self.module(torch.from_numpy(np.ascontiguousarray(part)))
            if isinstance(out, (tuple, list)):
                out = out[0]
            return np.asarray(out.detach().float().cpu().numpy())[:rows]

    def _raw(self, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
        chunk = min(batch_size, self.max_batch) if self.max_batch else batch_size
        return run_in_chunks(self._forward, x.astype(np.float32), chunk, self.fixed_batch)

    def logits(self, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
        raw = self._raw(x, batch_size)
        return probabilities_to_logits(raw) if self.output_kind == "probabilities" else raw
