"""Confluent framing through a schema registry, without letting a registry outage lose events.

The publisher encodes each event once, in the Avro single-object encoding (``C3 01`` +
fingerprint + body). That needs no registry: the fingerprint names a schema shipped in
``schemas/avro``. With a registry configured, what goes on the topic is the Confluent wire
format, ``00`` + the 4-byte big-endian schema id + the *same* Avro body (what
confluent-kafka's ``AvroSerializer`` writes). The id comes from registering the schema under
``<topic>-value`` (``POST /subjects/<topic>-value/versions``), once per schema and client.

So a frame can always be re-framed either way without re-encoding: the spool keeps the
single-object form (readable without a registry), and the drain turns it into the Confluent
form once the registry answers. While it does not answer, events wait in the spool, exactly
as they do while the broker is down.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from predstream.schemas.codec import (
    SCHEMA_VERSIONS,
    SUBJECT_SUFFIX,
    Frame,
    confluent_frame,
    load_schema_text,
    parse_frame,
    schema_fingerprint,
    single_object_frame,
)
from predstream.schemas.errors import FramingError, RegistryUnavailableError, UnknownSchemaError

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from .settings import ProducerSettings

__all__ = ["RegistryFraming", "schema_header"]

_log = logging.getLogger(__name__)

#: Client defaults: one short try per call (the publisher retries on its own schedule, and a
#: call must not hold up close() at interpreter exit). ``PREDSTREAM_SCHEMA_REGISTRY_OPTIONS`` wins.
_CLIENT_DEFAULTS = {"timeout": 5, "max.retries": 0}


def schema_header(frame: bytes) -> str:
    """The schema header value of a frame: ``fp:<hex>`` (single-object) or ``id:<n>`` (Confluent)."""
    parsed = _parsed(frame)
    return "unknown" if parsed is None else parsed.schema_ref


def _parsed(frame: bytes) -> Frame | None:
    try:
        return parse_frame(frame)
    except FramingError:
        return None


class RegistryFraming:
    """Re-frames single-object frames as Confluent frames (and back) for one topic."""

    def __init__(self, url: str, topic: str, options: dict[str, Any] | None = None, *,
                 client: SchemaRegistryClient | None = None) -> None:
        self.url = url
        self.subject = topic + SUBJECT_SUFFIX
        self.client = client if client is not None else _client(url, options)
        self._texts = {schema_fingerprint(load_schema_text(v)): load_schema_text(v) for v in SCHEMA_VERSIONS}
        self._ids: dict[bytes, int] = {}
        self._fingerprints: dict[int, bytes] = {}

    @classmethod
    def from_settings(cls, settings: ProducerSettings, *,
                      client: SchemaRegistryClient | None = None) -> RegistryFraming | None:
        """The framing ``settings`` ask for; ``None`` without a registry URL."""
        if not settings.schema_registry_url:
            return None
        return cls(settings.schema_registry_url, settings.topic, settings.schema_registry_options, client=client)

    def has_id(self, fingerprint: bytes) -> bool:
        return fingerprint in self._ids

    def register(self, fingerprint: bytes) -> int:
        """The registry id of the schema with this fingerprint, registering it if need be.

        Raises :class:`RegistryUnavailableError` when the registry does not answer or refuses
        (any error: the events wait in the spool), :class:`UnknownSchemaError` for a
        fingerprint of no schema we ship.
        """
        schema_id = self._ids.get(fingerprint)
        if schema_id is not None:
            return schema_id
        text = self._texts.get(fingerprint)
        if text is None:
            raise UnknownSchemaError(f"no schema shipped with predstream has fingerprint {fingerprint.hex()}")
        from confluent_kafka.schema_registry import Schema

        try:
            schema_id = int(self.client.register_schema(self.subject, Schema(text, "AVRO")))
        except Exception as exc:  # connection refused, timeout, HTTP 5xx, a refused schema...
            raise RegistryUnavailableError(
                f"schema registry {self.url} did not register the event schema under {self.subject}: "
                f"{type(exc).__name__}: {exc}"[:500]
            ) from None
        self._ids[fingerprint] = schema_id
        self._fingerprints[schema_id] = fingerprint
        return schema_id

    def current_fingerprint(self) -> bytes:
        return schema_fingerprint(load_schema_text())

    def to_confluent(self, frame: bytes, *, register: bool = True) -> bytes | None:
        """The Confluent frame of a single-object ``frame`` (other frames are returned as they
        are). With ``register=False``, ``None`` when the schema's id is not known yet."""
        parsed = _parsed(frame)
        if parsed is None or parsed.fingerprint is None:
            return frame
        fingerprint = parsed.fingerprint
        if register:
            schema_id = self.register(fingerprint)
        else:
            known = self._ids.get(fingerprint)
            if known is None:
                return None
            schema_id = known
        return confluent_frame(schema_id, frame[parsed.body_start:])

    def to_single_object(self, frame: bytes) -> bytes:
        """The single-object frame of a Confluent ``frame`` whose id this framing registered
        (what the spool keeps); any other frame as it is."""
        parsed = _parsed(frame)
        if parsed is not None and parsed.schema_id is not None:
            fingerprint = self._fingerprints.get(parsed.schema_id)
            if fingerprint is not None:
                return single_object_frame(fingerprint, frame[parsed.body_start:])
        return frame


def _client(url: str, options: dict[str, Any] | None) -> SchemaRegistryClient:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    conf: dict[str, Any] = {**_CLIENT_DEFAULTS, **(options or {}), "url": url}
    for key in ("timeout", "max.retries", "retries.wait.ms", "retries.max.wait.ms", "cache.capacity"):
        if isinstance(conf.get(key), str):  # options from the environment arrive as text
            conf[key] = float(conf[key]) if key == "timeout" else int(conf[key])
    # new_client serves mock:// URLs from an in-process registry (used by the tests).
    return SchemaRegistryClient.new_client(conf)
