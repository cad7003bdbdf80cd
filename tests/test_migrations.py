"""`predstream migrate`: once each, in order, under a lock, with checksums."""

from __future__ import annotations

import shutil
import threading

import psycopg
import pytest

from consumer.errors import MigrationError
from consumer.migrate import find_migrations, migrate, pending_migrations

pytestmark = pytest.mark.integration

_EXPECTED = [
    "0001_training_predictions",
    "0002_prediction_identity_columns",
    "0003_prediction_sets",
    "0004_streaming_ingest",
    "0005_comparison_views",
    "0006_event_attempt",
]


def _columns(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'training_predictions'"
        ).fetchall()
    return {r[0] for r in rows}


def _indexes(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'training_predictions'")}


def test_the_shipped_migrations_are_in_order():
    assert [m.name for m in find_migrations()] == _EXPECTED


def _check_schema(url: str) -> None:
    cols = _columns(url)
    for legacy in ("job_id", "epoch", "step", "sample_index", "prompt", "ground_truth", "prediction", "created_at"):
        assert legacy in cols
    for identity in ("prompt_id", "source_index", "sample_source", "sample_source_id", "set_id"):
        assert identity in cols
    for ingest in ("event_id", "kafka_topic", "kafka_partition", "kafka_offset", "produced_at", "ingested_at"):
        assert ingest in cols
    idx = _indexes(url)
    assert {"idx_training_predictions_job_prompt_id", "idx_training_predictions_job_source"} <= idx


def test_migrate_twice_applies_nothing_the_second_time(empty_database_url):
    assert migrate(empty_database_url) == _EXPECTED
    assert migrate(empty_database_url) == []
    assert pending_migrations(empty_database_url) == []
    _check_schema(empty_database_url)
    with psycopg.connect(empty_database_url) as conn:
        rows = conn.execute("SELECT version, name, length(checksum) FROM predstream_migrations ORDER BY version").fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [(i + 1, n, 64) for i, n in enumerate(_EXPECTED)]


def test_migrations_run_on_the_external_server_too(external_database_url):
    """With PREDSTREAM_DATABASE_URL (e.g. the machine's PostgreSQL 15), in a scratch schema-free database."""
    import uuid

    name = "predstream_mig_" + uuid.uuid4().hex[:8]
    with psycopg.connect(external_database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = psycopg.conninfo.make_conninfo(external_database_url, dbname=name)
    try:
        assert migrate(url) == _EXPECTED
        assert migrate(url) == []
        _check_schema(url)
    finally:
        with psycopg.connect(external_database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_two_concurrent_migrate_runs_apply_each_file_once(empty_database_url):
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(migrate(empty_database_url))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(results, key=len) == [[], _EXPECTED]
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("SELECT count(*) FROM predstream_migrations").fetchone()[0] == len(_EXPECTED)


def test_an_edited_applied_migration_stops_migrate_naming_the_file(empty_database_url, tmp_path):
    folder = tmp_path / "migrations"
    shutil.copytree(find_migrations()[0].path.parent, folder)
    migrate(empty_database_url, folder)
    (folder / "0002_prediction_identity_columns.sql").write_text("-- edited\nSELECT 1;\n")
    with pytest.raises(MigrationError, match="0002_prediction_identity_columns.sql was edited"):
        migrate(empty_database_url, folder)


def test_a_new_migration_file_is_applied_alone(empty_database_url, tmp_path):
    folder = tmp_path / "migrations"
    shutil.copytree(find_migrations()[0].path.parent, folder)
    migrate(empty_database_url, folder)
    (folder / "0099_extra.sql").write_text("CREATE TABLE extra_thing (id int);")
    assert migrate(empty_database_url, folder) == ["0099_extra"]


def test_a_failing_migration_rolls_back_and_names_the_file(empty_database_url, tmp_path):
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_ok.sql").write_text("CREATE TABLE ok_table (id int);")
    (folder / "0002_broken.sql").write_text("CREATE TABLE half (id int); SELECT no_such_column FROM ok_table;")
    with pytest.raises(MigrationError, match="0002_broken.sql failed"):
        migrate(empty_database_url, folder)
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("SELECT to_regclass('half')").fetchone()[0] is None
        assert conn.execute("SELECT count(*) FROM predstream_migrations").fetchone()[0] == 1


def test_a_badly_named_file_is_refused(tmp_path):
    (tmp_path / "add_things.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN_description.sql"):
        find_migrations(tmp_path)
