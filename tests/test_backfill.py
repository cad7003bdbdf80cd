"""Backfill: old-writer exports and spool files loaded into a real Postgres."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from predstream.consumer.backfill import BackfillError, file_kind, legacy_row_to_event, run_backfill
from predstream.consumer.settings import ConsumerSettings
from predstream.consumer.sink import IngestRecord, PostgresSink
from predstream.schemas.codec import SingleObjectEncoder
from predstream.schemas.errors import InvalidEventError
from predstream.schemas.event import event_id
from predstream.schemas.prompt_id import compute_prompt_id
from predstream.schemas.spoolfile import SPOOL_HEADER, encode_record
from support import make_event

CREATED = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)

#: Rows as the old writer's table held them (``SELECT row_to_json(t)`` / psql exports).
LEGACY = [
    # only the original columns
    {"id": 1, "job_id": "old-run", "epoch": 0, "step": 50, "sample_index": 0, "prompt": "2+2=",
     "ground_truth": "4", "prediction": "5", "created_at": "2025-03-01 10:00:00+00"},
    {"id": 2, "job_id": "old-run", "epoch": 0, "step": 50, "sample_index": 1, "prompt": "3+3=",
     "ground_truth": "6", "prediction": "6", "created_at": "2025-03-01T10:00:00.250000+00:00"},
    # phase 1 identity columns present
    {"id": 3, "job_id": "old-run", "epoch": 1, "step": 100, "sample_index": 0, "prompt": "2+2=",
     "ground_truth": "4", "prediction": "4", "created_at": "2025-03-01T11:00:00Z",
     "prompt_id": compute_prompt_id(None, "2+2="), "source_index": 17, "sample_source": "dataset",
     "sample_source_id": "eval.jsonl"},
    None,  # the invalid row goes here (line 4)
    # chat messages as the JSONB text of a later export, no plain prompt
    {"id": 5, "job_id": "old-run", "epoch": 1, "step": 100, "sample_index": 2, "prompt": None,
     "messages": json.dumps([{"role": "user", "content": "hi"}]), "ground_truth": None,
     "prediction": "hello", "created_at": "2025-03-01 11:00:00"},
]
BAD_ROW = {"id": 4, "job_id": "old-run", "epoch": 1, "step": 100, "sample_index": 1, "prompt": "3+3=",
           "ground_truth": "6", "created_at": "2025-03-01T11:00:00Z"}  # no prediction


def _export(path: Path, rows=LEGACY, bad=BAD_ROW) -> Path:
    lines = [json.dumps(bad if r is None else r) for r in rows]
    path.write_text("\n".join(lines) + "\n\n", encoding="utf-8")  # a trailing blank line is fine
    return path


def _rows(database_url: str) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT event_id, job_id, step, sample_index, prompt_id, source_index, sample_source,"
            " sample_source_id, prediction, created_at, produced_at FROM training_predictions"
            " ORDER BY step, sample_index"
        ).fetchall()


# -- legacy exports -----------------------------------------------------------------------


@pytest.mark.integration
def test_backfill_of_a_legacy_export_loads_good_rows_and_reports_the_bad_line(tmp_path, database_url):
    path = _export(tmp_path / "old.jsonl")
    report = run_backfill([path], ConsumerSettings(database_url=database_url))

    assert [(p.where, p.reason) for p in report.problems] == [("line 4", "missing-field:prediction")]
    assert str(report.problems[0]).startswith(f"{path}:line 4: ")
    f = report.files[0]
    assert (f.kind, f.read, f.inserted, f.invalid) == ("jsonl", 5, 4, 1)
    rows = _rows(database_url)
    assert len(rows) == 4
    first = rows[0]
    pid = compute_prompt_id(None, "2+2=")
    assert first[4] == pid and first[5] is None and first[6:8] == ("dataset", None)
    assert first[0] == event_id(job_id="old-run", step=50, sample_source="dataset", sample_source_id=None,
                                source_index=None, sample_index=0, prompt_id=pid)
    assert first[8] == "5" and first[9] == first[10] == CREATED  # created_at kept, produced_at = created_at
    identity = next(r for r in rows if r[2] == 100 and r[3] == 0)
    assert identity[4:8] == (pid, 17, "dataset", "eval.jsonl")
    chat = next(r for r in rows if r[3] == 2)
    assert chat[4] == compute_prompt_id([{"role": "user", "content": "hi"}], None)
    assert chat[9] == datetime(2025, 3, 1, 11, tzinfo=UTC)  # no zone: UTC


@pytest.mark.integration
def test_backfill_twice_adds_no_rows(tmp_path, database_url):
    path = _export(tmp_path / "old.jsonl")
    run_backfill([path], ConsumerSettings(database_url=database_url))
    before = _rows(database_url)
    again = run_backfill([path], ConsumerSettings(database_url=database_url, batch_size=2))

    assert again.total("inserted") == again.total("updated") == 0
    assert again.total("unchanged") == 4
    assert _rows(database_url) == before


@pytest.mark.integration
def test_a_real_event_for_a_backfilled_prediction_point_wins(tmp_path, database_url):
    run_backfill([_export(tmp_path / "old.jsonl")], ConsumerSettings(database_url=database_url))
    old = legacy_row_to_event(LEGACY[0])
    regenerated = old.model_copy(update={"prediction": "4", "produced_at": old.produced_at + timedelta(days=30)})
    with PostgresSink(database_url) as sink:
        result = sink.write([IngestRecord(regenerated)])
    assert result.updated == 1

    run_backfill([tmp_path / "old.jsonl"],
                 ConsumerSettings(database_url=database_url))  # loading the old export again changes nothing
    assert next(r for r in _rows(database_url) if r[0] == old.event_id)[8] == "4"


@pytest.mark.integration
def test_backfill_strict_loads_nothing_when_a_row_is_bad(tmp_path, database_url):
    path = _export(tmp_path / "old.jsonl")
    with pytest.raises(BackfillError, match=r"--strict: nothing loaded; .*old.jsonl:line 4: "):
        run_backfill([path], ConsumerSettings(database_url=database_url), strict=True)
    assert _rows(database_url) == []

    clean = _export(tmp_path / "clean.jsonl", rows=[r for r in LEGACY if r is not None])
    assert run_backfill([clean], ConsumerSettings(database_url=database_url), strict=True).total("inserted") == 4


# -- spool files ----------------------------------------------------------------------------


def _spool(path: Path, frames: list[bytes], cut: int = 0) -> Path:
    data = SPOOL_HEADER + b"".join(encode_record(f) for f in frames)
    path.write_bytes(data[: len(data) - cut] if cut else data)
    return path


@pytest.mark.integration
def test_backfill_of_a_spool_file_with_a_truncated_tail_loads_the_good_records(tmp_path, database_url):
    enc = SingleObjectEncoder()
    events = [make_event(i, job="spooled") for i in range(4)]
    frames = [enc.encode(e) for e in events[:2]] + [b"\x01garbage"] + [enc.encode(e) for e in events[2:]]
    path = _spool(tmp_path / "spool-0001.pspool", frames, cut=7)  # the last record is cut short
    good_size = len(SPOOL_HEADER) + sum(8 + len(f) for f in frames[:-1])

    report = run_backfill([path], ConsumerSettings(database_url=database_url))

    f = report.files[0]
    assert f.kind == "spool" and f.bad_tail == (good_size, 8 + len(frames[-1]) - 7, "truncated record")
    assert (f.read, f.inserted, f.invalid) == (4, 3, 1)
    assert [(p.reason, p.where) for p in report.problems] == [
        ("bad-framing", f"record 3 (byte {len(SPOOL_HEADER) + sum(8 + len(x) for x in frames[:2])})"),
        ("spool-tail", f"byte {good_size}"),
    ]
    assert {r[0] for r in _rows(database_url)} == {e.event_id for e in events[:3]}


@pytest.mark.integration
def test_backfill_loads_the_segments_the_training_sides_spool_wrote(tmp_path, database_url):
    from predstream.producer.spool import Spool, list_segments

    enc = SingleObjectEncoder()
    events = [make_event(i, job="outage") for i in range(25)]
    spool = Spool(tmp_path / "spool", segment_bytes=4096)  # several segments
    assert spool.append_many(enc.encode(e) for e in events) == 25
    spool.close()
    segments = list_segments(tmp_path / "spool")
    assert len(segments) > 1

    report = run_backfill(segments, ConsumerSettings(database_url=database_url))

    assert report.ok and {f.kind for f in report.files} == {"spool"}
    assert report.total("inserted") == 25
    assert {r[0] for r in _rows(database_url)} == {e.event_id for e in events}


@pytest.mark.integration
def test_backfill_command_loads_spool_and_export_together_and_exits_1_on_problems(tmp_path, database_url):
    from predstream.cli import app

    enc = SingleObjectEncoder()
    spool = _spool(tmp_path / "a.pspool", [enc.encode(make_event(i, job="spooled")) for i in range(3)])
    export = _export(tmp_path / "old.jsonl")
    result = CliRunner().invoke(app, ["backfill", str(spool), str(export), "--database-url", database_url])

    assert result.exit_code == 1, result.output
    assert f"not loaded: {export}:line 4: prediction is missing (missing-field:prediction)" in result.output
    assert f"{spool} [spool]: read 3, inserted 3" in result.output
    assert "2 file(s), 8 row(s) read: inserted 7" in result.output

    again = CliRunner().invoke(app, ["backfill", str(spool), "--database-url", database_url])
    assert again.exit_code == 0 and "inserted 0, updated 0, unchanged 3" in again.output


# -- units -----------------------------------------------------------------------------------


def test_legacy_rows_that_break_the_contract_say_why():
    base = {k: v for k, v in LEGACY[0].items()}
    cases = {
        "missing-field:created_at": {**base, "created_at": None},
        "wrong-type:created_at": {**base, "created_at": "last tuesday"},
        "invalid:sample_source": {**base, "sample_source": "legacy"},
        "out-of-range:step": {**base, "step": -1},
        "missing-field:prompt": {**base, "prompt": None},
        "nul-character:prediction": {**base, "prediction": "a\x00b"},
        "wrong-type:row": ["not", "an", "object"],
    }
    for reason, row in cases.items():
        with pytest.raises(InvalidEventError) as info:
            legacy_row_to_event(row)
        assert info.value.reason == reason, (reason, str(info.value))


def test_file_kind_is_told_by_the_first_bytes(tmp_path):
    (tmp_path / "s").write_bytes(SPOOL_HEADER)
    (tmp_path / "cut").write_bytes(SPOOL_HEADER[:4])
    (tmp_path / "j").write_text('{"a": 1}\n')
    (tmp_path / "arr").write_text('\n  [{"a": 1}]')
    assert [file_kind(tmp_path / n) for n in ("s", "cut", "j", "arr")] == ["spool", "spool", "jsonl", "json"]


def test_backfill_of_a_missing_file_fails_before_loading_anything(tmp_path):
    with pytest.raises(BackfillError, match="no such file"):
        run_backfill([tmp_path / "nope.jsonl"], ConsumerSettings(database_url="postgresql://unused@127.0.0.1:1/x"))
