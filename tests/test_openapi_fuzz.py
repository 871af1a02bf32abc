"""`schemathesis run --checks all` over the running API's OpenAPI document, on both stacks: no
input gets a 5xx, no response breaks the document (status, content type, schema, headers),
invalid requests are refused and an unsupported method gets a 405 naming the allowed ones.

Each stack gets an API process of its own beside it (same database and broker, rate limiting
off, its own queue so that no job the fuzzer submits runs), a tenant of its own, and real
resources to aim at: a teacher, a dataset and a finished job with its artifacts, so the
generated cursors, headers and names reach the database instead of stopping at a 404.

One setting is the API's, not a weakness of the run: a schema-valid request may still get a
422 when it names an id that does not exist or data that cannot be used (the document cannot
say which ids exist), so positive_data_acceptance also accepts 422. The run is bounded in
time (schemathesis's --max-time) and prints its report when something fails."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app.live import create_key, extra_api
from tests.support import Service, TeacherFiles

SECONDS_PER_STACK = 30
EXAMPLES = 15  # per operation and phase, within the time budget
CONFIG = """\
headers = {{ Authorization = "Bearer {key}" }}

[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429"]

[[operations]]
include-path-regex = "^/v1/jobs/\\\\{{job_id\\\\}}"
parameters = {{ job_id = "{job}", name = "report.html" }}

[[operations]]
include-path-regex = "^/v1/teachers/\\\\{{teacher_id\\\\}}"
parameters = {{ teacher_id = "{teacher}" }}

[[operations]]
include-path-regex = "^/v1/datasets/\\\\{{dataset_id\\\\}}"
parameters = {{ dataset_id = "{dataset}" }}

# No worker serves the fuzzed API's queues (so that nothing the fuzzer submits runs), so
# readiness answers 503 naming them, by design (tests/test_observability.py checks it).
[[operations]]
include-path = "/readyz"
enabled = false

[[operations]]
include-path = "/v1/teachers"
include-method = "POST"
generation = {{ max-examples = 4 }}  # each upload is inspected in a subprocess
"""


def _targets(stack: Service, key: str, teacher: TeacherFiles, train: Path) -> dict[str, str]:
    """A teacher, a dataset and a succeeded job of the fuzzing tenant."""
    auth = {"Authorization": f"Bearer {key}"}
    with teacher.onnx.open("rb") as fh:
        made = stack.client.post("/v1/teachers", files={"file": ("t.onnx", fh)}, headers=auth)
    with train.open("rb") as fh:
        data = stack.client.post("/v1/datasets", files={"file": ("d.npz", fh)}, headers=auth)
    assert made.status_code == data.status_code == 201, (made.text, data.text)
    body = {
        "teacher_id": made.json()["id"],
        "train_dataset_id": data.json()["id"],
        "student": {"hidden_sizes": [8]},
        "training": {"epochs": 1},
        "baseline": False,
    }
    job = stack.client.post("/v1/jobs", json=body, headers=auth)
    assert job.status_code == 201, job.text
    stack.client.headers.update(auth)
    try:
        done = stack.wait(job.json()["id"], timeout=180)
    finally:
        del stack.client.headers["Authorization"]
    assert done["status"] == "succeeded", done
    return {"teacher": made.json()["id"], "dataset": data.json()["id"], "job": done["id"]}


@pytest.fixture(params=["production", "embedded"])
def fuzzed(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    digits_teacher: TeacherFiles,
    digits_files: dict[str, Path],
) -> Iterator[tuple[Service, Path]]:
    stack: Service = request.getfixturevalue(f"{request.param}_service")
    key = create_key(stack, f"fuzz-{request.param}")
    targets = _targets(stack, key, digits_teacher, digits_files["train"])
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.format(key=key, **targets))
    service = extra_api(
        stack,
        tmp_path,
        DISTILLERY_RATE_LIMIT_PER_SECOND="0",
        DISTILLERY_QUEUE_NAME=f"fuzz-{request.param}-nobody-listens",
        # Nobody serves this queue's inspections either: an upload answers `processing`
        # after this wait (the documented answer when no worker has inspected it yet).
        DISTILLERY_UPLOAD_WAIT_SECONDS="1",
    )
    service.client.headers["Authorization"] = f"Bearer {key}"
    try:
        yield service, config
    finally:
        # Jobs the fuzzer managed to submit must not run later (a republish) on the stack.
        for job in service.client.get("/v1/jobs", params={"limit": 100}).json()["data"]:
            service.client.post(f"/v1/jobs/{job['id']}/cancel")
        service.stop()


def test_schemathesis_all_checks(fuzzed: tuple[Service, Path]) -> None:
    service, config = fuzzed
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file",
        str(config),
        "run",
        f"{service.base_url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(EXAMPLES),
        "--max-time",
        str(SECONDS_PER_STACK),
        "--workers",
        "1",
        "--request-timeout",
        "60",
        "--seed",
        "11",
        "--no-color",
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=SECONDS_PER_STACK + 180,
        cwd=config.parent,
        check=False,
    )
    report = done.stdout[-12000:] + done.stderr[-3000:]
    assert done.returncode == 0, report
    ran = re.search(r"(\d+) generated, (\d+) passed", done.stdout)
    assert ran and ran[1] == ran[2] and int(ran[1]) > 100, report
    assert service.alive()


@pytest.mark.parametrize(
    ("url", "headers", "field"),
    [
        ("/v1/jobs?after=%00", {}, None),
        ("/v1/teachers?after=a%00b", {}, None),
        ("/v1/jobs?status=bogus", {}, "status"),
        ("/v1/jobs?limit=0", {}, "limit"),
        ("/v1/teachers?limit=1000", {}, "limit"),
        ("/v1/datasets?limit=-1", {}, "limit"),
        ("/v1/jobs/{job}/events?after=9223372036854775808", {}, "after"),
        ("/v1/jobs/{job}/events?after=-1", {}, "after"),
        ("/v1/jobs/{job}/events?limit=100000", {}, "limit"),
        ("/v1/jobs/{job}/events/stream?after=99999999999999999999", {}, "after"),
        ("/v1/jobs/{job}/events/stream", {"Last-Event-ID": "9223372036854775808"}, "last-event-id"),
        ("/v1/jobs/{job}/events/stream", {"Last-Event-ID": "1e99"}, "last-event-id"),
        ("/v1/jobs/{job}/events/stream", {"Last-Event-ID": "-5"}, "last-event-id"),
    ],
)
def test_out_of_range_values_are_a_422(
    service: Service, fuzz_job: str, url: str, headers: dict[str, str], field: str | None
) -> None:
    """Regressions on both stacks: a NUL character in a cursor reached Postgres (500), an
    unknown status was ignored, an event cursor past 2^63 - 1 answered 500 (SQLite) and a huge
    Last-Event-ID cut the stream mid-response (both)."""
    r = service.client.get(url.format(job=fuzz_job), headers=headers)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["code"] == "invalid_input", problem
    if field is not None:
        assert field in [e["field"] for e in problem["errors"]], problem
    assert service.alive()


@pytest.mark.parametrize(
    "url",
    [
        "/v1/datasets/%00",
        "/v1/jobs/%00/events",
        "/v1/jobs/%00/artifacts/x",
        f"/v1/teachers/{'t' * 300}",
    ],
)
def test_ids_no_item_can_have_are_not_found(service: Service, url: str) -> None:
    """An id with a NUL (or longer than any id) names nothing: 404 on both stacks (Postgres
    refused the NUL with a 500, then a 422; SQLite looked it up)."""
    r = service.client.get(url)
    assert r.status_code == 404, r.text
    assert r.json()["code"] == "not_found"


def test_methods_and_bodies_the_routes_do_not_take(service: Service, fuzz_job: str) -> None:
    api = service.client
    r = api.delete("/v1/jobs")
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST", r.headers
    assert api.put(f"/v1/jobs/{fuzz_job}").headers["allow"] == "GET"
    r = api.post("/v1/jobs", content=b"\xff\xfe", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body", r.text
    cross = '"cross_domain": {"phi": "dilated_conv", "weights": [%s, 1.0, 1.0]}'
    for weight in ("NaN", "Infinity", "-1e999"):
        body = '{"train_dataset_id": "x", "teacher_id": "y", %s}' % (cross % weight)
        r = api.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422, r.text
        assert "cross_domain.weights.0" in [e["field"] for e in r.json()["errors"]], r.text
    # A JSON body is read whole: past 1 MiB it is refused before it is parsed.
    huge = b'{"teacher_id": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    r = api.post("/v1/jobs", content=huge, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["errors"][0]["field"] == "body", r.text
    assert service.alive()


_JOBS: dict[str, str] = {}


@pytest.fixture
def fuzz_job(service: Service, digits_teacher: TeacherFiles, digits_files: dict[str, Path]) -> str:
    """A job of the anonymous tenant on this stack (cancelled), to aim cursors at; one a stack."""
    if service.name not in _JOBS:
        teacher = service.upload_teacher(digits_teacher.onnx).json()["id"]
        train = service.upload_dataset(digits_files["train"]).json()["id"]
        body = {"teacher_id": teacher, "train_dataset_id": train, "training": {"epochs": 1}}
        r = service.client.post("/v1/jobs", json=body)
        assert r.status_code == 201, r.text
        _JOBS[service.name] = r.json()["id"]
        service.client.post(f"/v1/jobs/{_JOBS[service.name]}/cancel")
    return _JOBS[service.name]
