"""Search on validation: the candidates, their scores, the chosen pair scored once on the
test rows, a failed candidate skipped, and finished candidates not trained again on resume."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.engine import config, method, student, synthesis, training
from tests.support.teachers import digits_mlp_onnx
from worker.engine import (
    ArraySplit,
    MethodInputs,
    RunHooks,
    Splits,
    TrainingCallbacks,
    TransferRows,
    load_teacher,
    run_hooks,
    run_method,
    synthesize,
)
from worker.engine.finite import LossNotFinite
from worker.engine.methods import search as search_method
from worker.engine.methods.registry import SearchSettings
from worker.engine.search import StudentShape, candidates


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Splits]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16).astype(np.float32)[:, None]
    y = data.target.astype(np.int64)
    folder = tmp_path_factory.mktemp("search")
    path = digits_mlp_onnx(x[:1200], y[:1200], 15, folder / "teacher.onnx")
    train = x[:300]
    transfer = tuple(
        TransferRows(m, synthesize(train, synthesis(m, 1000))) for m in ("shift", "mixup")
    )
    splits = Splits(
        ArraySplit(train, y[:300]),
        ArraySplit(x[1000:1200], y[1000:1200]),
        ArraySplit(x[1200:], y[1200:]),
        transfer,
    )
    return load_teacher(path), splits


def _shape(max_parameters: int | None = None) -> StudentShape:
    return StudentShape(student(hidden_sizes=[32]), (1, 8, 8), 10, max_parameters)


def test_candidates_start_from_the_jobs_settings_and_never_repeat() -> None:
    base = config(student(hidden_sizes=[32]), method(), training(epochs=3))
    students, scratch = candidates(base, ("shift", "mixup"), _shape(), 32)
    assert students[0].config == replace(base, baseline=False)
    assert students[0].transfer == ("shift", "mixup")
    seen = [(c.config, c.transfer) for c in students]
    assert len(seen) == len(set(map(repr, seen)))
    assert {c.transfer for c in students} == {("shift", "mixup"), ("shift",), ("mixup",)}
    assert {c.config.method.temperature for c in students} == {4.0, 2.0, 8.0}
    # No budget, no other shapes; scratch learns from labels only, and varies the schedule.
    assert {c.config.student for c in students} == {base.student}
    assert all(c.config.method.alpha == 1.0 and c.transfer == () for c in scratch)
    assert len({c.config.training.learning_rate for c in scratch}) == 3
    assert [c.number for c in students] == list(range(1, len(students) + 1))
    few, few_scratch = candidates(base, ("shift",), _shape(), 3)
    assert len(few) == len(few_scratch) == 3
    assert candidates(replace(base, baseline=False), (), _shape(), 4)[1] == []


def test_with_a_parameter_budget_the_depth_varies_within_it() -> None:
    base = config(student(hidden_sizes=[32]), method(), training(epochs=3))
    students, _ = candidates(base, ("shift",), _shape(max_parameters=5000), 32)
    depths = {len(c.config.student.hidden_sizes) for c in students}
    assert depths == {1, 2, 3}


def test_search_chooses_on_validation_and_scores_the_test_rows_once(
    digits: tuple[Any, Splits],
) -> None:
    teacher, splits = digits
    base = config(student(hidden_sizes=[32]), method(), training(epochs=3))
    stages: list[str] = []
    inputs = MethodInputs(
        base,
        (teacher,),
        splits,
        TrainingCallbacks(stage=stages.append),
        search=SearchSettings(budget=3, shape=_shape()),
    )
    result = run_method("search", inputs)
    assert result.search is not None and len(result.search) == 6
    students = [s for s in result.search if s.kind == "student"]
    scratch = [s for s in result.search if s.kind == "scratch"]
    [chosen] = [s for s in students if s.chosen]
    assert chosen.validation_accuracy == max(s.validation_accuracy or 0 for s in students)
    assert sum(s.chosen for s in scratch) == 1
    assert all(s.agreement is not None and s.parameters > 0 for s in result.search)
    assert stages[:2] == ["student_candidate_1_of_3", "student_candidate_2_of_3"]
    assert "scratch_candidate_3_of_3" in stages
    outcome = result.outcome
    assert outcome.test.student.shape == (len(splits.test.x), 10)
    assert outcome.test.scratch is not None and outcome.scratch_student is not None
    assert outcome.validation_accuracy == chosen.validation_accuracy


def test_a_failed_candidate_is_recorded_and_the_search_goes_on(
    digits: tuple[Any, Splits], monkeypatch: pytest.MonkeyPatch
) -> None:
    teacher, splits = digits
    real = search_method.distill
    calls = {"n": 0}

    def second_fails(inputs: MethodInputs, device: str | None = None) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise LossNotFinite("the loss overflowed at this temperature")
        return real(inputs, device)

    monkeypatch.setattr(search_method, "distill", second_fails)
    base = config(student(hidden_sizes=[16]), method(), training(epochs=2), baseline=False)
    inputs = MethodInputs(base, (teacher,), splits, search=SearchSettings(2, _shape()))
    result = run_method("search", inputs)
    assert result.search is not None
    failed = [s for s in result.search if s.error]
    assert len(failed) == 1 and "overflowed" in (failed[0].error or "")
    assert failed[0].number == 2 and not failed[0].chosen
    assert result.search[0].chosen


class MemoryCheckpoints:
    def __init__(self) -> None:
        self.saved: dict[str, bytes] = {}

    def load(self, run: str) -> bytes | None:
        return self.saved.get(run)

    def save(self, run: str, epoch: int, data: bytes) -> None:
        self.saved[run] = data


def test_a_resumed_search_does_not_train_finished_candidates_again(
    digits: tuple[Any, Splits], tmp_path: Path
) -> None:
    teacher, splits = digits
    base = config(student(hidden_sizes=[16]), method(), training(epochs=2))
    store = MemoryCheckpoints()
    epochs: list[int] = []
    inputs = MethodInputs(
        base,
        (teacher,),
        splits,
        TrainingCallbacks(on_epoch=lambda r: epochs.append(r.epoch)),
        search=SearchSettings(2, _shape()),
    )
    with run_hooks(RunHooks(checkpoints=store)):
        first = run_method("search", inputs)
    assert epochs == [1, 2, 1, 2]  # the two student candidates (scratch reports elsewhere)
    epochs.clear()
    with run_hooks(RunHooks(checkpoints=store)):
        again = run_method("search", inputs)
    assert epochs == []  # every candidate restored from its checkpoint
    assert first.search is not None and again.search is not None
    assert [s.validation_accuracy for s in again.search] == [
        s.validation_accuracy for s in first.search
    ]
