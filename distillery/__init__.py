"""Distillery's Python client: `from distillery import Client`."""

from distillery.client import (
    Artifact,
    Client,
    Dataset,
    DistilleryError,
    Job,
    JobEvent,
    JobPage,
    Teacher,
)

__version__ = "0.1.0"
__all__ = [
    "Artifact",
    "Client",
    "Dataset",
    "DistilleryError",
    "Job",
    "JobEvent",
    "JobPage",
    "Teacher",
    "__version__",
]
