"""Uploaded models that run in their own confined process (worker/teacher_process.py).

The worker never loads an uploaded model itself. `SandboxedTeacher` starts one long-lived child
per teacher, with an address-space limit, a CPU-time limit, no network (worker/confinement.py),
its own process group, stdin closed, a minimal environment and death with its parent, and
forwards the engine's Teacher calls to it over pipes. `SandboxedMapping` does the same for a
cross-domain job's uploaded ONNX mapping (the runner OnnxMapping is given: rows in, the model's
first output out). A model that needs more memory or CPU than allowed, or kills its process,
fails the job with a typed error; the worker goes on.

Create it on a thread that outlives it (the job's thread): the kernel's parent-death signal
follows the thread that started the child, not the whole process."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Self

import numpy as np

from worker.confinement import CPU_GRACE_SECONDS, NetworkMode, minimal_environment
from worker.engine.crossdomain import ONNX_CHUNK_ROWS, MappingRejected
from worker.engine.errors import JobFailure
from worker.engine.logit_cache import file_fingerprint
from worker.engine.teacher_runtime import REQUEST_BYTES, Device, TeacherRuntime
from worker.engine.teachers.base import OutputKind, TeacherRejected
from worker.teacher_process import ProtocolError, grow_pipe, read_message, write_message

if TYPE_CHECKING:
    from app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
# Rows per request are capped so the child never holds more than this much input at once.
MAX_REQUEST_BYTES = REQUEST_BYTES
LOG_TAIL_CHARS = 2000


class SandboxError(JobFailure):
    """The sandboxed teacher (or mapping) failed; `code` is the job's error.code."""

    code = "teacher_crashed"


class TeacherResourceExceeded(SandboxError):
    """The teacher (or mapping) needed more memory or CPU time than its limits allow."""

    code = "teacher_resource_limit"


class TeacherCrashed(SandboxError):
    """The model's process died, or the teacher (or mapping) raised while running."""

    code = "teacher_crashed"


@dataclass(frozen=True)
class SandboxLimits:
    """What the child may use: memory (on the GPU too), CPU time, no network; and where it
    runs: the job's threads (0: the runtime's choice) on the job's device."""

    memory_bytes: int
    cpu_seconds: int
    network: NetworkMode = "auto"
    threads: int = 0
    device: Device = "cpu"

    @classmethod
    def from_settings(cls, settings: Settings) -> SandboxLimits:
        return cls(
            settings.teacher_memory_bytes,
            settings.teacher_cpu_seconds,
            threads=settings.resolved_job_threads,
            device=job_device(),
        )

    @property
    def wall_seconds(self) -> float:
        """Per request: a busy child meets its CPU limit first; this catches an idle, hung one."""
        return 2.0 * (self.cpu_seconds + CPU_GRACE_SECONDS) + 30.0


