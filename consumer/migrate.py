"""Apply the SQL migrations in ``migrations/``: each once, in order, under a lock.

Files are named ``NNNN_description.sql`` and applied in the order of ``NNNN``. The whole run
holds a Postgres advisory lock, so two concurrent ``predstream migrate`` runs apply each file
once: the second waits, then finds nothing to do. (It waits by polling
``pg_try_advisory_lock``, never inside a statement: a session blocked in
``pg_advisory_lock`` holds a snapshot, which a ``CREATE INDEX CONCURRENTLY`` of the first
run would wait for, a deadlock.) A file that was applied and then edited stops the run with
an error naming it: write a new migration instead.

Two kinds of files:

* **transactional** (the default): the file runs in one transaction together with its row
  in ``predstream_migrations`` (version, name, sha256 checksum, time), with
  ``lock_timeout`` set, so a migration that waits for a table lock behind a long
  transaction gives up quickly instead of queueing every writer behind it; it is retried a
  few times, then fails saying why. Such a file must not build an index on a big table.
* **no-transaction**: a file whose first line is ``-- predstream: no-transaction`` (the
  convention of Flyway, golang-migrate and Rails) runs one statement at a time, each on its
  own, so it can ``CREATE INDEX CONCURRENTLY``, which does not block writers. Its row is
  recorded once every statement succeeded. Its statements must be safe to run again
  (``IF NOT EXISTS``, ``DO`` blocks that check first): a failed or interrupted run is
  completed by running ``migrate`` again. A failed concurrent build leaves an INVALID index
  behind; before each ``CREATE [UNIQUE] INDEX CONCURRENTLY [IF NOT EXISTS] name``, an
  invalid index of that name is dropped (``DROP INDEX CONCURRENTLY``) so it is rebuilt.

Superseded checksums: after 0.1, predstream rewrote ``0001``, ``0002`` and ``0004`` so that they
no longer build indexes (or the ``UNIQUE (event_id)`` constraint) inside a transaction;
``0007`` builds them concurrently. A database that applied the 0.1 text of those files
recorded its checksum; :data:`SUPERSEDED_CHECKSUMS` lists exactly those, per file, so such
a database keeps migrating (``0007`` finds its indexes and constraint already there). Any
other checksum is still an edited file.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._db_faults import first_line
from ._sqlsplit import split_statements
from ._table_names import foreign_table_problem
from .errors import MigrationError
from .settings import ConsumerSettings

if TYPE_CHECKING:
    from psycopg import Connection, Cursor
    from psycopg.rows import TupleRow

__all__ = [
    "Migration",
    "apply_migrations",
    "pending_migrations",
    "find_migrations",
    "default_migrations_dir",
    "NO_TRANSACTION_MARKER",
    "SUPERSEDED_CHECKSUMS",
]

_log = logging.getLogger(__name__)

#: Advisory lock key: the first 8 bytes of sha256("predstream.migrate") as a signed bigint.
_LOCK_KEY = int.from_bytes(hashlib.sha256(b"predstream.migrate").digest()[:8], "big", signed=True)
_NAME = re.compile(r"(\d{4})_([A-Za-z0-9_]+)\.sql")

#: First line of a migration that runs outside a transaction, one statement at a time.
NO_TRANSACTION_MARKER = "-- predstream: no-transaction"

#: Checksums of earlier texts of shipped files, accepted for exactly that file (see the
#: module docstring). Never add a checksum here for any other reason.
SUPERSEDED_CHECKSUMS: dict[str, frozenset[str]] = {
    # 0.1 built idx_training_predictions_job_step here; 0007 builds it concurrently.
    "0001_training_predictions": frozenset({"c5335d17eeabc2d5d1ff4f9a66babfbd4db9380cdbbb4bae6993aecc105f46a2"}),
    # 0.1 built the two partial identity indexes here; 0007 builds them concurrently.
    "0002_prediction_identity_columns": frozenset({"dda40f76a1cecb682cf5a29188f9da1fcc1071ab218c0f3ae15777d6a220df42"}),
    # 0.1 added UNIQUE (event_id) here (an index build under an exclusive lock); 0007
    # builds the index concurrently and attaches the constraint to it.
    "0004_streaming_ingest": frozenset({"545b2ab35fb116c96fb6a9d957bbbaab283e64be62f2ccad1ec0d79d80c93d78"}),
}

#: A transactional migration waits at most this long for a table lock, then is retried.
_LOCK_TIMEOUT = "1s"
_LOCK_RETRIES = 6
_LOCK_POLL_S = 0.2
_LOCK_NOT_AVAILABLE = "55P03"
_CONCURRENT_INDEX = re.compile(
    r"CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(?:IF\s+NOT\s+EXISTS\s+)?((?:\w+\.)?\w+)\s+ON\b", re.IGNORECASE
)

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS predstream_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT        NOT NULL,
    checksum   TEXT        NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()

    @property
    def transactional(self) -> bool:
        """False for a file whose first line is :data:`NO_TRANSACTION_MARKER`."""
        return self.sql.lstrip("\ufeff").split("\n", 1)[0].strip() != NO_TRANSACTION_MARKER

    def accepts(self, checksum: str) -> bool:
        """Whether ``checksum``, recorded when this file was applied, is this file's."""
        return checksum == self.checksum or checksum in SUPERSEDED_CHECKSUMS.get(self.name, frozenset())


