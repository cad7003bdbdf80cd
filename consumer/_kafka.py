"""The consumer side's Kafka clients, and what every reader of a topic needs.

* Client factories: the worker's group consumer (:func:`consumer_config`), a group-less
  reader (:func:`reader_consumer`: replay, ``dlq list``, ``dlq redrive``), and the producer
  of dead letters and redriven events (:func:`dead_letter_producer`).
* Partitions of a topic, from a metadata answer about *all* topics (:func:`list_partitions`,
  :func:`topic_partitions`): some brokers (tansu, the local stack's) create a topic that a
  client merely asks about.
* Reading to the end: the true end offsets (:func:`high_watermarks`) and the messages up to
  them (:func:`read_range`).
* A message's timestamp (:func:`message_timestamp`), headers (:func:`message_headers`,
  :func:`header_text`) and place (:func:`coordinates`); pausing and resuming what is
  assigned (:func:`pause_assigned`, :func:`resume_assigned`); partitions for a log line
  (:func:`describe_partitions`).

Settings the user passes through (``PREDSTREAM_KAFKA_OPTIONS``, ``-X``) win over the
defaults here, except where a reader must never commit into someone's group.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from predstream.schemas.kafka_log import BROKER_LOG, BrokerLog

from .errors import ConsumerError
from .settings import ConsumerSettings

if TYPE_CHECKING:  # confluent_kafka is imported when a client is made (importing the package stays quick)
    from confluent_kafka import Consumer, Message, Producer, TopicPartition
    from confluent_kafka.admin._metadata import ClusterMetadata

__all__ = [
    "heartbeat_ms",
    "consumer_config",
    "reader_consumer",
    "dead_letter_producer",
    "list_partitions",
    "topic_partitions",
    "high_watermarks",
    "read_range",
    "message_timestamp",
    "message_headers",
    "coordinates",
    "header_text",
    "pause_assigned",
    "resume_assigned",
    "describe_partitions",
]

_log = logging.getLogger(__name__)

#: Seconds without a message from a partition not yet read to its end before a read gives up.
_STALL_S = 30.0


# -- clients -------------------------------------------------------------------------------


def heartbeat_ms(settings: ConsumerSettings) -> int:
    """The group heartbeat interval: a third of the session timeout, 100 to 500 ms."""
    return max(100, min(500, settings.session_timeout_ms // 3))


def consumer_config(settings: ConsumerSettings, client_id: str = "predstream-consumer") -> dict[str, Any]:
    """librdkafka settings of a worker's consumer (``settings.kafka_options`` win)."""
    session = settings.session_timeout_ms
    return settings.kafka_config(
        **{
            "group.id": settings.group_id,
            "client.id": client_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": session,
            "heartbeat.interval.ms": heartbeat_ms(settings),
            "partition.assignment.strategy": "range",
            # how long the broker may hold a fetch with no new data: Apache Kafka answers as
            # soon as data arrive, but some brokers (tansu) hold it for the whole wait
            "fetch.wait.max.ms": 100,
            # broker states every few seconds: ends a broker outage's log (schemas.kafka_log)
            "statistics.interval.ms": 5000,
            # a topic created after the worker subscribed (or new partitions) is seen within
            # 5 s, not librdkafka's 5 min: the worker would sit in its group without partitions
            "topic.metadata.refresh.interval.ms": 5000,
            "stats_cb": BROKER_LOG.on_stats,
        }
    )


def reader_consumer(settings: ConsumerSettings, *, client_id: str, group_id: str, log: BrokerLog | None = None,
                    pin_group: bool = False) -> Consumer:
    """A consumer that reads with ``assign()`` from the earliest offset, auto-commit off, and
    tells when it reaches the end of a partition (``enable.partition.eof``). With
    ``pin_group``, the group id and the commit settings are set after the pass-through
    options: nothing the user passes makes it commit into ``group_id``'s (or a live) group."""
    group = {"group.id": group_id, "enable.auto.commit": False, "enable.auto.offset.store": False}
    conf = settings.kafka_config(
        **{
            **({} if pin_group else group),
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "client.id": client_id,
            "fetch.wait.max.ms": 100,
            **({"logger": log} if log is not None else {}),
        }
    )
    if pin_group:
        conf.update(group)
    from confluent_kafka import Consumer

    return Consumer(conf)


def dead_letter_producer(settings: ConsumerSettings, client_id: str, log: BrokerLog | None = None) -> Producer:
    """A producer for dead letters and redriven events. Not idempotent on purpose (a broker
    restart must not wedge it): a retried batch may write one twice, never zero times."""
    extra: dict[str, Any] = {
        "client.id": client_id,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": 30_000,
        "enable.idempotence": False,
    }
    if log is not None:
        extra["logger"] = log
    from confluent_kafka import Producer

    return Producer(settings.kafka_config(**extra))


# -- topics and offsets --------------------------------------------------------------------


def list_partitions(client: Consumer, topic: str, timeout_s: float) -> list[int] | None:
    """The partition ids of ``topic``, asking the broker about all topics (see
    :func:`topic_partitions`); ``None`` when the topic does not exist. Raises
    ``KafkaException`` when the broker does not answer within ``timeout_s``."""
    return topic_partitions(client.list_topics(timeout=timeout_s), topic)


