"""`predstream migrate`: once each, in order, under a lock, with checksums."""

from __future__ import annotations

import re
import shutil
import threading
import time
from pathlib import Path

import psycopg
import pytest

from predstream.consumer import migrate as migrate_module
from predstream.consumer._sqlsplit import split_statements
from predstream.consumer.errors import MigrationError
from predstream.consumer.migrate import SUPERSEDED_CHECKSUMS, apply_migrations, find_migrations, pending_migrations
from predstream.consumer.settings import ConsumerSettings

pytestmark = pytest.mark.integration

_EXPECTED = [
    "0001_training_predictions",
    "0002_prediction_identity_columns",
    "0003_prediction_sets",
    "0004_streaming_ingest",
    "0005_comparison_views",
    "0006_event_attempt",
    "0007_concurrent_indexes",
    "0008_prompt_history_index",
    "0010_immutable_prediction_sets",
    "0011_read_model",
    "0012_read_model_backfill",
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
    assert apply_migrations(ConsumerSettings(database_url=empty_database_url)) == _EXPECTED
    assert apply_migrations(ConsumerSettings(database_url=empty_database_url)) == []
    assert pending_migrations(ConsumerSettings(database_url=empty_database_url)) == []
    _check_schema(empty_database_url)
    with psycopg.connect(empty_database_url) as conn:
        rows = conn.execute("SELECT version, name, length(checksum) FROM predstream_migrations"
                            " ORDER BY version").fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [(int(n[:4]), n, 64) for n in _EXPECTED]


def test_migrations_run_on_the_external_server_too(external_database_url):
    """With PREDSTREAM_DATABASE_URL (e.g. the machine's PostgreSQL 15), in a scratch schema-free database."""
    import uuid

    name = "predstream_mig_" + uuid.uuid4().hex[:8]
    with psycopg.connect(external_database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = psycopg.conninfo.make_conninfo(external_database_url, dbname=name)
    try:
        assert apply_migrations(ConsumerSettings(database_url=url)) == _EXPECTED
        assert apply_migrations(ConsumerSettings(database_url=url)) == []
        _check_schema(url)
    finally:
        with psycopg.connect(external_database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_two_concurrent_migrate_runs_apply_each_file_once(empty_database_url):
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(apply_migrations(ConsumerSettings(database_url=empty_database_url)))
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
    apply_migrations(ConsumerSettings(database_url=empty_database_url, migrations_dir=folder))
    (folder / "0002_prediction_identity_columns.sql").write_text("-- edited\nSELECT 1;\n")
    with pytest.raises(MigrationError, match="0002_prediction_identity_columns.sql was edited"):
        apply_migrations(ConsumerSettings(database_url=empty_database_url, migrations_dir=folder))


def test_a_new_migration_file_is_applied_alone(empty_database_url, tmp_path):
    folder = tmp_path / "migrations"
    shutil.copytree(find_migrations()[0].path.parent, folder)
    apply_migrations(ConsumerSettings(database_url=empty_database_url, migrations_dir=folder))
    (folder / "0099_extra.sql").write_text("CREATE TABLE extra_thing (id int);")
    assert apply_migrations(ConsumerSettings(database_url=empty_database_url, migrations_dir=folder)) == ["0099_extra"]


def test_a_failing_migration_rolls_back_and_names_the_file(empty_database_url, tmp_path):
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_ok.sql").write_text("CREATE TABLE ok_table (id int);")
    (folder / "0002_broken.sql").write_text("CREATE TABLE half (id int); SELECT no_such_column FROM ok_table;")
    with pytest.raises(MigrationError, match="0002_broken.sql failed"):
        apply_migrations(ConsumerSettings(database_url=empty_database_url, migrations_dir=folder))
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("SELECT to_regclass('half')").fetchone()[0] is None
        assert conn.execute("SELECT count(*) FROM predstream_migrations").fetchone()[0] == 1


def test_a_badly_named_file_is_refused(tmp_path):
    (tmp_path / "add_things.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN_description.sql"):
        find_migrations(tmp_path)


# -- big live tables: concurrent index builds, no-transaction files, 0.1 databases -----------

_DATA_0_1 = Path(__file__).resolve().parent / "data" / "migrations_0_1"


def _schema(url: str) -> dict[str, list[tuple]]:
    """What a user's queries can see of the schema: columns, indexes, constraints, views."""
    with psycopg.connect(url) as conn:
        return {
            "columns": conn.execute(
                "SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns"
                " WHERE table_schema = 'public' ORDER BY 1, 2").fetchall(),
            "indexes": conn.execute(
                "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
                " ORDER BY 2").fetchall(),
            "constraints": conn.execute(
                "SELECT conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE connamespace = 'public'::regnamespace ORDER BY 2").fetchall(),
            "views": conn.execute("SELECT viewname, definition FROM pg_views WHERE schemaname = 'public'"
                                  " ORDER BY 1").fetchall(),
            "invalid_indexes": conn.execute("SELECT indexrelid::regclass::text FROM pg_index"
                                            " WHERE NOT indisvalid").fetchall(),
        }


def test_split_statements_keeps_semicolons_inside_quotes_and_drops_comments():
    sql = """-- predstream: no-transaction
    CREATE INDEX CONCURRENTLY a ON t (x); -- a comment; with a semicolon
    /* block; /* nested; */ still comment */ INSERT INTO t VALUES ('it''s; fine', E'back\\'slash;', "odd;name");
    DO $body$ BEGIN RAISE NOTICE 'x; y'; END $body$;
    SELECT $$a;b$$ ;;
    """
    assert split_statements(sql) == [
        "CREATE INDEX CONCURRENTLY a ON t (x)",
        "INSERT INTO t VALUES ('it''s; fine', E'back\\'slash;', \"odd;name\")",
        "DO $body$ BEGIN RAISE NOTICE 'x; y'; END $body$",
        "SELECT $$a;b$$",
    ]


def test_the_0_1_texts_are_accepted_for_their_own_files_only():
    shipped = {m.name: m for m in find_migrations()}
    old = {m.name: m for m in find_migrations(_DATA_0_1)}
    assert sorted(old) == _EXPECTED[:5]
    for name, mig in old.items():
        if name in SUPERSEDED_CHECKSUMS:
            assert mig.checksum != shipped[name].checksum and shipped[name].accepts(mig.checksum)
        else:
            assert mig.checksum == shipped[name].checksum, f"{name} changed after 0.1: add a new migration instead"
    assert not shipped["0003_prediction_sets"].accepts(old["0004_streaming_ingest"].checksum)


def test_no_transactional_migration_builds_an_index_on_training_predictions():
    """An index (or a UNIQUE/PRIMARY KEY constraint, which builds one) on the big table is
    built CONCURRENTLY, in a no-transaction file; in a transaction it blocks every writer."""
    building = re.compile(r"CREATE\s+(UNIQUE\s+)?INDEX\b(?!\s+CONCURRENTLY)"
                          r"|ADD\s+(CONSTRAINT\s+\w+\s+)?(UNIQUE|PRIMARY\s+KEY)\s*\(",
                          re.IGNORECASE)
    for mig in find_migrations():
        for statement in split_statements(mig.sql):
            if "training_predictions" in statement and building.search(statement):
                assert not mig.transactional and "CONCURRENTLY" in statement.upper(), (mig.name, statement)


def test_a_0_1_database_migrates_to_the_schema_of_a_fresh_install(empty_database_url, database_url):
    assert apply_migrations(ConsumerSettings(database_url=empty_database_url,
                                             migrations_dir=_DATA_0_1)) == _EXPECTED[:5]  # as predstream 0.1 left it
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO training_predictions (job_id, step, sample_index, prompt, prediction)"
                     " VALUES ('old', 1, 0, 'p', 'x')")
    assert apply_migrations(ConsumerSettings(database_url=empty_database_url)) == _EXPECTED[5:]
    assert apply_migrations(ConsumerSettings(database_url=empty_database_url)) == []
    assert _schema(empty_database_url) == _schema(database_url)  # database_url: a fresh install
    _check_schema(empty_database_url)


def test_a_rerun_after_a_failed_concurrent_build_rebuilds_the_invalid_index(empty_database_url, tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    for mig in find_migrations():
        if mig.version <= 5:
            shutil.copy(mig.path, base)
    apply_migrations(ConsumerSettings(database_url=empty_database_url, migrations_dir=base))
    twice = ("INSERT INTO training_predictions (job_id, step, sample_index, prompt, prediction, event_id)"
             " VALUES ('j', 1, 0, 'p', 'x', repeat('a', 64)), ('j', 1, 0, 'p', 'y', repeat('a', 64))")
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute(twice)
    with pytest.raises(MigrationError, match=r"0007_concurrent_indexes.sql failed at statement 4 of 5: .*duplicate.*"
                                             r"training_predictions_event_id_key may be left INVALID"):
        apply_migrations(ConsumerSettings(database_url=empty_database_url))
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        assert conn.execute("SELECT indisvalid FROM pg_index"
                            " WHERE indexrelid = 'training_predictions_event_id_key'::regclass"
                            ).fetchone() == (False,)
        conn.execute("DELETE FROM training_predictions WHERE prediction = 'y'")  # the user removes the duplicate
    assert apply_migrations(ConsumerSettings(database_url=empty_database_url)) == [m for m in _EXPECTED if m >= "0007"]
    schema = _schema(empty_database_url)
    assert schema["invalid_indexes"] == []
    assert ("training_predictions", "training_predictions_event_id_key", "u",
            "UNIQUE (event_id)") in schema["constraints"]


def test_a_migration_waiting_for_a_lock_gives_up_instead_of_queueing_writers(database_url, tmp_path, monkeypatch):
    monkeypatch.setattr(migrate_module, "_LOCK_RETRIES", 2)
    folder = tmp_path / "migrations"
    shutil.copytree(find_migrations()[0].path.parent, folder)
    (folder / "0099_more.sql").write_text("ALTER TABLE training_predictions ADD COLUMN extra INTEGER;")
    waits: list[float] = []
    with psycopg.connect(database_url) as reader:  # a long report holds its table lock
        reader.execute("SELECT count(*) FROM training_predictions").fetchone()

        def write() -> None:
            time.sleep(0.3)  # while migrate waits for its lock
            with psycopg.connect(database_url, autocommit=True) as conn:
                started = time.perf_counter()
                conn.execute("INSERT INTO training_predictions (job_id, step, sample_index, prompt, prediction)"
                             " VALUES ('old', 1, 0, 'p', 'x')")
                waits.append(time.perf_counter() - started)

        writer = threading.Thread(target=write)
        writer.start()
        with pytest.raises(MigrationError, match="0099_more.sql failed: .*lock timeout.*run migrate again"):
            apply_migrations(ConsumerSettings(database_url=database_url, migrations_dir=folder))
        writer.join(10)
        reader.rollback()
    assert waits and waits[0] < 1.5
    assert apply_migrations(ConsumerSettings(database_url=database_url, migrations_dir=folder)) == ["0099_more"]
