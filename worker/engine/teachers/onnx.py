"""ONNX teachers, run with onnxruntime. Protobuf parsing runs no code from the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from worker.engine.teacher_runtime import Placement, row_activation_bytes
from worker.engine.teachers.base import (
    DEFAULT_BATCH_ROWS,
    EXPORT_ADVICE,
    OutputKind,
    TeacherRejected,
    looks_like_probabilities,
    probabilities_to_logits,
    run_in_chunks,
)

PROBE_ROWS = 8
MAX_HINT_CANDIDATES = 200
FLOAT = 1  # onnx.TensorProto.FLOAT: hints regress onto float tensors only


def providers(placement: Placement) -> list[Any]:
    """onnxruntime's CUDA provider on a GPU placement where it is installed (onnxruntime-gpu),
    its memory arena bounded by the placement's limit; the CPU provider always, after it."""
    import onnxruntime as ort

    chosen: list[Any] = []
    if placement.device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        options = {
            "gpu_mem_limit": str(placement.memory_bytes),
            "arena_extend_strategy": "kSameAsRequested",
        }
        chosen.append(("CUDAExecutionProvider", options))
    return [*chosen, "CPUExecutionProvider"]


def session_options(placement: Placement) -> Any:
    """The placement's threads for the operators; one for running independent branches."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = placement.threads
    options.inter_op_num_threads = 1
    return options


def ran_on(session: Any) -> str:
    """The device the session's first provider runs on."""
    return "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"


def _as_matrix(value: Any) -> np.ndarray | None:
    """A float (N, C) array from a tensor output or a ZipMap (list of {class: prob})."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        keys = sorted(value[0])
        return np.array([[row[k] for k in keys] for row in value], dtype=np.float32)
    array = np.asarray(value)
    if array.ndim == 2 and np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32)
    return None


def _checked_model(path: Path) -> Any:
    """The ONNX model in one self-contained file, checked by onnx's checker."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise TeacherRejected(
            f"the file is not a valid ONNX or .pt2 model (it may be truncated); {EXPORT_ADVICE}"
        ) from exc
    if any(
        t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data) > 0
        for t in model.graph.initializer
    ):
        raise TeacherRejected(
            "the ONNX model keeps its weights in external data files, which an upload cannot "
            "carry; export one self-contained file (torch.onnx.export(..., "
            "external_data=False))"
        )
    if not model.graph.node:
        raise TeacherRejected(f"the file is not a valid ONNX model (no graph); {EXPORT_ADVICE}")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise TeacherRejected(f"the ONNX model is invalid: {str(exc)[:300]}") from exc
    return model


def _teacher_input(model: Any) -> tuple[str, tuple[int, ...], int | None]:
    """The one float32 input: its name, its shape after the batch, and a batch size the model
    fixes (None when the batch dimension is dynamic)."""
    import onnx

    init_names = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init_names]
    if len(inputs) != 1:
        raise TeacherRejected(
            f"the ONNX model takes {len(inputs)} inputs; a teacher takes exactly one tensor"
        )
    tensor_type = inputs[0].type.tensor_type
    if tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise TeacherRejected(
            f"the ONNX model's input {inputs[0].name!r} is not float32; export it with a "
            "float32 input"
        )
    dims = list(tensor_type.shape.dim)
    if len(dims) < 2:
        raise TeacherRejected(
            f"the ONNX model's input {inputs[0].name!r} has rank {len(dims)}; expected a "
            "batch dimension followed by the features"
        )
    if not all(d.HasField("dim_value") and d.dim_value > 0 for d in dims[1:]):
        shown = [d.dim_value if d.HasField("dim_value") else d.dim_param or "?" for d in dims]
        raise TeacherRejected(
            f"the ONNX model's input shape {shown} has a dynamic dimension after the batch; "
            "only dimension 0 (the batch) may be dynamic"
        )
    batch = dims[0]
    fixed_batch = int(batch.dim_value) if batch.HasField("dim_value") else None
    return inputs[0].name, tuple(int(d.dim_value) for d in dims[1:]), fixed_batch


def _weight_count(model: Any) -> int:
    """Weights only: exporters add small integer initializers (shapes) that are not
    parameters."""
    import onnx

    floating = {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.BFLOAT16,
    }
    return int(
        sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type in floating)
    )


