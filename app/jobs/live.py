"""Answers to polls without a query, while Postgres says nothing has changed.

A client polls its job about once a second and a dashboard its list of jobs as often, while a
job's row changes once an epoch at most. Each API process listens on the `distillery_jobs`
channel, which a trigger on `jobs` notifies with `<tenant> <job id>` whenever a job is
inserted or changed in a way an answer shows (migrations/versions/*_job_change_notifications).
While it listens, the process keeps the JSON it last answered for a job, and for each page of
a tenant's list, and drops them when Postgres names the job or the tenant.

- A render that began before a change and ends after its notification is not kept: every
  change bumps a generation, and a render keeps its answer only if nothing it read has
  changed since the generation it started at.
- Without the channel (SQLite, the embedded default; a lost connection until it is back),
  nothing is kept here, every poll queries, and a connection that comes back starts empty: a
  notification missed while it was down cannot leave an old answer behind.
- A notification arrives milliseconds after its commit; this process's own writes (a cancel,
  a submission) are dropped at their commit, so a client reads what it just wrote.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Hashable

import psycopg
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

CHANNEL = "distillery_jobs"
APPLICATION_NAME = "distillery-job-changes"  # the listener's connection, in pg_stat_activity
CACHED_JOBS = 20_000
CACHED_TENANTS = 4_096
PAGES_PER_TENANT = 32
CHECK_SECONDS = 5.0  # how often an idle listener makes sure its connection is alive
RETRY_SECONDS = 1.0

log = logging.getLogger(__name__)


class LiveJobs:
    """job id -> (tenant, JSON) and tenant -> {page key: JSON}, valid while listening."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.listening = False
        self.generation = 0
        self.since = 0  # the generation at which listening last (re)started
        self.jobs: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self.pages: OrderedDict[str, dict[Hashable, bytes]] = OrderedDict()
        # When each job and tenant last changed; older changes than those tracked count as
        # having happened at the floor.
        self.changed_jobs: OrderedDict[str, int] = OrderedDict()
        self.changed_tenants: OrderedDict[str, int] = OrderedDict()
        self.floor = 0
        self.answered = {"live": 0, "database": 0}  # /metrics: distillery_job_answers_total

    def token(self) -> int | None:
        """Taken before reading the database: None while not listening (keep nothing)."""
        with self.lock:
            return self.generation if self.listening else None

    def job(self, job_id: str, tenant: str) -> bytes | None:
        """The job's JSON if it is kept for this tenant; None: query the database."""
        with self.lock:
            found = self.jobs.get(job_id)
            if found is None or found[0] != tenant:
                self.answered["database"] += 1
                return None
            self.jobs.move_to_end(job_id)
            self.answered["live"] += 1
            return found[1]

    def page(self, tenant: str, key: Hashable) -> bytes | None:
        with self.lock:
            found = self.pages.get(tenant, {}).get(key)
            self.answered["database" if found is None else "live"] += 1
            return found

    def keep_job(self, token: int | None, job_id: str, tenant: str, body: bytes) -> None:
        with self.lock:
            if not self._current(token, self.changed_jobs.get(job_id, self.floor)):
                return
            self.jobs[job_id] = (tenant, body)
            self.jobs.move_to_end(job_id)
            while len(self.jobs) > CACHED_JOBS:
                self.jobs.popitem(last=False)

    def keep_page(self, token: int | None, tenant: str, key: Hashable, body: bytes) -> None:
        with self.lock:
            if not self._current(token, self.changed_tenants.get(tenant, self.floor)):
                return
            pages = self.pages.setdefault(tenant, {})
            self.pages.move_to_end(tenant)
            if len(pages) >= PAGES_PER_TENANT:
                pages.clear()
            pages[key] = body
            while len(self.pages) > CACHED_TENANTS:
                self.pages.popitem(last=False)

    def _current(self, token: int | None, last_change: int) -> bool:
        return self.listening and token is not None and token >= self.since and last_change <= token

    def changed(self, tenant: str, job_id: str) -> None:
        """A job changed (a notification, or this process's own commit): drop its answers."""
        with self.lock:
            self.generation += 1
            self.jobs.pop(job_id, None)
            self.pages.pop(tenant, None)
            for seen, key in ((self.changed_jobs, job_id), (self.changed_tenants, tenant)):
                seen[key] = self.generation
                seen.move_to_end(key)
                while len(seen) > CACHED_JOBS:
                    self.floor = max(self.floor, seen.popitem(last=False)[1])

    def listen(self, on: bool) -> None:
        """Listening (re)starts or stops: either way nothing kept before can be trusted."""
        with self.lock:
            self.generation += 1
            self.since = self.generation
            self.listening = on
            self.jobs.clear()
            self.pages.clear()


LIVE = LiveJobs()


def mark_changed(session: Session, tenant: str, job_id: str) -> None:
    """This process writes a job in `session`: drop its answers when the session commits."""
    session.info.setdefault("changed_jobs", set()).add((tenant, job_id))


@event.listens_for(Session, "after_commit")
def _announce(session: Session) -> None:
    for tenant, job_id in session.info.pop("changed_jobs", ()):
        LIVE.changed(tenant, job_id)


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop("changed_jobs", None)


class Listener:
    """A thread that LISTENs on the channel, on a connection of its own, and reconnects."""

    def __init__(self, database_url: str, live: LiveJobs = LIVE) -> None:
        url = make_url(database_url).set(drivername="postgresql")
        self.conninfo = url.render_as_string(hide_password=False)
        self.live = live
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="job-changes", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.live.listen(False)

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                self._listen()
            except Exception as exc:  # psycopg.Error, a dropped socket: start again
                log.warning("job change notifications lost (%s); polls query meanwhile", exc)
            self.live.listen(False)
            self.stopped.wait(RETRY_SECONDS)

    def _listen(self) -> None:
        with psycopg.connect(
            self.conninfo, autocommit=True, connect_timeout=5, application_name=APPLICATION_NAME
        ) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            self.live.listen(True)
            log.info("listening for job changes")
            while not self.stopped.is_set():
                for note in conn.notifies(timeout=CHECK_SECONDS):
                    tenant, _, job_id = note.payload.partition(" ")
                    self.live.changed(tenant, job_id)
                conn.execute("SELECT 1")  # a dead connection raises here
