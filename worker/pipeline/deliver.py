"""Stage `deliver`: the job's metrics as one typed document, metrics.json and report.html, and
every artifact stored with the job's success in one transaction under the lease."""

from __future__ import annotations

from dataclasses import asdict

from sqlalchemy import delete
from sqlalchemy.orm import Session

from app.jobs.metrics import (
    CacheCounts,
    CandidateReport,
    EpochMetrics,
    HintReport,
    JobMetrics,
    SearchReport,
    StudentReport,
    TextReport,
    TransferCounts,
    TransferSpecReport,
)
from app.jobs.state import JobStatus, move
from app.models import Artifact, Job, TrainingCheckpoint
from app.storage import store_file
from worker.engine import EpochRecord, MethodResult
from worker.lease import JobCancelled
from worker.pipeline.context import JobRun
from worker.pipeline.evaluate import Scores
from worker.pipeline.export import Exported
from worker.pipeline.inputs import JobInputs
from worker.pipeline.plan import TrainingPlan
from worker.pipeline.verdict import member_warnings, recommend
from worker.report import render_report

REPORT_TYPES = {"metrics.json": "application/json", "report.html": "text/html"}


def _curve(history: list[EpochRecord]) -> list[EpochMetrics]:
    return [EpochMetrics.model_validate(asdict(record)) for record in history]


def job_metrics(
    run: JobRun,
    inputs: JobInputs,
    plan: TrainingPlan,
    result: MethodResult,
    scores: Scores,
    exported: Exported,
) -> JobMetrics:
    outcome, spec = result.outcome, run.spec
    recommendation, warnings = recommend(outcome)
    warnings += member_warnings(scores.teacher.ensemble or [], outcome.scratch_validation_accuracy)
    assistants = scores.assistants
    for report in assistants or []:
        onnx = exported.assistants[report.step]
        report.onnx, report.onnx_bytes = f"assistant_{report.step}.onnx", onnx.bytes
    return JobMetrics(
        teacher_accuracy=scores.teacher_accuracy,
        student_accuracy=scores.student_accuracy,
        scratch_accuracy=scores.scratch_accuracy,
        gap_closed=scores.gap_closed,
        agreement=scores.agreement,
        scratch_agreement=scores.scratch_agreement,
        teacher_parameters=outcome.teacher_parameters,
        student_parameters=outcome.student_parameters,
        train_seconds=outcome.train_seconds,
        device=outcome.device,
        test_rows=len(plan.splits.test.x),
        transfer=TransferCounts.model_validate(asdict(outcome.transfer)),
        baseline=outcome.baseline,
        hint=HintReport.model_validate(asdict(outcome.hint)) if outcome.hint else None,
        evaluation=scores.evaluation,
        onnx_bytes=exported.student.bytes,
        onnx_max_abs_diff=exported.student.max_abs_diff,
        onnx_opset=exported.student.opset,
        latency_ms=exported.latency,
        history=_curve(outcome.history),
        history_scratch=_curve(outcome.scratch_history),
        split=inputs.split,
        teacher_output_cache=CacheCounts(hits=run.cache.hits, misses=run.cache.misses),
        teacher=scores.teacher,
        student=StudentReport(**spec.student.model_dump(), sized=plan.sized),
        method=spec.method,
        training=spec.training,
        cross_domain=scores.cross_domain,
        transfer_spec=TransferSpecReport(
            transfer_dataset_ids=spec.transfer_dataset_ids,
            synthesize=plan.transfer.config,
            choice=plan.transfer.choice,
        ),
        assistants=assistants,
        checkpoints=scores.checkpoints,
        recommendation=recommendation,
        int8=exported.int8,
        search=search_report(plan, result),
        modality="text" if plan.text is not None else "tensor",
        text=text_report(plan),
        warnings=warnings,
    )


def deliver(run: JobRun, metrics: JobMetrics, exported: Exported, epochs: int) -> None:
    (run.workdir / "metrics.json").write_text(metrics.model_dump_json(indent=2))
    (run.workdir / "report.html").write_text(render_report(run.job_id, metrics))
    run.stage("storing")
    for warning in metrics.warnings:
        run.event("message", f"warning: {warning}", {"warning": warning})
    files = {**exported.files, **REPORT_TYPES}
    document = metrics.model_dump(mode="json")

    def store(session: Session) -> None:
        # One transaction, under the lease: the artifacts, the result and the final event
        # land together, once; a stale worker or a cancel in between leaves nothing.
        for name, media_type in files.items():
            blob = store_file(session, run.workdir / name, run.settings.blob_chunk_bytes)
            session.merge(
                Artifact(
                    job_id=run.job_id,
                    name=name,
                    blob_id=blob.id,
                    media_type=media_type,
                    bytes=blob.size,
                    sha256=blob.sha256,
                )
            )
        job = session.get(Job, run.job_id)
        if job is None or job.cancel_requested:
            raise JobCancelled()
        session.execute(delete(TrainingCheckpoint).where(TrainingCheckpoint.job_id == run.job_id))
        move(
            session,
            run.job_id,
            JobStatus.SUCCEEDED,
            "succeeded",
            token=run.lease.token,
            values={"metrics": document, "epoch": epochs},
            data={"student_accuracy": metrics.student_accuracy},
        )

    run.lease.write(store, "storing the results")


def search_report(plan: TrainingPlan, result: MethodResult) -> SearchReport | None:
    if plan.search is None or result.search is None:
        return None
    rows = []
    for score in result.search:
        config, student = score.config, score.config.student
        scratch = score.kind == "scratch"
        rows.append(
            CandidateReport(
                number=score.number,
                kind=score.kind,
                temperature=None if scratch else config.method.temperature,
                alpha=None if scratch else config.method.alpha,
                transfer=list(score.transfer),
                hidden_sizes=list(student.hidden_sizes),
                channels=list(student.channels),
                learning_rate=config.training.learning_rate,
                weight_decay=config.training.weight_decay,
                validation_accuracy=score.validation_accuracy,
                agreement=score.agreement,
                parameters=score.parameters,
                seconds=score.seconds,
                error=score.error,
                chosen=score.chosen,
            )
        )
    chosen = {row.kind: row.number for row in rows if row.chosen}
    return SearchReport(
        budget=plan.search.budget,
        candidates=rows,
        chosen_student=chosen["student"],
        chosen_scratch=chosen.get("scratch"),
    )


def text_report(plan: TrainingPlan) -> TextReport | None:
    text, student = plan.text, plan.config.student
    if text is None or student.vocabulary is None:
        return None
    return TextReport(
        max_length=text.length,
        teacher_max_length=text.max_length,
        tokenizer_vocab=text.encoder.vocab_size,
        student_vocab=len(student.vocabulary.kept),
        student_architecture=student.architecture,
        input_names=["input_ids", "attention_mask"]
        + (["token_type_ids"] if text.token_types else []),
        class_names=text.class_names,
        reason=plan.student_note,
        embeddings=plan.embeddings,
    )
