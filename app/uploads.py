"""Receiving uploads: a byte limit enforced on what is actually read, and files on disk."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi import UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PayloadTooLarge, problem_response
from app.storage import FileDigest

# A JSON body (a job spec) is parsed whole in memory; a real one is a few KB.
MAX_JSON_BODY_BYTES = 1024 * 1024


class UploadLimitMiddleware:
    """Refuses request bodies over `max_bytes` with 413, counting the bytes received; bodies
    that are not multipart uploads (JSON) over MAX_JSON_BODY_BYTES too.

    Content-Length is checked first; chunked bodies are counted as they arrive, and once
    the limit is passed the app's own response is replaced by the 413."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        upload = headers.get(b"content-type", b"").lower().startswith(b"multipart/form-data")
        limit = self.max_bytes if upload else min(self.max_bytes, MAX_JSON_BODY_BYTES)
        too_large = PayloadTooLarge(
            f"the request body exceeds the limit of {limit} bytes",
            field="file" if upload else "body",
        ).to_problem()
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await problem_response(too_large)(scope, receive, send)
            return

        received = 0
        exceeded = False
        responded = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal responded
            if exceeded:
                if not responded:
                    responded = True
                    await problem_response(too_large)(scope, receive, send)
                return
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not responded:
            await problem_response(too_large)(scope, receive, send)


@contextmanager
def received_file(upload: UploadFile, tmp_dir: Path, chunk_bytes: int) -> Iterator[FileDigest]:
    """Copy an upload to a private temp file, hashing as it goes; removed afterwards."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=tmp_dir, prefix="upload-"))
    path = folder / "upload.bin"
    hasher = hashlib.sha256()
    size = 0
    try:
        upload.file.seek(0)
        with path.open("wb") as out:
            while chunk := upload.file.read(chunk_bytes):
                hasher.update(chunk)
                size += len(chunk)
                out.write(chunk)
        yield FileDigest(path=path, sha256=hasher.hexdigest(), bytes=size)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
