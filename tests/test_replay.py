"""Replay: the topic read again into a fresh database, on the real broker and real Postgres."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from conftest import make_topic
from typer.testing import CliRunner

from predstream.consumer import ReplayError, parse_offsets, parse_timestamp, run_replay
from predstream.consumer.settings import ConsumerSettings
from predstream.consumer.sink import IngestRecord, PostgresSink
from predstream.schemas.codec import SingleObjectEncoder
from predstream.schemas.transport import Headers, message_key
from support import T0, make_event, wait_for
from support.consumer_kit import rows_reach, worker_thread

pytestmark = pytest.mark.integration

NOW_MS = int(time.time() * 1000)
#: Kafka timestamps of the three rounds: 3, 2 and 1 hours ago, one second apart within a round
ROUND_MS = [NOW_MS - h * 3_600_000 for h in (3, 2, 1)]


@dataclass(frozen=True)
class Sent:
    partition: int
    offset: int
    timestamp_ms: int
    event_id: str | None  # None: an invalid message
    job: str | None


def _produce_round(bootstrap: str, topic: str, items: list[tuple[bytes | None, bytes, list, str | None, str | None]],
                   ts0: int) -> list[Sent]:
    """Produce one round as a few record batches (one flush), Kafka timestamps ts0 + i s."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "acks": "all"})
    sent: list[Sent] = []
    errors: list = []

    def done(meta: tuple[str | None, str | None, int]):
        def cb(err, msg):
            if err:
                errors.append(err)
            else:
                sent.append(Sent(msg.partition(), msg.offset(), meta[2], meta[0], meta[1]))
        return cb

    for i, (key, value, headers, event_id, job) in enumerate(items):
        producer.produce(topic, value=value, key=key, headers=headers, timestamp=ts0 + i * 1000,
                         on_delivery=done((event_id, job, ts0 + i * 1000)))
    assert producer.flush(30) == 0 and not errors, errors
    return sent


def _items(round_no: int, n: int) -> list:
    """n events of round_no: jobs "job-a" / "job-b"; job-b's job header only on even indices;
    plus one message that is not an event."""
    enc = SingleObjectEncoder()
    out = []
    for i in range(n):
        job = "job-a" if i % 3 else "job-b"
        ev = make_event(i, job=job, step=100 * (round_no + 1))
        headers = [(Headers.SCHEMA, enc.schema_ref.encode()), (Headers.EVENT_ID, ev.event_id.encode())]
        if job == "job-a" or i % 2 == 0:
            headers.append((Headers.JOB_ID, job.encode()))
        out.append((message_key(ev.prompt_id), enc.encode(ev), headers, ev.event_id, job))
    out.append((b"junk", b"\x07not an event", [], None, None))
    return out


@dataclass
class Topic:
    name: str
    sent: list[Sent]

    @property
    def events(self) -> list[Sent]:
        return [s for s in self.sent if s.event_id is not None]


@pytest.fixture(scope="module")
def loaded(kafka_bootstrap) -> Topic:
    """A 6-partition topic with three rounds (hours apart) of events, several record batches
    per partition, and three undecodable messages."""
    name = make_topic(kafka_bootstrap)
    sent: list[Sent] = []
    for r, ts0 in enumerate(ROUND_MS):
        sent += _produce_round(kafka_bootstrap, name, _items(r, 12), ts0)
    return Topic(name, sent)


def _settings(kafka_bootstrap: str, topic: str, database_url: str, **kw) -> ConsumerSettings:
    return ConsumerSettings(kafka_bootstrap=kafka_bootstrap, topic=topic, database_url=database_url,
                            session_timeout_ms=6000, batch_max_wait_ms=50, shutdown_timeout_s=10, **kw)


def _rows(database_url: str) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT event_id, job_id, step, sample_index, prompt_id, prediction, produced_at,"
            " kafka_partition, kafka_offset FROM training_predictions ORDER BY event_id"
        ).fetchall()


def _committed(kafka_bootstrap: str, topic: str, group: str, partitions: int = 6) -> list[tuple[int, int]]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        got = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        c.close()
    return [(tp.partition, tp.offset) for tp in got]


# -- the table ---------------------------------------------------------------------------


