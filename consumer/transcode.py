"""Prediction events from Kafka straight into PostgreSQL binary COPY rows: transcode, don't materialise.

Both ends are binary formats of length-prefixed UTF-8 strings and fixed-size numbers. A
:class:`Transcoder` reads each message's Avro body and writes the row's binary COPY
bytes as it goes, checking every rule of the contract inline: lengths, ranges, literals,
NUL characters, UTF-8, a prompt or messages, and both identities (``prompt_id`` and
``event_id`` recomputed from the event's own fields). No dict, model instance or row
tuple is built per event. Its code is generated from the contract when the transcoder is
built (the Avro schema for the wire, the pydantic model :class:`~predstream.schemas.PredictionEvent`
for the rules; see :mod:`predstream.consumer._transcode_gen`) and compiled with ``exec``.

For a message it is not sure about (any broken rule, a frame of another schema version, a
registry id not known yet, a mismatched identity, anything unusual) it gives ``None``: the
caller decodes that one with :class:`~predstream.schemas.codec.Decoder` (the pydantic path),
which accepts it or says why not, so dead-letter reasons are the same as without the
transcoder. Registry-framed messages (Confluent wire format) are transcoded once the decoder
has looked their schema id up and found the current schema (:meth:`Transcoder.learn`): the
messages of an id read before that (the first batch) take the pydantic path, the rest are
transcoded.
``tests/test_transcode.py`` holds the two paths to the same rows, on valid, mutated and
random bodies, in a real PostgreSQL.

A :class:`CopyRow` is what :class:`~predstream.consumer.sink.PostgresSink` needs: the row's
bytes (all of :attr:`Transcoder.columns` but the batch's ``ingested_at``, which the sink
appends), the ``event_id`` and recency (``attempt``, ``produced_at``) for newest-wins within
a batch, and the message (value and coordinates) for dead letters and slow paths.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import logging
import struct
from collections.abc import Iterable
from functools import lru_cache
from typing import Any, NamedTuple

from predstream.schemas.codec import (
    CONFLUENT_MAGIC,
    CURRENT_VERSION,
    Decoder,
    confluent_frame,
    load_schema,
    load_schema_text,
    single_object_header,
)
from predstream.schemas.event import MAX_EVENT_BYTES, PredictionEvent
from predstream.schemas.prompt_id import compute_prompt_id

from ._columns import COLUMN_TYPES, DIRECT_COLUMNS
from ._transcode_gen import PG_EPOCH_US, REPEAT_GROUPS, Generated, Unsupported, generate

__all__ = ["CopyRow", "Transcoder", "PG_EPOCH_US", "copy_columns"]

_log = logging.getLogger(__name__)

#: Prompts remembered as checked (per transcoder), each of at most this many bytes.
_MEMO_ENTRIES = 4096
_MEMO_BYTES = 16384


class CopyRow(NamedTuple):
    """One transcoded event: its COPY row and what the sink and the caller need besides."""

    #: the row in PostgreSQL's binary COPY format, every column of ``Transcoder.columns``
    #: but the last (``ingested_at``), which the sink appends for the whole batch; in
    #: pieces, which the sink joins once per batch (:attr:`data` joins one row's)
    parts: tuple[bytes, ...]
    #: the event's id (64 lowercase hex digits, ASCII)
    event_id: bytes
    attempt: int
    #: produced_at, in microseconds since 1970-01-01 UTC
    produced_us: int
    #: the message value the row was read from
    value: bytes
    topic: str | None
    partition: int | None
    offset: int | None

    @property
    def data(self) -> bytes:
        """The row's bytes (:attr:`parts` joined)."""
        return b"".join(self.parts)

    def record(self) -> Any:
        """The same event as an :class:`~predstream.consumer.sink.IngestRecord`, decoded by the
        pydantic path (for the sink's slow paths)."""
        from .sink import IngestRecord

        value = self.value
        if value[:1] == CONFLUENT_MAGIC:  # a registry id of the current schema: the same body
            value = single_object_header(load_schema_text(CURRENT_VERSION)) + value[5:]
        return IngestRecord(_decoder().decode(value), self.topic, self.partition, self.offset)


class _Defer(ValueError):
    """The transcoder is not sure: the pydantic path decides."""


_DEFER = _Defer()


def _zz(buf: bytes, pos: int, b: int) -> tuple[int, int]:
    """A zig-zag varint whose first byte ``b`` was read (``pos`` is just after it)."""
    n = b & 0x7F
    shift = 7
    while b & 0x80:
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if shift > 70:
            raise _DEFER
    n &= 0xFFFF_FFFF_FFFF_FFFF  # bits past 64 dropped, as fastavro and the compiled reader do
    return (n >> 1) ^ -(n & 1), pos


def _zzlen(buf: bytes, pos: int, b: int) -> tuple[int, int]:
    """A length (a varint that must not be negative)."""
    n, pos = _zz(buf, pos, b)
    if n < 0:
        raise _DEFER
    return n, pos


def _topic_chunk(topic: str | None) -> bytes:
    if topic is None:
        return b"\xff\xff\xff\xff"
    data = topic.encode()
    return struct.pack(">i", len(data)) + data


class _Message:
    """A Kafka message's accessors over plain values (for :meth:`Transcoder.transcode`)."""

    __slots__ = ("_value", "_topic", "_partition", "_offset")

    def __init__(self, value: bytes | None, topic: str | None, partition: int | None, offset: int | None) -> None:
        self._value, self._topic, self._partition, self._offset = value, topic, partition, offset

    def value(self) -> bytes | None:
        return self._value

    def topic(self) -> str | None:
        return self._topic

    def partition(self) -> int | None:
        return self._partition

    def offset(self) -> int | None:
        return self._offset


