"""Distillation across domains (docs/methods.md §6, Bayazitov's thesis).

The teacher f was trained on a source domain; the student learns on a target domain; a
mapping phi carries target inputs to the source domain, and the student learns from
f(phi(x)). `MappedTeacher` is that composition behind the ordinary Teacher protocol: its
`input_shape` is the target's (so the student, its ONNX export and every shape check see
target inputs) and its `fingerprint` includes phi (so cached teacher outputs of mapped and
unmapped inputs never mix)."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from worker.engine.errors import JobFailure
from worker.engine.finite import finite_mapping_outputs
from worker.engine.teachers.base import OutputKind, Teacher

CHUNK_ROWS = 8192


class MappingRejected(JobFailure):
    """The mapping cannot be used; the message says why and what to do."""

    code = "mapping_invalid"


class Mapping(Protocol):
    """phi: target-domain rows (N, *input_shape) -> source-domain rows (N, *output_shape)."""

    kind: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    fingerprint: str

    def __call__(self, x: np.ndarray, first_row: int = 0) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...


def _print(kind: str, params: dict[str, Any]) -> str:
    return hashlib.sha256(f"{kind}:{json.dumps(params, sort_keys=True)}".encode()).hexdigest()


class IdentityMapping:
    """The target domain is read as if it were the source domain (same input shape)."""

    kind = "identity"

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.input_shape = self.output_shape = tuple(shape)
        self.fingerprint = _print(self.kind, {})

    def __call__(self, x: np.ndarray, first_row: int = 0) -> np.ndarray:
        return np.asarray(x, dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        return {"phi": self.kind}


class GaussianNoiseMapping:
    """x + N(0, sigma^2), sigma in the inputs' own units. The noise of a row depends only on
    the seed and the row's position, so the teacher's outputs are deterministic and cached:
    no per-epoch randomness reaches the teacher."""

    kind = "gaussian_noise"

    def __init__(self, shape: tuple[int, ...], sigma: float, seed: int = 0) -> None:
        if not (sigma > 0 and math.isfinite(sigma)):
            raise MappingRejected(f"sigma must be a positive number, got {sigma}")
        self.input_shape = self.output_shape = tuple(shape)
        self.sigma, self.seed = float(sigma), int(seed)
        self.fingerprint = _print(self.kind, {"sigma": self.sigma, "seed": self.seed})

    def __call__(self, x: np.ndarray, first_row: int = 0) -> np.ndarray:
        rng = np.random.default_rng([self.seed, first_row])
        x = np.asarray(x, dtype=np.float32)
        values: np.ndarray = x + self.sigma * rng.standard_normal(x.shape, dtype=np.float32)
        return values

    def describe(self) -> dict[str, Any]:
        return {"phi": self.kind, "sigma": self.sigma, "seed": self.seed}


class DilatedConvMapping:
    """A fixed depthwise convolution with dilation, zero padding, same output shape.

    `weights` is a 1-D kernel of odd length applied along every spatial axis (separable: an
    image gets the outer product); default a box kernel. (L,) rows are one-channel signals,
    (C, L) signals and (C, H, W) images are convolved per channel."""

    kind = "dilated_conv"

    def __init__(
        self,
        shape: tuple[int, ...],
        kernel_size: int = 3,
        dilation: int = 2,
        weights: list[float] | None = None,
    ) -> None:
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise MappingRejected(f"kernel_size must be odd and positive, got {kernel_size}")
        if dilation < 1:
            raise MappingRejected(f"dilation must be at least 1, got {dilation}")
        kernel = (
            np.full(kernel_size, 1.0 / kernel_size)
            if weights is None
            else np.asarray(weights, dtype=np.float64)
        )
        if kernel.shape != (kernel_size,) or not np.isfinite(kernel).all():
            raise MappingRejected(
                f"weights must be {kernel_size} finite numbers (one per kernel tap)"
            )
        if len(shape) not in (1, 2, 3):
            raise MappingRejected(
                f"a convolution maps rows shaped (L,), (C, L) or (C, H, W), not {list(shape)}"
            )
        self.input_shape = self.output_shape = tuple(shape)
        self.kernel_size, self.dilation = int(kernel_size), int(dilation)
        self.weights = [float(w) for w in kernel]
        self.fingerprint = _print(
            self.kind,
            {"kernel_size": self.kernel_size, "dilation": self.dilation, "weights": self.weights},
        )

    def __call__(self, x: np.ndarray, first_row: int = 0) -> np.ndarray:
        import torch
        from torch.nn import functional as F

        rows = torch.as_tensor(np.asarray(x, dtype=np.float32))
        n = len(rows)
        if len(self.input_shape) == 1:
            rows = rows.reshape(n, 1, -1)
        channels = rows.shape[1]
        w = torch.tensor(self.weights, dtype=torch.float32)
        pad = self.dilation * (self.kernel_size - 1) // 2
        with torch.no_grad():
            if rows.ndim == 3:
                kernel = w.reshape(1, 1, -1).repeat(channels, 1, 1)
                out = F.conv1d(rows, kernel, padding=pad, dilation=self.dilation, groups=channels)
            else:
                square = torch.outer(w, w).reshape(1, 1, self.kernel_size, self.kernel_size)
                kernel = square.repeat(channels, 1, 1, 1)
                out = F.conv2d(rows, kernel, padding=pad, dilation=self.dilation, groups=channels)
        return np.ascontiguousarray(out.reshape(n, *self.output_shape).numpy(), dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        return {
            "phi": self.kind,
            "kernel_size": self.kernel_size,
            "dilation": self.dilation,
            "weights": self.weights,
        }


def _static_shape(value: Any, what: str) -> tuple[int | None, tuple[int, ...]]:
    dims = list(value.type.tensor_type.shape.dim)
    if len(dims) < 2 or not all(d.HasField("dim_value") and d.dim_value > 0 for d in dims[1:]):
        raise MappingRejected(
            f"the mapping's {what} {value.name!r} must have a batch dimension followed by static "
            "dimensions"
        )
    batch = dims[0].dim_value if dims[0].HasField("dim_value") else None
    return batch, tuple(int(d.dim_value) for d in dims[1:])


# Rows per onnxruntime call (a model with a fixed batch size gets chunks of that size).
ONNX_CHUNK_ROWS = 1024


@dataclass(frozen=True)
class OnnxGraph:
    """What reading an uploaded mapping found: the model, checked, and its one input/output."""

    model: Any  # onnx.ModelProto
    input_name: str
    input_shape: tuple[int, ...]
    fixed_batch: int | None
    output_name: str
    produced: tuple[int, ...]


def read_onnx_mapping(path: Path) -> OnnxGraph:
    """Parse and check an uploaded mapping with onnx (nothing runs, nothing is unpickled):
    a valid model, weights in the one file, one float32 input, static row shapes."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model)
    except Exception as exc:
        raise MappingRejected(f"the mapping is not a valid ONNX model: {exc}"[:400]) from exc
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise MappingRejected("the mapping keeps weights in external files; export one file")
    weights = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    if len(inputs) != 1 or inputs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise MappingRejected("a mapping takes exactly one float32 tensor")
    fixed_batch, input_shape = _static_shape(inputs[0], "input")
    _, produced = _static_shape(model.graph.output[0], "output")
    return OnnxGraph(
        model, inputs[0].name, input_shape, fixed_batch, model.graph.output[0].name, produced
    )


