"""A second API process beside a running stack, sharing its database and broker, with
settings of its own (e.g. a tight rate limit)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import ROOT, Service, free_port, spawn, wait_healthy


def extra_api(stack: Service, tmp: Path, **settings: str) -> Service:
    port = free_port()
    env = {**stack.env, "DISTILLERY_API_PORT": str(port), **settings}
    service = Service(name="extra-api", base_url=f"http://127.0.0.1:{port}", env=env)
    service.logs = [tmp / f"api-{port}.log"]
    service.processes = [spawn(["api"], env, service.logs[0])]
    try:
        wait_healthy(service)
    except BaseException:
        service.stop()
        raise
    return service


def create_key(stack: Service, tenant: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "distillery.cli", "keys", "create", "--tenant", tenant],
        env=stack.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.splitlines()[0]
