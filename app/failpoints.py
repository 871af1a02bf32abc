"""Named points where a fault test can make the process die, as a crash would.

`failpoint("after_job_commit")` does nothing unless DISTILLERY_FAILPOINT names that point;
then the process kills itself with SIGKILL on the spot (no cleanup, no response)."""

from __future__ import annotations

import logging
import os
import signal

from app.settings import get_settings

log = logging.getLogger(__name__)
# The points the code has; the setting must name one of them.
POINTS = ("after_job_commit",)


def failpoint(name: str) -> None:
    assert name in POINTS, name
    if get_settings().failpoint == name:
        log.warning("failpoint %s: killing this process", name)
        os.kill(os.getpid(), signal.SIGKILL)
