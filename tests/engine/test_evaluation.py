"""Report metrics against small hand-checked cases."""

from __future__ import annotations

import numpy as np
import pytest

from worker.engine.evaluation import classification_report, expected_calibration_error


def test_report_on_a_hand_made_case() -> None:
    logits = np.log(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]]))
    y = np.array([0, 1, 1, 1])
    report = classification_report(logits, y)
    assert report is not None
    assert report.accuracy == 0.75
    assert report.confusion_matrix == [[1, 0], [1, 2]]
    assert report.per_class_accuracy == {"0": 1.0, "1": pytest.approx(2 / 3)}
    expected_nll = -np.mean(np.log([0.9, 0.8, 0.4, 0.7]))
    assert report.nll == pytest.approx(expected_nll)
    # Bins (15 equal widths): 0.9 alone, 0.8 alone, 0.6 alone, 0.7 alone; all but 0.6 correct.
    expected_ece = (0.1 + 0.2 + 0.6 + 0.3) / 4
    assert report.ece == pytest.approx(expected_ece)
    assert classification_report(logits, None) is None


def test_perfectly_calibrated_confidence_has_no_error() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 20_000)
    probs = np.where(y[:, None] == np.arange(2), 0.75, 0.25)
    flip = rng.random(20_000) < 0.25  # wrong a quarter of the time at confidence 0.75
    probs[flip] = probs[flip][:, ::-1]
    assert expected_calibration_error(probs, y) < 0.01
