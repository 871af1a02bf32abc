"""Early-stopped teachers (Cho & Hariharan, docs/methods.md §4): an earlier checkpoint of a
teacher can teach a small student better. Distill from each checkpoint, keep the student
that does best on the validation rows."""

from __future__ import annotations

from dataclasses import replace

from worker.engine.methods.kd import distill
from worker.engine.methods.registry import MethodInputs, MethodResult, register
from worker.engine.outcome import CheckpointScore, DistillOutcome


def _validation(outcome: DistillOutcome) -> float:
    last = outcome.history[-1].validation_accuracy if outcome.history else None
    return -1.0 if last is None else last


@register("early_stopped_teacher")
def distill_best_checkpoint(inputs: MethodInputs) -> MethodResult:
    """One KD run per checkpoint (same student, budget and seed); the winner is the run with
    the best final validation accuracy. The scratch baseline does not depend on the teacher,
    so it is trained once, in the first run."""
    outcomes: list[DistillOutcome] = []
    for number, teacher in enumerate(inputs.teachers, start=1):
        inputs.callbacks.stage(f"checkpoint_{number}")
        first = number == 1
        outcomes.append(
            distill(
                replace(
                    inputs,
                    config=inputs.config if first else replace(inputs.config, baseline=False),
                    teachers=(teacher,),
                    callbacks=replace(
                        inputs.callbacks,
                        on_baseline_epoch=inputs.callbacks.on_baseline_epoch if first else None,
                    ),
                )
            )
        )
    best = max(range(len(outcomes)), key=lambda i: _validation(outcomes[i]))
    scores = [
        CheckpointScore(
            number=i + 1,
            teacher_accuracy=o.test.teacher_accuracy,
            teacher_parameters=o.teacher_parameters,
            validation_accuracy=_validation(o),
            student_accuracy=o.test.student_accuracy,
            chosen=i == best,
        )
        for i, o in enumerate(outcomes)
    ]
    chosen, first_run = outcomes[best], outcomes[0]
    outcome = replace(
        chosen,
        test=replace(chosen.test, scratch=first_run.test.scratch),
        baseline=first_run.baseline,
        scratch_history=first_run.scratch_history,
    )
    return MethodResult(outcome=outcome, teacher=inputs.teachers[best], checkpoints=scores)
