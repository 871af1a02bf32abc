"""Teachers in a confined child process: same answers, no network, limits that hold."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.support.teachers import export_pt2
from tests.worker.hostile import hungry_onnx, mapping_onnx, mlp_onnx, spinning_onnx
from worker.engine.crossdomain import MappedTeacher, MappingRejected, OnnxFunction, OnnxMapping
from worker.engine.teachers import TeacherRejected, load_teacher
from worker.sandbox import (
    MAX_REQUEST_BYTES,
    SandboxedMapping,
    SandboxedTeacher,
    SandboxError,
    SandboxLimits,
    TeacherCrashed,
    TeacherResourceExceeded,
)

ROOT = Path(__file__).resolve().parents[2]
GIB = 1024**3
LIMITS = SandboxLimits(memory_bytes=2 * GIB, cpu_seconds=60)


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mlp_onnx(tmp_path_factory.mktemp("onnx") / "teacher.onnx")


@pytest.fixture(scope="module")
def pt2_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 5)
    ).eval()
    path = tmp_path_factory.mktemp("pt2") / "teacher.pt2"
    example = (torch.randn(3, 3, 4),)
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(model, example, dynamic_shapes=({0: batch},)), path)
    return path


@pytest.fixture(scope="module")
def onnx_teacher(onnx_file: Path) -> Iterator[SandboxedTeacher]:
    with SandboxedTeacher(onnx_file, LIMITS) as teacher:
        yield teacher


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port on loopback that accepts connections (from this process, at least)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = int(server.getsockname()[1])
        with socket.create_connection(("127.0.0.1", port), timeout=3):
            pass  # the port is reachable from outside the sandbox
        yield port


def _limit(pid: int, name: str) -> tuple[str, str]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith(name):
            soft, hard = line[len(name) :].split()[:2]
            return soft, hard
    raise AssertionError(f"no {name} in /proc/{pid}/limits")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_onnx_through_the_sandbox_equals_in_process(
    onnx_file: Path, onnx_teacher: SandboxedTeacher
) -> None:
    local = load_teacher(onnx_file)
    sandboxed = onnx_teacher
    for name in ("format", "input_shape", "num_classes", "parameters", "output_name"):
        assert getattr(sandboxed, name) == getattr(local, name), name
    assert sandboxed.output_kind == local.output_kind == "logits"
    assert sandboxed.fingerprint == local.fingerprint and sandboxed.fingerprint
    # More rows than one request carries (32 MiB), so the answer comes back in parts.
    x = np.random.default_rng(0).random((140_000, 1, 8, 8), dtype=np.float32)
    assert np.array_equal(sandboxed.logits(x, 512), local.logits(x, 512))
    assert np.array_equal(sandboxed.logits(x[:3]), local.logits(x[:3]))
    assert sandboxed.hint_candidates == local.details["hint_candidates"]
    assert "hidden" in sandboxed.hint_candidates
    hint = getattr(sandboxed, "hint")  # noqa: B009 - how the engine finds it (training.py)
    assert np.array_equal(hint(x[:700], "hidden"), getattr(local, "hint")(x[:700], "hidden"))  # noqa: B009
    assert sandboxed.latency_ms(64, 5) > 0


def test_pt2_through_the_sandbox_equals_in_process(pt2_file: Path) -> None:
    local = load_teacher(pt2_file)
    x = np.random.default_rng(1).standard_normal((1000, 3, 4)).astype(np.float32)
    sandboxed = SandboxedTeacher(pt2_file, LIMITS)
    assert (sandboxed.format, sandboxed.input_shape, sandboxed.num_classes) == ("pt2", (3, 4), 5)
    assert sandboxed.parameters == local.parameters
    assert np.array_equal(sandboxed.logits(x, 128), local.logits(x, 128))
    assert np.array_equal(sandboxed.logits(x[:1]), local.logits(x[:1]))
    assert sandboxed.logits(x[:0]).shape == (0, 5)
    assert getattr(sandboxed, "hint", None) is None  # no intermediate tensors from a .pt2
    # The runner never closes its teachers: dropping the last reference ends the process.
    pid = sandboxed.pid
    del sandboxed
    assert not _alive(pid)


def test_a_fixed_batch_teacher_streams_in_whole_batches(tmp_path: Path) -> None:
    """The child runs a request batch by batch as its rows arrive; a program exported for
    batches of 4 gets whole padded batches of 4 there, as in process."""
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5)).eval()
    path = tmp_path / "fixed.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(4, 3, 4),)), path)
    local = load_teacher(path)
    x = np.random.default_rng(3).standard_normal((1_003, 3, 4)).astype(np.float32)
    with SandboxedTeacher(path, LIMITS) as sandboxed:
        assert sandboxed.fixed_batch == 4
        for batch in (None, 10, 1):
            assert np.array_equal(sandboxed.logits(x, batch), local.logits(x, batch)), batch


def test_a_file_that_is_no_teacher_is_rejected_as_before(tmp_path: Path) -> None:
    path = tmp_path / "garbage.onnx"
    path.write_bytes(os.urandom(3000))
    with pytest.raises(TeacherRejected, match="not a valid ONNX"):
        SandboxedTeacher(path, LIMITS)


def test_the_child_is_confined(
    onnx_teacher: SandboxedTeacher, listener: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = onnx_teacher.pid
    result = onnx_teacher.check_network("127.0.0.1", listener)
    assert result != "connected", result
    if onnx_teacher.sandbox == "namespace":  # else the kernel refused it: seccomp, tested below
        assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
        assert "unreachable" in result.lower(), result
    assert _limit(pid, "Max address space") == (str(2 * GIB), str(2 * GIB))
    assert _limit(pid, "Max cpu time") == ("60", "65")
    assert _limit(pid, "Max core file size") == ("0", "0")
    assert os.getpgid(pid) == pid  # its own process group
    assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
    status = Path(f"/proc/{pid}/status").read_text()
    assert "CapEff:\t0000000000000000" in status, status
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert not [v for v in environ if v.startswith(b"DISTILLERY_")]


def test_seccomp_fallback_blocks_the_network(onnx_file: Path, listener: int) -> None:
    """Where the kernel refuses a network namespace, a seccomp filter refuses sockets."""
    with SandboxedTeacher(onnx_file, SandboxLimits(2 * GIB, 60, network="seccomp")) as teacher:
        assert teacher.sandbox == "seccomp"
        status = Path(f"/proc/{teacher.pid}/status").read_text()
        assert "Seccomp:\t2" in status
        assert os.readlink(f"/proc/{teacher.pid}/ns/net") == os.readlink("/proc/self/ns/net")
        result = teacher.check_network("127.0.0.1", listener)
        assert "Operation not permitted" in result, result
        x = np.ones((5, 1, 8, 8), np.float32)
        assert np.array_equal(teacher.logits(x), load_teacher(onnx_file).logits(x))


def test_a_memory_hog_fails_fast_and_the_parent_goes_on(onnx_file: Path, tmp_path: Path) -> None:
    # 56 rows past the probe x 2^24 floats: 3.5 GiB in one allocation, against a 1.5 GiB limit.
    path = hungry_onnx(tmp_path / "hungry.onnx", floats_per_row=2**24)
    with SandboxedTeacher(path, SandboxLimits(memory_bytes=3 * GIB // 2, cpu_seconds=60)) as hog:
        x = np.zeros((64, 1, 8, 8), np.float32)
        started = time.monotonic()
        with pytest.raises(TeacherResourceExceeded, match="more memory than its limit of 1.5 GiB"):
            hog.logits(x)
        assert time.monotonic() - started < 10
        assert hog.logits(x[:8]).shape == (8, 10)  # the child itself is still usable
    with SandboxedTeacher(onnx_file, LIMITS) as normal:
        assert normal.logits(x).shape == (64, 10)


def test_a_cpu_hog_is_stopped_at_its_cpu_limit(tmp_path: Path) -> None:
    path = spinning_onnx(tmp_path / "spin.onnx")
    with SandboxedTeacher(path, SandboxLimits(memory_bytes=2 * GIB, cpu_seconds=5)) as hog:
        started = time.monotonic()
        with pytest.raises(TeacherResourceExceeded, match="CPU-time limit of 5 s"):
            hog.logits(np.zeros((16, 1, 8, 8), np.float32))
        assert time.monotonic() - started < 30
        assert not _alive(hog.pid)


def test_a_child_that_dies_is_a_typed_crash(onnx_file: Path) -> None:
    with SandboxedTeacher(onnx_file, LIMITS) as teacher:
        os.kill(teacher.pid, signal.SIGSEGV)
        with pytest.raises(TeacherCrashed, match="SIGSEGV"):
            teacher.logits(np.zeros((4, 1, 8, 8), np.float32))
        with pytest.raises(TeacherCrashed):
            teacher.logits(np.zeros((4, 1, 8, 8), np.float32))


def test_the_child_dies_with_its_parent(onnx_file: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from worker.sandbox import SandboxedTeacher, SandboxLimits
        teacher = SandboxedTeacher(Path({str(onnx_file)!r}), SandboxLimits({2 * GIB}, 60))
        print(teacher.pid, flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert _alive(child)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child)
    finally:
        parent.kill()
        parent.wait()


def _sandboxed(limits: SandboxLimits) -> Callable[[Path], SandboxedMapping]:
    return lambda path: SandboxedMapping(path, limits)


def test_an_onnx_mapping_runs_in_a_confined_child_and_equals_in_process(
    tmp_path: Path, listener: int
) -> None:
    path = mapping_onnx(tmp_path / "mapping.onnx")
    local = OnnxMapping(path, output_shape=(1, 8, 8))
    mapping = OnnxMapping(path, output_shape=(1, 8, 8), runner=_sandboxed(LIMITS))
    child = mapping.run
    assert isinstance(local.run, OnnxFunction) and isinstance(child, SandboxedMapping)
    assert child.pid != os.getpid() and _alive(child.pid)
    assert (mapping.input_shape, mapping.output_shape) == ((64,), (1, 8, 8))
    assert child.input_shape == (64,) and child.output_size == 64
    # Same fingerprint (cached teacher outputs), same report, whichever process runs it.
    assert mapping.fingerprint == local.fingerprint and mapping.describe() == local.describe()
    # More rows than one request carries (32 MiB), so the answer comes back in parts.
    x = np.random.default_rng(2).standard_normal((140_000, 64)).astype(np.float32)
    assert x.nbytes > MAX_REQUEST_BYTES
    out = mapping(x)
    assert out.shape == (140_000, 1, 8, 8) and out.dtype == np.float32
    assert np.array_equal(out, local(x))
    assert np.array_equal(mapping(x[:5], 7), local(x[:5], 7))
    assert child(x[:0]).shape == (0, 64)
    # The child is confined like a teacher's.
    assert child.check_network("127.0.0.1", listener) != "connected"
    assert _limit(child.pid, "Max address space") == (str(2 * GIB), str(2 * GIB))
    assert _limit(child.pid, "Max cpu time") == ("60", "65")
    assert "CapEff:\t0000000000000000" in Path(f"/proc/{child.pid}/status").read_text()
    # Dropping the mapping ends its process.
    pid = child.pid
    del mapping, child
    assert not _alive(pid)


def test_a_hostile_mapping_fails_with_a_typed_error_and_the_parent_goes_on(
    tmp_path: Path,
) -> None:
    """The memory hog of the teacher tests, uploaded as a mapping: (1, 8, 8) rows -> 10 values."""
    path = hungry_onnx(tmp_path / "hungry.onnx", floats_per_row=2**24)
    limits = SandboxLimits(memory_bytes=3 * GIB // 2, cpu_seconds=60)
    mapping = OnnxMapping(path, output_shape=(10,), runner=_sandboxed(limits))
    teacher = MappedTeacher(load_teacher(mlp_onnx(tmp_path / "t.onnx", shape=(10,))), mapping)
    x = np.zeros((64, 1, 8, 8), np.float32)
    started = time.monotonic()
    with pytest.raises(TeacherResourceExceeded, match="the mapping needed more memory than") as e:
        teacher.logits(x)
    assert isinstance(e.value, SandboxError) and e.value.code == "teacher_resource_limit"
    assert time.monotonic() - started < 10
    assert teacher.logits(x[:8]).shape == (8, 10)  # the child is still usable, and we go on
    assert np.array_equal(mapping(x[:8]), OnnxMapping(path, output_shape=(10,))(x[:8]))


def test_a_mapping_child_that_dies_is_a_typed_crash(tmp_path: Path) -> None:
    path = mapping_onnx(tmp_path / "mapping.onnx")
    mapping = OnnxMapping(path, runner=_sandboxed(LIMITS))
    child = mapping.run
    assert isinstance(child, SandboxedMapping)
    os.kill(child.pid, signal.SIGSEGV)
    with pytest.raises(TeacherCrashed, match="the mapping's process died while running.*SIGSEGV"):
        mapping(np.zeros((4, 64), np.float32))
    with pytest.raises(TeacherCrashed):
        mapping(np.zeros((4, 64), np.float32))


def test_a_mapping_that_is_no_onnx_model_is_rejected_in_either_process(tmp_path: Path) -> None:
    path = tmp_path / "garbage.onnx"
    path.write_bytes(os.urandom(3000))
    with pytest.raises(MappingRejected, match="not a valid ONNX"):
        OnnxMapping(path, runner=_sandboxed(LIMITS))
    with pytest.raises(MappingRejected, match="not a valid ONNX"):
        SandboxedMapping(path, LIMITS)  # the child checks it again before onnxruntime runs


def test_the_worker_builds_onnx_mappings_that_run_in_the_sandbox(tmp_path: Path) -> None:
    from app.jobs.spec import OnnxPhi
    from worker.pipeline.inputs import JobFiles
    from worker.pipeline.teacher import MappingInputs, build_mapping

    path = mapping_onnx(tmp_path / "mapping.onnx")
    files = JobFiles(teachers=[], train=tmp_path / "unused.npz", mapping=path)
    splits: Any = None  # not read for an ONNX mapping
    phi = OnnxPhi(phi="onnx", mapping_id="tch_mapping")
    mapping = build_mapping(phi, MappingInputs((1, 8, 8), splits, files, LIMITS))
    assert isinstance(mapping, OnnxMapping) and isinstance(mapping.run, SandboxedMapping)
    assert mapping.run.pid != os.getpid()
    x = np.random.default_rng(3).standard_normal((300, 64)).astype(np.float32)
    assert np.array_equal(mapping(x), OnnxMapping(path, output_shape=(1, 8, 8))(x))
    with pytest.raises(MappingRejected, match="teacher takes") as e:
        build_mapping(phi, MappingInputs((7,), splits, files, LIMITS))
    assert e.value.code == "mapping_invalid"


def _environment(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(e.decode().split("=", 1) for e in entries if b"=" in e)


def test_the_child_labels_with_the_jobs_threads_in_batches_sized_for_it(onnx_file: Path) -> None:
    limits = SandboxLimits(memory_bytes=2 * GIB, cpu_seconds=60, threads=1)
    with SandboxedTeacher(onnx_file, limits) as teacher:
        runtime = teacher.runtime
        assert (runtime.device, runtime.threads, runtime.memory_bytes) == ("cpu", 1, 2 * GIB)
        assert _environment(teacher.pid)["OMP_NUM_THREADS"] == "1"
        assert _environment(teacher.pid)["CUDA_VISIBLE_DEVICES"] == ""
        # A small MLP: the batch is the most the CPU uses well, not a fixed 512.
        assert runtime.batch_rows == 1024 and runtime.row_activation_bytes > 0
        x = np.random.default_rng(3).random((3000, 1, 8, 8), dtype=np.float32)
        assert np.array_equal(teacher.logits(x), load_teacher(onnx_file).logits(x, 1024))
        assert teacher.labelled.rows == 3000 and (teacher.labelled.rows_per_second or 0) > 0


def _page_faults(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


def test_the_child_keeps_its_batches_memory_between_batches(tmp_path: Path) -> None:
    """Each batch of 1,024 rows makes 8 MiB activations: with glibc's own thresholds the child
    gave them back and faulted them in again, about 12,000 page faults every pass of 8 batches.
    Kept, most passes take none (one now and then takes a few thousand, as the heap's layout
    shifts with the order the request's reads and the batches allocate in)."""
    torch.manual_seed(0)
    wide = [torch.nn.Linear(12, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 2048)]
    model = torch.nn.Sequential(
        torch.nn.Flatten(), *wide, torch.nn.ReLU(), torch.nn.Linear(2048, 5)
    )
    path = export_pt2(model, torch.randn(3, 3, 4), tmp_path / "wide.pt2")
    x = np.random.default_rng(0).random((8192, 3, 4), dtype=np.float32)
    limits = SandboxLimits(memory_bytes=2 * GIB, cpu_seconds=60, threads=1)
    with SandboxedTeacher(path, limits) as teacher:
        assert teacher.runtime.batch_rows == 1024
        for _ in range(2):  # the heap grows to what a pass needs
            teacher.logits(x)
        faults = []
        for _ in range(3):
            before = _page_faults(teacher.pid)
            teacher.logits(x)
            faults.append(_page_faults(teacher.pid) - before)
    assert min(faults) < 1000, faults


def test_a_gpu_placement_bounds_data_instead_of_address_space(
    onnx_file: Path, listener: int, tmp_path: Path
) -> None:
    """On a GPU worker CUDA reserves address space past any limit: the same number bounds the
    process's data instead. Asked for here without a GPU, the teacher runs on the CPU, as
    confined as ever."""
    limits = SandboxLimits(memory_bytes=2 * GIB, cpu_seconds=60, device="cuda")
    with SandboxedTeacher(onnx_file, limits) as teacher:
        pid = teacher.pid
        assert _limit(pid, "Max data size") == (str(2 * GIB), str(2 * GIB))
        assert _limit(pid, "Max address space")[0] == "unlimited"
        assert _limit(pid, "Max cpu time") == ("60", "65")
        assert _environment(pid).get("CUDA_VISIBLE_DEVICES") == os.environ.get(
            "CUDA_VISIBLE_DEVICES"
        )
        assert teacher.check_network("127.0.0.1", listener) != "connected"
        assert "CapEff:\t0000000000000000" in Path(f"/proc/{pid}/status").read_text()
        assert teacher.runtime.device in ("cpu", "cuda")
    hog = hungry_onnx(tmp_path / "hungry.onnx", floats_per_row=2**24)
    with SandboxedTeacher(hog, replace(limits, memory_bytes=3 * GIB // 2)) as hungry:
        with pytest.raises(TeacherResourceExceeded, match="more memory than its limit of 1.5 GiB"):
            hungry.logits(np.zeros((64, 1, 8, 8), np.float32))
        assert hungry.logits(np.zeros((8, 1, 8, 8), np.float32)).shape == (8, 10)
