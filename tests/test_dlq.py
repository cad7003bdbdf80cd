"""Dead letters: bad events end up on ``<topic>.dlq`` with a reason, good ones are all stored."""

from __future__ import annotations

import json
import os
import random
import struct

import psycopg
import pytest
from typer.testing import CliRunner

from predstream.consumer import DeadLetter, dead_letter_headers, list_dead_letters, redrive
from predstream.schemas.codec import SingleObjectEncoder, single_object_frame
from predstream.schemas.event import MAX_TEXT_CHARS
from predstream.schemas.transport import Headers, message_key
from support import make_event, wait_for
from support.consumer_kit import count_rows, encoded, produce, rows_reach, worker_thread


def test_dead_letter_headers_keep_the_original_ones_and_replace_earlier_dead_letter_headers():
    original = [("predstream-schema", b"fp:00"), (Headers.DLQ_REASON, b"old-reason"), ("trace", None)]
    headers = dead_letter_headers(original, reason="bad-framing", error="line one\nline two", topic="t",
                                  partition=3, offset=42, timestamp_ms=None)
    assert headers == [
        ("predstream-schema", b"fp:00"),
        ("trace", b""),
        (Headers.DLQ_REASON, b"bad-framing"),
        (Headers.DLQ_ERROR, b"line one line two"),
        (Headers.ORIGINAL_TOPIC, b"t"),
        (Headers.ORIGINAL_PARTITION, b"3"),
        (Headers.ORIGINAL_OFFSET, b"42"),
    ]


@pytest.mark.parametrize(
    ("reason", "filters", "expected"),
    [("db-rejected:22003", ["db-rejected"], True), ("db-rejected:22003", ["db-rejected:23514"], False),
     ("bad-framing", None, True), ("nul-character:prediction", ["nul-character:prompt"], False)],
)
def test_a_reason_filter_matches_exact_codes_and_prefixes(reason, filters, expected):
    letter = DeadLetter(0, 0, None, reason, "", None, None, None, None, None, None)
    assert letter.matches(filters) is expected


def _malformed(rng: random.Random) -> list[tuple[str, tuple[bytes | None, bytes | None, list | None]]]:
    """100 bad messages: (expected reason prefix, message)."""
    enc = SingleObjectEncoder()
    out = []
    for k in range(30):  # random bytes that do not start like either framing
        body = bytes([rng.choice([b for b in range(256) if b not in (0x00, 0xC3)])]) + rng.randbytes(rng.randint(0, 80))
        out.append(("bad-framing", (b"k%d" % k, body, None)))
    for k in range(15):  # single-object magic with the fingerprint of no schema we know
        out.append(("unknown-schema", (None, single_object_frame(struct.pack("<Q", 0xDEADBEEF + k), b"\x02x"), None)))
    for k in range(10):  # our framing and fingerprint, garbage body
        out.append(("malformed-body", (None, enc.encode(make_event(k))[:10] + b"\xff" * (7 + k), None)))
    for k in range(15):  # NUL character: Avro carries it, Postgres text cannot
        rec = make_event(1000 + k).to_avro() | {"prediction": "a\x00b"}
        out.append(("nul-character:prediction", (message_key(rec["prompt_id"]), enc.encode_record(rec), None)))
    for k in range(5):  # oversize text
        rec = make_event(2000 + k).to_avro() | {"prediction": "x" * (MAX_TEXT_CHARS + 1)}
        out.append(("too-large:prediction", (None, enc.encode_record(rec), None)))
    for k in range(24):  # negative step, hand-encoded with fastavro
        rec = make_event(3000 + k).to_avro() | {"step": -5}
        out.append(("out-of-range:step", (None, enc.encode_record(rec), [("trace-id", b"abc%d" % k)])))
    out.append(("bad-framing", (b"tombstone", None, None)))  # a null value is not an event
    assert len(out) == 100
    return out


