"""Teacher inspection in a short-lived subprocess: the API never deserialises a model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from app.errors import InvalidInput


def inspect_teacher_file(path: Path, timeout_seconds: float) -> dict[str, Any]:
    """Run `python -m worker.inspect_teacher` on the file; return what it found.

    Raises InvalidInput (field `file`) with the inspector's user-facing reason."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_")}
    env.update({"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})
    try:
        done = subprocess.run(
            [sys.executable, "-m", "worker.inspect_teacher", str(path)],
            capture_output=True,
            timeout=timeout_seconds,
            env=env,
            cwd=path.parent,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise InvalidInput(
            f"inspecting the model took longer than {timeout_seconds:.0f} s; "
            "upload a smaller model or raise DISTILLERY_INSPECT_TIMEOUT_SECONDS",
            field="file",
            code="teacher_invalid",
        ) from exc
    lines = [line for line in done.stdout.decode(errors="replace").splitlines() if line.strip()]
    report: dict[str, Any] | None = None
    if lines:
        try:
            report = json.loads(lines[-1])
        except json.JSONDecodeError:
            report = None
    if done.returncode != 0 or report is None:
        raise InvalidInput(
            "the model could not be inspected: the inspector stopped "
            f"(exit code {done.returncode}); the file is probably corrupt or too large",
            field="file",
            code="teacher_invalid",
        )
    if not report.get("ok"):
        raise InvalidInput(str(report.get("error")), field="file", code="teacher_invalid")
    teacher: dict[str, Any] = report["teacher"]
    return teacher