class Transcoder:
    """Turns Kafka messages of the current schema into :class:`CopyRow`; see the module docstring.

    Build one per thread (it remembers the prompts it checked). ``available`` is False when
    the contract uses something the generator does not cover: then every message gets
    ``None`` and everything takes the pydantic path.
    """

    def __init__(self, model: type | None = None, avro_schema: dict[str, Any] | None = None,
                 columns: dict[str, str] | None = None, *, header: bytes | None = None) -> None:
        """The contract's transcoder; ``model``, ``avro_schema`` (fastavro's parsed form),
        ``columns`` (name -> type) and ``header`` (the single-object header of the schema's
        bodies) are for tests of the generator."""
        self._header = header or single_object_header(load_schema_text(CURRENT_VERSION))
        #: the 5-byte headers of Confluent frames whose registry id names this schema (:meth:`learn`)
        self._confluent_headers: set[bytes] = set()
        if model is None and avro_schema is None and columns is None:
            self.generated = _contract_transcoder()
        else:
            self.generated = _generate(model or PredictionEvent, avro_schema or load_schema(CURRENT_VERSION),
                                       columns or _TABLE)
        self._many = self._compile() if self.generated is not None else None

    @property
    def available(self) -> bool:
        return self._many is not None

    @property
    def columns(self) -> tuple[str, ...]:
        """The COPY column order of :attr:`CopyRow.data` (then ``ingested_at``)."""
        return self.generated.columns if self.generated is not None else ()

    def transcode_many(self, msgs: Iterable[Any]) -> list[CopyRow | None]:
        """One :class:`CopyRow` or ``None`` per Kafka message (``value()``, ``topic()``,
        ``partition()``, ``offset()``), in order."""
        if self._many is None:
            return [None for _ in msgs]
        rows: list[CopyRow | None] = self._many(msgs)
        return rows

    def learn(self, value: bytes | None, decoder: Decoder) -> None:
        """After ``decoder`` (the pydantic path) decoded ``value``: when it is a Confluent frame
        whose registry id ``decoder`` found to be the current schema, transcode that id's
        frames from now on (the body after the 5-byte header is the same as a single-object
        body's). A schema registry is asked once per id, by the decoder, never here."""
        schema_id = decoder.current_schema_id(value)
        if schema_id is not None and self._many is not None:
            self._confluent_headers.add(confluent_frame(schema_id, b""))

    def transcode(self, value: bytes | None, topic: str | None = None, partition: int | None = 0,
                  offset: int | None = 0) -> CopyRow | None:
        """One message value (with its coordinates) as a :class:`CopyRow`, or ``None``."""
        return self.transcode_many([_Message(value, topic, partition, offset)])[0]

    def _compile(self) -> Any:
        assert self.generated is not None
        namespace: dict[str, Any] = {
            "_Defer": _Defer,
            "_ERRORS": (ValueError, IndexError, struct.error, OverflowError, TypeError),
            "_zz": _zz,
            "_zzlen": _zzlen,
            "_HDR": self._header + self.generated.header_suffix,
            "_START": len(self._header),
            "_IDS": self._confluent_headers,
            "_SUFFIX": self.generated.header_suffix,
            "_MAX": MAX_EVENT_BYTES,
            "_TOPICS": {},
            "_PMEMO": {},
            "_LAST": [(bytes(MAX_EVENT_BYTES + 1),)] * len(REPEAT_GROUPS),  # matches no body
            "_MEMO_BYTES": _MEMO_BYTES,
            "_MEMO_ENTRIES": _MEMO_ENTRIES,
            "_DOUBLE": struct.Struct("<d").unpack_from,
            "_FLOAT": struct.Struct("<f").unpack_from,
            "_dumps": json.dumps,
            "_prompt_id": compute_prompt_id,
            "_sha256": hashlib.sha256,
            "_hex": binascii.b2a_hex,
            "_le64": struct.Struct("<Q").unpack_from,
            "_new": tuple.__new__,
            "_Row": CopyRow,
            "_topic_chunk": _topic_chunk,
        }
        namespace.update(self.generated.constants)
        exec(compile(self.generated.source, "<predstream transcoder>", "exec"), namespace)  # noqa: S102
        return namespace["transcode_many"]


_TABLE = {c: COLUMN_TYPES[c] for c in DIRECT_COLUMNS}


def _generate(model: type, avro_schema: dict[str, Any], columns: dict[str, str]) -> Generated | None:
    try:
        return generate(avro_schema, model, columns)
    except Unsupported as exc:
        _log.warning("the transcoder is off (every event takes the pydantic path): %s", exc)
        return None


@lru_cache(maxsize=1)
def _contract_transcoder() -> Generated | None:
    """The transcoder of the contract (generated once per process)."""
    return _generate(PredictionEvent, load_schema(CURRENT_VERSION), _TABLE)


def copy_columns() -> tuple[str, ...] | None:
    """The COPY column order of the contract's :class:`CopyRow` rows (``None``: no transcoder)."""
    generated = _contract_transcoder()
    return generated.columns if generated is not None else None


_DECODER: Decoder | None = None


def _decoder() -> Decoder:
    global _DECODER
    if _DECODER is None:
        _DECODER = Decoder()
    return _DECODER
