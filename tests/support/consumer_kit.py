"""Helpers shared by the consumer tests: producing raw messages, reading a topic, counting
rows, running workers."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from predstream.schemas.codec import SingleObjectEncoder
from predstream.schemas.event import PredictionEvent
from predstream.schemas.transport import Headers, message_key


def encoded(event: PredictionEvent, encoder: SingleObjectEncoder | None = None) -> tuple[bytes, bytes, list]:
    enc = encoder or SingleObjectEncoder()
    headers = [(Headers.SCHEMA, enc.schema_ref.encode()), (Headers.EVENT_ID, event.event_id.encode())]
    return message_key(event.prompt_id), enc.encode(event), headers


def produce(bootstrap: str, topic: str, messages: Iterable[tuple[bytes | None, bytes | None, list | None]]) -> int:
    """Produce (key, value, headers) messages and wait until all are delivered."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    errors: list[Any] = []
    n = 0
    for key, value, headers in messages:
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers,
                                 on_delivery=lambda err, _m: errors.append(err) if err else None)
                break
            except BufferError:
                producer.poll(0.1)
        n += 1
    left = producer.flush(30)
    assert left == 0 and not errors, f"{left} undelivered, errors: {errors[:3]}"
    return n


def produce_events(bootstrap: str, topic: str, events: Iterable[PredictionEvent]) -> int:
    enc = SingleObjectEncoder()
    return produce(bootstrap, topic, (encoded(e, enc) for e in events))


def count_rows(database_url: str, where: str = "event_id IS NOT NULL") -> int:
    import psycopg

    with psycopg.connect(database_url, connect_timeout=5) as conn:
        return conn.execute(f"SELECT count(*) FROM training_predictions WHERE {where}").fetchone()[0]


def rows_reach(database_url: str, n: int) -> Callable[[], bool]:
    return lambda: count_rows(database_url) >= n


@contextlib.contextmanager
def worker_thread(settings, **kwargs: Any) -> Iterator[Any]:
    """Run a Worker in a thread; yield it; stop it (clean shutdown) on exit."""
    from predstream.consumer.worker import Worker

    stop = threading.Event()
    worker = Worker(settings, stop_event=stop, **kwargs)
    failure: list[BaseException] = []

    def _run() -> None:
        try:
            worker.run()
        except BaseException as exc:  # surfaced to the test below
            failure.append(exc)

    thread = threading.Thread(target=_run, name="test-worker", daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        stop.set()
        thread.join(settings.shutdown_timeout_s + 15)
        assert not thread.is_alive(), "worker did not stop"
    if failure:
        raise failure[0]


def consumer_env(settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDSTREAM_")}
    env.update(
        PREDSTREAM_HOME=os.environ.get("PREDSTREAM_HOME", ""),
        PREDSTREAM_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        PREDSTREAM_DATABASE_URL=settings.database_url,
        PREDSTREAM_TOPIC=settings.topic,
        PREDSTREAM_GROUP_ID=settings.group_id,
        PREDSTREAM_SESSION_TIMEOUT_MS=str(settings.session_timeout_ms),
        PREDSTREAM_BATCH_MAX_WAIT_MS=str(settings.batch_max_wait_ms),
        PREDSTREAM_SHUTDOWN_TIMEOUT_S=str(settings.shutdown_timeout_s),
        PREDSTREAM_BATCH_SIZE=str(settings.batch_size),
        PREDSTREAM_DB_MAX_BACKOFF_S=str(settings.db_max_backoff_s),
        PYTHONUNBUFFERED="1",
    )
    if settings.kafka_options:
        env["PREDSTREAM_KAFKA_OPTIONS"] = json.dumps(settings.kafka_options)
    env.update(extra)
    return env


def start_cli_consumer(settings, *args: str, log_path=None, **env: str) -> subprocess.Popen:
    """``predstream consume ARGS`` in a subprocess, stderr to ``log_path``."""
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL
    return subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "predstream"), "consume", *args],
        env=consumer_env(settings, **env), stdout=out, stderr=subprocess.STDOUT,
    )


def read_events(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list:
    """Every event on ``topic`` (all partitions, from the start) once ``expected`` arrived."""
    from confluent_kafka import Consumer, TopicPartition

    from predstream.schemas import Decoder

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader", "enable.auto.commit": False})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        decoder, events, deadline = Decoder(), [], time.monotonic() + timeout
        while len(events) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                events.append(decoder.decode(msg.value()))
        # a short extra wait: more events than expected would be a bug too
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                events.append(decoder.decode(msg.value()))
        return events
    finally:
        consumer.close()
