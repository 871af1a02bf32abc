"""A zip archive's central directory, sized and counted before zipfile reads it.

zipfile reads the whole central directory into memory and makes a ZipInfo (about 400 bytes)
for every entry in it. Its size and where it starts are found here exactly as zipfile finds
them, and its entries are counted by their signature (a count that can only be too high), so
that an archive of a million empty names is refused without a million objects."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

_END = b"PK\x05\x06"
_END64 = b"PK\x06\x06"
_LOCATOR64 = b"PK\x06\x07"
_ENTRY = b"PK\x01\x02"


@dataclass(frozen=True)
class ZipDirectory:
    size: int  # bytes, as the archive declares
    entries: int  # at least as many as zipfile will read


def _end_record(tail: bytes) -> int:
    """Where the end-of-directory record is in `tail` (zipfile's rule), or -1."""
    at = len(tail) - 22
    if at >= 0 and tail[at : at + 4] == _END and tail[at + 20 : at + 22] == b"\0\0":
        return at
    at = tail.rfind(_END)
    return at if at >= 0 and len(tail) - at >= 22 else -1


def read_directory(path: Path, max_bytes: int) -> ZipDirectory | None:
    """The directory's declared size, and its entries if it is at most `max_bytes` (else 0).
    None if there is no end record (zipfile then says the file is not a zip)."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        tail_at = max(0, size - (22 + 65535 + 20 + 56))
        fh.seek(tail_at)
        tail = fh.read()
        at = _end_record(tail)
        if at < 0:
            return None
        directory = struct.unpack_from("<I", tail, at + 12)[0]
        start = tail_at + at - directory
        record = tail[at - 76 : at - 20] if at >= 76 else b""
        if tail[at - 20 : at - 16] == _LOCATOR64 and record[:4] == _END64:
            directory = struct.unpack_from("<Q", record, 40)[0]
            start = tail_at + at - 76 - directory
        if directory > max_bytes or start < 0:
            return ZipDirectory(int(directory), 0)
        fh.seek(start)
        entries = fh.read(directory).count(_ENTRY)
    return ZipDirectory(int(directory), entries)
