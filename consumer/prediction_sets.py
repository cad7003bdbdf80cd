"""Curated prediction sets in Postgres: create, list, show, export and delete.

What a set is — its items, the rules they obey, ``set_id`` and the export file — is defined
once, in :mod:`predstream.schemas.prediction_set`; this module is the SQL. Sets live in
``prediction_sets`` and ``prediction_set_items`` (``migrations/0003_prediction_sets.sql``);
the training side reads them back (``predstream.producer.prediction_sets``) from the database
or from the export file :func:`export_set` writes, and tags its predictions
``sample_source="prediction_set"``, ``sample_source_id=<set_id>``.

A set never changes once created: the database refuses changes to its items
(``migrations/0010_immutable_prediction_sets.sql``), :func:`create_set` checks a set by the
schemas' rules before it touches the database, and :func:`get_set` (``sets show``,
``sets export``) checks what it reads the same way, ``set_id`` recomputed from the items.

Names are unique. Creating a set whose name exists is a no-op when the items are the same
and an error otherwise; the same items under a second name are refused too (``set_id`` is
the table's key), naming the set that already holds them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from predstream.schemas.errors import PredictionSetError
from predstream.schemas.prediction_set import (
    FIX_EDITED_IN_DATABASE,
    PredictionSet,
    check_prediction_set,
    stored_prediction_set,
    write_prediction_set_file,
)
from predstream.schemas.redaction import redact_url

from .settings import ConsumerSettings

if TYPE_CHECKING:
    from psycopg import Connection
    from psycopg.rows import TupleRow

__all__ = [
    "StoredSet",
    "create_set",
    "list_sets",
    "get_set",
    "export_set",
    "delete_set",
]

_log = logging.getLogger(__name__)

_ITEM_COLUMNS = ("item_index", "source_index", "prompt_id", "prompt", "messages", "ground_truth")
_HEAD_COLUMNS = ("set_id", "name", "description", "source", "seed", "item_count", "created_at")


@dataclass(frozen=True)
class StoredSet(PredictionSet):
    """A set as stored: its row's ``item_count`` and ``created_at`` too. ``items`` is empty
    when only the heads were listed (:func:`list_sets`)."""

    item_count: int = 0
    created_at: datetime | None = None


# -- writing ---------------------------------------------------------------------


def create_set(settings: ConsumerSettings, pset: PredictionSet) -> tuple[StoredSet, bool]:
    """Store a set (built with :func:`predstream.schemas.new_prediction_set`, or
    ``predstream.producer.prediction_set_from_samples``); return ``(stored set, created)``.

    ``created`` is ``False`` when a set of this name with the same items already existed
    (nothing was written). Raises :class:`PredictionSetError` when the set breaks a rule of
    :mod:`predstream.schemas.prediction_set` (before touching the database), when the name
    is taken by different items, or when the same items are stored under another name.
    """
    import psycopg

    check_prediction_set(pset)
    name, set_id, items = pset.name, pset.set_id, pset.items
    database_url = settings.require_database_url()
    try:
        with psycopg.connect(database_url, connect_timeout=10) as conn:
            with conn.transaction():
                row = conn.execute(
                    "INSERT INTO prediction_sets (set_id, name, description, source, seed, item_count)"
                    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING created_at",
                    (set_id, name, pset.description, pset.source, pset.seed, len(items)),
                ).fetchone()
                if row is None:
                    return _existing(conn, name, set_id), False
                with conn.cursor() as cur:
                    with cur.copy(
                        "COPY prediction_set_items (set_id, " + ", ".join(_ITEM_COLUMNS) + ") FROM STDIN"
                    ) as copy:
                        for it in items:
                            messages = it.messages_list()
                            copy.write_row(
                                (
                                    set_id,
                                    it.item_index,
                                    it.source_index,
                                    it.prompt_id,
                                    it.prompt,
                                    None if messages is None else json.dumps(messages, ensure_ascii=False),
                                    it.ground_truth,
                                )
                            )
    except psycopg.Error as exc:
        raise _db_error(exc, f"cannot store prediction set {name!r}", database_url) from None
    _log.debug("stored prediction set %s (%s, %d items)", name, set_id, len(items))
    stored = StoredSet(set_id=set_id, name=name, items=items, source=pset.source, seed=pset.seed,
                       description=pset.description, item_count=len(items), created_at=row[0])
    return stored, True


def _existing(conn: Connection[TupleRow], name: str, set_id: str) -> StoredSet:
    """Decide what an ``ON CONFLICT DO NOTHING`` met: the same set, or a clash."""
    heads = conn.execute(
        "SELECT " + ", ".join(_HEAD_COLUMNS) + " FROM prediction_sets WHERE name = %s OR set_id = %s",
        (name, set_id),
    ).fetchall()
    by_name = next((h for h in heads if h[1] == name), None)
    if by_name is not None and by_name[0] == set_id:
        _log.debug("prediction set %s (%s) already exists with the same items; nothing to do", name, set_id)
        return _head(by_name)
    if by_name is not None:
        raise PredictionSetError(
            f"a set named {name!r} already exists with different items ({by_name[0]}); choose another name"
        )
    other = next(h for h in heads if h[0] == set_id)
    raise PredictionSetError(
        f"these items are already stored as set {other[1]!r} ({set_id}); use that name "
        f"(`predstream sets show {other[1]}`)"
    )


def delete_set(settings: ConsumerSettings, name_or_id: str) -> bool:
    """Delete a set and its items; ``False`` when there was none. Predictions keep their
    ``set_id``: they stay readable, the set is only no longer available to new runs."""
    import psycopg

    database_url = settings.require_database_url()
    try:
        with psycopg.connect(database_url, connect_timeout=10) as conn:
            cur = conn.execute(
                "DELETE FROM prediction_sets WHERE set_id = %s OR (name = %s AND NOT EXISTS "
                "(SELECT 1 FROM prediction_sets WHERE set_id = %s))",
                (name_or_id, name_or_id, name_or_id),
            )
            return cur.rowcount > 0
    except psycopg.Error as exc:
        raise _db_error(exc, f"cannot delete prediction set {name_or_id!r}", database_url) from None


# -- reading ---------------------------------------------------------------------


def list_sets(settings: ConsumerSettings) -> list[StoredSet]:
    """Every set's head (no items), by name."""
    import psycopg

    database_url = settings.require_database_url()
    try:
        with psycopg.connect(database_url, connect_timeout=10) as conn:
            rows = conn.execute(
                "SELECT " + ", ".join(_HEAD_COLUMNS) + " FROM prediction_sets ORDER BY name"
            ).fetchall()
    except psycopg.Error as exc:
        raise _db_error(exc, "cannot list prediction sets", database_url) from None
    return [_head(r) for r in rows]


