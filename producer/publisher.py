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
* the **watcher** probes the broker (a metadata request) while it is unreachable and,
  once it answers again, re-sends the spool (:func:`drain_spool`) when
  ``settings.spool_auto_drain`` is on. With a schema registry configured it also registers
  the event schema (:mod:`predstream.producer.registry`), and retries while the registry does not
  answer: meanwhile events are spooled, as during a broker outage, and re-sent in the
  Confluent framing once it answers.

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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from predstream.schemas.codec import Decoder, SingleObjectEncoder
from predstream.schemas.errors import RegistryUnavailableError, UnknownSchemaError
from predstream.schemas.event import MAX_EVENT_BYTES, PredictionEvent
from predstream.schemas.transport import Headers, message_key

from .errors import PublisherClosedError
from .registry import RegistryFraming, schema_header
from .settings import ProducerSettings
from .spool import Spool, claim, list_segments

__all__ = ["Publisher", "PublishReport", "PublisherStats", "DrainReport", "drain_spool"]

_log = logging.getLogger(__name__)
_rdkafka_log = logging.getLogger("predstream.librdkafka")

#: Pause of the sender when it has nothing to do (also the delivery-report latency).
_IDLE_POLL_S = 0.01
#: Events the sender takes from the queue before serving delivery reports again.
_BATCH = 1000
#: The sender releases the GIL this often while encoding a backlog (publish() stays fast).
_YIELD_EVERY = 16
#: How often the watcher probes an unreachable broker / looks for spooled events.
_PROBE_INTERVAL_S = 1.0
_DRAIN_CHECK_INTERVAL_S = 2.0
_PURGED = (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT)


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


@dataclass(frozen=True)
class DrainReport:
    """What one :func:`drain_spool` did."""

    sent: int = 0  #: records delivered and removed from the spool
    left: int = 0  #: records it tried and could not deliver (still in the spool)
    segments_done: int = 0  #: segments emptied and deleted
    segments_busy: int = 0  #: skipped: still being written, or another drainer has them
    segments_damaged: int = 0  #: segments with a damaged tail (good records were sent)
    segments_untried: int = 0  #: not reached (stopped, deadline, or the broker failed)
    registry_error: str | None = None  #: why it stopped when the schema registry did not answer

    def __str__(self) -> str:
        parts = [f"{self.sent} records re-sent", f"{self.segments_done} segments removed"]
        if self.left:
            parts.append(f"{self.left} records undelivered (kept)")
        if self.segments_untried:
            parts.append(f"{self.segments_untried} segments not tried (kept)")
        if self.segments_busy:
            parts.append(f"{self.segments_busy} segments busy (being written or drained elsewhere)")
        if self.segments_damaged:
            parts.append(f"{self.segments_damaged} segments had a damaged tail (see the warnings)")
        if self.registry_error:
            parts.append("stopped: the schema registry does not answer")
        return ", ".join(parts)


class _LibrdkafkaLog:
    """librdkafka's own log lines, at DEBUG: outages are reported once by the publisher."""

    def log(self, level: int, msg: str, *args: Any) -> None:
        _rdkafka_log.debug(msg, *args)