def job_device() -> Device:
    """Where this worker runs a job's models: the GPU when torch sees one (as the student,
    worker/engine/students.py), else the CPU. Asked only in a job's process, which has
    torch loaded already."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _gib(size: int) -> str:
    return f"{size / 1024**3:.1f} GiB"


def _stop(process: subprocess.Popen[bytes], fds: tuple[int, int], log: IO[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
    log.close()


class _ConfinedModel:
    """One uploaded model in a confined child process, spoken to over pipes; `role` names it
    in every error ("the teacher ...", "the mapping ...")."""

    role = "teacher"
    kind = "teacher"  # what the child loads (python -m worker.teacher_process --kind)

    def __init__(self, path: Path, limits: SandboxLimits) -> None:
        self.limits = limits
        self._log = tempfile.TemporaryFile()
        to_child, self._to_child = os.pipe()
        self._from_child, from_child = os.pipe()
        for fd in (self._to_child, self._from_child):
            grow_pipe(fd)
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "worker.teacher_process",
                str(Path(path).resolve()),
                f"--kind={self.kind}",
                f"--read-fd={to_child}",
                f"--write-fd={from_child}",
                f"--memory-bytes={limits.memory_bytes}",
                f"--cpu-seconds={limits.cpu_seconds}",
                f"--network={limits.network}",
                f"--parent-pid={os.getpid()}",
                f"--threads={limits.threads}",
                f"--device={limits.device}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            pass_fds=(to_child, from_child),
            env=minimal_environment(
                str(limits.threads) if limits.threads else os.environ.get("OMP_NUM_THREADS"),
                os.environ.get("PYTHONPATH"),
                os.environ.get("CUDA_VISIBLE_DEVICES") if limits.device == "cuda" else "",
            ),
            cwd=ROOT,
            start_new_session=True,
        )
        os.close(to_child)
        os.close(from_child)
        self._finalizer = weakref.finalize(
            self, _stop, self._process, (self._to_child, self._from_child), self._log
        )
        try:
            header, _ = self._receive(f"loading the {self.role}")
        except BaseException:
            self.close()
            raise
        self.sandbox: str = header["sandbox"]
        self.meta: dict[str, Any] = header["meta"]

    @property
    def pid(self) -> int:
        return self._process.pid

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def check_network(self, host: str, port: int) -> str:
        """What a TCP connect from inside the child gets: the sandbox's network, tested."""
        header, _ = self._call({"op": "network", "host": host, "port": port}, [])
        return str(header["result"])

    def _split(self, x: np.ndarray, align: int) -> list[np.ndarray]:
        """x in requests of at most MAX_REQUEST_BYTES, each whole chunks of `align` rows."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        row_bytes = max(1, x[:1].nbytes)
        rows = max(1, MAX_REQUEST_BYTES // row_bytes)
        if rows > align:
            rows -= rows % align
        if len(x) <= rows:
            return [x]
        return [x[start : start + rows] for start in range(0, len(x), rows)]

    def _request(self, header: dict[str, Any], x: np.ndarray) -> np.ndarray:
        _, arrays = self._call(header, [x])
        if len(arrays) != 1:
            raise TeacherCrashed(f"the {self.role}'s process answered without an array")
        return arrays[0]

    def _call(
        self, header: dict[str, Any], arrays: list[np.ndarray]
    ) -> tuple[dict[str, Any], list[np.ndarray]]:
        what = f"running the {self.role} ({header['op']})"
        if not self._finalizer.alive:
            raise TeacherCrashed(f"the {self.role}'s process was closed")
        try:
            write_message(self._to_child, header, arrays)
        except (BrokenPipeError, OSError):
            raise self._died(what) from None
        return self._receive(what)

    def _receive(self, what: str) -> tuple[dict[str, Any], list[np.ndarray]]:
        deadline = time.monotonic() + self.limits.wall_seconds
        try:
            header, arrays = read_message(self._from_child, self.limits.memory_bytes, deadline)
        except TimeoutError:
            self.close()
            raise TeacherResourceExceeded(
                f"the {self.role} did not answer within {self.limits.wall_seconds:.0f} s while "
                f"{what}; it was stopped"
            ) from None
        except (EOFError, OSError, ProtocolError) as exc:
            raise self._died(what, str(exc) if isinstance(exc, ProtocolError) else "") from None
        if header.get("ok") is True:
            return header, arrays
        raise self._refusal(header, what)

    def _refusal(self, header: dict[str, Any], what: str) -> Exception:
        """The exception for a reply that says the model failed (the child is still up)."""
        kind, message = header.get("kind"), str(header.get("message", ""))[:600]
        if kind == "memory":
            return TeacherResourceExceeded(
                f"the {self.role} needed more memory than its limit of "
                f"{_gib(self.limits.memory_bytes)} while {what} ({message}); use a smaller "
                "model or batch, or raise DISTILLERY_TEACHER_MEMORY_BYTES"
            )
        if kind == "rejected":
            self.close()
            return MappingRejected(message) if self.kind == "mapping" else TeacherRejected(message)
        if kind == "sandbox":
            self.close()
            return TeacherCrashed(message)
        return TeacherCrashed(
            f"the {self.role} failed while {what}: {header.get('type')}: {message}"
        )

    def _died(self, what: str, detail: str = "") -> SandboxError:
        """The child is gone (or talking nonsense): stop it and say why in the job's terms."""
        usage = self._reap(timeout=5.0)
        tail = self._read_log()
        self.close()
        code = self._process.returncode
        if usage is None:  # it broke the protocol or closed its pipe and lived on: killed
            why = detail or "it closed its pipe"
            return TeacherCrashed(
                f"the {self.role}'s process stopped answering while {what}: {why}"
            )
        cpu = usage.ru_utime + usage.ru_stime if usage else None
        limit = self.limits.cpu_seconds
        if code in (-signal.SIGXCPU, -signal.SIGKILL) and cpu is not None and cpu >= limit - 1:
            return TeacherResourceExceeded(
                f"the {self.role} used up its CPU-time limit of {limit} s while {what}; use a "
                "smaller model or raise DISTILLERY_TEACHER_CPU_SECONDS"
            )
        if code == -signal.SIGKILL or any(
            word in tail.lower()
            for word in (
                "failed to allocate",
                "bad_alloc",
                "out of memory",
                "memoryerror",
                "failed to map segment",
            )
        ):
            return TeacherResourceExceeded(
                f"the {self.role}'s process was killed for memory while {what} (limit "
                f"{_gib(self.limits.memory_bytes)}); use a smaller model or raise "
                "DISTILLERY_TEACHER_MEMORY_BYTES"
            )
        if code == -signal.SIGXFSZ:
            return TeacherResourceExceeded(f"the {self.role} wrote too much output while {what}")
        how = f"signal {-code}" if code and code < 0 else f"exit code {code}"
        with contextlib.suppress(ValueError):
            how = f"signal {signal.Signals(-code).name}" if code and code < 0 else how
        last = tail.strip().splitlines()[-1:] or [detail]
        return TeacherCrashed(
            f"the {self.role}'s process died while {what} ({how}): {last[0][:300]}"
        )

    def _reap(self, timeout: float) -> Any:
        """Wait for the child's exit and return its resource usage; None if it did not exit by
        itself in time (it is killed then) or was reaped already."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                pid, status, usage = os.wait4(self._process.pid, os.WNOHANG)
            except ChildProcessError:
                return None
            if pid:
                self._process.returncode = os.waitstatus_to_exitcode(status)
                return usage
            if time.monotonic() > deadline:
                self.close()
                return None
            time.sleep(0.02)

    def _read_log(self) -> str:
        try:
            self._log.seek(0, os.SEEK_END)
            size = self._log.tell()
            self._log.seek(max(0, size - LOG_TAIL_CHARS))
            return self._log.read().decode(errors="replace")
        except (OSError, ValueError):
            return ""


@dataclass
class Labelling:
    """The rows a teacher's process labelled and the seconds that took, pipes included: its
    speed as the job saw it."""

    rows: int = 0
    seconds: float = 0.0

    def add(self, rows: int, seconds: float) -> None:
        self.rows += rows
        self.seconds += seconds

    @property
    def rows_per_second(self) -> float | None:
        return self.rows / self.seconds if self.rows and self.seconds > 0 else None


class SandboxedTeacher(_ConfinedModel):
    """The engine's Teacher protocol, answered by a confined child process.

    Has `hint` (FitNets) and `hint_candidates` only when the teacher inside has them."""

    role = kind = "teacher"

    def __init__(self, path: Path, limits: SandboxLimits) -> None:
        self.fingerprint: str | None = file_fingerprint(path)
        super().__init__(path, limits)
        meta = self.meta
        self.format: str = meta["format"]
        self.input_shape: tuple[int, ...] = tuple(int(d) for d in meta["input_shape"])
        self.num_classes: int = int(meta["num_classes"])
        self.parameters: int = int(meta["parameters"])
        self.output_name: str = meta["output_name"]
        self.output_kind: OutputKind = meta["output_kind"]
        self.fixed_batch: int | None = meta["fixed_batch"]
        self.details: dict[str, Any] = meta["details"]
        self.runtime = TeacherRuntime(**meta["runtime"])
        self.labelled = Labelling()
        if "hint_candidates" in self.details:
            self.hint_candidates = list(self.details["hint_candidates"])
        self._has_hint = bool(meta["has_hint"])

    @property
    def hint(self) -> Callable[..., np.ndarray]:
        """FitNets hints (training.py looks for this attribute): only if the teacher has them."""
        if not self._has_hint:
            raise AttributeError("this teacher exposes no intermediate tensors")
        return self._hint

    def logits(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """The teacher's logits, in batches of the runtime's rows unless the caller names
        them."""
        if len(x) == 0:
            return np.zeros((0, self.num_classes), np.float32)
        rows = batch_size or self.runtime.batch_rows
        started, outputs = time.perf_counter(), []
        for part in self._parts(x, rows):
            out = self._request({"op": "logits", "batch_size": rows}, part)
            if out.shape != (len(part), self.num_classes) or out.dtype != np.float32:
                raise TeacherCrashed(f"the teacher's process answered an array shaped {out.shape}")
            outputs.append(out)
        self.labelled.add(len(x), time.perf_counter() - started)
        return np.concatenate(outputs)

    def _hint(self, x: np.ndarray, name: str, batch_size: int | None = None) -> np.ndarray:
        batch_size = batch_size or self.runtime.batch_rows
        outputs = []
        for part in self._parts(x, batch_size):
            out = self._request({"op": "hint", "name": name, "batch_size": batch_size}, part)
            if out.ndim != 2 or len(out) != len(part) or out.dtype != np.float32:
                raise TeacherCrashed("the teacher's process answered a malformed hint")
            outputs.append(out)
        return np.concatenate(outputs)

    def latency_ms(
        self, batch: int, repeats: int = 30, row_shape: tuple[int, ...] | None = None
    ) -> float:
        """Median latency of logits for `batch` rows (of `row_shape`, by default the teacher's
        input), timed inside the child (no IPC in it)."""
        request: dict[str, Any] = {"op": "latency", "batch": batch, "repeats": repeats}
        if row_shape is not None:
            request["row_shape"] = [int(d) for d in row_shape]
        header, _ = self._call(request, [])
        return float(header["ms"])

    def _parts(self, x: np.ndarray, batch_size: int) -> list[np.ndarray]:
        # Whole chunks per request, so the child batches exactly as an in-process teacher would.
        return self._split(x, self.fixed_batch or batch_size)


class SandboxedMapping(_ConfinedModel):
    """A cross-domain job's uploaded ONNX mapping, run by onnxruntime in a confined child.

    The runner worker/plan.py gives OnnxMapping (`MappingRunner`): called with rows, it answers
    the model's first output as flat float32 rows, exactly as an in-process OnnxFunction would
    (the child runs one, in the same chunks). The parent has already checked the model with
    onnx; the child checks it again before onnxruntime sees it."""

    role = kind = "mapping"

    def __init__(self, path: Path, limits: SandboxLimits) -> None:
        # onnxruntime on the CPU (OnnxFunction), so the CPU's confinement, on any worker.
        super().__init__(path, replace(limits, device="cpu"))
        self.input_shape: tuple[int, ...] = tuple(int(d) for d in self.meta["input_shape"])
        self.output_size: int = int(self.meta["output_size"])
        self.fixed_batch: int | None = self.meta["fixed_batch"]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros((0, self.output_size), np.float32)
        outputs = []
        for part in self._split(x, self.fixed_batch or ONNX_CHUNK_ROWS):
            out = self._request({"op": "run"}, part)
            if out.shape != (len(part), self.output_size) or out.dtype != np.float32:
                raise TeacherCrashed(f"the mapping's process answered an array shaped {out.shape}")
            outputs.append(out)
        return np.concatenate(outputs)
