"""`python -m worker.inspect_teacher PATH`: inspect an uploaded teacher in its own process.

Prints one JSON line: {"ok": true, "teacher": {...}} or {"ok": false, "error": "..."}."""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

CPU_SECONDS = 60


def main(argv: list[str]) -> int:
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))
    import torch

    torch.set_num_threads(1)
    from worker.engine.teachers import TeacherRejected, inspect_teacher

    try:
        report = {"ok": True, "teacher": inspect_teacher(Path(argv[1]))}
    except TeacherRejected as exc:
        report = {"ok": False, "error": str(exc)}
    print(json.dumps(report, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
