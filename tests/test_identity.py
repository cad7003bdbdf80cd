"""Identities are verified, not trusted: consumer, replay and backfill recompute prompt_id and
event_id from the event's own fields and refuse a mismatch (reason identity-mismatch)."""

from __future__ import annotations

import json
from datetime import timedelta

import psycopg
import pytest

from predstream.consumer import list_dead_letters
from predstream.consumer.backfill import run_backfill
from predstream.consumer.replay import run_replay
from predstream.consumer.settings import ConsumerSettings
from predstream.schemas import identity
from predstream.schemas.codec import Decoder, SingleObjectEncoder
from predstream.schemas.errors import InvalidEventError
from predstream.schemas.identity import IDENTITY_MISMATCH, check_identity
from support import T0, make_event, wait_for
from support.consumer_kit import count_rows, produce, worker_thread
from support.contract_kit import frame_0_1, record_0_1

DEC = Decoder()
ENC = SingleObjectEncoder()


def _forged(event, **fields) -> bytes:
    """A frame of ``event`` with some fields changed and its ids left as they were."""
    return ENC.encode_record({**event.to_avro(), **fields})


def _refusal(frame: bytes) -> InvalidEventError:
    with pytest.raises(InvalidEventError) as info:
        DEC.decode(frame)
    assert info.value.reason == IDENTITY_MISMATCH
    return info.value


@pytest.mark.parametrize("fields", [
    {},
    {"prompt": None, "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "héllo"}]},
    {"messages": [], "prompt": "with an empty list"},
    {"source_index": None, "sample_source": "prediction_set", "sample_source_id": "ps_1", "sequence_index": 2},
    {"attempt": 3},
])
def test_events_our_producer_makes_verify(fields):
    event = make_event(5, **fields)
    assert DEC.decode(ENC.encode(event)) == event


@pytest.mark.parametrize("fields", [
    {"prompt": "2+2="},
    {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "naïve ☃"}]},
    {"messages": [{"role": "user", "content": "q"}], "prompt": "and text", "source_index": None},
])
def test_events_written_by_a_0_1_producer_still_verify(fields):
    record = record_0_1(**fields)
    event = DEC.decode(frame_0_1(record))
    assert (event.prompt_id, event.event_id, event.attempt) == (record["prompt_id"], record["event_id"], 0)


def test_a_borrowed_event_id_is_refused_naming_the_id_and_both_values():
    victim, attacker = make_event(1, job="victim"), make_event(1, job="attacker")
    error = _refusal(_forged(attacker, event_id=victim.event_id))
    text = str(error)
    assert text.startswith("event_id ") and victim.event_id[:12] in text and attacker.event_id[:12] in text
    assert victim.event_id not in text  # shortened


def test_a_prompt_id_that_is_not_its_prompts_is_refused():
    a, b = make_event(1), make_event(2)
    text = str(_refusal(_forged(a, prompt_id=b.prompt_id)))
    assert text.startswith("prompt_id ") and b.prompt_id[:12] in text and a.prompt_id[:12] in text


@pytest.mark.parametrize("change", [
    {"job_id": "other"}, {"step": 11}, {"sample_index": 9}, {"source_index": None}, {"sequence_index": 1},
    {"sample_source": "prediction_set"}, {"sample_source_id": "elsewhere"},
])
def test_changing_any_field_of_the_identity_without_its_id_is_refused(change):
    _refusal(_forged(make_event(1), **change))


def test_fields_outside_the_identity_can_change():
    event = make_event(1)
    got = DEC.decode(_forged(event, prediction="new", produced_at=T0 + timedelta(days=1), attempt=4, model_name="m"))
    assert (got.prediction, got.attempt) == ("new", 4)


def test_a_prompt_verified_before_does_not_vouch_for_other_content_under_its_id():
    honest = make_event(1, prompt=None, messages=[{"role": "user", "content": "hi"}])
    DEC.decode(ENC.encode(honest))  # remembered as verified
    _refusal(_forged(honest, messages=[{"role": "user", "content": "hi!"}]))
    _refusal(_forged(honest, messages=[{"role": "assistant", "content": "hi"}]))
    _refusal(_forged(honest, prompt="hi"))  # messages and a prompt: other content
    long = make_event(2, prompt="x" * (identity._MAX_CHARS + 1))  # too long to remember: hashed each time
    check_identity(long)
    check_identity(long)
    _refusal(_forged(long, prompt="y" * (identity._MAX_CHARS + 1)))


