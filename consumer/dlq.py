"""Dead letters: events the consumer cannot store, kept on ``<topic>.dlq`` with the reason.

A dead letter is the ORIGINAL message (same key, same value bytes, same headers) plus the
headers of :class:`predstream.schemas.transport.Headers`: ``DLQ_REASON`` (a short code such as
``bad-framing``, ``nul-character:prediction`` or ``db-rejected:22003``), ``DLQ_ERROR`` (one
line for people) and where it came from (``ORIGINAL_TOPIC`` / ``PARTITION`` / ``OFFSET`` /
``TIMESTAMP``).

This module writes them: :class:`DeadLetterWriter` is what the worker (and ``replay``) uses:
send, then :meth:`~DeadLetterWriter.flush` before committing offsets (raises
:class:`~predstream.consumer.errors.DeadLetterUnavailableError`). The reasons: :data:`REASONS`.

Reading them back is :mod:`predstream.consumer.dlq_reader` (``predstream dlq list``);
sending their original events again is :mod:`predstream.consumer.dlq_redrive`
(``predstream dlq redrive``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from predstream.schemas.transport import Headers

from ._kafka import dead_letter_producer
from .errors import DeadLetterUnavailableError
from .settings import ConsumerSettings

if TYPE_CHECKING:
    from confluent_kafka import KafkaError, Message, Producer

__all__ = [
    "REASONS",
    "DLQ_HEADERS",
    "HeaderList",
    "DeadLetterWriter",
    "Delivery",
    "dead_letter_headers",
    "produce_tracked",
    "confirm",
]

_log = logging.getLogger(__name__)

#: The headers a dead letter adds to its original's.
DLQ_HEADERS = frozenset(
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
    kept = [(k, v if v is not None else b"") for k, v in (original or []) if k not in DLQ_HEADERS]
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

    def __init__(self, settings: ConsumerSettings, *, producer: Producer | None = None) -> None:
        self.topic = settings.dlq_topic
        self._producer = producer or dead_letter_producer(settings, "predstream-dlq")

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
            headers, reason=reason, error=error, topic=topic, partition=partition, offset=offset,
            timestamp_ms=timestamp_ms,
        )
        try:
            produce_tracked(self._producer, self.topic, key, value, hdrs, delivery)
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
        produce_tracked(self._producer, self.topic, None, None, hdrs, delivery)
        return delivery

    def flush(self, deliveries: Sequence[Delivery], timeout_s: float = 15.0) -> None:
        """Wait until every delivery is confirmed; raise if one failed or is still pending."""
        confirm(self._producer, deliveries, timeout_s, "dead letter")

    def poll(self) -> None:
        """Serve delivery callbacks without waiting."""
        self._producer.poll(0)

    def close(self, timeout_s: float = 5.0) -> None:
        self._producer.flush(timeout_s)


def produce_tracked(producer: Producer, topic: str, key: bytes | None, value: bytes | None, headers: HeaderList,
                    delivery: Delivery) -> None:
    """Produce one message whose fate ``delivery`` records; waits (at most 10 s) while the
    producer's local queue is full."""
    deadline = time.monotonic() + 10.0
    while True:
        try:
            sent: list[tuple[str, str | bytes | None]] = [*headers]  # the client's type for headers
            producer.produce(topic, value=value, key=key, headers=sent, on_delivery=_settle(delivery))
            return
        except BufferError:  # local queue full: let deliveries drain, then try again
            if time.monotonic() > deadline:
                raise DeadLetterUnavailableError(
                    f"the producer's queue for {topic} stays full: is the broker reachable?"
                ) from None
            producer.poll(0.1)


def confirm(producer: Producer, deliveries: Sequence[Delivery], timeout_s: float, what: str) -> None:
    """Wait until the broker confirmed every delivery; raise
    :class:`DeadLetterUnavailableError` when one failed or is still pending."""
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


def _settle(delivery: Delivery) -> Callable[[KafkaError | None, Message], None]:
    def _done(err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            delivery.state = "done"
        else:
            delivery.state, delivery.error = "failed", err.str()

    return _done
