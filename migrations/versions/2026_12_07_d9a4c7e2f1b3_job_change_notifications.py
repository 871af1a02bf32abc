"""jobs announce their changes: NOTIFY distillery_jobs '<tenant> <job id>' (Postgres only)

Each API process keeps the JSON it last rendered of a job (app/jobs/public_view.py) and
answers a poll from it without a query while nothing has changed; this trigger tells it when
something has. A renewal of a job's heartbeat alone is not announced: no answer shows it.
SQLite (the embedded default) has no NOTIFY, and its API keeps to caching ended jobs.

Revision ID: d9a4c7e2f1b3
Revises: c3e8f5a1d2b4
Create Date: 2026-12-07 03:00:00
"""

from __future__ import annotations

from alembic import op

revision = "d9a4c7e2f1b3"
down_revision = "c3e8f5a1d2b4"
branch_labels = None
depends_on = None

# Every column an answer shows: all but heartbeat_at, which a running job's worker renews
# every few seconds in an UPDATE of that column alone, and which then fires nothing at all
# (UPDATE OF fires on the columns a statement sets). A migration that adds a column to jobs
# adds it here too; tests/app/test_live_jobs.py checks that none is missing.
ANNOUNCED = (
    "id, tenant_id, created_at, started_at, finished_at, status, stage, epoch, spec, split, "
    "metrics, error_code, error_message, cancel_requested, worker, lease_token, attempts, "
    "time_limit_seconds"
)

FUNCTION = """
CREATE OR REPLACE FUNCTION distillery_job_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('distillery_jobs', NEW.tenant_id || ' ' || NEW.id);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql
"""

TRIGGER = f"""
CREATE TRIGGER jobs_changed AFTER INSERT OR UPDATE OF {ANNOUNCED} ON jobs
FOR EACH ROW EXECUTE FUNCTION distillery_job_changed()
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(FUNCTION)
    op.execute("DROP TRIGGER IF EXISTS jobs_changed ON jobs")
    op.execute(TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS jobs_changed ON jobs")
    op.execute("DROP FUNCTION IF EXISTS distillery_job_changed()")
