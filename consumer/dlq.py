"""Dead letters: events the consumer cannot store, kept on ``<topic>.dlq`` with the reason.

A dead letter is the ORIGINAL message (same key, same value bytes, same headers) plus the
headers of :class:`predstream.schemas.transport.Headers`: ``DLQ_REASON`` (a short code such as
``bad-framing``, ``nul-character:prediction`` or ``db-rejected:22003``), ``DLQ_ERROR`` (one
line for people) and where it came from (``ORIGINAL_TOPIC`` / ``PARTITION`` / ``OFFSET`` /
``TIMESTAMP``).

* :class:`DeadLetterWriter` — what the worker uses: send, then :meth:`~DeadLetterWriter.flush`
  before committing offsets (raises :class:`~predstream.consumer.errors.DeadLetterUnavailableError`).
* :func:`list_dead_letters` — read the DLQ from the beginning to the end offsets noted when
  it starts, with a group-less reader (``assign()``, never the live group), for
  ``predstream dlq list``. Dead letters a live worker writes meanwhile wait for the next look.
* :func:`~predstream.consumer.dlq_redrive.redrive` (in :mod:`predstream.consumer.dlq_redrive`, importable from
  here) — re-publish dead letters' original bytes to the main topic.

A reason filter (``--reason``) matches a reason that starts with it: ``db-rejected`` matches
``db-rejected:22003``, ``nul`` matches ``nul-character:prediction``. The reasons:
:data:`REASONS`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from predstream.schemas.kafka_log import BrokerLog, BrokerUnreachableError, cluster_metadata, quiet_log
from predstream.schemas.transport import Headers

from .errors import DeadLetterUnavailableError, ReplayError
from .settings import ConsumerSettings

__all__ = [
    "REASONS",
    "DeadLetter",
    "DeadLetterWriter",
    "Delivery",
    "dead_letter_headers",
    "list_dead_letters",
    "redrive",
    "redrive_group",
    "RedriveResult",
]

_log = logging.getLogger(__name__)

_DLQ_HEADERS = frozenset(
    {
        Headers.DLQ_REASON,
        Headers.DLQ_ERROR,
        Headers.ORIGINAL_TOPIC,
        Headers.ORIGINAL_PARTITION,
        Headers.ORIGINAL_OFFSET,
        Headers.ORIGINAL_TIMESTAMP,
    }
)
_MAX_ERROR_CHARS = 1000
#: Seconds without a message from a partition not yet read to its end before a read gives up.
_STALL_S = 30.0

#: The reason codes a dead letter can carry (``<field>``: the event field at fault).
REASONS = (
    "bad-framing, unknown-schema, malformed-body, too-large:<field>, nul-character:<field>, "
    "invalid-utf8:<field>, missing-field:<field>, wrong-type:<field>, out-of-range:<field>, "
    "invalid:<field>, identity-mismatch, db-rejected:<SQLSTATE>"
)

HeaderList = list[tuple[str, bytes]]


def dead_letter_headers(
    original: Iterable[tuple[str, bytes | None]] | None,
    *,
    reason: str,
    error: str,
    topic: str | None,
    partition: int | None,
    offset: int | None,
    timestamp_ms: int | None,
) -> HeaderList:
    """The original headers (earlier DLQ headers dropped) plus this dead letter's."""
    kept = [(k, v if v is not None else b"") for k, v in (original or []) if k not in _DLQ_HEADERS]
    line = " ".join(str(error).split())[:_MAX_ERROR_CHARS]
    extra = [
        (Headers.DLQ_REASON, reason),
        (Headers.DLQ_ERROR, line),
        (Headers.ORIGINAL_TOPIC, topic),
        (Headers.ORIGINAL_PARTITION, partition),
        (Headers.ORIGINAL_OFFSET, offset),
        (Headers.ORIGINAL_TIMESTAMP, timestamp_ms),
    ]
    return kept + [(k, str(v).encode("utf-8")) for k, v in extra if v is not None]


@dataclass
class Delivery:
    """The fate of one dead letter: ``pending`` until the broker answers, then ``done`` or ``failed``."""

    state: str = "pending"
    error: str | None = None


