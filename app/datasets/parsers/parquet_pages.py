"""How much memory reading a Parquet column costs, read from the page headers themselves.

pyarrow decompresses a column one page at a time, into a buffer of the size the page's header
claims (the footer's sizes are claims too, and may disagree). A hostile file can hold one page
that decodes to gigabytes from a few kilobytes. So before pyarrow reads any data, the page
headers of every column chunk are walked (Thrift compact protocol: only the two sizes are kept,
everything else is skipped) and each column's largest page is known."""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Any

_FIRST_READ = 256
MAX_PAGE_HEADER_BYTES = 1024 * 1024  # statistics of numeric pages take a few dozen bytes
_MAX_DEPTH = 16


class PagesRejected(ValueError):
    """Page headers that are malformed, or that claim more than the limits allow."""


class _Short(Exception):
    """The header runs past the bytes read so far."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def byte(self) -> int:
        if self.at >= len(self.data):
            raise _Short()
        self.at += 1
        return self.data[self.at - 1]

    def varint(self) -> int:
        value = shift = 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise PagesRejected("a Parquet page header holds a malformed number")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def skip(self, count: int) -> None:
        if count < 0:
            raise PagesRejected("a Parquet page header holds a negative length")
        self.at += count
        if self.at > len(self.data):
            raise _Short()

    def value(self, kind: int, depth: int) -> None:
        """Skip one value of a compact-protocol type."""
        if depth > _MAX_DEPTH:
            raise PagesRejected("a Parquet page header is nested too deeply")
        if kind in (1, 2):  # booleans live in the type nibble (or one byte, in lists)
            return
        if kind == 3:
            self.skip(1)
        elif kind in (4, 5, 6):
            self.varint()
        elif kind == 7:
            self.skip(8)
        elif kind == 8:
            self.skip(self.varint())
        elif kind in (9, 10):
            head = self.byte()
            size, element = head >> 4, head & 0x0F
            if size == 15:
                size = self.varint()
            for _ in range(size):
                if element in (1, 2):
                    self.skip(1)
                else:
                    self.value(element, depth + 1)
        elif kind == 11:
            size = self.varint()
            types = self.byte() if size else 0
            for _ in range(size):
                self.value(types >> 4, depth + 1)
                self.value(types & 0x0F, depth + 1)
        elif kind == 12:
            self.struct(depth + 1)
        else:
            raise PagesRejected(f"a Parquet page header holds an unknown type {kind}")

    def struct(self, depth: int) -> dict[int, int]:
        """The struct's integer fields by id (nested values are skipped)."""
        found: dict[int, int] = {}
        field = 0
        while True:
            head = self.byte()
            if head == 0:
                return found
            kind, delta = head & 0x0F, head >> 4
            field = field + delta if delta else self.zigzag()
            if kind in (5, 6) and depth == 0:
                found[field] = self.zigzag()
            else:
                self.value(kind, depth)


@dataclass(frozen=True)
class PageHeader:
    header_bytes: int
    uncompressed: int
    compressed: int


def read_page_header(fh: IO[bytes], at: int) -> PageHeader:
    size = _FIRST_READ
    while True:
        fh.seek(at)
        data = fh.read(size)
        reader = _Reader(data)
        try:
            fields = reader.struct(0)
        except _Short:
            if len(data) < size or size >= MAX_PAGE_HEADER_BYTES:
                raise PagesRejected("a Parquet page header is truncated or too long") from None
            size *= 8
            continue
        if 2 not in fields or 3 not in fields or fields[2] < 0 or fields[3] < 0:
            raise PagesRejected("a Parquet page header has no valid page sizes")
        return PageHeader(reader.at, fields[2], fields[3])


def column_costs(
    fh: IO[bytes], metadata: Any, file_bytes: int, max_pages: int, widths: list[float]
) -> list[int]:
    """Per column, over every row group: what reading its chunk holds at once. pyarrow
    decodes a row group's column whole (`widths`: bytes a decoded value), beside its
    dictionary and the page being decoded, compressed and decompressed."""
    costs = [0] * metadata.num_columns
    pages = 0
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for column in range(metadata.num_columns):
            chunk = row_group.column(column)
            start = int(chunk.data_page_offset)
            dictionary = chunk.dictionary_page_offset
            if chunk.has_dictionary_page and dictionary and 0 < int(dictionary) < start:
                start = int(dictionary)  # where pyarrow starts reading the chunk, too
            end = start + int(chunk.total_compressed_size)
            if start < 0 or end > file_bytes or end < start:
                raise PagesRejected(f"column {column} points outside the Parquet file")
            at, largest, dictionary_bytes = start, 0, 0
            while at < end:
                page = read_page_header(fh, at)
                pages += 1
                if pages > max_pages:
                    raise PagesRejected(f"the Parquet file holds more than {max_pages:,} pages")
                cost = page.uncompressed + page.compressed
                if at == start and chunk.has_dictionary_page:
                    dictionary_bytes = cost
                largest = max(largest, cost)
                at += page.header_bytes + page.compressed
            decoded = int(int(chunk.num_values) * widths[column]) + 1
            costs[column] = max(costs[column], decoded + largest + dictionary_bytes)
    return costs
