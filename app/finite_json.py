"""JSON that strict parsers accept: no NaN or Infinity, anywhere.

Python's json module writes float('nan') as a bare `NaN`, which is not JSON (RFC 8259), and
Postgres refuses it in a JSON column. A metric can be undefined (the NLL of a class the
student gives probability 0, a KL that overflowed); it is then null. Every JSON the service
stores (the database's JSON columns) or serves (responses, events, metrics.json) goes through
`finite_or_null` and is written with allow_nan=False, so a NaN that slipped past it fails
loudly where it was written instead of reaching a client."""

from __future__ import annotations

import json
import math
from typing import Any


def finite_or_null(value: Any) -> Any:
    """`value` with every non-finite float (at any depth of dicts, lists and tuples) as None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(item) for item in value]
    return value


def dumps(value: Any, **options: Any) -> str:
    """json.dumps of finite_or_null(value), refusing any NaN left (e.g. in a `default`)."""
    return json.dumps(finite_or_null(value), allow_nan=False, **options)