def test_replay_into_an_empty_database_reproduces_the_live_table_and_leaves_the_live_group_alone(
    kafka_bootstrap, loaded, database_url, empty_database_url
):
    from predstream.consumer.migrate import apply_migrations

    live = _settings(kafka_bootstrap, loaded.name, database_url, group_id="live-" + uuid.uuid4().hex[:8])
    with worker_thread(live):
        wait_for(rows_reach(database_url, len(loaded.events)), 60, "the live worker to store every event")
    committed_before = _committed(kafka_bootstrap, loaded.name, live.group_id)
    assert sum(max(o, 0) for _, o in committed_before) == len(loaded.sent)

    apply_migrations(ConsumerSettings(database_url=empty_database_url))
    stats = run_replay(_settings(kafka_bootstrap, loaded.name, empty_database_url))

    assert stats.read == len(loaded.sent)
    assert stats.inserted == len(loaded.events)
    assert stats.invalid == 3 and stats.by_reason == {"bad-framing": 3}
    assert (stats.updated, stats.unchanged, stats.rejected, stats.skipped_job) == (0, 0, 0, 0)
    assert _rows(empty_database_url) == _rows(database_url)  # same ids, predictions, Kafka coordinates
    assert _committed(kafka_bootstrap, loaded.name, live.group_id) == committed_before


def test_replay_twice_adds_no_rows(kafka_bootstrap, loaded, database_url):
    settings = _settings(kafka_bootstrap, loaded.name, database_url, batch_size=7)
    first = run_replay(settings)
    rows = _rows(database_url)
    second = run_replay(settings)

    assert first.inserted == len(loaded.events) == len(rows)
    assert (second.inserted, second.updated, second.unchanged) == (0, 0, len(loaded.events))
    assert _rows(database_url) == rows


def test_replay_stops_at_the_true_end_of_each_partition(kafka_bootstrap, loaded, database_url):
    """Several record batches per partition: the uncached high watermark of some brokers
    (tansu) is too low; replay must still read every message, and nothing beyond."""
    stats = run_replay(_settings(kafka_bootstrap, loaded.name, database_url))
    ends = {r.partition: r.end for r in stats.ranges}
    for p in range(6):
        offsets = [s.offset for s in loaded.sent if s.partition == p]
        assert ends[p] == (max(offsets) + 1 if offsets else 0)
    assert stats.next_offsets == ends


def test_replay_of_old_events_never_overwrites_newer_rows(kafka_bootstrap, loaded, database_url):
    """Repairing a database that already holds a newer version of a prediction keeps it."""
    newer = make_event(1, job="job-a", step=100, prediction="regenerated after a resume",
                       produced_at=T0 + timedelta(days=1))
    assert newer.event_id in {s.event_id for s in loaded.events}
    with PostgresSink(database_url) as sink:
        sink.write([IngestRecord(newer)])

    stats = run_replay(_settings(kafka_bootstrap, loaded.name, database_url))

    assert stats.unchanged == 1 and stats.inserted == len(loaded.events) - 1
    with psycopg.connect(database_url) as conn:
        got = conn.execute("SELECT prediction FROM training_predictions WHERE event_id = %s",
                           (newer.event_id,)).fetchone()
    assert got == ("regenerated after a resume",)


# -- choosing what to replay ------------------------------------------------------------


def test_replay_with_job_filter_stores_only_that_job(kafka_bootstrap, loaded, database_url):
    stats = run_replay(_settings(kafka_bootstrap, loaded.name, database_url), job_id="job-b")

    job_b = [s for s in loaded.events if s.job == "job-b"]
    assert stats.inserted == len(job_b) == 12
    assert stats.skipped_job == len(loaded.events) - len(job_b)
    assert stats.invalid == 3  # no header: decoded to find the job, and not an event
    assert {r[0] for r in _rows(database_url)} == {s.event_id for s in job_b}


def test_replay_from_timestamp_takes_the_first_event_at_or_after_it(kafka_bootstrap, loaded, database_url):
    # in the middle of round 2 (one record batch per partition): 4.5 s after its first message
    since = ROUND_MS[1] + 4_500
    stats = run_replay(_settings(kafka_bootstrap, loaded.name, database_url),
                   from_timestamp=datetime.fromtimestamp(since / 1000, UTC))

    expected = [s for s in loaded.sent if s.timestamp_ms >= since]
    assert stats.read - stats.skipped_before == len(expected) == 13 - 5 + 13
    assert {r[0] for r in _rows(database_url)} == {s.event_id for s in expected if s.event_id}


def test_replay_from_a_timestamp_after_the_last_record_replays_nothing(kafka_bootstrap, loaded, database_url):
    after = datetime.fromtimestamp(NOW_MS / 1000, UTC) + timedelta(minutes=5)
    stats = run_replay(_settings(kafka_bootstrap, loaded.name, database_url), from_timestamp=after)

    assert stats.stored == 0 and stats.invalid == 0
    assert _rows(database_url) == []


