"""Uploaded filenames as the user gave them, minus what is not a character of a name.

A filename is only ever displayed (in responses, the dashboard, a CLI table), never used as a
path, but NUL, terminal escapes, line breaks and the invisible marks that reorder text
(U+202E "right-to-left override") can forge what a terminal or a page shows. They are dropped;
every visible character is kept."""

from __future__ import annotations

import unicodedata

MAX_LENGTH = 255  # the filename columns' width

# Bidirectional embeddings, overrides and isolates: Unicode category Cf, but not all of Cf
# (a zero-width joiner is part of some names) should go.
_REORDERING = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def display_filename(raw: str | None, default: str) -> str:
    """`raw` without control characters (Cc: NUL, ESC, CR, LF, DEL, C1) or bidirectional
    controls, at most MAX_LENGTH characters; `default` if nothing is left."""
    kept = "".join(c for c in raw or "" if unicodedata.category(c) != "Cc" and c not in _REORDERING)
    kept = kept.strip()[:MAX_LENGTH]
    return kept or default
