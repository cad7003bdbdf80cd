"""The read model of migrations 0011/0012 equals the views it summarises, whatever wrote the
rows: the sink's COPY and upserts, a DELETE, two writers of one step at once, or rows stored
before the read model existed."""

from __future__ import annotations

import shutil
import threading
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from support import T0, make_event
from support.web_kit import ALPHA, store, story_events

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


def _summary_and_view(url: str) -> tuple[list[tuple], list[tuple]]:
    with psycopg.connect(url) as conn:
        summary = conn.execute(
            "SELECT job_id, step, predictions, correct, round(correct::numeric / NULLIF(graded, 0), 4)"
            " FROM prediction_step_summary WHERE predictions > 0 ORDER BY 1, 2").fetchall()
        view = conn.execute("SELECT job_id, step, predictions, correct, accuracy FROM prediction_accuracy_by_step"
                            " ORDER BY 1, 2").fetchall()
    return summary, view


def test_the_summary_follows_inserts_newer_versions_and_deletes(database_url):
    store(database_url, story_events())
    summary, view = _summary_and_view(database_url)
    assert summary == view and len(view) == 6
    # newer versions of alpha's step-10 answers (the sink's upsert path): all right now
    store(database_url, [make_event(i, job=ALPHA, step=10, produced_at=T0 + timedelta(hours=1))
                         for i in range(8) if i != 3])  # (3 is a chat prompt)
    summary, view = _summary_and_view(database_url)
    assert summary == view and (ALPHA, 10, 8, 8, 1) in summary
    with psycopg.connect(database_url) as conn:
        conn.execute("DELETE FROM training_predictions WHERE step = 20")
        conn.execute("UPDATE training_predictions SET prediction = 'changed' WHERE step = 30 AND sample_index < 4")
    summary, view = _summary_and_view(database_url)
    assert summary == view and {r[1] for r in view} == {10, 30}
    with psycopg.connect(database_url) as conn:
        runs = conn.execute("SELECT job_id, steps, prompts, first_step, last_step FROM prediction_run_summary"
                            " ORDER BY 1").fetchall()
    assert runs == [(ALPHA, 2, 8, 10, 30), ("beta-lr1e-3", 2, 8, 10, 30)]


def test_two_writers_of_one_step_at_once_leave_the_summary_right(database_url):
    first = [make_event(i, job="j", step=1) for i in range(50)]
    second = [make_event(i, job="j", step=1, prediction="wrong") for i in range(50, 100)]
    with psycopg.connect(database_url) as a:
        # a's rows are written, its trigger ran, it has not committed ...
        store_in = threading.Thread(target=store, args=(database_url, second))
        from predstream.consumer import IngestRecord, PostgresSink

        sink = PostgresSink(database_url)
        conn = sink._connection()
        with conn.transaction():
            sink._copy_new_rows(conn, [IngestRecord(e) for e in first])
            store_in.start()  # ... when b writes the same step: b waits for a's group lock
            store_in.join(1.0)
            assert store_in.is_alive(), "the second writer waits for the first"
        store_in.join(30)
        sink.close()
        del a
    summary, view = _summary_and_view(database_url)
    assert summary == view == [("j", 1, 100, 50, pytest.approx(0.5))]


def test_rows_stored_before_the_read_model_are_summarised_by_0012(empty_database_url, tmp_path):
    from predstream.consumer import ConsumerSettings, apply_migrations

    old = tmp_path / "migrations"
    old.mkdir()
    for f in sorted((ROOT / "migrations").glob("*.sql")):
        if f.name < "0011":
            shutil.copy(f, old)
    apply_migrations(ConsumerSettings(database_url=empty_database_url, migrations_dir=old))
    store(empty_database_url, story_events())
    for f in sorted((ROOT / "migrations").glob("*.sql")):
        shutil.copy(f, old)
    assert apply_migrations(ConsumerSettings(database_url=empty_database_url, migrations_dir=old)) == [
        "0011_read_model", "0012_read_model_backfill"]
    summary, view = _summary_and_view(empty_database_url)
    assert summary == view and len(view) == 6
    with psycopg.connect(empty_database_url) as conn:
        prompts = conn.execute("SELECT count(*) FROM prediction_prompts").fetchone()
        distinct = conn.execute("SELECT count(DISTINCT prompt_id) FROM training_predictions").fetchone()
    assert prompts == distinct == (8,)
