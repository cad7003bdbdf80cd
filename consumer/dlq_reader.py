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

import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from predstream.schemas.kafka_log import (
    BrokerLog,
    BrokerUnreachableError,
    cluster_metadata,
    quiet_log,
)
from predstream.schemas.transport import Headers

from .dlq import DLQ_HEADERS, HeaderList
from .errors import DeadLetterUnavailableError, ReplayError
from .settings import ConsumerSettings

__all__ = ["REDRIVE_LIMIT", "DeadLetter", "list_dead_letters", "dlq_partitions", "dlq_consumer", "dlq_offsets",
           "read_range"]

#: A dead letter redriven this many times already is parked (left on the DLQ).
REDRIVE_LIMIT = 3
#: Seconds without a message from a partition not yet read to its end before a read gives up.
_STALL_S = 30.0


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
    def from_message(cls, msg: Any) -> "DeadLetter":
        raw = msg.headers() or []
        hdr = {k: (v or b"").decode("utf-8", "replace") for k, v in raw}
        ts_type, ts = msg.timestamp()
        return cls(
            partition=msg.partition(),
            offset=msg.offset(),
            timestamp_ms=ts if ts_type and ts >= 0 else None,
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


def dlq_partitions(consumer: Any, settings: ConsumerSettings, log: BrokerLog) -> list[int]:
    """Partition ids of the DLQ topic; fails fast (one line) when the broker does not answer
    or the topic does not exist (a mistyped topic must not read as "no dead letters")."""
    try:
        meta = cluster_metadata(consumer, settings.require_bootstrap(), log)
    except BrokerUnreachableError as exc:
        raise DeadLetterUnavailableError(str(exc)) from None
    info = meta.topics.get(settings.dlq_topic)  # all topics were listed: asking created none
    if info is None or info.error is not None:
        raise DeadLetterUnavailableError(
            f"topic {settings.dlq_topic!r} does not exist on the broker: check PREDSTREAM_TOPIC / --topic "
            f"(the dead letters of topic T are in T.dlq)"
        )
    return sorted(info.partitions)


def dlq_consumer(settings: ConsumerSettings, group_id: str, log: BrokerLog) -> Any:
    from confluent_kafka import Consumer

    return Consumer(
        settings.kafka_config(
            **{
                "group.id": group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                "client.id": "predstream-dlq-reader",
                "fetch.wait.max.ms": 100,
                "logger": log,
            }
        )
    )


def dlq_offsets(consumer: Any, topic: str, partitions: list[int], timeout_s: float) -> dict[int, tuple[int, int]]:
    """``{partition: (first offset, end offset)}`` now (true ends: see consumer/replay.py)."""
    from .replay_plan import high_watermarks

    try:
        return high_watermarks(consumer, topic, partitions, timeout_s)
    except ReplayError as exc:
        raise DeadLetterUnavailableError(str(exc)) from None


def read_range(consumer: Any, topic: str, start: dict[int, int], end: dict[int, int],
                stall_s: float = _STALL_S) -> Iterable[Any]:
    """Yield the messages of ``[start[p], end[p])`` of each partition, then stop: messages
    written after the end offsets were noted are left for the next read."""
    from confluent_kafka import KafkaError, TopicPartition

    open_parts = {p for p in start if start[p] < end[p]}
    if not open_parts:
        return

    def _close(p: int) -> None:
        open_parts.discard(p)
        consumer.pause([TopicPartition(topic, p)])

    consumer.assign([TopicPartition(topic, p, start[p]) for p in sorted(open_parts)])
    last = time.monotonic()
    while open_parts:
        msg = consumer.poll(0.2)
        if msg is None:
            for tp in consumer.position([TopicPartition(topic, p) for p in sorted(open_parts)]):
                if tp.offset >= end[tp.partition]:
                    _close(tp.partition)  # e.g. a transaction marker was the last record
            if open_parts and time.monotonic() - last > stall_s:
                raise DeadLetterUnavailableError(
                    f"reading {topic} stalled: no message for {stall_s:.0f} s from partition(s) {sorted(open_parts)}"
                )
            continue
        last = time.monotonic()
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                if msg.partition() in open_parts:
                    _close(msg.partition())
                continue
            if err.fatal() or not err.retriable():
                raise DeadLetterUnavailableError(f"reading {topic} failed: {err.str()}")
            continue
        p, offset = msg.partition(), msg.offset()
        if p not in open_parts:
            continue
        if offset >= end[p]:
            _close(p)
            continue
        yield msg
        if offset + 1 >= end[p]:
            _close(p)


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
        marks = dlq_offsets(consumer, topic, parts, timeout_s)
        start = {p: lo for p, (lo, _hi) in marks.items()}
        end = {p: hi for p, (_lo, hi) in marks.items()}
        for msg in read_range(consumer, topic, start, end):
            letter = DeadLetter.from_message(msg)
            if letter.matches(reasons):
                found.append(letter)
    finally:
        consumer.close()
    found.sort(key=lambda d: (d.partition, d.offset))
    return found if limit is None else found[:limit]
