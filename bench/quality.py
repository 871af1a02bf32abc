"""Quality benchmark: are Distillery's students better than the same students from scratch?
(CPU, minutes)

    .venv/bin/python bench/quality.py [--seeds 3] [--tables methods,crossdomain]

Methods table (docs/methods.md §1-4, §8): on scikit-learn's digits and MNIST-1D (the `mnist1d`
generator), for each seed two teachers are trained here and exported to ONNX; the service's
engine then trains one student about 10x smaller than the teacher from scratch, by KD, by KD
through one teacher assistant, by early-stopped KD and from the ensemble of both teachers.
Every distilled row also learns from a synthesized transfer set (50,000 mixup rows of the
training rows, labeled by the teacher); scratch trains the same student on the labeled rows
with the same epochs, batch size, learning rate and seed (it has no teacher to label
synthesized rows). Since the transfer rows give the distilled student more optimizer steps per
epoch, a second scratch row trains for as many steps as KD does (more epochs on the labeled
rows), so the gain cannot be put down to a longer schedule.

Cross-domain table (docs/methods.md §6): a 1,000-row MNIST-1D target set, and for each
mapping phi a teacher trained on 3,000 rows of another domain (phi applied to MNIST-1D rows
of another seed; for the VAE, another modality as in Bayazitov's thesis: scikit-learn's
1,797 8x8 digit images, paired by class with the signals); each phi against the student
without a teacher. Prints mean ± std test accuracy and the share of the teacher-scratch gap
closed. No model selection is done on the test rows."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.jobs.spec import (  # noqa: E402  (the service's defaults)
    JobCreate,
    JobSpec,
    KDMethodConfig,
    TrainingConfig,
)
from app.settings import Settings  # noqa: E402
from tests.support import engine as support  # noqa: E402
from tests.support.teachers import save_onnx  # noqa: E402
from worker.engine import (  # noqa: E402
    ArraySplit,
    DilatedConvMapping,
    DistillConfig,
    DistillOutcome,
    EnsembleTeacher,
    GaussianNoiseMapping,
    IdentityMapping,
    MappedTeacher,
    Mapping,
    MethodInputs,
    OnnxMapping,
    Splits,
    Teacher,
    TransferRows,
    VaeSpec,
    assistant_specs,
    load_teacher,
    run_method,
    stratified_split,
    synthesize,
    train_vae,
)
from worker.engine.methods.registry import SearchSettings  # noqa: E402
from worker.engine.search import StudentShape  # noqa: E402
from worker.pipeline.defaults import choose_transfer  # noqa: E402
from worker.pipeline.plan import (  # noqa: E402
    engine_method,
    engine_training,
    student_plan,
    synthesis_specs,
)
from worker.pipeline.teacher import MappingInputs, build_mapping  # noqa: E402
from worker.pipeline.verdict import recommend  # noqa: E402

MIXUP_ROWS = 50_000  # the methods table's transfer set
CROSS_MIXUP_ROWS = 5_000  # the cross-domain table's
SCRATCH = "scratch (no teacher)"
NAME_WIDTH = 42


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def mlp(inputs: int, hidden: int, depth: int = 2) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = inputs
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, 10))


def cnn2d() -> nn.Module:
    """A small 2-D CNN for 8x8 digits (30,634 parameters)."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 2 * 2, 10),
    )