def _producer_config(settings: ProducerSettings, client_id: str, **callbacks: Any) -> dict[str, Any]:
    return settings.kafka_config(
        **{
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": settings.compression,
            "queue.buffering.max.messages": settings.queue_max_messages,
            "message.timeout.ms": settings.message_timeout_ms,
            "linger.ms": 20,
            "client.id": client_id,
            "logger": _LibrdkafkaLog(),
            **callbacks,
        }
    )


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

    def __init__(self, settings: ProducerSettings, *, job_id: str | None = None, registry_client: Any = None) -> None:
        self.settings = settings
        self.topic = settings.topic
        self._client_id = f"predstream-{job_id or 'publisher'}-{os.getpid()}"[:200]
        self._encoder = SingleObjectEncoder()  # what the spool keeps: needs no registry
        self._framing = RegistryFraming.from_settings(settings, client=registry_client)
        # None: no registry; "pending": first registration under way; "up"; "down"
        self._registry_state: str | None = None if self._framing is None else "pending"
        self._spool = Spool.from_settings(settings)
        self._queue: deque[PredictionEvent] = deque()
        self._closed = False
        # counters: each written by one thread only (publish: the caller; others: the sender)
        self._published = 0
        self._delivered = 0
        self._spooled = 0
        self._dropped = 0
        self._inflight = 0
        self._resent = 0
        self._replacements = 0
        # broker state, shared by sender and watcher
        self._broker_down = False
        self._recovered = threading.Event()
        self._probe_now = threading.Event()
        self._replace_reason: str | None = None
        self._retiring = False  # True while the old producer's last reports are served
        self._warned: set[str] = set()
        self._flushes: deque[_FlushRequest] = deque()
        self._stop = threading.Event()
        self._header_cache: dict[str | bytes, bytes] = {}  # job ids and framing headers
        self._producer = self._new_producer()
        self._sender = threading.Thread(target=self._send_loop, name="predstream-publisher-send", daemon=True)
        self._watcher = threading.Thread(target=self._watch_loop, name="predstream-publisher-watch", daemon=True)
        self._sender.start()
        self._watcher.start()
        if self._framing is not None:
            self._probe_now.set()  # the watcher registers the schema at once
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
        self._probe_now.set()  # wakes the watcher
        self._sender.join(30)
        self._watcher.join(60)
        for name, t in (("sender", self._sender), ("watcher", self._watcher)):
            if t.is_alive():
                _log.error("publisher: the %s thread did not stop", name)
        self._spool_leftovers()  # events published while close() ran
        self._spool.close()
        if (self.settings.spool_auto_drain and not self._broker_down and self._registry_state != "down"
                and list_segments(self._spool.directory)):
            # Last chance to send what was spooled, within what is left of the flush timeout.
            self._resent += drain_spool(self.settings, timeout=max(1.0, deadline - time.monotonic()),
                                        framing=self._framing).sent
        report = self.report()
        left = list_segments(self._spool.directory)
        msg = "publisher closed: %d delivered, %d spooled (in %s), %d dropped; %d re-sent from the spool"
        args: tuple[Any, ...] = (report.delivered, report.spooled, self._spool.directory, report.dropped, self._resent)
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
            published=self._published, resent=self._resent, producer_replacements=self._replacements,
            broker_reachable=not self._broker_down, spool_dir=str(self._spool.directory),
            registry_reachable=self._registry_state != "down",
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
        return Producer(_producer_config(self.settings, self._client_id, error_cb=self._on_error, on_delivery=self._on_delivery))

    def _send_loop(self) -> None:
        while True:
            try:
                busy = self._send_batch()
                self._producer.poll(0 if busy else _IDLE_POLL_S)
                if self._replace_reason is not None:
                    self._replace_producer()
                if self._recovered.is_set():
                    self._recovered.clear()
                    self._replace_reason = "the broker is reachable again after an outage"
                    self._replace_producer()
                    self._broker_down = False
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
        if self._registry_state == "pending" and not self._broker_down:
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
        if self._broker_down:
            self._to_spool(frame)
            return
        spooled = frame  # the spool keeps the single-object frame, which needs no registry
        if self._framing is not None:
            confluent = self._framing.to_confluent(frame, register=False) if self._registry_state == "up" else None
            if confluent is None:  # the registry has not answered (yet): wait in the spool
                self._to_spool(frame)
                return
            frame = confluent
        cache = self._header_cache
        ref = frame[:5] if frame[:1] == b"\x00" else frame[:10]  # the framing's header: magic + schema
        schema = cache.get(ref) or cache.setdefault(ref, schema_header(frame).encode())
        headers = [
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

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        self._inflight -= 1
        if err is None:
            self._delivered += 1
            self._warned.discard("delivery")
            return
        self._to_spool(msg.value())
        if err.code() not in _PURGED and not self._retiring:
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
            if not self._broker_down:
                self._broker_down = True
                _log.warning("publisher: Kafka is unreachable (%s): new events go to the spool %s until it answers",
                             err.str(), self._spool.directory)
                self._probe_now.set()
        elif code == KafkaError._TRANSPORT:
            self._probe_now.set()  # maybe only one connection; the watcher finds out
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
        _log.info("publisher: fresh producer started (%s); %d undelivered events spooled", reason, self._spooled - before)
        self._inflight = 0

    def _serve_flushes(self) -> None:
        req = self._flushes[0]
        if not self._queue and self._inflight <= 0:
            pass
        elif time.monotonic() >= req.deadline or self._broker_down:
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

    # -- watcher thread ----------------------------------------------------------

    def _watch_loop(self) -> None:
        admin = None
        next_drain = time.monotonic() + _DRAIN_CHECK_INTERVAL_S
        backoff = _DRAIN_CHECK_INTERVAL_S
        while not self._stop.is_set():
            self._probe_now.wait(_PROBE_INTERVAL_S)
            if self._stop.is_set():
                break
            try:
                if self._framing is not None and self._registry_state != "up":
                    if self._register_schema():
                        next_drain = time.monotonic() + 0.2
                if self._probe_now.is_set() or self._broker_down:
                    self._probe_now.clear()
                    if admin is None:
                        admin = _probe_client(self.settings, self._client_id)
                    reachable = _broker_answers(admin)
                    if reachable and self._broker_down and not self._recovered.is_set():
                        _log.info("publisher: Kafka answers again; spooled events will be re-sent")
                        self._recovered.set()
                        next_drain = time.monotonic() + 0.2
                    elif not reachable and not self._broker_down:
                        self._broker_down = True
                        _log.warning("publisher: Kafka is unreachable: new events go to the spool %s until it answers",
                                     self._spool.directory)
                if (self.settings.spool_auto_drain and not self._broker_down and not self._recovered.is_set()
                        and self._registry_state != "down" and time.monotonic() >= next_drain):
                    next_drain = time.monotonic() + backoff
                    if list_segments(self._spool.directory):
                        self._spool.seal()
                        report = drain_spool(self.settings, timeout=max(10.0, self.settings.message_timeout_ms / 1000),
                                             stop=self._stop, framing=self._framing)
                        self._resent += report.sent
                        if report.sent:
                            _log.info("publisher: auto-drain: %s", report)
                        backoff = _DRAIN_CHECK_INTERVAL_S if not report.left else min(backoff * 2, 60.0)
            except Exception:
                _log.exception("publisher: watcher error (continuing)")

    def _register_schema(self) -> bool:
        """Register the event schema (watcher thread); True when the registry just answered."""
        assert self._framing is not None
        try:
            schema_id = self._framing.register(self._framing.current_fingerprint())
        except RegistryUnavailableError as exc:
            if self._registry_state != "down":
                _log.warning("publisher: %s: new events go to the spool %s until it answers", exc,
                             self._spool.directory)
            self._registry_state = "down"
            return False
        if self._registry_state == "down":
            _log.info("publisher: the schema registry answers again (schema id %d); spooled events will be re-sent",
                      schema_id)
        self._registry_state = "up"
        return True

    def __repr__(self) -> str:
        return f"Publisher(topic={self.topic!r}, {self.report()})"


def _probe_client(settings: ProducerSettings, client_id: str) -> Any:
    from confluent_kafka.admin import AdminClient

    conf = settings.kafka_config(**{"client.id": client_id + "-probe", "logger": _LibrdkafkaLog(),
                                    "error_cb": lambda err: None})
    return AdminClient(conf)


def _broker_answers(admin: Any, timeout: float = 1.0) -> bool:
    """A lightweight metadata request (all topics: naming one could auto-create it)."""
    try:
        md = admin.list_topics(timeout=timeout)
        return bool(md.brokers)
    except KafkaException:
        return False
    finally:
        admin.poll(0)


# -- draining the spool --------------------------------------------------------


def _frame_headers(frame: bytes, decoder: Decoder) -> tuple[bytes | None, list[tuple[str, bytes]]]:
    """Key and headers of a spooled frame, read from the frame itself."""
    schema = schema_header(frame)
    record = decoder.decode_record(frame)
    return message_key(record["prompt_id"]), [
        (Headers.SCHEMA, schema.encode()),
        (Headers.JOB_ID, record["job_id"].encode()),
        (Headers.EVENT_ID, record["event_id"].encode()),
    ]


def drain_spool(
    settings: ProducerSettings,
    timeout: float | None = None,
    *,
    stop: threading.Event | None = None,
    spool_dir: str | Path | None = None,
    progress: Callable[[Path, int, int], None] | None = None,
    framing: RegistryFraming | None = None,
) -> DrainReport:
    """Re-send every spooled record to ``settings.topic``, oldest segment first.

    With ``settings.schema_registry_url`` set, single-object records are sent in the
    Confluent framing (``framing``: a publisher's own, else one made from the settings);
    while the registry does not answer the drain stops and keeps them, as it does when the
    broker fails (``DrainReport.registry_error`` says why).

    A segment is deleted only after all its records are acknowledged; one partly delivered
    is rewritten with the undelivered records only. Segments still being written, or held
    by another drainer, are skipped. Stops at the first segment it cannot deliver (the
    broker is likely unreachable again), at ``timeout`` seconds, or when ``stop`` is set.
    Safe to run twice or concurrently (a resent duplicate is harmless, but is avoided).
    ``progress(path, sent, undelivered)`` is called after each segment.
    """
    directory = Path(spool_dir or settings.spool_dir)
    segments = list_segments(directory)
    if not segments:
        return DrainReport()
    deadline = None if timeout is None else time.monotonic() + timeout
    if framing is None:
        framing = RegistryFraming.from_settings(settings)
    # reads the key from each record; the registry (bounded client) only for Confluent-framed ones
    decoder = Decoder(client=framing.client) if framing is not None else Decoder()
    registry_error: list[str] = []
    down = threading.Event()

    def on_error(err: KafkaError) -> None:
        if err.code() == KafkaError._ALL_BROKERS_DOWN or err.fatal():
            down.set()

    if timeout is not None and timeout * 1000 > settings.message_timeout_ms:
        # The drain has its own deadline (it purges what is left then): don't give up sooner.
        settings = settings.model_copy(update={"message_timeout_ms": int(timeout * 1000)})
    producer = Producer(_producer_config(settings, f"predstream-drain-{os.getpid()}", error_cb=on_error))
    sent = left = done = busy = damaged = 0
    untried = 0
    try:
        for i, path in enumerate(segments):
            if (stop is not None and stop.is_set()) or down.is_set() or (deadline and time.monotonic() >= deadline):
                untried = len(segments) - i
                break
            c = claim(path)
            if c is None:
                busy += 1
                continue
            with c:
                damaged += c.contents.problem is not None
                acked = _send_all(producer, settings.topic, c.records, decoder, deadline, stop, down,
                                  framing, registry_error)
                undelivered = [f for f, ok in zip(c.records, acked) if not ok]
                c.keep(undelivered)
            sent += len(c.records) - len(undelivered)
            left += len(undelivered)
            done += not undelivered
            if progress is not None:
                progress(path, len(c.records) - len(undelivered), len(undelivered))
            if undelivered:
                untried = len(segments) - i - 1
                break
    finally:
        producer.purge()
        producer.poll(0)
    if registry_error:
        _log.warning("spool drain: %s; the spool is kept until it answers", registry_error[0])
    return DrainReport(sent, left, done, busy, damaged, untried, registry_error[0] if registry_error else None)


def _reframe(framing: RegistryFraming, frame: bytes) -> bytes:
    """A spooled single-object record in the Confluent framing (registering its schema if need
    be); a record of a schema we do not ship goes as it is (the consumer judges it)."""
    try:
        return framing.to_confluent(frame) or frame
    except UnknownSchemaError:
        return frame


def _send_all(producer: Producer, topic: str, records: list[bytes], decoder: Decoder,
              deadline: float | None, stop: threading.Event | None, down: threading.Event,
              framing: RegistryFraming | None = None, registry_error: list[str] | None = None) -> list[bool]:
    acked = [False] * len(records)
    outstanding = [0]

    def report(i: int) -> Callable[[KafkaError | None, Any], None]:
        def cb(err: KafkaError | None, msg: Any) -> None:
            outstanding[0] -= 1
            if err is None:
                acked[i] = True
            elif err.code() not in _PURGED:
                down.set()
        return cb

    def halted() -> bool:
        return (down.is_set() or (stop is not None and stop.is_set())
                or (deadline is not None and time.monotonic() >= deadline))

    for i, frame in enumerate(records):
        try:
            out = frame if framing is None else _reframe(framing, frame)
            key, headers = _frame_headers(frame, decoder)  # read from the record as spooled
            if out is not frame:
                headers[0] = (Headers.SCHEMA, schema_header(out).encode())
        except RegistryUnavailableError as exc:  # not the record's fault: stop, keep the rest
            if registry_error is not None:
                registry_error.append(str(exc))
            down.set()
            break
        except Exception as exc:
            _log.warning("spool drain: record %d does not decode (%s); sending it without key", i, exc)
            key, headers = None, []
        frame = out
        while True:
            try:
                producer.produce(topic, frame, key, headers=headers, on_delivery=report(i))
                outstanding[0] += 1
                break
            except BufferError:
                producer.poll(0.05)
                if halted():
                    break
        if halted():
            break
    while outstanding[0] > 0 and not halted():
        producer.poll(0.05)
    if outstanding[0] > 0:
        producer.purge(in_queue=True, in_flight=True, blocking=False)
        end = time.monotonic() + 5
        while outstanding[0] > 0 and time.monotonic() < end:
            producer.poll(0.05)
    return acked
