"""The rooms stay apart: the API never loads torch; the engine never loads the web stack."""

from __future__ import annotations

import subprocess
import sys


def _loaded_after(statement: str, modules: list[str]) -> list[str]:
    code = f"import sys; {statement}; print(','.join(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_api_never_imports_torch() -> None:
    heavy = ["torch", "onnxruntime", "onnx", "transformers", "tokenizers", "safetensors"]
    assert _loaded_after("import app.main", heavy) == []


def test_worker_parent_never_imports_torch() -> None:
    assert _loaded_after("import worker.celery_app, worker.tasks", ["torch"]) == []


def test_engine_imports_no_web_db_or_queue() -> None:
    loaded = _loaded_after("import worker.engine", ["fastapi", "sqlalchemy", "celery", "app"])
    assert loaded == []


def test_client_package_is_client_only() -> None:
    loaded = _loaded_after(
        "import distillery, distillery.cli",
        ["torch", "fastapi", "sqlalchemy", "celery", "app", "worker"],
    )
    assert loaded == []
