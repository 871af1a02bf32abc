"""Distillery's Python client: `from distillery import Client`."""

from distillery.client import Client, DistilleryError, JobPage, job_metrics, job_progress
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
    "Teacher",
    "__version__",
    "job_metrics",
    "job_progress",
]
