"""A bug in a route still answers problem+json (500, code internal_error) without the
exception's text, and the API goes on serving."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import get_settings


def test_an_unexpected_error_is_problem_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISTILLERY_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        api = create_app()

        @api.get("/v1/broken")
        def broken() -> None:
            raise RuntimeError("secret internals")

        with TestClient(api, raise_server_exceptions=False) as client:
            r = client.get("/v1/broken")
            assert r.status_code == 500
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.json()["code"] == "internal_error"
            assert "secret" not in r.text
            assert client.get("/healthz").status_code == 200
    finally:
        get_settings.cache_clear()