def default_migrations_dir() -> Path:
    """The migrations shipped with predstream: the source tree's, else the installed copy."""
    candidates = [Path(__file__).resolve().parent.parent / "migrations",
                  Path(sys.prefix) / "share" / "predstream" / "migrations"]
    for path in candidates:
        if path.is_dir():
            return path
    raise MigrationError("no migrations folder found: set PREDSTREAM_MIGRATIONS_DIR to the folder of .sql files")


def find_migrations(folder: str | Path | None = None) -> list[Migration]:
    """Every ``NNNN_name.sql`` in ``folder``, in version order; other files are an error."""
    folder = Path(folder) if folder else default_migrations_dir()
    if not folder.is_dir():
        raise MigrationError(f"migrations folder {folder} does not exist")
    found: dict[int, Migration] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix != ".sql":
            continue
        m = _NAME.fullmatch(path.name)
        if not m:
            raise MigrationError(f"{path.name}: migration files are named NNNN_description.sql")
        version = int(m.group(1))
        if version in found:
            raise MigrationError(f"{path.name} and {found[version].path.name} share version {version}")
        found[version] = Migration(version, path.stem, path, path.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def _connect(database_url: str) -> Connection[TupleRow]:
    import psycopg

    from predstream.schemas.redaction import redact_url

    try:
        return psycopg.connect(database_url, autocommit=True, connect_timeout=10)
    except (psycopg.OperationalError, psycopg.ProgrammingError) as exc:  # unreachable / malformed URL
        raise MigrationError(f"cannot connect to {redact_url(database_url)}: {first_line(exc)}") from None


def _one(cur: Cursor[TupleRow]) -> Any:
    """The value of a query that returns one row of one column."""
    row = cur.fetchone()
    assert row is not None, "the query returns one row"
    return row[0]




def _check_applied(conn: Connection[TupleRow], migrations: list[Migration]) -> set[int]:
    rows = conn.execute("SELECT version, name, checksum FROM predstream_migrations").fetchall()
    by_version = {m.version: m for m in migrations}
    for version, name, checksum in rows:
        mig = by_version.get(version)
        if mig is None:
            raise MigrationError(
                f"the database has migration {name} applied, which is not in the migrations folder: "
                "upgrade predstream or point PREDSTREAM_MIGRATIONS_DIR at the right folder"
            )
        if not mig.accepts(checksum):
            raise MigrationError(
                f"{mig.path.name} was edited after it was applied (checksum differs): "
                "restore it and put the change in a new migration file"
            )
        if checksum != mig.checksum:
            _log.debug("%s was applied as its earlier text (superseded checksum accepted)", mig.name)
    return {v for v, _, _ in rows}


def pending_migrations(settings: ConsumerSettings) -> list[Migration]:
    """Migrations of ``settings.migrations_dir`` (default: the shipped ones) not yet applied
    to ``settings.database_url`` (raises if an applied one was edited, or if a table a
    pending one creates is another application's)."""
    migrations = find_migrations(settings.migrations_dir)
    with _connect(settings.require_database_url()) as conn:
        return _pending(conn, migrations)


def _pending(conn: Connection[TupleRow], migrations: list[Migration]) -> list[Migration]:
    """The migrations not applied yet; raises if an applied one was edited, or if a table a
    pending one creates is another application's (see consumer/_table_names.py)."""
    exists = _one(conn.execute("SELECT to_regclass('predstream_migrations') IS NOT NULL"))
    applied = _check_applied(conn, migrations) if exists else set()
    pending = [m for m in migrations if m.version not in applied]
    problem = foreign_table_problem(conn, (m.sql for m in pending))
    if problem:
        raise MigrationError(problem)
    return pending


def apply_migrations(settings: ConsumerSettings) -> list[str]:
    """Apply the pending migrations of ``settings.migrations_dir`` (default: the shipped
    ones) to ``settings.database_url`` in order; return the names applied (empty when up
    to date)."""
    import psycopg

    migrations = find_migrations(settings.migrations_dir)
    applied_now: list[str] = []
    with _connect(settings.require_database_url()) as conn:
        _take_lock(conn)
        try:
            pending = _pending(conn, migrations)  # before anything is created or changed
            conn.execute(_CREATE_TABLE)
            for mig in pending:
                try:
                    if mig.transactional:
                        _apply_in_transaction(conn, mig)
                    else:
                        _apply_statements(conn, mig)
                except psycopg.Error as exc:
                    raise MigrationError(f"{mig.path.name} failed: {_explain(exc)}") from None
                _log.info("applied migration %s", mig.name)
                applied_now.append(mig.name)
        finally:
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    if not applied_now:
        _log.info("database is up to date (%d migrations)", len(migrations))
    return applied_now


def _take_lock(conn: Connection[TupleRow]) -> None:
    said = False
    while not _one(conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_KEY,))):
        if not said:
            _log.info("another predstream migrate is running on this database; waiting for it")
            said = True
        time.sleep(_LOCK_POLL_S)


