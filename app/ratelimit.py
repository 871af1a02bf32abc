"""Rate limits per API key: a token bucket for each key, 429 problem+json with Retry-After.

A bucket holds up to `burst` tokens and refills at `per_second`; each request takes one.
Requests with a bearer key are counted by the key (its hash: the secret is not kept), and
anonymous ones (loopback only) by the client's address. The check runs before the request is
read or authenticated.

Where the broker is Redis (production), the buckets live in Redis and every API process of the
deployment (the same database) draws from the same bucket for a key: one atomic script per
request, on Redis's clock. While Redis cannot be reached, each process falls back to buckets of
its own and tries Redis again a few seconds later: a broker outage never turns into 5xx or
into no limit at all. The embedded default (one API process) keeps its buckets in memory."""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from redis import asyncio as aioredis
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import TooManyRequests, problem_response

log = logging.getLogger(__name__)

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


class Limiter(Protocol):
    per_second: float
    burst: int

    async def take(self, key: str) -> float: ...


class LocalLimiter:
    """Buckets in this process."""

    def __init__(self, per_second: float, burst: int) -> None:
        self.per_second, self.burst = per_second, burst
        self.buckets = TokenBuckets(per_second, burst)

    async def take(self, key: str) -> float:
        return self.buckets.take(key)


# KEYS[1]: the bucket; ARGV: rate per second, burst. Returns the wait in seconds as a string
# (Lua numbers come back from Redis as integers). The clock is Redis's, so API processes on
# machines whose clocks disagree still share one consistent bucket.
TAKE_SCRIPT = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(state[1])
local updated = tonumber(state[2])
if tokens == nil or updated == nil then
  tokens = burst
  updated = t
end
tokens = math.min(burst, tokens + math.max(0, t - updated) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(t))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""


class RedisLimiter:
    """Buckets shared by every API process of a deployment, in Redis."""

    RETRY_SECONDS = 5.0  # after Redis fails, local buckets for this long before trying again

    def __init__(self, url: str, namespace: str, per_second: float, burst: int) -> None:
        self.per_second, self.burst = per_second, burst
        self.prefix = f"distillery:ratelimit:{namespace}:"
        self.client = aioredis.Redis.from_url(
            url, socket_timeout=0.5, socket_connect_timeout=0.5, health_check_interval=30
        )
        self.script = self.client.register_script(TAKE_SCRIPT)
        self.fallback = LocalLimiter(per_second, burst)
        self.down_until = 0.0

    async def take(self, key: str) -> float:
        if time.monotonic() < self.down_until:
            return await self.fallback.take(key)
        try:
            wait = await self.script(keys=[self.prefix + key], args=[self.per_second, self.burst])
        except (RedisError, OSError) as exc:
            self.down_until = time.monotonic() + self.RETRY_SECONDS
            log.warning(
                "rate limits: Redis unreachable (%s); this process limits on its own for %g s",
                exc,
                self.RETRY_SECONDS,
            )
            return await self.fallback.take(key)
        return float(wait)


def make_limiter(
    per_second: float, burst: int, redis_url: str | None, namespace: str
) -> Limiter | None:
    if per_second <= 0:
        return None
    if redis_url and redis_url.startswith(("redis://", "rediss://")):
        return RedisLimiter(redis_url, namespace, per_second, burst)
    return LocalLimiter(per_second, burst)


def client_key(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            return "key:" + hashlib.sha256(value.strip()).hexdigest()
    client = scope.get("client")
    return f"addr:{client[0] if client else 'unknown'}"


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, limiter: Limiter | None) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.limiter is None or scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        wait = await self.limiter.take(client_key(scope))
        if wait == 0.0:
            await self.app(scope, receive, send)
            return
        retry_after = max(1, math.ceil(wait))
        problem = TooManyRequests(
            f"too many requests for this API key: at most {self.limiter.per_second:g} a second "
            f"(bursts of {self.limiter.burst}); retry after {retry_after} s",
            retry_after=retry_after,
            code="rate_limited",
        ).to_problem()
        response = problem_response(problem, headers={"Retry-After": str(retry_after)})
        await response(scope, receive, send)
