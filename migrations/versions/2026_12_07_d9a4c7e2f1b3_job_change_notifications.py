"""jobs announce their changes: NOTIFY distillery_jobs '<tenant> <job id>' (Postgres only)

Each API process keeps the JSON it last rendered of a job (app/jobs/public_view.py) and
answers a poll from it without a query while nothing has changed; this trigger tells it when
something has. A change to a job's heartbeat alone is not announced: no answer shows it.
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

FUNCTION = """
CREATE OR REPLACE FUNCTION distillery_job_changed() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND (to_jsonb(OLD) - 'heartbeat_at') = (to_jsonb(NEW) - 'heartbeat_at') THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('distillery_jobs', NEW.tenant_id || ' ' || NEW.id);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql
"""

TRIGGER = """
CREATE TRIGGER jobs_changed AFTER INSERT OR UPDATE ON jobs
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
