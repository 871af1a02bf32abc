"""`python -m worker.inspect_teacher PATH`: inspect an uploaded teacher in its own process.

Prints exactly one JSON line: {"ok": true, "teacher": {...}} or {"ok": false, "error": "..."};
exit code 0 either way (nonzero only if the inspector itself crashed or hit its limits)."""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path

CPU_SECONDS = 60


def _limit_cpu(seconds: int) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        seconds = min(seconds, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (seconds, hard))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m worker.inspect_teacher PATH", file=sys.stderr)
        return 2
    _limit_cpu(CPU_SECONDS)
    # Native libraries (onnxruntime, torch) may write to fd 1: park it on stderr so stdout
    # carries nothing but the one JSON line the caller parses.
    sys.stdout.flush()
    real_stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        import torch

        torch.set_num_threads(1)
        from worker.engine.teachers import TeacherRejected, inspect_teacher

        try:
            report = {"ok": True, "teacher": inspect_teacher(Path(argv[1]))}
        except TeacherRejected as exc:
            report = {"ok": False, "error": str(exc)}
        except FileNotFoundError:
            report = {"ok": False, "error": f"no such file: {argv[1]}"}
        line = json.dumps(report, default=str)
    finally:
        sys.stdout.flush()
        os.dup2(real_stdout, 1)
        os.close(real_stdout)
    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
