"""A parser process for the fuzz tests: one input a line on stdin, one verdict a line on stdout.

It runs under an address-space limit, so an input that tries to allocate without bound dies
with MemoryError here (reported as a crash) instead of hurting the machine. For each input it
reports how long the parse took, the peak of Python and numpy allocations (tracemalloc), and
the growth of the process's peak resident memory (VmHWM, reset before each input), which also
sees what Pillow and pyarrow allocate outside Python."""

from __future__ import annotations

import json
import re
import resource
import shutil
import sys
import time
import traceback
import tracemalloc
from pathlib import Path

ADDRESS_SPACE_LIMIT = 3 * 1024**3


def _kb(field: str) -> int:
    status = Path("/proc/self/status").read_text()
    match = re.search(rf"{field}:\s+(\d+) kB", status)
    return int(match.group(1)) if match else 0


def _reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # the growth is then measured from the process's lifetime peak: stricter


def main() -> None:
    from app.datasets.parsers import DatasetRejected, parse_dataset

    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))
    tracemalloc.start()
    for line in sys.stdin:
        request = json.loads(line)
        out_dir = Path(request["out_dir"])
        _reset_peak_rss()
        tracemalloc.reset_peak()
        rss_before = _kb("VmRSS")
        traced_before = tracemalloc.get_traced_memory()[0]
        started = time.perf_counter()
        verdict: dict[str, object]
        try:
            parsed = parse_dataset(
                Path(request["path"]),
                request["filename"],
                out_dir,
                request.get("label_column"),
                request.get("image_size"),
                request.get("image_mode", "L"),
            )
            verdict = {"outcome": "accepted", "rows": parsed.rows}
        except DatasetRejected as exc:
            verdict = {"outcome": "rejected", "field": exc.field, "message": exc.message}
        except BaseException:  # noqa: B036 - anything else is the bug being hunted
            verdict = {"outcome": "crash", "traceback": traceback.format_exc()}
        verdict["seconds"] = time.perf_counter() - started
        verdict["traced_peak_mb"] = (tracemalloc.get_traced_memory()[1] - traced_before) / 2**20
        verdict["rss_growth_mb"] = max(0, _kb("VmHWM") - rss_before) / 1024
        shutil.rmtree(out_dir, ignore_errors=True)
        print(json.dumps(verdict), flush=True)


if __name__ == "__main__":
    main()
