"""`python -m worker.teacher_process`: one uploaded model, loaded and run in a confined process.

With `--kind=teacher` (the default) the model is a teacher; with `--kind=mapping` it is a
cross-domain job's ONNX mapping, loaded as a raw ONNX function (worker/engine/crossdomain.py
`OnnxFunction`). The worker (worker/sandbox.py) starts it once per model per job and talks to
it over two pipes. Each message is a length-prefixed JSON header followed by the arrays it
announces, each a length-prefixed .npy payload (numpy's header, then the raw values). The
reader parses the header as np.load does and refuses object dtypes, which only a pickle could
carry: nothing crosses the boundary as a pickle, in either direction. Arrays are written from
their own memory and read into one buffer each, which becomes the array: no copy on either
side beyond the pipe's.

Requests: {"op": "logits" | "hint" | "latency" | "network" | "close", ...} to a teacher,
{"op": "run" | "network" | "close"} to a mapping ("run": the model's first output for the rows
sent, as flat float32 rows). Replies: {"ok": true, ...} with the result arrays, or {"ok": false,
"kind": "memory" | "rejected" | "error", "message": ...}. The first reply, unasked, says whether
the model loaded and what it is ("meta", with "runtime": the device, threads and batch it
labels with, worker/engine/teacher_runtime.py)."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import io
import json
import math
import os
import select
import socket
import struct
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.confinement import ConfinementFailed, confine, memory_limit
from worker.engine.errors import is_memory_error, memory_summary
from worker.engine.teacher_runtime import (
    LIVE_TENSORS,
    REQUEST_BYTES,
    Device,
    Placement,
    TeacherRuntime,
    free_bytes,
    plan_runtime,
)
from worker.heap import keep_batch_memory

if TYPE_CHECKING:
    import numpy as np

MAX_HEADER_BYTES = 1024 * 1024
MAX_NPY_HEADER_BYTES = 64 * 1024
F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, named in Python 3.10+ but not on every platform
PIPE_BYTES = 1024 * 1024


class ProtocolError(Exception):
    """The other side sent something that is not a well-formed message."""


def _read_exact(fd: int, size: int, deadline: float | None) -> bytearray:
    buffer = bytearray(size)
    _read_into(fd, memoryview(buffer), deadline)
    return buffer


def _read_into(fd: int, view: memoryview, deadline: float | None = None) -> None:
    """Fill `view` from fd (EOFError if the other side closes first)."""
    size, done = len(view), 0
    while done < size:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError("no answer in time")
        got = os.readv(fd, [view[done:]])
        if got == 0:
            raise EOFError("the other side closed the pipe")
        done += got


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view) :]


def grow_pipe(fd: int) -> None:
    """Ask for a 1 MiB pipe buffer (Linux's default is 64 KiB): 16 times fewer wake-ups per
    request. Best effort: the unprivileged maximum may be lower."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_BYTES)


def _npy_header(array: np.ndarray) -> bytes:
    import numpy as np

    out = io.BytesIO()
    np.lib.format.write_array_header_2_0(out, np.lib.format.header_data_from_array_1_0(array))
    return out.getvalue()


def write_message(fd: int, header: dict[str, Any], arrays: Sequence[np.ndarray] = ()) -> None:
    import numpy as np

    contiguous = [np.require(array, requirements="C") for array in arrays]
    text = json.dumps({**header, "arrays": len(contiguous)}, default=str).encode()
    _write_all(fd, struct.pack(">I", len(text)) + text)
    for array in contiguous:
        npy = _npy_header(array)
        _write_all(fd, struct.pack(">Q", len(npy) + array.nbytes) + npy)
        if array.nbytes:
            _write_all(fd, array.data)


def _npy_layout(head: io.BytesIO) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """Shape, Fortran order and dtype of a .npy header; ProtocolError for anything else."""
    import numpy as np

    try:
        readers = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }
        reader = readers.get(np.lib.format.read_magic(head))
        if reader is None:
            raise ValueError("a .npy version other than 1.0 or 2.0")
        shape, fortran, dtype = reader(head)
    except ValueError as exc:
        raise ProtocolError(f"an array that is not a plain .npy: {exc}") from exc
    if dtype.hasobject:
        raise ProtocolError("an array that is not a plain .npy (object values need a pickle)")
    return tuple(shape), bool(fortran), dtype


