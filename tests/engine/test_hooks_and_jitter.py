"""Run hooks (a per-step stop, per-epoch checkpoints and resume) and jitter augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.engine.test_distill import teacher_and_data  # noqa: F401  (the fixture)
from tests.support.engine import config, kd, student, training
from worker.engine import RunHooks, Splits, load_teacher, run_hooks
from worker.engine.training import jitter


class MemoryCheckpoints:
    def __init__(self) -> None:
        self.saved: dict[str, tuple[int, bytes]] = {}

    def load(self, run: str) -> bytes | None:
        return self.saved[run][1] if run in self.saved else None

    def save(self, run: str, epoch: int, data: bytes) -> None:
        self.saved[run] = (epoch, data)


class Crash(Exception):
    pass


CONFIG = config(student(hidden_sizes=(32,), dropout=0.2), hp=training(6, batch_size=64, seed=3))


def _weights(module: torch.nn.Module) -> list[np.ndarray]:
    return [t.detach().numpy().copy() for t in module.state_dict().values()]


def test_resumed_run_equals_uninterrupted_run(
    teacher_and_data: tuple[Path, Splits],  # noqa: F811
) -> None:
    path, splits = teacher_and_data
    teacher = load_teacher(path)
    whole = kd(CONFIG, teacher, splits, device="cpu")

    store = MemoryCheckpoints()
    steps = 0
    steps_per_epoch = -(-len(splits.train.x) // CONFIG.training.batch_size)

    def crash_in_epoch_4() -> None:
        nonlocal steps
        steps += 1
        if steps == 3 * steps_per_epoch + 5:
            raise Crash()

    with pytest.raises(Crash), run_hooks(RunHooks(on_step=crash_in_epoch_4, checkpoints=store)):
        kd(CONFIG, teacher, splits, device="cpu")
    assert store.saved["fit0"][0] == 3  # epochs 1-3 were checkpointed, epoch 4 was not

    resumed_from: list[tuple[str, int]] = []
    hooks = RunHooks(checkpoints=store, on_resume=lambda run, e: resumed_from.append((run, e)))
    with run_hooks(hooks):
        again = kd(CONFIG, teacher, splits, device="cpu")
    assert resumed_from == [("fit0", 3)]
    assert [r.epoch for r in again.history] == list(range(1, 7))
    # Weights, optimizer state and RNG state were restored: the same student, bit for bit.
    for a, b in zip(_weights(whole.student), _weights(again.student), strict=True):
        np.testing.assert_array_equal(a, b)
    assert again.test.student_accuracy == whole.test.student_accuracy
    assert store.saved["fit1"][0] == 6  # the scratch baseline is a run of its own


def test_step_hook_stops_within_one_step(teacher_and_data: tuple[Path, Splits]) -> None:  # noqa: F811
    path, splits = teacher_and_data
    calls = 0

    def stop_now() -> None:
        nonlocal calls
        calls += 1
        raise Crash()

    with pytest.raises(Crash), run_hooks(RunHooks(on_step=stop_now)):
        kd(CONFIG, load_teacher(path), splits, device="cpu")
    assert calls == 1


def test_jitter_shifts_each_image_within_bounds() -> None:
    images = torch.zeros(50, 1, 9, 9)
    images[:, 0, 4, 4] = 1.0  # one bright pixel in the middle
    shifted = jitter(images, 2, torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape
    positions = [tuple(int(i) for i in torch.nonzero(s[0])[0]) for s in shifted]
    assert all(abs(r - 4) <= 2 and abs(c - 4) <= 2 for r, c in positions)
    assert len(set(positions)) > 5  # each image gets its own offset
    assert torch.equal(jitter(images, 0, torch.Generator()), images)
    flat = jitter(images[:, 0], 1, torch.Generator().manual_seed(1))  # [batch, H, W]
    assert flat.shape == (50, 9, 9) and float(flat.sum()) == 50.0


def test_jitter_runs_the_teacher_per_batch(teacher_and_data: tuple[Path, Splits]) -> None:  # noqa: F811
    path, splits = teacher_and_data
    teacher = load_teacher(path)
    seen: list[int] = []

    class Counting:
        def __getattr__(self, name: str) -> object:
            return getattr(teacher, name)

        def logits(self, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
            seen.append(len(x))
            return teacher.logits(x, batch_size)

    cfg = config(
        student(hidden_sizes=(32,)), hp=training(10, batch_size=50, jitter_pixels=1), baseline=False
    )
    outcome = kd(cfg, Counting(), splits, device="cpu")  # type: ignore[arg-type]
    batches = 10 * -(-len(splits.train.x) // 50)
    assert seen.count(50) >= batches - 10  # once per training batch, beside the cached passes
    assert outcome.test.student_accuracy is not None and outcome.test.student_accuracy > 0.8
