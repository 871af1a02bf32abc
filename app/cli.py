"""`distillery`: run the service (serve, api, worker, migrate)."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence

from app.settings import Settings, get_settings


def _worker_command(settings: Settings, name: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "--quiet",  # no banner: the worker's log is JSON lines only
        "-A",
        "worker.celery_app",
        "worker",
        "--loglevel",
        settings.log_level,
        "--concurrency",
        str(settings.worker_concurrency),
        "--queues",
        settings.queue_name,
        "--hostname",
        f"{name}@{socket.gethostname()}",
        "--pool",
        "prefork",
    ]


def _run_api(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    # The app reads its settings itself: make a --host/--port flag what it sees too, so the
    # loopback-only anonymous access is decided on the address actually bound.
    os.environ["DISTILLERY_API_HOST"] = host
    os.environ["DISTILLERY_API_PORT"] = str(port)
    get_settings.cache_clear()

    uvicorn.run(
        "app.main:app",
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=5,
        log_config=None,  # JSON logs, configured by the app (app.observability)
    )


def cmd_migrate(settings: Settings, _: argparse.Namespace) -> int:
    from app.migrate import upgrade_head

    settings.ensure_dirs()
    upgrade_head(settings.resolved_database_url)
    print(f"database is at the newest schema: {_safe_url(settings.resolved_database_url)}")
    return 0


def cmd_keys_create(settings: Settings, args: argparse.Namespace) -> int:
    """Print a new API key once; only its hash is stored."""
    from app.auth import create_key
    from app.db import session_scope

    with session_scope() as session:
        key, secret = create_key(session, args.tenant, args.name or args.tenant)
        print(
            f"{secret}\n# {key.id} for tenant {key.tenant_id!r}: send it as "
            "'Authorization: Bearer <key>'; it is not shown again",
            flush=True,
        )
    return 0


def _access_note(settings: Settings) -> str:
    if settings.anonymous_allowed:
        return (
            "no API key needed on loopback: requests without one act as tenant 'local' "
            "(set DISTILLERY_ANONYMOUS=false to require keys)"
        )
    return "every request needs an API key (create one with `distillery keys create`)"


def cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    settings.ensure_dirs()
    host = args.host or settings.api_host
    settings = settings.model_copy(update={"api_host": host})
    print(
        f"Distillery API on http://{host}:{args.port or settings.api_port}: "
        f"{_access_note(settings)}",
        flush=True,
    )
    _run_api(settings, host, args.port or settings.api_port)
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    settings.ensure_dirs()
    command = _worker_command(settings, args.name)
    os.execv(command[0], command)
    return 0  # unreachable: execv replaces this process


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    """The embedded default: migrate, start one real Celery worker process, serve the API."""
    from app.migrate import upgrade_head

    settings.ensure_dirs()
    upgrade_head(settings.resolved_database_url)
    host = args.host or settings.api_host
    port = args.port or settings.api_port
    broker = (
        f"filesystem broker in {settings.broker_folder}"
        if settings.embedded_broker
        else _safe_url(settings.resolved_broker_url)
    )
    print(
        f"Distillery on http://{host}:{port} (API docs: http://{host}:{port}/docs)\n"
        f"  database: {_safe_url(settings.resolved_database_url)}\n"
        f"  broker:   {broker}\n"
        f"  worker:   {settings.worker_concurrency} job(s) at a time\n"
        f"  access:   {_access_note(settings.model_copy(update={'api_host': host}))}",
        flush=True,
    )
    worker = subprocess.Popen(_worker_command(settings, "embedded"), preexec_fn=_die_with_parent)
    try:
        _run_api(settings, host, port)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
    return 0


def _die_with_parent() -> None:
    """In the embedded worker's child: on Linux, receive SIGTERM when `serve` dies, however it
    dies, so no orphaned worker keeps the queue."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _safe_url(url: str) -> str:
    """A URL without its password, for printing."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distillery", description="Knowledge distillation as a service."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run API and a worker together (embedded default)")
    api = sub.add_parser("api", help="run the HTTP API only")
    for p in (serve, api):
        p.add_argument("--host", default=None, help="bind address (DISTILLERY_API_HOST)")
        p.add_argument("--port", type=int, default=None, help="port (DISTILLERY_API_PORT)")
    worker = sub.add_parser("worker", help="run a Celery worker that trains jobs")
    worker.add_argument(
        "--name", default="worker", help="node name, unique per machine (default: worker)"
    )
    sub.add_parser("migrate", help="bring the database schema to the newest revision")
    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys", required=True)
    create = keys.add_parser("create", help="create an API key for a tenant (printed once)")
    create.add_argument("--tenant", required=True, help="the tenant the key acts as")
    create.add_argument("--name", help="a label for the key")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {
        "serve": cmd_serve,
        "api": cmd_api,
        "worker": cmd_worker,
        "migrate": cmd_migrate,
        "keys": cmd_keys_create,
    }
    return handlers[args.command](get_settings(), args)


if __name__ == "__main__":
    sys.exit(main())
