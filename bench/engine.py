"""Speed of the engine's training epoch against plain PyTorch loops, in one process.

    .venv/bin/python bench/engine.py [--rows 30000] [--epochs 16]

(a) a minimal hand-written KD loop over teacher logits computed once, and (b) the naive loop
that runs the teacher on every batch. Same data, student, teacher (about 10x the student's
parameters), optimizer, batch size and seed. Prints seconds per epoch and the ratios
engine/(a) (target <= 1.05) and engine/(b) (target <= 0.7)."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.engine import config, kd, method, training  # noqa: E402
from tests.support.engine import student as student_spec  # noqa: E402
from tests.support.teachers import save_onnx  # noqa: E402
from worker.engine import (  # noqa: E402
    ArraySplit,
    EpochRecord,
    Splits,
    build_student,
    load_teacher,
)

FEATURES, CLASSES, HIDDEN = 784, 10, (128,)
TEMPERATURE, ALPHA, BATCH, LR = 4.0, 0.1, 128, 3e-3


def make_teacher() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Linear(FEATURES, 1024),
        nn.ReLU(),
        nn.Linear(1024, 256),
        nn.ReLU(),
        nn.Linear(256, CLASSES),
    ).eval()


def student() -> nn.Module:
    torch.manual_seed(0)
    return build_student(student_spec(hidden_sizes=HIDDEN), (FEATURES,), CLASSES)


def kd_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    t: torch.Tensor,
    y: torch.Tensor,
) -> None:
    out = model(x)
    soft = (
        F.kl_div(
            F.log_softmax(out / TEMPERATURE, 1),
            F.log_softmax(t / TEMPERATURE, 1),
            reduction="batchmean",
            log_target=True,
        )
        * TEMPERATURE**2
    )
    loss = ALPHA * F.cross_entropy(out, y) + (1 - ALPHA) * soft
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


class HandLoop:
    """A plain PyTorch KD loop that runs one epoch when asked: (a) over teacher logits
    computed once, or (b) running the teacher on every batch."""

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        logits: torch.Tensor | None = None,
        teacher: nn.Module | None = None,
    ) -> None:
        self.x, self.y, self.logits, self.teacher = x, y, logits, teacher
        self.model = student()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=LR)

    def epoch(self) -> float:
        x, y, model, opt = self.x, self.y, self.model, self.opt
        start = time.perf_counter()
        model.train()
        for idx in torch.randperm(len(x)).split(BATCH):
            if self.teacher is not None:
                with torch.no_grad():
                    t = self.teacher(x[idx])
            else:
                assert self.logits is not None
                t = self.logits[idx]
            kd_step(model, opt, x[idx], t, y[idx])
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--epochs", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((args.rows, FEATURES)).astype(np.float32)
    teacher_model = make_teacher()
    with torch.no_grad():
        y_np = teacher_model(torch.from_numpy(x_np)).argmax(1).numpy().astype(np.int64)
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "teacher.onnx"
        save_onnx(teacher_model, x[:2], path)
        teacher = load_teacher(path)
        held = ArraySplit(x_np[:256], y_np[:256])
        run_config = config(
            student_spec(hidden_sizes=HIDDEN),
            method(TEMPERATURE, ALPHA),
            training(args.epochs, batch_size=BATCH, learning_rate=LR),
            baseline=False,
        )
        with torch.no_grad():
            started = time.perf_counter()
            logits = teacher_model(x)
            logits_seconds = time.perf_counter() - started
        loops = {"a": HandLoop(x, y, logits=logits), "b": HandLoop(x, y, teacher=teacher_model)}
        epochs: dict[str, list[float]] = {"engine": [], "a": [], "b": []}

        def after_engine_epoch(record: EpochRecord) -> None:
            # The loops take turns epoch by epoch, so that a slow spell of a shared machine
            # falls on all three alike; (a) and (b) swap places every epoch, so that no loop
            # always follows the same one (the naive loop's big teacher leaves the caches and
            # the allocator in another state than the small student does).
            epochs["engine"].append(record.seconds)
            order = ["a", "b"] if record.epoch % 2 else ["b", "a"]
            for name in order:
                epochs[name].append(loops[name].epoch())

        kd(
            run_config,
            teacher,
            Splits(ArraySplit(x_np, y_np), held, held),
            on_epoch=after_engine_epoch,
        )
    # The first epoch of each warms caches up: left out.
    engine, precomputed, naive = (epochs[name][1:] for name in ("engine", "a", "b"))

    def med(v: list[float]) -> float:
        return statistics.median(v)

    student_params = sum(p.numel() for p in student().parameters())
    teacher_params = sum(p.numel() for p in teacher_model.parameters())
    print(
        f"rows {args.rows:,} x {FEATURES}, batch {BATCH}, {args.epochs} epochs per loop taken "
        f"in turns, {torch.get_num_threads()} threads; medians of {len(engine)} epochs each"
    )
    print(
        f"student {student_params:,} parameters, teacher {teacher_params:,} "
        f"({teacher_params / student_params:.1f}x)"
    )
    print(f"engine epoch                         {med(engine):7.3f} s")
    print(
        f"(a) hand loop, teacher logits cached {med(precomputed):7.3f} s  "
        f"(+ {logits_seconds:.2f} s once for the logits)"
    )
    print(f"(b) naive loop, teacher every batch  {med(naive):7.3f} s")

    # Each ratio is the median over epochs of engine epoch k / loop epoch k, taken back to
    # back, so that drift in the machine's speed cancels.
    def ratio(loop: list[float]) -> float:
        return statistics.median(e / o for e, o in zip(engine, loop, strict=True))

    print(f"engine / (a) = {ratio(precomputed):.3f}   (target <= 1.05)")
    print(f"engine / (b) = {ratio(naive):.3f}   (target <= 0.70)")


if __name__ == "__main__":
    main()