def test_replay_from_offsets_reads_only_those_partitions_from_there(kafka_bootstrap, loaded, database_url):
    counts = {p: sum(1 for s in loaded.sent if s.partition == p) for p in range(6)}
    busy = sorted(counts, key=counts.get, reverse=True)[:2]
    start = {busy[0]: 2, busy[1]: 0}
    stats = run_replay(_settings(kafka_bootstrap, loaded.name, database_url), from_offsets=start)

    expected = [s for s in loaded.sent if s.partition in start and s.offset >= start[s.partition]]
    assert stats.read == len(expected) == counts[busy[0]] - 2 + counts[busy[1]]
    assert {(r[7], r[8]) for r in _rows(database_url)} == {(s.partition, s.offset) for s in expected if s.event_id}


def test_replay_with_to_end_also_reads_what_arrives_meanwhile(kafka_bootstrap, topic, database_url):
    enc = SingleObjectEncoder()
    first = [make_event(i, job="job-x") for i in range(6)]
    late = [make_event(i, job="job-x", step=11) for i in range(6)]
    _produce_round(kafka_bootstrap, topic,
                   [(message_key(e.prompt_id), enc.encode(e), [], e.event_id, "x") for e in first], NOW_MS)
    produced_late: list[bool] = []

    def on_progress(done: int, total: int) -> None:
        if not produced_late:  # once, before anything is read: events arriving mid-replay
            produced_late.append(True)
            _produce_round(kafka_bootstrap, topic,
                           [(message_key(e.prompt_id), enc.encode(e), [], e.event_id, "x") for e in late], NOW_MS)

    settings = _settings(kafka_bootstrap, topic, database_url)
    bounded = run_replay(settings, progress=on_progress)
    assert bounded.read == 6  # the high watermarks taken at the start

    produced_late.clear()
    following = run_replay(settings, to_end=True, progress=on_progress)
    assert following.read == 18  # 12 there at the start + 6 that arrived while reading


# -- dead letters, CLI, bad input ---------------------------------------------------------


def test_replay_with_dlq_sends_invalid_events_to_the_dead_letter_topic(kafka_bootstrap, loaded, database_url):
    from predstream.consumer import DeadLetterWriter, list_dead_letters

    dlq_topic = make_topic(kafka_bootstrap)  # a fresh pair, so the live test's dead letters don't count
    settings = _settings(kafka_bootstrap, loaded.name, database_url)
    writer = DeadLetterWriter(_settings(kafka_bootstrap, dlq_topic, database_url))
    try:
        stats = run_replay(settings, dead_letters=writer)
    finally:
        writer.close()

    assert stats.dead_lettered == stats.invalid == 3
    letters = list_dead_letters(_settings(kafka_bootstrap, dlq_topic, database_url), limit=None)
    assert sorted((d.original_partition, d.original_offset) for d in letters) == sorted(
        (s.partition, s.offset) for s in loaded.sent if s.event_id is None)
    assert {d.reason for d in letters} == {"bad-framing"} and {d.original_topic for d in letters} == {loaded.name}


