"""The search method: train up to `budget` KD candidates and as many scratch candidates
(worker/engine/search.py), score each on the validation rows, keep the best of each, and
score those two, once, on the test rows.

Candidates share the teacher's cached outputs (the same rows give the same cache keys), so a
search costs what its trainings cost. A candidate that fails (a loss that overflows at a high
temperature, a width that does not fit in memory) is recorded and skipped; a job is failed
only when every student candidate fails. Each candidate is one training run of the job, in a
fixed order, so a job resumed on another worker finds the finished ones in its checkpoints
and does not train them again."""

from __future__ import annotations

import time
from dataclasses import replace

from worker.engine.errors import JobFailure, OutOfMemory
from worker.engine.evaluation import TestLogits, agreement
from worker.engine.finite import LossNotFinite
from worker.engine.logit_cache import teacher_logits
from worker.engine.methods.kd import distill
from worker.engine.methods.registry import (
    CandidateScore,
    MethodInputs,
    MethodResult,
    TrainingCallbacks,
    register,
)
from worker.engine.outcome import DistillOutcome
from worker.engine.search import Candidate, candidates
from worker.engine.training import predict_logits

# What may fail one candidate without failing the job (not a cancel, a lost lease, the time
# limit or a teacher whose outputs are not finite: those stop every candidate alike).
CANDIDATE_FAILURES = (LossNotFinite, OutOfMemory, MemoryError, RuntimeError, ValueError)


def _train(
    inputs: MethodInputs, candidate: Candidate, total: int
) -> tuple[CandidateScore, DistillOutcome | None]:
    inputs.callbacks.stage(f"{candidate.kind}_candidate_{candidate.number}_of_{total}")
    chosen = tuple(part for part in inputs.splits.transfer if part.source in candidate.transfer)
    # Each candidate's epochs go to its own curve: a student's, or the scratch baseline's.
    callbacks = inputs.callbacks
    curve = callbacks.on_epoch if candidate.kind == "student" else callbacks.on_baseline_epoch
    run = replace(
        inputs,
        config=candidate.config,
        splits=replace(inputs.splits, transfer=chosen),
        callbacks=TrainingCallbacks(stage=lambda _: None, on_epoch=curve),
        score_test=False,
    )
    started = time.perf_counter()
    try:
        outcome = distill(run)
    except CANDIDATE_FAILURES as exc:
        failed = CandidateScore(
            number=candidate.number,
            kind=candidate.kind,
            config=candidate.config,
            transfer=candidate.transfer,
            validation_accuracy=None,
            agreement=None,
            parameters=0,
            seconds=time.perf_counter() - started,
            error=f"{type(exc).__name__}: {str(exc)[:300]}",
        )
        return failed, None
    validation = inputs.splits.validation
    teacher = teacher_logits(inputs.teacher, validation.x, inputs.cache, "the validation rows")
    agrees = (
        agreement(predict_logits(outcome.student, validation.x), teacher)
        if len(validation.x)
        else None
    )
    score = CandidateScore(
        number=candidate.number,
        kind=candidate.kind,
        config=candidate.config,
        transfer=candidate.transfer,
        validation_accuracy=outcome.validation_accuracy,
        agreement=agrees,
        parameters=outcome.student_parameters,
        seconds=time.perf_counter() - started,
    )
    return score, outcome


def _best(scored: list[tuple[CandidateScore, DistillOutcome | None]]) -> int | None:
    """The index of the best candidate on validation: accuracy, then agreement, then the
    fewest parameters, then the earliest."""
    trained = [i for i, (_, outcome) in enumerate(scored) if outcome is not None]
    if not trained:
        return None

    def key(i: int) -> tuple[float, float, int, int]:
        score = scored[i][0]
        return (
            -(score.validation_accuracy or 0.0),
            -(score.agreement or 0.0),
            score.parameters,
            i,
        )

    return min(trained, key=key)


def _search(
    inputs: MethodInputs, group: list[Candidate]
) -> tuple[list[CandidateScore], DistillOutcome | None]:
    scored = [_train(inputs, candidate, len(group)) for candidate in group]
    best = _best(scored)
    scores = [
        replace(score, chosen=True) if i == best else score for i, (score, _) in enumerate(scored)
    ]
    return scores, (scored[best][1] if best is not None else None)


@register("search")
def search(inputs: MethodInputs) -> MethodResult:
    assert inputs.search is not None, "the search method needs inputs.search"
    sources = tuple(part.source for part in inputs.splits.transfer)
    students, scratch = candidates(
        inputs.config, sources, inputs.search.shape, inputs.search.budget
    )
    student_scores, student = _search(inputs, students)
    if student is None:
        errors = "; ".join(s.error or "" for s in student_scores)
        raise JobFailure(f"every candidate of the search failed: {errors}", "search_failed")
    scratch_scores, baseline = _search(inputs, scratch) if scratch else ([], None)
    inputs.callbacks.stage("evaluating")
    test = inputs.splits.test
    outcome = replace(
        student,
        test=TestLogits(
            test.y,
            teacher_logits(inputs.teacher, test.x, inputs.cache, "the test rows"),
            predict_logits(student.student, test.x),
            predict_logits(baseline.student, test.x) if baseline is not None else None,
        ),
        baseline="trained (searched)" if baseline is not None else student.baseline,
        scratch_history=baseline.history if baseline is not None else [],
        scratch_student=baseline.student if baseline is not None else None,
        train_seconds=sum(s.seconds for s in student_scores),
    )
    return MethodResult(
        outcome=outcome, teacher=inputs.teacher, search=student_scores + scratch_scores
    )
