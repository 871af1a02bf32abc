"""The default transfer set ("transfer": "auto"): the data's kind, the methods and the size."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits, load_wine, make_classification

from app.jobs.spec import JobCreate, TransferConfig
from worker.pipeline.defaults import MIN_AUTO_ROWS, auto_rows, choose_transfer, data_kind


def _mnist1d() -> np.ndarray:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = 1000
    return np.asarray(make_dataset(args)["x"], dtype=np.float32)


def test_images_signals_and_table_rows_are_told_apart() -> None:
    digits = load_digits()
    assert data_kind(digits.images[:, None]) == "image"  # (N, 1, 8, 8)
    assert data_kind(digits.images) == "image"  # (N, 8, 8)
    assert data_kind(_mnist1d()) == "signal"  # (N, 40), neighbours move together
    assert data_kind(np.repeat(_mnist1d()[:, None], 2, axis=1)) == "signal"  # (N, 2, 40)
    for table in (
        load_breast_cancer().data,  # correlated columns, but not neighbour to neighbour
        load_wine().data,
        make_classification(500, 30, random_state=0)[0],
        digits.data,  # flattened 8x8 images read as a table
        np.zeros((100, 40)),  # nothing moves
        np.random.default_rng(0).standard_normal((100, 3)),  # too few features to be a signal
    ):
        assert data_kind(np.asarray(table)) == "tabular"


def test_the_size_follows_the_labeled_rows_within_its_bounds() -> None:
    assert auto_rows(100, 50_000) == MIN_AUTO_ROWS
    assert auto_rows(1_000, 50_000) == 20_000
    assert auto_rows(4_000, 50_000) == 50_000
    assert auto_rows(4_000, 3_000) == 3_000
    assert auto_rows(4_000, 0) == 0


def _spec(**fields: object) -> JobCreate:
    return JobCreate.model_validate({"teacher_id": "tch_a", "train_dataset_id": "ds_a", **fields})


@pytest.mark.parametrize(
    ("x", "kind", "methods"),
    [
        (np.zeros((500, 1, 8, 8), np.float32), "image", ["shift", "mixup"]),
        (np.zeros((500, 5), np.float32), "tabular", ["mixup", "noise"]),
    ],
)
def test_auto_synthesizes_by_kind(x: np.ndarray, kind: str, methods: list[str]) -> None:
    spec = _spec().to_spec()
    assert spec.transfer == "auto"  # the default
    chosen = choose_transfer(spec, x, 50_000)
    assert chosen.config is not None and chosen.config.methods == methods
    assert chosen.config.size * 2 == chosen.choice.rows == MIN_AUTO_ROWS
    assert chosen.choice.chosen == "auto" and chosen.choice.data_kind == kind
    assert chosen.choice.synthesize == methods and methods[0] in chosen.choice.reason
    if kind == "tabular":
        assert chosen.config.noise_sigma == 0.25


def test_null_given_and_transfer_datasets_are_kept_as_asked() -> None:
    x = np.zeros((500, 5), np.float32)
    off = choose_transfer(_spec(transfer=None).to_spec(), x, 50_000)
    assert off.config is None and off.choice.chosen == "off"
    given = {"synthesize": "noise", "size": 123}
    kept = choose_transfer(_spec(transfer=given).to_spec(), x, 50_000)
    assert kept.config == TransferConfig.model_validate(given)
    assert kept.choice.chosen == "given" and kept.choice.rows == 123
    real = choose_transfer(_spec(transfer_dataset_ids=["ds_b"]).to_spec(), x, 50_000)
    assert real.config is None and "transfer datasets" in real.choice.reason
    capped = choose_transfer(_spec().to_spec(), x, 0)
    assert capped.config is None and capped.choice.chosen == "auto"
