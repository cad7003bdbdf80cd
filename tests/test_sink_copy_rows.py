"""Transcoded rows in a real Postgres: the same rows as the pydantic path, every guarantee of the sink kept.

The worker and replay hand the sink :class:`~predstream.consumer.transcode.CopyRow` rows
made straight from the Kafka messages; events the transcoder left to the pydantic path come
as :class:`~predstream.consumer.sink.IngestRecord`, in the same batch. Both must land as the
same rows, newest wins across both kinds, and the sink's slow paths (the upsert after a
conflict, a row the database refuses, a column changed by hand) work with either.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from predstream.consumer._columns import DIRECT_COLUMNS
from predstream.consumer.sink import IngestRecord, PostgresSink
from predstream.consumer.transcode import CopyRow, Transcoder
from predstream.schemas.codec import SingleObjectEncoder, load_schema_text, single_object_header
from predstream.schemas.event import GenerationSettings, PredictionEvent
from support import T0, make_event

pytestmark = pytest.mark.integration

ENC = SingleObjectEncoder()
#: every column but the two that differ by design (the serial id, the time of the write)
_COMPARED = [c for c in DIRECT_COLUMNS if c != "ingested_at"]


def _copy_rows(events, topic="t", partition=0, tc=None):
    tc = tc or Transcoder()
    rows = [tc.transcode(ENC.encode(e), topic, partition, i) for i, e in enumerate(events)]
    assert all(isinstance(r, CopyRow) for r in rows)
    return rows


def _records(events, topic="t", partition=0):
    return [IngestRecord(e, topic, partition, i) for i, e in enumerate(events)]


def _table(url):
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT {', '.join(_COMPARED)} FROM training_predictions ORDER BY event_id").fetchall()


def _varied() -> list[PredictionEvent]:
    gen = GenerationSettings(max_new_tokens=8, do_sample=True, temperature=0.7, top_p=0.95, top_k=40, seed=-3)
    return [
        make_event(0),
        make_event(1, prompt=None, messages=[{"role": "system", "content": "be brief\n\t\"ok\" \\ \u2028"},
                                             {"role": "user", "content": "héllo ✓ 🙂"}]),
        make_event(2, generation=gen, model_name="tiny-gpt2", prompt_tokens=0, completion_tokens=2**31 - 1,
                   generation_ms=0.0, sequence_index=3, attempt=7),
        make_event(3, sample_source="prediction_set", sample_source_id="ps_abc", ground_truth=None, epoch=2**31 - 1.5),
        make_event(4, sample_source_id=None, source_index=None, epoch=-0.0, step=0, prediction="",
                   produced_at=datetime(1, 1, 1, tzinfo=UTC)),
        make_event(5, produced_at=datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), epoch=1e-300,
                   generation=GenerationSettings(max_new_tokens=1_000_000, temperature=1e16, top_p=1.0)),
        make_event(6, prompt="", messages=[], prediction="x" * 5000, job="j" * 256),
    ]


def test_transcoded_rows_are_stored_exactly_as_the_pydantic_path_stores_them(database_url):
    events = _varied()
    with PostgresSink(database_url) as sink:
        assert sink.write(_records(events, "topic-a", 3)).inserted == len(events)
        by_pydantic = _table(database_url)
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("TRUNCATE training_predictions")
        assert sink.write(_copy_rows(events, "topic-a", 3)).inserted == len(events)
    assert _table(database_url) == by_pydantic


def test_decoded_events_in_a_batch_of_transcoded_ones_are_stored_as_the_pydantic_path_stores_them(database_url):
    # in a mixed batch the sink encodes the decoded events' rows itself (not psycopg)
    events = _varied()
    extra = make_event(100)
    with PostgresSink(database_url) as sink:
        assert sink.write(_records([extra, *events], "topic-a", 3)).inserted == len(events) + 1
        by_psycopg = _table(database_url)
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("TRUNCATE training_predictions")
        records = _records([extra, *events], "topic-a", 3)
        mixed = [_copy_rows([extra], "topic-a", 3)[0], *records[1:]]
        assert sink.write(mixed).inserted == len(events) + 1
    assert _table(database_url) == by_psycopg


def test_sent_again_they_change_nothing_an_older_one_never_overwrites_a_newer_attempt_does(database_url):
    events = [make_event(i) for i in range(200)]
    older = make_event(5, prediction="older", produced_at=T0 - timedelta(days=1))
    newer = make_event(6, prediction="newer", attempt=1, produced_at=T0 - timedelta(days=1))
    with PostgresSink(database_url) as sink:
        assert sink.write(_copy_rows(events)).inserted == 200
        again = sink.write(_copy_rows(events))  # a redelivery: the fast path conflicts, the upsert decides
        changed = sink.write(_copy_rows([older, newer]))
    assert (again.inserted, again.updated, again.unchanged, again.rejected) == (0, 0, 200, [])
    assert (changed.inserted, changed.updated, changed.unchanged) == (0, 1, 1)
    with psycopg.connect(database_url) as conn:
        found = dict(conn.execute("SELECT sample_index, prediction FROM training_predictions "
                                  "WHERE sample_index IN (5, 6)").fetchall())
    assert found == {5: "10", 6: "newer"}


def test_within_one_batch_the_newest_wins_across_transcoded_and_decoded_events(database_url):
    base = make_event(1, prediction="first", produced_at=T0)
    later = make_event(1, prediction="later clock", produced_at=T0 + timedelta(minutes=5))
    resumed = make_event(1, prediction="resumed", attempt=1, produced_at=T0 - timedelta(hours=1))
    tie = make_event(2, prediction="tie, first", produced_at=T0)
    tie_later = make_event(2, prediction="tie, later in the batch", produced_at=T0)
    (c_base, c_resumed, c_tie) = _copy_rows([base, resumed, tie])
    batch = [c_base, IngestRecord(later), c_resumed, c_tie, IngestRecord(tie_later)]
    with PostgresSink(database_url) as sink:
        result = sink.write(batch)
    assert (result.inserted, result.unchanged) == (2, 3)
    with psycopg.connect(database_url) as conn:
        found = dict(conn.execute("SELECT sample_index, prediction FROM training_predictions").fetchall())
    assert found == {1: "resumed", 2: "tie, later in the batch"}


def test_a_row_the_database_refuses_is_isolated_from_a_batch_of_both_kinds(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE training_predictions ADD CONSTRAINT no_refuse CHECK (prediction <> 'REFUSE ME')")
    good = _copy_rows([make_event(i) for i in range(40)])
    refused = _copy_rows([make_event(100, prediction="REFUSE ME")], partition=1)
    too_far = IngestRecord(make_event(200, epoch=3e9), "t", 2, 0)  # decoded: the INTEGER epoch does not fit
    with PostgresSink(database_url) as sink:
        result = sink.write(good[:10] + refused + good[10:] + [too_far])
    reasons = sorted((rec.partition, rej.reason) for rec, rej in result.rejected)
    assert reasons == [(1, "db-rejected:23514"), (2, "db-rejected:22003")]
    assert result.inserted == 40 and _table(database_url).__len__() == 40


def test_a_column_changed_by_hand_sends_the_transcoded_events_the_old_way(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE training_predictions ALTER COLUMN generation_ms TYPE numeric(12, 3)")
    events = [make_event(i, generation_ms=1.25) for i in range(30)]
    with PostgresSink(database_url) as sink:
        assert sink.write(_copy_rows(events)).inserted == 30
        assert sink.write(_copy_rows(events)).unchanged == 30
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT DISTINCT generation_ms::text FROM training_predictions").fetchall() == [("1.250",)]


# -- spec vectors: bodies written by the official Avro implementation -------------------------


def _official_body(datum: dict) -> bytes:
    import avro.io
    import avro.schema

    schema = avro.schema.parse(load_schema_text())
    buf = io.BytesIO()
    avro.io.DatumWriter(schema).write(datum, avro.io.BinaryEncoder(buf))
    return buf.getvalue()


def test_bodies_written_by_the_official_avro_package_go_through_the_transcoder_into_postgres(database_url):
    header = single_object_header(load_schema_text())  # the spec's header (not avro's own fingerprint)
    events = _varied()
    frames = [header + _official_body(e.to_avro()) for e in events]
    tc = Transcoder()
    rows = [tc.transcode(f, "spec", 0, i) for i, f in enumerate(frames)]
    assert all(r is not None for r in rows)
    with PostgresSink(database_url) as sink:
        assert sink.write(rows).inserted == len(events)
    with psycopg.connect(database_url) as conn:
        stored = {r[0]: r for r in conn.execute(
            "SELECT event_id, job_id, epoch_exact, step, sample_index, sequence_index, prompt, messages, ground_truth, "
            "prediction, prompt_id, source_index, sample_source, sample_source_id, model_name, generation, "
            "prompt_tokens, completion_tokens, generation_ms, produced_at, attempt FROM training_predictions"
        ).fetchall()}
    for e in events:
        datum = e.to_avro()
        row = stored[e.event_id]
        names = ["event_id", "job_id", "epoch", "step", "sample_index", "sequence_index", "prompt", "messages",
                 "ground_truth", "prediction", "prompt_id", "source_index", "sample_source", "sample_source_id",
                 "model_name", "generation", "prompt_tokens", "completion_tokens", "generation_ms", "produced_at",
                 "attempt"]
        got = dict(zip(names, row, strict=True))
        assert got == {**datum, "produced_at": datum["produced_at"]}, json.dumps(
            {k: (str(got[k]), str(datum[k])) for k in names if got[k] != datum[k]})
