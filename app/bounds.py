"""What the storage can hold: every integer the API takes from a client is bounded by these."""

from __future__ import annotations

INT32_MAX = 2**31 - 1  # an Integer column
INT64_MAX = 2**63 - 1  # a BigInteger column (event ids)
