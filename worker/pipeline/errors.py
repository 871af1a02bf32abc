"""Failures the job pipeline itself finds; they share the engine's base (JobFailure), which
carries error.code, so the task catches one class."""

from __future__ import annotations

from worker.engine.errors import JobFailure


class JobInputError(JobFailure):
    """A problem with the job's inputs found only when it ran (a dataset gone, a split that
    came out empty); the message is for the user."""

    code = "invalid_input"
