"""Rate limits per API key: a token bucket for each key, 429 problem+json with Retry-After.

A bucket holds up to `burst` tokens and refills at `per_second`; each request takes one.
Requests with a bearer key are counted by the key (its hash: the secret is not kept), and
anonymous ones (loopback only) by the client's address. The check runs before the request is
read or authenticated, so a flood costs the service one dictionary lookup per request. The
buckets live in the API process: with several API processes, each enforces the limit alone."""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import TooManyRequests, problem_response

# Probes and scrapes are not clients: a load balancer polling /healthz must never see 429.
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
MAX_BUCKETS = 100_000  # least recently used buckets beyond this are dropped (they were full)


@dataclass
class Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    def __init__(self, per_second: float, burst: int) -> None:
        self.per_second = per_second
        self.burst = burst
        self.buckets: OrderedDict[str, Bucket] = OrderedDict()

    def take(self, key: str, now: float | None = None) -> float:
        """Take a token for `key`: 0.0 if there was one, else the seconds until there is."""
        now = time.monotonic() if now is None else now
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = Bucket(tokens=float(self.burst), updated=now)
            if len(self.buckets) > MAX_BUCKETS:
                self.buckets.popitem(last=False)
        else:
            self.buckets.move_to_end(key)
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.per_second)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.per_second


def client_key(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            return "key:" + hashlib.sha256(value.strip()).hexdigest()
    client = scope.get("client")
    return f"addr:{client[0] if client else 'unknown'}"


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, per_second: float, burst: int) -> None:
        self.app = app
        self.buckets = TokenBuckets(per_second, burst) if per_second > 0 else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.buckets is None or scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        wait = self.buckets.take(client_key(scope))
        if wait == 0.0:
            await self.app(scope, receive, send)
            return
        retry_after = max(1, math.ceil(wait))
        problem = TooManyRequests(
            f"too many requests for this API key: at most {self.buckets.per_second:g} a second "
            f"(bursts of {self.buckets.burst}); retry after {retry_after} s",
            retry_after=retry_after,
            code="rate_limited",
        ).to_problem()
        response = problem_response(problem, headers={"Retry-After": str(retry_after)})
        await response(scope, receive, send)
