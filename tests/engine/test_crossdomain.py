"""Cross-domain distillation (docs/methods.md §6): mappings phi, f o phi as a teacher, the VAE."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.support.engine import config, kd, student, synthesis, training, vae_spec
from tests.support.teachers import save_onnx
from worker.engine import (
    ArraySplit,
    DilatedConvMapping,
    DiskLogitCache,
    GaussianNoiseMapping,
    IdentityMapping,
    MappedTeacher,
    MappingRejected,
    OnnxMapping,
    Splits,
    export_onnx,
    synthesize,
    train_vae,
)
from worker.engine.teachers import OutputKind


class SoftmaxRegression:
    """A real (trained) source-domain classifier with the Teacher protocol's attributes."""

    format = "sklearn"
    output_name = "logits"
    output_kind: OutputKind = "logits"

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        from sklearn.linear_model import LogisticRegression

        self.input_shape = tuple(x.shape[1:])
        self.model = LogisticRegression(max_iter=2000).fit(x.reshape(len(x), -1), y)
        self.num_classes = len(self.model.classes_)
        self.parameters = int(self.model.coef_.size + self.model.intercept_.size)
        self.fingerprint: str | None = "softmax-regression-digits"

    def logits(self, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
        assert x.shape[1:] == self.input_shape, (x.shape, self.input_shape)
        return self.model.decision_function(x.reshape(len(x), -1)).astype(np.float32)


def to_target(x: np.ndarray) -> np.ndarray:
    """Another domain: digits transposed, inverted and flattened to (64,)."""
    return (1.0 - x[:, 0].transpose(0, 2, 1)).reshape(len(x), 64).astype(np.float32)


@pytest.fixture(scope="module")
def domains() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]
    y = data.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return {
        "source_x": x[:900],
        "source_y": y[:900],
        "target_x": to_target(x[900:1500]),
        "target_y": y[900:1500],
        "test_x": to_target(x[1500:]),
        "test_y": y[1500:],
        "source_test_x": x[1500:],
    }


@pytest.fixture(scope="module")
def source_teacher(domains: dict[str, np.ndarray]) -> SoftmaxRegression:
    return SoftmaxRegression(domains["source_x"], domains["source_y"])


def test_mapped_teacher_reads_target_inputs_through_phi(
    domains: dict[str, np.ndarray], source_teacher: SoftmaxRegression
) -> None:
    x = domains["source_test_x"]
    noise = GaussianNoiseMapping((1, 8, 8), sigma=0.1, seed=3)
    mapped = MappedTeacher(source_teacher, noise)
    assert mapped.input_shape == (1, 8, 8) and mapped.num_classes == 10
    np.testing.assert_allclose(mapped.logits(x), source_teacher.logits(noise(x)), rtol=1e-5)
    # Deterministic for a seed, different for another, noise of the asked size.
    np.testing.assert_array_equal(noise(x), noise(x))
    assert not np.allclose(noise(x), GaussianNoiseMapping((1, 8, 8), 0.1, seed=4)(x))
    assert abs(float((noise(x) - x).std()) - 0.1) < 0.01
    # The cache key of f o phi is neither f's nor that of f o another phi.
    prints = {
        source_teacher.fingerprint,
        mapped.fingerprint,
        MappedTeacher(source_teacher, IdentityMapping((1, 8, 8))).fingerprint,
        MappedTeacher(source_teacher, GaussianNoiseMapping((1, 8, 8), 0.2, 3)).fingerprint,
        MappedTeacher(source_teacher, DilatedConvMapping((1, 8, 8))).fingerprint,
    }
    assert len(prints) == 5


def test_dilated_convolution_is_a_fixed_depthwise_kernel() -> None:
    conv = DilatedConvMapping((2, 9), kernel_size=3, dilation=2, weights=[0.25, 0.5, 0.125])
    x = np.zeros((1, 2, 9), np.float32)
    x[0, 1, 4] = 1.0  # a delta in the second channel
    out = conv(x)
    assert out.shape == (1, 2, 9)
    assert np.allclose(out[0, 0], 0)
    # Correlation: the tap at -dilation reads the delta from position +dilation.
    np.testing.assert_allclose(out[0, 1, [2, 4, 6]], [0.125, 0.5, 0.25])
    assert np.count_nonzero(out) == 3
    image = np.zeros((1, 1, 7, 7), np.float32)
    image[0, 0, 3, 3] = 1.0
    blurred = DilatedConvMapping((1, 7, 7), kernel_size=3, dilation=2)(image)
    assert blurred.shape == image.shape and np.count_nonzero(blurred) == 9
    np.testing.assert_allclose(blurred[0, 0, 1::2, 1::2][:3, :3], np.full((3, 3), 1 / 9), 1e-6)
    assert DilatedConvMapping((40,))(np.ones((2, 40), np.float32)).shape == (2, 40)
    with pytest.raises(MappingRejected):
        DilatedConvMapping((1, 8, 8), kernel_size=4)
    with pytest.raises(MappingRejected):
        DilatedConvMapping((1, 8, 8), kernel_size=3, weights=[1.0, 2.0])


