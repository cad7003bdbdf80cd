"""Avro encoding of prediction events, in two framings, and a decoder that reads both.

* **Single-object encoding** (default, no registry needed): ``C3 01`` + the writer
  schema's 8-byte little-endian CRC-64-AVRO fingerprint + the Avro body, as the Avro
  specification defines it (for the schema ``"int"`` the header is
  ``c3 01 8f 5c 39 3f 1a d5 75 72``). Writer schemas are resolved from the ``.avsc`` files
  shipped in ``schemas/avro/``. predstream 0.1 wrote the fingerprint byte-reversed; that
  form is still read (topics and spool files hold it), never written.
* **Confluent wire format** (when a schema registry URL is configured): ``00`` + 4-byte
  big-endian schema id + the Avro body, written by confluent-kafka's ``AvroSerializer``.

:class:`Decoder` reads both framings and resolves any known writer schema (older
versions included) against the current reader schema, then validates the result and
verifies its ``prompt_id`` and ``event_id`` against its own fields (:mod:`predstream.schemas.identity`).
"""

from __future__ import annotations

import io
import json
import struct
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from ._fastread import MalformedAvro, compile_reader

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient
from .errors import (
    FramingError,
    InvalidEventError,
    MalformedBodyError,
    RegistryUnavailableError,
    UnknownSchemaError,
)
from .event import MAX_EVENT_BYTES, PredictionEvent
from .identity import check_identity

__all__ = [
    "SCHEMA_VERSIONS",
    "CURRENT_VERSION",
    "Encoder",
    "SingleObjectEncoder",
    "ConfluentEncoder",
    "Decoder",
    "Frame",
    "parse_frame",
    "frame_header",
    "single_object_frame",
    "confluent_frame",
    "SINGLE_OBJECT_MAGIC",
    "CONFLUENT_MAGIC",
    "load_schema",
    "schema_fingerprint",
    "single_object_header",
    "make_encoder",
]

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"
SUBJECT_SUFFIX = "-value"

#: Every schema version ever published, oldest first. Never remove one.
SCHEMA_VERSIONS = (1, 2, 3)
CURRENT_VERSION = SCHEMA_VERSIONS[-1]


@cache
def load_schema_text(version: int = CURRENT_VERSION) -> str:
    """Return the JSON text of ``prediction_event.v{version}.avsc``."""
    return resources.files("predstream.schemas").joinpath(f"avro/prediction_event.v{version}.avsc").read_text()


@cache
def load_schema(version: int = CURRENT_VERSION) -> dict[str, Any]:
    """Return the parsed schema of a version (fastavro form)."""
    return _record_schema(fastavro.parse_schema(json.loads(load_schema_text(version))))


def _record_schema(parsed: object) -> dict[str, Any]:
    """A parsed schema that is a record (an event), or :class:`UnknownSchemaError`."""
    if not isinstance(parsed, dict):
        raise UnknownSchemaError(f"not an Avro record schema: {str(parsed)[:200]}")
    return parsed


def schema_fingerprint(schema_text: str) -> bytes:
    """CRC-64-AVRO fingerprint of a schema's parsing canonical form, 8 bytes little-endian
    (the byte order of the spec's single-object header; fastavro's hex is already in it)."""
    canonical = to_parsing_canonical_form(json.loads(schema_text))
    return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))


def single_object_header(schema_text: str) -> bytes:
    """The 10-byte single-object header of a schema: ``C3 01`` + its fingerprint."""
    return SINGLE_OBJECT_MAGIC + schema_fingerprint(schema_text)


#: Versions predstream 0.1 wrote with the fingerprint byte-reversed (read, never written).
_REVERSED_BY_0_1 = (1, 2)


@cache
def _known_fingerprints() -> dict[bytes, dict[str, Any]]:
    """Writer schema by the 8 header bytes: the spec's order, and for the versions 0.1
    wrote, the reversed order it used (both name the same schema)."""
    known: dict[bytes, dict[str, Any]] = {}
    for v in SCHEMA_VERSIONS:
        fp = schema_fingerprint(load_schema_text(v))
        for key in (fp, fp[::-1]) if v in _REVERSED_BY_0_1 else (fp,):
            if known.setdefault(key, load_schema(v)) is not load_schema(v):
                raise RuntimeError(f"schema v{v}'s fingerprint {key.hex()} collides with another version's")
    return known


class Frame(NamedTuple):
    """What a message value's first bytes say: its framing and its writer schema's reference."""

    framing: Literal["single-object", "confluent"]
    #: where the Avro body starts (10 for single-object, 5 for Confluent)
    body_start: int
    #: single-object: the 8 fingerprint bytes as written (either byte order); else None
    fingerprint: bytes | None = None
    #: Confluent: the registry's schema id; else None
    schema_id: int | None = None

    @property
    def schema_ref(self) -> str:
        """The ``predstream-schema`` header value: ``fp:<the 8 bytes as written, hex>`` or
        ``id:<n>``."""
        if self.fingerprint is not None:
            return "fp:" + self.fingerprint.hex()
        return f"id:{self.schema_id}"


