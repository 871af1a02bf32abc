"""Teacher inspection in a short-lived, confined subprocess: the API never deserialises a model.

The inspector (worker/inspect_teacher.py) runs with the teacher's memory limit, a CPU-time limit
and no network, gets a minimal environment (no database URL or other settings) and a closed
stdin, and is killed with its process group at the wall-clock timeout."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from app.errors import InvalidInput
from app.settings import get_settings

ROOT = Path(__file__).resolve().parents[1]


def _environment() -> dict[str, str]:
    """Only what Python needs: the inspector never sees the API's settings or secrets."""
    env = {
        "PATH": os.defpath,
        "LANG": "C.UTF-8",
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "MALLOC_ARENA_MAX": "2",
    }
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def _stopped(returncode: int, limited: bool, memory_bytes: int, cpu_seconds: int) -> str:
    if limited:
        return (
            f"the inspector was stopped at its limits (CPU time {cpu_seconds} s, memory "
            f"{memory_bytes / 1024**3:.1f} GiB); upload a smaller model"
        )
    return (
        "the model could not be inspected: the inspector stopped "
        f"(exit code {returncode}); the file is probably corrupt or too large"
    )


def inspect_teacher_file(
    path: Path,
    timeout_seconds: float,
    memory_bytes: int | None = None,
    cpu_seconds: int | None = None,
) -> dict[str, Any]:
    """Run `python -m worker.inspect_teacher` on the file, confined; return what it found.

    Limits default to the teacher_* settings. Raises InvalidInput (field `file`) with the
    inspector's user-facing reason: code teacher_invalid, teacher_resource_limit or
    teacher_output_not_finite."""
    settings = get_settings()
    memory_bytes = memory_bytes or settings.teacher_memory_bytes
    cpu_seconds = cpu_seconds or min(settings.teacher_cpu_seconds, math.ceil(timeout_seconds))
    command = [
        sys.executable,
        "-m",
        "worker.inspect_teacher",
        str(path.resolve()),
        f"--memory-bytes={memory_bytes}",
        f"--cpu-seconds={cpu_seconds}",
    ]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout_seconds,
            env=_environment(),
            cwd=ROOT,
            check=False,
            start_new_session=True,
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
        stderr = done.stderr.decode(errors="replace")[-4000:]
        out_of_memory = any(word in stderr for word in ("MemoryError", "failed to map segment"))
        limited = done.returncode in (-signal.SIGXCPU, -signal.SIGKILL) or out_of_memory
        raise InvalidInput(
            _stopped(done.returncode, limited, memory_bytes, cpu_seconds),
            field="file",
            code="teacher_resource_limit" if limited else "teacher_invalid",
        )
    if not report.get("ok"):
        code = report.get("code")
        known = code in ("teacher_resource_limit", "teacher_output_not_finite")
        raise InvalidInput(
            str(report.get("error")), field="file", code=str(code) if known else "teacher_invalid"
        )
    teacher: dict[str, Any] = report["teacher"]
    return teacher
