"""The Python client's types are the API's own models (written by `python -m app.typegen`),
and the dashboard reads only fields the metrics model has."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from app.jobs.metrics import JobMetrics, JobProgress
from app.typegen import render

ROOT = Path(__file__).resolve().parents[2]


def test_the_client_types_are_current() -> None:
    formatted = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--stdin-filename", "types.py", "-"],
        input=render(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    committed = (ROOT / "distillery" / "types.py").read_text()
    assert committed == formatted, "distillery/types.py is stale: run python -m app.typegen"


def _schema_fields(model: type) -> set[str]:
    """Every field name of the model and of the models inside it."""
    schema = model.model_json_schema()  # type: ignore[attr-defined]
    names = set(schema.get("properties", {}))
    for definition in schema.get("$defs", {}).values():
        names |= set(definition.get("properties", {}))
    return names


def test_the_dashboard_reads_fields_the_metrics_model_has() -> None:
    known = _schema_fields(JobMetrics) | _schema_fields(JobProgress)
    read: set[str] = set()
    for page in (ROOT / "app" / "dashboard" / "static").glob("*.html"):
        text = page.read_text()
        # metrics.<field> and the keys read from rows of the curves (row[key] with series keys)
        read |= set(re.findall(r"\bmetrics\.([a-z_][a-z0-9_]*)", text))
        read |= set(re.findall(r'series\("([a-z_]+)"\)', text))
        read |= set(re.findall(r"pick\(metrics\.([a-z_]+)", text))
    assert read, "the dashboard reads no metrics: the test would prove nothing"
    assert read - known == set(), f"the dashboard reads fields the model lacks: {read - known}"
