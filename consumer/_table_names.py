"""Before migrating: a table a pending migration creates must not be another application's.

The migrations create their tables with ``CREATE TABLE IF NOT EXISTS`` (the old writer's
``training_predictions`` is adopted as it is). In a database where another application
already has a table of that name, that would skip the ``CREATE``, then ``ALTER`` the other
application's table and fail somewhere later with a message about a column. So before
anything runs, every table a pending migration creates that already exists is checked for
the columns the migration gives it that a row cannot do without (``NOT NULL`` or
``PRIMARY KEY``, with no ``DEFAULT`` and not ``SERIAL``): a table that lacks one is not
predstream's, and ``migrate`` stops, having changed nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ._sqlsplit import split_statements

if TYPE_CHECKING:
    from psycopg import Connection
    from psycopg.rows import TupleRow

__all__ = ["required_columns", "foreign_table_problem"]

_CREATE = re.compile(r"CREATE\s+TABLE\s+IF\s+NOT\s+EXISTS\s+((?:\w+\.)?\w+)\s*\(", re.IGNORECASE)
_NOT_COLUMNS = {"CONSTRAINT", "PRIMARY", "UNIQUE", "FOREIGN", "CHECK", "EXCLUDE", "LIKE"}


def _top_level_items(body: str) -> list[str]:
    """``body`` (between a CREATE TABLE's outer parentheses) split at its top-level commas."""
    items, depth, quoted, start = [], 0, False, 0
    for i, c in enumerate(body):
        if c == "'":
            quoted = not quoted
        elif quoted:
            continue
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "," and depth == 0:
            items.append(body[start:i])
            start = i + 1
    items.append(body[start:])
    return [item.strip() for item in items if item.strip()]


def required_columns(sql: str) -> dict[str, list[str]]:
    """``{table: [column, ...]}`` for each ``CREATE TABLE IF NOT EXISTS`` in ``sql``: the
    columns a row of it cannot do without (see the module docstring)."""
    found: dict[str, list[str]] = {}
    for statement in split_statements(sql):
        m = _CREATE.match(statement)
        if not m:
            continue
        body = statement[m.end(): statement.rindex(")")]
        columns = []
        for item in _top_level_items(body):
            name, _, rest = item.partition(" ")
            rest = rest.upper()
            if name.upper() in _NOT_COLUMNS or "DEFAULT" in rest or "SERIAL" in rest:
                continue
            if "NOT NULL" in rest or "PRIMARY KEY" in rest:
                columns.append(name.strip('"').lower())
        found[m.group(1).lower()] = columns
    return found


def foreign_table_problem(conn: Connection[TupleRow], sqls: Iterable[str]) -> str | None:
    """A one-line description of the first existing table, among those ``sqls`` create, that
    lacks a column they need; ``None`` when every such table is predstream's (or absent)."""
    for sql in sqls:
        for table, needed in required_columns(sql).items():
            have = {r[0] for r in conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
                (table,),
            )}
            if not have:
                continue  # no such table (yet): the migration creates it
            missing = [c for c in needed if c not in have]
            if missing:
                return (
                    f"this database already has a table {table} that is not predstream's (it has no column "
                    f"{', '.join(missing)}): another application uses that name. Nothing was changed; give "
                    "predstream a database of its own (--database-url / PREDSTREAM_DATABASE_URL)"
                )
    return None