def test_the_memory_of_verified_prompts_is_bounded(monkeypatch):
    monkeypatch.setattr(identity, "_MAX_ENTRIES", 10)
    monkeypatch.setattr(identity, "_verified", {})
    for i in range(25):
        check_identity(make_event(i))
        assert len(identity._verified) <= 10


def test_an_exported_row_with_a_wrong_prompt_id_is_refused_by_backfill(tmp_path, monkeypatch):
    """No database needed to refuse it: the row is checked before the write."""
    from predstream.consumer.backfill import legacy_row_to_event

    row = {"job_id": "old", "step": 1, "sample_index": 0, "prompt": "2+2=", "prediction": "4",
           "created_at": "2026-01-01T00:00:00Z", "prompt_id": make_event(9).prompt_id}
    with pytest.raises(InvalidEventError) as info:
        legacy_row_to_event(row)
    assert info.value.reason == IDENTITY_MISMATCH
    good = legacy_row_to_event({**row, "prompt_id": None})
    with pytest.raises(InvalidEventError, match="^event_id"):
        legacy_row_to_event({**row, "prompt_id": good.prompt_id, "event_id": make_event(9).event_id})
    assert legacy_row_to_event({**row, "prompt_id": good.prompt_id, "event_id": good.event_id}) == good


# -- against the real broker and Postgres -------------------------------------------------


@pytest.mark.integration
def test_an_event_reusing_another_rows_event_id_never_moves_that_row(consumer_settings, database_url):
    victim = make_event(1, job="victim", prediction="mine", produced_at=T0)
    forged = _forged(make_event(1, job="attacker"), event_id=victim.event_id, prediction="taken",
                     produced_at=T0 + timedelta(days=1), attempt=99)
    bootstrap, topic = consumer_settings.kafka_bootstrap, consumer_settings.topic
    produce(bootstrap, topic, [(victim.prompt_id.encode(), ENC.encode(victim), None)])
    with worker_thread(consumer_settings):
        wait_for(lambda: count_rows(database_url) == 1, 60, "the victim's row")
        produce(bootstrap, topic, [(b"forged", forged, None)])
        wait_for(lambda: list_dead_letters(consumer_settings, limit=None), 60, "the forged event's dead letter")
    (letter,) = list_dead_letters(consumer_settings, limit=None)
    assert letter.reason == "identity-mismatch" and letter.value == forged
    assert letter.error.startswith("event_id ") and victim.event_id[:12] in letter.error
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT job_id, prediction, attempt FROM training_predictions").fetchall() == [
            ("victim", "mine", 0)]

    # replayed: counted invalid, the row still untouched
    stats = run_replay(consumer_settings)
    assert (stats.read, stats.invalid, stats.by_reason, stats.unchanged) == (2, 1, {"identity-mismatch": 1}, 1)
    assert count_rows(database_url, "job_id = 'victim' AND prediction = 'mine'") == 1


@pytest.mark.integration
def test_backfill_refuses_a_line_whose_prompt_id_is_not_its_prompts_and_loads_the_rest(tmp_path, database_url):
    lines = [
        {"job_id": "old", "step": 1, "sample_index": 0, "prompt": "2+2=", "prediction": "4",
         "created_at": "2026-01-01"},
        {"job_id": "old", "step": 1, "sample_index": 1, "prompt": "3+3=", "prediction": "6", "created_at": "2026-01-01",
         "prompt_id": make_event(3).prompt_id},
    ]
    export = tmp_path / "export.jsonl"
    export.write_text("".join(json.dumps(r) + "\n" for r in lines))
    spool_frame = _forged(make_event(4, job="spooled"), step=99)
    report = run_backfill([export], ConsumerSettings(database_url=database_url))
    (problem,) = report.problems
    assert (problem.where, problem.reason) == ("line 2", "identity-mismatch") and "prompt_id" in problem.message
    assert count_rows(database_url) == 1
    from predstream.schemas.spoolfile import SPOOL_HEADER, encode_record

    spool = tmp_path / "seg.spool"
    spool.write_bytes(SPOOL_HEADER + encode_record(ENC.encode(make_event(5, job="spooled")))
                      + encode_record(spool_frame))
    report = run_backfill([spool], ConsumerSettings(database_url=database_url))
    assert [(p.where.split(" (")[0], p.reason) for p in report.problems] == [("record 2", "identity-mismatch")]
    assert count_rows(database_url) == 2
