"""Curated prediction sets: a fixed, named list of eval prompts, read from a file or Postgres.

A prediction set pins the prompts a run is evaluated on, so runs can be compared prompt
by prompt. Its samples carry ``sample_source="prediction_set"``,
``sample_source_id=<set_id>`` and ``sample_index=<item_index>``.

Two homes, same content:

* Postgres, tables ``prediction_sets`` and ``prediction_set_items``
  (``migrations/0003_prediction_sets.sql``), written by ``predstream sets``.
* An export file (JSON, UTF-8), written by :func:`write_prediction_set_file`::

    {"set_id": "ps_…", "name": "…", "source": "…" | null, "seed": 7 | null,
     "description": "…" | null,
     "items": [{"item_index": 0, "source_index": 12 | null, "prompt_id": "<sha256 hex>",
                "prompt": "…" | null, "messages": [{"role": "…", "content": "…"}] | null,
                "ground_truth": "…" | null}, …]}

  ``description`` is optional. Items are read in ``item_index`` order; indices must be
  unique and each ``prompt_id`` must equal ``predstream.schemas.compute_prompt_id(messages, prompt)``.

A set never changes once created (migration 0010 makes the database refuse changes to its
items). Every loader (file, database, the training side's local copy) recomputes ``set_id``
from the items and refuses a set whose items do not give its id, naming the set and what
to do.

``set_id`` (:func:`prediction_set_id`) is ``"ps_"`` + the first 16 hex digits of the
sha256 of the canonical JSON (sorted keys, no whitespace, UTF-8) of the items' identity
``[{"item_index", "source_index", "prompt_id", "ground_truth"}, …]``: the same items give
the same id wherever the set is built.

psycopg is imported only when a set is read from Postgres.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from predstream.schemas import compute_prompt_id
from predstream.schemas.prediction_set import prediction_set_document as _document
from predstream.schemas.prediction_set import prediction_set_id as _set_id
from predstream.schemas.redaction import redact_url

from .errors import PredictionSetError, PredictionSetUnavailableError
from .sampler import Sample

__all__ = [
    "PredictionSet",
    "prediction_set_id",
    "prediction_set_from_samples",
    "read_prediction_set_file",
    "write_prediction_set_file",
    "fetch_prediction_set",
    "load_prediction_set",
    "verify_set_id",
]

_ITEM_KEYS = ("item_index", "source_index", "prompt_id", "prompt", "messages", "ground_truth")


@dataclass(frozen=True)
class PredictionSet:
    """A named, fixed list of prompts; ``items`` are :class:`Sample` objects in item order."""

    set_id: str
    name: str
    items: tuple[Sample, ...]
    source: str | None = None
    seed: int | None = None
    description: str | None = None

    def samples(self) -> list[Sample]:
        """The items as samples for the generator."""
        return list(self.items)

    def to_json(self) -> dict[str, Any]:
        """The export file's JSON object."""
        return _document(
            set_id=self.set_id, name=self.name, source=self.source, seed=self.seed, description=self.description,
            items=((s.sample_index, s.source_index, s.prompt_id, s.prompt, s.messages_list(), s.ground_truth)
                   for s in self.items),
        )


def prediction_set_id(samples: Iterable[Sample]) -> str:
    """The stable id of a set with these items (:mod:`predstream.schemas.prediction_set`)."""
    return _set_id((s.sample_index, s.source_index, s.prompt_id, s.ground_truth) for s in samples)


def prediction_set_from_samples(
    name: str,
    samples: Sequence[Sample],
    *,
    source: str | None = None,
    seed: int | None = None,
    description: str | None = None,
) -> PredictionSet:
    """Build a set from sampled rows (e.g. :func:`predstream.producer.sampler.sample_dataset`).

    Items are numbered 0..N-1 in the given order; ``source`` defaults to the samples'
    ``sample_source_id`` when they all share one.
    """
    if not name or not name.strip():
        raise PredictionSetError("a prediction set needs a non-empty name")
    if not samples:
        raise PredictionSetError(f"prediction set {name!r} would be empty: give it at least one prompt")
    numbered = [replace(s, sample_index=i) for i, s in enumerate(samples)]
    set_id = prediction_set_id(numbered)
    if source is None:
        ids = {s.sample_source_id for s in samples}
        source = ids.pop() if len(ids) == 1 else None
    items = tuple(replace(s, sample_source="prediction_set", sample_source_id=set_id) for s in numbered)
    return PredictionSet(set_id=set_id, name=name, items=items, source=source, seed=seed, description=description)


