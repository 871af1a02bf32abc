"""`python -m worker.inspect_teacher PATH [--memory-bytes N] [--cpu-seconds N]`: inspect an
uploaded teacher in its own confined process (limits, no network: worker/confinement.py).

Prints exactly one JSON line: {"ok": true, "teacher": {...}} or {"ok": false, "error": "...",
"code": "teacher_invalid" | "teacher_resource_limit" | "teacher_output_not_finite"}; exit code 0
either way (nonzero only if the inspector itself crashed, could not be confined, or was killed
at its limits)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from worker.confinement import ConfinementFailed, confine

CPU_SECONDS = 60
MEMORY_BYTES = 4 * 1024**3


def _inspect(path: Path, memory_bytes: int) -> dict[str, object]:
    import torch

    torch.set_num_threads(1)
    from worker.engine.errors import is_memory_error, memory_summary
    from worker.engine.finite import TeacherOutputNotFinite
    from worker.engine.teachers import TeacherRejected, inspect_teacher

    try:
        return {"ok": True, "teacher": inspect_teacher(path)}
    except TeacherOutputNotFinite as exc:
        return {"ok": False, "error": str(exc), "code": exc.code}
    except FileNotFoundError:
        return {"ok": False, "error": f"no such file: {path}", "code": "teacher_invalid"}
    except (TeacherRejected, MemoryError) as exc:
        if is_memory_error(exc):
            return {
                "ok": False,
                "code": "teacher_resource_limit",
                "error": f"the model needs more memory than the limit of "
                f"{memory_bytes / 1024**3:.1f} GiB to run on a few rows "
                f"(DISTILLERY_TEACHER_MEMORY_BYTES; {memory_summary(exc)}); upload a smaller model",
            }
        return {"ok": False, "error": str(exc), "code": "teacher_invalid"}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.inspect_teacher")
    parser.add_argument("path", type=Path)
    parser.add_argument("--memory-bytes", type=int, default=MEMORY_BYTES)
    parser.add_argument("--cpu-seconds", type=int, default=CPU_SECONDS)
    args = parser.parse_args(argv[1:])
    try:
        confine(args.memory_bytes, args.cpu_seconds, "auto", os.getppid())
    except (ConfinementFailed, OSError) as exc:
        print(f"cannot confine the inspector: {exc}", file=sys.stderr)
        return 3
    # Native libraries (onnxruntime, torch) may write to fd 1: park it on stderr so stdout
    # carries nothing but the one JSON line the caller parses.
    sys.stdout.flush()
    real_stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        line = json.dumps(_inspect(args.path, args.memory_bytes), default=str)
    finally:
        sys.stdout.flush()
        os.dup2(real_stdout, 1)
        os.close(real_stdout)
    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
