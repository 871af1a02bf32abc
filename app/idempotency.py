"""Idempotency keys (as Stripe's): a retried POST with the same `Idempotency-Key` gets the
resource the first request created, never a second one; the same key with a different request
is a 422. The key is written in the transaction that creates the resource, so concurrent
retries serialise on it: the first commits, the others find its row."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from fastapi import Header
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db import session_scope
from app.errors import InvalidInput
from app.models import IdempotencyKey

HEADER = "Idempotency-Key"
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias=HEADER,
        min_length=1,
        max_length=255,
        description="Any unique string (a UUID). A retry with the same key and request returns "
        "what the first request created; the same key with a different request is a 422.",
    ),
]


class KeyTaken(Exception):
    """Another request with this key committed first."""


def request_digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def find(session: Session, tenant: str, scope: str, key: str, digest: str) -> str | None:
    """The id the key's first request created, or None if the key is new."""
    row = session.get(IdempotencyKey, (tenant, scope, key))
    if row is None:
        return None
    if row.request_sha256 != digest:
        raise InvalidInput(
            f"this Idempotency-Key was first used with a different request ({scope}); "
            "use a new key for a new request",
            field=HEADER,
            code="idempotency_key_reused",
        )
    return row.resource_id


def claim(
    session: Session, tenant: str, scope: str, key: str, digest: str, resource_id: str
) -> None:
    """Write the key in the creating transaction; KeyTaken if a concurrent request has it."""
    session.add(
        IdempotencyKey(
            tenant_id=tenant, scope=scope, key=key, request_sha256=digest, resource_id=resource_id
        )
    )
    try:
        session.flush()
    except IntegrityError as exc:
        raise KeyTaken() from exc


def winner(tenant: str, scope: str, key: str, digest: str) -> str:
    """After KeyTaken: the id the first request created (read in a fresh transaction)."""
    with session_scope() as session:
        found = find(session, tenant, scope, key, digest)
    if found is None:  # the first request rolled back after we saw its row: cannot happen in PG
        raise InvalidInput(
            "the request with this Idempotency-Key is still in progress; retry",
            field=HEADER,
            code="idempotency_key_in_use",
        )
    return found
