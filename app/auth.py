"""API keys as bearer tokens; every resource belongs to the tenant of the key that made it."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from typing import Annotated

from fastapi import Depends, Header
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.db import session_scope
from app.errors import ProblemError
from app.models import LOCAL_TENANT, ApiKey, new_id
from app.settings import get_settings

KEY_PREFIX = "dk_"


class Unauthorized(ProblemError):
    status = 401
    title = "Unauthorized"
    code = "unauthorized"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(session: Session, tenant_id: str, name: str) -> tuple[ApiKey, str]:
    """A new key; the secret is returned once and only its hash is kept."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        id=new_id("key"),
        tenant_id=tenant_id,
        name=name,
        prefix=secret[:10],
        secret_sha256=hash_secret(secret),
    )
    session.add(key)
    session.flush()
    return key, secret


class KeyCache:
    """Keys looked up in the last `seconds`, by their hash: a client polling its job does not
    cost a database query for its key on every request. A key revoked in the database stops
    working within `seconds`; unknown keys are not cached (each one is looked up)."""

    def __init__(self, seconds: float, size: int = 10_000) -> None:
        self.seconds, self.size = seconds, size
        self.found: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def get(self, digest: str) -> str | None:
        hit = self.found.get(digest)
        if hit is None or hit[1] < time.monotonic():
            return None
        return hit[0]

    def put(self, digest: str, tenant: str) -> None:
        if self.seconds <= 0:
            return
        self.found[digest] = (tenant, time.monotonic() + self.seconds)
        self.found.move_to_end(digest)
        while len(self.found) > self.size:
            self.found.popitem(last=False)


_cache: list[KeyCache] = []


def _key_cache() -> KeyCache:
    if not _cache:
        _cache.append(KeyCache(get_settings().api_key_cache_seconds))
    return _cache[0]


def _tenant_of(digest: str) -> str | None:
    with session_scope() as session:
        key = session.scalars(select(ApiKey).where(ApiKey.secret_sha256 == digest)).first()
        if key is None or key.revoked_at is not None:
            return None
        return key.tenant_id


async def current_tenant(authorization: Annotated[str | None, Header()] = None) -> str:
    # async: a cached key costs no trip to a worker thread; a lookup runs in one.
    if authorization is None:
        if get_settings().anonymous_allowed:
            return LOCAL_TENANT
        raise Unauthorized("an API key is required: send `Authorization: Bearer <key>`")
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("send the API key as `Authorization: Bearer <key>`")
    digest = hash_secret(secret.strip())
    cache = _key_cache()
    tenant = cache.get(digest)
    if tenant is None:
        tenant = await run_in_threadpool(_tenant_of, digest)
        if tenant is None:
            raise Unauthorized("the API key is not valid")
        cache.put(digest, tenant)
    return tenant


TenantDep = Annotated[str, Depends(current_tenant)]
