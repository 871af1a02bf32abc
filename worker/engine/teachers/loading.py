"""Which format an uploaded teacher is in, and loading it as a Teacher."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from worker.engine.teacher_runtime import Placement
from worker.engine.teachers.base import EXPORT_ADVICE, Teacher, TeacherRejected


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
        from worker.engine.teachers.text import text_layout

        layout = text_layout(names)
        if layout is not None:
            return f"text-{layout}"
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


def load_teacher(path: Path, placement: Placement | None = None) -> Teacher:
    # Each format's module is imported only for its own files: torch (seconds to import) is
    # not loaded to run an ONNX teacher.
    from worker.engine.logit_cache import file_fingerprint

    fmt = sniff_format(path)
    teacher: Teacher
    if fmt == "pt2":
        from worker.engine.teachers.pt2 import Pt2Teacher

        teacher = Pt2Teacher(path, placement)
    elif fmt.startswith("text-"):
        from worker.engine.teachers.text import load_text_teacher

        teacher = load_text_teacher(path, fmt.removeprefix("text-"), placement)
    else:
        from worker.engine.teachers.onnx import OnnxTeacher

        teacher = OnnxTeacher(path, placement)
    # Identifies the teacher in the cache of its outputs.
    teacher.fingerprint = file_fingerprint(path)
    return teacher


PROBE_ROWS = 8


def inspect_teacher(path: Path) -> dict[str, Any]:
    """What the service records about an uploaded teacher. TeacherOutputNotFinite if its
    outputs on the probe rows (seeded standard normal inputs, as the loaders probe) are not
    finite."""
    import numpy as np

    from worker.engine.finite import finite_teacher_outputs

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
