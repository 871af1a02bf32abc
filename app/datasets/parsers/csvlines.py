"""The lines a CSV reader is fed, bounded before csv splits them.

csv.reader turns a record into a list of Python strings, about 60 bytes a cell: a 50 MB line
of "1," would be 25 million strings (gigabytes) before any check could see it. So the lines
are read with a length cap, and a record (one or more lines, when a quoted cell holds a line
break) is refused, before csv sees all of it, when it is longer than `max_chars` or holds more
delimiters than the cells it may have. The reader's loop calls `next_record` after each row."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TextIO


class RecordTooLarge(ValueError):
    """A record over a bound; the message names the bound."""


class BoundedLines:
    """Iterate the lines of `text` for csv.reader, `max_chars` and `max_cells` per record."""

    def __init__(self, text: TextIO, max_chars: int, max_cells: int) -> None:
        self._text = text
        self.max_chars = max_chars
        self.max_cells = max_cells
        self._chars = 0
        self._delimiters = 0
        self._quoted = False  # inside a quoted cell at the end of the line read last
        self.record = 1  # the 1-based number of the record being read

    def next_record(self, max_cells: int | None = None) -> None:
        self._chars = self._delimiters = 0
        self._quoted = False
        self.record += 1
        if max_cells is not None:
            self.max_cells = max_cells

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = self._text.readline(self.max_chars - self._chars + 1)
        if not line:
            raise StopIteration
        self._chars += len(line)
        if self._chars > self.max_chars:
            raise RecordTooLarge(
                f"row {self.record} of the CSV (the header is row 1) is longer than "
                f"{self.max_chars:,} characters (DISTILLERY_MAX_CSV_LINE_BYTES); a row is one "
                "line of numbers"
            )
        # Every cell but the last ends in a delimiter. A "," inside a quoted cell (a text's
        # comma) is no delimiter: between the quotes of a line, every other part is quoted.
        parts = line.split('"')
        self._delimiters += sum(part.count(",") for part in parts[int(self._quoted) :: 2])
        self._quoted ^= len(parts) % 2 == 0
        if self._delimiters >= self.max_cells:
            if self.record == 1:
                raise RecordTooLarge(
                    f"the CSV header has more than {self.max_cells:,} columns "
                    "(DISTILLERY_MAX_TABLE_COLUMNS); split the table, or reduce its features"
                )
            raise RecordTooLarge(
                f"row {self.record} has more cells than the header's {self.max_cells} columns; "
                "every row needs one value per column"
            )
        return line
