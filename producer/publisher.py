"""The publisher: hands prediction events to Kafka without ever making training wait.

``Publisher.publish(event)`` only appends the event to an in-process queue and returns
(about a microsecond). Two background threads do the rest:

* the **sender** encodes queued events and gives them to an idempotent librdkafka
  producer (``acks=all``), and serves its delivery reports. An event goes to the local
  :class:`~predstream.producer.spool.Spool` instead when the broker is known to be unreachable, when
  librdkafka's queue is full, or when its delivery fails (timeout, broker restart, ...).
  After a fatal producer error, a delivery failure, or an outage, the producer is
  replaced by a fresh one: an idempotent producer whose broker restarted and lost its state
  never delivers again. The old producer's undelivered messages are purged and spooled.
* the **watcher** (:mod:`predstream.producer.watcher`) probes the broker (a metadata
  request) while it is unreachable and, once it answers again, re-sends the spool
  (:func:`~predstream.producer.spool_drain.drain_spool`) when ``settings.spool_auto_drain``
  is on. With a schema registry configured it also registers the event schema
  (:mod:`predstream.producer.registry`), and retries while the registry does not answer:
  meanwhile events are spooled, as during a broker outage, and re-sent in the Confluent
  framing once it answers.

Every event ends up delivered, spooled, or (only when the spool is full or the disk fails)
dropped and counted; ``flush()`` and ``close()`` report the three counts. A publisher not
closed by its owner closes itself at interpreter exit (``atexit``), within
``settings.flush_timeout_s``: what is not delivered by then is spooled, so a process exits
promptly (the threads are daemons) and loses nothing, even with the broker down. A re-sent
duplicate is harmless: the consumer upserts by ``event_id``.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from predstream.schemas.codec import SingleObjectEncoder, frame_header
from predstream.schemas.event import MAX_EVENT_BYTES, PredictionEvent
from predstream.schemas.transport import Headers, message_key

from ._kafka import PURGED, producer_config
from .errors import PublisherClosedError
from .registry import RegistryFraming, schema_header
from .settings import ProducerSettings
from .spool import Spool, list_segments
from .spool_drain import drain_spool
from .watcher import BrokerWatcher

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

__all__ = ["Publisher", "PublishReport", "PublisherStats"]

_log = logging.getLogger(__name__)

#: Pause of the sender when it has nothing to do (also the delivery-report latency).
_IDLE_POLL_S = 0.01
#: Events the sender takes from the queue before serving delivery reports again.
_BATCH = 1000
#: The sender releases the GIL this often while encoding a backlog (publish() stays fast).
_YIELD_EVERY = 16


@dataclass(frozen=True)
class PublishReport:
    """Where the events given to a publisher are (counts since it was created)."""

    delivered: int
    spooled: int
    dropped: int
    pending: int

    def __str__(self) -> str:
        return f"{self.delivered} delivered, {self.spooled} spooled, {self.dropped} dropped, {self.pending} pending"


@dataclass(frozen=True)
class PublisherStats(PublishReport):
    """:class:`PublishReport` plus what the publisher did along the way."""

    published: int = 0
    resent: int = 0  #: spooled records the auto-drain delivered (this and earlier runs)
    producer_replacements: int = 0
    broker_reachable: bool = True
    spool_dir: str = ""
    registry_reachable: bool = True  #: False while a configured schema registry does not answer


class _FlushRequest:
    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.done = threading.Event()


class Publisher:
    """Publishes :class:`~predstream.schemas.event.PredictionEvent` s to ``settings.topic``.

    ``publish`` never blocks and never raises for broker trouble. Call :meth:`close` (or
    use it as a context manager) at the end: it waits up to ``settings.flush_timeout_s``
    for deliveries, spools the rest, and stops the threads. ``job_id`` only names the
    Kafka client (``client.id``); each message's job header is its event's own ``job_id``.
    Events are framed as the settings ask: Avro single-object, or the Confluent wire format
    when ``settings.schema_registry_url`` is set (``registry_client`` replaces the registry
    client the settings would make, e.g. a shared ``mock://`` one in tests).
    """

    def __init__(self, settings: ProducerSettings, *, job_id: str | None = None,
                 registry_client: SchemaRegistryClient | None = None) -> None:
        self.settings = settings
        self.topic = settings.topic
        self._client_id = f"predstream-{job_id or 'publisher'}-{os.getpid()}"[:200]
        self._encoder = SingleObjectEncoder()  # what the spool keeps: needs no registry
        self._framing = RegistryFraming.from_settings(settings, client=registry_client)
        self._spool = Spool.from_settings(settings)
        self._queue: deque[PredictionEvent] = deque()
        self._closed = False
        # counters: each written by one thread only (publish: the caller; others: the sender)
        self._published = 0
        self._delivered = 0
        self._spooled = 0
        self._dropped = 0
        self._inflight = 0
        self._replacements = 0
        self._replace_reason: str | None = None
        self._retiring = False  # True while the old producer's last reports are served
        self._warned: set[str] = set()
        self._flushes: deque[_FlushRequest] = deque()
        self._stop = threading.Event()
        # the broker's and the registry's state, shared by the sender and the watcher thread
        self._watch = BrokerWatcher(settings, self._spool, self._framing, self._client_id, self._stop)
        self._header_cache: dict[str | bytes, bytes] = {}  # job ids and framing headers
        self._producer = self._new_producer()
        self._sender = threading.Thread(target=self._send_loop, name="predstream-publisher-send", daemon=True)
        self._sender.start()
        self._watch.start()
        atexit.register(self._close_at_exit)

    # -- the training loop's side ------------------------------------------------

    def publish(self, event: PredictionEvent) -> None:
        """Queue one event for sending; returns at once (never waits on the network)."""
        if self._closed:
            raise PublisherClosedError("publish() after close(): this publisher has stopped; create a new one")
        if event.__class__ is not PredictionEvent and not isinstance(event, PredictionEvent):
            raise TypeError(f"publish() takes a PredictionEvent, not {type(event).__name__}")
        self._queue.append(event)
        self._published += 1

    def publish_many(self, events: Iterable[PredictionEvent]) -> None:
        """Queue several events; returns at once."""
        events = list(events)
        for event in events:
            if not isinstance(event, PredictionEvent):
                raise TypeError(f"publish_many() takes PredictionEvents, not {type(event).__name__}")
        if self._closed:
            raise PublisherClosedError("publish_many() after close(): this publisher has stopped; create a new one")
        self._queue.extend(events)
        self._published += len(events)

    def flush(self, timeout: float | None = None) -> PublishReport:
        """Wait up to ``timeout`` seconds (default ``settings.flush_timeout_s``) until every
        queued event is delivered; spool whatever is still undelivered at the deadline."""
        timeout = self.settings.flush_timeout_s if timeout is None else max(0.0, timeout)
        if self._sender.is_alive():
            req = _FlushRequest(time.monotonic() + timeout)
            self._flushes.append(req)
            if not req.done.wait(timeout + 30):
                _log.error("publisher: flush did not finish %.0f s after its deadline", 30)
        return self.report()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` began: :meth:`publish` refuses events."""
        return self._closed

    def _close_at_exit(self) -> None:
        if not self._closed:
            _log.info("publisher: closing at interpreter exit (at most %.0f s)", self.settings.flush_timeout_s)
            self.close()

    def close(self, timeout: float | None = None) -> PublishReport:
        """Flush (see :meth:`flush`), stop the background threads and log the outcome."""
        if self._closed and not self._sender.is_alive():
            return self.report()
        self._closed = True
        atexit.unregister(self._close_at_exit)
        timeout = self.settings.flush_timeout_s if timeout is None else max(0.0, timeout)
        deadline = time.monotonic() + timeout
        self.flush(timeout)
        self._stop.set()
        self._watch.probe()  # wakes the watcher
        self._sender.join(30)
        if self._sender.is_alive():
            _log.error("publisher: the %s thread did not stop", "sender")
        if not self._watch.join(60):
            _log.error("publisher: the %s thread did not stop", "watcher")
        self._spool_leftovers()  # events published while close() ran
        self._spool.close()
        if self.settings.spool_auto_drain and self._watch.can_drain() and list_segments(self._spool.directory):
            # Last chance to send what was spooled, within what is left of the flush timeout.
            self._watch.resent += drain_spool(self.settings, timeout=max(1.0, deadline - time.monotonic()),
                                        framing=self._framing).sent
        report = self.report()
        left = list_segments(self._spool.directory)
        msg = "publisher closed: %d delivered, %d spooled (in %s), %d dropped; %d re-sent from the spool"
        args: tuple[Any, ...] = (report.delivered, report.spooled, self._spool.directory, report.dropped,
                                 self._watch.resent)
        if left:
            _log.warning(msg + "; %d spool segments wait for `predstream spool drain`", *args, len(left))
        elif report.dropped:
            _log.warning(msg, *args)
        else:
            _log.info(msg, *args)
        return report

    def report(self) -> PublishReport:
        return PublishReport(self._delivered, self._spooled, self._dropped, self._pending())

    def stats(self) -> PublisherStats:
        """Counters, readable at any time from any thread."""
        return PublisherStats(
            self._delivered, self._spooled, self._dropped, self._pending(),
            published=self._published, resent=self._watch.resent, producer_replacements=self._replacements,
            broker_reachable=not self._watch.broker_down, spool_dir=str(self._spool.directory),
            registry_reachable=self._watch.registry_state != "down",
        )

    @property
    def spool(self) -> Spool:
        return self._spool

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _pending(self) -> int:
        return max(0, self._published - self._delivered - self._spooled - self._dropped)

    # -- sender thread -----------------------------------------------------------

    def _new_producer(self) -> Producer:
        return Producer(producer_config(self.settings, self._client_id, error_cb=self._on_error,
                                        on_delivery=self._on_delivery))

    def _send_loop(self) -> None:
        while True:
            try:
                busy = self._send_batch()
                self._producer.poll(0 if busy else _IDLE_POLL_S)
                if self._replace_reason is not None:
                    self._replace_producer()
                if self._watch.recovered.is_set():
                    self._watch.recovered.clear()
                    self._replace_reason = "the broker is reachable again after an outage"
                    self._replace_producer()
                    self._watch.broker_down = False
                self._spool.sync()
                if self._flushes:
                    self._serve_flushes()
                if self._stop.is_set() and not self._queue:
                    break
            except Exception:  # never die silently: the training loop keeps publishing
                _log.exception("publisher: sender error (continuing)")
                time.sleep(0.1)
        self._spool_leftovers()

    def _send_batch(self, limit: int = _BATCH) -> int:
        q = self._queue
        if self._watch.registry_state == "pending" and not self._watch.broker_down:
            return 0  # a moment: the watcher is registering the schema (a flush deadline spools them)
        n = 0
        while q and n < limit:
            event = q.popleft()
            n += 1
            if not n % _YIELD_EVERY:
                time.sleep(0)  # lets a waiting training thread take the GIL now, not in 5 ms
            frame = self._encode(event)
            if frame is not None:
                self._route(event, frame)
        return n

    def _encode(self, event: PredictionEvent) -> bytes | None:
        try:
            frame = self._encoder.encode(event)
        except Exception as exc:
            self._drop(f"event {event.event_id} could not be encoded: {type(exc).__name__}: {exc}"[:300])
            return None
        if len(frame) > MAX_EVENT_BYTES:
            self._drop(f"event {event.event_id} is {len(frame)} bytes encoded; the limit is {MAX_EVENT_BYTES}")
            return None
        return frame

    def _drop(self, why: str) -> None:
        self._dropped += 1
        _log.error("publisher: dropped an event: %s", why)

    def _route(self, event: PredictionEvent, frame: bytes) -> None:
        if self._watch.broker_down:
            self._to_spool(frame)
            return
        spooled = frame  # the spool keeps the single-object frame, which needs no registry
        if self._framing is not None:
            up = self._watch.registry_state == "up"
            confluent = self._framing.to_confluent(frame, register=False) if up else None
            if confluent is None:  # the registry has not answered (yet): wait in the spool
                self._to_spool(frame)
                return
            frame = confluent
        cache = self._header_cache
        ref = frame_header(frame)  # magic + schema reference
        schema = cache.get(ref) or cache.setdefault(ref, schema_header(frame).encode())
        headers: list[tuple[str, str | bytes | None]] = [
            (Headers.SCHEMA, schema),
            (Headers.JOB_ID, cache.get(event.job_id) or cache.setdefault(event.job_id, event.job_id.encode())),
            (Headers.EVENT_ID, event.event_id.encode()),
        ]
        try:
            self._producer.produce(self.topic, frame, message_key(event.prompt_id), headers=headers)
        except BufferError:
            self._warn_once("queue-full", "publisher: librdkafka's queue is full (%d messages): spooling new events",
                            self.settings.queue_max_messages)
            self._to_spool(spooled)
            return
        except KafkaException as exc:
            self._to_spool(spooled)
            self._replace_reason = f"produce failed: {exc.args[0].str() if exc.args else exc}"
            return
        self._inflight += 1

    def _to_spool(self, frame: bytes) -> None:
        if self._framing is not None:
            frame = self._framing.to_single_object(frame)  # e.g. a failed delivery's Confluent frame
        if self._spool.append(frame):
            self._spooled += 1
        else:
            self._dropped += 1

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        self._inflight -= 1
        if err is None:
            self._delivered += 1
            self._warned.discard("delivery")
            return
        frame = msg.value()
        if frame is not None:  # always: the publisher sends no empty message
            self._to_spool(frame)
        if err.code() not in PURGED and not self._retiring:
            self._warn_once("delivery", "publisher: delivery failed (%s): spooling undelivered events and "
                            "starting a fresh producer", err.str())
            self._replace_reason = f"delivery failed: {err.name()}"

    def _on_error(self, err: KafkaError) -> None:
        code = err.code()
        if self._retiring:
            return  # the producer being replaced: its messages are spooled already
        if err.fatal():
            _log.error("publisher: fatal producer error (%s): starting a fresh producer; "
                       "undelivered events are spooled", err.str())
            self._replace_reason = f"fatal error: {err.name()}"
        elif code == KafkaError._ALL_BROKERS_DOWN:
            self._watch.unreachable(err.str())
        elif code == KafkaError._TRANSPORT:
            self._watch.probe()  # maybe only one connection; the watcher finds out
        else:
            self._warn_once(f"error:{code}", "publisher: Kafka client error: %s", err.str())

    def _warn_once(self, key: str, msg: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            _log.warning(msg, *args)

    def _replace_producer(self) -> None:
        reason, self._replace_reason = self._replace_reason, None
        old = self._producer
        self._producer = self._new_producer()
        self._replacements += 1
        before = self._spooled
        self._retiring = True
        try:
            try:
                old.purge(in_queue=True, in_flight=True, blocking=False)
            except KafkaException:
                pass
            deadline = time.monotonic() + 5.0
            # Every in-flight message is the old producer's (the new one has sent nothing yet).
            while self._inflight > 0 and time.monotonic() < deadline:
                old.poll(0.05)  # serves the purged messages' reports: each one is spooled once
        finally:
            self._retiring = False
        if self._inflight > 0:
            _log.error("publisher: the replaced producer did not report %d messages", self._inflight)
        _log.info("publisher: fresh producer started (%s); %d undelivered events spooled", reason,
                  self._spooled - before)
        self._inflight = 0

    def _serve_flushes(self) -> None:
        req = self._flushes[0]
        if not self._queue and self._inflight <= 0:
            pass
        elif time.monotonic() >= req.deadline or self._watch.broker_down:
            # past the deadline, or nothing can be delivered now: spool instead of waiting
            while self._queue:  # the deadline passed: everything still here goes to the spool
                event = self._queue.popleft()
                frame = self._encode(event)
                if frame is not None:
                    self._to_spool(frame)
            if self._inflight > 0:
                self._replace_reason = "flush deadline reached"
                self._replace_producer()
            self._spool.sync()
        else:
            return
        self._flushes.popleft()
        req.done.set()

    def _spool_leftovers(self) -> None:
        while self._queue:
            event = self._queue.popleft()
            frame = self._encode(event)
            if frame is not None:
                self._to_spool(frame)
        if self._inflight > 0 and threading.current_thread() is self._sender:
            self._replace_reason = "closing"
            self._replace_producer()
        self._spool.sync()

    def __repr__(self) -> str:
        return f"Publisher(topic={self.topic!r}, {self.report()})"
