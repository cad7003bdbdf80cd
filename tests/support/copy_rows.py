"""The oracle of the transcoder tests: a transcoded COPY row read back, set beside what the
pydantic path (``Decoder.decode`` + the sink's ``row_values``) makes of the same bytes."""

from __future__ import annotations

import json
import math
import struct
from datetime import UTC, datetime, timedelta
from typing import Any

from predstream.consumer._columns import COLUMN_TYPES, UPSERT_COLUMNS
from predstream.consumer.sink import IngestRecord, row_values
from predstream.consumer.transcode import CopyRow, Transcoder
from predstream.schemas.codec import Decoder
from predstream.schemas.errors import DecodeError, InvalidEventError

__all__ = ["read_copy_row", "pydantic_values", "compare", "Outcome"]

_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_DECODER = Decoder()


def read_copy_row(data: bytes, columns: tuple[str, ...]) -> dict[str, Any]:
    """One binary COPY row (every column but the last, ``ingested_at``) as Python values."""
    (count,) = struct.unpack_from(">h", data, 0)
    assert count == len(columns), (count, len(columns))
    pos, out = 2, {}
    for name in columns[:-1]:
        (n,) = struct.unpack_from(">i", data, pos)
        pos += 4
        if n == -1:
            out[name] = None
            continue
        raw = data[pos:pos + n]
        assert len(raw) == n, f"{name}: the row ends early"
        pos += n
        kind = COLUMN_TYPES[name]
        if kind == "text":
            out[name] = raw.decode()
            assert "\x00" not in out[name]
        elif kind == "integer":
            assert n == 4
            out[name] = struct.unpack(">i", raw)[0]
        elif kind == "bigint":
            assert n == 8
            out[name] = struct.unpack(">q", raw)[0]
        elif kind == "double precision":
            assert n == 8
            out[name] = _bits(struct.unpack(">d", raw)[0])
        elif kind == "jsonb":
            assert raw[:1] == b"\x01"
            out[name] = json.loads(raw[1:])
        elif kind == "timestamp with time zone":
            assert n == 8
            out[name] = struct.unpack(">q", raw)[0]
        else:
            raise AssertionError(kind)
    assert pos == len(data), f"{len(data) - pos} bytes after the last column"
    return out


def _bits(x: float) -> bytes:
    """A float by its bits (so -0.0 and 0.0 differ, as they do in the table)."""
    return struct.pack(">d", x)


def pydantic_values(event: Any, topic: str | None, partition: int | None, offset: int | None) -> dict[str, Any]:
    """The values the sink writes for ``event`` through the pydantic path, in the form of :func:`read_copy_row`."""
    values = dict(zip(UPSERT_COLUMNS, row_values(IngestRecord(event, topic, partition, offset)), strict=True))
    values["created_at"] = event.produced_at
    out = {}
    for name, v in values.items():
        kind = COLUMN_TYPES[name]
        if v is None:
            out[name] = None
        elif kind == "jsonb":
            out[name] = json.loads(json.dumps(v.obj))
        elif kind == "double precision":
            out[name] = _bits(float(v))
        elif kind == "timestamp with time zone":
            out[name] = (v - _PG_EPOCH) // timedelta(microseconds=1)
        else:
            out[name] = v
    return out


class Outcome:
    DEFERRED = "deferred"  # the transcoder left it to the pydantic path
    SAME = "same"  # both accept it and write the same row
    REFUSED = "refused"  # both refuse it (the transcoder by deferring)


def compare(transcoder: Transcoder, value: bytes, topic: str = "t", partition: int = 0, offset: int = 0) -> str:
    """Transcode ``value`` and decode it the pydantic way; fail unless they agree. Returns an :class:`Outcome`."""
    row = transcoder.transcode(value, topic, partition, offset)
    try:
        event = _DECODER.decode(value)
    except (DecodeError, InvalidEventError) as exc:
        assert row is None, f"the transcoder accepted what the pydantic path refuses ({exc.reason}: {exc})"
        return Outcome.REFUSED
    if row is None:
        return Outcome.DEFERRED
    assert isinstance(row, CopyRow)
    got = read_copy_row(row.data, transcoder.columns)
    want = pydantic_values(event, topic, partition, offset)
    assert got == want, {k: (got.get(k), want.get(k)) for k in want if got.get(k) != want.get(k)}
    assert row.event_id == event.event_id.encode()
    assert (row.attempt, row.produced_us) == (event.attempt, _micros(event.produced_at))
    assert (row.topic, row.partition, row.offset, row.value) == (topic, partition, offset, value)
    return Outcome.SAME


def _micros(dt: datetime) -> int:
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def finite(x: float) -> bool:
    return math.isfinite(x)
