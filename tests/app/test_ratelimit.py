"""Rate limits per API key, through the HTTP API of a real API process."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from app.ratelimit import RedisLimiter, TokenBuckets
from tests.app.live import create_key, extra_api
from tests.support import Service, free_port


def test_token_bucket_refills_at_the_rate() -> None:
    buckets = TokenBuckets(per_second=2.0, burst=3)
    assert [buckets.take("a", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a", now=0.0) == 0.5  # one token comes back in half a second
    assert buckets.take("b", now=0.0) == 0.0  # another key has a bucket of its own
    assert buckets.take("a", now=0.5) == 0.0
    assert buckets.take("a", now=0.5) > 0.0
    assert buckets.take("a", now=100.0) == 0.0  # refilled, never beyond the burst
    assert [buckets.take("a", now=100.0) for _ in range(3)][-1] > 0.0


def test_429_with_retry_after_per_key(production_service: Service, tmp_path: Path) -> None:
    service = extra_api(
        production_service,
        tmp_path,
        DISTILLERY_RATE_LIMIT_PER_SECOND="0.5",
        DISTILLERY_RATE_LIMIT_BURST="5",
    )
    first = {"Authorization": f"Bearer {create_key(production_service, 'rl-first')}"}
    second = {"Authorization": f"Bearer {create_key(production_service, 'rl-second')}"}
    try:
        with httpx.Client(base_url=service.base_url, timeout=30) as client:
            codes = [client.get("/v1/jobs", headers=first).status_code for _ in range(5)]
            assert codes == [200] * 5
            limited = client.get("/v1/jobs", headers=first)
            assert limited.status_code == 429
            assert limited.headers["content-type"] == "application/problem+json"
            assert limited.json()["code"] == "rate_limited"
            retry_after = int(limited.headers["Retry-After"])
            assert 1 <= retry_after <= 2
            # An upload over the rate is refused before its body is read.
            big = client.post("/v1/datasets", headers=first, files={"file": ("d.csv", b"a\n1\n")})
            assert big.status_code == 429
            # Another key, and anonymous callers (by address), are unaffected.
            assert client.get("/v1/jobs", headers=second).status_code == 200
            assert client.get("/v1/jobs").status_code == 200
            # Health probes are never limited.
            assert all(client.get("/healthz").status_code == 200 for _ in range(10))
            time.sleep(retry_after)
            assert client.get("/v1/jobs", headers=first).status_code == 200
    finally:
        service.stop()


def test_api_processes_of_one_deployment_share_the_buckets(
    production_service: Service, tmp_path: Path
) -> None:
    """Two API processes on the same database and Redis: a key's burst is spent across both,
    so adding API processes does not multiply what a key may do."""
    limits = {"DISTILLERY_RATE_LIMIT_PER_SECOND": "0.05", "DISTILLERY_RATE_LIMIT_BURST": "6"}
    one = extra_api(production_service, tmp_path, **limits)
    two = extra_api(production_service, tmp_path, **limits)
    key = {"Authorization": f"Bearer {create_key(production_service, 'rl-shared')}"}
    try:
        with (
            httpx.Client(base_url=one.base_url, timeout=30) as a,
            httpx.Client(base_url=two.base_url, timeout=30) as b,
        ):
            codes = [client.get("/v1/jobs", headers=key).status_code for client in (a, b) * 3]
            assert codes == [200] * 6
            assert a.get("/v1/jobs", headers=key).status_code == 429
            refused = b.get("/v1/jobs", headers=key)
            assert refused.status_code == 429
            assert refused.json()["code"] == "rate_limited"
            assert 1 <= int(refused.headers["Retry-After"]) <= 20
    finally:
        one.stop()
        two.stop()


def test_redis_unreachable_falls_back_to_buckets_of_the_process() -> None:
    """Nothing listens on the port: every take still answers (no exception, no 5xx), and the
    process enforces the limit on its own meanwhile."""
    limiter = RedisLimiter(f"redis://127.0.0.1:{free_port()}/0", "test", 1.0, 2)

    async def takes() -> list[float]:
        return [await limiter.take("k") for _ in range(3)]

    started = time.monotonic()
    waits = asyncio.run(takes())
    assert waits[:2] == [0.0, 0.0] and waits[2] > 0.0
    assert limiter.down_until > started  # Redis is retried later, not on every request
    assert time.monotonic() - started < 2.0
