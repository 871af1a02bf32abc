"""Early-stopped teachers (Cho & Hariharan, METHODS.md §4): an earlier checkpoint of a teacher
can teach a small student better. Distill from each checkpoint, keep the best on validation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from worker.engine.config import DistillConfig
from worker.engine.data import Splits
from worker.engine.training import DistillOutcome, EpochRecord, distill, gap_closed


def distill_best_checkpoint(
    config: DistillConfig,
    checkpoints: Sequence[Any],
    splits: Splits,
    on_stage: Callable[[str], None] | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    on_baseline_epoch: Callable[[EpochRecord], None] | None = None,
    cache: Any = None,
) -> tuple[DistillOutcome, list[dict[str, Any]]]:
    """One KD run per checkpoint (same student, budget and seed); the winner is the run with
    the best final validation accuracy. The scratch baseline does not depend on the teacher,
    so it is trained once, in the first run."""
    stage = on_stage or (lambda _: None)
    outcomes: list[DistillOutcome] = []
    for number, teacher in enumerate(checkpoints, start=1):
        stage(f"checkpoint_{number}")
        outcomes.append(
            distill(
                config if number == 1 else replace(config, baseline=False),
                teacher,
                splits,
                on_epoch=on_epoch,
                on_baseline_epoch=on_baseline_epoch if number == 1 else None,
                cache=cache,
            )
        )

    def validation(outcome: DistillOutcome) -> float:
        last = outcome.history[-1].validation_accuracy if outcome.history else None
        return -1.0 if last is None else last

    best = max(range(len(outcomes)), key=lambda i: validation(outcomes[i]))
    report = [
        {
            "checkpoint": i + 1,
            "teacher_accuracy": o.metrics["teacher_accuracy"],
            "teacher_parameters": o.metrics["teacher_parameters"],
            "validation_accuracy": validation(o),
            "student_accuracy": o.metrics["student_accuracy"],
            "chosen": i == best,
        }
        for i, o in enumerate(outcomes)
    ]
    chosen, first = outcomes[best], outcomes[0]
    metrics = chosen.metrics
    for key in ("scratch_accuracy", "baseline"):
        metrics[key] = first.metrics[key]
    metrics["evaluation"]["scratch"] = first.metrics["evaluation"]["scratch"]
    metrics["gap_closed"] = gap_closed(
        metrics["student_accuracy"], metrics["scratch_accuracy"], metrics["teacher_accuracy"]
    )
    metrics["checkpoints"] = report
    return replace(chosen, scratch_history=first.scratch_history), report