def _per_row_tensors(model: Any, fixed_batch: int | None) -> list[tuple[str, int, int]]:
    """Every intermediate tensor whose first dimension is the batch (weights are not), with
    its element type and the bytes one row of it takes (0 where a dimension is unknown), from
    onnx's shape inference: FitNets hint candidates (docs/methods.md §5), and the estimate of
    a row's activations that sizes the teacher's batches."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        return []
    outputs = {o.name for o in inferred.graph.output}
    found = []
    for value in inferred.graph.value_info:
        tensor = value.type.tensor_type
        dims = tensor.shape.dim
        per_row = len(dims) >= 2 and (
            dims[0].HasField("dim_param")
            or (fixed_batch is not None and dims[0].dim_value == fixed_batch)
        )
        if value.name in outputs or not per_row:
            continue
        known = all(d.HasField("dim_value") for d in dims[1:])
        size = int(np.prod([d.dim_value for d in dims[1:]])) if known else 0
        itemsize = _itemsize(tensor.elem_type)
        found.append((value.name, int(tensor.elem_type), size * itemsize))
    return found


def _itemsize(elem_type: int) -> int:
    import onnx

    try:
        return int(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).itemsize)
    except (KeyError, TypeError, ValueError):
        return 4


class OnnxTeacher:
    format = "onnx"
    fingerprint: str | None = None

    def __init__(self, path: Path, placement: Placement | None = None) -> None:
        import onnxruntime as ort

        model = _checked_model(path)
        self.input_name, self.input_shape, self.fixed_batch = _teacher_input(model)
        self.parameters = _weight_count(model)
        self.placement = placement or Placement()
        try:
            self.session = ort.InferenceSession(
                model.SerializeToString(),
                session_options(self.placement),
                providers=providers(self.placement),
            )
        except Exception as exc:
            raise TeacherRejected(f"onnxruntime cannot run the model: {str(exc)[:300]}") from exc
        self.device = ran_on(self.session)
        self._model = model
        self._hint_sessions: dict[str, Any] = {}
        self._choose_output()
        per_row = _per_row_tensors(model, self.fixed_batch)
        self.details["hint_candidates"] = [
            name for name, elem_type, _ in per_row if elem_type == FLOAT
        ][:MAX_HINT_CANDIDATES]
        input_bytes = 4 * int(np.prod(self.input_shape))
        self.row_activation_bytes = row_activation_bytes([b for *_, b in per_row], input_bytes)

    def _choose_output(self) -> None:
        probe = np.random.default_rng(0).standard_normal((PROBE_ROWS, *self.input_shape))
        probe = probe.astype(np.float32)
        outputs = self.session.get_outputs()
        names = [o.name for o in outputs]
        try:
            values = run_in_chunks_raw(self.session, self.input_name, probe, self.fixed_batch)
        except Exception as exc:
            raise TeacherRejected(
                f"the ONNX model fails on an input of shape {[PROBE_ROWS, *self.input_shape]}: "
                f"{str(exc)[:300]}"
            ) from exc
        found = {o.name: o.type for o in outputs}
        candidates: list[tuple[int, str, np.ndarray, bool]] = []
        for name, value in zip(names, values, strict=True):
            matrix = _as_matrix(value)
            if matrix is None or matrix.shape[0] != PROBE_ROWS or matrix.shape[1] < 2:
                continue
            zipmap = isinstance(value, list)
            lowered = name.lower()
            rank = 0 if "logit" in lowered else 1 if "prob" in lowered else 2
            candidates.append((rank, name, matrix, zipmap))
        if not candidates:
            raise TeacherRejected(
                "the ONNX model has no output of class scores shaped [batch, classes]; found "
                + ", ".join(f"{n}: {t}" for n, t in found.items())
            )
        _, name, matrix, zipmap = min(candidates, key=lambda c: c[0])
        self.output_name = name
        self._output_index = names.index(name)
        self.num_classes = int(matrix.shape[1])
        self.output_kind: OutputKind = (
            "probabilities" if zipmap or looks_like_probabilities(matrix) else "logits"
        )
        self.details = {"input_name": self.input_name, "outputs_found": found}

    def hint(self, x: np.ndarray, name: str, batch_size: int | None = None) -> np.ndarray:
        """The teacher's intermediate tensor `name` for x, flattened per row."""
        import onnx
        import onnxruntime as ort

        if name not in self._hint_sessions:
            inferred = onnx.shape_inference.infer_shapes(self._model)
            found = [v for v in inferred.graph.value_info if v.name == name]
            if not found:
                raise TeacherRejected(f"the teacher has no intermediate tensor {name!r}")
            inferred.graph.output.append(found[0])
            self._hint_sessions[name] = ort.InferenceSession(
                inferred.SerializeToString(),
                session_options(self.placement),
                providers=providers(self.placement),
            )
        session = self._hint_sessions[name]

        def run(part: np.ndarray) -> np.ndarray:
            value = session.run([name], {self.input_name: part})[0]
            return np.asarray(value, dtype=np.float32).reshape(len(part), -1)

        rows = x.astype(np.float32, copy=False)
        return run_in_chunks(run, rows, batch_size or DEFAULT_BATCH_ROWS, self.fixed_batch)

    def _scores(self, part: np.ndarray) -> np.ndarray:
        value = self.session.run([self.output_name], {self.input_name: part})[0]
        matrix = _as_matrix(value)
        assert matrix is not None
        return matrix

    def logits(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        rows = x.astype(np.float32, copy=False)
        raw = run_in_chunks(self._scores, rows, batch_size or DEFAULT_BATCH_ROWS, self.fixed_batch)
        return probabilities_to_logits(raw) if self.output_kind == "probabilities" else raw


def run_in_chunks_raw(
    session: Any, input_name: str, x: np.ndarray, fixed_batch: int | None
) -> list[Any]:
    """All outputs for a small probe, in fixed-size batches if the model demands them."""
    if fixed_batch is None or fixed_batch == len(x):
        return list(session.run(None, {input_name: x}))
    per_chunk = [
        session.run(
            None,
            {
                input_name: np.concatenate(
                    [
                        x[i : i + fixed_batch],
                        np.zeros(
                            (max(0, fixed_batch - len(x[i : i + fixed_batch])), *x.shape[1:]),
                            x.dtype,
                        ),
                    ]
                )
            },
        )
        for i in range(0, len(x), fixed_batch)
    ]
    merged: list[Any] = []
    for k in range(len(per_chunk[0])):
        parts = [chunk[k] for chunk in per_chunk]
        if isinstance(parts[0], list):
            merged.append([row for part in parts for row in part][: len(x)])
        else:
            merged.append(np.concatenate([np.asarray(p) for p in parts])[: len(x)])
    return merged
