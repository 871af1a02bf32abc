"""The one settings object. Nothing else in Distillery reads the environment."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DISTILLERY_", env_file=".env", extra="ignore", env_ignore_empty=True
    )

    data_dir: Path = Field(
        default=Path(".distillery"),
        description="Local folder for the embedded database, broker queue, temp files and cache.",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL. Empty: embedded SQLite file in data_dir. "
        "Production: postgresql+psycopg://user:pass@host:5432/db",
    )
    broker_url: str = Field(
        default="",
        description="Celery broker URL. Empty: embedded filesystem broker in data_dir. "
        "Production: redis://host:6379/0",
    )
    queue_name: str = Field(default="distillery", description="Celery queue that jobs go to.")
    api_host: str = Field(default="127.0.0.1", description="Address the API binds to.")
    api_port: int = Field(default=8000, description="Port the API listens on.")
    worker_concurrency: int = Field(default=1, ge=1, description="Jobs one worker runs at once.")
    max_upload_bytes: int = Field(
        default=2 * 1024**3, ge=1, description="Largest accepted upload, counted on bytes read."
    )
    blob_chunk_bytes: int = Field(
        default=1024 * 1024, ge=4096, description="Size of the chunks blobs are stored in."
    )
    inspect_timeout_seconds: float = Field(
        default=120.0, gt=0, description="Wall-clock limit for inspecting an uploaded teacher."
    )
    cache_dir: Path | None = Field(
        default=None, description="Worker cache of blobs by sha256. Empty: data_dir/cache."
    )
    log_level: str = Field(default="INFO", description="Log level of API and worker.")
    anonymous: bool = Field(
        default=True,
        description="Serve requests without an API key (as tenant 'local'). Honoured only while "
        "the API listens on loopback; elsewhere every request needs a key.",
    )

    @property
    def anonymous_allowed(self) -> bool:
        return self.anonymous and self.api_host in ("127.0.0.1", "localhost", "::1")

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'distillery.db').resolve()}"

    @property
    def embedded_broker(self) -> bool:
        return not self.broker_url or self.broker_url.startswith("filesystem://")

    @property
    def broker_folder(self) -> Path:
        return (self.data_dir / "broker").resolve()

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def tmp_dir(self) -> Path:
        return (self.data_dir / "tmp").resolve()

    @property
    def resolved_cache_dir(self) -> Path:
        return (self.cache_dir or self.data_dir / "cache").resolve()

    def ensure_dirs(self) -> None:
        for folder in (self.data_dir, self.tmp_dir, self.resolved_cache_dir):
            folder.mkdir(parents=True, exist_ok=True)
        if self.embedded_broker:
            (self.broker_folder / "queue").mkdir(parents=True, exist_ok=True)
            (self.broker_folder / "processed").mkdir(parents=True, exist_ok=True)
            (self.broker_folder / "control").mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    return Settings()
