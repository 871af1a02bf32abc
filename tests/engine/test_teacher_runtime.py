"""A teacher's batch and threads are chosen from its size, its memory limit and the job's
cores, not fixed: the rule, and what each format estimates a row to need."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support.teachers import export_pt2, save_onnx
from worker.engine.teacher_runtime import (
    MAX_BATCH_ROWS,
    RUNTIME_BYTES,
    Placement,
    batch_rows,
    plan_runtime,
    row_activation_bytes,
    transformer_row_bytes,
)
from worker.engine.teachers import load_teacher

GIB = 1024**3


def test_a_small_model_gets_the_largest_batch_the_device_uses_well() -> None:
    assert batch_rows(4 * GIB, parameters=300_000, row_bytes=50_000) == MAX_BATCH_ROWS["cpu"]
    assert batch_rows(4 * GIB, 300_000, 50_000, device="cuda") == MAX_BATCH_ROWS["cuda"]


def test_the_batch_shrinks_as_rows_grow_and_memory_shrinks() -> None:
    rows = [batch_rows(4 * GIB, 1_000_000, row) for row in (1 << 20, 4 << 20, 16 << 20)]
    assert rows == sorted(rows, reverse=True) and rows[0] > rows[-1]
    assert batch_rows(2 * GIB, 1_000_000, 4 << 20) < batch_rows(8 * GIB, 1_000_000, 4 << 20)
    # Rows of 4 MiB, 2 GiB limit: (2 - 1 GiB runtime - 12 MB weights - 64 MiB of requests) / 2
    # leaves about 474 MiB for activations: 118 rows, rounded down to a power of two.
    assert batch_rows(2 * GIB, 1_000_000, 4 << 20) == 64


def test_the_weights_count_against_the_memory() -> None:
    light = batch_rows(4 * GIB, 1_000_000, 8 << 20)
    heavy = batch_rows(4 * GIB, 200_000_000, 8 << 20)  # 2.4 GB of weight copies
    assert heavy < light


def test_a_model_too_big_for_its_limit_still_gets_one_row() -> None:
    # The limit then fails the job with teacher_resource_limit, saying which setting to raise.
    assert batch_rows(RUNTIME_BYTES, 100_000_000, 1 << 30) == 1


def test_a_batch_never_exceeds_what_one_request_carries() -> None:
    # 600 KiB rows (a 224x224 RGB image): a 32 MiB request holds 54 of them.
    assert batch_rows(64 * GIB, 1000, 1000, input_row_bytes=600 * 1024) == 32


def test_every_batch_is_a_power_of_two() -> None:
    for row in (1000, 33_333, 1 << 20, 3 << 20, 50 << 20):
        rows = batch_rows(3 * GIB, 5_000_000, row)
        assert rows >= 1 and rows & (rows - 1) == 0


def test_a_rows_activations_come_from_its_largest_tensors() -> None:
    assert row_activation_bytes([400, 4096, 1024], input_row_bytes=256) == 3 * 4096 + 256
    assert row_activation_bytes([], input_row_bytes=0) == 4
    # BERT-base on 128 tokens: its feed-forward (128 x 3072) and scores (12 x 128^2) lead.
    base = transformer_row_bytes(128, 768, 3072, 12, input_row_bytes=1024)
    assert base == 3 * 4 * 128 * 3072 + 1024
    assert transformer_row_bytes(512, 768, 3072, 12, 4096) > 3 * 4 * 12 * 512 * 512


def test_the_plan_carries_the_jobs_threads_and_device() -> None:
    placed = Placement(device="cuda", threads=3, memory_bytes=6 * GIB)
    runtime = plan_runtime(placed, parameters=10_000, row_bytes=2000, input_row_bytes=256)
    assert (runtime.device, runtime.threads, runtime.memory_bytes) == ("cuda", 3, 6 * GIB)
    assert runtime.batch_rows == MAX_BATCH_ROWS["cuda"]
    assert runtime.describe()["batch_rows"] == runtime.batch_rows
    assert "on cuda with 3 threads, in batches of 8192 rows" in runtime.sentence()


def _cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 8 * 8, 10),
    ).eval()


def test_onnx_and_pt2_teachers_estimate_a_row_from_their_graphs(tmp_path: Path) -> None:
    example = torch.zeros(2, 1, 8, 8)
    onnx = load_teacher(save_onnx(_cnn(), example, tmp_path / "t.onnx"))
    pt2 = load_teacher(export_pt2(_cnn(), example, tmp_path / "t.pt2"))
    # The largest per-row tensor is the convolution's output, 8 x 8 x 8 floats; the input
    # row is 64 floats.
    expected = 3 * 4 * 8 * 8 * 8 + 4 * 64
    assert getattr(onnx, "row_activation_bytes") == expected  # noqa: B009
    assert getattr(pt2, "row_activation_bytes") == expected  # noqa: B009


def test_a_teacher_in_process_takes_the_placements_threads(tmp_path: Path) -> None:
    path = save_onnx(_cnn(), torch.zeros(2, 1, 8, 8), tmp_path / "t.onnx")
    teacher = load_teacher(path, Placement(threads=1))
    session = getattr(teacher, "session")  # noqa: B009
    assert session.get_session_options().intra_op_num_threads == 1
    assert getattr(teacher, "device") == "cpu"  # noqa: B009
    x = np.random.default_rng(0).random((300, 1, 8, 8), dtype=np.float32)
    assert np.array_equal(teacher.logits(x), teacher.logits(x, 7))


@pytest.mark.parametrize("suffix", [".onnx", ".pt2"])
def test_asking_for_a_gpu_without_one_runs_on_the_cpu(tmp_path: Path, suffix: str) -> None:
    example = torch.zeros(2, 1, 8, 8)
    made = tmp_path / f"t{suffix}"
    path = (
        save_onnx(_cnn(), example, made) if suffix == ".onnx" else export_pt2(_cnn(), example, made)
    )
    teacher = load_teacher(path, Placement(device="cuda"))
    if suffix == ".onnx":
        import onnxruntime

        gpu = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    else:
        gpu = torch.cuda.is_available()
    expected = "cuda" if gpu else "cpu"
    assert getattr(teacher, "device") == expected  # noqa: B009
    assert teacher.logits(np.zeros((5, 1, 8, 8), np.float32)).shape == (5, 10)


def test_a_pt2_program_moves_whole_to_a_device_and_is_audited_again(tmp_path: Path) -> None:
    """What a GPU worker does to a .pt2 teacher (torch.export's device pass: a module's .to()
    would leave lifted constants behind), run here to the CPU, the one device at hand."""
    from worker.engine.teachers.base import EXPORT_ADVICE, TeacherRejected
    from worker.engine.teachers.pt2 import _moved, load_pt2_program

    path = export_pt2(_cnn(), torch.zeros(2, 1, 8, 8), tmp_path / "t.pt2")
    program, module = load_pt2_program(path, TeacherRejected, EXPORT_ADVICE)
    moved, moved_module = _moved(program, "cpu")
    x = torch.randn(5, 1, 8, 8)
    assert torch.equal(moved_module(x), module(x))
    assert {t.device.type for t in moved.state_dict.values()} == {"cpu"}
