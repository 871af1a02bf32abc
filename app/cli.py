"""`distillery`: run the service (serve, api, worker, migrate)."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

from app.settings import Settings, get_settings


def _worker_command(
    settings: Settings, name: str, inspections: bool = False, gpu: bool = False
) -> list[str]:
    """One Celery worker pool: the job pool (jobs in warm child processes), or the inspection
    pool, beside it with its own concurrency, so uploads are inspected while jobs train. A
    GPU worker's job pool serves the GPU queue only, so a job that asks for the GPU never
    waits behind one that does not."""
    if inspections:
        queue = settings.inspection_queue_name
    else:
        queue = settings.job_queue(gpu)
    concurrency = settings.inspect_concurrency if inspections else settings.worker_concurrency
    command = [
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
        str(concurrency),
        "--queues",
        queue,
        "--hostname",
        f"{name}{'.inspect' if inspections else ''}@{socket.gethostname()}",
        "--pool",
        "prefork",
    ]
    if inspections:
        # Its children only start confined inspector subprocesses: no reason to replace them.
        command += ["--max-tasks-per-child", "1000"]
    return command


POOLS = {"both": (False, True), "jobs": (False,), "inspections": (True,)}


def _start_pools(
    settings: Settings, name: str, pools: str = "both", gpu: bool = False
) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            _worker_command(settings, name, inspections, gpu), preexec_fn=_die_with_parent
        )
        for inspections in POOLS[pools]
    ]


def _stop_pools(pools: list[subprocess.Popen[bytes]], timeout: float = 30) -> None:
    for pool in pools:
        if pool.poll() is None:
            pool.send_signal(signal.SIGTERM)
    for pool in pools:
        try:
            pool.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pool.kill()


def _supervise(pools: list[subprocess.Popen[bytes]]) -> int:
    """Run until a pool exits or a signal comes; then stop them all and exit as the first
    one did (so a container restarts a worker that lost a pool)."""
    stopping: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        stopping.append(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    while not stopping:
        exited = [pool for pool in pools if pool.poll() is not None]
        if exited:
            _stop_pools(pools)
            return exited[0].returncode or 1
        time.sleep(0.5)
    _stop_pools(pools)
    return 0


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


def cmd_keys_revoke(settings: Settings, args: argparse.Namespace) -> int:
    """Revoke a key by its id (key_...) or its secret (dk_...)."""
    from sqlalchemy import select

    from app.auth import hash_secret
    from app.db import session_scope
    from app.models import ApiKey, utcnow

    given = args.key.strip()
    with session_scope() as session:
        found = list(
            session.scalars(
                select(ApiKey).where(
                    (ApiKey.id == given) | (ApiKey.secret_sha256 == hash_secret(given))
                )
            )
        )
        if len(found) != 1:
            what = "no key" if not found else f"{len(found)} keys"
            print(f"{what} matches {given!r}: give the key's id or its secret", file=sys.stderr)
            return 2
        key = found[0]
        if key.revoked_at is None:
            key.revoked_at = utcnow()
        print(
            f"revoked {key.id} of tenant {key.tenant_id!r}; API processes refuse it within "
            f"{settings.api_key_cache_seconds:g} s (DISTILLERY_API_KEY_CACHE_SECONDS)"
        )
    return 0


def cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    return {"create": cmd_keys_create, "revoke": cmd_keys_revoke}[args.keys](settings, args)


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
    """Both worker pools of this machine, supervised: jobs (or, with --gpu, the jobs that ask
    for a GPU) and upload inspections."""
    settings.ensure_dirs()
    name = args.name or ("worker-gpu" if args.gpu else "worker")
    return _supervise(_start_pools(settings, name, args.pools, args.gpu))


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
        f"  worker:   {settings.worker_concurrency} job(s) and "
        f"{settings.inspect_concurrency} upload inspection(s) at a time\n"
        f"  access:   {_access_note(settings.model_copy(update={'api_host': host}))}",
        flush=True,
    )
    pools = _start_pools(settings, "embedded")
    try:
        _run_api(settings, host, port)
    finally:
        _stop_pools(pools)
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
        "--name",
        default=None,
        help="node name, unique per machine (default: worker, or worker-gpu with --gpu)",
    )
    worker.add_argument(
        "--pools",
        choices=sorted(POOLS),
        default="both",
        help="the job pool, the upload-inspection pool, or both (default)",
    )
    worker.add_argument(
        "--gpu",
        action="store_true",
        help="a GPU worker: its job pool serves the GPU queue (DISTILLERY_GPU_QUEUE_NAME), "
        'the jobs submitted with "resources": {"gpu": true}, and no other',
    )
    sub.add_parser("migrate", help="bring the database schema to the newest revision")
    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys", required=True)
    create = keys.add_parser("create", help="create an API key for a tenant (printed once)")
    create.add_argument("--tenant", required=True, help="the tenant the key acts as")
    create.add_argument("--name", help="a label for the key")
    revoke = keys.add_parser("revoke", help="revoke an API key")
    revoke.add_argument("key", help="the key's id (key_...) or its secret (dk_...)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {
        "serve": cmd_serve,
        "api": cmd_api,
        "worker": cmd_worker,
        "migrate": cmd_migrate,
        "keys": cmd_keys,
    }
    return handlers[args.command](get_settings(), args)


if __name__ == "__main__":
    sys.exit(main())
