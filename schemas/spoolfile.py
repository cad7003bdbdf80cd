"""The spool file format: encoded events kept on local disk while Kafka is unreachable.

The producer appends to spool files; ``predstream spool drain`` re-sends them and
``predstream backfill`` loads them straight into Postgres, so the format is part of the
contract. A file is::

    b"PSSPOOL1\\n"                                  9-byte header
    record*                                         until end of file
    record = u32 BE length | u32 BE crc32(payload) | payload (one encoded event frame)

A crash can leave a partly written last record. :func:`read_spool` returns every good
record before the first bad one and describes what it skipped, so nothing good is lost
and the damage is reported.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SPOOL_HEADER", "SpoolContents", "encode_record", "read_spool", "MAX_RECORD_BYTES"]

SPOOL_HEADER = b"PSSPOOL1\n"
_RECORD = struct.Struct(">II")
#: A length above this is corruption, not a record.
MAX_RECORD_BYTES = 16 * 1024 * 1024


def encode_record(payload: bytes) -> bytes:
    """Frame one encoded event for appending to a spool file."""
    return _RECORD.pack(len(payload), zlib.crc32(payload)) + payload


@dataclass(frozen=True)
class SpoolContents:
    """What a spool file held: its good records, and what was wrong after them, if anything."""

    path: Path
    records: list[bytes]
    bad_tail_offset: int | None = None
    bad_tail_bytes: int = 0
    problem: str | None = None

    @property
    def intact(self) -> bool:
        return self.problem is None


def read_spool(path: str | Path) -> SpoolContents:
    """Read a spool file; never raises for a damaged tail (see ``SpoolContents.problem``)."""
    path = Path(path)
    data = path.read_bytes()
    if not data.startswith(SPOOL_HEADER):
        if SPOOL_HEADER.startswith(data):  # created, header cut short by a crash
            return SpoolContents(path, [], 0, len(data), "truncated header") if data else SpoolContents(path, [])
        return SpoolContents(path, [], 0, len(data), "not a predstream spool file (bad header)")
    records: list[bytes] = []
    pos = len(SPOOL_HEADER)
    end = len(data)
    while pos < end:
        if end - pos < _RECORD.size:
            return SpoolContents(path, records, pos, end - pos, "truncated record header")
        length, crc = _RECORD.unpack_from(data, pos)
        if length > MAX_RECORD_BYTES:
            return SpoolContents(path, records, pos, end - pos, f"implausible record length {length}")
        start = pos + _RECORD.size
        if end - start < length:
            return SpoolContents(path, records, pos, end - pos, "truncated record")
        payload = data[start : start + length]
        if zlib.crc32(payload) != crc:
            return SpoolContents(path, records, pos, end - pos, "checksum mismatch")
        records.append(payload)
        pos = start + length
    return SpoolContents(path, records)
