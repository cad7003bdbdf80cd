"""`predstream identify`: the old writer's rows get their prompt_id and event_id, on a live table."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row
from typer.testing import CliRunner

from predstream.cli import app
from predstream.consumer.backfill import legacy_row_to_event, run_backfill
from predstream.consumer.compare import compare_runs
from predstream.consumer.errors import IdentifyError
from predstream.consumer.identify import identify_legacy_rows
from predstream.consumer.migrate import apply_migrations, find_migrations
from predstream.consumer.settings import ConsumerSettings
from predstream.consumer.sink import IngestRecord, PostgresSink
from predstream.schemas.event import PredictionEvent
from predstream.schemas.prompt_id import compute_prompt_id

pytestmark = pytest.mark.integration

T0 = datetime(2025, 6, 1, tzinfo=UTC)
_OLD_INSERT = ("INSERT INTO training_predictions (job_id, epoch, step, sample_index, prompt, ground_truth, prediction,"
               " created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)")
_PROMPTS = [(f"{a}+{a}=", str(2 * a)) for a in range(20)]


def _old_writer_rows(url: str, job: str, steps=(100, 200), prompts=_PROMPTS, at: datetime = T0) -> None:
    """Rows as the old direct-to-database writer stored them: no identity columns."""
    rows = [(job, s // 100, s, i, p, gt, f"guess {s} {i}", at + timedelta(seconds=s))
            for s in steps for i, (p, gt) in enumerate(prompts)]
    with psycopg.connect(url) as conn:
        conn.cursor().executemany(_OLD_INSERT, rows)


def _table(url: str) -> list[dict]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute("SELECT *, xmin::text AS version FROM training_predictions ORDER BY id").fetchall()


def _export(url: str, path: Path) -> Path:
    """`SELECT row_to_json(t)`: how an export of the old table is made."""
    with psycopg.connect(url) as conn:
        lines = [r[0] for r in conn.execute("SELECT row_to_json(t)::text FROM training_predictions t ORDER BY id")]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class _OldWriter(threading.Thread):
    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stop, self.count, self.errors = url, threading.Event(), 0, []

    def run(self) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                while not self.stop.is_set():
                    conn.execute(_OLD_INSERT, ("live-run", 0, 10 + self.count, 0, f"live {self.count}", None, "x",
                                               T0 + timedelta(seconds=self.count)))
                    self.count += 1
                    time.sleep(0.002)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)


def test_identify_gives_every_old_row_the_identity_backfill_would_while_the_old_writer_inserts(database_url):
    _old_writer_rows(database_url, "old-a", steps=range(0, 2500, 100))  # 500 rows
    _old_writer_rows(database_url, "old-b", steps=range(0, 2500, 100))
    writer = _OldWriter(database_url)
    writer.start()
    try:
        first = identify_legacy_rows(ConsumerSettings(database_url=database_url, identify_batch_size=97))
    finally:
        writer.stop.set()
        writer.join(10)
    assert not writer.errors and writer.count > 0
    assert first.ok and first.duplicates == []
    assert first.identified == first.examined == first.to_examine >= 1000

    again = identify_legacy_rows(ConsumerSettings(database_url=database_url,
                                                  identify_batch_size=97))  # the rows the writer added meanwhile
    rows = _table(database_url)
    assert first.identified + again.identified == len(rows) == 1000 + writer.count
    for row in rows:
        expected = legacy_row_to_event(json.loads(json.dumps({k: v for k, v in row.items()}, default=str)))
        assert (row["event_id"], row["prompt_id"], row["sample_source"]) == (
            expected.event_id, expected.prompt_id, "dataset")
        assert row["produced_at"] == row["created_at"]

    third = identify_legacy_rows(ConsumerSettings(database_url=database_url))
    assert (third.examined, third.identified) == (0, 0)
    assert _table(database_url) == rows  # not one row written again (xmin unchanged)


def test_compare_shows_the_old_rows_once_identified(database_url):
    _old_writer_rows(database_url, "old-run", prompts=_PROMPTS[:3])
    new = [PredictionEvent.create(job_id="new-run", epoch=1, step=100, sample_index=i, prompt=p, ground_truth=gt,
                                  prediction=gt, sample_source="dataset", produced_at=T0)
           for i, (p, gt) in enumerate(_PROMPTS[:3])]
    with PostgresSink(database_url) as sink:
        sink.write([IngestRecord(e) for e in new])
    assert compare_runs(ConsumerSettings(database_url=database_url), ["old-run", "new-run"]).prompts == []

    identify_legacy_rows(ConsumerSettings(database_url=database_url))
    result = compare_runs(ConsumerSettings(database_url=database_url), ["old-run", "new-run"])
    assert [p.prompt_id for p in result.prompts] == sorted(compute_prompt_id(None, p) for p, _ in _PROMPTS[:3])
    history = next(p for p in result.prompts if p.prompt == "0+0=")
    assert history.predictions == {"old-run": {100: ("guess 100 0", False), 200: ("guess 200 0", False)},
                                   "new-run": {100: ("0", True)}}


@pytest.mark.parametrize("identify_first", [False, True], ids=["not-identified-yet", "identified"])
def test_backfill_of_the_old_tables_export_into_the_same_database_adds_nothing(database_url, tmp_path, identify_first):
    _old_writer_rows(database_url, "old-run", prompts=_PROMPTS[:5])
    export = _export(database_url, tmp_path / "old.jsonl")
    if identify_first:
        identify_legacy_rows(ConsumerSettings(database_url=database_url))
    for _ in range(2):
        report = run_backfill([export], ConsumerSettings(database_url=database_url, batch_size=3))
        assert report.ok, report.problems
        assert (report.total("inserted"), report.total("updated"), report.total("unchanged")) == (0, 0, 10)
        assert len(_table(database_url)) == 10
    assert all(r["event_id"] for r in _table(database_url))


def test_two_copies_of_a_prediction_point_keep_the_newest_and_report_the_other(database_url):
    _old_writer_rows(database_url, "old-run", steps=(100,), prompts=_PROMPTS[:2], at=T0 + timedelta(hours=1))
    _old_writer_rows(database_url, "old-run", steps=(100,), prompts=_PROMPTS[:1])  # written again, but older
    _old_writer_rows(database_url, "old-run", steps=(100,), prompts=_PROMPTS[:1], at=T0 + timedelta(hours=2))
    ids = [r["id"] for r in _table(database_url)]  # [hour 1: p0, p1], [hour 0: p0], [hour 2: p0]

    for batch_size in (1, 1000):  # across batches as within one; the second run changes nothing
        report = identify_legacy_rows(ConsumerSettings(database_url=database_url, identify_batch_size=batch_size))
        assert report.ok
        rows = {r["id"]: r for r in _table(database_url)}
        assert rows[ids[3]]["event_id"] and rows[ids[1]]["event_id"]
        assert rows[ids[0]]["event_id"] is rows[ids[2]]["event_id"] is None
        assert rows[ids[0]]["prompt_id"] == rows[ids[3]]["prompt_id"] == compute_prompt_id(None, _PROMPTS[0][0])
        assert sorted((d.id, d.kept_id) for d in report.duplicates) == [(ids[0], ids[3]), (ids[2], ids[3])]


def test_a_row_whose_stored_prompt_id_is_not_its_prompts_is_reported_and_left_alone(database_url):
    _old_writer_rows(database_url, "old-run", steps=(100,), prompts=_PROMPTS[:2])
    with psycopg.connect(database_url) as conn:
        wrong = conn.execute("UPDATE training_predictions SET prompt_id = repeat('0', 64) WHERE sample_index = 1"
                             " RETURNING id").fetchone()[0]
    result = CliRunner().invoke(app, ["identify", "--database-url", database_url, "--no-progress"])
    assert result.exit_code == 1, result.output
    assert (f"not identified: row {wrong} (job old-run, step 100, sample 1): prompt_id 000000000000... "
            "does not match") in result.output
    assert "(identity-mismatch)" in result.output
    assert "2 row(s) without identity examined: 1 identified" in result.output
    row = next(r for r in _table(database_url) if r["id"] == wrong)
    assert row["event_id"] is None and row["prompt_id"] == "0" * 64


def test_identify_command_prints_progress_and_a_summary(database_url):
    _old_writer_rows(database_url, "old-run", steps=range(0, 1000, 100))
    result = CliRunner().invoke(app, ["identify", "--database-url", database_url, "--batch-size", "50"])
    assert result.exit_code == 0, result.output
    assert "identify: 50 of 200 rows without identity examined (25%)" in result.output
    assert "200 row(s) without identity examined: 200 identified, 0 duplicate(s)" in result.output
    result = CliRunner().invoke(app, ["identify", "--database-url", database_url, "--job", "old-run"])
    assert result.exit_code == 0 and "0 row(s) without identity examined" in result.output


def test_identify_on_a_database_not_migrated_says_to_migrate(empty_database_url, tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    for mig in find_migrations():
        if mig.version <= 5:
            (base / mig.path.name).write_text(mig.sql)
    apply_migrations(ConsumerSettings(database_url=empty_database_url, migrations_dir=base))
    with pytest.raises(IdentifyError, match=r"not migrated .*run `predstream migrate` first"):
        identify_legacy_rows(ConsumerSettings(database_url=empty_database_url))
