"""The codebase keeps the shape the team agreed on: small functions, a typed job path."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LONGEST = 60  # lines per function, decorators and docstring included


def test_no_function_is_longer_than_about_sixty_lines() -> None:
    long: list[str] = []
    for package in ("app", "worker", "distillery"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = (node.end_lineno or node.lineno) - node.lineno + 1
                    if lines > LONGEST:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines})")
    assert long == [], "functions over 60 lines:\n" + "\n".join(long)


def test_nothing_reads_a_job_spec_by_string_key() -> None:
    """The worker reads JobSpec models, never spec["..."] (or .get("...")) on a dict."""
    offenders = []
    for path in sorted((ROOT / "worker").rglob("*.py")) + sorted((ROOT / "app").rglob("*.py")):
        text = path.read_text()
        for needle in ('spec["', "spec['", 'spec.get("', "spec.get('"):
            if needle in text:
                offenders.append(f"{path.relative_to(ROOT)}: {needle}")
    assert offenders == []
