"""The consumer worker: Kafka -> decode -> validate -> batch upsert -> dead letters -> commit.

One :class:`Worker` owns one Kafka consumer (one thread). Its loop:

1. poll messages of its assigned partitions into a batch, until ``batch_size`` messages or
   ``batch_max_wait_ms`` since the first one;
2. decode each (both framings); undecodable or invalid events become dead letters;
3. write the good ones with :class:`~predstream.consumer.sink.PostgresSink` (one transaction); rows the
   database refuses become dead letters too;
4. produce the dead letters and wait for the broker to confirm them;
5. commit, synchronously, the offset after the last message of each partition.

Offsets move only after the database transaction committed and the dead letters are
confirmed, so a crash at any point re-delivers, never loses; the upsert is idempotent.

When Postgres (or the broker, for dead letters, or the schema registry) is unavailable,
the worker pauses its partitions (it keeps polling, so it stays in the group), retries the
same batch with exponential backoff up to ``db_max_backoff_s``, commits nothing meanwhile,
and resumes by itself: one warning line when it goes down, one info line when it is back.

On a rebalance the batch in flight is stored and committed before the partitions go; on
:meth:`Worker.stop` (SIGTERM/SIGINT) the worker stops polling, stores and commits its batch
within ``shutdown_timeout_s``, finishes a group join in progress (bounded: leaving mid-join
wedges some brokers' groups), and closes.

A worker that has been (re)joining its group for longer than ``join_timeout_s`` without an
assignment is unhealthy; it logs that and leaves and rejoins by itself
(:mod:`predstream.consumer.membership`). An empty assignment (more workers than partitions) is healthy.

:mod:`predstream.consumer.runner` runs a worker in the calling thread, with its metrics
endpoint and signal handling (:func:`~predstream.consumer.runner.run_worker`), or N of them
as supervised processes (:func:`~predstream.consumer.runner.run_worker_processes`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from predstream.schemas.codec import Decoder
from predstream.schemas.kafka_log import BROKER_LOG

from ._backoff import RETRIABLE, Outage, what_is_down
from ._kafka import consumer_config, describe_partitions, heartbeat_ms, pause_assigned, resume_assigned
from .batch import Entry, account_batch, commit_offsets, decode_entries, mark_rejected, send_dead_letters
from .dlq import DeadLetterWriter
from .errors import DatabaseUnavailableError, WorkerError
from .membership import Membership, unwedge_group
from .metrics import ConsumerMetrics
from .settings import ConsumerSettings
from .sink import PostgresSink, WriteResult
from .transcode import Transcoder

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message, TopicPartition

__all__ = ["Worker"]

_log = logging.getLogger(__name__)

#: The first wait after an outage begins; then twice as long each time, at most ``db_max_backoff_s``.
_FIRST_BACKOFF_S = 0.5
_IDLE_PING_S = 5.0
_LAG_EVERY_S = 2.0
_MAX_POLL_WAIT_S = 0.5
#: On stop, wait at most this long for a group join in progress to finish before leaving.
_SETTLE_JOIN_S = 10.0


class Worker:
    """One consumer of the group, storing batches into Postgres (see the module docstring).

    ``sink``, ``dead_letters``, ``consumer`` and ``metrics`` default to real ones built from
    ``settings``; pass your own to share or observe them.
    """

    def __init__(
        self,
        settings: ConsumerSettings,
        *,
        stop_event: threading.Event | None = None,
        sink: PostgresSink | None = None,
        dead_letters: DeadLetterWriter | None = None,
        consumer: Consumer | None = None,
        metrics: ConsumerMetrics | None = None,
        name: str | None = None,
        index: int = 0,
    ) -> None:
        self.settings = settings
        self.index = index  # of the worker among the supervisor's: orders their leaves on a joint stop
        self.name = name or f"{os.getpid()}"
        self.metrics = metrics or ConsumerMetrics()
        self._stop = stop_event or threading.Event()
        self._sink = sink or PostgresSink(settings.require_database_url(),
                                          application_name=f"predstream-consumer-{self.name}")
        self._dlq = dead_letters or DeadLetterWriter(settings)
        self._decoder = Decoder(settings.schema_registry_url, settings.schema_registry_options or None)
        self._transcoder = Transcoder()  # messages straight into COPY rows; the decoder takes the rest
        self._consumer: Consumer | None = consumer  # the worker makes its own when it starts (None)
        self._own_consumer = consumer is None
        self._membership = Membership(settings.join_timeout_s)
        self._next_rejoin = 0.0
        self._buffer: list[Entry] = []
        self._batch_started: float | None = None
        self._written: WriteResult | None = None  # the buffer's DB write, once it succeeded
        self._outage: Outage | None = None
        self._closing = False
        self._running = False
        self._last_poll = 0.0
        self._last_db_contact = time.monotonic()
        self._db_up = True
        self._last_lag = 0.0
        self._last_poll_error: str | None = None

    @property
    def _client(self) -> Consumer:
        """The Kafka consumer: there from :meth:`run` on."""
        assert self._consumer is not None, "the worker has not subscribed"
        return self._consumer

    # -- control ---------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the worker to finish its batch, commit and return from :meth:`run`."""
        self._stop.set()

    def health(self) -> tuple[bool, dict[str, Any]]:
        """``(healthy, details)``: healthy while polling, the database is reachable and the
        worker is in its group (an empty assignment counts) or joining it for less than
        ``join_timeout_s``."""
        quiet = time.monotonic() - self._last_poll
        polling = self._running and quiet < max(10.0, self.settings.session_timeout_ms / 1000)
        stuck = self._membership.stuck()
        details = {
            "polling": polling,
            "database": "up" if self._db_up else "down",
            "paused": self._outage is not None,
            "buffered": len(self._buffer),
            **self._membership.details(),
        }
        if stuck:
            details["problem"] = (f"no partitions for {self._membership.joining_for():.0f} s while joining group "
                                  f"{self.settings.group_id} (join_timeout_s {self.settings.join_timeout_s:g})")
        return polling and self._db_up and not stuck, details

    # -- the loop --------------------------------------------------------------------

    def run(self) -> None:
        """Consume until :meth:`stop`; store and commit the last batch; close."""
        self._subscribe()
        self._running = True
        self._last_poll = time.monotonic()
        _log.info("worker %s consuming %s as group %s", self.name, self.settings.topic, self.settings.group_id,
                  extra={"worker": self.name})
        try:
            while not self._stop.is_set():
                if self._outage is not None:
                    self._outage_step()
                    continue
                self._poll(self._poll_wait())
                if self._batch_due():
                    self._try_flush()
                self._periodic()
            self._drain()
        finally:
            self._running = False
            self._close()

    def _subscribe(self) -> None:
        from confluent_kafka import Consumer

        if self._consumer is None:
            self._consumer = Consumer(consumer_config(self.settings, f"predstream-consumer-{self.name}"))
        self._membership.joining()
        self._consumer.subscribe(
            [self.settings.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    def _poll_wait(self) -> float:
        if not self._buffer or self._batch_started is None:
            return _MAX_POLL_WAIT_S
        due = self._batch_started + self.settings.batch_max_wait_ms / 1000
        return min(_MAX_POLL_WAIT_S, max(0.0, due - time.monotonic()))

    def _batch_due(self) -> bool:
        if not self._buffer:
            return False
        if len(self._buffer) >= self.settings.batch_size:
            return True
        assert self._batch_started is not None
        return time.monotonic() - self._batch_started >= self.settings.batch_max_wait_ms / 1000

    def _poll(self, timeout: float) -> None:
        from confluent_kafka import KafkaError

        room = max(1, min(1000, self.settings.batch_size - len(self._buffer)))
        if self._buffer:
            msgs = self._client.consume(num_messages=room, timeout=timeout)
        else:
            # consume() waits for ``room`` messages or the timeout; a new batch must start
            # (and its max wait run) as soon as its first message is here
            first = self._client.poll(timeout)
            msgs = [] if first is None else [first]
            if first is not None and room > 1:
                msgs.extend(self._client.consume(num_messages=room - 1, timeout=0))
        self._last_poll = time.monotonic()
        good: list[Message] = []
        for msg in msgs:
            err = msg.error()
            if err is None:
                good.append(msg)
                continue
            if err.code() == KafkaError._PARTITION_EOF:
                continue
            if err.fatal():
                raise WorkerError(f"the Kafka consumer failed: {err.str()}")
            if err.str() != self._last_poll_error:  # one line per distinct problem
                self._last_poll_error = err.str()
                _log.warning("kafka: %s", err.str(), extra={"worker": self.name})
        if good:
            if not self._buffer:
                self._batch_started = time.monotonic()
            self._buffer += [Entry(msg) for msg in good]
            self._last_poll_error = None
            self.metrics.events_consumed.inc(len(good))

    def _periodic(self) -> None:
        """Every few seconds: update the lag gauges; when idle, check the database answers;
        when stuck joining the group, leave and rejoin."""
        now = time.monotonic()
        if self._membership.stuck(now) and now >= self._next_rejoin:
            self._rejoin(now)
        if now - self._last_lag >= _LAG_EVERY_S:
            self._last_lag = now
            self._dlq.poll()  # the dead-letter producer's callbacks and log lines, while they are news
            try:
                self.metrics.observe_lag(self._client, self._client.assignment())
            except Exception:  # metrics must never stop the worker
                _log.debug("lag observation failed", exc_info=True)
        if not self._buffer and self._outage is None and now - self._last_db_contact >= _IDLE_PING_S:
            try:
                self._sink.ping()
                self._db_ok()
            except DatabaseUnavailableError as exc:
                self._enter_outage(exc)

    def _rejoin(self, now: float) -> None:
        """Stuck joining past ``join_timeout_s``: say so, then leave and rejoin (unless the
        broker is unreachable: then there is nothing to rejoin yet)."""
        waited = self._membership.joining_for(now)
        self._next_rejoin = now + self.settings.join_timeout_s
        outage = BROKER_LOG.outage()
        if outage is not None:
            _log.warning("worker %s has had no partitions for %.0f s: kafka broker %s unreachable for %.0f s (%s)",
                         self.name, waited, outage[0], outage[1], outage[2], extra={"worker": self.name})
            return
        if not self._own_consumer or self._buffer:
            _log.warning("worker %s has had no partitions for %.0f s while joining group %s", self.name, waited,
                         self.settings.group_id, extra={"worker": self.name})
            return
        _log.warning("worker %s has had no partitions for %.0f s while joining group %s (the broker keeps the group "
                     "rebalancing); leaving it and rejoining", self.name, waited, self.settings.group_id,
                     extra={"worker": self.name})
        consumer, self._consumer = self._client, None
        outcome = unwedge_group(self.settings, consumer)
        self._membership.recoveries += 1
        _log.warning("worker %s: %s", self.name, outcome, extra={"worker": self.name})
        self._subscribe()  # still joining since before: unhealthy until an assignment arrives

    # -- one batch -------------------------------------------------------------------

    def _try_flush(self) -> bool:
        try:
            self._flush()
            return True
        except RETRIABLE as exc:
            self._enter_outage(exc)
            return False

    def _flush(self) -> None:
        """Store the buffer, dead-letter what cannot be stored, commit offsets; raise if retriable."""
        if not self._buffer:
            return
        started = time.monotonic()
        entries = self._buffer
        self.metrics.events_transcoded.inc(decode_entries(entries, self._decoder, self._transcoder))
        if self._written is None:
            good = [e for e in entries if e.problem is None]
            result = self._sink.write([e.record for e in good if e.record is not None])
            self._db_ok()
            mark_rejected(good, result)
            self._written = result
        send_dead_letters(entries, self._dlq)
        commit_offsets(self._client, entries, self.metrics, self.name)
        account_batch(self.metrics, entries, self._written, time.monotonic() - started, self.name)
        self._buffer = []
        self._batch_started = None
        self._written = None

    # -- outages ---------------------------------------------------------------------

    def _db_ok(self) -> None:
        self._last_db_contact = time.monotonic()
        if not self._db_up:
            self._db_up = True
            self.metrics.db_up.set(1)

    def _enter_outage(self, exc: BaseException) -> None:
        now = time.monotonic()
        what = what_is_down(exc)
        if isinstance(exc, DatabaseUnavailableError) and self._db_up:
            self._db_up = False
            self.metrics.db_up.set(0)
            self.metrics.db_outages.inc()
        out = self._outage
        if out is not None and out.what != what:
            self._leave_outage()  # e.g. the database is back, the broker is not
            out = None
        if out is None:
            _log.warning("%s unavailable: %s; pausing, will retry", what, exc, extra={"worker": self.name})
            self._outage = Outage.begin(what, now, _FIRST_BACKOFF_S, self.settings.db_max_backoff_s)
        else:
            delay = out.failed_again(now)
            _log.debug("%s still unavailable: %s; next try in %.1f s", what, exc, delay)
        pause_assigned(self._client)

    def _leave_outage(self) -> None:
        out, self._outage = self._outage, None
        if out is None:
            return
        _log.info("%s back after %.1f s; resumed", out.what, time.monotonic() - out.since, extra={"worker": self.name})
        resume_assigned(self._client)

    def _outage_step(self) -> None:
        """While paused: keep polling (heartbeats, rebalances), retry when the backoff ends."""
        out = self._outage
        assert out is not None
        pause_assigned(self._client)  # partitions assigned since the outage began are paused too
        self._poll(min(_MAX_POLL_WAIT_S, max(0.0, out.next_try - time.monotonic())))
        if self._outage is None or not self._outage.due(time.monotonic()):
            return
        try:
            if self._buffer:
                self._flush()
            else:
                self._sink.ping()
                self._db_ok()
        except RETRIABLE as exc:
            self._enter_outage(exc)
            return
        self._leave_outage()

    # -- rebalances ------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        took = self._membership.joined(len(partitions))
        _log.info("assigned %s", describe_partitions(partitions), extra={"worker": self.name})
        if took > self.settings.join_timeout_s:
            _log.warning("worker %s is in group %s again after %.0f s without partitions", self.name,
                         self.settings.group_id, took, extra={"worker": self.name})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Store and commit the batch in flight before the partitions go to another worker."""
        self._membership.joining()
        gone = {(tp.topic, tp.partition) for tp in partitions}
        if self._buffer and not self._closing and any(e.coords[:2] in gone for e in self._buffer):
            if self._outage is None:
                self._try_flush()
        self._drop(gone, "revoked")
        self.metrics.forget_partitions(partitions)
        _log.info("revoked %s", describe_partitions(partitions), extra={"worker": self.name})

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._membership.joining()
        self._drop({(tp.topic, tp.partition) for tp in partitions}, "lost")
        self.metrics.forget_partitions(partitions)
        _log.warning("lost %s (session timed out?)", describe_partitions(partitions), extra={"worker": self.name})

    def _drop(self, gone: set[tuple[str, int]], why: str) -> None:
        keep = [e for e in self._buffer if e.coords[:2] not in gone]
        dropped = len(self._buffer) - len(keep)
        if not dropped:
            return
        _log.info("%d uncommitted message(s) of %s partitions left to their next owner", dropped, why,
                  extra={"worker": self.name, "batch": dropped})
        self._buffer = keep
        self._written = None  # the kept entries are written again (idempotent) with the next batch
        if not keep:
            self._batch_started = None

    # -- shutdown --------------------------------------------------------------------

    def _drain(self) -> None:
        """Stop polling; store and commit the batch within ``shutdown_timeout_s``."""
        deadline = time.monotonic() + self.settings.shutdown_timeout_s
        pause_assigned(self._client)
        while self._buffer and time.monotonic() < deadline:
            if self._outage is not None:
                wait = min(self._outage.next_try, deadline) - time.monotonic()
                self._poll(max(0.0, min(_MAX_POLL_WAIT_S, wait)))  # paused: serves callbacks only
                if not self._outage.due(time.monotonic()):
                    continue
            if self._try_flush() and self._outage is not None:
                self._leave_outage()
        if self._buffer:
            _log.warning(
                "stopping with %d message(s) not stored after %.0f s; offsets not committed, "
                "they will be delivered again", len(self._buffer), self.settings.shutdown_timeout_s,
                extra={"worker": self.name, "batch": len(self._buffer)},
            )

    def _settle(self) -> None:
        """Before leaving the group: finish a join in progress (bounded; see
        :meth:`Membership.settle <predstream.consumer.membership.Membership.settle>`). When a
        supervisor stops all its workers at once, worker ``i``'s window is 2 + 4i heartbeats
        (1 s, 3 s, 5 s ...): they leave one after the other, each seeing the previous one's leave.
        """
        if not self._own_consumer or self._consumer is None or BROKER_LOG.outage() is not None:
            return
        window = (2 + 4 * self.index) * heartbeat_ms(self.settings) / 1000
        limit = min(_SETTLE_JOIN_S * (1 + self.index) + window, self.settings.shutdown_timeout_s)
        self._membership.settle(self._consumer, window, limit, self.name)

    def _close(self) -> None:
        self._closing = True
        self._settle()
        try:
            if self._consumer is not None:
                self._consumer.close()
        except Exception as exc:  # closing a consumer that lost its broker
            _log.debug("consumer close: %s", exc)
        try:
            self._dlq.close()
        finally:
            self._sink.close()
        value = self.metrics.registry.get_sample_value
        _log.info(
            "worker %s stopped: %d events consumed, %d rows inserted, %d updated, %d duplicates skipped",
            self.name, value("predstream_events_consumed_total") or 0,
            value("predstream_rows_upserted_total", {"result": "inserted"}) or 0,
            value("predstream_rows_upserted_total", {"result": "updated"}) or 0,
            value("predstream_duplicates_skipped_total") or 0, extra={"worker": self.name},
        )
