"""kd_loss against values computed by hand with numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from worker.engine.losses import UNLABELED, kd_loss, kd_loss_rows

STUDENT = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
TEACHER = np.array([[3.0, 1.0, -2.0], [-1.0, 0.0, 2.0]])
LABELS = np.array([0, 2])


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _by_hand(temperature: float, alpha: float) -> tuple[float, float, float]:
    p = _softmax(TEACHER / temperature)
    q = _softmax(STUDENT / temperature)
    soft = float((p * (np.log(p) - np.log(q))).sum(axis=1).mean()) * temperature**2
    hard = float(-np.log(_softmax(STUDENT)[np.arange(2), LABELS]).mean())
    return alpha * hard + (1 - alpha) * soft, hard, soft


@pytest.mark.parametrize(("temperature", "alpha"), [(1.0, 0.5), (4.0, 0.1), (20.0, 0.0)])
def test_kd_loss_matches_hand_computation(temperature: float, alpha: float) -> None:
    loss = kd_loss(
        torch.tensor(STUDENT), torch.tensor(TEACHER), torch.tensor(LABELS), temperature, alpha
    )
    total, hard, soft = _by_hand(temperature, alpha)
    assert loss.soft.item() == pytest.approx(soft, rel=1e-6)
    assert loss.total.item() == pytest.approx(total, rel=1e-6)
    if alpha > 0:
        assert loss.hard.item() == pytest.approx(hard, rel=1e-6)


def test_alpha_one_is_cross_entropy() -> None:
    loss = kd_loss(torch.tensor(STUDENT), torch.tensor(TEACHER), torch.tensor(LABELS), 4.0, 1.0)
    expected = F.cross_entropy(torch.tensor(STUDENT), torch.tensor(LABELS))
    assert loss.total.item() == pytest.approx(expected.item())


def test_temperature_squared_keeps_gradient_scale() -> None:
    """Hinton's T^2: for large T the soft gradient approaches (z - v) / R, whatever T is."""
    norms = []
    for temperature in (10.0, 40.0):
        z = torch.tensor(STUDENT, requires_grad=True)
        kd_loss(z, torch.tensor(TEACHER), None, temperature, 0.0).total.backward()
        assert z.grad is not None
        norms.append(z.grad.norm().item())
    assert norms[0] == pytest.approx(norms[1], rel=0.05)


def test_unlabeled_rows_only_feed_the_soft_term() -> None:
    labels = torch.tensor([0, UNLABELED])
    loss, soft_rows = kd_loss_rows(torch.tensor(STUDENT), torch.tensor(TEACHER), labels, 4.0, 0.5)
    first_row_ce = F.cross_entropy(torch.tensor(STUDENT[:1]), torch.tensor([0]))
    assert loss.hard.item() == pytest.approx(first_row_ce.item())
    assert soft_rows.shape == (2,)
    assert soft_rows.mean().item() == pytest.approx(loss.soft.item())
    all_unlabeled = torch.tensor([UNLABELED, UNLABELED])
    assert kd_loss(torch.tensor(STUDENT), torch.tensor(TEACHER), all_unlabeled, 4.0, 0.5).hard == 0


def test_kd_loss_is_total_hard_soft_and_hard_is_zero_without_labels() -> None:
    total, hard, soft = kd_loss(torch.tensor(STUDENT), torch.tensor(TEACHER), None, 4.0, 0.3)
    assert hard.item() == 0.0
    assert total.item() == pytest.approx(0.7 * soft.item())
    _, hard_alpha0, _ = kd_loss(
        torch.tensor(STUDENT), torch.tensor(TEACHER), torch.tensor(LABELS), 4.0, 0.0
    )
    assert hard_alpha0.item() == 0.0


def test_two_row_example_by_hand() -> None:
    """One fully written-out value: T = 2, alpha = 0.5."""
    z = np.array([[1.0, 0.0], [0.0, 0.0]])
    v = np.array([[0.0, 2.0], [2.0, 0.0]])
    p = np.exp(v / 2) / np.exp(v / 2).sum(1, keepdims=True)
    q = np.exp(z / 2) / np.exp(z / 2).sum(1, keepdims=True)
    kl = (p * np.log(p / q)).sum(1).mean()
    ce = -(np.log(np.exp(1) / (np.exp(1) + 1)) + np.log(0.5)) / 2
    want = 0.5 * ce + 0.5 * 4 * kl
    got = kd_loss(torch.tensor(z), torch.tensor(v), torch.tensor([0, 1]), 2.0, 0.5)
    assert got.total.item() == pytest.approx(want, rel=1e-9)
    assert got.soft.item() == pytest.approx(4 * kl, rel=1e-9)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_fused_batch_kl_equals_the_per_row_terms(alpha: float) -> None:
    """The engine's fast path (one fused KL over the batch, no per-row terms) is the same
    loss, value and gradient, as the per-row form it uses when transfer rows need reporting."""
    torch.manual_seed(0)
    student, teacher = torch.randn(32, 10), torch.randn(32, 10) * 3
    labels = torch.randint(0, 10, (32,))
    results = []
    for per_row in (True, False):
        logits = student.clone().requires_grad_()
        loss, rows = kd_loss_rows(logits, teacher, labels, 4.0, alpha, False, per_row)
        loss.total.backward()
        assert (rows is None) == (not per_row)
        assert logits.grad is not None
        results.append((loss, logits.grad))
    (per_row_loss, per_row_grad), (fused_loss, fused_grad) = results
    for a, b in zip(per_row_loss, fused_loss, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(per_row_grad, fused_grad)
    if alpha < 1:
        assert float(fused_loss.soft) > 0
