"""What tests and benches share: starting the stack, making teachers and data, engine configs.

Benches import from here only, never from a conftest."""

from tests.support.data import Digits
from tests.support.db import PG_ADMIN, PostgresDatabase, create_database, drop_database
from tests.support.stack import (
    REDIS_URL,
    ROOT,
    Service,
    base_env,
    free_port,
    signal_group,
    spawn,
    start_embedded_stack,
    start_production_stack,
    wait_healthy,
    wait_ready,
)
from tests.support.teachers import TeacherFiles

__all__ = [
    "PG_ADMIN",
    "REDIS_URL",
    "ROOT",
    "Digits",
    "PostgresDatabase",
    "Service",
    "TeacherFiles",
    "base_env",
    "create_database",
    "drop_database",
    "free_port",
    "signal_group",
    "spawn",
    "start_embedded_stack",
    "start_production_stack",
    "wait_healthy",
    "wait_ready",
]
