"""The read model of migrations 0011/0012 equals the views it summarises, whatever wrote the
rows: the sink's COPY and upserts, a DELETE, two writers of one step at once, or rows stored
before the read model existed."""

from __future__ import annotations

import shutil
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
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


def _assert_exact(url: str) -> None:
    """Every stored column of the step summary, and the runs it makes, equal the table's
    prediction_history: counts, epoch, model, first and last produced_at; no group left over."""
    with psycopg.connect(url) as conn:
        summary = conn.execute(
            "SELECT job_id, step, epoch, predictions, graded, correct, rows_total, model_name, first_at, last_at"
            " FROM prediction_step_summary ORDER BY 1, 2").fetchall()
        history = conn.execute(
            "SELECT job_id, step, max(epoch) FILTER (WHERE sequence_index = 0),"
            " count(*) FILTER (WHERE sequence_index = 0),"
            " count(*) FILTER (WHERE sequence_index = 0 AND is_correct IS NOT NULL),"
            " count(*) FILTER (WHERE sequence_index = 0 AND is_correct), count(*), max(model_name),"
            " min(produced_at), max(produced_at) FROM prediction_history GROUP BY 1, 2 ORDER BY 1, 2").fetchall()
        runs = conn.execute("SELECT job_id, model_name, steps, prompts, first_step, last_step, first_at, last_at"
                            " FROM prediction_run_summary ORDER BY 1").fetchall()
        expected_runs = conn.execute(
            "SELECT job_id, max(model_name), count(DISTINCT step) FILTER (WHERE sequence_index = 0),"
            " (SELECT max(predictions) FROM prediction_accuracy_by_step a WHERE a.job_id = h.job_id),"
            " min(step), max(step), min(produced_at), max(produced_at) FROM prediction_history h"
            " GROUP BY job_id ORDER BY 1").fetchall()
    assert summary == history
    assert runs == expected_runs


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
    _assert_exact(database_url)


def test_a_newer_version_with_another_answer_moves_the_step_s_accuracy_and_times(database_url):
    store(database_url, [make_event(i, job="j", step=5) for i in range(10)])  # all right
    # attempt 2 of prompts 0-3: wrong now, produced an hour later, at another epoch
    store(database_url, [make_event(i, job="j", step=5, prediction="wrong", produced_at=T0 + timedelta(hours=1),
                                    epoch=0.07, model_name="tiny-2") for i in range(4)])
    summary, view = _summary_and_view(database_url)
    assert summary == view == [("j", 5, 10, 6, Decimal("0.6000"))]
    _assert_exact(database_url)
    with psycopg.connect(database_url) as conn:
        first_at, last_at, epoch, model = conn.execute(
            "SELECT first_at, last_at, epoch, model_name FROM prediction_step_summary").fetchone()
    assert (first_at, last_at - first_at, epoch, model) == (T0 + timedelta(seconds=5), timedelta(hours=1) - timedelta(
        seconds=5), 0.07, "tiny-2")
    # every prompt replaced, the newer ones earlier than the first: the extremes are recomputed
    store(database_url, [make_event(i, job="j", step=5, produced_at=T0 + timedelta(hours=2 + i), epoch=0.01,
                                    model_name="a-model") for i in range(10)])
    summary, view = _summary_and_view(database_url)
    assert summary == view == [("j", 5, 10, 10, Decimal("1.0000"))]
    _assert_exact(database_url)


def test_a_delete_takes_its_rows_out_and_a_group_s_last_row_its_summary(database_url):
    store(database_url, [make_event(i, job="j", step=s, produced_at=T0 + timedelta(seconds=s * 100 + i),
                                    prediction=None if i % 3 else "no")
                         for s in (1, 2, 3) for i in range(9)])
    with psycopg.connect(database_url) as conn:
        # the first and the last row of step 1, a wrong one of step 2, all of step 3
        conn.execute("DELETE FROM training_predictions WHERE (step = 1 AND sample_index IN (0, 8))"
                     " OR (step = 2 AND sample_index = 3) OR step = 3")
    summary, view = _summary_and_view(database_url)
    assert summary == view == [("j", 1, 7, 5, Decimal("0.7143")), ("j", 2, 8, 6, Decimal("0.7500"))]
    _assert_exact(database_url)
    with psycopg.connect(database_url) as conn:
        conn.execute("TRUNCATE training_predictions")
    assert _summary_and_view(database_url) == ([], [])
    _assert_exact(database_url)


def test_one_copy_of_many_runs_and_steps_summarises_each_group(database_url):
    events = [make_event(i, job=f"run-{j}", step=s, prediction=None if (i + s + j) % 4 else "wrong",
                         sequence_index=i % 2 if j == 1 else 0, model_name=f"m{j}")
              for j in range(5) for s in range(0, 200, 10) for i in range(12)]
    store(database_url, events)  # one batch: one COPY
    summary, view = _summary_and_view(database_url)
    assert summary == view and len(view) == 5 * 20
    _assert_exact(database_url)


def test_two_transactions_interleaving_writes_of_one_run_both_count(database_url):
    """a writes step 1, b writes step 2 meanwhile (no wait: another group), then b writes step 1
    too and waits for a's commit, then both have committed: every row counted once. (A writer
    also waits for another's uncommitted first record of the same prompt.)"""
    def rows(step: int, lo: int, hi: int, prediction: str | None = None) -> list:
        from predstream.consumer import IngestRecord

        return [IngestRecord(make_event(i, job="j", step=step, prediction=prediction)) for i in range(lo, hi)]

    from predstream.consumer import PostgresSink

    with PostgresSink(database_url) as sa, PostgresSink(database_url) as sb:
        a, b = sa._connection(), sb._connection()
        with a.transaction():
            sa._copy_new_rows(a, rows(1, 0, 20), None, datetime.now(UTC))
            b_done = threading.Event()

            def b_writes() -> None:
                with b.transaction():
                    # (prompts a has not written)
                    sb._copy_new_rows(b, rows(2, 100, 120, "wrong"), None, datetime.now(UTC))
                    b_done.set()  # step 2 written while a is open
                    sb._copy_new_rows(b, rows(1, 20, 30, "wrong"), None, datetime.now(UTC))

            writer = threading.Thread(target=b_writes)
            writer.start()
            assert b_done.wait(30), "a writer of another step does not wait"
            writer.join(1.0)
            assert writer.is_alive(), "a writer of the same step waits for the first's commit"
            sa._copy_new_rows(a, rows(1, 30, 35), None, datetime.now(UTC))
        writer.join(30)
        assert not writer.is_alive()
    summary, view = _summary_and_view(database_url)
    assert summary == view == [("j", 1, 35, 25, Decimal("0.7143")), ("j", 2, 20, 0, 0)]
    _assert_exact(database_url)


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
            sink._copy_new_rows(conn, [IngestRecord(e) for e in first], None, datetime.now(UTC))
            store_in.start()  # ... when b writes the same step: b waits for a's group lock
            store_in.join(1.0)
            assert store_in.is_alive(), "the second writer waits for the first"
        store_in.join(30)
        sink.close()
        del a
    summary, view = _summary_and_view(database_url)
    assert summary == view == [("j", 1, 100, 50, pytest.approx(0.5))]
    _assert_exact(database_url)


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
    _assert_exact(empty_database_url)
    with psycopg.connect(empty_database_url) as conn:
        prompts = conn.execute("SELECT count(*) FROM prediction_prompts").fetchone()
        distinct = conn.execute("SELECT count(DISTINCT prompt_id) FROM training_predictions").fetchone()
    assert prompts == distinct == (8,)