def get_set(settings: ConsumerSettings, name_or_id: str) -> StoredSet:
    """A set with its items, by name or ``set_id`` (an exact ``set_id`` match wins)."""
    import psycopg

    database_url = settings.require_database_url()
    try:
        with psycopg.connect(database_url, connect_timeout=10) as conn:
            head = conn.execute(
                "SELECT " + ", ".join(_HEAD_COLUMNS) + " FROM prediction_sets"
                " WHERE set_id = %s OR name = %s ORDER BY (set_id = %s) DESC LIMIT 1",
                (name_or_id, name_or_id, name_or_id),
            ).fetchone()
            if head is None:
                raise PredictionSetError(
                    f"no prediction set named {name_or_id!r} in {redact_url(database_url)}; "
                    "see `predstream sets list`"
                )
            rows = conn.execute(
                "SELECT " + ", ".join(_ITEM_COLUMNS) + " FROM prediction_set_items"
                " WHERE set_id = %s ORDER BY item_index",
                (head[0],),
            ).fetchall()
    except psycopg.Error as exc:
        raise _db_error(exc, f"cannot read prediction set {name_or_id!r}", database_url) from None
    stored = _head(head)
    checked = stored_prediction_set(  # a set never changes: items edited behind its back are refused
        set_id=stored.set_id, name=stored.name, source=stored.source, seed=stored.seed,
        description=stored.description, rows=[dict(zip(_ITEM_COLUMNS, r, strict=True)) for r in rows],
        where=f"prediction set {stored.name!r} ({stored.set_id})", fix=FIX_EDITED_IN_DATABASE,
        item_count=stored.item_count,
    )
    return replace(stored, items=checked.items)


def export_set(settings: ConsumerSettings, name_or_id: str, path: str | os.PathLike[str]) -> StoredSet:
    """Write a set to ``path`` as the export file (atomically); return the set."""
    stored = get_set(settings, name_or_id)
    path = Path(path)
    try:
        write_prediction_set_file(stored, path)
    except OSError as exc:
        raise PredictionSetError(f"cannot write {path}: {exc.strerror or exc}") from None
    return stored


# -- helpers -----------------------------------------------------------------------


def _head(r: Sequence[Any]) -> StoredSet:
    return StoredSet(set_id=r[0], name=r[1], description=r[2], source=r[3], seed=r[4], item_count=r[5],
                     created_at=r[6])


def _db_error(exc: BaseException, what: str, database_url: str) -> PredictionSetError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    hint = ""
    if getattr(exc, "sqlstate", None) == "42P01":
        hint = "; run `predstream migrate` first"
    return PredictionSetError(redact_url(f"{what} in {database_url}: {text}{hint}"))