def parse_frame(data: bytes | None) -> Frame:
    """Tell the framing and writer-schema reference of a message value (nothing is decoded).

    Raises :class:`FramingError` for an empty value, an unknown first byte or a header cut
    short.
    """
    if not data:
        raise FramingError("empty message value (a tombstone or a null value is not an event)")
    if data[:2] == SINGLE_OBJECT_MAGIC:
        if len(data) < 10:
            raise FramingError("single-object frame shorter than its 10-byte header")
        return Frame("single-object", 10, bytes(data[2:10]))
    if data[:1] == CONFLUENT_MAGIC:
        if len(data) < 5:
            raise FramingError("Confluent frame shorter than its 5-byte header")
        return Frame("confluent", 5, schema_id=struct.unpack(">I", data[1:5])[0])
    raise FramingError(
        f"unknown framing (first byte 0x{data[0]:02x}): expected Avro single-object "
        "(C3 01) or Confluent wire format (00)"
    )


def frame_header(data: bytes) -> bytes:
    """The framing's header of a message value (magic + schema reference), without checking
    it: a cheap cache key for what :func:`parse_frame` tells of it."""
    return data[:5] if data[:1] == CONFLUENT_MAGIC else data[:10]


def single_object_frame(fingerprint: bytes, body: bytes) -> bytes:
    """``C3 01`` + the 8 fingerprint bytes + an Avro body (a body re-framed, not re-encoded)."""
    return SINGLE_OBJECT_MAGIC + fingerprint + body


def confluent_frame(schema_id: int, body: bytes) -> bytes:
    """``00`` + the 4-byte big-endian schema id + an Avro body (a body re-framed, not re-encoded)."""
    return CONFLUENT_MAGIC + struct.pack(">I", schema_id) + body


class Encoder:
    """Turns events into Kafka message values. Subclasses fix the framing."""

    #: Header value naming the writer schema (fingerprint hex or registry id).
    schema_ref: str

    def encode(self, event: PredictionEvent) -> bytes:
        raise NotImplementedError


class SingleObjectEncoder(Encoder):
    """Avro single-object encoding with the current (or a given) schema version."""

    def __init__(self, version: int = CURRENT_VERSION) -> None:
        self._schema = load_schema(version)
        self._prefix = single_object_header(load_schema_text(version))
        self.schema_ref = Frame("single-object", 10, self._prefix[2:]).schema_ref

    def encode(self, event: PredictionEvent) -> bytes:
        return self.encode_record(event.to_avro())

    def encode_record(self, record: dict[str, Any]) -> bytes:
        """Encode a raw record dict (used by tests and by old-version writers)."""
        buf = io.BytesIO()
        buf.write(self._prefix)
        fastavro.schemaless_writer(buf, self._schema, record)
        return buf.getvalue()


#: An upper bound on the encoded size of everything in an event but its texts (ids, numbers,
#: framing): an event whose texts are short needs no encoding to know it fits.
_FIXED_BYTES = 4096


def oversize_bytes(event: PredictionEvent) -> int | None:
    """The encoded size of ``event`` (single-object framing) when it is over
    :data:`~predstream.schemas.MAX_EVENT_BYTES`, else ``None``. Cheap for the usual event:
    it is encoded only when its texts (at 4 UTF-8 bytes a character) could make it too large."""
    messages = event.messages or ()
    texts = [event.prompt, event.ground_truth, event.prediction, event.sample_source_id, event.job_id,
             event.model_name, *(m.role for m in messages), *(m.content for m in messages)]
    if _FIXED_BYTES + sum(4 * len(t) + 10 for t in texts if t) <= MAX_EVENT_BYTES:
        return None
    size = len(_size_encoder().encode(event))
    return size if size > MAX_EVENT_BYTES else None


@cache
def _size_encoder() -> SingleObjectEncoder:
    return SingleObjectEncoder()


class ConfluentEncoder(Encoder):
    """Confluent wire format through confluent-kafka's registry client and AvroSerializer."""

    def __init__(
        self,
        registry_url: str,
        topic: str,
        registry_config: dict[str, Any] | None = None,
        *,
        client: SchemaRegistryClient | None = None,
    ) -> None:
        from confluent_kafka.schema_registry.avro import AvroSerializer
        from confluent_kafka.serialization import MessageField, SerializationContext

        self.client = client or _registry_client(registry_url, registry_config)
        self._serializer = AvroSerializer(
            self.client, load_schema_text(), conf={"auto.register.schemas": True}
        )
        self._ctx = SerializationContext(topic, MessageField.VALUE)
        self.schema_ref = "registry"

    def encode(self, event: PredictionEvent) -> bytes:
        data: bytes | None = self._serializer(event.to_avro(), self._ctx)
        assert data is not None  # the serializer's answer to a None value, never to an event
        if self.schema_ref == "registry":
            self.schema_ref = "id:" + str(struct.unpack(">I", data[1:5])[0])
        return data


def _registry_client(url: str, config: dict[str, Any] | None) -> SchemaRegistryClient:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    # new_client serves mock:// URLs from an in-process registry (used by the tests).
    return SchemaRegistryClient.new_client({"url": url, **(config or {})})


