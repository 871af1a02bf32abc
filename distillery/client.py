"""A typed client for the Distillery REST API (httpx; no server-side code)."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypedDict, cast

import httpx

from distillery.types import (
    Artifact,
    Dataset,
    Job,
    JobEvent,
    JobMetrics,
    JobProgress,
    Teacher,
)

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)
TERMINAL = ("succeeded", "failed", "cancelled")
CHUNK = 1024 * 1024
DEFAULT_TIMEOUT = 300.0
# How long upload_teacher waits for a worker to inspect the upload, by default.
INSPECTION_TIMEOUT = 600.0


def job_metrics(job: Job) -> JobMetrics | None:
    """A succeeded job's full report (JobMetrics), else None."""
    metrics = job["metrics"]
    return (
        cast(JobMetrics, metrics) if metrics is not None and "teacher_accuracy" in metrics else None
    )


def job_progress(job: Job) -> JobProgress | None:
    """A training job's curves so far (JobProgress), else None."""
    metrics = job["metrics"]
    return cast(JobProgress, metrics) if metrics is not None and "latest" in metrics else None


class JobPage(TypedDict):
    data: list[Job]
    has_more: bool
    next_after: str | None


class DistilleryError(Exception):
    """An error answer from the server (problem+json), or the server out of reach (status 0)."""

    def __init__(
        self, status: int, code: str, detail: str, errors: list[dict[str, str]] | None = None
    ) -> None:
        self.status, self.code, self.detail, self.errors = status, code, detail, errors or []
        super().__init__(str(self))

    def __str__(self) -> str:
        line = " ".join(self.detail.split())  # one line, whatever the server sent
        return f"{self.status} {self.code}: {line}" if self.status else line


def _multipart(
    path: Path, fields: dict[str, str], progress: Progress | None
) -> tuple[Iterator[bytes], dict[str, str]]:
    """A streamed multipart body: the file is read in chunks, never whole."""
    boundary = secrets.token_hex(16)
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    )
    filename = path.name.replace('"', "%22").replace("\r", "").replace("\n", "")
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    size = path.stat().st_size

    def body() -> Iterator[bytes]:
        yield head
        done = 0
        with path.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                done += len(chunk)
                yield chunk
                if progress is not None:
                    progress(done, size)
        yield tail

    headers = {
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Length": str(len(head) + size + len(tail)),
    }
    return body(), headers