# -- file -----------------------------------------------------------------------


def write_prediction_set_file(pset: PredictionSet, path: str | os.PathLike[str]) -> Path:
    """Write the export file (atomically: a temporary file renamed into place)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(pset.to_json(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_prediction_set_file(path: str | os.PathLike[str]) -> PredictionSet:
    """Read an export file; :class:`PredictionSetError` names what is wrong."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PredictionSetError(f"prediction set file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PredictionSetError(f"cannot read prediction set file {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise PredictionSetError(
            f"prediction set file {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    if not isinstance(data, Mapping):
        raise PredictionSetError(f"prediction set file {path} must hold a JSON object with set_id, name and items")
    for key in ("set_id", "name", "items"):
        if key not in data:
            raise PredictionSetError(f"prediction set file {path} has no {key!r}")
    if not isinstance(data["items"], list):
        raise PredictionSetError(f"prediction set file {path}: 'items' must be a list")
    return _build(
        where=f"prediction set file {path}",
        fix="the file was edited after it was exported: export the set again with "
            "`predstream sets export NAME FILE`, or create a new set with `predstream sets create`",
        set_id=data["set_id"],
        name=data["name"],
        source=data.get("source"),
        seed=data.get("seed"),
        description=data.get("description"),
        rows=data["items"],
    )


# -- Postgres -------------------------------------------------------------------


def fetch_prediction_set(name_or_id: str, database_url: str) -> PredictionSet:
    """Read a set by ``set_id`` or ``name`` from Postgres (an exact ``set_id`` match wins)."""
    try:
        import psycopg
        from psycopg.rows import dict_row
    except ImportError as exc:  # pragma: no cover - psycopg is a core dependency
        raise PredictionSetError(f"reading a prediction set from Postgres needs psycopg: {exc}") from None
    try:
        with psycopg.connect(database_url, row_factory=dict_row, connect_timeout=10) as conn:
            heads = conn.execute(
                "SELECT set_id, name, source, seed, description, item_count FROM prediction_sets"
                " WHERE set_id = %s OR name = %s ORDER BY (set_id = %s) DESC LIMIT 1",
                (name_or_id, name_or_id, name_or_id),
            ).fetchall()
            if not heads:
                raise PredictionSetError(
                    f"no prediction set named {name_or_id!r} in {redact_url(database_url)}: "
                    "list them with `predstream sets list`"
                )
            head = heads[0]
            rows = conn.execute(
                "SELECT " + ", ".join(_ITEM_KEYS) + " FROM prediction_set_items WHERE set_id = %s ORDER BY item_index",
                (head["set_id"],),
            ).fetchall()
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = redact_url(first, database_url)
        if isinstance(exc, psycopg.OperationalError):  # the server did not answer (or went away)
            raise PredictionSetUnavailableError(
                f"cannot read prediction set {name_or_id!r}: the database at {redact_url(database_url)} "
                f"does not answer: {first}"
            ) from None
        hint = "; run `predstream migrate` first" if getattr(exc, "sqlstate", None) == "42P01" else ""
        raise PredictionSetError(
            f"cannot read prediction set {name_or_id!r} from {redact_url(database_url)}: {first}{hint}"
        ) from None
    where = f"prediction set {head['name']!r} ({head['set_id']})"
    if len(rows) != head["item_count"]:
        raise PredictionSetError(f"{where} should have {head['item_count']} items but the database holds {len(rows)}")
    return _build(
        where=where,
        fix="they were changed in the database after the set was created (a set never changes; "
            "`predstream migrate` applies migration 0010, which refuses such changes): delete it with "
            "`predstream sets delete` and create it again with `predstream sets create`",
        set_id=head["set_id"],
        name=head["name"],
        source=head["source"],
        seed=head["seed"],
        description=head["description"],
        rows=rows,
    )


# -- either ---------------------------------------------------------------------


def load_prediction_set(name_or_path: str | os.PathLike[str], database_url: str | None = None) -> list[Sample]:
    """The samples of a prediction set, from an export file or from Postgres.

    ``name_or_path`` is read as a file when it names an existing file or ends in
    ``.json``; otherwise it is a set name or ``set_id`` looked up in ``database_url``.
    """
    text = os.fspath(name_or_path)
    if Path(text).is_file() or text.lower().endswith(".json") or isinstance(name_or_path, os.PathLike):
        return read_prediction_set_file(text).samples()
    if not database_url:
        raise PredictionSetError(
            f"prediction set {text!r} is not a file: pass database_url= (or set PREDSTREAM_DATABASE_URL) to "
            "read it from Postgres, or export it to a file with `predstream sets export`"
        )
    return fetch_prediction_set(text, database_url).samples()


def verify_set_id(pset: PredictionSet, where: str, fix: str) -> PredictionSet:
    """``pset`` when its items give its ``set_id``; else :class:`PredictionSetError` naming
    ``where`` and saying what to do (``fix``)."""
    actual = prediction_set_id(pset.items)
    if actual != pset.set_id:
        raise PredictionSetError(
            f"{where}: the items of set {pset.name!r} do not match its set_id {pset.set_id} (they give "
            f"{actual}): {fix}"
        )
    return pset


def _build(
    *,
    where: str,
    fix: str,
    set_id: Any,
    name: Any,
    source: Any,
    seed: Any,
    description: Any,
    rows: Sequence[Any],
) -> PredictionSet:
    if not isinstance(set_id, str) or not set_id:
        raise PredictionSetError(f"{where}: set_id must be a non-empty string")
    if not isinstance(name, str) or not name:
        raise PredictionSetError(f"{where}: name must be a non-empty string")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise PredictionSetError(f"{where}: seed must be an integer or null")
    items: list[Sample] = []
    seen: set[int] = set()
    for position, row in enumerate(rows):
        items.append(_item(row, position, where, set_id, seen))
    if not items:
        raise PredictionSetError(f"{where} has no items")
    items.sort(key=lambda s: s.sample_index)
    pset = PredictionSet(
        set_id=set_id,
        name=name,
        items=tuple(items),
        source=source if isinstance(source, str) else None,
        seed=seed,
        description=description if isinstance(description, str) else None,
    )
    return verify_set_id(pset, where, fix)


def _item(row: Any, position: int, where: str, set_id: str, seen: set[int]) -> Sample:
    if not isinstance(row, Mapping):
        raise PredictionSetError(f"{where}: item {position} is not an object")
    index = row.get("item_index")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise PredictionSetError(f"{where}: item {position} has no valid item_index (a non-negative integer)")
    if index in seen:
        raise PredictionSetError(f"{where}: item_index {index} appears twice")
    seen.add(index)
    source_index = row.get("source_index")
    if source_index is not None and (isinstance(source_index, bool) or not isinstance(source_index, int) or source_index < 0):
        raise PredictionSetError(f"{where}: item {index} has a bad source_index {source_index!r}")
    prompt = row.get("prompt")
    messages = row.get("messages")
    if isinstance(messages, str):  # JSONB read as text by some drivers
        messages = json.loads(messages)
    ground_truth = row.get("ground_truth")
    if prompt is not None and not isinstance(prompt, str):
        raise PredictionSetError(f"{where}: item {index} prompt must be a string or null")
    if ground_truth is not None and not isinstance(ground_truth, str):
        raise PredictionSetError(f"{where}: item {index} ground_truth must be a string or null")
    if messages is not None:
        if not isinstance(messages, list) or not all(
            isinstance(m, Mapping) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages
        ):
            raise PredictionSetError(f"{where}: item {index} messages must be a list of {{role, content}} strings")
        messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    if prompt is None and messages is None:
        raise PredictionSetError(f"{where}: item {index} has neither a prompt nor messages")
    expected = compute_prompt_id(messages, prompt)
    if row.get("prompt_id") != expected:
        raise PredictionSetError(
            f"{where}: item {index} prompt_id {row.get('prompt_id')!r} does not match its prompt "
            f"(expected {expected}); the set was edited by hand or corrupted: rebuild it"
        )
    return Sample(
        sample_index=index,
        source_index=source_index,
        prompt_id=expected,
        prompt=prompt,
        messages=None if messages is None else tuple(messages),
        ground_truth=ground_truth,
        sample_source="prediction_set",
        sample_source_id=set_id,
    )
