"""A teacher's process keeps its batches' memory between batches (worker/heap.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Batch after batch of 96 blocks of 1 MiB, each written (faulted in), then all freed: the
# pattern of a model's activations. Prints the page faults the last three batches took.
BATCHES = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    from worker.heap import keep_batch_memory

    if sys.argv[1] == "kept":
        assert keep_batch_memory(256 * 1024**2)

    def batch():
        blocks = [np.ones(256 * 1024, np.float32) for _ in range(96)]
        return sum(float(b[-1]) for b in blocks)

    batch()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        batch()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", BATCHES, mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(done.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_kept_batch_memory_is_not_faulted_in_again_batch_after_batch() -> None:
    # 3 batches of 96 MiB are 73,728 pages: glibc's own thresholds give most of each batch
    # back to the kernel and fault it in again; kept, a batch reuses the last one's pages.
    default, kept = _faults("default"), _faults("kept")
    assert default > 50_000, default
    assert kept < 5_000, kept
