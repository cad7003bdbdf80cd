"""One batch of a worker, once polled: decode, dead-letter, commit offsets, count.

The :class:`~predstream.consumer.worker.Worker` keeps the order (decode, write through the
sink, :func:`send_dead_letters`, :func:`commit_offsets`, :func:`account_batch`) and retries
the same batch after an outage; each :class:`Entry` remembers how far it got (its record,
its problem, its dead letter's delivery), so a retried batch repeats only what did not
happen yet.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from predstream.schemas.codec import Decoder
from predstream.schemas.errors import DecodeError, InvalidEventError

from ._kafka import coordinates, message_headers, message_timestamp
from .dlq import DeadLetterWriter, Delivery
from .metrics import ConsumerMetrics
from .sink import IngestRecord, SinkRecord, WriteResult
from .transcode import Transcoder

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message

__all__ = ["Entry", "decode_entries", "mark_rejected", "send_dead_letters", "commit_offsets", "account_batch"]

_log = logging.getLogger(__name__)


@dataclass(slots=True)
class Entry:
    """One polled message on its way through the batch."""

    msg: Message
    record: SinkRecord | None = None
    #: (reason code, one-line error) when the message must become a dead letter
    problem: tuple[str, str] | None = None
    delivery: Delivery | None = None

    @property
    def coords(self) -> tuple[str, int, int]:
        """(topic, partition, offset) of the message (asked when needed: most entries never are)."""
        return coordinates(self.msg)


def decode_entries(entries: list[Entry], decoder: Decoder, transcoder: Transcoder | None = None) -> int:
    """Give each entry not decoded yet its record, or its problem (a dead letter to be).

    With a ``transcoder``, most messages go straight to COPY rows; the messages it leaves
    (``None``) are decoded by ``decoder`` (the pydantic path). Returns how many were transcoded."""
    todo = [e for e in entries if e.record is None and e.problem is None]
    rows = transcoder.transcode_many([e.msg for e in todo]) if transcoder is not None else [None] * len(todo)
    transcoded = len(rows) - rows.count(None)
    for e, row in zip(todo, rows, strict=True):
        if row is not None:
            e.record = row
            continue
        msg = e.msg
        try:
            event = decoder.decode(msg.value())
        except (DecodeError, InvalidEventError) as exc:
            e.problem = (exc.reason, str(exc))
            continue
        if transcoder is not None:
            transcoder.learn(msg.value(), decoder)  # a registry id of this schema: transcoded from now on
        topic, partition, offset = e.coords
        e.record = IngestRecord(event, topic, partition, offset, message_timestamp(msg))
    return transcoded


def mark_rejected(written: list[Entry], result: WriteResult) -> None:
    """Rows the database refused become dead letters (``written``: the entries given to the sink)."""
    if result.rejected:
        by_coords: dict[tuple[str | None, int | None, int | None], Entry] = {e.coords: e for e in written}
        for rec, rejection in result.rejected:
            by_coords[(rec.topic, rec.partition, rec.offset)].problem = (rejection.reason, rejection.message)


def send_dead_letters(entries: list[Entry], dead_letters: DeadLetterWriter) -> None:
    """Send the entries with a problem to the DLQ (again, for those whose delivery failed)
    and wait for the broker to confirm them all."""
    bad = [e for e in entries if e.problem is not None]
    if not bad:
        return
    deliveries = []
    for e in bad:
        if e.delivery is None or e.delivery.state == "failed":
            msg = e.msg
            reason, error = e.problem or ("", "")
            e.delivery = dead_letters.send(
                key=msg.key(), value=msg.value(), headers=message_headers(msg), reason=reason, error=error,
                topic=msg.topic(), partition=msg.partition(), offset=msg.offset(),
                timestamp_ms=message_timestamp(msg),
            )
        deliveries.append(e.delivery)
    dead_letters.flush(deliveries)


def commit_offsets(consumer: Consumer, entries: list[Entry], metrics: ConsumerMetrics, worker: str) -> None:
    """Commit, synchronously, the offset after the last entry of each partition. A failed
    commit is a warning: the next owner re-delivers those events, the upsert absorbs them."""
    from confluent_kafka import KafkaException, TopicPartition

    last: dict[tuple[Any, Any], int] = {}  # (topic, partition) -> offset: a consumed message has all three
    for e in entries:
        msg = e.msg
        key, offset = (msg.topic(), msg.partition()), msg.offset() or 0
        if offset > last.get(key, -1):
            last[key] = offset
    offsets = [TopicPartition(t, p, o + 1) for (t, p), o in sorted(last.items())]
    try:
        consumer.commit(offsets=offsets, asynchronous=False)
        metrics.commits.inc()
    except KafkaException as exc:
        _log.warning("offset commit failed (%s); these events will be delivered again", exc.args[0].str(),
                     extra={"worker": worker, "batch": len(entries)})


def account_batch(metrics: ConsumerMetrics, entries: list[Entry], result: WriteResult, seconds: float,
                  worker: str) -> None:
    """Metrics and log lines of a stored batch (one warning per dead letter)."""
    m = metrics
    m.batch_size.observe(len(entries))
    m.batch_latency.observe(seconds)
    m.rows_upserted.labels("inserted").inc(result.inserted)
    m.rows_upserted.labels("updated").inc(result.updated)
    m.duplicates_skipped.inc(result.unchanged)
    dead = 0
    for e in entries:
        if e.problem is None:
            continue
        dead += 1
        m.dead_lettered.labels(e.problem[0]).inc()
        topic, partition, offset = e.coords
        _log.warning("dead-lettered %s:%d@%d: %s", topic, partition, offset, e.problem[0],
                     extra={"worker": worker, "partition": partition, "offset": offset})
    _log.debug(
        "batch of %d stored in %.3f s: %d inserted, %d updated, %d unchanged, %d dead-lettered",
        len(entries), seconds, result.inserted, result.updated, result.unchanged, dead,
        extra={"worker": worker, "batch": len(entries)},
    )