class OnnxFunction:
    """A mapping's model in onnxruntime in this process: rows (N, *input_shape) in, its first
    output out as flat float32 rows (N, prod(output)), run in chunks of ONNX_CHUNK_ROWS.

    The worker never builds one itself: it runs inside the confined child of
    worker/sandbox.py (`SandboxedMapping`), which OnnxMapping is handed as its runner."""

    def __init__(self, path: Path, graph: OnnxGraph | None = None) -> None:
        import onnxruntime as ort

        graph = graph or read_onnx_mapping(path)
        self.input_name, self.output_name = graph.input_name, graph.output_name
        self.fixed_batch = graph.fixed_batch
        self.input_shape, self.output_size = graph.input_shape, math.prod(graph.produced)
        self.session = ort.InferenceSession(
            graph.model.SerializeToString(), providers=["CPUExecutionProvider"]
        )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        from worker.engine.teachers.base import run_in_chunks

        def run(part: np.ndarray) -> np.ndarray:
            out = self.session.run([self.output_name], {self.input_name: part})[0]
            return np.asarray(out, dtype=np.float32).reshape(len(part), -1)

        x = np.asarray(x, dtype=np.float32)
        if len(x) == 0:
            return np.zeros((0, self.output_size), np.float32)
        return run_in_chunks(run, x, ONNX_CHUNK_ROWS, self.fixed_batch)


# path -> a function of rows returning the model's first output as flat rows (OnnxFunction's
# contract). The worker passes one that runs the model in a confined child process.
MappingRunner = Callable[[Path], Callable[[np.ndarray], np.ndarray]]


