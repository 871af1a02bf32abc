"""The submission-time memory estimate: exact parameter counts, and bounds that hold."""

from __future__ import annotations

import pytest
import torch

from app.jobs.memory import (
    TRAINING_BYTES_PER_PARAMETER,
    Layout,
    Rows,
    activation_bytes,
    parameters,
    sized,
    training_estimate,
    vae_parameters,
)
from worker.engine import StudentSpec, build_student, count_parameters
from worker.engine.sizing import sized_student
from worker.engine.vae import CrossDomainVAE

LAYOUTS = [
    (Layout("mlp", (128,), (16, 32)), (1, 8, 8)),
    (Layout("mlp", (64, 32, 7), (16,), batch_norm=True, dropout=0.2), (40,)),
    (Layout("cnn", (128,), (16, 32)), (1, 8, 8)),
    (Layout("cnn", (128,), (8, 8, 8)), (3, 40)),
    (Layout("cnn", (128,), (4,)), (3, 5, 7)),
]


def _spec(layout: Layout) -> StudentSpec:
    return StudentSpec(
        layout.architecture,  # type: ignore[arg-type]
        layout.hidden_sizes,
        layout.dropout,
        layout.batch_norm,
        layout.channels,
        normalize=True,
    )


@pytest.mark.parametrize(("layout", "shape"), LAYOUTS)
def test_parameters_are_what_the_engine_builds(layout: Layout, shape: tuple[int, ...]) -> None:
    built = build_student(_spec(layout), shape, 10)
    assert parameters(layout, shape, 10) == count_parameters(built)


@pytest.mark.parametrize(("layout", "shape"), LAYOUTS[:3])
def test_sizing_matches_the_engine(layout: Layout, shape: tuple[int, ...]) -> None:
    for budget in (500, 20_000, 3_000_000):
        try:
            engine = count_parameters(
                build_student(sized_student(_spec(layout), shape, 10, budget), shape, 10)
            )
        except ValueError:
            continue  # no student that narrow: the engine refuses it at run time
        ours = parameters(sized(layout, shape, 10, budget), shape, 10)
        assert ours <= budget and abs(ours - engine) <= 0.02 * engine + 50, (budget, ours, engine)


def test_vae_parameters() -> None:
    model = CrossDomainVAE(40, 64, 256, 16)
    assert vae_parameters(40, 64, 256, 16) == sum(p.numel() for p in model.parameters())


def test_activations_bound_a_real_training_step() -> None:
    """What torch allocates for a forward and backward pass stays under the estimate."""
    layout, shape = Layout("mlp", (512, 512), ()), (1, 28, 28)
    model = build_student(_spec(layout), shape, 10)
    x = torch.randn(256, *shape)
    saved: list[int] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        torch.nn.functional.cross_entropy(model(x), torch.zeros(256, dtype=torch.long)).backward()
    weights = sum(p.numel() * 4 for p in model.parameters())
    kept = sum(saved) - weights  # saved activations, without the weights autograd keeps too
    assert kept <= activation_bytes(layout, shape, 10, 256, jitter=False) / 2


def test_the_issue_student_and_the_parts_of_an_estimate() -> None:
    huge = Layout("mlp", (65_536,) * 3, ())
    count = parameters(huge, (1, 8, 8), 10)
    assert count > 8_500_000_000  # 8.6 billion: refused long before a worker tries
    rows = Rows(all=1_300, training=1_105, features=64, classes=10)
    small = Layout("mlp", (128,), ())
    estimate = training_estimate(rows, [(small, 9_610)], (1, 8, 8), 128, False, True)
    assert estimate.model_bytes == TRAINING_BYTES_PER_PARAMETER * 9_610 + 4 * 9_610
    assert estimate.data_bytes == rows.bytes and estimate.total_bytes < 10 * 1024**2
    wide_batch = training_estimate(rows, [(small, 9_610)], (1, 8, 8), 65_536, False, False)
    assert wide_batch.largest == "activations"
