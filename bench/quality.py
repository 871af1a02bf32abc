"""Quality benchmark: do transfer sets make better students? (CPU, a few minutes)

    .venv/bin/python bench/quality.py [--seeds 3]

On MNIST-1D (the `mnist1d` generator) and scikit-learn's digits, for each seed: a teacher is
trained and exported to ONNX, then the service's engine, with the service's default
hyper-parameters, trains the same MLP student from scratch, by KD on the labeled rows, and by
KD with each kind of transfer set. Prints mean ± std test accuracy and the share of the
teacher-scratch gap closed. No model selection is done on the test rows."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.schemas import KDMethodConfig, TrainingConfig  # noqa: E402  (the service's defaults)
from worker.engine import (  # noqa: E402
    ArraySplit,
    DistillConfig,
    KDMethod,
    Splits,
    StudentSpec,
    SynthesisSpec,
    TrainingSpec,
    TransferRows,
    distill,
    load_teacher,
    synthesize,
)

SYNTHETIC_ROWS = 50_000


@dataclass(frozen=True)
class Task:
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


def mnist1d_task() -> Task:
    from mnist1d.data import get_dataset_args, make_dataset

    data = make_dataset(get_dataset_args())  # 4,000 train / 1,000 test, seed 42
    extra_args = get_dataset_args()
    extra_args.seed, extra_args.num_samples, extra_args.train_split = 7, 67_500, 0.8
    extra = make_dataset(extra_args)  # another seed: 54,000 rows whose labels we drop

    def cnn() -> nn.Module:  # the MNIST-1D paper's small 1-D CNN
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

    return Task(
        name="MNIST-1D",
        x_train=data["x"].astype(np.float32),
        y_train=data["y"].astype(np.int64),
        x_test=data["x_test"].astype(np.float32),
        y_test=data["y_test"].astype(np.int64),
        unlabeled=extra["x"].astype(np.float32),
        teacher=cnn,
        teacher_epochs=150,
        teacher_lr=1e-2,
        student_hidden=(256, 256),
    )


def digits_task() -> Task:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    labeled, unlabeled, test = slice(0, 500), slice(500, 1300), slice(1300, None)

    def mlp() -> nn.Module:
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

    return Task(
        name="digits",
        x_train=x[labeled],
        y_train=y[labeled],
        x_test=x[test],
        y_test=y[test],
        unlabeled=x[unlabeled],
        teacher=mlp,
        teacher_epochs=60,
        teacher_lr=1e-3,
        student_hidden=(32,),
    )


def train_teacher(task: Task, seed: int, folder: Path) -> Path:
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
    torch.onnx.export(
        model,
        (x[:2],),
        str(path),
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        external_data=False,
        dynamo=True,
        verbose=False,
    )
    return path


def variants(task: Task, seed: int) -> dict[str, tuple[float, tuple[TransferRows, ...]]]:
    """name -> (alpha, transfer rows). alpha 1 trains on hard labels only: from scratch."""
    alpha = KDMethodConfig().alpha
    made = {
        method: synthesize(task.x_train, SynthesisSpec(method, SYNTHETIC_ROWS, seed))
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


def run(task: Task, seeds: list[int], folder: Path) -> dict[str, list[float]]:
    defaults_method, defaults_training = KDMethodConfig(), TrainingConfig()
    results: dict[str, list[float]] = {}
    test = ArraySplit(task.x_test, task.y_test)
    for seed in seeds:
        teacher = load_teacher(train_teacher(task, seed, folder))
        teacher_acc = float((teacher.logits(task.x_test).argmax(1) == task.y_test).mean())
        results.setdefault("teacher", []).append(teacher_acc)
        for name, (alpha, transfer) in variants(task, seed).items():
            config = DistillConfig(
                baseline=False,  # the scratch student is its own row of the table
                student=StudentSpec(hidden_sizes=task.student_hidden),
                method=KDMethod(temperature=defaults_method.temperature, alpha=alpha),
                training=replace(
                    TrainingSpec(
                        epochs=defaults_training.epochs,
                        batch_size=defaults_training.batch_size,
                        learning_rate=defaults_training.learning_rate,
                        weight_decay=defaults_training.weight_decay,
                    ),
                    seed=seed,
                ),
            )
            splits = Splits(ArraySplit(task.x_train, task.y_train), test, test, transfer)
            started = time.perf_counter()
            outcome = distill(config, teacher, splits)
            acc = float(outcome.metrics["student_accuracy"])
            results.setdefault(name, []).append(acc)
            print(
                f"  {task.name} seed {seed} {name}: {acc:.3f} "
                f"({time.perf_counter() - started:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
    return results


def table(task: Task, results: dict[str, list[float]]) -> str:
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--tasks", default="mnist1d,digits")
    args = parser.parse_args()
    torch.set_num_threads(2)
    makers = {"mnist1d": mnist1d_task, "digits": digits_task}
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.tasks.split(","):
            task = makers[key]()
            results = run(task, list(range(args.seeds)), Path(tmp))
            print(table(task, results) + "\n", flush=True)


if __name__ == "__main__":
    main()
