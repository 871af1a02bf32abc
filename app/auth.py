"""API keys as bearer tokens; every resource belongs to the tenant of the key that made it."""

from __future__ import annotations

import hashlib
import secrets
from typing import Annotated

from fastapi import Depends, Header
from sqlalchemy import select
from sqlalchemy.orm import Session

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


def current_tenant(authorization: Annotated[str | None, Header()] = None) -> str:
    if authorization is None:
        if get_settings().anonymous_allowed:
            return LOCAL_TENANT
        raise Unauthorized("an API key is required: send `Authorization: Bearer <key>`")
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("send the API key as `Authorization: Bearer <key>`")
    with session_scope() as session:
        key = session.scalars(
            select(ApiKey).where(ApiKey.secret_sha256 == hash_secret(secret.strip()))
        ).first()
        if key is None or key.revoked_at is not None:
            raise Unauthorized("the API key is not valid")
        return key.tenant_id


TenantDep = Annotated[str, Depends(current_tenant)]