@pytest.mark.integration
def test_100_malformed_events_interleaved_with_good_ones_all_reach_the_dlq_with_a_reason(consumer_settings,
                                                                                         kafka_bootstrap, database_url):
    rng = random.Random(7)
    bad = _malformed(rng)
    good = [make_event(i) for i in range(300)]
    stream = [("good", encoded(e)) for e in good] + bad
    rng.shuffle(stream)
    produce(kafka_bootstrap, consumer_settings.topic, (m for _, m in stream))
    settings = consumer_settings.model_copy(update={"batch_size": 64})
    with worker_thread(settings) as worker:
        wait_for(rows_reach(database_url, 300), 60, "300 rows")
        wait_for(lambda: worker.metrics.registry.get_sample_value("predstream_events_consumed_total") == 400, 30,
                 "400 consumed")
        wait_for(lambda: not worker._buffer, 10, "the last batch stored")
        dead_total = sum(
            s.value for mf in worker.metrics.registry.collect() if mf.name == "predstream_dead_lettered"
            for s in mf.samples
            if s.name.endswith("_total")
        )
    assert count_rows(database_url) == 300
    assert dead_total == 100
    letters = list_dead_letters(settings, limit=None)
    assert len(letters) == 100
    # each dead letter carries the original key, value bytes and headers, and the right reason
    originals = {message[1]: (reason, message) for reason, message in bad}
    assert len(originals) == 100
    for d in letters:
        reason, (key, _value, headers) = originals.pop(d.value)
        assert d.reason == reason or d.reason.startswith(reason + ":"), (d.reason, reason, d.error)
        assert d.key == key and d.headers == (headers or [])
        assert d.error and d.original_topic == settings.topic and d.original_offset is not None
    assert not originals


@pytest.mark.integration
def test_a_row_postgres_refuses_is_dead_lettered_with_its_reason_and_redriven_once_fixed(consumer_settings,
                                                                                         kafka_bootstrap, database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE training_predictions ADD CONSTRAINT no_refuse CHECK (prediction <> 'REFUSE ME')")
    good = [make_event(i) for i in range(50)]
    refused = [make_event(100 + k, prediction="REFUSE ME") for k in range(2)]
    too_far = make_event(200, epoch=3e9)  # valid event; the INTEGER epoch column refuses it
    produce(kafka_bootstrap, consumer_settings.topic, (encoded(e) for e in good[:25] + refused + [too_far] + good[25:]))
    with worker_thread(consumer_settings):
        wait_for(rows_reach(database_url, 50), 60, "50 rows")
        wait_for(lambda: len(list_dead_letters(consumer_settings)) == 3, 30, "3 dead letters")
        letters = list_dead_letters(consumer_settings)
        assert sorted(d.reason for d in letters) == ["db-rejected:22003", "db-rejected:23514", "db-rejected:23514"]
        assert any("no_refuse" in d.error for d in letters) and any("epoch" in d.error for d in letters)
        assert count_rows(database_url) == 50

        # fix the database, redrive only what it refused by that constraint
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("ALTER TABLE training_predictions DROP CONSTRAINT no_refuse")
        assert redrive(consumer_settings, reasons=["db-rejected:23514"], dry_run=True).redriven == 2
        first = redrive(consumer_settings, reasons=["db-rejected:23514"])
        assert (first.redriven, first.skipped) == (2, 1)
        wait_for(rows_reach(database_url, 52), 30, "the 2 redriven rows")
        second = redrive(consumer_settings, reasons=["db-rejected"])
        assert (second.redriven, second.skipped) == (0, 0), "a second run redrives nothing again"
        wait_for(lambda: len(list_dead_letters(consumer_settings)) == 3, 5, "no new dead letters")
    assert count_rows(database_url) == 52


@pytest.mark.integration
def test_dlq_list_cli_prints_json_and_a_table(consumer_settings, kafka_bootstrap):
    from predstream.cli import app

    produce(kafka_bootstrap, consumer_settings.dlq_topic, [
        (b"k", b"\x07junk",
         dead_letter_headers(None, reason="bad-framing", error="unknown framing", topic=consumer_settings.topic,
                                                partition=2, offset=17, timestamp_ms=5)),
    ])
    env = {"PREDSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap, "PREDSTREAM_TOPIC": consumer_settings.topic,
           "PREDSTREAM_HOME": os.environ["PREDSTREAM_HOME"]}
    runner = CliRunner()
    result = runner.invoke(app, ["dlq", "list", "--format", "json"], env=env)
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    assert (row["reason"], row["original_partition"], row["original_offset"], row["key"]) == ("bad-framing", 2, 17, "k")
    table = runner.invoke(app, ["dlq", "list"], env={**env, "COLUMNS": "200"})
    assert table.exit_code == 0 and "bad-framing" in table.output and "unknown framing" in table.output
    dry = runner.invoke(app, ["dlq", "redrive", "--dry-run"], env=env)
    assert dry.exit_code == 0 and "would redrive 1" in dry.output
