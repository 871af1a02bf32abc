"""Engine configs for tests and benches, from the job spec's defaults (defined once, in
app/jobs/spec.py): pass only what a test changes."""

from __future__ import annotations

from typing import Any

from app.jobs.spec import KDMethodConfig, StudentConfig, TrainingConfig, TransferConfig, VaePhi
from worker.engine import (
    DistillConfig,
    DistillOutcome,
    KDMethod,
    LogitCache,
    MethodInputs,
    Splits,
    StudentSpec,
    SynthesisSpec,
    Teacher,
    TrainingCallbacks,
    TrainingSpec,
    VaeSpec,
    distill,
)
from worker.engine.methods.registry import StageCallback
from worker.engine.training import EpochCallback
from worker.pipeline.plan import engine_method, engine_student, engine_training, synthesis_specs


def student(architecture: str = "mlp", **fields: Any) -> StudentSpec:
    for name in ("hidden_sizes", "channels"):
        if name in fields:
            fields[name] = list(fields[name])
    return engine_student(StudentConfig(architecture=architecture, **fields))  # type: ignore[arg-type]


def method(temperature: float | None = None, alpha: float | None = None, **fields: Any) -> KDMethod:
    given = {k: v for k, v in (("temperature", temperature), ("alpha", alpha)) if v is not None}
    hint_output = fields.pop("hint_output", None)
    hint_epochs = fields.pop("hint_epochs", None)
    if hint_output is not None:
        fields["hint"] = {
            "teacher_output": hint_output,
            **({"epochs": hint_epochs} if hint_epochs else {}),
        }
    return engine_method(KDMethodConfig(**given, **fields))


def training(epochs: int | None = None, **fields: Any) -> TrainingSpec:
    if epochs is not None:
        fields["epochs"] = epochs
    return engine_training(TrainingConfig(**fields))


def config(
    student_spec: StudentSpec | None = None,
    kd: KDMethod | None = None,
    hp: TrainingSpec | None = None,
    baseline: bool = True,
) -> DistillConfig:
    return DistillConfig(
        student=student_spec or student(),
        method=kd or method(),
        training=hp or training(),
        baseline=baseline,
    )


def kd(
    cfg: DistillConfig,
    teacher: Teacher,
    splits: Splits,
    *,
    cache: LogitCache | None = None,
    device: str | None = None,
    on_epoch: EpochCallback | None = None,
    on_stage: StageCallback | None = None,
    on_baseline_epoch: EpochCallback | None = None,
) -> DistillOutcome:
    """One plain KD run, as the "kd" method runs it."""
    callbacks = TrainingCallbacks(
        stage=on_stage or TrainingCallbacks().stage,
        on_epoch=on_epoch,
        on_baseline_epoch=on_baseline_epoch,
    )
    return distill(MethodInputs(cfg, (teacher,), splits, callbacks, cache), device=device)


def synthesis(method: str, size: int, **fields: Any) -> SynthesisSpec:
    """One synthesized transfer set, with the spec's defaults for what is not given."""
    transfer = TransferConfig(synthesize=method, size=size, **fields)  # type: ignore[arg-type]
    return synthesis_specs(transfer)[0]


def vae_spec(**fields: Any) -> VaeSpec:
    phi = VaePhi(phi="vae", source_dataset_id="unused", **fields)
    return VaeSpec(
        latent_dim=phi.latent_dim,
        hidden=phi.hidden,
        epochs=phi.epochs,
        learning_rate=phi.learning_rate,
        beta=phi.beta,
        seed=phi.seed,
    )
