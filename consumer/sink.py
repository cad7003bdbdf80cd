"""The Postgres sink: idempotent batch upserts of prediction events into ``training_predictions``.

One :meth:`PostgresSink.write` is one transaction (see the fast path below):

1. duplicates inside the batch collapse to the newest one, by ``(attempt, produced_at)``
   (``ON CONFLICT`` cannot touch a row twice in one statement);
2. the rows are COPYed into a per-connection temporary staging table
   (``ON COMMIT DELETE ROWS``, created once per connection with the target's column types);
3. one ``INSERT ... SELECT ... ON CONFLICT (event_id) DO UPDATE ... WHERE the stored row is
   older`` moves them into the table. Newer data wins: a higher ``attempt`` (the job's
   counter; NULL counts as 0), then a later ``produced_at``. An older event never overwrites
   a newer one; an identical resend changes nothing. ``RETURNING (xmax = 0)`` tells inserted
   rows from updated ones; the rest were unchanged ("duplicates skipped").

Fast path: a live stream's batches are almost always all new events. So the sink first
COPYs a batch straight into the table, one statement in autocommit (its own transaction:
all rows or none), which costs what a plain COPY costs. A unique violation (some event is
already stored: a redelivery or a replay) or a refused row aborts that COPY, nothing of it
stored, and the batch takes steps 2-3 in a transaction; after a conflict the next 20
batches go straight to steps 2-3.

Both COPYs use the binary format (cheaper for client and server). A batch is one
``copy.write`` of its rows' bytes: the :class:`~predstream.consumer.transcode.CopyRow` rows
the transcoder made straight from the Kafka messages, and, for events that came through the
pydantic path (:class:`IngestRecord`), rows encoded here. The table's column types are read
when the connection opens; when they are not the ones the transcoder writes (a column
changed by hand), or when an event's value does not fit its column in binary (psycopg's
binary ``integer`` would wrap a value beyond 32 bits), the batch takes the old path: the
events decoded (by the pydantic path), written row by row, in text format where a value is
out of range, so that Postgres refuses that row (22003) and it is isolated as below.

When Postgres refuses a row because of the row itself (data exceptions, SQLSTATE class 22;
integrity violations, class 23, except unique violations), the batch is split in halves,
each tried under its own savepoint, recursively, until the offending rows are isolated. They
come back in :attr:`WriteResult.rejected` with the database's reason; every other row is
stored, still in the one transaction.

Anything else (connection lost, server shutting down, disk full, timeouts, lock and
serialization failures, a table that is not migrated yet) raises
:class:`~predstream.consumer.errors.DatabaseUnavailableError`: nothing was stored, retry the batch.

Replay and backfill reuse this sink: an :class:`IngestRecord` without Kafka coordinates is
stored with ``kafka_topic``/``kafka_partition``/``kafka_offset`` NULL.

:meth:`PostgresSink.write` takes both kinds of record in one batch; newest-wins compares
them by the same ``(attempt, produced_at)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ._columns import COLUMN_TYPES, DIRECT_COLUMNS, UPSERT_COLUMNS
from ._copy_binary import batch_time, encode_values, payload
from ._db_faults import Rejection, row_fault, unavailable
from .records import IngestRecord, SinkRecord, key_rank, newest_per_event, row_values
from .transcode import CopyRow, copy_columns

__all__ = ["IngestRecord", "WriteResult", "Rejection", "PostgresSink", "SinkRecord", "UPSERT_COLUMNS",
           "NEWER_WHERE", "row_values"]

_log = logging.getLogger(__name__)

_STAGING = "_predstream_staging"

_COLS = ", ".join(UPSERT_COLUMNS)
# the staging table has every column a row fills, created_at and ingested_at included
_CREATE_STAGING = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGING} ON COMMIT DELETE ROWS AS "
    f"SELECT {', '.join(DIRECT_COLUMNS)} FROM training_predictions WITH NO DATA"
)
_TABLE = "training_predictions"
_BINARY = " (FORMAT BINARY)"
# column types whose binary dumpers psycopg matches exactly to the Python values we send
_BINARY_SAFE = {"text", "integer", "bigint", "double precision", "jsonb", "timestamp with time zone"}
_INT4 = (-(2**31), 2**31 - 1)
_FAST_PATH_PAUSE = 20
#: A batch's rows in binary COPY format, each in pieces (joined once, for the whole batch).
_RowBytes = list[tuple[bytes, ...]]
#: When an event replaces the stored row ``t`` with the same event_id (``EXCLUDED``): it is
#: newer by (attempt, produced_at), as :func:`predstream.schemas.event.recency` orders events.
NEWER_WHERE = (
    "t.produced_at IS NULL OR (COALESCE(t.attempt, 0), t.produced_at) "
    "< (COALESCE(EXCLUDED.attempt, 0), EXCLUDED.produced_at)"
)
# created_at keeps its meaning for the old readers (when the prediction was made), so a
# replayed or backfilled row gets its real time, not the time of the replay.
_UPSERT = (
    f"INSERT INTO training_predictions AS t ({_COLS}, created_at, ingested_at) "
    f"SELECT {_COLS}, created_at, now() FROM {_STAGING} "
    "ON CONFLICT (event_id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in UPSERT_COLUMNS if c != "event_id")
    + ", created_at = EXCLUDED.created_at, ingested_at = EXCLUDED.ingested_at "
    f"WHERE {NEWER_WHERE} "
    "RETURNING (xmax = 0) AS inserted"
)


@dataclass
class WriteResult:
    """What one :meth:`PostgresSink.write` did.

    ``unchanged`` counts events that changed nothing: identical resends, older versions
    of stored rows, and older duplicates within the batch ("duplicates skipped").
    ``rejected`` holds the rows the database refused, each with a short reason code
    (``db-rejected:<SQLSTATE>``) and the database's message.
    """

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[tuple[SinkRecord, Rejection]] = field(default_factory=list)

    @property
    def stored(self) -> int:
        """Events now reflected in the table (inserted + updated + unchanged)."""
        return self.inserted + self.updated + self.unchanged

    def __iadd__(self, other: WriteResult) -> WriteResult:
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.rejected.extend(other.rejected)
        return self


class PostgresSink:
    """Idempotent batch writer into ``training_predictions`` (see the module docstring).

    Holds one connection, opened on first use and reopened after a failure. Not
    thread-safe: one sink per worker thread. Usable as a context manager.
    """

    def __init__(
        self,
        database_url: str,
        *,
        connect_timeout_s: float = 5.0,
        statement_timeout_ms: int = 60_000,
        lock_timeout_ms: int = 10_000,
        application_name: str = "predstream-consumer",
    ) -> None:
        self._url = database_url
        self._connect_timeout = max(1, int(math.ceil(connect_timeout_s)))
        self._statement_timeout_ms = statement_timeout_ms
        self._lock_timeout_ms = lock_timeout_ms
        self._application_name = application_name
        self._conn: Any = None
        #: per column of DIRECT_COLUMNS: its type, for binary COPY (None: use text)
        self._types: list[str] | None = None
        #: positions of the 32-bit integer columns (see the module docstring)
        self._int4_at: tuple[int, ...] = ()
        #: the column order of transcoded rows, when the table's types are the ones they are
        #: written for (else None: every batch takes the old path)
        self._copy_cols: tuple[str, ...] | None = None
        #: batches to wait before trying the COPY fast path again (after a batch had a
        #: conflict: a replay or a redelivery, where the upsert path is the right one)
        self._fast_path_in = 0

    # -- public ------------------------------------------------------------------

    def write(self, batch: Sequence[SinkRecord]) -> WriteResult:
        """Upsert ``batch`` in one transaction; see the module docstring for the rules.

        Raises :class:`DatabaseUnavailableError` when nothing could be stored because of
        the database (retry the same batch later).
        """
        import psycopg

        rows, collapsed = newest_per_event(batch)
        result = WriteResult(unchanged=collapsed)
        if not rows:
            return result
        try:
            conn = self._connection()
            now = datetime.now(UTC)
            datas = self._binary_rows(rows)
            if datas is None:  # the old path: the events, row by row
                rows = [r if isinstance(r, IngestRecord) else r.record() for r in rows]
            fast = self._copy_new_rows(conn, rows, datas, now) if self._fast_path_in <= 0 else None
            if fast is None:
                self._fast_path_in = max(0, self._fast_path_in - 1)
                with conn.transaction():
                    result += self._write_isolating(conn, rows, datas, now)
            else:
                result += fast
        except psycopg.Error as exc:
            self._drop_connection()
            raise unavailable(exc) from None
        return result

    def ping(self) -> None:
        """Check the database answers; raise :class:`DatabaseUnavailableError` if not."""
        import psycopg

        try:
            self._connection().execute("SELECT 1").fetchone()
        except psycopg.Error as exc:
            self._drop_connection()
            raise unavailable(exc) from None

    def count(self) -> int:
        """Rows in ``training_predictions`` with an event identity (for tests and reports)."""
        import psycopg

        try:
            found: int = self._connection().execute(
                "SELECT count(*) FROM training_predictions WHERE event_id IS NOT NULL"
            ).fetchone()[0]
            return found
        except psycopg.Error as exc:
            self._drop_connection()
            raise unavailable(exc) from None

    def close(self) -> None:
        self._drop_connection()

    def __enter__(self) -> PostgresSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------

    def _connection(self) -> Any:
        import psycopg

        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn = psycopg.connect(
            self._url,
            autocommit=True,
            connect_timeout=self._connect_timeout,
            application_name=self._application_name,
            # notice a dead server on an idle connection within ~15 s
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
        )
        try:
            conn.execute(f"SET statement_timeout = {int(self._statement_timeout_ms)}")
            conn.execute(f"SET lock_timeout = {int(self._lock_timeout_ms)}")
            conn.execute(_CREATE_STAGING)
            self._read_column_types(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _read_column_types(self, conn: Any) -> None:
        found: dict[str, str] = dict(conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'training_predictions'::regclass AND attnum > 0 AND NOT attisdropped"
        ).fetchall())
        types = [found.get(c, "missing") for c in DIRECT_COLUMNS]
        if all(t in _BINARY_SAFE for t in types):
            self._types = types
            self._int4_at = tuple(i for i, t in enumerate(types) if t == "integer")
        else:  # a column was changed by hand: text COPY lets Postgres convert
            _log.info("training_predictions has column types %s; using text COPY", sorted(set(types) - _BINARY_SAFE))
            self._types, self._int4_at = None, ()
        cols = copy_columns()
        self._copy_cols = cols if cols is not None and all(found.get(c) == COLUMN_TYPES[c] for c in cols) else None

    def _binary_rows(self, rows: list[SinkRecord]) -> _RowBytes | None:
        """Each row's COPY bytes in pieces (but the batch's time), or None when the batch takes the old path:
        the table's types are not those of transcoded rows, a value does not fit its column in
        binary, or no row was transcoded (psycopg writes decoded events faster than Python)."""
        cols = self._copy_cols
        if cols is None or not any(type(r) is CopyRow for r in rows):
            return None
        datas = []
        for r in rows:
            if type(r) is CopyRow:
                datas.append(r[0])
                continue
            assert isinstance(r, IngestRecord)
            values = dict(zip(UPSERT_COLUMNS, row_values(r), strict=True))
            data = encode_values({**values, "created_at": r.event.produced_at}, cols)
            if data is None:
                return None
            datas.append((data,))
        return datas

    def _copy_rows(self, cur: Any, table: str, rows: list[Any], datas: _RowBytes | None, now: datetime) -> None:
        """COPY ``rows`` into ``table``: their bytes in one write, else the events row by row."""
        if datas is not None:
            assert self._copy_cols is not None
            with cur.copy(f"COPY {table} ({', '.join(self._copy_cols)}) FROM STDIN{_BINARY}") as copy:
                copy.write(payload(datas, batch_time(now)))
            return
        values = [(*row_values(rec), rec.event.produced_at, now) for rec in rows]
        self._copy(cur, f"COPY {table} ({', '.join(DIRECT_COLUMNS)}) FROM STDIN", values, len(DIRECT_COLUMNS))

    def _copy(self, cur: Any, sql: str, rows: list[tuple[Any, ...]], ncols: int) -> None:
        """COPY ``rows`` (binary when the types allow it and every integer fits)."""
        types = self._types
        if types is not None:
            low, high = _INT4
            for row in rows:
                for i in self._int4_at:
                    v = row[i]
                    if v is not None and not low <= v <= high:
                        types = None
                        break
                if types is None:
                    break
        with cur.copy(sql + (_BINARY if types is not None else "")) as copy:
            if types is not None:
                copy.set_types(types[:ncols])
            for row in rows:
                copy.write_row(row)

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # already broken: nothing more to release
                pass

    def _copy_new_rows(self, conn: Any, rows: list[Any], datas: _RowBytes | None,
                       now: datetime) -> WriteResult | None:
        """The fast path: COPY straight into the table, one statement in autocommit (a
        transaction of its own: every row or none; one round trip, where BEGIN, a savepoint,
        its release and COMMIT took four more).

        When every event is new (the steady state of a live stream), inserting is what the
        upsert would do, at the cost of a plain COPY. Any conflict or rejected row aborts
        the COPY (nothing of it is stored) and returns ``None``: the caller then takes the
        upsert path, which applies newer-wins and isolates bad rows. Database outages propagate.
        """
        import psycopg

        try:
            with conn.cursor() as cur:
                self._copy_rows(cur, _TABLE, rows, datas, now)
        except (psycopg.Error, UnicodeEncodeError) as exc:
            if getattr(exc, "sqlstate", None) == "23505":  # an event is already stored
                self._fast_path_in = _FAST_PATH_PAUSE
            elif row_fault(exc) is None:
                raise
            return None
        return WriteResult(inserted=len(rows))

    def _write_isolating(self, conn: Any, rows: list[Any], datas: _RowBytes | None, now: datetime) -> WriteResult:
        """Upsert ``rows`` under a savepoint; on a row's fault, split and recurse."""
        import psycopg

        try:
            with conn.transaction():  # a savepoint inside write()'s transaction
                return self._upsert(conn, rows, datas, now)
        except (psycopg.Error, UnicodeEncodeError) as exc:
            rejection = row_fault(exc)
            if rejection is None:
                raise
            if len(rows) == 1:
                _log.debug("row %s rejected: %s", key_rank(rows[0])[0].decode(), rejection)
                return WriteResult(rejected=[(rows[0], rejection)])
            mid = len(rows) // 2
            result = self._write_isolating(conn, rows[:mid], None if datas is None else datas[:mid], now)
            result += self._write_isolating(conn, rows[mid:], None if datas is None else datas[mid:], now)
            return result

    def _upsert(self, conn: Any, rows: list[Any], datas: _RowBytes | None, now: datetime) -> WriteResult:
        with conn.cursor() as cur:
            cur.execute(f"TRUNCATE {_STAGING}")
            self._copy_rows(cur, _STAGING, rows, datas, now)
            cur.execute(_UPSERT)
            flags = [r[0] for r in cur.fetchall()]
        inserted = sum(1 for f in flags if f)
        updated = len(flags) - inserted
        return WriteResult(inserted=inserted, updated=updated, unchanged=len(rows) - len(flags))


