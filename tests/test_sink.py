"""The Postgres sink against a real, migrated Postgres: idempotent, newest wins, bad rows isolated."""

from __future__ import annotations

import json
from datetime import timedelta

import psycopg
import pytest

from predstream.consumer.errors import DatabaseUnavailableError
from predstream.consumer.sink import IngestRecord, PostgresSink
from predstream.schemas.event import GenerationSettings
from support import T0, make_event

pytestmark = pytest.mark.integration


def _records(events, topic="t", partition=0):
    return [IngestRecord(e, topic, partition, i, 1_700_000_000_000 + i) for i, e in enumerate(events)]


def _rows(url, sql, *args):
    with psycopg.connect(url) as conn:
        return conn.execute(sql, args).fetchall()


def test_n_events_make_n_rows_and_sending_them_again_adds_none(database_url):
    events = [make_event(i) for i in range(300)]
    with PostgresSink(database_url) as sink:
        first = sink.write(_records(events))
        again = sink.write(_records(events))
    assert (first.inserted, first.updated, first.unchanged, first.rejected) == (300, 0, 0, [])
    assert (again.inserted, again.updated, again.unchanged, again.rejected) == (0, 0, 300, [])
    assert _rows(database_url, "SELECT count(*), count(DISTINCT event_id) FROM training_predictions") == [(300, 300)]


def test_a_newer_event_overwrites_and_an_older_one_never_does(database_url):
    old, new = make_event(1, prediction="old", produced_at=T0), make_event(1, prediction="new",
                                                                           produced_at=T0 + timedelta(minutes=5))
    assert old.event_id == new.event_id
    with PostgresSink(database_url) as sink:
        assert sink.write([IngestRecord(old)]).inserted == 1
        assert sink.write([IngestRecord(new)]).updated == 1
        stale = sink.write([IngestRecord(old)])
    assert (stale.inserted, stale.updated, stale.unchanged) == (0, 0, 1)
    assert _rows(database_url, "SELECT prediction, produced_at FROM training_predictions") == [("new", new.produced_at)]


def test_duplicates_within_one_batch_keep_the_newest(database_url):
    versions = [make_event(7, prediction=f"v{k}", produced_at=T0 + timedelta(seconds=k)) for k in (2, 5, 1)]
    with PostgresSink(database_url) as sink:
        result = sink.write(_records(versions + [make_event(8)]))
    assert (result.inserted, result.unchanged) == (2, 2)
    assert _rows(database_url, "SELECT prediction FROM training_predictions WHERE sample_index = 7") == [("v5",)]


def test_a_resumed_attempt_replaces_the_first_even_when_its_host_clock_is_behind(database_url):
    first = make_event(1, prediction="attempt 0", produced_at=T0 + timedelta(hours=2))
    resumed = make_event(1, prediction="attempt 1", produced_at=T0, attempt=1)  # clock 2 h behind
    assert first.event_id == resumed.event_id
    with PostgresSink(database_url) as sink:
        sink.write([IngestRecord(first)])
        assert sink.write([IngestRecord(resumed)]).updated == 1
        replayed = sink.write([IngestRecord(first)])  # the first attempt's event, replayed
    assert (replayed.inserted, replayed.updated, replayed.unchanged) == (0, 0, 1)
    assert _rows(database_url, "SELECT prediction, attempt FROM training_predictions") == [("attempt 1", 1)]


def test_within_one_batch_the_higher_attempt_wins_whatever_the_clocks(database_url):
    versions = [make_event(7, prediction=f"a{a}", attempt=a, produced_at=T0 - timedelta(hours=a)) for a in (1, 2, 0)]
    with PostgresSink(database_url) as sink:
        result = sink.write(_records(versions))
    assert (result.inserted, result.unchanged) == (1, 2)
    assert _rows(database_url, "SELECT prediction, attempt FROM training_predictions") == [("a2", 2)]


def test_a_row_stored_without_an_attempt_counts_as_attempt_0(database_url):
    first = make_event(2, prediction="before 0006", produced_at=T0 + timedelta(hours=1))
    with PostgresSink(database_url) as sink:
        sink.write([IngestRecord(first)])
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("UPDATE training_predictions SET attempt = NULL")
        assert sink.write([IngestRecord(make_event(2, prediction="older clock", produced_at=T0))]).unchanged == 1
        assert sink.write([IngestRecord(make_event(2, prediction="resumed", produced_at=T0, attempt=1))]).updated == 1
    assert _rows(database_url, "SELECT prediction, attempt FROM training_predictions") == [("resumed", 1)]


