"""`python -m app.typegen > distillery/types.py`: the Python client's types, written from the
API's own models, so the client (which installs without pydantic) cannot drift from them.
tests/client/test_types.py checks that the committed file is what this prints."""

from __future__ import annotations

import json
import sys
import types
import typing
from datetime import datetime
from enum import Enum
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel

from app.datasets.schemas import DatasetPublic
from app.jobs.metrics import JobMetrics, JobProgress
from app.jobs.schemas import ArtifactPublic, JobEventPublic, JobPublic
from app.teachers.schemas import TeacherPublic

# Client name of each API model the client returns; nested models keep their own names.
ROOTS: dict[type[BaseModel], str] = {
    TeacherPublic: "Teacher",
    DatasetPublic: "Dataset",
    JobPublic: "Job",
    JobMetrics: "JobMetrics",
    JobProgress: "JobProgress",
    JobEventPublic: "JobEvent",
    ArtifactPublic: "Artifact",
}
HEADER = '''"""The API's answers as typed dicts, written by `python -m app.typegen` from the
server's models (do not edit by hand; tests/client/test_types.py checks it is current)."""

from __future__ import annotations

from typing import Any, Literal, TypedDict

'''


class _Writer:
    def __init__(self) -> None:
        self.names: dict[type[BaseModel], str] = dict(ROOTS)
        self.done: list[type[BaseModel]] = []
        self.blocks: list[str] = []

    def name(self, model: type[BaseModel]) -> str:
        if model not in self.names:
            self.names[model] = model.__name__
        return self.names[model]

    def annotation(self, tp: Any) -> str:
        origin, args = get_origin(tp), get_args(tp)
        if origin is typing.Annotated:
            return self.annotation(args[0])
        if origin in (typing.Union, types.UnionType):
            return " | ".join(self.annotation(a) for a in args)
        if origin is Literal:
            return f"Literal[{', '.join(json.dumps(a) for a in args)}]"
        if origin in (list, dict):
            return f"{origin.__name__}[{', '.join(self.annotation(a) for a in args)}]"
        if tp is type(None):
            return "None"
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            self.write(tp)
            return self.name(tp)
        if isinstance(tp, type) and issubclass(tp, Enum):
            return f"Literal[{', '.join(json.dumps(m.value) for m in tp)}]"
        if tp is datetime:
            return "str"
        if tp in (int, float, str, bool):
            name: str = tp.__name__
            return name
        return "Any"

    def write(self, model: type[BaseModel]) -> None:
        if model in self.done:
            return
        self.done.append(model)
        fields = [
            _field(name, self.annotation(info.annotation))
            for name, info in model.model_fields.items()
        ]
        doc = (model.__doc__ or "").strip().splitlines()
        lines = [f"class {self.name(model)}(TypedDict):"]
        if doc and model.__module__.startswith("app."):
            lines.append(f'    """{doc[0]}"""')
            lines.append("")
        self.blocks.append("\n".join(lines + fields))


def _field(name: str, annotation: str) -> str:
    line = f"    {name}: {annotation}"
    return line if len(line) <= 100 else f"    {name}: (\n        {annotation}\n    )"


def render() -> str:
    writer = _Writer()
    for model in ROOTS:
        writer.write(model)
    return HEADER + "\n" + "\n\n\n".join(writer.blocks) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
