"""How a teacher runs: on which device, with how many threads, in batches of how many rows.

Chosen, not fixed: the batch from the model's size (its parameters and an estimate of the
activations one row needs) and the memory the teacher's process may use
(DISTILLERY_TEACHER_MEMORY_BYTES); the threads from the cores the job has
(DISTILLERY_JOB_THREADS, worker_concurrency): a job waits while its teacher labels, so the
teacher gets the job's cores. Pure functions of numbers, but for torch_device (which imports
torch when called, in a process that runs a torch teacher)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Device = Literal["cpu", "cuda"]

# What a teacher's process holds before any model: the interpreter, numpy and the runtime
# (onnxruntime, or torch and transformers), about 1 GiB of address space.
RUNTIME_BYTES = 1024**3
# Copies of the weights a process holds: the file's, the runtime's (optimized, pre-packed),
# and one in flight while the runtime builds it.
WEIGHT_COPIES = 3
# Request buffers alive at once: the bytes read from the pipe and the rows of the reply.
REQUEST_BUFFERS = 2
# The share of what is left that one batch's activations may take: allocators round up and
# keep freed blocks, and the estimate of a row's activations is rough.
ACTIVATION_SHARE = 0.5
# A tensor is alive while the next one is computed from it, and a third (a residual, an
# attention's keys) may be held beside them: a batch's peak is about three of its largest.
LIVE_TENSORS = 3
# Past these, a bigger batch labels no faster (measured on the CPU: 1,024 rows of a digits
# CNN ran 1.2x faster than 512 and as fast as 4,096); a GPU fills with more rows.
MAX_BATCH_ROWS: dict[Device, int] = {"cpu": 1024, "cuda": 8192}
FLOAT_BYTES = 4
# Input a teacher's process receives in one request (worker/sandbox.py splits rows by it).
REQUEST_BYTES = 32 * 1024**2


@dataclass(frozen=True)
class Placement:
    """Where the job puts its teacher: a device and the threads it may use (0: the runtime
    chooses), within a memory limit that bounds the GPU's memory too."""

    device: Device = "cpu"
    threads: int = 0
    memory_bytes: int = 4 * 1024**3


@dataclass(frozen=True)
class TeacherRuntime:
    """How the teacher labelled a job's rows: reported with the job (event and metrics)."""

    device: str
    threads: int
    batch_rows: int
    row_activation_bytes: int
    memory_bytes: int

    def describe(self) -> dict[str, int | str]:
        return asdict(self)

    def sentence(self) -> str:
        threads = (
            f"{self.threads} thread{'s' if self.threads > 1 else ''}"
            if self.threads
            else "the runtime's threads"
        )
        return (
            f"on {self.device} with {threads}, in batches of {self.batch_rows} rows (about "
            f"{_mib(self.row_activation_bytes)} of activations a row, within a memory limit "
            f"of {_mib(self.memory_bytes)})"
        )


def _mib(size: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def row_activation_bytes(tensor_row_bytes: list[int], input_row_bytes: int) -> int:
    """A row's peak activations, from the bytes one row takes in each tensor the model
    computes: the largest few alive at once, plus the row itself."""
    largest = max(tensor_row_bytes, default=0)
    return max(FLOAT_BYTES, LIVE_TENSORS * largest + input_row_bytes)


def transformer_row_bytes(
    length: int, hidden: int, intermediate: int, heads: int, input_row_bytes: int
) -> int:
    """A transformer encoder's row of `length` tokens: its largest tensors are the
    feed-forward's (length x intermediate) and the attention scores (heads x length^2)."""
    tensors = [length * hidden, length * intermediate, heads * length * length]
    return row_activation_bytes([FLOAT_BYTES * t for t in tensors], input_row_bytes)


def free_bytes(memory_bytes: int, parameters: int, request_bytes: int) -> int:
    """What a batch's activations may use: the limit less the runtime, the weights' copies
    and the request buffers, times ACTIVATION_SHARE."""
    held = RUNTIME_BYTES + WEIGHT_COPIES * FLOAT_BYTES * parameters
    held += REQUEST_BUFFERS * request_bytes
    return int(max(0, memory_bytes - held) * ACTIVATION_SHARE)


def batch_rows(
    memory_bytes: int,
    parameters: int,
    row_bytes: int,
    device: Device = "cpu",
    input_row_bytes: int = 0,
    request_bytes: int = REQUEST_BYTES,
) -> int:
    """Rows per batch: as many as the memory left for activations holds, a power of two, at
    least 1, at most MAX_BATCH_ROWS[device] and at most what one request carries."""
    fits = free_bytes(memory_bytes, parameters, request_bytes) // max(1, row_bytes)
    if input_row_bytes > 0:
        fits = min(fits, request_bytes // input_row_bytes)
    rows = min(max(1, fits), MAX_BATCH_ROWS[device])
    return 1 << (rows.bit_length() - 1)


def plan_runtime(
    placement: Placement,
    parameters: int,
    row_bytes: int,
    input_row_bytes: int,
    request_bytes: int = REQUEST_BYTES,
) -> TeacherRuntime:
    """The runtime a loaded teacher labels with."""
    rows = batch_rows(
        placement.memory_bytes,
        parameters,
        row_bytes,
        placement.device,
        input_row_bytes,
        request_bytes,
    )
    return TeacherRuntime(
        device=placement.device,
        threads=placement.threads,
        batch_rows=rows,
        row_activation_bytes=row_bytes,
        memory_bytes=placement.memory_bytes,
    )


def torch_device(placement: Placement) -> str:
    """The torch device a .pt2 or transformers teacher runs on: CUDA when the placement asks
    for it and torch sees one, its memory bounded by the placement's limit; else the CPU.
    Sets torch's threads to the placement's."""
    import torch

    # Only when it changes anything: the confined child's OMP_NUM_THREADS already gave torch
    # the placement's threads (an A/B hinted that setting them again slows torch a little).
    if placement.threads > 0 and torch.get_num_threads() != placement.threads:
        torch.set_num_threads(placement.threads)
    if placement.device != "cuda" or not torch.cuda.is_available():
        return "cpu"
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, placement.memory_bytes / total))
    return "cuda"
