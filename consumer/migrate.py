"""Apply the SQL migrations in ``migrations/``: each once, in order, under a lock.

Files are named ``NNNN_description.sql`` and applied in the order of ``NNNN``. Each runs in
its own transaction together with its row in ``predstream_migrations`` (version, name,
sha256 checksum, time). The whole run holds a Postgres advisory lock, so two concurrent
``predstream migrate`` runs apply each file once: the second waits, then finds nothing to
do. A file that was applied and then edited stops the run with an error naming it:
write a new migration instead.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import MigrationError

__all__ = ["Migration", "migrate", "pending_migrations", "find_migrations", "default_migrations_dir"]

_log = logging.getLogger("predstream.migrate")

#: Advisory lock key: the first 8 bytes of sha256("predstream.migrate") as a signed bigint.
_LOCK_KEY = int.from_bytes(hashlib.sha256(b"predstream.migrate").digest()[:8], "big", signed=True)
_NAME = re.compile(r"(\d{4})_([A-Za-z0-9_]+)\.sql")

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


def default_migrations_dir() -> Path:
    """The migrations shipped with predstream: the source tree's, else the installed copy."""
    candidates = [Path(__file__).resolve().parent.parent / "migrations", Path(sys.prefix) / "share" / "predstream" / "migrations"]
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


def _connect(database_url: str):
    import psycopg

    from .settings import redact_url

    try:
        return psycopg.connect(database_url, autocommit=True, connect_timeout=10)
    except (psycopg.OperationalError, psycopg.ProgrammingError) as exc:  # unreachable / malformed URL
        raise MigrationError(f"cannot connect to {redact_url(database_url)}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    from .settings import redact_url

    return redact_url(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)


def _check_applied(conn, migrations: list[Migration]) -> set[int]:
    rows = conn.execute("SELECT version, name, checksum FROM predstream_migrations").fetchall()
    by_version = {m.version: m for m in migrations}
    for version, name, checksum in rows:
        mig = by_version.get(version)
        if mig is None:
            raise MigrationError(
                f"the database has migration {name} applied, which is not in the migrations folder: "
                "upgrade predstream or point PREDSTREAM_MIGRATIONS_DIR at the right folder"
            )
        if mig.checksum != checksum:
            raise MigrationError(
                f"{mig.path.name} was edited after it was applied (checksum differs): "
                "restore it and put the change in a new migration file"
            )
    return {v for v, _, _ in rows}


def pending_migrations(database_url: str, folder: str | Path | None = None) -> list[Migration]:
    """Migrations not yet applied (raises if an applied one was edited)."""
    migrations = find_migrations(folder)
    with _connect(database_url) as conn:
        exists = conn.execute("SELECT to_regclass('predstream_migrations') IS NOT NULL").fetchone()[0]
        applied = _check_applied(conn, migrations) if exists else set()
    return [m for m in migrations if m.version not in applied]


def migrate(database_url: str, folder: str | Path | None = None) -> list[str]:
    """Apply pending migrations in order; return the names applied (empty when up to date)."""
    import psycopg

    migrations = find_migrations(folder)
    applied_now: list[str] = []
    with _connect(database_url) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(_CREATE_TABLE)
            applied = _check_applied(conn, migrations)
            for mig in migrations:
                if mig.version in applied:
                    continue
                try:
                    with conn.transaction():
                        conn.execute(mig.sql)
                        conn.execute(
                            "INSERT INTO predstream_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                            (mig.version, mig.name, mig.checksum),
                        )
                except psycopg.Error as exc:
                    raise MigrationError(f"{mig.path.name} failed: {_first_line(exc)}") from None
                _log.info("applied migration %s", mig.name)
                applied_now.append(mig.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    if not applied_now:
        _log.info("database is up to date (%d migrations)", len(migrations))
    return applied_now
