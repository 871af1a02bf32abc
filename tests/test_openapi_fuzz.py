"""schemathesis over the running API's OpenAPI document: no input gets a 5xx, on any route.

It runs against a real API process (Postgres, Redis) beside the production test stack, with
rate limiting off so that every generated request reaches a route. (schemathesis's lazy pytest
loader does not run under pytest 9, so each operation's strategy drives Hypothesis here.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.app.live import extra_api
from tests.conftest import Service

EXAMPLES = 20  # per operation
SLOW_EXAMPLES = {"POST /v1/teachers": 6}  # each upload is inspected in a subprocess


@pytest.fixture(scope="module")
def api_under_fuzz(
    production_service: Service, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    service = extra_api(
        production_service,
        tmp_path_factory.mktemp("openapi-fuzz"),
        DISTILLERY_RATE_LIMIT_PER_SECOND="0",
    )
    try:
        yield service
    finally:
        service.stop()


def _fuzz(operation: Any, examples: int) -> str | None:
    """The first failure schemathesis finds on one operation, or None."""

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        case.call_and_validate(checks=[not_a_server_error], timeout=120)

    try:
        run()
    except (Exception, BaseExceptionGroup) as exc:  # the failing case, and how to reproduce it
        return f"{operation.method.upper()} {operation.path}:\n{str(exc)[:3000]}"
    return None


def test_no_server_errors_on_any_route(api_under_fuzz: Service) -> None:
    schema = schemathesis.openapi.from_url(f"{api_under_fuzz.base_url}/openapi.json")
    failures = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        label = f"{operation.method.upper()} {operation.path}"
        failure = _fuzz(operation, SLOW_EXAMPLES.get(label, EXAMPLES))
        if failure is not None:
            failures.append(failure)
    assert operations >= 15, f"only {operations} operations in the OpenAPI document"
    assert not failures, "\n\n".join(failures)
    assert api_under_fuzz.alive()


@pytest.mark.parametrize(
    "url",
    [
        "/v1/jobs?after=%00",
        "/v1/teachers?after=a%00b",
        "/v1/datasets/%00",
        "/v1/jobs/%00/events",
        "/v1/jobs/%00/artifacts/x",
        "/v1/jobs?status=bogus",
        "/v1/jobs?limit=0",
    ],
)
def test_what_schemathesis_found_is_a_422(api_under_fuzz: Service, url: str) -> None:
    """Regressions: NUL characters reached Postgres (500), and an unknown status was ignored."""
    r = api_under_fuzz.client.get(url)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
