"""One settings object, and .env.example documents every setting."""

from __future__ import annotations

from pathlib import Path

from app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_env_example_lists_every_setting() -> None:
    lines = (ROOT / ".env.example").read_text().splitlines()
    documented = {line.split("=", 1)[0] for line in lines if line and not line.startswith("#")}
    expected = {f"DISTILLERY_{name.upper()}" for name in Settings.model_fields}
    assert documented == expected


def test_env_example_values_parse(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.resolved_database_url.startswith("sqlite:///")
    assert settings.embedded_broker
    assert settings.resolved_cache_dir.name == "cache"


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [n for n in Settings.model_fields if f"`DISTILLERY_{n.upper()}`" not in readme]
    assert missing == []
