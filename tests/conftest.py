"""Shared fixtures: real services, real processes, data made in the test. The helpers behind
them live in tests/support/, which the benches use too."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.support.data import Digits, save_npz
from tests.support.data import digits as load_digits
from tests.support.db import PostgresDatabase, create_database, drop_database
from tests.support.stack import (
    Service,
    start_embedded_stack,
    start_production_stack,
)
from tests.support.teachers import TeacherFiles, accuracy, export_pt2, save_onnx, train


@pytest.fixture
def postgres_database() -> Iterator[PostgresDatabase]:
    db = create_database()
    try:
        yield db
    finally:
        drop_database(db)


@pytest.fixture(scope="session")
def production_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    db = create_database()
    service = start_production_stack(tmp_path_factory.mktemp("production"), db)
    try:
        yield service
    finally:
        service.stop()
        drop_database(db)


@pytest.fixture(scope="session")
def embedded_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    service = start_embedded_stack(tmp_path_factory.mktemp("embedded"))
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(params=["production", "embedded"])
def service(request: pytest.FixtureRequest) -> Service:
    return request.getfixturevalue(f"{request.param}_service")


# ---- data and teachers made in the test -------------------------------------------------


@pytest.fixture(scope="session")
def digits() -> Digits:
    return load_digits()


@pytest.fixture(scope="session")
def digits_teacher(digits: Digits, tmp_path_factory: pytest.TempPathFactory) -> TeacherFiles:
    """An MLP teacher (64-512-512-10) trained on digits, exported to ONNX and .pt2."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(64, 512),
        torch.nn.ReLU(),
        torch.nn.Linear(512, 512),
        torch.nn.ReLU(),
        torch.nn.Linear(512, 10),
    )
    train(model, digits.x_train, digits.y_train, epochs=40)
    folder = tmp_path_factory.mktemp("teacher")
    example = torch.from_numpy(digits.x_train[:4])
    return TeacherFiles(
        onnx=save_onnx(model, example, folder / "teacher.onnx", "pixels", "logits"),
        pt2=export_pt2(model, example, folder / "teacher.pt2"),
        accuracy=accuracy(model, digits.x_test, digits.y_test),
        parameters=sum(p.numel() for p in model.parameters()),
    )


@pytest.fixture(scope="session")
def digits_files(digits: Digits, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("digits")
    return {
        "train": save_npz(folder / "digits_train.npz", digits.x_train, digits.y_train),
        "test": save_npz(folder / "digits_test.npz", digits.x_test, digits.y_test),
        "unlabeled": save_npz(folder / "digits_unlabeled.npz", digits.x_train),
    }