def test_every_column_is_filled_from_the_event(database_url):
    event = make_event(
        3, step=250, messages=[{"role": "user", "content": "hi ✓"}], prompt=None, model_name="tiny-gpt2",
        generation=GenerationSettings(max_new_tokens=8, do_sample=True, temperature=0.7, seed=3),
        prompt_tokens=5, completion_tokens=2, generation_ms=1.5, sequence_index=1,
        sample_source="prediction_set", sample_source_id="ps_abc",
    )
    with PostgresSink(database_url) as sink:
        sink.write([IngestRecord(event, "topic-a", 4, 99, 123)])
        sink.write([IngestRecord(make_event(4))])  # backfilled: no Kafka coordinates
    (row,) = _rows(
        database_url,
        "SELECT epoch, epoch_exact, step, sequence_index, prompt, messages, generation, set_id, model_name, "
        "kafka_topic, kafka_partition, kafka_offset, created_at = produced_at, ingested_at IS NOT NULL "
        "FROM training_predictions WHERE event_id = %s", event.event_id,
    )
    assert row[:5] == (2, 2.5, 250, 1, None)
    assert row[5] == [{"role": "user", "content": "hi ✓"}]
    assert row[6]["temperature"] == 0.7 and row[6]["max_new_tokens"] == 8
    assert row[7:] == ("ps_abc", "tiny-gpt2", "topic-a", 4, 99, True, True)
    assert _rows(database_url,
                 "SELECT kafka_topic, kafka_offset FROM training_predictions WHERE sample_index = 4") == [(None, None)]


def test_a_row_postgres_refuses_is_isolated_with_its_reason_and_the_rest_stored(database_url):
    # The model accepts any finite epoch; the table's INTEGER epoch column does not.
    too_far = make_event(500, epoch=3e9)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE training_predictions ADD CONSTRAINT no_refuse CHECK (prediction <> 'REFUSE ME')")
    refused = [make_event(600 + k, prediction="REFUSE ME") for k in range(2)]
    good = [make_event(i) for i in range(61)]
    batch = good[:20] + [refused[0]] + good[20:40] + [too_far] + good[40:] + [refused[1]]
    with PostgresSink(database_url) as sink:
        result = sink.write(_records(batch))
    reasons = sorted((rec.event.sample_index, rej.reason) for rec, rej in result.rejected)
    assert reasons == [(500, "db-rejected:22003"), (600, "db-rejected:23514"), (601, "db-rejected:23514")]
    messages = {rec.event.sample_index: rej.message for rec, rej in result.rejected}
    assert "out of range" in messages[500] and "epoch" in messages[500]
    assert "no_refuse" in messages[600]
    assert result.inserted == 61
    assert _rows(database_url, "SELECT count(*) FROM training_predictions") == [(61,)]


def test_a_column_whose_type_was_changed_by_hand_still_gets_every_row(database_url):
    # binary COPY needs exact types; a column altered by hand makes the sink send text,
    # which Postgres converts
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE training_predictions ALTER COLUMN generation_ms TYPE numeric(12, 3)")
        conn.execute("ALTER TABLE training_predictions ALTER COLUMN prompt_tokens TYPE smallint")
    events = [make_event(i, generation_ms=1.25, prompt_tokens=7, messages=[{"role": "user", "content": "é"}],
                         prompt=None)
              for i in range(50)]
    with PostgresSink(database_url) as sink:
        assert sink.write(_records(events)).inserted == 50
        assert sink.write(_records(events)).unchanged == 50  # and the upsert path too
    rows = _rows(database_url, "SELECT DISTINCT generation_ms::text, prompt_tokens, messages FROM training_predictions")
    assert rows == [("1.250", 7, [{"role": "user", "content": "é"}])]


def test_an_unreachable_database_is_retriable_and_never_leaks_the_password(stack):
    url = f"postgresql://postgres:s3cret-pw@127.0.0.1:{stack.pg_port + 1 if stack.pg_port < 65535 else 1}/nope"
    sink = PostgresSink(url, connect_timeout_s=1)
    with pytest.raises(DatabaseUnavailableError) as info:
        sink.write([IngestRecord(make_event(1))])
    assert "s3cret-pw" not in str(info.value)


def test_a_database_without_the_table_is_retriable_and_says_to_migrate(empty_database_url):
    with pytest.raises(DatabaseUnavailableError, match="predstream migrate") as info:
        PostgresSink(empty_database_url).write([IngestRecord(make_event(1))])
    assert info.value.sqlstate == "42P01"


def test_the_sink_reconnects_after_its_connection_was_killed(database_url):
    with PostgresSink(database_url, application_name="sink-under-test") as sink:
        sink.write([IngestRecord(make_event(1))])
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                          " WHERE application_name = 'sink-under-test'")
        with pytest.raises(DatabaseUnavailableError):
            sink.write([IngestRecord(make_event(2))])
        assert sink.write([IngestRecord(make_event(2))]).inserted == 1
    assert json.dumps(_rows(database_url, "SELECT count(*) FROM training_predictions")) == "[[2]]"


def test_text_that_cannot_be_encoded_is_rejected_not_fatal(database_url):
    # The contract refuses a lone surrogate (Avro strings are UTF-8); the sink must still
    # survive one from a caller that built the event without validation.
    good = make_event(1)
    broken = good.model_construct(**{**dict(good), "prediction": "a\ud800b"})
    with PostgresSink(database_url) as sink:
        result = sink.write([IngestRecord(broken), IngestRecord(make_event(2))])
    assert result.inserted == 1
    assert [(rec.event.sample_index, rej.reason) for rec, rej in result.rejected] == [(1, "db-rejected:encoding")]


def test_the_contract_refuses_text_that_is_not_unicode():
    import pytest

    from predstream.schemas import InvalidEventError

    with pytest.raises(InvalidEventError) as info:
        make_event(1, prediction="a\ud800b")
    assert info.value.reason == "invalid-utf8:prediction"
