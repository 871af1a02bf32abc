"""Blob storage in the database: chunked and streamed both ways, never held whole."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import get_sessionmaker
from app.models import Blob, BlobChunk, new_id


@dataclass(frozen=True)
class FileDigest:
    path: Path
    sha256: str
    bytes: int


def digest_file(path: Path, chunk_bytes: int = 1024 * 1024) -> FileDigest:
    hasher = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(chunk_bytes):
            hasher.update(chunk)
            size += len(chunk)
    return FileDigest(path=path, sha256=hasher.hexdigest(), bytes=size)


def store_file(session: Session, path: Path, chunk_bytes: int) -> Blob:
    """Store a file as a blob, reusing an identical stored blob (same sha256 and size)."""
    digest = digest_file(path, chunk_bytes)
    existing = session.scalars(
        select(Blob).where(Blob.sha256 == digest.sha256, Blob.size == digest.bytes).limit(1)
    ).first()
    if existing is not None:
        return existing
    with path.open("rb") as fh:
        return store_stream(session, fh, chunk_bytes)


def store_stream(session: Session, source: BinaryIO, chunk_bytes: int) -> Blob:
    blob = Blob(id=new_id("blob"), sha256="", size=0, chunk_count=0)
    session.add(blob)
    session.flush()
    hasher = hashlib.sha256()
    seq = 0
    size = 0
    while chunk := source.read(chunk_bytes):
        hasher.update(chunk)
        size += len(chunk)
        row = BlobChunk(blob_id=blob.id, seq=seq, data=chunk)
        session.add(row)
        session.flush()
        # Drop the chunk from the identity map so a large blob never accumulates in memory.
        session.expunge(row)
        seq += 1
    blob.sha256 = hasher.hexdigest()
    blob.size = size
    blob.chunk_count = seq
    session.flush()
    return blob


def iter_blob(blob_id: str, chunk_count: int) -> Iterator[bytes]:
    """Yield a blob's chunks one query at a time, in a session of its own."""
    with get_sessionmaker()() as session:
        for seq in range(chunk_count):
            data = session.scalar(
                select(BlobChunk.data).where(BlobChunk.blob_id == blob_id, BlobChunk.seq == seq)
            )
            if data is None:
                raise RuntimeError(f"blob {blob_id} is missing chunk {seq}")
            yield bytes(data)


def write_blob_to(blob: Blob, destination: Path) -> Path:
    """Write a blob to a file atomically (temp file in the same folder, then rename)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=destination.parent, prefix=".partial-")
    hasher = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in iter_blob(blob.id, blob.chunk_count):
                hasher.update(chunk)
                out.write(chunk)
        if hasher.hexdigest() != blob.sha256:
            raise RuntimeError(f"blob {blob.id} does not match its sha256")
        os.replace(tmp_name, destination)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return destination


def cached_blob(blob: Blob, cache_dir: Path) -> Path:
    """A local copy of a blob, kept in a cache keyed by sha256 (shared by a worker's jobs)."""
    path = cache_dir / blob.sha256[:2] / blob.sha256
    if path.exists() and path.stat().st_size == blob.size:
        return path
    return write_blob_to(blob, path)
