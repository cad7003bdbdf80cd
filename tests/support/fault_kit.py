"""Helpers of the fault suite: many events sent fast, consumer processes to kill, row audits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from predstream.schemas.codec import SingleObjectEncoder
from predstream.schemas.event import PredictionEvent
from predstream.schemas.transport import Headers, message_key

from .consumer_kit import consumer_env


def frames(events: Iterable[PredictionEvent]) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """(key, value, headers) of each event, encoded once (single-object framing)."""
    enc = SingleObjectEncoder()
    ref = enc.schema_ref.encode()
    return [(message_key(e.prompt_id), enc.encode(e), [(Headers.SCHEMA, ref), (Headers.EVENT_ID, e.event_id.encode())])
            for e in events]


def produce_fast(bootstrap: str, topic: str, messages: Sequence[tuple[bytes | None, bytes | None, list | None]],
                 timeout: float = 60.0) -> int:
    """Produce pre-encoded messages in big batches; assert every one was acknowledged."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.num.messages": 10_000,
                         "batch.size": 1_000_000, "compression.type": "lz4", "acks": "all",
                         "queue.buffering.max.messages": 200_000})
    failed: list[Any] = []

    def _report(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(err)

    for key, value, headers in messages:
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers, on_delivery=_report)
                break
            except BufferError:
                producer.poll(0.05)
    left = producer.flush(timeout)
    assert left == 0 and not failed, f"{left} undelivered, errors: {failed[:3]}"
    return len(messages)


@dataclass(frozen=True)
class Audit:
    """What ``training_predictions`` holds, counted by event identity."""

    rows: int
    distinct: int
    missing: int  #: expected event ids without a row
    unexpected: int  #: rows whose event id was not expected

    @property
    def exact(self) -> bool:
        return self.missing == 0 and self.unexpected == 0 and self.rows == self.distinct


def audit(database_url: str, expected_ids: Iterable[str]) -> Audit:
    import psycopg

    expected = set(expected_ids)
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        ids = [r[0] for r in conn.execute("SELECT event_id FROM training_predictions")]
    present = set(ids)
    return Audit(len(ids), len(present), len(expected - present), len(present - expected))


def row_count(database_url: str) -> int:
    import psycopg

    with psycopg.connect(database_url, connect_timeout=5) as conn:
        return conn.execute("SELECT count(*) FROM training_predictions").fetchone()[0]


def consumer_process(settings, log_path: Path, *extra_args: str, **env: str) -> subprocess.Popen:
    """``predstream consume`` (one worker, in the process itself) with ``settings`` in its environment."""
    environ = consumer_env(settings, **env)
    out = open(log_path, "ab")
    return subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "predstream"), "consume", *extra_args],
        env=environ, stdout=out, stderr=subprocess.STDOUT,
    )


def stop(proc: subprocess.Popen, timeout: float = 30.0) -> int:
    """SIGTERM, wait, and the exit code (SIGKILL if it does not stop)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            return -9
    return proc.returncode


class SteadyProducer(threading.Thread):
    """Produces pre-encoded messages at a steady pace over ``seconds`` in a background thread."""

    def __init__(self, bootstrap: str, topic: str, messages: Sequence[tuple], seconds: float, chunks: int = 40) -> None:
        super().__init__(name="steady-producer", daemon=True)
        self.bootstrap, self.topic, self.messages = bootstrap, topic, messages
        self.seconds, self.chunks = seconds, chunks
        self.error: BaseException | None = None
        self.sent = 0

    def run(self) -> None:
        try:
            size = -(-len(self.messages) // self.chunks)
            pause = self.seconds / self.chunks
            for i in range(0, len(self.messages), size):
                self.sent += produce_fast(self.bootstrap, self.topic, self.messages[i : i + size])
                time.sleep(pause)
        except BaseException as exc:  # surfaced by finish()
            self.error = exc

    def finish(self, timeout: float = 120.0) -> int:
        self.join(timeout)
        assert not self.is_alive(), "the producer thread did not finish"
        if self.error is not None:
            raise self.error
        return self.sent
