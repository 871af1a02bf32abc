"""A long-lived, memory-limited parser process shared by the fuzz tests."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Every input, whatever it is, must be answered within these bounds.
MAX_SECONDS = 10.0
MAX_TRACED_MB = 96.0
MAX_RSS_GROWTH_MB = 192.0


class ParserProcess:
    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="fuzz-"))
        self.count = 0
        self.proc = self._start()

    def _start(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.fuzz.parser_worker"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def parse(self, data: bytes, filename: str, **form: str | None) -> dict[str, Any]:
        self.count += 1
        path = self.folder / f"in-{self.count}"
        path.write_bytes(data)
        request = {"path": str(path), "filename": filename, "out_dir": str(path) + "-out", **form}
        try:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        finally:
            path.unlink(missing_ok=True)
        if not line:
            self.proc.kill()
            _, err = self.proc.communicate()
            self.proc = self._start()
            raise AssertionError(f"the parser process died on {filename!r}:\n{err[-3000:]}")
        return dict(json.loads(line))

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="session")
def parser() -> Iterator[ParserProcess]:
    process = ParserProcess()
    try:
        yield process
    finally:
        process.close()


def assert_handled(verdict: dict[str, Any], what: str) -> None:
    """Accepted or refused with a typed error naming a request field, within the bounds."""
    assert verdict["outcome"] in ("accepted", "rejected"), (
        f"{what}: {verdict.get('traceback', verdict)}"
    )
    if verdict["outcome"] == "rejected":
        assert verdict["field"] in ("file", "label_column", "image_size", "image_mode"), verdict
        assert verdict["message"], verdict
    assert verdict["seconds"] < MAX_SECONDS, f"{what}: took {verdict['seconds']:.1f} s"
    assert verdict["traced_peak_mb"] < MAX_TRACED_MB, f"{what}: {verdict}"
    assert verdict["rss_growth_mb"] < MAX_RSS_GROWTH_MB, f"{what}: {verdict}"
