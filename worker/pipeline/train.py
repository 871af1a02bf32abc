"""Stage `train`: the planned method, from the engine's registry, with the job's callbacks."""

from __future__ import annotations

from worker.engine import MethodInputs, MethodResult, TrainingCallbacks, run_method
from worker.pipeline.context import JobRun
from worker.pipeline.plan import TrainingPlan
from worker.pipeline.teacher import JobTeachers


def train(run: JobRun, plan: TrainingPlan, found: JobTeachers) -> MethodResult:
    # The early-stopped-teacher method distills from each checkpoint in turn; every other
    # method learns from the job's one teacher (an ensemble acts as one).
    several = run.spec.teachers.kind == "checkpoints"
    inputs = MethodInputs(
        config=plan.config,
        teachers=tuple(found.members) if several else (found.teacher,),
        splits=plan.splits,
        callbacks=TrainingCallbacks(
            stage=run.stage, on_epoch=run.on_epoch, on_baseline_epoch=run.on_baseline_epoch
        ),
        cache=run.cache,
        assistants=plan.assistants,
        search=plan.search,
    )
    return run_method(plan.method, inputs)