def topic_partitions(metadata: ClusterMetadata, topic: str) -> list[int] | None:
    """The partition ids of ``topic`` in a metadata answer about all topics (``list_topics()``
    without a topic: naming one may create it); ``None`` when the topic does not exist."""
    info = metadata.topics.get(topic)
    if info is None or info.error is not None:
        return None
    return sorted(info.partitions)


def high_watermarks(consumer: Consumer, topic: str, partitions: list[int], timeout_s: float = 30.0, *,
                    error: type[ConsumerError]) -> dict[int, tuple[int, int]]:
    """``{partition: (low, high)}`` of ``topic`` now. Leaves ``consumer`` unassigned; raises
    ``error`` (one line) when the broker does not answer.

    An uncached ``get_watermark_offsets`` under-reports the high watermark on some brokers
    (tansu 0.6 answers the base offset of the last record batch + 1); a fetch response
    carries the true one. So the end is the larger of the uncached answer and the cached
    value after a short fetch from just below it.
    """
    from confluent_kafka import KafkaException, TopicPartition

    uncached: dict[int, tuple[int, int]] = {}
    for p in partitions:
        try:
            uncached[p] = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s, cached=False)
        except KafkaException as exc:
            raise error(f"cannot read the offsets of {topic} partition {p}: {exc.args[0].str()}") from None
    # A fetch response carries the true high watermark: fetch from just below the answer.
    consumer.assign([TopicPartition(topic, p, max(lo, hi - 1)) for p, (lo, hi) in uncached.items()])
    out: dict[int, tuple[int, int]] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < len(partitions):
            if time.monotonic() > deadline:
                missing = sorted(set(partitions) - set(out))
                raise error(f"no fetch answer for {topic} partition(s) {missing} within {timeout_s:.0f} s")
            consumer.poll(0.05)  # messages are dropped; the real reading starts after assign()
            for p in partitions:
                if p in out:
                    continue
                lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)
                if hi >= 0:
                    out[p] = (max(lo, uncached[p][0]) if lo >= 0 else uncached[p][0], max(hi, uncached[p][1]))
    finally:
        consumer.unassign()
    return out


def read_range(consumer: Consumer, topic: str, start: dict[int, int], end: dict[int, int], *,
               error: type[ConsumerError], stall_s: float = _STALL_S) -> Iterator[Message]:
    """Yield the messages of ``[start[p], end[p])`` of each partition, then stop: messages
    written after the end offsets were noted are left for the next read. Raises ``error``
    when the broker fails the read or stops answering for ``stall_s``."""
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
                raise error(
                    f"reading {topic} stalled: no message for {stall_s:.0f} s from partition(s) {sorted(open_parts)}"
                )
            continue
        last = time.monotonic()
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                if msg.partition() in open_parts:
                    _close(coordinates(msg)[1])
                continue
            if err.fatal() or not err.retriable():
                raise error(f"reading {topic} failed: {err.str()}")
            continue
        _topic, p, offset = coordinates(msg)
        if p not in open_parts:
            continue
        if offset >= end[p]:
            _close(p)
            continue
        yield msg
        if offset + 1 >= end[p]:
            _close(p)


# -- messages ------------------------------------------------------------------------------


def message_timestamp(msg: Message) -> int | None:
    """The message's timestamp in ms since the epoch, or ``None`` when it has none."""
    ts_type, ts = msg.timestamp()
    return ts if ts_type and ts >= 0 else None


def message_headers(msg: Message) -> list[tuple[str, bytes | None]]:
    """The message's headers as (name, bytes) pairs (a consumed message's own form; the
    text values a message made locally may hold are encoded as UTF-8)."""
    headers = msg.headers()
    pairs: Iterable[tuple[str, str | bytes | None]] = headers.items() if isinstance(headers, dict) else headers or ()
    return [(k, v.encode("utf-8") if isinstance(v, str) else v) for k, v in pairs]


def header_text(msg: Message, name: str) -> str | None:
    """The first header ``name`` of the message as text (undecodable bytes replaced)."""
    for key, value in message_headers(msg):
        if key == name and value is not None:
            return value.decode("utf-8", "replace")
    return None


def coordinates(msg: Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a consumed message (only a message made locally lacks them)."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None and partition is not None and offset is not None, "a consumed message"
    return topic, partition, offset


def pause_assigned(consumer: Consumer) -> None:
    """Pause every partition assigned now (polling goes on: the consumer stays in its group).
    A failure mid-rebalance is left to the next call."""
    try:
        assigned = consumer.assignment()
        if assigned:
            consumer.pause(assigned)
    except Exception:
        _log.debug("pause failed", exc_info=True)


def resume_assigned(consumer: Consumer) -> None:
    """Resume every partition assigned now."""
    try:
        assigned = consumer.assignment()
        if assigned:
            consumer.resume(assigned)
    except Exception:
        _log.debug("resume failed", exc_info=True)


def describe_partitions(partitions: list[TopicPartition]) -> str:
    """``topic [0, 1, 3]`` for a log line."""
    if not partitions:
        return "no partitions"
    topic = partitions[0].topic
    return f"{topic} [{', '.join(str(tp.partition) for tp in sorted(partitions, key=lambda t: t.partition))}]"
