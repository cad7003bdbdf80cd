"""Curated prediction sets in Postgres: create, list, show, export and delete.

A prediction set is a named, fixed list of eval prompts (``prediction_sets`` and
``prediction_set_items``, ``migrations/0003_prediction_sets.sql``). The training side
reads a set back (``predstream.producer.prediction_sets``) from the database or from the export
file this module writes, and tags its predictions ``sample_source="prediction_set"``,
``sample_source_id=<set_id>``.

Identity: :func:`set_id_for` is ``"ps_"`` + the first 16 hex digits of the sha256 of the
canonical JSON (sorted keys, no whitespace, UTF-8, non-ASCII as is) of
``[{"item_index", "source_index", "prompt_id", "ground_truth"}, ...]`` in item order, the
same definition as ``predstream.producer.prediction_sets.prediction_set_id``: the same items give the
same id wherever the set is built.

A set never changes once created: the database refuses changes to its items
(``migrations/0010_immutable_prediction_sets.sql``) and :func:`get_set` (``sets show``,
``sets export``) recomputes ``set_id`` from the items and refuses a mismatch.

Names are unique. Creating a set whose name exists is a no-op when the items are the same
and an error otherwise; the same items under a second name are refused too (``set_id`` is
the table's key), naming the set that already holds them.

The export file (UTF-8 JSON)::

    {"set_id", "name", "source", "seed", "description",
     "items": [{"item_index", "source_index", "prompt_id", "prompt", "messages", "ground_truth"}, ...]}
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from predstream.schemas.event import MAX_MESSAGES, MAX_TEXT_CHARS
from predstream.schemas.prediction_set import prediction_set_document, prediction_set_id
from predstream.schemas.prompt_id import compute_prompt_id

from .errors import PredictionSetError
from .settings import ConsumerSettings, redact_url

if TYPE_CHECKING:
    from psycopg import Connection
    from psycopg.rows import TupleRow

__all__ = [
    "PredictionSetError",
    "SetItem",
    "StoredSet",
    "set_id_for",
    "create_set",
    "list_sets",
    "get_set",
    "export_set",
    "delete_set",
]

_log = logging.getLogger(__name__)

_ITEM_COLUMNS = ("item_index", "source_index", "prompt_id", "prompt", "messages", "ground_truth")
_HEAD_COLUMNS = ("set_id", "name", "description", "source", "seed", "item_count", "created_at")
_MAX_NAME_CHARS = 200


@dataclass(frozen=True)
class SetItem:
    """One prompt of a set; ``item_index`` becomes the prediction's ``sample_index``."""

    item_index: int
    prompt_id: str
    source_index: int | None = None
    prompt: str | None = None
    messages: tuple[Mapping[str, str], ...] | None = None
    ground_truth: str | None = None

    def messages_list(self) -> list[dict[str, str]] | None:
        if self.messages is None:
            return None
        return [{"role": m["role"], "content": m["content"]} for m in self.messages]


