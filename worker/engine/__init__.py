"""The distillation engine: a plain library (no web framework, database or queue).

    result = run_method("kd", MethodInputs(config, (teacher,), splits))

Methods register by name (worker/engine/methods/); teachers are one protocol with a module
per format (worker/engine/teachers/).

Names are imported from their modules on first use, so that a process that needs one part
(the errors, the teachers) does not pay for the rest (torch, onnx)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.engine.config import DistillConfig, KDMethod, StudentSpec, TrainingSpec
    from worker.engine.crossdomain import (
        DilatedConvMapping,
        GaussianNoiseMapping,
        IdentityMapping,
        MappedTeacher,
        Mapping,
        MappingRejected,
        OnnxMapping,
    )
    from worker.engine.data import ArraySplit, Splits, TransferRows, random_split, stratified_split
    from worker.engine.errors import JobFailure, OutOfMemory
    from worker.engine.evaluation import (
        ClassReport,
        TestLogits,
        accuracy,
        agreement,
        classification_report,
        gap_closed,
    )
    from worker.engine.export import ExportCheckFailed, OnnxExport, export_onnx, save_safetensors
    from worker.engine.hints import HintReport
    from worker.engine.hooks import CheckpointStore, RunHooks, run_hooks
    from worker.engine.logit_cache import DiskLogitCache, LogitCache
    from worker.engine.losses import UNLABELED, KDLoss, kd_loss
    from worker.engine.methods import (
        METHODS,
        MethodInputs,
        MethodResult,
        TrainingCallbacks,
        register,
        run_method,
    )
    from worker.engine.methods.kd import distill
    from worker.engine.outcome import AssistantStep, CheckpointScore, DistillOutcome, TransferCounts
    from worker.engine.sizing import assistant_specs, sized_student
    from worker.engine.students import build_student, count_parameters
    from worker.engine.teachers import (
        Teacher,
        TeacherRejected,
        inspect_teacher,
        load_teacher,
        sniff_format,
    )
    from worker.engine.teachers.ensemble import EnsembleTeacher
    from worker.engine.training import EpochRecord, predict_logits
    from worker.engine.transfer import SynthesisSpec, synthesize
    from worker.engine.vae import VaeMapping, VaeSpec, train_vae

_WHERE = {
    "ArraySplit": "worker.engine.data",
    "AssistantStep": "worker.engine.outcome",
    "CheckpointScore": "worker.engine.outcome",
    "CheckpointStore": "worker.engine.hooks",
    "ClassReport": "worker.engine.evaluation",
    "DilatedConvMapping": "worker.engine.crossdomain",
    "DiskLogitCache": "worker.engine.logit_cache",
    "DistillConfig": "worker.engine.config",
    "DistillOutcome": "worker.engine.outcome",
    "EnsembleTeacher": "worker.engine.teachers.ensemble",
    "EpochRecord": "worker.engine.training",
    "ExportCheckFailed": "worker.engine.export",
    "GaussianNoiseMapping": "worker.engine.crossdomain",
    "HintReport": "worker.engine.hints",
    "IdentityMapping": "worker.engine.crossdomain",
    "JobFailure": "worker.engine.errors",
    "KDLoss": "worker.engine.losses",
    "KDMethod": "worker.engine.config",
    "LogitCache": "worker.engine.logit_cache",
    "METHODS": "worker.engine.methods",
    "MappedTeacher": "worker.engine.crossdomain",
    "Mapping": "worker.engine.crossdomain",
    "MappingRejected": "worker.engine.crossdomain",
    "MethodInputs": "worker.engine.methods",
    "MethodResult": "worker.engine.methods",
    "OnnxExport": "worker.engine.export",
    "OnnxMapping": "worker.engine.crossdomain",
    "OutOfMemory": "worker.engine.errors",
    "RunHooks": "worker.engine.hooks",
    "Splits": "worker.engine.data",
    "StudentSpec": "worker.engine.config",
    "SynthesisSpec": "worker.engine.transfer",
    "Teacher": "worker.engine.teachers",
    "TeacherRejected": "worker.engine.teachers",
    "TestLogits": "worker.engine.evaluation",
    "TrainingCallbacks": "worker.engine.methods",
    "TrainingSpec": "worker.engine.config",
    "TransferCounts": "worker.engine.outcome",
    "TransferRows": "worker.engine.data",
    "UNLABELED": "worker.engine.losses",
    "VaeMapping": "worker.engine.vae",
    "VaeSpec": "worker.engine.vae",
    "accuracy": "worker.engine.evaluation",
    "agreement": "worker.engine.evaluation",
    "assistant_specs": "worker.engine.sizing",
    "build_student": "worker.engine.students",
    "classification_report": "worker.engine.evaluation",
    "count_parameters": "worker.engine.students",
    "distill": "worker.engine.methods.kd",
    "export_onnx": "worker.engine.export",
    "gap_closed": "worker.engine.evaluation",
    "inspect_teacher": "worker.engine.teachers",
    "kd_loss": "worker.engine.losses",
    "load_teacher": "worker.engine.teachers",
    "predict_logits": "worker.engine.training",
    "random_split": "worker.engine.data",
    "register": "worker.engine.methods",
    "run_hooks": "worker.engine.hooks",
    "run_method": "worker.engine.methods",
    "save_safetensors": "worker.engine.export",
    "sized_student": "worker.engine.sizing",
    "sniff_format": "worker.engine.teachers",
    "stratified_split": "worker.engine.data",
    "synthesize": "worker.engine.transfer",
    "train_vae": "worker.engine.vae",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'worker.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)


__all__ = [
    "ArraySplit",
    "AssistantStep",
    "CheckpointScore",
    "CheckpointStore",
    "ClassReport",
    "DilatedConvMapping",
    "DiskLogitCache",
    "DistillConfig",
    "DistillOutcome",
    "EnsembleTeacher",
    "EpochRecord",
    "ExportCheckFailed",
    "GaussianNoiseMapping",
    "HintReport",
    "IdentityMapping",
    "JobFailure",
    "KDLoss",
    "KDMethod",
    "LogitCache",
    "METHODS",
    "MappedTeacher",
    "Mapping",
    "MappingRejected",
    "MethodInputs",
    "MethodResult",
    "OnnxExport",
    "OnnxMapping",
    "OutOfMemory",
    "RunHooks",
    "Splits",
    "StudentSpec",
    "SynthesisSpec",
    "Teacher",
    "TeacherRejected",
    "TestLogits",
    "TrainingCallbacks",
    "TrainingSpec",
    "TransferCounts",
    "TransferRows",
    "UNLABELED",
    "VaeMapping",
    "VaeSpec",
    "accuracy",
    "agreement",
    "assistant_specs",
    "build_student",
    "classification_report",
    "count_parameters",
    "distill",
    "export_onnx",
    "gap_closed",
    "inspect_teacher",
    "kd_loss",
    "load_teacher",
    "predict_logits",
    "random_split",
    "register",
    "run_hooks",
    "run_method",
    "save_safetensors",
    "sized_student",
    "sniff_format",
    "stratified_split",
    "synthesize",
    "train_vae",
]