def _record(conn: Connection[TupleRow], mig: Migration) -> None:
    conn.execute(
        "INSERT INTO predstream_migrations (version, name, checksum) VALUES (%s, %s, %s)",
        (mig.version, mig.name, mig.checksum),
    )


def _apply_in_transaction(conn: Connection[TupleRow], mig: Migration) -> None:
    def run() -> None:
        with conn.transaction():
            conn.execute(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT}'")
            conn.execute(mig.sql)
            _record(conn, mig)

    _retry_lock_timeouts(run, mig.name)


def _apply_statements(conn: Connection[TupleRow], mig: Migration) -> None:
    import psycopg

    statements = split_statements(mig.sql)
    for number, statement in enumerate(statements, start=1):
        index = _CONCURRENT_INDEX.match(statement)
        if index:
            _drop_if_invalid(conn, index.group(1))
        try:
            _retry_lock_timeouts(functools.partial(conn.execute, statement), mig.name)
        except psycopg.Error as exc:
            hint = ""
            if index:
                hint = f" (index {index.group(1)} may be left INVALID; running migrate again rebuilds it)"
            raise MigrationError(
                f"{mig.path.name} failed at statement {number} of {len(statements)}: {_explain(exc)}{hint}"
            ) from None
    _record(conn, mig)


def _drop_if_invalid(conn: Connection[TupleRow], name: str) -> None:
    row = conn.execute(
        "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass(%s)", (name,)
    ).fetchone()
    if row is not None and not row[0]:
        _log.warning("index %s is INVALID (an earlier concurrent build failed or was interrupted): rebuilding it", name)
        conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


def _retry_lock_timeouts(action: Any, what: str) -> None:
    import psycopg

    delay = 0.5
    for attempt in range(1, _LOCK_RETRIES + 1):
        try:
            action()
            return
        except psycopg.errors.LockNotAvailable:
            if attempt == _LOCK_RETRIES:
                raise
            _log.warning("%s: a table lock was not granted within %s (a long transaction holds it); retrying in %.1f s",
                         what, _LOCK_TIMEOUT, delay)
            time.sleep(delay)
            delay = min(delay * 2, 8.0)


def _explain(exc: BaseException) -> str:
    import psycopg

    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return (f"{first_line(exc)}: a long-running transaction kept a table locked; "
                "run migrate again when it has ended")
    detail = getattr(getattr(exc, "diag", None), "message_detail", None)
    return first_line(exc) + (f" ({first_line(Exception(detail))})" if detail else "")
