"""The engine as a library: distill, export, and check against onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tests.support.engine import config, kd, method, student, training
from tests.support.teachers import digits_mlp_onnx
from worker.engine import (
    ArraySplit,
    DiskLogitCache,
    MethodInputs,
    Splits,
    StudentSpec,
    TransferRows,
    agreement,
    build_student,
    export_onnx,
    load_teacher,
    run_method,
)


@pytest.fixture(scope="module")
def teacher_and_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Splits]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    path = digits_mlp_onnx(x[:1200], y[:1200], 20, tmp_path_factory.mktemp("t") / "teacher.onnx")
    splits = Splits(
        ArraySplit(x[:1000], y[:1000]),
        ArraySplit(x[1000:1200], y[1000:1200]),
        ArraySplit(x[1200:], y[1200:]),
    )
    return path, splits


def test_distill_reports_and_exports(teacher_and_data: tuple[Path, Splits], tmp_path: Path) -> None:
    path, splits = teacher_and_data
    teacher = load_teacher(path)
    seen: list[int] = []
    stages: list[str] = []
    cfg = config(student(hidden_sizes=(32,)), method(4.0, 0.1), training(25))
    outcome = kd(
        cfg, teacher, splits, on_epoch=lambda r: seen.append(r.epoch), on_stage=stages.append
    )
    assert seen == list(range(1, 26))
    assert stages == ["teacher_outputs", "training", "baseline", "evaluating"]
    assert len(outcome.scratch_history) == 25
    test = outcome.test
    assert test.scratch_accuracy is not None and test.scratch_accuracy > 0.8
    assert test.student_accuracy is not None and test.student_accuracy > 0.85
    assert agreement(test.student, test.teacher) > 0.85
    assert outcome.student_parameters == 64 * 32 + 32 + 32 * 10 + 10
    again = kd(cfg, teacher, splits)
    assert again.test.student_accuracy == test.student_accuracy, "seeded runs repeat"

    export = export_onnx(outcome.student, (1, 8, 8), tmp_path / "s.onnx", sample=splits.test.x)
    assert export.max_abs_diff < 1e-4 and export.bytes == (tmp_path / "s.onnx").stat().st_size
    session = ort.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": splits.test.x})[0]
    assert splits.test.y is not None
    assert float((logits.argmax(1) == splits.test.y).mean()) == test.student_accuracy


def test_callback_can_abort(teacher_and_data: tuple[Path, Splits]) -> None:
    path, splits = teacher_and_data

    class Stop(Exception):
        pass

    def stop_at_two(record: object) -> None:
        if record.epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        kd(config(hp=training(50)), load_teacher(path), splits, on_epoch=stop_at_two)


def test_transfer_rows_and_the_output_cache(
    teacher_and_data: tuple[Path, Splits], tmp_path: Path
) -> None:
    path, splits = teacher_and_data
    teacher = load_teacher(path)
    extra = TransferRows("more", splits.train.x[::2] + 0.05)
    with_transfer = Splits(splits.train, splits.validation, splits.test, (extra,))
    cache = DiskLogitCache(tmp_path / "cache")
    cfg = config(hp=training(3))
    outcome = kd(cfg, teacher, with_transfer, cache=cache)
    assert cache.misses == 4 and cache.hits == 0
    assert outcome.transfer.sources == {"more": 500}
    assert outcome.history[-1].soft_loss_transfer is not None
    kd(cfg, teacher, with_transfer, cache=cache)
    assert cache.hits == 4


def test_transfer_rows_keep_teaching_after_kd_stops(teacher_and_data: tuple[Path, Splits]) -> None:
    """Early-stopped KD from epoch 0: hard labels only, and the transfer rows, which have no
    labels, learn the teacher's argmax. 40 labeled rows alone leave the student far from the
    teacher; with the 960 transfer rows labeled by its argmax it follows the teacher."""
    path, splits = teacher_and_data
    teacher = load_teacher(path)
    few = ArraySplit(splits.train.x[:40], splits.train.y[:40])
    extra = TransferRows("rest", splits.train.x[40:])
    stopped = Splits(few, splits.validation, splits.test, (extra,))
    cfg = config(student(hidden_sizes=(32,)), method(kd_stop_epoch=0), training(15))
    outcome = kd(cfg, teacher, stopped)
    assert all(r.soft_loss == 0.0 for r in outcome.history)  # the soft term never trained
    scratch, distilled = outcome.test.scratch_accuracy, outcome.test.student_accuracy
    assert scratch is not None and distilled is not None
    assert distilled > scratch + 0.1
    assert agreement(outcome.test.student, outcome.test.teacher) > 0.85


@pytest.mark.parametrize(
    ("spec", "shape"),
    [
        (student("mlp", hidden_sizes=(16, 8), dropout=0.1, batch_norm=True), (1, 8, 8)),
        (student("cnn", channels=(4, 8)), (1, 8, 8)),
        (student("cnn", channels=(4,)), (2, 40)),
    ],
)
def test_students_take_the_teacher_input(spec: StudentSpec, shape: tuple[int, ...]) -> None:
    model = build_student(spec, shape, 7).eval()
    assert model(torch.zeros(3, *shape)).shape == (3, 7)


def test_cnn_needs_spatial_input() -> None:
    with pytest.raises(ValueError, match="cnn"):
        build_student(student("cnn"), (40,), 3)


def test_ensemble_targets_are_the_mean_softened_outputs() -> None:
    import numpy as np

    from worker.engine import EnsembleTeacher

    class Fixed:
        format, output_kind, output_name, input_shape, num_classes, parameters = (
            "onnx",
            "logits",
            "out",
            (2,),
            3,
            10,
        )
        fingerprint = None

        def __init__(self, logits: np.ndarray) -> None:
            self.value = logits

        def logits(self, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
            return self.value[: len(x)]

    a = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]], np.float32)
    b = np.array([[-1.0, 3.0, 0.5], [1.0, 1.0, 1.0]], np.float32)
    t = 4.0
    ensemble = EnsembleTeacher([Fixed(a), Fixed(b)], t)  # type: ignore[list-item]
    got = torch.softmax(torch.from_numpy(ensemble.logits(np.zeros((2, 2)))) / t, dim=1)
    want = (
        torch.softmax(torch.from_numpy(a) / t, 1) + torch.softmax(torch.from_numpy(b) / t, 1)
    ) / 2
    assert torch.allclose(got, want, atol=1e-6)
    assert ensemble.parameters == 20


def test_assistant_sizes_lie_between_student_and_teacher() -> None:
    from worker.engine import assistant_specs, count_parameters

    small_spec = student(hidden_sizes=(16,))
    specs = assistant_specs(small_spec, (1, 8, 8), 10, teacher_parameters=300_000, count=2)
    sizes = [count_parameters(build_student(s, (1, 8, 8), 10)) for s in specs]
    small = count_parameters(build_student(small_spec, (1, 8, 8), 10))
    assert small < sizes[1] < sizes[0] < 300_000  # trained largest first
    ratio = 300_000 / small
    for size, step in zip(sizes, (2, 1), strict=True):
        assert size == pytest.approx(small * ratio ** (step / 3), rel=0.1)
    with pytest.raises(ValueError, match="no room"):
        assistant_specs(small_spec, (1, 8, 8), 10, teacher_parameters=100, count=1)


def test_distill_through_assistants(teacher_and_data: tuple[Path, Splits]) -> None:
    path, splits = teacher_and_data
    teacher = load_teacher(path)
    cfg = config(student(hidden_sizes=(16,)), hp=training(20))
    specs = (student(hidden_sizes=(64,)), student(hidden_sizes=(32,)))
    result = run_method("assistants", MethodInputs(cfg, (teacher,), splits, assistants=specs))
    steps, outcome = result.assistants, result.outcome
    assert [s.spec.hidden_sizes for s in steps] == [(64,), (32,)]
    assert all(s.accuracy is not None and s.accuracy > 0.7 for s in steps), steps
    assert outcome.teacher_parameters == teacher.parameters
    assert steps[1].parameters == 64 * 32 + 32 + 32 * 10 + 10
    assert outcome.test.student_accuracy is not None and outcome.test.student_accuracy > 0.7
    # Reported against the real teacher, not the last assistant.
    real = teacher.logits(splits.test.x).argmax(1) == splits.test.y
    assert outcome.test.teacher_accuracy == pytest.approx(float(real.mean()))


@pytest.mark.parametrize(
    ("layout", "budget"),
    [(student(hidden_sizes=(64, 32)), 5_000), (student("cnn", channels=(8, 16)), 3_000)],
)
def test_sized_student_fills_the_budget(layout: StudentSpec, budget: int) -> None:
    from worker.engine import count_parameters, sized_student

    chosen = sized_student(layout, (1, 8, 8), 10, budget)
    size = count_parameters(build_student(chosen, (1, 8, 8), 10))
    assert 0.8 * budget < size <= budget
    with pytest.raises(ValueError, match="fits"):
        sized_student(layout, (1, 8, 8), 10, 20)


def test_standardization_is_inside_the_student(tmp_path: Path) -> None:
    from worker.engine.students import fit_standardization

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((200, 3, 4, 4)) * [[[[5.0]], [[0.1]], [[2.0]]]] + 7).astype(np.float32)
    mean, std = fit_standardization(x, per_channel=True)
    assert mean.shape == (3, 1, 1) and np.allclose(mean.ravel(), 7, atol=0.5)
    model = build_student(student("cnn", channels=(4,)), (3, 4, 4), 2, (mean, std)).eval()
    inner = model[0](torch.from_numpy(x)).numpy()
    assert np.allclose(inner.mean(axis=(0, 2, 3)), 0, atol=1e-4)
    assert np.allclose(inner.std(axis=(0, 2, 3)), 1, atol=1e-2)
    export = export_onnx(model, (3, 4, 4), tmp_path / "n.onnx", sample=x[:10])
    assert export.max_abs_diff < 1e-4  # the raw-input ONNX reproduces the standardized model
    flat_mean, _ = fit_standardization(x.reshape(200, -1), per_channel=False)
    assert flat_mean.shape == (48,)


def test_hint_stage_learns_the_teacher_tensor() -> None:
    from worker.engine.hints import hint_layer, hint_stage

    model = build_student(student(hidden_sizes=(32, 16, 8)), (6,), 3)
    assert hint_layer(model) is [m for m in model.modules() if isinstance(m, torch.nn.ReLU)][1]
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((256, 6)).astype(np.float32))
    targets = np.tanh(x.numpy() @ rng.standard_normal((6, 5)).astype(np.float32))
    report = hint_stage(
        model, x, targets, "t", epochs=30, batch_size=32, learning_rate=3e-3, seed=0
    )
    assert report.student_width == 16 and report.teacher_width == 5
    assert report.mse[-1] < 0.5 * report.mse[0]


def test_pt2_digits_teacher_on_flat_inputs_without_labels(tmp_path: Path) -> None:
    """A flat-64 digits MLP saved with torch.export.save: inspected, matched, and distilled
    with alpha = 0 from an unlabeled training split, evaluated on the labeled test split."""
    from sklearn.datasets import load_digits

    from worker.engine import stratified_split

    digits = load_digits()
    x = (digits.data / 16).astype(np.float32)
    y = digits.target.astype(np.int64)
    train, val, test = stratified_split(y, (0.6, 0.1, 0.3), seed=0)
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.ReLU(), torch.nn.Linear(96, 10))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    for _ in range(25):
        for idx in torch.randperm(len(train)).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    model.eval()
    path = tmp_path / "digits.pt2"
    program = torch.export.export(
        model, (xt[:4],), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, path)

    teacher = load_teacher(path)
    assert (teacher.format, teacher.input_shape, teacher.num_classes) == ("pt2", (64,), 10)
    assert teacher.parameters == 64 * 96 + 96 + 96 * 10 + 10
    with torch.no_grad():
        want = model(torch.from_numpy(x[test])).numpy()
    assert np.abs(teacher.logits(x[test]) - want).max() < 1e-5

    splits = Splits(
        ArraySplit(x[train], None), ArraySplit(x[val], None), ArraySplit(x[test], y[test])
    )
    cfg = config(student(hidden_sizes=(32,)), method(4.0, 0.0), training(15, seed=3))
    records: list[float | None] = []
    outcome = kd(cfg, teacher, splits, on_epoch=lambda r: records.append(r.validation_accuracy))
    scores = outcome.test
    assert scores.teacher_accuracy is not None and scores.teacher_accuracy > 0.9
    assert scores.student_accuracy is not None and scores.student_accuracy > 0.85
    assert agreement(scores.student, scores.teacher) > 0.85
    assert all(r is not None for r in records)  # agreement with the teacher, without labels
    assert all(r.hard_loss == 0 for r in outcome.history)
    assert outcome.device in ("cpu", "cuda") and not outcome.student.training
    export = export_onnx(outcome.student, (64,), tmp_path / "s.onnx", sample=x[test][:1])
    assert export.opset >= 17
    # Distilled at alpha 0 and T 4 its logits run to the tens: the check, and this one, are
    # relative to their scale (absolute below 1).
    session = ort.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x[test]})[0]
    with torch.no_grad():
        want = outcome.student(torch.from_numpy(x[test])).numpy()
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))
