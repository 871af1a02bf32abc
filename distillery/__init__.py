"""Distillery's Python client: `from distillery import Client`."""

from distillery.client import Client, DistilleryError, JobPage, job_metrics, job_progress
from distillery.textscore import Scored, class_names, score_texts
from distillery.types import Artifact, Dataset, Job, JobEvent, JobMetrics, JobProgress, Teacher

__version__ = "0.1.0"
__all__ = [
    "Artifact",
    "Client",
    "Dataset",
    "DistilleryError",
    "Job",
    "JobEvent",
    "JobMetrics",
    "JobPage",
    "JobProgress",
    "Scored",
    "Teacher",
    "__version__",
    "class_names",
    "job_metrics",
    "job_progress",
    "score_texts",
]