def _array(payload: bytearray) -> np.ndarray:
    """The array a .npy payload holds, over the payload's own memory; ProtocolError for
    anything but a plain array whose values fill the payload exactly."""
    import numpy as np

    head = io.BytesIO(memoryview(payload)[:MAX_NPY_HEADER_BYTES])
    shape, fortran, dtype = _npy_layout(head)
    count = math.prod(shape)
    if head.tell() + count * dtype.itemsize != len(payload):
        raise ProtocolError("an array whose values do not fill its payload")
    array = np.frombuffer(payload, dtype=dtype, count=count, offset=head.tell())
    return array.reshape(shape, order="F" if fortran else "C")


def read_message(
    fd: int, max_bytes: int, deadline: float | None = None
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """One message; arrays over max_bytes (or object arrays) are refused before allocation."""
    header = read_header(fd, deadline)
    return header, [read_array(fd, max_bytes, deadline) for _ in range(header["arrays"])]


def read_header(fd: int, deadline: float | None = None) -> dict[str, Any]:
    """A message's JSON header, which announces how many arrays follow it."""
    (size,) = struct.unpack(">I", _read_exact(fd, 4, deadline))
    if size > MAX_HEADER_BYTES:
        raise ProtocolError(f"a header of {size} bytes")
    try:
        header = json.loads(bytes(_read_exact(fd, size, deadline)))
    except json.JSONDecodeError as exc:
        raise ProtocolError("a header that is not JSON") from exc
    count = header.get("arrays") if isinstance(header, dict) else None
    if not isinstance(count, int) or not 0 <= count <= 16:
        raise ProtocolError("a header without a valid array count")
    return dict(header)


def _array_length(fd: int, max_bytes: int, deadline: float | None) -> int:
    (length,) = struct.unpack(">Q", _read_exact(fd, 8, deadline))
    if length > max_bytes:
        raise ProtocolError(f"an array of {length} bytes (limit {max_bytes})")
    return int(length)


def read_array(fd: int, max_bytes: int, deadline: float | None = None) -> np.ndarray:
    return _array(_read_exact(fd, _array_length(fd, max_bytes, deadline), deadline))


class RowReader:
    """One request's rows, read batch by batch as they arrive, so that the model runs on a
    batch while the parent is still writing the next ones (the pipe's copy and the model's
    work overlap). The values land in a buffer kept across requests (no fresh memory to
    fault in each time): each batch is valid until the next request is read."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def batches(self, fd: int, max_bytes: int, batch_rows: int) -> Iterator[np.ndarray]:
        """The next array's rows in batches of `batch_rows`; every byte of it is read, even
        when the caller stops early (the next request starts right after it)."""
        import numpy as np

        length = _array_length(fd, max_bytes, None)
        preamble = _read_exact(fd, min(length, 8), None)
        if len(preamble) < 8 or preamble[6] not in (1, 2):
            raise ProtocolError("an array that is not a plain .npy: no .npy preamble")
        width = 2 if preamble[6] == 1 else 4
        size_bytes = _read_exact(fd, width, None)
        head = bytes(preamble + size_bytes + _read_exact(fd, _npy_header_size(size_bytes), None))
        shape, fortran, dtype = _npy_layout(io.BytesIO(head))
        values = length - len(head)
        if values != math.prod(shape) * dtype.itemsize or values < 0:
            raise ProtocolError("an array whose values do not fill its payload")
        if len(self._buffer) < values:
            self._buffer = bytearray(values)
        array = np.frombuffer(self._buffer, dtype=dtype, count=math.prod(shape))
        array = array.reshape(shape, order="F" if fortran else "C")
        if fortran or not shape:
            _read_into(fd, memoryview(self._buffer)[:values])
            yield array
            return
        yield from self._rows(fd, array, max(1, batch_rows), values // max(1, shape[0]))

    def _rows(
        self, fd: int, array: np.ndarray, batch_rows: int, row_bytes: int
    ) -> Iterator[np.ndarray]:
        view, start = memoryview(self._buffer), 0
        try:
            while start < len(array):
                end = min(len(array), start + batch_rows)
                _read_into(fd, view[start * row_bytes : end * row_bytes])
                begun, start = start, end
                yield array[begun:end]
        finally:  # the caller stopped early: skip what is left of the request
            if start < len(array):
                _read_into(fd, view[start * row_bytes : len(array) * row_bytes])


def _npy_header_size(size_bytes: bytearray) -> int:
    size = int.from_bytes(size_bytes, "little")
    if size > MAX_NPY_HEADER_BYTES:
        raise ProtocolError(f"a .npy header of {size} bytes")
    return size


def error_reply(exc: BaseException) -> dict[str, Any]:
    from worker.engine.crossdomain import MappingRejected
    from worker.engine.teachers import TeacherRejected

    if is_memory_error(exc):
        kind = "memory"
    elif isinstance(exc, (TeacherRejected, MappingRejected)):
        kind = "rejected"
    else:
        kind = "error"
    message = memory_summary(exc) if kind == "memory" else str(exc)[:1000]
    return {"ok": False, "kind": kind, "type": type(exc).__name__, "message": message}


def probe_network(host: str, port: int) -> str:
    """'connected', or the error a TCP connect got: the sandbox's own check that it is shut."""
    try:
        with socket.create_connection((host, port), timeout=3):
            return "connected"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def _runtime(teacher: Any, placement: Placement) -> TeacherRuntime:
    """The device the teacher got (the placement's, or the CPU where its runtime has no GPU),
    its threads and the batch its size and the memory limit allow."""
    input_bytes = 4 * math.prod(teacher.input_shape)
    row_bytes = getattr(teacher, "row_activation_bytes", None) or LIVE_TENSORS * input_bytes
    device: Device = "cuda" if getattr(teacher, "device", "cpu") == "cuda" else "cpu"
    got = replace(placement, device=device)
    return plan_runtime(got, int(teacher.parameters), int(row_bytes), input_bytes)


def _metadata(teacher: Any, placement: Placement) -> dict[str, Any]:
    return {
        "runtime": _runtime(teacher, placement).describe(),
        "format": teacher.format,
        "input_shape": list(teacher.input_shape),
        "num_classes": int(teacher.num_classes),
        "parameters": int(teacher.parameters),
        "output_name": teacher.output_name,
        "output_kind": teacher.output_kind,
        "fixed_batch": getattr(teacher, "fixed_batch", None),
        "has_hint": callable(getattr(teacher, "hint", None)),
        "details": getattr(teacher, "details", {}),
    }


def _answer(teacher: Any, header: dict[str, Any], arrays: list[np.ndarray]) -> Any:
    op = header.get("op")
    if op == "logits":
        return {"ok": True}, [teacher.logits(arrays[0], int(header["batch_size"]))]
    if op == "hint":
        return {"ok": True}, [
            teacher.hint(arrays[0], str(header["name"]), int(header["batch_size"]))
        ]
    if op == "latency":
        import numpy as np

        from worker.engine.evaluation import median_latency_ms

        rows = header.get("row_shape") or teacher.input_shape
        shape = (int(header["batch"]), *(int(d) for d in rows))
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        ms = median_latency_ms(lambda: teacher.logits(x), repeats=int(header["repeats"]))
        return {"ok": True, "ms": ms}, []
    if op == "network":
        return {"ok": True, "result": probe_network(str(header["host"]), int(header["port"]))}, []
    return {"ok": False, "kind": "error", "message": f"unknown request {op!r}"}, []


def _answer_mapping(function: Any, header: dict[str, Any], arrays: list[np.ndarray]) -> Any:
    op = header.get("op")
    if op == "run":
        return {"ok": True}, [function(arrays[0])]
    if op == "network":
        return {"ok": True, "result": probe_network(str(header["host"]), int(header["port"]))}, []
    return {"ok": False, "kind": "error", "message": f"unknown request {op!r}"}, []


def _load(path: Path, kind: str, placement: Placement) -> tuple[Any, dict[str, Any], Any]:
    """The model, what the parent is told about it, and the function that answers requests."""
    if kind == "mapping":
        from worker.engine.crossdomain import MappingRejected, OnnxFunction

        try:
            function = OnnxFunction(path)
        except MappingRejected:
            raise
        except Exception as exc:
            if is_memory_error(exc):
                raise
            raise MappingRejected(f"onnxruntime cannot load the mapping: {exc}"[:400]) from exc
        meta = {
            "input_shape": list(function.input_shape),
            "output_size": function.output_size,
            "fixed_batch": function.fixed_batch,
        }
        return function, meta, _answer_mapping
    from worker.engine.teachers import load_teacher

    teacher = load_teacher(path, placement)
    # Batch after batch reuses the same activations' memory: keep it mapped (worker/heap.py).
    keep_batch_memory(free_bytes(placement.memory_bytes, int(teacher.parameters), REQUEST_BYTES))
    return teacher, _metadata(teacher, placement), _answer


def serve(
    path: Path,
    read_fd: int,
    write_fd: int,
    placement: Placement,
    sandbox: str,
    kind: str = "teacher",
) -> int:
    max_bytes = placement.memory_bytes
    try:
        model, meta, answer = _load(path, kind, placement)
    except Exception as exc:  # every failure to load is reported, then the process exits
        write_message(write_fd, error_reply(exc))
        return 0
    write_message(write_fd, {"ok": True, "meta": meta, "sandbox": sandbox})
    rows = RowReader()
    while True:
        try:
            header = read_header(read_fd)
            if header.get("op") == "close":
                return 0
            if kind == "teacher" and header.get("op") == "logits" and header["arrays"] == 1:
                size = _stream_batch(model, int(header["batch_size"]))
                reply, outputs = _logits(model, size, rows.batches(read_fd, max_bytes, size))
            else:
                arrays = [read_array(read_fd, max_bytes) for _ in range(header["arrays"])]
                reply, outputs = _answered(answer, model, header, arrays)
        except EOFError:
            return 0
        write_message(write_fd, reply, outputs)


def _answered(answer: Any, model: Any, header: dict[str, Any], arrays: list[np.ndarray]) -> Any:
    try:
        return answer(model, header, arrays)
    except Exception as exc:  # MemoryError included: the job hears why, we stay up
        return error_reply(exc), []


def _stream_batch(teacher: Any, batch_rows: int) -> int:
    """The rows the model runs on at a time: the request's batch, in whole fixed batches
    where the model has one (as its own chunking would cut them)."""
    fixed = int(getattr(teacher, "fixed_batch", None) or 0)
    if fixed and batch_rows % fixed:
        return max(fixed, batch_rows - batch_rows % fixed)
    return max(1, batch_rows)


def _logits(teacher: Any, batch_rows: int, batches: Iterator[np.ndarray]) -> Any:
    """The teacher's logits for a request, batch by batch as its rows arrive. After a failure
    the rest of the request is still read (and not run), then the failure is the reply."""
    import numpy as np

    outputs: list[np.ndarray] = []
    failure: Exception | None = None
    for part in batches:
        if failure is None:
            try:
                outputs.append(teacher.logits(part, batch_rows))
            except Exception as exc:  # MemoryError included, as for any request
                failure = exc
    if failure is not None:
        return error_reply(failure), []
    if not outputs:
        return {"ok": True}, [np.zeros((0, int(teacher.num_classes)), np.float32)]
    return {"ok": True}, [np.concatenate(outputs) if len(outputs) > 1 else outputs[0]]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.teacher_process")
    parser.add_argument("path", type=Path)
    parser.add_argument("--kind", choices=["teacher", "mapping"], default="teacher")
    parser.add_argument("--read-fd", type=int, required=True)
    parser.add_argument("--write-fd", type=int, required=True)
    parser.add_argument("--memory-bytes", type=int, required=True)
    parser.add_argument("--cpu-seconds", type=int, required=True)
    parser.add_argument("--network", choices=["auto", "namespace", "seccomp"], default="auto")
    parser.add_argument("--parent-pid", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args(argv)
    placement = Placement(args.device, args.threads, args.memory_bytes)
    try:
        applied = confine(
            args.memory_bytes,
            args.cpu_seconds,
            args.network,
            args.parent_pid,
            memory=memory_limit(args.device),
        )
    except (ConfinementFailed, OSError) as exc:
        reply = {
            "ok": False,
            "kind": "sandbox",
            "message": f"cannot confine the {args.kind}: {exc}",
        }
        write_message(args.write_fd, reply)
        return 3
    # Native libraries may print to fd 1: it goes where stderr goes, never into a pipe.
    os.dup2(2, 1)
    return serve(args.path, args.read_fd, args.write_fd, placement, applied.network, args.kind)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