class Client:
    """The Distillery REST API. Methods return the server's JSON; errors raise DistilleryError.

    >>> with Client("http://127.0.0.1:8000", api_key=None) as client:
    ...     job = client.wait(client.create_job({...})["id"])
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=httpx.Timeout(timeout, connect=10.0)
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _unreachable(self, exc: httpx.TransportError) -> DistilleryError:
        if isinstance(exc, httpx.ConnectError):
            return DistilleryError(0, "unreachable", f"cannot reach {self.base_url}: {exc}")
        if isinstance(exc, httpx.TimeoutException):
            return DistilleryError(0, "timeout", f"{self.base_url} did not answer in time")
        return DistilleryError(0, "connection_lost", f"connection to {self.base_url} lost: {exc}")

    def _json(self, method: str, url: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        if response.status_code >= 400:
            raise _error(response)
        try:
            return response.json()
        except ValueError as exc:
            raise DistilleryError(
                response.status_code,
                "not_json",
                f"{self.base_url}{url} did not answer JSON: is it a Distillery server?",
            ) from exc

    # teachers and datasets
    def upload_teacher(
        self,
        path: Path | str,
        progress: Progress | None = None,
        wait: float = INSPECTION_TIMEOUT,
    ) -> Teacher:
        """Upload an ONNX or .pt2 teacher, streamed from disk; progress(done, total) per chunk.

        A worker inspects it: this waits up to `wait` seconds for its answer (0: return the
        teacher as the upload answered, maybe still `processing`). An invalid upload raises
        DistilleryError with the inspector's code and reason."""
        body, headers = _multipart(Path(path), {}, progress)
        teacher: Teacher = self._json("POST", "/v1/teachers", content=body, headers=headers)
        return self.wait_teacher(teacher["id"], wait) if wait else teacher

    def wait_teacher(self, teacher_id: str, timeout: float = INSPECTION_TIMEOUT) -> Teacher:
        """The teacher once a worker has inspected it (ready), or DistilleryError: invalid
        (422, the inspector's code), or still processing after `timeout` (504)."""
        deadline, delay = time.monotonic() + timeout, 0.2
        while True:
            teacher = self.get_teacher(teacher_id)
            if teacher["status"] == "ready":
                return teacher
            error = teacher["error"]
            if teacher["status"] == "invalid" and error is not None:
                raise DistilleryError(
                    422,
                    error["code"],
                    error["message"],
                    [{"field": "file", "message": error["message"]}],
                )
            if time.monotonic() + delay > deadline:
                raise DistilleryError(
                    504,
                    "inspection_pending",
                    f"teacher {teacher_id} is still {teacher['status']} after {timeout:.0f} s: "
                    "is a worker running? (GET /readyz says)",
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 2.0)

    def upload_dataset(
        self,
        path: Path | str,
        label_column: str | None = None,
        image_size: str | None = None,
        image_mode: str | None = None,
        progress: Progress | None = None,
    ) -> Dataset:
        """Upload NPZ, CSV, Parquet or a zip of class folders of images, streamed from disk."""
        fields = {
            k: v
            for k, v in (
                ("label_column", label_column),
                ("image_size", image_size),
                ("image_mode", image_mode),
            )
            if v is not None
        }
        body, headers = _multipart(Path(path), fields, progress)
        result: Dataset = self._json("POST", "/v1/datasets", content=body, headers=headers)
        return result

    def get_teacher(self, teacher_id: str) -> Teacher:
        result: Teacher = self._json("GET", f"/v1/teachers/{teacher_id}")
        return result

    def get_dataset(self, dataset_id: str) -> Dataset:
        result: Dataset = self._json("GET", f"/v1/datasets/{dataset_id}")
        return result

    # jobs
    def create_job(
        self, body: dict[str, Any], idempotency_key: str | None = None, retries: int = 3
    ) -> Job:
        """Submit a job: the JSON body of POST /v1/jobs (only the ids are required).

        Sent with an Idempotency-Key (a new one unless given) and retried with the same key
        when the connection fails, so a retry never creates a second job."""
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        for attempt in range(retries + 1):
            try:
                result: Job = self._json("POST", "/v1/jobs", json=body, headers=headers)
                return result
            except DistilleryError as exc:
                if exc.status != 0 or attempt == retries:
                    raise
                time.sleep(min(0.5 * 2**attempt, 5.0))
        raise AssertionError("unreachable")

    def get_job(self, job_id: str) -> Job:
        result: Job = self._json("GET", f"/v1/jobs/{job_id}")
        return result

    def list_jobs(
        self, limit: int = 20, after: str | None = None, status: str | None = None
    ) -> JobPage:
        """One page, newest first; pass the page's next_after as `after` for the next."""
        params: dict[str, Any] = {"limit": limit}
        if after:
            params["after"] = after
        if status:
            params["status"] = status
        result: JobPage = self._json("GET", "/v1/jobs", params=params)
        return result

    def iter_jobs(self, status: str | None = None, page_size: int = 100) -> Iterator[Job]:
        """Every job, newest first, fetching pages as needed."""
        after = None
        while True:
            page = self.list_jobs(limit=page_size, after=after, status=status)
            yield from page["data"]
            if not page["has_more"]:
                return
            after = page["next_after"]

    def cancel_job(self, job_id: str) -> Job:
        """Queued jobs end at once; running ones stop within an epoch (status stays running)."""
        result: Job = self._json("POST", f"/v1/jobs/{job_id}/cancel")
        return result

    def events(self, job_id: str, after: int | None = None) -> list[JobEvent]:
        """The job's events after event id `after`, oldest first (up to 1000)."""
        params: dict[str, Any] = {"limit": 1000}
        if after is not None:
            params["after"] = after
        result: list[JobEvent] = self._json("GET", f"/v1/jobs/{job_id}/events", params=params)[
            "data"
        ]
        return result

    def wait(
        self,
        job_id: str,
        on_update: Callable[[Job], None] | None = None,
        timeout: float | None = None,
    ) -> Job:
        """Poll until the job ends and return it. on_update(job) runs whenever status, stage or
        epoch changes. Polls back off from 0.2 s to 5 s and start fast again on a change; a
        few dropped connections in a row (a restarting server) are retried."""
        started, delay, failures = time.monotonic(), 0.2, 0
        seen: tuple[Any, ...] = ()
        while True:
            try:
                job = self.get_job(job_id)
                failures = 0
            except DistilleryError as exc:
                failures += 1
                if exc.status not in (0, 502, 503, 504) or failures > 5:
                    raise
            else:
                state = (job["status"], job["stage"], job["epoch"])
                if state != seen:
                    seen, delay = state, 0.2
                    if on_update is not None:
                        on_update(job)
                if job["status"] in TERMINAL:
                    return job
            if timeout is not None and time.monotonic() - started > timeout:
                status = seen[0] if seen else "unknown"
                raise DistilleryError(
                    0, "timeout", f"job {job_id} still {status} after {timeout} s"
                )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    # artifacts
    def list_artifacts(self, job_id: str) -> list[Artifact]:
        result: list[Artifact] = self._json("GET", f"/v1/jobs/{job_id}/artifacts")["data"]
        return result

    def download_artifact(
        self, job_id: str, name: str, dest_path: Path | str, progress: Progress | None = None
    ) -> Path:
        """Stream an artifact to dest_path (a file, or a folder to put `name` in) and return
        the file's path. The file appears only once complete."""
        target = Path(dest_path)
        if target.is_dir():
            target = target / name
        partial = target.with_name(target.name + ".partial")
        try:
            with self._http.stream("GET", f"/v1/jobs/{job_id}/artifacts/{name}") as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error(response)
                total = int(response.headers.get("content-length", 0))
                done = 0
                with partial.open("wb") as out:
                    for chunk in response.iter_bytes(CHUNK):
                        out.write(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(done, total)
        except httpx.TransportError as exc:
            partial.unlink(missing_ok=True)
            raise self._unreachable(exc) from exc
        partial.replace(target)
        return target


def _error(response: httpx.Response) -> DistilleryError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        text = response.text.strip()[:200] or response.reason_phrase or "error"
        return DistilleryError(response.status_code, "http_error", text)
    errors = body.get("errors")
    return DistilleryError(
        response.status_code,
        str(body.get("code") or "error"),
        str(body.get("detail") or body.get("title") or response.reason_phrase),
        errors if isinstance(errors, list) else None,
    )