class DeadLetterWriter:
    """Produces dead letters to ``settings.dlq_topic`` and confirms them before offsets move.

    Not idempotent on purpose (a broker restart must not wedge it); a retried batch may
    write a dead letter twice, never zero times.
    """

    def __init__(self, settings: ConsumerSettings, *, producer: Any = None) -> None:
        self.topic = settings.dlq_topic
        self._producer = producer or _make_producer(settings, "predstream-dlq")

    def send(
        self,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: Iterable[tuple[str, bytes | None]] | None,
        reason: str,
        error: str,
        topic: str | None,
        partition: int | None,
        offset: int | None,
        timestamp_ms: int | None,
    ) -> Delivery:
        """Queue one dead letter; its :class:`Delivery` settles during :meth:`flush`."""
        from confluent_kafka import KafkaError, KafkaException

        delivery = Delivery()
        hdrs = dead_letter_headers(
            headers, reason=reason, error=error, topic=topic, partition=partition, offset=offset, timestamp_ms=timestamp_ms
        )
        try:
            _produce(self._producer, self.topic, key, value, hdrs, _settle(delivery))
            return delivery
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE:
                raise
        # The original plus our headers is over the producer's message.max.bytes: keep the
        # reason and the coordinates (the original stays on its topic), drop the bytes.
        size = (len(key or b"") + len(value or b"")
                + sum(len(k) + len(v or b"") for k, v in headers or []))
        note = f"{error} [original of {size} bytes too large for a dead letter: value, key and headers omitted; " \
               f"read it at {topic}:{partition}@{offset}]"
        _log.warning("dead letter of %s:%s@%s is too large (%d bytes); sent without the original value",
                     topic, partition, offset, size)
        hdrs = dead_letter_headers(
            None, reason=reason, error=note, topic=topic, partition=partition, offset=offset, timestamp_ms=timestamp_ms
        )
        _produce(self._producer, self.topic, None, None, hdrs, _settle(delivery))
        return delivery

    def flush(self, deliveries: Sequence[Delivery], timeout_s: float = 15.0) -> None:
        """Wait until every delivery is confirmed; raise if one failed or is still pending."""
        _confirm(self._producer, deliveries, timeout_s, "dead letter")

    def poll(self) -> None:
        """Serve delivery callbacks without waiting."""
        self._producer.poll(0)

    def close(self, timeout_s: float = 5.0) -> None:
        self._producer.flush(timeout_s)


def _produce(producer: Any, topic: str, key: Any, value: Any, headers: HeaderList, cb: Callable) -> None:
    deadline = time.monotonic() + 10.0
    while True:
        try:
            producer.produce(topic, value=value, key=key, headers=headers, on_delivery=cb)
            return
        except BufferError:  # local queue full: let deliveries drain, then try again
            if time.monotonic() > deadline:
                raise DeadLetterUnavailableError(
                    f"the producer's queue for {topic} stays full: is the broker reachable?"
                ) from None
            producer.poll(0.1)


def _confirm(producer: Any, deliveries: Sequence[Delivery], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while any(d.state == "pending" for d in deliveries) and time.monotonic() < deadline:
        producer.flush(min(0.5, max(0.0, deadline - time.monotonic())))
    failed = [d for d in deliveries if d.state == "failed"]
    pending = sum(1 for d in deliveries if d.state == "pending")
    if failed:
        raise DeadLetterUnavailableError(
            f"{len(failed)} {what}(s) not delivered: {failed[0].error}; is the broker reachable?"
        )
    if pending:
        raise DeadLetterUnavailableError(
            f"{pending} {what}(s) not confirmed within {timeout_s:.0f} s; is the broker reachable?"
        )


def _make_producer(settings: ConsumerSettings, client_id: str, log: BrokerLog | None = None) -> Any:
    from confluent_kafka import Producer

    extra: dict[str, Any] = {
        "client.id": client_id,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": 30_000,
        "enable.idempotence": False,
    }
    if log is not None:
        extra["logger"] = log
    return Producer(settings.kafka_config(**extra))


# -- reading the DLQ -------------------------------------------------------------------


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
        from .dlq_redrive import REDRIVE_LIMIT

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
    def from_message(cls, msg: Any) -> DeadLetter:
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
            headers=[(k, v if v is not None else b"") for k, v in raw if k not in _DLQ_HEADERS],
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


def _dlq_partitions(consumer: Any, settings: ConsumerSettings, log: BrokerLog) -> list[int]:
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


def _reader(settings: ConsumerSettings, group_id: str, log: BrokerLog) -> Any:
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


def _offsets(consumer: Any, topic: str, partitions: list[int], timeout_s: float) -> dict[int, tuple[int, int]]:
    """``{partition: (first offset, end offset)}`` now (true ends: see consumer/replay.py)."""
    from .replay import high_watermarks

    try:
        return high_watermarks(consumer, topic, partitions, timeout_s)
    except ReplayError as exc:
        raise DeadLetterUnavailableError(str(exc)) from None


def _read_range(consumer: Any, topic: str, start: dict[int, int], end: dict[int, int],
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
    consumer = _reader(settings, f"predstream-dlq-list-{uuid.uuid4().hex[:12]}", log)
    found: list[DeadLetter] = []
    try:
        parts = _dlq_partitions(consumer, settings, log)
        if not parts:
            return []
        marks = _offsets(consumer, topic, parts, timeout_s)
        start = {p: lo for p, (lo, _hi) in marks.items()}
        end = {p: hi for p, (_lo, hi) in marks.items()}
        for msg in _read_range(consumer, topic, start, end):
            letter = DeadLetter.from_message(msg)
            if letter.matches(reasons):
                found.append(letter)
    finally:
        consumer.close()
    found.sort(key=lambda d: (d.partition, d.offset))
    return found if limit is None else found[:limit]


def _settle(delivery: Delivery) -> Callable[[Any, Any], None]:
    def _done(err: Any, _msg: Any) -> None:
        if err is None:
            delivery.state = "done"
        else:
            delivery.state, delivery.error = "failed", err.str()

    return _done


from .dlq_redrive import RedriveResult, redrive, redrive_group  # noqa: E402  (moved; kept importable from here)
