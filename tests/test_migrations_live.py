"""`predstream migrate` on a big table that the old writer keeps inserting into.

A fresh install on a database the old direct-to-database writer already filled: the table is
there with a million rows and no predstream indexes, and the old writer goes on inserting
(its INSERT, event_id NULL) while `migrate` builds every index and the UNIQUE (event_id)
constraint. No insert may wait a second. Also: the headline query, "every run's answer to
prompt X", is a sequential scan before and an index scan after.
"""

from __future__ import annotations

import shutil
import threading
import time

import psycopg
import pytest

from predstream.consumer.migrate import apply_migrations, find_migrations
from predstream.consumer.settings import ConsumerSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROWS = 1_000_000
#: 200 jobs x 10 steps x 500 prompts; every tenth row is the old writer's (no event_id).
_FILL = """
INSERT INTO training_predictions
    (job_id, epoch, step, sample_index, prompt, ground_truth, prediction, prompt_id, source_index,
     sample_source, event_id, created_at)
SELECT 'job-' || (i / 5000), 0, (i / 500) %% 10 * 100, i %% 500, 'what is ' || (i %% 500) || '?', 'gt', 'pred',
       encode(sha256(('p' || (i %% 500))::bytea), 'hex'), i %% 500, 'dataset',
       CASE WHEN i %% 10 = 0 THEN NULL ELSE encode(sha256(('e' || i)::bytea), 'hex') END,
       now() - interval '30 days'
FROM generate_series(0, %s - 1) AS i
"""
_OLD_WRITER_INSERT = (
    "INSERT INTO training_predictions (job_id, epoch, step, sample_index, prompt, ground_truth, prediction) "
    "VALUES (%s, 0, %s, %s, %s, NULL, %s)"
)
_HEADLINE = "SELECT job_id, step, prediction FROM prediction_history WHERE prompt_id = %s ORDER BY job_id, step"


class _OldWriter(threading.Thread):
    """Inserts rows the old way, one at a time, and keeps each insert's latency."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.latencies: list[float] = []
        self.errors: list[BaseException] = []
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                n = 0
                while not self.stop.is_set():
                    started = time.perf_counter()
                    conn.execute(_OLD_WRITER_INSERT, ("old-writer", n, n % 500, f"live {n}", "p"))
                    self.latencies.append(time.perf_counter() - started)
                    n += 1
                    time.sleep(0.005)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)


def _plan(conn: psycopg.Connection, prompt: str) -> str:
    rows = conn.execute("EXPLAIN " + _HEADLINE, (prompt,)).fetchall()
    return "\n".join(r[0] for r in rows)


def test_migrate_on_a_million_row_table_never_blocks_the_old_writer(empty_database_url, tmp_path):
    url = empty_database_url
    base = tmp_path / "base"
    base.mkdir()
    for mig in find_migrations():
        if mig.version <= 5:
            shutil.copy(mig.path, base)
    # the table, its columns and the views: no predstream index yet
    apply_migrations(ConsumerSettings(database_url=url, migrations_dir=base))
    started = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_FILL, (ROWS,))
        conn.execute("VACUUM ANALYZE training_predictions")
        prompt = conn.execute("SELECT encode(sha256('p7'::bytea), 'hex')").fetchone()[0]
        assert "Seq Scan on training_predictions" in _plan(conn, prompt)
    filled = time.monotonic() - started

    writer = _OldWriter(url)
    writer.start()
    time.sleep(0.3)
    started = time.monotonic()
    try:
        applied = apply_migrations(ConsumerSettings(database_url=url))
    finally:
        took = time.monotonic() - started
        time.sleep(0.3)
        writer.stop.set()
        writer.join(10)
    assert not writer.errors, writer.errors
    assert "0007_concurrent_indexes" in applied and "0008_prompt_history_index" in applied

    lat = sorted(writer.latencies)
    print(f"\nfill {ROWS} rows: {filled:.1f} s; migrate {took:.1f} s ({', '.join(applied)}); "
          f"old writer: {len(lat)} inserts, median {lat[len(lat) // 2] * 1000:.1f} ms, "
          f"p99 {lat[int(len(lat) * 0.99)] * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms")
    assert len(lat) >= 20, "the writer must have been inserting during the migration"
    assert lat[-1] < 1.0, f"an insert of the old writer waited {lat[-1]:.2f} s during the migration"

    with psycopg.connect(url, autocommit=True) as conn:
        invalid = conn.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE NOT i.indisvalid"
        ).fetchall()
        assert invalid == []
        assert conn.execute(
            "SELECT contype FROM pg_constraint WHERE conname = 'training_predictions_event_id_key'"
        ).fetchone() == ("u",)
        assert conn.execute("SELECT count(*) FROM training_predictions").fetchone()[0] == ROWS + len(lat)
        conn.execute("ANALYZE training_predictions")
        plan = _plan(conn, prompt)
        assert "idx_training_predictions_prompt_id" in plan and "Seq Scan" not in plan, plan


def test_a_concurrent_build_cancelled_midway_is_finished_by_the_next_migrate(empty_database_url, tmp_path):
    """The build of the UNIQUE (event_id) index is cancelled while it runs (as a DBA's
    pg_cancel_backend or a lost session would): Postgres leaves the index INVALID; the next
    `migrate` drops and rebuilds it, attaches the constraint and records 0007 once."""
    from predstream.consumer.errors import MigrationError

    url = empty_database_url
    base = tmp_path / "base"
    base.mkdir()
    for mig in find_migrations():
        if mig.version <= 5:
            shutil.copy(mig.path, base)
    apply_migrations(ConsumerSettings(database_url=url, migrations_dir=base))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_FILL, (300_000,))
    cancelled: list[str] = []

    def cancel_the_build() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not cancelled:
                row = conn.execute(
                    "SELECT pid, phase FROM pg_stat_progress_create_index WHERE datname = current_database()"
                    " AND index_relid = to_regclass('training_predictions_event_id_key')").fetchone()
                if row and row[1].startswith("building index"):
                    conn.execute("SELECT pg_cancel_backend(%s)", (row[0],))
                    cancelled.append(row[1])
                time.sleep(0.005)

    canceller = threading.Thread(target=cancel_the_build)
    canceller.start()
    with pytest.raises(MigrationError,
                       match=r"0007_concurrent_indexes.sql failed at statement 4 of 5: canceling statement"):
        apply_migrations(ConsumerSettings(database_url=url))
    canceller.join(60)
    assert cancelled
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT indisvalid FROM pg_index"
                            " WHERE indexrelid = 'training_predictions_event_id_key'::regclass"
                            ).fetchone() == (False,)

    assert "0007_concurrent_indexes" in apply_migrations(ConsumerSettings(database_url=url))
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_index WHERE NOT indisvalid").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM pg_constraint WHERE conname = 'training_predictions_event_id_key'"
                            ).fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM predstream_migrations WHERE version = 7").fetchone()[0] == 1
