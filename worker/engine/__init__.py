"""The distillation engine: a plain library (no web framework, database or queue)."""

from worker.engine.assistants import (
    AssistantStep,
    assistant_specs,
    distill_through_assistants,
    sized_student,
)
from worker.engine.checkpoints import distill_best_checkpoint
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
from worker.engine.ensemble import EnsembleTeacher
from worker.engine.export import ExportCheckFailed, OnnxExport, export_onnx, save_safetensors
from worker.engine.hooks import CheckpointStore, RunHooks, run_hooks
from worker.engine.logit_cache import DiskLogitCache, LogitCache
from worker.engine.losses import UNLABELED, KDLoss, kd_loss
from worker.engine.students import build_student, count_parameters
from worker.engine.teachers import (
    Teacher,
    TeacherRejected,
    inspect_teacher,
    load_teacher,
    sniff_format,
)
from worker.engine.training import (
    DistillOutcome,
    EpochRecord,
    accuracy,
    distill,
    predict_logits,
)
from worker.engine.transfer import SynthesisSpec, synthesize
from worker.engine.vae import VaeMapping, VaeSpec, train_vae

__all__ = [
    "DilatedConvMapping",
    "GaussianNoiseMapping",
    "IdentityMapping",
    "Mapping",
    "MappedTeacher",
    "MappingRejected",
    "OnnxMapping",
    "VaeMapping",
    "VaeSpec",
    "train_vae",
    "CheckpointStore",
    "RunHooks",
    "run_hooks",
    "distill_best_checkpoint",
    "sized_student",
    "AssistantStep",
    "assistant_specs",
    "distill_through_assistants",
    "EnsembleTeacher",
    "UNLABELED",
    "DiskLogitCache",
    "LogitCache",
    "SynthesisSpec",
    "TransferRows",
    "synthesize",
    "ArraySplit",
    "DistillConfig",
    "DistillOutcome",
    "EpochRecord",
    "ExportCheckFailed",
    "KDLoss",
    "KDMethod",
    "OnnxExport",
    "Splits",
    "StudentSpec",
    "Teacher",
    "TeacherRejected",
    "TrainingSpec",
    "accuracy",
    "build_student",
    "count_parameters",
    "distill",
    "export_onnx",
    "inspect_teacher",
    "kd_loss",
    "load_teacher",
    "predict_logits",
    "random_split",
    "save_safetensors",
    "sniff_format",
    "stratified_split",
]
