"""Dead letters: events the consumer cannot store, kept on ``<topic>.dlq`` with the reason.

A dead letter is the ORIGINAL message (same key, same value bytes, same headers) plus the
headers of :class:`schemas.transport.Headers`: ``DLQ_REASON`` (a short code such as
``bad-framing``, ``nul-character:prediction`` or ``db-rejected:22003``), ``DLQ_ERROR`` (one
line for people) and where it came from (``ORIGINAL_TOPIC`` / ``PARTITION`` / ``OFFSET`` /
``TIMESTAMP``).

* :class:`DeadLetterWriter` — what the worker uses: send, then :meth:`~DeadLetterWriter.flush`
  before committing offsets (raises :class:`~consumer.errors.DeadLetterUnavailableError`).
* :func:`list_dead_letters` — read the DLQ from the beginning with a group-less reader
  (``assign()``, never the live group), for ``predstream dlq list``.
* :func:`redrive` — re-publish dead letters' original bytes to the main topic, optionally
  only some reasons. Progress is a committed offset of the group ``<group_id>.redrive`` on
  the DLQ topic, so a second run does not redrive the same dead letters again. Dead letters
  a filtered run passes over are reported as skipped and stay behind that offset too
  (``from_beginning=True`` looks at every dead letter again).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from schemas.transport import Headers

from .errors import DeadLetterUnavailableError, WorkerError
from .settings import ConsumerSettings

__all__ = [
    "DeadLetter",
    "DeadLetterWriter",
    "Delivery",
    "RedriveResult",
    "dead_letter_headers",
    "list_dead_letters",
    "redrive",
    "redrive_group",
]

_log = logging.getLogger("predstream.dlq")

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


def _make_producer(settings: ConsumerSettings, client_id: str) -> Any:
    from confluent_kafka import Producer

    return Producer(
        settings.kafka_config(
            **{
                "client.id": client_id,
                "acks": "all",
                "linger.ms": 5,
                "message.timeout.ms": 30_000,
                "enable.idempotence": False,
            }
        )
    )


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
            headers=[(k, v if v is not None else b"") for k, v in raw if k not in _DLQ_HEADERS],
        )

    def matches(self, reasons: Sequence[str] | None) -> bool:
        """True when no filter is given, or the reason equals or starts with one given
        (``db-rejected`` matches ``db-rejected:22003``)."""
        if not reasons:
            return True
        return any(self.reason == r or self.reason.startswith(r.rstrip(":") + ":") for r in reasons)


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


def _dlq_partitions(admin_source: Any, topic: str, timeout_s: float) -> list[int] | None:
    """Partition ids of ``topic``, or ``None`` when it does not exist.

    Lists all topics rather than asking for this one: some brokers create a topic when a
    client asks for its metadata.
    """
    from confluent_kafka import KafkaException

    try:
        meta = admin_source.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise DeadLetterUnavailableError(f"cannot read topic metadata: {exc.args[0].str()}; is the broker reachable?") from None
    info = meta.topics.get(topic)
    if info is None or info.error is not None:
        return None
    return sorted(info.partitions)


def _reader(settings: ConsumerSettings, group_id: str) -> Any:
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
            }
        )
    )


def _read_to_end(consumer: Any, partitions: list[int], timeout_s: float) -> Iterable[Any]:
    """Yield messages of the assigned partitions until each reported end-of-partition."""
    from confluent_kafka import KafkaError

    open_parts = set(partitions)
    deadline = time.monotonic() + timeout_s
    while open_parts:
        if time.monotonic() > deadline:
            raise DeadLetterUnavailableError(
                f"reading the dead-letter topic did not reach its end within {timeout_s:.0f} s"
            )
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                open_parts.discard(msg.partition())
                continue
            if err.fatal() or not err.retriable():
                raise DeadLetterUnavailableError(f"reading the dead-letter topic failed: {err.str()}")
            continue
        yield msg


def list_dead_letters(
    settings: ConsumerSettings,
    limit: int | None = 100,
    *,
    reasons: Sequence[str] | None = None,
    timeout_s: float = 30.0,
) -> list[DeadLetter]:
    """Dead letters in (partition, offset) order, the first ``limit`` matching ``reasons``.

    Reads with a throwaway group id and ``assign()``: the live consumer group and the
    redrive group are untouched.
    """
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    topic = settings.dlq_topic
    consumer = _reader(settings, f"predstream-dlq-list-{uuid.uuid4().hex[:12]}")
    try:
        parts = _dlq_partitions(consumer, topic, timeout_s)
        if not parts:
            return []
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        found = [DeadLetter.from_message(m) for m in _read_to_end(consumer, parts, timeout_s)]
    finally:
        consumer.close()
    found = [d for d in found if d.matches(reasons)]
    found.sort(key=lambda d: (d.partition, d.offset))
    return found if limit is None else found[:limit]


# -- redrive ---------------------------------------------------------------------------


@dataclass
class RedriveResult:
    """What :func:`redrive` did: counts, and per reason how many were redriven."""

    redriven: int = 0
    skipped: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    dry_run: bool = False


def redrive_group(settings: ConsumerSettings) -> str:
    """The consumer group whose committed offsets on the DLQ record redrive progress."""
    return settings.group_id + ".redrive"


def redrive(
    settings: ConsumerSettings,
    *,
    reasons: Sequence[str] | None = None,
    dry_run: bool = False,
    from_beginning: bool = False,
    timeout_s: float = 60.0,
) -> RedriveResult:
    """Re-publish dead letters' original key, value and headers to ``settings.topic``.

    Starts where the last redrive stopped (group ``<group_id>.redrive``), or at the
    beginning with ``from_beginning``. Only dead letters matching ``reasons`` (exact code or
    prefix, e.g. ``db-rejected``) are re-published; the rest are counted as skipped. The
    progress offset is committed only after the broker confirmed every re-published event,
    and never in a dry run.
    """
    from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

    topic = settings.dlq_topic
    consumer = _reader(settings, redrive_group(settings))
    producer = None if dry_run else _make_producer(settings, "predstream-redrive")
    result = RedriveResult(dry_run=dry_run)
    try:
        parts = _dlq_partitions(consumer, topic, timeout_s)
        if not parts:
            return result
        tps = [TopicPartition(topic, p) for p in parts]
        if from_beginning:
            start = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts]
        else:
            try:
                committed = consumer.committed(tps, timeout=timeout_s)
            except KafkaException as exc:
                raise DeadLetterUnavailableError(f"cannot read redrive progress: {exc.args[0].str()}") from None
            start = [TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING) for tp in committed]
        consumer.assign(start)
        next_offsets: dict[int, int] = {}
        deliveries: list[Delivery] = []
        for msg in _read_to_end(consumer, parts, timeout_s):
            letter = DeadLetter.from_message(msg)
            next_offsets[letter.partition] = letter.offset + 1
            if not letter.matches(reasons):
                result.skipped += 1
                continue
            if letter.original_topic and letter.original_topic != settings.topic:
                _log.warning(
                    "dead letter %s:%s came from topic %s, redriving it to %s",
                    letter.partition, letter.offset, letter.original_topic, settings.topic,
                )
            result.redriven += 1
            result.by_reason[letter.reason] = result.by_reason.get(letter.reason, 0) + 1
            if producer is not None:
                delivery = Delivery()
                deliveries.append(delivery)
                _produce(producer, settings.topic, letter.key, letter.value, letter.headers, _settle(delivery))
        if producer is None or not next_offsets:
            return result
        _confirm(producer, deliveries, timeout_s, "redriven event")
        try:
            consumer.commit(
                offsets=[TopicPartition(topic, p, o) for p, o in sorted(next_offsets.items())], asynchronous=False
            )
        except KafkaException as exc:
            raise WorkerError(
                f"redriven {result.redriven} event(s) but could not record progress ({exc.args[0].str()}); "
                "a second run would redrive them again (harmless: the upsert is idempotent)"
            ) from None
        _log.info("redrove %d dead letter(s), skipped %d", result.redriven, result.skipped)
        return result
    finally:
        consumer.close()
        if producer is not None:
            producer.flush(5)


def _settle(delivery: Delivery) -> Callable[[Any, Any], None]:
    def _done(err: Any, _msg: Any) -> None:
        if err is None:
            delivery.state = "done"
        else:
            delivery.state, delivery.error = "failed", err.str()

    return _done
