"""The publisher: training never waits, and every event is delivered or spooled, never lost."""

from __future__ import annotations

import os
import signal
import statistics
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition
from typer.testing import CliRunner

import predstream.producer.publisher as publisher_module
from predstream.producer import Publisher, drain_spool
from predstream.producer.errors import PublisherClosedError
from predstream.producer.settings import ProducerSettings
from predstream.producer.spool import Spool, list_segments
from predstream.schemas.codec import Decoder, SingleObjectEncoder
from predstream.schemas.spoolfile import read_spool
from predstream.schemas.transport import Headers
from support import make_events, wait_for

pytestmark = pytest.mark.timeout(120)


def spooled_ids(directory: Path) -> list[str]:
    decoder = Decoder()
    return [decoder.decode(r).event_id for p in list_segments(directory) for r in read_spool(p).records]


def consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[Any]:
    """Every message of ``topic`` (read from the start of each partition) once ``expected``
    arrived and a short quiet period passed; fewer if ``timeout`` runs out."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, -2) for p in partitions])  # -2: the beginning
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        quiet_until = None
        while time.monotonic() < deadline:
            batch = [m for m in consumer.consume(500, 0.5) if not m.error()]
            out.extend(batch)
            if len(out) >= expected:
                quiet_until = quiet_until or time.monotonic() + 1.0
                if time.monotonic() >= quiet_until:
                    break
        return out
    finally:
        consumer.close()


def event_ids(messages: list[Any]) -> Counter[str]:
    decoder = Decoder()
    return Counter(decoder.decode(m.value()).event_id for m in messages)


def publisher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("predstream-publisher")]


# -- unit: a fake librdkafka producer ------------------------------------------------------


class _Msg:
    def __init__(self, value: bytes) -> None:
        self._value = value

    def value(self) -> bytes:
        return self._value


class FakeProducer:
    """Holds produced messages until told to deliver, fail or report an error."""

    instances: list[FakeProducer] = []

    def __init__(self, conf: dict[str, Any]) -> None:
        self.error_cb = conf["error_cb"]
        self.on_delivery = conf["on_delivery"]
        self.held: list[bytes] = []
        self.reports: list[tuple[KafkaError | None, bytes]] = []
        self.errors: list[KafkaError] = []
        self.auto_deliver = False
        self.lock = threading.Lock()
        FakeProducer.instances.append(self)

    def produce(self, topic, value, key=None, headers=None):
        with self.lock:
            self.held.append(value)

    def deliver(self, n: int) -> None:
        with self.lock:
            done, self.held = self.held[:n], self.held[n:]
            self.reports += [(None, v) for v in done]

    def fail_all(self, code: int) -> None:
        with self.lock:
            self.reports += [(KafkaError(code), v) for v in self.held]
            self.held = []

    def poll(self, timeout: float = 0) -> int:
        with self.lock:
            if self.auto_deliver:
                self.reports += [(None, v) for v in self.held]
                self.held = []
            reports, self.reports = self.reports, []
            errors, self.errors = self.errors, []
        for err in errors:
            self.error_cb(err)
        for err, value in reports:
            self.on_delivery(err, _Msg(value))
        if not reports and not errors and timeout:
            time.sleep(min(timeout, 0.005))
        return len(reports)

    def purge(self, in_queue=True, in_flight=True, blocking=True) -> None:
        self.fail_all(KafkaError._PURGE_QUEUE)

    def __len__(self) -> int:
        return len(self.held) + len(self.reports)


@pytest.fixture
def fake_kafka(monkeypatch):
    FakeProducer.instances = []
    monkeypatch.setattr(publisher_module, "Producer", FakeProducer)
    return FakeProducer.instances


@pytest.fixture
def offline_settings(tmp_path):
    """Settings whose broker address has nothing behind it."""
    from predstream.local import free_port

    return ProducerSettings(kafka_bootstrap=f"127.0.0.1:{free_port()}", topic="t.unit", spool_dir=tmp_path / "spool",
                            message_timeout_ms=1000, spool_auto_drain=False)


def test_a_fatal_producer_error_replaces_the_producer_and_spools_what_was_in_flight(fake_kafka, offline_settings):
    events = make_events(10, job="job-pub")
    pub = Publisher(offline_settings, job_id="job-pub")
    try:
        pub.publish_many(events)
        wait_for(lambda: len(fake_kafka[0].held) == 10, what="10 messages in flight")
        fake_kafka[0].deliver(4)
        wait_for(lambda: pub.stats().delivered == 4, what="4 deliveries")
        fake_kafka[0].errors.append(KafkaError(KafkaError.UNKNOWN_PRODUCER_ID, "broker lost the producer id",
                                               fatal=True))
        wait_for(lambda: len(fake_kafka) == 2, what="a fresh producer")
        fake_kafka[1].auto_deliver = True
        more = make_events(5, start=100, job="job-pub")
        pub.publish_many(more)
        report = pub.close(timeout=5)
    finally:
        pub.close(timeout=1)
    assert (report.delivered, report.spooled, report.dropped, report.pending) == (9, 6, 0, 0)
    assert pub.stats().producer_replacements == 1
    assert sorted(spooled_ids(offline_settings.spool_dir)) == sorted(e.event_id for e in events[4:])


def test_timed_out_deliveries_are_spooled_once_and_the_producer_replaced(fake_kafka, offline_settings):
    events = make_events(8, job="job-pub")
    with Publisher(offline_settings) as pub:
        pub.publish_many(events)
        wait_for(lambda: len(fake_kafka[0].held) == 8, what="8 messages in flight")
        fake_kafka[0].fail_all(KafkaError._MSG_TIMED_OUT)
        wait_for(lambda: len(fake_kafka) == 2, what="a fresh producer")
        fake_kafka[1].auto_deliver = True
        pub.publish(make_events(1, start=50, job="job-pub")[0])
    assert pub.report() == publisher_module.PublishReport(delivered=1, spooled=8, dropped=0, pending=0)
    assert Counter(spooled_ids(offline_settings.spool_dir)) == Counter(e.event_id for e in events)


def test_while_all_brokers_are_down_new_events_go_straight_to_the_spool(fake_kafka, offline_settings):
    with Publisher(offline_settings) as pub:
        fake_kafka[0].errors.append(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
        wait_for(lambda: not pub.stats().broker_reachable, what="the outage to be noticed")
        pub.publish_many(make_events(20, job="job-pub"))
        wait_for(lambda: pub.stats().spooled == 20, what="20 spooled")
        assert fake_kafka[0].held == []
    assert len(spooled_ids(offline_settings.spool_dir)) == 20


def test_flush_spools_what_is_undelivered_at_the_deadline(fake_kafka, offline_settings):
    pub = Publisher(offline_settings)
    pub.publish_many(make_events(12, job="job-pub"))
    t0 = time.monotonic()
    report = pub.flush(timeout=0.5)
    assert 0.4 < time.monotonic() - t0 < 3
    assert (report.delivered, report.spooled, report.pending) == (0, 12, 0)
    pub.close(timeout=0.1)


def test_flush_with_the_broker_down_spools_what_is_in_flight_at_once(fake_kafka, offline_settings):
    pub = Publisher(offline_settings)
    pub.publish_many(make_events(6, job="job-pub"))
    wait_for(lambda: len(fake_kafka[0].held) == 6, what="6 messages in flight")
    fake_kafka[0].errors.append(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    wait_for(lambda: not pub.stats().broker_reachable, what="the outage to be noticed")
    t0 = time.monotonic()
    report = pub.flush(timeout=60)  # nothing can be delivered now: no reason to wait 60 s
    assert time.monotonic() - t0 < 10
    assert (report.delivered, report.spooled, report.pending) == (0, 6, 0)
    pub.close(timeout=0.1)


def test_close_stops_every_thread_and_later_publishes_are_refused(fake_kafka, offline_settings):
    before = len(publisher_threads())
    pub = Publisher(offline_settings)
    fake_kafka[0].auto_deliver = True
    pub.publish_many(make_events(3, job="job-pub"))
    with pytest.raises(TypeError, match="PredictionEvent"):
        pub.publish({"not": "an event"})  # type: ignore[arg-type]
    assert len(publisher_threads()) == before + 2
    assert pub.close(timeout=5).delivered == 3
    assert len(publisher_threads()) == before
    with pytest.raises(PublisherClosedError, match="create a new one"):
        pub.publish(make_events(1, job="job-pub")[0])
    pub.close()  # twice is fine


def test_a_full_spool_drops_and_counts_instead_of_blocking(fake_kafka, offline_settings, tmp_path):
    settings = offline_settings.model_copy(update={"spool_max_bytes": 1 << 20})
    with Publisher(settings) as pub:
        pub._spool.max_bytes = 2000  # room for a few events only
        fake_kafka[0].errors.append(KafkaError(KafkaError._ALL_BROKERS_DOWN, "down"))
        wait_for(lambda: not pub.stats().broker_reachable)
        pub.publish_many(make_events(30, job="job-pub"))
        wait_for(lambda: pub.stats().pending == 0)
        stats = pub.stats()
    assert stats.spooled + stats.dropped == 30 and stats.dropped > 0 and stats.spooled > 0
    assert len(spooled_ids(settings.spool_dir)) == stats.spooled


def test_publish_costs_microseconds(fake_kafka, offline_settings):
    events = make_events(2000, job="job-pub")
    with Publisher(offline_settings) as pub:
        fake_kafka[0].auto_deliver = True
        times = []
        for e in events:
            t0 = time.perf_counter()
            pub.publish(e)
            times.append(time.perf_counter() - t0)
    assert statistics.median(times) < 20e-6, f"median publish {statistics.median(times) * 1e6:.1f} µs"


# -- integration: the real broker ----------------------------------------------------------


@pytest.mark.integration
def test_published_events_arrive_keyed_by_prompt_id_with_headers(producer_settings, kafka_bootstrap, topic):
    events = make_events(50, job="job-pub")
    with Publisher(producer_settings, job_id="job-pub") as pub:
        pub.publish_many(events[:25])
        for e in events[25:]:
            pub.publish(e)
        report = pub.flush(timeout=20)
    assert (report.delivered, report.spooled, report.dropped, report.pending) == (50, 0, 0, 0)
    messages = consume_all(kafka_bootstrap, topic, 50)
    assert len(messages) == 50
    decoder = Decoder()
    by_id = {e.event_id: e for e in events}
    schema_ref = SingleObjectEncoder().schema_ref.encode()
    for m in messages:
        event = decoder.decode(m.value())
        assert m.key() == event.prompt_id.encode() == by_id[event.event_id].prompt_id.encode()
        headers = dict(m.headers())
        assert headers[Headers.SCHEMA] == schema_ref
        assert headers[Headers.JOB_ID] == b"job-pub"
        assert headers[Headers.EVENT_ID] == event.event_id.encode()
    assert set(event_ids(messages)) == set(by_id)
    assert list_segments(producer_settings.spool_dir) == []


@pytest.mark.integration
@pytest.mark.slow
def test_with_the_broker_down_all_run_publish_stays_fast_and_drain_delivers_every_event(
    offline_settings, kafka_bootstrap, topic
):
    events = make_events(200, job="job-pub")
    pub = Publisher(offline_settings)
    durations = []
    for e in events:
        t0 = time.perf_counter()
        pub.publish(e)
        durations.append(time.perf_counter() - t0)
        time.sleep(0.0005)  # a training loop does other work between events
    report = pub.flush(timeout=10)
    pub.close(timeout=1)
    assert max(durations) < 0.005, f"slowest publish() took {max(durations) * 1e3:.2f} ms"
    assert (report.delivered, report.spooled, report.dropped, report.pending) == (0, 200, 0, 0)
    assert sorted(spooled_ids(offline_settings.spool_dir)) == sorted(e.event_id for e in events)

    # The broker is reachable now (a fresh topic on the suite's broker): drain.
    online = offline_settings.model_copy(update={"kafka_bootstrap": kafka_bootstrap, "topic": topic})
    drained = drain_spool(online, timeout=30)
    assert (drained.sent, drained.left, drained.segments_busy) == (200, 0, 0)
    assert list_segments(online.spool_dir) == []
    assert drain_spool(online, timeout=5).sent == 0  # nothing is sent twice
    counts = event_ids(consume_all(kafka_bootstrap, topic, 200))
    assert set(counts) == {e.event_id for e in events}
    assert sum(counts.values()) == 200


@pytest.mark.integration
@pytest.mark.slow
def test_the_spool_drains_itself_when_the_broker_comes_back(tmp_path):
    from predstream.local import LocalStack, create_topics

    broker = LocalStack(tmp_path / "broker")
    settings = ProducerSettings(kafka_bootstrap=broker.bootstrap, topic="t.autodrain", spool_dir=tmp_path / "spool",
                                message_timeout_ms=2000)
    events = make_events(60, job="job-pub")
    pub = Publisher(settings)
    try:
        pub.publish_many(events[:30])
        wait_for(lambda: pub.stats().spooled == 30, timeout=20, what="30 events spooled while no broker runs")
        broker.home.mkdir(parents=True, exist_ok=True)
        broker.start_broker()
        create_topics(broker.bootstrap, {"t.autodrain": 3})
        wait_for(lambda: pub.stats().resent >= 30, timeout=30, what="the auto-drain")
        pub.publish_many(events[30:])
        report = pub.close(timeout=20)
        assert report.delivered == 30 and report.spooled == 30 and report.dropped == 0
        assert list_segments(settings.spool_dir) == []
        counts = event_ids(consume_all(broker.bootstrap, "t.autodrain", 60))
        assert set(counts) == {e.event_id for e in events}
    finally:
        pub.close(timeout=1)
        broker.stop_broker()


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.faults
def test_a_broker_restart_mid_run_loses_no_event(tmp_path):
    """The broker freezes with events in flight, dies, and comes back empty (tansu keeps
    topics in memory). The idempotent producer is replaced; nothing it held is lost."""
    from predstream.local import LocalStack, create_topics

    broker = LocalStack(tmp_path / "broker")
    broker.home.mkdir(parents=True, exist_ok=True)
    broker.start_broker()
    create_topics(broker.bootstrap, {"t.restart": 3})
    settings = ProducerSettings(kafka_bootstrap=broker.bootstrap, topic="t.restart", spool_dir=tmp_path / "spool",
                                message_timeout_ms=20_000)
    before, in_flight, while_down, after = (make_events(30, start=s, job="job-pub") for s in (0, 1000, 2000, 3000))
    pub = Publisher(settings)
    try:
        pub.publish_many(before)
        assert pub.flush(timeout=20).delivered == 30
        first_life = event_ids(consume_all(broker.bootstrap, "t.restart", 30))
        assert set(first_life) == {e.event_id for e in before}

        os.kill(broker.broker_pid, signal.SIGSTOP)  # frozen: nothing more is acknowledged
        pub.publish_many(in_flight)
        time.sleep(0.5)
        os.kill(broker.broker_pid, signal.SIGKILL)
        broker.stop_broker()
        wait_for(lambda: not pub.stats().broker_reachable, timeout=10, what="the outage to be noticed")
        pub.publish_many(while_down)
        time.sleep(1.0)
        broker.start_broker()
        create_topics(broker.bootstrap, {"t.restart": 3})
        wait_for(lambda: pub.stats().broker_reachable, timeout=20, what="the broker to be reachable again")
        pub.publish_many(after)
        report = pub.close(timeout=30)
        stats = pub.stats()
        assert stats.published == 120 and report.pending == 0 and report.dropped == 0
        assert report.delivered + report.spooled == 120  # each event counted once
        assert stats.producer_replacements >= 1
        assert stats.resent > 0  # the spool drained itself, at the latest at close()
        leftover = drain_spool(settings, timeout=30)
        assert leftover.left == 0 and list_segments(settings.spool_dir) == []

        second_life = event_ids(consume_all(broker.bootstrap, "t.restart", 90))
        assert set(second_life) == {e.event_id for e in in_flight + while_down + after}
        # Only an event whose fate was unknown at the restart may arrive twice (harmless:
        # the consumer upserts by event_id); every other one arrives exactly once.
        unknown_fate = {e.event_id for e in in_flight}
        assert all(n == 1 for eid, n in second_life.items() if eid not in unknown_fate)
    finally:
        pub.close(timeout=1)
        broker.stop_broker()


@pytest.mark.integration
def test_cli_spool_status_and_drain(tmp_path, kafka_bootstrap, topic, monkeypatch):
    from predstream.cli import app

    spool_dir = tmp_path / "spool"
    spool = Spool(spool_dir, max_bytes=1 << 20)
    encoder = SingleObjectEncoder()
    events = make_events(12, job="job-pub")
    for e in events:
        spool.append(encoder.encode(e))
    spool.close()
    monkeypatch.setenv("PREDSTREAM_KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("PREDSTREAM_TOPIC", topic)
    runner = CliRunner()

    result = runner.invoke(app, ["spool", "status", "--spool-dir", str(spool_dir)])
    assert result.exit_code == 0, result.output
    assert "12 records" in result.output and "0 damaged tails" in result.output

    result = runner.invoke(app, ["spool", "drain", "--spool-dir", str(spool_dir), "--timeout", "30"])
    assert result.exit_code == 0, result.output
    assert "12 records re-sent" in result.output

    result = runner.invoke(app, ["spool", "status", "--spool-dir", str(spool_dir)])
    assert "empty" in result.output
    assert set(event_ids(consume_all(kafka_bootstrap, topic, 12))) == {e.event_id for e in events}


def test_cli_spool_drain_with_no_broker_keeps_the_events_and_fails(tmp_path, monkeypatch):
    from predstream.cli import app
    from predstream.local import free_port

    spool = Spool(tmp_path / "spool", max_bytes=1 << 20)
    spool.append(SingleObjectEncoder().encode(make_events(1, job="job-pub")[0]))
    spool.close()
    monkeypatch.setenv("PREDSTREAM_KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")
    result = CliRunner().invoke(app, ["spool", "drain", "--spool-dir", str(tmp_path / "spool"), "--timeout", "5"])
    assert result.exit_code == 1
    assert "still spooled" in result.output
    assert len(spooled_ids(tmp_path / "spool")) == 1


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("broker", ["up", "down"])
def test_a_publisher_never_closed_delivers_or_spools_its_events_at_exit(broker, kafka_bootstrap, topic, tmp_path):
    import subprocess
    import sys

    from predstream.local import free_port

    bootstrap = kafka_bootstrap if broker == "up" else f"127.0.0.1:{free_port()}"
    spool = tmp_path / "spool"
    script = Path(__file__).parent / "support" / "unclosed_publisher.py"
    proc = subprocess.run([sys.executable, str(script), bootstrap, topic, str(spool), "50"],
                          capture_output=True, text=True, timeout=90)
    exited = time.monotonic()
    assert proc.returncode == 0, proc.stderr[-3000:]
    published_at = float(proc.stdout.split()[-1])  # CLOCK_MONOTONIC: the same clock in both processes
    print(f"\n[exit] broker {broker}: the process exited {exited - published_at:.2f} s after publishing")
    assert exited - published_at < 20, "the exit waited out the 60 s flush timeout"
    assert "closing at interpreter exit" in proc.stderr
    if broker == "up":
        assert sum(event_ids(consume_all(kafka_bootstrap, topic, 50)).values()) == 50
        assert spooled_ids(spool) == []
    else:
        assert len(set(spooled_ids(spool))) == 50