class OnnxMapping:
    """A mapping uploaded as an ONNX model: parsed and checked with onnx here, run with
    onnxruntime by `runner`, never unpickled. Its first output, flat or shaped, is reshaped to
    the teacher's input shape.

    `runner` builds the function that runs the model; the worker (worker/plan.py) passes one
    that runs it in a confined child process (worker/sandbox.py), so a hostile or enormous
    mapping fails its own job only. Without one it runs in this process (engine use, tests)."""

    kind = "onnx"

    def __init__(
        self,
        path: Path,
        output_shape: tuple[int, ...] | None = None,
        runner: MappingRunner | None = None,
    ) -> None:
        from worker.engine.logit_cache import file_fingerprint

        graph = read_onnx_mapping(path)
        self.fixed_batch, self.input_shape = graph.fixed_batch, graph.input_shape
        self.input_name, self.output_name = graph.input_name, graph.output_name
        produced = graph.produced
        self.output_shape = tuple(output_shape) if output_shape else produced
        if math.prod(produced) != math.prod(self.output_shape):
            raise MappingRejected(
                f"the mapping outputs rows shaped {list(produced)} but the teacher takes "
                f"{list(self.output_shape)}"
            )
        self.parameters = int(sum(int(np.prod(t.dims)) for t in graph.model.graph.initializer))
        self.sha256 = file_fingerprint(path)
        self.fingerprint = _print(self.kind, {"sha256": self.sha256, "shape": self.output_shape})
        self.run: Callable[[np.ndarray], np.ndarray] = (
            runner(Path(path)) if runner is not None else OnnxFunction(Path(path), graph)
        )

    def __call__(self, x: np.ndarray, first_row: int = 0) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        flat = self.run(x)
        size = math.prod(self.output_shape)
        if flat.shape != (len(x), size):
            raise MappingRejected(
                f"the mapping answered rows shaped {list(flat.shape[1:])} for {len(x)} rows, "
                f"not {size} values per row"
            )
        return flat.reshape(len(x), *self.output_shape)

    def describe(self) -> dict[str, Any]:
        return {
            "phi": self.kind,
            "sha256": self.sha256,
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "parameters": self.parameters,
        }


class MappedTeacher:
    """f o phi: a source-domain teacher that reads target-domain inputs through a mapping."""

    def __init__(self, teacher: Teacher, mapping: Mapping) -> None:
        if tuple(mapping.output_shape) != tuple(teacher.input_shape):
            raise MappingRejected(
                f"the mapping outputs rows shaped {list(mapping.output_shape)} but the teacher "
                f"takes {list(teacher.input_shape)}"
            )
        self.teacher, self.mapping = teacher, mapping
        self.format = teacher.format
        self.input_shape = tuple(mapping.input_shape)
        self.source_input_shape = tuple(teacher.input_shape)
        self.num_classes = teacher.num_classes
        self.parameters = teacher.parameters
        self.output_name = teacher.output_name
        # teacher.logits already turns probabilities into logits.
        self.output_kind: OutputKind = "logits"
        self.fingerprint: str | None = (
            hashlib.sha256(
                f"mapped:{teacher.fingerprint}:{mapping.fingerprint}".encode()
            ).hexdigest()
            if teacher.fingerprint
            else None
        )

    def _phi(self, x: np.ndarray, start: int) -> np.ndarray:
        rows = x[start : start + CHUNK_ROWS]
        return finite_mapping_outputs(np.asarray(self.mapping(rows, start)), "the job's rows")

    def mapped(self, x: np.ndarray) -> np.ndarray:
        """phi(x), in chunks."""
        parts = [self._phi(x, start) for start in range(0, len(x), CHUNK_ROWS)]
        if not parts:
            return np.zeros((0, *self.source_input_shape), np.float32)
        return np.concatenate(parts).astype(np.float32, copy=False)

    def logits(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        outputs = [
            self.teacher.logits(self._phi(x, start), batch_size)
            for start in range(0, len(x), CHUNK_ROWS)
        ]
        if not outputs:
            return np.zeros((0, self.num_classes), np.float32)
        return np.concatenate(outputs).astype(np.float32, copy=False)

    def hint(self, x: np.ndarray, name: str, batch_size: int | None = None) -> np.ndarray:
        hint_of = getattr(self.teacher, "hint", None)
        if hint_of is None:
            raise ValueError("hints need a teacher that exposes intermediate tensors (ONNX)")
        return np.asarray(hint_of(self.mapped(x), name, batch_size))

    def describe(self) -> dict[str, Any]:
        return {
            **self.mapping.describe(),
            "target_input_shape": list(self.input_shape),
            "teacher_input_shape": list(self.source_input_shape),
        }