@dataclass(frozen=True)
class StoredSet:
    """A set as stored; ``items`` is empty when only the heads were listed."""

    set_id: str
    name: str
    item_count: int
    source: str | None = None
    seed: int | None = None
    description: str | None = None
    created_at: datetime | None = None
    items: tuple[SetItem, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        """The export file's JSON object."""
        return prediction_set_document(
            set_id=self.set_id, name=self.name, source=self.source, seed=self.seed, description=self.description,
            items=((i.item_index, i.source_index, i.prompt_id, i.prompt, i.messages_list(), i.ground_truth)
                   for i in self.items),
        )


def set_id_for(items: Sequence[SetItem]) -> str:
    """The stable id of a set with these items, in this order (:mod:`predstream.schemas.prediction_set`)."""
    return prediction_set_id((i.item_index, i.source_index, i.prompt_id, i.ground_truth) for i in items)


def make_items(rows: Sequence[Mapping[str, Any]]) -> list[SetItem]:
    """Number rows ``{source_index?, prompt?, messages?, ground_truth?}`` 0..N-1 as items.

    ``prompt_id`` is computed from the messages and prompt (a given one must match).
    """
    items = []
    for index, row in enumerate(rows):
        messages = row.get("messages")
        computed = compute_prompt_id(None if messages is None else [dict(m) for m in messages], row.get("prompt"))
        given = row.get("prompt_id")
        if given is not None and given != computed:
            raise PredictionSetError(
                f"item {index}: prompt_id {given} does not match its prompt (expected {computed})"
            )
        items.append(
            SetItem(
                item_index=index,
                prompt_id=computed,
                source_index=row.get("source_index"),
                prompt=row.get("prompt"),
                messages=None if messages is None else tuple({"role": m["role"], "content": m["content"]} for m in messages),
                ground_truth=row.get("ground_truth"),
            )
        )
    return items


# -- writing ---------------------------------------------------------------------


def create_set(
    settings: ConsumerSettings,
    name: str,
    items: Sequence[SetItem],
    *,
    source: str | None = None,
    seed: int | None = None,
    description: str | None = None,
) -> tuple[StoredSet, bool]:
    """Store a set; return ``(stored set, created)``.

    ``created`` is ``False`` when a set of this name with the same items already existed
    (nothing was written). Raises :class:`PredictionSetError` when the name is taken by
    different items, when the same items are stored under another name, or when an item
    is inconsistent.
    """
    _check_name(name)
    _check_items(items)
    set_id = set_id_for(items)
    import psycopg

    database_url = settings.require_database_url()
    try:
        with psycopg.connect(database_url, connect_timeout=10) as conn:
            with conn.transaction():
                row = conn.execute(
                    "INSERT INTO prediction_sets (set_id, name, description, source, seed, item_count)"
                    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING created_at",
                    (set_id, name, description, source, seed, len(items)),
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
    stored = StoredSet(set_id, name, len(items), source, seed, description, row[0], tuple(items))
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
    items = tuple(
        SetItem(
            item_index=r[0],
            source_index=r[1],
            prompt_id=r[2],
            prompt=r[3],
            messages=None if r[4] is None else tuple(r[4]),
            ground_truth=r[5],
        )
        for r in rows
    )
    stored = _head(head)
    if len(items) != stored.item_count:
        raise PredictionSetError(
            f"prediction set {stored.name!r} ({stored.set_id}) should have {stored.item_count} items "
            f"but the database holds {len(items)}; delete it and create it again"
        )
    actual = set_id_for(items)
    if actual != stored.set_id:  # a set never changes: its items were edited behind its back
        raise PredictionSetError(
            f"prediction set {stored.name!r} ({stored.set_id}): its items do not match its set_id (they give "
            f"{actual}), so they were changed after it was created; delete it with `predstream sets delete` "
            "and create it again with `predstream sets create` (migration 0010 stops such changes)"
        )
    return replace(stored, items=items)


def export_set(settings: ConsumerSettings, name_or_id: str, path: str | os.PathLike[str]) -> StoredSet:
    """Write a set to ``path`` as the export file (atomically); return the set."""
    stored = get_set(settings, name_or_id)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(stored.to_json(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise PredictionSetError(f"cannot write {path}: {exc.strerror or exc}") from None
    return stored


# -- helpers -----------------------------------------------------------------------


def _head(r: Sequence[Any]) -> StoredSet:
    return StoredSet(set_id=r[0], name=r[1], description=r[2], source=r[3], seed=r[4], item_count=r[5], created_at=r[6])


def _check_name(name: str) -> None:
    if not name or not name.strip():
        raise PredictionSetError("a prediction set needs a non-empty name")
    if len(name) > _MAX_NAME_CHARS or "\x00" in name:
        raise PredictionSetError(f"a prediction set name is at most {_MAX_NAME_CHARS} characters, without NUL")
    if name.startswith("ps_"):
        raise PredictionSetError(f"{name!r}: names starting with 'ps_' are reserved for set ids; choose another name")


def _check_items(items: Sequence[SetItem]) -> None:
    if not items:
        raise PredictionSetError("a prediction set needs at least one item")
    for position, it in enumerate(items):
        where = f"item {position}"
        if it.item_index != position:
            raise PredictionSetError(f"{where} has item_index {it.item_index}; items are numbered 0..N-1 in order")
        if it.source_index is not None and (isinstance(it.source_index, bool) or it.source_index < 0):
            raise PredictionSetError(f"{where} has a bad source_index {it.source_index!r}")
        if it.prompt is None and it.messages is None:
            raise PredictionSetError(f"{where} has neither a prompt nor messages")
        if it.messages is not None and len(it.messages) > MAX_MESSAGES:
            raise PredictionSetError(f"{where} has {len(it.messages)} messages; the limit is {MAX_MESSAGES}")
        texts = [it.prompt, it.ground_truth] + [m["content"] for m in it.messages or ()]
        for text in texts:
            if text is not None and (len(text) > MAX_TEXT_CHARS or "\x00" in text):
                raise PredictionSetError(f"{where}: a text is over {MAX_TEXT_CHARS} characters or contains NUL")
        expected = compute_prompt_id(it.messages_list(), it.prompt)
        if it.prompt_id != expected:
            raise PredictionSetError(f"{where}: prompt_id {it.prompt_id} does not match its prompt (expected {expected})")


def _db_error(exc: BaseException, what: str, database_url: str) -> PredictionSetError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    hint = ""
    if getattr(exc, "sqlstate", None) == "42P01":
        hint = "; run `predstream migrate` first"
    return PredictionSetError(redact_url(f"{what} in {database_url}: {text}{hint}"))
