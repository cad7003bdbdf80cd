"""Replay: read the topic again into a (new or repaired) database, beside the live consumers.

:func:`run_replay` reads the partitions of ``settings.topic`` from a start point (the
beginning, a time, or explicit offsets) to the high watermarks taken when it starts (or,
with ``to_end``, to the end as it is when each partition is reached): the plan is
:func:`~predstream.consumer.replay_plan.plan_replay`'s. It decodes and validates each event,
and stores the good ones through the worker's own
:class:`~predstream.consumer.sink.PostgresSink`: an event replayed twice changes nothing, and an old
event never overwrites a newer row. As in the worker, messages are transcoded straight into
COPY rows (:mod:`predstream.consumer.transcode`; the others are decoded), taken from the
consumer in batches, and written by ``writers`` threads, each with its own connection,
while the next batches are read: the database works on two batches at once (replay is
bound by the database's work per row; on a small machine one connection left a core idle).
Batches are finished in the order they were read, and the resume offsets move only past
batches committed in order: every event before them is stored (some after them may be
too: replayed again from there, they change nothing).

It never disturbs the live consumer group: it uses ``assign()`` with explicit offsets and
a throwaway ``group.id`` (``predstream-replay-<random>``), with auto-commit off, and it
never commits.

Undecodable or invalid events are counted and logged; the live worker has dead-lettered
them already, so they go to the dead-letter topic again only with ``dead_letters=``.
With ``job_id=``, events of other jobs are skipped; the ``predstream-job-id`` header
decides without decoding when it is present. A start time is a lower bound from the
broker (see :mod:`~predstream.consumer.replay_plan`): messages before it are skipped.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from predstream.schemas.codec import Decoder
from predstream.schemas.errors import DecodeError, InvalidEventError, RegistryUnavailableError
from predstream.schemas.kafka_log import BrokerUnreachableError, cluster_metadata, quiet_log
from predstream.schemas.transport import Headers

from ._backoff import retry_while_unavailable
from ._kafka import coordinates, header_text, message_headers, message_timestamp, reader_consumer
from .dlq import DeadLetterWriter
from .errors import ConsumerError, ReplayError
from .replay_plan import PartitionRange, format_offsets, plan_replay
from .settings import ConsumerSettings
from .sink import IngestRecord, PostgresSink, SinkRecord, WriteResult
from .transcode import CopyRow, Transcoder

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message

__all__ = ["ReplayError", "ReplayStats", "run_replay"]

_log = logging.getLogger(__name__)

#: Write attempts per batch while the database is unavailable (then stop with resume offsets).
_WRITE_ATTEMPTS = 4
#: Invalid events logged one by one at WARNING before the rest go to DEBUG.
_MAX_WARNINGS = 20
#: Messages taken from the consumer per call.
_CONSUME_AT_ONCE = 1000
#: The GIL switch interval while replaying (CPython's default is 5 ms; see _Run.go).
_SWITCH_INTERVAL_S = 0.0005

ProgressFn = Callable[[int, int], None]


@dataclass
class ReplayStats:
    """What a replay did. ``read`` = stored + invalid + rejected + skipped_job + skipped_before."""

    read: int = 0
    inserted: int = 0
    updated: int = 0
    #: identical resends, older versions of stored rows and duplicates within a batch
    unchanged: int = 0
    #: undecodable or breaking the contract
    invalid: int = 0
    #: refused by the database (e.g. a value out of a column's range)
    rejected: int = 0
    #: events of other jobs (``job_id=``)
    skipped_job: int = 0
    #: how many events of each other job were skipped (the first 100 job ids seen)
    other_jobs: dict[str, int] = field(default_factory=dict)
    #: messages before ``from_timestamp`` read because the broker's answer was coarse
    skipped_before: int = 0
    dead_lettered: int = 0
    ranges: list[PartitionRange] = field(default_factory=list)
    #: the offset after the last message whose outcome is stored, per partition
    next_offsets: dict[int, int] = field(default_factory=dict)
    by_reason: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def stored(self) -> int:
        return self.inserted + self.updated + self.unchanged

    def add(self, result: WriteResult) -> None:
        self.inserted += result.inserted
        self.updated += result.updated
        self.unchanged += result.unchanged
        self.rejected += len(result.rejected)

    def summary(self) -> str:
        rate = f", {self.read / self.seconds:.0f} msg/s" if self.seconds > 0 and self.read else ""
        optional = [
            ("rejected by the database", self.rejected),
            ("skipped (other jobs)", self.skipped_job),
            ("skipped (before the start time)", self.skipped_before),
            ("dead-lettered", self.dead_lettered),
        ]
        return (
            f"read {self.read}: inserted {self.inserted}, updated {self.updated}, unchanged {self.unchanged}, "
            f"invalid {self.invalid}"
            + "".join(f", {label} {n}" for label, n in optional if n)
            + f" in {self.seconds:.1f} s{rate}"
        )


# -- the replay ----------------------------------------------------------------------------


def run_replay(
    settings: ConsumerSettings,
    *,
    from_timestamp: datetime | None = None,
    from_offsets: Mapping[int, int] | None = None,
    to_end: bool = False,
    job_id: str | None = None,
    dead_letters: DeadLetterWriter | None = None,
    sink: PostgresSink | None = None,
    progress: ProgressFn | None = None,
    stall_timeout_s: float = 60.0,
    writers: int = 2,
) -> ReplayStats:
    """Replay ``settings.topic`` into ``settings.database_url``, ``settings.batch_size``
    events per transaction; see the module docstring.

    ``dead_letters``: a :class:`predstream.consumer.dlq.DeadLetterWriter` to dead-letter invalid and
    rejected events again (default: count and log only). ``progress(done, total)`` is
    called as messages are read (``total`` grows with ``to_end`` as the topic does).
    ``writers``: batches written at once, each through its own connection (with a ``sink``
    given, that one alone writes). While it runs, CPython's GIL switch interval is 0.5 ms
    (process-wide; restored when it returns): see ``_Run.go``.
    Raises :class:`ReplayError` (with the offsets to resume from) when the database stays
    unavailable or the broker stops answering.
    """
    started = time.monotonic()
    url = settings.require_database_url()
    sinks = [sink] if sink is not None else [
        PostgresSink(url, application_name="predstream-replay") for _ in range(max(1, writers))]
    decoder = Decoder(settings.schema_registry_url, settings.schema_registry_options)
    log = quiet_log()  # a broker that does not answer is one error line, not a stream of retries
    # whatever the pass-through options say: never the live group, never a commit
    consumer = reader_consumer(settings, client_id="predstream-replay", log=log, pin_group=True,
                               group_id=f"predstream-replay-{uuid.uuid4().hex[:12]}")
    try:
        try:
            cluster_metadata(consumer, settings.require_bootstrap(), log)
        except BrokerUnreachableError as exc:
            raise ReplayError(str(exc)) from None
        ranges, since_ms = plan_replay(
            consumer, settings.topic, from_timestamp=from_timestamp, from_offsets=from_offsets,
            timeout_s=min(30.0, stall_timeout_s),
        )
        run = _Run(settings, consumer, sinks, decoder, ranges, since_ms, to_end, job_id,
                   settings.batch_size, dead_letters, progress, stall_timeout_s)
        run.go()
        stats = run.stats
    finally:
        consumer.close()  # auto-commit is off and nothing was committed: the group stays empty
        if sink is None:
            for own in sinks:
                own.close()
    stats.seconds = time.monotonic() - started
    _log.debug("replay of %s done: %s", settings.topic, stats.summary())
    return stats


@dataclass
class _Pending:
    """A batch handed to the writer thread, and what to do once it is written."""

    future: Future[WriteResult] | None
    #: the messages of its events, by (partition, offset), for dead letters of refused rows
    originals: dict[tuple[int | None, int | None], Message]
    #: messages to dead-letter after it (invalid ones read with it)
    bad: list[tuple[Message, str, str]]
    #: the resume offsets once it is stored
    positions: dict[int, int]


class _Run:
    """One replay's loop state."""

    def __init__(self, settings: ConsumerSettings, consumer: Consumer, sinks: list[PostgresSink], decoder: Decoder,
                 ranges: list[PartitionRange], since_ms: int | None, to_end: bool, job_id: str | None,
                 batch_size: int, dead_letters: DeadLetterWriter | None, progress: ProgressFn | None,
                 stall_timeout_s: float) -> None:
        self.topic = settings.topic
        self.consumer, self.sinks, self.decoder = consumer, sinks, decoder
        self.to_end, self.job_id, self.batch_size = to_end, job_id, batch_size
        self.dead_letters, self.progress, self.stall_timeout_s = dead_letters, progress, stall_timeout_s
        self.stats = ReplayStats(ranges=list(ranges))
        self.start = {r.partition: r.start for r in ranges}
        self.end = {r.partition: r.end for r in ranges}
        self.position = dict(self.start)  # next offset to handle, per partition
        self.stats.next_offsets = dict(self.start)
        self.before = {r.partition: since_ms for r in ranges} if since_ms is not None else {}
        self.open = {r.partition for r in ranges if to_end or r.size > 0}
        self.batch: list[SinkRecord] = []
        self.bad: list[tuple[Message, str, str]] = []  # (message, reason, error) to dead-letter
        self.originals: dict[tuple[int | None, int | None], Message] = {}  # by (partition, offset)
        self.warned = 0
        self.last_progress = 0.0
        # messages go straight to COPY rows (with a job filter they are decoded: the filter reads the job)
        self.transcoder = Transcoder() if job_id is None else None
        # batches are written (the database's waits releasing the GIL) while the next is read,
        # one per sink at a time: the oldest is finished before its sink takes another
        self.writer = ThreadPoolExecutor(len(sinks), thread_name_prefix="predstream-replay-writer")
        self.pending: deque[_Pending] = deque()
        self.written = 0  # batches handed to the writers (which sink takes the next one)

    # -- loop --------------------------------------------------------------------------

    def go(self) -> None:
        # The writer thread takes the GIL back after each wait on the database (a batch's
        # COPY is a dozen of them) while this thread transcodes: at CPython's default switch
        # interval (5 ms) each took ~2.5 ms, the database idle meanwhile (docs/performance.md).
        interval = sys.getswitchinterval()
        sys.setswitchinterval(min(interval, _SWITCH_INTERVAL_S))
        try:
            self._go()
        finally:
            self.writer.shutdown(wait=True)  # a write in flight ends before the sink closes
            sys.setswitchinterval(interval)

    def _go(self) -> None:
        from confluent_kafka import KafkaError, TopicPartition

        if self.open:
            self.consumer.assign([TopicPartition(self.topic, p, self.start[p]) for p in sorted(self.open)])
        last_seen = time.monotonic()
        self._report(force=True)
        while self.open:
            msgs = self.consumer.consume(num_messages=_CONSUME_AT_ONCE, timeout=0.2)
            if not msgs:
                self._check_positions()
                if self.open and time.monotonic() - last_seen > self.stall_timeout_s:
                    raise ReplayError(self._stalled())
                continue
            last_seen = time.monotonic()
            rows = self.transcoder.transcode_many(msgs) if self.transcoder is not None else [None] * len(msgs)
            for msg, row in zip(msgs, rows, strict=True):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        p, offset = msg.partition(), msg.offset()
                        if p is not None and offset is not None:
                            self._eof(p, offset)
                        continue
                    if err.fatal() or not err.retriable():
                        self._drain()
                        raise ReplayError(f"reading {self.topic} failed: {err.str()}; {self._resume_hint()}")
                    _log.debug("transient consumer error: %s", err.str())
                    continue
                self._handle(msg, row)
                if len(self.batch) + len(self.bad) >= self.batch_size:
                    self._flush()
            self._report()
        self._drain()
        self._report(force=True)

    def _handle(self, msg: Message, row: CopyRow | None) -> None:
        if row is not None:  # the transcoder read the coordinates already
            topic, p, offset = row[5], row[6], row[7]
            assert topic is not None and p is not None and offset is not None, "a consumed message"
        else:
            topic, p, offset = coordinates(msg)
        if p not in self.open:
            return  # fetched before the partition was closed
        end = self.end[p]
        if not self.to_end and offset >= end:
            self._close(p)
            return
        self.position[p] = offset + 1
        if self.to_end:
            self.end[p] = max(end, offset + 1)
        self.stats.read += 1
        if not self.to_end and offset + 1 >= end:
            self._close(p)
        since = self.before.get(p)
        if since is not None:
            ts = message_timestamp(msg)
            if ts is not None and ts < since:
                self.stats.skipped_before += 1
                return
            del self.before[p]  # from the first message at or after the time on, take all
        if self.job_id is not None:
            header = header_text(msg, Headers.JOB_ID)
            if header is not None and header != self.job_id:
                self._skip_job(header)
                return
        if row is not None:  # transcoded
            self.batch.append(row)
            if self.dead_letters is not None:
                self.originals[(p, offset)] = msg
            return
        try:
            event = self.decoder.decode(msg.value())
        except (DecodeError, InvalidEventError) as exc:
            self._invalid(msg, exc.reason, str(exc))
            return
        except RegistryUnavailableError as exc:
            self._drain()
            raise ReplayError(f"{exc}; {self._resume_hint()}") from None
        if self.transcoder is not None:
            self.transcoder.learn(msg.value(), self.decoder)
        if self.job_id is not None and event.job_id != self.job_id:
            self._skip_job(event.job_id)
            return
        self.batch.append(IngestRecord(event, topic, p, offset, message_timestamp(msg)))
        if self.dead_letters is not None:  # the original bytes, should the database refuse it
            self.originals[(p, offset)] = msg

    def _skip_job(self, job_id: str) -> None:
        self.stats.skipped_job += 1
        others = self.stats.other_jobs
        if job_id in others or len(others) < 100:
            others[job_id] = others.get(job_id, 0) + 1

    def _invalid(self, msg: Message, reason: str, error: str) -> None:
        self.stats.invalid += 1
        self.stats.by_reason[reason] = self.stats.by_reason.get(reason, 0) + 1
        level = logging.WARNING if self.warned < _MAX_WARNINGS else logging.DEBUG
        self.warned += 1
        _log.log(level, "partition %d offset %d: %s (%s)", msg.partition(), msg.offset(), error, reason)
        if self.dead_letters is not None:
            self.bad.append((msg, reason, error))

    def _eof(self, p: int, offset: int) -> None:
        if p in self.open:
            self.position[p] = max(self.position[p], offset)
            if self.to_end:
                self.end[p] = max(self.end[p], offset)
            self._close(p)

    def _check_positions(self) -> None:
        """Close partitions whose position passed the end without a message there (e.g. a
        transaction marker is the last record)."""
        if self.to_end or not self.open:
            return
        from confluent_kafka import TopicPartition

        for tp in self.consumer.position([TopicPartition(self.topic, p) for p in sorted(self.open)]):
            if tp.offset >= 0 and tp.offset >= self.end[tp.partition]:
                self.position[tp.partition] = max(self.position[tp.partition], self.end[tp.partition])
                self._close(tp.partition)

    def _close(self, p: int) -> None:
        from confluent_kafka import TopicPartition

        if p in self.open:
            self.open.discard(p)
            self.consumer.pause([TopicPartition(self.topic, p)])

    # -- writing -----------------------------------------------------------------------

    def _flush(self) -> None:
        """Hand the batch to a writer (once the oldest batch in flight is written, when every
        sink is busy)."""
        batch, self.batch = self.batch, []
        originals, self.originals = self.originals, {}
        bad, self.bad = self.bad, []
        if len(self.pending) >= len(self.sinks):
            self._finish()
        future = None
        if batch:
            sink = self.sinks[self.written % len(self.sinks)]  # the oldest batch's, free again
            self.written += 1
            future = self.writer.submit(self._write, sink, batch)
        self.pending.append(_Pending(future, originals, bad, dict(self.position)))

    def _finish(self) -> None:
        """Wait for the oldest batch in flight; count it, dead-letter what it refused, move
        the resume offsets past it."""
        if not self.pending:
            return
        pending = self.pending.popleft()
        bad = pending.bad
        if pending.future is not None:
            result = pending.future.result()  # a ReplayError of the writer is raised here
            self.stats.add(result)
            for rec, rejection in result.rejected:
                self.stats.by_reason[rejection.reason] = self.stats.by_reason.get(rejection.reason, 0) + 1
                _log.warning("partition %s offset %s: the database refused the event: %s",
                             rec.partition, rec.offset, rejection)
            if self.dead_letters is not None:
                bad.extend((pending.originals[(rec.partition, rec.offset)], rej.reason, rej.message)
                           for rec, rej in result.rejected)
        self._send_dead_letters(bad)
        self.stats.next_offsets = pending.positions

    def _drain(self) -> None:
        """Write what was read and wait for all of it, in order (before the end, or before
        stopping with resume offsets)."""
        self._flush()
        while self.pending:
            self._finish()

    def _write(self, sink: PostgresSink, batch: list[SinkRecord]) -> WriteResult:
        return retry_while_unavailable(
            lambda: sink.write(batch),
            lambda exc: ReplayError(f"the database is unavailable ({exc}); {self._resume_hint()}"),
            _log, attempts=_WRITE_ATTEMPTS,
        )

    def _send_dead_letters(self, bad: list[tuple[Message, str, str]]) -> None:
        if not bad or self.dead_letters is None:
            return
        deliveries = []
        for item, reason, error in bad:
            deliveries.append(self.dead_letters.send(
                key=item.key(), value=item.value(), headers=message_headers(item), reason=reason, error=error,
                topic=item.topic(), partition=item.partition(), offset=item.offset(),
                timestamp_ms=message_timestamp(item)))
        try:
            self.dead_letters.flush(deliveries)
        except ConsumerError as exc:
            raise ReplayError(f"{exc}; {self._resume_hint()}") from None
        self.stats.dead_lettered += len(deliveries)

    # -- reporting ---------------------------------------------------------------------

    def _report(self, force: bool = False) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if not force and now - self.last_progress < 0.2:
            return
        self.last_progress = now
        done = sum(self.position[p] - self.start[p] for p in self.start)
        total = sum(max(0, self.end[p] - self.start[p]) for p in self.start)
        self.progress(done, max(total, done))

    def _resume_hint(self) -> str:
        return f"resume with --from-offsets {format_offsets(self.stats.next_offsets)}"

    def _stalled(self) -> str:
        where = ", ".join(f"partition {p} at {self.position[p]} of {self.end[p]}" for p in sorted(self.open))
        return f"no message from {self.topic} for {self.stall_timeout_s:.0f} s ({where}); {self._resume_hint()}"