def test_replay_command_prints_counts(kafka_bootstrap, loaded, database_url, monkeypatch):
    from predstream.cli import app

    monkeypatch.setenv("PREDSTREAM_KAFKA_BOOTSTRAP", kafka_bootstrap)
    result = CliRunner().invoke(app, ["replay", "--topic", loaded.name, "--database-url", database_url,
                                      "--job", "job-a"])
    assert result.exit_code == 0, result.output
    assert "inserted 24" in result.output and "skipped (other jobs) 12" in result.output
    assert "bad-framing 3" in result.output

    result = CliRunner().invoke(app, ["replay", "--topic", loaded.name, "--database-url", database_url,
                                      "--from-offsets", "0:x"])
    assert result.exit_code == 2 and "PARTITION:OFFSET" in result.output

    result = CliRunner().invoke(app, ["replay", "--topic", loaded.name, "--database-url", database_url,
                                      "--writers", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "inserted 12, updated 0, unchanged 24" in result.output  # job-a's 24 were stored above
    result = CliRunner().invoke(app, ["replay", "--topic", loaded.name, "--database-url", database_url,
                                      "--writers", "0"])
    assert result.exit_code == 2 and "--writers" in result.output


def test_replay_of_a_missing_topic_says_so_and_creates_nothing(kafka_bootstrap, database_url):
    name = "t.missing-" + uuid.uuid4().hex[:8]
    with pytest.raises(ReplayError, match="does not exist"):
        run_replay(_settings(kafka_bootstrap, name, database_url))
    from confluent_kafka.admin import AdminClient

    assert name not in AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10).topics


def test_replay_start_points_parse_or_explain():
    assert parse_offsets("0:120, 3:7") == {0: 120, 3: 7}
    for bad in ("", "0", "0:-1", "a:1", "0:1,0:2"):
        with pytest.raises(ReplayError):
            parse_offsets(bad)
    assert parse_timestamp("2026-11-03T14:00:00Z") == datetime(2026, 11, 3, 14, tzinfo=UTC)
    assert parse_timestamp("2026-11-03 15:00") == datetime(2026, 11, 3, 15, tzinfo=UTC)
    with pytest.raises(ReplayError, match="ISO 8601"):
        parse_timestamp("yesterday")


def test_replay_dead_letters_an_event_the_database_refuses_with_its_original_bytes(kafka_bootstrap, topic,
                                                                                   database_url):
    from predstream.consumer import DeadLetterWriter, list_dead_letters

    enc = SingleObjectEncoder()
    events = [make_event(i, job="job-r") for i in range(4)] + [make_event(9, job="job-r",
                                                                          epoch=1e12)]  # INTEGER overflow
    items = [(message_key(e.prompt_id), enc.encode(e), [], e.event_id, "job-r") for e in events]
    sent = _produce_round(kafka_bootstrap, topic, items, NOW_MS)
    settings = _settings(kafka_bootstrap, topic, database_url)
    writer = DeadLetterWriter(settings)
    try:
        stats = run_replay(settings, dead_letters=writer)
    finally:
        writer.close()

    assert (stats.inserted, stats.rejected, stats.dead_lettered) == (4, 1, 1)
    assert stats.by_reason == {"db-rejected:22003": 1}
    [letter] = list_dead_letters(settings, limit=None)
    bad = next(s for s in sent if s.event_id == events[-1].event_id)
    assert (letter.reason, letter.original_partition, letter.original_offset) == ("db-rejected:22003", bad.partition,
                                                                                  bad.offset)
    assert letter.value == items[-1][1]


def test_two_writers_store_every_event_and_resume_offsets_never_pass_a_batch_not_written(
        kafka_bootstrap, loaded, database_url, monkeypatch):
    # By default two batches are written at once, each through its own connection. When the
    # database goes away under one of them, the resume offsets stop before that batch: every
    # event before them is stored (a later batch may be stored too), and replaying from them
    # stores the rest.
    import predstream.consumer.replay as replay

    monkeypatch.setattr(replay, "_WRITE_ATTEMPTS", 1)
    backends: set[int] = set()
    writes = 0
    real_write = PostgresSink.write

    def write(self, batch):
        nonlocal writes
        writes += 1
        if writes == 5:
            from predstream.consumer.errors import DatabaseUnavailableError

            raise DatabaseUnavailableError("connection lost")
        result = real_write(self, batch)
        backends.add(self._conn.info.backend_pid)
        return result

    monkeypatch.setattr(PostgresSink, "write", write)
    settings = _settings(kafka_bootstrap, loaded.name, database_url, batch_size=5)
    with pytest.raises(ReplayError) as stopped:
        run_replay(settings)
    assert len(backends) == 2, "two writers, each with its own connection"
    resume = parse_offsets(str(stopped.value).split("--from-offsets ")[1])
    stored = {(p, o) for *_, p, o in _rows(database_url)}
    events = {(s.partition, s.offset) for s in loaded.events}
    before = {(p, o) for p, o in events if o < resume.get(p, 0)}
    assert before <= stored, f"not stored, yet before the resume offsets: {sorted(before - stored)}"
    monkeypatch.setattr(PostgresSink, "write", real_write)
    again = run_replay(settings, from_offsets=resume)
    assert {(p, o) for *_, p, o in _rows(database_url)} == events
    assert again.inserted == len(events - stored)


def test_a_database_lost_mid_replay_stops_with_offsets_that_resume_exactly_where_the_stored_rows_end(
        kafka_bootstrap, loaded, database_url, monkeypatch):
    # one batch is written while the next is read: the resume offsets must still be those
    # after the last batch the database committed, never ahead of it
    import predstream.consumer.replay as replay

    monkeypatch.setattr(replay, "_WRITE_ATTEMPTS", 1)

    class LosesTheDatabase(PostgresSink):
        writes = 0

        def write(self, batch):
            LosesTheDatabase.writes += 1
            if LosesTheDatabase.writes == 4:
                from predstream.consumer.errors import DatabaseUnavailableError

                raise DatabaseUnavailableError("connection lost")
            return super().write(batch)

    settings = _settings(kafka_bootstrap, loaded.name, database_url, batch_size=5)
    with LosesTheDatabase(database_url) as sink, pytest.raises(ReplayError) as stopped:
        run_replay(settings, sink=sink)
    resume = parse_offsets(str(stopped.value).split("--from-offsets ")[1])
    stored = {(p, o) for *_, p, o in _rows(database_url)}
    events = {(s.partition, s.offset) for s in loaded.events}
    assert stored == {(p, o) for p, o in events if o < resume.get(p, 0)}, "stored: exactly what lies before the offsets"
    run_replay(settings, from_offsets=resume)
    assert {(p, o) for *_, p, o in _rows(database_url)} == events