def make_encoder(topic: str, registry_url: str | None, registry_config: dict[str, Any] | None = None) -> Encoder:
    """The encoder the settings ask for: Confluent framing with a registry, else single-object."""
    if registry_url:
        return ConfluentEncoder(registry_url, topic, registry_config)
    return SingleObjectEncoder()


class Decoder:
    """Decodes either framing into a validated :class:`PredictionEvent`.

    Raises a :class:`~predstream.schemas.errors.DecodeError` subclass for unreadable bytes and
    :class:`~predstream.schemas.errors.InvalidEventError` for events that break the contract.
    """

    def __init__(
        self,
        registry_url: str | None = None,
        registry_config: dict[str, Any] | None = None,
        *,
        client: SchemaRegistryClient | None = None,
    ) -> None:
        self._reader = load_schema(CURRENT_VERSION)
        # bodies written with the current schema (nearly all) skip fastavro's interpreter
        self._fast_read = compile_reader(self._reader)
        self._by_fp = _known_fingerprints()
        self._by_id: dict[int, dict[str, Any]] = {}
        self._registry = client or (_registry_client(registry_url, registry_config) if registry_url else None)

    def decode(self, data: bytes | None) -> PredictionEvent:
        """Decode, validate, and verify the event's identities (:func:`predstream.schemas.identity.check_identity`)."""
        return check_identity(PredictionEvent.from_avro(self.decode_record(data)))

    def decode_record(self, data: bytes | None) -> dict[str, Any]:
        """Decode to the reader-schema dict, without the contract's validation."""
        if data and len(data) > MAX_EVENT_BYTES:
            raise InvalidEventError(
                f"message is {len(data)} bytes; the limit is {MAX_EVENT_BYTES}", reason="too-large:message"
            )
        frame = parse_frame(data)
        assert data is not None  # parse_frame refuses an empty value
        if frame.fingerprint is not None:
            writer = self._by_fp.get(frame.fingerprint)
            if writer is None:
                raise UnknownSchemaError(
                    f"no known schema has fingerprint {frame.fingerprint.hex()}; "
                    "upgrade predstream on the consumer side"
                )
        else:
            assert frame.schema_id is not None  # a Confluent frame names its schema id
            writer = self._writer_by_id(frame.schema_id)
        return self._read(writer, data, frame.body_start)

    def current_schema_id(self, data: bytes | None) -> int | None:
        """The registry schema id of a Confluent-framed ``data`` when that id is known (looked
        up by an earlier :meth:`decode`) to be the current schema, else ``None``: its body is
        then exactly a single-object body of the current schema."""
        if not data or data[:1] != CONFLUENT_MAGIC or len(data) < 5:
            return None
        schema_id: int = struct.unpack(">I", data[1:5])[0]
        return schema_id if self._by_id.get(schema_id) is self._reader else None

    def _read(self, writer: dict[str, Any], data: bytes, start: int) -> dict[str, Any]:
        if writer is self._reader and self._fast_read is not None:
            try:
                return self._fast_read(bytes(data), start)
            except MalformedAvro as exc:
                raise MalformedBodyError(f"Avro body does not parse: {exc}"[:500]) from None
        body = memoryview(data)[start:]
        stream = io.BytesIO(body)
        try:
            # no resolution needed (and none paid for) when the writer is the current schema
            reader = None if writer is self._reader else self._reader
            record = fastavro.schemaless_reader(stream, writer, reader)
        except Exception as exc:  # fastavro raises many types for corrupt bodies
            raise MalformedBodyError(f"Avro body does not parse: {type(exc).__name__}: {exc}"[:500]) from None
        if stream.tell() != len(body):
            raise MalformedBodyError(f"{len(body) - stream.tell()} trailing bytes after the Avro body")
        if not isinstance(record, dict):
            raise MalformedBodyError("Avro body is not a record")
        return record

    def _writer_by_id(self, schema_id: int) -> dict[str, Any]:
        writer = self._by_id.get(schema_id)
        if writer is not None:
            return writer
        if self._registry is None:
            raise UnknownSchemaError(
                f"Confluent-framed message (schema id {schema_id}) but no schema registry is "
                "configured: set PREDSTREAM_SCHEMA_REGISTRY_URL"
            )
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            schema = self._registry.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise UnknownSchemaError(f"schema id {schema_id} is not in the registry") from None
            raise RegistryUnavailableError(f"schema registry error for id {schema_id}: {exc}"[:500]) from None
        except Exception as exc:  # connection refused, timeout, TLS: not the event's fault
            raise RegistryUnavailableError(f"schema registry unreachable: {exc}"[:500]) from None
        try:
            writer = _record_schema(fastavro.parse_schema(json.loads(schema.schema_str or "")))
        except Exception as exc:
            raise UnknownSchemaError(f"schema id {schema_id} is not a usable Avro schema: {exc}"[:500]) from None
        if schema_fingerprint(schema.schema_str or "") == schema_fingerprint(load_schema_text()):
            writer = self._reader  # the current schema, registered: read it the fast way
        self._by_id[schema_id] = writer
        return writer