class Untranspose(nn.Module):
    """The inverse of to_target, as a flat [batch, 64] output (a mapping model to upload)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (1.0 - x.reshape(-1, 8, 8).transpose(1, 2)).reshape(-1, 64)


def export_mapping(module: nn.Module, folder: Path, features: int) -> Path:
    path = folder / "mapping.onnx"
    save_onnx(module, torch.zeros(2, features), path)
    return path


def test_onnx_mapping_is_run_in_onnxruntime_and_checked(
    tmp_path: Path, domains: dict[str, np.ndarray], source_teacher: SoftmaxRegression
) -> None:
    mapping = OnnxMapping(export_mapping(Untranspose(), tmp_path, 64), output_shape=(1, 8, 8))
    assert mapping.input_shape == (64,) and mapping.output_shape == (1, 8, 8)
    np.testing.assert_allclose(mapping(domains["test_x"]), domains["source_test_x"], atol=1e-6)
    teacher = MappedTeacher(source_teacher, mapping)
    acc = (teacher.logits(domains["test_x"]).argmax(1) == domains["test_y"]).mean()
    assert acc > 0.9
    assert mapping.describe()["phi"] == "onnx" and len(mapping.sha256) == 64
    with pytest.raises(MappingRejected, match="teacher takes"):
        OnnxMapping(tmp_path / "mapping.onnx", output_shape=(1, 7, 7))
    pickle = tmp_path / "mapping.pt"
    torch.save(Untranspose(), pickle)
    with pytest.raises(MappingRejected, match="not a valid ONNX"):
        OnnxMapping(pickle)
    with pytest.raises(MappingRejected, match="teacher takes"):
        MappedTeacher(source_teacher, IdentityMapping((64,)))


def test_vae_maps_target_inputs_to_inputs_the_teacher_reads(
    domains: dict[str, np.ndarray], source_teacher: SoftmaxRegression
) -> None:
    spec = vae_spec(latent_dim=8, hidden=128, epochs=25, seed=0)
    vae = train_vae(
        domains["target_x"],
        domains["target_y"],
        domains["source_x"],
        domains["source_y"],
        spec,
        held_out=(domains["test_x"], domains["test_y"]),
    )
    assert vae.input_shape == (64,) and vae.output_shape == (1, 8, 8)
    report = vae.describe()
    history = report["history"]
    assert len(history) == 25 and history[-1]["target_mse"] < history[0]["target_mse"]
    assert history[-1]["source_mse"] < history[0]["source_mse"]
    assert set(report["reconstruction"]) == {"source_mse", "target_mse", "kl"}
    assert report["held_out_reconstruction"]["rows"] == len(domains["test_x"])
    teacher = MappedTeacher(source_teacher, vae)
    acc = float((teacher.logits(domains["test_x"]).argmax(1) == domains["test_y"]).mean())
    assert acc > 0.7, acc  # the teacher reads the decoded digits; raw target inputs fail
    raw = source_teacher.logits(domains["test_x"].reshape(-1, 1, 8, 8)).argmax(1)
    assert float((raw == domains["test_y"]).mean()) < 0.5
    # Synthetic target-domain rows, deterministic for a seed.
    rows = synthesize(domains["target_x"], synthesis("vae", 300, seed=1), vae)
    assert rows.shape == (300, 64) and rows.dtype == np.float32
    again = synthesize(domains["target_x"], synthesis("vae", 300, seed=1), vae)
    np.testing.assert_array_equal(rows, again)
    with pytest.raises(ValueError, match="needs a trained VAE"):
        synthesize(domains["target_x"], synthesis("vae", 10))
    with pytest.raises(MappingRejected, match="no source rows"):
        train_vae(
            domains["target_x"],
            domains["target_y"],
            domains["source_x"][domains["source_y"] < 9],
            domains["source_y"][domains["source_y"] < 9],
            vae_spec(epochs=1),
        )


def test_student_of_a_mapped_teacher_takes_target_inputs(
    tmp_path: Path, domains: dict[str, np.ndarray], source_teacher: SoftmaxRegression
) -> None:
    import onnxruntime as ort

    mapping = OnnxMapping(export_mapping(Untranspose(), tmp_path, 64), output_shape=(1, 8, 8))
    teacher = MappedTeacher(source_teacher, mapping)
    test = ArraySplit(domains["test_x"], domains["test_y"])
    validation = ArraySplit(domains["test_x"][:150], domains["test_y"][:150])
    splits = Splits(ArraySplit(domains["target_x"], domains["target_y"]), validation, test)
    cfg = config(student(hidden_sizes=(32,)), hp=training(5, batch_size=64))
    cache = DiskLogitCache(tmp_path / "cache")
    outcome = kd(cfg, teacher, splits, cache=cache)
    assert cache.misses == 3 and cache.hits == 0
    assert outcome.test.teacher_accuracy is not None and outcome.test.teacher_accuracy > 0.9
    assert outcome.test.student_accuracy is not None and outcome.test.student_accuracy > 0.7
    exported = export_onnx(outcome.student, teacher.input_shape, tmp_path / "s.onnx", test.x[:64])
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == [64]
    logits = session.run(None, {session.get_inputs()[0].name: test.x})[0]
    assert float((logits.argmax(1) == test.y).mean()) == pytest.approx(
        outcome.test.student_accuracy, abs=1e-6
    )
    # Same inputs through another phi: never the cached outputs of the first.
    other = MappedTeacher(source_teacher, IdentityMapping((1, 8, 8)))
    kd(
        config(hp=training(1), baseline=False),
        other,
        Splits(
            ArraySplit(domains["source_x"][:200], domains["source_y"][:200]),
            ArraySplit(domains["source_test_x"][:150], domains["test_y"][:150]),
            ArraySplit(domains["source_test_x"], domains["test_y"]),
        ),
        cache=cache,
    )
    assert cache.hits == 0 and cache.misses == 6
