"""Draining the spool: re-sending spooled events to Kafka once it takes them again.

:func:`drain_spool` is what the publisher's auto-drain and ``predstream spool drain`` run. It
takes the closed segments of a spool folder (:mod:`predstream.producer.spool`), oldest first,
one at a time under the segment's lock (:func:`~predstream.producer.spool.claim`), and sends
their records with a producer of its own. A segment is deleted once every record in it was
acknowledged, or rewritten with only the undelivered ones; the drain stops at the first
segment it cannot deliver, at its deadline, or when asked to.

Each record is sent with the key and headers the publisher would have given it, read from
the record itself (:func:`frame_headers`). With a schema registry configured, the spool's
single-object records go out in the Confluent framing (:mod:`predstream.producer.registry`);
while the registry does not answer, they stay in the spool.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from predstream.schemas.codec import Decoder
from predstream.schemas.errors import RegistryUnavailableError, UnknownSchemaError
from predstream.schemas.transport import Headers, message_key

from ._kafka import PURGED, producer_config
from .registry import RegistryFraming, schema_header
from .settings import ProducerSettings
from .spool import claim, list_segments

__all__ = ["DrainReport", "drain_spool", "frame_headers"]

_log = logging.getLogger(__name__)


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



def frame_headers(frame: bytes, decoder: Decoder) -> tuple[bytes | None, list[tuple[str, str | bytes | None]]]:
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
    producer = Producer(producer_config(settings, f"predstream-drain-{os.getpid()}", error_cb=on_error))
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
                undelivered = [f for f, ok in zip(c.records, acked, strict=True) if not ok]
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
        def cb(err: KafkaError | None, msg: Message) -> None:
            outstanding[0] -= 1
            if err is None:
                acked[i] = True
            elif err.code() not in PURGED:
                down.set()
        return cb

    def halted() -> bool:
        return (down.is_set() or (stop is not None and stop.is_set())
                or (deadline is not None and time.monotonic() >= deadline))

    for i, frame in enumerate(records):
        try:
            out = frame if framing is None else _reframe(framing, frame)
            key, headers = frame_headers(frame, decoder)  # read from the record as spooled
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
