"""The pipes between a job and its teacher's process: arrays cross as .npy payloads written
from their own memory and read without a copy, and nothing that needs a pickle is read."""

from __future__ import annotations

import io
import os
import struct
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from worker.teacher_process import (
    ProtocolError,
    RowReader,
    grow_pipe,
    read_header,
    read_message,
    write_message,
)


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe()
    grow_pipe(read_fd)
    try:
        yield read_fd, write_fd
    finally:
        for fd in (read_fd, write_fd):
            try:
                os.close(fd)
            except OSError:
                pass


def _through(pipe: tuple[int, int], arrays: list[np.ndarray]) -> list[np.ndarray]:
    read_fd, write_fd = pipe
    writer = threading.Thread(target=write_message, args=(write_fd, {"op": "x"}, arrays))
    writer.start()  # a pipe holds 1 MiB at most: someone must read while it is written
    header, got = read_message(read_fd, 1 << 30)
    writer.join()
    assert header == {"op": "x", "arrays": len(arrays)}
    return got


def test_arrays_cross_exactly(pipe: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    sent = [
        rng.standard_normal((50_000, 1, 8, 8)).astype(np.float32),  # 12.8 MB: many pipefuls
        np.arange(12, dtype=np.int64).reshape(3, 4).T,  # not C-contiguous
        np.zeros((0, 10), np.float32),
        np.array(3.5),
    ]
    got = _through(pipe, sent)
    for a, b in zip(sent, got, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    got[0][0, 0, 0, 0] = 1.0  # the array owns its buffer: the child may write into it


def _raw(pipe: tuple[int, int], payload: bytes) -> None:
    text = b'{"op": "x", "arrays": 1}'
    message = struct.pack(">I", len(text)) + text + struct.pack(">Q", len(payload)) + payload
    os.write(pipe[1], message)


def test_an_object_array_is_refused_not_unpickled(pipe: tuple[int, int]) -> None:
    out = io.BytesIO()
    np.save(out, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    _raw(pipe, out.getvalue())
    with pytest.raises(ProtocolError, match="pickle"):
        read_message(pipe[0], 1 << 20)


def test_a_payload_that_is_not_its_array_is_refused(pipe: tuple[int, int]) -> None:
    out = io.BytesIO()
    np.save(out, np.ones((4, 4), np.float32))
    _raw(pipe, out.getvalue()[:-8])  # two values short
    with pytest.raises(ProtocolError, match="do not fill"):
        read_message(pipe[0], 1 << 20)
    _raw(pipe, b"not a .npy file at all")
    with pytest.raises(ProtocolError, match="not a plain .npy"):
        read_message(pipe[0], 1 << 20)


def test_an_array_over_the_limit_is_refused_before_it_is_read(pipe: tuple[int, int]) -> None:
    text = b'{"op": "x", "arrays": 1}'
    os.write(pipe[1], struct.pack(">I", len(text)) + text + struct.pack(">Q", 1 << 40))
    with pytest.raises(ProtocolError, match="limit"):
        read_message(pipe[0], 1 << 30)


def test_rows_are_read_batch_by_batch_and_the_next_request_follows(
    pipe: tuple[int, int],
) -> None:
    """The child's streamed read (worker/teacher_process.py RowReader): a request's rows come
    out in batches as they arrive, into a buffer kept across requests; a reader that stops
    early still consumes the whole request, so the next one is read from its first byte."""
    read_fd, write_fd = pipe
    rng = np.random.default_rng(1)
    first = rng.standard_normal((20_000, 1, 8, 8)).astype(np.float32)  # 5 MB: many pipefuls
    second = rng.standard_normal((3_000, 2, 32)).astype(np.float32)
    third = np.arange(6, dtype=np.float32).reshape(3, 2)

    def send() -> None:
        for array in (first, second, third):
            write_message(write_fd, {"op": "logits", "batch_size": 7}, [array])

    writer = threading.Thread(target=send)
    writer.start()
    reader = RowReader()
    assert read_header(read_fd) == {"op": "logits", "batch_size": 7, "arrays": 1}
    parts = [part.copy() for part in reader.batches(read_fd, 1 << 30, 1024)]
    assert [len(part) for part in parts] == [1024] * 19 + [544]
    assert np.array_equal(np.concatenate(parts), first)
    read_header(read_fd)
    batches = reader.batches(read_fd, 1 << 30, 100)
    assert np.array_equal(next(batches), second[:100])
    batches.close()  # stopped after one batch: the other 2,900 rows are still read
    header, (got,) = read_message(read_fd, 1 << 30)
    writer.join()
    assert header["op"] == "logits" and np.array_equal(got, third)


def test_a_streamed_request_over_the_limit_is_refused_before_it_is_read(
    pipe: tuple[int, int],
) -> None:
    os.write(pipe[1], struct.pack(">Q", 1 << 40))
    with pytest.raises(ProtocolError, match="limit"):
        next(RowReader().batches(pipe[0], 1 << 30, 64))
    out = io.BytesIO()
    np.save(out, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    os.write(pipe[1], struct.pack(">Q", len(out.getvalue())) + out.getvalue())
    with pytest.raises(ProtocolError, match="pickle"):
        next(RowReader().batches(pipe[0], 1 << 30, 64))
