"""A typed client for the Distillery REST API (httpx; no server-side code)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)
TERMINAL = ("succeeded", "failed", "cancelled")
CHUNK = 1024 * 1024


class DistilleryError(Exception):
    """An error answer from the server (problem+json), or the server out of reach."""

    def __init__(
        self, status: int, code: str, detail: str, errors: list[dict[str, str]] | None = None
    ) -> None:
        self.status, self.code, self.detail, self.errors = status, code, detail, errors or []
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.detail}" if self.status else self.detail


def _multipart(
    path: Path, fields: dict[str, str], progress: Progress | None
) -> tuple[Iterator[bytes], dict[str, str]]:
    """A streamed multipart body: the file is read in chunks, never whole."""
    boundary = secrets.token_hex(16)
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    )
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{path.name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
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
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        timeout: float = 120.0,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.ConnectError as exc:
            raise DistilleryError(0, "unreachable", f"cannot reach {self.base_url}: {exc}") from exc
        except httpx.TimeoutException as exc:
            raise DistilleryError(0, "timeout", f"{self.base_url} did not answer in time") from exc
        if response.status_code >= 400:
            raise _error(response)
        return response

    def _json(self, method: str, url: str, **kwargs: Any) -> Any:
        return self._request(method, url, **kwargs).json()

    # uploads
    def upload_teacher(self, path: Path | str, progress: Progress | None = None) -> dict[str, Any]:
        body, headers = _multipart(Path(path), {}, progress)
        result: dict[str, Any] = self._json("POST", "/v1/teachers", content=body, headers=headers)
        return result

    def upload_dataset(
        self,
        path: Path | str,
        label_column: str | None = None,
        image_size: str | None = None,
        image_mode: str | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
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
        result: dict[str, Any] = self._json("POST", "/v1/datasets", content=body, headers=headers)
        return result

    def get_teacher(self, teacher_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"/v1/teachers/{teacher_id}")
        return result

    def get_dataset(self, dataset_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"/v1/datasets/{dataset_id}")
        return result

    # jobs
    def create_job(self, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._json("POST", "/v1/jobs", json=body)
        return result

    def get_job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"/v1/jobs/{job_id}")
        return result

    def list_jobs(
        self, limit: int = 20, after: str | None = None, status: str | None = None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if after:
            params["after"] = after
        if status:
            params["status"] = status
        result: dict[str, Any] = self._json("GET", "/v1/jobs", params=params)
        return result

    def iter_jobs(self, status: str | None = None) -> Iterator[dict[str, Any]]:
        after = None
        while True:
            page = self.list_jobs(limit=100, after=after, status=status)
            yield from page["data"]
            if not page["has_more"]:
                return
            after = page["next_after"]

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("POST", f"/v1/jobs/{job_id}/cancel")
        return result

    def events(self, job_id: str, after: int | None = None) -> list[dict[str, Any]]:
        params = {"after": after} if after is not None else {}
        result: list[dict[str, Any]] = self._json(
            "GET", f"/v1/jobs/{job_id}/events", params={**params, "limit": 1000}
        )["data"]
        return result

    def wait(
        self,
        job_id: str,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Poll until the job ends, backing off from 0.2 s to 5 s; faster again on progress."""
        started, delay = time.monotonic(), 0.2
        seen: tuple[Any, ...] = ()
        while True:
            job = self.get_job(job_id)
            state = (job["status"], job["stage"], job["epoch"])
            if state != seen:
                seen, delay = state, 0.2
                if on_update is not None:
                    on_update(job)
            if job["status"] in TERMINAL:
                return job
            if timeout is not None and time.monotonic() - started > timeout:
                raise DistilleryError(0, "timeout", f"job {job_id} still {job['status']}")
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    # artifacts
    def list_artifacts(self, job_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", f"/v1/jobs/{job_id}/artifacts")["data"]
        return result

    def download_artifact(
        self, job_id: str, name: str, destination: Path | str, progress: Progress | None = None
    ) -> Path:
        target = Path(destination)
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
        except httpx.ConnectError as exc:
            raise DistilleryError(0, "unreachable", f"cannot reach {self.base_url}: {exc}") from exc
        partial.replace(target)
        return target


def _error(response: httpx.Response) -> DistilleryError:
    try:
        body = response.json()
        return DistilleryError(
            response.status_code,
            str(body.get("code", "error")),
            str(body.get("detail", response.text[:200])),
            body.get("errors"),
        )
    except ValueError:
        return DistilleryError(response.status_code, "error", response.text[:200] or "error")