def cnn1d(length: int, channels: int = 64) -> nn.Module:
    """The MNIST-1D paper's small 1-D CNN, wider."""
    return nn.Sequential(
        nn.Unflatten(1, (1, length)),
        nn.Conv1d(1, channels, 5, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.LazyLinear(10),
    )


@dataclass(frozen=True)
class Task:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    teacher: Callable[[], nn.Module]
    teacher_epochs: int
    teacher_lr: float
    student_hidden: tuple[int, ...]


def mnist1d(seed: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed, args.num_samples = seed, rows
    data = make_dataset(args)
    x = np.concatenate([data["x"], data["x_test"]]).astype(np.float32)
    return x, np.concatenate([data["y"], data["y_test"]]).astype(np.int64)


def mnist1d_task() -> Task:
    from mnist1d.data import get_dataset_args, make_dataset

    data = make_dataset(get_dataset_args())  # 4,000 train / 1,000 test, seed 42
    return Task(
        name="MNIST-1D",
        x_train=data["x"].astype(np.float32),
        y_train=data["y"].astype(np.int64),
        x_test=data["x_test"].astype(np.float32),
        y_test=data["y_test"].astype(np.int64),
        teacher=lambda: cnn1d(40, 192),  # 232,330 parameters
        teacher_epochs=40,
        teacher_lr=3e-3,
        student_hidden=(128, 128),  # 23,050 parameters
    )


def digits_task() -> Task:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return Task(
        name="digits",
        x_train=x[:500],
        y_train=y[:500],
        x_test=x[500:],
        y_test=y[500:],
        teacher=cnn2d,  # 30,634 parameters
        teacher_epochs=60,
        teacher_lr=1e-3,
        student_hidden=(32,),  # 2,410 parameters
    )


def train_teacher(
    make: Callable[[], nn.Module],
    x_np: np.ndarray,
    y_np: np.ndarray,
    epochs: int,
    lr: float,
    seed: int,
    path: Path,
    checkpoints: tuple[int, ...] = (),
) -> Teacher:
    """Train with plain cross-entropy and hand the ONNX file to the service's loader. The
    model is also exported after each epoch in `checkpoints`, as `<path stem>-e<epoch>.onnx`
    (an early-stopped teacher's checkpoints)."""
    torch.manual_seed(seed)
    model = make()
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    model(x[:2])  # materializes lazy layers
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for epoch in range(1, epochs + 1):
        model.train()
        for idx in torch.randperm(len(x)).split(100):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        if epoch in checkpoints:
            model.eval()
            save_onnx(model, x[:2], checkpoint_path(path, epoch))
    model.eval()
    save_onnx(model, x[:2], path)
    return load_teacher(path)


def checkpoint_path(path: Path, epoch: int) -> Path:
    return path.with_name(f"{path.stem}-e{epoch}.onnx")


def task_teachers(
    task: Task, seed: int, folder: Path, table: str, checkpoints: tuple[int, ...] = ()
) -> list[Teacher]:
    """The task's two teachers for a seed (seeds seed*100 and seed*100 + 1), as ONNX files;
    the first also saved after each epoch in `checkpoints` (see teacher_checkpoints)."""
    return [
        train_teacher(
            task.teacher,
            task.x_train,
            task.y_train,
            task.teacher_epochs,
            task.teacher_lr,
            seed * 100 + k,
            teacher_path(task, seed, folder, table, k),
            checkpoints if k == 0 else (),
        )
        for k in range(2)
    ]


def teacher_path(task: Task, seed: int, folder: Path, table: str, k: int) -> Path:
    return folder / f"{table}-{task.name}-{seed}-{k}.onnx"


def config(
    hidden: tuple[int, ...],
    seed: int,
    alpha: float,
    kd_stop: int | None = None,
    epochs: int | None = None,
) -> DistillConfig:
    """The service's defaults (app/jobs/spec.py) but for what a row of the table changes."""
    training = support.training(seed=seed)
    if epochs is not None:  # the same-steps scratch row may train past the API's 1,000 epochs
        training = replace(training, epochs=epochs)
    return support.config(
        support.student(hidden_sizes=hidden),
        support.method(alpha=alpha, kd_stop_epoch=kd_stop),
        training,
        baseline=False,  # the scratch student is its own row of the table
    )


def run(cfg: DistillConfig, teacher: Teacher, splits: Splits) -> DistillOutcome:
    return support.kd(cfg, teacher, splits)


def student_accuracy(cfg: DistillConfig, teacher: Teacher, splits: Splits) -> float:
    return float(run(cfg, teacher, splits).test.student_accuracy or 0.0)


def steps(rows: int, epochs: int, batch: int) -> int:
    return epochs * -(-rows // batch)


def same_steps_epochs(task: Task) -> int:
    """Epochs on the labeled rows alone that give scratch at least KD's optimizer steps."""
    training = TrainingConfig()
    target = steps(len(task.x_train) + MIXUP_ROWS, training.epochs, training.batch_size)
    per_epoch = steps(len(task.x_train), 1, training.batch_size)
    return -(-target // per_epoch)


def methods_run(task: Task, seeds: list[int], folder: Path) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    test = ArraySplit(task.x_test, task.y_test)
    labeled = Splits(ArraySplit(task.x_train, task.y_train), test, test)
    epochs = TrainingConfig().epochs
    alpha = KDMethodConfig().alpha
    long = same_steps_epochs(task)
    for seed in seeds:
        started = time.perf_counter()
        teachers = task_teachers(task, seed, folder, "methods")
        teacher = teachers[0]
        mixup = synthesize(task.x_train, support.synthesis("mixup", MIXUP_ROWS, seed=seed))
        rich = Splits(labeled.train, test, test, (TransferRows("mixup", mixup),))
        kd = config(task.student_hidden, seed, alpha)
        student = kd.student
        [assistant] = assistant_specs(
            student, teacher.input_shape, teacher.num_classes, teacher.parameters, 1
        )
        ta = run_method("assistants", MethodInputs(kd, (teacher,), rich, assistants=(assistant,)))
        ensemble = EnsembleTeacher(teachers, kd.method.temperature)
        row = {
            "teacher": float((teacher.logits(task.x_test).argmax(1) == task.y_test).mean()),
            SCRATCH: student_accuracy(config(task.student_hidden, seed, 1.0), teacher, labeled),
            f"scratch, KD's steps ({long} epochs)": student_accuracy(
                config(task.student_hidden, seed, 1.0, epochs=long), teacher, labeled
            ),
            "KD": student_accuracy(kd, teacher, rich),
            "KD, 1 assistant": float(ta.outcome.test.student_accuracy or 0.0),
            f"early-stopped KD ({epochs // 2}/{epochs})": student_accuracy(
                config(task.student_hidden, seed, alpha, kd_stop=epochs // 2), teacher, rich
            ),
            "KD, ensemble of 2": student_accuracy(kd, ensemble, rich),
        }
        for name, acc in row.items():
            results.setdefault(name, []).append(acc)
        shown = ", ".join(f"{k} {v:.3f}" for k, v in row.items())
        log(f"  {task.name} seed {seed}: {shown} ({time.perf_counter() - started:.0f} s)")
    return results


def markdown(title: str, results: dict[str, list[float]], scratch: str = SCRATCH) -> str:
    teacher = statistics.mean(results["teacher"])
    base = statistics.mean(results[scratch])
    lines = [
        title,
        "",
        f"| {'student':<{NAME_WIDTH}} | {'test accuracy':>15} | {'gap closed':>10} |",
        f"|{'-' * (NAME_WIDTH + 2)}|{'-' * 17}|{'-' * 12}|",
    ]
    for name, values in results.items():
        mean = statistics.mean(values)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        plain = name == "teacher" or name.startswith("scratch")
        gap = "" if plain else f"{(mean - base) / (teacher - base):.0%}"
        lines.append(f"| {name:<{NAME_WIDTH}} | {mean:>7.3f} ± {std:.3f} | {gap:>10} |")
    return "\n".join(lines)


def methods_table(task: Task, results: dict[str, list[float]]) -> str:
    student = config(task.student_hidden, 0, 1.0).student
    teacher_params = sum(p.numel() for p in _materialized(task))
    from worker.engine import build_student, count_parameters

    student_params = count_parameters(build_student(student, task.x_train.shape[1:], 10))
    return markdown(
        f"**{task.name}**: {len(task.x_train):,} labeled rows, {len(task.x_test):,} test rows, "
        f"teacher {teacher_params:,} parameters, student MLP "
        f"{'-'.join(map(str, task.student_hidden))} ({student_params:,} parameters, "
        f"{teacher_params / student_params:.0f}x smaller), {len(results['teacher'])} seeds; "
        f"every distilled row also learns from {MIXUP_ROWS:,} mixup rows labeled by the "
        "teacher, scratch from the labeled rows only (same student, epochs, batch, lr, seed; "
        "the second scratch row trains for as many optimizer steps as KD). Gap closed: "
        "against the first scratch row.",
        results,
    )


def _materialized(task: Task) -> list[nn.Parameter]:
    model = task.teacher()
    model(torch.from_numpy(task.x_train[:2]))
    return list(model.parameters())


# ---- defaults: the job a user gets with only a teacher and a training dataset -------------
# (`--tables defaults`): the service's defaults end to end, on the same plan the worker
# makes: 15% of the labeled rows held out for validation as a job does, the default student,
# method and training, and the default transfer set chosen for the data's kind
# (worker/pipeline/defaults.py); scratch is the job's own baseline (labeled rows only).


SEARCH_BUDGET = 8


def default_job_spec(**fields: object) -> JobSpec:
    body = {"teacher_id": "tch_bench", "train_dataset_id": "ds_bench", **fields}
    return JobCreate.model_validate(body).to_spec()


def job_splits(task: Task, seed: int) -> Splits:
    """The job's split of the labeled rows (15% validation), and the task's test rows."""
    train, validation, _ = stratified_split(task.y_train, (0.85, 0.15, 0.0), seed)
    return Splits(
        ArraySplit(task.x_train[train], task.y_train[train]),
        ArraySplit(task.x_train[validation], task.y_train[validation]),
        ArraySplit(task.x_test, task.y_test),
    )


def default_transfer(spec: JobSpec, splits: Splits) -> tuple[TransferRows, ...]:
    chosen = choose_transfer(spec, splits.train.x, Settings().auto_transfer_max_rows)
    log(f"    transfer: {chosen.choice.reason}")
    specs = synthesis_specs(chosen.config) if chosen.config is not None else []
    return tuple(TransferRows(s.method, synthesize(splits.train.x, s)) for s in specs)


CHECKPOINT_FRACTIONS = (4, 2)  # the early-stopped teacher's: after 1/4 and 1/2 of training


def teacher_checkpoints(task: Task, seed: int, folder: Path) -> list[Teacher]:
    """The first defaults teacher after a quarter, a half and all of its training."""
    path = teacher_path(task, seed, folder, "defaults", 0)
    early = [task.teacher_epochs // k for k in CHECKPOINT_FRACTIONS]
    return [*(load_teacher(checkpoint_path(path, e)) for e in early), load_teacher(path)]


def middle_hint(teacher: Teacher) -> str:
    """The teacher's middle per-row tensor: FitNets guide the student's middle layer with it."""
    candidates = list(getattr(teacher, "details", {}).get("hint_candidates", []))
    return str(candidates[len(candidates) // 2])


def job_config(spec: JobSpec, teacher: Teacher, seed: int, baseline: bool) -> DistillConfig:
    """The engine config a job makes of `spec` (the default student sized from the teacher)."""
    default_student, _ = student_plan(spec, teacher)
    return DistillConfig(
        student=default_student,
        method=engine_method(spec.method),
        training=replace(engine_training(spec.training), seed=seed),
        baseline=baseline,
    )


def phi_teacher(teacher: Teacher, phi: str, splits: Splits) -> MappedTeacher:
    """The teacher through phi with the spec's defaults for that phi, built as a job builds it."""
    cross = default_job_spec(cross_domain={"phi": phi}).cross_domain
    assert cross is not None
    given = MappingInputs(tuple(teacher.input_shape), splits, None, None)  # type: ignore[arg-type]
    return MappedTeacher(teacher, build_mapping(cross, given))


def method_outcomes(
    teachers: list[Teacher], checkpoints: list[Teacher], labeled: Splits, rich: Splits, seed: int
) -> dict[str, DistillOutcome]:
    """The default job and, in a row each, every method with only its own fields set. Only
    the default job trains the scratch baseline; the others share it (same student, rows,
    budget and seed)."""
    teacher = teachers[0]
    job_cfg = job_config(default_job_spec(), teacher, seed, baseline=True)
    cfg = replace(job_cfg, baseline=False)

    def own(**fields: object) -> DistillConfig:
        return job_config(default_job_spec(**fields), teacher, seed, baseline=False)

    [assistant] = assistant_specs(
        cfg.student, teacher.input_shape, teacher.num_classes, teacher.parameters, 1
    )
    shape = StudentShape(cfg.student, teacher.input_shape, teacher.num_classes, None)
    search = SearchSettings(SEARCH_BUDGET, shape)
    hint = own(method={"hint": {"teacher_output": middle_hint(teacher)}})
    found = {
        "default job": run(job_cfg, teacher, rich),
        f"default job, search budget {SEARCH_BUDGET}": run_method(
            "search", MethodInputs(job_cfg, (teacher,), rich, search=search)
        ).outcome,
        "default job, KD on labeled rows only": run(cfg, teacher, labeled),
        "ensemble of 2 (teacher_ids)": run(
            cfg, EnsembleTeacher(teachers, cfg.method.temperature), rich
        ),
        "1 assistant (assistants.count 1)": run_method(
            "assistants", MethodInputs(cfg, (teacher,), rich, assistants=(assistant,))
        ).outcome,
        "early-stopped KD (kd_stop_epoch 10)": run(
            own(method={"kd_stop_epoch": 10}), teacher, rich
        ),
        "early-stopped teacher (3 checkpoints)": run_method(
            "early_stopped_teacher", MethodInputs(cfg, tuple(checkpoints), rich)
        ).outcome,
        "FitNets hint (the teacher's middle tensor)": run(hint, teacher, rich),
    }
    for phi in ("identity", "gaussian_noise", "dilated_conv"):
        found[f"cross-domain phi {phi}"] = run(cfg, phi_teacher(teacher, phi, rich), rich)
    return found


def defaults_run(task: Task, seeds: list[int], folder: Path) -> DefaultsResults:
    results = DefaultsResults()
    epochs = TrainingConfig().epochs
    for seed in seeds:
        started = time.perf_counter()
        marks = tuple(task.teacher_epochs // k for k in CHECKPOINT_FRACTIONS)
        teachers = task_teachers(task, seed, folder, "defaults", marks)
        labeled = job_splits(task, seed)
        rich = replace(labeled, transfer=default_transfer(default_job_spec(), labeled))
        checkpoints = teacher_checkpoints(task, seed, folder)
        outcomes = method_outcomes(teachers, checkpoints, labeled, rich, seed)
        job = outcomes["default job"]
        searched = outcomes[f"default job, search budget {SEARCH_BUDGET}"]
        results.add("teacher", float(job.test.teacher_accuracy or 0.0))
        results.add(SCRATCH, float(job.test.scratch_accuracy or 0.0))
        for name, outcome in outcomes.items():
            shared = replace(outcome, scratch_history=job.scratch_history)
            recommendation, warnings = recommend(shared)
            ships = recommendation is not None and recommendation.ship == "student"
            results.add(name, float(outcome.test.student_accuracy or 0.0), ships, warnings)
            if name == f"default job, search budget {SEARCH_BUDGET}":
                scratch = float(searched.test.scratch_accuracy or 0.0)
                results.add(f"scratch, search budget {SEARCH_BUDGET}", scratch)
        assert len(job.history) == epochs
        shown = ", ".join(f"{k} {v[-1]:.3f}" for k, v in results.accuracy.items())
        log(f"  defaults {task.name} seed {seed}: {shown} ({time.perf_counter() - started:.0f} s)")
    return results


@dataclass
class DefaultsResults:
    """Test accuracy per row and seed, and for distilled rows what the job would recommend
    on its validation rows (the student, or scratch) and whether it warned."""

    accuracy: dict[str, list[float]] = field(default_factory=dict)
    ships_student: dict[str, list[bool]] = field(default_factory=dict)
    warned: dict[str, list[bool]] = field(default_factory=dict)

    def add(
        self, name: str, value: float, ships: bool | None = None, warnings: list[str] | None = None
    ) -> None:
        self.accuracy.setdefault(name, []).append(value)
        if ships is not None:
            self.ships_student.setdefault(name, []).append(ships)
            self.warned.setdefault(name, []).append(bool(warnings))


def defaults_table(task: Task, results: DefaultsResults) -> str:
    seeds = len(results.accuracy["teacher"])
    table = markdown(
        f"**{task.name}, defaults**: {len(task.x_train):,} labeled rows (15% held out for "
        f"validation, as a job does), {len(task.x_test):,} test rows; the default student "
        "(an MLP sized from the teacher), method and training; every distilled row with the "
        "default transfer set for the data's kind and only its method's own fields set; "
        f"scratch is the job's own baseline; {seeds} seeds. Ships: in how many seeds the job "
        "recommends the distilled student over scratch (on its validation rows); warned: in "
        "how many it carried a warning.",
        results.accuracy,
    ).split("\n")
    table[2] += " ships | warned |"
    table[3] += "-------|--------|"
    for i, name in enumerate(results.accuracy, start=4):
        if name in results.ships_student:
            ships, warned = sum(results.ships_student[name]), sum(results.warned[name])
            table[i] += f" {ships}/{seeds}   | {warned}/{seeds}    |"
        else:
            table[i] += "       |        |"
    return "\n".join(table)


# ---- int8: the quantized student against the fp32 one, per student kind --------------------
# (`--tables int8`): the default job's student (mlp) and a cnn student on digits, distilled
# with the default transfer set, exported, quantized as a job does (dynamic for mlp, static
# for cnn) and measured on the test rows in onnxruntime.


def int8_run(task: Task, seeds: list[int], folder: Path) -> list[dict[str, float | str]]:
    from worker.engine import export_onnx
    from worker.engine.evaluation import onnx_latency_ms
    from worker.engine.quantize import mode_for, onnx_logits, quantize_student

    rows: list[dict[str, float | str]] = []
    spec = default_job_spec()
    for seed in seeds:
        teacher = train_teacher(
            task.teacher,
            task.x_train,
            task.y_train,
            task.teacher_epochs,
            task.teacher_lr,
            seed,
            folder / f"int8-{task.name}-{seed}.onnx",
        )
        labeled = job_splits(task, seed)
        rich = replace(labeled, transfer=default_transfer(spec, labeled))
        for kind, layout in (
            ("mlp (default, sized)", student_plan(spec, teacher)[0]),
            ("cnn 16-32", support.student("cnn", channels=[16, 32])),
        ):
            cfg = support.config(layout, support.method(), support.training(seed=seed))
            outcome = run(cfg, teacher, rich)
            fp32 = export_onnx(
                outcome.student, teacher.input_shape, folder / "s.onnx", task.x_test[:64]
            )
            built = quantize_student(
                fp32.path, folder / "s.int8.onnx", mode_for(layout.architecture), rich.train.x
            )
            for name, path, size in (
                ("fp32", fp32.path, fp32.bytes),
                ("int8", built.path, built.bytes),
            ):
                logits = onnx_logits(path, task.x_test)
                rows.append(
                    {
                        "student": f"{kind}, {name}"
                        + (f" ({built.mode})" if name == "int8" else ""),
                        "seed": seed,
                        "accuracy": float((logits.argmax(1) == task.y_test).mean()),
                        "bytes": float(size),
                        "ms_1": onnx_latency_ms(path, teacher.input_shape, 1),
                        "ms_64": onnx_latency_ms(path, teacher.input_shape, 64),
                    }
                )
        log(f"  int8 {task.name} seed {seed}: {rows[-4:]}")
    return rows


def int8_table(task: Task, rows: list[dict[str, float | str]]) -> str:
    names = list(dict.fromkeys(str(r["student"]) for r in rows))
    lines = [
        f"**{task.name}, int8**: {len(task.x_test):,} test rows, onnxruntime on this CPU "
        f"(median of 30 runs), {len({r['seed'] for r in rows})} seeds.",
        "",
        "| student | test accuracy | bytes | ms, batch 1 | ms, batch 64 |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        mine = [r for r in rows if r["student"] == name]
        mean = {
            k: statistics.mean(float(r[k]) for r in mine)
            for k in ("accuracy", "bytes", "ms_1", "ms_64")
        }
        lines.append(
            f"| {name} | {mean['accuracy']:.3f} | {mean['bytes']:,.0f} | {mean['ms_1']:.3f} | "
            f"{mean['ms_64']:.3f} |"
        )
    return "\n".join(lines)


# ---- cross-domain (docs/methods.md §6) --------------------------------------------------------

TARGET_ROWS, SOURCE_ROWS, TEST_ROWS = 1_000, 3_000, 2_000


VAE_ROW = "VAE (source: 8x8 digit images)"


def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """The VAE's source domain: scikit-learn's 1,797 digits, [1, 8, 8] in [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32)[:, None], digits.target.astype(np.int64)


def vae_spec(seed: int) -> VaeSpec:
    """The service's defaults for a job's VAE (cross_domain.phi = "vae")."""
    return support.vae_spec(seed=seed)


class Negate(nn.Module):
    """The ONNX mapping's domain change: signals negated and reversed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -torch.flip(x, dims=[1])


def export_mapping(path: Path) -> Path:
    save_onnx(Negate(), torch.zeros(2, 40), path)
    return path


def crossdomain_run(seeds: list[int], folder: Path) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    hidden = (64,)
    for seed in seeds:
        started = time.perf_counter()
        x_all, y_all = mnist1d(1000 + seed, TARGET_ROWS + TEST_ROWS)
        x_t, y_t = x_all[:TARGET_ROWS], y_all[:TARGET_ROWS]
        test = ArraySplit(x_all[TARGET_ROWS:], y_all[TARGET_ROWS:])
        x_big, y_big = mnist1d(2000 + seed, SOURCE_ROWS)  # the teachers' own rows
        mappings: dict[str, Mapping] = {
            "identity": IdentityMapping((40,)),
            "gaussian noise (sigma 0.3)": GaussianNoiseMapping((40,), 0.3, seed),
            "dilated conv (k 3, dilation 2)": DilatedConvMapping((40,), 3, 2, [0.25, 0.5, 0.25]),
            "ONNX mapping (negate, reverse)": OnnxMapping(
                export_mapping(folder / "negate.onnx"), (40,)
            ),
        }
        teachers: dict[str, Teacher] = {}
        for name, phi in mappings.items():
            # The teacher's domain is phi of MNIST-1D: it was trained on phi(x_big).
            source = train_teacher(
                lambda: cnn1d(40), phi(x_big), y_big, 25, 3e-3, seed, folder / f"t-{seed}.onnx"
            )
            teachers[name] = MappedTeacher(source, phi)
        # The VAE's teacher reads another modality, as in Bayazitov's thesis (garments to digits):
        # 8x8 digit images, paired by class with the 1-D signals of the target set.
        x_s, y_s = digit_images()
        source = train_teacher(cnn2d, x_s, y_s, 60, 1e-3, seed, folder / f"vae-t-{seed}.onnx")
        vae = train_vae(x_t, y_t, x_s, y_s, vae_spec(seed))
        teachers[VAE_ROW] = MappedTeacher(source, vae)
        labeled = Splits(ArraySplit(x_t, y_t), test, test)
        mixup = (
            TransferRows(
                "mixup", synthesize(x_t, support.synthesis("mixup", CROSS_MIXUP_ROWS, seed=seed))
            ),
        )
        generated = (
            TransferRows(
                "vae", synthesize(x_t, support.synthesis("vae", CROSS_MIXUP_ROWS, seed=seed), vae)
            ),
        )
        kd = config(hidden, seed, KDMethodConfig().alpha)
        row: dict[str, float] = {}
        for name, teacher in teachers.items():
            outcome = run(kd, teacher, Splits(labeled.train, test, test, mixup))
            row[f"teacher o phi: {name}"] = float(outcome.test.teacher_accuracy or 0.0)
            row[f"KD, phi = {name}"] = float(outcome.test.student_accuracy or 0.0)
        vae_teacher = teachers[VAE_ROW]
        outcome = run(kd, vae_teacher, Splits(labeled.train, test, test, generated))
        row["KD, phi = VAE, VAE-generated rows"] = float(outcome.test.student_accuracy or 0.0)
        row[SCRATCH] = student_accuracy(config(hidden, seed, 1.0), vae_teacher, labeled)
        rec = vae.describe()["reconstruction"]
        row["VAE source MSE"], row["VAE target MSE"] = rec["source_mse"], rec["target_mse"]
        for name, value in row.items():
            results.setdefault(name, []).append(value)
        log(
            f"  cross-domain seed {seed}: "
            + ", ".join(f"{k} {v:.3f}" for k, v in row.items())
            + f" ({time.perf_counter() - started:.0f} s)"
        )
    return results


def crossdomain_table(results: dict[str, list[float]]) -> str:
    def cell(values: list[float]) -> str:
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.3f} ± {std:.3f}"

    scratch = statistics.mean(results[SCRATCH])
    lines = [
        f"**Cross-domain, MNIST-1D**: {TARGET_ROWS:,} labeled target rows, {TEST_ROWS:,} test "
        f"rows; each teacher trained on its own domain (a 1-D CNN on {SOURCE_ROWS:,} rows of "
        "phi(MNIST-1D); the VAE's a 2-D CNN on the 1,797 8x8 digit images); "
        f"student MLP 64; distilled rows also learn from {CROSS_MIXUP_ROWS:,} mixup rows of the "
        f"target set (the VAE-generated row from {CROSS_MIXUP_ROWS:,} VAE-decoded rows "
        "instead); "
        f"{len(results[SCRATCH])} seeds. Student without a teacher: {cell(results[SCRATCH])}.",
        "",
        f"| {'phi':<38} | {'teacher o phi':>15} | {'student':>15} | {'vs scratch':>10} |",
        f"|{'-' * 40}|{'-' * 17}|{'-' * 17}|{'-' * 12}|",
    ]
    for key in results:
        if not key.startswith("KD, phi = "):
            continue
        name = key.removeprefix("KD, phi = ")
        teacher = results.get(f"teacher o phi: {name}") or results.get(
            f"teacher o phi: {VAE_ROW}", []
        )
        gain = statistics.mean(results[key]) - scratch
        lines.append(
            f"| {name:<38} | {cell(teacher):>15} | {cell(results[key]):>15} | {gain:>+10.3f} |"
        )
    lines.append(
        f"\nVAE reconstruction (MSE per feature, standardized units): source "
        f"{cell(results['VAE source MSE'])}, target {cell(results['VAE target MSE'])}."
    )
    return "\n".join(lines)


# ---- transfer sets: do synthesized and unlabeled rows make better students? ----------------
# (`--tables transfer`, about 15 minutes: the README's transfer-set tables)

SYNTHETIC_ROWS = 50_000


@dataclass(frozen=True)
class TransferTask:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    unlabeled: np.ndarray  # real inputs without labels, from the same source
    teacher: Callable[[], nn.Module]
    teacher_epochs: int
    teacher_lr: float
    student_hidden: tuple[int, ...]


def transfer_mnist1d_task() -> TransferTask:
    from mnist1d.data import get_dataset_args, make_dataset

    data = make_dataset(get_dataset_args())  # 4,000 train / 1,000 test, seed 42
    extra_args = get_dataset_args()
    extra_args.seed, extra_args.num_samples, extra_args.train_split = 7, 67_500, 0.8
    extra = make_dataset(extra_args)  # another seed: 54,000 rows whose labels we drop

    def small_cnn() -> nn.Module:  # the MNIST-1D paper's small 1-D CNN
        return nn.Sequential(
            nn.Unflatten(1, (1, 40)),
            nn.Conv1d(1, 25, 5, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(25, 25, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(25, 25, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(25 * 5, 10),
        )

    return TransferTask(
        name="MNIST-1D",
        x_train=data["x"].astype(np.float32),
        y_train=data["y"].astype(np.int64),
        x_test=data["x_test"].astype(np.float32),
        y_test=data["y_test"].astype(np.int64),
        unlabeled=extra["x"].astype(np.float32),
        teacher=small_cnn,
        teacher_epochs=150,
        teacher_lr=1e-2,
        student_hidden=(256, 256),
    )


def transfer_digits_task() -> TransferTask:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    labeled, unlabeled, test = slice(0, 500), slice(500, 1300), slice(1300, None)

    def big_mlp() -> nn.Module:
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(64, 1200),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(1200, 1200),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(1200, 10),
        )

    return TransferTask(
        name="digits",
        x_train=x[labeled],
        y_train=y[labeled],
        x_test=x[test],
        y_test=y[test],
        unlabeled=x[unlabeled],
        teacher=big_mlp,
        teacher_epochs=60,
        teacher_lr=1e-3,
        student_hidden=(32,),
    )


def transfer_teacher(task: TransferTask, seed: int, folder: Path) -> Path:
    torch.manual_seed(seed)
    model = task.teacher()
    x, y = torch.from_numpy(task.x_train), torch.from_numpy(task.y_train)
    opt = torch.optim.Adam(model.parameters(), lr=task.teacher_lr)
    for _ in range(task.teacher_epochs):
        model.train()
        for idx in torch.randperm(len(x)).split(100):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    path = folder / f"{task.name}-teacher-{seed}.onnx"
    save_onnx(model, x[:2], path)
    return path


def transfer_variants(
    task: TransferTask, seed: int
) -> dict[str, tuple[float, tuple[TransferRows, ...]]]:
    """name -> (alpha, transfer rows). alpha 1 trains on hard labels only: from scratch."""
    alpha = KDMethodConfig().alpha
    made = {
        method: synthesize(task.x_train, support.synthesis(method, SYNTHETIC_ROWS, seed=seed))
        for method in ("mixup", "noise", "shift")
    }
    return {
        "scratch (no teacher)": (1.0, ()),
        "KD, labeled rows": (alpha, ()),
        **{f"KD + {m} {SYNTHETIC_ROWS:,}": (alpha, (TransferRows(m, x),)) for m, x in made.items()},
        f"KD + unlabeled {len(task.unlabeled):,}": (
            alpha,
            (TransferRows("unlabeled", task.unlabeled),),
        ),
    }


def transfer_run(task: TransferTask, seeds: list[int], folder: Path) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    test = ArraySplit(task.x_test, task.y_test)
    for seed in seeds:
        teacher = load_teacher(transfer_teacher(task, seed, folder))
        teacher_acc = float((teacher.logits(task.x_test).argmax(1) == task.y_test).mean())
        results.setdefault("teacher", []).append(teacher_acc)
        for name, (alpha, transfer) in transfer_variants(task, seed).items():
            splits = Splits(ArraySplit(task.x_train, task.y_train), test, test, transfer)
            started = time.perf_counter()
            acc = student_accuracy(config(task.student_hidden, seed, alpha), teacher, splits)
            results.setdefault(name, []).append(acc)
            took = time.perf_counter() - started
            log(f"  {task.name} seed {seed} {name}: {acc:.3f} ({took:.1f} s)")
    return results


def transfer_table(task: TransferTask, results: dict[str, list[float]]) -> str:
    teacher = statistics.mean(results["teacher"])
    scratch = statistics.mean(results["scratch (no teacher)"])
    lines = [
        f"{task.name}: {len(task.x_train):,} labeled rows, {len(task.x_test):,} test rows, "
        f"student MLP {'-'.join(map(str, task.student_hidden))}, "
        f"{len(results['teacher'])} seeds",
        f"| {'method':<28} | {'test accuracy':>15} | {'gap closed':>10} |",
        f"|{'-' * 30}|{'-' * 17}|{'-' * 12}|",
    ]
    for name, values in results.items():
        mean = statistics.mean(values)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        gap = "" if name in ("teacher",) else f"{(mean - scratch) / (teacher - scratch):.0%}"
        lines.append(f"| {name:<28} | {mean:>8.3f} ± {std:.3f} | {gap:>10} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--crossdomain-seeds", type=int, default=3)
    parser.add_argument("--tasks", default="digits,mnist1d")
    parser.add_argument(
        "--tables",
        default="methods,crossdomain",
        help="methods, crossdomain, transfer, defaults, int8, text (bench/quality_text.py)",
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    seeds = list(range(args.seeds))
    tables = args.tables.split(",")
    makers = {"mnist1d": mnist1d_task, "digits": digits_task}
    with tempfile.TemporaryDirectory() as tmp:
        if "methods" in tables:
            for key in args.tasks.split(","):
                task = makers[key]()
                print(methods_table(task, methods_run(task, seeds, Path(tmp))) + "\n", flush=True)
        if "defaults" in tables:
            for key in args.tasks.split(","):
                task = makers[key]()
                print(defaults_table(task, defaults_run(task, seeds, Path(tmp))) + "\n", flush=True)
        if "int8" in tables:
            task = digits_task()
            print(int8_table(task, int8_run(task, seeds, Path(tmp))) + "\n", flush=True)
        if "transfer" in tables:
            transfer_makers = {"mnist1d": transfer_mnist1d_task, "digits": transfer_digits_task}
            for key in args.tasks.split(","):
                rich = transfer_makers[key]()
                results = transfer_run(rich, seeds, Path(tmp))
                print(transfer_table(rich, results) + "\n", flush=True)
        if "crossdomain" in tables:
            cross_seeds = list(range(args.crossdomain_seeds))
            print(crossdomain_table(crossdomain_run(cross_seeds, Path(tmp))) + "\n", flush=True)
    if "text" in tables:
        from bench.quality_text import text_table

        print(text_table(seeds) + "\n", flush=True)


if __name__ == "__main__":
    main()
