"""What a database error means for a batch: the row's own fault (a :class:`Rejection`: that
row becomes a dead letter, the others are stored) or the database's (a
:class:`~predstream.consumer.errors.DatabaseUnavailableError`: nothing was stored, retry the
batch), and one line to say so. Used by the sink, replay, backfill, identify and migrate.

* data exceptions (SQLSTATE class 22) and integrity violations (class 23) but unique
  violations, and a value the client cannot encode: the row's fault;
* everything else (connection lost, shutdown, disk full, timeouts, lock and serialization
  failures, a table not migrated yet): the database is unavailable, with a hint for the
  states a user can fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from predstream.schemas.redaction import redact_url

from .errors import DatabaseUnavailableError

__all__ = ["Rejection", "row_fault", "unavailable", "first_line", "HINTS"]


@dataclass(frozen=True)
class Rejection:
    """Why the database refused a row: ``reason`` is a short code, ``message`` one line."""

    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


def row_fault(exc: BaseException) -> Rejection | None:
    """A :class:`Rejection` when the database refused the data itself, else ``None``."""
    import psycopg

    state = getattr(exc, "sqlstate", None)
    if isinstance(exc, UnicodeEncodeError) or (isinstance(exc, psycopg.DataError) and state is None):
        # raised by the client while encoding a value (e.g. a lone surrogate): the row's fault
        return Rejection("db-rejected:encoding", first_line(exc))
    if not state:
        return None
    if state.startswith("22") or (state.startswith("23") and state != "23505"):
        diag = getattr(exc, "diag", None)
        message = (diag.message_primary if diag is not None and diag.message_primary else None) or first_line(exc)
        column = diag.column_name if diag is not None else None
        if not column and diag is not None and diag.context:  # COPY names it only in the context
            found = re.search(r"column (\w+)", diag.context)
            column = found.group(1) if found else None
        constraint = diag.constraint_name if diag is not None else None
        where = f" (column {column})" if column else f" (constraint {constraint})" if constraint else ""
        return Rejection(f"db-rejected:{state}", (message + where)[:500])
    return None


HINTS = {
    "42P01": "; run `predstream migrate` to create the table",
    "42703": "; the table lacks a column: run `predstream migrate`",
    "3D000": "; create the database or fix PREDSTREAM_DATABASE_URL",
    "28P01": "; check the user and password in PREDSTREAM_DATABASE_URL",
    "28000": "; check the user in PREDSTREAM_DATABASE_URL and pg_hba.conf",
    "42501": "; grant the consumer's user INSERT/UPDATE on training_predictions",
}


def unavailable(exc: BaseException) -> DatabaseUnavailableError:
    state = getattr(exc, "sqlstate", None)
    text = first_line(exc)
    if state:
        text = f"{text} [{state}]"
    text += HINTS.get(state or "", "")
    return DatabaseUnavailableError(text, sqlstate=state)


def first_line(exc: BaseException) -> str:
    """The error's first line (at most 500 characters), any password in a URL redacted."""
    text = str(exc).strip()
    return redact_url(text.splitlines()[0][:500] if text else type(exc).__name__)
