"""Teachers from files: what is understood, and what is refused without running anything."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from worker.engine.teachers import TeacherRejected, inspect_teacher, load_teacher, sniff_format


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5)).eval()


@pytest.fixture
def pt2_file(tmp_path: Path) -> Path:
    path = tmp_path / "m.pt2"
    example = (torch.randn(3, 3, 4),)
    program = torch.export.export(
        _model(), example, dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, path)
    return path


def _rewrite(source: Path, target: Path, replace: dict[str, bytes]) -> None:
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for item in src.infolist():
            name = item.filename
            key = next((k for k in replace if name.endswith(k)), None)
            dst.writestr(name, replace[key] if key else src.read(name))


def test_pt2_teacher_is_understood(pt2_file: Path) -> None:
    teacher = load_teacher(pt2_file)
    assert (teacher.format, teacher.input_shape, teacher.num_classes) == ("pt2", (3, 4), 5)
    assert teacher.parameters == 12 * 5 + 5 and teacher.output_kind == "logits"
    x = np.random.default_rng(0).standard_normal((7, 3, 4)).astype(np.float32)
    want = _model()(torch.from_numpy(x)).detach().numpy()
    assert np.abs(teacher.logits(x) - want).max() < 1e-5
    assert teacher.logits(x[:1]).shape == (1, 5)


def test_pickle_inside_pt2_never_runs(pt2_file: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = tmp_path / "payload.pt"
    torch.save({"x": _Exploit(marker)}, payload)
    hostile = tmp_path / "hostile.pt2"
    _rewrite(pt2_file, hostile, {"data/sample_inputs/model.pt": payload.read_bytes()})
    with pytest.raises(TeacherRejected):
        load_teacher(hostile)

    with zipfile.ZipFile(pt2_file) as archive:
        name = next(n for n in archive.namelist() if n.endswith("model_weights_config.json"))
        config = json.loads(archive.read(name))
    for entry in config["config"].values():
        entry["use_pickle"] = True
    pickled = tmp_path / "pickled.pt2"
    _rewrite(pt2_file, pickled, {"model_weights_config.json": json.dumps(config).encode()})
    with pytest.raises(TeacherRejected, match="pickle"):
        load_teacher(pickled)
    assert not marker.exists()


def test_onnx_with_external_data_is_refused(tmp_path: Path) -> None:
    import onnx

    path = tmp_path / "big.onnx"
    torch.onnx.export(
        _model(),
        (torch.randn(2, 3, 4),),
        str(path),
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    model = onnx.load(str(path))
    onnx.save_model(
        model,
        str(tmp_path / "ext.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="ext.data",
        size_threshold=0,
    )
    with pytest.raises(TeacherRejected, match="external data"):
        load_teacher(tmp_path / "ext.onnx")


@pytest.mark.parametrize("zipmap", [True, False])
def test_scikit_learn_probabilities_are_understood(tmp_path: Path, zipmap: bool) -> None:
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32) / 16
    model = LogisticRegression(max_iter=300).fit(x, y)
    options = None if zipmap else {id(model): {"zipmap": False}}
    path = tmp_path / "logreg.onnx"
    path.write_bytes(to_onnx(model, x[:1], options=options).SerializeToString())
    found = inspect_teacher(path)
    assert found["output_kind"] == "probabilities" and "prob" in found["output_name"]
    assert (found["input_shape"], found["num_classes"]) == ([64], 10)
    logits = load_teacher(path).logits(x[:50])
    assert np.allclose(np.exp(logits), model.predict_proba(x[:50]), atol=1e-4)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "empty"),
        (np.random.default_rng(7).bytes(3000), "not a valid"),
        (b"\x80\x04K\x01.", "pickle"),
    ],
)
def test_bad_files_are_refused_with_advice(tmp_path: Path, content: bytes, words: str) -> None:
    path = tmp_path / "bad"
    path.write_bytes(content)
    with pytest.raises(TeacherRejected, match=words) as caught:
        load_teacher(path)
    if words == "pickle":
        assert "torch.export.save" in str(caught.value)


def test_state_dicts_are_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2, 2)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(TeacherRejected, match="state dict"):
        sniff_format(tmp_path / "w.safetensors")
    torch.save(_model().state_dict(), tmp_path / "sd.pt")
    with pytest.raises(TeacherRejected, match="torch.save"):
        sniff_format(tmp_path / "sd.pt")


def _onnx_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    torch.onnx.export(
        _model(), (torch.randn(2, 3, 4),), buffer, dynamo=True, external_data=False, verbose=False
    )
    return buffer.getvalue()


def test_truncated_onnx_is_refused(tmp_path: Path) -> None:
    data = _onnx_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    assert sniff_format(path) == "onnx"
    with pytest.raises(TeacherRejected, match="not a valid ONNX"):
        load_teacher(path)


def test_raw_pickle_is_refused_unread(tmp_path: Path) -> None:
    import pickle

    marker = tmp_path / "pwned"
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(TeacherRejected, match="never unpickles") as caught:
        load_teacher(path)
    assert "torch.onnx.export" in str(caught.value) and "torch.export.save" in str(caught.value)
    assert not marker.exists()


def test_whole_module_and_torchscript_are_refused(tmp_path: Path) -> None:
    import warnings

    torch.save(_model(), tmp_path / "whole.pt")
    with pytest.raises(TeacherRejected, match="torch.save"):
        load_teacher(tmp_path / "whole.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(_model()).save(str(tmp_path / "script.pt"))
    with pytest.raises(TeacherRejected, match="TorchScript"):
        load_teacher(tmp_path / "script.pt")


def test_fixed_batch_programs_run_in_padded_chunks(tmp_path: Path) -> None:
    path = tmp_path / "fixed.pt2"
    torch.export.save(torch.export.export(_model(), (torch.randn(4, 3, 4),)), path)
    teacher = load_teacher(path)
    assert teacher.input_shape == (3, 4)
    x = np.random.default_rng(1).standard_normal((10, 3, 4)).astype(np.float32)
    want = _model()(torch.from_numpy(x)).detach().numpy()
    assert np.abs(teacher.logits(x) - want).max() < 1e-5
    assert np.abs(teacher.logits(x[:1]) - want[:1]).max() < 1e-5


def test_onnx_teacher_reports_its_graph(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(_onnx_bytes())
    found = inspect_teacher(path)
    assert found["format"] == "onnx" and found["input_shape"] == [3, 4]
    assert (found["num_classes"], found["parameters"], found["output_kind"]) == (5, 65, "logits")
    assert set(found["outputs_found"]) == {found["output_name"]}
    x = np.random.default_rng(2).standard_normal((5, 3, 4)).astype(np.float32)
    want = _model()(torch.from_numpy(x)).detach().numpy()
    assert np.abs(load_teacher(path).logits(x) - want).max() < 1e-5


def _inspect(path: Path) -> tuple[int, list[str]]:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "worker.inspect_teacher", str(path)],
        capture_output=True,
        cwd=root,
        timeout=120,
        check=False,
    )
    return done.returncode, done.stdout.decode().splitlines()


def test_inspector_subprocess_answers_one_json_line(pt2_file: Path, tmp_path: Path) -> None:
    code, lines = _inspect(pt2_file)
    assert code == 0 and len(lines) == 1
    report = json.loads(lines[0])
    assert report["ok"] is True
    assert report["teacher"]["input_shape"] == [3, 4] and report["teacher"]["num_classes"] == 5
    assert report["teacher"]["format"] == "pt2" and "outputs_found" in report["teacher"]

    bad = tmp_path / "state.pt"
    torch.save(_model().state_dict(), bad)
    code, lines = _inspect(bad)
    assert code == 0 and len(lines) == 1
    report = json.loads(lines[0])
    assert report["ok"] is False and "torch.save" in report["error"]
