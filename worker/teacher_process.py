"""`python -m worker.teacher_process`: one uploaded model, loaded and run in a confined process.

With `--kind=teacher` (the default) the model is a teacher; with `--kind=mapping` it is a
cross-domain job's ONNX mapping, loaded as a raw ONNX function (worker/engine/crossdomain.py
`OnnxFunction`). The worker (worker/sandbox.py) starts it once per model per job and talks to
it over two pipes. Each message is a length-prefixed JSON header followed by the arrays it
announces, each a length-prefixed .npy payload read back with allow_pickle=False: nothing
crosses the boundary as a pickle, in either direction.

Requests: {"op": "logits" | "hint" | "latency" | "network" | "close", ...} to a teacher,
{"op": "run" | "network" | "close"} to a mapping ("run": the model's first output for the rows
sent, as flat float32 rows). Replies: {"ok": true, ...} with the result arrays, or {"ok": false,
"kind": "memory" | "rejected" | "error", "message": ...}. The first reply, unasked, says whether
the model loaded and what it is ("meta")."""

from __future__ import annotations

import argparse
import io
import json
import os
import select
import socket
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.confinement import ConfinementFailed, confine
from worker.engine.errors import is_memory_error, memory_summary

if TYPE_CHECKING:
    import numpy as np

MAX_HEADER_BYTES = 1024 * 1024


class ProtocolError(Exception):
    """The other side sent something that is not a well-formed message."""


def _read_exact(fd: int, size: int, deadline: float | None) -> bytearray:
    buffer = bytearray(size)
    view = memoryview(buffer)
    done = 0
    while done < size:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError("no answer in time")
        got = os.readv(fd, [view[done:]])
        if got == 0:
            raise EOFError("the other side closed the pipe")
        done += got
    return buffer


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_message(fd: int, header: dict[str, Any], arrays: Sequence[np.ndarray] = ()) -> None:
    import numpy as np

    payloads = []
    for array in arrays:
        out = io.BytesIO()
        np.save(out, np.ascontiguousarray(array), allow_pickle=False)
        payloads.append(out.getbuffer())
    text = json.dumps({**header, "arrays": len(payloads)}, default=str).encode()
    _write_all(fd, struct.pack(">I", len(text)) + text)
    for payload in payloads:
        _write_all(fd, struct.pack(">Q", len(payload)))
        _write_all(fd, payload)


def read_message(
    fd: int, max_bytes: int, deadline: float | None = None
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """One message; arrays over max_bytes (or object arrays) are refused before allocation."""
    import numpy as np

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
    arrays = []
    for _ in range(count):
        (length,) = struct.unpack(">Q", _read_exact(fd, 8, deadline))
        if length > max_bytes:
            raise ProtocolError(f"an array of {length} bytes (limit {max_bytes})")
        try:
            array = np.load(io.BytesIO(_read_exact(fd, length, deadline)), allow_pickle=False)
        except ValueError as exc:
            raise ProtocolError(f"an array that is not a plain .npy: {exc}") from exc
        if not isinstance(array, np.ndarray) or array.dtype.hasobject:
            raise ProtocolError("an array that is not a plain .npy")
        arrays.append(array)
    return header, arrays


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


def _metadata(teacher: Any) -> dict[str, Any]:
    return {
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


def _load(path: Path, kind: str) -> tuple[Any, dict[str, Any], Any]:
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

    teacher = load_teacher(path)
    return teacher, _metadata(teacher), _answer


def serve(
    path: Path, read_fd: int, write_fd: int, max_bytes: int, sandbox: str, kind: str = "teacher"
) -> int:
    try:
        model, meta, answer = _load(path, kind)
    except Exception as exc:  # every failure to load is reported, then the process exits
        write_message(write_fd, error_reply(exc))
        return 0
    write_message(write_fd, {"ok": True, "meta": meta, "sandbox": sandbox})
    while True:
        try:
            header, arrays = read_message(read_fd, max_bytes)
        except EOFError:
            return 0
        if header.get("op") == "close":
            return 0
        try:
            reply, outputs = answer(model, header, arrays)
        except Exception as exc:  # MemoryError included: the job hears why, we stay up
            reply, outputs = error_reply(exc), []
        write_message(write_fd, reply, outputs)


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
    args = parser.parse_args(argv)
    try:
        applied = confine(args.memory_bytes, args.cpu_seconds, args.network, args.parent_pid)
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
    return serve(
        args.path, args.read_fd, args.write_fd, args.memory_bytes, applied.network, args.kind
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
