"""The publisher with a schema registry: Confluent framing, and a registry outage that spools
instead of dropping. Against a real HTTP registry double (tests/support/registry_double.py) and the
in-process ``mock://`` registry."""

from __future__ import annotations

import time

import pytest
from typer.testing import CliRunner

from predstream.cli import app
from predstream.producer import Publisher, drain_spool
from predstream.producer.registry import RegistryFraming
from predstream.producer.settings import ProducerSettings
from predstream.producer.spool import list_segments
from predstream.schemas.codec import ConfluentEncoder, Decoder, SingleObjectEncoder, parse_frame
from predstream.schemas.spoolfile import read_spool
from predstream.schemas.transport import Headers
from support import make_events
from support.registry_double import RegistryDouble

pytestmark = pytest.mark.timeout(120)


def _messages(bootstrap: str, topic: str, expected: int, timeout: float = 20.0) -> list:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "reg-reader", "enable.auto.commit": False})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, -2) for p in parts])
        out: list = []
        deadline = time.monotonic() + timeout
        while len(out) < expected and time.monotonic() < deadline:
            out.extend(m for m in consumer.consume(100, 0.3) if not m.error())
        out.extend(m for m in consumer.consume(100, 0.5) if not m.error())  # more would be a bug
        return out
    finally:
        consumer.close()


def test_the_confluent_frame_is_what_confluent_kafkas_serializer_writes():
    event = make_events(1, job="job-reg")[0]
    with RegistryDouble() as registry:
        theirs = ConfluentEncoder(registry.url, "training.predictions").encode(event)
        ours = RegistryFraming(registry.url, "training.predictions").to_confluent(SingleObjectEncoder().encode(event))
        assert ours == theirs and ours[:1] == b"\x00"
        assert Decoder(registry.url).decode(ours) == event
        assert registry.subjects == {"training.predictions-value": [1]}
    framing = RegistryFraming("mock://framing", "t")
    frame = framing.to_confluent(SingleObjectEncoder().encode(event))
    assert framing.to_single_object(frame) == SingleObjectEncoder().encode(event)  # and back, for the spool


@pytest.mark.integration
def test_a_mock_registry_publisher_delivers_confluent_frames(kafka_bootstrap, topic, tmp_path):
    from confluent_kafka.schema_registry import SchemaRegistryClient

    client = SchemaRegistryClient.new_client({"url": "mock://publisher"})
    settings = ProducerSettings(kafka_bootstrap=kafka_bootstrap, topic=topic, spool_dir=tmp_path / "spool",
                                schema_registry_url="mock://publisher")
    events = make_events(5, job="job-reg")
    with Publisher(settings, registry_client=client) as publisher:
        publisher.publish_many(events)
        assert publisher.flush(20).delivered == 5
        assert len([k for k in publisher._header_cache if isinstance(k, bytes)]) == 1  # one schema header, cached
    messages = _messages(kafka_bootstrap, topic, 5)
    assert len(messages) == 5
    assert {m.value()[:1] for m in messages} == {b"\x00"}
    assert {dict(m.headers())[Headers.SCHEMA] for m in messages} == {b"id:1"}
    decoder = Decoder(client=client)
    assert sorted((decoder.decode(m.value()) for m in messages), key=lambda e: e.sample_index) == events


@pytest.mark.integration
@pytest.mark.slow
def test_a_drain_while_the_registry_is_down_keeps_the_spool_and_says_why(kafka_bootstrap, topic, tmp_path, monkeypatch):
    registry = RegistryDouble().start()
    registry.stop()  # down from the start: the publisher cannot register the schema
    settings = ProducerSettings(kafka_bootstrap=kafka_bootstrap, topic=topic, spool_dir=tmp_path / "spool",
                                schema_registry_url=registry.url, spool_auto_drain=False, flush_timeout_s=10)
    publisher = Publisher(settings)
    publisher.publish_many(make_events(4, job="job-reg"))
    report = publisher.close()
    assert (report.delivered, report.spooled, report.dropped) == (0, 4, 0)
    records = [r for p in list_segments(settings.spool_dir) for r in read_spool(p).records]
    assert len(records) == 4 and {parse_frame(r).framing for r in records} == {"single-object"}  # no registry needed

    drained = drain_spool(settings, timeout=10)
    assert (drained.sent, drained.left, drained.segments_done) == (0, 4, 0)
    assert "did not register" in drained.registry_error
    for var, value in (("PREDSTREAM_KAFKA_BOOTSTRAP", kafka_bootstrap), ("PREDSTREAM_TOPIC", topic),
                       ("PREDSTREAM_SPOOL_DIR", str(settings.spool_dir)),
                       ("PREDSTREAM_SCHEMA_REGISTRY_URL", registry.url)):
        monkeypatch.setenv(var, value)
    result = CliRunner().invoke(app, ["spool", "drain", "--timeout", "10"])
    assert result.exit_code == 1 and "once the schema registry answers" in result.output, result.output
    assert len(list_segments(settings.spool_dir)) == 1

    registry.start()  # back, on the same port
    try:
        result = CliRunner().invoke(app, ["spool", "drain", "--timeout", "20"])
        assert result.exit_code == 0, result.output
    finally:
        registry.stop()
    messages = _messages(kafka_bootstrap, topic, 4)
    assert len(messages) == 4 and {m.value()[:1] for m in messages} == {b"\x00"}
    assert list_segments(settings.spool_dir) == []


@pytest.mark.integration
def test_a_worker_stores_registry_framed_events_and_transcodes_all_but_the_first_batch(
        consumer_settings, kafka_bootstrap, database_url, tmp_path):
    """Publisher -> registry framing -> the real broker -> a worker with the registry -> Postgres:
    every event stored as published, and every batch after the first (whose first message
    made the worker look the schema id up) transcoded straight into COPY rows."""
    import psycopg

    from support import wait_for
    from support.consumer_kit import rows_reach, worker_thread

    events = make_events(60, job="job-reg-worker")
    with RegistryDouble() as registry:
        producer = ProducerSettings(kafka_bootstrap=kafka_bootstrap, topic=consumer_settings.topic,
                                    spool_dir=tmp_path / "spool", schema_registry_url=registry.url)
        with Publisher(producer) as publisher:
            publisher.publish_many(events[:20])
            assert publisher.flush(20).delivered == 20
        settings = consumer_settings.model_copy(update={"schema_registry_url": registry.url, "batch_size": 20})
        with worker_thread(settings) as worker:
            wait_for(rows_reach(database_url, 20), 60, "the first 20 rows")
            with Publisher(producer) as publisher:
                publisher.publish_many(events[20:])
                assert publisher.flush(20).delivered == 40
            wait_for(rows_reach(database_url, 60), 60, "60 rows")
            transcoded = worker.metrics.registry.get_sample_value("predstream_events_transcoded_total")
        lookups = sum(n for path, n in registry.requests.items() if path.startswith("GET /schemas/ids"))
    # the worker's first batch (1 to 20 of the first 20, as they arrived) was decoded and
    # looked the schema id up; everything after it, the last 40 included, was transcoded
    assert 40 <= transcoded < 60, transcoded
    assert lookups == 1
    with psycopg.connect(database_url) as conn:
        stored = dict(conn.execute("SELECT event_id, prediction FROM training_predictions").fetchall())
    assert stored == {e.event_id: e.prediction for e in events}
