"""``predstream dlq redrive``: send dead letters' original events through the consumer again.

A redrive re-publishes each dead letter's original key, value and headers to the main
topic, where the live workers read it like any event. It is safe while workers run:

* **Bounded.** It reads the DLQ from where the last redrive stopped up to the end offsets
  noted when it starts. Dead letters written meanwhile (an event that fails again, at
  once, because its cause is not fixed) wait for the next run. Reading "until the end"
  instead chased its own re-failures: 1 dead letter became 229, then 52,442, in two runs.
* **Progress as it goes.** Progress is the committed offset of the group
  ``<group_id>.redrive`` on the DLQ topic, committed after each chunk of re-published
  events the broker confirmed, so a run that fails half-way does not repeat what it sent.
* **Counted, then parked.** The re-published event carries ``predstream-redrive-count``
  (one more than the dead letter's); a worker that dead-letters it again keeps that header
  (the original headers travel with a dead letter). A dead letter redriven ``limit`` times
  already (default :data:`~predstream.consumer.dlq_reader.REDRIVE_LIMIT`) is *parked*: it stays on the DLQ, is not
  redriven, and ``dlq list`` marks it. A run with a higher ``limit`` (``--redrive-limit``,
  after fixing the cause) and ``from_beginning`` takes parked ones again.
* **Filters.** ``reasons`` keeps dead letters whose reason starts with one of them; the
  others are counted as skipped and stay behind the progress offset (``from_beginning``
  looks at every dead letter again). When a filter matches none of the dead letters read,
  nothing is recorded (a typo must not pass over them) and the result says which reasons
  were there.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from predstream.schemas.kafka_log import quiet_log
from predstream.schemas.transport import Headers

from ._kafka import dead_letter_producer, high_watermarks, read_range
from .dlq import Delivery, HeaderList, confirm, produce_tracked
from .dlq_reader import REDRIVE_LIMIT, DeadLetter, dlq_consumer, dlq_partitions
from .errors import DeadLetterUnavailableError
from .settings import ConsumerSettings

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Producer

__all__ = ["RedriveResult", "redrive", "redrive_group"]

_log = logging.getLogger(__name__)

#: Re-published events confirmed (and progress committed) per chunk.
_CHUNK = 500


@dataclass
class RedriveResult:
    """What :func:`redrive` did: counts, and per reason how many were redriven."""

    redriven: int = 0
    #: not matching the reason filter (left behind the progress offset)
    skipped: int = 0
    #: redriven ``limit`` times already: left on the DLQ, not redriven
    parked: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    #: every dead letter read, by reason (what a filter could have matched)
    seen: dict[str, int] = field(default_factory=dict)
    dry_run: bool = False
    #: progress was committed (never in a dry run, nor when a filter matched nothing)
    recorded: bool = False

    @property
    def read(self) -> int:
        return self.redriven + self.skipped + self.parked

    @property
    def filter_matched_nothing(self) -> bool:
        return self.skipped > 0 and self.redriven == 0 and self.parked == 0


def redrive_group(settings: ConsumerSettings) -> str:
    """The consumer group whose committed offsets on the DLQ record redrive progress."""
    return settings.group_id + ".redrive"


def _with_count(headers: HeaderList, count: int) -> HeaderList:
    kept = [(k, v) for k, v in headers if k != Headers.REDRIVE_COUNT]
    return kept + [(Headers.REDRIVE_COUNT, str(count).encode())]


class _Run:
    """One redrive's progress: what is sent, what is confirmed, what is committed."""

    def __init__(self, settings: ConsumerSettings, consumer: Consumer, producer: Producer | None,
                 timeout_s: float) -> None:
        self.settings, self.consumer, self.producer, self.timeout_s = settings, consumer, producer, timeout_s
        self.pending: list[Delivery] = []
        self.progress: dict[int, int] = {}  # partition -> offset after the last dead letter handled
        self.result = RedriveResult(dry_run=producer is None)

    def send(self, letter: DeadLetter) -> None:
        if self.producer is None:
            return
        delivery = Delivery()
        self.pending.append(delivery)
        produce_tracked(self.producer, self.settings.topic, letter.key, letter.value,
                        _with_count(letter.headers, letter.redrive_count + 1), delivery)
        if len(self.pending) >= _CHUNK:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Wait for the broker to confirm what was sent, then commit the progress."""
        from confluent_kafka import KafkaException, TopicPartition

        if self.producer is None or not self.progress:
            return
        confirm(self.producer, self.pending, self.timeout_s, "redriven event")
        self.pending = []
        topic = self.settings.dlq_topic
        try:
            self.consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in sorted(self.progress.items())],
                                 asynchronous=False)
        except KafkaException as exc:
            raise DeadLetterUnavailableError(
                f"redriven {self.result.redriven} event(s) but could not record progress ({exc.args[0].str()}); "
                "a second run sends the last of them again (harmless: the upsert is idempotent)"
            ) from None
        self.result.recorded = True


def redrive(
    settings: ConsumerSettings,
    *,
    reasons: Sequence[str] | None = None,
    dry_run: bool = False,
    from_beginning: bool = False,
    limit: int = REDRIVE_LIMIT,
    timeout_s: float = 60.0,
) -> RedriveResult:
    """Re-publish dead letters' original key, value and headers to ``settings.topic``.

    See the module docstring. Raises :class:`DeadLetterUnavailableError` (one line) when the
    broker does not answer or does not confirm; what was confirmed before stays recorded.
    """
    from confluent_kafka import KafkaException, TopicPartition

    topic = settings.dlq_topic
    log = quiet_log()
    consumer = dlq_consumer(settings, redrive_group(settings), log)
    producer = None if dry_run else dead_letter_producer(settings, "predstream-redrive", log)
    run = _Run(settings, consumer, producer, timeout_s)
    result = run.result
    try:
        parts = dlq_partitions(consumer, settings, log)
        if not parts:
            return result
        marks = high_watermarks(consumer, topic, parts, timeout_s, error=DeadLetterUnavailableError)
        start = {p: lo for p, (lo, _hi) in marks.items()}
        if not from_beginning:
            try:
                committed = consumer.committed([TopicPartition(topic, p) for p in parts], timeout=timeout_s)
            except KafkaException as exc:
                raise DeadLetterUnavailableError(f"cannot read redrive progress: {exc.args[0].str()}") from None
            start.update({tp.partition: max(tp.offset, start[tp.partition]) for tp in committed if tp.offset >= 0})
        end = {p: hi for p, (_lo, hi) in marks.items()}
        for msg in read_range(consumer, topic, start, end, error=DeadLetterUnavailableError):
            letter = DeadLetter.from_message(msg)
            result.seen[letter.reason] = result.seen.get(letter.reason, 0) + 1
            run.progress[letter.partition] = letter.offset + 1
            if not letter.matches(reasons):
                result.skipped += 1
            elif letter.parked(limit):
                result.parked += 1
                _log.debug("dead letter %s:%s parked: redriven %d times already", letter.partition, letter.offset,
                           letter.redrive_count)
            else:
                if letter.original_topic and letter.original_topic != settings.topic:
                    _log.warning("dead letter %s:%s came from topic %s, redriving it to %s",
                                 letter.partition, letter.offset, letter.original_topic, settings.topic)
                result.redriven += 1
                result.by_reason[letter.reason] = result.by_reason.get(letter.reason, 0) + 1
                run.send(letter)
        if reasons and result.filter_matched_nothing:
            return result  # a filter that matched nothing (a typo?) must not pass over them
        run.checkpoint()
        _log.info("redrove %d dead letter(s); skipped %d, parked %d", result.redriven, result.skipped, result.parked)
        return result
    finally:
        consumer.close()
        if producer is not None:
            producer.flush(5)
