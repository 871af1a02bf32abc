"""Teachers saved with torch.export.save (.pt2), loaded without running any pickle they carry.

torch.export.load falls back to torch.load(weights_only=False) and pickle.loads for some
payloads; a hostile archive would run code there. So the archive's payload configs are checked
first, and the load runs with unpickling forced to weights_only / refused outright."""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from worker.engine.teacher_runtime import Placement, row_activation_bytes, torch_device
from worker.engine.teachers.base import (
    DEFAULT_BATCH_ROWS,
    EXPORT_ADVICE,
    OutputKind,
    TeacherRejected,
    looks_like_probabilities,
    probabilities_to_logits,
    run_in_chunks,
)
from worker.engine.teachers.pt2_audit import (
    UnsafeProgram,
    audit_module,
    audit_program,
    check_name,
)

MAX_CONFIG_BYTES = 16 * 1024 * 1024
MAX_PROGRAM_BYTES = 256 * 1024 * 1024


def _refuse(*_: Any, **__: Any) -> Any:
    raise pickle.UnpicklingError("unpickling is disabled for uploaded models")


@contextmanager
def no_unpickling() -> Iterator[None]:
    import torch

    original_load = torch.load
    original_loads = pickle.loads
    original_obj = getattr(torch._C, "_pickle_load_obj", None)

    def weights_only_load(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        return original_load(*args, **kwargs)

    torch.load = weights_only_load
    pickle.loads = _refuse
    if original_obj is not None:
        torch._C._pickle_load_obj = _refuse
    try:
        yield
    finally:
        torch.load = original_load
        pickle.loads = original_loads
        if original_obj is not None:
            torch._C._pickle_load_obj = original_obj


def check_archive(path: Path, rejected: type[Exception], advice: str) -> None:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise rejected(f"the .pt2 file is not a readable zip archive; {advice}") from exc
    with archive:
        names = archive.namelist()
        formats = [n for n in names if n.endswith("archive_format")]
        if len(formats) != 1 or archive.read(formats[0]).strip() != b"pt2":
            raise rejected(f"the file is not a torch.export .pt2 archive; {advice}")
        prefix = formats[0][: -len("archive_format")]
        programs = [n for n in names if n.startswith(prefix + "models/") and n.endswith(".json")]
        if not programs:
            raise rejected(f"the .pt2 archive holds no exported program; {advice}")
        for name in programs:
            _check_program(archive, name, rejected, advice)
        for name in names:
            rel = name[len(prefix) :]
            if rel.endswith(".pkl") or (
                rel.startswith(("data/weights/", "data/constants/")) and rel.endswith(".pt")
            ):
                raise rejected(
                    f"the .pt2 archive carries a pickle ({rel}); Distillery never unpickles "
                    f"uploads: save it again with a current torch.export.save; {advice}"
                )
            if rel.startswith(("data/weights/", "data/constants/")) and rel.endswith(
                "_config.json"
            ):
                _check_payload_config(archive, name, rel, rejected, advice)


def _check_program(
    archive: zipfile.ZipFile, name: str, rejected: type[Exception], advice: str
) -> None:
    if archive.getinfo(name).file_size > MAX_PROGRAM_BYTES:
        raise rejected("the .pt2 archive's program is implausibly large")
    try:
        audit_program(json.loads(archive.read(name)))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        reason = str(exc) if isinstance(exc, UnsafeProgram) else "it is not valid JSON"
        raise rejected(f"the .pt2 program cannot be loaded safely: {reason}; {advice}") from exc


def _check_payload_config(
    archive: zipfile.ZipFile, name: str, rel: str, rejected: type[Exception], advice: str
) -> None:
    """A weights or constants config: every payload a plain tensor, none a pickle."""
    if archive.getinfo(name).file_size > MAX_CONFIG_BYTES:
        raise rejected(f"the .pt2 archive's {rel} is implausibly large")
    try:
        config = json.loads(archive.read(name))
    except (ValueError, UnicodeDecodeError) as exc:
        raise rejected(f"the .pt2 archive's {rel} is not valid JSON") from exc
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise rejected(f"the .pt2 archive's {rel} is malformed; {advice}")
    for key, entry in entries.items():
        try:
            # FQNs become attribute paths in generated code (see pt2_audit).
            check_name(key, "the weight name")
            check_name(str(entry.get("path_name", "")), "the payload name")
        except (UnsafeProgram, AttributeError) as exc:
            raise rejected(f"the .pt2 archive's {rel} is malformed: {exc}; {advice}") from exc
        if not isinstance(entry, dict) or entry.get("use_pickle"):
            raise rejected(
                f"the .pt2 archive stores {key!r} as a pickle; Distillery never "
                f"unpickles uploads; {advice}"
            )
        path_name = str(entry.get("path_name", ""))
        if rel.startswith("data/constants/") and not path_name.startswith("tensor_"):
            raise rejected(
                f"the .pt2 archive holds a non-tensor constant {key!r} "
                "(a script or opaque object), which would need unpickling; "
                f"{advice}"
            )


def load_pt2_program(path: Path, rejected: type[Exception], advice: str) -> tuple[Any, Any]:
    """The exported program and its runnable module, audited before anything is called."""
    import torch

    check_archive(path, rejected, advice)
    try:
        with no_unpickling():
            program = torch.export.load(str(path))
            module = program.module()
        audit_module(module)
        return program, module
    except rejected:
        raise
    except UnsafeProgram as exc:
        raise rejected(f"the .pt2 program cannot be run safely: {exc}; {advice}") from exc
    except Exception as exc:
        raise rejected(
            f"the .pt2 program could not be loaded ({type(exc).__name__}: {str(exc)[:300]}); "
            f"{advice}"
        ) from exc


def _moved(program: Any, device: str) -> tuple[Any, Any]:
    """The program and its module with every weight and constant on `device` (a module's
    .to() leaves lifted constants behind), audited again."""
    from torch.export.passes import move_to_device_pass

    moved = move_to_device_pass(program, device)
    module = moved.module()
    audit_module(module)
    return moved, module


def _per_row_bytes(program: Any, batch: Any) -> list[int]:
    """Bytes one row takes in each tensor the program computes whose first dimension is the
    batch, from the shapes torch.export recorded."""
    found = []
    for node in program.graph.nodes:
        value = node.meta.get("val")
        shape = list(getattr(value, "shape", ()))
        if len(shape) < 2 or not (shape[0] is batch or str(shape[0]) == str(batch)):
            continue
        if all(isinstance(d, int) for d in shape[1:]):
            size = getattr(value, "element_size", lambda: 4)()
            found.append(int(np.prod(shape[1:])) * int(size))
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


def _program_input(program: Any, float32: Any) -> tuple[Any, list[Any]]:
    """The program's one user input, float32 with static dimensions after the batch: its
    graph node and its shape."""
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
    if not all(isinstance(d, int) for d in shape[1:]):
        raise TeacherRejected(
            f"input dimensions after the batch must be static, found {shape}; export with "
            "dynamic_shapes only on dimension 0"
        )
    if getattr(value, "dtype", None) != float32:
        raise TeacherRejected(
            f"the program's input is {getattr(value, 'dtype', None)}, not float32; export "
            "it with a float32 example input"
        )
    return inputs[0], shape


class Pt2Teacher:
    """A program saved with torch.export.save, loaded without unpickling anything."""

    format = "pt2"
    fingerprint: str | None = None

    def __init__(self, path: Path, placement: Placement | None = None) -> None:
        import torch

        program, self.module = load_pt2_program(path, TeacherRejected, EXPORT_ADVICE)
        self.device = torch_device(placement or Placement())
        if self.device != "cpu":
            program, self.module = _moved(program, self.device)
        input_node, shape = _program_input(program, torch.float32)
        self.input_shape = tuple(int(d) for d in shape[1:])
        self.fixed_batch = int(shape[0]) if isinstance(shape[0], int) else None
        self.min_batch, self.max_batch = _batch_bounds(program, shape[0])
        self.parameters = sum(
            int(t.numel())
            for name, t in program.state_dict.items()
            if name in program.graph_signature.parameters
        )
        self.output_name = "output"
        self.row_activation_bytes = row_activation_bytes(
            _per_row_bytes(program, shape[0]), 4 * int(np.prod(self.input_shape))
        )
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
            "input_name": input_node.name,
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
            out = self.module(torch.from_numpy(np.ascontiguousarray(part)).to(self.device))
            if isinstance(out, (tuple, list)):
                out = out[0]
            return np.asarray(out.detach().float().cpu().numpy())[:rows]

    def _raw(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        rows = batch_size or DEFAULT_BATCH_ROWS
        chunk = min(rows, self.max_batch) if self.max_batch else rows
        rows_in = x.astype(np.float32, copy=False)
        return run_in_chunks(self._forward, rows_in, chunk, self.fixed_batch)

    def logits(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        raw = self._raw(x, batch_size)
        return probabilities_to_logits(raw) if self.output_kind == "probabilities" else raw
