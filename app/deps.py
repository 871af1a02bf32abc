"""Request dependencies as Annotated aliases."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends
from sqlalchemy.orm import Session

from app.db import session_scope
from app.settings import Settings, get_settings


def get_session() -> Iterator[Session]:
    """One unit of work per request: committed when the route returns without error."""
    with session_scope() as session:
        yield session


# scope="function": committed before the response is sent, so a client that reads right
# after a 201 sees what it created.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]
