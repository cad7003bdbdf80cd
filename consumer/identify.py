"""Give the rows the old direct-to-database writer stored their identity, on a live table.

The old writer's rows have ``event_id`` NULL (and, for prompt-only rows, ``prompt_id``
NULL): ``compare`` cannot match them across runs, and a backfill of an export of them would
add them a second time. :func:`identify_legacy_rows` (``predstream identify``) fills in, for
every row with ``event_id`` NULL, what :func:`predstream.consumer.backfill.legacy_row_to_event` gives
the same row read from an export: ``prompt_id`` (from ``messages``/``prompt``), ``event_id``
(of the row's identity; ``sample_source`` defaults to ``"dataset"``), ``sample_source`` and
``produced_at`` (``created_at`` when NULL). That function is the one rule for both, so a
backfill of the export afterwards finds every row already there.

How, on a table the old writer may still be inserting into:

* keyset pagination by ``id`` over the rows without ``event_id``
  (``idx_training_predictions_unidentified``), up to the largest ``id`` at start (rows added
  later are for the next run, which the summary says); each batch is its own short
  transaction (``lock_timeout`` 2 s, retried), holding only the batch's rows;
* idempotent and resumable: a row that has its ``event_id`` is never read again, so running
  it twice changes nothing, and an interrupted run continues where it stopped;
* **duplicates**: two rows with the same identity (the old writer wrote a prediction point
  twice, or a backfill already loaded it) cannot both hold the ``event_id`` (``UNIQUE``).
  The newest keeps it (``produced_at``, else ``created_at``; then the larger ``id``), as a
  newer event wins in the consumer; the others get ``prompt_id`` but keep ``event_id`` NULL
  and are reported as :class:`Duplicate` (delete them if they are true copies);
* **problems**: a row that does not fit the contract (e.g. no prediction, a NUL character),
  or whose stored ``prompt_id`` is not the ``prompt_id`` of its own prompt
  (``identity-mismatch``), is left as it is and reported as :class:`RowProblem`: the same
  rows that backfill refuses.

:class:`LegacyRowMatcher` does the same for backfill, for the rows at the prediction points of
a batch it is about to load, so backfilling an export into the database it came from adds
nothing, whether ``identify`` ran before or not.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from predstream.schemas.errors import InvalidEventError
from predstream.schemas.event import PredictionEvent

from ._db_faults import first_line
from .backfill import legacy_row_to_event
from .errors import DatabaseUnavailableError, IdentifyError
from .settings import ConsumerSettings

if TYPE_CHECKING:
    from psycopg import Connection, Cursor
    from psycopg.rows import TupleRow

__all__ = ["Duplicate", "RowProblem", "IdentifyReport", "identify_legacy_rows", "LegacyRowMatcher"]

_log = logging.getLogger(__name__)

#: One identify batch (or backfill match) at a time per database: a transaction advisory lock.
_LOCK_KEY = int.from_bytes(hashlib.sha256(b"predstream.identify").digest()[:8], "big", signed=True)
_ATTEMPTS = 5
_CONSTRAINT = "training_predictions_event_id_key"


@dataclass(frozen=True)
class Duplicate:
    """Row ``id`` has the same identity as row ``kept_id``, which holds ``event_id``."""

    id: int
    event_id: str
    kept_id: int

    def __str__(self) -> str:
        return f"row {self.id} is a copy of row {self.kept_id}, which keeps event_id {self.event_id[:12]}…"


@dataclass(frozen=True)
class RowProblem:
    """Row ``id`` was left as it is: ``reason`` a short code, ``message`` one line."""

    id: int
    job_id: str | None
    step: Any
    sample_index: Any
    reason: str
    message: str

    def __str__(self) -> str:
        return (f"row {self.id} (job {self.job_id}, step {self.step}, sample {self.sample_index}): "
                f"{self.message} ({self.reason})")


@dataclass
class IdentifyReport:
    examined: int = 0
    identified: int = 0
    duplicates: list[Duplicate] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)
    #: rows without event_id when the run started (up to ``upper_id``)
    to_examine: int = 0
    upper_id: int = 0
    last_id: int = 0
    #: rows without event_id added after the run started (the old writer is still running)
    left_for_next_run: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def progress_line(self) -> str:
        share = f" ({100 * self.examined / self.to_examine:.0f}%)" if self.to_examine else ""
        rate = f", {self.examined / self.seconds:,.0f} rows/s" if self.seconds > 0.1 else ""
        return (f"identify: {self.examined:,} of {self.to_examine:,} rows without identity examined{share}, "
                f"{self.identified:,} identified, {len(self.duplicates):,} duplicate(s), "
                f"{len(self.problems):,} problem(s), at id {self.last_id}{rate}")

    def summary(self) -> str:
        later = (f"; {self.left_for_next_run:,} row(s) written since the start are left for the next run"
                 if self.left_for_next_run else "")
        return (f"{self.examined:,} row(s) without identity examined: {self.identified:,} identified, "
                f"{len(self.duplicates):,} duplicate(s) left without event_id (the newest copy keeps it), "
                f"{len(self.problems):,} not identified{later} in {self.seconds:.1f} s")


# -- the command ---------------------------------------------------------------------------


def identify_legacy_rows(
    settings: ConsumerSettings,
    *,
    jobs: Sequence[str] | None = None,
    progress: Callable[[IdentifyReport], None] | None = None,
) -> IdentifyReport:
    """Identify every row of ``settings.database_url`` with ``event_id`` NULL (of ``jobs``,
    if given), ``settings.identify_batch_size`` rows per transaction; see the module docstring.

    ``progress`` is called with the report after each batch. Raises :class:`IdentifyError`
    when the database is not migrated or cannot be reached.
    """
    import psycopg

    database_url, batch_size = settings.require_database_url(), settings.identify_batch_size
    started = time.monotonic()
    report = IdentifyReport()
    job_list = list(jobs) if jobs else None
    job_clause = " AND job_id = ANY(%(jobs)s)" if job_list else ""
    try:
        with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
            _require_schema(conn)
            report.upper_id = _one(conn.execute("SELECT coalesce(max(id), 0) FROM training_predictions"))
            report.to_examine = _one(conn.execute(
                "SELECT count(*) FROM training_predictions WHERE event_id IS NULL AND id <= %(upper)s" + job_clause,
                {"upper": report.upper_id, "jobs": job_list},
            ))
            select = ("SELECT * FROM training_predictions WHERE event_id IS NULL AND id > %(last)s AND id <= %(upper)s"
                      + job_clause + " ORDER BY id LIMIT %(limit)s FOR UPDATE")
            while True:
                params = {"last": report.last_id, "upper": report.upper_id, "jobs": job_list, "limit": batch_size}
                examined = _with_retries(functools.partial(_batch, conn, select, params, report))
                report.seconds = time.monotonic() - started
                if not examined:
                    break
                if progress is not None:
                    progress(report)
            if report.duplicates:  # a later batch may have moved an identity to a newer copy
                report.duplicates = _current_keepers(conn, report.duplicates)
            report.left_for_next_run = _one(conn.execute(
                "SELECT count(*) FROM training_predictions WHERE event_id IS NULL AND id > %(upper)s" + job_clause,
                {"upper": report.upper_id, "jobs": job_list},
            ))
    except psycopg.OperationalError as exc:
        raise IdentifyError(f"database unavailable ({first_line(exc)}); "
                            "running identify again resumes where it stopped") from None
    report.seconds = time.monotonic() - started
    return report


def _batch(conn: Connection[TupleRow], select: str, params: Mapping[str, Any], report: IdentifyReport) -> int:
    from psycopg.rows import dict_row

    with conn.transaction():
        _begin(conn)
        rows = conn.cursor(row_factory=dict_row).execute(select, params).fetchall()
        if not rows:
            return 0
        computed, problems = _compute(rows)
        identified, duplicates = _apply(conn, computed)
    report.examined += len(rows)
    report.identified += identified
    report.duplicates.extend(duplicates)
    report.problems.extend(problems)
    report.last_id = rows[-1]["id"]
    for p in problems:
        _log.debug("not identified: %s", p)
    return len(rows)


def _current_keepers(conn: Connection[TupleRow], duplicates: list[Duplicate]) -> list[Duplicate]:
    holders: dict[str, int] = dict(conn.execute(
        "SELECT event_id, id FROM training_predictions WHERE event_id = ANY(%s)",
        (sorted({d.event_id for d in duplicates}),),
    ).fetchall())
    latest = {d.id: Duplicate(d.id, d.event_id, holders.get(d.event_id, d.kept_id)) for d in duplicates}
    return [d for d in latest.values() if d.id != d.kept_id]


# -- for backfill ------------------------------------------------------------------------------


class LegacyRowMatcher:
    """Before backfill stores a batch of exported rows, identify the rows of the table that are
    the same prediction points (same ``event_id`` by the one rule), so the load finds them.

    Holds its own connection; raises :class:`DatabaseUnavailableError` (backfill retries).
    """

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._conn: Connection[TupleRow] | None = None
        self.identified = 0

    def identify(self, events: Iterable[PredictionEvent]) -> int:
        """Identify the unidentified rows that ``events`` stand for; return how many."""
        import psycopg

        events = list(events)
        wanted = {e.event_id for e in events}
        points = sorted({(e.job_id, e.step) for e in events})
        if not points:
            return 0
        try:
            if self._conn is None:
                self._conn = psycopg.connect(self._url, autocommit=True, connect_timeout=10,
                                             application_name="predstream-backfill")
                _require_schema(self._conn)
            identified = _with_retries(lambda: self._match(wanted, points))
        except (psycopg.Error, IdentifyError) as exc:
            self.close()
            sqlstate = getattr(exc, "sqlstate", None)
            raise DatabaseUnavailableError(f"matching the table's old rows: {first_line(exc)}",
                                           sqlstate=sqlstate) from None
        self.identified += identified
        return identified

    def _match(self, wanted: set[str], points: list[tuple[str, int]]) -> int:
        from psycopg.rows import dict_row

        conn = self._conn
        assert conn is not None, "connected in identify()"
        with conn.transaction():
            _begin(conn)
            rows = conn.cursor(row_factory=dict_row).execute(
                "SELECT * FROM training_predictions WHERE event_id IS NULL AND (job_id, step) IN "
                "(SELECT * FROM unnest(%s::text[], %s::integer[])) ORDER BY id FOR UPDATE",
                ([j for j, _ in points], [s for _, s in points]),
            ).fetchall()
            computed = [(row, ev) for row, ev in _compute(rows)[0] if ev.event_id in wanted]
            identified, duplicates = _apply(conn, computed)
        for d in duplicates:
            _log.info("backfill: %s", d)
        return identified

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


# -- shared by both ----------------------------------------------------------------------------


def _require_schema(conn: Connection[TupleRow]) -> None:
    found = conn.execute(
        "SELECT 1 FROM pg_constraint WHERE conname = %s AND conrelid = to_regclass('training_predictions')",
        (_CONSTRAINT,)
    ).fetchone()
    if found is None:
        raise IdentifyError("the database is not migrated (training_predictions has no UNIQUE (event_id)): "
                            "run `predstream migrate` first")


def _begin(conn: Connection[TupleRow]) -> None:
    conn.execute("SET LOCAL lock_timeout = '2s'")
    conn.execute("SET LOCAL statement_timeout = '120s'")
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))


def _compute(rows: Sequence[Mapping[str, Any]]) -> tuple[list[tuple[Mapping[str, Any], PredictionEvent]],
                                                         list[RowProblem]]:
    computed, problems = [], []
    for row in rows:
        try:
            computed.append((row, legacy_row_to_event(row)))  # verifies prompt_id and event_id
        except InvalidEventError as exc:
            problems.append(RowProblem(row["id"], row.get("job_id"), row.get("step"), row.get("sample_index"),
                                       exc.reason, str(exc)))
    return computed, problems


def _rank(when: Any, row_id: int) -> tuple[Any, int]:
    """Which of two rows with one identity keeps it: the newer, then the later written."""
    return when, row_id


def _apply(conn: Connection[TupleRow],
           computed: list[tuple[Mapping[str, Any], PredictionEvent]]) -> tuple[int, list[Duplicate]]:
    """Store the identities of ``computed`` (rows locked by the caller's transaction)."""
    newest: dict[str, tuple[Mapping[str, Any], PredictionEvent]] = {}
    losers: list[tuple[Mapping[str, Any], PredictionEvent]] = []
    for row, ev in computed:
        held = newest.get(ev.event_id)
        if held is None or _rank(ev.produced_at, row["id"]) > _rank(held[1].produced_at, held[0]["id"]):
            if held is not None:
                losers.append(held)
            newest[ev.event_id] = (row, ev)
        else:
            losers.append((row, ev))
    keeper = {event_id: row["id"] for event_id, (row, _) in newest.items()}
    released: list[tuple[int, str]] = []
    if newest:
        holders = conn.execute(
            "SELECT event_id, id, coalesce(produced_at, created_at) FROM training_predictions "
            "WHERE event_id = ANY(%s) FOR UPDATE",
            (list(newest),),
        ).fetchall()
        for event_id, holder_id, holder_time in holders:
            row, ev = newest[event_id]
            if _rank(holder_time, holder_id) >= _rank(ev.produced_at, row["id"]):
                del newest[event_id]  # the row already holding it is newer: it keeps it
                losers.append((row, ev))
                keeper[event_id] = holder_id
            else:
                released.append((holder_id, event_id))
    duplicates = [Duplicate(row["id"], ev.event_id, keeper[ev.event_id]) for row, ev in losers]
    duplicates += [Duplicate(holder_id, event_id, keeper[event_id]) for holder_id, event_id in released]
    if released:
        conn.execute("UPDATE training_predictions SET event_id = NULL WHERE id = ANY(%s)", ([h for h, _ in released],))
    items = [(row, ev, ev.event_id) for row, ev in newest.values()] + [(row, ev, None) for row, ev in losers]
    if items:
        conn.execute(
            """UPDATE training_predictions AS t
               SET prompt_id = v.prompt_id, event_id = v.event_id, sample_source = v.sample_source,
                   produced_at = v.produced_at
               FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::timestamptz[])
                    AS v(id, prompt_id, event_id, sample_source, produced_at)
               WHERE t.id = v.id AND t.event_id IS NULL
                 AND (v.event_id IS NOT NULL OR t.prompt_id IS DISTINCT FROM v.prompt_id
                       OR t.sample_source IS DISTINCT FROM v.sample_source
                       OR t.produced_at IS DISTINCT FROM v.produced_at)""",
            ([row["id"] for row, _, _ in items], [ev.prompt_id for _, ev, _ in items], [eid for _, _, eid in items],
             [ev.sample_source for _, ev, _ in items], [ev.produced_at for _, ev, _ in items]),
        )
    return len(newest), duplicates


def _with_retries(action: Callable[[], int]) -> int:
    """Run one batch transaction, again after a lock timeout, a deadlock or a unique violation
    (a concurrent writer stored one of the batch's event_ids meanwhile)."""
    import psycopg.errors as e

    delay = 0.2
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            return action()
        except (e.LockNotAvailable, e.DeadlockDetected, e.UniqueViolation, e.SerializationFailure) as exc:
            if attempt == _ATTEMPTS:
                raise IdentifyError(f"a batch kept failing ({first_line(exc)}); running identify again resumes "
                                    "where it stopped") from None
            _log.warning("identify batch retried after: %s", first_line(exc))
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def _one(cur: Cursor[TupleRow]) -> Any:
    """The value of a query that returns one row of one column (an aggregate)."""
    row = cur.fetchone()
    assert row is not None, "an aggregate returns one row"
    return row[0]


