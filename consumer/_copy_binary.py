"""PostgreSQL's binary COPY format, for the sink: a batch's bytes, and the row of an event
that did not come through the transcoder (decoded by the pydantic path)."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ._columns import COLUMN_TYPES

__all__ = ["SIGNATURE", "TRAILER", "batch_time", "payload", "encode_values"]

#: The binary COPY header: signature, flags, header extension length.
SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
_NULL = b"\xff\xff\xff\xff"
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_INT4 = struct.Struct(">ii").pack
_INT8 = struct.Struct(">iq").pack
_FLOAT8 = struct.Struct(">id").pack
_LEN = struct.Struct(">i").pack
_INT4_RANGE = (-(2**31), 2**31 - 1)
_INT8_RANGE = (-(2**63), 2**63 - 1)


def batch_time(now: datetime) -> bytes:
    """The COPY field of a timestamptz (the batch's ``ingested_at``)."""
    return _INT8(8, (now - _PG_EPOCH) // _MICRO)


def payload(rows: Sequence[Sequence[bytes]], last_field: bytes) -> bytes:
    """The whole COPY stream: header, each row (its pieces) followed by ``last_field``, trailer.
    One join for the batch: the rows' pieces are never joined on their own."""
    flat = [SIGNATURE]
    for parts in rows:
        flat += parts
        flat.append(last_field)
    flat.append(TRAILER)
    return b"".join(flat)


def encode_values(values: Mapping[str, Any], columns: Sequence[str]) -> bytes | None:
    """One row of ``columns`` (but the last, the batch's time) from Python ``values`` by column
    name, as psycopg's binary dumpers write them; ``None`` when a value does not fit its column
    in binary (an integer out of range, text that is not UTF-8 or holds a NUL): then the sink
    lets the text path and the database decide, as before."""
    out = [struct.pack(">h", len(columns))]
    for name in columns[:-1]:
        value = values[name]
        if value is None:
            out.append(_NULL)
            continue
        kind = COLUMN_TYPES[name]
        if kind == "text":
            if not isinstance(value, str) or "\x00" in value:
                return None
            try:
                data = value.encode()
            except UnicodeEncodeError:
                return None
            out += (_LEN(len(data)), data)
        elif kind in ("integer", "bigint"):
            low, high = _INT4_RANGE if kind == "integer" else _INT8_RANGE
            if not isinstance(value, int) or not low <= value <= high:
                return None
            out.append(_INT4(4, value) if kind == "integer" else _INT8(8, value))
        elif kind == "double precision":
            out.append(_FLOAT8(8, float(value)))
        elif kind == "jsonb":
            data = b"\x01" + json.dumps(getattr(value, "obj", value)).encode()
            out += (_LEN(len(data)), data)
        elif kind == "timestamp with time zone":
            out.append(_INT8(8, (value - _PG_EPOCH) // _MICRO))
        else:  # pragma: no cover - COLUMN_TYPES names only the kinds above
            return None
    return b"".join(out)
