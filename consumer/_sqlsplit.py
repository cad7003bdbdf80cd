"""Split a SQL script into statements, as psql would, for migrations run outside a transaction.

Postgres runs a multi-statement query string in one implicit transaction, where
``CREATE INDEX CONCURRENTLY`` is refused; so such a migration is sent one statement at a
time. The split honours what may hold a ``;`` without ending a statement: quoted strings
(``'...'`` with ``''``, ``E'...'`` with backslash escapes), quoted identifiers, dollar
quotes (``$$ ... $$``, ``$tag$ ... $tag$``), ``--`` line comments and nested ``/* */``
comments. Comments outside quotes are dropped; statements come back stripped, without
their ``;``, empty ones left out.
"""

from __future__ import annotations

import re

__all__ = ["split_statements"]

_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")


def split_statements(sql: str) -> list[str]:
    """The statements of ``sql`` in order (see the module docstring)."""
    statements: list[str] = []
    current: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end  # keep the newline as a separator
            continue
        if c == "/" and sql.startswith("/*", i):
            i = _skip_block_comment(sql, i)
            current.append(" ")
            continue
        if c == "'":
            backslashes = i > 0 and sql[i - 1] in "eE" and (i == 1 or not (sql[i - 2].isalnum() or sql[i - 2] == "_"))
            end = _end_of_quoted(sql, i, "'", backslashes)
        elif c == '"':
            end = _end_of_quoted(sql, i, '"', False)
        elif (c == "$" and (m := _DOLLAR_TAG.match(sql, i))
              and not (i > 0 and (sql[i - 1].isalnum() or sql[i - 1] == "_"))):
            close = sql.find(m.group(0), m.end())
            end = n if close < 0 else close + len(m.group(0))
        elif c == ";":
            _flush(current, statements)
            i += 1
            continue
        else:
            end = i + 1
        current.append(sql[i:end])
        i = end
    _flush(current, statements)
    return statements


def _flush(current: list[str], statements: list[str]) -> None:
    text = "".join(current).strip()
    if text:
        statements.append(text)
    current.clear()


def _skip_block_comment(sql: str, i: int) -> int:
    depth, i = 1, i + 2
    while i < len(sql) and depth:
        if sql.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif sql.startswith("*/", i):
            depth, i = depth - 1, i + 2
        else:
            i += 1
    return i


def _end_of_quoted(sql: str, i: int, quote: str, backslashes: bool) -> int:
    j = i + 1
    while j < len(sql):
        c = sql[j]
        if backslashes and c == "\\":
            j += 2
            continue
        if c == quote:
            if j + 1 < len(sql) and sql[j + 1] == quote:  # a doubled quote stands for itself
                j += 2
                continue
            return j + 1
        j += 1
    return len(sql)
