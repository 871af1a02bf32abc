""".pt2 archives are code: every way torch.export.load could run an attacker's Python is shut.

Each hostile archive below is a valid program edited by hand; each would create its marker
file if loaded with plain torch.export.load and run (checked for the unguarded cases)."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from worker.engine.teachers import TeacherRejected, load_teacher
from worker.engine.teachers.pt2_audit import UnsafeProgram, audit_program, check_expression


@pytest.fixture
def program_file(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).eval()
    program = torch.export.export(
        model, (torch.randn(2, 4),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    path = tmp_path / "m.pt2"
    torch.export.save(program, path)
    return path


def _edit(source: Path, target: Path, change: Callable[[str, bytes], bytes]) -> Path:
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, change(name, src.read(name)))
    return target


def _edit_program(source: Path, target: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    def apply(name: str, data: bytes) -> bytes:
        if not name.endswith("models/model.json"):
            return data
        doc = json.loads(data)
        change(doc)
        return json.dumps(doc).encode()

    return _edit(source, target, apply)


def _os_system_node(doc: dict[str, Any], marker: Path) -> None:
    graph = doc["graph_module"]["graph"]
    graph["tensor_values"]["evil_out"] = next(iter(graph["tensor_values"].values()))
    graph["nodes"].insert(
        0,
        {
            "target": "torch.serialization.os.system",
            "inputs": [{"name": "command", "arg": {"as_string": f"touch {marker}"}, "kind": 1}],
            "outputs": [{"as_tensor": {"name": "evil_out"}}],
            "metadata": {},
            "name": "evil",
        },
    )


def _sympify_payload(doc: dict[str, Any], marker: Path) -> None:
    def walk(node: Any) -> bool:
        if isinstance(node, dict):
            if "expr_str" in node:
                node["expr_str"] = f'__import__("os").system("touch {marker}")'
                return True
            return any(walk(v) for v in node.values())
        return isinstance(node, list) and any(walk(v) for v in node)

    assert walk(doc), "the dynamic program has a shape expression to poison"


def _injected_name(marker: Path) -> str:
    # FX writes getattr(self, "<name>") unescaped; no dots, as names are split on them.
    name = f'training"),getattr(__import__("os"),"system")("touch {marker}"),getattr(self,"training'
    assert "." not in name
    return name


def test_os_system_as_a_node_target_is_refused(program_file: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile = _edit_program(program_file, tmp_path / "h.pt2", lambda d: _os_system_node(d, marker))
    with pytest.raises(TeacherRejected, match="not a PyTorch operator"):
        load_teacher(hostile)
    assert not marker.exists()


def test_python_in_a_shape_expression_is_refused(program_file: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile = _edit_program(program_file, tmp_path / "h.pt2", lambda d: _sympify_payload(d, marker))
    with pytest.raises(TeacherRejected, match="shape expression"):
        load_teacher(hostile)
    assert not marker.exists()


def _rename_weight(source: Path, target: Path, marker: Path) -> Path:
    escaped = _injected_name(marker).replace('"', '\\"')

    def apply(name: str, data: bytes) -> bytes:
        if name.endswith(("models/model.json", "model_weights_config.json")):
            return data.decode().replace("0.weight", "0." + escaped).encode()
        return data

    return _edit(source, target, apply)


def test_code_in_a_parameter_name_is_refused(program_file: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile = _rename_weight(program_file, tmp_path / "h.pt2", marker)
    with pytest.raises(TeacherRejected, match="not a plain dotted name"):
        load_teacher(hostile)
    assert not marker.exists()


def test_loaded_graphs_are_audited_before_they_run(
    program_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second line: with the JSON audit switched off, the injected attribute name is still
    caught in the loaded module, before forward (where the injected code would run) is called."""
    import worker.engine.teachers.pt2 as pt2

    marker = tmp_path / "pwned"
    hostile = _rename_weight(program_file, tmp_path / "h.pt2", marker)
    monkeypatch.setattr(pt2, "audit_program", lambda doc: None)
    monkeypatch.setattr(pt2, "check_name", lambda *a, **k: None)
    with pytest.raises(TeacherRejected, match="cannot be run safely"):
        load_teacher(hostile)
    assert not marker.exists()


def test_the_guards_are_what_stops_it(program_file: Path, tmp_path: Path) -> None:
    """Without any guard the parameter-name injection does run: the tests above are real."""
    marker = tmp_path / "pwned"
    hostile = _rename_weight(program_file, tmp_path / "h.pt2", marker)
    module = torch.export.load(str(hostile)).module()
    with pytest.raises(Exception):  # noqa: B017 - the injected tuple then breaks the graph
        module(torch.zeros(2, 4))
    assert marker.exists()


def test_pickled_sample_inputs_never_run(program_file: Path, tmp_path: Path) -> None:
    import os

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    payload = tmp_path / "payload.pt"
    torch.save((Exploit(),), payload)
    hostile = _edit(
        program_file,
        tmp_path / "h.pt2",
        lambda n, d: payload.read_bytes() if n.endswith("data/sample_inputs/model.pt") else d,
    )
    with pytest.raises(TeacherRejected):
        load_teacher(hostile)
    assert not marker.exists()


@pytest.mark.parametrize(
    "expr",
    [
        "Symbol('s77', positive=True, integer=True)",
        "2*Symbol('s0', positive=True, integer=True) + 1",
        "Max(1, s3)",
        "FloorDiv(s0, 2)",
    ],
)
def test_real_shape_expressions_pass(expr: str) -> None:
    check_expression(expr)


@pytest.mark.parametrize(
    "expr",
    [
        "exec(bytes((112, 114)))",
        "Symbol('__import__', integer=True)",
        "s0.__class__",
        'Symbol("s0")',
        "s0;1",
    ],
)
def test_other_shape_expressions_fail(expr: str) -> None:
    with pytest.raises(UnsafeProgram):
        check_expression(expr)


def test_real_programs_pass_the_audit(tmp_path: Path) -> None:
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
            self.norm = torch.nn.BatchNorm2d(4)
            self.head = torch.nn.Linear(64, 10)
            self.register_buffer("scale", torch.ones(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.nn.functional.max_pool2d(torch.relu(self.norm(self.conv(x))), 2)
            return torch.softmax(self.head((y * self.scale).reshape(y.shape[0], -1)), 1)

    program = torch.export.export(
        Net().eval(),
        (torch.randn(4, 1, 8, 8),),
        dynamic_shapes=({0: torch.export.Dim("batch", min=3, max=100)},),
    )
    path = tmp_path / "net.pt2"
    torch.export.save(program, path)
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith("models/model.json"))
        audit_program(json.loads(archive.read(name)))
    teacher = load_teacher(path)
    assert (teacher.input_shape, teacher.num_classes) == ((1, 8, 8), 10)
    assert teacher.output_kind == "probabilities"
    x = np.random.default_rng(0).standard_normal((301, 1, 8, 8)).astype(np.float32)
    # batch bounds 3..100: one row and 301 rows both go through, in padded or capped chunks
    assert teacher.logits(x[:1]).shape == (1, 10)
    want = np.log(np.clip(program.module()(torch.from_numpy(x[:100])).detach().numpy(), 1e-7, 1))
    assert np.abs(teacher.logits(x)[:100] - want).max() < 1e-5
