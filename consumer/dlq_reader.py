"""Reading the dead-letter topic back: ``predstream dlq list``, and what ``dlq redrive`` reads.

:func:`list_dead_letters` reads the DLQ from the beginning to the end offsets noted when it
starts, with a group-less reader (``assign()``, never the live group). Dead letters a live
worker writes meanwhile wait for the next look. Each message becomes a :class:`DeadLetter`:
the original event's key, value and headers, and why and where it failed.

A reason filter (``--reason``) matches a reason that starts with it: ``db-rejected`` matches
``db-rejected:22003``, ``nul`` matches ``nul-character:prediction``. The reasons:
:data:`~predstream.consumer.dlq.REASONS`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from predstream.schemas.kafka_log import BrokerLog, BrokerUnreachableError, cluster_metadata, quiet_log
from predstream.schemas.transport import Headers

from ._kafka import (
    coordinates,
    high_watermarks,
    message_headers,
    message_timestamp,
    read_range,
    reader_consumer,
    topic_partitions,
)
from .dlq import DLQ_HEADERS, HeaderList
from .errors import DeadLetterUnavailableError
from .settings import ConsumerSettings

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message

__all__ = ["REDRIVE_LIMIT", "DeadLetter", "list_dead_letters", "dlq_partitions", "dlq_consumer"]

#: A dead letter redriven this many times already is parked (left on the DLQ).
REDRIVE_LIMIT = 3


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter as read back from the DLQ topic."""

    partition: int
    offset: int
    timestamp_ms: int | None
    reason: str
    error: str
    original_topic: str | None
    original_partition: int | None
    original_offset: int | None
    original_timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    #: the original message's headers (this dead letter's own headers removed)
    headers: HeaderList = field(default_factory=list)
    #: times the event was redriven before it failed again (``predstream-redrive-count``)
    redrive_count: int = 0

    def parked(self, limit: int | None = None) -> bool:
        """Redriven ``limit`` times already: ``dlq redrive`` leaves it where it is."""
        return self.redrive_count >= (REDRIVE_LIMIT if limit is None else limit)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (bytes as lengths, the key as text when it is UTF-8)."""
        return {
            "partition": self.partition,
            "offset": self.offset,
            "timestamp_ms": self.timestamp_ms,
            "reason": self.reason,
            "error": self.error,
            "original_topic": self.original_topic,
            "original_partition": self.original_partition,
            "original_offset": self.original_offset,
            "original_timestamp_ms": self.original_timestamp_ms,
            "key": _text(self.key),
            "value_bytes": None if self.value is None else len(self.value),
            "redrive_count": self.redrive_count,
            "parked": self.parked(),
        }

    @classmethod
    def from_message(cls, msg: Message) -> DeadLetter:
        raw = message_headers(msg)
        hdr = {k: (v or b"").decode("utf-8", "replace") for k, v in raw}
        return cls(
            partition=coordinates(msg)[1],
            offset=coordinates(msg)[2],
            timestamp_ms=message_timestamp(msg),
            reason=hdr.get(Headers.DLQ_REASON, "unknown"),
            error=hdr.get(Headers.DLQ_ERROR, ""),
            original_topic=hdr.get(Headers.ORIGINAL_TOPIC),
            original_partition=_int(hdr.get(Headers.ORIGINAL_PARTITION)),
            original_offset=_int(hdr.get(Headers.ORIGINAL_OFFSET)),
            original_timestamp_ms=_int(hdr.get(Headers.ORIGINAL_TIMESTAMP)),
            key=msg.key(),
            value=msg.value(),
            headers=[(k, v if v is not None else b"") for k, v in raw if k not in DLQ_HEADERS],
            redrive_count=max(0, _int(hdr.get(Headers.REDRIVE_COUNT)) or 0),
        )

    def matches(self, reasons: Sequence[str] | None) -> bool:
        """True when no filter is given, or the reason starts with one given
        (``db-rejected`` matches ``db-rejected:22003``, ``nul`` matches ``nul-character:prompt``)."""
        if not reasons:
            return True
        return any(self.reason.startswith(r) for r in reasons)


def _int(text: str | None) -> int | None:
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def _text(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.hex()


def dlq_partitions(consumer: Consumer, settings: ConsumerSettings, log: BrokerLog) -> list[int]:
    """Partition ids of the DLQ topic; fails fast (one line) when the broker does not answer
    or the topic does not exist (a mistyped topic must not read as "no dead letters")."""
    try:
        meta = cluster_metadata(consumer, settings.require_bootstrap(), log)
    except BrokerUnreachableError as exc:
        raise DeadLetterUnavailableError(str(exc)) from None
    partitions = topic_partitions(meta, settings.dlq_topic)  # all topics were listed: asking created none
    if partitions is None:
        raise DeadLetterUnavailableError(
            f"topic {settings.dlq_topic!r} does not exist on the broker: check PREDSTREAM_TOPIC / --topic "
            f"(the dead letters of topic T are in T.dlq)"
        )
    return partitions


def dlq_consumer(settings: ConsumerSettings, group_id: str, log: BrokerLog) -> Consumer:
    """A group-less reader of the DLQ; ``group_id`` is where a redrive commits its progress."""
    return reader_consumer(settings, client_id="predstream-dlq-reader", group_id=group_id, log=log)


def list_dead_letters(
    settings: ConsumerSettings,
    limit: int | None = 100,
    *,
    reasons: Sequence[str] | None = None,
    timeout_s: float = 30.0,
) -> list[DeadLetter]:
    """Dead letters in (partition, offset) order, the first ``limit`` matching ``reasons``.

    Reads up to the end offsets noted when it starts, with a throwaway group id and
    ``assign()``: the live consumer group and the redrive group are untouched. Fails fast
    (:class:`DeadLetterUnavailableError`, one line) when the broker does not answer.
    """
    topic = settings.dlq_topic
    log = quiet_log()
    consumer = dlq_consumer(settings, f"predstream-dlq-list-{uuid.uuid4().hex[:12]}", log)
    found: list[DeadLetter] = []
    try:
        parts = dlq_partitions(consumer, settings, log)
        if not parts:
            return []
        marks = high_watermarks(consumer, topic, parts, timeout_s, error=DeadLetterUnavailableError)
        start = {p: lo for p, (lo, _hi) in marks.items()}
        end = {p: hi for p, (_lo, hi) in marks.items()}
        for msg in read_range(consumer, topic, start, end, error=DeadLetterUnavailableError):
            letter = DeadLetter.from_message(msg)
            if letter.matches(reasons):
                found.append(letter)
    finally:
        consumer.close()
    found.sort(key=lambda d: (d.partition, d.offset))
    return found if limit is None else found[:limit]
