"""Inspecting an uploaded teacher, on a worker: the file runs in a short-lived, confined
subprocess (worker/inspect_teacher.py) and what it finds lands on the teacher's row.

The inspector runs with the teacher's memory limit, a CPU-time limit and no network, gets a
minimal environment (no database URL or other settings) and a closed stdin, and is killed
with its process group at the wall-clock timeout. The worker process that calls it never
loads the model itself (nor torch: the inspection pool stays light)."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import update

from app.db import session_scope
from app.models import Blob, Teacher, utcnow
from app.settings import Settings, get_settings
from app.storage import cached_blob
from worker.confinement import minimal_environment

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger(__name__)


REFUSAL_CODES = ("teacher_invalid", "teacher_resource_limit", "teacher_output_not_finite")


@dataclass(frozen=True)
class Refused(Exception):
    """The file cannot serve as a teacher; `code` is teacher_invalid, teacher_resource_limit
    or teacher_output_not_finite."""

    code: str
    message: str


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


def _report(done: subprocess.CompletedProcess[bytes]) -> dict[str, Any] | None:
    lines = [line for line in done.stdout.decode(errors="replace").splitlines() if line.strip()]
    try:
        found = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        return None
    return found if isinstance(found, dict) else None


def inspect_file(path: Path, settings: Settings) -> dict[str, Any]:
    """Run `python -m worker.inspect_teacher` on the file, confined; return what it found,
    or raise Refused with the inspector's reason for the user."""
    timeout = settings.inspect_timeout_seconds
    memory_bytes = settings.teacher_memory_bytes
    cpu_seconds = min(settings.teacher_cpu_seconds, math.ceil(timeout))
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
            timeout=timeout,
            env=minimal_environment("1", os.environ.get("PYTHONPATH")),
            cwd=ROOT,
            check=False,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired as exc:
        raise Refused(
            "teacher_invalid",
            f"inspecting the model took longer than {timeout:.0f} s; upload a smaller model or "
            "raise DISTILLERY_INSPECT_TIMEOUT_SECONDS",
        ) from exc
    report = _report(done)
    if done.returncode != 0 or report is None:
        stderr = done.stderr.decode(errors="replace")[-4000:]
        out_of_memory = any(word in stderr for word in ("MemoryError", "failed to map segment"))
        limited = done.returncode in (-signal.SIGXCPU, -signal.SIGKILL) or out_of_memory
        code = "teacher_resource_limit" if limited else "teacher_invalid"
        raise Refused(code, _stopped(done.returncode, limited, memory_bytes, cpu_seconds))
    if not report.get("ok"):
        code = str(report.get("code"))
        known = code if code in REFUSAL_CODES else "teacher_invalid"
        raise Refused(known, str(report.get("error")))
    teacher: dict[str, Any] = report["teacher"]
    return teacher


def _found(found: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": "ready",
        "format": str(found["format"]),
        "input_shape": [int(d) for d in found["input_shape"]],
        "num_classes": int(found["num_classes"]),
        "parameters": int(found["parameters"]),
        "output_name": str(found["output_name"]),
        "output_kind": str(found["output_kind"]),
        "inspection": found,
    }


def inspect_teacher(teacher_id: str) -> str | None:
    """Inspect one uploaded teacher and record the answer; returns the status it got (None
    when the teacher is gone or was answered already: a duplicate message)."""
    settings = get_settings()
    settings.ensure_dirs()
    with session_scope() as session:
        teacher = session.get(Teacher, teacher_id)
        if teacher is None or teacher.status != "processing":
            return None
        blob = session.get(Blob, teacher.blob_id)
        assert blob is not None
        path = cached_blob(blob, settings.resolved_cache_dir)
    try:
        values = _found(inspect_file(path, settings))
    except Refused as refused:
        values = {"status": "invalid", "error_code": refused.code, "error_message": refused.message}
    with session_scope() as session:
        session.execute(
            update(Teacher)
            .where(Teacher.id == teacher_id, Teacher.status == "processing")
            .values(inspected_at=utcnow(), **values)
        )
    log.info("teacher %s inspected: %s", teacher_id, values["status"])
    return str(values["status"])
